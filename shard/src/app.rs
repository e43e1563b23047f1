//! The engine's application interface: events out of the shards, calls into them.
//!
//! Place: `application (Python through py/, or Rust) ⇄ **app** ⇄ shards`. Two directions:
//!
//! - **Events** (PROTOCOL.md §8): every shard pushes what its connections report into its
//!   own bounded ring (`inbound.rs`); [`App::drain`] collects from all of them, fairly, on
//!   any plain thread, and sleeps on a condition variable while there is nothing. When the
//!   application falls behind, connections stop reading their sockets: no event is dropped.
//!   Events flow only when [`Config::app_events`](crate::Config::app_events) is set: the
//!   standalone binary has no application and produces none.
//! - **Calls**: [`App::send_event`], [`App::publish`], [`App::disconnect`], ... become
//!   [`Control`] messages on the target shard's bounded control ring (a connection id names
//!   its shard). A caller waits at most `publish_timeout` for room, then gets
//!   [`Error::Busy`]: however fast the application calls, memory stays bounded. Queries
//!   ([`App::connection_info`], [`App::connections`], ...) are round trips with the same bound;
//!   [`App::connection_count`] is one atomic load.
//!
//! Every method takes `&self` and [`App`] is a cheap clone, so an application may drain on one
//! thread while others send, and [`Server::shutdown`](crate::Server::shutdown) wakes a drain
//! that is waiting.

pub(crate) mod inbound;
mod scaleout;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wse_fanout::ids::ConnId;
use wse_fanout::mesh::PublishRequest;
use wse_fanout::presence::{MemberView, TopicStats};
use wse_protocol::auth::TopicRules;
use wse_protocol::close::is_valid_close_code;
use wse_protocol::envelope::{self, Priority};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::msgpack;
use wse_protocol::topic::validate_topic;
use wse_protocol::writer;

use crate::server::{Control, Shared};
use crate::shard::shard_of;
use crate::Error;
use inbound::Inbound;

/// One event for the application: which connection, and what happened.
#[derive(Debug)]
pub struct Event {
    /// The connection, as [`App`]'s calls take it.
    pub conn: ConnId,
    /// What happened.
    pub kind: EventKind,
}

/// What a connection reported (PROTOCOL.md §8). Events of one connection arrive in order:
/// `connect` or `auth_connect` first, `disconnect` last.
#[derive(Debug)]
pub enum EventKind {
    /// A connection admitted with a valid JWT; its `sub`.
    AuthConnect {
        /// The token's `sub`.
        user_id: Box<str>,
    },
    /// A connection admitted without JWT; the request's `Cookie` header ("" when none).
    Connect {
        /// The `Cookie` header as sent.
        cookies: Box<str>,
    },
    /// A WSE envelope from the client, as JSON text. Also `subscription_update` and
    /// `sync_request`, after the engine acted.
    Message(Envelope),
    /// A text message that is not a JSON envelope.
    Raw(Box<str>),
    /// A binary message that is not a known format.
    Binary(Bytes),
    /// The connection ended: the close code (1006 when TCP ended without a Close) and the
    /// reason (the client's text, or the engine's reason label).
    Disconnect {
        /// The close code.
        code: u16,
        /// Why.
        reason: Box<str>,
    },
    /// A member joined or left a topic, or changed its data (presence on, PROTOCOL.md §8).
    /// The event's `conn` is the connection whose subscription or data caused it; the
    /// protocol's drain tuple carries no connection for these.
    Presence {
        /// Join, leave or update.
        kind: PresenceKind,
        /// The topic.
        topic: Arc<str>,
        /// The member: the user id, or the connection UUID of an anonymous connection.
        user_id: Arc<str>,
        /// The member's data, JSON text; `None` when it has none.
        data: Option<Arc<str>>,
    },
}

/// A client's WSE envelope, as JSON text or as one msgpack map: after E2E was opened, `C:`
/// inflated and a legacy `WSE`/`S`/`U` prefix or an `M:` prefix stripped.
///
/// The engine read the type (`t`, or `type`) and routed by it; the rest it hands on unread,
/// so that the application parses each message once, straight into its own types. A
/// msgpack message stays msgpack ([`Format::Msgpack`]): the engine checked all of it
/// (`wse_protocol::msgpack::scan_inbound`), and [`Envelope::json`] gives its JSON form
/// when the application wants text. Messages the engine acts on (`subscription_update`,
/// `sync_request`) and binary frames were validated whole and arrive as JSON; for the other
/// JSON messages only the text up to the type was, so [`Envelope::parse`] may still fail,
/// and an application treats such a message as one that is not an envelope (PROTOCOL.md
/// §8: `raw`).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The message as it arrived, possibly with a prefix before `start`.
    bytes: Vec<u8>,
    /// Where the envelope starts in `bytes`.
    start: usize,
    /// What `bytes[start..]` is.
    format: Format,
}

