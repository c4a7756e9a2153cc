//! Anomaly detection: how unlike its camera's usual view is this frame?
//!
//! # The model, and why
//!
//! Each device gets a bounded memory of L2-normalised latents of its normal
//! frames. A new latent's score is its mean cosine distance (`1 − cos`) to
//! its `k` nearest latents in that memory: about 0 for a view seen before,
//! approaching 1 for something unrelated.
//!
//! This is nearest-neighbour anomaly detection on pretrained features (as in
//! Bergman et al., "Deep Nearest Neighbor Anomaly Detection", 2020, and
//! PatchCore), chosen over a per-dimension Gaussian (running mean and
//! variance, diagonal Mahalanobis distance) because:
//!
//! - a camera's normal is several views, not one: empty hall, hall with
//!   people, lights on, lights off. A k-NN memory covers each; a single mean
//!   sits between them and calls all of them a little abnormal;
//! - the latents are averages of ReLU6 activations, with many dimensions
//!   that are almost constant on one scene. Their variance estimates are
//!   tiny after a short warm-up, and a diagonal Mahalanobis score is then
//!   dominated by whichever of them moves first; it needs variance floors
//!   tuned per scene. Cosine distance needs none;
//! - the score has the same meaning on every camera (an angle between
//!   latents), so one threshold serves all devices.
//!
//! The price is memory: `memory × dim × 4` bytes per device (1.3 MB for the
//! default 256 latents of 1280 values) and `memory × dim` multiply-adds per
//! latent (0.3 M, well under a millisecond).
//!
//! # Learning
//!
//! The first [`AnomalyOptions::warmup`] latents of a device all go into its
//! memory and get no score (`"warm": false`). After that, one in
//! [`AnomalyOptions::admit_every`] latents that score below the threshold
//! is added, replacing the oldest once the memory is full. Consecutive
//! frames are near duplicates, so sampling spreads the memory over a longer
//! time (256 latents × 10 = 4 minutes at 10 fps) and lets it follow slow
//! changes such as daylight. Anomalous latents are never learnt, so a
//! lasting change (a parked car) keeps scoring high until
//! [`AnomalyHead::reset`] is called for the device.
//!
//! # Events
//!
//! An event is raised when a device's score reaches the threshold while the
//! device is not already in alarm; the alarm ends when the score falls
//! below `threshold − hysteresis`, so a score hovering at the threshold
//! raises one event, not one per frame.
//!
//! # Threshold
//!
//! Measured on the shipped encoder: frames of the OpenCV `vtest.avi` hall
//! (people walking) score 0.03–0.09 against the memory of a 12-second
//! warm-up, up to 45 s later; ImageNet and OpenCV sample photos score
//! 0.44–0.86 against the same memory. [`DEFAULT_THRESHOLD`] 0.2 sits
//! between them with a wide margin on both sides.

use std::collections::HashMap;

use super::linear::HeadError;
use super::search::{dot_wide as dot, unit_vector};
use super::{Head, LatentRef};

/// Default score (mean cosine distance) at which an event is raised.
pub const DEFAULT_THRESHOLD: f32 = 0.2;

/// Settings of an [`AnomalyHead`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyOptions {
    /// Latents each device contributes before its scores are reported.
    pub warmup: usize,
    /// Nearest neighbours averaged into the score.
    pub k: usize,
    /// Latents remembered per device (at least `warmup`).
    pub memory: usize,
    /// After warm-up, one in this many normal latents is learnt.
    pub admit_every: usize,
    /// Score at which an event is raised, in `(0, 2]`.
    pub threshold: f32,
    /// How far below the threshold the score must fall to end an alarm.
    pub hysteresis: f32,
}

impl Default for AnomalyOptions {
    fn default() -> Self {
        Self {
            warmup: 60,
            k: 3,
            memory: 256,
            admit_every: 10,
            threshold: DEFAULT_THRESHOLD,
            hysteresis: 0.05,
        }
    }
}

