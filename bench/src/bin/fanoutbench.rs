//! `fanoutbench`: deliveries per second of one topic to many subscribers, with zero loss
//! checked by offsets, and the server's resident memory while one subscriber is stalled.
//!
//! For each wire mode asked for (`--modes json,compression,msgpack`) it starts `wse-server`
//! itself, opens `--subscribers` connections subscribed to one topic, and publishes from one
//! more connection for `--seconds`. The publisher keeps at most `--window` publications
//! ahead of the slowest subscriber, so that no queue overflows and every subscriber must see
//! every offset exactly once, in order (anything else is counted as lost); keep the window
//! times the frame size under the server's outbound budget. Then one subscriber stops
//! reading while `--stall-mib` more are published (at most `--stall-seconds`); the
//! server's `VmRSS` before and at most during the stall shows that its outbound budget
//! holds.
//!
//! A mode the server does not offer (its `--help` lacks the flag, or `server_ready` says the
//! feature is off) prints a row that says so, with no numbers. Every row records the machine,
//! kernel, versions and the exact server command.
//!
//! Exit status: 0 when every measured mode lost nothing, 1 otherwise, 2 when the run could
//! not be set up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use wse_bench::clients;
use wse_bench::fanout::{Publisher, Readers};
use wse_bench::host::{self, Machine};
use wse_bench::report::{Record, Value};
use wse_bench::server::Server;
use wse_bench::ws::{Client, Dial, Keys};

/// Fan-out throughput and memory of wse-server for one topic.
#[derive(Debug, Parser)]
#[command(name = "fanoutbench", version, about, long_about = None)]
struct Args {
    /// The wse-server binary to start.
    #[arg(long, default_value = "target/release/wse-server")]
    server: PathBuf,
    /// Subscribers of the one topic.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Shards of the server [default: the server's own choice, one per core].
    #[arg(long)]
    shards: Option<usize>,
    /// Seconds of publishing for the throughput figure.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// MiB of publications sent past the stalled subscriber.
    #[arg(long, default_value_t = 16)]
    stall_mib: u64,
    /// Longest the stalled phase may take, in seconds.
    #[arg(long, default_value_t = 60.0)]
    stall_seconds: f64,
    /// Bytes of padding in each publication's data.
    #[arg(long, default_value_t = 512)]
    payload: usize,
    /// Publications the publisher may be ahead of the slowest subscriber.
    #[arg(long, default_value_t = 512)]
    window: u64,
    /// Threads reading the subscribers' sockets.
    #[arg(long, default_value_t = 2)]
    reader_threads: usize,
    /// Wire modes to measure, each on a fresh server: json, compression, msgpack.
    #[arg(long, value_delimiter = ',', default_value = "json,compression,msgpack")]
    modes: Vec<Mode>,
    /// `--compression-threshold` given to the server in the compression mode.
    #[arg(long, default_value_t = 256)]
    compression_threshold: usize,
    /// Print one JSON object per mode instead of the table.
    #[arg(long)]
    json: bool,
    /// Extra wse-server flags for every mode, after `--`.
    #[arg(last = true)]
    server_args: Vec<String>,
}

/// How publications travel to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Plain JSON text frames.
    Json,
    /// `C:` zlib frames above the compression threshold.
    Compression,
    /// `M:` msgpack frames on `format=msgpack` connections.
    Msgpack,
}