/// The form an [`Envelope`] arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text (UTF-8 unless [`Envelope::parse`] says otherwise).
    Json,
    /// One msgpack map, checked whole by the engine.
    Msgpack,
}

impl Envelope {
    /// The JSON envelope in `text` from byte `start` (where a legacy prefix ends).
    pub(crate) fn new(text: Vec<u8>, start: usize) -> Envelope {
        debug_assert!(start <= text.len());
        Envelope { bytes: text, start, format: Format::Json }
    }

    /// The msgpack envelope in `bytes` from byte `start` (past `M:`), which
    /// `msgpack::scan_inbound` accepted.
    pub(crate) fn msgpack(bytes: Vec<u8>, start: usize) -> Envelope {
        debug_assert!(start <= bytes.len());
        Envelope { bytes, start, format: Format::Msgpack }
    }

    /// The form the envelope arrived in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The envelope as it arrived, from its first byte: JSON text, or msgpack.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or_default()
    }

    /// The envelope as JSON text: the text itself, or the msgpack converted by the rules of
    /// `wse_protocol::msgpack` (`bin` as hex, non-string keys as their text).
    ///
    /// Errors only for a msgpack envelope the engine did not check, which it does not hand on.
    pub fn json(&self) -> Result<Cow<'_, [u8]>, wse_protocol::Error> {
        match self.format {
            Format::Json => Ok(Cow::Borrowed(self.body())),
            Format::Msgpack => {
                let mut json = Vec::with_capacity(self.body().len() * 2);
                msgpack::to_json(self.body(), usize::MAX, &mut json)?;
                Ok(Cow::Owned(json))
            }
        }
    }

    /// Parses the envelope with sonic-rs: into a [`sonic_rs::Value`], or any type of the
    /// application's.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, wse_protocol::Error> {
        let json = self.json()?;
        sonic_rs::from_slice(&json).map_err(|e| wse_protocol::Error::InvalidMessage(e.to_string()))
    }
}

/// What a presence event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// The member's first connection subscribed to the topic.
    Join,
    /// The member's last connection left the topic.
    Leave,
    /// The member's data changed.
    Update,
}

impl PresenceKind {
    /// The event type on the wire and in the drain: `presence_join`, `presence_leave` or
    /// `presence_update`.
    pub fn name(self) -> &'static str {
        match self {
            PresenceKind::Join => "presence_join",
            PresenceKind::Leave => "presence_leave",
            PresenceKind::Update => "presence_update",
        }
    }
}

impl EventKind {
    /// The kind as PROTOCOL.md §8 names it: `auth_connect`, `connect`, `msg`, `raw`, `bin`,
    /// `disconnect`, or one of the presence kinds.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::AuthConnect { .. } => "auth_connect",
            EventKind::Connect { .. } => "connect",
            EventKind::Message(_) => "msg",
            EventKind::Raw(_) => "raw",
            EventKind::Binary(_) => "bin",
            EventKind::Disconnect { .. } => "disconnect",
            EventKind::Presence { kind, .. } => kind.name(),
        }
    }
}

/// What the engine kept of a connection's upgrade request, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The `connection_id` the client saw in `server_ready` (a UUIDv7).
    pub connection_id: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The token's `sub`, or the id given to [`App::accept`]; `None` when anonymous.
    pub user_id: Option<String>,
    /// The raw query string (without `?`), when there was one.
    pub query: Option<String>,
    /// Request headers in order, as text (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// Whether headers were left out to stay within `max_connection_info_bytes`.
    pub truncated: bool,
}

/// The application's handle on a running server; clone it freely.
#[derive(Debug, Clone)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    controls: Vec<flume::Sender<Control>>,
    shared: Arc<Shared>,
}

impl App {
    pub(crate) fn new(controls: Vec<flume::Sender<Control>>, shared: Arc<Shared>) -> App {
        App { inner: Arc::new(Inner { controls, shared }) }
    }

