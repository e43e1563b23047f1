//! `membench`: the server's resident memory per idle WebSocket connection.
//!
//! Starts `wse-server` itself (loopback, port 0 unless `--port`), warms it up with a few
//! connections that are closed again, reads its `VmRSS` as the baseline, opens
//! `--connections` idle `ws://` connections (each counted once its `server_ready` arrived),
//! waits `--idle-seconds`, reads `VmRSS` again, checks `GET /health`, and prints the
//! difference per connection beside the machine, versions and the exact command. Then it
//! closes everything and stops the server with SIGTERM.
//!
//! The server runs with its defaults except for the flags this program needs, which it
//! prints: `--host 127.0.0.1`, `--port`, `--max-connections N+100` (the default admits
//! exactly 10,000), and an idle timeout long enough that silent clients are not closed
//! while they are counted (the ping interval stays at its default).
//!
//! Exit status: 0 when every connection opened and the server reported all of them, 1 when
//! some failed, 2 when the run could not be set up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use wse_bench::clients::{self, Holder, Opened, Report};
use wse_bench::host::{self, Machine, Rollup};
use wse_bench::report::{Record, Value};
use wse_bench::server::{self, Server};
use wse_bench::ws::Dial;

/// Resident memory of wse-server per idle WebSocket connection.
#[derive(Debug, Parser)]
#[command(name = "membench", version, about, long_about = None)]
struct Args {
    /// The wse-server binary to start.
    #[arg(long, default_value = "target/release/wse-server")]
    server: PathBuf,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Shards of the server [default: the server's own choice, one per core].
    #[arg(long)]
    shards: Option<usize>,
    /// Port for the server; 0 lets it pick a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// WebSocket path (passed to the server only when not the default).
    #[arg(long, default_value = DEFAULT_PATH)]
    path: String,
    /// Seconds to hold the connections open before measuring.
    #[arg(long, default_value_t = 3.0)]
    idle_seconds: f64,
    /// Client sockets per process. Above it, client connections are spread over child
    /// processes (the open-file limit here is 20,000 per process).
    #[arg(long, default_value_t = 15_000)]
    clients_per_process: usize,
    /// Upgrades in flight at once; keep it below the server's max_handshakes_per_ip (64).
    #[arg(long, default_value_t = 32)]
    handshake_window: usize,
    /// Seconds each connect, read or write of a client may take.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Print a one-row Markdown table (with its header) instead of the field table.
    #[arg(long, conflicts_with = "json")]
    row: bool,
    /// Internal: act as a client holder for the parent membench at this address.
    #[arg(long, hide = true)]
    hold: Option<SocketAddr>,
    /// Extra wse-server flags, after `--`.
    #[arg(last = true)]
    server_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    if let Some(addr) = args.hold {
        let window = args.handshake_window;
        let dial = Dial::new(addr, &args.path);
        let report = clients::hold(&dial, args.connections, window, timeout);
        return if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match run(&args, timeout) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("membench: {message}");
            ExitCode::from(2)
        }
    }
}

/// One measurement; `Ok(false)` when connections failed or the server miscounted them.
fn run(args: &Args, timeout: Duration) -> Result<bool, String> {
    let n = args.connections;
    if n == 0 || args.clients_per_process == 0 || args.handshake_window == 0 {
        return Err(
            "--connections, --clients-per-process and --handshake-window must be > 0".into()
        );
    }
    warn_about_limits(args);
    let machine = Machine::probe();
    let version = host::command_line(&args.server.to_string_lossy(), &["--version"]);
    let server_args = server_args(args);
    let log = std::env::temp_dir().join(format!("membench-server-{}.log", std::process::id()));
    let server = Server::start(&args.server, &server_args, log).map_err(|e| e.to_string())?;
    eprintln!(
        "membench: server pid {} on {} (log {})",
        server.pid(),
        server.addr,
        server.log.display()
    );

    // Baseline: after a warm-up, so lazily allocated tables and buffers are in it.
    warm_up(&server, &args.path, args.handshake_window, timeout)?;
    let pid = server.pid();
    let base = Sample::take(pid);

    // Open and hold.
    let started = Instant::now();
    let held = hold(args, server.addr, timeout)?;
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!("membench: {} open, {} failed in {connect_seconds:.1} s", held.opened, held.failed);
    std::thread::sleep(Duration::from_secs_f64(args.idle_seconds.max(0.0)));
    let after = Sample::take(pid);
    let health = server.health().map_err(|e| e.to_string())?;

    // Close, stop, report.
    drop(held.clients);
    drop(held.holders);
    let stopped = match server.stop(STOP_DEADLINE) {
        Ok((status, false)) => status.to_string(),
        Ok((status, true)) => format!("killed after {STOP_DEADLINE:?} ({status})"),
        Err(e) => format!("unknown ({e})"),
    };
    let facts = Facts { machine, version, server_args, health, connect_seconds, stopped };
    let record = record(args, &facts, &held.report, &base, &after);
    print(args, &record);
    let counted = usize::try_from(health.connections).unwrap_or(usize::MAX);
    Ok(held.failed == 0 && counted == n)
}

