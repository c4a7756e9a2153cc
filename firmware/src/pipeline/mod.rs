//! The edge pipeline: capture → preprocess → encoder → codec → link.
//!
//! Four threads joined by three queues:
//!
//! ```text
//!  capture ──LatestQueue(n)──▶ preprocess ──channel(1)──▶ encode ──channel(64)──▶ link ──▶ host
//!  (source:  oldest dropped    (resize, crop,             (encoder,              (spool, Hello/Welcome,
//!   decode)                     normalise)                  codec)                 Ack, resend, heartbeat)
//! ```
//!
//! * Capture never waits for the encoder: the queue between them keeps the
//!   newest `n` frames and evicts the oldest (counted as dropped).
//! * Decoding and preprocessing overlap with inference: while the encoder
//!   runs frame *k*, the preprocess thread prepares frame *k+1* and capture
//!   decodes *k+2*. With a LiteRT int8 encoder (about 5 ms per frame on
//!   one x86 core) decoding (about 2 ms) and preprocessing (about 1.7 ms)
//!   on the encoder's thread would cost over a third of the frame rate.
//!   The channel between preprocess and encode holds one tensor, so only
//!   the frame the encoder will take next is preprocessed ahead; the
//!   others wait (or are dropped) as frames, not as tensors.
//! * The encoder never waits for the network: the link thread drains its
//!   channel every few milliseconds, and while the host is away latents go
//!   to the on-disk [`Spool`] instead of the link.
//! * Frame buffers circulate between capture and preprocess, and tensors
//!   between preprocess and encode, so after warm-up neither is allocated.
//!
//! [`run`] returns when the source ends, when `stop` is set (SIGINT/SIGTERM
//! in the binary) or on a fatal error; on the way out the link thread
//! re-sends what the host has not acknowledged for up to
//! [`Settings::drain_timeout`], says `Bye` and syncs the spool.

mod health;
pub mod queue;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_wire::{AuthOffer, AuthScheme, Codec, Hello, Message, ModelIdentity, NONCE_LEN};
use serde::Serialize;

use crate::FIRMWARE_VERSION;
use crate::backoff::Backoff;
use crate::encoder::{Encoder, EncoderInfo};
use crate::led::{LedSignal, LedState};
use crate::link::Link;
use crate::preprocess::Preprocessor;
use crate::source::{ErrorKind, Frame, FrameSource, SourceError, SourceEvent};
use crate::spool::Spool;
use crate::stats::{Counters, LatencyWindow};
use queue::{LatestQueue, Pop};

pub use session::SessionReport;

/// Consecutive encoder failures after which the pipeline stops.
const MAX_CONSECUTIVE_ENCODER_ERRORS: u32 = 10;

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The frame source failed for good (fatal configuration, or a device
    /// that did not come back within the allowed attempts).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The encoder failed on every one of the last frames.
    #[error("encoder failed {count} times in a row, last: {last}")]
    Encoder {
        /// Consecutive failures.
        count: u32,
        /// The last error.
        last: String,
    },
    /// Framing failed (a bug or an impossible configuration).
    #[error("cannot frame a message: {0}")]
    Wire(String),
    /// A pipeline thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// The parts the pipeline runs, already opened and checked.
pub struct Parts {
    /// Where frames come from (wrap a camera in [`crate::source::Reopening`]).
    pub source: Box<dyn FrameSource>,
    /// The loaded encoder.
    pub encoder: Box<dyn Encoder>,
    /// Preprocessing for the encoder's input.
    pub preprocessor: Preprocessor,
    /// Where framed latents go.
    pub link: Box<dyn Link + Send>,
    /// Unacknowledged latents (only used on bidirectional links).
    pub spool: Option<Spool>,
}

/// How the pipeline behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Device id sent in `Hello`.
    pub device_id: String,
    /// Preprocessing id sent in `Hello` (from the manifest).
    pub preprocessing_id: String,
    /// Latent codec.
    pub codec: Codec,
    /// Frames waiting for the encoder; when full the oldest is dropped.
    pub queue: usize,
    /// Interval between heartbeats.
    pub heartbeat: Duration,
    /// Interval between progress lines in the log, if any.
    pub progress: Option<Duration>,
    /// Interval between repeated `Hello`s on one-way links.
    pub hello_repeat: Duration,
    /// How long to wait for `Welcome` after `Hello` on a bidirectional link.
    pub welcome_timeout: Duration,
    /// On shutdown, how long to keep trying to deliver and get acknowledged
    /// what is still pending.
    pub drain_timeout: Duration,
    /// Stop after this many captured frames (tests, benchmarks).
    pub max_frames: Option<u64>,
    /// Capture waits for the encoder instead of dropping the oldest frame:
    /// for unpaced replays, where waiting costs nothing and every frame of
    /// the file should be encoded. Never for a camera.
    pub lossless: bool,
    /// Delays between connection attempts.
    pub reconnect: Backoff,
    /// Authentication offered in `Hello`: [`AuthScheme::NoiseIk`] when the
    /// link is a [`crate::link::SecureLink`] (`[link] host_key` set),
    /// otherwise [`AuthScheme::None`].
    pub auth: AuthScheme,
}

