//! Presence: who is on a topic right now, kept by the topic's owner shard.
//!
//! Place in the data path: `subscribe / unsubscribe / disconnect on any shard → **presence
//! table of the topic's owner** → presence publication to the topic's subscribers, and a
//! presence event for the application`. A connection's shard sends a [`PresenceChange`] over
//! the same FIFO ring as its publications (`mesh::ToOwner`), so the owner sees one
//! connection's join before its leave. Because one shard keeps each topic's table, "the
//! first connection of a user joined" and "the last one left" are decided in one place,
//! whichever shards the user's connections live on.
//!
//! Members are users: connections with the same user id count once, and the topic hears
//! `presence_join` when the first of them arrives, `presence_leave` when the last one goes,
//! and `presence_update` when the user's data changes. A connection without a user id is its
//! own member (its shard passes the connection's UUID as the id). Data is the user's JSON
//! text, shared by their connections; the last one set wins.
//!
//! Bounds: the data size is checked where the data enters (the shard, the application call);
//! the member count per topic here ([`PresenceTable::new`]). A join over the member limit is
//! [`Outcome::Refused`]: the connection stays subscribed but is not listed, and its leave
//! later changes nothing. The table holds at most one entry per subscription, which the
//! subscription limits bound.
//!
//! Pure: no I/O, no clock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::ConnId;

/// One connection's change of presence on one topic, on its way to the topic's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// Exact topic (presence is not kept for glob subscriptions).
    pub topic: Arc<str>,
    /// The connection whose subscription changed.
    pub conn: ConnId,
    /// The member it counts for: its user id, or its connection UUID when anonymous.
    pub user: Arc<str>,
    /// What happened.
    pub kind: ChangeKind,
}

/// What a connection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Subscribed to the topic, with the connection's presence data (JSON text), if any.
    Join {
        /// The data to list the user with.
        data: Option<Arc<str>>,
    },
    /// Unsubscribed, or the connection ended.
    Leave,
    /// Its presence data changed while subscribed.
    Update {
        /// The new data (JSON text); `None` clears it.
        data: Option<Arc<str>>,
    },
}

/// What a change did to the topic's member list, and so what the topic is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new member: announce `presence_join` with its data.
    Joined {
        /// The member's data.
        data: Option<Arc<str>>,
    },
    /// The member's last connection left: announce `presence_leave` with the data it had.
    Left {
        /// The data the member had.
        data: Option<Arc<str>>,
    },
    /// The member's data changed: announce `presence_update`.
    Updated {
        /// The new data.
        data: Option<Arc<str>>,
    },
    /// Nothing the topic needs to hear (another connection of a listed user, a repeated
    /// change, a leave of a connection that was never listed).
    Unchanged,
    /// A new member over the topic's member limit: not listed.
    Refused,
}

/// One listed member of a topic, as queries return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The user id (or the connection UUID of an anonymous connection).
    pub user_id: Arc<str>,
    /// The member's data, JSON text.
    pub data: Option<Arc<str>>,
    /// The member's connections on the topic.
    pub connections: usize,
}

/// Members and connections of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Distinct members.
    pub users: usize,
    /// Their connections.
    pub connections: usize,
}

/// The presence of every topic one shard owns.
#[derive(Debug, Default)]
pub struct PresenceTable {
    /// Topic → member → their connections and data. A topic with no member is removed.
    topics: HashMap<Arc<str>, HashMap<Arc<str>, Member>>,
    /// Most members listed per topic; 0 is no limit.
    max_members: usize,
}

#[derive(Debug)]
struct Member {
    /// Connections of this user subscribed to the topic; usually one.
    conns: Vec<ConnId>,
    data: Option<Arc<str>>,
}

impl PresenceTable {
    /// An empty table listing at most `max_members` members per topic (0: no limit).
    pub fn new(max_members: usize) -> PresenceTable {
        PresenceTable { topics: HashMap::new(), max_members }
    }

    /// Applies one change and says what the topic should hear.
    pub fn apply(&mut self, change: &PresenceChange) -> Outcome {
        match &change.kind {
            ChangeKind::Join { data } => self.join(change, data),
            ChangeKind::Leave => self.leave(change),
            ChangeKind::Update { data } => self.update(change, data),
        }
    }

