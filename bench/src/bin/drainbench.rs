//! `drainbench`: how fast an application drains events from the shards (`App::drain`).
//!
//! Runs the engine in-process (loopback, port 0, `app_events` on) with `--shards` shards and
//! opens `--clients` WebSocket connections, each on its own thread, that send small JSON
//! messages as fast as the server reads them (frames written in batches of 64). Two figures:
//!
//! - **catch-up**: the application does not drain until the rings are full (the clients are
//!   then held back by TCP), then drains as fast as it can; events per second over the
//!   events that were waiting;
//! - **steady**: the application drains while the clients send `--messages` each; events per
//!   second from the first event to the last, end to end (socket, shard, ring, drain).
//!
//! Every message is checked to arrive, in order per connection. The per-connection inbound
//! rate limit is lifted (the default bucket would refuse most of a flood; that is not what is
//! measured here); everything else is the engine's default. Prints a table with the machine,
//! the versions and the command.
//!
//! Exit status: 0 when every message arrived, 1 when some did not, 2 when the run could not
//! be set up.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use sonic_rs::JsonValueTrait;
use wse_bench::host::{self, Machine};
use wse_bench::report::{Record, Value};
use wse_bench::ws::{push_masked, Client, Keys, CLOSE, TEXT};
use wse_shard::{App, Config, ConnId, Event, EventKind, Server};

/// Events per second through the application's drain.
#[derive(Debug, Parser)]
#[command(name = "drainbench", version, about, long_about = None)]
struct Args {
    /// Shards of the engine.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Client connections, one thread each.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Messages each client sends in the steady phase.
    #[arg(long, default_value_t = 250_000)]
    messages: u64,
    /// Padding bytes in each message's payload.
    #[arg(long, default_value_t = 64)]
    pad: usize,
    /// Events per drain call (`max_count`).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = bench_config(&args);
    let capacity = config.max_inbound_queue_size;
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("drainbench: {e}");
            return ExitCode::from(2);
        }
    };
    let app = server.app().clone();
    let addr = server.local_addr();

    // Catch-up: clients flood, nobody drains, the rings fill; then one burst of draining.
    let flood: Vec<_> =
        (0..args.clients).map(|i| spawn_sender(addr, i, u64::MAX, args.pad)).collect();
    let waiting = wait_until_full(&app, capacity * args.shards);
    let mut seen = Seen::default();
    let started = Instant::now();
    let mut drained = 0;
    let mut batch = Vec::with_capacity(args.batch);
    while drained < waiting {
        batch.clear();
        drained += app.drain_into(&mut batch, args.batch, Duration::from_millis(50)).unwrap_or(0);
        seen.check(&batch);
    }
    let catch_up = started.elapsed();
    server.shutdown(1000);
    drop(flood);
    let _ = server.join(Duration::from_secs(5));

    let steady = match steady_phase(&args) {
        Ok(steady) => steady,
        Err(e) => {
            eprintln!("drainbench: {e}");
            return ExitCode::from(2);
        }
    };

    let machine = Machine::probe();
    let mut record = Record::default();
    record
        .text("date", host::utc_now())
        .text(
            "machine",
            format!("{} ({} cores), kernel {}", machine.cpu, machine.cores, machine.kernel),
        )
        .text("rustc", machine.rustc.clone())
        .push("shards", Value::Int(args.shards as u64))
        .push("clients", Value::Int(args.clients as u64))
        .push("batch", Value::Int(args.batch as u64))
        .push("catch_up_events", Value::Int(waiting as u64))
        .push("catch_up_events_per_s", Value::Int(rate(waiting as u64, catch_up)))
        .push("steady_events", Value::Int(steady.events))
        .push("steady_events_per_s", Value::Int(rate(steady.events, steady.took)))
        .push("lost", Value::Int(steady.lost + seen.disorder))
        .text("command", std::env::args().collect::<Vec<_>>().join(" "));
    println!("{}", if args.json { record.json() } else { record.markdown() });
    if steady.lost + seen.disorder > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The engine's defaults on loopback with `--shards` shards, an application, no rate limit.
