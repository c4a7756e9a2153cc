//! Ingest: devices' latents in, heads' results out.
//!
//! ```text
//!  TCP connections ──┐  (one tokio task each: Conn state machine,
//!  (many devices)    │   Welcome, Acks, limits)
//!                    ├──▶ bounded job queue ──▶ head worker thread ──▶ JSON lines
//!                    │                          (every Head on every latent,
//!                    │                           then Registry::processed)
//! ```
//!
//! A latent is acknowledged only after its heads ran and its result line was
//! written, so `Ack` means "done", and a device re-sends anything the host
//! lost in a crash. A malformed or hostile stream closes only its own
//! connection ([`conn::Limits`]).

pub mod conn;
pub mod http;
pub mod live;
pub mod registry;
pub mod serial;
pub mod tcp;
pub mod udp;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::heads::{Head, LatentRef};
use crate::recorder::Recorder;
pub use conn::{Conn, Job, Limits, Step};
pub use live::Live;
pub use registry::{DeviceRecord, Registry};

/// Counters of the head worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    /// Latents processed.
    pub processed: u64,
    /// Head failures (the latent is still acknowledged; the error is in its
    /// result line).
    pub head_errors: u64,
}

/// Runs every head on every job until the queue closes, writing one JSON
/// line per latent to `out` and marking it processed in `registry`.
pub fn run_heads(
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    mut heads: Vec<Box<dyn Head>>,
    out: &mut dyn Write,
    registry: &Registry,
    live: &Live,
    mut recorder: Option<&mut Recorder>,
) -> std::io::Result<WorkerStats> {
    let mut stats = WorkerStats::default();
    while let Some(job) = jobs.blocking_recv() {
        let started = Instant::now();
        // Recorded before the result: an acknowledged latent is stored.
        if let Some(recorder) = recorder.as_deref_mut() {
            recorder.record(&job.device, &job.hello, &job.frame)?;
        }
        let input = LatentRef {
            device: &job.device,
            seq: job.seq,
            capture_us: job.capture_us,
            latent: &job.latent,
        };
        let mut results = Map::new();
        for head in heads.iter_mut() {
            let t = Instant::now();
            let result = head.run(&input);
            live.head_ran(head.name(), t.elapsed(), result.is_err());
            let value = match result {
                Ok(v) => v,
                Err(e) => {
                    stats.head_errors += 1;
                    json!({"error": e.to_string()})
                }
            };
            results.insert(head.name().to_owned(), value);
        }
        let line = json!({
            "device": job.device,
            "seq": job.seq,
            "capture_us": job.capture_us,
            "frame": [job.frame_size.0, job.frame_size.1],
            "payload_bytes": job.payload_bytes,
            "heads_us": started.elapsed().as_micros() as u64,
            "heads": Value::Object(results),
        });
        writeln!(out, "{line}")?;
        // Flush before acknowledging: an acked latent's result is written.
        out.flush()?;
        registry.processed(&job.device, job.seq);
        live.result(&job.device, line, Instant::now());
        stats.processed += 1;
    }
    Ok(stats)
}

/// Shared by every connection task.
#[derive(Debug)]
pub struct Context {
    /// The model manifest devices are checked against.
    pub manifest: latentcam_firmware::manifest::Manifest,
    /// Devices.
    pub registry: Arc<Registry>,
    /// Per-connection limits.
    pub limits: Limits,
    /// Host id sent in `Welcome`.
    pub host_id: String,
    /// Most connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// Latest results and timings for the HTTP API.
    pub live: Arc<Live>,
    /// The similarity index, when one runs, for `/api/search`.
    pub index: Option<crate::heads::search::SharedIndex>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source} (is another host running there?)")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Runtime, signal or output failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The head worker thread panicked.
    #[error("the head worker panicked")]
    Worker,
    /// The serial line could not be opened.
    #[error(transparent)]
    Serial(#[from] serial::SerialError),
}

/// A host server's setup.
pub struct ServeOptions {
    /// `host:port` to listen on for TCP devices.
    pub tcp: String,
    /// `host:port` for the HTTP API and live page, if wanted.
    pub http: Option<String>,
    /// `host:port` to receive UDP devices on, if wanted.
    pub udp: Option<String>,
    /// A serial line with one device on it, if wanted.
    pub serial: Option<serial::SerialIngest>,
    /// Shared state for connections.
    pub context: Context,
    /// Heads run on every latent.
    pub heads: Vec<Box<dyn Head>>,
    /// Where result lines go.
    pub out: Box<dyn Write + Send>,
    /// Latents waiting for the heads before connections are slowed down.
    pub queue: usize,
    /// Keeps every accepted latent in rotating recordings, if given.
    pub recorder: Option<Recorder>,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Io { what, source }
}

