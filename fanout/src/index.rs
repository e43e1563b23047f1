//! The shard-local subscription index: which of this shard's connections want a topic.
//!
//! Place in the data path: `socket → shard → protocol → **fanout** → shard → socket`. The
//! shard applies `subscription_update` commands here, and when a publication arrives on its
//! control ring it asks [`TopicIndex::for_each_subscriber`] whom to queue the shared bytes
//! for. Each shard owns one index and touches it only from its own executor thread, so there
//! is no locking.
//!
//! Exact topics are found with one hash lookup. Glob patterns (`*`, `?`, see [`crate::glob`])
//! are kept apart, one entry per distinct pattern, and every publication tests each of them;
//! that is a cost per distinct pattern, not per subscriber. A connection that several
//! subscriptions match is reported once.
//!
//! Left to others: access control and the per-connection subscription limit (the shard),
//! remembering which patterns a connection holds so they can be dropped when it closes (the
//! shard's connection table), and filters over the payload (`protocol`).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::glob::{glob_match, has_wildcards};
use crate::ids::ConnId;

/// The connections subscribed through one topic or pattern.
type Subscribers = HashSet<ConnId>;

/// Subscriptions of one shard's connections, by exact topic and by glob pattern.
#[derive(Debug, Default)]
pub struct TopicIndex {
    /// Exact topic name → connections subscribed to exactly that name. Never holds an empty
    /// set: the entry goes with its last subscriber.
    exact: HashMap<Box<str>, Subscribers>,
    /// Pattern holding `*` or `?` → connections subscribed to that pattern. Never holds an
    /// empty set, and no key lacks a wildcard.
    globs: HashMap<Box<str>, Subscribers>,
}

impl TopicIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `conn` to `pattern`, an exact topic or a glob. Returns `true` when the
    /// subscription is new, `false` when `conn` already held exactly this pattern.
    pub fn subscribe(&mut self, conn: ConnId, pattern: &str) -> bool {
        let table = self.table_mut(pattern);
        if let Some(subscribers) = table.get_mut(pattern) {
            return subscribers.insert(conn);
        }
        table.insert(pattern.into(), HashSet::from([conn]));
        true
    }

    /// Removes the subscription of `conn` to exactly `pattern` (other patterns that match the
    /// same topics are untouched). Returns `true` when there was one. O(1) whatever the number
    /// of subscribers; the entry is dropped with its last subscriber.
    pub fn unsubscribe(&mut self, conn: ConnId, pattern: &str) -> bool {
        let table = self.table_mut(pattern);
        let Some(subscribers) = table.get_mut(pattern) else {
            return false;
        };
        let removed = subscribers.remove(&conn);
        if subscribers.is_empty() {
            table.remove(pattern);
        } else if removed {
            shrink_if_sparse(subscribers);
        }
        removed
    }

    /// Calls `f` once for every connection subscribed to `topic`, by its exact name or by any
    /// glob, in no particular order. A connection that several subscriptions match is still
    /// reported once.
    ///
    /// Allocates nothing unless a glob matches; when several subscriptions match, the
    /// duplicate check costs a few hash probes per connection outside the largest set.
    pub fn for_each_subscriber(&self, topic: &str, mut f: impl FnMut(ConnId)) {
        match self.matching(topic) {
            Matches::Single(set) => set.into_iter().flatten().copied().for_each(f),
            Matches::Several(sets) => emit_distinct(sets, &mut f),
        }
    }

    /// How many distinct connections [`for_each_subscriber`](Self::for_each_subscriber) would
    /// report for `topic`. O(1) when at most one subscription entry matches.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        match self.matching(topic) {
            Matches::Single(set) => set.map_or(0, HashSet::len),
            Matches::Several(sets) => {
                let mut count = 0;
                emit_distinct(sets, &mut |_| count += 1);
                count
            }
        }
    }

    /// The number of distinct exact topics and glob patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.exact.len() + self.globs.len()
    }

    /// Whether no connection is subscribed to anything.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    /// The table a pattern belongs in: globs apart from exact names.
    fn table_mut(&mut self, pattern: &str) -> &mut HashMap<Box<str>, Subscribers> {
        if has_wildcards(pattern) {
            &mut self.globs
        } else {
            &mut self.exact
        }
    }

    /// Every subscriber set that matches `topic`.
    fn matching(&self, topic: &str) -> Matches<'_> {
        // `Vec::new` does not allocate; the first matching glob does.
        let mut sets = Vec::new();
        for (pattern, subscribers) in &self.globs {
            if glob_match(pattern, topic) {
                sets.push(subscribers);
            }
        }

        let exact = self.exact.get(topic);
        match (exact, sets.len()) {
            (_, 0) => Matches::Single(exact),
            (None, 1) => Matches::Single(sets.pop()),
            _ => {
                sets.extend(exact);
                Matches::Several(sets)
            }
        }
    }
}

