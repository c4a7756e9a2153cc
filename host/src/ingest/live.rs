//! What the HTTP API shows while the host runs: the latest result per
//! device, recent frame rates, and per-head timing, updated by the head
//! worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Arrival times kept per device for its frame rate.
const RATE_WINDOW: usize = 32;

/// Anomaly scores kept per device for the live page's sparkline.
pub const SCORE_HISTORY: usize = 120;

#[derive(Debug, Default)]
struct DeviceLive {
    latest: Option<Value>,
    arrivals: VecDeque<Instant>,
    scores: VecDeque<ScorePoint>,
    alarms: u64,
}

/// One anomaly score of a device, for its history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScorePoint {
    /// The latent's sequence number.
    pub seq: u64,
    /// Its capture time (ISO-8601 UTC), when the device sent one.
    pub captured_at: Option<String>,
    /// The score.
    pub score: f64,
    /// The device was in alarm.
    pub alarm: bool,
    /// An alarm started here.
    pub event: bool,
}

impl ScorePoint {
    /// The anomaly head's verdict in a result line, if it gave a score.
    fn of(line: &Value) -> Option<Self> {
        let anomaly = &line["heads"]["anomaly"];
        Some(Self {
            seq: line["seq"].as_u64()?,
            captured_at: line["captured_at"].as_str().map(str::to_owned),
            score: anomaly["score"].as_f64()?,
            alarm: anomaly["alarm"].as_bool().unwrap_or(false),
            event: anomaly["event"].as_bool().unwrap_or(false),
        })
    }
}

/// A device's anomaly state, as `/metrics` and the live page show it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AnomalyLive {
    /// The latest score.
    pub score: Option<f64>,
    /// Alarms raised since the host started.
    pub alarms: u64,
    /// The latest [`SCORE_HISTORY`] scores, oldest first.
    pub history: Vec<ScorePoint>,
}

/// Cumulative timing of one head.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadTiming {
    /// Latents the head ran on.
    pub count: u64,
    /// Total time, seconds.
    pub seconds: f64,
    /// Failures.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Inner {
    devices: BTreeMap<String, DeviceLive>,
    heads: BTreeMap<String, HeadTiming>,
    processed: u64,
    batches: u64,
}

/// Shared between the head worker (writer) and the HTTP API (reader).
#[derive(Debug, Default)]
pub struct Live {
    inner: Mutex<Inner>,
    /// Capture → result and receive → result latency.
    pub latency: super::metrics::Latency,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one head run.
    pub fn head_ran(&self, head: &str, took: Duration, failed: bool) {
        let mut inner = self.lock();
        let t = inner.heads.entry(head.to_owned()).or_default();
        t.count += 1;
        t.seconds += took.as_secs_f64();
        t.errors += u64::from(failed);
    }

    /// Records one batch of the head worker.
    pub fn batch_ran(&self) {
        self.lock().batches += 1;
    }

    /// Batches the head worker ran (latents processed / batches is the
    /// mean batch size).
    pub fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// Records a processed latent's result line.
    pub fn result(&self, device: &str, line: Value, now: Instant) {
        let mut inner = self.lock();
        inner.processed += 1;
        let d = inner.devices.entry(device.to_owned()).or_default();
        if let Some(point) = ScorePoint::of(&line) {
            d.alarms += u64::from(point.event);
            if d.scores.len() == SCORE_HISTORY {
                d.scores.pop_front();
            }
            d.scores.push_back(point);
        }
        d.latest = Some(line);
        if d.arrivals.len() == RATE_WINDOW {
            d.arrivals.pop_front();
        }
        d.arrivals.push_back(now);
    }

    /// A device's anomaly scores and alarms (empty without the head).
    pub fn anomaly(&self, device: &str) -> AnomalyLive {
        self.lock()
            .devices
            .get(device)
            .map(|d| AnomalyLive {
                score: d.scores.back().map(|p| p.score),
                alarms: d.alarms,
                history: d.scores.iter().cloned().collect(),
            })
            .unwrap_or_default()
    }

    /// Every device's latest anomaly score and alarm count, for `/metrics`.
    pub fn anomaly_summary(&self) -> Vec<(String, Option<f64>, u64)> {
        self.lock()
            .devices
            .iter()
            .filter(|(_, d)| !d.scores.is_empty())
            .map(|(id, d)| (id.clone(), d.scores.back().map(|p| p.score), d.alarms))
            .collect()
    }

    /// The latest result line of a device.
    pub fn latest(&self, device: &str) -> Option<Value> {
        self.lock()
            .devices
            .get(device)
            .and_then(|d| d.latest.clone())
    }

    /// Frames per second over a device's recent results (0 with fewer than
    /// two, or when the last is older than 5 s).
    pub fn fps(&self, device: &str, now: Instant) -> f64 {
        let inner = self.lock();
        let Some(d) = inner.devices.get(device) else {
            return 0.0;
        };
        match (d.arrivals.front(), d.arrivals.back()) {
            (Some(first), Some(last))
                if d.arrivals.len() >= 2 && now.duration_since(*last) < Duration::from_secs(5) =>
            {
                let span = last.duration_since(*first).as_secs_f64();
                if span > 0.0 {
                    (d.arrivals.len() - 1) as f64 / span
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }

    /// Per-head timing.
    pub fn heads(&self) -> BTreeMap<String, HeadTiming> {
        self.lock().heads.clone()
    }

    /// Latents processed.
    pub fn processed(&self) -> u64 {
        self.lock().processed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, score: f64, event: bool) -> Value {
        serde_json::json!({
            "seq": seq,
            "captured_at": "2026-12-04T10:00:00.000000Z",
            "heads": {"anomaly": {"score": score, "event": event, "alarm": event, "warm": true}},
        })
    }

    #[test]
    fn scores_keep_a_bounded_history_and_count_alarms() {
        let live = Live::default();
        let now = Instant::now();
        for seq in 0..(SCORE_HISTORY as u64 + 5) {
            live.result("cam", line(seq, seq as f64 / 1000.0, seq % 50 == 7), now);
        }
        // Without the anomaly head: no score, no history.
        live.result("other", serde_json::json!({"seq": 0, "heads": {}}), now);
        let cam = live.anomaly("cam");
        assert_eq!(cam.history.len(), SCORE_HISTORY);
        assert_eq!(cam.history[0].seq, 5, "the oldest dropped first");
        assert_eq!(cam.score, Some(0.124));
        assert_eq!(cam.alarms, 3, "seq 7, 57 and 107");
        assert_eq!(live.anomaly("other"), AnomalyLive::default());
        assert_eq!(live.anomaly_summary(), [("cam".to_owned(), Some(0.124), 3)]);
    }
}
