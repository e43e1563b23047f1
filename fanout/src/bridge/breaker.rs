//! The circuit breaker in front of Redis (PROTOCOL.md §10).
//!
//! Place: consulted by the bridge's threads before every call to Redis, told the outcome
//! after it. Three states:
//!
//! - **closed**: calls go through; each failure is remembered with its time, and once
//!   [`BreakerSettings::threshold`] failures fall within the last [`BreakerSettings::window`]
//!   (a sliding window, not a fixed bucket) the breaker opens;
//! - **open**: no call goes through, so an unreachable Redis costs nothing but the local
//!   fallback; after [`BreakerSettings::reset`] the breaker lets one probe through;
//! - **half-open**: the probe is in flight; its success closes the breaker (the failure
//!   window starts empty), its failure opens it for another `reset`.
//!
//! Sans-I/O: no clock (time is a parameter), no thread; the bridge keeps it under its lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The breaker's state, as `/metrics` and `/health` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the reset time has passed.
    Open,
    /// One probe call is allowed (or in flight); its outcome decides.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in the order of [`BreakerState::index`].
    pub const ALL: [BreakerState; 3] =
        [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];

    /// The label used in `/metrics` and `/health`: `closed`, `open` or `half_open`.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// A small number for gauges: 0 closed, 1 open, 2 half-open.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The state [`BreakerState::index`] gave `index`; closed for anything else.
    pub fn from_index(index: usize) -> BreakerState {
        BreakerState::ALL.get(index).copied().unwrap_or(BreakerState::Closed)
    }
}

/// When the breaker opens and for how long (PROTOCOL.md §10: 10 failures in 60 s, probe
/// after 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures within `window` that open the breaker; at least 1.
    pub threshold: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long the breaker stays open before it lets a probe through.
    pub reset: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            threshold: 10,
            window: Duration::from_secs(60),
            reset: Duration::from_secs(60),
        }
    }
}

/// A circuit breaker; see the module docs.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// Times of the failures within the window while closed, oldest first; never longer
    /// than the threshold.
    failures: VecDeque<Instant>,
    /// When the breaker last opened (meaningful while open).
    opened_at: Instant,
    /// Times the breaker opened since it was made.
    opened: u64,
}

impl Breaker {
    /// A closed breaker with `settings` (a threshold of 0 counts as 1).
    pub fn new(settings: BreakerSettings) -> Breaker {
        let settings = BreakerSettings { threshold: settings.threshold.max(1), ..settings };
        Breaker {
            settings,
            state: BreakerState::Closed,
            failures: VecDeque::with_capacity(settings.threshold as usize),
            opened_at: Instant::now(),
            opened: 0,
        }
    }

    /// The state at `now`: an open breaker whose reset time has passed reads as half-open
    /// (a probe may go).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open if self.reset_due(now) => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// Whether a call may go to Redis at `now`. While closed, always; once the reset time
    /// of an open breaker has passed, exactly one caller gets `true` (the probe) and the
    /// breaker is half-open until [`Breaker::success`] or [`Breaker::failure`].
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open if self.reset_due(now) => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open | BreakerState::HalfOpen => false,
        }
    }

    /// A call succeeded: a half-open breaker closes with an empty failure window. Returns
    /// whether that transition happened.
    pub fn success(&mut self) -> bool {
        if self.state != BreakerState::HalfOpen {
            return false;
        }
        self.state = BreakerState::Closed;
        self.failures.clear();
        true
    }

    /// A call failed at `now`: counted in the window while closed (opening the breaker at
    /// the threshold); a failed probe opens it again. Returns whether the breaker opened.
    pub fn failure(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.forget_before(now);
                self.failures.push_back(now);
                if self.failures.len() < self.settings.threshold as usize {
                    return false;
                }
                self.open(now);
                true
            }
            BreakerState::HalfOpen => {
                self.open(now);
                true
            }
            BreakerState::Open => false,
        }
    }

    /// Failures counted in the window at `now` (0 unless closed).
    pub fn recent_failures(&self, now: Instant) -> usize {
        let window = self.settings.window;
        self.failures.iter().filter(|&&t| now.saturating_duration_since(t) <= window).count()
    }

    /// Times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened
    }

    /// The settings in force.
    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.opened += 1;
        self.failures.clear();
    }

    fn reset_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.opened_at) >= self.settings.reset
    }

    /// Drops failures that fell out of the window, and the oldest beyond the threshold.
    fn forget_before(&mut self, now: Instant) {
        let window = self.settings.window;
        while let Some(&oldest) = self.failures.front() {
            let stale = now.saturating_duration_since(oldest) > window;
            if !stale && self.failures.len() < self.settings.threshold as usize {
                break;
            }
            self.failures.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            threshold: 3,
            window: Duration::from_secs(10),
            reset: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_at_the_threshold_within_the_window() {
        let mut b = Breaker::new(settings());
        let t = Instant::now();
        assert!(!b.failure(t));
        assert!(!b.failure(t + Duration::from_secs(1)));
        assert_eq!(b.state(t), BreakerState::Closed);
        assert!(b.failure(t + Duration::from_secs(2)));
        assert_eq!(b.state(t + Duration::from_secs(2)), BreakerState::Open);
        assert!(!b.allow(t + Duration::from_secs(3)));
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut b = Breaker::new(settings());
        let t = Instant::now();
        b.failure(t);
        b.failure(t + Duration::from_secs(1));
        // Eleven seconds on, the first two are out of the window.
        assert!(!b.failure(t + Duration::from_secs(12)));
        assert!(!b.failure(t + Duration::from_secs(13)));
        assert_eq!(b.recent_failures(t + Duration::from_secs(13)), 2);
        assert!(b.failure(t + Duration::from_secs(14)));
    }

    #[test]
    fn lets_exactly_one_probe_through_after_the_reset_time() {
        let mut b = Breaker::new(settings());
        let t = Instant::now();
        (0..3).for_each(|_| {
            b.failure(t);
        });
        let later = t + Duration::from_secs(5);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later));
        assert!(!b.allow(later), "a second caller must wait for the probe");
        assert!(b.success());
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.recent_failures(later), 0);
        assert!(b.allow(later));
    }

    #[test]
    fn a_failed_probe_opens_for_another_reset() {
        let mut b = Breaker::new(settings());
        let t = Instant::now();
        (0..3).for_each(|_| {
            b.failure(t);
        });
        let probe = t + Duration::from_secs(6);
        assert!(b.allow(probe));
        assert!(b.failure(probe));
        assert_eq!(b.state(probe + Duration::from_secs(4)), BreakerState::Open);
        assert!(b.allow(probe + Duration::from_secs(5)));
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn success_while_closed_keeps_the_window() {
        let mut b = Breaker::new(settings());
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        assert!(!b.success());
        assert!(b.failure(t), "a sliding window is not cleared by one success");
    }

    #[test]
    fn labels_and_indices_round_trip() {
        for state in BreakerState::ALL {
            assert_eq!(BreakerState::from_index(state.index()), state);
        }
        assert_eq!(BreakerState::HalfOpen.label(), "half_open");
        assert_eq!(BreakerState::from_index(9), BreakerState::Closed);
    }
}
