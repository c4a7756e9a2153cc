//! Turning an [`EdgeConfig`] into running parts: the model, the frame
//! source, the link, the spool and the status LED. The binary only calls
//! these; tests call them too, so the configured path is the tested path.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use latentcam_secure::{KeyError, StaticKey};
use latentcam_wire::AuthScheme;

use crate::backoff::Backoff;
use crate::config::{EdgeConfig, LinkKind, SourceKind};
use crate::encoder::{self, Chosen, Encoder, EncoderError, EncoderOptions};
use crate::link::mqtt::ClientCert;
use crate::link::{
    FileLink, FsyncPolicy, Link, LinkError, MqttConfig, MqttLink, SecureLink, SerialConfig,
    SerialLink, TcpConfig, TcpLink, UdpLink,
};
use crate::manifest::{Manifest, ManifestError, default_models_dir};
use crate::pipeline::{Parts, Settings};
use crate::preprocess::Preprocessor;
use crate::source::v4l::{CameraRequest, V4lSource};
use crate::source::{
    FrameSource, Pace, ReopenNotice, Reopening, ReplayOptions, SourceError, SyntheticOptions,
    SyntheticSource, open_replay,
};
use crate::spool::{Spool, SpoolConfig, SpoolError};

/// Why the configured parts could not be opened. Each message names the
/// file, device or key and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// The manifest could not be loaded.
    #[error("model manifest in {dir}: {source} (set [model] dir, --models or LATENTCAM_MODELS)")]
    Manifest {
        /// The models directory.
        dir: PathBuf,
        /// Why.
        source: ManifestError,
    },
    /// The encoder could not be loaded (missing file, wrong SHA-256,
    /// backend not compiled in).
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The frame source could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The link could not be set up.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The spool directory could not be opened.
    #[error("{0} (set [spool] dir or --spool DIR to a writable directory, or --no-spool)")]
    Spool(#[from] SpoolError),
    /// A configuration value the schema accepts but this build cannot use.
    #[error("{0}")]
    Config(String),
    /// The device's private key (`[link] key_file`) could not be used.
    #[error("[link] key_file: {problem}{}", key_fix(problem))]
    DeviceKey {
        /// Why, naming the file (part of the message, so not a `source`).
        problem: KeyError,
    },
}

impl AssembleError {
    /// True when the configuration itself cannot work (a missing or
    /// tampered model, a bad address, an unusable key or spool directory, a
    /// source that cannot open as configured): starting again changes
    /// nothing until someone fixes it.
    pub fn is_config(&self) -> bool {
        match self {
            AssembleError::Manifest { .. }
            | AssembleError::Spool(_)
            | AssembleError::Config(_)
            | AssembleError::DeviceKey { .. } => true,
            AssembleError::Encoder(e) => !matches!(e, EncoderError::Run { .. }),
            AssembleError::Source(e) => e.kind() == crate::source::ErrorKind::Fatal,
            AssembleError::Link(e) => matches!(e, LinkError::Config { .. }),
        }
    }
}

/// What to do about a key file that cannot be used (a readable key's error
/// already says `chmod 600`).
fn key_fix(error: &KeyError) -> &'static str {
    match error {
        KeyError::Permissions { .. } => "",
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            " (the key must belong to the user the edge runs as: \
             `chown latentcam: FILE`, mode 0600)"
        }
        _ => {
            " (create the device key with `latentcam-edge keygen --out FILE`, then register \
             the public key it prints on the host: `latentcam-host keys add DEVICE-ID PUBLIC-KEY`)"
        }
    }
}

/// The models directory the configuration names, or the default lookup.
pub fn models_dir(config: &EdgeConfig) -> PathBuf {
    if config.model.dir.as_os_str().is_empty() {
        default_models_dir()
    } else {
        config.model.dir.clone()
    }
}

/// The encoder options the configuration names, with `auto` resolved
/// against this build and the manifest's files ([`encoder::choose`]).
pub fn encoder_options(config: &EdgeConfig, manifest: &Manifest) -> (EncoderOptions, Chosen) {
    let chosen = encoder::choose(manifest, config.model.backend, config.model.precision);
    (chosen.options(config.model.threads), chosen)
}