    /// Up to `max_count` events from all shards, waiting up to `timeout` while there are
    /// none. Returns an empty batch on timeout and, at once, after the server stopped.
    pub fn drain(&self, max_count: usize, timeout: Duration) -> Result<Vec<Event>, Error> {
        let mut out = Vec::with_capacity(max_count.min(4096));
        self.drain_into(&mut out, max_count, timeout)?;
        Ok(out)
    }

    /// Like [`App::drain`], appending to `out` (so one buffer can serve every call); returns
    /// how many events were added.
    pub fn drain_into(
        &self,
        out: &mut Vec<Event>,
        max_count: usize,
        timeout: Duration,
    ) -> Result<usize, Error> {
        Ok(self.inbound()?.drain_into(out, max_count, timeout))
    }

    /// Events waiting in the shards' rings now.
    pub fn inbound_depth(&self) -> usize {
        self.inner.shared.inbound.as_ref().map_or(0, |i| i.depth())
    }

    /// Sends `text` to one connection as one text frame, as it is: no envelope, no `seq`,
    /// never sealed (use [`App::send_event`] for WSE messages).
    pub fn send(&self, conn: ConnId, text: &str) -> Result<(), Error> {
        let frame = frame(Data::Text, text.as_bytes());
        self.to_conn(conn, Control::Frame { conn, frame })
    }

    /// Sends `data` to one connection as one binary frame, as it is.
    pub fn send_bytes(&self, conn: ConnId, data: &[u8]) -> Result<(), Error> {
        let frame = frame(Data::Binary, data);
        self.to_conn(conn, Control::Frame { conn, frame })
    }

    /// Sends a WSE message of type `t` with payload `payload_json` (JSON text) to one
    /// connection: the full envelope with the connection's next `seq`, signed and sealed as
    /// the connection needs, like the engine's own messages. `*_snapshot` messages sent while
    /// a `sync_request` is being answered are counted in its `snapshot_complete`; sending
    /// `snapshot_complete` yourself ends the hold like [`App::snapshot_complete`] does.
    pub fn send_event(
        &self,
        conn: ConnId,
        t: &str,
        payload_json: &str,
        pri: Priority,
        cid: Option<&str>,
    ) -> Result<(), Error> {
        if t.is_empty() {
            return Err(Error::InvalidArgument("event type is empty".into()));
        }
        check_json(payload_json)?;
        let control = Control::SendEvent {
            conn,
            t: t.into(),
            payload: payload_json.into(),
            pri,
            cid: cid.map(Into::into),
        };
        self.to_conn(conn, control)
    }

    /// Publishes `payload_json` (JSON text) to `topic` with type `t` (the topic name when
    /// `None`): the topic's owner shard stamps it and every subscriber on every shard gets
    /// the same bytes. Calls from one thread keep their order.
    pub fn publish(
        &self,
        topic: &str,
        payload_json: &str,
        t: Option<&str>,
        pri: Priority,
    ) -> Result<(), Error> {
        validate_topic(topic, false).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        check_json(payload_json)?;
        let request = PublishRequest {
            topic: Arc::from(topic),
            event_type: t.map(Into::into),
            data: payload_json.into(),
            pri,
            id: None,
        };
        self.publish_request(request)
    }

    /// Publishes a request built by the caller (topic and JSON already checked). A type
    /// reserved for the engine (`envelope::check_publication_type`) is refused.
    pub fn publish_request(&self, request: PublishRequest) -> Result<(), Error> {
        let t = request.event_type.as_deref().unwrap_or(&request.topic);
        envelope::check_publication_type(t).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // One entry shard keeps one caller's requests in order.
        // TODO(#5): every application publication passes shard 0's control loop before it
        // reaches the topic's owner; sending it to the owner's control ring directly needs
        // the shard index of each mesh peer, which the shards do not publish yet.
        self.to_shard(0, Control::Publish(request))
    }

    /// Sends `text` as one text frame to every connection on every shard.
    pub fn broadcast_all(&self, text: &str) -> Result<(), Error> {
        let frame = frame(Data::Text, text.as_bytes());
        for shard in 0..self.inner.controls.len() {
            self.to_shard(shard, Control::Broadcast(frame.clone()))?;
        }
        Ok(())
    }

