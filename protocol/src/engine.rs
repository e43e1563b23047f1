//! The messages the engine handles itself (PROTOCOL.md §5 and §7).
//!
//! Place in the data path: `shard → protocol (envelope → **engine**) → shard/fanout`. After
//! [`crate::envelope::parse_inbound`], [`classify`] tells the shard whether a client message
//! is a heartbeat, the `client_hello`, a subscription change or a publish (which the engine
//! acts on), or anything else (which goes to the application). The builders below write the
//! engine's own answers as JSON text with a fixed key order.
//!
//! Left to others: ACLs, subscription limits and history (`fanout/`), E2E key agreement and
//! signing, `sync_request` (answered by the application), and all timing decisions.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::envelope::{
    self, direct_with, priority_of, DirectMeta, Inbound, ObjectWriter, Priority,
};
use crate::topic::validate_topic;
use crate::Error;

/// A client message, sorted by who handles it.
#[derive(Debug, Clone)]
pub enum ClientMessage {
    /// `ping` (or `PING`): answer at once with [`pong`].
    Ping {
        /// `p.timestamp`, the client's clock in unix milliseconds, when it is a number.
        timestamp: Option<f64>,
        /// Correlation id to echo on the `PONG`.
        cid: Option<String>,
    },
    /// `client_hello`: answer with [`server_hello`].
    ClientHello(ClientHello),
    /// `subscription_update` from the client: apply it, answer with [`subscription_answer`],
    /// then hand [`SubscriptionUpdate::inbound`] to the application.
    Subscription(SubscriptionUpdate),
    /// `publish` (**ext**): publish to a topic if the connection may.
    Publish(PublishRequest),
    /// Anything else: a `msg` event for the application.
    App(Inbound),
}

/// The parts of a `client_hello` the engine uses (PROTOCOL.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// `p.protocol_version`, when it is an integer.
    pub protocol_version: Option<i64>,
    /// `p.client_version`, when it is a string.
    pub client_version: Option<String>,
    /// `p.features.encryption` is `true`: the client asks for E2E encryption.
    pub wants_encryption: bool,
    /// `p.encryption_public_key`: base64 of the client's P-256 point, when it is a string.
    pub encryption_public_key: Option<String>,
    /// Correlation id to echo on the answer.
    pub cid: Option<String>,
}

/// `action` of a `subscription_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionAction {
    /// Start receiving the listed topics.
    Subscribe,
    /// Stop receiving the listed topics.
    Unsubscribe,
}

impl SubscriptionUpdate {
    /// The entries of `p.recovery` (`{topic: {epoch, offset}}`) when `p.recover` is `true`;
    /// empty otherwise. `epoch` is the 8-hex-digit string publications carry, `offset` a
    /// non-negative integer; an entry with anything else has `from: None`.
    pub fn recovery_requests(&self) -> Vec<RecoveryRequest> {
        if !self.recover {
            return Vec::new();
        }
        let Some(map) = self.recovery.as_ref().and_then(|r| r.as_object()) else {
            return Vec::new();
        };
        map.iter()
            .map(|(topic, at)| RecoveryRequest { topic: topic.to_owned(), from: read_position(at) })
            .collect()
    }
}

impl SubscriptionAction {
    /// The wire spelling: `"subscribe"` or `"unsubscribe"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionAction::Subscribe => "subscribe",
            SubscriptionAction::Unsubscribe => "unsubscribe",
        }
    }
}

/// A client's `subscription_update` request.
#[derive(Debug, Clone)]
pub struct SubscriptionUpdate {
    /// Subscribe or unsubscribe.
    pub action: SubscriptionAction,
    /// Topic names or patterns, not yet validated (each may fail on its own in the answer).
    pub topics: Vec<String>,
    /// `p.recover` is `true`: replay history from the positions in `recovery`.
    pub recover: bool,
    /// `p.recovery` as sent (`{topic: {epoch, offset}}`), read by the recovery code.
    pub recovery: Option<Value>,
    /// `p.filters` as sent (`{topic: criteria}`), read by the filter code.
    pub filters: Option<Value>,
    /// The whole message, which the application also receives as a `msg` event (§8).
    pub inbound: Inbound,
}

/// A client's `publish` request (**ext**).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The topic; checked to be a valid name without wildcards.
    pub topic: String,
    /// `p.data` serialised back to JSON text, ready for [`crate::envelope::publication`].
    pub data_json: String,
    /// `p.type`, the publication's `t`; the topic name is used when absent.
    pub event_type: Option<String>,
    /// `p.pri`, else the envelope's `pri`, else normal.
    pub pri: Priority,
    /// The envelope's `id` (§3, every client message may carry one): it becomes the
    /// publication's `id` and keys the owner's de-duplication window, so a publish sent twice
    /// (a retry after a reconnect) is delivered once. At most [`MAX_ID_LEN`] bytes.
    pub id: Option<String>,
    /// Correlation id to echo on an error answer.
    pub cid: Option<String>,
}

/// Where a client says it stands in one topic: one entry of a subscribe's `recovery` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The topic (an exact name; it may be covered by a glob of the same subscribe).
    pub topic: String,
    /// `(epoch, offset)` of the last publication the client has, or `None` when the entry
    /// is malformed (the answer is then `recovered: false`).
    pub from: Option<(u32, u64)>,
}

/// One entry of the `recovery` map of a subscription answer (PROTOCOL.md §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryAnswer {
    /// The topic, as the client named it.
    pub topic: String,
    /// Where the topic stands once the client has read the answer: its epoch and the offset
    /// of the last publication sent before it (replayed or live); `None` when the topic has
    /// no known position (never published, or idle past its TTL).
    pub position: Option<(u32, u64)>,
    /// Whether every missed message was replayed.
    pub recovered: bool,
    /// Messages replayed.
    pub count: u64,
}

