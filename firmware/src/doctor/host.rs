//! The host: reachable, and answering a real `Hello` (through the Noise
//! handshake on an authenticated link) the way a run would see it.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use latentcam_secure::{PublicKey, StaticKey};
use latentcam_wire::{AuthScheme, WelcomeStatus};

use crate::assemble;
use crate::config::{EdgeConfig, LinkKind};
use crate::encoder::EncoderInfo;
use crate::link::{
    Link, LinkError, ProbeAnswer, ProbeError, SecureLink, TcpConfig, TcpLink, probe,
};

use super::Check;

pub(super) fn check_link(
    config: &EdgeConfig,
    info: Option<&EncoderInfo>,
    key: Option<(StaticKey, PublicKey)>,
) -> Check {
    let address = &config.link.address;
    let keyed = !config.link.host_key.trim().is_empty();
    match config.link.kind {
        LinkKind::Tcp => match (info, key) {
            (Some(info), Some(key)) => check_host(config, info, Some(key)),
            (Some(_), None) if keyed => match connect(address) {
                Ok(_) => Check::warn(
                    "host",
                    format!("{address} accepts connections; no handshake without the device key"),
                    "fix the device key first (see keys above), then run doctor again",
                ),
                Err(check) => check,
            },
            (Some(info), None) => check_host(config, info, None),
            (None, _) => match connect(address) {
                Ok(_) => Check::warn(
                    "host",
                    format!("{address} accepts connections; no handshake without a model"),
                    "fix the model first, then run doctor again",
                ),
                Err(check) => check,
            },
        },
        LinkKind::Udp => match address.to_socket_addrs() {
            Ok(_) => Check::warn(
                "host",
                format!("UDP to {address}: one-way, delivery cannot be checked from here"),
                "watch the host's /api/devices for this device",
            ),
            Err(e) => Check::fail(
                "host",
                format!("{address}: {e}"),
                "check [link] address (host:port) and DNS",
            ),
        },
        LinkKind::File => {
            let dir = config
                .link
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if dir.is_dir() {
                Check::ok(
                    "host",
                    format!("recording to {}", config.link.path.display()),
                )
            } else {
                Check::fail(
                    "host",
                    format!("directory {} does not exist", dir.display()),
                    "create it or change [link] path",
                )
            }
        }
        LinkKind::Serial if keyed => Check::ok(
            "host",
            "serial link: the host answers once the device streams (see the serial line \
             above); its Noise handshake is not checked here",
        ),
        LinkKind::Serial => Check::ok(
            "host",
            "serial link: the host answers once the device streams (see the serial line above)",
        ),
        LinkKind::Mqtt => match crate::link::mqtt::parse_broker(address) {
            Ok(crate::link::mqtt::Broker { host, port, .. }) => {
                match connect(&format!("{host}:{port}")) {
                    Ok(_) => Check::ok(
                        "host",
                        format!(
                            "MQTT broker {host}:{port} accepts connections; a host worker answers \
                         Hello on latentcam/{}/{}/welcome",
                            config.mqtt.site, config.device.id
                        ),
                    ),
                    Err(check) => check,
                }
            }
            Err(problem) => Check::fail(
                "host",
                format!("{address}: {problem}"),
                "check [link] address (the broker as host:port)",
            ),
        },
    }
}

fn connect(address: &str) -> Result<TcpStream, Check> {
    let addrs: Vec<_> = match address.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(Check::fail(
                "host",
                format!("{address}: {e}"),
                "check [link] address (host:port) and DNS",
            ));
        }
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(3)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(Check::fail(
        "host",
        format!("{address}: {e}"),
        "start `latentcam-host serve` there, check [link] address and any firewall between",
    ))
}

/// A real session opening through [`probe`], as a run makes it: `Hello`
/// (after the Noise IK handshake through [`SecureLink`] when the device has
/// its key), the host's `Welcome`, then `Bye`.
fn check_host(
    config: &EdgeConfig,
    info: &EncoderInfo,
    key: Option<(StaticKey, PublicKey)>,
) -> Check {
    let address = &config.link.address;
    let scheme = if key.is_some() {
        AuthScheme::NoiseIk
    } else {
        AuthScheme::None
    };
    let hello = match hello_for(config, info, scheme) {
        Ok(h) => h,
        Err(check) => return check,
    };
    let mut tcp = TcpConfig::new(address);
    tcp.connect_timeout = Duration::from_secs(3);
    let device_public = key.as_ref().map(|(device, _)| *device.public());
    let link = TcpLink::new(tcp).and_then(|tcp| -> Result<Box<dyn Link>, LinkError> {
        Ok(match key {
            Some((device, host)) => Box::new(SecureLink::new(tcp, device, host)?),
            None => Box::new(tcp),
        })
    });
    let mut link = match link {
        Ok(link) => link,
        Err(e) => return Check::fail("host", e.to_string(), "check [link] address (host:port)"),
    };
    let (proved, listening) = match device_public {
        Some(_) => (
            " proved its key (Noise IK) and",
            "is a latentcam host with authentication listening there (and not another \
             service)? Its log says why it dropped this device",
        ),
        None => (
            "",
            "is a latentcam host listening there (and not another service)?",
        ),
    };
    match probe(link.as_mut(), &hello, Duration::from_secs(5)) {
        Ok(ProbeAnswer {
            status: WelcomeStatus::Accepted,
            host_id,
            acked,
            ..
        }) => {
            let acked = acked.map_or("nothing yet".to_owned(), |a| format!("up to seq {a}"));
            Check::ok(
                "host",
                format!(
                    "{address}: host {host_id:?}{proved} accepted device {:?} (holds {acked})",
                    config.device.id
                ),
            )
        }
        Ok(ProbeAnswer {
            status,
            reason,
            host_id,
            ..
        }) => {
            let fix = match device_public {
                Some(public)
                    if matches!(
                        status,
                        WelcomeStatus::AuthFailed | WelcomeStatus::AuthRequired
                    ) =>
                {
                    format!(
                        "register this device on the host (latentcam-host keys add {} {public}) \
                         and check that [link] host_key is that host's public key",
                        config.device.id
                    )
                }
                _ => "the host and device must share the model (same manifest and encoder \
                      file) and protocol version"
                    .to_owned(),
            };
            Check::fail(
                "host",
                format!(
                    "{address}: host {host_id:?} refused ({status:?}): {}",
                    latentcam_wire::printable(&reason)
                ),
                fix,
            )
        }
        Err(ProbeError::Connect(e)) => Check::fail(
            "host",
            format!("{address}: {}", failure(&e)),
            "start `latentcam-host serve` there, check [link] address and any firewall between",
        ),
        Err(e) => Check::fail("host", format!("{address}: {e}"), listening),
    }
}

/// What went wrong on a link, without the link's name (the check names
/// the address) or its retry schedule (the doctor does not retry).
fn failure(e: &LinkError) -> String {
    match e {
        LinkError::Down { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// The `Hello` a run would send, or the check that says why there is none.
fn hello_for(config: &EdgeConfig, info: &EncoderInfo, auth: AuthScheme) -> Result<Vec<u8>, Check> {
    let codec = config.model.codec.into();
    let preprocessing_id = crate::manifest::Manifest::load(assemble::models_dir(config))
        .map(|m| m.preprocessing.id)
        .unwrap_or_default();
    crate::pipeline::hello_frame_offering(info, &config.device.id, &preprocessing_id, codec, auth)
        .map_err(|e| Check::fail("host", e.to_string(), "fix [device] id"))
}
