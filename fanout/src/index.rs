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
//! A subscription may carry a compiled filter ([`wse_protocol::filter::Filter`], PROTOCOL.md
//! §7 "Filters"), kept beside the subscriber set of its topic or pattern and dropped with the
//! subscription. [`TopicIndex::for_each_subscriber_where`] asks the caller whether a filter
//! lets the publication through; a connection that several subscriptions match receives it
//! when any one of them does. A topic without filtered subscribers pays nothing for them.
//!
//! Left to others: access control and the per-connection subscription limit (the shard),
//! remembering which patterns a connection holds so they can be dropped when it closes (the
//! shard's connection table), and compiling and evaluating filters (`protocol`, the shard).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use wse_protocol::filter::Filter;

use crate::glob::{glob_match, has_wildcards};
use crate::ids::ConnId;

/// The connections subscribed through one topic or pattern, and the filters some of them
/// set on that subscription.
#[derive(Debug, Default)]
struct Subscribers {
    /// Every subscribed connection, filtered or not.
    conns: HashSet<ConnId>,
    /// Filters by connection; every key is also in `conns`. Empty for most topics.
    filters: HashMap<ConnId, Box<Filter>>,
}

impl Subscribers {
    fn len(&self) -> usize {
        self.conns.len()
    }

    fn contains(&self, conn: &ConnId) -> bool {
        self.conns.contains(conn)
    }

