//! The per-connection outbound queue: five priority levels plus a control lane, under a byte
//! budget.
//!
//! Place: `fanout → shard → **outqueue** → writer → socket`. Publications arrive here as
//! complete, shared WebSocket frames (encoded once for every subscriber); direct messages
//! arrive as frames built for this connection. The connection's writer takes frames out in
//! priority order and coalesces them into as few socket writes as it can.
//!
//! Policy when the budget (`max_outbound_queue_bytes`) is exceeded: queued frames of lower
//! priority than the newcomer are evicted, lowest first; if that is not enough the newcomer is
//! dropped, unless it is CRITICAL, in which case every non-critical frame goes and, if even
//! that leaves no room, the connection must be closed with 4503 ([`Push::Overflow`]).
//! Control frames (Pong, Close, heartbeats) use their own lane and leave first. A frame that
//! arrives while the queue is empty is always taken, whatever its size, so a message as large
//! as `max_message_size` still reaches a connection whose budget is smaller; the memory bound
//! is then the larger of the budget and one frame.
//!
//! TODO(#4): priority must never reorder one topic's publications; today a topic published
//! at two priorities can be reordered between them.

use std::collections::VecDeque;

use bytes::Bytes;
use wse_protocol::envelope::Priority;

/// What happened to a frame handed to [`OutQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; `evicted` lower-priority frames were dropped to make room.
    Queued {
        /// Frames evicted to make room.
        evicted: usize,
    },
    /// Not queued: over budget and nothing of lower priority to evict.
    Dropped,
    /// A CRITICAL or control frame cannot fit: close the connection with 4503.
    Overflow,
}

/// Frames waiting to be written to one connection.
///
/// Invariant: `bytes` is the sum of the lengths of every frame in `control` and `levels`.
/// An empty queue holds no heap memory (an idle connection costs nothing here).
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Control frames and heartbeats; leave before any data.
    control: VecDeque<Bytes>,
    /// Data frames by priority, index 0 = CRITICAL ... 4 = BACKGROUND.
    levels: [VecDeque<Bytes>; LEVELS],
    /// Bytes queued in all lanes.
    bytes: usize,
}

impl OutQueue {
    /// Queues a control frame (Pong, Close, heartbeat) within `budget`.
    pub fn push_control(&mut self, frame: Bytes, budget: usize) -> Push {
        let budget = self.effective_budget(budget, frame.len());
        if self.bytes + frame.len() > budget {
            let evicted = self.evict_from(1, frame.len(), budget);
            if self.bytes + frame.len() > budget {
                return Push::Overflow;
            }
            self.enqueue_control(frame);
            return Push::Queued { evicted };
        }
        self.enqueue_control(frame);
        Push::Queued { evicted: 0 }
    }

    /// Queues a data frame of priority `pri` within `budget`, applying the drop policy.
    pub fn push(&mut self, pri: Priority, frame: Bytes, budget: usize) -> Push {
        let budget = self.effective_budget(budget, frame.len());
        let level = pri.index();
        let mut evicted = 0;
        if self.bytes + frame.len() > budget {
            // CRITICAL may evict every other level; the rest only levels below their own.
            let first = if level == 0 { 1 } else { level + 1 };
            evicted = self.evict_from(first, frame.len(), budget);
        }
        if self.bytes + frame.len() > budget {
            return if level == 0 { Push::Overflow } else { Push::Dropped };
        }
        self.bytes += frame.len();
        self.levels[level].push_back(frame);
        Push::Queued { evicted }
    }

    /// Takes the next frame to write: control first, then the highest priority.
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.control.pop_front().or_else(|| {
            self.levels.iter_mut().find(|q| !q.is_empty()).and_then(VecDeque::pop_front)
        })?;
        self.bytes -= frame.len();
        if self.bytes == 0 {
            self.release_memory();
        }
        Some(frame)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.control.is_empty() && self.levels.iter().all(VecDeque::is_empty)
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every queued data frame (the connection is closing); returns how many.
    pub fn clear_data(&mut self) -> usize {
        let n = self.levels.iter().map(VecDeque::len).sum();
        for q in &mut self.levels {
            q.clear();
        }
        self.bytes = self.control.iter().map(Bytes::len).sum();
        n
    }

