//! Reconnect delays: exponential backoff with jitter (PROTOCOL.md §10: 100 ms doubling to
//! 30 s, 20 % jitter).
//!
//! Place: each bridge thread keeps one [`Backoff`] for its connection to Redis. After a
//! failed attempt it waits [`Backoff::next_delay`]; a successful connection calls
//! [`Backoff::reset`]. The jitter spreads the reconnects of many instances after a Redis
//! restart, so that they do not all arrive in the same millisecond.
//!
//! Sans-I/O: the random draw is a parameter, so tests pin it.

use std::time::Duration;

/// The delay policy and how far along it one connection is.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    base: Duration,
    /// No delay is longer than this (before jitter).
    cap: Duration,
    /// Fraction of the delay the jitter may add or take away (0.2 is ±20 %).
    jitter: f64,
    /// Failed attempts since the last reset.
    attempts: u32,
}

impl Backoff {
    /// The policy of PROTOCOL.md §10.
    pub fn standard() -> Backoff {
        Backoff::new(BASE, CAP, JITTER)
    }

    /// A policy starting at `base`, doubling up to `cap`, with `jitter` (clamped to 0..=1).
    pub fn new(base: Duration, cap: Duration, jitter: f64) -> Backoff {
        Backoff { base, cap: cap.max(base), jitter: jitter.clamp(0.0, 1.0), attempts: 0 }
    }

    /// The delay before the next attempt, given a uniform draw `random` in `[0, 1)`:
    /// `min(base · 2^failures, cap)`, moved by up to ±jitter of itself. Counts one failure.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let doubled = self.base.saturating_mul(1u32 << self.attempts.min(MAX_SHIFT));
        let delay = doubled.min(self.cap);
        self.attempts = self.attempts.saturating_add(1);
        let spread = self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        delay.mul_f64(1.0 + spread)
    }

    /// Back to the first delay (the connection works again).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// First reconnect delay.
const BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay, before jitter.
const CAP: Duration = Duration::from_secs(30);
/// ±20 % of each delay.
const JITTER: f64 = 0.2;
/// 2^20 times the base is far past any sensible cap; shifting further would overflow.
const MAX_SHIFT: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_a_hundred_milliseconds_to_thirty_seconds() {
        let mut b = Backoff::standard();
        let delays: Vec<u64> = (0..12).map(|_| b.next_delay(0.5).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut low = Backoff::standard();
        let mut high = Backoff::standard();
        assert_eq!(low.next_delay(0.0), Duration::from_millis(80));
        assert_eq!(high.next_delay(1.0), Duration::from_millis(120));
        for _ in 0..30 {
            let d = low.next_delay(0.0);
            assert!(d >= Duration::from_millis(80) && d <= Duration::from_secs(24));
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::standard();
        b.next_delay(0.5);
        b.next_delay(0.5);
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600), 0.0);
        for _ in 0..100 {
            assert!(b.next_delay(0.5) <= Duration::from_secs(3600));
        }
    }
}
