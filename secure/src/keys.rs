//! Static keys, their files, and the host's list of device keys.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

/// Why a key file or key list could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what it should be.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where it helps.
        problem: String,
    },
    /// A private key file others can read.
    #[error(
        "{path}: private key readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A public key written wrongly on a command line.
    #[error("not a public key: {0} (expected 64 hexadecimal digits)")]
    BadPublicKey(String),
    /// A device id the wire would refuse.
    #[error("device id {0:?} is unusable: 1 to 64 bytes without control characters")]
    BadDeviceId(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a private key file that group or others may read or write, as
/// ssh refuses such keys: the key is the device's identity. Every private
/// key latentcam reads (its own X25519 keys, a TLS client key) goes
/// through this.
pub(crate) fn private_to_owner(path: &Path, metadata: &fs::Metadata) -> Result<(), KeyError> {
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// An X25519 public key, written as 64 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key of these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| KeyError::BadPublicKey(s.chars().take(80).collect()))?;
        Ok(Self(bytes))
    }
}

/// A static X25519 key pair: a device's or a host's identity.
pub struct StaticKey {
    private: Zeroizing<[u8; 32]>,
    public: PublicKey,
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Largest key file read (a key is 65 bytes).
const MAX_KEY_FILE: u64 = 4096;

impl StaticKey {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Self {
        let params = crate::NOISE_PARAMS.parse().expect("valid Noise parameters");
        let pair = snow::Builder::new(params)
            .generate_keypair()
            .expect("the default resolver has X25519 and a random source");
        let mut private = Zeroizing::new([0u8; 32]);
        private.copy_from_slice(&pair.private);
        Self::from_private(*private)
    }

    /// The key pair of a private key (X25519 clamps it).
    pub fn from_private(private: [u8; 32]) -> Self {
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(private).to_bytes();
        Self {
            private: Zeroizing::new(private),
            public: PublicKey(public),
        }
    }

    /// The public half, given to the peer.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn private_bytes(&self) -> &[u8] {
        &self.private[..]
    }

    /// Reads a key file written by [`write_new`](Self::write_new): the
    /// private key as 64 hexadecimal digits. A file that group or others
    /// can read is refused, as ssh refuses such keys.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io(path))?;
        private_to_owner(path, &file.metadata().map_err(io(path))?)?;
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(io(path))?;
        let mut private = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut private[..]).map_err(|_| KeyError::Format {
            path: path.to_path_buf(),
            problem: "not a latentcam private key (64 hexadecimal digits)".into(),
        })?;
        Ok(Self::from_private(*private))
    }

    /// Generates a key pair and writes its private key to a new file
    /// (mode 0600, synced); an existing file is never overwritten.
    pub fn write_new(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let key = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(&key.private[..])));
        file.write_all(text.as_bytes()).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        sync_parent(path).map_err(io(path))?;
        Ok(key)
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Largest device key list read: some 60 000 devices.
const MAX_LIST_FILE: u64 = 8 << 20;

/// The host's list of devices allowed to connect: one line per device,
/// `PUBLIC-KEY DEVICE-ID` (the key as 64 hexadecimal digits; the id is the
/// rest of the line), `#` comments and blank lines ignored. The host reads
/// it at every handshake, so an added or revoked device takes effect on
/// its next connection without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceKeys {
    entries: Vec<(String, PublicKey)>,
}

impl DeviceKeys {
    /// Reads the list; a missing file is an empty list (no device allowed).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let mut text = String::new();
        file.take(MAX_LIST_FILE + 1)
            .read_to_string(&mut text)
            .map_err(io(path))?;
        if text.len() as u64 > MAX_LIST_FILE {
            return Err(KeyError::Format {
                path: path.to_path_buf(),
                problem: format!("larger than {MAX_LIST_FILE} bytes"),
            });
        }
        Self::parse(&text).map_err(|problem| KeyError::Format {
            path: path.to_path_buf(),
            problem,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(String, PublicKey)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, id) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected `PUBLIC-KEY DEVICE-ID`", n + 1))?;
            let key: PublicKey = key.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
            let id = id.trim();
            if !latentcam_wire::valid_device_id(id) {
                return Err(format!(
                    "line {}: {}",
                    n + 1,
                    KeyError::BadDeviceId(id.into())
                ));
            }
            if entries.iter().any(|(known, _)| known == id) {
                return Err(format!("line {}: device {id:?} is listed twice", n + 1));
            }
            entries.push((id.to_owned(), key));
        }
        Ok(Self { entries })
    }

    /// The key registered for `device`.
    pub fn get(&self, device: &str) -> Option<&PublicKey> {
        self.entries
            .iter()
            .find(|(id, _)| id == device)
            .map(|(_, k)| k)
    }

    /// Every device and its key, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.entries.iter().map(|(id, k)| (id.as_str(), k))
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no device is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Registers (or replaces) `device`'s key in the file at `path`,
    /// rewriting it atomically. Returns the key it replaced, if any.
    pub fn add(
        path: impl AsRef<Path>,
        device: &str,
        key: PublicKey,
    ) -> Result<Option<PublicKey>, KeyError> {
        if !latentcam_wire::valid_device_id(device) || device.trim() != device {
            return Err(KeyError::BadDeviceId(device.into()));
        }
        let path = path.as_ref();
        let mut list = Self::load(path)?;
        let old = match list.entries.iter_mut().find(|(id, _)| id == device) {
            Some(entry) => Some(std::mem::replace(&mut entry.1, key)),
            None => {
                list.entries.push((device.to_owned(), key));
                None
            }
        };
        list.save(path)?;
        Ok(old)
    }

    /// Removes `device` from the file at `path`; its next handshake fails.
    /// Returns false if it was not listed.
    pub fn revoke(path: impl AsRef<Path>, device: &str) -> Result<bool, KeyError> {
        let path = path.as_ref();
        let mut list = Self::load(path)?;
        let before = list.entries.len();
        list.entries.retain(|(id, _)| id != device);
        if list.entries.len() == before {
            return Ok(false);
        }
        list.save(path)?;
        Ok(true)
    }

    fn save(&self, path: &Path) -> Result<(), KeyError> {
        let mut text = String::from("# latentcam device keys: PUBLIC-KEY DEVICE-ID\n");
        for (id, key) in &self.entries {
            text.push_str(&format!("{key} {id}\n"));
        }
        let tmp = path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        sync_parent(path).map_err(io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_through_hex() {
        let key = StaticKey::generate();
        let text = key.public().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), *key.public());
        assert!("abc".parse::<PublicKey>().is_err());
        assert!(format!("{text}00").parse::<PublicKey>().is_err());
    }

    #[test]
    fn the_public_key_is_derived_from_the_private_one() {
        // RFC 7748, section 6.1: Alice's key pair.
        let private: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(
            StaticKey::from_private(private).public().to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn device_lists_refuse_what_they_cannot_mean() {
        let k = StaticKey::generate().public().to_string();
        assert_eq!(
            DeviceKeys::parse(&format!("# c\n\n{k} cam 1\n"))
                .unwrap()
                .get("cam 1")
                .map(|p| p.to_string()),
            Some(k.clone())
        );
        for bad in [
            k.clone(),
            format!("zz{} cam", &k[2..]),
            format!("{k} cam\n{k} cam"),
            format!("{k} \u{1b}[2Jcam"),
        ] {
            assert!(DeviceKeys::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