/// Runs the host until SIGINT or SIGTERM: accepts devices, runs the heads,
/// writes results and acknowledges them; on a signal it stops accepting,
/// says `Bye`, and finishes the latents already queued.
pub fn serve(options: ServeOptions) -> Result<WorkerStats, ServeError> {
    serve_until(options, |_, _| {}, async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::error!("cannot install the SIGTERM handler: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    })
}

/// Like [`serve`], but stops when `stop` completes; `ready` hears the bound
/// device address and HTTP address once listening (for in-process use:
/// the demo, tests).
pub fn serve_until(
    options: ServeOptions,
    ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>) + Send,
    stop: impl std::future::Future<Output = ()>,
) -> Result<WorkerStats, ServeError> {
    let ServeOptions {
        tcp,
        http,
        udp,
        serial,
        context,
        heads,
        mut out,
        queue,
        mut recorder,
    } = options;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))?;
    let registry = Arc::clone(&context.registry);
    let (job_tx, job_rx) = tokio::sync::mpsc::channel::<Job>(queue.max(1));
    let worker = {
        let registry = Arc::clone(&registry);
        let live = Arc::clone(&context.live);
        std::thread::Builder::new()
            .name("heads".into())
            .spawn(move || run_heads(job_rx, heads, &mut out, &registry, &live, recorder.as_mut()))
            .map_err(io("starting the head worker"))?
    };
    let context = Arc::new(context);
    let serial_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serial_thread = match &serial {
        Some(config) => {
            let port = serial::open(config)?;
            let name = format!("serial:{}", config.path.display());
            tracing::info!(
                "serial ingest on {} at {} baud",
                config.path.display(),
                config.baud
            );
            let (context, jobs, stop) = (
                Arc::clone(&context),
                job_tx.clone(),
                Arc::clone(&serial_stop),
            );
            Some(
                std::thread::Builder::new()
                    .name("serial".into())
                    .spawn(move || serial::serve(port, name, context, jobs, stop))
                    .map_err(io("starting the serial ingest"))?,
            )
        }
        None => None,
    };
    let served: Result<(), ServeError> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&tcp)
            .await
            .map_err(|source| ServeError::Bind {
                address: tcp.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(io("reading the address"))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut http_local = None;
        let api = match &http {
            Some(address) => {
                let http_listener =
                    tokio::net::TcpListener::bind(address)
                        .await
                        .map_err(|source| ServeError::Bind {
                            address: address.clone(),
                            source,
                        })?;
                let local = http_listener
                    .local_addr()
                    .map_err(io("reading the address"))?;
                tracing::info!("HTTP API on http://{local}/");
                http_local = Some(local);
                let state = http::ApiState {
                    context: Arc::clone(&context),
                    jobs: job_tx.downgrade(),
                };
                Some(tokio::spawn(http::serve(
                    http_listener,
                    state,
                    stop_rx.clone(),
                )))
            }
            None => None,
        };
        let udp_task = match &udp {
            Some(address) => {
                let socket = tokio::net::UdpSocket::bind(address)
                    .await
                    .map_err(|source| ServeError::Bind {
                        address: address.clone(),
                        source,
                    })?;
                let local = socket.local_addr().map_err(io("reading the address"))?;
                tracing::info!("UDP on {local}");
                Some(tokio::spawn(udp::serve(
                    socket,
                    Arc::clone(&context),
                    job_tx.clone(),
                    stop_rx.clone(),
                )))
            }
            None => None,
        };
        let server = tokio::spawn(tcp::serve(listener, Arc::clone(&context), job_tx, stop_rx));
        // Logged last: everything is bound when a supervisor sees this.
        tracing::info!("listening on {local}");
        ready(local, http_local);
        stop.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = server.await;
        if let Some(api) = api {
            let _ = api.await;
        }
        if let Some(udp_task) = udp_task {
            let _ = udp_task.await;
        }
        Ok(())
    });
    serial_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = serial_thread {
        let _ = t.join();
    }
    // Every job sender is gone now; the worker drains the queue and ends.
    let stats = worker
        .join()
        .map_err(|_| ServeError::Worker)?
        .map_err(io("writing results"));
    served?;
    let stats = stats?;
    tracing::info!(
        processed = stats.processed,
        head_errors = stats.head_errors,
        "stopped"
    );
    Ok(stats)
}
