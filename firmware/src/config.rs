//! Edge configuration: a TOML file (`latentcam-edge --config edge.toml`)
//! whose values command-line flags override. `latentcam-edge check-config`
//! loads and validates it without starting anything.
//!
//! See `firmware/edge.example.toml` for every key with its default.

use std::path::{Path, PathBuf};

use latentcam_model::encoder::{BackendChoice, PrecisionChoice};
use latentcam_wire::Codec;
use serde::{Deserialize, Serialize};

/// Errors loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {key} = {value}: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// The value.
        value: String,
        /// What would be valid.
        reason: String,
    },
}

/// The whole edge configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Identity.
    pub device: DeviceConfig,
    /// Encoder.
    pub model: ModelConfig,
    /// Frame source.
    pub source: SourceConfig,
    /// Link to the host.
    pub link: LinkConfig,
    /// MQTT broker settings (`[link] kind = "mqtt"`).
    pub mqtt: MqttSection,
    /// Unacknowledged-latent spool.
    pub spool: SpoolSection,
    /// Status LED.
    pub led: LedConfig,
}

/// Spells a config choice the way files, flags and logs write it.
macro_rules! named {
    ($t:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            /// The name files and flags use.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// `[model] codec`: how latents are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// 32-bit floats, exact.
    F32,
    /// 16-bit floats.
    F16,
    /// 8 bits per dimension with a per-vector offset and scale.
    U8,
}

named!(CodecChoice { F32 => "f32", F16 => "f16", U8 => "u8" });

impl From<CodecChoice> for Codec {
    fn from(choice: CodecChoice) -> Self {
        match choice {
            CodecChoice::F32 => Codec::F32,
            CodecChoice::F16 => Codec::F16,
            CodecChoice::U8 => Codec::U8Affine,
        }
    }
}

/// `[source] kind`: where frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A V4L2 camera (`path` is its device).
    V4l,
    /// A video file or a directory of images (`path`).
    Replay,
    /// A generated test pattern.
    Synthetic,
}

named!(SourceKind { V4l => "v4l", Replay => "replay", Synthetic => "synthetic" });

/// `[link] kind`: how latents reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A TCP connection to `address`.
    Tcp,
    /// Datagrams to `address`; nothing is acknowledged.
    Udp,
    /// A serial line (`path`, `baud`).
    Serial,
    /// A recording file (`path`) for the host to read later.
    File,
    /// An MQTT broker (`address` and `[mqtt]`).
    Mqtt,
}

named!(LinkKind { Tcp => "tcp", Udp => "udp", Serial => "serial", File => "file", Mqtt => "mqtt" });

impl LinkKind {
    /// Whether the host acknowledges latents over this link, so that a
    /// spool can hold what is not yet acknowledged.
    pub fn acknowledged(self) -> bool {
        matches!(self, LinkKind::Tcp | LinkKind::Serial | LinkKind::Mqtt)
    }

    /// Whether `[link] host_key` and `key_file` apply (an MQTT device
    /// proves itself to the broker with a client certificate instead).
    pub fn authenticated_by_keys(self) -> bool {
        matches!(self, LinkKind::Tcp | LinkKind::Serial | LinkKind::Udp)
    }
}

/// `[device]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Device id sent in `Hello`; defaults to the hostname.
    pub id: String,
    /// Seconds between heartbeats.
    pub heartbeat_seconds: f64,
    /// Seconds between progress lines in the log (frames, fps, latents
    /// sent and waiting); 0 for none.
    pub progress_seconds: f64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            id: hostname(),
            heartbeat_seconds: 5.0,
            progress_seconds: 60.0,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "latentcam".to_owned())
}

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Models directory (holding manifest.toml); empty means the default
    /// lookup (`$LATENTCAM_MODELS`, then beside the binary).
    pub dir: PathBuf,
    /// `auto` (LiteRT where built in, else tract), `tract`, `tflite` or
    /// `litert`.
    pub backend: BackendChoice,
    /// `auto` (int8 on LiteRT, fp32 elsewhere), `fp32` or `int8`.
    pub precision: PrecisionChoice,
    /// Inference threads.
    pub threads: usize,
    /// Latent codec on the wire.
    pub codec: CodecChoice,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            backend: BackendChoice::Auto,
            precision: PrecisionChoice::Auto,
            threads: 1,
            codec: CodecChoice::U8,
        }
    }
}