    /// The budget for a frame of `len` bytes: an empty queue takes any one frame.
    fn effective_budget(&self, budget: usize, len: usize) -> usize {
        if self.bytes == 0 {
            budget.max(len)
        } else {
            budget
        }
    }

    fn enqueue_control(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.control.push_back(frame);
    }

    /// Evicts the oldest frames of levels `first..LEVELS`, lowest priority first, until
    /// `incoming` more bytes fit in `budget`. CRITICAL (level 0) is never evicted.
    fn evict_from(&mut self, first: usize, incoming: usize, budget: usize) -> usize {
        let mut evicted = 0;
        for level in (first.max(1)..LEVELS).rev() {
            while self.bytes + incoming > budget {
                let Some(frame) = self.levels[level].pop_front() else { break };
                self.bytes -= frame.len();
                evicted += 1;
            }
        }
        evicted
    }

    /// Gives back the deques' buffers once the queue drains, so idle connections hold none.
    fn release_memory(&mut self) {
        if self.control.capacity() > 0 && self.control.is_empty() {
            self.control = VecDeque::new();
        }
        for q in &mut self.levels {
            if q.capacity() > 0 && q.is_empty() {
                *q = VecDeque::new();
            }
        }
    }
}

const LEVELS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize, tag: u8) -> Bytes {
        Bytes::from(vec![tag; n])
    }

    #[test]
    fn pops_control_then_highest_priority_in_fifo_order() {
        let mut q = OutQueue::default();
        q.push(Priority::Low, frame(1, b'l'), 100);
        q.push(Priority::High, frame(1, b'h'), 100);
        q.push(Priority::High, frame(1, b'H'), 100);
        q.push_control(frame(1, b'c'), 100);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|f| f[0]).collect();
        assert_eq!(order, b"chHl");
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn evicts_lowest_priority_first_when_over_budget() {
        let mut q = OutQueue::default();
        assert_eq!(q.push(Priority::Background, frame(40, b'b'), 100), Push::Queued { evicted: 0 });
        assert_eq!(q.push(Priority::Low, frame(40, b'l'), 100), Push::Queued { evicted: 0 });
        assert_eq!(q.push(Priority::Normal, frame(40, b'n'), 100), Push::Queued { evicted: 1 });
        let first = q.pop().expect("queued");
        assert_eq!(first[0], b'n');
        assert_eq!(q.pop().expect("queued")[0], b'l');
        assert!(q.pop().is_none());
    }

    #[test]
    fn drops_newcomer_when_nothing_lower_can_go() {
        let mut q = OutQueue::default();
        q.push(Priority::Normal, frame(80, b'n'), 100);
        assert_eq!(q.push(Priority::Normal, frame(40, b'm'), 100), Push::Dropped);
        assert_eq!(q.push(Priority::Background, frame(40, b'b'), 100), Push::Dropped);
        assert_eq!(q.bytes(), 80);
    }

    #[test]
    fn critical_evicts_everything_else_then_overflows() {
        let mut q = OutQueue::default();
        q.push(Priority::High, frame(60, b'h'), 100);
        assert_eq!(q.push(Priority::Critical, frame(60, b'c'), 100), Push::Queued { evicted: 1 });
        assert_eq!(q.push(Priority::Critical, frame(60, b'C'), 100), Push::Overflow);
    }

    #[test]
    fn empty_queue_takes_one_frame_larger_than_the_budget() {
        let mut q = OutQueue::default();
        assert_eq!(q.push(Priority::Low, frame(150, b'l'), 100), Push::Queued { evicted: 0 });
        assert_eq!(q.push(Priority::Low, frame(10, b'm'), 100), Push::Dropped);
        assert_eq!(q.pop().expect("queued").len(), 150);
    }

    #[test]
    fn control_overflow_is_reported() {
        let mut q = OutQueue::default();
        q.push(Priority::Critical, frame(90, b'c'), 100);
        assert_eq!(q.push_control(frame(20, b'p'), 100), Push::Overflow);
    }
}
