//! Replay of a directory of JPEG/PNG images, in file-name order.
//!
//! The directory is listed again at the start of every pass, so images
//! added while looping join the next pass. An image that fails to decode is
//! reported as [`SourceError::Corrupt`] and skipped. If the directory goes
//! away the source reports [`SourceError::Disappeared`]; `reopen` succeeds
//! once it is back and continues with the first image after the last one
//! delivered.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Frame, FrameSource, Pace, Pacer, ReplayOptions, SourceError, SourceEvent, period_for};

/// Extensions replayed, compared case-insensitively.
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Replays the images of one directory.
#[derive(Debug)]
pub struct ImageDirSource {
    dir: PathBuf,
    options: ReplayOptions,
    files: Vec<PathBuf>,
    /// Position in `files` of the next image.
    position: usize,
    /// File name of the last image delivered, to resume after a reopen.
    last_name: Option<OsString>,
    /// False after a disappearance until `reopen` succeeds.
    present: bool,
    finished: bool,
    /// Frames delivered in the current pass, to stop a looping replay of a
    /// directory whose every image is corrupt from spinning.
    delivered_this_pass: u64,
    index: u64,
    pacer: Pacer,
    bytes: Vec<u8>,
}

impl ImageDirSource {
    /// Opens `dir`, which must hold at least one `.jpg`, `.jpeg` or `.png`.
    pub fn open(dir: &Path, options: ReplayOptions) -> Result<Self, SourceError> {
        let period = match options.pace {
            Pace::Fps(fps) => Some(period_for(&dir.display(), fps)?),
            Pace::Native | Pace::AsFastAsPossible => None,
        };
        if !dir.is_dir() {
            return Err(SourceError::config(
                dir.display(),
                "is not a directory",
                "give a directory of JPEG/PNG images, or a video file",
            ));
        }
        let mut source = Self {
            dir: dir.to_path_buf(),
            options,
            files: Vec::new(),
            position: 0,
            last_name: None,
            present: true,
            finished: false,
            delivered_this_pass: 0,
            index: 0,
            pacer: Pacer::new(period),
            bytes: Vec::new(),
        };
        source.list()?;
        if source.files.is_empty() {
            return Err(SourceError::config(
                dir.display(),
                "holds no .jpg, .jpeg or .png file",
                "put images in it or point the replay at another directory",
            ));
        }
        Ok(source)
    }

    /// Images in the current listing.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the current listing is empty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn list(&mut self) -> Result<(), SourceError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| self.io_error(&e))?;
        self.files.clear();
        for entry in entries {
            let path = entry.map_err(|e| self.io_error(&e))?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
            if is_image && path.is_file() {
                self.files.push(path);
            }
        }
        self.files.sort();
        // Resume after the last image delivered.
        self.position = match &self.last_name {
            Some(last) => self
                .files
                .iter()
                .position(|p| p.file_name().is_some_and(|n| n > last.as_os_str()))
                .unwrap_or(self.files.len()),
            None => 0,
        };
        Ok(())
    }

    fn io_error(&mut self, e: &std::io::Error) -> SourceError {
        if !self.dir.is_dir() {
            self.present = false;
            SourceError::disappeared(self.dir.display(), e)
        } else {
            SourceError::config(
                self.dir.display(),
                format!("cannot be read: {e}"),
                "check its permissions",
            )
        }
    }

    /// Starts the next pass; `false` when the replay is over.
    fn next_pass(&mut self) -> Result<bool, SourceError> {
        if !self.options.looping {
            self.finished = true;
            return Ok(false);
        }
        if self.delivered_this_pass == 0 {
            return Err(SourceError::config(
                self.dir.display(),
                "no image in it could be decoded",
                "put readable JPEG/PNG images in it",
            ));
        }
        self.last_name = None;
        self.delivered_this_pass = 0;
        self.list()?;
        // Every image was removed while looping: the replay is over.
        self.finished = self.files.is_empty();
        Ok(!self.finished)
    }
}

impl FrameSource for ImageDirSource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        if !self.present {
            return Err(SourceError::disappeared(
                self.dir.display(),
                "not reopened yet",
            ));
        }
        loop {
            if self.finished {
                return Ok(SourceEvent::End);
            }
            if self.position >= self.files.len() && !self.next_pass()? {
                return Ok(SourceEvent::End);
            }
            let path = self.files[self.position].clone();
            self.bytes.clear();
            let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut self.bytes));
            if let Err(e) = read {
                if e.kind() == std::io::ErrorKind::NotFound && self.dir.is_dir() {
                    // The file alone was removed: list again and go on.
                    self.list()?;
                    continue;
                }
                return Err(self.io_error(&e));
            }
            self.position += 1;
            self.last_name = path.file_name().map(|n| n.to_os_string());
            if let Err(detail) = crate::picture::decode_into(&self.bytes, frame) {
                return Err(SourceError::corrupt(path.display(), detail));
            }
            self.pacer.wait(frame);
            frame.index = self.index;
            self.index += 1;
            self.delivered_this_pass += 1;
            return Ok(SourceEvent::Frame);
        }
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        if !self.dir.is_dir() {
            return Err(SourceError::disappeared(
                self.dir.display(),
                "no such directory",
            ));
        }
        self.list()?;
        self.present = true;
        Ok(())
    }

    fn describe(&self) -> String {
        let pace = match self.options.pace {
            Pace::Fps(fps) => format!("{fps} fps"),
            Pace::Native | Pace::AsFastAsPossible => "as fast as possible".to_string(),
        };
        format!(
            "image replay of {} ({} images, {pace}, {})",
            self.dir.display(),
            self.files.len(),
            if self.options.looping {
                "looping"
            } else {
                "once"
            }
        )
    }
}
