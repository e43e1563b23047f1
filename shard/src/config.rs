//! Server configuration: defaults, the optional TOML file, environment variables and flags.
//!
//! Place: read once by `main` (or by the Python facade) before any shard starts; every shard
//! then holds the same immutable [`Config`] behind an `Arc`. Precedence, lowest first:
//! built-in defaults (PROTOCOL.md §10), the TOML file given by `--config`, environment
//! variables (`WSE_*`), command-line flags. Times are seconds on the command line and in the
//! file, [`Duration`] inside the engine.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::Error;

/// The engine's settings, validated. Built with [`Config::from_args`] or [`Config::default`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every shard's listener binds.
    pub host: IpAddr,
    /// TCP port shared by all shards through `SO_REUSEPORT`; 0 picks a free one.
    pub port: u16,
    /// WebSocket endpoint path; `/health` and `/metrics` are served beside it.
    pub path: String,
    /// Cores the shards are pinned to, one shard per entry.
    pub cores: Vec<usize>,
    /// Listen backlog of each shard's socket.
    pub backlog: i32,
    /// Admitted WebSocket connections across all shards; over it, HTTP 503.
    pub max_connections: usize,
    /// Largest message (after reassembly) a client may send; over it, close 1009.
    pub max_message_size: usize,
    /// Time from accept to a complete upgrade before the socket is closed.
    pub handshake_timeout: Duration,
    /// Sockets still in the handshake, across all shards.
    pub max_handshakes: usize,
    /// Sockets still in the handshake from one source address.
    pub max_handshakes_per_ip: usize,
    /// Interval of the server's `ping` message and WebSocket Ping frame.
    pub ping_interval: Duration,
    /// A connection silent this long is closed with 4408.
    pub idle_timeout: Duration,
    /// How long a closing connection waits for the peer's Close before dropping TCP.
    pub close_timeout: Duration,
    /// Outbound bytes queued per connection before the drop policy applies.
    pub max_outbound_queue_bytes: usize,
    /// Topics (exact or glob) one connection may subscribe to.
    pub max_subscriptions_per_connection: usize,
    /// Whether any connection may use the `publish` message (no ACLs yet, see issue #3).
    pub allow_client_publish: bool,
    /// Plain RFC 6455 echo server for conformance runs: no WSE messages, no heartbeats.
    pub echo: bool,
    /// Capacity of each cross-shard ring, in publications.
    pub ring_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 5006,
            path: "/wse".to_owned(),
            cores: default_cores(),
            backlog: 4096,
            max_connections: 10_000,
            max_message_size: 1 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 512,
            max_handshakes_per_ip: 64,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(1),
            max_outbound_queue_bytes: 1 << 20,
            max_subscriptions_per_connection: 1_000,
            allow_client_publish: false,
            echo: false,
            ring_capacity: 1_024,
        }
    }
}

impl Config {
    /// Builds the configuration from the process's arguments, environment and TOML file.
    pub fn from_args() -> Result<Config, Error> {
        Config::from_cli(Cli::parse())
    }

    /// Builds the configuration from parsed flags (and the file they name).
    pub fn from_cli(cli: Cli) -> Result<Config, Error> {
        let file = match &cli.config {
            Some(path) => Overrides::load(path)?,
            None => Overrides::default(),
        };
        let config = file.apply_to(Config::default())?;
        let config = cli.overrides().apply_to(config)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field rules; every message names the setting that is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.cores.is_empty() {
            return bad("at least one shard is needed (cores or shards)".into());
        }
        if !self.path.starts_with('/') {
            return bad(format!("path must start with '/', got {:?}", self.path));
        }
        if self.path == "/health" || self.path == "/metrics" {
            return bad(format!("path {:?} is reserved for the HTTP endpoints", self.path));
        }
        if self.max_message_size < 125 {
            return bad("max_message_size must be at least 125 bytes".into());
        }
        if self.max_connections == 0 || self.max_handshakes == 0 {
            return bad("max_connections and max_handshakes must be positive".into());
        }
        if self.max_handshakes_per_ip == 0 || self.ring_capacity == 0 {
            return bad("max_handshakes_per_ip and ring_capacity must be positive".into());
        }
        let zero = Duration::ZERO;
        if self.ping_interval == zero || self.idle_timeout == zero {
            return bad("ping_interval and idle_timeout must be positive".into());
        }
        if self.handshake_timeout == zero || self.close_timeout == zero {
            return bad("handshake_timeout and close_timeout must be positive".into());
        }
        if self.max_outbound_queue_bytes < 4096 {
            return bad("max_outbound_queue_bytes must be at least 4096".into());
        }
        Ok(())
    }

    /// Number of shards (one per configured core).
    pub fn shards(&self) -> usize {
        self.cores.len()
    }
}

