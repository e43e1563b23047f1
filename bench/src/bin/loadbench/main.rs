//! `loadbench`: our server beside the product we replace and two baselines, under the same
//! load, in one run.
//!
//! The load client of issue #7. It pins itself to the client cores, starts each server in
//! turn pinned to the server cores (`peers`), connects with a JWT, waits for
//! `server_ready`, and runs the scenarios:
//!
//! - **inbound**: messages of 64 B to 64 KB, JSON and msgpack, counted where the server
//!   hands them to the application (`traffic::inbound`);
//! - **fanout**: one topic, a list of subscriber counts, deliveries per second with every
//!   offset checked, then publish-to-receive latency at a paced rate (`traffic::fanout`);
//! - **latency**: TCP connect + JWT upgrade to `server_ready`, and `ping` to `PONG`;
//! - **scale**: accept rate and server memory per idle connection (`scale`).
//!
//! It writes `results.jsonl` (one object per row, with the machine, kernel, versions and
//! commands), `results.md` (a table per scenario with each peer's ratio to ours) and PNG
//! charts into `--out`, and prints the tables. Exit status: 0 when every scenario ran on
//! every peer (with `--preset full`: on ours; a peer's row that fails at its own limits is
//! reported in the tables) and ours lost nothing, 1 otherwise (a peer's loss is its own
//! behaviour, reported in the tables but not failing the run), 2 when the run could not be
//! set up.

mod charts;
mod peers;
mod rows;
mod scale;
mod traffic;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use wse_bench::clients;
use wse_bench::host::{self, Machine};
use wse_bench::ws::Dial;

use crate::peers::{Peer, Setup};
use crate::rows::{Better, Facts, Row};
use crate::scale::ScalePlan;
use crate::traffic::{Ctx, FanoutPlan, Format, InboundPlan, LatencyPlan};

/// Side-by-side load of wse-server, the product it replaces, tokio-tungstenite and Python
/// websockets.
#[derive(Debug, Parser)]
#[command(name = "loadbench", version, about, long_about = None)]
struct Args {
    /// Sizes: `quick` (CI smoke, small and short) or `full` (the README figures).
    #[arg(long, value_enum, default_value = "quick")]
    preset: Preset,
    /// Scenarios to run.
    #[arg(long, value_delimiter = ',', default_value = "latency,inbound,fanout,scale")]
    scenarios: Vec<Scenario>,
    /// Servers to compare, ours first.
    #[arg(long, value_delimiter = ',', default_value = "wse,legacy,tokio,websockets")]
    peers: Vec<Peer>,
    /// Our wse-server binary.
    #[arg(long, default_value = "target/release/wse-server")]
    wse_server: PathBuf,
    /// CPython 3.12 with wse-server 2.5.x, websockets and msgpack (`make bench-venv`).
    #[arg(long, default_value = ".venv-bench/bin/python")]
    python: PathBuf,
    /// A Python whose `wse_server` package is ours (py/): ours is then drained from Python
    /// in the inbound scenario, like the product we replace [default: a Rust drain].
    #[arg(long)]
    wse_python: Option<PathBuf>,
    /// The peers' Python scripts.
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    /// Cores of every server (`taskset -c` list) [default: the first half, or core 0].
    #[arg(long)]
    server_cores: Option<String>,
    /// Cores of this load client and its helpers [default: the other cores].
    #[arg(long, value_delimiter = ',')]
    client_cores: Vec<usize>,
    /// Where results, charts and server logs go.
    #[arg(long, default_value = "reports/bench")]
    out: PathBuf,
    /// Fan-out subscriber counts [default: from the preset].
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Inbound message sizes in bytes [default: from the preset].
    #[arg(long, value_delimiter = ',')]
    inbound_sizes: Vec<usize>,
    /// Inbound wire formats: `json`, `msgpack` [default: both].
    #[arg(long, value_delimiter = ',', value_enum)]
    formats: Vec<Format>,
    /// Scale checkpoints (connections) [default: from the preset].
    #[arg(long, value_delimiter = ',')]
    connections: Vec<usize>,
    /// Most connections of the scale scenario for peers other than ours.
    #[arg(long)]
    peer_connections: Option<usize>,
    /// HS256 secret every server checks tokens with (32 bytes or more).
    #[arg(long, default_value = "loadbench-hs256-secret-0123456789abcdef")]
    secret: String,
    /// Seconds each connect, read or write of a client may take.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// Only draw the charts again from DIR/results.jsonl (into DIR), without measuring.
    #[arg(long, value_name = "DIR")]
    redraw: Option<PathBuf>,
    /// Internal: hold connections to this address for the parent's scale scenario.
    #[arg(long, hide = true)]
    hold: Option<SocketAddr>,
    /// Internal: the holder's source address.
    #[arg(long, hide = true)]
    hold_source: Option<IpAddr>,
    /// Internal: connections the holder opens.
    #[arg(long, hide = true, default_value_t = 0)]
    hold_count: usize,
}

