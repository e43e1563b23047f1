//! The inbound rate limit of one connection: a token bucket (PROTOCOL.md §7, §9 4429, §10).
//!
//! Place in the data path: `socket → shard → **protocol (ratelimit)** → envelope`. The shard
//! asks [`TokenBucket::try_take`] before handling each inbound data message; it sends
//! `rate_limit_warning` when [`TokenBucket::below_fraction`] says the bucket is under 20 %,
//! answers `error` `RATE_LIMITED` when the bucket is empty, and closes with 4429 when it stays
//! limited; those policies and their timers are the shard's, not this module's.
//!
//! The bucket is kept as a single "theoretical arrival time" (the GCRA form of a token
//! bucket): the instant at which it would be full again, in nanoseconds from the caller's
//! monotonic origin. Taking a token moves that instant one refill interval later; time
//! passing refills by itself, so nothing accumulates rounding error over idle periods and
//! there is no refill step that could overflow. Being one `AtomicU64`, the state can be read
//! from another thread (metrics) while the connection's shard updates it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A token bucket of `capacity` messages refilled at a steady rate. 16 bytes.
///
/// Times are milliseconds from any monotonic origin, the same for every call on one bucket.
/// Time going backwards is harmless: the bucket then simply does not refill.
#[derive(Debug)]
pub struct TokenBucket {
    /// When the bucket will be full again, in ns from the origin. At or before "now" the
    /// bucket is full; each token taken moves it one interval later.
    full_at_ns: AtomicU64,
    /// The most tokens the bucket holds; at least 1.
    capacity: u32,
    /// Tokens added per second; the interval in ns between two tokens is derived from it
    /// (see [`TokenBucket::interval_ns`]).
    refill_per_sec: f32,
}

/// The outcome of [`TokenBucket::try_take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token was taken; `remaining` are left.
    Ok {
        /// Whole tokens left in the bucket after this one.
        remaining: u64,
    },
    /// The bucket is empty; nothing was taken.
    Limited {
        /// Milliseconds until one token is back (rounded up, at least 1).
        retry_after_ms: u64,
    },
}

impl TokenBucket {
    /// A full bucket.
    ///
    /// `capacity` is clamped to `1..=u32::MAX`. `refill_per_sec` is clamped so that one
    /// token takes between 1 ns and the time that refills the whole bucket in 2^62 ns
    /// (about 146 years): a zero, negative or NaN rate therefore means "practically never".
    pub fn new(capacity: u64, refill_per_sec: f64, now_ms: u64) -> Self {
        let refill = if refill_per_sec.is_finite() && refill_per_sec > 0.0 {
            refill_per_sec as f32
        } else {
            0.0
        };
        TokenBucket {
            full_at_ns: AtomicU64::new(ms_to_ns(now_ms)),
            capacity: capacity.clamp(1, u64::from(u32::MAX)) as u32,
            refill_per_sec: refill,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self, now_ms: u64) -> Take {
        let now = ms_to_ns(now_ms);
        let interval = self.interval_ns();
        let span = self.span_ns(interval);

        let mut full_at = self.full_at_ns.load(Ordering::Relaxed);
        loop {
            // Taking moves the "full again" instant one interval later; the take is allowed
            // while that stays within one full bucket from now.
            let next = full_at.max(now).saturating_add(interval);
            let debt = next - now;
            if debt > span {
                let retry_ns = debt - span;
                return Take::Limited { retry_after_ms: retry_ns.div_ceil(NS_PER_MS).max(1) };
            }
            match self.full_at_ns.compare_exchange_weak(
                full_at,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Take::Ok { remaining: (span - debt) / interval },
                Err(current) => full_at = current,
            }
        }
    }

    /// Whole tokens in the bucket at `now_ms`, without taking any.
    pub fn remaining(&self, now_ms: u64) -> u64 {
        let now = ms_to_ns(now_ms);
        let interval = self.interval_ns();
        let debt = self.full_at_ns.load(Ordering::Relaxed).saturating_sub(now);
        let tokens = self.span_ns(interval).saturating_sub(debt) / interval;
        tokens.min(self.capacity())
    }

    /// Whether fewer than `fraction` of the capacity is left at `now_ms`: the trigger for
    /// `rate_limit_warning` with `fraction` 0.2.
    pub fn below_fraction(&self, fraction: f64, now_ms: u64) -> bool {
        (self.remaining(now_ms) as f64) < fraction * self.capacity() as f64
    }

    /// The most tokens the bucket holds (after clamping).
    pub fn capacity(&self) -> u64 {
        u64::from(self.capacity)
    }

    /// Tokens added per second (as stored: single precision, 0 for "never").
    pub fn refill_per_sec(&self) -> f64 {
        f64::from(self.refill_per_sec)
    }

    /// Nanoseconds between two refilled tokens, clamped to `1..=2^62 / capacity`.
    fn interval_ns(&self) -> u64 {
        let longest = MAX_SPAN_NS / self.capacity();
        if self.refill_per_sec <= 0.0 {
            return longest;
        }
        let interval = (NS_PER_SEC as f64 / f64::from(self.refill_per_sec)).round();
        // `as` saturates; the clamp keeps capacity * interval within 2^62.
        (interval as u64).clamp(1, longest)
    }

    /// Nanoseconds to refill the whole bucket from empty; at most 2^62.
    fn span_ns(&self, interval: u64) -> u64 {
        self.capacity() * interval
    }
}

/// Milliseconds to nanoseconds, saturating at [`LATEST_NS`] (about 438 years of uptime) so
/// that adding one full bucket's span to "now" never overflows.
fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(NS_PER_MS).min(LATEST_NS)
}

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;
/// The longest time a full refill may take, so that `capacity * interval` never overflows.
const MAX_SPAN_NS: u64 = 1 << 62;
/// The latest instant a bucket can express; later times count as this one.
const LATEST_NS: u64 = u64::MAX - MAX_SPAN_NS;