impl Settings {
    /// Defaults for a device id and preprocessing id: U8 codec, queue of 2,
    /// heartbeat 5 s, progress line every 60 s, Hello repeat 10 s, Welcome timeout 5 s, drain 5 s.
    pub fn new(device_id: impl Into<String>, preprocessing_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            preprocessing_id: preprocessing_id.into(),
            codec: Codec::U8Affine,
            queue: 2,
            heartbeat: Duration::from_secs(5),
            progress: Some(Duration::from_secs(60)),
            hello_repeat: Duration::from_secs(10),
            welcome_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            max_frames: None,
            lossless: false,
            reconnect: Backoff::default(),
            auth: AuthScheme::None,
        }
    }
}

/// Timing of one pipeline stage over a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTiming {
    /// Frames measured.
    pub count: u64,
    /// Total seconds.
    pub total_s: f64,
    /// Median, 99th percentile and maximum, microseconds.
    pub p50_us: u32,
    /// See `p50_us`.
    pub p99_us: u32,
    /// See `p50_us`.
    pub max_us: u32,
}

#[derive(Debug, Clone)]
struct Stage {
    window: LatencyWindow,
    total: Duration,
    count: u64,
}

impl Stage {
    fn new() -> Self {
        Self {
            window: LatencyWindow::new(4096),
            total: Duration::ZERO,
            count: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        self.total += d;
        self.count += 1;
        self.window
            .record(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    fn finish(mut self) -> StageTiming {
        let s = self.window.take();
        StageTiming {
            count: self.count,
            total_s: self.total.as_secs_f64(),
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            max_us: s.max_us,
        }
    }
}

/// Per-stage timings. `capture` is the time inside the source's
/// `next_frame` (decoding, plus pacing waits when the source is paced);
/// `queue_wait` is how long a frame waited for the encoder; `send` is the
/// link thread's time per latent (spool write and link write).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Source `next_frame`.
    pub capture: StageTiming,
    /// Frame age when the encoder took it.
    pub queue_wait: StageTiming,
    /// Resize, crop, normalise.
    pub preprocess: StageTiming,
    /// The encoder.
    pub encode: StageTiming,
    /// Latent codec and framing.
    pub codec: StageTiming,
    /// Spool and link.
    pub send: StageTiming,
    /// Capture to latent written on the link (first attempt).
    pub end_to_end: StageTiming,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Inference backend that ran the encoder (`tract`, `tflite`, `litert`).
    pub backend: String,
    /// Precision of the encoder file (`fp32`, `int8`).
    pub precision: String,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames dropped because the encoder was busy (latest frame wins).
    pub dropped: u64,
    /// Frames the source or preprocessing could not use.
    pub corrupt: u64,
    /// Frames the encoder failed on.
    pub encoder_errors: u64,
    /// Latents produced.
    pub encoded: u64,
    /// Latents per second over the run.
    pub fps: f64,
    /// The link side.
    pub session: SessionReport,
    /// Stage timings.
    pub timings: Timings,
    /// Peak resident set size of the process, KiB (Linux `VmHWM`).
    pub peak_rss_kib: Option<u64>,
}

/// One latent on its way from the encoder to the link thread.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) payload: Vec<u8>,
    pub(crate) capture_us: u64,
    pub(crate) wall: Option<latentcam_wire::WallTime>,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) captured_at: Instant,
    pub(crate) encode_us: u32,
}

