//! The per-connection outbound queue: five priority levels plus a control lane, under a byte
//! budget, with the ordering rules of PROTOCOL.md §3.
//!
//! Place: `fanout → shard → **outqueue** → writer → socket`. Publications arrive here as
//! complete, shared WebSocket frames (encoded once for every subscriber); direct messages
//! arrive as frames built for this connection. The connection's writer takes frames out in
//! priority order and coalesces them into as few socket writes as it can.
//!
//! # Order
//!
//! Every data frame gets an arrival number and goes to the back of its priority's lane, so a
//! lane is FIFO; [`OutQueue::pop`] takes the front of the most urgent lane whose front may
//! leave. A front may not leave while it waits for an earlier frame in another lane:
//!
//! - A publication waits for every earlier frame of its topic still queued in another lane
//!   ([`OutQueue::push_publication`]): it notes, per other lane, the newest earlier frame of
//!   its topic there, which leaves after all the older ones of that lane. A topic published
//!   at a higher priority than its queued frames therefore leaves right after them, never
//!   before, even when some of them are evicted meanwhile: priority does not reorder one
//!   topic (2.x clients drop an offset lower than one already seen).
//! - A *barrier* ([`OutQueue::push_after_all`]) waits for every data frame queued before it.
//!   The subscription answer that reports a recovery is one: it must follow the replayed
//!   messages it counts.
//! - A direct message waits for nothing but its lane; direct messages of one priority keep
//!   their order, and one queued after a publication of its priority stays behind it, since
//!   a lane whose front waits is skipped whole.
//!
//! The frame with the lowest arrival number never waits (whatever it waits for came earlier),
//! so a non-empty queue always has a frame that may leave. Whether a frame is still queued is
//! read from the lanes themselves: lanes only lose frames at the front, in arrival order, so
//! frame `n` of lane `l` is gone once `l`'s front has a higher number. `pop` thus looks at
//! five fronts, pushes do one hash lookup (publications) or none, and only a publication
//! that has to wait across lanes (its topic published at mixed priorities) allocates.
//!
//! # Budget
//!
//! A queued frame costs its length plus [`FRAME_OVERHEAD`] (the queue's own record of it).
//! When the budget (`max_outbound_queue_bytes`) is exceeded, queued frames of lower priority
//! than the newcomer are evicted, lowest first and oldest first within a lane; if that is not
//! enough the newcomer is dropped, unless it is CRITICAL, in which case every non-critical
//! frame goes and, if even that leaves no room, the connection must be closed with 4503
//! ([`Push::Overflow`]). CRITICAL frames are never evicted. Control frames (Pong, Close,
//! heartbeats) use their own lane and leave first. A frame that arrives while the queue is
//! empty is always taken, whatever its size, so a message as large as `max_message_size`
//! still reaches a connection whose budget is smaller; the memory bound is then the larger of
//! the budget and one frame.
//!
//! An empty queue holds no heap memory: lanes and the topic map are given back when the last
//! frame leaves, so an idle connection costs only this struct.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use wse_protocol::envelope::Priority;

/// What happened to a frame handed to one of the `push` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; the frames in `evicted` were dropped to make room.
    Queued {
        /// Frames evicted to make room, by priority.
        evicted: Evicted,
    },
    /// Not queued: over budget and nothing of lower priority to evict.
    Dropped {
        /// The newcomer's priority.
        pri: Priority,
    },
    /// A CRITICAL or control frame cannot fit: close the connection with 4503.
    Overflow,
}

impl Push {
    /// Queued with nothing evicted.
    pub const QUEUED: Push = Push::Queued { evicted: Evicted::NONE };
}

/// Frames evicted by one push, counted per priority level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted([u32; LEVELS]);

impl Evicted {
    /// Nothing evicted.
    pub const NONE: Evicted = Evicted([0; LEVELS]);

    /// How many frames were evicted in all.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| u64::from(n)).sum()
    }

    /// The priorities that lost frames, with how many each.
    pub fn by_priority(&self) -> impl Iterator<Item = (Priority, u64)> + '_ {
        Priority::ALL.into_iter().zip(self.0).filter(|(_, n)| *n > 0).map(|(p, n)| (p, n.into()))
    }
}

