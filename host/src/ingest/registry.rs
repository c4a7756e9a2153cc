//! What the host knows about each device: sequence accounting, the highest
//! latent processed (what `Welcome.acked` and `Ack` report), counters and
//! the latest heartbeat. A host writing its results to a file resumes from
//! it, so after a restart it still tells a device which latents it holds.
//!
//! Everything here is bounded whatever peers send: at most
//! [`RegistryLimits::max_devices`] records (a new id evicts one silent for
//! [`RegistryLimits::evict_after`], else it is refused), and a latent
//! numbered implausibly far ahead of what the device sent before is refused
//! ([`seq_plausible`]) instead of being believed: one forged latent with a
//! huge `seq` would otherwise turn every real latent after it into a
//! "duplicate", and be acknowledged to the real device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latentcam_wire::{Heartbeat, Hello, MAX_SEQ};
use serde::Serialize;

/// Sequence numbers a device may skip at once, beyond what time allows
/// ([`SEQ_RATE`]): about a day of latents at 10 per second, what a spool
/// that dropped its oldest latents can skip.
pub const SEQ_WINDOW: u64 = 1 << 20;

/// Latents per second a device's numbering may advance while the host does
/// not hear from it: a camera runs at 60 frames per second at most, so this
/// is generous, and it bounds how far a forged latent can push a device's
/// numbering ahead of the real one.
pub const SEQ_RATE: u64 = 1_000;

/// True if `seq` may follow `highest` (the highest sequence number admitted
/// for the device, `silent` ago): at most [`MAX_SEQ`], and at most
/// [`SEQ_WINDOW`] plus [`SEQ_RATE`] per second of silence above `highest`.
/// Numbers at or below `highest` are plausible here (duplicates are counted
/// elsewhere); a device the host has never heard of may start anywhere up
/// to [`MAX_SEQ`].
pub fn seq_plausible(highest: Option<u64>, silent: Duration, seq: u64) -> bool {
    if seq > MAX_SEQ {
        return false;
    }
    match highest {
        Some(h) if seq > h => {
            let allowance = SEQ_WINDOW.saturating_add(silent.as_secs().saturating_mul(SEQ_RATE));
            seq - h <= allowance
        }
        _ => true,
    }
}

/// How many devices a registry holds.
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Most device records kept (and so per-device series on `/metrics`).
    pub max_devices: usize,
    /// A record silent this long may be evicted to make room for a new id.
    pub evict_after: Duration,
    /// A device silent this long is shown offline: above three of its
    /// heartbeat intervals (the edge sends one every 5 s by default).
    pub offline_after: Duration,
}

impl Default for RegistryLimits {
    /// 10 000 devices; offline after 15 s of silence, evicted after 10
    /// minutes.
    fn default() -> Self {
        Self {
            max_devices: 10_000,
            evict_after: Duration::from_secs(600),
            offline_after: Duration::from_secs(15),
        }
    }
}

/// Whether a device is online and when it was last heard from, as
/// `/api/devices`, `/metrics` and the live page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// Heard from within [`RegistryLimits::offline_after`].
    pub online: bool,
    /// When the device last sent anything the host accepted, microseconds
    /// since the Unix epoch on the host's clock; `None` if never (a record
    /// resumed from results).
    pub last_seen_unix_us: Option<u64>,
    /// Seconds since then.
    pub seen_seconds_ago: Option<f64>,
    /// Latents in the device's spool, waiting for the link, as its latest
    /// heartbeat said.
    pub spool_depth: Option<u64>,
}

impl Presence {
    /// `record`'s presence at `now` (monotonic) = `wall` (the host's clock).
    pub fn of(
        record: &DeviceRecord,
        offline_after: Duration,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let ago = record
            .last_seen
            .map(|seen| now.saturating_duration_since(seen));
        let last_seen_unix_us = ago.and_then(|ago| {
            let at = wall.checked_sub(ago)?.duration_since(UNIX_EPOCH).ok()?;
            u64::try_from(at.as_micros()).ok()
        });
        Self {
            online: ago.is_some_and(|ago| ago < offline_after),
            last_seen_unix_us,
            seen_seconds_ago: ago.map(|ago| ago.as_secs_f64()),
            spool_depth: record.heartbeat.map(|h| h.spool_depth),
        }
    }

