//! `latentcam-edge doctor`: why is this device not streaming? Each check
//! prints one line — OK, WARN or FAIL — and, unless OK, the fix.
//!
//! Checks follow the configuration (the same file and flags as a run): the
//! model file and its SHA-256, the inference backend, the frame source
//! (camera device and formats, or the replay input), the serial port's
//! permissions, the device key (`[link] key_file`), the host's reachability
//! and its answer to a real `Hello` (through the Noise handshake when
//! `[link] host_key` is set), the clock, free disk for the spool, CPU
//! temperature and (on a Raspberry Pi) under-voltage and throttling, and the
//! status LED's GPIO chip.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latentcam_secure::{KeyError, PublicKey, StaticKey};
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{AuthScheme, Bye, ByeReason, FrameDecoder, Message, WelcomeStatus};

use crate::assemble;
use crate::config::{EdgeConfig, LinkAuth, LinkKind, SourceKind};
use crate::encoder::{Encoder, EncoderInfo};
use crate::link::{Incoming, Link, SecureLink, TcpConfig, TcpLink};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something deserves a look.
    Warn,
    /// Streaming will not work until this is fixed.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`model`, `host`…).
    pub name: &'static str,
    /// The outcome.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (for WARN and FAIL).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {:<12} {}", self.level, self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n{:19}fix: {fix}", "")?;
        }
        Ok(())
    }
}

/// Runs every check that applies to `config`, in order.
pub fn run(config: &EdgeConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let encoder = check_model(config, &mut checks);
    checks.push(check_source(config));
    if config.link.kind == LinkKind::Serial {
        checks.push(check_device_file(
            "serial",
            &config.link.path,
            "dialout",
            "check [link] path (ls /dev/ttyUSB* /dev/ttyACM* /dev/ttyAMA*)",
        ));
    }
    let key = match config.link.auth() {
        Ok(Some(auth)) => {
            let (check, key) = check_device_key(&auth);
            checks.push(check);
            key.map(|device| (device, auth.host_key))
        }
        _ => None,
    };
    checks.push(check_link(config, encoder.as_ref().map(|e| e.info()), key));
    checks.push(check_clock());
    checks.push(check_spool_disk(config));
    checks.push(check_temperature(Path::new("/sys/class/thermal")));
    checks.push(check_throttling());
    if !config.led.chip.as_os_str().is_empty() {
        checks.push(check_device_file(
            "led",
            &config.led.chip,
            "gpio",
            "check [led] chip (ls /dev/gpiochip*)",
        ));
    }
    checks
}

fn check_model(config: &EdgeConfig, checks: &mut Vec<Check>) -> Option<Box<dyn Encoder>> {
    let dir = assemble::models_dir(config);
    match assemble::open_model(config) {
        Ok((_, encoder, _, chosen)) => {
            let info = encoder.info();
            let size = std::fs::metadata(&info.path).map_or(0, |m| m.len());
            checks.push(Check::ok(
                "model",
                format!(
                    "{} {} at {}: sha256 {}… verified, {:.1} MB",
                    info.model_id,
                    info.precision.name(),
                    info.path.display(),
                    &hex::encode(info.sha256)[..16],
                    size as f64 / 1e6
                ),
            ));
            checks.push(Check::ok(
                "backend",
                format!(
                    "{} {} ({}) loaded the encoder, {} thread(s): {} inputs → {}-dim latent",
                    info.backend,
                    info.precision.name(),
                    chosen.reason,
                    config.model.threads,
                    info.input_len,
                    info.latent_dim
                ),
            ));
            Some(encoder)
        }
        Err(e) => {
            let fix = match &e {
                assemble::AssembleError::Manifest { .. } => format!(
                    "install the model files in {} (they ship in the package's models/), or set [model] dir / LATENTCAM_MODELS",
                    dir.display()
                ),
                _ => "check [model] backend and precision (`auto` picks what this build can run); \
                      the tflite and litert backends need a build with their cargo feature"
                    .into(),
            };
            checks.push(Check::fail("model", e.to_string(), fix));
            None
        }
    }
}