#[cfg(test)]
mod tests {
    use super::*;

    fn take_n(bucket: &TokenBucket, n: u64, now_ms: u64) {
        for i in 0..n {
            assert!(matches!(bucket.try_take(now_ms), Take::Ok { .. }), "take {i}");
        }
    }

    #[test]
    fn is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 16);
    }

    #[test]
    fn starts_full_and_bursts_to_empty() {
        let bucket = TokenBucket::new(5, 1.0, 1_000);
        assert_eq!(bucket.remaining(1_000), 5);
        for left in (0..5).rev() {
            assert_eq!(bucket.try_take(1_000), Take::Ok { remaining: left });
        }
        assert!(matches!(bucket.try_take(1_000), Take::Limited { .. }));
        assert_eq!(bucket.remaining(1_000), 0);
    }

    #[test]
    fn limited_take_consumes_nothing() {
        let bucket = TokenBucket::new(1, 1.0, 0);
        take_n(&bucket, 1, 0);
        for _ in 0..100 {
            assert!(matches!(bucket.try_take(500), Take::Limited { .. }));
        }
        assert_eq!(bucket.try_take(1_000), Take::Ok { remaining: 0 });
    }

    #[test]
    fn refills_at_the_configured_rate() {
        let bucket = TokenBucket::new(100, 10.0, 0);
        take_n(&bucket, 100, 0);
        assert_eq!(bucket.remaining(99), 0);
        assert_eq!(bucket.remaining(100), 1);
        assert_eq!(bucket.remaining(1_050), 10);
        assert_eq!(bucket.remaining(10_000), 100);
        assert_eq!(bucket.remaining(60_000), 100);
    }

    #[test]
    fn retry_after_is_time_to_the_next_token() {
        let bucket = TokenBucket::new(2, 4.0, 0);
        take_n(&bucket, 2, 0);
        assert_eq!(bucket.try_take(0), Take::Limited { retry_after_ms: 250 });
        assert_eq!(bucket.try_take(100), Take::Limited { retry_after_ms: 150 });
        assert_eq!(bucket.try_take(249), Take::Limited { retry_after_ms: 1 });
        assert_eq!(bucket.try_take(250), Take::Ok { remaining: 0 });
        assert_eq!(bucket.try_take(250), Take::Limited { retry_after_ms: 250 });
    }

    #[test]
    fn half_a_token_per_second_works() {
        let bucket = TokenBucket::new(3, 0.5, 0);
        take_n(&bucket, 3, 0);
        assert_eq!(bucket.try_take(0), Take::Limited { retry_after_ms: 2_000 });
        assert_eq!(bucket.remaining(1_999), 0);
        assert_eq!(bucket.try_take(2_000), Take::Ok { remaining: 0 });
        assert_eq!(bucket.remaining(6_000), 2);
    }

    #[test]
    fn steady_rate_does_not_drift() {
        // 3 per second is 333,333,333 ns per token, which a millisecond clock never hits
        // exactly: with room for more than one token, the fractions must not be lost.
        let bucket = TokenBucket::new(10, 3.0, 0);
        let mut granted = 0u64;
        for ms in 0..400_000u64 {
            if let Take::Ok { .. } = bucket.try_take(ms) {
                granted += 1;
            }
        }
        // The initial 10, then 400 s at 3/s, within one token.
        assert!((1_209..=1_210).contains(&granted), "{granted}");
    }

    #[test]
    fn huge_capacity_and_idle_gap_do_not_overflow() {
        let bucket = TokenBucket::new(1_000_000_000, 0.5, 0);
        take_n(&bucket, 1_000, 0);
        assert_eq!(bucket.remaining(0), 1_000_000_000 - 1_000);
        let far = 100 * 365 * 86_400_000; // a hundred years, in ms
        assert_eq!(bucket.remaining(far), 1_000_000_000);
        assert_eq!(bucket.try_take(far), Take::Ok { remaining: 999_999_999 });
        assert_eq!(bucket.remaining(u64::MAX), 1_000_000_000);
    }

    #[test]
    fn idle_gap_refills_to_capacity_only() {
        let bucket = TokenBucket::new(10, 10_000.0, 5);
        take_n(&bucket, 10, 5);
        assert_eq!(bucket.remaining(5 + 86_400_000 * 365), 10);
        assert_eq!(bucket.try_take(5 + 86_400_000 * 365), Take::Ok { remaining: 9 });
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let bucket = TokenBucket::new(2, 1.0, 10_000);
        take_n(&bucket, 2, 10_000);
        assert_eq!(bucket.remaining(5_000), 0);
        assert!(matches!(bucket.try_take(5_000), Take::Limited { .. }));
        assert_eq!(bucket.remaining(11_000), 1);
    }

    #[test]
    fn below_fraction_flags_the_last_fifth() {
        let bucket = TokenBucket::new(10, 1.0, 0);
        take_n(&bucket, 8, 0);
        assert!(!bucket.below_fraction(0.2, 0));
        take_n(&bucket, 1, 0);
        assert!(bucket.below_fraction(0.2, 0));
        assert!(!bucket.below_fraction(0.2, 1_000));
    }

    #[test]
    fn zero_rate_and_zero_capacity_are_clamped() {
        let bucket = TokenBucket::new(0, 0.0, 0);
        assert_eq!(bucket.capacity(), 1);
        take_n(&bucket, 1, 0);
        assert!(matches!(bucket.try_take(86_400_000 * 365), Take::Limited { .. }));
        let nan = TokenBucket::new(3, f64::NAN, 0);
        take_n(&nan, 3, 0);
        assert_eq!(nan.remaining(86_400_000), 0);
        assert_eq!(nan.refill_per_sec(), 0.0);
    }

    #[test]
    fn very_high_rate_is_capped_at_one_per_nanosecond() {
        let bucket = TokenBucket::new(1_000_000, 1e12, 0);
        take_n(&bucket, 1_000_000, 0);
        assert_eq!(bucket.remaining(1), 1_000_000);
    }

    #[test]
    fn concurrent_takes_never_exceed_capacity() {
        let bucket = std::sync::Arc::new(TokenBucket::new(10_000, 1.0, 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || {
                    (0..5_000).filter(|_| matches!(bucket.try_take(0), Take::Ok { .. })).count()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(granted, 10_000);
    }
}
