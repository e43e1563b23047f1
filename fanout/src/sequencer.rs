//! Topic positions: the `(tp, e, o)` stamp on every topic publication (`PROTOCOL.md` §3).
//!
//! Place in the data path: a publication enters fan-out on its topic's owner shard (see
//! [`crate::owner`]), is stamped here, encoded once with its stamp, and only then sent to every
//! shard. Within one epoch a topic's offsets are consecutive from 0, so a client that sees a
//! jump knows it missed something; a new epoch tells it the topic's history restarted and its
//! old offsets mean nothing any more.
//!
//! A topic nobody publishes to for a while is forgotten by [`TopicSequencer::evict_idle`]; its
//! next publication opens a new epoch. The sequencer never reads the clock: the shard passes
//! the time in, so tests drive it with made-up instants.
//!
//! Left to others: the epoch source (the shard's random generator, through the `new_epoch`
//! callback), the retained history for recovery, and the wire form of the epoch (8 lowercase
//! hex digits, written by the envelope encoder).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where one publication sits in its topic's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The topic (`tp`), shared with the sequencer's own entry rather than copied.
    pub topic: Arc<str>,
    /// The topic's epoch (`e`): changes whenever the topic's history restarts.
    pub epoch: u32,
    /// The publication's offset (`o`) within the epoch: 0 for the first, then +1 each.
    pub offset: u64,
}

/// The stamping state of every topic owned by one shard.
#[derive(Debug, Default)]
pub struct TopicSequencer {
    /// Topics published within the idle TTL. The key and [`Position::topic`] share one
    /// allocation.
    live: HashMap<Arc<str>, Position>,
    /// The last epoch of topics evicted by the latest TTL or so, so that a topic restarting
    /// soon after eviction never gets its previous epoch back. Each entry is dropped by the
    /// first [`evict_idle`](TopicSequencer::evict_idle) one TTL after it was made, which
    /// bounds this map by the topics evicted within two TTLs.
    retired: HashMap<Arc<str>, Retired>,
}

impl TopicSequencer {
    /// A sequencer that knows no topic yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps the next publication of `topic`, published at `now`.
    ///
    /// A topic the sequencer does not know (first publication, or first since eviction) starts
    /// at offset 0 of an epoch from `new_epoch`, which is called only then. Should the callback
    /// return the epoch the topic had before eviction, the sequencer picks the next value
    /// instead, so a restarted topic is always recognisable as one.
    pub fn stamp(&mut self, topic: &str, now: Instant, new_epoch: impl FnOnce() -> u32) -> Stamp {
        if let Some(position) = self.live.get_mut(topic) {
            return position.advance(now);
        }

        let previous = self.retired.remove(topic).map(|retired| retired.epoch);
        let epoch = distinct_epoch(new_epoch(), previous);
        let topic: Arc<str> = topic.into();
        let mut position = Position { topic: topic.clone(), epoch, next_offset: 0, last: now };
        let stamp = position.advance(now);
        self.live.insert(topic, position);
        stamp
    }

    /// A publication of `topic` was stamped elsewhere, under `epoch` (by Redis, the same on
    /// every instance). The topic's local position, if any, is retired, so that its next
    /// local stamp opens a new epoch that differs from `epoch`: clients then see the switch
    /// to local stamping as an epoch change.
    pub fn yield_to(&mut self, topic: &Arc<str>, epoch: u32, now: Instant) {
        self.live.remove(&**topic);
        self.retired.insert(Arc::clone(topic), Retired { epoch, since: now });
    }

    /// The epoch of `topic` and the offset its next publication will get, or `None` when the
    /// topic is not live (never published, or evicted).
    pub fn position(&self, topic: &str) -> Option<(u32, u64)> {
        self.live.get(topic).map(|position| (position.epoch, position.next_offset))
    }

    /// Forgets every topic last published more than `ttl` before `now`, so that its next
    /// publication opens a new epoch. Returns how many topics were forgotten.
    pub fn evict_idle(&mut self, now: Instant, ttl: Duration) -> usize {
        self.retired.retain(|_, retired| now.saturating_duration_since(retired.since) <= ttl);

        let before = self.live.len();
        let retired = &mut self.retired;
        self.live.retain(|topic, position| {
            let idle = now.saturating_duration_since(position.last) > ttl;
            if idle {
                retired.insert(topic.clone(), Retired { epoch: position.epoch, since: now });
            }
            !idle
        });
        before - self.live.len()
    }