fn check_source(config: &EdgeConfig) -> Check {
    let path = &config.source.path;
    match config.source.kind {
        SourceKind::V4l => check_camera(path),
        SourceKind::Replay => {
            if !path.exists() {
                return Check::fail(
                    "source",
                    format!("replay input {} does not exist", path.display()),
                    "check [source] path",
                );
            }
            if path.is_file() && !on_path("ffprobe") {
                return Check::fail(
                    "source",
                    format!(
                        "{} is a video, but ffmpeg/ffprobe are not on PATH",
                        path.display()
                    ),
                    "install ffmpeg (apt install ffmpeg)",
                );
            }
            Check::ok("source", format!("replay of {}", path.display()))
        }
        SourceKind::Synthetic => Check::ok("source", "synthetic test pattern"),
    }
}

fn check_camera(path: &Path) -> Check {
    let present: Vec<String> = std::fs::read_dir("/dev")
        .map(|d| {
            let mut v: Vec<String> = d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("video"))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    if !path.exists() {
        let seen = if present.is_empty() {
            "no /dev/video* at all".to_owned()
        } else {
            format!("present: {}", present.join(", "))
        };
        return Check::fail(
            "camera",
            format!("{} does not exist ({seen})", path.display()),
            "plug the camera in (Pi camera: enable it with raspi-config / camera_auto_detect=1), then set [source] path",
        );
    }
    if let Err(check) = open_rw("camera", path, "video") {
        return check;
    }
    match crate::source::v4l::list_cameras() {
        Ok(cameras) => match cameras.iter().find(|c| c.path == path) {
            Some(camera) => {
                let formats: Vec<String> = camera
                    .formats
                    .iter()
                    .map(|f| {
                        let usable = if f.format.is_some() {
                            ""
                        } else {
                            " (unsupported)"
                        };
                        format!("{}{usable}", f.fourcc)
                    })
                    .collect();
                if camera.formats.iter().any(|f| f.format.is_some()) {
                    Check::ok(
                        "camera",
                        format!(
                            "{} — {}: {}",
                            path.display(),
                            camera.name,
                            formats.join(", ")
                        ),
                    )
                } else {
                    Check::fail(
                        "camera",
                        format!(
                            "{} offers no format latentcam reads: {}",
                            path.display(),
                            formats.join(", ")
                        ),
                        "use a camera or device node that offers YUYV, RGB3 or MJPG",
                    )
                }
            }
            None => Check::fail(
                "camera",
                format!("{} is not a video capture device", path.display()),
                "pick the capture node (latentcam-edge cameras lists them)",
            ),
        },
        Err(e) => Check::fail(
            "camera",
            e.to_string(),
            "this build has no V4L2 support: use a package built with --features v4l",
        ),
    }
}

/// Opens a device file for reading and writing, explaining a refusal.
fn open_rw(name: &'static str, path: &Path, group: &str) -> Result<(), Check> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(Check::fail(
            name,
            format!("{}: permission denied", path.display()),
            format!(
                "add the service user to the {group} group (sudo usermod -aG {group} $USER), then log in again"
            ),
        )),
        Err(e) => Err(Check::fail(
            name,
            format!("{}: {e}", path.display()),
            "check that the device is plugged in and the path is right",
        )),
    }
}

fn check_device_file(name: &'static str, path: &Path, group: &str, fix_missing: &str) -> Check {
    if !path.exists() {
        return Check::fail(
            name,
            format!("{} does not exist", path.display()),
            fix_missing,
        );
    }
    match open_rw(name, path, group) {
        Ok(()) => Check::ok(
            name,
            format!("{} opens for reading and writing", path.display()),
        ),
        Err(check) => check,
    }
}

