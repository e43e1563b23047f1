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
//! - `shard`: one executor's state and tasks (accept, rings, heartbeats);
//! - `conn`: one connection's task, from the first byte to the last;
//! - [`metrics`], [`gate`], [`outqueue`]: counters, the handshake gate, the priority queue.

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

pub use config::Config;
pub use server::{Control, DirectEvent, Server};

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
}

/// The version reported in `server_hello`, `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