/// A latent already encoded elsewhere (another encoder, a load test), for
/// [`run_link`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedLatent {
    /// The latent, already packed with [`Settings::codec`].
    pub payload: Vec<u8>,
    /// Capture time, µs, device clock.
    pub capture_us: u64,
    /// Capture time on the real-time clock, when it is set.
    pub wall: Option<latentcam_wire::WallTime>,
    /// Source frame width in pixels.
    pub width: u32,
    /// Source frame height in pixels.
    pub height: u32,
}

impl From<EncodedLatent> for Encoded {
    fn from(latent: EncodedLatent) -> Self {
        Self {
            payload: latent.payload,
            capture_us: latent.capture_us,
            wall: latent.wall,
            width: latent.width,
            height: latent.height,
            // Latency is measured from when the link side received it.
            captured_at: Instant::now(),
            encode_us: 0,
        }
    }
}

struct Captured {
    frame: Frame,
    at: Instant,
}

/// The `Hello` a device sends for an encoder, codec and id, offering no
/// authentication (see [`hello_frame_offering`]).
pub fn hello_frame(
    info: &EncoderInfo,
    device_id: &str,
    preprocessing_id: &str,
    codec: Codec,
) -> Result<Vec<u8>, PipelineError> {
    hello_frame_offering(info, device_id, preprocessing_id, codec, AuthScheme::None)
}

/// The `Hello` a device sends, offering authentication `auth`
/// ([`AuthScheme::NoiseIk`] on a [`crate::link::SecureLink`]). The offer
/// carries no key id and a zero nonce: with Noise IK the handshake that
/// follows identifies the device and brings its own fresh keys.
pub fn hello_frame_offering(
    info: &EncoderInfo,
    device_id: &str,
    preprocessing_id: &str,
    codec: Codec,
    auth: AuthScheme,
) -> Result<Vec<u8>, PipelineError> {
    let hello = Message::Hello(Hello {
        protocol: latentcam_wire::PROTOCOL_VERSION.into(),
        device_id,
        firmware_version: FIRMWARE_VERSION,
        model: ModelIdentity {
            model_id: &info.model_id,
            encoder_sha256: info.sha256,
            latent_dim: info.latent_dim as u32,
            preprocessing: preprocessing_id,
        },
        backend: info.backend.name(),
        codec,
        auth: AuthOffer {
            scheme: auth,
            key_id: "",
            device_nonce: [0; NONCE_LEN],
        },
    });
    latentcam_wire::frame::encode_to_vec(&hello).map_err(|e| PipelineError::Wire(e.to_string()))
}

/// Shared between the threads.
struct Shared {
    counters: Counters,
    stop: Arc<AtomicBool>,
    led: Option<Arc<LedSignal>>,
}

impl Shared {
    fn led(&self, state: LedState) {
        if let Some(led) = &self.led {
            led.set(state);
        }
    }

    fn beat(&self) {
        if let Some(led) = &self.led {
            led.beat();
        }
    }
}