/// `[source]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Where frames come from.
    pub kind: SourceKind,
    /// Camera device (`/dev/video0`) or replay file/directory.
    pub path: PathBuf,
    /// Frames per second; 0 = the camera's or file's own rate.
    pub fps: f64,
    /// Capture width and height (v4l, synthetic); 0 = device default.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Replay: start over at the end.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// Replay and synthetic: ignore `fps` and deliver frames as fast as
    /// they can be decoded (benchmarks, bulk encoding).
    pub unpaced: bool,
    /// Frames waiting for the encoder; when full the oldest is dropped.
    pub queue: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::V4l,
            path: PathBuf::from("/dev/video0"),
            fps: 0.0,
            width: 640,
            height: 480,
            looping: false,
            unpaced: false,
            queue: 2,
        }
    }
}

/// `[link]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// The medium.
    pub kind: LinkKind,
    /// `host:port` for tcp and udp; the broker (`host:port`, `host` or
    /// `mqtt://host:port`, port 1883 by default) for mqtt.
    pub address: String,
    /// Serial device or recording file.
    pub path: PathBuf,
    /// Serial baud rate.
    pub baud: u32,
    /// The host's static public key (64 hexadecimal digits). With
    /// `key_file`, every session is authenticated and encrypted (Noise IK
    /// both ways on tcp and serial links; Noise K, the device to the host,
    /// on udp links); empty: no authentication.
    pub host_key: String,
    /// This device's private key file, written by `latentcam-edge keygen
    /// --out FILE` (mode 0600); set together with `host_key`.
    pub key_file: PathBuf,
}

/// The keys of an authenticated link (`[link] host_key` and `key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAuth {
    /// The host's static public key.
    pub host_key: latentcam_secure::PublicKey,
    /// This device's private key file.
    pub key_file: PathBuf,
}

impl LinkConfig {
    /// The authentication keys, `None` when neither is set. Both or neither
    /// must be set, on a tcp, serial or udp link, and `host_key` must be a
    /// public key; the error names the key and the fix.
    pub fn auth(&self) -> Result<Option<LinkAuth>, ConfigError> {
        let host_key = self.host_key.trim();
        let key_file = &self.key_file;
        match (host_key.is_empty(), key_file.as_os_str().is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => {
                return Err(invalid(
                    "link.key_file",
                    "\"\"",
                    "[link] host_key is set, so key_file must name this device's private key \
                     (create it with `latentcam-edge keygen --out /etc/latentcam/device.key`)",
                ));
            }
            (true, false) => {
                return Err(invalid(
                    "link.host_key",
                    "\"\"",
                    "[link] key_file is set, so host_key must be the host's public key \
                     (64 hexadecimal digits, from the host's administrator)",
                ));
            }
            (false, false) => {}
        }
        if !self.kind.authenticated_by_keys() {
            return Err(invalid(
                "link.host_key",
                format!("(set, with link.kind = \"{}\")", self.kind),
                "these keys are for tcp, serial and udp links; an mqtt device proves its id \
                 to the broker with a client certificate ([mqtt] cert_file and key_file, see \
                 the README security section)",
            ));
        }
        let host_key = host_key
            .parse()
            .map_err(|e| invalid("link.host_key", format!("{host_key:?}"), format!("{e}")))?;
        Ok(Some(LinkAuth {
            host_key,
            key_file: key_file.clone(),
        }))
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            kind: LinkKind::Tcp,
            address: "127.0.0.1:7878".into(),
            path: PathBuf::new(),
            baud: 921_600,
            host_key: String::new(),
            key_file: PathBuf::new(),
        }
    }
}

