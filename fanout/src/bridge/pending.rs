//! This instance's publications on their way through Redis and back.
//!
//! Place: `owner shard → publisher thread → **pending** → Redis → subscriber thread →
//! **pending** → owner shard`. An instance delivers its own publications from the
//! subscription stream, like everyone else's, so that they take their place in Redis's order
//! of the topic. Each one is numbered here (`n`, carried in the message next to the
//! instance id) when the publisher thread sends it, and stays until it is resolved exactly
//! once:
//!
//! - its **echo** arrives from the stream: it is delivered with Redis's stamp;
//! - it is **lost**: a later publication of this instance came back first. The publisher
//!   sends in order on one connection and Redis runs scripts in order, so an earlier one that
//!   has not come back by then never will (its message was lost with a dropped subscription,
//!   or its script failed); it is delivered locally, before the later one;
//! - it **times out**, or the connection fails: delivered locally.
//!
//! An echo whose number is no longer pending was resolved already (delivered locally) and is
//! dropped: that is what keeps an instance from delivering its own publication twice. The
//! queue is always a run of consecutive numbers, so every step is O(1) per publication.
//!
//! Whether a publication reached Redis at all (for the dead-letter queue) is a separate
//! question, answered by [`Pending::reached_redis`]: every number up to the highest one
//! echoed did.
//!
//! Sans-I/O: time is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Publications sent and not yet resolved, oldest first.
#[derive(Debug)]
pub struct Pending<T> {
    /// Entries with consecutive numbers, the oldest in front.
    entries: VecDeque<Entry<T>>,
    /// The number the next publication gets; numbers start at 1 (0 marks a message that is
    /// not tracked, such as a dead letter replayed).
    next: u64,
    /// The highest number that came back from the stream.
    echoed: u64,
}

#[derive(Debug)]
struct Entry<T> {
    n: u64,
    sent: Instant,
    item: T,
}

/// What an echo from the stream resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct Echo<T> {
    /// Earlier publications that will never come back, oldest first: deliver them locally
    /// before `item`.
    pub lost: Vec<T>,
    /// The publication that came back; `None` when it was resolved already (drop the
    /// message).
    pub item: Option<T>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending { entries: VecDeque::new(), next: 1, echoed: 0 }
    }
}

impl<T> Pending<T> {
    /// Nothing pending; the first number is 1.
    pub fn new() -> Pending<T> {
        Pending::default()
    }

    /// Tracks `item`, sent at `now`; returns its number.
    pub fn push(&mut self, item: T, now: Instant) -> u64 {
        let n = self.next;
        self.next += 1;
        self.entries.push_back(Entry { n, sent: now, item });
        n
    }

    /// Publication `n` of this instance came back from the stream.
    pub fn echo(&mut self, n: u64) -> Echo<T> {
        self.echoed = self.echoed.max(n);
        let mut lost = Vec::new();
        while let Some(front) = self.entries.front() {
            if front.n > n {
                break;
            }
            let Some(entry) = self.entries.pop_front() else { break };
            if entry.n == n {
                return Echo { lost, item: Some(entry.item) };
            }
            lost.push(entry.item);
        }
        Echo { lost, item: None }
    }

    /// Whether publication `n` is still waiting for its echo.
    pub fn is_pending(&self, n: u64) -> bool {
        self.entries.front().is_some_and(|front| n >= front.n && n < front.n + self.len() as u64)
    }

    /// Whether publication `n` is known to have reached Redis: it, or a later one of this
    /// instance, came back from the stream.
    pub fn reached_redis(&self, n: u64) -> bool {
        n != 0 && n <= self.echoed
    }

    /// Removes the publications sent more than `timeout` before `now`, oldest first.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<T> {
        let mut expired = Vec::new();
        while self.entries.front().is_some_and(|e| now.saturating_duration_since(e.sent) > timeout)
        {
            if let Some(entry) = self.entries.pop_front() {
                expired.push(entry.item);
            }
        }
        expired
    }

    /// Removes every pending publication, oldest first.
    pub fn drain(&mut self) -> Vec<T> {
        self.entries.drain(..).map(|e| e.item).collect()
    }

    /// Publications waiting for their echo.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(items: &[&'static str]) -> (Pending<&'static str>, Vec<u64>, Instant) {
        let mut p = Pending::new();
        let now = Instant::now();
        let ns = items.iter().map(|i| p.push(*i, now)).collect();
        (p, ns, now)
    }

    #[test]
    fn numbers_start_at_one_and_echoes_resolve_in_order() {
        let (mut p, ns, _) = with(&["a", "b"]);
        assert_eq!(ns, [1, 2]);
        assert_eq!(p.echo(1), Echo { lost: vec![], item: Some("a") });
        assert_eq!(p.echo(2), Echo { lost: vec![], item: Some("b") });
        assert!(p.is_empty());
    }

    #[test]
    fn a_later_echo_resolves_earlier_ones_as_lost_first() {
        let (mut p, _, _) = with(&["a", "b", "c"]);
        assert_eq!(p.echo(3), Echo { lost: vec!["a", "b"], item: Some("c") });
        assert!(p.reached_redis(1) && p.reached_redis(3) && !p.reached_redis(4));
    }

    #[test]
    fn an_echo_of_something_resolved_already_is_dropped() {
        let (mut p, _, now) = with(&["a", "b"]);
        assert_eq!(p.expire(now + Duration::from_secs(3), Duration::from_secs(2)), ["a", "b"]);
        assert_eq!(p.echo(1), Echo { lost: vec![], item: None });
        let c = p.push("c", now);
        assert_eq!(c, 3);
        assert_eq!(p.echo(2), Echo { lost: vec![], item: None }, "2 < 3 stays pending");
        assert!(p.is_pending(3));
        assert_eq!(p.echo(0), Echo { lost: vec![], item: None }, "0 is never tracked");
        assert!(!p.reached_redis(0));
    }

    #[test]
    fn expiry_takes_only_the_old_ones() {
        let mut p = Pending::new();
        let t = Instant::now();
        p.push("old", t);
        p.push("new", t + Duration::from_secs(2));
        assert_eq!(p.expire(t + Duration::from_millis(2500), Duration::from_secs(1)), ["old"]);
        assert_eq!(p.len(), 1);
        assert!(p.is_pending(2) && !p.is_pending(1));
        assert_eq!(p.drain(), ["new"]);
    }
}