    /// The members of `topic`, sorted by user id.
    pub fn members(&self, topic: &str) -> Vec<MemberView> {
        let Some(members) = self.topics.get(topic) else { return Vec::new() };
        let mut list: Vec<MemberView> = members
            .iter()
            .map(|(user, member)| MemberView {
                user_id: Arc::clone(user),
                data: member.data.clone(),
                connections: member.conns.len(),
            })
            .collect();
        list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        list
    }

    /// How many members and connections `topic` has.
    pub fn stats(&self, topic: &str) -> TopicStats {
        let Some(members) = self.topics.get(topic) else { return TopicStats::default() };
        TopicStats {
            users: members.len(),
            connections: members.values().map(|m| m.conns.len()).sum(),
        }
    }

    /// Topics with at least one member, and members over all topics (for gauges).
    pub fn totals(&self) -> (usize, usize) {
        (self.topics.len(), self.topics.values().map(HashMap::len).sum())
    }

    fn join(&mut self, change: &PresenceChange, data: &Option<Arc<str>>) -> Outcome {
        let limit = self.max_members;
        let members = self.topics.entry(Arc::clone(&change.topic)).or_default();
        if let Some(member) = members.get_mut(&change.user) {
            if !member.conns.contains(&change.conn) {
                member.conns.push(change.conn);
            }
            // A later connection that brings data replaces the user's data.
            if data.is_some() && member.data != *data {
                member.data.clone_from(data);
                return Outcome::Updated { data: data.clone() };
            }
            return Outcome::Unchanged;
        }
        if limit > 0 && members.len() >= limit {
            if members.is_empty() {
                self.topics.remove(&change.topic);
            }
            return Outcome::Refused;
        }
        let member = Member { conns: vec![change.conn], data: data.clone() };
        members.insert(Arc::clone(&change.user), member);
        Outcome::Joined { data: data.clone() }
    }

    fn leave(&mut self, change: &PresenceChange) -> Outcome {
        let Some(members) = self.topics.get_mut(&change.topic) else { return Outcome::Unchanged };
        let Some(member) = members.get_mut(&change.user) else { return Outcome::Unchanged };
        let Some(at) = member.conns.iter().position(|c| *c == change.conn) else {
            return Outcome::Unchanged;
        };
        member.conns.swap_remove(at);
        if !member.conns.is_empty() {
            return Outcome::Unchanged;
        }
        let data = members.remove(&change.user).and_then(|m| m.data);
        if members.is_empty() {
            self.topics.remove(&change.topic);
        }
        Outcome::Left { data }
    }

