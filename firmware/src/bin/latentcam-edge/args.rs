//! The command line: clap's definitions, and the flags that override
//! configuration keys.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use latentcam_firmware::config::{CodecChoice, EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::encoder::{BackendChoice, PrecisionChoice};
use serde::Serialize;

/// Without a subcommand, `latentcam-edge` runs the pipeline: frames from the
/// configured source are encoded and sent over the configured link until
/// SIGINT/SIGTERM (or the end of a replay).
#[derive(Parser)]
#[command(
    name = "latentcam-edge",
    version,
    about = "latentcam edge program: camera → encoder → latent → link",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Log lines as `text` or `json` (one object per line); the filter is
    /// `$LATENTCAM_LOG` (`debug`, or directives like `latentcam_firmware=debug`).
    #[arg(long, global = true, default_value_t)]
    pub log_format: latentcam_logging::LogFormat,
}

/// Run-mode flags.
#[derive(Args, Default)]
pub struct RunArgs {
    /// Configuration file (TOML); without it /etc/latentcam/edge.toml if it
    /// exists ($LATENTCAM_EDGE_CONFIG names another), else built-in defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub flags: ConfigFlags,
    /// Stop after this many captured frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// On shutdown, seconds to keep delivering unacknowledged latents.
    #[arg(long, default_value_t = 5.0)]
    pub drain_seconds: f64,
    /// Write the run's report (counts, stage timings, peak RSS) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl RunArgs {
    /// The config file (`--config`, else [`default_config`], else built-in
    /// defaults) with every given flag applied, validated.
    pub fn config(&self) -> anyhow::Result<EdgeConfig> {
        let path = self.config.clone().or_else(|| {
            let path = default_config()?;
            tracing::info!("reading {} (--config names another file)", path.display());
            Some(path)
        });
        Ok(EdgeConfig::load_with(path.as_deref(), self.flags.table()?)?)
    }
}

/// Where the package installs the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/latentcam/edge.toml";

/// Names another default configuration file; empty for none (tests).
pub const CONFIG_ENV: &str = "LATENTCAM_EDGE_CONFIG";

/// The configuration read without `--config`: `$LATENTCAM_EDGE_CONFIG` if
/// set (empty: none), else [`DEFAULT_CONFIG`] — if the file exists.
pub fn default_config() -> Option<PathBuf> {
    latentcam_cli::default_config(CONFIG_ENV, DEFAULT_CONFIG)
}

/// Flags that override keys of the configuration file. They are laid out
/// like the file and serialize to a table of the keys given, which
/// [`EdgeConfig::load_with`] merges over the file: a flag is parsed and
/// validated exactly as its key is.
#[derive(Args, Serialize, Default)]
pub struct ConfigFlags {
    #[command(flatten)]
    pub device: DeviceFlags,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub source: SourceFlags,
    #[command(flatten)]
    pub link: LinkFlags,
    #[command(flatten)]
    pub mqtt: MqttFlags,
    #[command(flatten)]
    pub spool: SpoolFlags,
    #[command(flatten)]
    pub led: LedFlags,
}

