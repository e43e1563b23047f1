//! The Redis bridge: publications between instances of the engine (scale-out).
//!
//! Place: `owner shard → **bridge** → Redis → **bridge** (every instance) → owner shard →
//! every shard`. Two plain threads per instance, never a shard:
//!
//! - the **publisher** takes the publications this instance's owner shards hand it, numbers
//!   them ([`pending`]), and sends up to [`BATCH`] at a time to Redis in one pipelined round
//!   trip, each through the ordering script ([`wire::PUBLISH_SCRIPT`]), retrying a failed
//!   round trip [`RETRIES`] times on a fresh connection. It also writes dead letters, sends
//!   direct messages to other instances, and serves the dead-letter calls;
//! - the **subscriber** holds one `PSUBSCRIBE` on the channel patterns of the topics that
//!   travel (and a `SUBSCRIBE` on this instance's direct channel) and hands every
//!   publication, stamped by Redis, to the topic's owner shard over a bounded channel: the
//!   same owner, the same encode-once path and the same FIFO rings as a local publication.
//!
//! **Order.** Redis stamps every travelling publication (epoch and offset per topic, see
//! [`wire`]), and every instance, the one it came from included, delivers it when it comes
//! back from the subscription: one order for everybody, so the `(epoch, offset)` stamps and
//! the histories kept for recovery are the same on every instance, and a client can recover
//! on another instance than the one it lost. The cost is latency: a subscriber on the
//! publishing instance gets a publication one Redis round trip later than without Redis
//! (two thread hops and the script). The instance id and number in each message tell an
//! instance its own publications apart, so that one it already delivered locally (after a
//! timeout or failure) is dropped when it comes back: nothing is delivered twice.
//!
//! **Failure.** Local delivery never waits on an unreachable Redis. The bridge keeps a
//! circuit breaker ([`breaker`]) and reconnects with exponential backoff and jitter
//! ([`backoff`]). While it is not [`BridgeHandle::accepting`] (a connection down, or the
//! breaker open), owner shards stamp publications themselves, under a new local epoch that
//! clients see as an epoch change, and hand the bridge a dead letter for each. A publication
//! already given to the bridge when Redis fails comes back to its owner as a fallback (in
//! order: a topic with publications inside the bridge keeps routing through it until they
//! are resolved). Dead letters wait in a bounded local buffer and are written to Redis lists
//! (`P:dlq:TOPIC`, 7-day TTL, at most 1,000 per topic) once Redis answers again; the
//! application lists them and replays them one by one.
//!
//! Left to others: the shards' use of the stamps (`wse_shard`), what a direct message looks
//! like on the wire to the client (the target shard builds it like any `send_event`).

pub mod backoff;
pub mod breaker;
pub mod pending;
mod publisher;
mod subscriber;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wse_protocol::envelope::Priority;

pub use breaker::{BreakerSettings, BreakerState};
pub use wire::{DeadLetter, Direct};

use crate::glob::glob_match;
use crate::ids::ConnId;
use crate::owner::owner_shard;
use crate::Error;
use breaker::Breaker;
use pending::Pending;

/// A publication that travels between instances: what it says, without its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Exact topic name, already validated.
    pub topic: Arc<str>,
    /// Event type `t`; the topic name when absent.
    pub event_type: Option<Box<str>>,
    /// The payload `p`, JSON text.
    pub data: Box<str>,
    /// Priority of the publication.
    pub pri: Priority,
    /// Its message id, the same on every instance (clients de-duplicate by it).
    pub id: Box<str>,
    /// When it was published, milliseconds since the Unix epoch (its `ts` everywhere).
    pub ts_ms: u64,
}