    /// Whether `conn`'s subscription here lets the publication through: it has no filter, or
    /// `passes` accepts its filter.
    fn admits(&self, conn: &ConnId, passes: &mut impl FnMut(&Filter) -> bool) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        self.filters.get(conn).is_none_or(|filter| passes(filter))
    }
}

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
    ///
    /// An existing subscription keeps its filter; see [`TopicIndex::set_filter`].
    pub fn subscribe(&mut self, conn: ConnId, pattern: &str) -> bool {
        let table = self.table_mut(pattern);
        if let Some(subscribers) = table.get_mut(pattern) {
            return subscribers.conns.insert(conn);
        }
        let subscribers = Subscribers { conns: HashSet::from([conn]), filters: HashMap::new() };
        table.insert(pattern.into(), subscribers);
        true
    }

    /// Sets (`Some`) or removes (`None`) the filter of `conn`'s subscription to exactly
    /// `pattern`. Returns `false`, and keeps nothing, when there is no such subscription.
    pub fn set_filter(&mut self, conn: ConnId, pattern: &str, filter: Option<Box<Filter>>) -> bool {
        let Some(subscribers) = self.table_mut(pattern).get_mut(pattern) else { return false };
        if !subscribers.contains(&conn) {
            return false;
        }
        match filter {
            Some(filter) => subscribers.filters.insert(conn, filter),
            None => subscribers.filters.remove(&conn),
        };
        true
    }

    /// Whether `conn`'s subscription to exactly `pattern` carries a filter.
    pub fn is_filtered(&self, conn: ConnId, pattern: &str) -> bool {
        let table = if has_wildcards(pattern) { &self.globs } else { &self.exact };
        table.get(pattern).is_some_and(|s| s.filters.contains_key(&conn))
    }

    /// Removes the subscription of `conn` to exactly `pattern`, with its filter (other
    /// patterns that match the same topics are untouched). Returns `true` when there was one.
    /// O(1) whatever the number of subscribers; the entry is dropped with its last subscriber.
    pub fn unsubscribe(&mut self, conn: ConnId, pattern: &str) -> bool {
        let table = self.table_mut(pattern);
        let Some(subscribers) = table.get_mut(pattern) else {
            return false;
        };
        let removed = subscribers.conns.remove(&conn);
        subscribers.filters.remove(&conn);
        if subscribers.conns.is_empty() {
            table.remove(pattern);
        } else if removed {
            shrink_if_sparse(subscribers);
        }
        removed
    }

    /// Calls `f` once for every connection subscribed to `topic`, by its exact name or by any
    /// glob, in no particular order, filters or not. A connection that several subscriptions
    /// match is still reported once.
    ///
    /// Allocates nothing unless a glob matches; when several subscriptions match, the
    /// duplicate check costs a few hash probes per connection outside the largest set.
    pub fn for_each_subscriber(&self, topic: &str, f: impl FnMut(ConnId)) {
        self.for_each_subscriber_where(topic, |_| true, f);
    }

    /// Like [`for_each_subscriber`](Self::for_each_subscriber), but a connection is reported
    /// only when one of its subscriptions that match `topic` has no filter or has one that
    /// `passes` accepts. `passes` is called only for filtered subscriptions, at most once per
    /// subscription. Returns how many connections filters kept from being reported.
    pub fn for_each_subscriber_where(
        &self,
        topic: &str,
        mut passes: impl FnMut(&Filter) -> bool,
        mut f: impl FnMut(ConnId),
    ) -> usize {
        match self.matching(topic) {
            Matches::Single(None) => 0,
            Matches::Single(Some(set)) if set.filters.is_empty() => {
                set.conns.iter().copied().for_each(f);
                0
            }
            Matches::Single(Some(set)) => {
                let mut filtered_out = 0;
                for conn in &set.conns {
                    if set.admits(conn, &mut passes) {
                        f(*conn);
                    } else {
                        filtered_out += 1;
                    }
                }
                filtered_out
            }
            Matches::Several(sets) => emit_distinct(sets, &mut passes, &mut f),
        }
    }

    /// Whether [`for_each_subscriber_where`](Self::for_each_subscriber_where) would report
    /// `conn` for `topic`: one of its subscriptions that match `topic` has no filter, or one
    /// that `passes` accepts. For replaying to one connection what live delivery would have
    /// given it.
    pub fn admits(
        &self,
        conn: ConnId,
        topic: &str,
        mut passes: impl FnMut(&Filter) -> bool,
    ) -> bool {
        let exact = self.exact.get(topic).into_iter();
        let globs = self.globs.iter().filter(|(p, _)| glob_match(p, topic)).map(|(_, s)| s);
        exact.chain(globs).any(|set| set.contains(&conn) && set.admits(&conn, &mut passes))
    }

    /// How many distinct connections [`for_each_subscriber`](Self::for_each_subscriber) would
    /// report for `topic`. O(1) when at most one subscription entry matches.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        match self.matching(topic) {
            Matches::Single(set) => set.map_or(0, Subscribers::len),
            Matches::Several(sets) => {
                let mut count = 0;
                emit_distinct(sets, &mut |_| true, &mut |_| count += 1);
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

/// Calls `f` once per connection found in any of `sets` that one of its sets admits (see
/// [`Subscribers::admits`]); returns how many were found but admitted by none.
///
/// Each connection is decided where it is first met, the largest set first: admitted there,
/// or else by any later set that holds it (probed only then, so unfiltered sets cost no
/// extra probe). With few sets, a connection of a later set counts as met before when an
/// earlier set holds it, which needs no allocation; with many, a scratch set of those
/// already met keeps the cost linear.
fn emit_distinct(
    mut sets: Vec<&Subscribers>,
    passes: &mut impl FnMut(&Filter) -> bool,
    f: &mut impl FnMut(ConnId),
) -> usize {
    sets.sort_unstable_by_key(|set| Reverse(set.len()));
    let mut filtered_out = 0;
    let mut decide = |at: usize, conn: &ConnId| {
        let later = &sets[at + 1..];
        if sets[at].admits(conn, passes)
            || later.iter().any(|s| s.contains(conn) && s.admits(conn, passes))
        {
            f(*conn);
        } else {
            filtered_out += 1;
        }
    };

    if sets.len() <= PROBE_LIMIT {
        for (i, set) in sets.iter().enumerate() {
            let earlier = &sets[..i];
            for conn in set.conns.iter().filter(|c| !earlier.iter().any(|e| e.contains(c))) {
                decide(i, conn);
            }
        }
        return filtered_out;
    }
    let mut seen = HashSet::new();
    for (i, set) in sets.iter().enumerate() {
        for conn in &set.conns {
            if i == 0 || (!sets[0].contains(conn) && seen.insert(*conn)) {
                decide(i, conn);
            }
        }
    }
    filtered_out
}

/// Gives memory back once a set has shrunk to a quarter of its capacity, so a topic that
/// once had 100,000 subscribers does not keep their room. Amortised O(1) per removal.
fn shrink_if_sparse(subscribers: &mut Subscribers) {
    let capacity = subscribers.conns.capacity();
    if capacity > MIN_SHRINK_CAPACITY && subscribers.len() * 4 < capacity {
        subscribers.conns.shrink_to(subscribers.len() * 2);
    }
    let capacity = subscribers.filters.capacity();
    if capacity > MIN_SHRINK_CAPACITY && subscribers.filters.len() * 4 < capacity {
        subscribers.filters.shrink_to(subscribers.filters.len() * 2);
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

    fn filter(criteria: &str) -> Option<Box<Filter>> {
        let criteria: sonic_rs::Value = sonic_rs::from_str(criteria).expect("JSON");
        let mut regexes = wse_protocol::filter::RegexCache::new();
        Some(Box::new(Filter::compile(&criteria, &mut regexes).expect("criteria compile")))
    }

    /// Connections reported for a publication whose envelope is `doc`, and the number kept
    /// back by filters.
    fn passing(index: &TopicIndex, topic: &str, doc: &str) -> (Vec<u64>, usize) {
        let doc = wse_protocol::filter::parse_document(doc.as_bytes()).expect("JSON");
        let mut found = Vec::new();
        let out = index.for_each_subscriber_where(topic, |f| f.matches(&doc), |c| found.push(c.0));
        found.sort_unstable();
        (found, out)
    }

    const X1: &str = r#"{"p":{"x":1}}"#;
    const X2: &str = r#"{"p":{"x":2}}"#;

    #[test]
    fn filtered_subscriber_receives_only_matching_publications() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "news");
        index.subscribe(ConnId(2), "news");
        assert!(index.set_filter(ConnId(2), "news", filter(r#"{"p.x":1}"#)));
        assert!(index.is_filtered(ConnId(2), "news") && !index.is_filtered(ConnId(1), "news"));
        assert_eq!(passing(&index, "news", X1), (vec![1, 2], 0));
        assert_eq!(passing(&index, "news", X2), (vec![1], 1));
        assert_eq!(subscribers(&index, "news"), [1, 2], "the plain walk ignores filters");
    }

    #[test]
    fn filters_are_asked_only_for_filtered_subscriptions() {
        let mut index = TopicIndex::new();
        for conn in 0..10 {
            index.subscribe(ConnId(conn), "a");
        }
        index.set_filter(ConnId(3), "a", filter(r#"{"p.x":2}"#));
        let mut asked = 0;
        let mut reported = 0;
        let out = index.for_each_subscriber_where(
            "a",
            |_| {
                asked += 1;
                false
            },
            |_| reported += 1,
        );
        assert_eq!((asked, reported, out), (1, 9, 1));
    }

    #[test]
    fn any_matching_subscription_of_a_connection_admits_it_once() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "user:*");
        index.subscribe(ConnId(1), "user:1");
        index.set_filter(ConnId(1), "user:*", filter(r#"{"p.x":1}"#));
        assert_eq!(passing(&index, "user:1", X2), (vec![1], 0), "the unfiltered one admits");

        index.set_filter(ConnId(1), "user:1", filter(r#"{"p.x":3}"#));
        assert_eq!(passing(&index, "user:1", X1), (vec![1], 0), "the glob's filter admits");
        assert_eq!(passing(&index, "user:1", X2), (vec![], 1), "neither admits: counted once");
    }

    #[test]
    fn filters_hold_across_many_overlapping_patterns() {
        let mut index = TopicIndex::new();
        let patterns = ["*", "a*", "*z", "a?c*", "?b*", "ab*", "*c*"];
        for (i, pattern) in patterns.iter().enumerate() {
            index.subscribe(ConnId(1), pattern);
            index.set_filter(ConnId(1), pattern, filter(&format!(r#"{{"p.x":{}}}"#, i + 10)));
            index.subscribe(ConnId(i as u64 + 10), pattern);
        }
        index.set_filter(ConnId(12), patterns[2], filter(r#"{"p.x":2}"#));
        let (found, out) = passing(&index, "abcz", X2);
        assert_eq!((found, out), (vec![10, 11, 12, 13, 14, 15, 16], 1));
        let (found, out) = passing(&index, "abcz", r#"{"p":{"x":16}}"#);
        assert_eq!((found, out), (vec![1, 10, 11, 13, 14, 15, 16], 1));
    }

    #[test]
    fn unsubscribe_drops_the_filter() {
        let mut index = TopicIndex::new();
        index.subscribe(ConnId(1), "news");
        index.subscribe(ConnId(2), "news");
        index.set_filter(ConnId(1), "news", filter(r#"{"p.x":1}"#));
        assert_eq!(passing(&index, "news", X2), (vec![2], 1));
        index.unsubscribe(ConnId(1), "news");
        index.subscribe(ConnId(1), "news");
        assert!(!index.is_filtered(ConnId(1), "news"));
        assert_eq!(passing(&index, "news", X2), (vec![1, 2], 0));
    }

    #[test]
    fn set_filter_needs_a_subscription_and_none_clears() {
        let mut index = TopicIndex::new();
        assert!(!index.set_filter(ConnId(1), "news", filter("{}")));
        index.subscribe(ConnId(2), "news");
        assert!(!index.set_filter(ConnId(1), "news", filter("{}")));
        assert!(!index.is_filtered(ConnId(1), "news"));
        assert!(index.set_filter(ConnId(2), "news", filter(r#"{"p.x":1}"#)));
        assert!(index.set_filter(ConnId(2), "news", None));
        assert_eq!(passing(&index, "news", X2), (vec![2], 0));
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
        let capacity = index.exact.get("big").map_or(0, |s| s.conns.capacity());
        assert!(capacity <= 4 * MIN_SHRINK_CAPACITY, "capacity {capacity} kept");
    }
}