    /// Subscribes a connection to `topics` (exact names or globs) on the application's
    /// authority: the topic ACL does not apply, the subscription limit does. Invalid names
    /// are skipped. The client is not told.
    pub fn subscribe_connection(&self, conn: ConnId, topics: &[&str]) -> Result<(), Error> {
        check_patterns("topics", topics.iter().copied())?;
        let most = self.inner.shared.config.max_subscriptions_per_connection;
        if topics.len() > most {
            return Err(Error::InvalidArgument(format!(
                "{} topics are more than max_subscriptions_per_connection ({most})",
                topics.len()
            )));
        }
        let topics = topics.iter().map(|t| Box::from(*t)).collect();
        self.to_conn(conn, Control::Subscribe { conn, topics })
    }

    /// Unsubscribes a connection from `topics`, or from everything when `None`.
    pub fn unsubscribe_connection(
        &self,
        conn: ConnId,
        topics: Option<&[&str]>,
    ) -> Result<(), Error> {
        let topics = topics.map(|list| list.iter().map(|t| Box::from(*t)).collect());
        self.to_conn(conn, Control::Unsubscribe { conn, topics })
    }

    /// Closes a connection with `code` (1000, 3000-4999, ...) and `reason` (at most 123
    /// bytes are sent). Its `disconnect` event follows.
    pub fn disconnect(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), Error> {
        if !is_valid_close_code(code) {
            return Err(Error::InvalidArgument(format!("close code {code} cannot be sent")));
        }
        let reason = truncate(reason, MAX_CLOSE_REASON).into();
        self.to_conn(conn, Control::Disconnect { conn, code, reason })
    }

    /// Ends the snapshot hold of `topics` on a connection (every hold when empty): the engine
    /// sends `snapshot_complete` `{topics, count}` (count: the `*_snapshot` messages sent
    /// meanwhile), then the publications it held back, after everything queued before.
    /// Name the topics as the client's `sync_request` did (a glob ends the hold of that
    /// glob, not of the topics it matches). The message is sent even when nothing was held.
    pub fn snapshot_complete(&self, conn: ConnId, topics: &[&str]) -> Result<(), Error> {
        let topics = topics.iter().map(|t| Box::from(*t)).collect();
        self.to_conn(conn, Control::SnapshotComplete { conn, topics })
    }

    /// Admits a connection that waits under `require_accept` (PROTOCOL.md §2): it gets
    /// `server_ready` with `user_id` (or the token's `sub` when `None`). Ignored for a
    /// connection that is not waiting.
    pub fn accept(&self, conn: ConnId, user_id: Option<&str>) -> Result<(), Error> {
        self.to_conn(conn, Control::Accept { conn, user_id: user_id.map(Into::into) })
    }

    /// Refuses a connection that waits under `require_accept`: it is closed with `code` and
    /// `reason`, and its `disconnect` event follows.
    pub fn reject(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), Error> {
        if !is_valid_close_code(code) {
            return Err(Error::InvalidArgument(format!("close code {code} cannot be sent")));
        }
        let reason = truncate(reason, MAX_CLOSE_REASON).into();
        self.to_conn(conn, Control::Reject { conn, code, reason })
    }

    /// Replaces the topic ACL of connection `conn` (PROTOCOL.md §2, `wse_topics`): later
    /// subscriptions, deliveries and publishes follow `rules`; `None` lifts every limit.
    pub fn set_topic_acl(&self, conn: ConnId, rules: Option<TopicRules>) -> Result<(), Error> {
        if let Some(rules) = &rules {
            let lists =
                [("allow", &rules.allow), ("deny", &rules.deny), ("publish", &rules.publish)];
            for (name, list) in lists {
                check_patterns(name, list.iter().map(String::as_str))?;
            }
        }
        self.to_conn(conn, Control::SetTopicAcl { conn, rules })
    }

    /// Admitted connections now, over all shards (one atomic load; includes connections in
    /// their closing handshake).
    pub fn connection_count(&self) -> usize {
        self.inner.shared.admitted.load(Ordering::Acquire)
    }

    /// What the engine kept of a connection's upgrade request; `None` when it is gone or
    /// events are off (the information is kept only for an application).
    pub fn connection_info(&self, conn: ConnId) -> Result<Option<ConnectionInfo>, Error> {
        let (reply, answer) = flume::bounded(1);
        self.to_conn(conn, Control::ConnectionInfo { conn, reply })?;
        self.answer(&answer, shard_of(conn))
    }