/// Frames waiting to be written to one connection.
///
/// Invariants: `bytes` is the cost (length plus [`FRAME_OVERHEAD`]) of every frame in
/// `control` and `levels`, and `len` the number of frames in `levels`; within a lane, arrival
/// numbers increase from front to back; every frame waits only for frames with a lower
/// number. An empty queue holds no heap memory.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Control frames and heartbeats; leave before any data, in arrival order.
    control: VecDeque<Bytes>,
    /// Data frames by priority, index 0 = CRITICAL ... 4 = BACKGROUND.
    levels: [VecDeque<Entry>; LEVELS],
    /// For each topic published to this connection since the queue was last empty, the
    /// arrival number of its newest frame in each lane (0: none). A number may name a frame
    /// that has left since; see [`is_gone`].
    latest: HashMap<Arc<str>, [u64; LEVELS]>,
    /// Arrival number of the next data frame (from 1).
    next: u64,
    /// Data frames queued.
    len: usize,
    /// Cost of every queued frame.
    bytes: usize,
}

/// One queued data frame.
#[derive(Debug)]
struct Entry {
    frame: Bytes,
    /// The topic of a publication, so that it can move to another queue keeping its order
    /// ([`OutQueue::pop_entry`]); `None` for direct messages.
    topic: Option<Arc<str>>,
    /// Arrival number; higher than every frame queued before it.
    n: u64,
    /// What must leave before this frame may.
    after: After,
}

/// The frames a data frame waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    /// Only the frames ahead of it in its lane.
    Lane,
    /// Also, per other lane, the frame with this arrival number (0: none) and so every
    /// earlier frame of that lane: the newest earlier frames of its topic.
    Frames(Box<[u64; LEVELS]>),
    /// Every data frame queued before it.
    Everything,
}

/// How a data frame is ordered besides its lane.
enum Order<'a> {
    Direct,
    Topic(&'a Arc<str>),
    Barrier,
}

impl OutQueue {
    /// Queues a control frame (Pong, Close, heartbeat) within `budget`.
    pub fn push_control(&mut self, frame: Bytes, budget: usize) -> Push {
        let cost = frame.len() + FRAME_OVERHEAD;
        let budget = self.effective_budget(budget, cost);
        let mut evicted = Evicted::NONE;
        if self.bytes + cost > budget {
            self.evict_from(1, cost, budget, &mut evicted);
            if self.bytes + cost > budget {
                return Push::Overflow;
            }
        }
        self.bytes += cost;
        self.control.push_back(frame);
        Push::Queued { evicted }
    }

    /// Queues a direct message of priority `pri` within `budget`, applying the drop policy.
    pub fn push(&mut self, pri: Priority, frame: Bytes, budget: usize) -> Push {
        self.push_data(pri, frame, budget, Order::Direct)
    }

    /// Queues a publication of `topic`: like [`OutQueue::push`], and it never leaves before
    /// a publication of `topic` queued earlier.
    pub fn push_publication(
        &mut self,
        pri: Priority,
        topic: &Arc<str>,
        frame: Bytes,
        budget: usize,
    ) -> Push {
        self.push_data(pri, frame, budget, Order::Topic(topic))
    }

    /// Queues a direct message that leaves only after every data frame queued before it
    /// (control frames excepted), and before the later frames of its own lane.
    pub fn push_after_all(&mut self, pri: Priority, frame: Bytes, budget: usize) -> Push {
        self.push_data(pri, frame, budget, Order::Barrier)
    }

    /// Takes the next frame to write: control first, then the front of the most urgent lane
    /// whose front may leave.
    pub fn pop(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.control.pop_front() {
            self.bytes -= frame.len() + FRAME_OVERHEAD;
            self.release_if_empty();
            return Some(frame);
        }
        let level =
            (0..LEVELS).find(|&l| self.levels[l].front().is_some_and(|e| self.may_leave(e)));
        debug_assert!(
            level.is_some() || self.len == 0,
            "a non-empty queue always has a frame to send"
        );
        let entry = self.levels[level?].pop_front()?;
        self.len -= 1;
        self.bytes -= entry.frame.len() + FRAME_OVERHEAD;
        self.release_if_empty();
        Some(entry.frame)
    }

