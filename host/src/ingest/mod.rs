//! Ingest: devices' latents in, heads' results out.
//!
//! ```text
//!  tcp, serial, udp, file ──▶ a Conn per device session ──┐
//!                             (Hello check, Welcome,      │
//!                              Acks, limits)              ├──▶ bounded job queue
//!  mqtt (a group worker) ───▶ its own per-device state ───┘            │
//!                             (the same Hello check)                   ▼
//!                                               JSON lines ◀── head worker thread
//!                                                              (every Head on every latent,
//!                                                               then Registry::processed)
//! ```
//!
//! A latent is acknowledged only after its heads ran and its result line was
//! committed, so `Ack` means "done", and a device re-sends anything the host
//! lost in a crash. With a results file ([`SyncedFile`], `serve --jsonl
//! FILE`) a commit is an `fdatasync` of the file (and of the current
//! recording, when the host records): an acknowledged result survives a
//! power cut. Results written to stdout or a pipe cannot be synced: there
//! an `Ack` means "written" (a host crash loses nothing, a power cut of the
//! machine holding the output may) — see [`Durability`]. A malformed or
//! hostile stream closes only its own connection ([`conn::Limits`]).

pub mod conn;
pub mod file;
pub mod http;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod registry;
pub mod serial;
pub mod tcp;
pub mod udp;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::heads::{Head, LatentRef};
use crate::recorder::Recorder;
pub use conn::{Conn, Done, Env, Job, Limits, Step};
pub use live::Live;
pub use registry::{DeviceRecord, Presence, Registry};

/// Most latents the head worker takes at once. Latents of every device
/// that queued up while the heads ran form one batch (see
/// [`Head::run_batch`]); a lone latent is a batch of one, so batching adds
/// no latency.
pub const MAX_BATCH: usize = 32;

/// Counters of the head worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    /// Latents processed.
    pub processed: u64,
    /// Head failures (the latent is still acknowledged; the error is in its
    /// result line).
    pub head_errors: u64,
    /// Batches run (`processed / batches` is the mean batch size).
    pub batches: u64,
}

/// What an acknowledgement promises about a latent's result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Handed to the operating system (stdout, a pipe, an in-memory sink):
    /// a crash of the host loses nothing, a power cut may.
    Written,
    /// On stable storage: `fdatasync` of the results file returned.
    Synced,
}

/// Where the head worker writes result lines, and how it commits them
/// before the latents are acknowledged. Every [`Write`] is an output whose
/// commit only flushes ([`Durability::Written`]); [`SyncedFile`] is the one
/// that syncs.
pub trait ResultsOut {
    /// Where the lines go.
    fn writer(&mut self) -> &mut dyn Write;

    /// Makes every line written so far as durable as this output can: a
    /// flush, and for a file an `fdatasync`. Called once per batch (group
    /// commit) before any latent of the batch is acknowledged.
    fn commit(&mut self) -> io::Result<()>;

    /// What a completed [`commit`](Self::commit) guarantees.
    fn durability(&self) -> Durability;

    /// Called after each commit, once the batch's latents are marked
    /// processed in `registry`: a rotating file ([`SyncedFile::rotating`])
    /// starts a new file here when the current one is full. Others do
    /// nothing.
    fn after_commit(&mut self, registry: &Registry) -> io::Result<()> {
        let _ = registry;
        Ok(())
    }
}

impl<W: Write> ResultsOut for W {
    fn writer(&mut self) -> &mut dyn Write {
        self
    }

    fn commit(&mut self) -> io::Result<()> {
        self.flush()
    }

    fn durability(&self) -> Durability {
        Durability::Written
    }
}

/// A results file opened for appending; every commit flushes it and waits
/// for `fdatasync`, so an acknowledged latent's result survives a power
/// cut. (It deliberately does not implement [`Write`], so it cannot be
/// passed where a commit would only flush.)
#[derive(Debug)]
pub struct SyncedFile {
    writer: BufWriter<File>,
    path: PathBuf,
    rotation: Option<Rotation>,
}

