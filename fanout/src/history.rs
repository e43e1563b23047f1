//! Topic history for recovery after reconnect (PROTOCOL.md §7 "Recovery", §10).
//!
//! Place: `rings → shard (deliver) → **history**`, and `subscribe with recover → **history** →
//! replay into the subscriber's queue`. Every shard receives every publication, in offset
//! order per topic, over the FIFO rings, so every shard keeps its own [`History`] of the same
//! reference-counted messages: the frame bytes exist once, each shard holds an index of them.
//! A subscribe with `recover: true` then replays on the subscriber's own shard, in the same
//! synchronous step that adds the subscription, so no publication can fall between the
//! replay and live delivery.
//!
//! Per topic the history holds the messages of the current epoch with consecutive offsets,
//! oldest first, bounded by a message count, a byte count and an age; a topic's position (its
//! epoch and newest offset) outlives its messages for a while, so that a client the history
//! no longer reaches can still be told where the topic stands. Over all topics a byte budget
//! applies: the least recently published topic gives up its oldest message first.
//!
//! Accounting: each message is charged the bytes its caller names (the shard charges its
//! share of the shared frame) plus [`ENTRY_OVERHEAD`], this index's own record of it.
//! Positions are not charged: like the owner's sequencer they are bounded by the topics
//! published within the TTL.
//!
//! Sans-I/O: no clock (every call takes `now`), no allocation beyond the index itself, generic
//! over the retained message `M` so that tests use plain numbers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds of one shard's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept per topic (PROTOCOL.md §10: 128).
    pub messages_per_topic: usize,
    /// Charged bytes kept per topic.
    pub bytes_per_topic: usize,
    /// Messages older than this are dropped, and a topic idle this long is forgotten (its
    /// next publication opens a new epoch at the owner). PROTOCOL.md §10: 300 s.
    pub ttl: Duration,
    /// Charged bytes over all topics.
    pub budget: usize,
}

/// Why messages left the history; [`Evictions`] counts them by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The topic held [`Limits::messages_per_topic`] messages.
    Count,
    /// The topic held [`Limits::bytes_per_topic`] bytes.
    TopicBytes,
    /// The message was older than [`Limits::ttl`].
    Age,
    /// The history as a whole was over [`Limits::budget`].
    Budget,
    /// The topic started a new epoch (or skipped offsets), so its old messages mean nothing.
    Restart,
}

impl Reason {
    /// Every reason, in [`Evictions`] index order.
    pub const ALL: [Reason; 5] =
        [Reason::Count, Reason::TopicBytes, Reason::Age, Reason::Budget, Reason::Restart];
}

/// Messages evicted by one call, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions(pub [u64; Reason::ALL.len()]);

impl Evictions {
    /// The count for `reason`.
    pub fn of(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }

    /// Whether nothing was evicted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }

    fn add(&mut self, reason: Reason, n: u64) {
        self.0[reason as usize] += n;
    }
}

/// A topic's place: its epoch and the offset of its newest publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The topic's epoch (`e`).
    pub epoch: u32,
    /// The newest offset (`o`) this history has seen.
    pub offset: u64,
}

/// Why a recovery cannot replay (the answer is `recovered: false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The topic has no known position: never published, or idle past the TTL.
    UnknownTopic,
    /// The client's epoch is not the topic's current one.
    EpochChanged,
    /// The client claims an offset the topic has not reached.
    Ahead,
    /// Messages after the client's offset are no longer retained.
    NotRetained,
    /// More messages are missing than a replay may carry.
    TooMany,
}

