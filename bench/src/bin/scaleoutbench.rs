//! `scaleoutbench`: deliveries per second to one topic's subscribers spread over several
//! `wse-server` instances joined by Redis, against one instance without Redis, in one run.
//!
//! Two setups, each on fresh processes:
//!
//! - **scale-out**: a `redis-server` of its own (free loopback port, no persistence) and
//!   `--instances` servers with `--redis-url`; the `--subscribers` connections of one topic
//!   are spread round-robin over the instances, and one publisher connection on the first
//!   instance publishes. Every publication goes through Redis (the ordering script), and
//!   comes back to every instance, the publisher's own included; the deliveries to
//!   subscribers of the other instances are the cross-instance ones.
//! - **single**: one server without Redis, the same subscribers and publisher, with as many
//!   shards as the scale-out servers have together (`--single-shards` to change it), so
//!   that the two differ by Redis and the processes, not by the shard count.
//!
//! The publisher stays at most `--window` publications ahead of the slowest subscriber, so
//! that no queue overflows and every subscriber must see every offset exactly once and in
//! order (anything else is counted as lost). Then, with the throughput load gone, single
//! publications are timed from the publisher's write to their arrival at a subscriber of
//! the publisher's instance and, in the scale-out setup, of another instance (median and
//! 99th percentile). The table has a row per setup, with the machine, versions and exact
//! commands.
//!
//! Exit status: 0 when nothing was lost, 1 otherwise, 2 when the run could not be set up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use wse_bench::clients;
use wse_bench::fanout::{Publisher, Readers};
use wse_bench::host::{self, Machine};
use wse_bench::report::{Record, Value};
use wse_bench::server::Server;
use wse_bench::ws::{self, Client, Dial, Keys};

/// Fan-out throughput of wse-server scaled out through Redis, beside a single instance.
#[derive(Debug, Parser)]
#[command(name = "scaleoutbench", version, about, long_about = None)]
struct Args {
    /// The wse-server binary to start.
    #[arg(long, default_value = "target/release/wse-server")]
    server: PathBuf,
    /// The redis-server binary to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Instances in the scale-out setup.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Subscribers of the one topic, spread over the instances.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Shards of every server of the scale-out setup.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Shards of the single server [default: instances × shards, the same shards in all].
    #[arg(long)]
    single_shards: Option<usize>,
    /// Seconds of publishing per setup.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Bytes of padding in each publication's data.
    #[arg(long, default_value_t = 512)]
    payload: usize,
    /// Publications the publisher may be ahead of the slowest subscriber.
    #[arg(long, default_value_t = 512)]
    window: u64,
    /// Threads reading the subscribers' sockets.
    #[arg(long, default_value_t = 2)]
    reader_threads: usize,
    /// Publications timed one at a time, from publish to delivery, after the throughput
    /// phase (0: no latency phase).
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Print one JSON object per setup instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one setup measured.
struct Measured {
    commands: Vec<String>,
    published: u64,
    deliveries: u64,
    cross: u64,
    lost: u64,
    seconds: f64,
    /// Publish-to-delivery on the publisher's instance, µs: (median, 99th percentile).
    latency_local: Option<(f64, f64)>,
    /// The same to a subscriber of another instance.
    latency_remote: Option<(f64, f64)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.subscribers == 0 || args.instances == 0 || args.reader_threads == 0 {
        eprintln!("scaleoutbench: --subscribers, --instances and --reader-threads must be > 0");
        return ExitCode::from(2);
    }
    let machine = Machine::probe();
    let version = host::command_line(&args.server.to_string_lossy(), &["--version"]);
    let redis_version = host::command_line(&args.redis_server.to_string_lossy(), &["--version"]);
    let setups = [Setup::ScaleOut, Setup::Single];
    let mut results = Vec::new();
    for setup in setups {
        let result = measure(&args, setup);
        if let Err(why) = &result {
            eprintln!("scaleoutbench: {}: {why}", setup.name());
        }
        results.push(result);
    }
    let single = results[1].as_ref().ok().map(|m| m.deliveries as f64 / m.seconds);
    let mut ok = true;
    for (i, (setup, result)) in setups.iter().zip(&results).enumerate() {
        let mut r = record(&args, *setup, &machine, &version, &redis_version, result);
        if let (Ok(m), Some(single)) = (result, single) {
            r.push("vs_single", Value::Float(m.deliveries as f64 / m.seconds / single));
        } else {
            r.push("vs_single", Value::Missing);
        }
        ok &= result.as_ref().is_ok_and(|m| m.lost == 0);
        if args.json {
            println!("{}", r.json());
        } else {
            print!("{}", r.markdown_row(i == 0));
        }
    }
    if results.iter().any(Result::is_err) {
        return ExitCode::from(2);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Which processes serve the subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `--instances` servers on one Redis.
    ScaleOut,
    /// One server, no Redis.
    Single,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::ScaleOut => "scale-out",
            Setup::Single => "single",
        }
    }
}