/// What the bridge hands a shard.
#[derive(Debug, Clone)]
pub enum FromBridge {
    /// A publication Redis stamped, to encode and fan out with that stamp. `own` when it
    /// was published on this instance (its owner counts it resolved).
    Deliver {
        /// The publication.
        message: Arc<Outgoing>,
        /// The topic's epoch.
        epoch: u32,
        /// Its offset.
        offset: u64,
        /// Whether this instance published it.
        own: bool,
    },
    /// A publication of this instance that did not come back through Redis: stamp it
    /// locally (a new local epoch) and fan it out; its owner counts it resolved.
    Fallback(Arc<Outgoing>),
    /// A direct message from another instance for one of this instance's connections.
    Direct(Direct),
}

/// Settings of the bridge. [`BridgeConfig::new`] fills in PROTOCOL.md §10.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `redis://[user:password@]host[:port][/db]` or `unix:///path/redis.sock`. TLS
    /// (`rediss://`) is not built in: such a URL is refused by [`BridgeConfig::validate`].
    pub url: String,
    /// Prefix of every channel and key, so that several deployments can share one Redis.
    pub prefix: String,
    /// Globs of the topics that travel between instances; others stay on their instance.
    pub topics: Vec<String>,
    /// This instance's id, unique among the instances (a UUIDv7 per process start).
    pub instance: String,
    /// Connect and response timeout of every Redis call. A publication that has not come
    /// back from the subscription within [`ECHO_TIMEOUTS`] times this is delivered locally.
    pub timeout: Duration,
    /// When the breaker opens and for how long.
    pub breaker: BreakerSettings,
    /// Dead letters kept locally while Redis is unreachable; past it the oldest are
    /// dropped (counted).
    pub dlq_buffer: usize,
    /// Idle time after which a topic's sequence in Redis expires and its next publication
    /// opens a new epoch: the history TTL, so that every instance agrees.
    pub history_ttl: Duration,
    /// Capacity of the channel from the shards and the application to the bridge.
    pub queue: usize,
}

impl BridgeConfig {
    /// Settings for `url` with the defaults: prefix `wse`, every topic travels, a fresh
    /// instance id, 1 s timeout, the breaker of PROTOCOL.md §10, 10,000 dead letters
    /// buffered, 300 s history TTL.
    pub fn new(url: &str) -> BridgeConfig {
        BridgeConfig {
            url: url.to_owned(),
            prefix: "wse".to_owned(),
            topics: vec!["*".to_owned()],
            instance: uuid::Uuid::now_v7().to_string(),
            timeout: Duration::from_secs(1),
            breaker: BreakerSettings::default(),
            dlq_buffer: 10_000,
            history_ttl: Duration::from_secs(300),
            queue: 8192,
        }
    }

    /// Checks the settings without connecting: the URL parses, the prefix is plain, the
    /// globs are topic globs, the numbers are positive.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: String| Err(Error::BridgeConfig(message));
        check_url(&self.url).map_err(|rule| Error::BridgeConfig(format!("redis_url {rule}")))?;
        let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
        if self.prefix.is_empty() || !self.prefix.chars().all(plain) {
            return bad("redis_prefix must be letters, digits, '_', '-', '.' or ':'".into());
        }
        if self.topics.is_empty() {
            return bad("redis_topics must name at least one topic or glob".into());
        }
        for glob in &self.topics {
            if let Err(e) = wse_protocol::topic::validate_topic(glob, true) {
                return bad(format!("redis_topics: {glob:?}: {e}"));
            }
        }
        if self.instance.is_empty() || !self.instance.chars().all(plain) {
            return bad("the instance id must be letters, digits, '_', '-', '.' or ':'".into());
        }
        let zero = Duration::ZERO;
        if self.timeout == zero || self.breaker.window == zero || self.breaker.reset == zero {
            return bad("redis_timeout and the breaker's window and reset must be positive".into());
        }
        if self.breaker.threshold == 0 || self.dlq_buffer == 0 || self.queue == 0 {
            return bad("redis_breaker_threshold and redis_dlq_buffer must be positive".into());
        }
        Ok(())
    }
}

