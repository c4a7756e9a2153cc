//! Exponential backoff with jitter, shared by everything that retries: link
//! reconnection and reopening a camera or replay that disappeared.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delays between reconnection attempts: `initial`, doubling after every
/// failure up to `max`, each spread by ±`jitter` (a fraction) so a fleet of
/// cameras that lost the same host does not reconnect in lockstep.
///
/// Pure logic: it only computes delays, the link does the waiting. With
/// [`Backoff::with_seed`] the sequence is reproducible.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    base: Duration,
    failures: u32,
    rng: SplitMix64,
}

impl Default for Backoff {
    /// 100 ms doubling to 30 s, ±20 % jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    /// `initial` doubling to `max`, ±20 % jitter, seeded from the clock and
    /// the process id.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = clock ^ (u64::from(std::process::id()) << 32);
        Self {
            initial,
            max: max.max(initial),
            jitter: 0.2,
            base: initial,
            failures: 0,
            rng: SplitMix64(seed),
        }
    }

    /// Replaces the jitter fraction (clamped to 0..=1; 0 disables jitter).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Replaces the random seed, for reproducible sequences in tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = SplitMix64(seed);
        self
    }

    /// Delay to wait after one more failed attempt. The undithered delay
    /// doubles each call until it reaches `max`; jitter is applied around it,
    /// so a delay may exceed `max` by the jitter fraction.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.failures = self.failures.saturating_add(1);
        self.base = base.saturating_mul(2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        // Uniform in [-1, 1) from the top 53 bits.
        let unit = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        base.mul_f64(factor)
    }

    /// Back to `initial` after a successful connection.
    pub fn reset(&mut self) {
        self.base = self.initial;
        self.failures = 0;
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap on the undithered delay.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// SplitMix64: tiny, well-distributed, plenty for jitter (not for secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