/// When a results file is rotated, and how many old ones are kept.
///
/// When the file reaches `max_bytes`, it becomes `FILE.1` (`FILE.1`
/// becomes `FILE.2`, and so on; the one beyond `keep` is deleted) and a new
/// `FILE` starts with one checkpoint line per device,
/// `{"device":…,"seq":…,"checkpoint":true}`, holding the highest sequence
/// number processed — so a restarted host resumes from `FILE` alone, and a
/// reader of results skips lines marked `checkpoint`. At every moment a
/// complete `FILE` exists (the new one replaces it by an atomic rename), so
/// a crash during rotation loses no progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Old files kept (`FILE.1` … `FILE.keep`); 0 keeps none.
    pub keep: u32,
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl SyncedFile {
    /// Opens `path` for appending, creating it if needed; a new file's
    /// directory entry is synced at once.
    pub fn append(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if !existed {
            file.sync_all()?;
            crate::heads::state_file::sync_parent_dir(path)?;
        }
        Ok(Self {
            writer: BufWriter::new(file),
            path: path.to_path_buf(),
            rotation: None,
        })
    }

    /// The same file, rotated as `rotation` says.
    pub fn rotating(mut self, rotation: Rotation) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rotates now (see [`Rotation`]); the caller has committed.
    fn rotate(&mut self, keep: u32, registry: &Registry) -> io::Result<()> {
        let path = self.path.clone();
        let mut next = path.as_os_str().to_owned();
        next.push(".rotating");
        let next = PathBuf::from(next);
        {
            let mut file = BufWriter::new(File::create(&next)?);
            for (device, seq) in registry.progress() {
                let line = json!({"device": device, "seq": seq, "checkpoint": true});
                writeln!(file, "{line}")?;
            }
            file.flush()?;
            file.get_ref().sync_all()?;
        }
        if keep > 0 {
            remove_if_present(&numbered(&path, keep))?;
            for n in (1..keep).rev() {
                match std::fs::rename(numbered(&path, n), numbered(&path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            // A link, not a rename: `FILE` exists throughout.
            std::fs::hard_link(&path, numbered(&path, 1))?;
        }
        std::fs::rename(&next, &path)?;
        crate::heads::state_file::sync_parent_dir(&path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        self.writer = BufWriter::new(file);
        tracing::info!(
            "{}: rotated (kept {keep} older file{})",
            path.display(),
            if keep == 1 { "" } else { "s" }
        );
        Ok(())
    }
}

impl ResultsOut for SyncedFile {
    fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }

    fn commit(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()
    }

    fn durability(&self) -> Durability {
        Durability::Synced
    }

    fn after_commit(&mut self, registry: &Registry) -> io::Result<()> {
        let Some(rotation) = self.rotation else {
            return Ok(());
        };
        if self.writer.get_ref().metadata()?.len() < rotation.max_bytes {
            return Ok(());
        }
        self.rotate(rotation.keep, registry)
    }
}

/// Runs every head on every job until the queue closes, writing one JSON
/// line per latent to `out` and marking it processed in `registry`. Jobs
/// waiting in the queue are taken together, up to [`MAX_BATCH`], and
/// committed together: the recording (if any) and the result lines are
/// made durable ([`ResultsOut::commit`], [`Recorder::sync`]) once per batch,
/// before any latent of the batch is marked processed or reported done —
/// so nothing is acknowledged that a power cut could take back (with
/// [`SyncedFile`]; see [`Durability`]).
pub fn run_heads(
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    mut heads: Vec<Box<dyn Head>>,
    out: &mut dyn ResultsOut,
    registry: &Registry,
    live: &Live,
    mut recorder: Option<&mut Recorder>,
) -> std::io::Result<WorkerStats> {
    let mut stats = WorkerStats::default();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        // Recorded before the result: an acknowledged latent is stored.
        if let Some(recorder) = recorder.as_deref_mut() {
            for job in &batch {
                recorder.record(&job.device, &job.hello, &job.frame)?;
            }
        }
        let inputs: Vec<LatentRef<'_>> = batch
            .iter()
            .map(|job| LatentRef {
                device: &job.device,
                seq: job.seq,
                capture_us: job.capture_us,
                latent: &job.latent,
            })
            .collect();
        let mut results: Vec<Map<String, Value>> = vec![Map::new(); batch.len()];
        for head in heads.iter_mut() {
            let t = Instant::now();
            let outputs = head.run_batch(&inputs);
            let each = t.elapsed() / batch.len() as u32;
            for (result, output) in results.iter_mut().zip(outputs) {
                live.head_ran(head.name(), each, output.is_err());
                let value = output.unwrap_or_else(|e| {
                    stats.head_errors += 1;
                    json!({"error": e.to_string()})
                });
                result.insert(head.name().to_owned(), value);
            }
        }
        drop(inputs);
        let heads_us = (started.elapsed() / batch.len() as u32).as_micros() as u64;
        let mut lines = Vec::with_capacity(batch.len());
        for (job, result) in batch.iter().zip(results) {
            let mut line = json!({
                "device": job.device,
                "seq": job.seq,
                "capture_us": job.capture_us,
                "frame": [job.frame_size.0, job.frame_size.1],
                "payload_bytes": job.payload_bytes,
                "heads_us": heads_us,
                "heads": Value::Object(result),
            });
            if let Value::Object(fields) = &mut line {
                for (key, value) in crate::clock::result_times(job.wall, job.received) {
                    fields.insert(key.to_owned(), value);
                }
            }
            writeln!(out.writer(), "{line}")?;
            lines.push(line);
        }
        // Group commit before acknowledging: one sync of the recording and
        // one of the results for the whole batch, side by side (the file
        // system can serve both with one journal commit).
        match recorder.as_deref_mut() {
            Some(recorder) => std::thread::scope(|scope| {
                let recording = scope.spawn(|| recorder.sync());
                let results = out.commit();
                let recording = recording.join().unwrap_or_else(|panic| {
                    std::panic::resume_unwind(panic);
                });
                results.and(recording)
            })?,
            None => out.commit()?,
        }
        let now = Instant::now();
        let written = std::time::SystemTime::now();
        stats.processed += batch.len() as u64;
        for (job, line) in batch.drain(..).zip(lines) {
            live.latency.observe(job.wall, job.received, written);
            registry.processed(&job.device, job.seq);
            if let Some(done) = &job.done {
                // The ingest may be gone (shutting down); nothing to tell.
                let _ = done.send(Done {
                    device: job.device.clone(),
                    seq: job.seq,
                    line: line.clone(),
                });
            }
            live.result(&job.device, line, now);
        }
        out.after_commit(registry)?;
        stats.batches += 1;
        live.batch_ran();
    }
    Ok(stats)
}

/// Shared by every connection task.
#[derive(Debug)]
pub struct Context {
    /// The model manifest devices are checked against.
    pub manifest: latentcam_model::manifest::Manifest,
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
    /// The few-shot head, when one runs, for `/api/enroll`.
    pub fewshot: Option<crate::heads::fewshot::SharedFewShot>,
    /// The encoder on the host, for enrolment photos and search by image
    /// over HTTP (loaded when the API runs).
    pub encoder: Option<Arc<std::sync::Mutex<crate::encode::HostEncoder>>>,
    /// How devices authenticate (TCP and serial; recordings never do).
    pub auth: Arc<crate::auth::HostAuth>,
}

impl Context {
    /// What a session reads of this host.
    pub fn env(&self) -> Env<'_> {
        Env {
            manifest: &self.manifest,
            registry: &self.registry,
            host_id: &self.host_id,
            received: std::time::SystemTime::now(),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listening address that is not `host:port`, found before binding.
    #[error(
        "{address:?} is not an address to listen on: {reason}; write host:port, like \
         0.0.0.0:7878 (every interface), 127.0.0.1:7878 (this machine only) or [::]:7878 (IPv6)"
    )]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}{}", bind_hint(source))]
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
    /// The MQTT ingest's configuration is unusable.
    #[error("MQTT: {message}")]
    Mqtt {
        /// What is wrong.
        message: String,
    },
    /// A transport that cannot authenticate devices, on a host that
    /// requires authentication.
    #[error(
        "the {transport} ingest cannot authenticate devices here, and this host requires \
         authentication: connect to a broker that requires client certificates (mqtts:// with \
         --mqtt-cert and --mqtt-key), or serve those devices from a host that allows \
         unauthenticated ones"
    )]
    Unauthenticated {
        /// The transport.
        transport: &'static str,
    },
    /// The recording could not be opened.
    #[error("cannot open recording {path}: {source}")]
    Recording {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What to suggest when binding failed: only a taken address means that
/// another host (or another program) may be listening there.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => " (is another host running there?)",
        _ => "",
    }
}

