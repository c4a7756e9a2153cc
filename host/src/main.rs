//! `latentcam-host`: argument parsing and wiring only; the work is in the
//! library.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latentcam_host::auth;
use latentcam_host::encode::HostEncoder;
use latentcam_host::heads::Head;
use latentcam_host::heads::anomaly::{AnomalyHead, AnomalyOptions};
use latentcam_host::heads::fewshot::{FewShotHead, FewShotOptions, FewShotStore, SharedFewShot};
use latentcam_host::heads::imagenet::{ImagenetHead, TopK};
use latentcam_host::heads::search::{DEFAULT_CAPACITY, LatentIndex, SharedIndex};
use latentcam_host::heads::trained;
use latentcam_host::ingest::registry::RegistryLimits;
use latentcam_host::ingest::{self, Limits, Registry, ServeOptions, http};
use latentcam_host::recorder::{Recorder, RecorderConfig};
use latentcam_model::manifest::{Manifest, default_models_dir};

#[derive(Parser)]
#[command(
    version,
    about = "latentcam host: receives latents and runs task heads on them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve devices: accept TCP connections, run the heads on every latent,
    /// write one JSON line per latent, acknowledge. Stops on SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Run the heads over a recording at full speed (one JSON line per
    /// latent, as `serve` writes), with a progress bar on stderr.
    Replay {
        /// The recording file.
        recording: PathBuf,
        /// Write result lines here instead of stdout.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// The heads to run.
        #[command(flatten)]
        heads: HeadArgs,
    },
    /// Fit a new head on the latents of a recording and a labels file
    /// (`device,seq,label` or `seq,label` per line); reports held-out
    /// accuracy and writes the head (LCHEAD01) and `<out>.labels`.
    Train {
        /// The recording.
        #[arg(long)]
        recording: PathBuf,
        /// The labels CSV.
        #[arg(long)]
        labels: PathBuf,
        /// The head file to write.
        #[arg(long)]
        out: PathBuf,
        /// Hold out every n-th latent of each class for the accuracy check.
        #[arg(long, default_value_t = 5)]
        holdout_every: usize,
        /// Check accuracy on the latents of this labels file instead (and
        /// train on every latent of `--labels`).
        #[arg(long)]
        test_labels: Option<PathBuf>,
        /// L2 weight decay; without it, chosen from a grid on a validation
        /// split of the training latents.
        #[arg(long)]
        l2: Option<f32>,
        /// Full-batch optimisation steps.
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
    },
    /// Compare the latents of two recordings of the same frames (matched by
    /// device and seq): cosine similarity and ImageNet top-1 agreement.
    /// Exits 1 if any pair is below --min-cosine or a latent is missing.
    Compare {
        /// The first recording.
        first: PathBuf,
        /// The second recording.
        second: PathBuf,
        /// Lowest acceptable cosine similarity.
        #[arg(long, default_value_t = 0.999)]
        min_cosine: f64,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
    },
    /// Enroll labelled photos for the few-shot head: the encoder runs here on
    /// the host, and the latents are added to the store file.
    Enroll {
        /// The label these photos show.
        #[arg(long)]
        label: String,
        /// The enrolment store (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// Photos (JPEG/PNG) or directories of them.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
    },
    /// Manage the keys of authenticated devices: the host's own key and
    /// the devices allowed to connect (`serve --keys DIR`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Decode a recording (a latentcam frame stream on disk) and summarise it:
    /// messages by kind, devices, sequence gaps, frame errors.
    Inspect {
        /// The recording file.
        recording: PathBuf,
    },
    /// Run the model's ImageNet head over every latent of a recording and
    /// print the top classes.
    Classify {
        /// The recording file.
        recording: PathBuf,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
        /// Classes to show per latent.
        #[arg(long, default_value_t = 3)]
        top: usize,
    },
}

