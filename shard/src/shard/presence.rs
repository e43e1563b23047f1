//! Presence as one shard takes part in it (PROTOCOL.md §7, §8).
//!
//! Place: `subscribe / unsubscribe / connection end → **changes out** → the topic's owner →
//! **owner applies** → presence publication + application event`. Two roles:
//!
//! - As the shard of a connection: every exact-topic subscription it gains or loses becomes a
//!   [`PresenceChange`], queued in order and forwarded to the topic's owner by one task
//!   ([`forward`]), over the same FIFO ring as publications, so the owner always sees a
//!   connection's join before its leave.
//! - As a topic's owner: the change is applied to the shard's [`PresenceTable`]; when the
//!   member list changed, the owner publishes `presence_join`, `presence_leave` or
//!   `presence_update` `{user_id, data}` to the topic like any publication (stamped, so it
//!   keeps its place among the topic's messages and is replayed by recovery), and hands the
//!   application its event.
//!
//! Glob subscriptions take no part: a pattern is not a place anyone is "on". Nothing here
//! runs when presence is off.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use glommio::channels::local_channel::LocalReceiver;
use tracing::trace;
use wse_fanout::glob::has_wildcards;
use wse_fanout::mesh::{PublishRequest, ToOwner};
use wse_fanout::presence::{ChangeKind, MemberView, Outcome, PresenceChange, TopicStats};
use wse_protocol::envelope::{ObjectWriter, Priority};

use super::Shard;
use crate::app::inbound::Slot;
use crate::app::{Event, EventKind, PresenceKind};
use crate::conn::Conn;
use crate::metrics::ShardMetrics;

impl Shard {
    /// `conn` subscribed to `topic`: it joins the topic's presence with its data.
    pub(crate) fn presence_join(&self, conn: &Conn, topic: &str) {
        let data = conn.presence_data.borrow().clone();
        self.presence_change(conn, topic, ChangeKind::Join { data });
    }

    /// `conn` no longer holds `topic`: it leaves the topic's presence.
    pub(crate) fn presence_leave(&self, conn: &Conn, topic: &str) {
        self.presence_change(conn, topic, ChangeKind::Leave);
    }

    /// Replaces `conn`'s presence data and announces it on every exact topic it holds.
    pub(crate) fn update_presence(&self, conn: &Conn, data: Option<Arc<str>>) {
        if !self.shared.config.presence.enabled {
            return;
        }
        *conn.presence_data.borrow_mut() = data.clone();
        let topics = conn.topics.borrow().clone();
        for topic in topics.iter() {
            self.presence_change(conn, topic, ChangeKind::Update { data: data.clone() });
        }
    }

    /// The members this shard lists for `topic` (only its owner lists any).
    pub(crate) fn presence_members(&self, topic: &str) -> Vec<MemberView> {
        self.presence.borrow().members(topic)
    }

    /// The counts this shard keeps for `topic` (zero unless it owns the topic).
    pub(crate) fn presence_stats(&self, topic: &str) -> TopicStats {
        self.presence.borrow().stats(topic)
    }

    /// Applies a change to a topic this shard owns, then announces what it changed: to the
    /// topic's subscribers as a publication, and to the application as an event.
    pub(crate) async fn apply_presence(&self, change: PresenceChange) {
        let outcome = self.presence.borrow_mut().apply(&change);
        let (kind, data) = match outcome {
            Outcome::Joined { data } => (PresenceKind::Join, data),
            Outcome::Left { data } => (PresenceKind::Leave, data),
            Outcome::Updated { data } => (PresenceKind::Update, data),
            Outcome::Unchanged => return,
            Outcome::Refused => {
                ShardMetrics::add(&self.metrics().presence_refused, 1);
                return trace!(topic = &*change.topic, "presence member limit reached");
            }
        };
        ShardMetrics::add(&self.metrics().presence_events, 1);
        let request = PublishRequest {
            topic: Arc::clone(&change.topic),
            event_type: Some(kind.name().into()),
            data: announcement(&change.user, data.as_deref()).into(),
            pri: Priority::Normal,
            id: None,
        };
        self.publish_owned(request).await;
        self.tell_application(change, kind, data).await;
    }

    /// Queues a change of `conn` on `topic` for the topic's owner; exact topics only, and
    /// only when presence is on.
    fn presence_change(&self, conn: &Conn, topic: &str, kind: ChangeKind) {
        if !self.shared.config.presence.enabled || has_wildcards(topic) {
            return;
        }
        let user = match conn.user_id.as_deref() {
            Some(user) => Arc::from(user),
            None => Arc::from(conn.uuid.to_string()),
        };
        let change = PresenceChange { topic: Arc::from(topic), conn: conn.id, user, kind };
        if self.presence_out.try_send(change).is_err() {
            // Only a shard that is shutting down has dropped the receiving task.
            trace!(conn = conn.id.0, "presence change dropped during shutdown");
        }
    }

    /// Hands the application its presence event; waits, like a connection's lifecycle
    /// events, while the shard's inbound ring is full.
    async fn tell_application(
        &self,
        change: PresenceChange,
        kind: PresenceKind,
        data: Option<Arc<str>>,
    ) {
        let Some(app) = &self.app else { return };
        let bytes = change.topic.len() + change.user.len() + data.as_ref().map_or(0, |d| d.len());
        let event = EventKind::Presence { kind, topic: change.topic, user_id: change.user, data };
        let event = Event { conn: change.conn, kind: event };
        let mut slot = Some(Slot { event, bytes, lifecycle: true });
        let mut registered = 0;
        poll_fn(|cx| {
            let Some(pending) = slot.take() else { return Poll::Ready(()) };
            match app.push_or_wait(pending, cx, &mut registered) {
                Ok(()) => Poll::Ready(()),
                Err(pending) => {
                    slot = Some(pending);
                    Poll::Pending
                }
            }
        })
        .await;
        ShardMetrics::add(&self.metrics().app_events, 1);
    }
}

/// Forwards this shard's presence changes to the topics' owners, in the order they were
/// made; waits while an owner's ring is full.
pub(super) async fn forward(shard: Rc<Shard>, changes: LocalReceiver<PresenceChange>) {
    while let Some(change) = changes.recv().await {
        shard.send_to_owner(ToOwner::Presence(change)).await;
    }
}

/// The payload of a presence publication: `{"user_id": …, "data": …}`, `data` being the
/// member's JSON or `null`.
fn announcement(user: &str, data: Option<&str>) -> String {
    let mut out = Vec::with_capacity(user.len() + data.map_or(4, str::len) + 24);
    let mut w = ObjectWriter::new(&mut out);
    w.string("user_id", user);
    w.raw("data", data.unwrap_or("null").as_bytes());
    w.finish();
    // The writer emits UTF-8 from UTF-8 input and checked JSON.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_carry_the_user_and_the_data_as_json() {
        assert_eq!(announcement("ann", Some(r#"{"s":1}"#)), r#"{"user_id":"ann","data":{"s":1}}"#);
        assert_eq!(announcement("a\"b", None), r#"{"user_id":"a\"b","data":null}"#);
    }
}