/// Checks that `address` has the form of a listening address, `host:port`
/// (`[v6]:port` for IPv6) with a host and a port from 0 to 65535 (0: any
/// free port), so that a malformed one is named as such rather than as a
/// failure to bind. Whether the host resolves is left to binding.
pub fn check_listen_address(address: &str) -> Result<(), ServeError> {
    let bad = |reason: String| ServeError::Address {
        address: address.to_owned(),
        reason,
    };
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or_else(|| bad("no port after the bracketed IPv6 address".into()))?,
        None => match address.rsplit_once(':') {
            None => return Err(bad("no port".into())),
            Some((host, _)) if host.contains(':') => {
                return Err(bad("an IPv6 address goes in brackets".into()));
            }
            Some(parts) => parts,
        },
    };
    if host.trim().is_empty() {
        return Err(bad("no host".into()));
    }
    if port.is_empty() {
        return Err(bad("no port".into()));
    }
    port.parse::<u16>().map(drop).map_err(|_| {
        bad(format!(
            "port {port:?} is not a number from 1 to 65535 (or 0, for any free port)"
        ))
    })
}

/// Which transport an [`Ingest`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestKind {
    /// Many devices, one TCP connection each ([`tcp::TcpIngest`]).
    Tcp,
    /// One-way devices, one frame per datagram ([`udp::UdpIngest`]).
    Udp,
    /// One device on a serial line ([`serial::SerialIngest`]).
    Serial,
    /// A recording file, read once or followed as it grows
    /// ([`file::RecordingIngest`]).
    Recording,
    /// One worker of an MQTT 5 share group ([`mqtt::MqttIngest`]).
    Mqtt,
}

