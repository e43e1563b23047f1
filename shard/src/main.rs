//! `wse-server`: the standalone engine.
//!
//! Reads the configuration (flags, `WSE_*` variables, optional TOML file), starts the
//! shards, and waits for SIGTERM or SIGINT; then every client gets Close 1012 and the
//! process exits within [`EXIT_DEADLINE`].

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use wse_shard::{Config, Server};

fn main() -> ExitCode {
    init_logging();
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wse-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("wse-server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            error!(error = %e, "start failed");
            eprintln!("wse-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("wse-server listening on {}", server.local_addr());
    let signal = signals.forever().next();
    info!(?signal, "shutting down: closing every connection with 1012");
    server.shutdown(SERVICE_RESTART);
    if !server.join(EXIT_DEADLINE) {
        warn!("shards still running at the exit deadline; exiting anyway");
    }
    ExitCode::SUCCESS
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("WSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Close code for a server restart or shutdown (PROTOCOL.md §9).
const SERVICE_RESTART: u16 = 1012;
/// Longest time from the signal to the process exit.
const EXIT_DEADLINE: Duration = Duration::from_millis(4500);
