//! The publisher thread: this instance's publications, dead letters and direct messages on
//! their way to Redis.
//!
//! Place: `owner shards, application → channel → **publisher** → Redis`. It waits on its
//! channel at most [`TICK`], takes up to [`BATCH`] messages, and sends their commands in one
//! pipelined round trip. Between round trips it keeps house: it reconnects when the backoff
//! and the breaker allow, sends the half-open probe, writes buffered dead letters to Redis,
//! and delivers locally the publications whose echo is overdue.
//!
//! A failed round trip is retried on a fresh connection up to [`RETRIES`] times, without
//! waiting, and only while a connection can be made; the publications Redis is known to
//! have run (a later one came back) are not sent again. When it gives up, every publication
//! still waiting for its echo goes back to its owner for local delivery, oldest first, and
//! those that never reached Redis become dead letters. The application's dead-letter calls
//! (list, replay) are served here too, so that one thread owns the buffer and the
//! connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError};
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::breaker::BreakerState;
use super::wire::{self, DeadLetter, Direct};
use super::{
    unix_ms, BridgeStats, Outgoing, Shared, ToBridge, BATCH, DLQ_MAX_PER_TOPIC, DLQ_TTL,
    ECHO_TIMEOUTS, RETRIES,
};
use crate::Error;

