//! `latentcam-host replay`: the heads over a recording at full speed — how
//! a head trained today answers for latents recorded months ago, without
//! touching a device.

use std::io::{Read, Write};
use std::sync::Arc;

use latentcam_model::manifest::Manifest;

use crate::heads::Head;
use crate::ingest::{Context, Job, Limits, Live, Registry, WorkerStats, run_heads};

/// What a replay did besides the result lines.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// The head worker's counters.
    pub worker: WorkerStats,
    /// Latents skipped: no accepted `Hello` before them, a payload that did
    /// not decode, or a duplicate sequence number.
    pub skipped: u64,
    /// Frames the wire decoder rejected.
    pub frame_errors: u64,
    /// Why devices' sessions were refused or closed (the first few).
    pub refused: Vec<String>,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading the recording.
    #[error("reading the recording failed: {0}")]
    Recording(std::io::Error),
    /// Writing results.
    #[error("writing results: {0}")]
    Output(#[from] std::io::Error),
    /// The head worker panicked.
    #[error("the head worker panicked")]
    Worker,
}

/// Runs `heads` on every latent of `reader`, writing one JSON line per
/// latent to `out` (the same lines `serve` writes: the frames go through
/// the same session checks as [`crate::ingest::file::RecordingIngest`]).
/// `progress` hears the bytes read so far.
pub fn replay<R: Read>(
    reader: R,
    manifest: &Manifest,
    heads: Vec<Box<dyn Head>>,
    out: Box<dyn Write + Send>,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let context = Context {
        manifest: manifest.clone(),
        registry: Arc::new(Registry::in_memory()),
        limits: Limits::default(),
        host_id: "latentcam-replay".into(),
        max_connections: 1,
        live: Arc::default(),
        index: None,
        fewshot: None,
        encoder: None,
        auth: Arc::new(crate::auth::HostAuth::none()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(256);
    let worker = {
        let registry = Arc::clone(&context.registry);
        std::thread::spawn(move || {
            let mut out = out;
            run_heads(rx, heads, &mut out, &registry, &Live::default(), None)
        })
    };
    let mut read = 0u64;
    let counting = CountingReader {
        inner: reader,
        read: &mut read,
        progress: &mut progress,
    };
    let (_keep_running, running) = tokio::sync::watch::channel(false);
    let result = crate::ingest::file::read(counting, "replay", false, &context, &tx, &running);
    drop(tx);
    let worker = worker.join().map_err(|_| ReplayError::Worker)?;
    let stats = result.map_err(ReplayError::Recording)?;
    Ok(ReplaySummary {
        worker: worker?,
        skipped: stats.skipped,
        frame_errors: stats.frame_errors,
        refused: stats.reasons,
    })
}

struct CountingReader<'a, R, F> {
    inner: R,
    read: &'a mut u64,
    progress: &'a mut F,
}

impl<R: Read, F: FnMut(u64)> Read for CountingReader<'_, R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.read += n as u64;
        (self.progress)(*self.read);
        Ok(n)
    }
}