    /// Every open connection, over all shards.
    pub fn connections(&self) -> Result<Vec<ConnId>, Error> {
        let mut all = Vec::new();
        for (shard, answer) in self.ask_every_shard(|reply| Control::Connections { reply })? {
            all.extend(self.answer(&answer, shard)?);
        }
        Ok(all)
    }

    /// Connections subscribed to `topic` (directly or by a glob), over all shards.
    pub fn topic_subscriber_count(&self, topic: &str) -> Result<usize, Error> {
        let topic: Arc<str> = Arc::from(topic);
        let ask = |reply| Control::SubscriberCount { topic: Arc::clone(&topic), reply };
        let mut total = 0;
        for (shard, answer) in self.ask_every_shard(ask)? {
            total += self.answer(&answer, shard)?;
        }
        Ok(total)
    }

    /// Sets the presence data (JSON text, at most `presence.max_data_size` bytes; `None`
    /// clears it) of a connection: the member it counts for is announced with it on every
    /// topic the connection is on (`presence_update`) and joins later topics with it. Call it
    /// before [`App::subscribe_connection`] to join with data: calls about one connection keep
    /// their order.
    pub fn update_presence(&self, conn: ConnId, data_json: Option<&str>) -> Result<(), Error> {
        let settings = &self.inner.shared.config.presence;
        if !settings.enabled {
            return Err(Error::InvalidArgument("presence is not enabled".into()));
        }
        if let Some(data) = data_json {
            check_json(data)?;
            if data.len() > settings.max_data_size {
                let limit = settings.max_data_size;
                let message = format!("presence data is {} bytes, over {limit}", data.len());
                return Err(Error::InvalidArgument(message));
            }
        }
        let data = data_json.map(Arc::from);
        self.to_conn(conn, Control::UpdatePresence { conn, data })
    }

    /// The members of `topic` (sorted by user id) with their data and connection counts.
    /// Empty when presence is off or nobody is on the topic.
    pub fn presence(&self, topic: &str) -> Result<Vec<MemberView>, Error> {
        let topic: Arc<str> = Arc::from(topic);
        let ask = |reply| Control::Presence { topic: Arc::clone(&topic), reply };
        // Only the topic's owner shard lists anyone; the others answer with nothing.
        let mut members = Vec::new();
        for (shard, answer) in self.ask_every_shard(ask)? {
            members.extend(self.answer(&answer, shard)?);
        }
        Ok(members)
    }

    /// How many members and connections `topic` has.
    pub fn presence_stats(&self, topic: &str) -> Result<TopicStats, Error> {
        let topic: Arc<str> = Arc::from(topic);
        let ask = |reply| Control::PresenceStats { topic: Arc::clone(&topic), reply };
        let mut total = TopicStats::default();
        for (shard, answer) in self.ask_every_shard(ask)? {
            let part = self.answer(&answer, shard)?;
            total.users += part.users;
            total.connections += part.connections;
        }
        Ok(total)
    }

    /// The `GET /health` body.
    pub fn health_json(&self) -> String {
        self.inner.shared.health_json()
    }

    /// The `GET /metrics` body (Prometheus text format).
    pub fn prometheus(&self) -> String {
        self.inner.shared.prometheus()
    }

    fn inbound(&self) -> Result<&Inbound, Error> {
        self.inner.shared.inbound.as_deref().ok_or(Error::NoApplication)
    }

    /// Sends a control message to the shard that owns `conn`.
    fn to_conn(&self, conn: ConnId, control: Control) -> Result<(), Error> {
        let shard = shard_of(conn);
        if shard >= self.inner.controls.len() {
            return Err(Error::InvalidArgument(format!("connection {conn} does not exist")));
        }
        self.to_shard(shard, control)
    }

    /// Sends a control message to `shard`, waiting at most `publish_timeout` for room.
    fn to_shard(&self, shard: usize, control: Control) -> Result<(), Error> {
        let waited = self.inner.shared.config.publish_timeout;
        self.inner.controls[shard].send_timeout(control, waited).map_err(|e| match e {
            flume::SendTimeoutError::Timeout(_) => {
                let metrics = &self.inner.shared.metrics.shards[shard];
                metrics.control_timeouts.fetch_add(1, Ordering::Relaxed);
                Error::Busy { shard, waited }
            }
            flume::SendTimeoutError::Disconnected(_) => Error::Stopped,
        })
    }