/// Whether the engine reads messages of type `t` itself, so that they must be parsed whole
/// ([`crate::envelope::parse_inbound`]) before [`classify`]: the messages it answers, and
/// `sync_request`, whose topics it holds back until the snapshot is complete. The others
/// it hands to the application unread.
pub fn needs_document(t: &str) -> bool {
    matches!(t, "ping" | "PING" | "client_hello" | "subscription_update" | "publish")
        || t == "sync_request"
}

/// Sorts a parsed client message (see [`ClientMessage`]).
///
/// Errors with [`Error::InvalidMessage`] when an engine message is malformed (for example a
/// `subscription_update` without an `action`), and with [`Error::InvalidTopic`] when a
/// `publish` names a bad topic.
pub fn classify(inbound: Inbound) -> Result<ClientMessage, Error> {
    match inbound.t.as_str() {
        "ping" | "PING" => Ok(read_ping(inbound)),
        "client_hello" => read_client_hello(inbound).map(ClientMessage::ClientHello),
        "subscription_update" => read_subscription(inbound).map(ClientMessage::Subscription),
        "publish" => read_publish(inbound).map(ClientMessage::Publish),
        _ => Ok(ClientMessage::App(inbound)),
    }
}

/// What the server offers, written as `features` in `server_ready` and `server_hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `C:` compressed frames.
    pub compression: bool,
    /// E2E encryption (`E:` frames).
    pub encryption: bool,
    /// `format=msgpack` connections.
    pub msgpack: bool,
    /// Topic history and recovery on subscribe.
    pub recovery: bool,
    /// Priority queues.
    pub priority_queue: bool,
    /// Several messages per write.
    pub batching: bool,
    /// JWTs are validated by the engine.
    pub rust_jwt: bool,
    /// The socket layer is the Rust engine.
    pub rust_transport: bool,
    /// Presence per topic (`presence_join`, `presence_leave`, `presence_update`).
    pub presence: bool,
}

impl Features {
    /// Appends the features as a JSON object, keys in declaration order.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        w.boolean("compression", self.compression).boolean("encryption", self.encryption);
        w.boolean("msgpack", self.msgpack).boolean("recovery", self.recovery);
        w.boolean("priority_queue", self.priority_queue).boolean("batching", self.batching);
        w.boolean("rust_jwt", self.rust_jwt).boolean("rust_transport", self.rust_transport);
        w.boolean("presence", self.presence);
        w.finish();
    }
}

/// Limits announced in `server_hello` (`p.limits`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest message accepted, in bytes.
    pub max_message_size: u64,
    /// Inbound token bucket size, in messages.
    pub rate_limit_capacity: u64,
    /// Inbound token bucket refill, in messages per second.
    pub rate_limit_refill: f64,
}

/// The contents of a `server_hello` (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy)]
pub struct ServerHello<'a> {
    /// The connection's id (the same as in `server_ready`).
    pub connection_id: &'a str,
    /// The server's version string.
    pub server_version: &'a str,
    /// Interval of the server's `ping` messages, in milliseconds.
    pub ping_interval_ms: u64,
    /// The connection's limits.
    pub limits: Limits,
    /// What the server offers.
    pub features: Features,
    /// The server's public key, only when E2E was agreed.
    pub encryption_public_key: Option<&'a str>,
}

/// Appends `server_ready`, the first message of every admitted connection (`meta.seq` 1).
///
/// `p` is `{message, details: {connection_id, user_id, server_time, version, features}}`;
/// `user_id` is `null` for anonymous connections and `server_time` is `meta.now_ms`.
pub fn server_ready(
    connection_id: &str,
    user_id: Option<&str>,
    features: &Features,
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
) {
    direct_with("server_ready", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        p.string("message", "Connection established").nested("details", |out| {
            let mut d = ObjectWriter::new(out);
            d.string("connection_id", connection_id).opt_string("user_id", user_id);
            d.timestamp("server_time", meta.now_ms).uint("version", PROTOCOL_VERSION);
            d.nested("features", |out| features.write_json(out));
            d.finish();
        });
        p.finish();
    });
}

/// Appends `server_hello`, the answer to `client_hello`. `server_time` is `meta.now_ms`.
pub fn server_hello(hello: &ServerHello<'_>, meta: &DirectMeta<'_>, out: &mut Vec<u8>) {
    direct_with("server_hello", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        p.string("connection_id", hello.connection_id);
        p.string("server_version", hello.server_version).uint("protocol_version", PROTOCOL_VERSION);
        p.timestamp("server_time", meta.now_ms).uint("ping_interval", hello.ping_interval_ms);
        p.nested("features", |out| hello.features.write_json(out));
        p.nested("limits", |out| write_limits(&hello.limits, out));
        if let Some(key) = hello.encryption_public_key {
            p.string("encryption_public_key", key);
        }
        p.finish();
    });
}

/// Appends `PONG`, the answer to a client `ping`; the bytes start with [`PONG_PREFIX`].
///
/// `p` is `{client_timestamp, server_timestamp, latency}` in milliseconds; `latency` is
/// `server_ms - client_timestamp` (negative when the clocks disagree), `null` without a
/// client timestamp.
pub fn pong(
    client_timestamp: Option<f64>,
    server_ms: u64,
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
) {
    direct_with("PONG", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        match client_timestamp {
            Some(client) => p.number("client_timestamp", client),
            None => p.null("client_timestamp"),
        };
        p.uint("server_timestamp", server_ms);
        match client_timestamp {
            Some(client) => p.number("latency", server_ms as f64 - client),
            None => p.null("latency"),
        };
        p.finish();
    });
}