/// Command-line flags. Every flag also reads the environment variable named in its help.
#[derive(Debug, Parser, Default)]
#[command(
    name = "wse-server",
    version,
    about = "WSE: a thread-per-core WebSocket engine with topic fan-out",
    long_about = "WSE: a thread-per-core WebSocket engine with topic fan-out.\n\n\
        With no options it serves ws://0.0.0.0:5006/wse with one shard per CPU core and \
        in-memory fan-out. Settings come from built-in defaults, then the TOML file given by \
        --config (keys are the long flag names with '_' for '-'), then WSE_* environment \
        variables, then flags. Times are in seconds."
)]
pub struct Cli {
    /// TOML file with settings (keys as the flag names, e.g. max_connections = 5000).
    #[arg(long, env = "WSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = "WSE_HOST")]
    pub host: Option<IpAddr>,
    /// TCP port, shared by every shard through SO_REUSEPORT; 0 picks one [default: 5006].
    #[arg(long, env = "WSE_PORT")]
    pub port: Option<u16>,
    /// WebSocket endpoint path [default: /wse].
    #[arg(long, env = "WSE_PATH")]
    pub path: Option<String>,
    /// Comma-separated CPU cores to pin one shard each to, e.g. 2,3,4,5.
    #[arg(long, env = "WSE_CORES", value_delimiter = ',', conflicts_with = "shards")]
    pub cores: Option<Vec<usize>>,
    /// Number of shards, pinned to cores 0..N [default: one per online core].
    #[arg(long, env = "WSE_SHARDS")]
    pub shards: Option<usize>,
    /// Listen backlog of each shard's socket [default: 4096].
    #[arg(long, env = "WSE_BACKLOG")]
    pub backlog: Option<i32>,
    /// Maximum admitted WebSocket connections; over it clients get HTTP 503 [default: 10000].
    #[arg(long, env = "WSE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Maximum message size in bytes after reassembly; over it, close 1009 [default: 1048576].
    #[arg(long, env = "WSE_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Seconds from accept to a finished upgrade before the socket is dropped [default: 10].
    #[arg(long, env = "WSE_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<f64>,
    /// Sockets allowed in the handshake at once, all sources together [default: 512].
    #[arg(long, env = "WSE_MAX_HANDSHAKES")]
    pub max_handshakes: Option<usize>,
    /// Sockets allowed in the handshake at once from one source address [default: 64].
    #[arg(long, env = "WSE_MAX_HANDSHAKES_PER_IP")]
    pub max_handshakes_per_ip: Option<usize>,
    /// Seconds between server heartbeats (ping message and WebSocket Ping) [default: 25].
    #[arg(long, env = "WSE_PING_INTERVAL")]
    pub ping_interval: Option<f64>,
    /// Seconds without any frame from a client before it is closed with 4408 [default: 60].
    #[arg(long, env = "WSE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,
    /// Seconds a closing connection waits for the client's Close frame [default: 1].
    #[arg(long, env = "WSE_CLOSE_TIMEOUT")]
    pub close_timeout: Option<f64>,
    /// Outbound bytes queued per connection before messages are dropped [default: 1048576].
    #[arg(long, env = "WSE_MAX_OUTBOUND_QUEUE_BYTES")]
    pub max_outbound_queue_bytes: Option<usize>,
    /// Subscriptions (exact topics or globs) per connection [default: 1000].
    #[arg(long, env = "WSE_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions_per_connection: Option<usize>,
    /// Let every client publish to topics with the `publish` message.
    #[arg(long, env = "WSE_ALLOW_CLIENT_PUBLISH")]
    pub allow_client_publish: bool,
    /// Plain RFC 6455 echo server (conformance runs): no WSE messages, auth or heartbeats.
    #[arg(long, env = "WSE_ECHO")]
    pub echo: bool,
    /// Capacity of each cross-shard ring, in publications [default: 1024].
    #[arg(long, env = "WSE_RING_CAPACITY")]
    pub ring_capacity: Option<usize>,
}

impl Cli {
    /// The settings given on the command line or in the environment, as an overlay.
    fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host,
            port: self.port,
            path: self.path.clone(),
            cores: self.cores.clone(),
            shards: self.shards,
            backlog: self.backlog,
            max_connections: self.max_connections,
            max_message_size: self.max_message_size,
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            close_timeout: self.close_timeout,
            max_outbound_queue_bytes: self.max_outbound_queue_bytes,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            allow_client_publish: self.allow_client_publish.then_some(true),
            echo: self.echo.then_some(true),
            ring_capacity: self.ring_capacity,
        }
    }
}

/// Settings from one source (the TOML file, or flags and environment) laid over the
/// defaults; `None` leaves a setting as it was. The file's keys are the long flag names with
/// underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    host: Option<IpAddr>,
    port: Option<u16>,
    path: Option<String>,
    cores: Option<Vec<usize>>,
    shards: Option<usize>,
    backlog: Option<i32>,
    max_connections: Option<usize>,
    max_message_size: Option<usize>,
    handshake_timeout: Option<f64>,
    max_handshakes: Option<usize>,
    max_handshakes_per_ip: Option<usize>,
    ping_interval: Option<f64>,
    idle_timeout: Option<f64>,
    close_timeout: Option<f64>,
    max_outbound_queue_bytes: Option<usize>,
    max_subscriptions_per_connection: Option<usize>,
    allow_client_publish: Option<bool>,
    echo: Option<bool>,
    ring_capacity: Option<usize>,
}

