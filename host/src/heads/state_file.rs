//! Helpers for the files the host keeps for itself (the few-shot store, the
//! similarity index): a checksum that tells damage from a torn write,
//! durable creation and replacement, and quarantine of a damaged file.
//!
//! A damaged state file must not keep the host from starting: it is renamed
//! aside to `<name>.damaged-<unix seconds>` (kept for inspection, never
//! deleted) and the host starts with an empty store. Files the user gives
//! as read-only inputs (model and head files) are never moved; a damaged
//! one is a clear error instead.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::linear::HeadError;

/// CRC-32C (Castagnoli), the checksum the wire format uses too, as a table
/// built at compile time (the host crate does not pull in a CRC crate for
/// two file formats).
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// A running CRC-32C over several slices.
#[derive(Debug, Clone, Copy)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self(!0)
    }
}

impl Crc32c {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &b in bytes {
            crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    /// The checksum of everything added.
    pub fn value(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::default();
    crc.update(bytes);
    crc.value()
}

/// What a file starting with `magic` is, if it looks like one of
/// latentcam's own formats (a six-letter family and a two-digit version):
/// `(family, description)`. Lets a loader tell "the wrong file was given"
/// or "a newer format" (an error for the user) from damage.
pub fn latentcam_kind(magic: &[u8]) -> Option<(&'static str, &'static str)> {
    const KINDS: [(&str, &str); 3] = [
        ("LCFEWS", "a few-shot enrolment store"),
        ("LCINDX", "a similarity index"),
        ("LCHEAD", "a linear head file"),
    ];
    let version = magic.get(6..8)?;
    if !version.iter().all(u8::is_ascii_digit) {
        return None;
    }
    KINDS
        .into_iter()
        .find(|(family, _)| magic.starts_with(family.as_bytes()))
}

/// `fsync` of the directory holding `path`, so that a file created,
/// renamed or removed there stays so after a power cut.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` durably: written to `<path>.tmp`, synced,
/// renamed over `path`, and the directory synced. A crash at any point
/// leaves either the old file or the new one, never a mix.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    sync_parent_dir(path)
}

/// Renames a damaged state file aside to `<name>.damaged-<unix seconds>`
/// (with `-<n>` appended if that name is taken), syncs the directory, and
/// returns the new path.
pub fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut aside = path.with_file_name(format!("{name}.damaged-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.damaged-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    sync_parent_dir(path)?;
    Ok(aside)
}

/// Opens one of the host's own state files with `open`; if it is
/// [`HeadError::Damaged`], moves it aside ([`quarantine`]), says so at
/// ERROR (`what` names the file's role, `instead` what the host does now)
/// and returns `fresh()` with where the damaged file went. Any other error
/// (another model's file, an I/O failure) is returned as is.
pub(crate) fn open_or_quarantine<T>(
    path: &Path,
    what: &str,
    instead: &str,
    open: impl FnOnce() -> Result<T, HeadError>,
    fresh: impl FnOnce() -> Result<T, HeadError>,
) -> Result<(T, Option<PathBuf>), HeadError> {
    match open() {
        Err(HeadError::Damaged { reason, .. }) => {
            let aside = quarantine(path).map_err(|source| HeadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            tracing::error!(
                "{what} {} is damaged ({reason}); moved it to {} and {instead}",
                path.display(),
                aside.display()
            );
            Ok((fresh()?, Some(aside)))
        }
        other => other.map(|value| (value, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The check value of CRC-32C (RFC 3720, B.4): "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let mut split = Crc32c::default();
        split.update(b"1234");
        split.update(b"56789");
        assert_eq!(split.value(), 0xE306_9283);
    }

    #[test]
    fn quarantine_moves_aside_without_overwriting() {
        let dir = std::env::temp_dir().join(format!("lcstate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.bin");
        std::fs::write(&path, b"one").unwrap();
        let first = quarantine(&path).unwrap();
        std::fs::write(&path, b"two").unwrap();
        let second = quarantine(&path).unwrap();
        assert_ne!(first, second);
        assert!(!path.exists());
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        assert!(
            first
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store.bin.damaged-")
        );
        replace_durably(&path, b"three").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert!(!dir.join("store.bin.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