/// Counters and gauges of the bridge, read by `/metrics` (relaxed atomics; the bridge's
/// threads write them).
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Publications Redis stamped and published for this instance.
    pub published: AtomicU64,
    /// Pipelined round trips that carried them.
    pub round_trips: AtomicU64,
    /// Publications of other instances handed to the shards.
    pub received: AtomicU64,
    /// This instance's publications delivered from the subscription.
    pub echoed: AtomicU64,
    /// This instance's publications delivered locally instead (timeout, failure, lost).
    pub fallbacks: AtomicU64,
    /// Messages of this instance that came back after it delivered them locally, dropped.
    pub own_dropped: AtomicU64,
    /// Publications that could not be sent: dead letters made.
    pub dead_letters: AtomicU64,
    /// Dead letters written to Redis.
    pub dlq_written: AtomicU64,
    /// Dead letters lost: the local buffer or the channel to the bridge was full.
    pub dlq_dropped: AtomicU64,
    /// Dead letters waiting in the local buffer (gauge).
    pub dlq_buffered: AtomicU64,
    /// Dead letters replayed.
    pub replays: AtomicU64,
    /// Redis calls that failed (connects, round trips, subscriptions).
    pub failures: AtomicU64,
    /// Connections made to Redis (both threads; the first ones included).
    pub connects: AtomicU64,
    /// Times the breaker opened.
    pub breaker_opened: AtomicU64,
    /// The breaker's state (gauge, [`BreakerState::index`]).
    pub breaker_state: AtomicU64,
    /// 1 while the publisher's connection is up (gauge).
    pub publisher_connected: AtomicU64,
    /// 1 while the subscription is up (gauge).
    pub subscribed: AtomicU64,
    /// Publications waiting for their echo (gauge).
    pub pending: AtomicU64,
    /// Direct messages sent to other instances.
    pub direct_sent: AtomicU64,
    /// Direct messages from other instances handed to a shard.
    pub direct_received: AtomicU64,
    /// Direct messages not sent (Redis unreachable) or addressed to no live instance.
    pub direct_dropped: AtomicU64,
    /// Messages on our channels that could not be read, dropped.
    pub malformed: AtomicU64,
}

impl BridgeStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Reads a counter or gauge.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the bridge reports about itself (for `/health` and the application).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStatus {
    /// This instance's id.
    pub instance: String,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// Whether the publisher's connection is up.
    pub publisher_connected: bool,
    /// Whether the subscription is up.
    pub subscribed: bool,
    /// Whether publications route through Redis now.
    pub accepting: bool,
    /// Dead letters waiting in the local buffer.
    pub dlq_buffered: usize,
}

/// A running bridge: its threads and the handle to reach it.
#[derive(Debug)]
pub struct Bridge {
    handle: BridgeHandle,
    threads: Vec<JoinHandle<()>>,
}

/// The shards' and the application's way to the bridge; cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgeHandle {
    tx: flume::Sender<ToBridge>,
    shared: Arc<Shared>,
}