impl Overrides {
    fn load(path: &PathBuf) -> Result<Overrides, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn apply_to(self, mut c: Config) -> Result<Config, Error> {
        set(&mut c.host, self.host);
        set(&mut c.port, self.port);
        set(&mut c.path, self.path);
        set(&mut c.backlog, self.backlog);
        set(&mut c.max_connections, self.max_connections);
        set(&mut c.max_message_size, self.max_message_size);
        set(&mut c.max_handshakes, self.max_handshakes);
        set(&mut c.max_handshakes_per_ip, self.max_handshakes_per_ip);
        set(&mut c.max_outbound_queue_bytes, self.max_outbound_queue_bytes);
        set(&mut c.max_subscriptions_per_connection, self.max_subscriptions_per_connection);
        set(&mut c.ring_capacity, self.ring_capacity);
        set(&mut c.allow_client_publish, self.allow_client_publish);
        set(&mut c.echo, self.echo);
        set_secs(&mut c.handshake_timeout, self.handshake_timeout, "handshake_timeout")?;
        set_secs(&mut c.ping_interval, self.ping_interval, "ping_interval")?;
        set_secs(&mut c.idle_timeout, self.idle_timeout, "idle_timeout")?;
        set_secs(&mut c.close_timeout, self.close_timeout, "close_timeout")?;
        set_cores(&mut c.cores, self.cores, self.shards)?;
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Converts a positive, finite number of seconds into a [`Duration`].
pub fn seconds(value: f64, name: &str) -> Result<Duration, Error> {
    if !value.is_finite() || value <= 0.0 || value > 86_400.0 * 365.0 {
        return Err(Error::Config(format!("{name} must be a positive number of seconds")));
    }
    Ok(Duration::from_secs_f64(value))
}

fn set_secs(slot: &mut Duration, value: Option<f64>, name: &str) -> Result<(), Error> {
    if let Some(v) = value {
        *slot = seconds(v, name)?;
    }
    Ok(())
}

fn set_cores(
    slot: &mut Vec<usize>,
    cores: Option<Vec<usize>>,
    shards: Option<usize>,
) -> Result<(), Error> {
    match (cores, shards) {
        (Some(_), Some(_)) => Err(Error::Config("give cores or shards, not both".into())),
        (Some(list), None) => {
            *slot = checked_cores(list)?;
            Ok(())
        }
        (None, Some(0)) => Err(Error::Config("shards must be at least 1".into())),
        (None, Some(n)) => {
            *slot = spread_cores(n);
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

/// The online cores, as `core_affinity` sees them (it honours the process's CPU mask).
fn online_cores() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let mut cores: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
    if cores.is_empty() {
        cores.push(0);
    }
    cores
}

fn default_cores() -> Vec<usize> {
    online_cores()
}

/// `n` shards over the online cores, wrapping when there are more shards than cores.
fn spread_cores(n: usize) -> Vec<usize> {
    let online = online_cores();
    (0..n).map(|i| online[i % online.len()]).collect()
}

fn checked_cores(list: Vec<usize>) -> Result<Vec<usize>, Error> {
    let online = online_cores();
    if let Some(bad) = list.iter().find(|c| !online.contains(c)) {
        return Err(Error::Config(format!("core {bad} is not online (online: {online:?})")));
    }
    if list.is_empty() {
        return Err(Error::Config("the core list is empty".into()));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Config, Error> {
        let mut all = vec!["wse-server"];
        all.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(all).map_err(|e| Error::Config(e.to_string()))?)
    }

    #[test]
    fn defaults_follow_the_protocol_table() {
        let c = cli(&[]).expect("defaults are valid");
        assert_eq!(c.port, 5006);
        assert_eq!(c.path, "/wse");
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert!(!c.cores.is_empty());
    }

    #[test]
    fn flags_override_and_convert_seconds() {
        let c = cli(&["--port", "0", "--ping-interval", "0.5", "--shards", "3"]).expect("valid");
        assert_eq!(c.port, 0);
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(c.shards(), 3);
    }

    #[test]
    fn rejects_non_positive_times_and_bad_paths() {
        assert!(cli(&["--idle-timeout", "0"]).is_err());
        assert!(cli(&["--ping-interval", "-1"]).is_err());
        assert!(cli(&["--path", "wse"]).is_err());
        assert!(cli(&["--path", "/health"]).is_err());
        assert!(cli(&["--shards", "0"]).is_err());
    }

    #[test]
    fn toml_file_is_read_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("wse-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("wse.toml");
        std::fs::write(&file, "port = 6001\nmax_connections = 7\nidle_timeout = 3\n")
            .expect("write config");
        let path = file.to_str().expect("utf-8 temp path");
        let c = cli(&["--config", path, "--max-connections", "9"]).expect("valid");
        assert_eq!(c.port, 6001);
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.idle_timeout, Duration::from_secs(3));
        std::fs::write(&file, "no_such_key = 1\n").expect("write config");
        assert!(cli(&["--config", path]).is_err());
    }
}
