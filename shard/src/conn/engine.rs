//! The WSE messages a connection answers itself (PROTOCOL.md §5, §7).
//!
//! Place: `session → **engine** → topic index / rings / outqueue`. After the upgrade the
//! client gets `server_ready`; then `ping` → `PONG`, `client_hello` → `server_hello`,
//! `subscription_update` → the shard's topic index, a replay of missed history when the client
//! asks to recover, and an answer; `publish` → the topic's owner shard. Every answer passes
//! through [`Session::send_direct`], which signs and seals it as the connection's security
//! settings ask. Echo mode skips all of this and returns every data message to its sender.

use std::sync::Arc;

use tracing::debug;

use bytes::Bytes;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use wse_fanout::glob::{glob_match, has_wildcards};
use wse_fanout::mesh::PublishRequest;
use wse_protocol::auth::AuthError;
use wse_protocol::e2e::{KeyExchange, SessionKeys};
use wse_protocol::engine::{
    self, ClientHello, ClientMessage, Features, Limits, RecoveryAnswer, RecoveryRequest,
    ServerHello, SubscriptionAction,
};
use wse_protocol::envelope::{self, DirectMeta, Priority};
use wse_protocol::filter::Filter;
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::handshake::Request;
use wse_protocol::msgpack;
use wse_protocol::topic::validate_topic;

use super::inbound::Msgpack;
use super::{Conn, Session, AUTH_FAILED};
use crate::app::Envelope;
use crate::metrics::{CloseReason, SecurityEvent, ShardMetrics};
use crate::security;
use crate::server::Shared;
use crate::shard::Shard;

impl Session {
    /// Sends `server_ready` and applies `topics=` from the query string.
    pub(super) fn greet(&mut self, request: &Request) {
        let connection_id = self.conn.uuid.to_string();
        let features = features(&self.shard.shared);
        let conn = std::rc::Rc::clone(&self.conn);
        self.send_direct(Priority::Critical, "server_ready", None, |meta, out| {
            engine::server_ready(&connection_id, conn.user_id.as_deref(), &features, meta, out);
        });
        let Some(list) = request.query_param("topics") else { return };
        let topics: Vec<String> =
            list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        if !topics.is_empty() {
            self.subscription(SubscriptionAction::Subscribe, topics, None, &[], None);
        }
    }

    /// Answers a connection whose token was refused in the `close` failure mode: exactly
    /// one `error` (`AUTH_REQUIRED` or `AUTH_FAILED`), then Close 4401 (PROTOCOL.md §2).
    pub(super) async fn refuse(&mut self, error: &AuthError) -> CloseReason {
        let message = security::refusal_text(error);
        self.send_direct(Priority::Critical, "error", None, |meta, out| {
            engine::error(error.wire_code(), message.trim_end(), false, None, meta, out);
        });
        self.close_by_server(AUTH_FAILED, true).await
    }

    /// One data message from the client.
    pub(super) async fn message(&mut self, text: bool, data: Vec<u8>) {
        if self.shard.shared.config.echo {
            return self.echo(text, &data);
        }
        if !self.take_token() {
            return;
        }
        let Some((data, sealed)) = self.unseal(text, data) else { return };
        let data = if sealed {
            data
        } else {
            let Some(data) = self.inflate_c_frame(text, data) else { return };
            data
        };
        let size = data.len();
        let msgpack_body = if text { None } else { msgpack::body_of(&data, self.conn.msgpack) };
        // JSON text that is known to be UTF-8: a text frame's (the reader checked it), or
        // what a msgpack message became.
        let (json, head, utf8) = if let Some(body) = msgpack_body {
            let start = data.len() - body.len();
            match self.read_msgpack(body, sealed) {
                None => return,
                Some(Msgpack::Unread) => {
                    return self.hand_on(Envelope::msgpack(data, start), sealed, size);
                }
                Some(Msgpack::Converted(json, head)) => (json, head, true),
            }
        } else {
            if data.first() != Some(&b'{') && !text {
                return self.emit_unknown(text, data);
            }
            let Ok(head) = envelope::scan_inbound(&data) else {
                return self.emit_unknown(text, data);
            };
            if !sealed && !self.signature_ok(&data) {
                return;
            }
            (data, head, text)
        };
        if utf8 && !engine::needs_document(&head.t) {
            // The common case: the application's own message, handed on unread.
            return self.hand_on(Envelope::new(json, head.start), sealed, size);
        }
        let Ok(inbound) = envelope::parse_inbound(&json) else {
            return self.emit_unknown(text, json);
        };
        let message = match engine::classify(inbound) {
            Ok(message) => message,
            Err(error) => {
                self.send_direct(Priority::High, "error", None, |meta, out| {
                    engine::error_for(&error, meta, out);
                });
                if matches!(error, wse_protocol::Error::InvalidMessage(_)) {
                    self.malformed();
                }
                return;
            }
        };
        let heartbeat = matches!(message, ClientMessage::Ping { .. });
        if self.refuses_downgrade(sealed, heartbeat) {
            return;
        }
        let envelope = Envelope::new(json, head.start);
        self.engine_message(message, envelope, size).await;
    }

