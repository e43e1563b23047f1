//! The de-duplication window on message ids (PROTOCOL.md §3 `id`, §10: 50,000 ids or 300 s).
//!
//! Place: `publish request → owner shard → **dedup** → sequencer → encode → rings`. A
//! publication that carries an id given by its publisher (a client's envelope `id`, later the
//! Redis bridge) is checked here on its topic's owner shard, before it is stamped: a message
//! published twice with the same id, or arriving by two paths, is stamped and delivered once,
//! and its duplicate takes no offset. Publications with server-made ids (fresh UUIDv7s) need
//! no check and do not enter the window.
//!
//! An id is unique within its topic: the window is keyed by `(topic, id)`, which is also what
//! makes one owner shard per topic enough. It remembers at most `capacity` keys, and none
//! older than `max_age`, evicting the oldest first; a duplicate that arrives after its
//! original left the window is delivered again.
//!
//! Keys are held as a 128-bit digest from two SipHash keys drawn at random per window
//! (std's `RandomState`), so memory per key is fixed whatever the id's length, and no
//! publisher can craft two ids that collide. Sans-I/O: time is a parameter.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Recently seen `(topic, id)` pairs; see the module docs.
#[derive(Debug)]
pub struct DedupWindow {
    capacity: usize,
    max_age: Duration,
    /// Digests in the window.
    seen: HashSet<Digest, BuildHasherDefault<DigestHasher>>,
    /// The same digests, oldest first, with the time each entered.
    order: VecDeque<(Digest, Instant)>,
    keys: (RandomState, RandomState),
}

/// A keyed 128-bit digest of `(topic, id)`.
type Digest = (u64, u64);

impl DedupWindow {
    /// A window of at most `capacity` ids, each kept at most `max_age`. A capacity of 0
    /// turns de-duplication off: every id is new.
    pub fn new(capacity: usize, max_age: Duration) -> DedupWindow {
        DedupWindow {
            capacity,
            max_age,
            seen: HashSet::default(),
            order: VecDeque::new(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Whether `id` is new on `topic` at `now`; a new one enters the window. A duplicate does
    /// not refresh its entry: the window counts from the first sighting.
    pub fn first_time(&mut self, topic: &str, id: &str, now: Instant) -> bool {
        if self.capacity == 0 {
            return true;
        }
        self.expire(now);
        let digest = (self.keys.0.hash_one((topic, id)), self.keys.1.hash_one((topic, id)));
        if self.seen.contains(&digest) {
            return false;
        }
        if self.order.len() >= self.capacity {
            self.evict_oldest();
        }
        self.seen.insert(digest);
        self.order.push_back((digest, now));
        true
    }

    /// Ids in the window.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Drops the entries older than `max_age`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) <= self.max_age {
                break;
            }
            self.evict_oldest();
        }
        if self.order.is_empty() && self.order.capacity() > 0 {
            // A quiet owner gives its memory back.
            self.order = VecDeque::new();
            self.seen = HashSet::default();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((digest, _)) = self.order.pop_front() {
            self.seen.remove(&digest);
        }
    }
}

/// Hashes a [`Digest`] by its first half: it is already a keyed, uniform hash.
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a caller hashes something other than a digest; stay correct.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        if self.0 == 0 {
            self.0 = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(300);

    #[test]
    fn a_repeated_id_is_refused_on_its_topic_only() {
        let mut w = DedupWindow::new(10, AGE);
        let now = Instant::now();
        assert!(w.first_time("news", "m1", now));
        assert!(!w.first_time("news", "m1", now));
        assert!(w.first_time("sport", "m1", now));
        assert!(w.first_time("news", "m2", now));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn topic_and_id_do_not_run_together() {
        let mut w = DedupWindow::new(10, AGE);
        let now = Instant::now();
        assert!(w.first_time("ab", "c", now));
        assert!(w.first_time("a", "bc", now));
    }

    #[test]
    fn size_eviction_forgets_the_oldest_first() {
        let mut w = DedupWindow::new(3, AGE);
        let now = Instant::now();
        for id in ["1", "2", "3", "4"] {
            assert!(w.first_time("t", id, now));
        }
        assert_eq!(w.len(), 3);
        assert!(!w.first_time("t", "4", now));
        assert!(!w.first_time("t", "2", now));
        assert!(w.first_time("t", "1", now), "the oldest id left the window");
    }

    #[test]
    fn age_eviction_forgets_ids_older_than_the_window() {
        let mut w = DedupWindow::new(100, AGE);
        let start = Instant::now();
        assert!(w.first_time("t", "old", start));
        assert!(w.first_time("t", "new", start + AGE / 2));
        assert!(!w.first_time("t", "old", start + AGE));
        assert!(w.first_time("t", "old", start + AGE + Duration::from_millis(1)));
        assert!(!w.first_time("t", "new", start + AGE + Duration::from_millis(1)));
    }

    #[test]
    fn a_duplicate_does_not_extend_its_stay() {
        let mut w = DedupWindow::new(100, AGE);
        let start = Instant::now();
        w.first_time("t", "x", start);
        assert!(!w.first_time("t", "x", start + AGE - Duration::from_secs(1)));
        assert!(w.first_time("t", "x", start + AGE + Duration::from_secs(1)));
    }

    #[test]
    fn zero_capacity_turns_it_off() {
        let mut w = DedupWindow::new(0, AGE);
        let now = Instant::now();
        assert!(w.first_time("t", "x", now));
        assert!(w.first_time("t", "x", now));
        assert!(w.is_empty());
    }

    #[test]
    fn an_expired_window_holds_no_memory() {
        let mut w = DedupWindow::new(100, AGE);
        let start = Instant::now();
        for i in 0..50 {
            w.first_time("t", &i.to_string(), start);
        }
        w.expire(start + 2 * AGE);
        assert!(w.is_empty());
        assert_eq!(w.order.capacity(), 0);
        assert_eq!(w.seen.capacity(), 0);
    }
}
