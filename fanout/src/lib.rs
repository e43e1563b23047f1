//! Topics, subscriptions and the cross-shard publication path of the WSE engine.
//!
//! Place in the data path: `socket → shard → protocol → **fanout** → shard → socket`. A
//! publication is routed to its topic's owner shard ([`owner`]), checked against the
//! de-duplication window there ([`dedup`]), stamped with its topic position ([`sequencer`]),
//! encoded once, and sent to every shard, where the shard-local subscription index ([`index`],
//! with [`glob`] for wildcard patterns) names the connections to queue it for, and the
//! shard's [`history`] keeps it for subscribers that recover after a reconnect. The owner
//! shard also keeps who is on each of its topics ([`presence`]).
//!
//! The modules here are pure (no I/O, no executor, no clock: time is a parameter), except
//! [`mesh`], which moves publications between shards over glommio rings. The Redis bridge
//! for multi-instance fan-out comes later too. Sockets, connection queues and access control
//! stay in `shard`.

pub mod acl;
pub mod dedup;
pub mod glob;
pub mod history;
pub mod ids;
pub mod index;
pub mod owner;
pub mod presence;
pub mod sequencer;

// Runtime modules: the only ones that run on a glommio executor.
pub mod mesh;

pub use dedup::DedupWindow;
pub use glob::glob_match;
pub use history::History;
pub use ids::{ConnId, ShardId};
pub use index::TopicIndex;
pub use owner::owner_shard;
pub use presence::PresenceTable;
pub use sequencer::{Stamp, TopicSequencer};

/// Errors of the fan-out layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shard could not join the cross-shard rings: another shard failed to start, or the
    /// mesh was built for a different number of shards. The shard cannot serve; stop it.
    #[error("could not join the cross-shard rings")]
    MeshJoin,
}
