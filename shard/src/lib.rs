//! The thread-per-core WSE server.
//!
//! Place in the data path: `socket → **shard** → protocol → fanout → **shard** → socket`.
//! One glommio executor per configured core, each pinned, each with its own `SO_REUSEPORT`
//! listener, connection table, topic index and outbound queues; shards share nothing but
//! atomic counters and the bounded rings of [`wse_fanout::mesh`]. This crate drives sockets
//! and time; what bytes mean is [`wse_protocol`]'s business, who subscribes to what is
//! [`wse_fanout`]'s.
//!
//! - [`config`]: settings and their sources; [`server`]: starting and stopping the shards;
//! - [`app`]: the application's interface: events from the shards, calls into them;
//! - `shard`: one executor's state and tasks (accept, rings, heartbeats);
//! - `conn`: one connection's task, from the first byte to the last;
//! - [`metrics`], [`gate`], [`outqueue`]: counters, the handshake gate, the priority queue.

pub mod app;
pub mod config;
mod conn;
pub mod gate;
mod listener;
pub mod metrics;
pub mod outqueue;
mod security;
pub mod server;
mod shard;
mod tls;
mod transport;

use std::net::SocketAddr;

pub use app::{App, ConnectionInfo, Envelope, Event, EventKind, Format, PresenceKind};
pub use config::{Config, RedisUrl};
pub use server::{Control, Server};
pub use wse_fanout::bridge::{BreakerState, BridgeStatus, DeadLetter};
pub use wse_fanout::ids::ConnId;
pub use wse_fanout::presence::{MemberView, TopicStats};
pub use wse_protocol::envelope::Priority;

/// Errors of starting, configuring or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; the message names it. Fix the configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening address could not be bound (in use, no permission, bad address).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was tried.
        addr: SocketAddr,
        /// Why the kernel refused.
        source: std::io::Error,
    },
    /// A TLS file could not be used: missing or unreadable, no certificate or private key in
    /// it, or a key that does not match the certificate. The server does not start; fix the
    /// file named in the message or the `--tls-cert`/`--tls-key` paths.
    #[error("TLS file {}: {reason}", path.display())]
    Tls {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A shard's executor could not be started (core not available, io_uring refused).
    #[error("cannot start shard {shard}: {reason}")]
    Executor {
        /// The shard number.
        shard: usize,
        /// glommio's explanation.
        reason: String,
    },
    /// A shard's control ring stayed full for `publish_timeout`: the application calls
    /// faster than the shard serves (or its rings towards other shards are full). Nothing
    /// was queued; retry later, slow down, or raise `publish_timeout`.
    #[error("shard {shard} is busy: its control ring stayed full for {waited:?}")]
    Busy {
        /// The shard that did not take the call.
        shard: usize,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// The server was stopped; nothing more can be sent or asked.
    #[error("the server is stopped")]
    Stopped,
    /// Events were asked for, but the server runs without an application
    /// ([`Config::app_events`] is off). Set it before [`Server::start`].
    #[error("the server was started without app_events: no events are produced")]
    NoApplication,
    /// An argument of an application call is unusable (a payload that is not JSON, a bad
    /// topic name, a close code that cannot be sent, a connection id of no shard); the
    /// message says which. Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A scale-out call was made, but the server runs without Redis
    /// ([`Config::redis_url`] is unset).
    #[error("the server runs without redis_url: there is no scale-out")]
    NoRedis,
    /// The Redis bridge failed a call or could not start: Redis is unreachable (retry
    /// later; local delivery goes on), a Redis command failed, the bridge did not answer
    /// in time, or its thread could not be started. The inner error says which.
    #[error(transparent)]
    ScaleOut(#[from] wse_fanout::Error),
}

/// The version reported in `server_hello`, `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
