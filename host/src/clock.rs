//! Times as results show them: ISO-8601 UTC (RFC 3339), microseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latentcam_wire::WallTime;
use serde_json::{Value, json};

/// `t` as `2026-12-04T13:25:07.123456Z`.
pub fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Microseconds since the Unix epoch as [`iso8601`].
pub fn iso8601_us(unix_us: u64) -> String {
    iso8601(UNIX_EPOCH + Duration::from_micros(unix_us))
}

/// The time fields of a result: `captured_at` (the device's wall clock, or
/// null when it sent none), `clock_synced` (whether that clock was
/// synchronised, or null) and `received_at` (the host's clock).
pub fn result_times(wall: Option<WallTime>, received: SystemTime) -> [(&'static str, Value); 3] {
    [
        ("captured_at", json!(wall.map(|w| iso8601_us(w.unix_us)))),
        ("clock_synced", json!(wall.map(|w| w.synced))),
        ("received_at", json!(iso8601(received))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_microseconds() {
        assert_eq!(iso8601_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            iso8601_us(1_780_000_000_123_456),
            "2026-05-28T20:26:40.123456Z"
        );
    }

    #[test]
    fn a_latent_without_wall_time_says_so() {
        let received = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let [captured, synced, at] = result_times(None, received);
        assert_eq!(captured, ("captured_at", Value::Null));
        assert_eq!(synced, ("clock_synced", Value::Null));
        assert_eq!(at, ("received_at", json!("2026-05-28T20:26:40.000000Z")));
        let wall = WallTime {
            unix_us: 1_780_000_000_000_001,
            synced: false,
        };
        let [captured, synced, _] = result_times(Some(wall), received);
        assert_eq!(captured.1, json!("2026-05-28T20:26:40.000001Z"));
        assert_eq!(synced.1, json!(false));
    }
}