/// How big and long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Preset {
    Quick,
    Full,
}

/// A scenario of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Latency,
    Inbound,
    Fanout,
    Scale,
}

/// Everything a run does, with the preset's sizes.
struct Plan {
    inbound: InboundPlan,
    fanout: FanoutPlan,
    latency: LatencyPlan,
    scale: ScalePlan,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    if let Some(addr) = args.hold {
        return hold(&args, addr, timeout);
    }
    if let Some(dir) = &args.redraw {
        return redraw(dir);
    }
    match run(&args, timeout) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("loadbench: {message}");
            ExitCode::from(2)
        }
    }
}

/// The holder copy: opens its connections, reports, holds them until stdin closes.
fn hold(args: &Args, addr: SocketAddr, timeout: Duration) -> ExitCode {
    let token = match peers::token(&args.secret) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("loadbench holder: {e}");
            return ExitCode::from(2);
        }
    };
    let dial = Dial {
        token: Some(token),
        sources: args.hold_source.into_iter().collect(),
        ..Dial::new(addr, "/wse")
    };
    let report = clients::hold(&dial, args.hold_count, HOLD_WINDOW, timeout);
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Draws the charts of an earlier run again.
fn redraw(dir: &std::path::Path) -> ExitCode {
    let path = dir.join("results.jsonl");
    let rows = match std::fs::read_to_string(&path) {
        Ok(text) => rows::parse_jsonl(&text),
        Err(e) => {
            eprintln!("loadbench: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match charts::draw_all(&rows, dir) {
        Ok(files) => {
            files.iter().for_each(|f| println!("Chart: {}", f.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadbench: charts: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args, timeout: Duration) -> Result<bool, String> {
    let started = Instant::now();
    let (server_cores, client_cores) = placement(args);
    let machine = Machine::probe();
    pin(&client_cores);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let setup = Setup {
        wse_server: args.wse_server.clone(),
        bin_dir,
        python: args.python.clone(),
        wse_python: args.wse_python.clone(),
        peers_dir: args.peers_dir.clone(),
        server_cores: server_cores.clone(),
        secret: args.secret.clone(),
        logs: args.out.clone(),
    };
    let token = peers::token(&args.secret)?;
    let ctx = Ctx { setup, token, timeout, reader_threads: READER_THREADS };
    let plan = plan(args);
    let facts = facts(args, &ctx, machine, &server_cores, &client_cores);
    let mut ok = true;
    let mut peers = Vec::new();
    for &peer in &args.peers {
        match ctx.setup.unavailable(peer) {
            Some(why) => {
                eprintln!("loadbench: {} not available: {why}", peer.key());
                ok = false;
            }
            None => peers.push(peer),
        }
    }

    let mut rows: Vec<Row> = Vec::new();
    for &scenario in &args.scenarios {
        for &peer in &peers {
            eprintln!(
                "loadbench: {scenario:?} on {} ({:.0} s so far)",
                peer.key(),
                started.elapsed().as_secs_f64()
            );
            let new = match scenario {
                Scenario::Latency => traffic::latency(&ctx, peer, &plan.latency),
                Scenario::Inbound => traffic::inbound(&ctx, peer, &plan.inbound),
                Scenario::Fanout => traffic::fanout(&ctx, peer, &plan.fanout),
                Scenario::Scale => scale::scale(&ctx, peer, &plan.scale, &exe),
            };
            rows.extend(new);
        }
    }

    for row in &rows {
        if row.metrics.is_empty() {
            eprintln!(
                "loadbench: {} {} {}: not measured: {}",
                row.scenario,
                row.peer.key(),
                row.param,
                row.note
            );
            // Ours must run every row; so must every peer at the quick sizes. At the full
            // sizes a peer may fail at its own limits (the product we replace resets
            // connections past about 9,995): the table says so, the run goes on.
            ok &= row.peer != Peer::Wse && args.preset == Preset::Full;
        }
        // Our loss fails the run; a peer's is its behaviour, reported in the tables.
        if row.lost.is_some_and(|lost| lost > 0) {
            let lost = row.lost.unwrap_or(0);
            eprintln!("loadbench: {} {} {}: {lost} lost", row.scenario, row.peer.key(), row.param);
            ok &= row.peer != Peer::Wse;
        }
    }
    let markdown = write_results(args, &rows, &facts, started.elapsed())?;
    print!("{markdown}");
    Ok(ok)
}

/// The preset's sizes, with the command line's overrides.
fn plan(args: &Args) -> Plan {
    let quick = args.preset == Preset::Quick;
    let pick = |given: &[usize], quick_sizes: &[usize], full_sizes: &[usize]| {
        if !given.is_empty() {
            given.to_vec()
        } else if quick {
            quick_sizes.to_vec()
        } else {
            full_sizes.to_vec()
        }
    };
    Plan {
        inbound: InboundPlan {
            sizes: pick(
                &args.inbound_sizes,
                &[64, 16 * 1024],
                &[64, 256, 1024, 16 * 1024, 64 * 1024],
            ),
            formats: if args.formats.is_empty() {
                vec![Format::Json, Format::Msgpack]
            } else {
                args.formats.clone()
            },
            connections: 4,
            seconds: if quick { 1.0 } else { 3.0 },
        },
        fanout: FanoutPlan {
            subscribers: pick(&args.subscribers, &[10, 100], &[10, 100, 1_000, 10_000]),
            seconds: if quick { 1.0 } else { 4.0 },
            window: 256,
            payload: 256,
            paced_deliveries: if quick { 5_000.0 } else { 20_000.0 },
            paced_seconds: if quick { 1.0 } else { 4.0 },
        },
        latency: LatencyPlan {
            connects: if quick { 100 } else { 1_000 },
            pings: if quick { 500 } else { 10_000 },
        },
        scale: ScalePlan {
            checkpoints: pick(
                &args.connections,
                &[2_000],
                &[10_000, 50_000, 100_000, 250_000, 500_000],
            ),
            peer_cap: args.peer_connections.unwrap_or(if quick { 2_000 } else { 50_000 }),
            idle_seconds: if quick { 1.0 } else { 3.0 },
        },
    }
}

/// Server and client cores: as given, else the first half of the cores for the servers
/// and the rest for the client; on a machine with one core both get core 0.
fn placement(args: &Args) -> (String, Vec<usize>) {
    let cores: Vec<usize> =
        core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    let half = (cores.len() / 2).max(1);
    let (server, client) =
        if cores.len() < 2 { (&cores[..], &cores[..]) } else { cores.split_at(half) };
    let server_cores = args.server_cores.clone().unwrap_or_else(|| {
        let list: Vec<String> = server.iter().map(ToString::to_string).collect();
        if list.is_empty() {
            "0".to_owned()
        } else {
            list.join(",")
        }
    });
    let client_cores =
        if args.client_cores.is_empty() { client.to_vec() } else { args.client_cores.clone() };
    (server_cores, client_cores)
}

/// Pins this process (and so the helpers it starts) to `cores`; the first thread's mask is
/// what children inherit.
fn pin(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    let list: Vec<String> = cores.iter().map(ToString::to_string).collect();
    let pid = std::process::id().to_string();
    // `taskset -a` sets every thread of this process; the affinity crate would only pin
    // the calling thread.
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &list.join(","), &pid])
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("loadbench: could not pin the load client to cores {}", list.join(","));
    }
}

/// What the rows record about the run; `machine` probed before this process was pinned.
fn facts(
    args: &Args,
    ctx: &Ctx,
    machine: Machine,
    server_cores: &str,
    client_cores: &[usize],
) -> Facts {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| format!(", {} GiB", (kib + (1 << 19)) >> 20));
    let client: Vec<String> = client_cores.iter().map(ToString::to_string).collect();
    let load = host::command_line("cat", &["/proc/loadavg"]);
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    Facts {
        date: host::utc_now(),
        machine: format!("{} x {}{total}", machine.cores, machine.cpu),
        kernel: format!("Linux {}", machine.kernel),
        rustc: machine.rustc,
        load_command: std::env::args().collect::<Vec<_>>().join(" "),
        pinning: format!(
            "servers on cores {server_cores}, load client on {}; load average at start {}",
            if client.is_empty() { "any".to_owned() } else { client.join(",") },
            load.join(" ")
        ),
        versions: args.peers.iter().map(|&p| (p, ctx.setup.version(p))).collect(),
    }
}

/// Writes `results.jsonl`, `results.md` and the charts; returns the Markdown.
fn write_results(
    args: &Args,
    rows: &[Row],
    facts: &Facts,
    took: Duration,
) -> Result<String, String> {
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let jsonl: String = rows.iter().map(|r| r.json(facts) + "\n").collect();
    write("results.jsonl", &jsonl)?;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run of {} ({:.0} s): {}; {}; {}.",
        facts.date,
        took.as_secs_f64(),
        facts.machine,
        facts.kernel,
        facts.rustc
    );
    let _ = writeln!(md, "{}.", facts.pinning);
    let _ = writeln!(md, "Command: `{}`.\n", facts.load_command);
    let _ = writeln!(md, "| server | version |\n|---|---|");
    for (peer, version) in &facts.versions {
        let _ = writeln!(md, "| {} | {version} |", peer.label());
    }
    let _ = writeln!(md);
    for (scenario, headline, better) in TABLES {
        let picked: Vec<Row> = rows.iter().filter(|r| r.scenario == scenario).cloned().collect();
        if !picked.is_empty() {
            let _ = writeln!(md, "{}", rows::table(&picked, headline, better, facts));
        }
    }
    let _ = writeln!(md, "Server commands:\n");
    let mut commands: Vec<(Peer, &str)> =
        rows.iter().map(|r| (r.peer, r.command.as_str())).filter(|(_, c)| !c.is_empty()).collect();
    commands.sort();
    commands.dedup();
    for (peer, command) in commands {
        let _ = writeln!(md, "- {}: `{command}`", peer.label());
    }
    match charts::draw_all(rows, &args.out) {
        Ok(files) => {
            let _ = writeln!(md);
            for file in files {
                let _ = writeln!(md, "Chart: {}", file.display());
            }
        }
        Err(e) => return Err(format!("charts: {e}")),
    }
    write("results.md", &md)?;
    Ok(md)
}

/// The tables of `results.md`: scenario, headline metric, which way is better.
const TABLES: [(&str, &str, Better); 6] = [
    ("fanout", "deliveries_per_s", Better::Higher),
    ("fanout_latency", "p99_ms", Better::Lower),
    ("inbound", "msgs_per_s", Better::Higher),
    ("connect_latency", "p50_us", Better::Lower),
    ("ping", "p50_us", Better::Lower),
    ("scale", "bytes_per_conn", Better::Lower),
];
/// Threads reading the fan-out subscribers.
const READER_THREADS: usize = 2;
/// Upgrades in flight per holder.
const HOLD_WINDOW: usize = 256;