impl Bridge {
    /// Starts the publisher and subscriber threads. `sinks[i]` (bounded) reaches shard `i` (a
    /// topic's owner is [`owner_shard`] of it among `sinks.len()` shards); `route_direct`
    /// names the shard of a connection. Does not wait for Redis: an unreachable Redis only
    /// means the bridge is not accepting yet.
    pub fn start(
        config: BridgeConfig,
        sinks: Vec<flume::Sender<FromBridge>>,
        route_direct: fn(ConnId) -> usize,
    ) -> Result<Bridge, Error> {
        config.validate()?;
        let mut config = config;
        if config.topics.iter().any(|glob| glob == "*") {
            // Every other glob is covered, and overlapping patterns would deliver twice.
            config.topics = vec!["*".to_owned()];
        }
        if sinks.is_empty() {
            return Err(Error::BridgeConfig("the bridge needs at least one shard".into()));
        }
        let (tx, rx) = flume::bounded(config.queue);
        let state = State {
            pending: Pending::new(),
            breaker: Breaker::new(config.breaker),
            publisher_up: false,
            subscriber_up: false,
            closed_generation: 0,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            accepting: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stats: BridgeStats::default(),
            sinks,
            route_direct,
        });
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(run)
                .map_err(|e| Error::BridgeSpawn(e.to_string()))
        };
        let publisher = {
            let shared = Arc::clone(&shared);
            spawn("wse-redis-pub", Box::new(move || publisher::run(shared, rx)))?
        };
        let subscriber = {
            let mine = Arc::clone(&shared);
            match spawn("wse-redis-sub", Box::new(move || subscriber::run(mine))) {
                Ok(thread) => thread,
                Err(e) => {
                    shared.stop.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        };
        let handle = BridgeHandle { tx, shared };
        Ok(Bridge { handle, threads: vec![publisher, subscriber] })
    }

    /// The handle for shards and the application.
    pub fn handle(&self) -> &BridgeHandle {
        &self.handle
    }

    /// Stops both threads and waits for them, at most `limit`; `false` if one still ran.
    pub fn stop(mut self, limit: Duration) -> bool {
        self.handle.stop();
        let deadline = Instant::now() + limit;
        for thread in std::mem::take(&mut self.threads) {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !thread.is_finished() {
                return false;
            }
            let _ = thread.join();
        }
        true
    }
}

impl Drop for Bridge {
    /// A bridge dropped without [`Bridge::stop`] still tells its threads to end.
    fn drop(&mut self) {
        self.handle.stop();
    }
}

