//! What the host knows about each device: sequence accounting, the highest
//! latent processed (what `Welcome.acked` and `Ack` report), counters and
//! the latest heartbeat. A host writing its results to a file resumes from
//! it, so after a restart it still tells a device which latents it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use latentcam_wire::{Heartbeat, Hello};
use serde::Serialize;

/// Errors reading the results file a registry resumes from.
#[derive(Debug, thiserror::Error)]
#[error("host state {path}: {message}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// One device as the host sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceRecord {
    /// Model id from the last `Hello`.
    pub model: String,
    /// Codec from the last `Hello`.
    pub codec: String,
    /// Backend from the last `Hello`.
    pub backend: String,
    /// Firmware version from the last `Hello`.
    pub firmware: String,
    /// Where the last `Hello` came from.
    pub peer: String,
    /// `Hello`s accepted.
    pub hellos: u64,
    /// Highest sequence number admitted.
    pub highest_received: Option<u64>,
    /// Highest sequence number whose heads have run (what is acknowledged).
    pub highest_processed: Option<u64>,
    /// Latents admitted.
    pub latents: u64,
    /// Latents already held (re-sent after a reconnect) and dropped.
    pub duplicates: u64,
    /// Sequence numbers skipped.
    pub missing: u64,
    /// Latents dropped by the per-connection rate limit.
    pub rate_limited: u64,
    /// Corrupt frames on this device's connections after its `Hello`.
    pub frame_errors: u64,
    /// The latest heartbeat.
    pub heartbeat: Option<Heartbeat>,
}

/// All devices, shared by the connections and the head worker.
#[derive(Debug, Default)]
pub struct Registry {
    devices: Mutex<BTreeMap<String, DeviceRecord>>,
}

impl Registry {
    /// A registry kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A registry that resumes from a results file written by an earlier
    /// run (`serve --jsonl`): every line names a device and a sequence
    /// number whose heads ran, so the highest per device is what the host
    /// holds. A torn last line (a crash mid-write) is ignored. The results
    /// file is the durable record; no separate state file can disagree with
    /// it.
    pub fn resume_from_results(path: impl AsRef<Path>) -> Result<Self, StateError> {
        use std::io::BufRead;
        let path = path.as_ref();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(StateError {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        };
        let mut devices: BTreeMap<String, DeviceRecord> = BTreeMap::new();
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| StateError {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let (Some(device), Some(seq)) = (
                value.get("device").and_then(|d| d.as_str()),
                value.get("seq").and_then(|s| s.as_u64()),
            ) else {
                continue;
            };
            let r = devices.entry(device.to_owned()).or_default();
            let held = r.highest_processed.map_or(seq, |h| h.max(seq));
            r.highest_processed = Some(held);
            r.highest_received = Some(held);
        }
        Ok(Self {
            devices: Mutex::new(devices),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, DeviceRecord>> {
        self.devices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a device's record, creating it if needed.
    pub fn with<T>(&self, device: &str, f: impl FnOnce(&mut DeviceRecord) -> T) -> T {
        let mut devices = self.lock();
        f(devices.entry(device.to_owned()).or_default())
    }

    /// Records an accepted `Hello`; returns what the host holds for the
    /// device (`Welcome.acked`).
    pub fn hello(&self, device: &str, peer: &str, hello: &Hello<'_>) -> Option<u64> {
        self.with(device, |r| {
            r.model = hello.model.model_id.to_owned();
            r.codec = format!("{:?}", hello.codec);
            r.backend = hello.backend.to_owned();
            r.firmware = hello.firmware_version.to_owned();
            r.peer = peer.to_owned();
            r.hellos += 1;
            // Latents admitted but not yet processed are still queued: they
            // will be processed, and a re-send of them is a duplicate.
            r.highest_processed
        })
    }

    /// Admits a latent unless the host already has it; counts gaps and
    /// duplicates.
    pub fn admit(&self, device: &str, seq: u64) -> bool {
        self.with(device, |r| match r.highest_received {
            Some(h) if seq <= h => {
                r.duplicates += 1;
                false
            }
            h => {
                if let Some(h) = h {
                    r.missing += seq - h - 1;
                }
                r.highest_received = Some(seq);
                r.latents += 1;
                true
            }
        })
    }

    /// Marks a latent's heads as done.
    pub fn processed(&self, device: &str, seq: u64) {
        self.with(device, |r| {
            r.highest_processed = Some(r.highest_processed.map_or(seq, |p| p.max(seq)));
        });
    }

    /// What the host holds for a device.
    pub fn acked(&self, device: &str) -> Option<u64> {
        self.lock().get(device).and_then(|r| r.highest_processed)
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> BTreeMap<String, DeviceRecord> {
        self.lock().clone()
    }
}
