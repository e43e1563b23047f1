//! The inbound rings: events from the shards to the application, and the drain that collects
//! them (PROTOCOL.md §8).
//!
//! Place: `conn → **ring of its shard** → drain (a plain thread) → application`. Every shard
//! owns one bounded ring ([`crossbeam_queue::ArrayQueue`], lock-free) that only its executor
//! thread pushes to; any number of application threads may drain, usually one. The shard
//! never blocks on a ring: a push that does not fit is handed back, the connection keeps
//! the event in its own small backlog and stops reading its socket (TCP backpressure) until
//! the drain makes room and wakes the shard ([`ShardSide::push_or_wait`]).
//!
//! Two bounds per ring: a count (`max_inbound_queue_size`, PROTOCOL.md §10) and a byte budget
//! (`max_inbound_queue_bytes`). Both apply to data events (`msg`, `raw`, `bin`); the
//! lifecycle events (`connect`, `auth_connect`, `disconnect`) may also use a reserve of
//! [`LIFECYCLE_RESERVE`] extra slots, so that a connection can usually end without waiting
//! for the application, and they wait like data when even that is full. Nothing is dropped.
//!
//! Waking the drain costs the shard one fence and one relaxed load per push: the condition
//! variable is signalled only when a drain is asleep on it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::Event;

/// Every shard's ring and the drain's wake-up, shared by the shards and the application.
#[derive(Debug)]
pub(crate) struct Inbound {
    rings: Box<[Ring]>,
    /// Where sleeping drains wait; see [`Inbound::drain_into`].
    lock: Mutex<()>,
    wake: Condvar,
    /// Drains asleep or about to sleep on `wake`.
    sleepers: AtomicUsize,
    /// The shard the next drain starts with, so that no shard is always served first.
    next_start: AtomicUsize,
    /// Set when the server stops: drains return at once instead of waiting.
    closed: AtomicBool,
}

/// One shard's ring.
#[derive(Debug)]
struct Ring {
    queue: ArrayQueue<Slot>,
    /// Data events are refused once this many events wait (the configured count).
    soft_limit: usize,
    /// Data events are refused once this many bytes wait, unless the ring is empty.
    max_bytes: usize,
    /// Bytes of the events waiting (their size as received).
    bytes: AtomicUsize,
    /// Set by the shard when a push was refused; the drain then signals `room`.
    blocked: AtomicBool,
    /// Tells the shard that room was made; capacity 1, so signals coalesce.
    room: flume::Sender<()>,
}

/// An event as it waits in a ring or in a connection's backlog.
#[derive(Debug)]
pub(crate) struct Slot {
    pub event: Event,
    /// Bytes accounted against the ring's budget.
    pub bytes: usize,
    /// `connect`, `auth_connect` or `disconnect`: may use the reserve.
    pub lifecycle: bool,
}

/// A shard's end of its ring: pushes, and the connections waiting for room.
///
/// Lives on the shard's executor thread only.
pub(crate) struct ShardSide {
    inbound: Arc<Inbound>,
    index: usize,
    /// Connections whose events did not fit, woken in order when room is made.
    waiting: RefCell<Vec<Waker>>,
    /// Counts the wake-ups of `waiting`, so that a connection polled again before the next
    /// one does not register twice (see [`ShardSide::push_or_wait`]).
    round: Cell<u64>,
}

impl Inbound {
    /// Rings for `shards` shards holding `capacity` data events and `max_bytes` bytes each;
    /// also returns, per shard, the receiver that tells it room was made.
    pub(crate) fn new(
        shards: usize,
        capacity: usize,
        max_bytes: usize,
    ) -> (Arc<Inbound>, Vec<flume::Receiver<()>>) {
        let mut rooms = Vec::with_capacity(shards);
        let rings = (0..shards)
            .map(|_| {
                let (room, room_rx) = flume::bounded(1);
                rooms.push(room_rx);
                Ring {
                    queue: ArrayQueue::new(capacity + LIFECYCLE_RESERVE),
                    soft_limit: capacity,
                    max_bytes,
                    bytes: AtomicUsize::new(0),
                    blocked: AtomicBool::new(false),
                    room,
                }
            })
            .collect();
        let inbound = Inbound {
            rings,
            lock: Mutex::new(()),
            wake: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            next_start: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        };
        (Arc::new(inbound), rooms)
    }

