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
    /// Topic history and recovery after reconnect (PROTOCOL.md §7, §10).
    pub history: HistorySettings,
    /// Publisher-given message ids remembered per owner shard for de-duplication; 0 turns
    /// de-duplication off (PROTOCOL.md §10: 50,000).
    pub dedup_window: usize,
    /// How long a message id stays in the de-duplication window (PROTOCOL.md §10: 300 s).
    pub dedup_window_age: Duration,
    /// Who may connect and what they may do: JWT, origins, E2E, signing, rate limits.
    pub security: Security,
    /// Certificate chain and private key (PEM files) for `wss://`; plain `ws://` when absent.
    pub tls: Option<TlsFiles>,
    /// `C:` frames and permessage-deflate (PROTOCOL.md §1, §4).
    pub compression: Compression,
    /// Whether an application drains events ([`crate::App::drain`]). Off in the standalone
    /// binary, which has no application: then no events are produced, no `sync_request`
    /// holds publications back, and no connection information is kept. Set only through the
    /// library API (no flag).
    pub app_events: bool,
    /// Whether every connection waits, without `server_ready`, for the application's
    /// `accept` or `reject` (PROTOCOL.md §2); closed with 4401 after `handshake_timeout`.
    /// Needs `app_events`; set only through the library API.
    pub require_accept: bool,
    /// Data events waiting per shard for the application; then that shard's connections
    /// stop reading their sockets until the application catches up.
    pub max_inbound_queue_size: usize,
    /// Bytes of data events waiting per shard for the application (their size as received).
    pub max_inbound_queue_bytes: usize,
    /// Calls from the application waiting per shard.
    pub control_capacity: usize,
    /// How long an application call waits for room in a full control ring, or for a shard's
    /// answer, before it fails with [`crate::Error::Busy`].
    pub publish_timeout: Duration,
    /// How long publications are held back after a `sync_request` when the application does
    /// not call `snapshot_complete`.
    pub snapshot_timeout: Duration,
    /// Bytes of a connection's request headers and query kept for
    /// [`crate::App::connection_info`]; headers past it are left out.
    pub max_connection_info_bytes: usize,
    /// Who is on each topic (PROTOCOL.md §7, §8, §10).
    pub presence: PresenceSettings,
    /// Redis for scale-out (`redis://host:port/db`): publications of the travelling topics
    /// reach every instance that uses the same Redis. `None`: the embedded default, one
    /// instance with in-memory fan-out and no Redis at all.
    pub redis_url: Option<RedisUrl>,
    /// How the scale-out through Redis behaves (used only with `redis_url`).
    pub redis: RedisSettings,
}

/// A Redis URL. Its `Debug` form hides the user and password, so that a printed
/// configuration leaks no credentials; `as_str` gives the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RedisUrl {
    fn from(url: &str) -> Self {
        RedisUrl(url.to_owned())
    }
}

impl From<String> for RedisUrl {
    fn from(url: String) -> Self {
        RedisUrl(url)
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = &self.0;
        let shown = match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://<credentials>{}", &url[..scheme], &url[at..])
            }
            _ => url.clone(),
        };
        write!(f, "RedisUrl({shown:?})")
    }
}

/// Scale-out through Redis; see the `--redis-*` flags and the README, "Scale-out".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Prefix of every Redis channel and key, so that deployments can share a Redis.
    pub prefix: String,
    /// Globs of the topics whose publications travel between instances; the others stay
    /// on the instance they were published on.
    pub topics: Vec<String>,
    /// Connect and response timeout of each Redis call; a publication that has not come
    /// back through Redis within four times this is delivered locally.
    pub timeout: Duration,
    /// Failed Redis calls within `breaker_window` that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How far back failures count.
    pub breaker_window: Duration,
    /// How long the breaker stays open before one probe call.
    pub breaker_reset: Duration,
    /// Dead letters kept in memory while Redis is unreachable (oldest dropped past it).
    pub dlq_buffer: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            prefix: "wse".to_owned(),
            topics: vec!["*".to_owned()],
            timeout: Duration::from_secs(1),
            breaker_threshold: 10,
            breaker_window: Duration::from_secs(60),
            breaker_reset: Duration::from_secs(60),
            dlq_buffer: 10_000,
        }
    }
}

/// Presence (PROTOCOL.md §7, §10); see the `--presence*` flags. Off by default, as in the
/// 2.x server: it costs a message to every subscriber of a topic whenever someone joins or
/// leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// Keep presence for exact-topic subscriptions and announce joins, leaves and updates.
    pub enabled: bool,
    /// Largest presence data of one connection, as JSON text.
    pub max_data_size: usize,
    /// Most members listed per topic; 0 is no limit.
    pub max_members: usize,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings { enabled: false, max_data_size: 4096, max_members: 0 }
    }
}

/// Compression settings (PROTOCOL.md §1, §4, §10); see the flags of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Messages whose JSON is longer than this many bytes are compressed: as `C:` frames,
    /// or with permessage-deflate on connections that negotiated it.
    pub threshold: usize,
    /// zlib level, 1 (fastest) to 9 (smallest).
    pub level: u8,
    /// Whether `C:` frames are sent to connections without permessage-deflate.
    pub c_frames: bool,
    /// Whether permessage-deflate offers are accepted.
    pub permessage_deflate: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Compression { threshold: 1024, level: 1, c_frames: true, permessage_deflate: true }
    }
}

