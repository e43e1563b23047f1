//! Snapshot holds: publications kept back while the application answers a `sync_request`
//! (PROTOCOL.md §7).
//!
//! Place: `fanout → shard (deliver_local) → **hold** → outqueue → socket`. When a client sends
//! `sync_request {topics}` (and an application is attached), each topic (or glob) gets a
//! [`Hold`]: later publications that match it wait in the hold's own [`OutQueue`] instead of
//! the connection's. The hold ends when the application calls `snapshot_complete` for the
//! topic, or when `snapshot_timeout` passes (counted in `wse_snapshot_timeouts_total`;
//! checked on the shard's housekeeping tick, so it fires up to one tick late).
//!
//! Ending a hold does not release its publications at once: they wait until the connection's
//! queue has been emptied into the socket, so that everything queued before the end (the
//! `*_snapshot` replies, then `snapshot_complete`) reaches the client first, whatever the
//! priorities. Publications that arrive meanwhile still join the hold, behind the others.
//!
//! Bounds: the held bytes and the connection's queue share its outbound byte budget, and the
//! drop policy of [`OutQueue`] applies to each hold (over budget, lower priorities go first;
//! CRITICAL that cannot fit closes the connection with 4503). A connection holds at most
//! `max_subscriptions_per_connection` topics at once; further topics are not held.

use std::sync::Arc;
use std::time::Instant;

use wse_fanout::glob_match;
use wse_protocol::envelope::Priority;

use super::Conn;
use crate::outqueue::{OutQueue, Push};

/// Every hold of one connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    entries: Vec<Hold>,
}

/// One held topic (or glob) of one `sync_request`.
#[derive(Debug)]
struct Hold {
    pattern: Box<str>,
    deadline: Instant,
    /// Ended by `snapshot_complete` or the timeout; released once the connection's queue is
    /// empty.
    ended: bool,
    /// Publications waiting, under the drop policy of the connection's queue.
    queue: OutQueue,
    /// `*_snapshot` messages sent to the connection while this hold was on.
    replies: u64,
    /// The lowest priority among those replies.
    lowest: Priority,
}

/// What ending holds produced: the count and priority for the `snapshot_complete` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The topics (or globs) whose holds ended.
    pub patterns: Vec<Box<str>>,
    /// Snapshot replies sent during them (the largest count of any of them).
    pub replies: u64,
    /// The priority `snapshot_complete` goes at, so that it leaves after the replies.
    pub pri: Priority,
}

impl Holds {
    fn bytes(&self) -> usize {
        self.entries.iter().map(|h| h.queue.bytes()).sum()
    }
}

impl Conn {
    /// Starts holding `topics` until `deadline`; returns how many holds were added (at most
    /// `limit` are open at once).
    pub(crate) fn hold(&self, topics: &[String], deadline: Instant, limit: usize) -> usize {
        let mut holds = self.holds.borrow_mut();
        let holds = holds.get_or_insert_with(Box::default);
        let mut added = 0;
        for topic in topics {
            if holds.entries.len() >= limit {
                break;
            }
            holds.entries.push(Hold {
                pattern: topic.as_str().into(),
                deadline,
                ended: false,
                queue: OutQueue::default(),
                replies: 0,
                lowest: Priority::Normal,
            });
            added += 1;
        }
        added
    }

    /// Queues a publication of `topic`: into the newest hold that matches it, else into the
    /// connection's queue. Held and queued bytes share `budget`.
    pub(crate) fn queue_publication(
        &self,
        topic: &Arc<str>,
        pri: Priority,
        frame: bytes::Bytes,
        budget: usize,
    ) -> Push {
        let mut holds = self.holds.borrow_mut();
        let Some(holds) = holds.as_mut() else {
            return self.out.borrow_mut().push_publication(pri, topic, frame, budget);
        };
        let queued = self.out.borrow().bytes();
        let held = holds.bytes();
        if let Some(hold) = holds.entries.iter_mut().rev().find(|h| glob_match(&h.pattern, topic)) {
            let room = budget.saturating_sub(queued + held - hold.queue.bytes());
            return hold.queue.push_publication(pri, topic, frame, room);
        }
        self.out.borrow_mut().push_publication(pri, topic, frame, budget.saturating_sub(held))
    }

    /// The part of `budget` that held publications leave to the connection's queue.
    pub(crate) fn budget_left(&self, budget: usize) -> usize {
        match self.holds.borrow().as_ref() {
            Some(holds) => budget.saturating_sub(holds.bytes()),
            None => budget,
        }
    }

    /// Counts a `*_snapshot` message sent at `pri` in every open hold.
    pub(crate) fn note_snapshot_reply(&self, pri: Priority) {
        let mut holds = self.holds.borrow_mut();
        let Some(holds) = holds.as_mut() else { return };
        for hold in holds.entries.iter_mut().filter(|h| !h.ended) {
            hold.replies += 1;
            hold.lowest = hold.lowest.min(pri);
        }
    }

    /// Ends the open holds of `topics` (all open holds when empty).
    pub(crate) fn end_holds(&self, topics: &[Box<str>]) -> Ended {
        let mut ended = Ended { patterns: Vec::new(), replies: 0, pri: Priority::Normal };
        let mut holds = self.holds.borrow_mut();
        let Some(holds) = holds.as_mut() else { return ended };
        let named = |h: &Hold| topics.is_empty() || topics.iter().any(|t| **t == *h.pattern);
        for hold in holds.entries.iter_mut().filter(|h| !h.ended && named(h)) {
            hold.ended = true;
            ended.patterns.push(hold.pattern.clone());
            ended.replies = ended.replies.max(hold.replies);
            ended.pri = ended.pri.min(hold.lowest);
        }
        ended
    }

    /// Ends the open holds whose deadline passed; returns how many.
    pub(crate) fn expire_holds(&self, now: Instant) -> usize {
        let mut holds = self.holds.borrow_mut();
        let Some(holds) = holds.as_mut() else { return 0 };
        let mut expired = 0;
        for hold in holds.entries.iter_mut().filter(|h| !h.ended && h.deadline <= now) {
            hold.ended = true;
            expired += 1;
        }
        expired
    }

    /// Moves the publications of ended holds, oldest hold first, into the connection's queue;
    /// call it only when that queue is empty. Returns the outcomes to account, or `None`
    /// when no hold had ended.
    pub(crate) fn release_ended(&self, budget: usize) -> Option<Vec<Push>> {
        let mut slot = self.holds.borrow_mut();
        let holds = slot.as_mut()?;
        if !holds.entries.iter().any(|h| h.ended) {
            return None;
        }
        let (ended, open): (Vec<Hold>, Vec<Hold>) =
            std::mem::take(&mut holds.entries).into_iter().partition(|h| h.ended);
        holds.entries = open;
        let room = budget.saturating_sub(holds.bytes());
        if holds.entries.is_empty() {
            *slot = None;
        }
        drop(slot);
        let mut out = self.out.borrow_mut();
        let mut outcomes = Vec::new();
        for mut hold in ended {
            while let Some((pri, topic, frame)) = hold.queue.pop_entry() {
                outcomes.push(match topic {
                    Some(topic) => out.push_publication(pri, &topic, frame, room),
                    None => out.push(pri, frame, room),
                });
            }
        }
        Some(outcomes)
    }

    /// Whether some publications are held.
    pub(crate) fn is_holding(&self) -> bool {
        self.holds.borrow().is_some()
    }
}