/// What every ingest is given when it starts.
pub struct Running {
    /// Manifest, registry, limits.
    pub context: Arc<Context>,
    /// The head worker's queue; a full queue slows the ingest down.
    pub jobs: tokio::sync::mpsc::Sender<Job>,
    /// Turns true when the host shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A started ingest.
pub struct Started {
    /// The bound address of a network ingest (useful with port 0).
    pub local: Option<std::net::SocketAddr>,
    /// Finishes when the ingest has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// A way devices' frames reach the host: a TCP listener, a UDP socket, a
/// serial line, a recording file, an MQTT broker. Every ingest hands
/// accepted latents to the head worker as [`Job`]s. TCP, UDP, serial and
/// recordings drive [`Conn`] sessions (the same `Hello` check, duplicate
/// and gap accounting and limits) and differ only in how bytes arrive and
/// whether `Welcome` and `Ack`s can go back; the MQTT worker applies the
/// same [`crate::session`] checks and registry accounting to devices whose
/// frames arrive as broker messages, with no connection of their own.
pub trait Ingest: Send {
    /// Which transport this is.
    fn kind(&self) -> IngestKind;

    /// For logs: `tcp 0.0.0.0:7878`, `serial /dev/ttyUSB0`…
    fn describe(&self) -> String;