/// One latent's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyScore {
    /// Mean cosine distance to the `k` nearest remembered latents; `None`
    /// during warm-up.
    pub score: Option<f32>,
    /// The score crossed the threshold with this latent (rising edge).
    pub event: bool,
    /// The device has finished its warm-up.
    pub warm: bool,
    /// The device is in alarm: an event was raised and the score has not
    /// fallen back since.
    pub alarm: bool,
}

/// What is known about one device's normal.
#[derive(Debug, Clone)]
struct DeviceModel {
    /// Ring of unit latents, `stored × dim`.
    memory: Vec<f32>,
    /// Slot the next learnt latent replaces once the memory is full.
    oldest: usize,
    /// Latents seen.
    seen: u64,
    /// Normal latents seen since the last one was learnt.
    since_admitted: usize,
    alarm: bool,
}

/// Per-device k-nearest-neighbour anomaly scores. See the [module
/// documentation](self) for the model and its defaults.
#[derive(Debug, Clone)]
pub struct AnomalyHead {
    dim: usize,
    options: AnomalyOptions,
    devices: HashMap<String, DeviceModel>,
}

impl AnomalyHead {
    /// A head for latents of `dim` values, with no device known yet.
    pub fn new(dim: usize, options: AnomalyOptions) -> Result<Self, HeadError> {
        let invalid = |reason: String| Err(HeadError::Invalid(reason));
        let AnomalyOptions {
            warmup,
            k,
            memory,
            admit_every,
            threshold,
            hysteresis,
        } = options;
        if dim == 0 {
            return invalid("anomaly dimension must be at least 1".into());
        }
        if k == 0 || warmup < k || memory < warmup {
            return invalid(format!(
                "anomaly needs 1 <= k <= warmup <= memory, got k {k}, warmup {warmup}, memory \
                 {memory}"
            ));
        }
        if dim
            .checked_mul(4)
            .and_then(|b| b.checked_mul(memory))
            .is_none()
        {
            return invalid(format!("anomaly memory of {memory} latents does not fit"));
        }
        if admit_every == 0 {
            return invalid("anomaly admit_every must be at least 1".into());
        }
        if !(threshold > 0.0 && threshold <= 2.0) {
            return invalid(format!(
                "anomaly threshold {threshold} is not a cosine distance in (0, 2]"
            ));
        }
        if !(0.0..threshold).contains(&hysteresis) {
            return invalid(format!(
                "anomaly hysteresis {hysteresis} is not in [0, threshold {threshold})"
            ));
        }
        Ok(Self {
            dim,
            options,
            devices: HashMap::new(),
        })
    }

    /// The settings.
    pub fn options(&self) -> AnomalyOptions {
        self.options
    }

    /// Scores one latent of `device` and learns from it.
    pub fn observe(&mut self, device: &str, latent: &[f32]) -> Result<AnomalyScore, HeadError> {
        if latent.len() != self.dim {
            return Err(HeadError::Dimension {
                expected: self.dim,
                got: latent.len(),
            });
        }
        let unit = unit_vector(latent)?;
        let options = self.options;
        let model = self
            .devices
            .entry(device.to_owned())
            .or_insert_with(|| DeviceModel {
                memory: Vec::with_capacity(options.warmup * unit.len()),
                oldest: 0,
                seen: 0,
                since_admitted: 0,
                alarm: false,
            });
        model.seen += 1;
        if model.seen <= options.warmup as u64 {
            model.learn(&unit, options.memory);
            return Ok(AnomalyScore {
                score: None,
                event: false,
                warm: false,
                alarm: false,
            });
        }
        let score = model.knn_distance(&unit, options.k);
        let mut event = false;
        if model.alarm {
            model.alarm = score >= options.threshold - options.hysteresis;
        } else if score >= options.threshold {
            model.alarm = true;
            event = true;
        }
        if !model.alarm && score < options.threshold {
            model.since_admitted += 1;
            if model.since_admitted >= options.admit_every {
                model.since_admitted = 0;
                model.learn(&unit, options.memory);
            }
        }
        Ok(AnomalyScore {
            score: Some(score),
            event,
            warm: true,
            alarm: model.alarm,
        })
    }