/// Appends the server's heartbeat `{"c":"WSE","t":"ping","p":{"server_time":ms},"ts","v":1}`.
///
/// It starts with [`SERVER_PING_PREFIX`]. `server_time` is unix milliseconds, like the
/// client's `ping` timestamp. Unlike direct messages it has no `seq` and no `id`: one ping
/// text is built per tick and sent to every connection, and a ping lost to backpressure must
/// not look like a gap in the connection's direct messages.
pub fn server_ping(server_ms: u64, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::new(out);
    w.string("c", "WSE").string("t", "ping").nested("p", |out| {
        let mut p = ObjectWriter::new(out);
        p.uint("server_time", server_ms);
        p.finish();
    });
    w.timestamp("ts", server_ms).uint("v", PROTOCOL_VERSION);
    w.finish();
}

/// Appends the answer to a `subscription_update` that asked for no recovery: see
/// [`subscription_answer_with_recovery`]; `recovery` is `{}`.
pub fn subscription_answer(
    action: SubscriptionAction,
    success_topics: &[impl AsRef<str>],
    failed_topics: &[(String, &str)],
    filtered_topics: &[impl AsRef<str>],
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
) {
    subscription_answer_with_recovery(
        action,
        success_topics,
        failed_topics,
        filtered_topics,
        &[],
        meta,
        out,
    );
}

/// Appends the answer to a `subscription_update`.
///
/// `p` is `{action, success_topics, failed_topics, errors, recovery, filtered_topics}`.
/// `failed_topics` stays a list of topic names, as 2.x clients read it; the reason for each
/// is in the separate `errors` map (`{topic: reason}`). `recovery` maps each topic the client
/// asked to recover to `{epoch, offset, recovered, count}`; `epoch` and `offset` are `null`
/// for a topic with no known position. `filtered_topics` (**ext**) lists the subscribed
/// topics that carry a filter (PROTOCOL.md §7 "Filters"), whose offset jumps are filtering,
/// not gaps; 2.x clients ignore the key.
pub fn subscription_answer_with_recovery(
    action: SubscriptionAction,
    success_topics: &[impl AsRef<str>],
    failed_topics: &[(String, &str)],
    filtered_topics: &[impl AsRef<str>],
    recovery: &[RecoveryAnswer],
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
) {
    direct_with("subscription_update", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        p.string("action", action.as_str());
        p.nested("success_topics", |out| write_str_array(success_topics.iter(), out));
        p.nested("failed_topics", |out| write_str_array(failed_topics.iter().map(|f| &f.0), out));
        p.nested("errors", |out| {
            let mut errors = ObjectWriter::new(out);
            for (topic, reason) in failed_topics {
                errors.string(topic, reason);
            }
            errors.finish();
        });
        p.nested("recovery", |out| write_recovery(recovery, out));
        p.nested("filtered_topics", |out| write_str_array(filtered_topics.iter(), out));
        p.finish();
    });
}

/// Appends an `error` message `{code, message, recoverable[, retry_after]}`; `retry_after`
/// is in seconds and left out when `None`.
pub fn error(
    code: &str,
    message: &str,
    recoverable: bool,
    retry_after: Option<f64>,
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
) {
    direct_with("error", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        p.string("code", code).string("message", message).boolean("recoverable", recoverable);
        if let Some(seconds) = retry_after {
            p.number("retry_after", seconds);
        }
        p.finish();
    });
}

/// The state of a connection's inbound token bucket, for `rate_limit_warning`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitStatus {
    /// Messages accepted during the last second.
    pub current_rate: f64,
    /// The refill rate, in messages per second.
    pub limit: f64,
    /// Tokens left in the bucket.
    pub remaining: u64,
    /// Seconds until the bucket is back above the warning threshold.
    pub retry_after: f64,
}

/// Appends `rate_limit_warning` `{current_rate, limit, remaining, retry_after}`
/// (PROTOCOL.md §7), sent when a connection's inbound bucket falls under 20 %.
pub fn rate_limit_warning(status: &RateLimitStatus, meta: &DirectMeta<'_>, out: &mut Vec<u8>) {
    direct_with("rate_limit_warning", meta, out, |out| {
        let mut p = ObjectWriter::new(out);
        p.number("current_rate", status.current_rate).number("limit", status.limit);
        p.uint("remaining", status.remaining).number("retry_after", status.retry_after);
        p.finish();
    });
}

/// Appends the recoverable `error` message for an envelope-level [`Error`]: its
/// [`Error::wire_code`] and its text.
pub fn error_for(err: &Error, meta: &DirectMeta<'_>, out: &mut Vec<u8>) {
    error(err.wire_code(), &err.to_string(), true, None, meta, out);
}

/// `ping` from the client; a payload without a numeric `timestamp` is still a ping.
fn read_ping(inbound: Inbound) -> ClientMessage {
    let timestamp = inbound.payload().and_then(|p| p.get("timestamp")).and_then(|v| v.as_f64());
    ClientMessage::Ping { timestamp, cid: inbound.cid }
}

/// `client_hello`; every field is optional, but the payload must be an object.
fn read_client_hello(inbound: Inbound) -> Result<ClientHello, Error> {
    let p = object_payload(&inbound, "client_hello")?;
    let wants_encryption = p.get("features").and_then(|f| f.get("encryption")).is_some_and(is_true);
    Ok(ClientHello {
        protocol_version: p.get("protocol_version").and_then(|v| v.as_i64()),
        client_version: owned_str(p.get("client_version")),
        wants_encryption,
        encryption_public_key: owned_str(p.get("encryption_public_key")),
        cid: inbound.cid,
    })
}