/// `[mqtt]`: used when `[link] kind = "mqtt"`; the broker is `[link] address`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// The `<site>` level of the device's topics
    /// (`latentcam/<site>/<device>/…`).
    pub site: String,
    /// User name for the broker; empty: none.
    pub username: String,
    /// Password for the broker; empty: `$LATENTCAM_MQTT_PASSWORD`, if set.
    /// Hidden in `check-config` output.
    pub password: String,
    /// How long the broker keeps the device's session after a disconnect.
    pub session_expiry_seconds: u64,
    /// Outstanding latents without an advancing acknowledgement for this
    /// long: the host worker is taken for gone and `Hello` is repeated.
    pub ack_timeout_seconds: f64,
    /// Most QoS 1 publishes awaiting the broker's acknowledgement at once.
    pub inflight: u16,
    /// With an `mqtts://` address: a PEM file of the certificate
    /// authorities that may sign the broker's certificate (a private CA);
    /// empty: the system's roots.
    pub ca_file: PathBuf,
    /// With an `mqtts://` address: this device's client certificate (PEM),
    /// for a broker that requires one; its common name must be the device
    /// id (`scripts/mqtt-certs.sh device`). Set together with `key_file`.
    pub cert_file: PathBuf,
    /// The client certificate's private key (PEM, mode 0600).
    pub key_file: PathBuf,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            site: "default".into(),
            username: String::new(),
            password: String::new(),
            session_expiry_seconds: 86_400,
            ack_timeout_seconds: 10.0,
            inflight: 64,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

/// Environment variable holding the MQTT password when the configuration
/// has none (keeps it out of the file and the process list).
pub const MQTT_PASSWORD_ENV: &str = "LATENTCAM_MQTT_PASSWORD";

impl MqttSection {
    /// The password to use: the configured one, else
    /// `$LATENTCAM_MQTT_PASSWORD`, else none.
    pub fn effective_password(&self) -> Option<String> {
        if !self.password.is_empty() {
            return Some(self.password.clone());
        }
        std::env::var(MQTT_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
    }
}

/// `[spool]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Spool directory; empty disables the spool. On by default for TCP.
    pub dir: PathBuf,
    /// Maximum bytes on disk.
    pub max_megabytes: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/latentcam/spool"),
            max_megabytes: 256,
        }
    }
}

/// `[led]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LedConfig {
    /// GPIO chip (`/dev/gpiochip0`); empty disables the LED.
    pub chip: PathBuf,
    /// Line offset on the chip.
    pub line: u32,
}