/// Runs the pipeline until the source ends, `stop` becomes true, or a fatal
/// error. `led`, if given, follows the pipeline's state.
pub fn run(
    parts: Parts,
    settings: Settings,
    stop: Arc<AtomicBool>,
    led: Option<Arc<LedSignal>>,
) -> Result<Report, PipelineError> {
    let started = Instant::now();
    let Parts {
        source,
        encoder,
        preprocessor,
        link,
        spool,
    } = parts;
    let info = encoder.info().clone();
    let hello = hello_frame_offering(
        encoder.info(),
        &settings.device_id,
        &settings.preprocessing_id,
        settings.codec,
        settings.auth,
    )?;
    // Fail before starting threads if the codec cannot carry this latent.
    settings
        .codec
        .payload_len(encoder.info().latent_dim)
        .map_err(|e| PipelineError::Wire(e.to_string()))?;
    tracing::info!(
        source = %source.describe(),
        link = %link.describe(),
        backend = %encoder.info().backend,
        precision = encoder.info().precision.name(),
        codec = ?settings.codec,
        "pipeline starting"
    );
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        stop,
        led,
    });
    let queue = Arc::new(LatestQueue::<Captured>::new(settings.queue));
    let (free_tx, free_rx) = mpsc::channel::<Frame>();
    let (latent_tx, latent_rx) = mpsc::sync_channel::<Encoded>(64);

    let capture = {
        let (shared, queue, free_tx) = (Arc::clone(&shared), Arc::clone(&queue), free_tx.clone());
        let (max_frames, lossless) = (settings.max_frames, settings.lossless);
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let result = capture_loop(
                    source, &queue, &free_rx, &free_tx, &shared, max_frames, lossless,
                );
                queue.close();
                result
            })
            .expect("spawning a thread")
    };
    // At most three tensors exist: one being preprocessed, one waiting in
    // the channel, one in the encoder.
    let (prepared_tx, prepared_rx) = mpsc::sync_channel::<Prepared>(1);
    let (free_input_tx, free_input_rx) = mpsc::channel::<Vec<f32>>();
    let input_len = encoder.info().input_len;
    let preprocess = {
        let (shared, queue) = (Arc::clone(&shared), Arc::clone(&queue));
        thread::Builder::new()
            .name("preprocess".into())
            .spawn(move || {
                preprocess_loop(
                    preprocessor,
                    input_len,
                    &queue,
                    &free_tx,
                    &free_input_rx,
                    &prepared_tx,
                    &shared,
                )
            })
            .expect("spawning a thread")
    };
    let encode = {
        let (shared, queue) = (Arc::clone(&shared), Arc::clone(&queue));
        let codec = settings.codec;
        thread::Builder::new()
            .name("encode".into())
            .spawn(move || {
                let result = encode_loop(
                    encoder,
                    codec,
                    &prepared_rx,
                    &free_input_tx,
                    &latent_tx,
                    &shared,
                );
                if result.1.is_err() {
                    // Stop capture and preprocessing too; the link thread
                    // drains and exits when this thread's sender is dropped.
                    queue.close();
                }
                result
            })
            .expect("spawning a thread")
    };
    let session = {
        let shared = Arc::clone(&shared);
        let queue = Arc::clone(&queue);
        let settings = settings.clone();
        thread::Builder::new()
            .name("link".into())
            .spawn(move || {
                let depth = move || queue.len() as u32;
                session::Session::new(link, spool, hello, &settings, &shared, started)
                    .run(latent_rx, &depth)
            })
            .expect("spawning a thread")
    };

    let capture = capture
        .join()
        .map_err(|_| PipelineError::Panicked("capture"))?;
    let preprocess_timing = preprocess
        .join()
        .map_err(|_| PipelineError::Panicked("preprocess"))?;
    let encode = encode
        .join()
        .map_err(|_| PipelineError::Panicked("encode"))?;
    let session = session
        .join()
        .map_err(|_| PipelineError::Panicked("link"))?;
    shared.led(LedState::Off);
    let (capture_timing, capture_result) = capture;
    let (encode_timings, encode_result) = encode;
    let elapsed = started.elapsed().as_secs_f64();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let c = &shared.counters;
    let report = Report {
        backend: info.backend.name().to_owned(),
        precision: info.precision.name().to_owned(),
        elapsed_s: elapsed,
        captured: get(&c.captured),
        dropped: get(&c.dropped),
        corrupt: get(&c.corrupt),
        encoder_errors: encode_timings.errors,
        encoded: get(&c.encoded),
        fps: get(&c.encoded) as f64 / elapsed.max(1e-9),
        timings: Timings {
            capture: capture_timing,
            queue_wait: encode_timings.queue_wait,
            preprocess: preprocess_timing,
            encode: encode_timings.encode,
            codec: encode_timings.codec,
            send: session.send,
            end_to_end: session.end_to_end,
        },
        session: session.report,
        peak_rss_kib: peak_rss_kib(),
    };
    capture_result?;
    encode_result?;
    Ok(report)
}