/// The `keys` subcommands.
#[derive(Subcommand)]
enum KeysCommand {
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
struct KeyDir {
    /// The key directory (holding host.key and devices).
    #[arg(long, default_value = auth::DEFAULT_KEY_DIR)]
    dir: PathBuf,
}

/// Options of `latentcam-host serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on for devices. Beyond loopback it needs `--keys`
    /// (or `--allow-unauthenticated`).
    #[arg(long, default_value = "0.0.0.0:7878")]
    tcp: String,
    /// Authenticate devices (TCP and serial) with the keys in this
    /// directory (`keys init`, `keys add`); devices that do not
    /// authenticate are refused.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Admit devices that do not authenticate: with `--keys`, alongside
    /// the ones that do; without it, on addresses beyond loopback. For a
    /// trusted lab network only: anyone who reaches the host can send
    /// latents as any device.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Address for the HTTP API, metrics and live page (off if absent);
    /// needs `--http-token-file` or `--http-allow-anonymous`.
    #[arg(long)]
    http: Option<String>,
    /// File holding the HTTP API's token (created with a random token,
    /// mode 0600, if missing). Clients send `Authorization: Bearer
    /// <token>`; browsers log in with it at /login.
    #[arg(long, requires = "http", conflicts_with = "http_allow_anonymous")]
    http_token_file: Option<PathBuf>,
    /// Serve the HTTP API without authentication: anyone who reaches the
    /// address can read every device and enrol photos.
    #[arg(long, requires = "http")]
    http_allow_anonymous: bool,
    /// Most HTTP connections at once; more are closed at accept.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    http_max_connections: u64,
    /// Seconds an HTTP connection gets to send a complete request head,
    /// from opening or from its previous response (the keep-alive idle
    /// timeout too).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    http_header_timeout: u64,
    /// Seconds an HTTP request gets to send its body (photo uploads).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    http_body_timeout: u64,
    /// Serve the HTTP API over TLS with this certificate chain (PEM; the
    /// server's certificate first).
    #[arg(long, requires_all = ["http", "http_tls_key"])]
    http_tls_cert: Option<PathBuf>,
    /// The private key of `--http-tls-cert` (PEM).
    #[arg(long, requires_all = ["http", "http_tls_cert"])]
    http_tls_key: Option<PathBuf>,
    /// Address to receive UDP devices on (off if absent). With --keys,
    /// UDP devices authenticate with Noise K (wire/SPEC.md §7).
    #[arg(long)]
    udp: Option<String>,
    /// An MQTT 5 broker to take devices' latents from, as one worker of
    /// `--group` (e.g. mqtt://broker:1883; wire/SPEC.md §9).
    #[arg(long)]
    mqtt: Option<String>,
    /// The share group: the workers of one group split the devices.
    #[arg(long, default_value = "latentcam")]
    group: String,
    /// This worker's name, unique in its group (default: the host name and
    /// process id).
    #[arg(long)]
    worker: Option<String>,
    /// Broker user name (the password comes from LATENTCAM_MQTT_PASSWORD;
    /// use an mqtts:// broker so it does not travel in cleartext).
    #[arg(long)]
    mqtt_user: Option<String>,
    /// With an mqtts:// (or ssl://) broker: a PEM file of the certificate
    /// authorities that may sign its certificate (default: the system's).
    #[arg(long, requires = "mqtt")]
    mqtt_ca: Option<PathBuf>,
    /// With an mqtts:// broker: this worker's client certificate (PEM,
    /// common name `_latentcam-host`, made by `scripts/mqtt-certs.sh
    /// worker`). It tells the host that the broker authenticates every
    /// client by certificate and binds each device's topics to its id
    /// (README, security): MQTT devices then count as authenticated.
    #[arg(long, requires_all = ["mqtt", "mqtt_key"])]
    mqtt_cert: Option<PathBuf>,
    /// The private key of --mqtt-cert (PEM, mode 0600).
    #[arg(long, requires = "mqtt_cert")]
    mqtt_key: Option<PathBuf>,
    /// Do not publish each result on latentcam/<site>/<device>/result.
    #[arg(long)]
    no_mqtt_results: bool,
    /// A serial line with a device on it (e.g. /dev/ttyUSB0).
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Baud rate of the serial line.
    #[arg(long, default_value_t = 921_600)]
    baud: u32,
    /// Also take devices' frames from this recording (an edge's `file`
    /// link or a host recording); repeatable.
    #[arg(long)]
    recording: Vec<PathBuf>,
    /// Keep reading the recordings as they grow instead of stopping at
    /// their end.
    #[arg(long)]
    follow: bool,
    /// Append result lines here instead of stdout; a restarted host
    /// resumes from this file (what each device already delivered). Each
    /// batch of lines is synced (fdatasync) before its latents are
    /// acknowledged; on stdout an Ack only means the line was written.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Rotate the --jsonl file when it reaches this many MiB: it becomes
    /// FILE.1 (FILE.1 becomes FILE.2, ...), and the new FILE starts with
    /// one checkpoint line per device (`"checkpoint": true`) so a restart
    /// resumes from it. 0: never rotate.
    #[arg(long, default_value_t = 1024, requires = "jsonl")]
    jsonl_max_mb: u64,
    /// Rotated --jsonl files kept (FILE.1 ... FILE.N); older ones are
    /// deleted.
    #[arg(long, default_value_t = 4, requires = "jsonl")]
    jsonl_keep: u32,
    /// Sustained latents/s accepted per connection.
    #[arg(long, default_value_t = 200.0)]
    max_fps: f64,
    /// Most device connections at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Most device connections (or UDP senders) from one IP address at
    /// once; more are answered Busy.
    #[arg(long, default_value_t = 64)]
    max_connections_per_ip: usize,
    /// Seconds a device connection may stay silent after its Hello (an
    /// edge sends a heartbeat every 5 s by default).
    #[arg(long, default_value_t = 120.0)]
    idle_timeout: f64,
    /// Most devices the host keeps state for; a new id beyond it replaces
    /// one silent for 10 minutes, or is answered Busy.
    #[arg(long, default_value_t = 10_000)]
    max_devices: usize,
    /// Host id sent to devices.
    #[arg(long, default_value = "latentcam-host")]
    host_id: String,
    /// Keep every accepted latent in rotating recordings in this
    /// directory (for `train` and `replay` later).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Rotate recordings at this many megabytes.
    #[arg(long, default_value_t = 64)]
    record_file_mb: u64,
    /// Delete the oldest recordings beyond this many megabytes in all.
    #[arg(long, default_value_t = 10240)]
    record_total_mb: u64,
    /// The heads to run.
    #[command(flatten)]
    heads: HeadArgs,
}