/// Loads the manifest and the encoder (SHA-256 checked); the last value
/// says which backend and precision were chosen, and why.
pub fn open_model(
    config: &EdgeConfig,
) -> Result<(Manifest, Box<dyn Encoder>, Preprocessor, Chosen), AssembleError> {
    let dir = models_dir(config);
    let manifest =
        Manifest::load(&dir).map_err(|source| AssembleError::Manifest { dir, source })?;
    let (options, chosen) = encoder_options(config, &manifest);
    let encoder = encoder::open(&manifest, &options)?;
    let preprocessor = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
    Ok((manifest, encoder, preprocessor, chosen))
}

fn log_reopen(notice: &ReopenNotice<'_>) {
    match notice {
        ReopenNotice::Lost { error } => tracing::warn!("{error}"),
        ReopenNotice::Failed {
            attempt,
            error,
            retry_in,
        } => {
            // Every attempt at first, then only every tenth.
            if *attempt <= 3 || attempt.is_multiple_of(10) {
                tracing::warn!(
                    "reopen attempt {attempt} failed: {error}; retrying in {retry_in:?}"
                );
            }
        }
        ReopenNotice::Recovered { attempts } => {
            tracing::info!("source is back after {attempts} attempt(s)")
        }
    }
}

/// Opens the configured frame source. Cameras and replays are wrapped in
/// [`Reopening`] (for ever, backoff 100 ms → 10 s), stopping when `stop`
/// is set.
pub fn open_source(
    config: &EdgeConfig,
    stop: Arc<AtomicBool>,
) -> Result<Box<dyn FrameSource>, AssembleError> {
    let s = &config.source;
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let source: Box<dyn FrameSource> = match s.kind {
        SourceKind::Replay => {
            let pace = if s.unpaced {
                Pace::AsFastAsPossible
            } else if s.fps > 0.0 {
                Pace::Fps(s.fps)
            } else {
                Pace::Native
            };
            let inner = open_replay(
                &s.path,
                ReplayOptions {
                    pace,
                    looping: s.looping,
                },
            )?;
            Box::new(Reopening::new(inner, backoff, None, log_reopen).with_stop(stop))
        }
        SourceKind::Synthetic => Box::new(SyntheticSource::new(SyntheticOptions {
            width: if s.width == 0 { 640 } else { s.width },
            height: if s.height == 0 { 480 } else { s.height },
            fps: if s.unpaced {
                None
            } else {
                Some(if s.fps > 0.0 { s.fps } else { 30.0 })
            },
        })?),
        SourceKind::V4l => {
            let mut request = CameraRequest::new(&s.path);
            if s.width > 0 && s.height > 0 {
                request.width = s.width;
                request.height = s.height;
            }
            if s.fps > 0.0 {
                request.fps = s.fps;
            }
            let camera = V4lSource::open(&request)?;
            Box::new(Reopening::new(camera, backoff, None, log_reopen).with_stop(stop))
        }
    };
    Ok(source)
}

/// Opens the configured link; with `[link] host_key` and `key_file` set,
/// wrapped in a [`SecureLink`] holding the device's key.
pub fn open_link(config: &EdgeConfig) -> Result<Box<dyn Link + Send>, AssembleError> {
    let Some(auth) = config
        .link
        .auth()
        .map_err(|e| AssembleError::Config(e.to_string()))?
    else {
        return open_plain_link(config);
    };
    // The key first: a missing key should not cost a serial port's open.
    let device =
        StaticKey::load(&auth.key_file).map_err(|problem| AssembleError::DeviceKey { problem })?;
    let link = open_plain_link(config)?;
    if config.link.kind == LinkKind::Udp {
        return Ok(Box::new(SecureLink::one_way(link, device, auth.host_key)?));
    }
    Ok(Box::new(SecureLink::new(link, device, auth.host_key)?))
}