/// Topic history and recovery (PROTOCOL.md §7 "Recovery", §10); see the `--history-*` flags.
///
/// On by default: PROTOCOL.md §7 makes recovery part of what the engine answers, and its §10
/// gives the history bounds as defaults. (The 2.x server's `recovery_enabled` defaulted to
/// off because there the application had to call it; here the engine answers the client's
/// `recover: true` itself, within the memory budget below.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Keep topic history and replay it on `recover: true`; `features.recovery` says so.
    pub enabled: bool,
    /// Messages kept per topic.
    pub messages_per_topic: usize,
    /// Bytes kept per topic (not in PROTOCOL.md §10; our bound against a few huge messages
    /// taking a topic's whole history).
    pub bytes_per_topic: usize,
    /// Messages older than this are not replayed; a topic not published for this long is
    /// forgotten and its next publication opens a new epoch.
    pub ttl: Duration,
    /// Most messages one recovery replays; a client further behind gets `recovered: false`.
    pub max_replay: usize,
    /// Bytes of history in the whole process: frame bytes counted once (every shard holds the
    /// same shared frames, each charged its share) plus every shard's index.
    pub memory_budget: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            enabled: true,
            messages_per_topic: 128,
            bytes_per_topic: 8 << 20,
            ttl: Duration::from_secs(300),
            max_replay: 500,
            memory_budget: 256 << 20,
        }
    }
}

/// Security settings (PROTOCOL.md §2, §5, §6); see the flags of the same names.
#[derive(Debug, Clone)]
pub struct Security {
    /// JWT validation in the handshake; `None` admits connections anonymously.
    pub jwt: Option<JwtSettings>,
    /// Cookie that carries the token.
    pub cookie_name: String,
    /// Whether the `token` query parameter is read (off: URLs end up in logs).
    pub query_token: bool,
    /// What a client without a valid token gets.
    pub failure_mode: AuthFailureMode,
    /// Close a connection with 4403 when its token's `exp` passes.
    pub close_on_token_expiry: bool,
    /// Allowed `Origin` values; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// Whether clients may ask for end-to-end encryption in `client_hello`.
    pub encryption: bool,
    /// Shared HMAC secret for signing on connections without E2E.
    pub signing_secret: Option<Secret>,
    /// Outbound message types to sign (`*` for all); empty signs nothing.
    pub sign_outbound: Vec<String>,
    /// Refuse inbound JSON messages without a valid `sig`.
    pub require_signed_inbound: bool,
    /// Inbound token bucket: capacity in messages.
    pub rate_limit_capacity: u64,
    /// Inbound token bucket: messages refilled per second.
    pub rate_limit_refill: f64,
    /// A connection over its limit for this long is closed with 4429.
    pub rate_limit_close_after: Duration,
}

/// JWT validation settings, as configured (keys are read and checked at start-up).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `HS256` (default), `RS256` or `ES256`; the token's own `alg` is never trusted.
    pub algorithm: String,
    /// HS256: the secret (at least 32 bytes). RS256/ES256: the PEM public key.
    pub key: Secret,
    /// The previous secret or public key, accepted too while keys rotate.
    pub previous_key: Option<Secret>,
    /// Required exact `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty refuses tokens that carry `aud`.
    pub audience: Vec<String>,
    /// Required `kid` header.
    pub key_id: Option<String>,
}

/// What a client without a valid token gets (PROTOCOL.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthFailureMode {
    /// Upgrade, one `error` message (`AUTH_REQUIRED` / `AUTH_FAILED`), then close 4401.
    Close,
    /// HTTP 401 before the upgrade.
    Reject,
}

/// Paths of the PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Secret bytes that never appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Default for Security {
    fn default() -> Self {
        Security {
            jwt: None,
            cookie_name: "access_token".to_owned(),
            query_token: false,
            failure_mode: AuthFailureMode::Close,
            close_on_token_expiry: false,
            allowed_origins: Vec::new(),
            encryption: true,
            signing_secret: None,
            sign_outbound: Vec::new(),
            require_signed_inbound: false,
            rate_limit_capacity: 100_000,
            rate_limit_refill: 10_000.0,
            rate_limit_close_after: Duration::from_secs(10),
        }
    }
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
            history: HistorySettings::default(),
            dedup_window: 50_000,
            dedup_window_age: Duration::from_secs(300),
            security: Security::default(),
            tls: None,
            compression: Compression::default(),
            app_events: false,
            require_accept: false,
            max_inbound_queue_size: 65_536,
            max_inbound_queue_bytes: 64 << 20,
            control_capacity: 65_536,
            publish_timeout: Duration::from_secs(1),
            snapshot_timeout: Duration::from_secs(5),
            max_connection_info_bytes: 4096,
            presence: PresenceSettings::default(),
            redis_url: None,
            redis: RedisSettings::default(),
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
        if self.cores.is_empty() || self.cores.len() > MAX_SHARDS {
            return bad(format!("shards must be 1 to {MAX_SHARDS} (cores or shards)"));
        }
        if !is_url_path(&self.path) {
            return bad(format!(
                "path must start with '/' and be visible ASCII without spaces or control \
                 characters, got {:?}",
                self.path
            ));
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
        let history = &self.history;
        if history.messages_per_topic == 0 || history.max_replay == 0 {
            return bad("history_size and history_max_replay must be positive".into());
        }
        if history.ttl == zero || self.dedup_window_age == zero {
            return bad("history_ttl and dedup_window_age must be positive".into());
        }
        if !(1..=9).contains(&self.compression.level) {
            return bad(format!("compression_level must be 1-9, got {}", self.compression.level));
        }
        if self.max_inbound_queue_size == 0 || self.control_capacity == 0 {
            return bad("max_inbound_queue_size and control_capacity must be positive".into());
        }
        if self.max_inbound_queue_bytes < self.max_message_size {
            return bad("max_inbound_queue_bytes must be at least max_message_size".into());
        }
        if self.require_accept && !self.app_events {
            return bad("require_accept needs app_events: someone must accept".into());
        }
        if self.presence.max_data_size == 0 {
            return bad("presence_max_data_size must be positive".into());
        }
        if self.publish_timeout == zero || self.snapshot_timeout == zero {
            return bad("publish_timeout and snapshot_timeout must be positive".into());
        }
        if let Some(bridge) = self.bridge_config() {
            bridge.validate().map_err(|e| Error::Config(e.to_string()))?;
        }
        self.security.validate()
    }

    /// The Redis bridge's settings, with a fresh instance id; `None` without `redis_url`
    /// or in echo mode.
    pub fn bridge_config(&self) -> Option<wse_fanout::bridge::BridgeConfig> {
        let url = self.redis_url.as_ref().filter(|_| !self.echo)?.as_str();
        let mut bridge = wse_fanout::bridge::BridgeConfig::new(url);
        let r = &self.redis;
        bridge.prefix.clone_from(&r.prefix);
        bridge.topics.clone_from(&r.topics);
        bridge.timeout = r.timeout;
        bridge.breaker = wse_fanout::bridge::BreakerSettings {
            threshold: r.breaker_threshold,
            window: r.breaker_window,
            reset: r.breaker_reset,
        };
        bridge.dlq_buffer = r.dlq_buffer;
        bridge.history_ttl = self.history.ttl;
        Some(bridge)
    }

    /// Number of shards (one per configured core).
    pub fn shards(&self) -> usize {
        self.cores.len()
    }
}