/// The subscriber sets that match one topic.
enum Matches<'a> {
    /// At most one set: its members are distinct as they stand.
    Single(Option<&'a Subscribers>),
    /// Two sets or more, which may share connections.
    Several(Vec<&'a Subscribers>),
}

/// Calls `f` once per connection found in any of `sets`.
///
/// The largest set is reported as it stands. With few sets, a connection of a later set is
/// reported when no earlier set holds it, which needs no allocation; with many, a scratch
/// set of those already reported keeps the cost linear.
fn emit_distinct(mut sets: Vec<&Subscribers>, f: &mut impl FnMut(ConnId)) {
    sets.sort_unstable_by_key(|set| Reverse(set.len()));
    let Some((largest, rest)) = sets.split_first() else {
        return;
    };
    largest.iter().copied().for_each(&mut *f);

    if sets.len() <= PROBE_LIMIT {
        for (i, set) in rest.iter().enumerate() {
            let earlier = &sets[..=i];
            let fresh = set.iter().filter(|conn| !earlier.iter().any(|e| e.contains(conn)));
            fresh.copied().for_each(&mut *f);
        }
        return;
    }
    let mut seen = HashSet::new();
    for conn in rest.iter().flat_map(|set| set.iter()) {
        if !largest.contains(conn) && seen.insert(*conn) {
            f(*conn);
        }
    }
}

/// Gives memory back once a set has shrunk to a quarter of its capacity, so a topic that
/// once had 100,000 subscribers does not keep their room. Amortised O(1) per removal.
fn shrink_if_sparse(subscribers: &mut Subscribers) {
    let capacity = subscribers.capacity();
    if capacity > MIN_SHRINK_CAPACITY && subscribers.len() * 4 < capacity {
        subscribers.shrink_to(subscribers.len() * 2);
    }
}

/// Up to this many matching sets, duplicates are found by probing the earlier sets.
const PROBE_LIMIT: usize = 4;

/// Sets with at most this much capacity are never shrunk: the saving is not worth a rehash.
const MIN_SHRINK_CAPACITY: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribers(index: &TopicIndex, topic: &str) -> Vec<u64> {
        let mut found = Vec::new();
        index.for_each_subscriber(topic, |conn| found.push(conn.0));
        found.sort_unstable();
        found
    }

    #[test]
    fn delivers_exact_subscription() {
        let mut index = TopicIndex::new();
        assert!(index.subscribe(ConnId(1), "news"));
        assert_eq!(subscribers(&index, "news"), [1]);
        assert_eq!(subscribers(&index, "sports"), [0; 0]);
    }

    #[test]
    fn repeated_subscribe_is_not_new() {
        let mut index = TopicIndex::new();
        assert!(index.subscribe(ConnId(1), "user:*"));
        assert!(!index.subscribe(ConnId(1), "user:*"));
        assert_eq!(index.pattern_count(), 1);
    }

    #[test]
    fn delivers_glob_subscription() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(7), "user:*:events");
        assert_eq!(subscribers(&index, "user:42:events"), [7]);
        assert_eq!(subscribers(&index, "user:42:orders"), [0; 0]);
    }

    #[test]
    fn exact_and_glob_overlap_is_delivered_once() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "user:42:events");
        index.subscribe(ConnId(1), "user:*:events");
        index.subscribe(ConnId(1), "user:*");
        index.subscribe(ConnId(2), "user:*");
        assert_eq!(subscribers(&index, "user:42:events"), [1, 2]);
        assert_eq!(index.subscriber_count("user:42:events"), 2);
    }

    #[test]
    fn many_overlapping_globs_deliver_once() {
        let mut index = TopicIndex::new();
        let patterns = ["*", "a*", "*z", "a?c*", "?b*", "ab*", "*c*"];
        for (i, pattern) in patterns.iter().enumerate() {
            index.subscribe(ConnId(1), pattern);
            index.subscribe(ConnId(i as u64 + 10), pattern);
        }
        assert_eq!(subscribers(&index, "abcz"), [1, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(index.subscriber_count("abcz"), 8);
    }

    #[test]
    fn unsubscribe_stops_delivery() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "news");
        index.subscribe(ConnId(2), "new?");
        assert!(index.unsubscribe(ConnId(1), "news"));
        assert!(index.unsubscribe(ConnId(2), "new?"));
        assert_eq!(subscribers(&index, "news"), [0; 0]);
    }

    #[test]
    fn unsubscribing_one_of_two_matching_patterns_still_delivers_once() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "user:*");
        index.subscribe(ConnId(1), "*:events");
        index.subscribe(ConnId(1), "user:1:events");
        index.unsubscribe(ConnId(1), "*:events");
        assert_eq!(subscribers(&index, "user:1:events"), [1]);
        index.unsubscribe(ConnId(1), "user:1:events");
        assert_eq!(subscribers(&index, "user:1:events"), [1]);
    }

    #[test]
    fn unsubscribe_of_unknown_subscription_is_false() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "news");
        assert!(!index.unsubscribe(ConnId(2), "news"));
        assert!(!index.unsubscribe(ConnId(1), "sports"));
        assert!(!index.unsubscribe(ConnId(1), "new*"));
        assert_eq!(index.pattern_count(), 1);
    }

    #[test]
    fn last_unsubscribe_removes_the_entry() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "news");
        index.subscribe(ConnId(2), "news");
        index.subscribe(ConnId(1), "user:*");
        index.unsubscribe(ConnId(1), "news");
        assert_eq!(index.pattern_count(), 2);
        index.unsubscribe(ConnId(2), "news");
        index.unsubscribe(ConnId(1), "user:*");
        assert_eq!(index.pattern_count(), 0);
        assert!(index.is_empty());
    }

    #[test]
    fn counts_distinct_subscribers_and_patterns() {
        let mut index = TopicIndex::new();
        assert!(index.is_empty());
        index.subscribe(ConnId(1), "news");
        index.subscribe(ConnId(2), "news");
        index.subscribe(ConnId(2), "n*");
        index.subscribe(ConnId(3), "n*");
        assert_eq!(index.subscriber_count("news"), 3);
        assert_eq!(index.subscriber_count("nope"), 2);
        assert_eq!(index.subscriber_count("other"), 0);
        assert_eq!(index.pattern_count(), 2);
        assert!(!index.is_empty());
    }

    #[test]
    fn large_topic_churns_without_keeping_its_room() {
        let mut index = TopicIndex::new();
        for conn in 0..100_000 {
            index.subscribe(ConnId(conn), "big");
        }
        for conn in 1..100_000 {
            assert!(index.unsubscribe(ConnId(conn), "big"));
        }
        assert_eq!(subscribers(&index, "big"), [0]);
        let capacity = index.exact.get("big").map_or(0, HashSet::capacity);
        assert!(capacity <= 4 * MIN_SHRINK_CAPACITY, "capacity {capacity} kept");
    }
}