    /// Sends one query to every shard; the answers come back on the returned receivers.
    fn ask_every_shard<T>(
        &self,
        ask: impl Fn(flume::Sender<T>) -> Control,
    ) -> Result<Vec<(usize, flume::Receiver<T>)>, Error> {
        let mut answers = Vec::with_capacity(self.inner.controls.len());
        for shard in 0..self.inner.controls.len() {
            let (reply, answer) = flume::bounded(1);
            self.to_shard(shard, ask(reply))?;
            answers.push((shard, answer));
        }
        Ok(answers)
    }

    /// Waits at most `publish_timeout` for a shard's answer. A shard told to stop reads no
    /// more queries, and leaves one it had not read in its ring unanswered (not dropped),
    /// so the wait looks every [`STOP_CHECK`] whether the server is stopping or the shard
    /// gone: the caller then hears [`Error::Stopped`] at once, not [`Error::Busy`] at the
    /// deadline.
    fn answer<T>(&self, answer: &flume::Receiver<T>, shard: usize) -> Result<T, Error> {
        let waited = self.inner.shared.config.publish_timeout;
        let deadline = Instant::now() + waited;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match answer.recv_timeout(left.min(STOP_CHECK)) {
                Ok(value) => return Ok(value),
                Err(flume::RecvTimeoutError::Disconnected) => return Err(Error::Stopped),
                Err(flume::RecvTimeoutError::Timeout) => {
                    let stopping =
                        self.inner.shared.inbound.as_deref().is_some_and(Inbound::is_closed);
                    if stopping || self.inner.controls[shard].is_disconnected() {
                        return Err(Error::Stopped);
                    }
                    if left <= STOP_CHECK {
                        return Err(Error::Busy { shard, waited });
                    }
                }
            }
        }
    }
}

/// How often a wait for a shard's answer looks whether the shard has stopped.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// A complete unmasked data frame around `payload`.
fn frame(data: Data, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    writer::encode_frame(OpCode::Data(data), payload, &mut frame);
    Bytes::from(frame)
}

/// Checks a list of topic names or globs given by the application: each one valid
/// (PROTOCOL.md §3, wildcards allowed) and at most [`MAX_PATTERNS`] of them.
fn check_patterns<'a>(
    list: &str,
    patterns: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), Error> {
    if patterns.len() > MAX_PATTERNS {
        let n = patterns.len();
        return Err(Error::InvalidArgument(format!(
            "{list}: {n} entries are more than the {MAX_PATTERNS} allowed"
        )));
    }
    for pattern in patterns {
        validate_topic(pattern, true)
            .map_err(|e| Error::InvalidArgument(format!("{list}: {pattern:?} is invalid: {e}")))?;
    }
    Ok(())
}

/// The longest list of topics or globs one call may give.
const MAX_PATTERNS: usize = 4096;

/// Checks that `text` is one JSON value.
fn check_json(text: &str) -> Result<(), Error> {
    sonic_rs::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| Error::InvalidArgument(format!("payload is not JSON: {e}")))
}

/// The longest prefix of `text` within `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A Close frame's reason: 125 bytes of payload less the two of the code.
const MAX_CLOSE_REASON: usize = 123;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_use_the_protocol_names() {
        let names: Vec<&str> = [
            EventKind::AuthConnect { user_id: "u".into() },
            EventKind::Connect { cookies: "".into() },
            EventKind::Message(Envelope::new(b"{}".to_vec(), 0)),
            EventKind::Raw("x".into()),
            EventKind::Binary(Bytes::new()),
            EventKind::Disconnect { code: 1000, reason: "".into() },
            EventKind::Presence {
                kind: PresenceKind::Leave,
                topic: "t".into(),
                user_id: "u".into(),
                data: None,
            },
        ]
        .iter()
        .map(EventKind::name)
        .collect();
        let expected = ["auth_connect", "connect", "msg", "raw", "bin", "disconnect"];
        assert_eq!(names[..6], expected);
        assert_eq!(names[6], "presence_leave");
        assert_eq!(PresenceKind::Join.name(), "presence_join");
        assert_eq!(PresenceKind::Update.name(), "presence_update");
    }

    #[test]
    fn the_handle_and_events_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<App>();
        send::<Event>();
        send_sync::<crate::Server>();
    }

    #[test]
    fn close_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn payloads_must_be_json() {
        assert!(check_json(r#"{"a":[1,2]}"#).is_ok());
        assert!(check_json("42").is_ok());
        assert!(check_json("{nope").is_err());
        assert!(check_json("").is_err());
    }
}