impl Security {
    fn validate(&self) -> Result<(), Error> {
        let bad = |msg: &str| Err(Error::Config(msg.to_owned()));
        if self.rate_limit_capacity == 0 {
            return bad("rate_limit_capacity must be positive");
        }
        if !self.rate_limit_refill.is_finite() || self.rate_limit_refill <= 0.0 {
            return bad("rate_limit_refill must be a positive number of messages per second");
        }
        if !is_cookie_name(&self.cookie_name) {
            return Err(Error::Config(format!(
                "jwt_cookie_name must be a cookie name (an RFC 6265 token: visible ASCII \
                 without separators such as ; = , or spaces), got {:?}",
                self.cookie_name
            )));
        }
        if let Some(secret) = &self.signing_secret {
            if secret.0.len() < MIN_SIGNING_SECRET_BYTES {
                return Err(Error::Config(format!(
                    "signing_secret is {} bytes; at least {MIN_SIGNING_SECRET_BYTES} are required",
                    secret.0.len()
                )));
            }
        }
        if let Some(origin) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err(Error::Config(format!(
                "allowed_origins entry {origin:?} is not an origin: scheme://host[:port], \
                 without path, e.g. https://app.example"
            )));
        }
        if self.require_signed_inbound && self.signing_secret.is_none() {
            // E2E connections sign with their own key; the others need the shared secret.
            return bad("require_signed_inbound needs signing_secret");
        }
        Ok(())
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
    /// Topic history and recovery on reconnect: on or off [default: on].
    #[arg(long, env = "WSE_RECOVERY", value_parser = clap::builder::BoolishValueParser::new())]
    pub recovery: Option<bool>,
    /// Messages of history kept per topic [default: 128].
    #[arg(long, env = "WSE_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// Bytes of history kept per topic [default: 8388608].
    #[arg(long, env = "WSE_HISTORY_TOPIC_BYTES")]
    pub history_topic_bytes: Option<usize>,
    /// Seconds a message stays replayable; a topic idle this long starts a new epoch
    /// [default: 300].
    #[arg(long, env = "WSE_HISTORY_TTL")]
    pub history_ttl: Option<f64>,
    /// Most messages one recovery replays; further behind, `recovered: false` [default: 500].
    #[arg(long, env = "WSE_HISTORY_MAX_REPLAY")]
    pub history_max_replay: Option<usize>,
    /// Bytes of topic history in the whole server [default: 268435456].
    #[arg(long, env = "WSE_HISTORY_MEMORY")]
    pub history_memory: Option<usize>,
    /// Publisher-given message ids remembered for de-duplication per owner shard; 0 is off
    /// [default: 50000].
    #[arg(long, env = "WSE_DEDUP_WINDOW")]
    pub dedup_window: Option<usize>,
    /// Seconds a message id stays in the de-duplication window [default: 300].
    #[arg(long, env = "WSE_DEDUP_WINDOW_AGE")]
    pub dedup_window_age: Option<f64>,

