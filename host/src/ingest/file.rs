//! The recording ingest: a file in the wire stream format — an edge's
//! `file` link or a host recording — read once, or followed as it grows
//! (an edge writing to a shared directory or a USB stick).
//!
//! The file is a one-way link (wire/SPEC.md §2): every latent belongs to the
//! last `Hello` before it, each `Hello` is checked like a connection's, and
//! nothing is sent back. Latents the registry already holds (a host
//! restarted with its `--jsonl`, or a file read twice) count as duplicates
//! and are not run again. Corrupt frames are counted and skipped; the frames
//! after them are read.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latentcam_wire::{Message, frame};
use tokio::sync::{mpsc, watch};

use super::{Conn, Context, Ingest, IngestKind, Job, Limits, Running, ServeError, Started, Step};
use crate::auth::HostAuth;
use crate::recording::for_each_frame;

/// How often a followed file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A recording file as a device source.
#[derive(Debug, Clone)]
pub struct RecordingIngest {
    /// The file.
    pub path: PathBuf,
    /// Keep reading as the file grows, until the host stops; otherwise
    /// stop at its end.
    pub follow: bool,
}

/// Close reasons kept in [`RecordingStats::reasons`].
const KEPT_REASONS: usize = 10;

/// What reading a recording did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Frames read (every kind).
    pub frames: u64,
    /// Latents handed to the heads.
    pub latents: u64,
    /// Frames that did not decode.
    pub frame_errors: u64,
    /// Sessions ended by a refused `Hello` or a protocol violation; the
    /// latents that followed until the next accepted `Hello` were skipped.
    pub refusals: u64,
    /// The first few refusal reasons.
    pub reasons: Vec<String>,
    /// Latents not run: after a refused or missing `Hello`, or already held
    /// (duplicates).
    pub skipped: u64,
}

impl Ingest for RecordingIngest {
    fn kind(&self) -> IngestKind {
        IngestKind::Recording
    }

    fn describe(&self) -> String {
        let how = if self.follow { "following" } else { "reading" };
        format!("recording {} ({how})", self.path.display())
    }

    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError> {
        let file = File::open(&self.path).map_err(|source| ServeError::Recording {
            path: self.path.clone(),
            source,
        })?;
        Ok(Started {
            local: None,
            task: tokio::task::spawn_blocking(move || {
                let path = self.path.display().to_string();
                match read(
                    file,
                    &path,
                    self.follow,
                    &running.context,
                    &running.jobs,
                    &running.shutdown,
                ) {
                    Ok(stats) => tracing::info!(
                        latents = stats.latents,
                        frames = stats.frames,
                        frame_errors = stats.frame_errors,
                        refusals = stats.refusals,
                        "recording {path}: done"
                    ),
                    Err(e) => tracing::error!("recording {path}: {e}"),
                }
            }),
        })
    }
}

/// Reads `reader` to its end (or, following, until `shutdown`), feeding
/// each frame to a session and each accepted latent to `jobs`.
pub fn read<R: Read>(
    reader: R,
    name: &str,
    follow: bool,
    ctx: &Context,
    jobs: &mpsc::Sender<Job>,
    shutdown: &watch::Receiver<bool>,
) -> io::Result<RecordingStats> {
    // A file is read as fast as the heads take it; no Hello deadline.
    let limits = Limits {
        hello_timeout: Duration::from_secs(365 * 24 * 3600),
        idle_timeout: Duration::from_secs(365 * 24 * 3600),
        max_fps: 1e12,
        burst: 1e12,
        seq_window: false,
        ..ctx.limits
    };
    // A recording is the operator's own file, and its Hellos carry no
    // authentication offer (the host records them without): nothing to
    // authenticate, whatever the live ingests require.
    let auth = Arc::new(HostAuth::none());
    let new_conn = || Conn::new(name.to_owned(), limits, Arc::clone(&auth), Instant::now());
    let mut conn = new_conn();
    let mut stats = RecordingStats::default();
    let mut steps = Vec::new();
    let mut stopped = false;
    let following = Following {
        inner: reader,
        follow,
        shutdown,
    };
    for_each_frame(following, |item| {
        if stopped {
            return;
        }
        stats.frames += 1;
        let message = match item {
            Ok(m) => m,
            Err(_) => {
                stats.frame_errors += 1;
                if let Some(device) = conn.device() {
                    ctx.registry.update(device, |r| r.frame_errors += 1);
                }
                return;
            }
        };
        match message {
            // Skipped with its refused (or missing) Hello.
            Message::Latent(_) if conn.device().is_none() => {
                stats.skipped += 1;
                return;
            }
            // An orderly end of one device's stream; another may follow.
            Message::Bye(_) => {
                conn = new_conn();
                return;
            }
            _ => {}
        }
        let is_latent = matches!(message, Message::Latent(_));
        let mut sent = false;
        let Ok(bytes) = frame::encode_to_vec(&message) else {
            stats.frame_errors += 1;
            return;
        };
        conn.feed(&bytes, Instant::now(), ctx.env(), &mut steps);
        for step in steps.drain(..) {
            match step {
                Step::Reply(_) => {}
                Step::Job(job) => {
                    if jobs.blocking_send(job).is_err() {
                        stopped = true;
                    }
                    stats.latents += 1;
                    sent = true;
                }
                Step::Close(why) => {
                    if stats.reasons.len() < KEPT_REASONS {
                        tracing::warn!("{why}");
                        stats.reasons.push(why);
                    }
                    stats.refusals += 1;
                    conn = new_conn();
                }
            }
        }
        if is_latent && !sent {
            stats.skipped += 1;
        }
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(stats)
}

/// A reader that, at the end of the file, waits for more unless told not
/// to follow or the host is stopping.
struct Following<'a, R> {
    inner: R,
    follow: bool,
    shutdown: &'a watch::Receiver<bool>,
}

impl<R: Read> Read for Following<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if *self.shutdown.borrow() {
                return Ok(0);
            }
            let n = self.inner.read(buf)?;
            if n > 0 || !self.follow {
                return Ok(n);
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}
