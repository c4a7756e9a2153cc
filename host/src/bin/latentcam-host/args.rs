//! The command line: clap's definitions, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use latentcam_host::auth;
use latentcam_model::manifest::default_models_dir;

#[derive(Parser)]
#[command(
    name = "latentcam-host",
    version,
    about = "latentcam host: receives latents and runs task heads on them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` or `json` (one object per line); the filter is
    /// `$LATENTCAM_LOG` (`debug`, or directives like `latentcam_host=debug`).
    #[arg(long, global = true, default_value_t)]
    pub log_format: latentcam_logging::LogFormat,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve devices: accept TCP connections, run the heads on every latent,
    /// write one JSON line per latent, acknowledge. Stops on SIGINT/SIGTERM.
    /// Exits 78 when the configuration cannot work (bad flag or file,
    /// address, keys or model), 1 on any other failure.
    Serve(Box<ServeArgs>),
    /// Load the configuration as `serve` would (file, then flags), check
    /// addresses, keys, limits and the model without binding or writing
    /// anything, print the settings that differ from the defaults, and
    /// exit: 0 if `serve` could start with them, 78 if not.
    CheckConfig(Box<ServeArgs>),
    /// Run the heads over a recording at full speed (one JSON line per
    /// latent, as `serve` writes), with a progress bar on stderr.
    Replay(ReplayArgs),
    /// Fit a new head on the latents of a recording and a labels file
    /// (`device,seq,label` or `seq,label` per line); reports held-out
    /// accuracy and writes the head (LCHEAD01) and `<out>.labels`.
    Train(TrainArgs),
    /// Compare the latents of two recordings of the same frames (matched by
    /// device and seq): cosine similarity and ImageNet top-1 agreement.
    /// Exits 1 if any pair is below --min-cosine or a latent is missing.
    Compare(CompareArgs),
    /// Enroll labelled photos for the few-shot head: the encoder runs here on
    /// the host, and the latents are added to the store file.
    Enroll(EnrollArgs),
    /// Manage the keys of authenticated devices: the host's own key and
    /// the devices allowed to connect (`serve --keys DIR`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Decode a recording (a latentcam frame stream on disk) and summarise it:
    /// messages by kind, devices, sequence gaps, frame errors.
    Inspect(InspectArgs),
    /// Run the model's ImageNet head over every latent of a recording and
    /// print the top classes.
    Classify(ClassifyArgs),
    /// Print a completion script for `shell` on stdout, e.g.
    /// `latentcam-host completions bash > /usr/share/bash-completion/completions/latentcam-host`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: latentcam_cli::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g.
    /// `latentcam-host manpage > /usr/share/man/man1/latentcam-host.1`.
    Manpage,
}

// `latentcam-host replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording file.
    pub recording: PathBuf,
    /// Write result lines here instead of stdout.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// The heads to run.
    #[command(flatten)]
    pub heads: HeadArgs,
}

// `latentcam-host train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recording.
    #[arg(long)]
    pub recording: PathBuf,
    /// The labels CSV.
    #[arg(long)]
    pub labels: PathBuf,
    /// The head file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Hold out every n-th latent of each class for the accuracy check.
    #[arg(long, default_value_t = 5)]
    pub holdout_every: usize,
    /// Check accuracy on the latents of this labels file instead (and
    /// train on every latent of `--labels`).
    #[arg(long)]
    pub test_labels: Option<PathBuf>,
    /// L2 weight decay; without it, chosen from a grid on a validation
    /// split of the training latents.
    #[arg(long)]
    pub l2: Option<f32>,
    /// Full-batch optimisation steps.
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    pub models: PathBuf,
}

// `latentcam-host compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first recording.
    pub first: PathBuf,
    /// The second recording.
    pub second: PathBuf,
    /// Lowest acceptable cosine similarity.
    #[arg(long, default_value_t = 0.999)]
    pub min_cosine: f64,
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    pub models: PathBuf,
}

// `latentcam-host enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The label these photos show.
    #[arg(long)]
    pub label: String,
    /// The enrolment store (created if missing).
    #[arg(long)]
    pub store: PathBuf,
    /// Photos (JPEG/PNG) or directories of them.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    pub models: PathBuf,
}

// `latentcam-host inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The recording file.
    pub recording: PathBuf,
}

// `latentcam-host classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The recording file.
    pub recording: PathBuf,
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    pub models: PathBuf,
    /// Classes to show per latent.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