    /// Hands the application its own message, unread past its type; `size` is its length as
    /// received. A plaintext one on a sealed connection is refused instead.
    fn hand_on(&mut self, envelope: Envelope, sealed: bool, size: usize) {
        if !self.refuses_downgrade(sealed, false) {
            self.emit_message(envelope, size);
        }
    }

    /// Once the client seals, only heartbeats may travel in plaintext: refuses (and answers
    /// `ENCRYPTION_REQUIRED` to) a plaintext message after the first `E:` frame. Until then
    /// plaintext still passes: 2.x clients subscribe right after `server_ready`, before they
    /// have read `server_hello`.
    fn refuses_downgrade(&mut self, sealed: bool, heartbeat: bool) -> bool {
        self.peer_sealed |= sealed;
        if sealed || heartbeat || !self.peer_sealed {
            return false;
        }
        self.shard.metrics().security(SecurityEvent::EncryptionRequired);
        let text = "this connection is encrypted; send E: frames";
        self.send_direct(Priority::High, "error", None, |meta, out| {
            engine::error("ENCRYPTION_REQUIRED", text, true, None, meta, out);
        });
        true
    }

    /// Acts on a message the engine reads; `envelope` is its text and `size` its length as
    /// received, for the event the application gets after some of them.
    async fn engine_message(&mut self, message: ClientMessage, envelope: Envelope, size: usize) {
        match message {
            ClientMessage::Ping { timestamp, cid } => {
                self.send_direct(Priority::High, "PONG", cid.as_deref(), |meta, out| {
                    engine::pong(timestamp, meta.now_ms, meta, out);
                });
            }
            ClientMessage::ClientHello(hello) => self.server_hello(&hello),
            ClientMessage::Subscription(update) => {
                let cid = update.inbound.cid.clone();
                let recovery = update.recovery_requests();
                let filters = update.filters.as_ref();
                self.subscription(update.action, update.topics, filters, &recovery, cid.as_deref());
                self.emit_message(envelope, size);
            }
            ClientMessage::Publish(request) => self.publish(request).await,
            ClientMessage::App(inbound) => {
                if inbound.t == "sync_request" {
                    self.sync_request(inbound.payload());
                }
                self.emit_message(envelope, size);
            }
        }
    }

    /// Answers `client_hello`, agreeing E2E keys when the client asks and the server
    /// allows it. A bad client key gets `KEY_EXCHANGE_FAILED` and the connection stays
    /// unencrypted (PROTOCOL.md §5).
    fn server_hello(&mut self, hello: &ClientHello) {
        let cid = hello.cid.as_deref();
        let agreed = self.agree_keys(hello);
        let shared = &self.shard.shared;
        let config = &shared.config;
        let connection_id = self.conn.uuid.to_string();
        let public_key = agreed.as_ref().map(|(public, _)| public.clone());
        let hello = ServerHello {
            connection_id: &connection_id,
            server_version: crate::VERSION,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            limits: Limits {
                max_message_size: config.max_message_size as u64,
                rate_limit_capacity: config.security.rate_limit_capacity,
                rate_limit_refill: config.security.rate_limit_refill,
            },
            features: features(shared),
            encryption_public_key: public_key.as_deref(),
        };
        if let Some((_, keys)) = agreed {
            // From here on every data frame in either direction is sealed. `server_hello`
            // itself stays plaintext, signed (when selected) under the new E2E key (§6).
            *self.conn.e2e.borrow_mut() = Some(Box::new(keys));
        }
        self.send_direct(Priority::High, "server_hello", cid, |meta, out| {
            engine::server_hello(&hello, meta, out);
        });
    }

