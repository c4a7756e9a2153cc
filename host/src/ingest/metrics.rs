//! `/metrics`: the Prometheus exposition, encoded by the `prometheus` crate.
//!
//! Per-device values are read at scrape time from the registry and the live
//! results (so an evicted device's series go with it); latency histograms
//! are observed by the head worker as results are written; process metrics
//! (CPU, memory, descriptors, start time) come from the crate's process
//! collector.

use std::collections::BTreeMap;
use std::time::SystemTime;

use latentcam_wire::WallTime;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};

use super::live::HeadTiming;
use super::registry::{DeviceRecord, Presence};

/// Buckets of the latency histograms, seconds: milliseconds on a live link
/// up to the hours a spooled latent can wait through an outage.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    7200.0,
];

/// Capture → result and receive → result latency of every result written.
pub struct Latency {
    capture: Histogram,
    receive: Histogram,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("observed", &self.receive.get_sample_count())
            .finish()
    }
}

impl Default for Latency {
    fn default() -> Self {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
                .expect("valid histogram options")
        };
        Self {
            capture: histogram(
                "latentcam_capture_to_result_seconds",
                "From capture on the device (its wall clock, when synchronised) to the result written.",
            ),
            receive: histogram(
                "latentcam_receive_to_result_seconds",
                "From receipt by the host to the result written.",
            ),
        }
    }
}

impl Latency {
    /// A result written at `done` for a latent captured at `wall` (device
    /// clock) and received at `received` (host clock). Capture latency is
    /// observed only from a synchronised device clock: an unsynchronised
    /// one can be off by anything.
    pub fn observe(&self, wall: Option<WallTime>, received: SystemTime, done: SystemTime) {
        let seconds = |from: SystemTime| done.duration_since(from).map_or(0.0, |d| d.as_secs_f64());
        self.receive.observe(seconds(received));
        if let Some(wall) = wall.filter(|w| w.synced) {
            let captured = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(wall.unix_us);
            self.capture.observe(seconds(captured));
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut families = self.capture.collect();
        families.extend(self.receive.collect());
        families
    }
}

/// A counter or gauge reported by the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Scalar {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// A gauge (else a counter).
    pub gauge: bool,
    /// The value.
    pub value: u64,
}

/// Everything a scrape reports besides the latency histograms.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Each device's record and presence.
    pub devices: Vec<(String, DeviceRecord, Presence)>,
    /// Each device's latest anomaly score and alarms raised.
    pub anomaly: Vec<(String, Option<f64>, u64)>,
    /// Per-head timing.
    pub heads: BTreeMap<String, HeadTiming>,
    /// Host-wide counters and gauges.
    pub scalars: Vec<Scalar>,
}

type DeviceCounter = (&'static str, &'static str, fn(&DeviceRecord) -> u64);
type DeviceGauge = (
    &'static str,
    &'static str,
    fn(&DeviceRecord, &Presence) -> Option<f64>,
);

const DEVICE_COUNTERS: [DeviceCounter; 7] = [
    ("latentcam_latents_total", "Latents admitted.", |r| {
        r.latents
    }),
    (
        "latentcam_duplicates_total",
        "Re-sent latents already held.",
        |r| r.duplicates,
    ),
    (
        "latentcam_missing_total",
        "Sequence numbers never received.",
        |r| r.missing,
    ),
    (
        "latentcam_rate_limited_total",
        "Latents dropped by the rate limit.",
        |r| r.rate_limited,
    ),
    (
        "latentcam_seq_rejected_total",
        "Latents refused for a sequence number implausibly far ahead.",
        |r| r.seq_rejected,
    ),
    (
        "latentcam_frame_errors_total",
        "Corrupt frames after Hello.",
        |r| r.frame_errors,
    ),
    (
        "latentcam_device_dropped_total",
        "Frames the device dropped (its heartbeat).",
        |r| r.heartbeat.map_or(0, |h| h.frames_dropped),
    ),
];

const DEVICE_GAUGES: [DeviceGauge; 5] = [
    (
        "latentcam_device_up",
        "1 if the device was heard from within the offline window, else 0.",
        |_, p| Some(f64::from(u8::from(p.online))),
    ),
    (
        "latentcam_device_last_seen_timestamp_seconds",
        "When the device last sent anything accepted (Unix time, host clock).",
        |_, p| p.last_seen_unix_us.map(|us| us as f64 / 1e6),
    ),
    (
        "latentcam_device_spool_depth",
        "Latents spooled on the device, waiting for the link (its latest heartbeat).",
        |_, p| p.spool_depth.map(|d| d as f64),
    ),
    (
        "latentcam_device_cpu_temperature_celsius",
        "The device's CPU temperature (its latest heartbeat).",
        |r, _| {
            r.heartbeat
                .and_then(|h| h.cpu_temp_millicelsius)
                .map(|t| f64::from(t) / 1000.0)
        },
    ),
    (
        "latentcam_device_inference_p50_seconds",
        "Median encoder time on the device over its latest heartbeat interval.",
        |r, _| {
            r.heartbeat
                .filter(|h| h.inference.count > 0)
                .map(|h| f64::from(h.inference.p50_us) / 1e6)
        },
    ),
];

