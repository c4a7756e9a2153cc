//! `latentcam-host replay`: the heads over a recording at full speed — how
//! a head trained today answers for latents recorded months ago, without
//! touching a device.

use std::io::{Read, Write};
use std::sync::Arc;

use latentcam_firmware::manifest::Manifest;
use latentcam_wire::Message;

use crate::heads::Head;
use crate::ingest::{Job, Live, Registry, WorkerStats, run_heads};
use crate::recording::{RecordingError, for_each_frame};
use crate::session::check_hello;

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
    /// Devices refused by the manifest check, with the reason.
    pub refused: Vec<(String, String)>,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading the recording.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// Writing results.
    #[error("writing results: {0}")]
    Output(#[from] std::io::Error),
    /// The head worker panicked.
    #[error("the head worker panicked")]
    Worker,
}

/// Runs `heads` on every latent of `reader`, writing one JSON line per
/// latent to `out` (the same lines `serve` writes). `progress` hears the
/// bytes read so far.
pub fn replay<R: Read>(
    reader: R,
    manifest: &Manifest,
    heads: Vec<Box<dyn Head>>,
    out: Box<dyn Write + Send>,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let registry = Arc::new(Registry::in_memory());
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(256);
    let worker = {
        let registry = Arc::clone(&registry);
        std::thread::spawn(move || {
            let mut out = out;
            run_heads(rx, heads, &mut out, &registry, &Live::default(), None)
        })
    };
    let mut summary = ReplaySummary::default();
    let mut device: Option<(String, usize, Arc<[u8]>)> = None;
    let mut read = 0u64;
    let counting = CountingReader {
        inner: reader,
        read: &mut read,
        progress: &mut progress,
    };
    let result = for_each_frame(counting, |item| match item {
        Ok(Message::Hello(hello)) => match check_hello(manifest, &hello) {
            Ok(()) => {
                let frame = latentcam_wire::frame::encode_to_vec(&Message::Hello(hello))
                    .unwrap_or_default()
                    .into();
                device = Some((
                    hello.device_id.to_owned(),
                    hello.model.latent_dim as usize,
                    frame,
                ));
            }
            Err(refusal) => {
                device = None;
                summary
                    .refused
                    .push((hello.device_id.to_owned(), refusal.reason));
            }
        },
        Ok(Message::Latent(latent)) => {
            let Some((id, dim, hello)) = &device else {
                summary.skipped += 1;
                return;
            };
            let vector = match latent.codec.decode_to_vec(latent.payload) {
                Ok(v) if v.len() == *dim => v,
                _ => {
                    summary.skipped += 1;
                    return;
                }
            };
            if !registry.admit(id, latent.seq) {
                summary.skipped += 1;
                return;
            }
            let job = Job {
                frame: latentcam_wire::frame::encode_to_vec(&Message::Latent(latent))
                    .unwrap_or_default(),
                hello: Arc::clone(hello),
                device: id.clone(),
                seq: latent.seq,
                capture_us: latent.capture_us,
                frame_size: (latent.frame_width, latent.frame_height),
                payload_bytes: latent.payload.len(),
                latent: vector,
            };
            // Only fails if the worker died; its error is reported below.
            let _ = tx.blocking_send(job);
        }
        Ok(_) => {}
        Err(_) => summary.frame_errors += 1,
    });
    drop(tx);
    let worker = worker.join().map_err(|_| ReplayError::Worker)?;
    result?;
    summary.worker = worker?;
    Ok(summary)
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