/// One setup on fresh processes.
fn measure(args: &Args, setup: Setup) -> Result<Measured, String> {
    let redis = match setup {
        Setup::ScaleOut => Some(RedisChild::start(&args.redis_server)?),
        Setup::Single => None,
    };
    let instances = if setup == Setup::ScaleOut { args.instances } else { 1 };
    let mut servers = Vec::new();
    let mut commands = Vec::new();
    if let Some(redis) = &redis {
        commands.push(redis.command.clone());
    }
    for i in 0..instances {
        let mut flags = server_args(args, shards_of(args, setup));
        if let Some(redis) = &redis {
            flags.extend(["--redis-url".into(), format!("redis://127.0.0.1:{}", redis.port)]);
        }
        let log =
            std::env::temp_dir().join(format!("scaleoutbench-{}-{i}.log", std::process::id()));
        let server = Server::start(&args.server, &flags, log).map_err(|e| e.to_string())?;
        commands.push(format!("{} {}", args.server.display(), flags.join(" ")));
        if redis.is_some() {
            wait_accepting(server.addr, Duration::from_secs(10))?;
        }
        servers.push(server);
    }

    // Subscribers spread over the instances, the first instance's first: the deliveries to
    // the others are the cross-instance ones.
    let timeout = Duration::from_secs(10);
    let mut subs = Vec::new();
    let mut on_first = 0;
    for (i, server) in servers.iter().enumerate() {
        let count = args.subscribers / instances + usize::from(i < args.subscribers % instances);
        let dial = Dial::new(server.addr, "/wse?topics=bench");
        let opened = clients::open(&dial, count, 32, timeout);
        if opened.failed > 0 {
            return Err(format!("{} subscribers failed: {:?}", opened.failed, opened.errors));
        }
        if i == 0 {
            on_first = opened.clients.len();
        }
        subs.extend(opened.clients);
    }
    let readers = Readers::start(subs, args.reader_threads)?;
    readers.wait_subscribed(args.subscribers as u64, timeout)?;
    let dial = Dial::new(servers[0].addr, "/wse");
    let mut publisher = Publisher::open(&dial, "bench", args.payload, timeout)?;

    let started = Instant::now();
    let run = Duration::from_secs_f64(args.seconds);
    publisher.run_sampling(&readers, run, args.window, 0, u64::MAX)?;
    readers.wait_for(publisher.sent, Duration::from_secs(30));
    let seconds = started.elapsed().as_secs_f64();
    let deliveries = readers.delivered();
    let cross = deliveries - readers.delivered_to(0..on_first);
    let lost = readers.lost(publisher.sent);
    readers.stop();
    let samples = args.latency_samples;
    let latency_local = latency(servers[0].addr, servers[0].addr, samples, timeout)?;
    let latency_remote = match servers.get(1) {
        Some(other) => latency(servers[0].addr, other.addr, samples, timeout)?,
        None => None,
    };
    for server in servers {
        drop(server.stop(Duration::from_secs(10)));
    }
    drop(redis);
    Ok(Measured {
        commands,
        published: publisher.sent,
        deliveries,
        cross,
        lost,
        seconds,
        latency_local,
        latency_remote,
    })
}

