//! Sans-I/O core of the WSE engine.
//!
//! Place in the data path: `socket → shard → **protocol** → fanout → shard → socket`. The
//! shard reads bytes from a socket and pushes them through this crate; this crate tells
//! it what the bytes mean and which bytes to send back. It owns:
//!
//! - [`handshake`]: the HTTP/1.1 upgrade request (RFC 6455 §4.2.1), plain HTTP responses;
//! - [`frame`], [`mask`], [`close`], [`reader`], [`writer`]: the RFC 6455 frame layer and the
//!   per-connection receive state machine (fragmentation, control frames, UTF-8, limits);
//! - [`extensions`], [`deflate`]: permessage-deflate negotiation (RFC 7692 §7) and the
//!   one-shot compression behind it and behind `C:` frames (PROTOCOL.md §4);
//! - [`envelope`], [`engine`], [`topic`], [`time`]: the WSE JSON envelope of `PROTOCOL.md` §3
//!   and the messages the engine answers itself (§7);
//! - [`msgpack`]: `M:` frames, the envelope as msgpack both ways (§4);
//! - [`filter`]: subscription filters, MongoDB-style criteria over publications (§7);
//! - [`e2e`], [`signing`]: end-to-end encryption of data frames (§4-§5) and HMAC signing of
//!   JSON text frames (§6);
//! - [`auth`]: token sources and JWT validation at the upgrade (§2), and [`ratelimit`], the
//!   per-connection inbound token bucket (§7 `rate_limit_warning`, §9 close 4429).
//!
//! It deliberately does no I/O and never reads the clock: times are parameters, so every
//! behaviour here is reproducible in a unit test.

pub mod auth;
pub mod close;
pub mod deflate;
pub mod e2e;
pub mod engine;
pub mod envelope;
mod error;
pub mod extensions;
pub mod filter;
pub mod fragment_check;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod msgpack;
pub mod ratelimit;
pub mod reader;
pub mod signing;
pub mod time;
pub mod topic;
pub mod writer;

pub use error::Error;
