//! The host: reachable, and answering a real `Hello` (through the Noise
//! handshake on an authenticated link) the way a run would see it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use latentcam_secure::{PublicKey, StaticKey};
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{AuthScheme, Bye, ByeReason, FrameDecoder, Message, WelcomeStatus};

use crate::assemble;
use crate::config::{EdgeConfig, LinkKind};
use crate::encoder::EncoderInfo;
use crate::link::{Incoming, Link, SecureLink, TcpConfig, TcpLink};

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
            (Some(info), Some((device, host))) => check_host_secure(config, info, device, host),
            (Some(_), None) if keyed => match connect(address) {
                Ok(_) => Check::warn(
                    "host",
                    format!("{address} accepts connections; no handshake without the device key"),
                    "fix the device key first (see keys above), then run doctor again",
                ),
                Err(check) => check,
            },
            (Some(info), None) => check_host(config, info),
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

/// A real handshake: `Hello` as the pipeline would send it, then the
/// host's `Welcome`; the session is closed with `Bye`.
fn check_host(config: &EdgeConfig, info: &EncoderInfo) -> Check {
    let address = &config.link.address;
    let mut stream = match connect(address) {
        Ok(s) => s,
        Err(check) => return check,
    };
    let hello = match hello_for(config, info, AuthScheme::None) {
        Ok(h) => h,
        Err(check) => return check,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if let Err(e) = stream.write_all(&hello) {
        return Check::fail(
            "host",
            format!("{address}: sending Hello failed: {e}"),
            "check the host's logs",
        );
    }
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer: Option<Check> = None;
    while answer.is_none() && Instant::now() < deadline {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        decoder.feed_all(&buf[..n], |item| {
            if answer.is_some() {
                return;
            }
            if let Ok(Message::Welcome(w)) = item {
                answer = Some(if w.status == WelcomeStatus::Accepted {
                    let acked = w
                        .acked
                        .map_or("nothing yet".to_owned(), |a| format!("up to seq {a}"));
                    Check::ok(
                        "host",
                        format!(
                            "{address}: host {:?} accepted device {:?} (holds {acked})",
                            w.host_id, config.device.id
                        ),
                    )
                } else {
                    Check::fail(
                        "host",
                        format!("{address}: host {:?} refused ({:?}): {}", w.host_id, w.status, w.reason),
                        "the host and device must share the model (same manifest and encoder file) and protocol version",
                    )
                });
            }
        });
    }
    if let Ok(bye) = frame::encode_to_vec(&Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "doctor check done",
    })) {
        let _ = stream.write_all(&bye);
    }
    answer.unwrap_or_else(|| {
        Check::fail(
            "host",
            format!("{address}: connected, but no Welcome within 5 s"),
            "is a latentcam host listening there (and not another service)?",
        )
    })
}

/// The handshake a run makes on an authenticated link: `Hello` and the
/// Noise IK handshake through [`SecureLink`], the host's sealed `Welcome`,
/// then a sealed `Bye`.
fn check_host_secure(
    config: &EdgeConfig,
    info: &EncoderInfo,
    device: StaticKey,
    host: PublicKey,
) -> Check {
    let address = &config.link.address;
    let device_public = *device.public();
    let hello = match hello_for(config, info, AuthScheme::NoiseIk) {
        Ok(h) => h,
        Err(check) => return check,
    };
    let mut tcp = TcpConfig::new(address);
    tcp.connect_timeout = Duration::from_secs(3);
    let mut link = match TcpLink::new(tcp).and_then(|tcp| SecureLink::new(tcp, device, host)) {
        Ok(link) => link,
        Err(e) => return Check::fail("host", e.to_string(), "check [link] address (host:port)"),
    };
    if let Err(e) = link.reconnect().and_then(|()| link.send(&hello)) {
        return Check::fail(
            "host",
            e.to_string(),
            "start `latentcam-host serve` there, check [link] address and any firewall between",
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut welcome = None;
    let mut lost = None;
    while welcome.is_none() && lost.is_none() && Instant::now() < deadline {
        match link.poll_incoming(Duration::from_millis(200)) {
            Ok(messages) => {
                welcome = messages
                    .into_iter()
                    .find(|m| matches!(m, Incoming::Welcome { .. }));
            }
            Err(e) => lost = Some(e),
        }
    }
    let check = match welcome {
        Some(Incoming::Welcome {
            status: WelcomeStatus::Accepted,
            host_id,
            acked,
            ..
        }) => {
            let acked = acked.map_or("nothing yet".to_owned(), |a| format!("up to seq {a}"));
            Check::ok(
                "host",
                format!(
                    "{address}: host {host_id:?} proved its key (Noise IK) and accepted device \
                     {:?} (holds {acked})",
                    config.device.id
                ),
            )
        }
        Some(Incoming::Welcome { status, reason, .. }) => {
            let fix = if matches!(
                status,
                WelcomeStatus::AuthFailed | WelcomeStatus::AuthRequired
            ) {
                format!(
                    "register this device on the host (latentcam-host keys add {} {device_public}) \
                     and check that [link] host_key is that host's public key",
                    config.device.id
                )
            } else {
                "the host and device must share the model (same manifest and encoder file) \
                 and protocol version"
                    .to_owned()
            };
            Check::fail(
                "host",
                format!(
                    "{address}: refused ({status:?}): {}",
                    latentcam_wire::printable(&reason)
                ),
                fix,
            )
        }
        _ => Check::fail(
            "host",
            match lost {
                Some(e) => format!("{address}: connection lost during the handshake: {e}"),
                None => format!("{address}: connected, but no Welcome within 5 s of the handshake"),
            },
            "is a latentcam host with authentication listening there (and not another service)? \
             Its log says why it dropped this device",
        ),
    };
    if let Ok(bye) = frame::encode_to_vec(&Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "doctor check done",
    })) {
        // Sealed, and only sent if the session was established.
        let _ = link.send(&bye);
    }
    check
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