/// Client connections held open, in this process or in holders.
struct Held {
    clients: Vec<wse_bench::ws::Client>,
    holders: Vec<Holder>,
    /// Sum of every holder's report (this process counts as one).
    report: Report,
    opened: usize,
    failed: usize,
}

/// Memory readings of the server (and the kernel's TCP pages) at one moment.
struct Sample {
    rss_kib: Option<u64>,
    rollup: Option<Rollup>,
    kernel_tcp_kib: Option<u64>,
}

/// What the record needs besides the samples.
struct Facts {
    machine: Machine,
    version: String,
    server_args: Vec<String>,
    health: server::Health,
    connect_seconds: f64,
    stopped: String,
}

impl Sample {
    fn take(pid: u32) -> Sample {
        Sample {
            rss_kib: host::vm_rss_kib(pid),
            rollup: host::rollup(pid),
            kernel_tcp_kib: host::kernel_tcp_kib(),
        }
    }
}

/// The server's flags: what this benchmark needs, then the user's pass-through flags.
fn server_args(args: &Args) -> Vec<String> {
    let idle_timeout = (args.idle_seconds * 4.0).max(MIN_IDLE_TIMEOUT).ceil();
    let mut out: Vec<String> = vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        args.port.to_string(),
        "--max-connections".into(),
        (args.connections + HEADROOM).to_string(),
        "--idle-timeout".into(),
        idle_timeout.to_string(),
    ];
    if let Some(shards) = args.shards {
        out.extend(["--shards".into(), shards.to_string()]);
    }
    if args.path != DEFAULT_PATH {
        out.extend(["--path".into(), args.path.clone()]);
    }
    out.extend(args.server_args.iter().cloned());
    out
}