/// The heads to run, shared by `serve` and `replay`.
#[derive(Debug, clap::Args)]
struct HeadArgs {
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    models: PathBuf,
    /// ImageNet classes per latent.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Do not run the ImageNet head (a deployment that only wants, say,
    /// anomaly scores; the head costs 1.3 M multiply-adds per latent).
    #[arg(long)]
    no_imagenet: bool,
    /// Run the per-device anomaly head.
    #[arg(long)]
    anomaly: bool,
    /// Run the few-shot head with this enrolment store (see `enroll`;
    /// `serve` creates it when missing and saves enrolments to it).
    #[arg(long)]
    fewshot: Option<PathBuf>,
    /// Index every latent for similarity search in this file.
    #[arg(long)]
    index: Option<PathBuf>,
    /// Also run a trained head (LCHEAD01 file from `train`).
    #[arg(long)]
    head: Option<PathBuf>,
}

/// Loaded heads, with handles to the ones the HTTP API also uses.
struct LoadedHeads {
    manifest: Manifest,
    heads: Vec<Box<dyn Head>>,
    fewshot: Option<SharedFewShot>,
    index: Option<SharedIndex>,
}

impl HeadArgs {
    /// Loads the manifest and every head asked for. `live`: the few-shot
    /// store may be created and is saved on enrolment (serve); otherwise it
    /// must exist and is only read (replay).
    fn load(&self, live: bool) -> anyhow::Result<LoadedHeads> {
        let manifest = load_manifest(&self.models)?;
        let dim = manifest.latent_dim;
        let mut heads: Vec<Box<dyn Head>> = Vec::new();
        if !self.no_imagenet {
            let imagenet = ImagenetHead::from_manifest(&manifest)
                .context("loading the model's ImageNet head")?;
            heads.push(Box::new(TopK {
                head: imagenet,
                k: self.top,
            }));
        }
        let fewshot = match &self.fewshot {
            Some(path) => {
                // Serving, the store is the host's own state: a damaged one
                // is moved aside (with an ERROR) rather than fatal.
                let store = if live {
                    FewShotStore::load_or_quarantine(path, dim)?.0
                } else {
                    FewShotStore::load(path, dim)?
                };
                tracing::info!(labels = store.len(), "few-shot store {}", path.display());
                let shared = SharedFewShot::new(
                    FewShotHead::new(store, FewShotOptions::default())?,
                    live.then(|| path.clone()),
                );
                heads.push(Box::new(shared.clone()));
                Some(shared)
            }
            None => None,
        };
        if self.anomaly {
            heads.push(Box::new(AnomalyHead::new(dim, AnomalyOptions::default())?));
        }
        let index = match &self.index {
            Some(path) => {
                let index = if live {
                    LatentIndex::open_or_quarantine(path, dim, DEFAULT_CAPACITY)?.0
                } else {
                    LatentIndex::open(path, dim, DEFAULT_CAPACITY)?
                };
                let shared = SharedIndex::new(index);
                heads.push(Box::new(shared.clone()));
                Some(shared)
            }
            None => None,
        };
        if let Some(path) = &self.head {
            heads.push(Box::new(trained::TrainedHead::load(path)?));
        }
        Ok(LoadedHeads {
            manifest,
            heads,
            fewshot,
            index,
        })
    }
}