/// The authentication the `Hello` offers for this configuration.
pub fn auth_scheme(config: &EdgeConfig) -> AuthScheme {
    match config.link.auth() {
        Ok(Some(_)) if config.link.kind == LinkKind::Udp => AuthScheme::NoiseK,
        Ok(Some(_)) => AuthScheme::NoiseIk,
        _ => AuthScheme::None,
    }
}

fn open_plain_link(config: &EdgeConfig) -> Result<Box<dyn Link + Send>, AssembleError> {
    let l = &config.link;
    Ok(match l.kind {
        LinkKind::Tcp => Box::new(TcpLink::new(TcpConfig::new(&l.address))?),
        LinkKind::Udp => Box::new(UdpLink::connect(&l.address)?),
        LinkKind::Serial => Box::new(SerialLink::open(SerialConfig::new(&l.path).baud(l.baud))?),
        LinkKind::File => Box::new(FileLink::open(&l.path, FsyncPolicy::default())?),
        LinkKind::Mqtt => Box::new(MqttLink::new(mqtt_config(config))?),
    })
}

/// The MQTT link's settings: `[link] address`, `[device] id` and `[mqtt]`
/// (the password from `$LATENTCAM_MQTT_PASSWORD` when the file has none).
pub fn mqtt_config(config: &EdgeConfig) -> MqttConfig {
    let m = &config.mqtt;
    let mut mqtt = MqttConfig::new(&config.link.address, &m.site, &config.device.id);
    mqtt.username = Some(m.username.clone()).filter(|u| !u.is_empty());
    mqtt.password = m.effective_password();
    mqtt.session_expiry = Duration::from_secs(m.session_expiry_seconds);
    mqtt.ack_timeout = Duration::from_secs_f64(m.ack_timeout_seconds.max(0.001));
    mqtt.inflight = m.inflight;
    mqtt.ca_file = Some(m.ca_file.clone()).filter(|f| !f.as_os_str().is_empty());
    mqtt.client_cert = (!m.cert_file.as_os_str().is_empty()).then(|| ClientCert {
        cert: m.cert_file.clone(),
        key: m.key_file.clone(),
    });
    mqtt
}

/// Opens the spool when the configuration asks for one and the link is
/// acknowledged (TCP, serial, MQTT); `None` otherwise.
pub fn open_spool(config: &EdgeConfig) -> Result<Option<Spool>, AssembleError> {
    if config.spool.dir.as_os_str().is_empty() || !config.link.kind.acknowledged() {
        return Ok(None);
    }
    let max_bytes = config.spool.max_megabytes.saturating_mul(1024 * 1024);
    let spool_config = SpoolConfig {
        max_bytes,
        segment_bytes: (max_bytes / 16).clamp(64 * 1024, 4 * 1024 * 1024),
    };
    Ok(Some(Spool::open(&config.spool.dir, spool_config)?))
}

/// Everything [`crate::pipeline::run`] needs, from one configuration.
pub fn open_all(
    config: &EdgeConfig,
    stop: Arc<AtomicBool>,
) -> Result<(Parts, Settings), AssembleError> {
    let (manifest, encoder, preprocessor, chosen) = open_model(config)?;
    tracing::info!(
        backend = %chosen.backend,
        precision = %chosen.precision.name(),
        threads = config.model.threads,
        why = %chosen.reason,
        "encoder loaded"
    );
    let spool = open_spool(config)?;
    let link = open_link(config)?;
    let source = open_source(config, stop)?;
    let mut settings = Settings::new(&config.device.id, &manifest.preprocessing.id);
    settings.codec = config.model.codec.into();
    settings.queue = config.source.queue;
    settings.lossless = config.source.unpaced && config.source.kind == SourceKind::Replay;
    settings.heartbeat = Duration::from_secs_f64(config.device.heartbeat_seconds);
    settings.progress = Some(config.device.progress_seconds)
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);
    settings.auth = auth_scheme(config);
    Ok((
        Parts {
            source,
            encoder,
            preprocessor,
            link,
            spool,
        },
        settings,
    ))
}
