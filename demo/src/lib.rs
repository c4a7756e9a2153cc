//! `latentcam-demo`: the whole system on one machine. A host (ingest +
//! heads) and an edge pipeline run in this process and talk over loopback
//! TCP; the edge replays a real video; every latent's result is printed as
//! it arrives, and a summary compares the bytes each frame cost on the
//! wire with the same frame sent as JPEG.
#![deny(missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use latentcam_firmware::assemble::{self, AssembleError};
use latentcam_firmware::config::{EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::pipeline::{self, PipelineError, Report};
use latentcam_firmware::source::{Frame, FrameSource, SourceError, SourceEvent};
use serde_json::Value;

use latentcam_host::heads::Head;
use latentcam_host::heads::imagenet::{ImagenetHead, LoadError, TopK};
use latentcam_host::ingest::{self, Limits, Live, Registry, ServeError, ServeOptions, WorkerStats};

/// Errors of a demo run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The models directory.
    #[error("model manifest in {dir}: {message}")]
    Models {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The ImageNet head.
    #[error(transparent)]
    Head(#[from] LoadError),
    /// Opening the edge's parts.
    #[error(transparent)]
    Edge(#[from] AssembleError),
    /// The edge pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The host.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The host did not start.
    #[error("the in-process host did not start")]
    HostStart,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The video (or image directory) the edge replays.
    pub video: PathBuf,
    /// Models directory.
    pub models: PathBuf,
    /// Frames to replay (0: the whole file).
    pub frames: u64,
    /// JPEG quality of the comparison.
    pub jpeg_quality: u8,
}

/// What a demo run measured.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The edge's report.
    pub edge: Report,
    /// The host's head worker.
    pub host: WorkerStats,
    /// Mean bytes of one latent frame on the wire (framing included).
    pub latent_bytes: f64,
    /// Mean bytes of the same frames as JPEG at `jpeg_quality`.
    pub jpeg_bytes: f64,
    /// Seconds from start to the last result.
    pub seconds: f64,
}

/// Wraps a source and JPEG-encodes every frame it delivers, counting bytes:
/// what sending the video as JPEG frames would have cost.
struct JpegMeter {
    inner: Box<dyn FrameSource>,
    quality: u8,
    bytes: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    buf: Vec<u8>,
}

impl FrameSource for JpegMeter {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        let event = self.inner.next_frame(frame)?;
        if event == SourceEvent::Frame {
            self.buf.clear();
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut self.buf, self.quality);
            if image::ImageEncoder::write_image(
                encoder,
                &frame.rgb,
                frame.width,
                frame.height,
                image::ExtendedColorType::Rgb8,
            )
            .is_ok()
            {
                self.bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(event)
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.inner.reopen()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Collects the result lines the head worker writes and hands each to the
/// printer.
struct LineSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Value>,
}

impl Write for LineSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&line) {
                let _ = self.tx.send(value);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line of the live view for a result.
pub fn render(line: &Value) -> String {
    let top = &line["heads"]["imagenet"][0];
    let label = top["label"].as_str().unwrap_or("?");
    let p = top["p"].as_f64().unwrap_or(0.0) * 100.0;
    let mut out = format!(
        "{:<10} #{:<5} {:>4}x{:<4} {:<24} {:>3.0}%",
        line["device"].as_str().unwrap_or("?"),
        line["seq"],
        line["frame"][0],
        line["frame"][1],
        label,
        p
    );
    if let Some(score) = line["heads"]["anomaly"]["score"].as_f64() {
        out.push_str(&format!("  anomaly {score:>6.2}"));
        if line["heads"]["anomaly"]["event"].as_bool() == Some(true) {
            out.push_str(" EVENT");
        }
    }
    out
}

/// Runs the demo, calling `show` with each live-view line.
pub fn run(
    options: &DemoOptions,
    extra_heads: Vec<Box<dyn Head>>,
    mut show: impl FnMut(&str) + Send,
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let manifest = Manifest::load(&options.models).map_err(|e| DemoError::Models {
        dir: options.models.clone(),
        message: e.to_string(),
    })?;
    let mut heads: Vec<Box<dyn Head>> = vec![Box::new(TopK {
        head: ImagenetHead::from_manifest(&manifest)?,
        k: 1,
    })];
    heads.extend(extra_heads);
    let (line_tx, line_rx) = mpsc::channel::<Value>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = {
        let context = ingest::Context {
            manifest,
            registry: Arc::new(Registry::in_memory()),
            limits: Limits::default(),
            host_id: "latentcam-demo".into(),
            max_connections: 16,
            live: Arc::new(Live::default()),
            index: None,
            fewshot: None,
            encoder: None,
            // Host and edge on loopback in one process.
            auth: Arc::new(latentcam_host::auth::HostAuth::none()),
        };
        let options = ServeOptions {
            ingests: vec![Box::new(ingest::tcp::TcpIngest {
                address: "127.0.0.1:0".into(),
            })],
            http: None,
            context,
            heads,
            out: Box::new(LineSink {
                buf: Vec::new(),
                tx: line_tx,
            }),
            queue: 64,
            recorder: None,
        };
        std::thread::spawn(move || {
            ingest::serve_until(
                options,
                move |listening| {
                    let _ = ready_tx.send(listening.address(ingest::IngestKind::Tcp));
                },
                async {
                    let _ = stop_rx.await;
                },
            )
        })
    };
    let address = ready_rx.recv().ok().flatten().ok_or(DemoError::HostStart)?;

    let mut config = EdgeConfig::default();
    config.device.id = "demo-cam".into();
    config.model.dir = options.models.clone();
    config.source.kind = SourceKind::Replay;
    config.source.path = options.video.clone();
    config.source.unpaced = true;
    config.link.kind = LinkKind::Tcp;
    config.link.address = address.to_string();
    config.spool.dir = PathBuf::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (mut parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop))?;
    let (jpeg_bytes, jpeg_frames) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    parts.source = Box::new(JpegMeter {
        inner: parts.source,
        quality: options.jpeg_quality,
        bytes: Arc::clone(&jpeg_bytes),
        frames: Arc::clone(&jpeg_frames),
        buf: Vec::new(),
    });
    if options.frames > 0 {
        settings.max_frames = Some(options.frames);
    }
    let edge = std::thread::spawn(move || pipeline::run(parts, settings, stop, None));
    let mut last_result = started;
    let (edge, host) = std::thread::scope(|scope| {
        scope.spawn(|| {
            for line in line_rx {
                last_result = Instant::now();
                show(&render(&line));
            }
        });
        let edge = edge.join().map_err(|_| PipelineError::Panicked("edge"));
        let _ = stop_tx.send(());
        let host = host.join().map_err(|_| ServeError::Worker);
        (edge, host)
    });
    let edge = edge??;
    let host = host??;
    let frames = jpeg_frames.load(Ordering::Relaxed).max(1) as f64;
    let sent = (edge.session.sent + edge.session.sent_from_spool).max(1) as f64;
    Ok(DemoSummary {
        // Every byte the link wrote, Hello, heartbeats and Bye amortised in.
        latent_bytes: edge.session.bytes_sent as f64 / sent,
        jpeg_bytes: jpeg_bytes.load(Ordering::Relaxed) as f64 / frames,
        seconds: last_result.duration_since(started).as_secs_f64(),
        edge,
        host,
    })
}