    /// [`Presence::last_seen_unix_us`] as ISO-8601 UTC: formatted for the
    /// API only, not for every device at every scrape.
    pub fn last_seen(&self) -> Option<String> {
        self.last_seen_unix_us.map(crate::clock::iso8601_us)
    }
}

/// A `Hello` the registry has no room for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the host tracks {max_devices} devices, none silent for {evict_after:?}; try again later")]
pub struct RegistryFull {
    /// The limit.
    pub max_devices: usize,
    /// How long a record must be silent to be evicted.
    pub evict_after: Duration,
}

/// What [`Registry::admit`] decided about a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: run the heads.
    Admitted,
    /// Already held (a re-send after a reconnect); counted, dropped.
    Duplicate,
    /// Numbered implausibly far ahead ([`seq_plausible`]); counted, dropped.
    Implausible,
}

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
    /// Precision (`fp32`, `int8`) of the encoder file the last `Hello`
    /// named, as the host's manifest lists it.
    pub precision: String,
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
    /// Latents refused because their `seq` was implausibly far ahead.
    pub seq_rejected: u64,
    /// Corrupt frames on this device's connections after its `Hello`.
    pub frame_errors: u64,
    /// The latest heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// When the device last sent anything the host accepted.
    #[serde(skip)]
    pub last_seen: Option<Instant>,
    /// When `highest_received` last rose.
    #[serde(skip)]
    pub last_admitted: Option<Instant>,
}

/// All devices, shared by the connections and the head worker.
#[derive(Debug, Default)]
pub struct Registry {
    devices: Mutex<BTreeMap<String, DeviceRecord>>,
    limits: RegistryLimits,
}

/// Cuts a results file back to its last complete line. A crash in the
/// middle of a write leaves a torn line; the next result appended would be
/// glued to it and both lost to any reader. Returns the bytes cut.
pub fn cut_torn_tail(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Read backwards in blocks until a newline (or the start) is found.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(len - keep)
}