/// The answer to "what did I miss since `(epoch, offset)`?".
#[derive(Debug)]
pub enum Recovery<'a, M> {
    /// Everything after the client's offset is retained: these messages, oldest first, bring
    /// it to `position`. Empty when the client is up to date.
    Replay {
        /// Where the topic stands; the last message of `messages` is at this offset.
        position: Position,
        /// The messages to replay, in offset order.
        messages: Vec<&'a M>,
    },
    /// Nothing can be replayed; `position` is where the topic stands, when known.
    Unrecoverable {
        /// Why not.
        why: Unrecoverable,
        /// The topic's current position, for the client to resynchronise to.
        position: Option<Position>,
    },
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Topics with a known position.
    pub topics: usize,
    /// Messages retained.
    pub messages: usize,
    /// Charged bytes of the retained messages.
    pub bytes: usize,
}

/// One shard's history of every topic; see the module docs.
#[derive(Debug)]
pub struct History<M> {
    limits: Limits,
    topics: HashMap<Arc<str>, Log<M>>,
    /// Topics holding messages, least recently published first. A record is live while its
    /// stamp is its topic's `stamp`; stale records are skipped and swept.
    holding: VecDeque<Record>,
    /// Topics holding no message (only a position), least recently published first.
    bare: VecDeque<Record>,
    /// Stamp of the latest [`History::record`] call.
    clock: u64,
    /// Messages retained over all topics.
    messages: usize,
    /// Charged bytes over all topics.
    bytes: usize,
}

/// One topic's retained messages and position.
#[derive(Debug)]
struct Log<M> {
    position: Position,
    /// When the newest publication was recorded.
    last_at: Instant,
    /// The stamp of the latest record, which names this topic's live queue record.
    stamp: u64,
    /// Messages with consecutive offsets ending at `position.offset`, oldest first.
    entries: VecDeque<Entry<M>>,
    /// Charged bytes of `entries`.
    bytes: usize,
}

/// One retained message; its offset follows from its place in the log.
#[derive(Debug)]
struct Entry<M> {
    at: Instant,
    charge: usize,
    message: M,
}

/// A place in one of the LRU queues.
#[derive(Debug)]
struct Record {
    topic: Arc<str>,
    stamp: u64,
}

impl<M> History<M> {
    /// An empty history with `limits`.
    pub fn new(limits: Limits) -> History<M> {
        History {
            limits,
            topics: HashMap::new(),
            holding: VecDeque::new(),
            bare: VecDeque::new(),
            clock: 0,
            messages: 0,
            bytes: 0,
        }
    }

    /// Records the publication of `topic` at `(epoch, offset)`, received at `now`, charging
    /// `bytes` plus [`ENTRY_OVERHEAD`]. Publications must come in offset order per topic (the
    /// rings guarantee it): a repeated or older offset is ignored, a skipped one or a new
    /// epoch restarts the topic's messages. Returns what the limits evicted.
    pub fn record(
        &mut self,
        topic: &Arc<str>,
        epoch: u32,
        offset: u64,
        message: M,
        bytes: usize,
        now: Instant,
    ) -> Evictions {
        let mut evicted = Evictions::default();
        self.clock += 1;
        let stamp = self.clock;
        let charge = bytes.saturating_add(ENTRY_OVERHEAD);
        let entry = Entry { at: now, charge, message };
        let position = Position { epoch, offset };
        match self.topics.get_mut(&**topic) {
            Some(log) => {
                let same_epoch = log.position.epoch == epoch;
                if same_epoch && offset <= log.position.offset {
                    return evicted;
                }
                if !same_epoch || offset != log.position.offset + 1 {
                    evicted.add(Reason::Restart, log.entries.len() as u64);
                    self.messages -= log.entries.len();
                    self.bytes -= log.bytes;
                    log.entries.clear();
                    log.bytes = 0;
                }
                log.position = position;
                log.last_at = now;
                log.stamp = stamp;
                log.bytes += charge;
                log.entries.push_back(entry);
            }
            None => {
                let log = Log {
                    position,
                    last_at: now,
                    stamp,
                    entries: VecDeque::from([entry]),
                    bytes: charge,
                };
                self.topics.insert(Arc::clone(topic), log);
            }
        }
        self.messages += 1;
        self.bytes += charge;
        self.holding.push_back(Record { topic: Arc::clone(topic), stamp });

        self.trim_topic(topic, now, &mut evicted);
        self.enforce_budget(&mut evicted);
        self.compact();
        evicted
    }