/// Loads the device key named by `[link] key_file`.
fn check_device_key(auth: &LinkAuth) -> (Check, Option<StaticKey>) {
    match StaticKey::load(&auth.key_file) {
        Ok(key) => (
            Check::ok(
                "keys",
                format!(
                    "device key {} (public {}); the host must hold {}",
                    auth.key_file.display(),
                    key.public(),
                    auth.host_key
                ),
            ),
            Some(key),
        ),
        Err(e) => {
            let fix = match &e {
                KeyError::Permissions { path, .. } => format!(
                    "chmod 600 {0}; chown it to the service user (chown latentcam: {0})",
                    path.display()
                ),
                KeyError::Io { source, .. } if source.kind() == ErrorKind::PermissionDenied => {
                    format!(
                        "chown the key to the service user: chown latentcam: {}",
                        auth.key_file.display()
                    )
                }
                _ => format!(
                    "latentcam-edge keygen --out {} prints the public key to register on the \
                     host (latentcam-host keys add DEVICE-ID PUBLIC-KEY)",
                    auth.key_file.display()
                ),
            };
            (Check::fail("keys", e.to_string(), fix), None)
        }
    }
}

fn check_link(
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

/// 2025-01-01: a clock before this was never set.
const CLOCK_FLOOR_UNIX: u64 = 1_735_689_600;

fn check_clock() -> Check {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now < CLOCK_FLOOR_UNIX {
        return Check::fail(
            "clock",
            format!("system time is {now} s after 1970, before 2025: not set"),
            "enable time synchronisation (timedatectl set-ntp true); a Pi has no battery clock",
        );
    }
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        Check::ok("clock", "set and synchronised (systemd-timesyncd)")
    } else {
        Check::warn(
            "clock",
            "set, but synchronisation is not confirmed (no /run/systemd/timesync/synchronized)",
            "capture times come from this clock: enable NTP (timedatectl set-ntp true) or chrony",
        )
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `stat` is written by
    // statvfs before being read (only on success).
    let rc = unsafe { libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // The fields are 32-bit on armv7, 64-bit on aarch64 and x86_64.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn check_spool_disk(config: &EdgeConfig) -> Check {
    let dir = &config.spool.dir;
    if dir.as_os_str().is_empty() {
        return Check::ok(
            "spool",
            "disabled: latents made while the link is down are lost",
        );
    }
    // The spool is created on start; measure its nearest existing ancestor.
    let mut existing: PathBuf = dir.clone();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    let want = config.spool.max_megabytes * 1_000_000;
    match free_bytes(&existing) {
        Ok(free) if free < want => Check::fail(
            "spool",
            format!(
                "{}: {:.0} MB free, the spool may use {} MB",
                dir.display(),
                free as f64 / 1e6,
                config.spool.max_megabytes
            ),
            "free disk space or lower [spool] max_megabytes",
        ),
        Ok(free) => {
            let writable = std::fs::metadata(&existing)
                .map(|m| !m.permissions().readonly())
                .unwrap_or(false);
            if writable {
                Check::ok(
                    "spool",
                    format!(
                        "{}: {:.1} GB free for up to {} MB",
                        dir.display(),
                        free as f64 / 1e9,
                        config.spool.max_megabytes
                    ),
                )
            } else {
                Check::fail(
                    "spool",
                    format!("{} is not writable", existing.display()),
                    "give the service user the spool directory (systemd: StateDirectory=latentcam)",
                )
            }
        }
        Err(e) => Check::fail(
            "spool",
            format!("{}: {e}", existing.display()),
            "check [spool] dir",
        ),
    }
}

/// The hottest thermal zone under `root` (normally `/sys/class/thermal`).
fn check_temperature(root: &Path) -> Check {
    let mut hottest: Option<(f64, String)> = None;
    if let Ok(zones) = std::fs::read_dir(root) {
        for zone in zones.filter_map(|z| z.ok()) {
            let milli = std::fs::read_to_string(zone.path().join("temp"))
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok());
            if let Some(milli) = milli {
                let kind = std::fs::read_to_string(zone.path().join("type"))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default();
                if hottest.as_ref().is_none_or(|(t, _)| milli / 1000.0 > *t) {
                    hottest = Some((milli / 1000.0, kind));
                }
            }
        }
    }
    match hottest {
        None => Check::warn(
            "temperature",
            format!("no readable thermal zone under {}", root.display()),
            "none needed on a VM; on a Pi, check that /sys/class/thermal is mounted",
        ),
        Some((c, kind)) if c >= 80.0 => Check::fail(
            "temperature",
            format!("{c:.1} °C ({kind}): the CPU throttles from 80 °C"),
            "add a heatsink or fan, or shade the enclosure",
        ),
        Some((c, kind)) if c >= 70.0 => Check::warn(
            "temperature",
            format!("{c:.1} °C ({kind}): close to throttling (80 °C)"),
            "improve cooling before summer",
        ),
        Some((c, kind)) => Check::ok("temperature", format!("{c:.1} °C ({kind})")),
    }
}

/// Decodes `vcgencmd get_throttled`'s bits.
pub fn throttled_check(bits: u32) -> Check {
    let now: Vec<&str> = [
        (0, "under-voltage"),
        (1, "ARM frequency capped"),
        (2, "throttled"),
        (3, "soft temperature limit"),
    ]
    .iter()
    .filter(|(b, _)| bits & (1 << b) != 0)
    .map(|(_, n)| *n)
    .collect();
    let since_boot = bits >> 16 & 0xf;
    if bits & 1 != 0 {
        Check::fail(
            "throttling",
            format!("now: {} (0x{bits:x})", now.join(", ")),
            "use the official power supply (Pi 4: 5.1 V 3 A; Pi 5: 5.1 V 5 A) and a short, thick cable",
        )
    } else if !now.is_empty() {
        Check::warn(
            "throttling",
            format!("now: {} (0x{bits:x})", now.join(", ")),
            "improve cooling and the power supply; inference slows while throttled",
        )
    } else if since_boot != 0 {
        Check::warn(
            "throttling",
            format!("not now, but since boot (0x{bits:x})"),
            "under-voltage or heat happened earlier: check the supply and cooling",
        )
    } else {
        Check::ok(
            "throttling",
            "none now or since boot (vcgencmd get_throttled = 0x0)",
        )
    }
}

fn check_throttling() -> Check {
    let output = std::process::Command::new("vcgencmd")
        .arg("get_throttled")
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text
                .trim()
                .strip_prefix("throttled=0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
            {
                Some(bits) => throttled_check(bits),
                None => Check::warn(
                    "throttling",
                    format!("unexpected vcgencmd answer {:?}", text.trim()),
                    "run vcgencmd get_throttled by hand",
                ),
            }
        }
        _ => Check::ok(
            "throttling",
            "no Raspberry Pi firmware interface (vcgencmd): nothing to check",
        ),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_bits_are_explained() {
        assert_eq!(throttled_check(0).level, Level::Ok);
        let under = throttled_check(0x50005);
        assert_eq!(under.level, Level::Fail);
        assert!(under.detail.contains("under-voltage") && under.detail.contains("throttled"));
        assert_eq!(throttled_check(0x50000).level, Level::Warn);
        assert_eq!(throttled_check(0x8).level, Level::Warn);
    }

    #[test]
    fn temperature_from_thermal_zones() {
        let root = std::env::temp_dir().join(format!("latentcam-thermal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (zone, temp) in [("thermal_zone0", "45123"), ("thermal_zone1", "81000")] {
            std::fs::create_dir_all(root.join(zone)).unwrap();
            std::fs::write(root.join(zone).join("temp"), temp).unwrap();
            std::fs::write(root.join(zone).join("type"), "cpu-thermal").unwrap();
        }
        let hot = check_temperature(&root);
        assert_eq!(hot.level, Level::Fail);
        assert!(hot.detail.starts_with("81.0 °C"), "{}", hot.detail);
        std::fs::write(root.join("thermal_zone1/temp"), "30000").unwrap();
        let fine = check_temperature(&root);
        assert_eq!(
            (fine.level, fine.detail.as_str()),
            (Level::Ok, "45.1 °C (cpu-thermal)")
        );
        assert_eq!(check_temperature(&root.join("absent")).level, Level::Warn);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn free_space_of_a_real_filesystem() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/definitely/absent")).is_err());
    }
}
