//! Counters and latency statistics shared by the pipeline stages, and the
//! `Heartbeat` built from them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use latentcam_wire::{Heartbeat, LatencyStats};

/// Pipeline counters, updated lock-free from every stage thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames delivered by the source.
    pub captured: AtomicU64,
    /// Frames run through the encoder.
    pub encoded: AtomicU64,
    /// Latents written to the link.
    pub sent: AtomicU64,
    /// Frames dropped because the encoder was busy (latest frame wins).
    pub dropped: AtomicU64,
    /// Frames the source could not decode.
    pub corrupt: AtomicU64,
    /// Latents dropped because the spool was full or unwritable.
    pub spool_dropped: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Inference latencies over one heartbeat interval. The sample buffer is
/// allocated once; beyond its capacity, samples are thinned (every other one
/// kept), which keeps the percentiles representative at bounded memory.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: Vec<u32>,
    capacity: usize,
    /// Keep one sample in `stride`.
    stride: u32,
    seen: u32,
    count: u32,
    min: u32,
    max: u32,
}

impl LatencyWindow {
    /// A window holding at most `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity.max(2)),
            capacity: capacity.max(2),
            stride: 1,
            seen: 0,
            count: 0,
            min: u32::MAX,
            max: 0,
        }
    }

    /// Records one latency in microseconds.
    pub fn record(&mut self, micros: u32) {
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
        self.seen += 1;
        if self.seen < self.stride {
            return;
        }
        self.seen = 0;
        if self.samples.len() == self.capacity {
            let mut keep = 0;
            for i in (0..self.samples.len()).step_by(2) {
                self.samples[keep] = self.samples[i];
                keep += 1;
            }
            self.samples.truncate(keep);
            self.stride *= 2;
        }
        self.samples.push(micros);
    }

    /// Statistics since the last call, then starts a new interval.
    pub fn take(&mut self) -> LatencyStats {
        let stats = if self.count == 0 {
            LatencyStats::default()
        } else {
            self.samples.sort_unstable();
            let at = |q: f64| {
                let i = ((self.samples.len() - 1) as f64 * q).round() as usize;
                self.samples[i]
            };
            LatencyStats {
                count: self.count,
                min_us: self.min,
                p50_us: at(0.50),
                p99_us: at(0.99),
                max_us: self.max,
            }
        };
        self.samples.clear();
        self.stride = 1;
        self.seen = 0;
        self.count = 0;
        self.min = u32::MAX;
        self.max = 0;
        stats
    }
}

/// Builds a heartbeat from the counters.
pub fn heartbeat(
    counters: &Counters,
    inference: LatencyStats,
    uptime_ms: u64,
    queue_depth: u32,
    spool_depth: u64,
) -> Heartbeat {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Heartbeat {
        uptime_ms,
        frames_captured: get(&counters.captured),
        frames_encoded: get(&counters.encoded),
        frames_sent: get(&counters.sent),
        frames_dropped: get(&counters.dropped),
        frames_corrupt: get(&counters.corrupt),
        spool_dropped: get(&counters.spool_dropped),
        spool_depth,
        queue_depth,
        inference,
        cpu_temp_millicelsius: cpu_temperature_millicelsius(Path::new("/sys/class/thermal")),
    }
}

/// The CPU temperature from Linux thermal zones under `root`
/// (`/sys/class/thermal`): the zone whose type names the CPU (`cpu-thermal`
/// on a Raspberry Pi, `x86_pkg_temp`, `CPU-therm` on Jetson), else the first
/// readable zone. `None` where the device exposes none.
pub fn cpu_temperature_millicelsius(root: &Path) -> Option<i32> {
    let mut zones: Vec<_> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("thermal_zone"))
        })
        .collect();
    zones.sort();
    let read = |zone: &Path| -> Option<i32> {
        std::fs::read_to_string(zone.join("temp"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let is_cpu = |zone: &Path| {
        std::fs::read_to_string(zone.join("type"))
            .map(|t| {
                let t = t.trim().to_ascii_lowercase();
                t.contains("cpu") || t.contains("x86_pkg") || t.contains("soc")
            })
            .unwrap_or(false)
    };
    zones
        .iter()
        .filter(|z| is_cpu(z))
        .find_map(|z| read(z))
        .or_else(|| zones.iter().find_map(|z| read(z)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut w = LatencyWindow::new(4096);
        for us in 1..=1000 {
            w.record(us);
        }
        let s = w.take();
        assert_eq!((s.count, s.min_us, s.max_us), (1000, 1, 1000));
        assert!((499..=501).contains(&s.p50_us), "{}", s.p50_us);
        assert!((989..=991).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(
            w.take(),
            LatencyStats::default(),
            "take starts a new interval"
        );
    }

    #[test]
    fn thinning_keeps_memory_bounded_and_percentiles_close() {
        let mut w = LatencyWindow::new(64);
        for us in 1..=10_000 {
            w.record(us);
        }
        assert!(w.samples.len() <= 64);
        let s = w.take();
        assert_eq!((s.count, s.min_us, s.max_us), (10_000, 1, 10_000));
        assert!((4_500..=5_500).contains(&s.p50_us), "{}", s.p50_us);
        assert!(s.p99_us >= 9_500, "{}", s.p99_us);
    }

    #[test]
    fn thermal_zones_prefer_the_cpu() {
        let root = std::env::temp_dir().join(format!("lc-thermal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (zone, kind, temp) in [
            ("thermal_zone0", "acpitz", "30000"),
            ("thermal_zone1", "cpu-thermal", "51500"),
        ] {
            std::fs::create_dir_all(root.join(zone)).unwrap();
            std::fs::write(root.join(zone).join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(root.join(zone).join("temp"), format!("{temp}\n")).unwrap();
        }
        assert_eq!(cpu_temperature_millicelsius(&root), Some(51_500));
        std::fs::remove_dir_all(root.join("thermal_zone1")).unwrap();
        assert_eq!(cpu_temperature_millicelsius(&root), Some(30_000));
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(cpu_temperature_millicelsius(&root), None);
    }
}