/// Opens and closes a few rounds of connections, then waits until the server counts none.
fn warm_up(server: &Server, path: &str, window: usize, timeout: Duration) -> Result<(), String> {
    for _ in 0..WARM_UP_ROUNDS {
        let opened = clients::open(&Dial::new(server.addr, path), WARM_UP, window, timeout);
        if opened.failed > 0 {
            return Err(format!("warm-up connections failed: {:?}", opened.errors));
        }
    }
    let until = Instant::now() + timeout;
    loop {
        let health = server.health().map_err(|e| e.to_string())?;
        // The health request itself is a socket in the handshake.
        if health.connections == 0 && health.handshaking <= 1 {
            break;
        }
        if Instant::now() > until {
            return Err(format!("warm-up connections still open: {health:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(SETTLE);
    Ok(())
}

/// Opens every connection: in this process when they fit, else in holder children.
fn hold(args: &Args, addr: SocketAddr, timeout: Duration) -> Result<Held, String> {
    let n = args.connections;
    let window = args.handshake_window;
    if n <= args.clients_per_process {
        let rss_before_kib = host::own_rss_kib().unwrap_or(0);
        let Opened { clients, failed, errors } =
            clients::open(&Dial::new(addr, &args.path), n, window, timeout);
        errors.iter().for_each(|e| eprintln!("membench: connection failed: {e}"));
        let rss_after_kib = host::own_rss_kib().unwrap_or(0);
        let opened = clients.len();
        let report = Report { opened, failed, rss_before_kib, rss_after_kib };
        return Ok(Held { clients, holders: Vec::new(), report, opened, failed });
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut held = Held {
        clients: Vec::new(),
        holders: Vec::new(),
        report: Report::default(),
        opened: 0,
        failed: 0,
    };
    let mut left = n;
    while left > 0 {
        let share = left.min(args.clients_per_process);
        left -= share;
        let (holder, report) = spawn_holder(&exe, args, addr, share)?;
        held.holders.push(holder);
        held.report.rss_before_kib += report.rss_before_kib;
        held.report.rss_after_kib += report.rss_after_kib;
        held.opened += report.opened;
        held.failed += report.failed;
    }
    held.report.opened = held.opened;
    held.report.failed = held.failed;
    Ok(held)
}

fn spawn_holder(
    exe: &Path,
    args: &Args,
    addr: SocketAddr,
    share: usize,
) -> Result<(Holder, Report), String> {
    let child_args: Vec<String> = vec![
        "--hold".into(),
        addr.to_string(),
        "--connections".into(),
        share.to_string(),
        "--path".into(),
        args.path.clone(),
        "--handshake-window".into(),
        args.handshake_window.to_string(),
        "--timeout".into(),
        args.timeout.to_string(),
    ];
    Holder::spawn(exe, &child_args).map_err(|e| format!("client holder failed: {e}"))
}

/// Everything measured, in print order: the fields asked for first, details after.
fn record(args: &Args, facts: &Facts, clients: &Report, base: &Sample, after: &Sample) -> Record {
    let n = args.connections as u64;
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Value::Float((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => Value::Missing,
    };
    let base_rollup = base.rollup.unwrap_or_default();
    let after_rollup = after.rollup.unwrap_or_default();
    let has_rollup = base.rollup.is_some() && after.rollup.is_some();
    let rollup = |pick: fn(&Rollup) -> u64| {
        let pair = (Some(pick(&base_rollup)), Some(pick(&after_rollup)));
        if has_rollup {
            per_conn(pair.0, pair.1)
        } else {
            Value::Missing
        }
    };
    let m = &facts.machine;
    let mut r = Record::default();
    r.text("date", host::utc_now()).text("hostname", &m.hostname).text("cpu", &m.cpu);
    r.push("cores", Value::Int(m.cores as u64)).text("kernel", &m.kernel);
    r.text("rustc", &m.rustc).text("server_version", &facts.version);
    r.push("connections", Value::Int(n)).push("shards", Value::Int(facts.health.shards));
    r.push("rss_baseline_kib", base.rss_kib.into()).push("rss_after_kib", after.rss_kib.into());
    r.push("rss_bytes_per_connection", per_conn(base.rss_kib, after.rss_kib));
    r.text("command", shell_words(std::env::args()));
    r.text(
        "server_command",
        shell_words(
            std::iter::once(args.server.display().to_string())
                .chain(facts.server_args.iter().cloned()),
        ),
    );
    r.text("non_default_server_flags", facts.server_args.join(" "));
    r.push("pss_bytes_per_connection", rollup(|r| r.pss_kib));
    r.push("anonymous_bytes_per_connection", rollup(|r| r.anonymous_kib));
    r.push("health_connections", Value::Int(facts.health.connections));
    r.push("failed_connections", Value::Int(clients.failed as u64));
    r.push("kernel_tcp_bytes_per_connection", per_conn(base.kernel_tcp_kib, after.kernel_tcp_kib));
    r.push(
        "client_rss_bytes_per_connection",
        per_conn(Some(clients.rss_before_kib), Some(clients.rss_after_kib)),
    );
    r.push("client_processes", Value::Int(client_processes(args) as u64));
    r.push("connect_seconds", Value::Float(facts.connect_seconds));
    r.push("idle_seconds", Value::Float(args.idle_seconds));
    r.text("server_exit", &facts.stopped);
    r
}

fn print(args: &Args, record: &Record) {
    if args.json {
        println!("{}", record.json());
        return;
    }
    if args.row {
        print!("{}", record.markdown_row(true));
        return;
    }
    print!("{}", record.markdown());
    if let Some(per_conn) = record.value("rss_bytes_per_connection") {
        let verdict = match per_conn {
            Value::Float(b) if *b <= GOAL_BYTES => "within",
            Value::Float(_) => "over",
            _ => "unknown against",
        };
        let goal = GOAL_BYTES;
        println!("\nserver RSS per idle connection: {per_conn} B ({verdict} the {goal} B goal)");
    }
}

/// Processes holding client sockets: this one, or one holder per `--clients-per-process`.
fn client_processes(args: &Args) -> usize {
    if args.connections <= args.clients_per_process {
        1
    } else {
        args.connections.div_ceil(args.clients_per_process)
    }
}

/// Warns when the open-file limit cannot fit the sockets of one process.
fn warn_about_limits(args: &Args) {
    let Some(limit) = host::open_file_limit() else { return };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if args.connections + HEADROOM > limit {
        eprintln!(
            "membench: warning: the server is one process and may open only {limit} files; \
             {} connections will not fit",
            args.connections
        );
    }
    if args.clients_per_process.min(args.connections) + HEADROOM > limit {
        eprintln!("membench: warning: lower --clients-per-process below the limit of {limit}");
    }
}

/// Joins words into one shell command line, quoting those that need it.
fn shell_words(words: impl Iterator<Item = String>) -> String {
    let quote = |w: String| {
        let plain = !w.is_empty()
            && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            w
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.map(quote).collect::<Vec<_>>().join(" ")
}

/// The server's default WebSocket path.
const DEFAULT_PATH: &str = "/wse";
/// Connections above `--connections` the server admits (warm-up stragglers, health checks).
const HEADROOM: usize = 100;
/// Idle timeout given to the server, seconds, at least; silent clients must outlive the run.
const MIN_IDLE_TIMEOUT: f64 = 600.0;
/// Warm-up connections per round, and rounds.
const WARM_UP: usize = 64;
const WARM_UP_ROUNDS: usize = 3;
/// Pause between the warm-up and the baseline reading.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the server may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The goal of issue #2: at most 4 KB of server memory per idle connection.
const GOAL_BYTES: f64 = 4096.0;