    /// Moves up to `max_count` events into `out`, waiting up to `timeout` when none is
    /// ready; returns how many were added. Returns 0 at once after [`Inbound::close`].
    pub(crate) fn drain_into(
        &self,
        out: &mut Vec<Event>,
        max_count: usize,
        timeout: Duration,
    ) -> usize {
        if max_count == 0 {
            return 0;
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let taken = self.collect(out, max_count);
            if taken > 0 || self.closed.load(Ordering::Acquire) {
                return taken;
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return 0;
            }
            self.sleep(left);
        }
    }

    /// Whether the server was told to stop ([`Inbound::close`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Events waiting in every ring now.
    pub(crate) fn depth(&self) -> usize {
        self.rings.iter().map(|r| r.queue.len()).sum()
    }

    /// Wakes every drain and makes later drains return at once (the server stopped).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _guard = self.lock.lock();
        self.wake.notify_all();
    }

    /// Sleeps on the condition variable until a shard signals or `limit` passes. The check
    /// for events happens under the lock after announcing the sleep, so a push between the
    /// last collect and the wait is never missed: either this check sees it, or the pusher
    /// sees `sleepers` and signals after we wait (it needs the lock to do so).
    fn sleep(&self, limit: Duration) {
        let guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.rings.iter().all(|r| r.queue.is_empty()) && !self.closed.load(Ordering::Acquire) {
            let _ = self.wake.wait_timeout(guard, limit);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes events round-robin over the shards, starting one shard further each call, in
    /// equal shares of what is left to take.
    fn collect(&self, out: &mut Vec<Event>, max_count: usize) -> usize {
        let n = self.rings.len();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n;
        let mut taken = 0;
        loop {
            let before = taken;
            let share = ((max_count - taken) / n).max(1);
            for k in 0..n {
                let room = (max_count - taken).min(share);
                if room == 0 {
                    break;
                }
                taken += self.rings[(start + k) % n].take(out, room);
            }
            if taken == before || taken == max_count {
                return taken;
            }
        }
    }

    /// Called by a shard after a push: signals the drain if one is asleep.
    fn pushed(&self) {
        // Pairs with the fetch_add in `sleep`: either the sleeper's check sees the event,
        // or this load sees the sleeper.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            let _guard = self.lock.lock();
            self.wake.notify_all();
        }
    }
}

impl Ring {
    /// Pushes `slot` if the bounds allow it; hands it back otherwise.
    fn try_push(&self, slot: Slot) -> Result<(), Slot> {
        if !slot.lifecycle {
            // Only this shard pushes, so the count and bytes can only fall after the check.
            let waiting = self.queue.len();
            let bytes = self.bytes.load(Ordering::Acquire);
            let over_bytes = waiting > 0 && bytes + slot.bytes > self.max_bytes;
            if waiting >= self.soft_limit || over_bytes {
                return Err(slot);
            }
        }
        let bytes = slot.bytes;
        self.queue.push(slot)?;
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Pops up to `max` events into `out`; tells a blocked shard that there is room.
    fn take(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut taken = 0;
        let mut bytes = 0;
        while taken < max {
            let Some(slot) = self.queue.pop() else { break };
            bytes += slot.bytes;
            out.push(slot.event);
            taken += 1;
        }
        if taken == 0 {
            return 0;
        }
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if self.blocked.load(Ordering::SeqCst) && self.blocked.swap(false, Ordering::SeqCst) {
            let _ = self.room.try_send(());
        }
        taken
    }
}

impl ShardSide {
    pub(crate) fn new(inbound: Arc<Inbound>, index: usize) -> ShardSide {
        ShardSide { inbound, index, waiting: RefCell::new(Vec::new()), round: Cell::new(1) }
    }

    /// Pushes `slot` into this shard's ring; hands it back when the ring is full.
    pub(crate) fn try_push(&self, slot: Slot) -> Result<(), Slot> {
        self.ring().try_push(slot)?;
        self.inbound.pushed();
        Ok(())
    }

    /// Pushes `slot`, or registers the task to be woken when room is made and hands it back.
    /// `registered` is the caller's note of the round it registered in: a task registers
    /// once per round however often it is polled, so the list stays one entry per waiting
    /// connection.
    pub(crate) fn push_or_wait(
        &self,
        slot: Slot,
        cx: &mut Context<'_>,
        registered: &mut u64,
    ) -> Result<(), Slot> {
        let slot = match self.try_push(slot) {
            Ok(()) => return Ok(()),
            Err(slot) => slot,
        };
        self.ring().blocked.store(true, Ordering::SeqCst);
        // The drain may have made room between the failed push and the flag: try again.
        let slot = match self.try_push(slot) {
            Ok(()) => return Ok(()),
            Err(slot) => slot,
        };
        if *registered != self.round.get() {
            *registered = self.round.get();
            self.waiting.borrow_mut().push(cx.waker().clone());
        }
        Err(slot)
    }

