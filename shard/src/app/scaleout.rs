//! The application's scale-out calls: this instance's id, the bridge's state, direct
//! messages to connections of other instances, and the dead-letter queue.
//!
//! Place: `application → **App** → Redis bridge thread → Redis`. None of these touch a
//! shard: they go to the bridge's publisher thread (which owns the Redis connection and the
//! local dead-letter buffer) and wait for its answer, bounded by the configured timeouts.
//! Without `redis_url` they fail with [`Error::NoRedis`] (the queries answer `None`).

use std::time::Duration;

use wse_fanout::bridge::{BridgeHandle, BridgeStatus, DeadLetter, Direct};
use wse_fanout::ids::ConnId;
use wse_protocol::envelope::Priority;

use super::{check_json, App};
use crate::Error;

impl App {
    /// This instance's id among the instances sharing the Redis (a UUIDv7 per start);
    /// `None` without Redis. Store it beside a connection id to reach that connection from
    /// another instance with [`App::send_event_to`].
    pub fn instance_id(&self) -> Option<&str> {
        self.inner.shared.bridge.as_ref().map(BridgeHandle::instance)
    }

    /// The Redis bridge's state: breaker, connections, dead letters waiting locally; `None`
    /// without Redis. The same is in `/health` (`redis`) and `/metrics` (`wse_redis_*`).
    pub fn redis_status(&self) -> Option<BridgeStatus> {
        self.inner.shared.bridge.as_ref().map(BridgeHandle::status)
    }

    /// [`App::send_event`] to connection `conn` of instance `instance` (any instance,
    /// this one included). Another instance's connection is reached through Redis: the
    /// call returns once the bridge took the message, and a message Redis cannot take
    /// (unreachable) or that no instance of that id listens for is dropped and counted
    /// (`wse_redis_direct_dropped_total`), as is one for a connection that is gone.
    pub fn send_event_to(
        &self,
        instance: &str,
        conn: ConnId,
        t: &str,
        payload_json: &str,
        pri: Priority,
        cid: Option<&str>,
    ) -> Result<(), Error> {
        let bridge = self.bridge()?;
        if instance == bridge.instance() {
            return self.send_event(conn, t, payload_json, pri, cid);
        }
        if t.is_empty() {
            return Err(Error::InvalidArgument("event type is empty".into()));
        }
        check_json(payload_json)?;
        let direct = Direct {
            conn,
            t: t.into(),
            payload: payload_json.into(),
            pri,
            cid: cid.map(Into::into),
        };
        bridge.send_direct(instance, direct, self.inner.shared.config.publish_timeout)?;
        Ok(())
    }

    /// Dead letters of `topic` (every topic when `None`), at most `limit`: publications
    /// of this instance that could not be sent to the other instances while Redis was
    /// unreachable (they were delivered here). Those still in this instance's memory come
    /// first (`stored: false`), then those in Redis, which every instance lists alike
    /// (kept 7 days, at most 1,000 per topic). While Redis is unreachable only the ones in
    /// memory are listed.
    pub fn dlq_messages(
        &self,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        Ok(self.bridge()?.dead_letters(topic, limit, self.redis_wait())?)
    }

    /// Publishes dead letter `id` of `topic` again, through Redis, and removes it from the
    /// queue: every instance except the one it came from (which delivered it already)
    /// delivers it, under the topic's next offset. `Ok(false)` when no such dead letter is
    /// stored (replayed already, or expired); [`wse_fanout::Error::RedisUnavailable`] while
    /// Redis cannot be reached.
    pub fn replay_dlq_message(&self, topic: &str, id: &str) -> Result<bool, Error> {
        Ok(self.bridge()?.replay(topic, id, self.redis_wait())?)
    }

    fn bridge(&self) -> Result<&BridgeHandle, Error> {
        self.inner.shared.bridge.as_ref().ok_or(Error::NoRedis)
    }

    /// How long a dead-letter call may take: the queue wait plus a few Redis round trips.
    fn redis_wait(&self) -> Duration {
        let config = &self.inner.shared.config;
        config.publish_timeout + config.redis.timeout * REDIS_CALLS
    }
}

/// Redis round trips a dead-letter call may need (read, remove, publish, clean up).
const REDIS_CALLS: u32 = 4;