    /// Binds or opens at once, so a taken port or a missing device fails
    /// before the host runs, then serves on the current tokio runtime until
    /// `running.shutdown` turns true (a recording read once ends earlier).
    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError>;
}

/// Where a started host listens, for [`serve_until`]'s `ready`.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// Each ingest's kind and bound address.
    pub ingests: Vec<(IngestKind, Option<std::net::SocketAddr>)>,
    /// The HTTP API's address, if it runs.
    pub http: Option<std::net::SocketAddr>,
}

impl Listening {
    /// The bound address of the first ingest of `kind`.
    pub fn address(&self, kind: IngestKind) -> Option<std::net::SocketAddr> {
        self.ingests
            .iter()
            .find(|(k, a)| *k == kind && a.is_some())
            .and_then(|(_, a)| *a)
    }
}

/// A host server's setup.
pub struct ServeOptions {
    /// Where devices' frames come from (at least one).
    pub ingests: Vec<Box<dyn Ingest>>,
    /// The HTTP API and live page, if wanted: address, access rule, limits.
    pub http: Option<http::HttpOptions>,
    /// Shared state for connections.
    pub context: Context,
    /// Heads run on every latent.
    pub heads: Vec<Box<dyn Head>>,
    /// Where result lines go: a [`SyncedFile`] for acknowledgements that
    /// survive a power cut, or any `Write` (stdout) for ones that mean
    /// "written" ([`Durability`]).
    pub out: Box<dyn ResultsOut + Send>,
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
    serve_until(options, |_| {}, async {
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

/// Like [`serve`], but stops when `stop` completes; `ready` hears where
/// the host listens once every ingest is started (for in-process use: the
/// demo, tests).
pub fn serve_until(
    options: ServeOptions,
    ready: impl FnOnce(&Listening) + Send,
    stop: impl std::future::Future<Output = ()>,
) -> Result<WorkerStats, ServeError> {
    let ServeOptions {
        ingests,
        http,
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
            .spawn(move || {
                run_heads(
                    job_rx,
                    heads,
                    &mut *out,
                    &registry,
                    &live,
                    recorder.as_mut(),
                )
            })
            .map_err(io("starting the head worker"))?
    };
    let context = Arc::new(context);
    let served: Result<(), ServeError> = runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut listening = Listening::default();
        let mut tasks = Vec::new();
        let api = match &http {
            Some(options) => {
                check_listen_address(&options.address)?;
                let http_listener = tokio::net::TcpListener::bind(&options.address)
                    .await
                    .map_err(|source| ServeError::Bind {
                        address: options.address.clone(),
                        source,
                    })?;
                let local = http_listener
                    .local_addr()
                    .map_err(io("reading the address"))?;
                let scheme = if options.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                tracing::info!("HTTP API on {scheme}://{local}/");
                listening.http = Some(local);
                let state = http::ApiState::new(Arc::clone(&context), job_tx.downgrade(), options);
                Some(tokio::spawn(http::serve(
                    http_listener,
                    state,
                    options.tls.clone(),
                    stop_rx.clone(),
                )))
            }
            None => None,
        };
        for ingest in ingests {
            let (kind, what) = (ingest.kind(), ingest.describe());
            let started = ingest.start(Running {
                context: Arc::clone(&context),
                jobs: job_tx.clone(),
                shutdown: stop_rx.clone(),
            })?;
            match started.local {
                Some(local) => tracing::info!("{what} bound to {local}"),
                None => tracing::info!("{what} started"),
            }
            listening.ingests.push((kind, started.local));
            tasks.push(started.task);
        }
        // Only the ingests hold the queue now: when they end, the worker
        // drains it and ends.
        drop(job_tx);
        // Poll `stop` once first: the signal handlers it installs must be in
        // place before a supervisor hears that the host listens, or a
        // SIGTERM sent right then kills the host instead of stopping it.
        let mut stop = std::pin::pin!(stop);
        let stopped = tokio::select! {
            biased;
            () = &mut stop => true,
            () = std::future::ready(()) => false,
        };
        // Logged last: everything is bound when a supervisor sees this.
        match listening.address(IngestKind::Tcp) {
            Some(local) => tracing::info!("listening on {local}"),
            None => tracing::info!("listening"),
        }
        ready(&listening);
        if !stopped {
            stop.await;
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        if let Some(api) = api {
            let _ = api.await;
        }
        Ok(())
    });
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
        batches = stats.batches,
        "stopped"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_checked_for_their_form() {
        for good in [
            "0.0.0.0:7878",
            "127.0.0.1:0",
            "localhost:65535",
            "[::]:7878",
            "[::1]:1",
        ] {
            assert!(check_listen_address(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("localhost", "no port"),
            ("localhost:", "no port"),
            (":7878", "no host"),
            ("[::1]", "no port after the bracketed IPv6 address"),
            ("[]:7878", "no host"),
            ("::1:7878", "an IPv6 address goes in brackets"),
            ("host:65536", "is not a number from 1 to 65535"),
            ("host:http", "is not a number from 1 to 65535"),
        ] {
            let error = check_listen_address(bad).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.contains("write host:port, like 0.0.0.0:7878"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn only_a_taken_address_suggests_another_host() {
        let error = |kind| ServeError::Bind {
            address: "127.0.0.1:7878".into(),
            source: std::io::Error::from(kind),
        };
        let taken = error(std::io::ErrorKind::AddrInUse).to_string();
        assert!(
            taken.ends_with("(is another host running there?)"),
            "{taken}"
        );
        let denied = error(std::io::ErrorKind::PermissionDenied).to_string();
        assert!(!denied.contains("another host"), "{denied}");
    }

    /// A results file rotated while a device streams: old files shift and
    /// the oldest goes, every complete file is in place throughout, and a
    /// registry resumed from the current file alone knows every device's
    /// progress.
    #[test]
    fn a_rotated_results_file_carries_every_devices_progress() {
        let dir = std::env::temp_dir().join(format!("latentcam-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        // An earlier run's results: "quiet" sends nothing more, so only
        // the checkpoints carry it forward.
        std::fs::write(
            &path,
            "{\"device\":\"quiet\",\"seq\":3}\n{\"device\":\"busy\",\"seq\":0}\n",
        )
        .unwrap();
        let registry = Registry::resume_from_results(&path).unwrap();
        let mut out = SyncedFile::append(&path).unwrap().rotating(Rotation {
            max_bytes: 400,
            keep: 2,
        });
        let mut rotations = 0;
        for seq in 1..40u64 {
            let device = "busy";
            let line = json!({"device": device, "seq": seq, "heads": {"pad": "x".repeat(40)}});
            writeln!(out.writer(), "{line}").unwrap();
            out.commit().unwrap();
            registry.processed(device, seq);
            let before = std::fs::metadata(&path).unwrap().len();
            out.after_commit(&registry).unwrap();
            if std::fs::metadata(&path).unwrap().len() < before {
                rotations += 1;
            }
        }
        assert!(rotations >= 3, "{rotations} rotations");
        assert!(numbered(&path, 1).exists() && numbered(&path, 2).exists());
        assert!(!numbered(&path, 3).exists(), "only two old files kept");
        assert!(std::fs::metadata(&path).unwrap().len() < 400 + 200);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().next().unwrap().contains("\"checkpoint\":true"),
            "{text}"
        );
        let resumed = Registry::resume_from_results(&path).unwrap();
        assert_eq!(resumed.acked("busy"), Some(39));
        assert_eq!(resumed.acked("quiet"), Some(3));
        // Without rotation the file only grows.
        let plain = dir.join("plain.jsonl");
        let mut out = SyncedFile::append(&plain).unwrap();
        for seq in 0..20u64 {
            writeln!(out.writer(), "{}", json!({"device": "d", "seq": seq})).unwrap();
            out.commit().unwrap();
            out.after_commit(&registry).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&plain).unwrap().lines().count(), 20);
        assert!(!numbered(&plain, 1).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