    /// HS256 secret (at least 32 bytes); turns JWT validation on. Prefer the env variable.
    #[arg(long, env = "WSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret, or the PEM public key for RS256/ES256.
    #[arg(long, env = "WSE_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// The previous secret, still accepted while secrets rotate.
    #[arg(long, env = "WSE_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,
    /// File with the previous secret or PEM public key.
    #[arg(long, env = "WSE_JWT_PREVIOUS_KEY_FILE")]
    pub jwt_previous_key_file: Option<PathBuf>,
    /// JWT algorithm: HS256, RS256 or ES256; tokens' own alg is never trusted [default: HS256].
    #[arg(long, env = "WSE_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// Required exact `iss` claim.
    #[arg(long, env = "WSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; without it tokens carrying `aud` are refused.
    #[arg(long, env = "WSE_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Option<Vec<String>>,
    /// Required `kid` header of tokens.
    #[arg(long, env = "WSE_JWT_KEY_ID")]
    pub jwt_key_id: Option<String>,
    /// Cookie carrying the token [default: access_token].
    #[arg(long, env = "WSE_JWT_COOKIE_NAME")]
    pub jwt_cookie_name: Option<String>,
    /// Also read the token from the `token` query parameter (off: URLs end up in logs).
    #[arg(long, env = "WSE_JWT_QUERY_TOKEN")]
    pub jwt_query_token: bool,
    /// Clients without a valid token: `close` (error message, then 4401) or `reject` (401).
    #[arg(long, env = "WSE_AUTH_FAILURE_MODE", value_enum)]
    pub auth_failure_mode: Option<AuthFailureMode>,
    /// Close connections with 4403 when their token's `exp` passes.
    #[arg(long, env = "WSE_CLOSE_ON_TOKEN_EXPIRY")]
    pub close_on_token_expiry: bool,
    /// Allowed Origin values, comma-separated; others get HTTP 403 [default: any origin].
    #[arg(long, env = "WSE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Refuse end-to-end encryption requests (`client_hello` with encryption).
    #[arg(long, env = "WSE_DISABLE_ENCRYPTION")]
    pub disable_encryption: bool,
    /// Shared HMAC-SHA256 secret for message signing on connections without E2E.
    #[arg(long, env = "WSE_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Outbound message types to sign, comma-separated (`*` for all).
    #[arg(long, env = "WSE_SIGN_OUTBOUND", value_delimiter = ',')]
    pub sign_outbound: Option<Vec<String>>,
    /// Refuse inbound JSON messages without a valid `sig` (error BAD_SIGNATURE).
    #[arg(long, env = "WSE_REQUIRE_SIGNED_INBOUND")]
    pub require_signed_inbound: bool,
    /// Inbound messages a connection may burst [default: 100000].
    #[arg(long, env = "WSE_RATE_LIMIT_CAPACITY")]
    pub rate_limit_capacity: Option<u64>,
    /// Inbound messages per second refilled [default: 10000].
    #[arg(long, env = "WSE_RATE_LIMIT_REFILL")]
    pub rate_limit_refill: Option<f64>,
    /// Seconds a connection may stay over its limit before close 4429 [default: 10].
    #[arg(long, env = "WSE_RATE_LIMIT_CLOSE_AFTER")]
    pub rate_limit_close_after: Option<f64>,
    /// Data events waiting per shard for the application; then reading stops [default: 65536].
    #[arg(long, env = "WSE_MAX_INBOUND_QUEUE_SIZE")]
    pub max_inbound_queue_size: Option<usize>,
    /// Bytes of data events waiting per shard for the application [default: 67108864].
    #[arg(long, env = "WSE_MAX_INBOUND_QUEUE_BYTES")]
    pub max_inbound_queue_bytes: Option<usize>,
    /// Application calls waiting per shard before callers wait [default: 65536].
    #[arg(long, env = "WSE_CONTROL_CAPACITY")]
    pub control_capacity: Option<usize>,
    /// Seconds an application call waits for a full shard before it fails [default: 1].
    #[arg(long, env = "WSE_PUBLISH_TIMEOUT")]
    pub publish_timeout: Option<f64>,
    /// Seconds publications stay held after a sync_request without snapshot_complete
    /// [default: 5].
    #[arg(long, env = "WSE_SNAPSHOT_TIMEOUT")]
    pub snapshot_timeout: Option<f64>,
    /// Bytes of request headers and query kept per connection for the application
    /// [default: 4096].
    #[arg(long, env = "WSE_MAX_CONNECTION_INFO_BYTES")]
    pub max_connection_info_bytes: Option<usize>,
    /// Keep presence per topic and announce presence_join, presence_leave and
    /// presence_update to its subscribers.
    #[arg(long, env = "WSE_PRESENCE")]
    pub presence: bool,
    /// Largest presence data of one connection, bytes of JSON [default: 4096].
    #[arg(long, env = "WSE_PRESENCE_MAX_DATA_SIZE")]
    pub presence_max_data_size: Option<usize>,
    /// Most members listed per topic; 0 is no limit [default: 0].
    #[arg(long, env = "WSE_PRESENCE_MAX_MEMBERS")]
    pub presence_max_members: Option<usize>,
    /// Redis URL for scale-out (`redis://[:password@]host:port/db`): publications reach every
    /// instance on the same Redis. Without it the server uses no Redis at all.
    #[arg(long, env = "WSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of the Redis channels and keys [default: wse].
    #[arg(long, env = "WSE_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Topics (globs, comma-separated) whose publications travel between instances
    /// [default: *].
    #[arg(long, env = "WSE_REDIS_TOPICS", value_delimiter = ',')]
    pub redis_topics: Option<Vec<String>>,
    /// Seconds a Redis call may take (connect or answer) [default: 1].
    #[arg(long, env = "WSE_REDIS_TIMEOUT")]
    pub redis_timeout: Option<f64>,
    /// Failed Redis calls within the breaker window that open the breaker [default: 10].
    #[arg(long, env = "WSE_REDIS_BREAKER_THRESHOLD")]
    pub redis_breaker_threshold: Option<u32>,
    /// Seconds back that failed Redis calls count [default: 60].
    #[arg(long, env = "WSE_REDIS_BREAKER_WINDOW")]
    pub redis_breaker_window: Option<f64>,
    /// Seconds the breaker stays open before it probes Redis [default: 60].
    #[arg(long, env = "WSE_REDIS_BREAKER_RESET")]
    pub redis_breaker_reset: Option<f64>,
    /// Dead letters kept in memory while Redis is unreachable [default: 10000].
    #[arg(long, env = "WSE_REDIS_DLQ_BUFFER")]
    pub redis_dlq_buffer: Option<usize>,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, env = "WSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Compress messages whose JSON is longer than this many bytes [default: 1024].
    #[arg(long, env = "WSE_COMPRESSION_THRESHOLD")]
    pub compression_threshold: Option<usize>,
    /// zlib compression level, 1 (fastest) to 9 (smallest) [default: 1].
    #[arg(long, env = "WSE_COMPRESSION_LEVEL")]
    pub compression_level: Option<u8>,
    /// Never send `C:` frames (permessage-deflate still compresses where negotiated).
    #[arg(long, env = "WSE_DISABLE_COMPRESSION")]
    pub disable_compression: bool,
    /// Decline permessage-deflate offers (RFC 7692); connections then get `C:` frames.
    #[arg(long, env = "WSE_DISABLE_PERMESSAGE_DEFLATE")]
    pub disable_permessage_deflate: bool,
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
            recovery: self.recovery,
            history_size: self.history_size,
            history_topic_bytes: self.history_topic_bytes,
            history_ttl: self.history_ttl,
            history_max_replay: self.history_max_replay,
            history_memory: self.history_memory,
            dedup_window: self.dedup_window,
            dedup_window_age: self.dedup_window_age,
            jwt_secret: self.jwt_secret.clone(),
            jwt_key_file: self.jwt_key_file.clone(),
            jwt_previous_secret: self.jwt_previous_secret.clone(),
            jwt_previous_key_file: self.jwt_previous_key_file.clone(),
            jwt_algorithm: self.jwt_algorithm.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            jwt_key_id: self.jwt_key_id.clone(),
            jwt_cookie_name: self.jwt_cookie_name.clone(),
            jwt_query_token: self.jwt_query_token.then_some(true),
            auth_failure_mode: self.auth_failure_mode,
            close_on_token_expiry: self.close_on_token_expiry.then_some(true),
            allowed_origins: self.allowed_origins.clone(),
            encryption: self.disable_encryption.then_some(false),
            signing_secret: self.signing_secret.clone(),
            sign_outbound: self.sign_outbound.clone(),
            require_signed_inbound: self.require_signed_inbound.then_some(true),
            rate_limit_capacity: self.rate_limit_capacity,
            rate_limit_refill: self.rate_limit_refill,
            rate_limit_close_after: self.rate_limit_close_after,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            compression_threshold: self.compression_threshold,
            compression_level: self.compression_level,
            compression: self.disable_compression.then_some(false),
            permessage_deflate: self.disable_permessage_deflate.then_some(false),
            max_inbound_queue_size: self.max_inbound_queue_size,
            max_inbound_queue_bytes: self.max_inbound_queue_bytes,
            control_capacity: self.control_capacity,
            publish_timeout: self.publish_timeout,
            snapshot_timeout: self.snapshot_timeout,
            max_connection_info_bytes: self.max_connection_info_bytes,
            presence: self.presence.then_some(true),
            presence_max_data_size: self.presence_max_data_size,
            presence_max_members: self.presence_max_members,
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            redis_topics: self.redis_topics.clone(),
            redis_timeout: self.redis_timeout,
            redis_breaker_threshold: self.redis_breaker_threshold,
            redis_breaker_window: self.redis_breaker_window,
            redis_breaker_reset: self.redis_breaker_reset,
            redis_dlq_buffer: self.redis_dlq_buffer,
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
    recovery: Option<bool>,
    history_size: Option<usize>,
    history_topic_bytes: Option<usize>,
    history_ttl: Option<f64>,
    history_max_replay: Option<usize>,
    history_memory: Option<usize>,
    dedup_window: Option<usize>,
    dedup_window_age: Option<f64>,
    jwt_secret: Option<String>,
    jwt_key_file: Option<PathBuf>,
    jwt_previous_secret: Option<String>,
    jwt_previous_key_file: Option<PathBuf>,
    jwt_algorithm: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<Vec<String>>,
    jwt_key_id: Option<String>,
    jwt_cookie_name: Option<String>,
    jwt_query_token: Option<bool>,
    auth_failure_mode: Option<AuthFailureMode>,
    close_on_token_expiry: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    encryption: Option<bool>,
    signing_secret: Option<String>,
    sign_outbound: Option<Vec<String>>,
    require_signed_inbound: Option<bool>,
    rate_limit_capacity: Option<u64>,
    rate_limit_refill: Option<f64>,
    rate_limit_close_after: Option<f64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    compression_threshold: Option<usize>,
    compression_level: Option<u8>,
    compression: Option<bool>,
    permessage_deflate: Option<bool>,
    max_inbound_queue_size: Option<usize>,
    max_inbound_queue_bytes: Option<usize>,
    control_capacity: Option<usize>,
    publish_timeout: Option<f64>,
    snapshot_timeout: Option<f64>,
    max_connection_info_bytes: Option<usize>,
    presence: Option<bool>,
    presence_max_data_size: Option<usize>,
    presence_max_members: Option<usize>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    redis_topics: Option<Vec<String>>,
    redis_timeout: Option<f64>,
    redis_breaker_threshold: Option<u32>,
    redis_breaker_window: Option<f64>,
    redis_breaker_reset: Option<f64>,
    redis_dlq_buffer: Option<usize>,
}

