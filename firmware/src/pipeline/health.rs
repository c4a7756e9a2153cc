//! When the link's state deserves a log line at the default level: the
//! first failure, every so often while the link stays down, and the
//! recovery. Pure logic with the clock passed in; the session does the
//! logging.

use std::time::{Duration, Instant};

/// How often a link that stays down is reported again at WARN.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What a failed attempt deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The first failure since the link was last up, or since the start:
    /// worth a warning.
    First,
    /// The link has been down this long over this many failed attempts,
    /// and the last report is [`REPORT_EVERY`] old: worth another.
    StillDown {
        /// Since the first failure.
        down_for: Duration,
        /// Failed attempts since then, this one included.
        attempts: u64,
    },
    /// Between reports: a debug line at most.
    Quiet,
}

/// The link's health as the log sees it.
#[derive(Debug, Clone)]
pub(crate) struct LinkHealth {
    down: Option<Down>,
    every: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    reported: Instant,
    attempts: u64,
}

impl LinkHealth {
    /// Nothing failed yet; a link that stays down is reported again
    /// every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self { down: None, every }
    }

    /// An attempt failed, or the link went down, at `now`.
    pub(crate) fn failed(&mut self, now: Instant) -> Failure {
        let Some(down) = &mut self.down else {
            self.down = Some(Down {
                since: now,
                reported: now,
                attempts: 1,
            });
            return Failure::First;
        };
        down.attempts += 1;
        if now.saturating_duration_since(down.reported) >= self.every {
            down.reported = now;
            Failure::StillDown {
                down_for: now.saturating_duration_since(down.since),
                attempts: down.attempts,
            }
        } else {
            Failure::Quiet
        }
    }

    /// The link is up at `now`: how long it was down, if it was.
    pub(crate) fn up(&mut self, now: Instant) -> Option<Duration> {
        self.down
            .take()
            .map(|down| now.saturating_duration_since(down.since))
    }
}

/// A duration as a person reads it: `850 ms`, `4.2 s`, `3 min 5 s`,
/// `2 h 10 min`.
pub(crate) fn readable(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_failure_is_loud_then_one_report_a_period_until_recovery() {
        let t0 = Instant::now();
        let mut health = LinkHealth::new(60 * S);
        assert_eq!(health.failed(t0), Failure::First);
        assert_eq!(health.failed(t0 + S), Failure::Quiet);
        assert_eq!(health.failed(t0 + 59 * S), Failure::Quiet);
        assert_eq!(
            health.failed(t0 + 60 * S),
            Failure::StillDown {
                down_for: 60 * S,
                attempts: 4
            }
        );
        assert_eq!(health.failed(t0 + 100 * S), Failure::Quiet);
        assert_eq!(
            health.failed(t0 + 125 * S),
            Failure::StillDown {
                down_for: 125 * S,
                attempts: 6
            }
        );
        assert_eq!(health.up(t0 + 130 * S), Some(130 * S));
        // Up without a failure before it: nothing to report.
        assert_eq!(health.up(t0 + 131 * S), None);
        // The next outage starts over.
        assert_eq!(health.failed(t0 + 200 * S), Failure::First);
        assert_eq!(health.up(t0 + 201 * S), Some(S));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(readable(Duration::from_millis(92)), "92 ms");
        assert_eq!(readable(Duration::from_millis(107_137)), "1 min 47 s");
        assert_eq!(readable(Duration::from_millis(4_260)), "4.3 s");
        assert_eq!(readable(Duration::from_secs(7_830)), "2 h 10 min");
    }
}
