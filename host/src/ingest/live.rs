//! What the HTTP API shows while the host runs: the latest result per
//! device, recent frame rates, and per-head timing, updated by the head
//! worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Arrival times kept per device for its frame rate.
const RATE_WINDOW: usize = 32;

#[derive(Debug, Default)]
struct DeviceLive {
    latest: Option<Value>,
    arrivals: VecDeque<Instant>,
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
        d.latest = Some(line);
        if d.arrivals.len() == RATE_WINDOW {
            d.arrivals.pop_front();
        }
        d.arrivals.push_back(now);
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
