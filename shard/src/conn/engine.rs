//! The WSE messages a connection answers itself (PROTOCOL.md §5, §7).
//!
//! Place: `session → **engine** → topic index / rings / outqueue`. After the upgrade the
//! client gets `server_ready`; then `ping` → `PONG`, `client_hello` → `server_hello`,
//! `subscription_update` → the shard's topic index and an answer, `publish` → the topic's
//! owner shard. Echo mode skips all of this and returns every data message to its sender.

use std::sync::Arc;

use bytes::Bytes;
use wse_fanout::mesh::PublishRequest;
use wse_protocol::engine::{
    self, ClientMessage, Features, Limits, ServerHello, SubscriptionAction,
};
use wse_protocol::envelope::{self, DirectMeta, Priority};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::handshake::Request;
use wse_protocol::topic::validate_topic;
use wse_protocol::writer;

use super::Session;
use crate::metrics::ShardMetrics;
use crate::shard::{text_frame, unix_ms};

impl Session {
    /// Sends `server_ready` and applies `topics=` from the query string.
    pub(super) fn greet(&mut self, request: &Request) {
        let connection_id = self.conn.uuid.to_string();
        self.send_direct(Priority::Critical, None, |meta, out| {
            engine::server_ready(&connection_id, None, &FEATURES, meta, out);
        });
        let Some(list) = request.query_param("topics") else { return };
        let topics: Vec<String> =
            list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        if !topics.is_empty() {
            self.subscription(SubscriptionAction::Subscribe, topics, None);
        }
    }

    /// One data message from the client.
    pub(super) async fn message(&mut self, text: bool, data: Vec<u8>) {
        if self.shard.shared.config.echo {
            return self.echo(text, &data);
        }
        if data.first() != Some(&b'{') && !text {
            // TODO(#5): hand binary that is not a known format to the application (`bin`).
            return;
        }
        let Ok(inbound) = envelope::parse_inbound(&data) else {
            // TODO(#5): hand text that is not JSON to the application (`raw`).
            return;
        };
        match engine::classify(inbound) {
            Ok(message) => self.engine_message(message).await,
            Err(error) => self.send_direct(Priority::High, None, |meta, out| {
                engine::error_for(&error, meta, out);
            }),
        }
    }

    async fn engine_message(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Ping { timestamp, cid } => {
                self.send_direct(Priority::High, cid.as_deref(), |meta, out| {
                    engine::pong(timestamp, meta.now_ms, meta, out);
                });
            }
            ClientMessage::ClientHello(hello) => self.server_hello(hello.cid.as_deref()),
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

    fn server_hello(&mut self, cid: Option<&str>) {
        let config = &self.shard.shared.config;
        let connection_id = self.conn.uuid.to_string();
        let hello = ServerHello {
            connection_id: &connection_id,
            server_version: crate::VERSION,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            limits: Limits {
                max_message_size: config.max_message_size as u64,
                // TODO(#3): the real rate limits once the token bucket exists.
                rate_limit_capacity: 100_000,
                rate_limit_refill: 10_000.0,
            },
            features: FEATURES,
            encryption_public_key: None,
        };
        self.send_direct(Priority::High, cid, |meta, out| engine::server_hello(&hello, meta, out));
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
        self.send_direct(Priority::High, cid, |meta, out| {
            engine::subscription_answer(action, &success, &failed, meta, out);
        });
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), &'static str> {
        validate_topic(topic, true).map_err(|_| "INVALID_TOPIC")?;
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
        if !self.shard.shared.config.allow_client_publish {
            // TODO(#3): per-connection publish rights from the token's `wse_topics.publish`.
            let cid = request.cid.as_deref();
            self.send_direct(Priority::High, cid, |meta, out| {
                engine::error("FORBIDDEN", "publishing is not allowed", false, None, meta, out);
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

    fn echo(&mut self, text: bool, data: &[u8]) {
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        let mut frame = Vec::with_capacity(data.len() + 10);
        writer::encode_frame(opcode, data, &mut frame);
        self.queue(Priority::Normal, Bytes::from(frame));
    }

    /// Builds a message addressed to this connection (next `seq`, fresh id) and queues it.
    pub(super) fn send_direct(
        &mut self,
        pri: Priority,
        cid: Option<&str>,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) {
        let id = uuid::Uuid::now_v7().to_string();
        let meta = DirectMeta::new(self.conn.next_seq(), &id, unix_ms()).with_cid(cid);
        let mut json = Vec::with_capacity(256);
        build(&meta, &mut json);
        self.queue(pri, text_frame(&json));
    }

    fn queue(&mut self, pri: Priority, frame: Bytes) {
        let budget = self.budget();
        let outcome = self.conn.out.borrow_mut().push(pri, frame, budget);
        self.shard.account(&self.conn, outcome);
    }
}

/// What this engine offers today; grows with the security and delivery issues.
const FEATURES: Features = Features {
    compression: false,
    encryption: false,
    msgpack: false,
    recovery: false,
    priority_queue: true,
    batching: true,
    rust_jwt: false,
    rust_transport: true,
};