/// What one mode measured.
struct Measured {
    server_args: Vec<String>,
    published: u64,
    deliveries: u64,
    lost: u64,
    seconds: f64,
    rss_steady_kib: Option<u64>,
    rss_stalled_max_kib: Option<u64>,
    stalled_mib: f64,
    stalled_dropped: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.subscribers == 0 || args.reader_threads == 0 || args.window == 0 {
        eprintln!("fanoutbench: --subscribers, --reader-threads and --window must be > 0");
        return ExitCode::from(2);
    }
    let machine = Machine::probe();
    let version = host::command_line(&args.server.to_string_lossy(), &["--version"]);
    let help = host::command_output(&args.server.to_string_lossy(), &["--help"]);
    let mut ok = true;
    let mut header = true;
    for &mode in &args.modes {
        let result = match unavailable(mode, &help) {
            Some(why) => Err(why),
            None => measure(&args, mode),
        };
        let record = record(&args, mode, &machine, &version, &result);
        if let Ok(m) = &result {
            ok &= m.lost == 0;
        }
        if args.json {
            println!("{}", record.json());
        } else {
            print!("{}", record.markdown_row(header));
            header = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why `mode` cannot be measured on this server, judged from its `--help`.
fn unavailable(mode: Mode, help: &str) -> Option<String> {
    match mode {
        Mode::Json => None,
        Mode::Compression if !help.contains("--compression-threshold") => {
            Some("not available: wse-server has no --compression-threshold".into())
        }
        Mode::Compression | Mode::Msgpack => None,
    }
}

/// One mode on a fresh server.
fn measure(args: &Args, mode: Mode) -> Result<Measured, String> {
    let server_args = server_args(args, mode);
    let log = std::env::temp_dir().join(format!("fanoutbench-{}.log", std::process::id()));
    let server = Server::start(&args.server, &server_args, log).map_err(|e| e.to_string())?;
    let path = match mode {
        Mode::Msgpack => "/wse?format=msgpack&topics=bench",
        _ => "/wse?topics=bench",
    };
    let timeout = Duration::from_secs(10);
    if mode == Mode::Msgpack && !offers_msgpack(server.addr, timeout)? {
        return Err("not available: server_ready says features.msgpack is false".into());
    }
    let opened = clients::open(&Dial::new(server.addr, path), args.subscribers, 32, timeout);
    if opened.failed > 0 {
        return Err(format!("{} subscribers failed: {:?}", opened.failed, opened.errors));
    }
    let readers = Readers::start(opened.clients, args.reader_threads)?;
    let dial = Dial::new(server.addr, "/wse");
    let mut publisher = Publisher::open(&dial, "bench", args.payload, timeout)?;
    let pid = server.pid();

    // Throughput: every subscriber must reach the last offset.
    if let Err(e) = readers.wait_subscribed(args.subscribers as u64, timeout) {
        return Err(format!("{e} ({:?})", server.health()));
    }
    let started = Instant::now();
    let run = Duration::from_secs_f64(args.seconds);
    let rss_steady_kib = publisher.run_sampling(&readers, run, args.window, pid, u64::MAX)?;
    let published = publisher.sent;
    readers.wait_for(published, Duration::from_secs(30));
    let seconds = started.elapsed().as_secs_f64();
    let deliveries = readers.delivered();
    let lost = readers.lost(published);

    // Memory while one subscriber is stalled.
    readers.stall(0);
    let dropped_before = dropped(&server);
    let stall = Duration::from_secs_f64(args.stall_seconds);
    let target = args.stall_mib << 20;
    let rss_stalled_max_kib = publisher.run_sampling(&readers, stall, args.window, pid, target)?;
    let stalled_mib = publisher.bytes_since_mark as f64 / f64::from(1 << 20);
    let stalled_dropped = dropped(&server) - dropped_before;
    readers.stop();
    drop(server.stop(Duration::from_secs(10)));
    Ok(Measured {
        server_args,
        published,
        deliveries,
        lost,
        seconds,
        rss_steady_kib,
        rss_stalled_max_kib,
        stalled_mib,
        stalled_dropped,
    })
}

/// The server's flags for `mode`.
fn server_args(args: &Args, mode: Mode) -> Vec<String> {
    let mut out: Vec<String> = [
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--allow-client-publish",
        "--idle-timeout",
        "600",
        "--rate-limit-capacity",
        "1000000000",
        "--rate-limit-refill",
        "1000000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend(["--max-connections".into(), (args.subscribers + 100).to_string()]);
    if let Some(shards) = args.shards {
        out.extend(["--shards".into(), shards.to_string()]);
    }
    if mode == Mode::Compression {
        out.extend(["--compression-threshold".into(), args.compression_threshold.to_string()]);
    }
    out.extend(args.server_args.iter().cloned());
    out
}

/// Whether `server_ready` on a `format=msgpack` connection announces msgpack (it may come
/// as JSON or as `M:` msgpack).
fn offers_msgpack(addr: SocketAddr, timeout: Duration) -> Result<bool, String> {
    let mut keys = Keys::new().map_err(|e| e.to_string())?;
    let path = "/wse?format=msgpack";
    let mut client = Client::connect(addr, path, &mut keys, timeout).map_err(|e| e.to_string())?;
    let ready = client.read_frame().map_err(|e| e.to_string())?;
    if let Some(mut body) = ready.payload.strip_prefix(b"M:") {
        let value = rmpv::decode::read_value(&mut body).map_err(|e| e.to_string())?;
        let mut at = &value;
        for key in ["p", "details", "features", "msgpack"] {
            let found = at.as_map().and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)));
            let Some((_, next)) = found else { return Ok(false) };
            at = next;
        }
        return Ok(at.as_bool() == Some(true));
    }
    Ok(String::from_utf8_lossy(&ready.payload).contains("\"msgpack\":true"))
}

/// `wse_dropped_messages_total` of the server, all reasons.
fn dropped(server: &Server) -> f64 {
    let Ok(mut stream) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)) else {
        return f64::NAN;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    let mut text = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut text).is_err() {
        return f64::NAN;
    }
    text.lines()
        .filter(|l| l.starts_with("wse_dropped_messages_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The row of one mode.
fn record(
    args: &Args,
    mode: Mode,
    machine: &Machine,
    version: &str,
    result: &Result<Measured, String>,
) -> Record {
    let mut r = Record::default();
    r.text("date", host::utc_now()).text("cpu", &machine.cpu);
    r.push("cores", Value::Int(machine.cores as u64)).text("kernel", &machine.kernel);
    r.text("rustc", &machine.rustc).text("server_version", version);
    r.text("mode", format!("{mode:?}").to_lowercase());
    r.push("subscribers", Value::Int(args.subscribers as u64));
    r.push("payload_bytes", Value::Int(args.payload as u64));
    match result {
        Ok(m) => {
            r.push("published", Value::Int(m.published));
            r.push("deliveries", Value::Int(m.deliveries));
            r.push("deliveries_per_second", Value::Float(m.deliveries as f64 / m.seconds));
            r.push("lost", Value::Int(m.lost));
            r.push("rss_kib_max", m.rss_steady_kib.into());
            r.push("rss_kib_one_stalled_max", m.rss_stalled_max_kib.into());
            r.push("mib_past_stalled", Value::Float(m.stalled_mib));
            r.push("dropped_for_stalled", Value::Float(m.stalled_dropped));
            r.text("note", "");
            let command = std::iter::once(args.server.display().to_string())
                .chain(m.server_args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            r.text("server_command", command);
        }
        Err(why) => {
            for field in [
                "published",
                "deliveries",
                "deliveries_per_second",
                "lost",
                "rss_kib_max",
                "rss_kib_one_stalled_max",
                "mib_past_stalled",
                "dropped_for_stalled",
            ] {
                r.push(field, Value::Missing);
            }
            r.text("note", why.as_str());
            r.text("server_command", "");
        }
    }
    r.text("command", std::env::args().collect::<Vec<_>>().join(" "));
    r
}