/// Runs only the link side of the pipeline — `Hello`/`Welcome`, spool,
/// `Ack`s, re-sends, heartbeats: the same session [`run`] uses — over
/// latents produced elsewhere. `hello` is the `Hello` frame to send (see
/// [`hello_frame_offering`]). Returns when `latents` disconnects or `stop`
/// becomes true, after draining like [`run`] (up to
/// [`Settings::drain_timeout`] for acknowledgements, then `Bye` and a spool
/// sync). Latents still queued in `latents` when `stop` is seen are not
/// taken.
pub fn run_link(
    link: Box<dyn Link + Send>,
    spool: Option<Spool>,
    hello: Vec<u8>,
    settings: &Settings,
    latents: Receiver<EncodedLatent>,
    stop: Arc<AtomicBool>,
) -> SessionReport {
    let started = Instant::now();
    let shared = Shared {
        counters: Counters::default(),
        stop,
        led: None,
    };
    let (tx, rx) = mpsc::sync_channel::<Encoded>(64);
    thread::scope(|scope| {
        let shared = &shared;
        // Forwards latents until the producer is done or `stop` is set;
        // dropping `tx` then lets the session drain and end.
        scope.spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                match latents.recv_timeout(Duration::from_millis(50)) {
                    Ok(latent) => {
                        Counters::bump(&shared.counters.captured);
                        Counters::bump(&shared.counters.encoded);
                        if tx.send(latent.into()).is_err() {
                            break;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        session::Session::new(link, spool, hello, settings, shared, started)
            .run(rx, &|| 0)
            .report
    })
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    queue: &LatestQueue<Captured>,
    free_rx: &Receiver<Frame>,
    free_tx: &Sender<Frame>,
    shared: &Shared,
    max_frames: Option<u64>,
    lossless: bool,
) -> (StageTiming, Result<(), PipelineError>) {
    let mut timing = Stage::new();
    let mut captured = 0u64;
    let mut corrupt_in_a_row = 0u64;
    let result = loop {
        if shared.stop.load(Ordering::Relaxed)
            || queue.is_closed()
            || max_frames.is_some_and(|m| captured >= m)
        {
            break Ok(());
        }
        let mut frame = free_rx.try_recv().unwrap_or_default();
        let t = Instant::now();
        match source.next_frame(&mut frame) {
            Ok(SourceEvent::Frame) => {
                timing.record(t.elapsed());
                captured += 1;
                corrupt_in_a_row = 0;
                Counters::bump(&shared.counters.captured);
                let item = Captured {
                    frame,
                    at: Instant::now(),
                };
                if lossless {
                    if queue.push_wait(item).is_some() {
                        break Ok(()); // closed: the encoder stopped
                    }
                } else if let Some(old) = queue.push(item) {
                    Counters::bump(&shared.counters.dropped);
                    let _ = free_tx.send(old.frame);
                }
            }
            Ok(_) => {
                tracing::info!(source = %source.describe(), "source ended");
                break Ok(());
            }
            Err(e) => match e.kind() {
                ErrorKind::Corrupt => {
                    Counters::bump(&shared.counters.corrupt);
                    corrupt_in_a_row += 1;
                    // Log the first of a run and then every 100th, so a
                    // damaged file cannot flood the journal.
                    if corrupt_in_a_row == 1 || corrupt_in_a_row.is_multiple_of(100) {
                        tracing::warn!("{e} ({corrupt_in_a_row} in a row)");
                    }
                    let _ = free_tx.send(frame);
                }
                ErrorKind::Disappeared if shared.stop.load(Ordering::Relaxed) => break Ok(()),
                _ => {
                    tracing::error!("{e}");
                    shared.led(LedState::Error);
                    break Err(PipelineError::Source(e));
                }
            },
        }
    };
    (timing.finish(), result)
}

struct EncodeTimings {
    queue_wait: StageTiming,
    encode: StageTiming,
    codec: StageTiming,
    errors: u64,
}

/// A preprocessed frame on its way to the encoder.
struct Prepared {
    input: Vec<f32>,
    capture_us: u64,
    wall: Option<latentcam_wire::WallTime>,
    width: u32,
    height: u32,
    index: u64,
    captured_at: Instant,
}

/// Takes the newest frames, preprocesses them into recycled tensors and
/// hands them to the encoder. Ends when the queue closes (the source
/// ended, or the encoder stopped).
fn preprocess_loop(
    mut preprocessor: Preprocessor,
    input_len: usize,
    queue: &LatestQueue<Captured>,
    free_frames: &Sender<Frame>,
    free_inputs: &Receiver<Vec<f32>>,
    prepared: &SyncSender<Prepared>,
    shared: &Shared,
) -> StageTiming {
    let mut pre = Stage::new();
    loop {
        let Captured { frame, at } = match queue.pop(Duration::from_millis(100)) {
            Pop::Item(item) => item,
            Pop::Empty => continue,
            Pop::Closed => break,
        };
        let t0 = Instant::now();
        let mut input = free_inputs
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(input_len));
        match preprocessor.run(&frame.rgb, frame.width, frame.height) {
            // A tensor of another length than the encoder's input (the
            // manifest's crop and the model disagree) goes through as it
            // is: the encoder reports the shape error for every frame.
            Ok(tensor) => {
                input.clear();
                input.extend_from_slice(tensor);
            }
            Err(e) => {
                Counters::bump(&shared.counters.corrupt);
                tracing::warn!("skipped frame {}: {e}", frame.index);
                let _ = free_frames.send(frame);
                continue;
            }
        }
        pre.record(t0.elapsed());
        let item = Prepared {
            input,
            capture_us: frame.capture_us,
            wall: frame.wall,
            width: frame.width,
            height: frame.height,
            index: frame.index,
            captured_at: at,
        };
        let _ = free_frames.send(frame);
        if prepared.send(item).is_err() {
            // The encoder stopped (a fatal error): stop capture too.
            queue.close();
            break;
        }
    }
    pre.finish()
}

fn encode_loop(
    mut encoder: Box<dyn Encoder>,
    codec: Codec,
    prepared: &Receiver<Prepared>,
    free_inputs: &Sender<Vec<f32>>,
    latent_tx: &SyncSender<Encoded>,
    shared: &Shared,
) -> (EncodeTimings, Result<(), PipelineError>) {
    let (mut wait, mut enc, mut cod) = (Stage::new(), Stage::new(), Stage::new());
    let dim = encoder.info().latent_dim;
    let mut latent = vec![0f32; dim];
    let payload_len = codec.payload_len(dim).unwrap_or(dim * 4);
    let mut errors = 0u64;
    let mut in_a_row = 0u32;
    let result = loop {
        // Ends when the preprocess thread is done and the channel drained.
        let Ok(item) = prepared.recv() else {
            break Ok(());
        };
        let t1 = Instant::now();
        wait.record(t1 - item.captured_at);
        let encoded = encoder.encode(&item.input, &mut latent);
        let _ = free_inputs.send(item.input);
        if let Err(e) = encoded {
            errors += 1;
            in_a_row += 1;
            tracing::warn!("encoder failed on frame {}: {e}", item.index);
            if in_a_row >= MAX_CONSECUTIVE_ENCODER_ERRORS {
                shared.led(LedState::Error);
                break Err(PipelineError::Encoder {
                    count: in_a_row,
                    last: e.to_string(),
                });
            }
            continue;
        }
        in_a_row = 0;
        let t2 = Instant::now();
        enc.record(t2 - t1);
        Counters::bump(&shared.counters.encoded);
        let mut payload = vec![0u8; payload_len];
        match codec.encode(&latent, &mut payload) {
            Ok(n) => payload.truncate(n),
            Err(e) => break Err(PipelineError::Wire(e.to_string())),
        }
        cod.record(t2.elapsed());
        let item = Encoded {
            payload,
            capture_us: item.capture_us,
            wall: item.wall,
            width: item.width,
            height: item.height,
            captured_at: item.captured_at,
            encode_us: u32::try_from((t2 - t1).as_micros()).unwrap_or(u32::MAX),
        };
        if latent_tx.send(item).is_err() {
            // The link thread is gone (it only exits early on a panic).
            break Ok(());
        }
    };
    let timings = EncodeTimings {
        queue_wait: wait.finish(),
        encode: enc.finish(),
        codec: cod.finish(),
        errors,
    };
    (timings, result)
}

/// Peak resident set size of this process in KiB, from `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