/// Runs the publisher until the bridge stops or every sender is gone.
pub(super) fn run(shared: Arc<Shared>, rx: flume::Receiver<ToBridge>) {
    let mut publisher = Publisher::new(shared);
    while !publisher.shared.stopping() {
        let mut batch = Batch::default();
        match rx.recv_timeout(TICK) {
            Ok(first) => {
                publisher.take(first, &mut batch);
                while batch.len() < BATCH {
                    let Ok(next) = rx.try_recv() else { break };
                    publisher.take(next, &mut batch);
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
        publisher.send(batch);
        publisher.keep_house();
    }
    debug!("redis publisher stopped");
}

/// What one round trip carries.
#[derive(Default)]
struct Batch {
    publications: Vec<Arc<Outgoing>>,
    directs: Vec<(String, Direct)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.publications.len() + self.directs.len()
    }
}

struct Publisher {
    shared: Arc<Shared>,
    client: Option<redis::Client>,
    conn: Option<Connection>,
    /// SHA1 of the ordering script, loaded on every new connection.
    sha: String,
    backoff: Backoff,
    /// No connection attempt before this (backoff after a failure).
    next_attempt: Instant,
    rng: fastrand::Rng,
    /// Dead letters not yet in Redis, oldest first; at most `dlq_buffer`.
    dead: VecDeque<DeadLetter>,
    /// Whether the last attempt failed, so that an outage is logged once, not per retry.
    down: bool,
}

impl Publisher {
    fn new(shared: Arc<Shared>) -> Publisher {
        // The URL was validated; `None` would only leave the bridge unconnected.
        let client = super::client(&shared.config.url).ok();
        Publisher {
            shared,
            client,
            conn: None,
            sha: String::new(),
            backoff: Backoff::standard(),
            next_attempt: Instant::now(),
            rng: fastrand::Rng::new(),
            dead: VecDeque::new(),
            down: false,
        }
    }

    /// Sorts one message into the batch, or serves it at once.
    fn take(&mut self, message: ToBridge, batch: &mut Batch) {
        match message {
            ToBridge::Publish(publication) => batch.publications.push(publication),
            ToBridge::Direct { instance, direct } => batch.directs.push((instance, direct)),
            ToBridge::DeadLetter(publication) => self.bury([publication]),
            ToBridge::ListDeadLetters { topic, limit, reply } => {
                let _ = reply.send(self.list(topic.as_deref(), limit));
            }
            ToBridge::Replay { topic, id, reply } => {
                let _ = reply.send(self.replay(&topic, &id));
            }
        }
    }

    /// Sends one batch: numbered, pipelined, retried; on failure handed back and buried.
    fn send(&mut self, batch: Batch) {
        if batch.len() == 0 {
            return;
        }
        if !self.ready(Instant::now()) {
            return self.give_up(&batch, &[]);
        }
        let numbers: Vec<u64> = {
            let mut state = self.shared.lock();
            let now = Instant::now();
            let numbers = batch.publications.iter().map(|p| state.pending.push(p.clone(), now));
            let numbers = numbers.collect();
            self.shared.refresh(&state, now);
            numbers
        };
        for attempt in 0..=RETRIES {
            let todo: Vec<(u64, &Arc<Outgoing>)> = {
                let state = self.shared.lock();
                let all = numbers.iter().copied().zip(&batch.publications);
                all.filter(|(n, _)| !state.pending.reached_redis(*n)).collect()
            };
            match self.round_trip(&todo, &batch.directs) {
                Ok(()) => return self.without_subscription(),
                Err(e) => self.lost_connection(&e),
            }
            if attempt == RETRIES || !self.connect_if_allowed() {
                break;
            }
        }
        self.give_up(&batch, &numbers);
    }

    /// One pipelined round trip: the ordering script per publication, `PUBLISH` per direct
    /// message.
    fn round_trip(
        &mut self,
        publications: &[(u64, &Arc<Outgoing>)],
        directs: &[(String, Direct)],
    ) -> Result<(), RedisError> {
        let config = &self.shared.config;
        let (prefix, instance) = (config.prefix.as_str(), config.instance.as_str());
        let ttl_ms = config.history_ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for (n, publication) in publications {
            let topic = &publication.topic;
            pipe.cmd("EVALSHA").arg(&self.sha).arg(1).arg(wire::sequence_key(prefix, topic));
            pipe.arg(format!("{:08x}", self.rng.u32(..))).arg(ttl_ms);
            pipe.arg(wire::topic_channel(prefix, topic));
            pipe.arg(wire::publication_body(instance, *n, publication));
        }
        for (target, direct) in directs {
            pipe.cmd("PUBLISH").arg(wire::instance_channel(prefix, target));
            pipe.arg(wire::direct_body(instance, direct));
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(RedisError::from((redis::ErrorKind::Io, "not connected")));
        };
        let replies: Vec<redis::Value> = pipe.query(conn)?;
        let stats = &self.shared.stats;
        BridgeStats::add(&stats.round_trips, 1);
        BridgeStats::add(&stats.published, publications.len() as u64);
        let receivers = replies.iter().skip(publications.len());
        let unheard = receivers.filter(|r| matches!(r, redis::Value::Int(0))).count() as u64;
        BridgeStats::add(&stats.direct_sent, directs.len() as u64 - unheard);
        BridgeStats::add(&stats.direct_dropped, unheard);
        Ok(())
    }

    /// Redis took the batch, but no echo can come while the subscription is down: the
    /// other instances have the publications, this one delivers them locally now.
    fn without_subscription(&mut self) {
        let mut state = self.shared.lock();
        if state.subscriber_up || state.pending.is_empty() {
            return;
        }
        let back = state.pending.drain();
        self.shared.fall_back(back);
        self.shared.refresh(&state, Instant::now());
    }

    /// Redis could not take the batch: everything still waiting for its echo goes back to
    /// its owner, oldest first (an earlier batch's publications included, so that nothing
    /// overtakes them); those of this batch that never reached Redis are buried.
    fn give_up(&mut self, batch: &Batch, numbers: &[u64]) {
        let buried: Vec<Arc<Outgoing>> = {
            let mut state = self.shared.lock();
            let mut back = state.pending.drain();
            let reached =
                |i: usize| numbers.get(i).is_some_and(|&n| state.pending.reached_redis(n));
            let buried = (0..batch.publications.len()).filter(|&i| !reached(i));
            let buried: Vec<_> = buried.map(|i| Arc::clone(&batch.publications[i])).collect();
            if numbers.is_empty() {
                // Never numbered: they go back after everything that was.
                back.extend(batch.publications.iter().cloned());
            }
            // Handed over under the lock, so that no echo of a later one can overtake.
            self.shared.fall_back(back);
            self.shared.refresh(&state, Instant::now());
            buried
        };
        BridgeStats::add(&self.shared.stats.dead_letters, buried.len() as u64);
        BridgeStats::add(&self.shared.stats.direct_dropped, batch.directs.len() as u64);
        self.bury(buried);
    }

    /// Keeps dead letters in the local buffer, dropping the oldest beyond its bound.
    fn bury(&mut self, letters: impl IntoIterator<Item = Arc<Outgoing>>) {
        let failed_ms = unix_ms();
        let stats = &self.shared.stats;
        for message in letters {
            if self.dead.len() >= self.shared.config.dlq_buffer {
                self.dead.pop_front();
                BridgeStats::add(&stats.dlq_dropped, 1);
            }
            let instance = self.shared.config.instance.clone();
            let message = Arc::unwrap_or_clone(message);
            self.dead.push_back(DeadLetter { instance, message, failed_ms, stored: false });
        }
        BridgeStats::set(&stats.dlq_buffered, self.dead.len() as u64);
    }

    /// Reconnects, probes, writes dead letters, and resolves overdue echoes.
    fn keep_house(&mut self) {
        let now = Instant::now();
        let breaker = self.shared.lock().breaker.state(now);
        match breaker {
            BreakerState::Closed if self.conn.is_none() && now >= self.next_attempt => {
                self.connect_if_allowed();
            }
            BreakerState::HalfOpen => self.probe(),
            _ => {}
        }
        if self.ready(now) && !self.dead.is_empty() {
            self.flush_dead_letters();
        }
        let mut state = self.shared.lock();
        let overdue = state.pending.expire(now, ECHO_TIMEOUTS * self.shared.config.timeout);
        if !overdue.is_empty() {
            debug!(count = overdue.len(), "redis echoes overdue; delivering locally");
            self.shared.fall_back(overdue);
        }
        self.shared.refresh(&state, now);
    }

    /// The half-open probe: a fresh connection, or a `PING` on the one we have.
    fn probe(&mut self) {
        if !self.shared.lock().breaker.allow(Instant::now()) {
            return;
        }
        if self.conn.is_none() {
            self.connect();
            return;
        }
        let answered = match self.conn.as_mut() {
            Some(conn) => redis::cmd("PING").query::<String>(conn),
            None => return,
        };
        match answered {
            Ok(_) => self.connected(),
            Err(e) => self.lost_connection(&e),
        }
    }

    /// Connects when the breaker lets a call through; `true` when connected.
    fn connect_if_allowed(&mut self) -> bool {
        if !self.shared.lock().breaker.allow(Instant::now()) {
            return false;
        }
        self.connect()
    }

    /// A new connection with its timeouts and the script loaded. Counts the outcome.
    fn connect(&mut self) -> bool {
        let timeout = self.shared.config.timeout;
        let Some(client) = self.client.as_ref() else { return false };
        let attempt = (|| {
            let conn = client.get_connection_with_timeout(timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            conn.set_write_timeout(Some(timeout))?;
            Ok::<_, RedisError>(conn)
        })();
        let loaded = attempt.and_then(|mut conn| {
            let sha =
                redis::cmd("SCRIPT").arg("LOAD").arg(wire::PUBLISH_SCRIPT).query(&mut conn)?;
            Ok((conn, sha))
        });
        match loaded {
            Ok((conn, sha)) => {
                self.conn = Some(conn);
                self.sha = sha;
                BridgeStats::add(&self.shared.stats.connects, 1);
                self.connected();
                true
            }
            Err(e) => {
                self.lost_connection(&e);
                false
            }
        }
    }

    /// The connection works: back to the first backoff delay; a probe closes the breaker.
    fn connected(&mut self) {
        if self.down {
            tracing::info!("redis publisher connected");
        }
        self.down = false;
        self.backoff.reset();
        let mut state = self.shared.lock();
        state.publisher_up = true;
        if state.breaker.success() {
            state.closed_generation += 1;
            tracing::info!("redis circuit breaker closed");
        }
        self.shared.refresh(&state, Instant::now());
    }

    /// A call failed: the connection is dropped, the failure counted, the next attempt
    /// scheduled by the backoff.
    fn lost_connection(&mut self, error: &RedisError) {
        if self.down {
            debug!(error = %error, "redis publisher: still failing");
        } else {
            warn!(error = %error, "redis publisher: call failed; delivering locally meanwhile");
        }
        self.down = true;
        self.conn = None;
        let now = Instant::now();
        self.next_attempt = now + self.backoff.next_delay(self.rng.f64());
        let mut state = self.shared.lock();
        state.publisher_up = false;
        self.shared.failed(&mut state, now);
    }

    /// Whether calls may go out now: connected and the breaker closed.
    fn ready(&self, now: Instant) -> bool {
        self.conn.is_some() && self.shared.lock().breaker.state(now) == BreakerState::Closed
    }

    /// Writes buffered dead letters to their lists (`RPUSH`, trimmed to the newest
    /// [`DLQ_MAX_PER_TOPIC`], [`DLQ_TTL`]) and indexes their topics, [`BATCH`] per round
    /// trip; stops at the first failure and keeps what was not written.
    fn flush_dead_letters(&mut self) {
        let prefix = self.shared.config.prefix.clone();
        let index = wire::dlq_index_key(&prefix);
        let ttl = DLQ_TTL.as_secs();
        while !self.dead.is_empty() {
            let count = self.dead.len().min(BATCH);
            let mut pipe = redis::pipe();
            for letter in self.dead.iter().take(count) {
                let key = wire::dlq_key(&prefix, &letter.message.topic);
                pipe.cmd("RPUSH").arg(&key).arg(wire::dead_letter_entry(letter)).ignore();
                pipe.cmd("LTRIM").arg(&key).arg(-(DLQ_MAX_PER_TOPIC as i64)).arg(-1).ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
                pipe.cmd("SADD").arg(&index).arg(&*letter.message.topic).ignore();
            }
            pipe.cmd("EXPIRE").arg(&index).arg(ttl).ignore();
            let Some(conn) = self.conn.as_mut() else { return };
            if let Err(e) = pipe.query::<()>(conn) {
                return self.lost_connection(&e);
            }
            self.dead.drain(..count);
            let stats = &self.shared.stats;
            BridgeStats::add(&stats.dlq_written, count as u64);
            BridgeStats::set(&stats.dlq_buffered, self.dead.len() as u64);
        }
    }

    /// Dead letters of `topic` (all topics when `None`), at most `limit`: the buffered ones,
    /// then those in Redis when it can be reached.
    fn list(&mut self, topic: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        let wanted = |letter: &&DeadLetter| topic.is_none_or(|t| *letter.message.topic == *t);
        let mut out: Vec<DeadLetter> =
            self.dead.iter().filter(wanted).take(limit).cloned().collect();
        if out.len() >= limit || !self.ready(Instant::now()) {
            return Ok(out);
        }
        let prefix = self.shared.config.prefix.clone();
        let mut topics: Vec<String> = match topic {
            Some(t) => vec![t.to_owned()],
            None => self.query(redis::cmd("SMEMBERS").arg(wire::dlq_index_key(&prefix)))?,
        };
        topics.sort();
        for t in topics {
            let room = limit - out.len();
            if room == 0 {
                break;
            }
            let key = wire::dlq_key(&prefix, &t);
            let last = room as i64 - 1;
            let entries: Vec<Vec<u8>> =
                self.query(redis::cmd("LRANGE").arg(key).arg(0).arg(last))?;
            out.extend(entries.iter().filter_map(|entry| self.read_entry(entry)));
        }
        Ok(out)
    }

    /// Replays dead letter `id` of `topic`: removed from its list, then published through
    /// the ordering script with number 0 and its original instance, so that the instance
    /// that delivered it locally drops it and every other one delivers it.
    fn replay(&mut self, topic: &str, id: &str) -> Result<bool, Error> {
        if !self.ready(Instant::now()) {
            return Err(Error::RedisUnavailable);
        }
        self.flush_dead_letters();
        let key = wire::dlq_key(&self.shared.config.prefix, topic);
        let entries: Vec<Vec<u8>> = self.query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))?;
        let found = entries.into_iter().find_map(|raw| {
            let letter = wire::parse_dead_letter(&raw).ok()?;
            (*letter.message.id == *id).then_some((raw, letter))
        });
        let Some((raw, letter)) = found else { return Ok(false) };
        // Removed first: of two replays of one letter, only the one that removed it
        // publishes.
        let removed: i64 = self.query(redis::cmd("LREM").arg(&key).arg(1).arg(&raw))?;
        if removed == 0 {
            return Ok(false);
        }
        self.republish(&key, &raw, &letter)?;
        BridgeStats::add(&self.shared.stats.replays, 1);
        Ok(true)
    }

    /// Publishes a dead letter taken from list `key` through the ordering script, under
    /// number 0 and its original instance; drops the topic from the index when its list is
    /// empty. On failure the letter goes back to the list if the connection still serves
    /// (a refused script); after a broken connection it may be lost or published.
    fn republish(&mut self, key: &str, raw: &[u8], letter: &DeadLetter) -> Result<(), Error> {
        let config = &self.shared.config;
        let (prefix, topic) = (&config.prefix, &letter.message.topic);
        let ttl_ms = config.history_ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA").arg(&self.sha).arg(1).arg(wire::sequence_key(prefix, topic));
        pipe.arg(format!("{:08x}", self.rng.u32(..))).arg(ttl_ms);
        pipe.arg(wire::topic_channel(prefix, topic));
        pipe.arg(wire::publication_body(&letter.instance, 0, &letter.message)).ignore();
        pipe.cmd("LLEN").arg(key);
        let index = wire::dlq_index_key(prefix);
        let Some(conn) = self.conn.as_mut() else { return Err(Error::RedisUnavailable) };
        match pipe.query::<(i64,)>(conn) {
            Ok((0,)) => {
                let _: Result<i64, RedisError> =
                    redis::cmd("SREM").arg(index).arg(&**topic).query(conn);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                let _: Result<i64, RedisError> = redis::cmd("RPUSH").arg(key).arg(raw).query(conn);
                Err(self.redis_failed(&e))
            }
        }
    }

    /// One command of the application's calls; a failure counts like any other.
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, Error> {
        let Some(conn) = self.conn.as_mut() else { return Err(Error::RedisUnavailable) };
        cmd.query(conn).map_err(|e| self.redis_failed(&e))
    }

    /// A dead-letter entry that parses; a malformed one is counted and skipped.
    fn read_entry(&self, entry: &[u8]) -> Option<DeadLetter> {
        let parsed = wire::parse_dead_letter(entry);
        if parsed.is_err() {
            BridgeStats::add(&self.shared.stats.malformed, 1);
        }
        parsed.ok()
    }

    /// A Redis call of the application's failed: counted like any, and reported.
    fn redis_failed(&mut self, error: &RedisError) -> Error {
        let message = error.to_string();
        self.lost_connection(error);
        Error::Redis(message)
    }
}

/// Longest wait for the next message before housekeeping runs.
const TICK: Duration = Duration::from_millis(50);