    /// Takes the next data frame in the order [`OutQueue::pop`] would send it, with its
    /// priority and, for a publication, its topic (control frames are not considered): for
    /// moving frames into another queue, where pushing them in this order with
    /// [`OutQueue::push_publication`] (or [`OutQueue::push`] for `None`) keeps every order
    /// rule.
    pub fn pop_entry(&mut self) -> Option<(Priority, Option<Arc<str>>, Bytes)> {
        let level =
            (0..LEVELS).find(|&l| self.levels[l].front().is_some_and(|e| self.may_leave(e)))?;
        let entry = self.levels[level].pop_front()?;
        self.len -= 1;
        self.bytes -= entry.frame.len() + FRAME_OVERHEAD;
        self.release_if_empty();
        Some((Priority::ALL[level], entry.topic, entry.frame))
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Cost of what is waiting: frame bytes plus [`FRAME_OVERHEAD`] per frame.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every queued data frame (the connection is closing); returns how many.
    pub fn clear_data(&mut self) -> usize {
        let n = self.len;
        self.levels = Default::default();
        self.latest = HashMap::new();
        self.len = 0;
        self.bytes = self.control.iter().map(|f| f.len() + FRAME_OVERHEAD).sum();
        self.release_if_empty();
        n
    }

    fn push_data(&mut self, pri: Priority, frame: Bytes, budget: usize, order: Order<'_>) -> Push {
        let cost = frame.len() + FRAME_OVERHEAD;
        let budget = self.effective_budget(budget, cost);
        let level = pri.index();
        let mut evicted = Evicted::NONE;
        if self.bytes + cost > budget {
            // CRITICAL may evict every other level; the rest only levels below their own.
            let first = if level == 0 { 1 } else { level + 1 };
            self.evict_from(first, cost, budget, &mut evicted);
            if self.bytes + cost > budget {
                return if level == 0 { Push::Overflow } else { Push::Dropped { pri } };
            }
        }

        self.next += 1;
        let n = self.next;
        let (after, topic) = match order {
            Order::Direct => (After::Lane, None),
            Order::Barrier => (After::Everything, None),
            Order::Topic(topic) => (self.follow(topic, level, n), Some(Arc::clone(topic))),
        };
        self.levels[level].push_back(Entry { frame, topic, n, after });
        self.len += 1;
        self.bytes += cost;
        Push::Queued { evicted }
    }

    /// Records frame `n` as the newest of `topic` in lane `level`; returns what it must wait
    /// for: the newest earlier frame of `topic` in each other lane that still holds one.
    fn follow(&mut self, topic: &Arc<str>, level: usize, n: u64) -> After {
        let levels = &self.levels;
        if let Some(newest) = self.latest.get_mut(&**topic) {
            let mut waits = [0; LEVELS];
            for (lane, &m) in newest.iter().enumerate() {
                if lane != level && m != 0 && !is_gone(levels, lane, m) {
                    waits[lane] = m;
                }
            }
            newest[level] = n;
            return if waits == [0; LEVELS] { After::Lane } else { After::Frames(Box::new(waits)) };
        }
        self.prune_marks();
        let mut newest = [0; LEVELS];
        newest[level] = n;
        self.latest.insert(Arc::clone(topic), newest);
        After::Lane
    }

    /// Whether `entry`, the front of its lane, may leave now.
    fn may_leave(&self, entry: &Entry) -> bool {
        match &entry.after {
            After::Lane => true,
            After::Frames(waits) => {
                waits.iter().enumerate().all(|(lane, &m)| m == 0 || is_gone(&self.levels, lane, m))
            }
            After::Everything => {
                self.levels.iter().all(|lane| lane.front().is_none_or(|front| front.n >= entry.n))
            }
        }
    }

    /// Forgets topics whose frames have all left, once they clearly outnumber the queued
    /// frames; amortised O(1) per push, and the map never holds much more than twice the
    /// queue.
    fn prune_marks(&mut self) {
        if self.latest.len() < 2 * self.len + PRUNE_SLACK {
            return;
        }
        let levels = &self.levels;
        let live = |newest: &[u64; LEVELS]| {
            newest.iter().enumerate().any(|(lane, &m)| m != 0 && !is_gone(levels, lane, m))
        };
        self.latest.retain(|_, newest| live(newest));
    }

    /// The budget for a frame costing `cost`: an empty queue takes any one frame.
    fn effective_budget(&self, budget: usize, cost: usize) -> usize {
        if self.bytes == 0 {
            budget.max(cost)
        } else {
            budget
        }
    }

    /// Evicts the oldest frames of levels `first..LEVELS`, lowest priority first, until
    /// `incoming` more bytes fit in `budget`. CRITICAL (level 0) is never evicted.
    fn evict_from(&mut self, first: usize, incoming: usize, budget: usize, out: &mut Evicted) {
        for level in (first.max(1)..LEVELS).rev() {
            while self.bytes + incoming > budget {
                let Some(entry) = self.levels[level].pop_front() else { break };
                self.len -= 1;
                self.bytes -= entry.frame.len() + FRAME_OVERHEAD;
                out.0[level] += 1;
            }
        }
    }

    /// Gives back every buffer once the queue drains, so idle connections hold none.
    fn release_if_empty(&mut self) {
        if self.bytes != 0 {
            return;
        }
        if self.control.capacity() > 0 {
            self.control = VecDeque::new();
        }
        for lane in &mut self.levels {
            if lane.capacity() > 0 {
                *lane = VecDeque::new();
            }
        }
        if self.latest.capacity() > 0 {
            self.latest = HashMap::new();
        }
        self.next = 0;
    }
}

/// Whether frame `n` of lane `lane` has left (sent or evicted). Lanes lose frames only at the
/// front and in arrival order, so it has once its lane's front is a later frame.
fn is_gone(levels: &[VecDeque<Entry>; LEVELS], lane: usize, n: u64) -> bool {
    levels[lane].front().is_none_or(|front| front.n > n)
}

/// What the queue charges per frame on top of its bytes: its own record of the frame.
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<Entry>();

/// Priority levels, one lane each.
const LEVELS: usize = Priority::COUNT;
/// Topic marks allowed beyond twice the queued frames before stale ones are swept.
const PRUNE_SLACK: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 30;

