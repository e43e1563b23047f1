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
//! Between instances, the [`bridge`] carries the publications of the topics that travel
//! through Redis pub/sub: Redis stamps them, and every instance hands them to the topic's
//! owner shard as if they had been published there.
//!
//! The modules here are pure (no I/O, no executor, no clock: time is a parameter), except
//! [`mesh`], which moves publications between shards over glommio rings, and [`bridge`],
//! whose two threads talk to Redis (its policy parts, [`bridge::breaker`],
//! [`bridge::backoff`], [`bridge::pending`] and [`bridge::wire`], are pure again). Sockets,
//! connection queues and access control stay in `shard`.

pub mod acl;
pub mod dedup;
pub mod glob;
pub mod history;
pub mod ids;
pub mod index;
pub mod owner;
pub mod presence;
pub mod sequencer;

// Runtime modules: the rings run on the glommio executors, the bridge on its own threads.
pub mod bridge;
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
    /// A Redis setting is unusable (URL, prefix, topic globs, timeouts); the message names
    /// it. The bridge does not start; fix the configuration.
    #[error("invalid redis configuration: {0}")]
    BridgeConfig(String),
    /// A bridge thread could not be started (the OS refused a thread). The server does not
    /// start.
    #[error("cannot start the redis bridge: {0}")]
    BridgeSpawn(String),
    /// Redis cannot be reached now (no connection, or the circuit breaker is open). Local
    /// delivery goes on; retry the call later.
    #[error("redis is unreachable")]
    RedisUnavailable,
    /// A Redis command failed (the connection broke, or Redis refused it); the message is
    /// Redis's. The bridge reconnects on its own; retry later.
    #[error("redis call failed: {0}")]
    Redis(String),
    /// The bridge did not take or answer the call in time (its queue stayed full, or Redis
    /// is slow). Nothing is known about the outcome of a replay; list to find out.
    #[error("the redis bridge did not answer in time")]
    BridgeTimeout,
    /// The bridge has stopped (the server is shutting down).
    #[error("the redis bridge is stopped")]
    BridgeStopped,
}
