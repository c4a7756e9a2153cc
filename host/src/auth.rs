//! Device authentication on the host (wire/SPEC.md §7): the host's static
//! key, the list of devices allowed to connect, whether a device may
//! connect without authenticating, and the `keys` subcommand's work.
//!
//! A key directory holds two files:
//!
//! | file | what |
//! |---|---|
//! | `host.key` | the host's private key (mode 0600; its public half goes into every edge's `[link] host_key`) |
//! | `devices` | one line per device: `PUBLIC-KEY DEVICE-ID` ([`DeviceKeys`]) |
//!
//! The device list is read again at every handshake, so `keys add` and
//! `keys revoke` take effect on a device's next connection without a
//! restart. Connections drive the handshake through
//! [`crate::ingest::Conn`]; this module only holds the policy and the keys.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use latentcam_secure::{DeviceKeys, KeyError, PublicKey, Stamp, StaticKey};

/// Where `keys` and `serve --keys` look when no directory is given.
pub const DEFAULT_KEY_DIR: &str = "/etc/latentcam/host-keys";

/// The host's private key file in a key directory.
pub const HOST_KEY_FILE: &str = "host.key";

/// The list of registered devices in a key directory.
pub const DEVICES_FILE: &str = "devices";

/// Why a key directory could not be used, or why `serve` refuses to start
/// with the authentication it was given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The host key is missing or unreadable.
    #[error(
        "cannot use the host key {path}: {source} (create it with `latentcam-host keys init --dir {dir}`)"
    )]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// The key directory.
        dir: PathBuf,
        /// What was wrong.
        #[source]
        source: KeyError,
    },
    /// `keys init` found a key already there.
    #[error(
        "{path} exists; refusing to overwrite the host key (every device trusts its public half). \
         Remove it by hand to start over, then re-provision every device"
    )]
    HostKeyExists {
        /// The key file.
        path: PathBuf,
    },
    /// A key directory could not be created.
    #[error("cannot create the key directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a key or the device list failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `serve` would expose devices' latents without authentication.
    #[error("{0}")]
    Policy(String),
}

/// How the host authenticates devices: its static key, its device list,
/// and whether a device that does not authenticate is refused. Shared by
/// every connection (one `Arc`), which also count authentication failures
/// here for `/metrics`.
#[derive(Debug)]
pub struct HostAuth {
    key: Option<StaticKey>,
    devices: Option<PathBuf>,
    require: bool,
    failures: AtomicU64,
    /// The newest handshake stamp accepted from each authenticated device
    /// (so only registered ids, a bounded set): an older or equal one is a
    /// replay.
    stamps: Mutex<BTreeMap<String, Stamp>>,
}

