//! Benchmark programs for `wse-server`: programs that print tables, not tests.
//!
//! Place: outside the engine, on the client side of the socket. The binaries in
//! `src/bin/` start a server, drive it through real sockets, and print what they measured
//! beside the machine, kernel, versions and exact command (STYLE.md practice 13). This
//! library holds what they share:
//!
//! - [`ws`]: a minimal blocking WebSocket client whose idle connection is one socket;
//! - [`clients`]: opening many connections in windows, in this process or in children;
//! - [`fanout`]: one topic's subscribers checked by offsets, and their publisher;
//! - [`server`]: the server child process, its address, `GET /health`, SIGTERM;
//! - [`host`]: facts about the machine and process memory from `/proc`;
//! - [`report`]: results as a Markdown table or JSON.

pub mod clients;
pub mod fanout;
pub mod host;
pub mod report;
pub mod server;
pub mod ws;