impl ConfigFlags {
    pub fn table(&self) -> anyhow::Result<toml::Table> {
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
pub struct DeviceFlags {
    /// Config `[device]` id.
    #[arg(long)]
    #[serde(rename = "id")]
    pub device_id: Option<String>,
    /// Config `[device]` heartbeat_seconds.
    #[arg(long)]
    pub heartbeat_seconds: Option<f64>,
    /// Config `[device]` progress_seconds: a progress line every so often
    /// (0: none).
    #[arg(long)]
    pub progress_seconds: Option<f64>,
}

#[derive(Args, Serialize, Default)]
pub struct ModelFlags {
    /// Config `[model]` dir: models directory holding manifest.toml.
    #[arg(long)]
    #[serde(rename = "dir")]
    pub models: Option<PathBuf>,
    /// Config `[model]` backend: auto (LiteRT where built in, else tract),
    /// tract, tflite or litert.
    #[arg(long)]
    pub backend: Option<BackendChoice>,
    /// Config `[model]` precision: auto (int8 on LiteRT, fp32 elsewhere),
    /// fp32 or int8.
    #[arg(long)]
    pub precision: Option<PrecisionChoice>,
    /// Config `[model]` threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Config `[model]` codec: the latent codec on the wire.
    #[arg(long)]
    pub codec: Option<CodecChoice>,
}

#[derive(Args, Serialize, Default)]
pub struct SourceFlags {
    /// Config `[source]` kind.
    #[arg(long)]
    #[serde(rename = "kind")]
    pub source: Option<SourceKind>,
    /// Config `[source]` path: camera device, video file or image directory.
    #[arg(long)]
    #[serde(rename = "path")]
    pub input: Option<PathBuf>,
    /// Config `[source]` fps (0: the camera's or file's own rate).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Config `[source]` loop: restart a replay at its end.
    #[arg(long = "loop")]
    #[serde(rename = "loop", skip_serializing_if = "is_false")]
    pub looping: bool,
    /// Config `[source]` unpaced: replay as fast as frames decode.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub unpaced: bool,
    /// Config `[source]` queue: frames waiting for the encoder.
    #[arg(long)]
    pub queue: Option<usize>,
}

#[derive(Args, Serialize, Default)]
pub struct LinkFlags {
    /// Config `[link]` kind.
    #[arg(long)]
    #[serde(rename = "kind")]
    pub link: Option<LinkKind>,
    /// Config `[link]` address (tcp/udp host:port; mqtt broker host:port).
    #[arg(long)]
    pub address: Option<String>,
    /// Config `[link]` path (serial device or recording file).
    #[arg(long)]
    #[serde(rename = "path")]
    pub link_path: Option<PathBuf>,
    /// Config `[link]` baud (serial).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Config `[link]` host_key: the host's public key (64 hex digits);
    /// with --key-file, sessions are authenticated and encrypted.
    #[arg(long)]
    pub host_key: Option<String>,
    /// Config `[link]` key_file: this device's private key (see `keygen`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

#[derive(Args, Serialize, Default)]
pub struct MqttFlags {
    /// Config `[mqtt]` site: the site level of the device's MQTT topics.
    #[arg(long)]
    #[serde(rename = "site")]
    pub mqtt_site: Option<String>,
    /// Config `[mqtt]` username (the password comes from the file or
    /// $LATENTCAM_MQTT_PASSWORD, never from the command line).
    #[arg(long)]
    #[serde(rename = "username")]
    pub mqtt_username: Option<String>,
    /// Config `[mqtt]` ack_timeout_seconds: say Hello again after this long
    /// without an acknowledgement from a host worker.
    #[arg(long)]
    #[serde(rename = "ack_timeout_seconds")]
    pub mqtt_ack_timeout: Option<f64>,
    /// Config `[mqtt]` session_expiry_seconds.
    #[arg(long)]
    #[serde(rename = "session_expiry_seconds")]
    pub mqtt_session_expiry: Option<u64>,
    /// Config `[mqtt]` inflight: QoS 1 publishes awaiting the broker at once.
    #[arg(long)]
    #[serde(rename = "inflight")]
    pub mqtt_inflight: Option<u16>,
}

#[derive(Args, Serialize, Default)]
pub struct SpoolFlags {
    /// Config `[spool]` dir: where unacknowledged latents wait.
    #[arg(long, conflicts_with = "no_spool")]
    #[serde(rename = "dir")]
    pub spool: Option<PathBuf>,
    /// Run without a spool (latents sent while the link is down are lost).
    #[arg(long)]
    #[serde(skip)]
    pub no_spool: bool,
    /// Config `[spool]` max_megabytes.
    #[arg(long)]
    #[serde(rename = "max_megabytes")]
    pub spool_mb: Option<u64>,
}

#[derive(Args, Serialize, Default)]
pub struct LedFlags {
    /// Config `[led]` chip (e.g. /dev/gpiochip0).
    #[arg(long)]
    #[serde(rename = "chip")]
    pub led_chip: Option<PathBuf>,
    /// Config `[led]` line.
    #[arg(long)]
    #[serde(rename = "line")]
    pub led_line: Option<u32>,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Print a completion script for `shell` on stdout, e.g.
    /// `latentcam-edge completions bash > /usr/share/bash-completion/completions/latentcam-edge`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: latentcam_cli::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g.
    /// `latentcam-edge manpage > /usr/share/man/man1/latentcam-edge.1`.
    Manpage,
    /// Load and validate a configuration file and the model it names, print
    /// the effective configuration, and exit.
    CheckConfig {
        /// The configuration file; without it /etc/latentcam/edge.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
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