fn load_manifest(models: &std::path::Path) -> anyhow::Result<Manifest> {
    Manifest::load(models)
        .with_context(|| format!("loading the model manifest from {}", models.display()))
}

/// `latentcam-host keys …`.
fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init {
            dir: KeyDir { dir },
        } => {
            let public = auth::init(&dir)?;
            eprintln!(
                "wrote {}; give every edge this public key as [link] host_key:",
                dir.join(auth::HOST_KEY_FILE).display()
            );
            println!("{public}");
        }
        KeysCommand::Show {
            dir: KeyDir { dir },
        } => println!("{}", auth::show(&dir)?),
        KeysCommand::Add {
            device,
            public_key,
            dir: KeyDir { dir },
        } => match auth::add(&dir, &device, public_key)? {
            Some(old) if old == public_key => {
                println!("{device}: already registered with this key")
            }
            Some(old) => println!("{device}: replaced key {old} with {public_key}"),
            None => println!("{device}: registered"),
        },
        KeysCommand::List {
            dir: KeyDir { dir },
        } => {
            for (device, key) in auth::list(&dir)?.iter() {
                println!("{key} {device}");
            }
        }
        KeysCommand::Revoke {
            device,
            dir: KeyDir { dir },
        } => {
            if !auth::revoke(&dir, &device)? {
                anyhow::bail!(
                    "{device:?} is not registered in {} (see `latentcam-host keys list --dir {}`)",
                    dir.join(auth::DEVICES_FILE).display(),
                    dir.display()
                );
            }
            println!("{device}: revoked; its next connection is refused");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Replay {
            recording,
            jsonl,
            heads,
        } => {
            let LoadedHeads {
                manifest, heads, ..
            } = heads.load(false)?;
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let total = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let out: Box<dyn std::io::Write + Send> = match &jsonl {
                Some(path) => Box::new(std::io::BufWriter::new(
                    File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let summary = latentcam_host::replay::replay(
                BufReader::new(file),
                &manifest,
                heads,
                out,
                |read| bar.set_position(read),
            )
            .with_context(|| format!("replaying {}", recording.display()))?;
            bar.finish_and_clear();
            eprintln!(
                "{}: {} latents through the heads, {} skipped, {} frame errors",
                recording.display(),
                summary.worker.processed,
                summary.skipped,
                summary.frame_errors
            );
            for reason in &summary.refused {
                eprintln!("{reason}");
            }
        }
        Command::Train {
            recording,
            labels,
            out,
            holdout_every,
            test_labels,
            l2,
            epochs,
            models,
        } => {
            let manifest = load_manifest(&models)?;
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let latents = trained::latents_of(BufReader::new(file), &manifest)?;
            let labelled = trained::read_labels(&labels)?;
            let holdout = match &test_labels {
                Some(path) => trained::Holdout::Labels(trained::read_labels(path)?),
                None => trained::Holdout::EveryNth(holdout_every),
            };
            let report = trained::train(
                &latents,
                &labelled,
                &holdout,
                &latentcam_host::heads::linear::FitOptions {
                    epochs,
                    l2: l2.unwrap_or(1e-4),
                    ..Default::default()
                },
                l2.is_none(),
            )?;
            for (l2, score) in &report.validation {
                println!(
                    "weight decay {l2:e}: validation top-1 {:.1}%",
                    score * 100.0
                );
            }
            report.head.save(&out)?;
            println!(
                "{}: {} classes, trained on {} latents (weight decay {:e}), held-out top-1 {:.1}% on {} ({} labels not in the recording)",
                out.display(),
                report.head.labels.len(),
                report.train,
                report.l2,
                report.accuracy * 100.0,
                report.held_out,
                report.unmatched
            );
        }
        Command::Compare {
            first,
            second,
            min_cosine,
            models,
        } => {
            let manifest = load_manifest(&models)?;
            let read = |path: &PathBuf| -> anyhow::Result<_> {
                let file = File::open(path)
                    .with_context(|| format!("cannot open recording {}", path.display()))?;
                trained::latents_of(BufReader::new(file), &manifest)
                    .with_context(|| format!("reading {}", path.display()))
            };
            let (a, b) = (read(&first)?, read(&second)?);
            let imagenet = ImagenetHead::from_manifest(&manifest)
                .context("loading the model's ImageNet head")?;
            let c = latentcam_host::compare::compare(&a, &b, Some(&imagenet))?;
            println!(
                "{} latents matched ({} only in the first, {} only in the second): cosine min {:.6} mean {:.6}, ImageNet top-1 agrees on {}/{}",
                c.matched,
                c.only_first,
                c.only_second,
                c.min_cosine,
                c.mean_cosine,
                c.top1_agree,
                c.matched
            );
            if c.matched == 0 || c.only_first + c.only_second > 0 || c.min_cosine < min_cosine {
                anyhow::bail!(
                    "the recordings differ (want every latent in both, cosine ≥ {min_cosine})"
                );
            }
        }
        Command::Enroll {
            label,
            store,
            images,
            models,
        } => {
            let manifest = load_manifest(&models)?;
            let mut encoder = HostEncoder::open(&manifest).context("loading the encoder")?;
            let mut set = FewShotStore::load_or_default(&store, manifest.latent_dim)?;
            let paths = latentcam_model::picture::expand_inputs(&images)?;
            let mut added = 0;
            for path in &paths {
                let latent = encoder
                    .encode_file(path)
                    .with_context(|| format!("cannot encode {}", path.display()))?;
                set.add(&label, &latent)?;
                added += 1;
            }
            set.save(&store)?;
            println!(
                "{}: {added} example(s) of {label:?} added; {} label(s) enrolled",
                store.display(),
                set.len()
            );
        }
        Command::Keys { command } => keys(command)?,
        Command::Serve(args) => {
            let ServeArgs {
                tcp,
                keys,
                allow_unauthenticated,
                http,
                http_token_file,
                http_allow_anonymous,
                http_max_connections,
                http_header_timeout,
                http_body_timeout,
                http_tls_cert,
                http_tls_key,
                udp,
                mqtt,
                group,
                worker,
                mqtt_user,
                mqtt_ca,
                mqtt_cert,
                mqtt_key,
                no_mqtt_results,
                serial,
                baud,
                recording,
                follow,
                jsonl,
                jsonl_max_mb,
                jsonl_keep,
                max_fps,
                max_connections,
                max_connections_per_ip,
                idle_timeout,
                max_devices,
                host_id,
                heads,
                record,
                record_file_mb,
                record_total_mb,
            } = *args;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("LATENTCAM_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_target(false)
                .init();
            let mqtt_host = match &mqtt {
                Some(url) => Some(
                    latentcam_wire::mqtt::parse_url(url)
                        .map_err(anyhow::Error::msg)
                        .context("--mqtt")?
                        .host,
                ),
                None => None,
            };
            let (auth, warnings) = auth::HostAuth::for_serve(
                keys.as_deref(),
                allow_unauthenticated,
                &auth::Exposure {
                    tcp: &tcp,
                    udp: udp.as_deref(),
                    mqtt: mqtt_host.as_deref(),
                    mqtt_client_cert: mqtt_cert.is_some(),
                },
            )?;
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            if let (Some(key), Some(dir)) = (auth.key(), &keys) {
                let devices = auth::list(dir)?.len();
                tracing::info!(
                    "devices authenticate: host key {} ({devices} devices registered in {})",
                    key.public(),
                    dir.display()
                );
            }
            let http = match http {
                None => None,
                Some(address) => {
                    let access = match (http_token_file, http_allow_anonymous) {
                        (Some(path), _) => http::Access::Token(
                            http::Token::from_file(&path)
                                .context("setting up the HTTP API's token")?,
                        ),
                        (None, true) => http::Access::Anonymous,
                        (None, false) => anyhow::bail!(
                            "--http needs --http-token-file PATH (created with a random token if missing; clients send `Authorization: Bearer <token>`, browsers log in at /login), or --http-allow-anonymous to serve the API to anyone who can reach {address}"
                        ),
                    };
                    let tls = match (&http_tls_cert, &http_tls_key) {
                        (Some(cert), Some(key)) => Some(
                            http::Tls::load(cert, key)
                                .context("setting up TLS for the HTTP API")?,
                        ),
                        _ => None,
                    };
                    Some(http::HttpOptions {
                        address,
                        access,
                        tls,
                        limits: http::HttpLimits {
                            max_connections: usize::try_from(http_max_connections)
                                .unwrap_or(usize::MAX),
                            header_timeout: std::time::Duration::from_secs(http_header_timeout),
                            body_timeout: std::time::Duration::from_secs(http_body_timeout),
                        },
                    })
                }
            };
            let LoadedHeads {
                manifest,
                heads,
                fewshot: shared_fewshot,
                index: shared_index,
            } = heads.load(true)?;
            // A results file is synced before its latents are acknowledged;
            // stdout cannot be, so there an Ack only means "written".
            let out: Box<dyn ingest::ResultsOut + Send> = match &jsonl {
                Some(path) => {
                    let file = ingest::SyncedFile::append(path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    Box::new(match jsonl_max_mb {
                        0 => file,
                        mb => file.rotating(ingest::Rotation {
                            max_bytes: mb.saturating_mul(1 << 20),
                            keep: jsonl_keep,
                        }),
                    })
                }
                None => {
                    tracing::info!(
                        "results go to stdout: an Ack means the result was written, not that it \
                         is on disk; give --jsonl FILE for acknowledgements that survive a power cut"
                    );
                    Box::new(std::io::stdout())
                }
            };
            // Results appended to a file are the durable record: a restarted
            // host resumes from them, so devices re-send only what it lacks.
            let registry = match &jsonl {
                Some(path) => Registry::resume_from_results(path)?,
                None => Registry::in_memory(),
            }
            .with_limits(RegistryLimits {
                max_devices: max_devices.max(1),
                ..RegistryLimits::default()
            });
            anyhow::ensure!(
                idle_timeout > 0.0 && idle_timeout <= 31_536_000.0,
                "--idle-timeout must be more than 0 and at most a year of seconds"
            );
            let limits = Limits {
                max_fps,
                burst: max_fps * 2.0,
                max_per_ip: max_connections_per_ip.max(1),
                idle_timeout: std::time::Duration::from_secs_f64(idle_timeout),
                ..Limits::default()
            };
            // Enrolment photos and search by image over HTTP need the encoder.
            let encoder = match &http {
                Some(_) => Some(std::sync::Arc::new(std::sync::Mutex::new(
                    HostEncoder::open(&manifest).context("loading the encoder for the HTTP API")?,
                ))),
                None => None,
            };
            let mut ingests: Vec<Box<dyn ingest::Ingest>> =
                vec![Box::new(ingest::tcp::TcpIngest { address: tcp })];
            if let Some(address) = udp {
                ingests.push(Box::new(ingest::udp::UdpIngest { address }));
            }
            if let Some(url) = mqtt {
                let worker = worker.unwrap_or_else(|| {
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().replace(['/', '+', '#', '$'], "-"))
                        .unwrap_or_else(|_| "host".into());
                    format!("{host}-{}", std::process::id())
                });
                ingests.push(Box::new(ingest::mqtt::MqttIngest {
                    url,
                    group,
                    worker,
                    username: mqtt_user,
                    password: std::env::var("LATENTCAM_MQTT_PASSWORD").ok(),
                    ca_file: mqtt_ca,
                    client_cert: mqtt_cert
                        .zip(mqtt_key)
                        .map(|(cert, key)| latentcam_secure::tls::ClientCert { cert, key }),
                    publish_results: !no_mqtt_results,
                }));
            }
            if let Some(path) = serial {
                ingests.push(Box::new(ingest::serial::SerialIngest { path, baud }));
            }
            for path in recording {
                ingests.push(Box::new(ingest::file::RecordingIngest { path, follow }));
            }
            ingest::serve(ServeOptions {
                ingests,
                http,
                context: ingest::Context {
                    manifest,
                    registry: std::sync::Arc::new(registry),
                    limits,
                    host_id,
                    max_connections,
                    live: Default::default(),
                    index: shared_index,
                    fewshot: shared_fewshot,
                    encoder,
                    auth: std::sync::Arc::new(auth),
                },
                heads,
                out,
                queue: 256,
                recorder: match &record {
                    Some(dir) => Some(Recorder::open(RecorderConfig {
                        max_file_bytes: record_file_mb << 20,
                        max_total_bytes: record_total_mb << 20,
                        ..RecorderConfig::new(dir)
                    })?),
                    None => None,
                },
            })?;
        }
        Command::Inspect { recording } => {
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let summary = latentcam_host::recording::summarize(BufReader::new(file))
                .with_context(|| format!("while reading {}", recording.display()))?;
            println!("{}: {} bytes", recording.display(), summary.bytes);
            for (device, model) in &summary.devices {
                println!("device {device}: {model}");
            }
            for (kind, count) in &summary.messages {
                println!("  {kind:<10} {count}");
            }
            let seq = &summary.sequence;
            if let Some((first, last)) = seq.first_last {
                println!(
                    "latents: seq {first}..={last}, {} missing, {} out of order or duplicate, {:.1} payload bytes/latent",
                    seq.missing,
                    seq.out_of_order_or_duplicate,
                    summary.payload_bytes as f64 / seq.latents as f64
                );
            }
            if summary.errors.is_empty() {
                println!("frame errors: none");
            } else {
                for (kind, count) in &summary.errors {
                    println!("frame errors: {kind} {count}");
                }
            }
        }
        Command::Classify {
            recording,
            models,
            top,
        } => {
            let manifest = Manifest::load(&models).with_context(|| {
                format!(
                    "loading the model manifest from {} (set --models or LATENTCAM_MODELS)",
                    models.display()
                )
            })?;
            let head =
                ImagenetHead::from_manifest(&manifest).context("loading the ImageNet head")?;
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let summary = latentcam_host::classify::classify_recording(
                BufReader::new(file),
                &manifest,
                &head,
                top.max(1),
                |c| {
                    let classes: Vec<String> = c
                        .predictions
                        .iter()
                        .map(|p| format!("{} {:.0}%", p.label, p.probability * 100.0))
                        .collect();
                    println!(
                        "{} #{:<4} {:>4}x{:<4} {}",
                        c.device_id,
                        c.seq,
                        c.frame_size.0,
                        c.frame_size.1,
                        classes.join(" | ")
                    );
                },
            )
            .with_context(|| format!("while reading {}", recording.display()))?;
            for (device, refusal) in &summary.refused {
                eprintln!("refused device {device}: {refusal}");
            }
            println!(
                "{} latents classified, {} without an accepted Hello, {} bad payloads, {} frame errors",
                summary.classified,
                summary.without_hello,
                summary.bad_payload,
                summary.frame_errors
            );
            if summary.classified == 0 && !summary.refused.is_empty() {
                anyhow::bail!("no latent could be classified: every device was refused");
            }
        }
    }
    Ok(())
}
