//! Frame sources: where the edge program's frames come from.
//!
//! Every source implements [`FrameSource`] and fills a caller-owned
//! [`Frame`], so one buffer serves the whole run:
//!
//! | source | module | needs |
//! |---|---|---|
//! | directory of JPEG/PNG images | [`image_dir`] | nothing |
//! | video file (.avi, .mp4, …) | [`video`] | `ffmpeg` and `ffprobe` on `PATH` at run time |
//! | moving test pattern | [`synthetic`] | nothing |
//! | V4L2 camera | [`v4l`] | cargo feature `v4l` (bindgen, libclang at build time) |
//!
//! Errors come in three kinds ([`SourceError::kind`]): a corrupt frame (skip
//! it, count it, call again), a source that disappeared (reopen it, which
//! [`Reopening`] does with exponential backoff), and fatal configuration
//! errors.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crate::backoff::Backoff;

pub mod image_dir;
pub mod synthetic;
pub mod v4l;
pub mod video;

pub use image_dir::ImageDirSource;
pub use synthetic::{SyntheticOptions, SyntheticSource};
pub use video::{VideoInfo, VideoSource, probe_video};

/// One packed RGB8 frame, owned by the caller and refilled by a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// Pixels, row-major, `width × height × 3` bytes, R G B.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Microseconds since the source started; strictly increasing across
    /// the frames of one source, loops and reopenings included.
    pub capture_us: u64,
    /// The same instant on the real-time clock; `None` when that clock was
    /// never set.
    pub wall: Option<latentcam_wire::WallTime>,
    /// Frames the source delivered before this one (0-based); corrupt
    /// frames that were skipped are not counted.
    pub index: u64,
}

impl Frame {
    /// An empty frame; the first `next_frame` sizes it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the size and returns the pixel buffer of exactly
    /// `width × height × 3` bytes, reusing the allocation when it is big
    /// enough.
    pub fn resize(&mut self, width: u32, height: u32) -> &mut [u8] {
        self.width = width;
        self.height = height;
        self.rgb.resize(width as usize * height as usize * 3, 0);
        &mut self.rgb
    }
}

impl crate::picture::RgbBuffer for Frame {
    fn resize(&mut self, width: u32, height: u32) -> &mut [u8] {
        Frame::resize(self, width, height)
    }
}

/// What [`FrameSource::next_frame`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceEvent {
    /// The frame was filled.
    Frame,
    /// A replay finished and does not loop; further calls return `End` again.
    End,
}

/// How a caller should react to a [`SourceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// One frame could not be decoded: count it and call `next_frame` again.
    Corrupt,
    /// The device or file went away: call [`FrameSource::reopen`] with
    /// backoff (or wrap the source in [`Reopening`]).
    Disappeared,
    /// Retrying will not help: fix the configuration or the installation.
    Fatal,
}

/// Errors of a frame source. Every message names the file or device and
/// says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// One frame could not be decoded; the source has moved past it.
    #[error(
        "{origin}: skipped a frame that could not be decoded ({detail}); the source continues — if this repeats, check {origin} for damaged data"
    )]
    Corrupt {
        /// The file or device.
        origin: String,
        /// What the decoder said.
        detail: String,
    },
    /// The device or the replayed file or directory is gone.
    #[error(
        "{origin} disappeared ({detail}); reconnect the camera or put the file back — the source is reopened when it returns"
    )]
    Disappeared {
        /// The file or device.
        origin: String,
        /// What the system said.
        detail: String,
    },
    /// The source cannot work as configured.
    #[error("{origin}: {problem}; {fix}")]
    Config {
        /// The file or device.
        origin: String,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// The source was compiled out of this build.
    #[error("{origin}: built without {feature} support (rebuild with --features {feature})")]
    NotCompiled {
        /// The file or device that was asked for.
        origin: String,
        /// The cargo feature that enables the source.
        feature: &'static str,
    },
}