    /// Forgets everything about `device`, which starts a new warm-up; returns
    /// whether the device was known. For a camera that was moved, or whose
    /// scene changed for good.
    pub fn reset(&mut self, device: &str) -> bool {
        self.devices.remove(device).is_some()
    }

    /// Devices with a model.
    pub fn devices(&self) -> impl Iterator<Item = &str> + '_ {
        self.devices.keys().map(String::as_str)
    }

    /// Latents seen from `device` (0 if unknown).
    pub fn seen(&self, device: &str) -> u64 {
        self.devices.get(device).map_or(0, |m| m.seen)
    }

    /// Latents remembered for `device` (0 if unknown).
    pub fn remembered(&self, device: &str) -> usize {
        self.devices
            .get(device)
            .map_or(0, |m| m.memory.len() / self.dim)
    }
}

impl DeviceModel {
    fn learn(&mut self, unit: &[f32], capacity: usize) {
        let dim = unit.len();
        if self.memory.len() < capacity * dim {
            self.memory.extend_from_slice(unit);
        } else {
            let slot = self.oldest;
            self.memory[slot * dim..(slot + 1) * dim].copy_from_slice(unit);
            self.oldest = (slot + 1) % capacity;
        }
    }

    /// Mean cosine distance to the `k` nearest remembered latents (fewer if
    /// fewer are remembered, which the options rule out after warm-up).
    fn knn_distance(&self, unit: &[f32], k: usize) -> f32 {
        // The k largest similarities, largest first; k is small.
        let mut best: Vec<f32> = Vec::with_capacity(k + 1);
        for stored in self.memory.chunks_exact(unit.len()) {
            let similarity = dot(unit, stored);
            if best.len() < k || similarity > best[best.len() - 1] {
                let at = best.partition_point(|&b| b >= similarity);
                best.insert(at, similarity);
                best.truncate(k);
            }
        }
        if best.is_empty() {
            return 1.0;
        }
        let mean = best.iter().sum::<f32>() / best.len() as f32;
        // Rounding can take the similarity of a latent to itself just past 1.
        (1.0 - mean).max(0.0)
    }
}

