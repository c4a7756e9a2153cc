//! The host's own recordings: every latent it accepts, in the wire stream
//! format, in rotating files — the store that later heads are trained on
//! and replayed over (`train`, `replay`).
//!
//! Files are `latents-<unix µs, 20 digits>.lcr` in one directory. Each file
//! stands alone and reads like one device stream after another: a latent
//! belongs to the last `Hello` before it (wire/SPEC.md), so the device's
//! `Hello` is written at the start of a file and again whenever the
//! previous latent came from another device. With many devices interleaved
//! that costs one `Hello` (≈ 130 bytes) per device switch. A file is closed when it reaches
//! `max_file_bytes` or `max_file_age`; the oldest files are deleted while the
//! directory holds more than `max_total_bytes`.
//!
//! Durability: the head worker calls [`Recorder::sync`] once per batch,
//! before the batch's latents are acknowledged, so an acknowledged latent is
//! on disk in a recording. A file is synced as it is closed, and a new
//! file's directory entry as it is created.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Rotation and retention.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Directory of the recordings.
    pub dir: PathBuf,
    /// A file is closed at this size.
    pub max_file_bytes: u64,
    /// ...or this age.
    pub max_file_age: Duration,
    /// Oldest files are deleted beyond this total.
    pub max_total_bytes: u64,
}

impl RecorderConfig {
    /// 64 MB or one hour per file, 10 GB in all.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: 64 << 20,
            max_file_age: Duration::from_secs(3600),
            max_total_bytes: 10 << 30,
        }
    }
}

struct Current {
    writer: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
    /// The device whose `Hello` was written last.
    last_device: Option<String>,
}

/// Writes accepted latents to rotating recording files.
pub struct Recorder {
    config: RecorderConfig,
    current: Option<Current>,
    /// Closed files, oldest first, with their sizes.
    closed: VecDeque<(PathBuf, u64)>,
}

fn context(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("recording {}: {e}", path.display()))
}

impl Recorder {
    /// Opens the directory (creating it) and takes stock of earlier files.
    pub fn open(config: RecorderConfig) -> io::Result<Self> {
        fs::create_dir_all(&config.dir).map_err(context(&config.dir))?;
        let mut files: Vec<(PathBuf, u64)> = fs::read_dir(&config.dir)
            .map_err(context(&config.dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "lcr"))
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        files.sort();
        Ok(Self {
            config,
            current: None,
            closed: files.into(),
        })
    }

    /// The file being written, if any.
    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// Records one latent frame of `device`, preceded by the device's
    /// `Hello` frame unless the file's last `Hello` is this device's.
    /// Flushed to the operating system before returning.
    pub fn record(&mut self, device: &str, hello: &[u8], latent: &[u8]) -> io::Result<()> {
        let rotate = self.current.as_ref().is_none_or(|c| {
            c.bytes >= self.config.max_file_bytes || c.opened.elapsed() >= self.config.max_file_age
        });
        if rotate {
            self.rotate()?;
        }
        let c = self.current.as_mut().expect("rotate opened a file");
        if c.last_device.as_deref() != Some(device) {
            c.writer.write_all(hello).map_err(context(&c.path))?;
            c.bytes += hello.len() as u64;
            c.last_device = Some(device.to_owned());
        }
        c.writer.write_all(latent).map_err(context(&c.path))?;
        c.bytes += latent.len() as u64;
        c.writer.flush().map_err(context(&c.path))
    }

    /// Puts everything recorded so far on stable storage (`fdatasync` of
    /// the current file; closed files were synced as they were closed).
    pub fn sync(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(c) => {
                c.writer.flush().map_err(context(&c.path))?;
                c.writer.get_ref().sync_data().map_err(context(&c.path))
            }
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut c) = self.current.take() {
            // Latents of the batch being recorded may sit in this file, and
            // the batch's commit syncs only the new one.
            c.writer.flush().map_err(context(&c.path))?;
            c.writer.get_ref().sync_data().map_err(context(&c.path))?;
            self.closed.push_back((c.path, c.bytes));
        }
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut path = self.config.dir.join(format!("latents-{stamp:020}.lcr"));
        let mut n = 1;
        while path.exists() {
            path = self.config.dir.join(format!("latents-{stamp:020}-{n}.lcr"));
            n += 1;
        }
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(context(&path))?;
        crate::heads::state_file::sync_parent_dir(&path).map_err(context(&self.config.dir))?;
        self.current = Some(Current {
            writer: BufWriter::new(file),
            path,
            bytes: 0,
            opened: Instant::now(),
            last_device: None,
        });
        self.enforce_retention()
    }

    fn enforce_retention(&mut self) -> io::Result<()> {
        let mut total: u64 = self.closed.iter().map(|(_, b)| b).sum();
        while total > self.config.max_total_bytes {
            let Some((path, bytes)) = self.closed.pop_front() else {
                break;
            };
            fs::remove_file(&path).map_err(context(&path))?;
            total -= bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths.iter().map(|p| fs::read(p).unwrap()).collect()
    }

    #[test]
    fn rotates_repeats_hello_per_file_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("latentcam-recorder-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = RecorderConfig {
            max_file_bytes: 10,
            max_total_bytes: 25,
            ..RecorderConfig::new(&dir)
        };
        let mut recorder = Recorder::open(config).unwrap();
        // Hello 2 bytes + two 4-byte latents reach 10 bytes: one file each.
        for i in 0..9u8 {
            recorder.record("cam", b"HH", &[i; 4]).unwrap();
        }
        let kept = files(&dir);
        // Files of 10, 10, 10, 10 and 6 bytes were written; closed files
        // beyond 25 bytes in all were deleted, oldest first.
        assert_eq!(kept.len(), 3, "{kept:?}");
        for bytes in &kept {
            assert_eq!(&bytes[..2], b"HH", "every file starts with the Hello");
        }
        assert_eq!(kept[2], b"HH\x08\x08\x08\x08".to_vec());
        assert_eq!(kept[0], b"HH\x04\x04\x04\x04\x05\x05\x05\x05".to_vec());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn interleaved_devices_repeat_their_hello_at_each_switch() {
        let dir =
            std::env::temp_dir().join(format!("latentcam-recorder-switch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut recorder = Recorder::open(RecorderConfig::new(&dir)).unwrap();
        recorder.record("a", b"A", b"1").unwrap();
        recorder.record("a", b"A", b"2").unwrap();
        recorder.record("b", b"B", b"3").unwrap();
        recorder.record("a", b"A", b"4").unwrap();
        // Every latent follows its own device's Hello.
        assert_eq!(files(&dir), vec![b"A12B3A4".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
