//! `latentcam-edge`: argument parsing and wiring only; the work is in the
//! library.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use latentcam_firmware::assemble;
use latentcam_firmware::batch::{self, BatchSettings};
use latentcam_firmware::config::{CodecChoice, EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::encoder::{self, BackendChoice, PrecisionChoice};
use latentcam_firmware::led::{self, LedSignal};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::pipeline::{self, Report};
use serde::Serialize;

/// Without a subcommand, `latentcam-edge` runs the pipeline: frames from the
/// configured source are encoded and sent over the configured link until
/// SIGINT/SIGTERM (or the end of a replay).
#[derive(Parser)]
#[command(
    version,
    about = "latentcam edge program: camera → encoder → latent → link",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Run-mode flags.
#[derive(Args, Default)]
struct RunArgs {
    /// Configuration file (TOML); without it, built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: ConfigFlags,
    /// Stop after this many captured frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// On shutdown, seconds to keep delivering unacknowledged latents.
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
    /// Write the run's report (counts, stage timings, peak RSS) as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

impl RunArgs {
    /// The config file (or defaults) with every given flag applied, validated.
    fn config(&self) -> anyhow::Result<EdgeConfig> {
        Ok(EdgeConfig::load_with(
            self.config.as_deref(),
            self.flags.table()?,
        )?)
    }
}

/// Flags that override keys of the configuration file. They are laid out
/// like the file and serialize to a table of the keys given, which
/// [`EdgeConfig::load_with`] merges over the file: a flag is parsed and
/// validated exactly as its key is.
#[derive(Args, Serialize, Default)]
struct ConfigFlags {
    #[command(flatten)]
    device: DeviceFlags,
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    source: SourceFlags,
    #[command(flatten)]
    link: LinkFlags,
    #[command(flatten)]
    mqtt: MqttFlags,
    #[command(flatten)]
    spool: SpoolFlags,
    #[command(flatten)]
    led: LedFlags,
}

impl ConfigFlags {
    fn table(&self) -> anyhow::Result<toml::Table> {
        let mut table = toml::Table::try_from(self).context("reading the command-line flags")?;
        if self.spool.no_spool
            && let Some(toml::Value::Table(spool)) = table.get_mut("spool")
        {
            spool.insert("dir".into(), toml::Value::String(String::new()));
        }
        Ok(table)
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Args, Serialize, Default)]
struct DeviceFlags {
    /// Config `[device]` id.
    #[arg(long)]
    #[serde(rename = "id")]
    device_id: Option<String>,
    /// Config `[device]` heartbeat_seconds.
    #[arg(long)]
    heartbeat_seconds: Option<f64>,
}

#[derive(Args, Serialize, Default)]
struct ModelFlags {
    /// Config `[model]` dir: models directory holding manifest.toml.
    #[arg(long)]
    #[serde(rename = "dir")]
    models: Option<PathBuf>,
    /// Config `[model]` backend: auto (LiteRT where built in, else tract),
    /// tract, tflite or litert.
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Config `[model]` precision: auto (int8 on LiteRT, fp32 elsewhere),
    /// fp32 or int8.
    #[arg(long)]
    precision: Option<PrecisionChoice>,
    /// Config `[model]` threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Config `[model]` codec: the latent codec on the wire.
    #[arg(long)]
    codec: Option<CodecChoice>,
}

#[derive(Args, Serialize, Default)]
struct SourceFlags {
    /// Config `[source]` kind.
    #[arg(long)]
    #[serde(rename = "kind")]
    source: Option<SourceKind>,
    /// Config `[source]` path: camera device, video file or image directory.
    #[arg(long)]
    #[serde(rename = "path")]
    input: Option<PathBuf>,
    /// Config `[source]` fps (0: the camera's or file's own rate).
    #[arg(long)]
    fps: Option<f64>,
    /// Config `[source]` loop: restart a replay at its end.
    #[arg(long = "loop")]
    #[serde(rename = "loop", skip_serializing_if = "is_false")]
    looping: bool,
    /// Config `[source]` unpaced: replay as fast as frames decode.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    unpaced: bool,
    /// Config `[source]` queue: frames waiting for the encoder.
    #[arg(long)]
    queue: Option<usize>,
}

#[derive(Args, Serialize, Default)]
struct LinkFlags {
    /// Config `[link]` kind.
    #[arg(long)]
    #[serde(rename = "kind")]
    link: Option<LinkKind>,
    /// Config `[link]` address (tcp/udp host:port; mqtt broker host:port).
    #[arg(long)]
    address: Option<String>,
    /// Config `[link]` path (serial device or recording file).
    #[arg(long)]
    #[serde(rename = "path")]
    link_path: Option<PathBuf>,
    /// Config `[link]` baud (serial).
    #[arg(long)]
    baud: Option<u32>,
    /// Config `[link]` host_key: the host's public key (64 hex digits);
    /// with --key-file, sessions are authenticated and encrypted.
    #[arg(long)]
    host_key: Option<String>,
    /// Config `[link]` key_file: this device's private key (see `keygen`).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(Args, Serialize, Default)]
struct MqttFlags {
    /// Config `[mqtt]` site: the site level of the device's MQTT topics.
    #[arg(long)]
    #[serde(rename = "site")]
    mqtt_site: Option<String>,
    /// Config `[mqtt]` username (the password comes from the file or
    /// $LATENTCAM_MQTT_PASSWORD, never from the command line).
    #[arg(long)]
    #[serde(rename = "username")]
    mqtt_username: Option<String>,
    /// Config `[mqtt]` ack_timeout_seconds: say Hello again after this long
    /// without an acknowledgement from a host worker.
    #[arg(long)]
    #[serde(rename = "ack_timeout_seconds")]
    mqtt_ack_timeout: Option<f64>,
    /// Config `[mqtt]` session_expiry_seconds.
    #[arg(long)]
    #[serde(rename = "session_expiry_seconds")]
    mqtt_session_expiry: Option<u64>,
    /// Config `[mqtt]` inflight: QoS 1 publishes awaiting the broker at once.
    #[arg(long)]
    #[serde(rename = "inflight")]
    mqtt_inflight: Option<u16>,
}

#[derive(Args, Serialize, Default)]
struct SpoolFlags {
    /// Config `[spool]` dir: where unacknowledged latents wait.
    #[arg(long, conflicts_with = "no_spool")]
    #[serde(rename = "dir")]
    spool: Option<PathBuf>,
    /// Run without a spool (latents sent while the link is down are lost).
    #[arg(long)]
    #[serde(skip)]
    no_spool: bool,
    /// Config `[spool]` max_megabytes.
    #[arg(long)]
    #[serde(rename = "max_megabytes")]
    spool_mb: Option<u64>,
}

#[derive(Args, Serialize, Default)]
struct LedFlags {
    /// Config `[led]` chip (e.g. /dev/gpiochip0).
    #[arg(long)]
    #[serde(rename = "chip")]
    led_chip: Option<PathBuf>,
    /// Config `[led]` line.
    #[arg(long)]
    #[serde(rename = "line")]
    led_line: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline (the same as giving no subcommand).
    Run(Box<RunArgs>),
    /// Check everything streaming needs — model file and SHA-256, backend,
    /// camera and formats, serial permissions, the host's handshake, clock,
    /// spool disk, temperature, throttling — one OK/WARN/FAIL line each with
    /// the fix. Takes the same configuration and flags as a run. Exits 1 if
    /// any check fails.
    Doctor(Box<RunArgs>),
    /// List V4L2 cameras with their formats, sizes and frame rates (needs a
    /// build with `--features v4l`).
    Cameras,
    /// Load and validate a configuration file and the model it names, print
    /// the effective configuration, and exit.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create this device's key pair: the private key goes to a new file
    /// (mode 0600, never overwritten), the public key is printed on stdout
    /// for registering on the host (`latentcam-host keys add DEVICE-ID
    /// PUBLIC-KEY`). Point `[link] key_file` at the file.
    Keygen {
        /// The private key file to create, e.g. /etc/latentcam/device.key.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Encode image files (JPEG/PNG, or directories of them) into a recording
    /// the host can read: a Hello, then one latent per image.
    Encode {
        /// Images or directories.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Recording to write.
        #[arg(long, short)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelFlags,
        /// Device id sent in Hello.
        #[arg(long, default_value = "edge-batch")]
        device_id: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        return run(&cli.run);
    };
    match command {
        Command::Doctor(args) => doctor(&args)?,
        Command::Cameras => {
            let cameras = latentcam_firmware::source::v4l::list_cameras()?;
            if cameras.is_empty() {
                println!("no V4L2 camera found (/dev/video* absent or not capture devices)");
            }
            for camera in cameras {
                println!("{} — {}", camera.path.display(), camera.name);
                for format in camera.formats {
                    let usable = if format.format.is_some() {
                        ""
                    } else {
                        " (unsupported)"
                    };
                    println!("  {} {}{usable}", format.fourcc, format.description);
                    for size in format.sizes {
                        let rates: Vec<String> =
                            size.fps.iter().map(|f| format!("{f:.0}")).collect();
                        println!(
                            "    {}x{} @ {} fps",
                            size.width,
                            size.height,
                            rates.join("/")
                        );
                    }
                }
            }
        }
        Command::Run(args) => return run(args.as_ref()),
        Command::Keygen { out } => {
            let public = latentcam_firmware::link::secure::keygen(&out)
                .context("creating this device's key (latentcam-edge keygen)")?;
            println!("{public}");
            eprintln!(
                "wrote this device's private key to {} (mode 0600; it never leaves the device)\n\
                 next: on the host, `latentcam-host keys add <DEVICE-ID> {public}`;\n\
                 here, [link] key_file = \"{}\" and host_key = \"<the host's public key>\"",
                out.display(),
                out.display()
            );
        }
        Command::CheckConfig { config } => {
            let config = EdgeConfig::load(&config)?;
            let models = assemble::models_dir(&config);
            let manifest = Manifest::load(&models)
                .with_context(|| format!("model manifest in {}", models.display()))?;
            let (_, chosen) = assemble::encoder_options(&config, &manifest);
            let entry = manifest.encoder(chosen.backend.format(), chosen.precision.name())?;
            let path = encoder::locate(&manifest, entry).unwrap_or_else(|| manifest.resolve(entry));
            manifest.verify_at(entry, path.clone())?;
            print!("{}", config.to_toml());
            println!(
                "# ok: model {} ({} {}; {}) at {} matches its SHA-256",
                manifest.model_id,
                chosen.backend,
                chosen.precision.name(),
                chosen.reason,
                path.display()
            );
        }
        Command::Encode {
            images,
            out,
            model,
            device_id,
        } => {
            let mut flags = toml::Table::new();
            flags.insert("model".into(), toml::Value::try_from(&model)?);
            let config = EdgeConfig::load_with(None, flags)?;
            let (manifest, mut encoder, mut preprocessor, chosen) =
                assemble::open_model(&config).context("loading the encoder")?;
            let images = latentcam_firmware::picture::expand_inputs(&images)?;
            if images.is_empty() {
                bail!("no JPEG or PNG images found in the given paths");
            }
            let file =
                File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let settings = BatchSettings {
                device_id,
                codec: config.model.codec.into(),
                preprocessing_id: manifest.preprocessing.id.clone(),
            };
            let report = batch::encode_images(
                &images,
                encoder.as_mut(),
                &mut preprocessor,
                &settings,
                &mut BufWriter::new(file),
            )
            .with_context(|| format!("writing {}", out.display()))?;
            for (path, reason) in &report.skipped {
                eprintln!("skipped {}: {reason}", path.display());
            }
            let n = report.encoded.max(1) as f64;
            println!(
                "{}: {} latents ({} skipped), {:.0} bytes/frame, preprocess {:.1} ms/frame, {} {} {:.1} ms/frame",
                out.display(),
                report.encoded,
                report.skipped.len(),
                report.latent_frame_bytes as f64 / n,
                report.preprocess_seconds * 1e3 / n,
                chosen.backend,
                chosen.precision.name(),
                report.encode_seconds * 1e3 / n,
            );
        }
    }
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    latentcam_logging::init("info");
    let config = args.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop))?;
    settings.max_frames = args.max_frames;
    settings.drain_timeout = std::time::Duration::from_secs_f64(args.drain_seconds.max(0.0));

    let signal = Arc::new(LedSignal::default());
    let led_stop = Arc::new(AtomicBool::new(false));
    let led_thread = if config.led.chip.as_os_str().is_empty() {
        None
    } else {
        let led = led::open_gpio(&config.led.chip, config.led.line)?;
        let (signal, led_stop) = (Arc::clone(&signal), Arc::clone(&led_stop));
        Some(std::thread::spawn(move || {
            led::drive(led, &signal, &led_stop);
        }))
    };

    // Under systemd (Type=notify): READY, STATUS and watchdog pings.
    let notify_thread = latentcam_firmware::notify::Notifier::from_env().map(|notifier| {
        let (signal, stop) = (Arc::clone(&signal), Arc::clone(&led_stop));
        std::thread::spawn(move || latentcam_firmware::notify::watch(&notifier, &signal, &stop))
    });

    let result = pipeline::run(parts, settings, stop, Some(signal));
    led_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in [led_thread, notify_thread].into_iter().flatten() {
        let _ = t.join();
    }
    let report = result?;
    summarize(&report);
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    Ok(())
}

fn doctor(args: &RunArgs) -> anyhow::Result<()> {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL  config       {e:#}");
            println!(
                "{:19}fix: latentcam-edge check-config --config FILE shows the problem",
                ""
            );
            std::process::exit(1);
        }
    };
    let checks = latentcam_firmware::doctor::run(&config);
    for check in &checks {
        println!("{check}");
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    use latentcam_firmware::doctor::Level;
    println!(
        "doctor: {} OK, {} WARN, {} FAIL",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
    if count(Level::Fail) > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn summarize(r: &Report) {
    let t = &r.timings;
    let work = t.capture.total_s
        + t.preprocess.total_s
        + t.encode.total_s
        + t.codec.total_s
        + t.send.total_s;
    let share = |s: f64| if work > 0.0 { 100.0 * s / work } else { 0.0 };
    tracing::info!(
        "{} frames captured, {} encoded ({:.2} fps), {} dropped by the queue, {} corrupt; \
         {} sent + {} from spool, {} lost, {} still spooled; peak RSS {} KiB",
        r.captured,
        r.encoded,
        r.fps,
        r.dropped,
        r.corrupt,
        r.session.sent,
        r.session.sent_from_spool,
        r.session.link_dropped,
        r.session.spool_pending,
        r.peak_rss_kib.unwrap_or(0),
    );
    tracing::info!(
        "time per stage: capture {:.1}%, preprocess {:.1}% ({} us p50), encode {:.1}% ({} us p50), codec {:.1}%, send {:.1}%",
        share(t.capture.total_s),
        share(t.preprocess.total_s),
        t.preprocess.p50_us,
        share(t.encode.total_s),
        t.encode.p50_us,
        share(t.codec.total_s),
        share(t.send.total_s),
    );
}

fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("rendering the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