impl Overrides {
    fn load(path: &PathBuf) -> Result<Overrides, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn apply_to(mut self, mut c: Config) -> Result<Config, Error> {
        set(&mut c.host, self.host);
        set(&mut c.port, self.port);
        set(&mut c.path, self.path.take());
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
        set(&mut c.max_inbound_queue_size, self.max_inbound_queue_size);
        set(&mut c.max_inbound_queue_bytes, self.max_inbound_queue_bytes);
        set(&mut c.control_capacity, self.control_capacity);
        set(&mut c.max_connection_info_bytes, self.max_connection_info_bytes);
        set(&mut c.presence.enabled, self.presence);
        set(&mut c.presence.max_data_size, self.presence_max_data_size);
        set(&mut c.presence.max_members, self.presence_max_members);
        set_secs(&mut c.publish_timeout, self.publish_timeout, "publish_timeout")?;
        set_secs(&mut c.snapshot_timeout, self.snapshot_timeout, "snapshot_timeout")?;
        set_secs(&mut c.handshake_timeout, self.handshake_timeout, "handshake_timeout")?;
        set_secs(&mut c.ping_interval, self.ping_interval, "ping_interval")?;
        set_secs(&mut c.idle_timeout, self.idle_timeout, "idle_timeout")?;
        set_secs(&mut c.close_timeout, self.close_timeout, "close_timeout")?;
        set_cores(&mut c.cores, self.cores.take(), self.shards)?;
        self.apply_history(&mut c)?;
        self.apply_redis(&mut c)?;
        self.apply_security(&mut c.security)?;
        set(&mut c.compression.threshold, self.compression_threshold);
        set(&mut c.compression.level, self.compression_level);
        set(&mut c.compression.c_frames, self.compression);
        set(&mut c.compression.permessage_deflate, self.permessage_deflate);
        c.tls = match (self.tls_cert, self.tls_key, c.tls.take()) {
            (Some(cert), Some(key), _) => Some(TlsFiles { cert, key }),
            (None, None, previous) => previous,
            _ => return Err(Error::Config("tls_cert and tls_key go together".into())),
        };
        Ok(c)
    }