    /// What a client that last saw `(epoch, offset)` of `topic` missed, at `now`: the
    /// retained messages after `offset` if they reach back to it and are at most
    /// `max_replay`, else why not and where the topic stands.
    pub fn recover(
        &self,
        topic: &str,
        epoch: u32,
        offset: u64,
        max_replay: usize,
        now: Instant,
    ) -> Recovery<'_, M> {
        let unrecoverable = |why, position| Recovery::Unrecoverable { why, position };
        let Some(log) = self.topics.get(topic) else {
            return unrecoverable(Unrecoverable::UnknownTopic, None);
        };
        let position = log.position;
        if position.epoch != epoch {
            return unrecoverable(Unrecoverable::EpochChanged, Some(position));
        }
        if offset > position.offset {
            return unrecoverable(Unrecoverable::Ahead, Some(position));
        }
        let missing = position.offset - offset;
        if missing > max_replay as u64 {
            return unrecoverable(Unrecoverable::TooMany, Some(position));
        }
        let missing = missing as usize;
        if missing > log.entries.len() {
            return unrecoverable(Unrecoverable::NotRetained, Some(position));
        }
        let first = log.entries.len() - missing;
        let fresh = |e: &Entry<M>| now.saturating_duration_since(e.at) <= self.limits.ttl;
        if log.entries.get(first).is_some_and(|e| !fresh(e)) {
            return unrecoverable(Unrecoverable::NotRetained, Some(position));
        }
        let messages = log.entries.range(first..).map(|e| &e.message).collect();
        Recovery::Replay { position, messages }
    }

    /// Where `topic` stands, if known.
    pub fn position(&self, topic: &str) -> Option<Position> {
        self.topics.get(topic).map(|log| log.position)
    }

    /// Drops messages older than the TTL from topics that went quiet, and forgets topics idle
    /// for longer than the TTL plus [`FORGET_MARGIN`]. Call it every second or so; the work
    /// is proportional to what it evicts.
    pub fn expire(&mut self, now: Instant) -> Evictions {
        let mut evicted = Evictions::default();
        let ttl = self.limits.ttl;
        while let Some(record) = self.holding.front() {
            let Some(log) = self.live_log(record) else {
                self.holding.pop_front();
                continue;
            };
            if now.saturating_duration_since(log.last_at) <= ttl {
                break;
            }
            let topic = Arc::clone(&record.topic);
            self.drop_entries(&topic, Reason::Age, &mut evicted);
            // The topic's live record is the front one: it now belongs in `bare`.
            self.move_to_bare();
        }
        while let Some(record) = self.bare.front() {
            let Some(log) = self.live_log(record) else {
                self.bare.pop_front();
                continue;
            };
            if now.saturating_duration_since(log.last_at) <= ttl + FORGET_MARGIN {
                break;
            }
            let topic = Arc::clone(&record.topic);
            self.bare.pop_front();
            if let Some(log) = self.topics.remove(&topic) {
                self.messages -= log.entries.len();
                self.bytes -= log.bytes;
            }
        }
        self.compact();
        evicted
    }

    /// Counts for gauges.
    pub fn stats(&self) -> Stats {
        Stats { topics: self.topics.len(), messages: self.messages, bytes: self.bytes }
    }

    /// The limits this history was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The topic's log if `record` is its live record.
    fn live_log(&self, record: &Record) -> Option<&Log<M>> {
        self.topics.get(&record.topic).filter(|log| log.stamp == record.stamp)
    }

    /// Applies the per-topic limits (count, bytes, age) to `topic`.
    fn trim_topic(&mut self, topic: &str, now: Instant, evicted: &mut Evictions) {
        let limits = self.limits;
        let Some(log) = self.topics.get_mut(topic) else { return };
        while let Some(front) = log.entries.front() {
            let reason = if log.entries.len() > limits.messages_per_topic {
                Reason::Count
            } else if log.bytes > limits.bytes_per_topic {
                Reason::TopicBytes
            } else if now.saturating_duration_since(front.at) > limits.ttl {
                Reason::Age
            } else {
                break;
            };
            let charge = front.charge;
            log.entries.pop_front();
            log.bytes -= charge;
            self.messages -= 1;
            self.bytes -= charge;
            evicted.add(reason, 1);
        }
    }

    /// While over the budget, takes the oldest message of the least recently published
    /// topic that holds any.
    fn enforce_budget(&mut self, evicted: &mut Evictions) {
        while self.bytes > self.limits.budget {
            let Some(record) = self.holding.front() else { return };
            let live = self.live_log(record).is_some_and(|log| !log.entries.is_empty());
            if !live {
                self.move_to_bare();
                continue;
            }
            let topic = Arc::clone(&record.topic);
            let Some(log) = self.topics.get_mut(&topic) else { return };
            if let Some(entry) = log.entries.pop_front() {
                log.bytes -= entry.charge;
                self.messages -= 1;
                self.bytes -= entry.charge;
                evicted.add(Reason::Budget, 1);
            }
        }
    }

    /// Drops every message of `topic`, keeping its position.
    fn drop_entries(&mut self, topic: &str, reason: Reason, evicted: &mut Evictions) {
        let Some(log) = self.topics.get_mut(topic) else { return };
        evicted.add(reason, log.entries.len() as u64);
        self.messages -= log.entries.len();
        self.bytes -= log.bytes;
        log.entries = VecDeque::new();
        log.bytes = 0;
    }

    /// Moves the front record of `holding` to `bare` if it is live, else discards it.
    fn move_to_bare(&mut self) {
        let Some(record) = self.holding.pop_front() else { return };
        if self.live_log(&record).is_some() {
            self.bare.push_back(record);
        }
    }

    /// Sweeps stale records once they clearly outnumber the topics: amortised O(1) per call,
    /// and the queues never hold much more than two records per topic.
    fn compact(&mut self) {
        if self.holding.len() + self.bare.len() < 2 * self.topics.len() + COMPACT_SLACK {
            return;
        }
        let topics = &self.topics;
        let live = |r: &Record| topics.get(&r.topic).is_some_and(|log| log.stamp == r.stamp);
        self.holding.retain(live);
        self.bare.retain(live);
    }
}

