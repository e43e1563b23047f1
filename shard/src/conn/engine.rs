//! The WSE messages a connection answers itself (PROTOCOL.md §5, §7).
//!
//! Place: `session → **engine** → topic index / rings / outqueue`. After the upgrade the
//! client gets `server_ready`; then `ping` → `PONG`, `client_hello` → `server_hello`,
//! `subscription_update` → the shard's topic index and an answer, `publish` → the topic's
//! owner shard. Every answer passes through [`Session::send_direct`], which signs and seals
//! it as the connection's security settings ask. Echo mode skips all of this and returns
//! every data message to its sender.

use std::sync::Arc;

use bytes::Bytes;
use wse_fanout::mesh::PublishRequest;
use wse_protocol::auth::AuthError;
use wse_protocol::e2e::{KeyExchange, SessionKeys};
use wse_protocol::engine::{
    self, ClientHello, ClientMessage, Features, Limits, ServerHello, SubscriptionAction,
};
use wse_protocol::envelope::{self, DirectMeta, Priority};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::handshake::Request;
use wse_protocol::topic::validate_topic;

use super::{Session, AUTH_FAILED};
use crate::metrics::{CloseReason, DropReason, SecurityEvent, ShardMetrics};
use crate::security;
use crate::server::Shared;
use crate::shard::unix_ms;

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
            self.subscription(SubscriptionAction::Subscribe, topics, None);
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
        if data.first() != Some(&b'{') && !text {
            // TODO(#5): hand binary that is not a known format to the application (`bin`).
            return;
        }
        let Ok(inbound) = envelope::parse_inbound(&data) else {
            // TODO(#5): hand text that is not JSON to the application (`raw`).
            return;
        };
        if !sealed && !self.signature_ok(&data) {
            return;
        }
        let message = match engine::classify(inbound) {
            Ok(message) => message,
            Err(error) => {
                return self.send_direct(Priority::High, "error", None, |meta, out| {
                    engine::error_for(&error, meta, out);
                });
            }
        };
        self.peer_sealed |= sealed;
        let heartbeat = matches!(message, ClientMessage::Ping { .. });
        if !sealed && !heartbeat && self.peer_sealed {
            // No downgrade: once the client seals, only heartbeats may travel in plaintext.
            // Until its first `E:` frame, plaintext still passes: 2.x clients subscribe right
            // after `server_ready`, before they have read `server_hello`.
            self.shard.metrics().security(SecurityEvent::EncryptionRequired);
            let text = "this connection is encrypted; send E: frames";
            return self.send_direct(Priority::High, "error", None, |meta, out| {
                engine::error("ENCRYPTION_REQUIRED", text, true, None, meta, out);
            });
        }
        self.engine_message(message).await;
    }

    async fn engine_message(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Ping { timestamp, cid } => {
                self.send_direct(Priority::High, "PONG", cid.as_deref(), |meta, out| {
                    engine::pong(timestamp, meta.now_ms, meta, out);
                });
            }
            ClientMessage::ClientHello(hello) => self.server_hello(&hello),
            ClientMessage::Subscription(update) => {
                let cid = update.inbound.cid.clone();
                self.subscription(update.action, update.topics, cid.as_deref());
                // TODO(#5): the application also receives the update as a `msg` event.
            }
            ClientMessage::Publish(request) => self.publish(request).await,
            ClientMessage::App(_) => {
                // TODO(#5): hand to the application through the drain facade.
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
        let public_key = agreed.as_ref().map(|(public, _)| public.as_str());
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
            encryption_public_key: public_key,
        };
        self.send_direct(Priority::High, "server_hello", cid, |meta, out| {
            engine::server_hello(&hello, meta, out);
        });
        if let Some((_, keys)) = agreed {
            // From here on every data frame in either direction is sealed.
            *self.conn.e2e.borrow_mut() = Some(Box::new(keys));
        }
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

    /// Applies a subscribe or unsubscribe and answers with `subscription_update`.
    pub(super) fn subscription(
        &mut self,
        action: SubscriptionAction,
        topics: Vec<String>,
        cid: Option<&str>,
    ) {
        let mut success = Vec::new();
        let mut failed = Vec::new();
        for topic in topics {
            let outcome = match action {
                SubscriptionAction::Subscribe => self.subscribe(&topic),
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
        self.send_direct(Priority::High, "subscription_update", cid, |meta, out| {
            engine::subscription_answer(action, &success, &failed, meta, out);
        });
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), &'static str> {
        validate_topic(topic, true).map_err(|_| "INVALID_TOPIC")?;
        let permitted = self.conn.acl.borrow().as_ref().is_none_or(|acl| acl.may_subscribe(topic));
        if !permitted {
            self.shard.metrics().security(SecurityEvent::Forbidden);
            return Err("FORBIDDEN");
        }
        let mut mine = self.conn.topics.borrow_mut();
        if mine.iter().any(|t| **t == *topic) {
            return Ok(());
        }
        if mine.len() >= self.shard.shared.config.max_subscriptions_per_connection {
            return Err("SUBSCRIPTION_LIMIT");
        }
        if self.shard.stopping.get() {
            return Err("SHUTTING_DOWN");
        }
        self.shard.topics.borrow_mut().subscribe(self.conn.id, topic);
        mine.push(topic.into());
        ShardMetrics::add(&self.shard.metrics().subscriptions, 1);
        Ok(())
    }

    fn unsubscribe(&mut self, topic: &str) {
        let mut mine = self.conn.topics.borrow_mut();
        if let Some(at) = mine.iter().position(|t| **t == *topic) {
            mine.swap_remove(at);
            self.shard.topics.borrow_mut().unsubscribe(self.conn.id, topic);
            ShardMetrics::dec(&self.shard.metrics().subscriptions);
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
        };
        self.shard.publish(request).await;
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
    /// stays plaintext, and queues it.
    pub(super) fn send_direct(
        &mut self,
        pri: Priority,
        t: &str,
        cid: Option<&str>,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) {
        let id = uuid::Uuid::now_v7().to_string();
        let meta = DirectMeta::new(self.conn.next_seq(), &id, unix_ms()).with_cid(cid);
        let mut json = Vec::with_capacity(256);
        build(&meta, &mut json);
        let stays_plain = security::stays_plaintext(t);
        let json = if stays_plain || !self.conn.is_encrypted() {
            self.shard.sign_if_selected(t, json)
        } else {
            json
        };
        let plain = || self.shard.direct_frame(&self.conn, t, &json);
        match self.conn.frame_for(&self.shard.ivs, &json, stays_plain, plain) {
            Some(frame) => self.queue(pri, frame),
            None => self.shard.metrics().dropped(DropReason::SealFailed, 1),
        }
    }

    fn queue(&mut self, pri: Priority, frame: Bytes) {
        let budget = self.budget();
        let outcome = self.conn.out.borrow_mut().push(pri, frame, budget);
        self.shard.account(&self.conn, outcome);
    }
}

/// What this engine offers under the running configuration.
fn features(shared: &Shared) -> Features {
    Features {
        compression: shared.config.compression.c_frames,
        encryption: shared.config.security.encryption,
        msgpack: false,
        recovery: false,
        priority_queue: true,
        batching: true,
        rust_jwt: shared.guard.requires_token(),
        rust_transport: true,
    }
}