impl BridgeHandle {
    /// Whether publications route through Redis now: both connections up and the breaker
    /// closed. One atomic load; owner shards read it for every publication.
    pub fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire)
    }

    /// Whether publications of `topic` travel between instances.
    pub fn travels(&self, topic: &str) -> bool {
        let globs = &self.shared.config.topics;
        globs.iter().any(|glob| glob == "*" || glob_match(glob, topic))
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.shared.config.instance
    }

    /// The bridge's counters.
    pub fn stats(&self) -> &BridgeStats {
        &self.shared.stats
    }

    /// Hands a publication to the bridge, waiting (without blocking a thread) while its
    /// channel is full. Gives the message back when the bridge has stopped.
    pub async fn publish(&self, message: Arc<Outgoing>) -> Result<(), Arc<Outgoing>> {
        match self.tx.send_async(ToBridge::Publish(message)).await {
            Ok(()) => Ok(()),
            Err(flume::SendError(ToBridge::Publish(message))) => Err(message),
            Err(_) => unreachable!("the channel gives back what was sent"),
        }
    }

    /// Hands a publication to the bridge from a plain thread, waiting at most `wait` for room
    /// (`Duration::ZERO`: not at all). Gives the message back when the channel stayed full
    /// or the bridge stopped.
    pub fn publish_wait(
        &self,
        message: Arc<Outgoing>,
        wait: Duration,
    ) -> Result<(), Arc<Outgoing>> {
        let back = |e| match e {
            ToBridge::Publish(message) => message,
            _ => unreachable!("the channel gives back what was sent"),
        };
        if wait.is_zero() {
            return self.tx.try_send(ToBridge::Publish(message)).map_err(|e| back(e.into_inner()));
        }
        let sent = self.tx.send_timeout(ToBridge::Publish(message), wait);
        sent.map_err(|e| back(e.into_inner()))
    }

    /// Records a publication that was delivered locally because the bridge was not
    /// accepting. Never waits: when the channel is full the dead letter is dropped and
    /// counted.
    pub fn dead_letter(&self, message: Arc<Outgoing>) {
        BridgeStats::add(&self.shared.stats.dead_letters, 1);
        if self.tx.try_send(ToBridge::DeadLetter(message)).is_err() {
            BridgeStats::add(&self.shared.stats.dlq_dropped, 1);
        }
    }

    /// Sends a direct message to a connection of another instance, waiting at most `wait`
    /// for room. Delivery is not confirmed: a message Redis cannot take or no instance
    /// listens for is dropped and counted.
    pub fn send_direct(&self, instance: &str, direct: Direct, wait: Duration) -> Result<(), Error> {
        let message = ToBridge::Direct { instance: instance.to_owned(), direct };
        self.tx.send_timeout(message, wait).map_err(|e| match e {
            flume::SendTimeoutError::Timeout(_) => Error::BridgeTimeout,
            flume::SendTimeoutError::Disconnected(_) => Error::BridgeStopped,
        })
    }

    /// Dead letters of `topic` (every topic when `None`), at most `limit`: those in the
    /// local buffer first (`stored: false`), then those in Redis. While Redis is
    /// unreachable only the buffered ones are listed.
    pub fn dead_letters(
        &self,
        topic: Option<&str>,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<DeadLetter>, Error> {
        let topic = topic.map(str::to_owned);
        self.ask(wait, |reply| ToBridge::ListDeadLetters { topic, limit, reply })
    }

    /// Publishes dead letter `id` of `topic` again through Redis (every instance but the
    /// one it came from delivers it, under a fresh offset) and removes it from the list.
    /// `Ok(false)` when no such dead letter is stored; [`Error::RedisUnavailable`] while
    /// Redis cannot be reached.
    pub fn replay(&self, topic: &str, id: &str, wait: Duration) -> Result<bool, Error> {
        let (topic, id) = (topic.to_owned(), id.to_owned());
        self.ask(wait, |reply| ToBridge::Replay { topic, id, reply })
    }

    /// Asks both threads to stop (they end within a fraction of a second); see
    /// [`Bridge::stop`] to wait for them.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// The bridge's state as of its last change. Reads atomics only, never the bridge's
    /// lock, so that a shard answering `GET /health` cannot wait on a bridge thread.
    pub fn status(&self) -> BridgeStatus {
        let stats = &self.shared.stats;
        let on = |gauge: &AtomicU64| BridgeStats::get(gauge) == 1;
        BridgeStatus {
            instance: self.shared.config.instance.clone(),
            breaker: BreakerState::from_index(BridgeStats::get(&stats.breaker_state) as usize),
            publisher_connected: on(&stats.publisher_connected),
            subscribed: on(&stats.subscribed),
            accepting: self.accepting(),
            dlq_buffered: BridgeStats::get(&stats.dlq_buffered) as usize,
        }
    }

    /// Sends a request that the publisher answers; waits at most `wait` in all.
    fn ask<T>(
        &self,
        wait: Duration,
        request: impl FnOnce(flume::Sender<Result<T, Error>>) -> ToBridge,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + wait;
        let (reply, answer) = flume::bounded(1);
        self.tx.send_deadline(request(reply), deadline).map_err(|e| match e {
            flume::SendTimeoutError::Timeout(_) => Error::BridgeTimeout,
            flume::SendTimeoutError::Disconnected(_) => Error::BridgeStopped,
        })?;
        answer.recv_deadline(deadline).map_err(|e| match e {
            flume::RecvTimeoutError::Timeout => Error::BridgeTimeout,
            flume::RecvTimeoutError::Disconnected => Error::BridgeStopped,
        })?
    }
}

/// What the shards and the application send the publisher thread.
#[derive(Debug)]
enum ToBridge {
    Publish(Arc<Outgoing>),
    DeadLetter(Arc<Outgoing>),
    Direct {
        instance: String,
        direct: Direct,
    },
    ListDeadLetters {
        topic: Option<String>,
        limit: usize,
        reply: flume::Sender<Result<Vec<DeadLetter>, Error>>,
    },
    Replay {
        topic: String,
        id: String,
        reply: flume::Sender<Result<bool, Error>>,
    },
}

