//! The application's calls, as one shard serves them.
//!
//! Place: `App (any thread) → control ring → **control loop** → connection queues`. Every
//! call that names a connection reaches the shard that owns it; a connection that is gone by
//! then is skipped quietly (the application learns of it from the `disconnect` event).
//! Queries answer on their reply channel; a caller that gave up is ignored.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use wse_fanout::ids::ConnId;
use wse_protocol::envelope::{self, category_for, Category, ObjectWriter, Priority};
use wse_protocol::topic::validate_topic;

use super::Shard;
use crate::conn::{Conn, Verdict};
use crate::metrics::{DropReason, ShardMetrics};
use crate::server::Control;

impl Shard {
    /// Serves one control message other than shutdown, publish and ACL changes.
    pub(crate) fn serve_app(&self, control: Control) {
        match control {
            Control::Frame { conn, frame } => self.with_conn(conn, |c| self.queue_frame(c, frame)),
            Control::SendEvent { conn, t, payload, pri, cid } => self.with_conn(conn, |c| {
                self.send_event(c, &t, &payload, pri, cid.as_deref());
            }),
            Control::Broadcast(frame) => {
                let conns: Vec<_> = self.conns.borrow().values().cloned().collect();
                for conn in conns {
                    self.queue_frame(&conn, frame.clone());
                }
            }
            Control::Subscribe { conn, topics } => {
                self.with_conn(conn, |c| self.subscribe_for_app(c, &topics));
            }
            Control::Unsubscribe { conn, topics } => {
                self.with_conn(conn, |c| self.unsubscribe_for_app(c, topics.as_deref()));
            }
            Control::Disconnect { conn, code, reason } => self.with_conn(conn, |c| {
                if !c.is_closing() {
                    *c.close_reason.borrow_mut() = Some(reason);
                }
                c.request_close(code);
                c.wake();
            }),
            Control::SnapshotComplete { conn, topics } => {
                self.with_conn(conn, |c| self.snapshot_complete(c, &topics));
            }
            Control::ConnectionInfo { conn, reply } => {
                let info = self.conns.borrow().get(&conn).and_then(|c| {
                    let mut info = c.info.as_deref()?.clone();
                    info.connection_id = c.uuid.to_string();
                    Some(info)
                });
                let waiting = || self.waiting_accept.borrow().get(&conn)?.info.as_deref().cloned();
                let _ = reply.try_send(info.or_else(waiting));
            }
            Control::Accept { conn, user_id } => {
                let waiting = self.waiting_accept.borrow().get(&conn).cloned();
                if let Some(waiting) = waiting {
                    waiting.decide(Verdict::Accept(user_id));
                }
            }
            Control::Reject { conn, code, reason } => {
                let waiting = self.waiting_accept.borrow().get(&conn).cloned();
                if let Some(waiting) = waiting {
                    waiting.decide(Verdict::Reject(code, reason));
                }
            }
            Control::Connections { reply } => {
                let _ = reply.try_send(self.conns.borrow().keys().copied().collect());
            }
            Control::SubscriberCount { topic, reply } => {
                let _ = reply.try_send(self.topics.borrow().subscriber_count(&topic));
            }
            Control::UpdatePresence { conn, data } => {
                self.with_conn(conn, |c| self.update_presence(c, data));
            }
            Control::Presence { topic, reply } => {
                let _ = reply.try_send(self.presence_members(&topic));
            }
            Control::PresenceStats { topic, reply } => {
                let _ = reply.try_send(self.presence_stats(&topic));
            }
            Control::Shutdown { .. } | Control::Publish(_) | Control::SetTopicAcl { .. } => {
                // Served by the control loop itself.
            }
        }
    }

    fn with_conn(&self, conn: ConnId, f: impl FnOnce(&Conn)) {
        let Some(conn) = self.conns.borrow().get(&conn).cloned() else { return };
        f(&conn);
    }

    /// Queues a frame built by the application, at normal priority.
    fn queue_frame(&self, conn: &Conn, frame: Bytes) {
        if conn.is_closing() {
            return self.metrics().dropped(DropReason::Closing, 1);
        }
        let budget = conn.budget_left(self.shared.config.max_outbound_queue_bytes);
        let outcome = conn.out.borrow_mut().push(Priority::Normal, frame, budget);
        self.account(conn, outcome);
    }