    fn update(&mut self, change: &PresenceChange, data: &Option<Arc<str>>) -> Outcome {
        let member = self.topics.get_mut(&change.topic).and_then(|m| m.get_mut(&change.user));
        let Some(member) = member else { return Outcome::Unchanged };
        if !member.conns.contains(&change.conn) || member.data == *data {
            return Outcome::Unchanged;
        }
        member.data.clone_from(data);
        Outcome::Updated { data: data.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(topic: &str, conn: u64, user: &str, kind: ChangeKind) -> PresenceChange {
        PresenceChange { topic: topic.into(), conn: ConnId(conn), user: user.into(), kind }
    }

    fn join(conn: u64, user: &str, data: Option<&str>) -> PresenceChange {
        change("room", conn, user, ChangeKind::Join { data: data.map(Arc::from) })
    }

    fn leave(conn: u64, user: &str) -> PresenceChange {
        change("room", conn, user, ChangeKind::Leave)
    }

    fn update(conn: u64, user: &str, data: Option<&str>) -> PresenceChange {
        change("room", conn, user, ChangeKind::Update { data: data.map(Arc::from) })
    }

    fn data(text: &str) -> Option<Arc<str>> {
        Some(Arc::from(text))
    }

    #[test]
    fn first_connection_joins_and_last_one_leaves() {
        let mut table = PresenceTable::new(0);
        assert_eq!(table.apply(&join(1, "ann", Some("{}"))), Outcome::Joined { data: data("{}") });
        assert_eq!(table.apply(&join(2, "ann", None)), Outcome::Unchanged);
        assert_eq!(table.stats("room"), TopicStats { users: 1, connections: 2 });

        assert_eq!(table.apply(&leave(1, "ann")), Outcome::Unchanged);
        assert_eq!(table.apply(&leave(2, "ann")), Outcome::Left { data: data("{}") });
        assert_eq!(table.stats("room"), TopicStats::default());
        assert_eq!(table.totals(), (0, 0));
    }

    #[test]
    fn a_repeated_join_of_one_connection_counts_once() {
        let mut table = PresenceTable::new(0);
        table.apply(&join(1, "ann", None));
        table.apply(&join(1, "ann", None));
        assert_eq!(table.stats("room").connections, 1);
        assert_eq!(table.apply(&leave(1, "ann")), Outcome::Left { data: None });
    }

    #[test]
    fn a_leave_of_an_unknown_connection_changes_nothing() {
        let mut table = PresenceTable::new(0);
        assert_eq!(table.apply(&leave(1, "ann")), Outcome::Unchanged);
        table.apply(&join(1, "ann", None));
        assert_eq!(table.apply(&leave(9, "ann")), Outcome::Unchanged);
        assert_eq!(table.apply(&leave(1, "bob")), Outcome::Unchanged);
        assert_eq!(table.stats("room").users, 1);
    }

    #[test]
    fn updates_announce_only_real_changes_of_listed_connections() {
        let mut table = PresenceTable::new(0);
        table.apply(&join(1, "ann", Some(r#"{"s":"away"}"#)));
        let busy = Some(r#"{"s":"busy"}"#);
        assert_eq!(
            table.apply(&update(1, "ann", busy)),
            Outcome::Updated { data: busy.map(Arc::from) }
        );
        assert_eq!(table.apply(&update(1, "ann", busy)), Outcome::Unchanged);
        assert_eq!(table.apply(&update(7, "ann", None)), Outcome::Unchanged, "not its connection");
        assert_eq!(table.apply(&update(1, "bob", None)), Outcome::Unchanged, "not a member");
        assert_eq!(table.members("room")[0].data, busy.map(Arc::from));
    }

    #[test]
    fn a_later_connection_with_new_data_updates_the_member() {
        let mut table = PresenceTable::new(0);
        table.apply(&join(1, "ann", Some("1")));
        assert_eq!(table.apply(&join(2, "ann", Some("2"))), Outcome::Updated { data: data("2") });
        assert_eq!(table.apply(&join(3, "ann", Some("2"))), Outcome::Unchanged);
    }

    #[test]
    fn joins_over_the_member_limit_are_refused_and_their_leaves_ignored() {
        let mut table = PresenceTable::new(2);
        table.apply(&join(1, "ann", None));
        table.apply(&join(2, "bob", None));
        assert_eq!(table.apply(&join(3, "cat", None)), Outcome::Refused);
        assert_eq!(table.apply(&join(4, "ann", None)), Outcome::Unchanged, "a listed user");
        assert_eq!(table.apply(&leave(3, "cat")), Outcome::Unchanged);
        assert_eq!(table.stats("room"), TopicStats { users: 2, connections: 3 });

        table.apply(&leave(2, "bob"));
        assert!(matches!(table.apply(&join(3, "cat", None)), Outcome::Joined { .. }));
    }

    #[test]
    fn members_are_listed_by_user_id_with_their_connection_counts() {
        let mut table = PresenceTable::new(0);
        table.apply(&join(1, "zed", None));
        table.apply(&join(2, "ann", Some("{}")));
        table.apply(&join(3, "ann", None));
        let list = table.members("room");
        let names: Vec<&str> = list.iter().map(|m| &*m.user_id).collect();
        assert_eq!(names, ["ann", "zed"]);
        assert_eq!(list[0].connections, 2);
        assert!(table.members("elsewhere").is_empty());
    }

    #[test]
    fn topics_are_kept_apart() {
        let mut table = PresenceTable::new(0);
        table.apply(&join(1, "ann", None));
        table.apply(&change("other", 1, "ann", ChangeKind::Join { data: None }));
        assert_eq!(table.totals(), (2, 2));
        table.apply(&leave(1, "ann"));
        assert_eq!(table.stats("other").users, 1);
    }
}