/// What both threads share.
#[derive(Debug)]
struct Shared {
    config: BridgeConfig,
    state: Mutex<State>,
    /// [`State::accepting`] as of the last change, for the shards' one load.
    accepting: AtomicBool,
    stop: AtomicBool,
    stats: BridgeStats,
    sinks: Vec<flume::Sender<FromBridge>>,
    route_direct: fn(ConnId) -> usize,
}

/// The state both threads change, under one lock. No shard ever takes it: what shards and
/// `/health` read is mirrored in atomics by [`Shared::refresh`].
#[derive(Debug)]
struct State {
    /// This instance's publications waiting for their echo.
    pending: Pending<Arc<Outgoing>>,
    breaker: Breaker,
    publisher_up: bool,
    subscriber_up: bool,
    /// Bumped whenever the breaker closes, so the subscriber retries at once.
    closed_generation: u64,
}

impl State {
    fn accepting(&self, now: Instant) -> bool {
        self.publisher_up && self.subscriber_up && self.breaker.state(now) == BreakerState::Closed
    }
}

impl Shared {
    /// Locks the state. A thread that panicked while holding it left nothing half-done
    /// that matters more than stopping the bridge, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Publishes the state to the atomics the shards and `/metrics` read.
    fn refresh(&self, state: &State, now: Instant) {
        self.accepting.store(state.accepting(now), Ordering::Release);
        let stats = &self.stats;
        BridgeStats::set(&stats.breaker_state, state.breaker.state(now).index() as u64);
        BridgeStats::set(&stats.publisher_connected, state.publisher_up.into());
        BridgeStats::set(&stats.subscribed, state.subscriber_up.into());
        BridgeStats::set(&stats.pending, state.pending.len() as u64);
    }

    /// Counts a failed Redis call in the breaker.
    fn failed(&self, state: &mut State, now: Instant) {
        BridgeStats::add(&self.stats.failures, 1);
        if state.breaker.failure(now) {
            BridgeStats::add(&self.stats.breaker_opened, 1);
            tracing::warn!(prefix = %self.config.prefix, "redis circuit breaker opened");
        }
        self.refresh(state, now);
    }

    /// Hands `message` to shard `shard`, waiting while its channel is full; gives up when
    /// the bridge stops or the shard is gone (shutdown).
    fn hand(&self, shard: usize, mut message: FromBridge) {
        let Some(sink) = self.sinks.get(shard) else { return };
        loop {
            match sink.send_timeout(message, HAND_SLICE) {
                Ok(()) => return,
                Err(flume::SendTimeoutError::Timeout(back)) if !self.stopping() => message = back,
                Err(_) => return,
            }
        }
    }

    /// The shard that owns `topic`.
    fn owner(&self, topic: &str) -> usize {
        owner_shard(topic, self.sinks.len()).0
    }

    /// Hands this instance's `messages` back to their owners for local delivery.
    fn fall_back(&self, messages: Vec<Arc<Outgoing>>) {
        BridgeStats::add(&self.stats.fallbacks, messages.len() as u64);
        for message in messages {
            let shard = self.owner(&message.topic);
            self.hand(shard, FromBridge::Fallback(message));
        }
    }

    /// The channel patterns of the travelling topics, with the first pattern that matches
    /// each topic: Redis delivers a message once per matching pattern, the subscriber keeps
    /// only the first.
    fn first_glob(&self, topic: &str) -> Option<&str> {
        let globs = &self.config.topics;
        globs.iter().map(String::as_str).find(|glob| *glob == "*" || glob_match(glob, topic))
    }
}

/// A client for `url` that makes connections without the `CLIENT SETINFO` round trip (one
/// timeout less before a hung Redis is noticed; the library name is of no use to us).
fn client(url: &str) -> redis::RedisResult<redis::Client> {
    let info = redis::Client::open(url)?.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(settings))
}