/// The `keys` subcommands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create the host's key (DIR/host.key, mode 0600) and print its public
    /// half: every edge's `[link] host_key`. Never overwrites a key.
    Init {
        #[command(flatten)]
        dir: KeyDir,
    },
    /// Print the host's public key.
    Show {
        #[command(flatten)]
        dir: KeyDir,
    },
    /// Allow a device: register its public key (what `latentcam-edge
    /// keygen` printed) under its device id, replacing any key it had.
    Add {
        /// The device id (the edge's `[device] id`).
        device: String,
        /// The device's public key, 64 hexadecimal digits.
        public_key: latentcam_secure::PublicKey,
        #[command(flatten)]
        dir: KeyDir,
    },
    /// List the registered devices and their keys.
    List {
        #[command(flatten)]
        dir: KeyDir,
    },
    /// Remove a device: its next connection is refused (a running host
    /// reads the list at every handshake).
    Revoke {
        /// The device id.
        device: String,
        #[command(flatten)]
        dir: KeyDir,
    },
}

/// Where the host's keys live.
#[derive(Debug, clap::Args)]
pub struct KeyDir {
    /// The key directory (holding host.key and devices).
    #[arg(long, default_value = auth::DEFAULT_KEY_DIR)]
    pub dir: PathBuf,
}

