//! Wire timestamps: unix milliseconds to ISO-8601 UTC text.
//!
//! Part of the envelope layer (`protocol → envelope`). PROTOCOL.md writes times as ISO-8601
//! UTC with milliseconds and a `Z` (`2026-01-15T10:30:00.123Z`). The crate never reads the
//! clock: the shard passes the current time in, as milliseconds since the unix epoch.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Formats `unix_ms` (milliseconds since 1970-01-01T00:00:00Z) as ISO-8601 UTC with
/// milliseconds, e.g. `2026-01-15T10:30:00.123Z`.
///
/// Times after the last millisecond of year 9999 are clamped to it, so any input formats.
pub fn iso8601_millis(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + clamped(unix_ms)).to_string()
}

/// Appends the text of [`iso8601_millis`] to `out` without an intermediate `String`.
pub fn write_iso8601_millis(unix_ms: u64, out: &mut Vec<u8>) {
    let stamp = humantime::format_rfc3339_millis(UNIX_EPOCH + clamped(unix_ms));
    // Writing into a Vec cannot fail, and the timestamp's Display is infallible.
    let _ = write!(out, "{stamp}");
}

/// `unix_ms` as a duration since the epoch, no later than the last millisecond of 9999.
fn clamped(unix_ms: u64) -> Duration {
    Duration::from_millis(unix_ms.min(MAX_UNIX_MS))
}

/// 9999-12-31T23:59:59.999Z, the last instant four-digit years can express.
const MAX_UNIX_MS: u64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_with_millis_and_z() {
        assert_eq!(iso8601_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn formats_known_instant() {
        assert_eq!(iso8601_millis(1_768_473_000_123), "2026-01-15T10:30:00.123Z");
    }

    #[test]
    fn keeps_whole_seconds_at_three_digits() {
        assert_eq!(iso8601_millis(1_768_473_000_000), "2026-01-15T10:30:00.000Z");
    }

    #[test]
    fn clamps_far_future_instead_of_panicking() {
        assert_eq!(iso8601_millis(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn writer_matches_string_form() {
        let mut out = b"x".to_vec();
        write_iso8601_millis(1_768_473_000_123, &mut out);
        assert_eq!(out, b"x2026-01-15T10:30:00.123Z");
    }
}