/// Whether `url` names a Redis this build can reach; the rule it breaks otherwise. The URL
/// itself stays out of the message: it may hold a password.
fn check_url(url: &str) -> Result<(), String> {
    let form = "must be redis://[[user]:password@]host[:port][/db] or unix:///path/to.sock";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(form.to_owned());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix" => {}
        "rediss" | "valkeys" => {
            return Err(format!("{scheme}:// (TLS) is not supported by this build: use redis://"));
        }
        _ => return Err(format!("{form}; the scheme {scheme:?} is not one of them")),
    }
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let tcp = !scheme.to_ascii_lowercase().ends_with("unix");
    if tcp && (host.is_empty() || host.starts_with(['/', ':'])) {
        return Err(format!("{form}; it names no host"));
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        // The crate's message reads "<what> - <kind>"; the kind adds nothing here.
        let text = e.to_string();
        let what = text.split(" - ").next().unwrap_or(&text).to_owned();
        format!("cannot be used: {what}")
    })
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A publication not back from the subscription within this many `timeout`s is delivered
/// locally. Generous, because the subscription may lag behind under load; a broken
/// connection resolves its publications at once, without waiting for this.
pub const ECHO_TIMEOUTS: u32 = 4;
/// Most publications (and direct messages) in one pipelined round trip.
pub const BATCH: usize = 64;
/// Extra attempts of a failed round trip, each on a fresh connection.
pub const RETRIES: usize = 3;
/// Dead letters kept per topic in Redis.
pub const DLQ_MAX_PER_TOPIC: usize = 1000;
/// How long dead letters live in Redis: 7 days.
pub const DLQ_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a bridge thread waits on a full shard channel before it checks for stop.
const HAND_SLICE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(BridgeConfig::new("redis://127.0.0.1:6379/0").validate().is_ok());
        assert!(BridgeConfig::new("unix:///run/redis.sock").validate().is_ok());
        for (url, rule) in [
            ("http://x", "scheme \"http\" is not one of them"),
            ("rediss://x", "rediss:// (TLS) is not supported"),
            ("not a url", "must be redis://"),
            ("redis://", "names no host"),
            ("redis://:secret@", "names no host"),
            ("redis://h/notadb", "cannot be used: Invalid database number"),
        ] {
            let error = BridgeConfig::new(url).validate().expect_err(url).to_string();
            assert!(error.contains("redis_url") && error.contains(rule), "{error}");
            assert!(!error.contains("secret"), "the URL stays out of the message: {error}");
        }
        let mut c = BridgeConfig::new("redis://h");
        c.topics = vec!["a b".into()];
        assert!(c.validate().expect_err("glob").to_string().contains("redis_topics"));
        c.topics = vec![];
        assert!(c.validate().is_err());
        let mut c = BridgeConfig::new("redis://h");
        c.prefix = "a*".into();
        assert!(c.validate().expect_err("prefix").to_string().contains("redis_prefix"));
    }

    #[test]
    fn a_star_makes_every_topic_travel_and_others_select() {
        let (tx, _rx) = flume::bounded(1);
        let mut c = BridgeConfig::new("redis://127.0.0.1:1");
        c.topics = vec!["chat.*".into(), "news".into()];
        let bridge = Bridge::start(c, vec![tx.clone()], |_| 0).expect("starts without redis");
        let handle = bridge.handle().clone();
        assert!(handle.travels("chat.a") && handle.travels("news"));
        assert!(!handle.travels("newsx") && !handle.accepting());
        assert!(bridge.stop(Duration::from_secs(2)));
        let mut c = BridgeConfig::new("redis://127.0.0.1:1");
        c.topics = vec!["x".into(), "*".into()];
        let bridge = Bridge::start(c, vec![tx], |_| 0).expect("starts");
        assert_eq!(bridge.handle().shared.config.topics, ["*"]);
        assert!(bridge.handle().travels("anything"));
        assert!(bridge.stop(Duration::from_secs(2)));
    }
}