    fn frame(n: usize, tag: u8) -> Bytes {
        Bytes::from(vec![tag; n])
    }

    fn cost(n: usize) -> usize {
        n + FRAME_OVERHEAD
    }

    fn drain(q: &mut OutQueue) -> Vec<u8> {
        std::iter::from_fn(|| q.pop()).map(|f| f[0]).collect()
    }

    fn evicted(level: usize, n: u32) -> Push {
        let mut counts = [0; LEVELS];
        counts[level] = n;
        Push::Queued { evicted: Evicted(counts) }
    }

    #[test]
    fn pops_control_then_highest_priority_in_fifo_order() {
        let mut q = OutQueue::default();
        q.push(Priority::Low, frame(1, b'l'), BIG);
        q.push(Priority::High, frame(1, b'h'), BIG);
        q.push(Priority::High, frame(1, b'H'), BIG);
        q.push_control(frame(1, b'c'), BIG);
        assert_eq!(drain(&mut q), b"chHl");
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn evicts_lowest_priority_first_when_over_budget() {
        let mut q = OutQueue::default();
        let budget = cost(40) * 2 + 10;
        assert_eq!(q.push(Priority::Background, frame(40, b'b'), budget), Push::QUEUED);
        assert_eq!(q.push(Priority::Low, frame(40, b'l'), budget), Push::QUEUED);
        assert_eq!(q.push(Priority::Normal, frame(40, b'n'), budget), evicted(4, 1));
        assert_eq!(drain(&mut q), b"nl");
    }

    #[test]
    fn drops_newcomer_when_nothing_lower_can_go() {
        let mut q = OutQueue::default();
        let budget = cost(80) + 10;
        q.push(Priority::Normal, frame(80, b'n'), budget);
        let normal = Push::Dropped { pri: Priority::Normal };
        assert_eq!(q.push(Priority::Normal, frame(40, b'm'), budget), normal);
        let background = Push::Dropped { pri: Priority::Background };
        assert_eq!(q.push(Priority::Background, frame(40, b'b'), budget), background);
        assert_eq!(q.bytes(), cost(80));
    }

    #[test]
    fn critical_evicts_everything_else_then_overflows() {
        let mut q = OutQueue::default();
        let budget = cost(60) + 10;
        q.push(Priority::High, frame(60, b'h'), budget);
        assert_eq!(q.push(Priority::Critical, frame(60, b'c'), budget), evicted(1, 1));
        assert_eq!(q.push(Priority::Critical, frame(60, b'C'), budget), Push::Overflow);
    }

    #[test]
    fn empty_queue_takes_one_frame_larger_than_the_budget() {
        let mut q = OutQueue::default();
        assert_eq!(q.push(Priority::Low, frame(150, b'l'), 100), Push::QUEUED);
        assert_eq!(
            q.push(Priority::Low, frame(10, b'm'), 100),
            Push::Dropped { pri: Priority::Low }
        );
        assert_eq!(q.pop().expect("queued").len(), 150);
    }

    #[test]
    fn pop_entry_follows_pop_order_keeps_topics_and_skips_control() {
        let mut q = OutQueue::default();
        let topic: Arc<str> = "t".into();
        q.push_publication(Priority::Low, &topic, frame(1, b'l'), BIG);
        q.push_publication(Priority::High, &topic, frame(1, b'h'), BIG);
        q.push(Priority::Critical, frame(1, b'c'), BIG);
        q.push_control(frame(1, b'p'), BIG);
        let mut next = || q.pop_entry().map(|(p, t, f)| (p, t.is_some(), f[0]));
        assert_eq!(next(), Some((Priority::Critical, false, b'c')));
        // HIGH of the topic waits for its earlier LOW frame, as `pop` would have it.
        assert_eq!(next(), Some((Priority::Low, true, b'l')));
        assert_eq!(next(), Some((Priority::High, true, b'h')));
        assert_eq!(next(), None);
        assert_eq!(q.bytes(), 1 + FRAME_OVERHEAD);
    }

    #[test]
    fn control_overflow_is_reported() {
        let mut q = OutQueue::default();
        q.push(Priority::Critical, frame(90, b'c'), cost(90) + 10);
        assert_eq!(q.push_control(frame(20, b'p'), cost(90) + 10), Push::Overflow);
    }

    #[test]
    fn a_topic_published_at_higher_priority_waits_for_its_earlier_frames() {
        let mut q = OutQueue::default();
        let news: Arc<str> = "news".into();
        q.push_publication(Priority::Low, &news, frame(1, b'1'), BIG);
        q.push(Priority::Normal, frame(1, b'd'), BIG);
        q.push_publication(Priority::High, &news, frame(1, b'2'), BIG);
        q.push_publication(Priority::Critical, &news, frame(1, b'3'), BIG);
        // The direct message leaves first: the topic waits behind its LOW frame.
        assert_eq!(drain(&mut q), b"d123");
    }

    #[test]
    fn other_topics_and_lanes_overtake_a_waiting_publication() {
        let mut q = OutQueue::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        q.push_publication(Priority::Background, &a, frame(1, b'1'), BIG);
        q.push_publication(Priority::High, &a, frame(1, b'2'), BIG);
        q.push_publication(Priority::Normal, &b, frame(1, b'x'), BIG);
        q.push(Priority::Low, frame(1, b'l'), BIG);
        assert_eq!(drain(&mut q), b"xl12");
    }

    #[test]
    fn a_direct_message_never_overtakes_a_waiting_publication_of_its_priority() {
        let mut q = OutQueue::default();
        let a: Arc<str> = "a".into();
        q.push_publication(Priority::Low, &a, frame(1, b'1'), BIG);
        q.push_publication(Priority::High, &a, frame(1, b'2'), BIG);
        q.push(Priority::High, frame(1, b'h'), BIG);
        q.push(Priority::Normal, frame(1, b'n'), BIG);
        assert_eq!(drain(&mut q), b"n12h");
    }

    #[test]
    fn eviction_of_the_earlier_frame_releases_the_waiting_one() {
        let mut q = OutQueue::default();
        let a: Arc<str> = "a".into();
        let budget = 3 * cost(10) + 5;
        q.push_publication(Priority::Background, &a, frame(10, b'1'), budget);
        q.push_publication(Priority::High, &a, frame(10, b'2'), budget);
        q.push(Priority::Normal, frame(10, b'n'), budget);
        // A fourth frame evicts the BACKGROUND one; the HIGH frame no longer waits.
        assert_eq!(q.push(Priority::Normal, frame(10, b'm'), budget), evicted(4, 1));
        assert_eq!(drain(&mut q), b"2nm");
    }

    #[test]
    fn barrier_waits_for_everything_queued_before_it() {
        let mut q = OutQueue::default();
        let a: Arc<str> = "a".into();
        q.push_publication(Priority::Low, &a, frame(1, b'1'), BIG);
        q.push_publication(Priority::Background, &a, frame(1, b'2'), BIG);
        q.push_after_all(Priority::High, frame(1, b'A'), BIG);
        q.push(Priority::High, frame(1, b'h'), BIG);
        q.push(Priority::Normal, frame(1, b'n'), BIG);
        q.push_control(frame(1, b'c'), BIG);
        assert_eq!(drain(&mut q), b"cn12Ah");
    }

    #[test]
    fn drained_queue_gives_its_memory_back() {
        let mut q = OutQueue::default();
        let a: Arc<str> = "a".into();
        for i in 0..100 {
            q.push_publication(Priority::ALL[i % 5], &a, frame(10, b'x'), BIG);
            q.push_control(frame(2, b'c'), BIG);
        }
        while q.pop().is_some() {}
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.control.capacity(), 0);
        assert!(q.levels.iter().all(|l| l.capacity() == 0));
        assert_eq!(q.latest.capacity(), 0);
        let _ = q.clear_data();
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn marks_of_departed_frames_are_swept() {
        let mut q = OutQueue::default();
        q.push(Priority::Background, frame(1, b'k'), BIG);
        for i in 0..1000 {
            let topic: Arc<str> = format!("t{i}").into();
            q.push_publication(Priority::High, &topic, frame(1, b'x'), BIG);
            q.pop();
        }
        assert!(q.latest.len() <= 2 * q.len + PRUNE_SLACK, "{} marks", q.latest.len());
    }

    /// What a pushed frame was, for the randomised check below.
    #[derive(Debug, Clone, Copy)]
    struct Pushed {
        topic: Option<usize>,
        pri: Priority,
        barrier: bool,
    }

    /// A small deterministic generator (xorshift64*), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Random pushes and pops under a tight budget; every frame popped must respect the
    /// three order rules against every frame popped before it or still queued.
    #[test]
    fn random_traffic_keeps_every_order_rule() {
        let topics: Vec<Arc<str>> = (0..4).map(|i| Arc::from(format!("t{i}"))).collect();
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let budget = if seed % 2 == 0 { BIG } else { 12 * cost(8) };
            let mut q = OutQueue::default();
            let mut pushed: Vec<Pushed> = Vec::new();
            let mut popped: Vec<usize> = Vec::new();
            for _ in 0..600 {
                if rng.below(3) == 0 {
                    if let Some(f) = q.pop() {
                        popped.push(u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize);
                    }
                    continue;
                }
                let id = pushed.len();
                let mut bytes = (id as u32).to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0; 4]);
                let pri = Priority::ALL[rng.below(5) as usize];
                let kind = rng.below(10);
                let item = match kind {
                    0..=5 => Pushed { topic: Some(rng.below(4) as usize), pri, barrier: false },
                    6 => Pushed { topic: None, pri, barrier: true },
                    _ => Pushed { topic: None, pri, barrier: false },
                };
                let frame = Bytes::from(bytes);
                // Whatever the outcome (queued, dropped, overflow), the order rules must hold
                // among the frames that do leave.
                let _ = match (item.topic, item.barrier) {
                    (Some(t), _) => q.push_publication(pri, &topics[t], frame, budget),
                    (None, true) => q.push_after_all(pri, frame, budget),
                    (None, false) => q.push(pri, frame, budget),
                };
                pushed.push(item);
            }
            while let Some(f) = q.pop() {
                popped.push(u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize);
            }
            check_order(seed, &pushed, &popped, budget == BIG);
        }
    }

    fn check_order(seed: u64, pushed: &[Pushed], popped: &[usize], lossless: bool) {
        if lossless {
            let mut all = popped.to_vec();
            all.sort_unstable();
            assert_eq!(all, (0..pushed.len()).collect::<Vec<_>>(), "seed {seed}: lost frames");
        }
        let mut position = vec![usize::MAX; pushed.len()];
        for (at, &id) in popped.iter().enumerate() {
            position[id] = at;
        }
        for (later, b) in pushed.iter().enumerate() {
            for (earlier, a) in pushed[..later].iter().enumerate() {
                let (pa, pb) = (position[earlier], position[later]);
                if pa == usize::MAX || pb == usize::MAX {
                    continue;
                }
                // Per topic FIFO; one lane FIFO (covers direct messages of one priority, and a
                // direct message behind a publication of its priority); barriers last.
                let same_topic = a.topic.is_some() && a.topic == b.topic;
                let same_lane = a.pri == b.pri;
                if (same_topic || same_lane || b.barrier) && pb < pa {
                    panic!("seed {seed}: frame {later} ({b:?}) left before {earlier} ({a:?})");
                }
            }
        }
    }
}