/// `{"score": 0.04, "event": false, "warm": true, "alarm": false}`; `score`
/// is null during warm-up.
impl Head for AnomalyHead {
    fn name(&self) -> &str {
        "anomaly"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        let verdict = self.observe(input.device, input.latent)?;
        Ok(serde_json::json!({
            "score": verdict.score,
            "event": verdict.event,
            "warm": verdict.warm,
            "alarm": verdict.alarm,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AnomalyOptions {
        AnomalyOptions {
            warmup: 4,
            k: 2,
            memory: 6,
            admit_every: 2,
            threshold: 0.2,
            hysteresis: 0.05,
        }
    }

    /// A unit vector at `degrees` in the plane of the first two axes.
    fn at(degrees: f32) -> Vec<f32> {
        let r = degrees.to_radians();
        vec![r.cos(), r.sin(), 0.0]
    }

    #[test]
    fn warms_up_then_scores_and_fires_on_rising_edge_only() {
        let mut head = AnomalyHead::new(3, options()).unwrap();
        for i in 0..4 {
            let s = head.observe("cam", &at(i as f32)).unwrap();
            assert!(!s.warm && s.score.is_none() && !s.event);
        }
        let normal = head.observe("cam", &at(2.0)).unwrap();
        assert!(normal.warm && !normal.event);
        assert!(normal.score.unwrap() < 0.01);
        // 90° away: distance 1, an event.
        let odd = head.observe("cam", &[0.0, 0.0, 2.0]).unwrap();
        assert!(odd.event && odd.alarm);
        assert!((odd.score.unwrap() - 1.0).abs() < 1e-5);
        // Still odd: alarm continues, no new event.
        let again = head.observe("cam", &[0.0, 0.0, 1.0]).unwrap();
        assert!(!again.event && again.alarm);
        // Back to normal ends the alarm; the next odd one fires again.
        let back = head.observe("cam", &at(1.0)).unwrap();
        assert!(!back.event && !back.alarm);
        assert!(head.observe("cam", &[0.0, 0.0, 1.0]).unwrap().event);
    }

    #[test]
    fn hysteresis_holds_the_alarm_near_the_threshold() {
        let mut head = AnomalyHead::new(3, AnomalyOptions { k: 1, ..options() }).unwrap();
        for _ in 0..4 {
            head.observe("cam", &at(0.0)).unwrap();
        }
        // cos 38° ≈ 0.788 → distance 0.212 ≥ 0.2: event.
        assert!(head.observe("cam", &at(38.0)).unwrap().event);
        // distance ≈ 0.174, between 0.15 and 0.2: still in alarm, no event.
        let hover = head.observe("cam", &at(34.4)).unwrap();
        assert!(hover.alarm && !hover.event);
        assert!(!head.observe("cam", &at(38.0)).unwrap().event);
        // distance ≈ 0.12 < 0.15 ends it.
        assert!(!head.observe("cam", &at(28.4)).unwrap().alarm);
    }

    #[test]
    fn learns_normal_latents_only_and_keeps_devices_apart() {
        let mut head = AnomalyHead::new(3, options()).unwrap();
        for _ in 0..4 {
            head.observe("a", &at(0.0)).unwrap();
        }
        assert_eq!(head.remembered("a"), 4);
        for _ in 0..4 {
            head.observe("a", &at(10.0)).unwrap();
        }
        // One in two normal latents learnt.
        assert_eq!(head.remembered("a"), 6);
        for _ in 0..10 {
            head.observe("a", &[0.0, 0.0, 1.0]).unwrap();
        }
        assert_eq!(head.seen("a"), 18);
        assert!(head.observe("a", &[0.0, 0.0, 1.0]).unwrap().alarm);
        // Device b is still warming up and never saw a's latents.
        let b = head.observe("b", &[0.0, 0.0, 1.0]).unwrap();
        assert!(!b.warm && b.score.is_none());
        assert_eq!(head.remembered("b"), 1);
        assert!(head.reset("a"));
        assert!(!head.observe("a", &at(0.0)).unwrap().warm);
        let mut devices: Vec<&str> = head.devices().collect();
        devices.sort();
        assert_eq!(devices, ["a", "b"]);
    }

    #[test]
    fn rejects_bad_input_and_options() {
        let mut head = AnomalyHead::new(3, options()).unwrap();
        assert!(matches!(
            head.observe("a", &[1.0; 2]),
            Err(HeadError::Dimension {
                expected: 3,
                got: 2
            })
        ));
        assert!(matches!(
            head.observe("a", &[0.0; 3]),
            Err(HeadError::Invalid(_))
        ));
        assert_eq!(head.seen("a"), 0);
        let with = |change: fn(&mut AnomalyOptions)| {
            let mut o = options();
            change(&mut o);
            AnomalyHead::new(3, o)
        };
        assert!(with(|o| o.k = 0).is_err());
        assert!(with(|o| o.warmup = 1).is_err());
        assert!(with(|o| o.memory = 3).is_err());
        assert!(with(|o| o.admit_every = 0).is_err());
        assert!(with(|o| o.threshold = f32::NAN).is_err());
        assert!(with(|o| o.hysteresis = 0.3).is_err());
        assert!(AnomalyHead::new(0, options()).is_err());
        assert!(AnomalyHead::new(3, AnomalyOptions::default()).is_ok());
    }
}