/// Bytes this index charges per retained message on top of the caller's bytes: its own
/// record (offset, time, charge) plus the hash-map and queue slots, rounded up.
pub const ENTRY_OVERHEAD: usize = 64;

/// How much longer than the TTL a topic's position is remembered. The owner's sequencer
/// forgets a topic one TTL after its last publication and gives its next one a new epoch; a
/// shard that forgot the position first could not tell a client where the old epoch stood.
pub const FORGET_MARGIN: Duration = Duration::from_secs(5);

/// Records allowed beyond two per topic before stale ones are swept.
const COMPACT_SLACK: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn limits() -> Limits {
        Limits { messages_per_topic: 4, bytes_per_topic: 1 << 20, ttl: TTL, budget: 1 << 30 }
    }

    fn topic(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn replayed(recovery: Recovery<'_, u64>) -> Vec<u64> {
        match recovery {
            Recovery::Replay { messages, .. } => messages.into_iter().copied().collect(),
            Recovery::Unrecoverable { why, .. } => panic!("not recoverable: {why:?}"),
        }
    }

    fn refusal(recovery: Recovery<'_, u64>) -> (Unrecoverable, Option<Position>) {
        match recovery {
            Recovery::Unrecoverable { why, position } => (why, position),
            Recovery::Replay { messages, .. } => panic!("replayed {} messages", messages.len()),
        }
    }

    fn publish(h: &mut History<u64>, t: &Arc<str>, epoch: u32, offsets: std::ops::Range<u64>) {
        let now = Instant::now();
        for o in offsets {
            h.record(t, epoch, o, o, 100, now);
        }
    }

    #[test]
    fn replays_what_came_after_the_clients_offset_in_order() {
        let mut h = History::new(limits());
        let news = topic("news");
        publish(&mut h, &news, 7, 0..3);
        assert_eq!(replayed(h.recover("news", 7, 0, 500, Instant::now())), [1, 2]);
        assert_eq!(replayed(h.recover("news", 7, 2, 500, Instant::now())), Vec::<u64>::new());
        assert_eq!(h.position("news"), Some(Position { epoch: 7, offset: 2 }));
    }

    #[test]
    fn keeps_at_most_the_configured_count_per_topic() {
        let mut h = History::new(limits());
        let news = topic("news");
        let now = Instant::now();
        let mut evicted = Evictions::default();
        for o in 0..10 {
            let e = h.record(&news, 1, o, o, 100, now);
            evicted.0.iter_mut().zip(e.0).for_each(|(a, b)| *a += b);
        }
        assert_eq!(evicted.of(Reason::Count), 6);
        assert_eq!(replayed(h.recover("news", 1, 5, 500, now)), [6, 7, 8, 9]);
        let (why, position) = refusal(h.recover("news", 1, 4, 500, now));
        assert_eq!(why, Unrecoverable::NotRetained);
        assert_eq!(position, Some(Position { epoch: 1, offset: 9 }));
        assert_eq!(h.stats().messages, 4);
    }

    #[test]
    fn refuses_another_epoch_an_offset_ahead_and_too_long_a_replay() {
        let mut h = History::new(limits());
        let news = topic("news");
        publish(&mut h, &news, 3, 0..4);
        let now = Instant::now();
        assert_eq!(refusal(h.recover("news", 2, 1, 500, now)).0, Unrecoverable::EpochChanged);
        assert_eq!(refusal(h.recover("news", 3, 9, 500, now)).0, Unrecoverable::Ahead);
        assert_eq!(refusal(h.recover("news", 3, 0, 2, now)).0, Unrecoverable::TooMany);
        assert_eq!(
            refusal(h.recover("other", 3, 0, 500, now)),
            (Unrecoverable::UnknownTopic, None)
        );
    }

    #[test]
    fn a_new_epoch_restarts_the_topic() {
        let mut h = History::new(limits());
        let news = topic("news");
        publish(&mut h, &news, 1, 0..3);
        let evicted = h.record(&news, 2, 0, 100, 100, Instant::now());
        assert_eq!(evicted.of(Reason::Restart), 3);
        assert_eq!(h.position("news"), Some(Position { epoch: 2, offset: 0 }));
        assert_eq!(
            refusal(h.recover("news", 1, 2, 500, Instant::now())).0,
            Unrecoverable::EpochChanged
        );
        assert_eq!(h.stats().messages, 1);
    }

    #[test]
    fn repeated_offsets_are_ignored_and_skipped_ones_restart() {
        let mut h = History::new(limits());
        let news = topic("news");
        publish(&mut h, &news, 1, 0..3);
        h.record(&news, 1, 1, 99, 100, Instant::now());
        assert_eq!(replayed(h.recover("news", 1, 0, 500, Instant::now())), [1, 2]);
        h.record(&news, 1, 5, 5, 100, Instant::now());
        assert_eq!(replayed(h.recover("news", 1, 4, 500, Instant::now())), [5]);
        assert_eq!(
            refusal(h.recover("news", 1, 2, 500, Instant::now())).0,
            Unrecoverable::NotRetained
        );
    }

    #[test]
    fn per_topic_bytes_limit_drops_oldest() {
        let mut h =
            History::new(Limits { bytes_per_topic: 3 * (100 + ENTRY_OVERHEAD), ..limits() });
        let news = topic("news");
        let now = Instant::now();
        let evicted: u64 =
            (0..4).map(|o| h.record(&news, 1, o, o, 100, now).of(Reason::TopicBytes)).sum();
        assert_eq!(evicted, 1);
        assert_eq!(replayed(h.recover("news", 1, 0, 500, now)), [1, 2, 3]);
    }

    #[test]
    fn over_budget_the_least_recently_published_topic_pays_first() {
        let charge = 100 + ENTRY_OVERHEAD;
        let mut h =
            History::new(Limits { budget: 5 * charge, messages_per_topic: 100, ..limits() });
        let (a, b) = (topic("a"), topic("b"));
        let now = Instant::now();
        h.record(&a, 1, 0, 0, 100, now);
        h.record(&a, 1, 1, 1, 100, now);
        h.record(&b, 2, 0, 10, 100, now);
        h.record(&b, 2, 1, 11, 100, now);
        h.record(&b, 2, 2, 12, 100, now);
        let evicted = h.record(&b, 2, 3, 13, 100, now);
        assert_eq!(evicted.of(Reason::Budget), 1);
        assert_eq!(replayed(h.recover("a", 1, 0, 500, now)), [1]);
        h.record(&b, 2, 4, 14, 100, now);
        h.record(&b, 2, 5, 15, 100, now);
        // `a` lost everything (its position stays); then `b` pays for itself.
        assert_eq!(refusal(h.recover("a", 1, 0, 500, now)).0, Unrecoverable::NotRetained);
        assert_eq!(h.position("a"), Some(Position { epoch: 1, offset: 1 }));
        assert!(h.stats().bytes <= 5 * charge);
        assert_eq!(replayed(h.recover("b", 2, 2, 500, now)), [13, 14, 15]);
    }

    #[test]
    fn messages_older_than_the_ttl_are_not_replayed_and_idle_topics_are_forgotten() {
        let mut h = History::new(limits());
        let news = topic("news");
        let start = Instant::now();
        h.record(&news, 1, 0, 0, 100, start);
        h.record(&news, 1, 1, 1, 100, start + Duration::from_secs(1));
        h.record(&news, 1, 2, 2, 100, start + TTL / 2);
        let late = start + TTL + Duration::from_secs(2);
        assert_eq!(refusal(h.recover("news", 1, 0, 500, late)).0, Unrecoverable::NotRetained);
        assert_eq!(replayed(h.recover("news", 1, 1, 500, late)), [2]);

        let idle = start + TTL / 2 + TTL + Duration::from_secs(1);
        let evicted = h.expire(idle);
        assert_eq!(evicted.of(Reason::Age), 3);
        assert_eq!(h.stats().messages, 0);
        assert_eq!(h.position("news"), Some(Position { epoch: 1, offset: 2 }));
        h.expire(idle + FORGET_MARGIN + Duration::from_secs(1));
        assert_eq!(h.position("news"), None);
        assert_eq!(h.stats(), Stats::default());
    }

    #[test]
    fn a_busy_topic_is_not_expired_by_an_idle_one() {
        let mut h = History::new(limits());
        let (quiet, busy) = (topic("quiet"), topic("busy"));
        let start = Instant::now();
        h.record(&quiet, 1, 0, 0, 100, start);
        h.record(&busy, 2, 0, 0, 100, start);
        h.record(&busy, 2, 1, 1, 100, start + TTL);
        h.expire(start + TTL + Duration::from_secs(1));
        // The quiet topic lost its message; the busy one drops its old one when next
        // published, and never replays it.
        assert_eq!(h.stats().messages, 2);
        assert_eq!(replayed(h.recover("busy", 2, 0, 500, start + TTL)), [1]);
    }

    #[test]
    fn queues_stay_bounded_by_the_topics() {
        let mut h = History::new(limits());
        let news = topic("news");
        publish(&mut h, &news, 1, 0..10_000);
        assert!(h.holding.len() + h.bare.len() <= 2 * h.topics.len() + COMPACT_SLACK);
    }
}