/// `subscription_update`: needs an `action` and `topics` (a list of strings, or one string).
fn read_subscription(inbound: Inbound) -> Result<SubscriptionUpdate, Error> {
    let p = object_payload(&inbound, "subscription_update")?;
    let action = match p.get("action").and_then(|v| v.as_str()) {
        Some("subscribe") => SubscriptionAction::Subscribe,
        Some("unsubscribe") => SubscriptionAction::Unsubscribe,
        _ => return Err(invalid("subscription_update action must be subscribe or unsubscribe")),
    };
    let topics = read_topics(p.get("topics"))?;
    let recover = p.get("recover").is_some_and(is_true);
    let recovery = p.get("recovery").cloned();
    let filters = p.get("filters").filter(|f| !f.is_null()).cloned();
    if filters.as_ref().is_some_and(|f| !f.is_object()) {
        return Err(invalid("subscription_update filters must be an object of topic criteria"));
    }
    Ok(SubscriptionUpdate { action, topics, recover, recovery, filters, inbound })
}

/// `publish`: needs a valid `topic` without wildcards and a `data` value.
fn read_publish(inbound: Inbound) -> Result<PublishRequest, Error> {
    let p = object_payload(&inbound, "publish")?;
    let topic = p
        .get("topic")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid("publish needs a string topic"))?;
    validate_topic(topic, false)?;
    let data = p.get("data").ok_or_else(|| invalid("publish needs data"))?;
    let data_json = sonic_rs::to_string(data).map_err(|_| invalid("publish data is not JSON"))?;
    let event_type = match p.get("type") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| invalid("publish type must be a string"))?),
    };
    envelope::check_publication_type(event_type.unwrap_or(topic))?;

    let pri = p.get("pri").and_then(priority_of).or(inbound.pri).unwrap_or_default();
    if inbound.id.as_ref().is_some_and(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
        return Err(invalid("publish id must be 1 to 128 bytes"));
    }
    Ok(PublishRequest {
        topic: topic.to_owned(),
        data_json,
        event_type: event_type.map(str::to_owned),
        pri,
        id: inbound.id.clone(),
        cid: inbound.cid.clone(),
    })
}

/// `{epoch, offset}` of a recovery entry: an epoch string of 1 to 8 hex digits and an
/// offset that is a non-negative integer.
fn read_position(at: &Value) -> Option<(u32, u64)> {
    let epoch = at.get("epoch")?.as_str()?;
    if epoch.is_empty() || epoch.len() > 8 {
        return None;
    }
    let epoch = u32::from_str_radix(epoch, 16).ok()?;
    let offset = at.get("offset")?.as_u64()?;
    Some((epoch, offset))
}

/// Appends the `recovery` map of a subscription answer.
fn write_recovery(recovery: &[RecoveryAnswer], out: &mut Vec<u8>) {
    let mut map = ObjectWriter::new(out);
    for answer in recovery {
        map.nested(&answer.topic, |out| {
            let mut entry = ObjectWriter::new(out);
            match answer.position {
                Some((epoch, offset)) => {
                    let epoch = format!("{epoch:08x}");
                    entry.string("epoch", &epoch).uint("offset", offset)
                }
                None => entry.null("epoch").null("offset"),
            };
            entry.boolean("recovered", answer.recovered).uint("count", answer.count);
            entry.finish();
        });
    }
    map.finish();
}

/// `topics` as a list of strings; a single string is a list of one.
fn read_topics(topics: Option<&Value>) -> Result<Vec<String>, Error> {
    let topics = topics.ok_or_else(|| invalid("subscription_update needs topics"))?;
    if let Some(topic) = topics.as_str() {
        return Ok(vec![topic.to_owned()]);
    }
    let list = topics.as_array().ok_or_else(|| invalid("topics must be a list of strings"))?;
    list.iter()
        .map(|t| owned_str(Some(t)).ok_or_else(|| invalid("topics must be a list of strings")))
        .collect()
}

/// The payload of `inbound` if it is an object, else an error naming message type `t`.
fn object_payload<'a>(inbound: &'a Inbound, t: &str) -> Result<&'a Value, Error> {
    if let Some(p) = inbound.payload().filter(|p| p.is_object()) {
        return Ok(p);
    }
    Err(Error::InvalidMessage(format!("{t} payload must be an object")))
}

/// Appends `limits` as `{max_message_size, rate_limit_capacity, rate_limit_refill}`.
fn write_limits(limits: &Limits, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::new(out);
    w.uint("max_message_size", limits.max_message_size);
    w.uint("rate_limit_capacity", limits.rate_limit_capacity);
    w.number("rate_limit_refill", limits.rate_limit_refill);
    w.finish();
}

/// Appends a JSON array of strings.
fn write_str_array<S: AsRef<str>>(items: impl Iterator<Item = S>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::envelope::write_str(item.as_ref(), out);
    }
    out.push(b']');
}

/// The value as an owned string, if it is one.
fn owned_str(value: Option<&Value>) -> Option<String> {
    value.and_then(|v| v.as_str()).map(str::to_owned)
}

/// Whether the value is JSON `true` (anything else, including `"true"`, is false).
fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true)
}

/// An [`Error::InvalidMessage`] with a fixed reason.
fn invalid(reason: &str) -> Error {
    Error::InvalidMessage(reason.to_owned())
}