/// Options of `latentcam-host serve`. Each flag overrides itself, so
/// the last of a repeated flag wins: the configuration file's settings go
/// first (see `config.rs`), the command line's after them.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Configuration file (TOML): its keys are these flags' long names,
    /// e.g. `tcp = "0.0.0.0:7878"`, `max_fps = 50`, `anomaly = true`,
    /// `recording = ["a.lcr"]`; flags given here override it. Without it
    /// /etc/latentcam/host.toml if it exists ($LATENTCAM_HOST_CONFIG
    /// names another; empty: none).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on for devices. Beyond loopback it needs `--keys`
    /// (or `--allow-unauthenticated`).
    #[arg(long, default_value = "0.0.0.0:7878")]
    pub tcp: String,
    /// Authenticate devices (TCP and serial) with the keys in this
    /// directory (`keys init`, `keys add`); devices that do not
    /// authenticate are refused.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Admit devices that do not authenticate: with `--keys`, alongside
    /// the ones that do; without it, on addresses beyond loopback. For a
    /// trusted lab network only: anyone who reaches the host can send
    /// latents as any device.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Address for the HTTP API, metrics and live page (off if absent);
    /// needs `--http-token-file` or `--http-allow-anonymous`.
    #[arg(long)]
    pub http: Option<String>,
    /// File holding the HTTP API's token (created with a random token,
    /// mode 0600, if missing). Clients send `Authorization: Bearer
    /// <token>`; browsers log in with it at /login.
    #[arg(long, requires = "http", conflicts_with = "http_allow_anonymous")]
    pub http_token_file: Option<PathBuf>,
    /// Serve the HTTP API without authentication: anyone who reaches the
    /// address can read every device and enrol photos.
    #[arg(long, requires = "http")]
    pub http_allow_anonymous: bool,
    /// Most HTTP connections at once; more are closed at accept.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_max_connections: u64,
    /// Seconds an HTTP connection gets to send a complete request head,
    /// from opening or from its previous response (the keep-alive idle
    /// timeout too).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout: u64,
    /// Seconds an HTTP request gets to send its body (photo uploads).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout: u64,
    /// Serve the HTTP API over TLS with this certificate chain (PEM; the
    /// server's certificate first).
    #[arg(long, requires_all = ["http", "http_tls_key"])]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of `--http-tls-cert` (PEM).
    #[arg(long, requires_all = ["http", "http_tls_cert"])]
    pub http_tls_key: Option<PathBuf>,
    /// Address to receive UDP devices on (off if absent). With --keys,
    /// UDP devices authenticate with Noise K (wire/SPEC.md §7).
    #[arg(long)]
    pub udp: Option<String>,
    /// An MQTT 5 broker to take devices' latents from, as one worker of
    /// `--group` (e.g. mqtt://broker:1883; wire/SPEC.md §9).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// The share group: the workers of one group split the devices.
    #[arg(long, default_value = "latentcam")]
    pub group: String,
    /// This worker's name, unique in its group (default: the host name and
    /// process id).
    #[arg(long)]
    pub worker: Option<String>,
    /// Broker user name (the password comes from LATENTCAM_MQTT_PASSWORD;
    /// use an mqtts:// broker so it does not travel in cleartext).
    #[arg(long)]
    pub mqtt_user: Option<String>,
    /// With an mqtts:// (or ssl://) broker: a PEM file of the certificate
    /// authorities that may sign its certificate (default: the system's).
    #[arg(long, requires = "mqtt")]
    pub mqtt_ca: Option<PathBuf>,
    /// With an mqtts:// broker: this worker's client certificate (PEM,
    /// common name `_latentcam-host`, made by `scripts/mqtt-certs.sh
    /// worker`). It tells the host that the broker authenticates every
    /// client by certificate and binds each device's topics to its id
    /// (README, security): MQTT devices then count as authenticated.
    #[arg(long, requires_all = ["mqtt", "mqtt_key"])]
    pub mqtt_cert: Option<PathBuf>,
    /// The private key of --mqtt-cert (PEM, mode 0600).
    #[arg(long, requires = "mqtt_cert")]
    pub mqtt_key: Option<PathBuf>,
    /// Do not publish each result on latentcam/<site>/<device>/result.
    #[arg(long)]
    pub no_mqtt_results: bool,
    /// Home Assistant MQTT discovery prefix: each device's label, few-shot
    /// label, anomaly score and alarm appear in Home Assistant on their own.
    #[arg(long, default_value = latentcam_host::ingest::mqtt::DISCOVERY_PREFIX, requires = "mqtt")]
    pub mqtt_discovery_prefix: String,
    /// Publish no Home Assistant discovery.
    #[arg(long, requires = "mqtt")]
    pub no_mqtt_discovery: bool,
    /// A serial line with a device on it (e.g. /dev/ttyUSB0).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Baud rate of the serial line.
    #[arg(long, default_value_t = 921_600)]
    pub baud: u32,
    /// Also take devices' frames from this recording (an edge's `file`
    /// link or a host recording); repeatable.
    #[arg(long)]
    pub recording: Vec<PathBuf>,
    /// Keep reading the recordings as they grow instead of stopping at
    /// their end.
    #[arg(long)]
    pub follow: bool,
    /// Append result lines here instead of stdout; a restarted host
    /// resumes from this file (what each device already delivered). Each
    /// batch of lines is synced (fdatasync) before its latents are
    /// acknowledged; on stdout an Ack only means the line was written.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Rotate the --jsonl file when it reaches this many MiB: it becomes
    /// FILE.1 (FILE.1 becomes FILE.2, ...), and the new FILE starts with
    /// one checkpoint line per device (`"checkpoint": true`) so a restart
    /// resumes from it. 0: never rotate.
    #[arg(long, default_value_t = 1024, requires = "jsonl")]
    pub jsonl_max_mb: u64,
    /// Rotated --jsonl files kept (FILE.1 ... FILE.N); older ones are
    /// deleted.
    #[arg(long, default_value_t = 4, requires = "jsonl")]
    pub jsonl_keep: u32,
    /// Sustained latents/s accepted per connection.
    #[arg(long, default_value_t = 200.0)]
    pub max_fps: f64,
    /// Most device connections at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most device connections (or UDP senders) from one IP address at
    /// once; more are answered Busy.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_ip: usize,
    /// Seconds a device connection may stay silent after its Hello (an
    /// edge sends a heartbeat every 5 s by default).
    #[arg(long, default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// Most devices the host keeps state for; a new id beyond it replaces
    /// one silent for 10 minutes, or is answered Busy.
    #[arg(long, default_value_t = 10_000)]
    pub max_devices: usize,
    /// Seconds of silence after which a device shows offline (page,
    /// `/api/devices`, `latentcam_device_up`); keep it above three of the
    /// devices' heartbeat intervals.
    #[arg(long, default_value_t = 15.0)]
    pub offline_after: f64,
    /// Host id sent to devices.
    #[arg(long, default_value = "latentcam-host")]
    pub host_id: String,
    /// Keep every accepted latent in rotating recordings in this
    /// directory (for `train` and `replay` later).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Rotate recordings at this many megabytes.
    #[arg(long, default_value_t = 64)]
    pub record_file_mb: u64,
    /// Delete the oldest recordings beyond this many megabytes in all.
    #[arg(long, default_value_t = 10240)]
    pub record_total_mb: u64,
    /// The heads to run.
    #[command(flatten)]
    pub heads: HeadArgs,
}

/// The heads to run, shared by `serve` and `replay`.
#[derive(Debug, clap::Args)]
pub struct HeadArgs {
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    pub models: PathBuf,
    /// ImageNet classes per latent.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Do not run the ImageNet head (a deployment that only wants, say,
    /// anomaly scores; the head costs 1.3 M multiply-adds per latent).
    #[arg(long)]
    pub no_imagenet: bool,
    /// Run the per-device anomaly head.
    #[arg(long)]
    pub anomaly: bool,
    /// Run the few-shot head with this enrolment store (see `enroll`;
    /// `serve` creates it when missing and saves enrolments to it).
    #[arg(long)]
    pub fewshot: Option<PathBuf>,
    /// Index every latent for similarity search in this file.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Also run a trained head (LCHEAD01 file from `train`).
    #[arg(long)]
    pub head: Option<PathBuf>,
}