    /// The application's `send_event`: a direct message with the connection's next `seq`.
    /// Snapshot replies are counted for the holds; `snapshot_complete` ends them.
    pub(super) fn send_event(
        &self,
        conn: &Conn,
        t: &str,
        payload: &str,
        pri: Priority,
        cid: Option<&str>,
    ) {
        if conn.is_closing() {
            return self.metrics().dropped(DropReason::Closing, 1);
        }
        conn.send_direct_as(self, true, pri, t, cid, |meta, out| {
            envelope::direct(t, payload, &meta.with_priority(pri), out);
        });
        if t == "snapshot_complete" {
            let topics = topics_of(payload);
            conn.end_holds(&topics);
            conn.wake();
        } else if category_for(t) == Category::Snapshot {
            conn.note_snapshot_reply(pri);
        }
    }

    /// Ends the holds of `topics` and tells the client with `snapshot_complete`
    /// `{topics, count}`, queued after the snapshot replies.
    fn snapshot_complete(&self, conn: &Conn, topics: &[Box<str>]) {
        let ended = conn.end_holds(topics);
        let named: Vec<&str> = if topics.is_empty() {
            ended.patterns.iter().map(|t| &**t).collect()
        } else {
            topics.iter().map(|t| &**t).collect()
        };
        if conn.is_closing() {
            return;
        }
        conn.send_direct(self, ended.pri, "snapshot_complete", None, |meta, out| {
            envelope::direct_with("snapshot_complete", meta, out, |out| {
                let mut w = ObjectWriter::new(out);
                w.nested("topics", |out| write_strings(&named, out));
                w.uint("count", ended.replies);
                w.finish();
            });
        });
        conn.wake();
    }

    /// Subscriptions on the application's authority: names are checked, the ACL is not.
    fn subscribe_for_app(&self, conn: &Conn, topics: &[Box<str>]) {
        let limit = self.shared.config.max_subscriptions_per_connection;
        let mut mine = conn.topics.borrow_mut();
        for topic in topics {
            let fresh = !mine.iter().any(|t| t == topic);
            if !fresh || validate_topic(topic, true).is_err() || self.stopping.get() {
                continue;
            }
            if mine.len() >= limit {
                tracing::debug!(conn = conn.id.0, "subscription limit: application subscribe cut");
                break;
            }
            self.topics.borrow_mut().subscribe(conn.id, topic);
            mine.push(topic.clone());
            ShardMetrics::add(&self.metrics().subscriptions, 1);
            self.presence_join(conn, topic);
        }
    }

    fn unsubscribe_for_app(&self, conn: &Conn, topics: Option<&[Box<str>]>) {
        let mut mine = conn.topics.borrow_mut();
        let gone: Vec<Box<str>> = match topics {
            None => std::mem::take(&mut *mine),
            Some(list) => {
                let (gone, kept) =
                    std::mem::take(&mut *mine).into_iter().partition(|t| list.contains(t));
                *mine = kept;
                gone
            }
        };
        drop(mine);
        let mut index = self.topics.borrow_mut();
        for topic in &gone {
            index.unsubscribe(conn.id, topic);
        }
        drop(index);
        self.metrics().subscriptions.fetch_sub(gone.len() as u64, Ordering::Relaxed);
        for topic in &gone {
            self.presence_leave(conn, topic);
        }
    }
}

/// `p.topics` of a `snapshot_complete` payload; empty when absent.
fn topics_of(payload: &str) -> Vec<Box<str>> {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let Ok(value) = sonic_rs::from_str::<sonic_rs::Value>(payload) else { return Vec::new() };
    let Some(list) = value.get("topics").and_then(|t| t.as_array().cloned()) else {
        return Vec::new();
    };
    list.iter().filter_map(|t| t.as_str()).map(Into::into).collect()
}

/// Writes a JSON array of strings.
fn write_strings(items: &[&str], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        envelope::write_str(item, out);
    }
    out.push(b']');
}