    fn apply_history(&mut self, c: &mut Config) -> Result<(), Error> {
        let h = &mut c.history;
        set(&mut h.enabled, self.recovery);
        set(&mut h.messages_per_topic, self.history_size);
        set(&mut h.bytes_per_topic, self.history_topic_bytes);
        set(&mut h.max_replay, self.history_max_replay);
        set(&mut h.memory_budget, self.history_memory);
        set_secs(&mut h.ttl, self.history_ttl, "history_ttl")?;
        set(&mut c.dedup_window, self.dedup_window);
        set_secs(&mut c.dedup_window_age, self.dedup_window_age, "dedup_window_age")
    }

    fn apply_redis(&mut self, c: &mut Config) -> Result<(), Error> {
        if let Some(url) = self.redis_url.take() {
            c.redis_url = Some(RedisUrl(url));
        }
        let r = &mut c.redis;
        set(&mut r.prefix, self.redis_prefix.take());
        set(&mut r.topics, self.redis_topics.take());
        set(&mut r.breaker_threshold, self.redis_breaker_threshold);
        set(&mut r.dlq_buffer, self.redis_dlq_buffer);
        set_secs(&mut r.timeout, self.redis_timeout, "redis_timeout")?;
        set_secs(&mut r.breaker_window, self.redis_breaker_window, "redis_breaker_window")?;
        set_secs(&mut r.breaker_reset, self.redis_breaker_reset, "redis_breaker_reset")
    }

    fn apply_security(&mut self, s: &mut Security) -> Result<(), Error> {
        set(&mut s.cookie_name, self.jwt_cookie_name.take());
        set(&mut s.query_token, self.jwt_query_token);
        set(&mut s.failure_mode, self.auth_failure_mode);
        set(&mut s.close_on_token_expiry, self.close_on_token_expiry);
        set(&mut s.allowed_origins, self.allowed_origins.take());
        set(&mut s.encryption, self.encryption);
        set(&mut s.sign_outbound, self.sign_outbound.take());
        set(&mut s.require_signed_inbound, self.require_signed_inbound);
        set(&mut s.rate_limit_capacity, self.rate_limit_capacity);
        set(&mut s.rate_limit_refill, self.rate_limit_refill);
        set_secs(
            &mut s.rate_limit_close_after,
            self.rate_limit_close_after,
            "rate_limit_close_after",
        )?;
        if let Some(secret) = self.signing_secret.take() {
            s.signing_secret = Some(Secret(secret.into_bytes()));
        }
        self.apply_jwt(&mut s.jwt)
    }

    /// JWT settings: a key (secret or file) turns validation on; the other keys refine it.
    fn apply_jwt(&mut self, slot: &mut Option<JwtSettings>) -> Result<(), Error> {
        let key = key_from(self.jwt_secret.take(), self.jwt_key_file.take(), "jwt")?;
        let previous = key_from(
            self.jwt_previous_secret.take(),
            self.jwt_previous_key_file.take(),
            "previous",
        )?;
        if let Some(key) = key {
            *slot = Some(JwtSettings {
                algorithm: "HS256".to_owned(),
                key,
                previous_key: None,
                issuer: None,
                audience: Vec::new(),
                key_id: None,
            });
        }
        let refines =
            previous.is_some() || self.jwt_algorithm.is_some() || self.jwt_issuer.is_some();
        let Some(jwt) = slot.as_mut() else {
            if refines || self.jwt_audience.is_some() || self.jwt_key_id.is_some() {
                return Err(Error::Config(
                    "JWT settings given without jwt_secret or jwt_key_file".into(),
                ));
            }
            return Ok(());
        };
        set(&mut jwt.previous_key, previous.map(Some));
        set(&mut jwt.algorithm, self.jwt_algorithm.take().map(|a| a.to_ascii_uppercase()));
        set(&mut jwt.issuer, self.jwt_issuer.take().map(Some));
        set(&mut jwt.audience, self.jwt_audience.take());
        set(&mut jwt.key_id, self.jwt_key_id.take().map(Some));
        Ok(())
    }
}

