//! Connection scale: accept rate and server memory per idle connection, up to hundreds of
//! thousands of connections.
//!
//! One process may hold only as many sockets as its open-file limit allows (20,000 on the
//! development machine, not raisable). Past that the servers that can share a port
//! (`SO_REUSEPORT`) run as several processes on one port, and their memory is added up;
//! the client side spreads its sockets over holder processes (copies of `loadbench`), each
//! bound to its own loopback source address so that no source runs out of ports. A peer
//! that cannot share a port is measured up to what one process holds. Where the limit is
//! high enough, one process of each is used.
//!
//! The connections are opened in stages (the plan's checkpoints); each stage's holders open
//! theirs at the same time, and the stage's accept rate is its connections over its wall
//! time (TCP connect, JWT upgrade and `server_ready` on each). Memory is the servers'
//! resident set (`VmRSS`) added up, after a warm-up, against the same with every
//! connection of the stage open and idle.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use wse_bench::clients::{self, Holder};
use wse_bench::host;
use wse_bench::server::Server;

use crate::peers::{Peer, Role, STOP_DEADLINE};
use crate::rows::{number, Row};
use crate::traffic::Ctx;

/// Sizes of the scale scenario.
#[derive(Debug, Clone)]
pub(crate) struct ScalePlan {
    /// Connection counts at which memory is read, ascending.
    pub(crate) checkpoints: Vec<usize>,
    /// Most connections for peers other than ours.
    pub(crate) peer_cap: usize,
    /// Seconds the connections stay idle before memory is read.
    pub(crate) idle_seconds: f64,
}

/// The holder mode's arguments, as `loadbench` passes them to its copies.
#[derive(Debug, Clone)]
pub(crate) struct HoldOrder {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) source: IpAddr,
    pub(crate) count: usize,
}

/// Rows of one peer: one per checkpoint reached.
pub(crate) fn scale(ctx: &Ctx, peer: Peer, plan: &ScalePlan, exe: &Path) -> Vec<Row> {
    let limit = host::open_file_limit().unwrap_or(1024) as usize;
    let per_process = limit.saturating_sub(FD_HEADROOM).max(100);
    let mut targets: Vec<usize> = plan.checkpoints.clone();
    let mut note = String::new();
    if peer != Peer::Wse {
        targets.retain(|&t| t <= plan.peer_cap);
    }
    if !peer.shares_port() && targets.iter().any(|&t| t > per_process) {
        targets.retain(|&t| t <= per_process);
        targets.push(per_process);
        note = format!("one process: cannot share a port; open-file limit {limit}");
    }
    targets.dedup();
    let Some(&most) = targets.last() else { return Vec::new() };
    let processes = if most > per_process && peer.shares_port() {
        most.div_ceil(per_process * 85 / 100)
    } else {
        1
    };
    if processes > 1 {
        note = format!("{processes} processes on one port (open-file limit {limit} each)");
    }
    let command = ctx.setup.command_line(peer, Role::Plain, per_process);
    match ramp(ctx, peer, &targets, processes, per_process, plan, exe) {
        Ok(stages) => stages
            .into_iter()
            .map(|stage| Row {
                scenario: "scale",
                peer,
                param: format!("{} connections", number(stage.connections as f64)),
                x: stage.connections as f64,
                metrics: vec![
                    (
                        "bytes_per_conn",
                        stage.rss_delta_kib as f64 * 1024.0 / stage.connections as f64,
                    ),
                    ("accept_per_s", stage.accept_rate),
                    ("server_rss_mb", stage.rss_kib as f64 / 1024.0),
                    (
                        "kernel_tcp_bytes_per_conn",
                        stage.kernel_delta_kib as f64 * 1024.0 / stage.connections as f64,
                    ),
                    ("processes", processes as f64),
                ],
                lost: Some(stage.failed as u64),
                note: note.clone(),
                command: command.clone(),
            })
            .collect(),
        Err(why) => vec![Row::missing(
            "scale",
            peer,
            format!("{} connections", number(most as f64)),
            most as f64,
            &why,
        )],
    }
}

/// What one stage measured.
struct Stage {
    connections: usize,
    failed: usize,
    accept_rate: f64,
    rss_kib: u64,
    rss_delta_kib: u64,
    kernel_delta_kib: u64,
}