impl SourceError {
    /// How the caller should react.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Corrupt { .. } => ErrorKind::Corrupt,
            SourceError::Disappeared { .. } => ErrorKind::Disappeared,
            SourceError::Config { .. } | SourceError::NotCompiled { .. } => ErrorKind::Fatal,
        }
    }

    pub(crate) fn config(
        origin: impl fmt::Display,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        SourceError::Config {
            origin: origin.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn corrupt(origin: impl fmt::Display, detail: impl fmt::Display) -> Self {
        SourceError::Corrupt {
            origin: origin.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn disappeared(origin: impl fmt::Display, detail: impl fmt::Display) -> Self {
        SourceError::Disappeared {
            origin: origin.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// A camera, a replay or a test pattern.
///
/// `reopen` is part of the trait rather than left to a wrapper because only
/// the source knows how to get back to where it was (the next file of a
/// directory, the same position in a video, the negotiated camera format).
pub trait FrameSource: Send {
    /// Fills `frame` with the next frame, pacing to the source's frame rate.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError>;

    /// Tries once to get a source that returned
    /// [`ErrorKind::Disappeared`] going again. Returns `Disappeared` while
    /// it is still gone.
    fn reopen(&mut self) -> Result<(), SourceError>;

    /// One line for logs: what this source is and how it is set up.
    fn describe(&self) -> String;
}

impl fmt::Debug for dyn FrameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        (**self).next_frame(frame)
    }
    fn reopen(&mut self) -> Result<(), SourceError> {
        (**self).reopen()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Frame pacing of a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Pace {
    /// The file's own frame rate (ffprobe's `r_frame_rate`); for an image
    /// directory, which has none, as fast as possible.
    Native,
    /// This many frames per second.
    Fps(f64),
    /// No waiting: as fast as frames can be decoded.
    AsFastAsPossible,
}

/// Options shared by the replay sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Frame pacing.
    pub pace: Pace,
    /// Start again from the first frame at the end instead of returning
    /// [`SourceEvent::End`].
    pub looping: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            pace: Pace::Native,
            looping: false,
        }
    }
}

/// Opens a replay: a directory of images or a video file, chosen by what
/// `path` is.
pub fn open_replay(
    path: &Path,
    options: ReplayOptions,
) -> Result<Box<dyn FrameSource>, SourceError> {
    if path.is_dir() {
        Ok(Box::new(ImageDirSource::open(path, options)?))
    } else {
        Ok(Box::new(VideoSource::open(path, options)?))
    }
}

/// Checks a frame rate given on the command line or in a config file.
pub(crate) fn period_for(origin: &dyn fmt::Display, fps: f64) -> Result<Duration, SourceError> {
    if !(fps.is_finite() && fps > 0.0 && fps <= 10_000.0) {
        return Err(SourceError::config(
            origin,
            format!("frame rate {fps} is not usable"),
            "give a frame rate between 0 and 10000 frames per second",
        ));
    }
    Ok(Duration::from_secs_f64(1.0 / fps))
}

/// Paces frames against a monotonic clock and stamps `capture_us` and the
/// wall-clock time.
///
/// Deadlines advance by one period per frame, so the rate does not drift;
/// after a stall longer than a period (a reopen, a slow consumer) the
/// schedule restarts from now instead of bursting to catch up.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    start: Instant,
    period: Option<Duration>,
    next_deadline: Option<Instant>,
    last_us: Option<u64>,
    wall: crate::clock::WallClock,
}

impl Pacer {
    pub(crate) fn new(period: Option<Duration>) -> Self {
        Self {
            start: Instant::now(),
            period,
            next_deadline: None,
            last_us: None,
            wall: crate::clock::WallClock::new(),
        }
    }

    /// Waits for the next frame's deadline and stamps `frame` with it.
    pub(crate) fn wait(&mut self, frame: &mut Frame) {
        if let Some(period) = self.period {
            let now = Instant::now();
            let deadline = match self.next_deadline {
                Some(d) if now <= d + period => d,
                _ => now,
            };
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            self.next_deadline = Some(deadline + period);
        }
        self.stamp(frame);
    }

    /// Stamps `frame` with now: `capture_us` strictly after the previous
    /// stamp, and the wall-clock time.
    pub(crate) fn stamp(&mut self, frame: &mut Frame) {
        frame.capture_us = self.monotonic_us();
        frame.wall = self.wall.now();
    }

    fn monotonic_us(&mut self) -> u64 {
        let mut us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(last) = self.last_us {
            us = us.max(last.saturating_add(1));
        }
        self.last_us = Some(us);
        us
    }
}

/// What [`Reopening`] tells its observer.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReopenNotice<'a> {
    /// The source disappeared; reopening starts.
    Lost {
        /// Why.
        error: &'a SourceError,
    },
    /// A reopen attempt failed; the next one follows after `retry_in`.
    Failed {
        /// 1 for the first attempt.
        attempt: u32,
        /// Why it failed.
        error: &'a SourceError,
        /// Wait before the next attempt.
        retry_in: Duration,
    },
    /// The source is back.
    Recovered {
        /// Attempts it took, the successful one included.
        attempts: u32,
    },
}

type Observer = Box<dyn FnMut(&ReopenNotice<'_>) + Send>;

/// Wraps a source and reopens it with exponential backoff whenever it
/// disappears, telling an observer (typically a log line and the status
/// LED) what happens. Corrupt frames and fatal errors pass through.
pub struct Reopening<S> {
    inner: S,
    backoff: Backoff,
    max_attempts: Option<u32>,
    observer: Observer,
    reopens: u64,
    stop: Option<Arc<AtomicBool>>,
}

impl<S: FrameSource> Reopening<S> {
    /// Wraps `inner`; `observer` hears about every loss, failed attempt and
    /// recovery. Reopening waits `backoff` between attempts and gives up after
    /// `max_attempts` (`None`: for ever, what a camera in the field wants).
    pub fn new(
        inner: S,
        backoff: Backoff,
        max_attempts: Option<u32>,
        observer: impl FnMut(&ReopenNotice<'_>) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            backoff,
            max_attempts,
            observer: Box::new(observer),
            reopens: 0,
            stop: None,
        }
    }

    /// Gives up reopening (returning the `Disappeared` error) as soon as
    /// `stop` becomes true, so a shutdown is not held up by a camera that is
    /// still unplugged.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Sleeps `delay` in short slices; false if a stop was requested.
    fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Successful reopenings so far.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the source.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn recover(&mut self, lost: &SourceError) -> Result<(), SourceError> {
        (self.observer)(&ReopenNotice::Lost { error: lost });
        self.backoff.reset();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.inner.reopen() {
                Ok(()) => {
                    self.reopens += 1;
                    (self.observer)(&ReopenNotice::Recovered { attempts: attempt });
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::Disappeared => {
                    if self.max_attempts.is_some_and(|max| attempt >= max) || self.stopped() {
                        return Err(error);
                    }
                    let delay = self.backoff.next_delay();
                    (self.observer)(&ReopenNotice::Failed {
                        attempt,
                        error: &error,
                        retry_in: delay,
                    });
                    if !self.pause(delay) {
                        return Err(error);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl<S: FrameSource> fmt::Debug for Reopening<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reopening")
            .field("source", &self.inner.describe())
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("reopens", &self.reopens)
            .finish()
    }
}

impl<S: FrameSource> FrameSource for Reopening<S> {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        loop {
            match self.inner.next_frame(frame) {
                Err(error) if error.kind() == ErrorKind::Disappeared => self.recover(&error)?,
                other => return other,
            }
        }
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.inner.reopen()
    }

    fn describe(&self) -> String {
        format!("{} (reopened when it disappears)", self.inner.describe())
    }
}