    /// The server's public key and the session keys, when E2E was asked for and agreed.
    fn agree_keys(&mut self, hello: &ClientHello) -> Option<(String, SessionKeys)> {
        let allowed = self.shard.shared.config.security.encryption;
        if !allowed || !hello.wants_encryption || self.conn.is_encrypted() {
            return None;
        }
        let agreed = hello.encryption_public_key.as_deref().map_or(
            Err("client_hello asked for encryption without encryption_public_key"),
            |client_key| {
                let exchange = KeyExchange::generate().map_err(|_| "key generation failed")?;
                let public = exchange.public_key_b64();
                let keys = exchange.agree(client_key).map_err(|_| "client public key unusable")?;
                Ok((public, keys))
            },
        );
        agreed
            .map_err(|why| {
                self.shard.metrics().security(SecurityEvent::KeyExchangeFailed);
                self.send_direct(Priority::High, "error", None, |meta, out| {
                    engine::error("KEY_EXCHANGE_FAILED", why, true, None, meta, out);
                });
            })
            .ok()
    }

    /// Applies a subscribe or unsubscribe, replays what the client asks to recover, and
    /// answers with `subscription_update`.
    ///
    /// Subscribing and replaying happen in one synchronous step, so the replay ends exactly
    /// where live delivery begins. An answer that reports recoveries is queued behind every
    /// frame queued before it, replays included, so a client that reads it has everything it
    /// counts (PROTOCOL.md §7: replay, then answer).
    ///
    /// `filters` is the request's `{topic: criteria}` map (PROTOCOL.md §7 "Filters"). On
    /// subscribe, a topic named there gets that filter, replacing any it had (`{}` removes
    /// it); a topic not named there keeps the filter it had, so that re-subscribing for
    /// recovery does not drop it. Criteria that do not compile fail that topic with
    /// `INVALID_FILTER` and leave its subscription as it was.
    pub(super) fn subscription(
        &mut self,
        action: SubscriptionAction,
        topics: Vec<String>,
        filters: Option<&Value>,
        recovery: &[RecoveryRequest],
        cid: Option<&str>,
    ) {
        let (success, failed) = self.apply_subscription(action, topics, filters);
        let subscribing = action == SubscriptionAction::Subscribe;
        let recovered = if subscribing && self.shard.shared.config.history.enabled {
            self.recover(&success, recovery)
        } else {
            Vec::new()
        };
        let filtered = match action {
            SubscriptionAction::Subscribe => self.filtered_among(&success),
            SubscriptionAction::Unsubscribe => Vec::new(),
        };
        let answer = |meta: &DirectMeta<'_>, out: &mut Vec<u8>| {
            engine::subscription_answer_with_recovery(
                action, &success, &failed, &filtered, &recovered, meta, out,
            );
        };
        let t = "subscription_update";
        let normal = Priority::Normal;
        let Some(frame) = self.shard.direct_frame(&self.conn, t, normal, cid, false, answer) else {
            return;
        };
        let budget = self.conn.budget_left(self.budget());
        let mut out = self.conn.out.borrow_mut();
        let outcome = if recovered.is_empty() {
            out.push(Priority::High, frame, budget)
        } else {
            out.push_after_all(Priority::High, frame, budget)
        };
        drop(out);
        self.shard.account(&self.conn, outcome);
    }

    /// Subscribes or unsubscribes each topic; the topics that succeeded, and those that
    /// failed with why.
    fn apply_subscription(
        &mut self,
        action: SubscriptionAction,
        topics: Vec<String>,
        filters: Option<&Value>,
    ) -> (Vec<String>, Vec<(String, &'static str)>) {
        let mut success = Vec::new();
        let mut failed = Vec::new();
        for topic in topics {
            let outcome = match action {
                SubscriptionAction::Subscribe => {
                    self.subscribe(&topic, filters.and_then(|f| f.get(topic.as_str())))
                }
                SubscriptionAction::Unsubscribe => {
                    self.unsubscribe(&topic);
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => success.push(topic),
                Err(reason) => failed.push((topic, reason)),
            }
        }
        (success, failed)
    }

    /// The topics among `subscribed` that carry a filter for this connection.
    fn filtered_among(&self, subscribed: &[String]) -> Vec<String> {
        let index = self.shard.topics.borrow();
        subscribed.iter().filter(|t| index.is_filtered(self.conn.id, t)).cloned().collect()
    }

    /// Replays, for each recovery request on a topic this subscribe now covers (exactly or
    /// by one of its globs) and the ACL lets through, what the client missed. A topic the
    /// connection already held (a 2.x client filling a gap) may get some messages twice,
    /// queued live and replayed; clients drop offsets they have seen (PROTOCOL.md §11).
    fn recover(&self, subscribed: &[String], requests: &[RecoveryRequest]) -> Vec<RecoveryAnswer> {
        let covers = |pattern: &String, topic: &str| {
            pattern == topic || (has_wildcards(pattern) && glob_match(pattern, topic))
        };
        requests
            .iter()
            .filter(|r| subscribed.iter().any(|s| covers(s, &r.topic)))
            .filter(|r| self.conn.may_receive(&r.topic))
            .map(|r| self.shard.recover(&self.conn, &r.topic, r.from))
            .collect()
    }

    fn subscribe(&mut self, topic: &str, criteria: Option<&Value>) -> Result<(), &'static str> {
        validate_topic(topic, true).map_err(|_| "INVALID_TOPIC")?;
        let permitted = self.conn.acl.borrow().as_ref().is_none_or(|acl| acl.may_subscribe(topic));
        if !permitted {
            self.shard.metrics().security(SecurityEvent::Forbidden);
            return Err("FORBIDDEN");
        }
        let filter = criteria.map(|criteria| self.compile_filter(topic, criteria)).transpose()?;

        let mut mine = self.conn.topics.borrow_mut();
        if !mine.iter().any(|t| **t == *topic) {
            if mine.len() >= self.shard.shared.config.max_subscriptions_per_connection {
                return Err("SUBSCRIPTION_LIMIT");
            }
            if self.shard.stopping.get() {
                return Err("SHUTTING_DOWN");
            }
            self.shard.topics.borrow_mut().subscribe(self.conn.id, topic);
            mine.push(topic.into());
            ShardMetrics::add(&self.shard.metrics().subscriptions, 1);
            self.shard.presence_join(&self.conn, topic);
        }
        if let Some(filter) = filter {
            self.shard.topics.borrow_mut().set_filter(self.conn.id, topic, filter);
        }
        Ok(())
    }

    /// Compiles one topic's criteria: `None` when they let everything through.
    fn compile_filter(
        &self,
        topic: &str,
        criteria: &Value,
    ) -> Result<Option<Box<Filter>>, &'static str> {
        let compiled = Filter::compile(criteria, &mut self.shard.regexes.borrow_mut());
        let filter = compiled.map_err(|error| {
            debug!(conn = self.conn.id.0, topic, %error, "filter refused");
            "INVALID_FILTER"
        })?;
        Ok((!filter.matches_all()).then(|| Box::new(filter)))
    }

    fn unsubscribe(&mut self, topic: &str) {
        let mut mine = self.conn.topics.borrow_mut();
        if let Some(at) = mine.iter().position(|t| **t == *topic) {
            mine.swap_remove(at);
            self.shard.topics.borrow_mut().unsubscribe(self.conn.id, topic);
            ShardMetrics::dec(&self.shard.metrics().subscriptions);
            self.shard.presence_leave(&self.conn, topic);
        }
    }

    async fn publish(&mut self, request: engine::PublishRequest) {
        if !self.may_publish(&request.topic) {
            self.shard.metrics().security(SecurityEvent::Forbidden);
            let cid = request.cid.as_deref();
            self.send_direct(Priority::High, "error", cid, |meta, out| {
                let text = "publishing to this topic is not allowed";
                engine::error("FORBIDDEN", text, false, None, meta, out);
            });
            return;
        }
        let request = PublishRequest {
            topic: Arc::from(request.topic),
            event_type: request.event_type.map(Into::into),
            data: request.data_json.into(),
            pri: request.pri,
            id: request.id.map(Into::into),
        };
        self.shard.publish(request).await;
    }

    /// Holds back later publications of the requested topics until the application answers
    /// (PROTOCOL.md §7; `snapshot.rs`). Without an application nobody would answer: no hold.
    fn sync_request(&mut self, p: Option<&sonic_rs::Value>) {
        if self.shard.app.is_none() {
            return;
        }
        let topics: Vec<String> = p
            .and_then(|p| p.get("topics"))
            .and_then(|t| t.as_array())
            .map(|list| list.iter().filter_map(|t| t.as_str()).map(str::to_owned).collect())
            .unwrap_or_default();
        let topics: Vec<String> =
            topics.into_iter().filter(|t| validate_topic(t, true).is_ok()).collect();
        let config = &self.shard.shared.config;
        let deadline = std::time::Instant::now() + config.snapshot_timeout;
        let limit = config.max_subscriptions_per_connection;
        let held = self.conn.hold(&topics, deadline, limit);
        ShardMetrics::add(&self.shard.metrics().snapshot_holds, held as u64);
    }

    /// Publish rights: the token's `wse_topics.publish` globs, or the server-wide
    /// `allow_client_publish` for topics the connection may receive.
    fn may_publish(&self, topic: &str) -> bool {
        let everyone = self.shard.shared.config.allow_client_publish;
        match self.conn.acl.borrow().as_ref() {
            Some(acl) => acl.may_publish(topic) || (everyone && acl.may_receive(topic)),
            None => everyone,
        }
    }

    fn echo(&mut self, text: bool, data: &[u8]) {
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        let frame = self.shard.frame_of(self.conn.squeeze, opcode, data, || true);
        self.queue(Priority::Normal, frame);
    }

    /// Builds a message of type `t` addressed to this connection (next `seq`, fresh id),
    /// signs it when `t` is selected for signing, seals it on an E2E connection unless `t`
    /// stays plaintext, and queues it (see [`Shard::direct_frame`](crate::shard::Shard)).
    pub(super) fn send_direct(
        &mut self,
        pri: Priority,
        t: &str,
        cid: Option<&str>,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) {
        self.conn.send_direct(&self.shard, pri, t, cid, build);
    }

    fn queue(&mut self, pri: Priority, frame: Bytes) {
        let budget = self.conn.budget_left(self.budget());
        let outcome = self.conn.out.borrow_mut().push(pri, frame, budget);
        self.shard.account(&self.conn, outcome);
    }
}