fn bench_config(args: &Args) -> Config {
    let mut config = Config { host: [127, 0, 0, 1].into(), port: 0, ..Config::default() };
    let online = config.cores.clone();
    config.cores = (0..args.shards).map(|i| online[i % online.len()]).collect();
    config.app_events = true;
    config.security.rate_limit_capacity = u64::MAX / 4;
    config.security.rate_limit_refill = 1e15;
    config
}

/// What the steady phase measured.
struct Steady {
    events: u64,
    took: Duration,
    lost: u64,
}

fn steady_phase(args: &Args) -> Result<Steady, wse_shard::Error> {
    let server = Server::start(bench_config(args))?;
    let app = server.app().clone();
    let senders: Vec<_> = (0..args.clients)
        .map(|i| spawn_sender(server.local_addr(), i, args.messages, args.pad))
        .collect();
    let want = args.messages * args.clients as u64;
    let mut seen = Seen::default();
    let mut batch = Vec::with_capacity(args.batch);
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.messages < want && Instant::now() < deadline {
        batch.clear();
        app.drain_into(&mut batch, args.batch, Duration::from_millis(100))?;
        if !batch.is_empty() {
            first.get_or_insert_with(Instant::now);
        }
        seen.check(&batch);
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    server.shutdown(1000);
    for sender in senders {
        let _ = sender.join();
    }
    let _ = server.join(Duration::from_secs(5));
    Ok(Steady { events: seen.messages, took, lost: want - seen.messages + seen.disorder })
}

/// Checks per-connection order of the `n` counters.
#[derive(Default)]
struct Seen {
    next: HashMap<ConnId, u64>,
    messages: u64,
    disorder: u64,
}

impl Seen {
    fn check(&mut self, batch: &[Event]) {
        for event in batch {
            let EventKind::Message(envelope) = &event.kind else { continue };
            let value: sonic_rs::Value = envelope.parse().unwrap_or_default();
            let n = value.get("p").and_then(|p| p.get("n")).and_then(|n| n.as_u64());
            let want = self.next.entry(event.conn).or_insert(0);
            if n != Some(*want) {
                self.disorder += 1;
            }
            *want = n.unwrap_or(*want) + 1;
            self.messages += 1;
        }
    }
}

/// Waits until the rings hold `full` events or stop growing; returns how many wait.
fn wait_until_full(app: &App, full: usize) -> usize {
    let mut last = 0;
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let depth = app.inbound_depth();
        if depth >= full
            || (depth > 0 && depth == last && still_since.elapsed() > Duration::from_secs(1))
        {
            return depth;
        }
        if depth != last {
            still_since = Instant::now();
        }
        last = depth;
    }
}

/// A client thread sending `count` messages (until its socket fails, for `u64::MAX`).
fn spawn_sender(
    addr: SocketAddr,
    id: usize,
    count: u64,
    pad: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut keys) = Keys::new() else { return };
        let Ok(mut client) = Client::connect(addr, "/wse", &mut keys, Duration::from_secs(60))
        else {
            return eprintln!("drainbench: client {id} could not connect");
        };
        if client.read_frame().is_err() {
            return;
        }
        let Ok(mut stream) = client.stream().try_clone() else { return };
        let padding = "p".repeat(pad);
        let mut buf = Vec::with_capacity(64 * (pad + 64));
        let mut n = 0;
        while n < count {
            buf.clear();
            for _ in 0..64.min(count - n) {
                let text = format!(r#"{{"t":"m","p":{{"n":{n},"pad":"{padding}"}}}}"#);
                push_masked(&mut buf, TEXT, text.as_bytes(), MASK_KEY);
                n += 1;
            }
            if write_all(&mut stream, &buf).is_err() {
                return;
            }
        }
        // Keep the connection open until the application has read everything (the engine
        // closes it at shutdown).
        let _ = client.stream().set_read_timeout(Some(Duration::from_secs(600)));
        while let Ok(frame) = client.read_frame() {
            if frame.opcode == CLOSE {
                break;
            }
        }
    })
}

fn write_all(stream: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf)
}

/// The masking key of every client frame (a fixed key is enough for a benchmark).
const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn rate(events: u64, took: Duration) -> u64 {
    if took.is_zero() {
        return 0;
    }
    (events as f64 / took.as_secs_f64()) as u64
}
