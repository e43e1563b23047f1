//! The subscriber thread: every instance's publications (this one's included) and this
//! instance's direct messages, from Redis to the shards.
//!
//! Place: `Redis → **subscriber** → owner shard's channel`. One connection holds a
//! `PSUBSCRIBE` on the channel patterns of the travelling topics and a `SUBSCRIBE` on the
//! instance's direct channel. Each publication is handed to its topic's owner shard with the
//! stamp Redis gave it; this instance's own publications are matched with [`super::pending`]
//! first, under the bridge's lock, so that a fallback of an earlier one reaches the owner
//! before them.
//!
//! When the subscription breaks, nothing that was in flight can come back any more: every
//! publication still pending is delivered locally at once. The thread then reconnects with
//! backoff while the breaker is closed, and waits while it is open (the publisher probes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Msg, RedisError};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::breaker::BreakerState;
use super::wire::{self, Received};
use super::{BridgeStats, FromBridge, Shared};

/// Runs the subscriber until the bridge stops.
pub(super) fn run(shared: Arc<Shared>) {
    let mut subscriber = Subscriber::new(shared);
    while !subscriber.shared.stopping() {
        let now = Instant::now();
        let (breaker, generation) = {
            let state = subscriber.shared.lock();
            (state.breaker.state(now), state.closed_generation)
        };
        if generation != subscriber.generation {
            // The breaker closed again: Redis answers, so try at once.
            subscriber.generation = generation;
            subscriber.backoff.reset();
            subscriber.next_attempt = now;
        }
        if breaker != BreakerState::Closed || now < subscriber.next_attempt {
            std::thread::sleep(IDLE_SLICE);
            continue;
        }
        subscriber.session();
    }
    debug!("redis subscriber stopped");
}

struct Subscriber {
    shared: Arc<Shared>,
    client: Option<redis::Client>,
    backoff: Backoff,
    next_attempt: Instant,
    /// The breaker's close count when last looked at.
    generation: u64,
    rng: fastrand::Rng,
    /// `P:i:INSTANCE`, where direct messages for this instance arrive.
    direct_channel: String,
    /// One Redis pattern per travelling glob, in configuration order.
    patterns: Vec<String>,
    /// Whether the last attempt failed, so that an outage is logged once.
    down: bool,
}

impl Subscriber {
    fn new(shared: Arc<Shared>) -> Subscriber {
        let config = &shared.config;
        let direct_channel = wire::instance_channel(&config.prefix, &config.instance);
        let patterns = config.topics.iter().map(|g| wire::topic_pattern(&config.prefix, g));
        let patterns = patterns.collect();
        let client = super::client(&config.url).ok();
        Subscriber {
            client,
            backoff: Backoff::standard(),
            next_attempt: Instant::now(),
            generation: 0,
            rng: fastrand::Rng::new(),
            direct_channel,
            patterns,
            down: false,
            shared,
        }
    }