/// A key given inline or as a file; both at once is an error.
fn key_from(
    inline: Option<String>,
    file: Option<PathBuf>,
    name: &str,
) -> Result<Option<Secret>, Error> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            Err(Error::Config(format!("give the {name} key inline or as a file, not both")))
        }
        (Some(text), None) => Ok(Some(Secret(text.into_bytes()))),
        (None, Some(path)) => std::fs::read(&path)
            .map(|bytes| Some(Secret(trim_newline(bytes))))
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

/// Drops one trailing newline, which editors add to secret files.
fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    bytes
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Converts a positive, finite number of seconds, at most a year, into a [`Duration`].
pub fn seconds(value: f64, name: &str) -> Result<Duration, Error> {
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        return Err(Error::Config(format!(
            "{name} must be a number of seconds above 0 and at most {MAX_SECONDS} (a year)"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// An absolute URL path a request line can carry: `/` then visible ASCII, so no spaces,
/// control characters or non-ASCII text that no client would send unescaped.
fn is_url_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// A cookie name: an RFC 6265 `token` (RFC 2616 §2.2), visible ASCII without separators.
fn is_cookie_name(name: &str) -> bool {
    let separator = |b: u8| b"()<>@,;:\\\"/[]?={}".contains(&b);
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !separator(b))
}

/// An origin as browsers send it (RFC 6454): `scheme://host[:port]`, nothing after.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    if !scheme.starts_with(|c: char| c.is_ascii_alphabetic()) || !scheme.chars().all(scheme_char) {
        return false;
    }
    // The port is what follows the last ':' outside an IPv6 literal's brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_char = |c: char| c.is_ascii_alphanumeric() || "-._[]:".contains(c);
    let host_ok = !host.is_empty() && host.chars().all(host_char);
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
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
        (None, Some(n)) if n == 0 || n > MAX_SHARDS => {
            Err(Error::Config(format!("shards must be 1 to {MAX_SHARDS}")))
        }
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

/// The most shards one server runs (`shards`, or entries of `cores`).
pub const MAX_SHARDS: usize = 1024;
/// The shortest `signing_secret`, as for an HS256 JWT secret: 256 bits.
pub const MIN_SIGNING_SECRET_BYTES: usize = 32;
/// The longest time setting, in seconds: a year.
pub const MAX_SECONDS: f64 = 86_400.0 * 365.0;

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
    fn rejects_paths_a_request_line_cannot_carry() {
        assert!(cli(&["--path", "/ws/v1-a_b.c~"]).is_ok());
        for path in ["/a b", "/\0", "/tab\there", "/caf\u{e9}", ""] {
            let error = cli(&["--path", path]).expect_err(path).to_string();
            assert!(error.contains("path must start with '/' and be visible ASCII"), "{error}");
        }
    }

    #[test]
    fn rejects_cookie_names_that_are_not_rfc_6265_tokens() {
        assert!(cli(&["--jwt-cookie-name", "__Host-session_1"]).is_ok());
        for name in ["", "a\0", "a b", "a;b", "a=b", "a,b", "(a)", "a\"b", "caf\u{e9}"] {
            let error = cli(&["--jwt-cookie-name", name]).expect_err(name).to_string();
            assert!(error.contains("jwt_cookie_name must be a cookie name"), "{error}");
        }
    }

    #[test]
    fn rejects_signing_secrets_shorter_than_32_bytes() {
        assert!(cli(&["--signing-secret", &"s".repeat(32)]).is_ok());
        for secret in ["", "short", &"s".repeat(31)] {
            let error = cli(&["--signing-secret", secret]).expect_err(secret).to_string();
            let want = format!("signing_secret is {} bytes; at least 32", secret.len());
            assert!(error.contains(&want), "{error}");
        }
    }

    #[test]
    fn rejects_allowed_origins_that_are_not_origins() {
        let good = "https://app.example,http://localhost:8080,http://[::1]:3000,http://10.0.0.1";
        assert_eq!(
            cli(&["--allowed-origins", good]).expect("valid").security.allowed_origins.len(),
            4
        );
        let bad = [
            "",
            "not a url",
            "app.example",
            "https://",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example:99999",
            "https://a b.example",
            "1http://app.example",
        ];
        for origin in bad {
            let c = Config {
                security: Security { allowed_origins: vec![origin.into()], ..Security::default() },
                ..Config::default()
            };
            let error = c.validate().expect_err(origin).to_string();
            assert!(error.contains("is not an origin: scheme://host[:port]"), "{error}");
        }
    }

    #[test]
    fn times_name_their_bounds() {
        let error = seconds(1e300, "drain timeout").expect_err("over a year").to_string();
        assert!(error.contains("above 0 and at most 31536000 (a year)"), "{error}");
        assert!(seconds(31_536_000.0, "t").is_ok());
        let error = cli(&["--shards", "2000"]).expect_err("too many").to_string();
        assert!(error.contains("shards must be 1 to 1024"), "{error}");
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

    #[test]
    fn jwt_settings_come_from_flags_and_secrets_stay_out_of_debug() {
        let secret = "s".repeat(40);
        let c = cli(&["--jwt-secret", &secret, "--jwt-audience", "a,b", "--jwt-issuer", "me"])
            .expect("valid");
        let jwt = c.security.jwt.as_ref().expect("jwt on");
        assert_eq!(jwt.algorithm, "HS256");
        assert_eq!(jwt.audience, ["a", "b"]);
        assert_eq!(jwt.issuer.as_deref(), Some("me"));
        assert!(!format!("{c:?}").contains(&secret));
    }

    #[test]
    fn jwt_refinements_without_a_key_are_refused() {
        assert!(cli(&["--jwt-issuer", "me"]).is_err());
        assert!(cli(&["--tls-cert", "a.pem"]).is_err());
        assert!(cli(&["--require-signed-inbound"]).is_err());
    }

    #[test]
    fn history_and_dedup_defaults_follow_the_protocol_table_and_flags_set_them() {
        let c = cli(&[]).expect("defaults are valid");
        let h = c.history;
        assert!(h.enabled);
        assert_eq!((h.messages_per_topic, h.max_replay), (128, 500));
        assert_eq!((h.ttl, h.memory_budget), (Duration::from_secs(300), 256 << 20));
        assert_eq!((c.dedup_window, c.dedup_window_age), (50_000, Duration::from_secs(300)));
        let c = cli(&["--recovery", "off", "--history-size", "7", "--history-ttl", "1.5"])
            .expect("valid");
        assert!(!c.history.enabled);
        assert_eq!(c.history.messages_per_topic, 7);
        assert_eq!(c.history.ttl, Duration::from_millis(1500));
        assert!(cli(&["--history-size", "0"]).is_err());
        assert!(cli(&["--dedup-window-age", "0"]).is_err());
        assert!(cli(&["--recovery", "on"]).expect("valid").history.enabled);
    }

    #[test]
    fn application_settings_follow_the_protocol_table_and_are_checked() {
        let c = cli(&[]).expect("defaults are valid");
        assert_eq!(c.max_inbound_queue_size, 65_536);
        assert_eq!(c.publish_timeout, Duration::from_secs(1));
        assert_eq!(c.snapshot_timeout, Duration::from_secs(5));
        assert!(!c.app_events && !c.require_accept);
        let c = cli(&["--snapshot-timeout", "0.25", "--max-inbound-queue-size", "8"]).expect("ok");
        assert_eq!((c.snapshot_timeout, c.max_inbound_queue_size), (Duration::from_millis(250), 8));
        assert!(cli(&["--publish-timeout", "0"]).is_err());
        assert!(cli(&["--max-inbound-queue-size", "0"]).is_err());
        assert!(cli(&["--max-inbound-queue-bytes", "1000"]).is_err(), "below max_message_size");
        assert!(!c.presence.enabled);
        assert_eq!((c.presence.max_data_size, c.presence.max_members), (4096, 0));
        let c = cli(&["--presence", "--presence-max-members", "3"]).expect("ok");
        assert!(c.presence.enabled && c.presence.max_members == 3);
        assert!(cli(&["--presence-max-data-size", "0"]).is_err());
        let lonely = Config { require_accept: true, ..Config::default() };
        assert!(lonely.validate().is_err(), "require_accept without an application");
    }

    #[test]
    fn redis_is_off_by_default_and_flags_set_it() {
        let c = cli(&[]).expect("defaults are valid");
        assert!(c.redis_url.is_none() && c.bridge_config().is_none());
        assert_eq!(c.redis, RedisSettings::default());
        assert_eq!(c.redis.breaker_threshold, 10);
        assert_eq!(c.redis.breaker_reset, Duration::from_secs(60));
        let c = cli(&[
            "--redis-url",
            "redis://:hunter2@127.0.0.1:6390/2",
            "--redis-topics",
            "chat.*,news",
            "--redis-breaker-threshold",
            "3",
            "--redis-breaker-reset",
            "0.5",
            "--history-ttl",
            "30",
        ])
        .expect("valid");
        let bridge = c.bridge_config().expect("redis on");
        assert_eq!(bridge.topics, ["chat.*", "news"]);
        assert_eq!(bridge.breaker.threshold, 3);
        assert_eq!(bridge.breaker.reset, Duration::from_millis(500));
        assert_eq!(bridge.history_ttl, Duration::from_secs(30));
        assert!(!format!("{c:?}").contains("hunter2"), "the password stays out of Debug");
        assert!(cli(&["--redis-url", "http://nope"]).is_err());
        assert!(cli(&["--redis-url", "redis://h", "--redis-topics", "bad topic"]).is_err());
        assert!(cli(&["--redis-url", "redis://h", "--redis-prefix", "a*"]).is_err());
        assert!(cli(&["--redis-url", "redis://h", "--redis-breaker-threshold", "0"]).is_err());
        assert!(cli(&["--redis-timeout", "0"]).is_err());
    }

    #[test]
    fn security_defaults_follow_the_protocol_table() {
        let c = cli(&[]).expect("defaults are valid");
        assert!(c.security.jwt.is_none());
        assert_eq!(c.security.cookie_name, "access_token");
        assert_eq!(c.security.failure_mode, AuthFailureMode::Close);
        assert_eq!(c.security.rate_limit_capacity, 100_000);
        assert!(c.security.encryption);
        assert!(c.tls.is_none());
    }

    #[test]
    fn compression_defaults_follow_the_protocol_table_and_flags_override() {
        let c = cli(&[]).expect("defaults are valid");
        assert_eq!(c.compression, Compression::default());
        assert_eq!((c.compression.threshold, c.compression.level), (1024, 1));
        assert!(c.compression.c_frames && c.compression.permessage_deflate);
        let c = cli(&[
            "--compression-threshold",
            "0",
            "--compression-level",
            "9",
            "--disable-compression",
            "--disable-permessage-deflate",
        ])
        .expect("valid");
        let want =
            Compression { threshold: 0, level: 9, c_frames: false, permessage_deflate: false };
        assert_eq!(c.compression, want);
        assert!(cli(&["--compression-level", "0"]).is_err());
        assert!(cli(&["--compression-level", "10"]).is_err());
    }
}
