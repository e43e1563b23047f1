//! The message scenarios: inbound throughput to the application, fan-out to one topic's
//! subscribers, and the latency of a connection and of a `ping`.
//!
//! Each function runs one peer on a fresh server per measurement and returns its rows; the
//! caller runs the peers one after another with the same arguments.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use wse_bench::fanout::{self, Publisher, Readers};
use wse_bench::server::Server;
use wse_bench::ws::{self, Client, Dial, Handshake, Keys, BINARY, TEXT};
use wse_bench::{clients, host};

use crate::peers::{Peer, Role, Setup, STOP_DEADLINE};
use crate::rows::Row;

/// What every scenario needs.
pub(crate) struct Ctx {
    pub(crate) setup: Setup,
    pub(crate) token: String,
    /// Bound of each connect, read and write.
    pub(crate) timeout: Duration,
    pub(crate) reader_threads: usize,
}

/// Wire format of the inbound messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Json,
    Msgpack,
}

/// Sizes of the inbound scenario.
#[derive(Debug, Clone)]
pub(crate) struct InboundPlan {
    pub(crate) sizes: Vec<usize>,
    pub(crate) formats: Vec<Format>,
    pub(crate) connections: usize,
    pub(crate) seconds: f64,
}

/// Sizes of the fan-out scenario.
#[derive(Debug, Clone)]
pub(crate) struct FanoutPlan {
    pub(crate) subscribers: Vec<usize>,
    pub(crate) seconds: f64,
    pub(crate) window: u64,
    pub(crate) payload: usize,
    /// Deliveries per second of the paced latency phase (spread over the subscribers).
    pub(crate) paced_deliveries: f64,
    pub(crate) paced_seconds: f64,
}

/// Sizes of the latency scenario.
#[derive(Debug, Clone)]
pub(crate) struct LatencyPlan {
    pub(crate) connects: usize,
    pub(crate) pings: usize,
}

impl Ctx {
    /// How connections to `addr` dial: `path`, the token, the OS's source address.
    pub(crate) fn dial(&self, addr: SocketAddr, path: &str) -> Dial {
        Dial { token: Some(self.token.clone()), ..Dial::new(addr, path) }
    }

    fn stop(server: Server) {
        let _ = server.stop(STOP_DEADLINE);
    }
}

/// Messages per second handed to the application, per size and format.
pub(crate) fn inbound(ctx: &Ctx, peer: Peer, plan: &InboundPlan) -> Vec<Row> {
    let mut rows = Vec::new();
    for &format in &plan.formats {
        for &size in &plan.sizes {
            let name = match format {
                Format::Json => "json",
                Format::Msgpack => "msgpack",
            };
            let param = format!("{} {name}", size_label(size));
            let row = match inbound_one(ctx, peer, plan, format, size) {
                Ok((metrics, lost, note)) => Row {
                    scenario: "inbound",
                    peer,
                    param,
                    x: size as f64,
                    metrics,
                    lost: Some(lost),
                    note,
                    command: ctx.setup.command_line(peer, Role::Inbound, plan.connections + 16),
                },
                Err(why) => Row::missing("inbound", peer, param, size as f64, &why),
            };
            rows.push(row);
        }
    }
    rows
}