impl Registry {
    /// A registry kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The same registry with other limits.
    pub fn with_limits(mut self, limits: RegistryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A registry that resumes from a results file written by an earlier
    /// run (`serve --jsonl`): every line names a device and a sequence
    /// number whose heads ran, so the highest per device is what the host
    /// holds. A torn last line (a crash mid-write) is cut off the file
    /// first, so the next result starts a line of its own. Lines naming an
    /// invalid device id or a `seq` above [`MAX_SEQ`] (written by an older
    /// host that believed a forged latent) are skipped with a warning. The
    /// results file is the durable record; no separate state file can
    /// disagree with it.
    pub fn resume_from_results(path: impl AsRef<Path>) -> Result<Self, StateError> {
        use std::io::BufRead;
        let path = path.as_ref();
        let state_error = |e: std::io::Error| StateError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let cut = cut_torn_tail(path).map_err(state_error)?;
        if cut > 0 {
            tracing::warn!(
                "{}: cut a torn last line of {cut} bytes (the host stopped mid-write)",
                path.display()
            );
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(state_error(e)),
        };
        let now = Instant::now();
        let mut devices: BTreeMap<String, DeviceRecord> = BTreeMap::new();
        let mut skipped = 0u64;
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(state_error)?;
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let (Some(device), Some(seq)) = (
                value.get("device").and_then(|d| d.as_str()),
                value.get("seq").and_then(|s| s.as_u64()),
            ) else {
                continue;
            };
            if seq > MAX_SEQ || !latentcam_wire::valid_device_id(device) {
                skipped += 1;
                continue;
            }
            let r = devices.entry(device.to_owned()).or_default();
            let held = r.highest_processed.map_or(seq, |h| h.max(seq));
            r.highest_processed = Some(held);
            r.highest_received = Some(held);
            r.last_seen = Some(now);
            r.last_admitted = Some(now);
        }
        if skipped > 0 {
            tracing::warn!(
                "{}: skipped {skipped} result lines with an invalid device id or a sequence \
                 number above {MAX_SEQ}",
                path.display()
            );
        }
        Ok(Self {
            devices: Mutex::new(devices),
            limits: RegistryLimits::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, DeviceRecord>> {
        self.devices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a known device's record; nothing for an unknown one
    /// (records are created only by an accepted `Hello`, so peers cannot
    /// grow the registry with made-up ids).
    pub fn update(&self, device: &str, f: impl FnOnce(&mut DeviceRecord)) {
        if let Some(r) = self.lock().get_mut(device) {
            f(r);
        }
    }

    /// Records an accepted `Hello` at `now`; returns what the host holds for
    /// the device (`Welcome.acked`). A new device when the registry is full
    /// evicts the record silent longest, if it has been silent for
    /// [`RegistryLimits::evict_after`]; otherwise it is refused.
    pub fn hello(
        &self,
        device: &str,
        peer: &str,
        hello: &Hello<'_>,
        now: Instant,
    ) -> Result<Option<u64>, RegistryFull> {
        let mut devices = self.lock();
        if !devices.contains_key(device) && devices.len() >= self.limits.max_devices {
            let oldest = devices
                .iter()
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(id, r)| (id.clone(), r.last_seen));
            match oldest {
                Some((id, seen))
                    if seen.is_none_or(|s| now.duration_since(s) >= self.limits.evict_after) =>
                {
                    tracing::info!(device = ?id, "forgetting a silent device to make room");
                    devices.remove(&id);
                }
                _ => {
                    return Err(RegistryFull {
                        max_devices: self.limits.max_devices,
                        evict_after: self.limits.evict_after,
                    });
                }
            }
        }
        let r = devices.entry(device.to_owned()).or_default();
        r.model = hello.model.model_id.to_owned();
        r.codec = format!("{:?}", hello.codec);
        r.backend = hello.backend.to_owned();
        r.firmware = hello.firmware_version.to_owned();
        r.peer = peer.to_owned();
        r.hellos += 1;
        r.last_seen = Some(now);
        // Latents admitted but not yet processed are still queued: they
        // will be processed, and a re-send of them is a duplicate.
        Ok(r.highest_processed)
    }

    /// Notes that a device was heard from (a heartbeat).
    pub fn seen(&self, device: &str, now: Instant) {
        self.update(device, |r| r.last_seen = Some(now));
    }

    /// Checks a latent's number against what the device sent before
    /// ([`seq_plausible`]), counting a refusal. For ingests that keep their
    /// own duplicate accounting (MQTT); the others call [`Registry::admit`].
    pub fn plausible(&self, device: &str, seq: u64, now: Instant) -> bool {
        let mut devices = self.lock();
        let Some(r) = devices.get_mut(device) else {
            return seq <= MAX_SEQ;
        };
        let silent = r
            .last_admitted
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let ok = seq_plausible(r.highest_received, silent, seq);
        if ok {
            r.last_seen = Some(now);
        } else {
            r.seq_rejected += 1;
        }
        ok
    }

    /// Notes an admitted latent of an ingest that keeps its own duplicate
    /// accounting (after [`Registry::plausible`]).
    pub fn received(&self, device: &str, seq: u64, now: Instant) {
        self.update(device, |r| {
            r.latents += 1;
            if r.highest_received.is_none_or(|h| seq > h) {
                r.highest_received = Some(seq);
                r.last_admitted = Some(now);
            }
        });
    }

    /// Admits a latent unless the host already has it or (when `windowed`)
    /// its number is implausible; counts gaps, duplicates and refusals.
    pub fn admit(&self, device: &str, seq: u64, now: Instant, windowed: bool) -> Admission {
        let mut devices = self.lock();
        let r = devices.entry(device.to_owned()).or_default();
        let silent = r
            .last_admitted
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if seq > MAX_SEQ || (windowed && !seq_plausible(r.highest_received, silent, seq)) {
            r.seq_rejected += 1;
            return Admission::Implausible;
        }
        r.last_seen = Some(now);
        match r.highest_received {
            Some(h) if seq <= h => {
                r.duplicates += 1;
                Admission::Duplicate
            }
            h => {
                if let Some(h) = h {
                    r.missing = r.missing.saturating_add(seq - h - 1);
                }
                r.highest_received = Some(seq);
                r.last_admitted = Some(now);
                r.latents += 1;
                Admission::Admitted
            }
        }
    }

    /// Marks a latent's heads as done.
    pub fn processed(&self, device: &str, seq: u64) {
        self.update(device, |r| {
            r.highest_processed = Some(r.highest_processed.map_or(seq, |p| p.max(seq)));
        });
    }

    /// What the host holds for a device.
    pub fn acked(&self, device: &str) -> Option<u64> {
        self.lock().get(device).and_then(|r| r.highest_processed)
    }

    /// True if the device has a record.
    pub fn knows(&self, device: &str) -> bool {
        self.lock().contains_key(device)
    }

    /// A copy of one device's record.
    pub fn get(&self, device: &str) -> Option<DeviceRecord> {
        self.lock().get(device).cloned()
    }

    /// A device's [`Presence`] at `now` (monotonic) = `wall` (the host's
    /// clock).
    pub fn presence(&self, record: &DeviceRecord, now: Instant, wall: SystemTime) -> Presence {
        Presence::of(record, self.limits.offline_after, now, wall)
    }

    /// Most devices this registry holds.
    pub fn max_devices(&self) -> usize {
        self.limits.max_devices
    }

    /// How many devices are known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no device is known.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The number of devices and a copy of the records of at most `limit`
    /// of them from `offset` on, in id order (one page of `/api/devices`).
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<(String, DeviceRecord)>) {
        let devices = self.lock();
        let page = devices
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        (devices.len(), page)
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> BTreeMap<String, DeviceRecord> {
        self.lock().clone()
    }

    /// Every device whose latents were processed, with the highest
    /// processed sequence number: what a rotated results file must carry
    /// forward for [`resume_from_results`](Self::resume_from_results).
    pub fn progress(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter_map(|(id, r)| r.highest_processed.map(|seq| (id.clone(), seq)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use latentcam_wire::{AuthOffer, AuthScheme, Codec, ModelIdentity};

    use super::*;

    #[test]
    fn a_device_goes_offline_after_the_window_and_says_when_it_was_seen() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let window = Duration::from_secs(15);
        let mut record = DeviceRecord::default();
        let never = Presence::of(&record, window, t0, wall);
        assert!(!never.online);
        assert_eq!((never.last_seen(), never.seen_seconds_ago), (None, None));
        record.last_seen = Some(t0);
        let later = t0 + Duration::from_secs(14);
        let now = Presence::of(&record, window, later, wall);
        assert!(now.online);
        assert_eq!(now.seen_seconds_ago, Some(14.0));
        assert_eq!(
            now.last_seen().as_deref(),
            Some("2026-05-28T20:26:26.000000Z")
        );
        assert_eq!(now.last_seen_unix_us, Some(1_779_999_986_000_000));
        let gone = Presence::of(&record, window, t0 + window, wall);
        assert!(!gone.online, "silent for the whole window");
        assert_eq!(gone.spool_depth, None);
    }

    fn hello(id: &str) -> Hello<'_> {
        Hello {
            protocol: 1,
            device_id: id,
            firmware_version: "t",
            model: ModelIdentity {
                model_id: "m",
                encoder_sha256: [0; 32],
                latent_dim: 4,
                preprocessing: "p",
            },
            backend: "tract",
            codec: Codec::F32,
            auth: AuthOffer {
                scheme: AuthScheme::None,
                key_id: "",
                device_nonce: [0; 16],
            },
        }
    }

    #[test]
    fn a_forged_huge_seq_is_refused_and_changes_nothing() {
        let t0 = Instant::now();
        let registry = Registry::in_memory();
        registry.hello("cam", "p", &hello("cam"), t0).unwrap();
        for seq in 0..10 {
            assert_eq!(registry.admit("cam", seq, t0, true), Admission::Admitted);
        }
        for forged in [u64::MAX, MAX_SEQ + 1, MAX_SEQ, 9 + SEQ_WINDOW + 1] {
            assert_eq!(
                registry.admit("cam", forged, t0, true),
                Admission::Implausible
            );
        }
        assert_eq!(registry.admit("cam", 10, t0, true), Admission::Admitted);
        let r = &registry.snapshot()["cam"];
        assert_eq!(r.seq_rejected, 4);
        assert_eq!(r.missing, 0);
        assert_eq!(r.highest_received, Some(10));
    }

    #[test]
    fn silence_widens_the_window_and_gaps_never_overflow() {
        let t0 = Instant::now();
        let registry = Registry::in_memory();
        registry.hello("cam", "p", &hello("cam"), t0).unwrap();
        assert_eq!(registry.admit("cam", 0, t0, true), Admission::Admitted);
        let jump = SEQ_WINDOW + 3_600 * SEQ_RATE;
        assert_eq!(
            registry.admit("cam", jump + 1, t0, true),
            Admission::Implausible
        );
        let later = t0 + Duration::from_secs(3_600);
        assert_eq!(
            registry.admit("cam", jump, later, true),
            Admission::Admitted
        );
        assert_eq!(registry.snapshot()["cam"].missing, jump - 1);
        // A device never heard of may start anywhere up to MAX_SEQ.
        registry.hello("new", "p", &hello("new"), t0).unwrap();
        assert_eq!(
            registry.admit("new", MAX_SEQ, t0, true),
            Admission::Admitted
        );
        assert_eq!(
            registry.admit("new", MAX_SEQ, t0, true),
            Admission::Duplicate
        );
    }

    #[test]
    fn new_ids_beyond_the_cap_evict_only_silent_devices() {
        let t0 = Instant::now();
        let limits = RegistryLimits {
            max_devices: 3,
            evict_after: Duration::from_secs(60),
            ..RegistryLimits::default()
        };
        let registry = Registry::in_memory().with_limits(limits);
        for id in ["a", "b", "c"] {
            registry.hello(id, "p", &hello(id), t0).unwrap();
        }
        assert!(registry.hello("d", "p", &hello("d"), t0).is_err());
        // A known id is always welcome.
        assert!(registry.hello("b", "p", &hello("b"), t0).is_ok());
        registry.seen("a", t0 + Duration::from_secs(30));
        registry.seen("b", t0 + Duration::from_secs(30));
        let later = t0 + Duration::from_secs(61);
        registry.hello("d", "p", &hello("d"), later).unwrap();
        assert_eq!(registry.len(), 3);
        assert!(
            !registry.snapshot().contains_key("c"),
            "c was silent longest"
        );
        // Counters for unknown ids go nowhere.
        registry.update("zzz", |r| r.frame_errors += 1);
        assert_eq!(registry.len(), 3);
    }

    #[test]
    fn a_torn_results_tail_is_cut_and_forged_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("latentcam-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let forged = format!(r#"{{"device":"cam","seq":{}}}"#, u64::MAX);
        std::fs::write(
            &path,
            format!(
                "{{\"device\":\"cam\",\"seq\":4}}\n{forged}\n{{\"device\":\"a\\nb\",\"seq\":1}}\n{{\"device\":\"cam\",\"se"
            ),
        )
        .unwrap();
        let registry = Registry::resume_from_results(&path).unwrap();
        assert_eq!(registry.acked("cam"), Some(4));
        assert_eq!(registry.len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "torn tail cut: {text:?}");
        assert_eq!(text.lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