fn invalid(key: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl EdgeConfig {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(Some(path), toml::Table::new())
    }

    /// Parses and validates config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse_unchecked(text, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path` (the built-in defaults without one), applies
    /// `overrides` — a table shaped like the file, such as the
    /// command-line flags give — and validates the result.
    pub fn load_with(path: Option<&Path>, overrides: toml::Table) -> Result<Self, ConfigError> {
        let base = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::parse_unchecked(&text, path)?
            }
            None => Self::default(),
        };
        let config = if overrides.is_empty() {
            base
        } else {
            let flags = |message: String| ConfigError::Parse {
                path: PathBuf::from("(command-line flags)"),
                message,
            };
            let mut table = toml::Table::try_from(&base).map_err(|e| flags(e.to_string()))?;
            merge(&mut table, overrides);
            table.try_into().map_err(|e| flags(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    fn parse_unchecked(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every value; call again after applying command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.device.id;
        if !latentcam_wire::valid_device_id(id) {
            return Err(invalid(
                "device.id",
                id,
                format!(
                    "1 to {} bytes without control characters",
                    latentcam_wire::MAX_ID_LEN
                ),
            ));
        }
        // A host closes a connection silent for its idle timeout (120 s by
        // default): heartbeats keep an idle camera's connection open.
        if !(0.1..=60.0).contains(&self.device.heartbeat_seconds) {
            return Err(invalid(
                "device.heartbeat_seconds",
                self.device.heartbeat_seconds,
                "between 0.1 and 60 (a host closes connections silent for 120 s)",
            ));
        }
        let progress = self.device.progress_seconds;
        if !(progress == 0.0 || (0.1..=86_400.0).contains(&progress)) {
            return Err(invalid(
                "device.progress_seconds",
                progress,
                "0 (no progress lines) or between 0.1 and 86400",
            ));
        }
        if !(1..=64).contains(&self.model.threads) {
            return Err(invalid("model.threads", self.model.threads, "1 to 64"));
        }
        if self.source.kind != SourceKind::Synthetic && self.source.path.as_os_str().is_empty() {
            return Err(invalid(
                "source.path",
                "\"\"",
                "a camera device or replay path",
            ));
        }
        if !(0.0..=1000.0).contains(&self.source.fps) {
            return Err(invalid("source.fps", self.source.fps, "0 (native) to 1000"));
        }
        if !(1..=64).contains(&self.source.queue) {
            return Err(invalid("source.queue", self.source.queue, "1 to 64"));
        }
        match self.link.kind {
            LinkKind::Tcp | LinkKind::Udp if !self.link.address.contains(':') => {
                return Err(invalid("link.address", &self.link.address, "host:port"));
            }
            LinkKind::Mqtt if self.link.address.trim().is_empty() => {
                return Err(invalid(
                    "link.address",
                    "\"\"",
                    "the MQTT broker as host:port or mqtt://host:port",
                ));
            }
            LinkKind::Serial | LinkKind::File if self.link.path.as_os_str().is_empty() => {
                return Err(invalid("link.path", "\"\"", "a serial device or file path"));
            }
            _ => {}
        }
        if self.link.kind == LinkKind::Serial && !(1200..=4_000_000).contains(&self.link.baud) {
            return Err(invalid("link.baud", self.link.baud, "1200 to 4000000"));
        }
        if self.link.kind == LinkKind::Mqtt {
            self.validate_mqtt()?;
        }
        self.link.auth()?;
        if self.spool.max_megabytes == 0 {
            return Err(invalid("spool.max_megabytes", 0, "at least 1"));
        }
        Ok(())
    }

    fn validate_mqtt(&self) -> Result<(), ConfigError> {
        use latentcam_wire::mqtt::{MAX_LEVEL_LEN, valid_level};
        let level_rule = format!(
            "an MQTT topic level: 1 to {MAX_LEVEL_LEN} bytes without /, +, # or control \
             characters, not starting with $ or _"
        );
        if !valid_level(&self.mqtt.site) {
            return Err(invalid("mqtt.site", &self.mqtt.site, level_rule));
        }
        if !valid_level(&self.device.id) {
            return Err(invalid(
                "device.id",
                &self.device.id,
                format!("{level_rule} (it names the device's MQTT topics)"),
            ));
        }
        match crate::link::mqtt::parse_broker(&self.link.address) {
            Err(problem) => return Err(invalid("link.address", &self.link.address, problem)),
            Ok(broker) if !broker.tls => {
                for (key, file) in [
                    ("mqtt.ca_file", &self.mqtt.ca_file),
                    ("mqtt.cert_file", &self.mqtt.cert_file),
                    ("mqtt.key_file", &self.mqtt.key_file),
                ] {
                    if !file.as_os_str().is_empty() {
                        return Err(invalid(
                            key,
                            file.display(),
                            "only used with a TLS broker: write link.address as mqtts://host:port",
                        ));
                    }
                }
            }
            Ok(_) => {}
        }
        match (
            self.mqtt.cert_file.as_os_str().is_empty(),
            self.mqtt.key_file.as_os_str().is_empty(),
        ) {
            (false, true) => {
                return Err(invalid(
                    "mqtt.key_file",
                    "\"\"",
                    "[mqtt] cert_file is set, so key_file must name its private key",
                ));
            }
            (true, false) => {
                return Err(invalid(
                    "mqtt.cert_file",
                    "\"\"",
                    "[mqtt] key_file is set, so cert_file must name its certificate",
                ));
            }
            _ => {}
        }
        if !(1..=u64::from(u32::MAX)).contains(&self.mqtt.session_expiry_seconds) {
            return Err(invalid(
                "mqtt.session_expiry_seconds",
                self.mqtt.session_expiry_seconds,
                format!("1 to {}", u32::MAX),
            ));
        }
        if !(0.5..=3600.0).contains(&self.mqtt.ack_timeout_seconds) {
            return Err(invalid(
                "mqtt.ack_timeout_seconds",
                self.mqtt.ack_timeout_seconds,
                "between 0.5 and 3600",
            ));
        }
        if self.mqtt.inflight == 0 {
            return Err(invalid("mqtt.inflight", 0, "1 to 65535"));
        }
        if !self.mqtt.password.is_empty() && self.mqtt.username.is_empty() {
            return Err(invalid(
                "mqtt.password",
                "(set)",
                "a password needs mqtt.username too",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML (for `check-config`), with the
    /// MQTT password hidden.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.mqtt.password.is_empty() {
            shown.mqtt.password = "(hidden)".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Sets every key of `overrides` in `table`, section by section.
fn merge(table: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (table.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(inner)) => merge(section, inner),
            (_, value) => {
                table.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        EdgeConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("edge.example.toml");
        let config = EdgeConfig::load(&path).unwrap();
        assert_eq!(config.link.kind, LinkKind::Tcp);
        // Rendering and re-parsing gives the same configuration.
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.model.backend, BackendChoice::Auto);
        assert_eq!(config.model.precision, PrecisionChoice::Auto);
        assert_eq!(config.model.codec, CodecChoice::U8);
        assert_eq!(config.source.kind, SourceKind::V4l);
        assert_eq!(config.link.baud, 921_600);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let err = parse("[model]\nbackend = \"onnxruntime\"\n")
            .unwrap_err()
            .to_string();
        // The parser's message shows the line (`backend = …`) and the
        // choice's own message lists the valid names.
        assert!(
            err.contains("line 2")
                && err.contains("backend = \"onnxruntime\"")
                && err.contains("auto, tract, tflite or litert"),
            "{err}"
        );
        for (text, names) in [
            ("[model]\nprecision = \"int4\"\n", "auto, fp32 or int8"),
            ("[model]\ncodec = \"u4\"\n", "`f32`, `f16`, `u8`"),
            (
                "[source]\nkind = \"rtsp\"\n",
                "`v4l`, `replay`, `synthetic`",
            ),
            (
                "[link]\nkind = \"ble\"\n",
                "`tcp`, `udp`, `serial`, `file`, `mqtt`",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("test.toml") && err.contains(names), "{err}");
        }
        let err = parse("[link]\nkind = \"serial\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("link.path"), "{err}");
        let err = parse("[source]\nfsp = 30\n").unwrap_err().to_string();
        assert!(err.contains("fsp"), "unknown keys are refused: {err}");
        let err = parse("[device]\nid = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("device.id"), "{err}");
    }

    #[test]
    fn choices_read_back_as_they_are_written() {
        let text = "[model]\nbackend = \"tract\"\nprecision = \"int8\"\ncodec = \"f16\"\n\
                    [source]\nkind = \"synthetic\"\n[link]\nkind = \"udp\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.model.backend.to_string(), "tract");
        assert_eq!(config.model.precision.to_string(), "int8");
        assert_eq!(Codec::from(config.model.codec), Codec::F16);
        assert_eq!(config.source.kind, SourceKind::Synthetic);
        assert_eq!(config.link.kind, LinkKind::Udp);
        let shown = config.to_toml();
        for line in ["backend = \"tract\"", "codec = \"f16\"", "kind = \"udp\""] {
            assert!(shown.contains(line), "{shown}");
        }
        assert_eq!(parse(&shown).unwrap(), config);
    }

    #[test]
    fn overrides_replace_single_keys_and_are_validated() {
        let dir = std::env::temp_dir().join(format!("latentcam-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edge.toml");
        std::fs::write(
            &file,
            "[device]\nid = \"cam\"\n[link]\nkind = \"udp\"\naddress = \"h:1\"\n",
        )
        .unwrap();
        let flags = |text: &str| text.parse::<toml::Table>().unwrap();
        let config =
            EdgeConfig::load_with(Some(&file), flags("[link]\naddress = \"other:2\"\n")).unwrap();
        // The flag's key changes; the file's neighbouring keys stay.
        assert_eq!(config.link.address, "other:2");
        assert_eq!(config.link.kind, LinkKind::Udp);
        assert_eq!(config.device.id, "cam");
        let err = EdgeConfig::load_with(Some(&file), flags("[link]\nkind = \"serial\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("link.path"),
            "a flag is validated with the file: {err}"
        );
        let none = EdgeConfig::load_with(None, toml::Table::new()).unwrap();
        assert_eq!(none, EdgeConfig::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mqtt_settings_are_checked_when_the_link_is_mqtt() {
        let mqtt = |extra: &str| {
            parse(&format!(
                "[device]\nid = \"cam-01\"\n[link]\nkind = \"mqtt\"\naddress = \"broker\"\n{extra}"
            ))
        };
        let config = mqtt("").unwrap();
        assert_eq!(config.mqtt.site, "default");
        assert_eq!(config.mqtt.session_expiry_seconds, 86_400);
        assert_eq!(config.mqtt.inflight, 64);
        let config = mqtt("[mqtt]\nsite = \"shop\"\nack_timeout_seconds = 2\n").unwrap();
        assert_eq!(config.mqtt.site, "shop");
        for (extra, key) in [
            ("[mqtt]\nsite = \"a/b\"\n", "mqtt.site"),
            (
                "[mqtt]\nack_timeout_seconds = 0\n",
                "mqtt.ack_timeout_seconds",
            ),
            ("[mqtt]\ninflight = 0\n", "mqtt.inflight"),
            (
                "[mqtt]\nsession_expiry_seconds = 0\n",
                "mqtt.session_expiry_seconds",
            ),
            ("[mqtt]\npassword = \"x\"\n", "mqtt.password"),
        ] {
            let err = mqtt(extra).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err = parse("[device]\nid = \"cam/01\"\n[link]\nkind = \"mqtt\"\naddress = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("device.id") && err.contains("topic level"),
            "{err}"
        );
        let err = parse("[device]\nid = \"c\"\n[link]\nkind = \"mqtt\"\naddress = \"b:port\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("link.address") && err.contains("port"),
            "{err}"
        );
        // Client certificates: on a TLS broker only, certificate and key
        // together.
        let tls = |extra: &str| {
            parse(&format!(
                "[device]\nid = \"cam-01\"\n[link]\nkind = \"mqtt\"\n\
                 address = \"mqtts://broker\"\n[mqtt]\n{extra}"
            ))
        };
        let pair = "cert_file = \"c.pem\"\nkey_file = \"c.key\"\n";
        assert_eq!(tls(pair).unwrap().mqtt.cert_file, Path::new("c.pem"));
        for (config, key) in [
            (mqtt(&format!("[mqtt]\n{pair}")), "mqtt.cert_file"),
            (tls("cert_file = \"c.pem\"\n"), "mqtt.key_file"),
            (tls("key_file = \"c.key\"\n"), "mqtt.cert_file"),
        ] {
            let err = config.unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        // The password never shows in the rendered configuration.
        let config = mqtt("[mqtt]\nusername = \"cam\"\npassword = \"s3cret\"\n").unwrap();
        assert!(!config.to_toml().contains("s3cret"));
    }

    #[test]
    fn secure_link_keys_come_in_pairs_on_tcp_and_serial_only() {
        let key = latentcam_secure::StaticKey::from_private([7; 32])
            .public()
            .to_string();
        let link = |body: &str| parse(&format!("[link]\n{body}"));
        assert_eq!(link("").unwrap().link.auth().unwrap(), None);
        let config = link(&format!(
            "host_key = \"{key}\"\nkey_file = \"/etc/latentcam/device.key\"\n"
        ))
        .unwrap();
        let auth = config.link.auth().unwrap().unwrap();
        assert_eq!(auth.host_key.to_string(), key);
        assert_eq!(auth.key_file, Path::new("/etc/latentcam/device.key"));
        // Rendered and parsed again, the keys stay.
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
        let serial = format!(
            "kind = \"serial\"\npath = \"/dev/ttyAMA0\"\nhost_key = \"{key}\"\nkey_file = \"k\"\n"
        );
        assert!(link(&serial).unwrap().link.auth().unwrap().is_some());

        for (body, key_named, hint) in [
            (
                format!("host_key = \"{key}\"\n"),
                "link.key_file",
                "latentcam-edge keygen --out",
            ),
            (
                "key_file = \"k\"\n".to_owned(),
                "link.host_key",
                "public key",
            ),
            (
                "host_key = \"abc\"\nkey_file = \"k\"\n".to_owned(),
                "link.host_key",
                "64 hexadecimal digits",
            ),
            (
                format!("host_key = \"zz{}\"\nkey_file = \"k\"\n", &key[2..]),
                "link.host_key",
                "64 hexadecimal digits",
            ),
        ] {
            let err = link(&body).unwrap_err().to_string();
            assert!(
                err.contains(key_named) && err.contains(hint),
                "{body}: {err}"
            );
        }
        for kind in [
            "kind = \"file\"\npath = \"rec.bin\"\n",
            "kind = \"mqtt\"\naddress = \"broker\"\n",
        ] {
            let err = parse(&format!(
                "[device]\nid = \"cam\"\n[link]\n{kind}host_key = \"{key}\"\nkey_file = \"k\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("link.host_key")
                    && err.contains("for tcp, serial and udp links")
                    && err.contains("[mqtt] cert_file"),
                "{kind}: {err}"
            );
        }
    }
}