    /// The number of live topics.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no topic is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// The stamping state of one live topic.
#[derive(Debug)]
struct Position {
    /// The topic name, shared with the map key and handed out in every [`Stamp`].
    topic: Arc<str>,
    /// The epoch all stamps carry until the topic is evicted.
    epoch: u32,
    /// The offset of the next publication. A `u64` cannot run out: at a billion publications
    /// a second it would take five centuries.
    next_offset: u64,
    /// When the topic was last published; decides eviction.
    last: Instant,
}

impl Position {
    /// Stamps one publication at `now` and moves to the next offset.
    fn advance(&mut self, now: Instant) -> Stamp {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.last = now;
        Stamp { topic: self.topic.clone(), epoch: self.epoch, offset }
    }
}

/// The epoch an evicted topic had, kept for a while after eviction.
#[derive(Debug)]
struct Retired {
    /// The epoch the topic must not reuse.
    epoch: u32,
    /// When the topic was evicted.
    since: Instant,
}

/// `candidate`, unless it equals `previous`, in which case the next value (wrapping).
fn distinct_epoch(candidate: u32, previous: Option<u32>) -> u32 {
    if previous == Some(candidate) {
        candidate.wrapping_add(1)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn first_publication_gets_fresh_epoch_and_offset_zero() {
        let mut sequencer = TopicSequencer::new();
        let stamp = sequencer.stamp("news", Instant::now(), || 0xabcd);
        assert_eq!(&*stamp.topic, "news");
        assert_eq!((stamp.epoch, stamp.offset), (0xabcd, 0));
    }

    #[test]
    fn later_publications_get_consecutive_offsets_in_the_same_epoch() {
        let mut sequencer = TopicSequencer::new();
        let now = Instant::now();
        let mut epochs = 0;
        let offsets: Vec<_> = (0..5)
            .map(|_| {
                let stamp = sequencer.stamp("news", now, || {
                    epochs += 1;
                    7
                });
                (stamp.epoch, stamp.offset)
            })
            .collect();
        assert_eq!(offsets, [(7, 0), (7, 1), (7, 2), (7, 3), (7, 4)]);
        assert_eq!(epochs, 1);
    }

    #[test]
    fn topics_are_sequenced_independently() {
        let mut sequencer = TopicSequencer::new();
        let now = Instant::now();
        sequencer.stamp("a", now, || 1);
        sequencer.stamp("a", now, || 1);
        let b = sequencer.stamp("b", now, || 2);
        assert_eq!((b.epoch, b.offset), (2, 0));
        assert_eq!(sequencer.len(), 2);
    }

    #[test]
    fn position_reports_epoch_and_next_offset() {
        let mut sequencer = TopicSequencer::new();
        assert_eq!(sequencer.position("news"), None);
        sequencer.stamp("news", Instant::now(), || 9);
        sequencer.stamp("news", Instant::now(), || 9);
        assert_eq!(sequencer.position("news"), Some((9, 2)));
    }

    #[test]
    fn evicts_only_topics_idle_longer_than_ttl() {
        let mut sequencer = TopicSequencer::new();
        let start = Instant::now();
        sequencer.stamp("old", start, || 1);
        sequencer.stamp("fresh", start + TTL, || 2);
        assert_eq!(sequencer.evict_idle(start + TTL, TTL), 0);
        assert_eq!(sequencer.evict_idle(start + TTL + Duration::from_secs(1), TTL), 1);
        assert_eq!(sequencer.position("old"), None);
        assert_eq!(sequencer.position("fresh"), Some((2, 1)));
        assert_eq!(sequencer.len(), 1);
    }

    #[test]
    fn publication_after_eviction_starts_a_new_epoch_at_zero() {
        let mut sequencer = TopicSequencer::new();
        let start = Instant::now();
        sequencer.stamp("news", start, || 1);
        sequencer.stamp("news", start, || 1);
        let later = start + 2 * TTL;
        sequencer.evict_idle(later, TTL);
        let stamp = sequencer.stamp("news", later, || 5);
        assert_eq!((stamp.epoch, stamp.offset), (5, 0));
    }

    #[test]
    fn new_epoch_never_repeats_the_evicted_one() {
        let mut sequencer = TopicSequencer::new();
        let start = Instant::now();
        let old = sequencer.stamp("news", start, || 42).epoch;
        let later = start + 2 * TTL;
        sequencer.evict_idle(later, TTL);
        let new = sequencer.stamp("news", later, || 42).epoch;
        assert_ne!(new, old);
    }

    #[test]
    fn epoch_perturbation_wraps_at_the_top() {
        assert_eq!(distinct_epoch(u32::MAX, Some(u32::MAX)), 0);
        assert_eq!(distinct_epoch(3, Some(4)), 3);
        assert_eq!(distinct_epoch(3, None), 3);
    }

    #[test]
    fn after_a_foreign_stamp_the_next_local_one_opens_a_different_epoch() {
        let mut sequencer = TopicSequencer::new();
        let now = Instant::now();
        let news: Arc<str> = Arc::from("news");
        sequencer.stamp("news", now, || 5);
        sequencer.yield_to(&news, 9, now);
        assert_eq!(sequencer.position("news"), None);
        let stamp = sequencer.stamp("news", now, || 9);
        assert_eq!((stamp.epoch, stamp.offset), (10, 0), "never the foreign epoch");
    }

    #[test]
    fn retired_epochs_are_forgotten_one_ttl_after_eviction() {
        let mut sequencer = TopicSequencer::new();
        let start = Instant::now();
        sequencer.stamp("news", start, || 42);
        sequencer.evict_idle(start + 2 * TTL, TTL);
        assert_eq!(sequencer.retired.len(), 1);
        sequencer.evict_idle(start + 4 * TTL, TTL);
        assert!(sequencer.retired.is_empty());
        assert!(sequencer.is_empty());
    }
}