    /// Subscribes and reads until the connection breaks or the bridge stops.
    fn session(&mut self) {
        let Some(client) = self.client.clone() else { return };
        let timeout = self.shared.config.timeout;
        let connected = client.get_connection_with_timeout(timeout).and_then(|conn| {
            conn.set_write_timeout(Some(timeout))?;
            Ok(conn)
        });
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => return self.failed(&e),
        };
        let mut pubsub = conn.as_pubsub();
        // A Redis that accepts but never answers must not hold the thread: the replies to
        // the subscriptions are awaited `timeout` at most, messages READ_SLICE at a time.
        let subscribed = pubsub
            .set_read_timeout(Some(timeout))
            .and_then(|()| pubsub.psubscribe(&self.patterns))
            .and_then(|()| pubsub.subscribe(&self.direct_channel))
            .and_then(|()| pubsub.set_read_timeout(Some(READ_SLICE)));
        if let Err(e) = subscribed {
            return self.failed(&e);
        }
        self.up();
        let ended = loop {
            match pubsub.get_message() {
                Ok(message) => self.handle(&message),
                Err(e) if e.is_timeout() => {
                    if self.shared.stopping() {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        self.down_after(ended);
    }

    /// The subscription is up: publications may route through Redis.
    fn up(&mut self) {
        if self.down {
            info!("redis subscription restored");
        }
        self.down = false;
        self.backoff.reset();
        BridgeStats::add(&self.shared.stats.connects, 1);
        let mut state = self.shared.lock();
        state.subscriber_up = true;
        self.shared.refresh(&state, Instant::now());
    }

    /// The subscription ended (`error`), or the bridge stops (`None`): pending publications
    /// are delivered locally now, since their echoes are gone.
    fn down_after(&mut self, error: Option<RedisError>) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.subscriber_up = false;
        let lost = state.pending.drain();
        self.shared.fall_back(lost);
        match &error {
            Some(e) => {
                warn!(error = %e, "redis subscription lost; delivering locally meanwhile");
                self.down = true;
                self.shared.failed(&mut state, now);
                self.next_attempt = now + self.backoff.next_delay(self.rng.f64());
            }
            None => self.shared.refresh(&state, now),
        }
    }

    /// A connection or subscription attempt failed.
    fn failed(&mut self, error: &RedisError) {
        if self.down {
            debug!(error = %error, "redis subscriber: still failing");
        } else {
            warn!(error = %error, "redis subscriber: cannot subscribe");
        }
        self.down = true;
        let now = Instant::now();
        self.next_attempt = now + self.backoff.next_delay(self.rng.f64());
        let mut state = self.shared.lock();
        self.shared.failed(&mut state, now);
    }

    /// One message: a publication of a travelling topic, or a direct message.
    fn handle(&self, message: &Msg) {
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        if channel == self.direct_channel {
            return self.direct(payload);
        }
        let topic = wire::topic_of(&self.shared.config.prefix, channel);
        let topic = topic.filter(|t| wse_protocol::topic::validate_topic(t, false).is_ok());
        let Some(topic) = topic else { return self.malformed(channel) };
        if self.patterns.len() > 1 && !self.first_pattern(message, topic) {
            return;
        }
        match wire::parse_publication(topic, payload) {
            Ok(received) if received.instance == self.shared.config.instance => {
                self.own(received);
            }
            Ok(received) => {
                let owner = self.shared.owner(topic);
                let Received { message, epoch, offset, .. } = received;
                let message = Arc::new(message);
                self.shared.hand(owner, FromBridge::Deliver { message, epoch, offset, own: false });
                BridgeStats::add(&self.shared.stats.received, 1);
            }
            Err(e) => {
                debug!(error = %e, "unreadable publication from redis");
                self.malformed(channel);
            }
        }
    }

    /// One of this instance's publications came back: resolved with Redis's stamp, after
    /// any earlier one that will never come back; dropped if it was delivered locally
    /// already (or is a dead letter replayed, number 0).
    fn own(&self, received: Received) {
        let stats = &self.shared.stats;
        if received.n == 0 {
            return BridgeStats::add(&stats.own_dropped, 1);
        }
        let mut state = self.shared.lock();
        let echo = state.pending.echo(received.n);
        if !echo.lost.is_empty() {
            self.shared.fall_back(echo.lost);
        }
        match echo.item {
            Some(message) => {
                let owner = self.shared.owner(&message.topic);
                let (epoch, offset) = (received.epoch, received.offset);
                self.shared.hand(owner, FromBridge::Deliver { message, epoch, offset, own: true });
                BridgeStats::add(&stats.echoed, 1);
            }
            None => BridgeStats::add(&stats.own_dropped, 1),
        }
        self.shared.refresh(&state, Instant::now());
    }

    /// A direct message for one of this instance's connections.
    fn direct(&self, payload: &[u8]) {
        match wire::parse_direct(payload) {
            Ok(direct) => {
                let shard = (self.shared.route_direct)(direct.conn);
                self.shared.hand(shard, FromBridge::Direct(direct));
                BridgeStats::add(&self.shared.stats.direct_received, 1);
            }
            Err(e) => {
                debug!(error = %e, "unreadable direct message from redis");
                BridgeStats::add(&self.shared.stats.malformed, 1);
            }
        }
    }

    /// Whether `message` came through the first of our patterns that matches `topic`:
    /// Redis sends a message once per matching pattern, and only one copy may count.
    fn first_pattern(&self, message: &Msg, topic: &str) -> bool {
        let Ok(pattern) = message.get_pattern::<String>() else { return true };
        let first = self.shared.first_glob(topic);
        first.is_some_and(|glob| wire::topic_pattern(&self.shared.config.prefix, glob) == pattern)
    }

    fn malformed(&self, channel: &str) {
        debug!(channel, "message on an unexpected redis channel");
        BridgeStats::add(&self.shared.stats.malformed, 1);
    }
}

/// How long one read waits before the thread checks whether the bridge stops.
const READ_SLICE: Duration = Duration::from_millis(200);
/// How long the thread sleeps while it may not connect.
const IDLE_SLICE: Duration = Duration::from_millis(50);