type Measured = (Vec<(&'static str, f64)>, u64, String);

fn inbound_one(
    ctx: &Ctx,
    peer: Peer,
    plan: &InboundPlan,
    format: Format,
    size: usize,
) -> Result<Measured, String> {
    let server = ctx.setup.start(peer, Role::Inbound, 0, plan.connections + 16)?;
    // msgpack goes as bare msgpack maps on `format=msgpack` connections: the form the
    // product we replace decodes in its engine (it hands `M:` frames over as raw bytes).
    let path = match format {
        Format::Json => "/wse",
        Format::Msgpack => "/wse?format=msgpack",
    };
    let opened = clients::open(&ctx.dial(server.addr, path), plan.connections, 32, ctx.timeout);
    if opened.failed > 0 {
        Ctx::stop(server);
        return Err(format!("{} connections failed: {:?}", opened.failed, opened.errors));
    }
    let mut control = connect(&ctx.dial(server.addr, "/wse"), ctx.timeout)?;
    // An application that fell behind answers `bench_stats` only after its backlog, and an
    // engine that drops what its queue cannot hold may drop the question: it is asked again.
    let _ = control.stream().set_read_timeout(Some(ASK_AGAIN));

    // Every connection sends as fast as the server reads, for the same time.
    let until = Instant::now() + Duration::from_secs_f64(plan.seconds);
    let senders: Vec<_> = opened
        .clients
        .into_iter()
        .map(|client| std::thread::spawn(move || send_until(client, format, size, until)))
        .collect();
    let mut sent = 0;
    let mut held = Vec::new();
    for sender in senders {
        let (count, stream) = sender.join().map_err(|_| "a sender thread panicked".to_owned())?;
        sent += count;
        held.push(stream);
    }

    // Then ask the application what it got, until it has everything or stops counting.
    let stats = wait_for_count(&mut control, sent, Duration::from_secs(5));
    drop(held);
    Ctx::stop(server);
    let stats = stats?;
    let seconds = stats.span_ns as f64 / 1e9;
    let rate = if seconds > 0.0 { stats.messages as f64 / seconds } else { 0.0 };
    let lost = sent.saturating_sub(stats.messages) + stats.disorder;
    let metrics = vec![
        ("msgs_per_s", rate),
        ("mb_per_s", rate * size as f64 / 1e6),
        ("messages", stats.messages as f64),
    ];
    let note = match stats.dropped {
        Some(dropped) if dropped > 0 => {
            format!("its engine dropped {dropped} (inbound queue full)")
        }
        _ if peer == Peer::Wse && ctx.setup.provisional_drain() => {
            "provisional: drained in Rust (wse-drain-host) until the Python package lands".into()
        }
        _ => String::new(),
    };
    Ok((metrics, lost, note))
}

/// Writes messages `{"t":"m","p":{"n":N,"pad":…}}` of about `size` bytes until `until`;
/// returns how many were written whole, and the socket, to be held open until the
/// application has read everything.
fn send_until(client: Client, format: Format, size: usize, until: Instant) -> (u64, TcpStream) {
    let (mut stream, _) = client.into_parts();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let pad = "p".repeat(size.saturating_sub(ENVELOPE_BYTES).max(1));
    let per_batch = (BATCH_BYTES / size.max(1)).clamp(1, 64);
    let mut batch = Vec::with_capacity(per_batch * (size + 16));
    let mut n = 0u64;
    let key = [0x1f, 0x2e, 0x3d, 0x4c];
    while Instant::now() < until {
        batch.clear();
        for _ in 0..per_batch {
            match format {
                Format::Json => {
                    let text = format!(r#"{{"t":"m","p":{{"n":{n},"pad":"{pad}"}}}}"#);
                    ws::push_masked(&mut batch, TEXT, text.as_bytes(), key);
                }
                Format::Msgpack => {
                    let body = msgpack_message(n, &pad);
                    ws::push_masked(&mut batch, BINARY, &body, key);
                }
            }
            n += 1;
        }
        if stream.write_all(&batch).is_err() {
            return (n - per_batch as u64, stream);
        }
    }
    (n, stream)
}

/// The msgpack map `{t: "m", p: {n, pad}}`.
fn msgpack_message(n: u64, pad: &str) -> Vec<u8> {
    use rmpv::Value as V;
    let p = V::Map(vec![(V::from("n"), V::from(n)), (V::from("pad"), V::from(pad))]);
    let message = V::Map(vec![(V::from("t"), V::from("m")), (V::from("p"), p)]);
    let mut out = Vec::with_capacity(pad.len() + 16);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &message);
    out
}

/// What `bench_stats` answered.
struct Stats {
    messages: u64,
    disorder: u64,
    span_ns: u64,
    /// Events the engine says it dropped, where it can say.
    dropped: Option<u64>,
}

/// Asks `bench_stats` every 100 ms until the count reaches `want` or has not moved for
/// `stuck`.
fn wait_for_count(control: &mut Client, want: u64, stuck: Duration) -> Result<Stats, String> {
    let mut last = (0, Instant::now());
    loop {
        let stats = ask_stats(control)?;
        if stats.messages >= want {
            return Ok(stats);
        }
        if stats.messages != last.0 {
            last = (stats.messages, Instant::now());
        } else if last.1.elapsed() > stuck {
            return Ok(stats);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks the application for its counts: again every [`ASK_AGAIN`] without an answer, until
/// [`STATS_TIMEOUT`].
fn ask_stats(control: &mut Client) -> Result<Stats, String> {
    let question = ws::masked_text(br#"{"t":"bench_stats","p":{}}"#, [9, 8, 7, 6]);
    let until = Instant::now() + STATS_TIMEOUT;
    control.stream().write_all(&question).map_err(|e| format!("bench_stats: {e}"))?;
    loop {
        let frame = match control.read_frame() {
            Ok(frame) => frame,
            Err(ws::Error::Io { source, .. })
                if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && Instant::now() < until =>
            {
                control.stream().write_all(&question).map_err(|e| format!("bench_stats: {e}"))?;
                continue;
            }
            Err(e) => return Err(format!("bench_stats answer: {e}")),
        };
        let text = String::from_utf8_lossy(&frame.payload);
        if !text.contains("\"bench_stats\"") {
            continue;
        }
        let field = |name: &str| {
            let key = format!("\"{name}\":");
            let at = text.find(&key)? + key.len();
            let digits: String =
                text[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        };
        let missing = || format!("bench_stats answer without counts: {text}");
        return Ok(Stats {
            messages: field("msgs").ok_or_else(missing)?,
            disorder: field("disorder").ok_or_else(missing)?,
            span_ns: field("span_ns").ok_or_else(missing)?,
            dropped: field("dropped"),
        });
    }
}

/// Deliveries per second to each subscriber count, then latency at a paced rate.
pub(crate) fn fanout(ctx: &Ctx, peer: Peer, plan: &FanoutPlan) -> Vec<Row> {
    let mut rows = Vec::new();
    for &subscribers in &plan.subscribers {
        let param = format!("{} subscribers", crate::rows::number(subscribers as f64));
        let x = subscribers as f64;
        let command = ctx.setup.command_line(peer, Role::Plain, subscribers + 100);
        match fanout_one(ctx, peer, plan, subscribers) {
            Ok(m) => {
                rows.push(Row {
                    scenario: "fanout",
                    peer,
                    param: param.clone(),
                    x,
                    metrics: [
                        ("deliveries_per_s", m.deliveries as f64 / m.seconds),
                        ("published", m.published as f64),
                    ]
                    .into_iter()
                    .chain(m.server_cpu.map(|cpu| ("server_cpu_pct", 100.0 * cpu / m.seconds)))
                    .chain(
                        m.server_cpu.map(|cpu| ("deliveries_per_cpu_s", m.deliveries as f64 / cpu)),
                    )
                    .collect(),
                    lost: Some(m.lost),
                    note: String::new(),
                    command: command.clone(),
                });
                let q = |p: f64| m.latency.value_at_quantile(p) as f64 / 1000.0;
                let metrics = if m.latency.is_empty() {
                    Vec::new()
                } else {
                    vec![
                        ("p50_ms", q(0.5)),
                        ("p99_ms", q(0.99)),
                        ("p99_9_ms", q(0.999)),
                        ("max_ms", m.latency.max() as f64 / 1000.0),
                        ("samples", m.latency.len() as f64),
                    ]
                };
                let note = format!("{} publications/s", crate::rows::number(m.paced_rate));
                rows.push(Row {
                    scenario: "fanout_latency",
                    peer,
                    param,
                    x,
                    metrics,
                    lost: Some(m.paced_lost),
                    note,
                    command,
                });
            }
            Err(why) => {
                rows.push(Row::missing("fanout", peer, param.clone(), x, &why));
                rows.push(Row::missing("fanout_latency", peer, param, x, &why));
            }
        }
    }
    rows
}

struct Fanned {
    published: u64,
    deliveries: u64,
    lost: u64,
    seconds: f64,
    /// CPU seconds the server process used meanwhile, when `/proc` tells.
    server_cpu: Option<f64>,
    latency: Histogram<u64>,
    paced_rate: f64,
    paced_lost: u64,
}

fn fanout_one(
    ctx: &Ctx,
    peer: Peer,
    plan: &FanoutPlan,
    subscribers: usize,
) -> Result<Fanned, String> {
    let server = ctx.setup.start(peer, Role::Plain, 0, subscribers + 100)?;
    let result = fan(ctx, &server, plan, subscribers);
    Ctx::stop(server);
    result
}

fn fan(
    ctx: &Ctx,
    server: &Server,
    plan: &FanoutPlan,
    subscribers: usize,
) -> Result<Fanned, String> {
    let dial = ctx.dial(server.addr, "/wse");
    let opened = clients::open(&dial, subscribers, 32, ctx.timeout);
    if opened.failed > 0 {
        return Err(format!("{} subscribers failed: {:?}", opened.failed, opened.errors));
    }
    fanout::subscribe_all(&opened.clients, TOPIC)?;
    let readers = Readers::start(opened.clients, ctx.reader_threads)?;
    readers.wait_subscribed(subscribers as u64, Duration::from_secs(60))?;
    let mut publisher = Publisher::open(&dial, TOPIC, plan.payload, ctx.timeout)?;

    // Throughput: the publisher stays within `window` of the slowest subscriber.
    let started = Instant::now();
    let cpu_before = host::cpu_seconds(server.pid());
    publisher.run_sampling(
        &readers,
        Duration::from_secs_f64(plan.seconds),
        plan.window,
        0,
        u64::MAX,
    )?;
    let published = publisher.sent;
    readers.wait_for(published, DRAIN_DEADLINE);
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_before.zip(host::cpu_seconds(server.pid())).map(|(a, b)| b - a);
    let deliveries = readers.delivered();
    let lost = readers.lost(published);

    // Latency at a paced rate that every peer should sustain.
    let paced_rate = (plan.paced_deliveries / subscribers as f64).clamp(1.0, 10_000.0);
    readers.record_latency(true);
    publisher.run_paced(Duration::from_secs_f64(plan.paced_seconds), paced_rate)?;
    readers.wait_for(publisher.sent, DRAIN_DEADLINE);
    readers.record_latency(false);
    let paced_lost = readers.lost(publisher.sent).saturating_sub(lost);
    let latency = readers.latency();
    readers.stop();
    Ok(Fanned { published, deliveries, lost, seconds, server_cpu, latency, paced_rate, paced_lost })
}

/// Upgrade-to-`server_ready` time of fresh connections, and `ping` round trips.
pub(crate) fn latency(ctx: &Ctx, peer: Peer, plan: &LatencyPlan) -> Vec<Row> {
    let command = ctx.setup.command_line(peer, Role::Plain, 1000);
    let server = match ctx.setup.start(peer, Role::Plain, 0, 1000) {
        Ok(server) => server,
        Err(why) => {
            return vec![
                Row::missing("connect_latency", peer, "JWT upgrade".into(), 0.0, &why),
                Row::missing("ping", peer, "ping".into(), 0.0, &why),
            ]
        }
    };
    let dial = ctx.dial(server.addr, "/wse");
    let rows = vec![
        latency_row(
            "connect_latency",
            peer,
            "TCP connect + JWT upgrade to server_ready",
            &command,
            connects(&dial, plan.connects, ctx.timeout),
        ),
        latency_row("ping", peer, "ping to PONG", &command, pings(&dial, plan.pings, ctx.timeout)),
    ];
    Ctx::stop(server);
    rows
}

fn latency_row(
    scenario: &'static str,
    peer: Peer,
    param: &str,
    command: &str,
    measured: Result<Histogram<u64>, String>,
) -> Row {
    match measured {
        Ok(h) => {
            let q = |p: f64| h.value_at_quantile(p) as f64;
            Row {
                scenario,
                peer,
                param: param.to_owned(),
                x: 0.0,
                metrics: vec![
                    ("p50_us", q(0.5)),
                    ("p99_us", q(0.99)),
                    ("p99_9_us", q(0.999)),
                    ("mean_us", h.mean()),
                    ("samples", h.len() as f64),
                ],
                lost: None,
                note: String::new(),
                command: command.to_owned(),
            }
        }
        Err(why) => Row::missing(scenario, peer, param.to_owned(), 0.0, &why),
    }
}

/// `count` connections one after another, each timed from `connect` to `server_ready`.
fn connects(dial: &Dial, count: usize, timeout: Duration) -> Result<Histogram<u64>, String> {
    let mut keys = Keys::new().map_err(|e| e.to_string())?;
    let mut histogram = micros()?;
    for index in 0..count {
        let started = Instant::now();
        let handshake = Handshake::dial(dial, index, &mut keys, timeout);
        let mut client = handshake.and_then(Handshake::finish).map_err(|e| e.to_string())?;
        client.read_frame().map_err(|e| format!("server_ready: {e}"))?;
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    Ok(histogram)
}

/// `count` pings on one connection, each timed until its `PONG`.
fn pings(dial: &Dial, count: usize, timeout: Duration) -> Result<Histogram<u64>, String> {
    let mut client = connect(dial, timeout)?;
    let mut histogram = micros()?;
    for i in 0..count {
        let text = format!(r#"{{"t":"ping","p":{{"timestamp":{i}}}}}"#);
        let frame = ws::masked_text(text.as_bytes(), [3, 1, 4, 1]);
        let started = Instant::now();
        client.stream().write_all(&frame).map_err(|e| format!("ping: {e}"))?;
        loop {
            let frame = client.read_frame().map_err(|e| format!("PONG: {e}"))?;
            if frame.payload.starts_with(br#"{"c":"WSE","t":"PONG""#) {
                break;
            }
        }
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    Ok(histogram)
}

/// One connection, greeted.
fn connect(dial: &Dial, timeout: Duration) -> Result<Client, String> {
    let mut keys = Keys::new().map_err(|e| e.to_string())?;
    let handshake = Handshake::dial(dial, 0, &mut keys, timeout);
    let mut client = handshake.and_then(Handshake::finish).map_err(|e| e.to_string())?;
    client.read_frame().map_err(|e| format!("server_ready: {e}"))?;
    Ok(client)
}

fn micros() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

/// `64 B`, `16 KB`.
fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The one topic of the fan-out scenario.
const TOPIC: &str = "bench";
/// Bytes of a message besides its padding (`{"t":"m","p":{"n":…,"pad":""}}`).
const ENVELOPE_BYTES: usize = 36;
/// About how many bytes one write of the inbound senders carries.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a `bench_stats` question waits before it is asked again.
const ASK_AGAIN: Duration = Duration::from_secs(2);
/// How long the application may take to answer `bench_stats`.
const STATS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long subscribers may take to receive what was published.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
