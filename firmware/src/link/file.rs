//! A recording: the framed stream appended to a file.
//!
//! The file holds exactly the bytes a serial line would carry, so
//! `latentcam-host inspect` reads it with the same stream decoder. Frames are
//! appended with one `write` each, without a user-space buffer, so a failure
//! is reported by the `send` of the frame that caused it.
//!
//! **Durability.** A successful `send` puts the frame in the kernel's page
//! cache; the [`FsyncPolicy`] decides how often it is forced to the medium
//! (`fdatasync`). The default, every second, bounds what a power cut can
//! lose to about a second of frames without an SD-card-wearing sync per
//! frame. Dropping the link syncs once more.
//!
//! **Full disk.** On `ENOSPC` the link cuts the file back to the end of the
//! last complete frame and returns [`LinkError::DiskFull`]: everything written
//! before stays readable, and no half frame is left behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Incoming, Link, LinkError, LinkStats};

/// When a [`FileLink`] forces written frames to the storage medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Never explicitly; the kernel writes back within ~30 s. Fastest, least
    /// wear, loses most on power loss.
    Never,
    /// After every frame. Nothing acknowledged is lost; slow on SD cards.
    EveryFrame,
    /// At the first frame after this much time since the last sync.
    Interval(Duration),
}

impl Default for FsyncPolicy {
    /// Every second.
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// Appends frames to a recording file.
#[derive(Debug)]
pub struct FileLink {
    path: PathBuf,
    policy: FsyncPolicy,
    file: Option<File>,
    /// Length of the file up to the last complete frame.
    committed: u64,
    last_sync: Instant,
    stats: LinkStats,
}

impl FileLink {
    /// Opens (creating if needed) `path` for appending. A missing directory
    /// or no permission is [`LinkError::Config`].
    pub fn open(path: impl AsRef<Path>, policy: FsyncPolicy) -> Result<Self, LinkError> {
        let mut link = Self {
            path: path.as_ref().to_path_buf(),
            policy,
            file: None,
            committed: 0,
            last_sync: Instant::now(),
            stats: LinkStats::default(),
        };
        link.reconnect()?;
        Ok(link)
    }

    /// The recording's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the recording, all of them complete frames.
    pub fn len(&self) -> u64 {
        self.committed
    }

    /// True when the recording holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Forces everything written so far to the medium now.
    pub fn sync(&mut self) -> Result<(), LinkError> {
        if let Some(file) = self.file.as_ref() {
            file.sync_data().map_err(|e| self.io_error(e))?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn io_error(&self, source: io::Error) -> LinkError {
        if source.kind() == io::ErrorKind::StorageFull {
            LinkError::DiskFull {
                path: self.path.clone(),
                kept_bytes: self.committed,
            }
        } else {
            LinkError::Io {
                link: self.name(),
                source,
            }
        }
    }
}

impl Link for FileLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let Some(file) = self.file.as_mut() else {
            return Err(LinkError::Io {
                link: self.name(),
                source: io::Error::new(io::ErrorKind::NotConnected, "recording is closed"),
            });
        };
        if let Err(e) = file.write_all(frame) {
            // Cut a partial frame off again so the recording ends cleanly.
            // Best effort: character devices such as /dev/full cannot be
            // truncated, and have nothing to cut.
            let _ = file.set_len(self.committed);
            return Err(self.io_error(e));
        }
        self.committed += frame.len() as u64;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        let due = match self.policy {
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryFrame => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
        };
        if due {
            self.sync()?;
        }
        Ok(())
    }

    fn poll_incoming(&mut self, _timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        Ok(Vec::new())
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        if self.file.is_some() {
            let _ = self.sync();
        }
        self.file = None;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| {
                let fix = match e.kind() {
                    io::ErrorKind::NotFound => "create its directory first",
                    io::ErrorKind::PermissionDenied => {
                        "choose a writable location or fix the directory's permissions"
                    }
                    _ => "check the path",
                };
                LinkError::Config {
                    link: self.name(),
                    problem: format!("cannot open the recording for appending ({e}): {fix}"),
                }
            })?;
        self.committed = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        self.last_sync = Instant::now();
        self.stats.connects += 1;
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.file.is_some()
    }

    fn is_bidirectional(&self) -> bool {
        false
    }

    fn set_hello(&mut self, _frame: Vec<u8>) {}

    fn stats(&self) -> LinkStats {
        self.stats
    }

    fn describe(&self) -> String {
        self.name()
    }
}

impl Drop for FileLink {
    fn drop(&mut self) {
        if self.policy != FsyncPolicy::Never {
            let _ = self.sync();
        }
    }
}
