//! `latentcam-host serve`: the ingests, heads, results file, registry and
//! HTTP API put together from the flags.

use std::time::Duration;

use anyhow::Context;
use latentcam_host::auth;
use latentcam_host::encode::HostEncoder;
use latentcam_host::heads::imagenet::ImagenetHead;
use latentcam_host::heads::trained;
use latentcam_host::ingest::registry::RegistryLimits;
use latentcam_host::ingest::{self, Limits, Registry, ServeOptions, http};
use latentcam_host::recorder::{Recorder, RecorderConfig};
use latentcam_model::manifest::Manifest;

use crate::args::ServeArgs;
use crate::config::Settings;
use crate::exit::OrConfig;
use crate::heads::{LoadedHeads, load_manifest};

/// What [`check`] found workable in the flags.
pub struct Checked {
    /// How devices authenticate.
    pub auth: auth::HostAuth,
    /// Warnings to log at start-up.
    pub warnings: Vec<String>,
    /// Silence after which a device shows offline.
    pub offline_after: Duration,
    /// Silence after which a device connection is closed.
    pub idle_timeout: Duration,
    /// The model the heads belong to, its files verified.
    pub manifest: Manifest,
}

/// Checks everything `serve` can check without binding or writing
/// anything: addresses, the broker URL, the key directory, the limits,
/// the model and the heads' files. Every failure is the configuration's.
pub fn check(args: &ServeArgs) -> anyhow::Result<Checked> {
    // Before anything is loaded or bound: a malformed address is named
    // with its flag and how to write it.
    for (flag, address) in [
        ("--tcp", Some(&args.tcp)),
        ("--udp", args.udp.as_ref()),
        ("--http", args.http.as_ref()),
    ] {
        if let Some(address) = address {
            ingest::check_listen_address(address)
                .with_context(|| format!("{flag} {address}"))
                .or_config()?;
        }
    }
    let mqtt_host = match &args.mqtt {
        Some(url) => Some(
            latentcam_wire::mqtt::parse_url(url)
                .map_err(anyhow::Error::msg)
                .context("--mqtt")
                .or_config()?
                .host,
        ),
        None => None,
    };
    let prefix = &args.mqtt_discovery_prefix;
    if prefix.is_empty()
        || prefix.contains(['+', '#'])
        || prefix.starts_with('/')
        || prefix.ends_with('/')
    {
        return Err(anyhow::anyhow!(
            "--mqtt-discovery-prefix {prefix:?} is not a topic prefix: give topic levels \
             without wildcards (Home Assistant's default is homeassistant)"
        ))
        .or_config();
    }
    let (auth, warnings) = auth::HostAuth::for_serve(
        args.keys.as_deref(),
        args.allow_unauthenticated,
        &auth::Exposure {
            tcp: &args.tcp,
            udp: args.udp.as_deref(),
            mqtt: mqtt_host.as_deref(),
            mqtt_client_cert: args.mqtt_cert.is_some(),
        },
    )
    .or_config()?;
    let offline_after = Duration::try_from_secs_f64(args.offline_after)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() <= 86_400)
        .context("--offline-after must be more than 0 and at most a day of seconds")
        .or_config()?;
    let idle_timeout = Some(args.idle_timeout)
        .filter(|&s| s > 0.0 && s <= 31_536_000.0)
        .map(Duration::from_secs_f64)
        .context("--idle-timeout must be more than 0 and at most a year of seconds")
        .or_config()?;
    let manifest = load_manifest(&args.heads.models).or_config()?;
    if !args.heads.no_imagenet {
        ImagenetHead::from_manifest(&manifest)
            .context("loading the model's ImageNet head")
            .or_config()?;
    }
    if let Some(path) = &args.heads.head {
        trained::TrainedHead::load(path)
            .with_context(|| format!("--head {}", path.display()))
            .or_config()?;
    }
    Ok(Checked {
        auth,
        warnings,
        offline_after,
        idle_timeout,
        manifest,
    })
}

/// Prints the settings and what was checked, or fails as `serve` would.
pub fn check_config(settings: Settings) -> anyhow::Result<()> {
    let checked = check(&settings.args).map_err(|error| settings.blame(error))?;
    for warning in &checked.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(file) = &settings.file {
        println!("# {}, with the command line's flags", file.display());
    }
    print!("{}", settings.to_toml());
    println!(
        "# ok: model {} in {} verified; serve would listen on {}",
        checked.manifest.model_id,
        settings.args.heads.models.display(),
        settings.args.tcp
    );
    Ok(())
}

/// Serves devices until SIGINT/SIGTERM.
pub fn serve(settings: Settings) -> anyhow::Result<()> {
    let checked = check(&settings.args).map_err(|error| settings.blame(error))?;
    let args = settings.args;
    let Checked {
        auth,
        warnings,
        offline_after,
        idle_timeout,
        manifest: _,
    } = checked;
    let ServeArgs {
        config: _,
        tcp,
        keys,
        allow_unauthenticated: _,
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
        mqtt_discovery_prefix,
        no_mqtt_discovery,
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
        idle_timeout: _,
        max_devices,
        offline_after: _,
        host_id,
        heads,
        record,
        record_file_mb,
        record_total_mb,
    } = args;
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
                        .context("setting up the HTTP API's token")
                        .or_config()?,
                ),
                (None, true) => http::Access::Anonymous,
                (None, false) => return Err(anyhow::anyhow!(
                    "--http needs --http-token-file PATH (created with a random token if missing; clients send `Authorization: Bearer <token>`, browsers log in at /login), or --http-allow-anonymous to serve the API to anyone who can reach {address}"
                )).or_config(),
            };
            let tls = match (&http_tls_cert, &http_tls_key) {
                (Some(cert), Some(key)) => Some(
                    http::Tls::load(cert, key)
                        .context("setting up TLS for the HTTP API")
                        .or_config()?,
                ),
                _ => None,
            };
            Some(http::HttpOptions {
                address,
                access,
                tls,
                limits: http::HttpLimits {
                    max_connections: usize::try_from(http_max_connections).unwrap_or(usize::MAX),
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
    } = heads.load(true).or_config()?;
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
        offline_after,
        ..RegistryLimits::default()
    });
    let limits = Limits {
        max_fps,
        burst: max_fps * 2.0,
        max_per_ip: max_connections_per_ip.max(1),
        idle_timeout,
        ..Limits::default()
    };
    // Enrolment photos and search by image over HTTP need the encoder.
    let encoder = match &http {
        Some(_) => Some(std::sync::Arc::new(std::sync::Mutex::new(
            HostEncoder::open(&manifest)
                .context("loading the encoder for the HTTP API")
                .or_config()?,
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
            discovery_prefix: (!no_mqtt_discovery).then_some(mqtt_discovery_prefix),
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
    Ok(())
}