/// The bytes every server heartbeat starts with; 2.x clients match them as text (§7).
pub const SERVER_PING_PREFIX: &[u8] = br#"{"c":"WSE","t":"ping","p":"#;

/// The bytes every answer to a client ping starts with; 2.x clients match them as text (§7).
pub const PONG_PREFIX: &[u8] = br#"{"c":"WSE","t":"PONG","p":"#;

/// The envelope version, `v`, and `version` in `server_ready`.
pub const PROTOCOL_VERSION: u64 = 1;

/// Longest publisher-given message id accepted on a `publish`, in bytes.
pub const MAX_ID_LEN: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse_inbound;

    /// 2026-01-15T10:30:00.123Z.
    const NOW: u64 = 1_768_473_000_123;

    fn classified(text: &str) -> Result<ClientMessage, Error> {
        classify(parse_inbound(text.as_bytes()).expect("valid envelope"))
    }

    fn meta() -> DirectMeta<'static> {
        DirectMeta::new(1, "m1", NOW)
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("builders write UTF-8")
    }

    fn payload(out: &[u8]) -> Value {
        let value: Value = sonic_rs::from_slice(out).expect("builder output is JSON");
        value.get("p").cloned().expect("a payload")
    }

    fn keys(value: &Value) -> Vec<String> {
        let object = value.as_object().expect("an object");
        object.iter().map(|(k, _)| k.to_owned()).collect()
    }

    #[test]
    fn classifies_ping_in_both_spellings() {
        for t in ["ping", "PING"] {
            let msg = classified(&format!(r#"{{"t":"{t}","p":{{"timestamp":1700}},"cid":"c"}}"#));
            let Ok(ClientMessage::Ping { timestamp, cid }) = msg else { panic!("{t}: {msg:?}") };
            assert_eq!((timestamp, cid.as_deref()), (Some(1700.0), Some("c")));
        }
    }

    #[test]
    fn ping_without_timestamp_is_still_a_ping() {
        for text in [r#"{"t":"ping"}"#, r#"{"t":"ping","p":{"timestamp":"x"}}"#] {
            let msg = classified(text);
            assert!(matches!(msg, Ok(ClientMessage::Ping { timestamp: None, .. })), "{text}");
        }
    }

    #[test]
    fn reads_client_hello() {
        let msg = classified(concat!(
            r#"{"t":"client_hello","p":{"protocol_version":1,"client_version":"2.5.1","#,
            r#""features":{"encryption":true},"encryption_public_key":"BAAA"}}"#
        ));
        let Ok(ClientMessage::ClientHello(hello)) = msg else { panic!("{msg:?}") };
        assert_eq!(hello.protocol_version, Some(1));
        assert_eq!(hello.client_version.as_deref(), Some("2.5.1"));
        assert!(hello.wants_encryption);
        assert_eq!(hello.encryption_public_key.as_deref(), Some("BAAA"));
    }

    #[test]
    fn client_hello_defaults_to_no_encryption() {
        let msg = classified(r#"{"t":"client_hello","p":{"features":{"encryption":"yes"}}}"#);
        let Ok(ClientMessage::ClientHello(hello)) = msg else { panic!("{msg:?}") };
        assert_eq!(hello, ClientHello::default());
    }

    #[test]
    fn rejects_client_hello_without_object_payload() {
        let msg = classified(r#"{"t":"client_hello","p":[1]}"#);
        assert!(matches!(msg, Err(Error::InvalidMessage(_))));
    }

    #[test]
    fn reads_subscription_update_with_recovery_and_filters() {
        let msg = classified(concat!(
            r#"{"t":"subscription_update","cid":"c","p":{"action":"subscribe","#,
            r#""topics":["a","b.*"],"recover":true,"recovery":{"a":{"epoch":"0000002a","#,
            r#""offset":3}},"filters":{"a":{"p.x":{"$gt":1}}}}}"#
        ));
        let Ok(ClientMessage::Subscription(sub)) = msg else { panic!("{msg:?}") };
        assert_eq!(sub.action, SubscriptionAction::Subscribe);
        assert_eq!(sub.topics, ["a", "b.*"]);
        assert!(sub.recover);
        let epoch = sub.recovery.as_ref().and_then(|r| r.pointer(["a", "epoch"]));
        assert_eq!(epoch.and_then(|e| e.as_str()), Some("0000002a"));
        assert!(sub.filters.is_some_and(|f| f.get("a").is_some()));
        assert_eq!(sub.inbound.cid.as_deref(), Some("c"));
    }

    #[test]
    fn subscription_filters_must_be_an_object_when_present() {
        let base = r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["a"],"#;
        for bad in [r#""filters":[]}}"#, r#""filters":"a"}}"#, r#""filters":1}}"#] {
            let text = format!("{base}{bad}");
            assert!(matches!(classified(&text), Err(Error::InvalidMessage(_))), "{text}");
        }
        let msg = classified(&format!(r#"{base}"filters":null}}}}"#));
        let Ok(ClientMessage::Subscription(sub)) = msg else { panic!("{msg:?}") };
        assert!(sub.filters.is_none());
    }

    #[test]
    fn accepts_single_topic_string_and_defaults() {
        let msg =
            classified(r#"{"t":"subscription_update","p":{"action":"unsubscribe","topics":"a"}}"#);
        let Ok(ClientMessage::Subscription(sub)) = msg else { panic!("{msg:?}") };
        assert_eq!(sub.action, SubscriptionAction::Unsubscribe);
        assert_eq!(sub.topics, ["a"]);
        assert!(!sub.recover && sub.recovery.is_none() && sub.filters.is_none());
    }

    #[test]
    fn rejects_malformed_subscription_updates() {
        let bad = [
            r#"{"t":"subscription_update","p":{"topics":["a"]}}"#,
            r#"{"t":"subscription_update","p":{"action":"join","topics":["a"]}}"#,
            r#"{"t":"subscription_update","p":{"action":"subscribe"}}"#,
            r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["a",1]}}"#,
            r#"{"t":"subscription_update","p":{"action":"subscribe","topics":{"a":1}}}"#,
            r#"{"t":"subscription_update","p":"subscribe"}"#,
        ];
        for text in bad {
            assert!(matches!(classified(text), Err(Error::InvalidMessage(_))), "{text}");
        }
    }

    #[test]
    fn reads_publish_with_data_as_json_text() {
        let msg = classified(concat!(
            r#"{"t":"publish","cid":"c","p":{"topic":"chat.1","data":{"m":"hi \"x\""},"#,
            r#""type":"chat_message","pri":8}}"#
        ));
        let Ok(ClientMessage::Publish(publish)) = msg else { panic!("{msg:?}") };
        assert_eq!(publish.topic, "chat.1");
        assert_eq!(publish.data_json, r#"{"m":"hi \"x\""}"#);
        assert_eq!(publish.event_type.as_deref(), Some("chat_message"));
        assert_eq!(publish.pri, Priority::High);
        assert_eq!(publish.cid.as_deref(), Some("c"));
    }

    #[test]
    fn publish_takes_the_envelope_id_and_bounds_its_length() {
        let msg = classified(r#"{"t":"publish","id":"m-1","p":{"topic":"a","data":1}}"#);
        let Ok(ClientMessage::Publish(publish)) = msg else { panic!("{msg:?}") };
        assert_eq!(publish.id.as_deref(), Some("m-1"));
        let msg = classified(r#"{"t":"publish","p":{"topic":"a","data":1}}"#);
        let Ok(ClientMessage::Publish(publish)) = msg else { panic!("{msg:?}") };
        assert_eq!(publish.id, None);
        let long = "x".repeat(MAX_ID_LEN + 1);
        let text = format!(r#"{{"t":"publish","id":"{long}","p":{{"topic":"a","data":1}}}}"#);
        assert!(matches!(classified(&text), Err(Error::InvalidMessage(_))));
        let empty = r#"{"t":"publish","id":"","p":{"topic":"a","data":1}}"#;
        assert!(matches!(classified(empty), Err(Error::InvalidMessage(_))));
    }

    #[test]
    fn reads_recovery_requests_only_when_recover_is_true() {
        let text = concat!(
            r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["a","b","c","d"],"#,
            r#""recover":true,"recovery":{"a":{"epoch":"0000002a","offset":3},"#,
            r#""b":{"epoch":"zz","offset":1},"c":{"epoch":"1","offset":-1},"d":7}}}"#
        );
        let Ok(ClientMessage::Subscription(sub)) = classified(text) else { panic!() };
        let mut requests = sub.recovery_requests();
        requests.sort_by(|x, y| x.topic.cmp(&y.topic));
        let from: Vec<_> = requests.iter().map(|r| (r.topic.as_str(), r.from)).collect();
        assert_eq!(from, [("a", Some((42, 3))), ("b", None), ("c", None), ("d", None)]);

        let off = text.replace(r#""recover":true"#, r#""recover":"yes""#);
        let Ok(ClientMessage::Subscription(sub)) = classified(&off) else { panic!() };
        assert!(sub.recovery_requests().is_empty());
    }

    #[test]
    fn subscription_answer_writes_recovery_entries() {
        let recovery = [
            RecoveryAnswer {
                topic: "a".into(),
                position: Some((0x2a, 9)),
                recovered: true,
                count: 6,
            },
            RecoveryAnswer { topic: "b".into(), position: None, recovered: false, count: 0 },
        ];
        let mut out = Vec::new();
        let action = SubscriptionAction::Subscribe;
        let none: [&str; 0] = [];
        subscription_answer_with_recovery(
            action,
            &["a", "b"],
            &[],
            &none,
            &recovery,
            &meta(),
            &mut out,
        );
        let expected = concat!(
            r#""recovery":{"a":{"epoch":"0000002a","offset":9,"recovered":true,"count":6},"#,
            r#""b":{"epoch":null,"offset":null,"recovered":false,"count":0}},"#,
            r#""filtered_topics":[]}"#
        );
        assert!(text(&out).contains(expected), "{}", text(&out));
    }

    #[test]
    fn publish_priority_falls_back_to_envelope_then_normal() {
        let msg = classified(r#"{"t":"publish","pri":3,"p":{"topic":"a","data":null}}"#);
        let Ok(ClientMessage::Publish(publish)) = msg else { panic!("{msg:?}") };
        assert_eq!((publish.pri, publish.data_json.as_str()), (Priority::Low, "null"));
        let msg = classified(r#"{"t":"publish","p":{"topic":"a","data":1}}"#);
        let Ok(ClientMessage::Publish(publish)) = msg else { panic!("{msg:?}") };
        assert_eq!((publish.pri, publish.event_type), (Priority::Normal, None));
    }

    #[test]
    fn rejects_publish_to_wildcard_topic() {
        let msg = classified(r#"{"t":"publish","p":{"topic":"a.*","data":1}}"#);
        let err = msg.expect_err("wildcards are not publishable");
        assert_eq!(err.wire_code(), "INVALID_TOPIC");
    }

    #[test]
    fn refuses_publications_typed_as_the_engines_own_messages() {
        // By type, or by a topic name that becomes the type; any other type is fine.
        let refused = [
            r#"{"t":"publish","p":{"topic":"room","data":{},"type":"server_ready"}}"#,
            r#"{"t":"publish","p":{"topic":"room","data":{},"type":"PONG"}}"#,
            r#"{"t":"publish","p":{"topic":"room","data":{},"type":"snapshot_complete"}}"#,
            r#"{"t":"publish","p":{"topic":"ping","data":{}}}"#,
            r#"{"t":"publish","p":{"topic":"error","data":{}}}"#,
        ];
        for text in refused {
            let err = classified(text).expect_err(text);
            assert_eq!(err.wire_code(), "INVALID_MESSAGE", "{text}");
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        let allowed = [
            r#"{"t":"publish","p":{"topic":"ping","data":{},"type":"ping_result"}}"#,
            r#"{"t":"publish","p":{"topic":"room","data":{},"type":"Ping"}}"#,
        ];
        for text in allowed {
            assert!(matches!(classified(text), Ok(ClientMessage::Publish(_))), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_publish() {
        let bad = [
            r#"{"t":"publish","p":{"data":1}}"#,
            r#"{"t":"publish","p":{"topic":5,"data":1}}"#,
            r#"{"t":"publish","p":{"topic":"a"}}"#,
            r#"{"t":"publish","p":{"topic":"a","data":1,"type":2}}"#,
            r#"{"t":"publish"}"#,
        ];
        for text in bad {
            assert!(matches!(classified(text), Err(Error::InvalidMessage(_))), "{text}");
        }
    }

    #[test]
    fn passes_other_types_to_the_application() {
        for t in ["sync_request", "chat", "Ping", "pong", "server_hello"] {
            let msg = classified(&format!(r#"{{"t":"{t}","p":{{"k":1}}}}"#));
            let Ok(ClientMessage::App(inbound)) = msg else { panic!("{t}: {msg:?}") };
            assert_eq!(inbound.t, t);
        }
    }

    #[test]
    fn types_handed_on_unread_are_the_ones_classify_leaves_to_the_application() {
        let types = ["ping", "PING", "client_hello", "subscription_update", "publish", "chat"];
        for t in types.into_iter().chain(["m", "Ping", "pong", "snapshot_complete", ""]) {
            let inbound = parse_inbound(format!(r#"{{"t":"{t}"}}"#).as_bytes()).expect("envelope");
            let app = matches!(classify(inbound), Ok(ClientMessage::App(_)));
            assert_eq!(needs_document(t), !app, "{t}");
        }
        assert!(needs_document("sync_request"), "its topics are held");
    }

    #[test]
    fn writes_server_ready() {
        let features = Features { compression: true, rust_transport: true, ..Features::default() };
        let mut out = Vec::new();
        server_ready("conn-1", Some("u\"1"), &features, &meta(), &mut out);
        let expected = concat!(
            r#"{"c":"WSE","t":"server_ready","p":{"message":"Connection established","#,
            r#""details":{"connection_id":"conn-1","user_id":"u\"1","#,
            r#""server_time":"2026-01-15T10:30:00.123Z","version":1,"features":{"#,
            r#""compression":true,"encryption":false,"msgpack":false,"recovery":false,"#,
            r#""priority_queue":false,"batching":false,"rust_jwt":false,"#,
            r#""rust_transport":true,"presence":false}}},"#,
            r#""id":"m1","ts":"2026-01-15T10:30:00.123Z","v":1,"seq":1}"#
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn server_ready_writes_null_user_for_anonymous_connections() {
        let mut out = Vec::new();
        server_ready("c", None, &Features::default(), &meta(), &mut out);
        let user = payload(&out).pointer(["details", "user_id"]).cloned();
        assert!(user.is_some_and(|u| u.is_null()));
    }

    #[test]
    fn writes_server_hello() {
        let hello = ServerHello {
            connection_id: "conn-1",
            server_version: "0.1.0",
            ping_interval_ms: 25_000,
            limits: Limits {
                max_message_size: 1_048_576,
                rate_limit_capacity: 100_000,
                rate_limit_refill: 10_000.0,
            },
            features: Features::default(),
            encryption_public_key: None,
        };
        let mut out = Vec::new();
        server_hello(&hello, &meta(), &mut out);
        let p = payload(&out);
        let expected_keys = [
            "connection_id",
            "server_version",
            "protocol_version",
            "server_time",
            "ping_interval",
            "features",
            "limits",
        ];
        assert_eq!(keys(&p), expected_keys);
        let limits = concat!(
            r#""limits":{"max_message_size":1048576,"rate_limit_capacity":100000,"#,
            r#""rate_limit_refill":10000}"#
        );
        assert!(text(&out).contains(limits), "{}", text(&out));
        assert!(text(&out).starts_with(r#"{"c":"WSE","t":"server_hello","p":{"connection_id""#));

        let hello = ServerHello { encryption_public_key: Some("BKEY"), ..hello };
        let mut out = Vec::new();
        server_hello(&hello, &meta(), &mut out);
        let key =
            payload(&out).get("encryption_public_key").and_then(|k| k.as_str().map(str::to_owned));
        assert_eq!(key.as_deref(), Some("BKEY"));
    }

    #[test]
    fn pong_starts_with_heartbeat_prefix_and_reports_latency() {
        let mut out = Vec::new();
        pong(Some(1_000.0), 1_250, &meta().with_cid(Some("c")), &mut out);
        assert!(out.starts_with(PONG_PREFIX), "{}", text(&out));
        let expected_p = r#""p":{"client_timestamp":1000,"server_timestamp":1250,"latency":250}"#;
        assert!(text(&out).contains(expected_p), "{}", text(&out));
        let value: Value = sonic_rs::from_slice(&out).expect("JSON");
        assert_eq!(keys(&value), ["c", "t", "p", "id", "ts", "v", "seq", "cid"]);
    }

    #[test]
    fn pong_without_client_timestamp_writes_nulls() {
        let mut out = Vec::new();
        pong(None, 1_250, &meta(), &mut out);
        assert!(out.starts_with(PONG_PREFIX));
        let expected_p = r#""p":{"client_timestamp":null,"server_timestamp":1250,"latency":null}"#;
        assert!(text(&out).contains(expected_p), "{}", text(&out));
    }

    #[test]
    fn pong_keeps_fractional_client_timestamps() {
        let mut out = Vec::new();
        pong(Some(999.5), 1_000, &meta(), &mut out);
        let p = payload(&out);
        assert_eq!(p.get("client_timestamp").and_then(|v| v.as_f64()), Some(999.5));
        assert_eq!(p.get("latency").and_then(|v| v.as_f64()), Some(0.5));
    }

    #[test]
    fn server_ping_is_byte_exact() {
        let mut out = Vec::new();
        server_ping(NOW, &mut out);
        assert!(out.starts_with(SERVER_PING_PREFIX));
        let expected = concat!(
            r#"{"c":"WSE","t":"ping","p":{"server_time":1768473000123},"#,
            r#""ts":"2026-01-15T10:30:00.123Z","v":1}"#
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn heartbeat_prefixes_match_protocol_text() {
        assert_eq!(SERVER_PING_PREFIX, b"{\"c\":\"WSE\",\"t\":\"ping\",\"p\":");
        assert_eq!(PONG_PREFIX, b"{\"c\":\"WSE\",\"t\":\"PONG\",\"p\":");
    }

    #[test]
    fn subscription_answer_lists_failed_topics_and_reasons_apart() {
        let failed = [("bad topic".to_owned(), "FORBIDDEN"), ("q\"".to_owned(), "INVALID_TOPIC")];
        let mut out = Vec::new();
        subscription_answer(
            SubscriptionAction::Subscribe,
            &["a", "b.*"],
            &failed,
            &["b.*"],
            &meta(),
            &mut out,
        );
        let expected = concat!(
            r#"{"c":"WSE","t":"subscription_update","p":{"action":"subscribe","#,
            r#""success_topics":["a","b.*"],"failed_topics":["bad topic","q\""],"#,
            r#""errors":{"bad topic":"FORBIDDEN","q\"":"INVALID_TOPIC"},"recovery":{},"#,
            r#""filtered_topics":["b.*"]},"#
        );
        assert!(text(&out).starts_with(expected), "{}", text(&out));
        assert_eq!(
            payload(&out).pointer(["errors", "q\""]).and_then(|v| v.as_str()),
            Some("INVALID_TOPIC")
        );
    }

    #[test]
    fn subscription_answer_with_nothing_writes_empty_lists() {
        let mut out = Vec::new();
        subscription_answer(
            SubscriptionAction::Unsubscribe,
            &[] as &[String],
            &[],
            &[] as &[String],
            &meta(),
            &mut out,
        );
        let expected_p = concat!(
            r#""p":{"action":"unsubscribe","success_topics":[],"failed_topics":[],"#,
            r#""errors":{},"recovery":{},"filtered_topics":[]}"#
        );
        assert!(text(&out).contains(expected_p), "{}", text(&out));
    }

    #[test]
    fn writes_error_with_and_without_retry_after() {
        let mut out = Vec::new();
        error("RATE_LIMITED", "slow \"down\"\n", true, Some(1.5), &meta(), &mut out);
        let expected_p = concat!(
            r#""p":{"code":"RATE_LIMITED","message":"slow \"down\"\n","recoverable":true,"#,
            r#""retry_after":1.5}"#
        );
        assert!(text(&out).contains(expected_p), "{}", text(&out));
        let mut out = Vec::new();
        error("FORBIDDEN", "no", false, None, &meta(), &mut out);
        assert_eq!(keys(&payload(&out)), ["code", "message", "recoverable"]);
    }

    #[test]
    fn error_for_uses_wire_code_and_text() {
        let mut out = Vec::new();
        error_for(&Error::InvalidTopic("topic name is empty"), &meta(), &mut out);
        let p = payload(&out);
        assert_eq!(p.get("code").and_then(|v| v.as_str()), Some("INVALID_TOPIC"));
        assert_eq!(
            p.get("message").and_then(|v| v.as_str()),
            Some("invalid topic: topic name is empty")
        );
        assert_eq!(p.get("recoverable").and_then(|v| v.as_bool()), Some(true));
    }

    #[test]
    fn rate_limit_warning_carries_the_bucket_state() {
        let meta = DirectMeta::new(3, "id-1", 1_700_000_000_000);
        let status =
            RateLimitStatus { current_rate: 120.0, limit: 100.0, remaining: 7, retry_after: 0.5 };
        let mut out = Vec::new();
        rate_limit_warning(&status, &meta, &mut out);
        let v: Value = sonic_rs::from_slice(&out).expect("valid JSON");
        assert_eq!(v["t"].as_str(), Some("rate_limit_warning"));
        assert_eq!(v["p"]["remaining"].as_u64(), Some(7));
        assert_eq!(v["p"]["limit"].as_f64(), Some(100.0));
        assert_eq!(v["p"]["retry_after"].as_f64(), Some(0.5));
        assert_eq!(v["p"]["current_rate"].as_f64(), Some(120.0));
    }
}