fn ramp(
    ctx: &Ctx,
    peer: Peer,
    targets: &[usize],
    processes: usize,
    per_process: usize,
    plan: &ScalePlan,
    exe: &Path,
) -> Result<Vec<Stage>, String> {
    let servers = start_servers(ctx, peer, processes, per_process)?;
    let addr = servers[0].addr;

    // Warm-up, so that lazily allocated tables are in the baseline.
    let dial = ctx.dial(addr, "/wse");
    drop(clients::open(&dial, WARM_UP, 32, ctx.timeout));
    std::thread::sleep(Duration::from_secs(1));
    let base_kib = rss_kib(&servers);
    let base_kernel = host::kernel_tcp_kib().unwrap_or(0);

    let mut holders: Vec<Holder> = Vec::new();
    let mut stages = Vec::new();
    let mut open = 0;
    for &target in targets {
        let started = Instant::now();
        let mut launched = Vec::new();
        let mut left = target.saturating_sub(open);
        while left > 0 {
            let count = left.min(PER_HOLDER.min(per_process));
            left -= count;
            let order = HoldOrder { addr, source: source(holders.len() + launched.len()), count };
            let args = hold_args(ctx, &order);
            launched.push(Holder::launch(exe, &args).map_err(|e| format!("holder: {e}"))?);
        }
        let mut opened = 0;
        let mut failed = 0;
        for holder in &mut launched {
            let report = holder.report().map_err(|e| format!("holder: {e}"))?;
            opened += report.opened;
            failed += report.failed;
        }
        let took = started.elapsed().as_secs_f64();
        holders.extend(launched);
        if opened == 0 {
            eprintln!("loadbench: scale {}: no connection opened past {open}", peer.key());
            break;
        }
        open += opened;
        std::thread::sleep(Duration::from_secs_f64(plan.idle_seconds));
        let rss = rss_kib(&servers);
        let kernel = host::kernel_tcp_kib().unwrap_or(0);
        stages.push(Stage {
            connections: open,
            failed,
            accept_rate: opened as f64 / took.max(1e-9),
            rss_kib: rss,
            rss_delta_kib: rss.saturating_sub(base_kib),
            kernel_delta_kib: kernel.saturating_sub(base_kernel),
        });
        eprintln!("loadbench: scale {}: {open} open, {failed} failed, {took:.1} s", peer.key());
        if failed * 100 > target.max(1) {
            break;
        }
    }
    drop(holders);
    for server in servers {
        let _ = server.stop(STOP_DEADLINE);
    }
    Ok(stages)
}

/// `processes` servers of `peer` on one port: the first picks it, the others join it.
fn start_servers(
    ctx: &Ctx,
    peer: Peer,
    processes: usize,
    per_process: usize,
) -> Result<Vec<Server>, String> {
    let first = ctx.setup.start(peer, Role::Plain, 0, per_process)?;
    let port = first.addr.port();
    let mut servers = vec![first];
    for _ in 1..processes {
        servers.push(ctx.setup.start(peer, Role::Plain, port, per_process)?);
    }
    Ok(servers)
}

fn rss_kib(servers: &[Server]) -> u64 {
    servers.iter().filter_map(|s| host::vm_rss_kib(s.pid())).sum()
}

/// The source address of holder number `index`: 127.0.0.2, 127.0.0.3, … then 127.0.1.2, …
fn source(index: usize) -> IpAddr {
    let (high, low) = (index / 250, index % 250);
    IpAddr::V4(Ipv4Addr::new(127, 0, high as u8, 2 + low as u8))
}

/// The command line of a holder copy of `loadbench`.
fn hold_args(ctx: &Ctx, order: &HoldOrder) -> Vec<String> {
    vec![
        "--hold".into(),
        order.addr.to_string(),
        "--hold-source".into(),
        order.source.to_string(),
        "--hold-count".into(),
        order.count.to_string(),
        "--secret".into(),
        ctx.setup.secret.clone(),
        "--timeout".into(),
        ctx.timeout.as_secs_f64().to_string(),
    ]
}

/// Sockets a process keeps for everything but connections.
const FD_HEADROOM: usize = 300;
/// Connections per holder process.
const PER_HOLDER: usize = 15_000;
/// Connections opened and closed before the baseline.
const WARM_UP: usize = 64;