impl Conn {
    /// [`Session::send_direct`] for callers outside the connection's task (the
    /// application's `send_event`).
    pub(crate) fn send_direct(
        &self,
        shard: &Shard,
        pri: Priority,
        t: &str,
        cid: Option<&str>,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) {
        self.send_direct_as(shard, false, pri, t, cid, build);
    }

    /// Like [`Conn::send_direct`], in a binary frame when `binary` and not sealed: the
    /// application's `send_event` messages travel as binary `{` frames (PROTOCOL.md §4), with
    /// `pri` in their envelope. The frame is made by
    /// [`Shard::direct_frame`](crate::shard::Shard) (signed, `M:`, compressed or sealed as
    /// the connection takes it).
    pub(crate) fn send_direct_as(
        &self,
        shard: &Shard,
        binary: bool,
        pri: Priority,
        t: &str,
        cid: Option<&str>,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) {
        // The application's messages carry their priority in the envelope; the engine's own
        // answers only travel at theirs.
        let envelope_pri = if binary { pri } else { Priority::Normal };
        let Some(frame) = shard.direct_frame(self, t, envelope_pri, cid, binary, build) else {
            return;
        };
        let budget = self.budget_left(shard.shared.config.max_outbound_queue_bytes);
        let outcome = self.out.borrow_mut().push(pri, frame, budget);
        shard.account(self, outcome);
    }
}

/// What this engine offers under the running configuration.
fn features(shared: &Shared) -> Features {
    Features {
        compression: shared.config.compression.c_frames,
        encryption: shared.config.security.encryption,
        msgpack: true,
        recovery: shared.config.history.enabled,
        priority_queue: true,
        batching: true,
        rust_jwt: shared.guard.requires_token(),
        rust_transport: true,
        presence: shared.config.presence.enabled,
    }
}