/// Times `samples` publications one at a time, from the publisher's write on `from` to their
/// arrival at a subscriber on `to`: `(median, 99th percentile)` in µs; `None` for 0 samples.
fn latency(
    from: SocketAddr,
    to: SocketAddr,
    samples: usize,
    timeout: Duration,
) -> Result<Option<(f64, f64)>, String> {
    if samples == 0 {
        return Ok(None);
    }
    let mut keys = Keys::new().map_err(|e| e.to_string())?;
    let mut sub =
        Client::connect(to, "/wse?topics=lat", &mut keys, timeout).map_err(|e| e.to_string())?;
    loop {
        let frame = sub.read_frame().map_err(|e| e.to_string())?;
        if frame.payload.starts_with(br#"{"c":"WSE","t":"subscription_update""#) {
            break;
        }
    }
    let mut publisher =
        Client::connect(from, "/wse", &mut keys, timeout).map_err(|e| e.to_string())?;
    publisher.read_frame().map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(samples);
    for n in 0..samples {
        let text = format!(r#"{{"t":"publish","p":{{"topic":"lat","data":{{"n":{n}}}}}}}"#);
        let frame = ws::masked_text(text.as_bytes(), (n as u32).to_be_bytes());
        let sent = Instant::now();
        let mut stream = publisher.stream();
        stream.write_all(&frame).map_err(|e| format!("publish: {e}"))?;
        while !sub
            .read_frame()
            .map_err(|e| e.to_string())?
            .payload
            .windows(5)
            .any(|w| w == b"\"lat\"")
        {}
        times.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Some((at(0.5), at(0.99))))
}

/// Shards of each server of `setup`.
fn shards_of(args: &Args, setup: Setup) -> usize {
    match setup {
        Setup::ScaleOut => args.shards,
        Setup::Single => args.single_shards.unwrap_or(args.instances * args.shards),
    }
}

/// Every server's flags (the Redis URL comes on top in the scale-out setup).
fn server_args(args: &Args, shards: usize) -> Vec<String> {
    let fixed = [
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
    ];
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    out.extend(["--max-connections".into(), (args.subscribers + 100).to_string()]);
    out.extend(["--shards".into(), shards.to_string()]);
    out
}

/// Waits until `/health` says the server's Redis bridge accepts publications.
fn wait_accepting(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let body = http_get(addr, "/health").unwrap_or_default();
        if body.contains(r#""accepting":true"#) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr}: the Redis bridge never accepted: {body}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The body of `GET path`.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// A `redis-server` child on a free port, killed when dropped.
struct RedisChild {
    child: Child,
    port: u16,
    command: String,
}

impl RedisChild {
    fn start(binary: &PathBuf) -> Result<RedisChild, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let flags = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]
            .into_iter()
            .chain(["--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"])
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let child = Command::new(binary)
            .args(&flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} (make deps): {e}", binary.display()))?;
        let shown: Vec<&str> = flags.iter().map(|f| if f.is_empty() { "''" } else { f }).collect();
        let command = format!("{} {}", binary.display(), shown.join(" "));
        let redis = RedisChild { child, port, command };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("redis-server did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The row of one setup.
fn record(
    args: &Args,
    setup: Setup,
    machine: &Machine,
    version: &str,
    redis_version: &str,
    result: &Result<Measured, String>,
) -> Record {
    let mut r = Record::default();
    r.text("date", host::utc_now()).text("cpu", &machine.cpu);
    r.push("cores", Value::Int(machine.cores as u64)).text("kernel", &machine.kernel);
    r.text("server_version", version);
    r.text("setup", setup.name());
    let instances = if setup == Setup::ScaleOut { args.instances } else { 1 };
    r.push("instances", Value::Int(instances as u64));
    r.push("shards_each", Value::Int(shards_of(args, setup) as u64));
    r.push("subscribers", Value::Int(args.subscribers as u64));
    match result {
        Ok(m) => {
            r.push("published", Value::Int(m.published));
            r.push("deliveries_per_second", Value::Float(m.deliveries as f64 / m.seconds));
            r.push("cross_instance_per_second", Value::Float(m.cross as f64 / m.seconds));
            r.push("lost", Value::Int(m.lost));
            let p50 = |l: Option<(f64, f64)>| l.map(|l| l.0.round() as u64);
            let p99 = |l: Option<(f64, f64)>| l.map(|l| l.1.round() as u64);
            r.push("latency_same_instance_p50_us", p50(m.latency_local).into());
            r.push("latency_same_instance_p99_us", p99(m.latency_local).into());
            r.push("latency_other_instance_p50_us", p50(m.latency_remote).into());
            r.push("latency_other_instance_p99_us", p99(m.latency_remote).into());
            r.text("note", "");
            r.text("commands", m.commands.join(" ; "));
        }
        Err(why) => {
            for field in [
                "published",
                "deliveries_per_second",
                "cross_instance_per_second",
                "lost",
                "latency_same_instance_p50_us",
                "latency_same_instance_p99_us",
                "latency_other_instance_p50_us",
                "latency_other_instance_p99_us",
            ] {
                r.push(field, Value::Missing);
            }
            r.text("note", why.as_str());
            r.text("commands", "");
        }
    }
    let redis = if setup == Setup::ScaleOut { redis_version } else { "" };
    r.text("redis_version", redis);
    r.text("command", std::env::args().collect::<Vec<_>>().join(" "));
    r
}
