//! The device's real-time clock, as a latent's wall-clock capture time.
//!
//! `capture_us` is monotonic and restarts with the program; the wall clock
//! places a frame in time across restarts and spooling. Whether the kernel
//! holds the clock synchronised is asked (`adjtimex`, which both chrony and
//! systemd-timesyncd keep up to date) at most every [`RECHECK`], not per
//! frame.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latentcam_wire::WallTime;

/// 2025-01-01T00:00:00Z: a clock before this was never set, and its time
/// is not sent at all.
pub const FLOOR_UNIX_US: u64 = 1_735_689_600_000_000;

/// How long a synchronisation answer is reused.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Reads the wall clock for frames; remembers the synchronisation state.
#[derive(Debug, Clone, Default)]
pub struct WallClock {
    synced: Option<(Instant, bool)>,
}

impl WallClock {
    /// A clock that asks the kernel on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Now, or `None` when the clock was never set.
    pub fn now(&mut self) -> Option<WallTime> {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_micros()).ok())?;
        let synced = self.synced(Instant::now());
        stamp(unix_us, synced)
    }

    fn synced(&mut self, now: Instant) -> bool {
        match self.synced {
            Some((at, synced)) if now.duration_since(at) < RECHECK => synced,
            _ => {
                let synced = synchronised();
                self.synced = Some((now, synced));
                synced
            }
        }
    }
}

/// The wall time for a reading, or `None` below [`FLOOR_UNIX_US`].
pub fn stamp(unix_us: u64, synced: bool) -> Option<WallTime> {
    (unix_us >= FLOOR_UNIX_US).then_some(WallTime { unix_us, synced })
}

/// Whether the clock is synchronised to a time source: the kernel's word
/// when it can be asked, else whether systemd-timesyncd says so.
pub fn synchronised() -> bool {
    kernel_synchronised()
        .unwrap_or_else(|| Path::new("/run/systemd/timesync/synchronized").exists())
}

/// Whether the kernel says the clock is synchronised, or `None` when it
/// cannot be asked (a seccomp filter such as systemd's `ProtectClock=`
/// refuses `adjtimex` even read-only).
pub fn kernel_synchronised() -> Option<bool> {
    // SAFETY: `timex` is plain data for which all-zero is valid, and with
    // `modes` 0 `adjtimex` only reads the kernel's state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex`.
    let state = unsafe { libc::adjtimex(&mut tx) };
    (state >= 0).then_some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_clock_sends_no_time() {
        assert_eq!(stamp(0, true), None);
        assert_eq!(stamp(FLOOR_UNIX_US - 1, true), None);
        assert_eq!(
            stamp(FLOOR_UNIX_US, false),
            Some(WallTime {
                unix_us: FLOOR_UNIX_US,
                synced: false
            })
        );
    }

    #[test]
    fn the_machine_clock_reads_as_set() {
        // Any machine running the tests has a set clock.
        let now = WallClock::new().now().expect("the clock is set");
        assert!(now.unix_us >= FLOOR_UNIX_US);
    }

    #[test]
    fn the_kernel_answers_about_synchronisation() {
        // No seccomp filter here: the kernel can be asked (its answer
        // depends on the machine's NTP, so only that it answers is checked).
        assert!(kernel_synchronised().is_some());
    }

    #[test]
    fn the_sync_answer_is_reused_until_recheck() {
        let mut clock = WallClock::new();
        let t0 = Instant::now();
        clock.synced = Some((t0, true));
        assert!(clock.synced(t0 + RECHECK / 2));
        clock.synced = Some((t0, false));
        assert!(!clock.synced(t0 + RECHECK / 2));
        // After RECHECK the kernel is asked again and the answer replaced.
        let asked = clock.synced(t0 + RECHECK);
        assert_eq!(clock.synced, Some((t0 + RECHECK, asked)));
    }
}
