//! `wse-drain-host`: our engine with an application that drains it, for the inbound
//! scenario of `loadbench`, until the Python package (`wse_server`, issue #5) is on main.
//!
//! It embeds `wse_shard::Server` with application events on and drains it from one thread
//! with `App::drain_into`, as the Python facade will: every client message is counted as
//! handed to the application (its `p.n` checked to follow the connection's previous one),
//! and `bench_stats` is answered with the count through `App::send`. JWT (HS256, `--secret`)
//! is checked by the engine; the inbound rate limit is lifted as for every peer. It prints
//! `wse-drain-host listening on ADDR` once it listens and runs until stdin closes or it is
//! killed.
//!
//! The drain here is Rust: the row it gives is labelled provisional, because the
//! comparison the issue asks for is Python draining our engine against Python draining the
//! product we replace.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sonic_rs::JsonValueTrait;
use wse_shard::config::{JwtSettings, Secret};
use wse_shard::{Config, ConnId, EventKind, Server};

/// Our engine drained by an application thread (Rust), for loadbench.
#[derive(Debug, Parser)]
#[command(name = "wse-drain-host", version, about, long_about = None)]
struct Args {
    /// Port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HS256 secret of the tokens (at least 32 bytes).
    #[arg(long)]
    secret: String,
    /// Connections admitted at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Cores of the shards [default: every core this process may use].
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
}

/// What the application counted.
#[derive(Default)]
struct Counts {
    messages: u64,
    disorder: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    next_n: HashMap<ConnId, u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = Config { host: [127, 0, 0, 1].into(), port: args.port, ..Config::default() };
    if !args.cores.is_empty() {
        config.cores = args.cores.clone();
    }
    config.max_connections = args.max_connections;
    config.app_events = true;
    config.idle_timeout = Duration::from_secs(600);
    config.security.rate_limit_capacity = u64::MAX / 4;
    config.security.rate_limit_refill = 1e15;
    config.security.jwt = Some(JwtSettings {
        algorithm: "HS256".to_owned(),
        key: Secret(args.secret.into_bytes()),
        previous_key: None,
        issuer: None,
        audience: Vec::new(),
        key_id: None,
    });
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wse-drain-host: {e}");
            return ExitCode::from(2);
        }
    };
    println!("wse-drain-host listening on {}", server.local_addr());
    let done = Arc::new(AtomicBool::new(false));
    let stdin_done = Arc::clone(&done);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stdin_done.store(true, Ordering::Relaxed);
    });

    let app = server.app().clone();
    let mut counts = Counts::default();
    let mut batch = Vec::with_capacity(BATCH);
    while !done.load(Ordering::Relaxed) {
        batch.clear();
        if app.drain_into(&mut batch, BATCH, Duration::from_millis(50)).is_err() {
            break;
        }
        for event in &batch {
            let EventKind::Message(envelope) = &event.kind else { continue };
            let value: sonic_rs::Value = envelope.parse().unwrap_or_default();
            if value.get("t").and_then(|t| t.as_str()) == Some("bench_stats") {
                let _ = app.send(event.conn, &counts.stats());
                continue;
            }
            let n = value.get("p").and_then(|p| p.get("n")).and_then(|n| n.as_u64());
            counts.count(event.conn, n);
        }
    }
    server.shutdown(1001);
    let _ = server.join(Duration::from_secs(5));
    ExitCode::SUCCESS
}

impl Counts {
    fn count(&mut self, conn: ConnId, n: Option<u64>) {
        let want = self.next_n.entry(conn).or_insert(0);
        if n != Some(*want) {
            self.disorder += 1;
        }
        *want = n.unwrap_or(*want) + 1;
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.messages += 1;
    }

    /// The answer to `bench_stats`.
    fn stats(&self) -> String {
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_nanos(),
            _ => 0,
        };
        format!(
            r#"{{"c":"WSE","t":"bench_stats","p":{{"msgs":{},"disorder":{},"span_ns":{span}}}}}"#,
            self.messages, self.disorder
        )
    }
}

/// Events per drain call.
const BATCH: usize = 256;