    /// Wakes every connection that waits for room; the shard's room task calls it when the
    /// drain signals.
    pub(crate) fn room_made(&self) {
        self.round.set(self.round.get() + 1);
        for waker in std::mem::take(&mut *self.waiting.borrow_mut()) {
            waker.wake();
        }
    }

    fn ring(&self) -> &Ring {
        &self.inbound.rings[self.index]
    }
}

/// Lifecycle events a ring holds beyond its configured count.
pub(crate) const LIFECYCLE_RESERVE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::EventKind;
    use wse_fanout::ids::ConnId;

    fn slot(conn: u64, bytes: usize, lifecycle: bool) -> Slot {
        let kind = if lifecycle {
            EventKind::Connect { cookies: "".into() }
        } else {
            EventKind::Raw("x".into())
        };
        Slot { event: Event { conn: ConnId(conn), kind }, bytes, lifecycle }
    }

    #[test]
    fn data_stops_at_the_count_and_lifecycle_uses_the_reserve() {
        let (inbound, _rooms) = Inbound::new(1, 2, 1 << 20);
        let ring = &inbound.rings[0];
        assert!(ring.try_push(slot(1, 1, false)).is_ok());
        assert!(ring.try_push(slot(1, 1, false)).is_ok());
        assert!(ring.try_push(slot(1, 1, false)).is_err());
        assert!(ring.try_push(slot(1, 1, true)).is_ok());
        let mut out = Vec::new();
        assert_eq!(inbound.drain_into(&mut out, 10, Duration::ZERO), 3);
    }

    #[test]
    fn bytes_bound_applies_unless_the_ring_is_empty() {
        let (inbound, _rooms) = Inbound::new(1, 100, 10);
        let ring = &inbound.rings[0];
        assert!(ring.try_push(slot(1, 50, false)).is_ok());
        assert!(ring.try_push(slot(1, 1, false)).is_err());
        let mut out = Vec::new();
        inbound.drain_into(&mut out, 10, Duration::ZERO);
        assert_eq!(ring.bytes.load(Ordering::Relaxed), 0);
        assert!(ring.try_push(slot(1, 5, false)).is_ok());
    }

    #[test]
    fn drain_starts_at_a_different_shard_each_call() {
        let (inbound, _rooms) = Inbound::new(2, 100, 1 << 20);
        for _ in 0..4 {
            inbound.rings[0].try_push(slot(0, 1, false)).expect("room");
            inbound.rings[1].try_push(slot(1, 1, false)).expect("room");
        }
        let mut firsts = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            assert_eq!(inbound.drain_into(&mut out, 2, Duration::ZERO), 2);
            firsts.push(out[0].conn.0);
            let shards: Vec<u64> = out.iter().map(|e| e.conn.0).collect();
            assert!(shards.contains(&0) && shards.contains(&1), "one from each: {shards:?}");
        }
        assert_ne!(firsts[0], firsts[1]);
    }

    #[test]
    fn drain_wakes_when_a_shard_pushes_and_returns_on_close() {
        let (inbound, _rooms) = Inbound::new(1, 100, 1 << 20);
        let producer = Arc::clone(&inbound);
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let side = ShardSide::new(producer, 0);
            side.try_push(slot(7, 1, false)).expect("room");
        });
        let started = Instant::now();
        let mut out = Vec::new();
        assert_eq!(inbound.drain_into(&mut out, 10, Duration::from_secs(10)), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
        pusher.join().expect("pusher");
        let closer = Arc::clone(&inbound);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            closer.close();
        });
        assert_eq!(inbound.drain_into(&mut out, 10, Duration::from_secs(10)), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_drain_after_a_refused_push_signals_room() {
        let (inbound, rooms) = Inbound::new(1, 1, 1 << 20);
        let side = ShardSide::new(Arc::clone(&inbound), 0);
        side.try_push(slot(1, 1, false)).expect("room");
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut registered = 0;
        let refused = side.push_or_wait(slot(1, 1, false), &mut cx, &mut registered);
        let refused = refused.expect_err("full");
        let again = side.push_or_wait(refused, &mut cx, &mut registered).expect_err("full");
        assert_eq!(side.waiting.borrow().len(), 1, "registered once per round");
        let refused = again;
        assert!(rooms[0].try_recv().is_err());
        let mut out = Vec::new();
        inbound.drain_into(&mut out, 10, Duration::ZERO);
        assert!(rooms[0].try_recv().is_ok());
        assert!(side.try_push(refused).is_ok());
    }
}