/// The exposition of `scrape` and `latency`, in Prometheus' text format.
pub fn render(scrape: &Scrape, latency: &Latency) -> Result<String, prometheus::Error> {
    let mut families = Vec::new();
    for (name, help, get) in DEVICE_COUNTERS {
        let vec = IntCounterVec::new(Opts::new(name, help), &["device"])?;
        for (id, record, _) in &scrape.devices {
            vec.with_label_values(&[id.as_str()]).inc_by(get(record));
        }
        families.extend(vec.collect());
    }
    for (name, help, get) in DEVICE_GAUGES {
        let vec = GaugeVec::new(Opts::new(name, help), &["device"])?;
        for (id, record, presence) in &scrape.devices {
            if let Some(value) = get(record, presence) {
                vec.with_label_values(&[id.as_str()]).set(value);
            }
        }
        families.extend(vec.collect());
    }
    let score = GaugeVec::new(
        Opts::new(
            "latentcam_anomaly_score",
            "The anomaly head's latest score of each device.",
        ),
        &["device"],
    )?;
    let alarms = IntCounterVec::new(
        Opts::new(
            "latentcam_anomaly_alarms_total",
            "Anomaly alarms raised since the host started.",
        ),
        &["device"],
    )?;
    for (id, latest, raised) in &scrape.anomaly {
        if let Some(latest) = latest {
            score.with_label_values(&[id.as_str()]).set(*latest);
        }
        alarms.with_label_values(&[id.as_str()]).inc_by(*raised);
    }
    families.extend(score.collect());
    families.extend(alarms.collect());
    let head_seconds = prometheus::CounterVec::new(
        Opts::new("latentcam_head_seconds_total", "Time spent in each head."),
        &["head"],
    )?;
    let head_runs = IntCounterVec::new(
        Opts::new("latentcam_head_runs_total", "Latents each head ran on."),
        &["head"],
    )?;
    for (head, timing) in &scrape.heads {
        head_seconds
            .with_label_values(&[head.as_str()])
            .inc_by(timing.seconds);
        head_runs
            .with_label_values(&[head.as_str()])
            .inc_by(timing.count);
    }
    families.extend(head_seconds.collect());
    families.extend(head_runs.collect());
    for scalar in &scrape.scalars {
        if scalar.gauge {
            let gauge = IntGauge::new(scalar.name, scalar.help)?;
            gauge.set(i64::try_from(scalar.value).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        } else {
            let counter = prometheus::IntCounter::new(scalar.name, scalar.help)?;
            counter.inc_by(scalar.value);
            families.extend(counter.collect());
        }
    }
    let build = IntGaugeVec::new(
        Opts::new(
            "latentcam_build_info",
            "The host program's version; always 1.",
        ),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    families.extend(build.collect());
    families.extend(latency.families());
    families.extend(prometheus::process_collector::ProcessCollector::for_self().collect());
    // A family without samples (no device yet) is left out: the encoder
    // refuses it, and Prometheus needs no HELP for a series that is absent.
    families.retain(|family| !family.get_metric().is_empty());
    let mut text = String::new();
    TextEncoder::new().encode_utf8(&families, &mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use super::*;

    #[test]
    fn devices_heads_latency_and_the_process_are_exposed() {
        let mut record = DeviceRecord {
            latents: 3,
            ..DeviceRecord::default()
        };
        let t = Instant::now();
        record.last_seen = Some(t);
        let presence = Presence::of(
            &record,
            Duration::from_secs(15),
            t,
            UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        );
        let scrape = Scrape {
            devices: vec![("porch \"1\"".into(), record, presence)],
            anomaly: vec![("porch \"1\"".into(), Some(0.25), 2)],
            heads: BTreeMap::from([(
                "imagenet".into(),
                HeadTiming {
                    count: 3,
                    seconds: 0.5,
                    errors: 0,
                },
            )]),
            scalars: vec![Scalar {
                name: "latentcam_queue_depth",
                help: "Latents waiting for the heads.",
                gauge: true,
                value: 4,
            }],
        };
        let latency = Latency::default();
        let received = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let wall = |synced| {
            Some(WallTime {
                unix_us: 1_779_999_999_000_000,
                synced,
            })
        };
        latency.observe(wall(true), received, received + Duration::from_millis(20));
        latency.observe(wall(false), received, received + Duration::from_millis(20));
        let text = render(&scrape, &latency).unwrap();
        for expected in [
            r#"latentcam_latents_total{device="porch \"1\""} 3"#,
            r#"latentcam_device_up{device="porch \"1\""} 1"#,
            r#"latentcam_device_last_seen_timestamp_seconds{device="porch \"1\""} 1780000000"#,
            r#"latentcam_anomaly_score{device="porch \"1\""} 0.25"#,
            r#"latentcam_anomaly_alarms_total{device="porch \"1\""} 2"#,
            r#"latentcam_head_runs_total{head="imagenet"} 3"#,
            "latentcam_queue_depth 4",
            "# TYPE latentcam_queue_depth gauge",
            "latentcam_build_info{version=",
            // Both results were received 20 ms before they were written;
            // only the synchronised clock's capture time counts.
            "latentcam_receive_to_result_seconds_count 2",
            r#"latentcam_receive_to_result_seconds_bucket{le="0.025"} 2"#,
            "latentcam_capture_to_result_seconds_count 1",
            r#"latentcam_capture_to_result_seconds_bucket{le="1"} 0"#,
            r#"latentcam_capture_to_result_seconds_bucket{le="2.5"} 1"#,
            "process_resident_memory_bytes ",
            "process_open_fds ",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
        // A device without a heartbeat has no spool or temperature sample.
        assert!(!text.contains("latentcam_device_spool_depth{"), "{text}");
    }
}