impl HostAuth {
    /// No key, nothing required: devices connect without authenticating,
    /// and a device that offers authentication is refused (it must not
    /// stream unauthenticated believing otherwise). For recordings (the
    /// operator's own files) and hosts on loopback.
    pub const fn none() -> Self {
        Self {
            key: None,
            devices: None,
            require: false,
            failures: AtomicU64::new(0),
            stamps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The host key `DIR/host.key` and the device list `DIR/devices` (which
    /// may not exist yet: no device is allowed then). Authentication is
    /// required; see [`with_required`](Self::with_required).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, AuthError> {
        let dir = dir.as_ref();
        let path = dir.join(HOST_KEY_FILE);
        let key = StaticKey::load(&path).map_err(|source| AuthError::HostKey {
            path: path.clone(),
            dir: dir.to_path_buf(),
            source,
        })?;
        // A list that cannot be read now would refuse every device later:
        // fail at start-up instead.
        DeviceKeys::load(dir.join(DEVICES_FILE))?;
        Ok(Self::new(key, dir.join(DEVICES_FILE), true))
    }

    /// A host with this key and device list.
    pub fn new(key: StaticKey, devices: impl Into<PathBuf>, require: bool) -> Self {
        Self {
            key: Some(key),
            devices: Some(devices.into()),
            require,
            failures: AtomicU64::new(0),
            stamps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The same, requiring authentication or not: a host that does not
    /// require it still authenticates the devices that offer it, and
    /// admits the others.
    pub fn with_required(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// True if a device that does not authenticate is refused.
    pub fn required(&self) -> bool {
        self.require
    }

    /// The host's static key, if it has one.
    pub fn key(&self) -> Option<&StaticKey> {
        self.key.as_ref()
    }

    /// The device list file, if the host has one.
    pub fn devices_path(&self) -> Option<&Path> {
        self.devices.as_deref()
    }

    /// The key registered for `device` now (the list is read from disk at
    /// every call). No list: nobody is registered.
    pub fn registered(&self, device: &str) -> Result<Option<PublicKey>, KeyError> {
        match &self.devices {
            Some(path) => Ok(DeviceKeys::load(path)?.get(device).copied()),
            None => Ok(None),
        }
    }

    /// Connections refused at authentication so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Accepts the handshake stamp `stamp` of authenticated `device` if it
    /// is newer than every stamp accepted from it so far (and remembers
    /// it); otherwise returns the newest accepted one: the handshake is a
    /// replay, or the device's clock went back. Kept in memory, as
    /// WireGuard does: a restarted host accepts any stamp once.
    pub fn fresh(&self, device: &str, stamp: Stamp) -> Result<(), Stamp> {
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        match stamps.get_mut(device) {
            Some(last) if *last >= stamp => Err(*last),
            Some(last) => {
                *last = stamp;
                Ok(())
            }
            None => {
                stamps.insert(device.to_owned(), stamp);
                Ok(())
            }
        }
    }

    /// Counts a connection refused at authentication.
    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for HostAuth {
    /// [`HostAuth::none`].
    fn default() -> Self {
        Self::none()
    }
}

/// `keys init`: creates `dir` if needed and a new host key in it (never
/// overwriting one); returns its public key.
pub fn init(dir: &Path) -> Result<PublicKey, AuthError> {
    std::fs::create_dir_all(dir).map_err(|source| AuthError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(HOST_KEY_FILE);
    if path.exists() {
        return Err(AuthError::HostKeyExists { path });
    }
    match StaticKey::write_new(&path) {
        Ok(key) => Ok(*key.public()),
        // Created by someone else between the check and the write.
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(AuthError::HostKeyExists { path })
        }
        Err(e) => Err(e.into()),
    }
}

/// `keys show`: the host's public key.
pub fn show(dir: &Path) -> Result<PublicKey, AuthError> {
    let path = dir.join(HOST_KEY_FILE);
    StaticKey::load(&path)
        .map(|k| *k.public())
        .map_err(|source| AuthError::HostKey {
            path,
            dir: dir.to_path_buf(),
            source,
        })
}

/// `keys add`: registers `device` with `key`; returns the key it replaced.
pub fn add(dir: &Path, device: &str, key: PublicKey) -> Result<Option<PublicKey>, AuthError> {
    std::fs::create_dir_all(dir).map_err(|source| AuthError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(DeviceKeys::add(dir.join(DEVICES_FILE), device, key)?)
}

/// `keys list`: the registered devices.
pub fn list(dir: &Path) -> Result<DeviceKeys, AuthError> {
    Ok(DeviceKeys::load(dir.join(DEVICES_FILE))?)
}

/// `keys revoke`: removes `device`; false if it was not registered.
pub fn revoke(dir: &Path, device: &str) -> Result<bool, AuthError> {
    Ok(DeviceKeys::revoke(dir.join(DEVICES_FILE), device)?)
}

/// True if `address` (`host:port`, `[v6]:port`, or a bare host) names
/// only this machine: a loopback IP literal or `localhost`. Any other
/// name counts as reachable from elsewhere (it is not resolved: what it
/// resolves to may change).
pub fn is_loopback(address: &str) -> bool {
    let address = address.trim();
    let host = if let Some(rest) = address.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else if address.matches(':').count() == 1 {
        address.split_once(':').map_or(address, |(h, _)| h)
    } else {
        // A bare host, or a bare IPv6 literal.
        address
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The transports `serve` was asked for, as far as authentication cares.
#[derive(Debug, Clone, Default)]
pub struct Exposure<'a> {
    /// The TCP listen address.
    pub tcp: &'a str,
    /// The UDP receive address, if any.
    pub udp: Option<&'a str>,
    /// The MQTT broker's host, if any.
    pub mqtt: Option<&'a str>,
    /// The worker connects to the broker with TLS and a client
    /// certificate: the broker authenticates every client by certificate
    /// and binds each device's topics to its id, so MQTT devices count as
    /// authenticated.
    pub mqtt_client_cert: bool,
}

/// What `serve` decided about authentication: the warnings to log at
/// start-up (the caller logs them; nothing here prints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Loud warnings for the log.
    pub warnings: Vec<String>,
}

/// Decides whether `serve` may start: with a key directory (`keys`),
/// devices must authenticate unless `allow_unauthenticated`, and MQTT is
/// refused unless the broker authenticates devices (the worker has a client
/// certificate: [`Exposure::mqtt_client_cert`]);
/// without one, every address devices can reach must be loopback unless
/// `allow_unauthenticated`. The error names both ways out.
pub fn decide(
    keys: Option<&Path>,
    allow_unauthenticated: bool,
    exposure: &Exposure<'_>,
) -> Result<Decision, AuthError> {
    let mut decision = Decision::default();
    let mqtt = exposure.mqtt.filter(|_| !exposure.mqtt_client_cert);
    let unauthenticated: Vec<String> = [("--mqtt", mqtt)]
        .into_iter()
        .filter_map(|(flag, address)| address.map(|a| format!("{flag} {a}")))
        .collect();
    match keys {
        Some(dir) => {
            if allow_unauthenticated {
                decision.warnings.push(format!(
                    "--allow-unauthenticated: devices offering authentication are checked against {}, \
                     devices without keys are admitted unauthenticated (anyone who reaches the host \
                     can send latents under any device id that has no key)",
                    dir.join(DEVICES_FILE).display()
                ));
                if !unauthenticated.is_empty() {
                    decision.warnings.push(format!(
                        "{} cannot authenticate devices without --mqtt-cert (a broker that requires \
                         client certificates): anyone who reaches the broker can send latents",
                        unauthenticated.join(" and ")
                    ));
                }
            } else if !unauthenticated.is_empty() {
                return Err(AuthError::Policy(format!(
                    "{} cannot authenticate devices without a broker that does (TCP, UDP and serial \
                     devices authenticate to the host), and --keys requires authentication: use \
                     an mqtts:// broker that requires client certificates, with --mqtt-cert and \
                     --mqtt-key (README, security), or add --allow-unauthenticated on a trusted \
                     network",
                    unauthenticated.join(" and ")
                )));
            }
        }
        None => {
            let mut exposed: Vec<String> = Vec::new();
            if !is_loopback(exposure.tcp) {
                exposed.push(format!("--tcp {}", exposure.tcp));
            }
            for (flag, address) in [("--udp", exposure.udp), ("--mqtt", mqtt)] {
                if let Some(a) = address
                    && !is_loopback(a)
                {
                    exposed.push(format!("{flag} {a}"));
                }
            }
            if exposed.is_empty() {
                return Ok(decision);
            }
            if !allow_unauthenticated {
                return Err(AuthError::Policy(format!(
                    "{} reaches beyond this machine, and devices would connect without \
                     authentication: anyone who reaches it could send latents as any device. \
                     Either authenticate devices (`latentcam-host keys init --dir {DEFAULT_KEY_DIR}`, \
                     register each device with `latentcam-host keys add`, then serve --keys \
                     {DEFAULT_KEY_DIR}), or pass --allow-unauthenticated on a trusted lab network \
                     (or listen on 127.0.0.1)",
                    exposed.join(" and ")
                )));
            }
            decision.warnings.push(format!(
                "--allow-unauthenticated: devices on {} connect WITHOUT authentication; anyone \
                 who reaches the host can send latents as any device (use --keys DIR outside a lab)",
                exposed.join(" and ")
            ));
        }
    }
    Ok(decision)
}

impl HostAuth {
    /// What `serve` runs with: the key directory's keys, required unless
    /// `allow_unauthenticated` (see [`decide`]), or none. Returns the
    /// warnings to log at start-up.
    pub fn for_serve(
        keys: Option<&Path>,
        allow_unauthenticated: bool,
        exposure: &Exposure<'_>,
    ) -> Result<(Self, Vec<String>), AuthError> {
        let decision = decide(keys, allow_unauthenticated, exposure)?;
        let auth = match keys {
            Some(dir) => Self::open(dir)?.with_required(!allow_unauthenticated),
            None => Self::none(),
        };
        Ok((auth, decision.warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_told_apart_from_the_others() {
        for local in [
            "127.0.0.1:7878",
            "127.1.2.3:0",
            "localhost:1883",
            "LOCALHOST",
            "[::1]:7878",
            "::1",
            "127.0.0.1",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "0.0.0.0:7878",
            "[::]:7878",
            "192.168.1.2:7878",
            "broker:1883",
            "broker",
            "localhost.example.com:1",
            "",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    fn exposure<'a>(tcp: &'a str, udp: Option<&'a str>, mqtt: Option<&'a str>) -> Exposure<'a> {
        Exposure {
            tcp,
            udp,
            mqtt,
            mqtt_client_cert: false,
        }
    }

    #[test]
    fn serving_beyond_loopback_needs_keys_or_an_explicit_lab_flag() {
        let keys = Path::new("/k");
        // Loopback only: fine without keys.
        assert_eq!(
            decide(
                None,
                false,
                &exposure("127.0.0.1:0", Some("127.0.0.1:0"), None)
            )
            .unwrap(),
            Decision::default()
        );
        // The default listen address without keys: refused, naming both fixes.
        let e = decide(None, false, &exposure("0.0.0.0:7878", None, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tcp 0.0.0.0:7878"), "{e}");
        assert!(e.contains("keys init"), "{e}");
        assert!(e.contains("--allow-unauthenticated"), "{e}");
        let e = decide(None, false, &exposure("127.0.0.1:0", None, Some("broker")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--mqtt broker"), "{e}");
        // The lab flag: allowed, with a warning.
        let d = decide(
            None,
            true,
            &exposure("0.0.0.0:7878", Some("0.0.0.0:9"), None),
        )
        .unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("WITHOUT authentication"));
        // Keys: any address, UDP included; MQTT refused unless allowed.
        assert_eq!(
            decide(Some(keys), false, &exposure("0.0.0.0:7878", None, None)).unwrap(),
            Decision::default()
        );
        assert_eq!(
            decide(
                Some(keys),
                false,
                &exposure("0.0.0.0:7878", Some("0.0.0.0:9"), None)
            )
            .unwrap(),
            Decision::default()
        );
        let e = decide(
            Some(keys),
            false,
            &exposure("0.0.0.0:7878", None, Some("127.0.0.1")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--mqtt-cert"), "{e}");
        let d = decide(Some(keys), true, &exposure("0.0.0.0:7878", None, Some("b"))).unwrap();
        assert_eq!(d.warnings.len(), 2);
        // A worker with a client certificate: the broker authenticates the
        // devices, with keys or without, on any broker address.
        let certified = Exposure {
            mqtt_client_cert: true,
            ..exposure("127.0.0.1:0", None, Some("broker.example"))
        };
        assert_eq!(
            decide(Some(keys), false, &certified).unwrap(),
            Decision::default()
        );
        assert_eq!(
            decide(None, false, &certified).unwrap(),
            Decision::default()
        );
    }

    #[test]
    fn key_directories_are_created_listed_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("latentcam-auth-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let keys = dir.join("nested");
        let public = init(&keys).unwrap();
        assert_eq!(show(&keys).unwrap(), public);
        assert!(matches!(init(&keys), Err(AuthError::HostKeyExists { .. })));
        assert_eq!(show(&keys).unwrap(), public, "the first key stays");
        let device = *StaticKey::generate().public();
        assert_eq!(add(&keys, "cam-1", device).unwrap(), None);
        let other = *StaticKey::generate().public();
        assert_eq!(add(&keys, "cam-1", other).unwrap(), Some(device));
        let auth = HostAuth::open(&keys).unwrap();
        assert!(auth.required());
        assert_eq!(auth.registered("cam-1").unwrap(), Some(other));
        assert!(revoke(&keys, "cam-1").unwrap());
        assert!(!revoke(&keys, "cam-1").unwrap());
        assert_eq!(
            auth.registered("cam-1").unwrap(),
            None,
            "read at every call"
        );
        assert!(list(&keys).unwrap().is_empty());
        let missing = HostAuth::open(dir.join("none")).unwrap_err().to_string();
        assert!(missing.contains("keys init --dir"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
