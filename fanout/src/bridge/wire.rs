//! What the bridge writes to Redis and reads back: names, the ordering script, messages.
//!
//! Place: `publisher thread → **wire** → Redis → **wire** → subscriber thread`. Names, with
//! the configured prefix `P` (default `wse`):
//!
//! | name | what |
//! |---|---|
//! | `P:t:TOPIC` | pub/sub channel of one topic's publications |
//! | `P:i:INSTANCE` | pub/sub channel of direct messages to one instance's connections |
//! | `P:seq:TOPIC` | hash `{e, o}`: the topic's epoch (8 hex digits) and last offset |
//! | `P:dlq:TOPIC` | list of the topic's dead letters, newest last |
//! | `P:dlq` | set of the topics that have dead letters |
//!
//! A publication travels unstamped and unencoded, as a small JSON object (the *body*: origin
//! instance `i`, its number there `n`, `id`, `ts`, `pri`, `t` when given, and the data `p`
//! as it was published); each instance encodes it once for its own subscribers. The
//! [`PUBLISH_SCRIPT`] stamps it: in one atomic step Redis reads (or creates) the topic's
//! epoch, increments its offset, refreshes the hash's TTL to the history TTL (so a topic
//! idle that long starts a new epoch everywhere), and publishes `EPOCH OFFSET\nBODY` on the
//! topic's channel. Redis runs scripts one at a time and delivers a channel's messages to
//! each subscriber in publish order, so every instance sees each topic's publications in
//! offset order.
//!
//! Sans-I/O: builds and parses bytes only.

use std::sync::Arc;

use serde::Deserialize;
use wse_protocol::envelope::{ObjectWriter, Priority};

use super::Outgoing;
use crate::ids::ConnId;

/// The Lua script that stamps and publishes one publication (see the module docs).
/// `KEYS[1]`: the topic's sequence hash. `ARGV`: a fresh random epoch (used only when the
/// topic has none), the TTL in milliseconds, the channel, the body. Returns `{epoch,
/// offset}`.
pub const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', -1)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], epoch .. ' ' .. string.format('%d', offset) .. '\n' .. ARGV[4])
return {epoch, offset}
";

/// The channel of `topic`'s publications.
pub fn topic_channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// The topic named by a publication channel, when `channel` is one under `prefix`.
pub fn topic_of<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(prefix)?.strip_prefix(":t:").filter(|t| !t.is_empty())
}

/// The Redis pattern of the publication channels of the topics `glob` matches (`*` and `?`
/// are wildcards in both syntaxes; Redis's own `[`, `]` and `\` are escaped).
pub fn topic_pattern(prefix: &str, glob: &str) -> String {
    let mut pattern = format!("{prefix}:t:");
    for c in glob.chars() {
        if matches!(c, '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// The channel of direct messages to `instance`'s connections.
pub fn instance_channel(prefix: &str, instance: &str) -> String {
    format!("{prefix}:i:{instance}")
}

/// The hash holding `topic`'s epoch and last offset.
pub fn sequence_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}:seq:{topic}")
}

/// The list of `topic`'s dead letters.
pub fn dlq_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}:dlq:{topic}")
}

/// The set of topics with dead letters.
pub fn dlq_index_key(prefix: &str) -> String {
    format!("{prefix}:dlq")
}

/// The body of a publication leaving `instance` as its number `n` (0: not tracked).
pub fn publication_body(instance: &str, n: u64, message: &Outgoing) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.data.len() + message.id.len() + 96);
    let mut w = ObjectWriter::new(&mut out);
    w.string("i", instance).uint("n", n).string("id", &message.id).uint("ts", message.ts_ms);
    w.uint("pri", message.pri.as_u8().into());
    if let Some(t) = message.event_type.as_deref() {
        w.string("t", t);
    }
    w.raw("p", message.data.as_bytes());
    w.finish();
    out
}

/// A publication as it came from a topic channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The instance it was published on.
    pub instance: String,
    /// Its number there (0: not tracked, e.g. a replayed dead letter).
    pub n: u64,
    /// The publication.
    pub message: Outgoing,
    /// The topic's epoch, as Redis stamped it.
    pub epoch: u32,
    /// Its offset, as Redis stamped it.
    pub offset: u64,
}

/// Parses `EPOCH OFFSET\nBODY`, published on `topic`'s channel.
pub fn parse_publication(topic: &str, payload: &[u8]) -> Result<Received, WireError> {
    let split = payload.iter().position(|&b| b == b'\n').ok_or(WireError::NoStamp)?;
    let (stamp, body) = (&payload[..split], &payload[split + 1..]);
    let stamp = std::str::from_utf8(stamp).map_err(|_| WireError::NoStamp)?;
    let (epoch, offset) = stamp.split_once(' ').ok_or(WireError::NoStamp)?;
    let epoch = u32::from_str_radix(epoch, 16).map_err(|_| WireError::NoStamp)?;
    let offset = offset.parse::<u64>().map_err(|_| WireError::NoStamp)?;
    let body: Body<'_> = sonic_rs::from_slice(body).map_err(|e| WireError::Body(e.to_string()))?;
    let message = Outgoing {
        topic: Arc::from(topic),
        event_type: body.t.map(Into::into),
        data: body.p.as_raw_str().into(),
        pri: Priority::from_wire(body.pri.into()),
        id: body.id.into(),
        ts_ms: body.ts,
    };
    Ok(Received { instance: body.i, n: body.n, message, epoch, offset })
}

/// A direct message for one connection of another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    /// The target connection, as its instance knows it.
    pub conn: ConnId,
    /// The event type `t`.
    pub t: Box<str>,
    /// The payload `p`, JSON text.
    pub payload: Box<str>,
    /// Priority in the connection's queue.
    pub pri: Priority,
    /// Correlation id to carry.
    pub cid: Option<Box<str>>,
}

/// The body of a direct message from `instance`.
pub fn direct_body(instance: &str, direct: &Direct) -> Vec<u8> {
    let mut out = Vec::with_capacity(direct.payload.len() + 96);
    let mut w = ObjectWriter::new(&mut out);
    w.string("i", instance).uint("c", direct.conn.0).string("t", &direct.t);
    w.uint("pri", direct.pri.as_u8().into());
    if let Some(cid) = direct.cid.as_deref() {
        w.string("cid", cid);
    }
    w.raw("p", direct.payload.as_bytes());
    w.finish();
    out
}

/// Parses a direct message from an instance channel.
pub fn parse_direct(payload: &[u8]) -> Result<Direct, WireError> {
    let body: DirectBody<'_> =
        sonic_rs::from_slice(payload).map_err(|e| WireError::Body(e.to_string()))?;
    Ok(Direct {
        conn: ConnId(body.c),
        t: body.t.into(),
        payload: body.p.as_raw_str().into(),
        pri: Priority::from_wire(body.pri.into()),
        cid: body.cid.map(Into::into),
    })
}

/// A publication that could not be sent to Redis, as the dead-letter queue keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The instance it was published on (and delivered to, locally).
    pub instance: String,
    /// The publication.
    pub message: Outgoing,
    /// When it was given up on (milliseconds since the Unix epoch).
    pub failed_ms: u64,
    /// Whether it is in Redis (`false`: still in the instance's local buffer). Not part of
    /// the list entry.
    pub stored: bool,
}

/// The list entry of a dead letter.
pub fn dead_letter_entry(letter: &DeadLetter) -> Vec<u8> {
    let m = &letter.message;
    let mut out = Vec::with_capacity(m.data.len() + m.topic.len() + 128);
    let mut w = ObjectWriter::new(&mut out);
    w.string("topic", &m.topic).string("i", &letter.instance).string("id", &m.id);
    w.uint("ts", m.ts_ms).uint("pri", m.pri.as_u8().into());
    if let Some(t) = m.event_type.as_deref() {
        w.string("t", t);
    }
    w.uint("failed", letter.failed_ms).raw("p", m.data.as_bytes());
    w.finish();
    out
}

/// Parses a dead-letter list entry.
pub fn parse_dead_letter(entry: &[u8]) -> Result<DeadLetter, WireError> {
    let e: Entry<'_> = sonic_rs::from_slice(entry).map_err(|e| WireError::Body(e.to_string()))?;
    let message = Outgoing {
        topic: Arc::from(e.topic),
        event_type: e.t.map(Into::into),
        data: e.p.as_raw_str().into(),
        pri: Priority::from_wire(e.pri.into()),
        id: e.id.into(),
        ts_ms: e.ts,
    };
    Ok(DeadLetter { instance: e.i, message, failed_ms: e.failed, stored: true })
}

/// A message from Redis that the bridge could not read (another program publishing on our
/// channels, or a version mismatch). The message is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A publication without the `EPOCH OFFSET` line the script writes.
    #[error("publication without its stamp line")]
    NoStamp,
    /// The JSON body is malformed or lacks a field.
    #[error("malformed message body: {0}")]
    Body(String),
}

#[derive(Deserialize)]
struct Body<'a> {
    i: String,
    #[serde(default)]
    n: u64,
    id: String,
    ts: u64,
    pri: u8,
    #[serde(default)]
    t: Option<String>,
    #[serde(borrow)]
    p: sonic_rs::LazyValue<'a>,
}

#[derive(Deserialize)]
struct DirectBody<'a> {
    c: u64,
    t: String,
    pri: u8,
    #[serde(default)]
    cid: Option<String>,
    #[serde(borrow)]
    p: sonic_rs::LazyValue<'a>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    topic: String,
    i: String,
    id: String,
    ts: u64,
    pri: u8,
    #[serde(default)]
    t: Option<String>,
    failed: u64,
    #[serde(borrow)]
    p: sonic_rs::LazyValue<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(t: Option<&str>) -> Outgoing {
        Outgoing {
            topic: Arc::from("news"),
            event_type: t.map(Into::into),
            data: r#"{"a":[1,"x\"y"]}"#.into(),
            pri: Priority::High,
            id: "id-1".into(),
            ts_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_stamped_publication_reads_back_as_it_was_sent() {
        let body = publication_body("inst-a", 7, &message(Some("quote")));
        let mut payload = b"0badcafe 41\n".to_vec();
        payload.extend_from_slice(&body);
        let got = parse_publication("news", &payload).expect("parses");
        assert_eq!(got.instance, "inst-a");
        assert_eq!((got.n, got.epoch, got.offset), (7, 0x0bad_cafe, 41));
        assert_eq!(got.message, message(Some("quote")));
        let body = publication_body("inst-a", 0, &message(None));
        let payload = [b"00000001 0\n".as_slice(), &body].concat();
        assert_eq!(parse_publication("news", &payload).expect("parses").message, message(None));
    }

    #[test]
    fn malformed_publications_are_refused() {
        assert_eq!(parse_publication("t", b"{}"), Err(WireError::NoStamp));
        assert_eq!(parse_publication("t", b"zz 1\n{}"), Err(WireError::NoStamp));
        assert_eq!(parse_publication("t", b"00000001 -1\n{}"), Err(WireError::NoStamp));
        assert!(matches!(
            parse_publication("t", b"00000001 1\n{\"i\":1}"),
            Err(WireError::Body(_))
        ));
    }

    #[test]
    fn direct_messages_and_dead_letters_round_trip() {
        let direct = Direct {
            conn: ConnId(1 << 48 | 5),
            t: "notice".into(),
            payload: r#"{"k":1}"#.into(),
            pri: Priority::Low,
            cid: Some("c-9".into()),
        };
        assert_eq!(parse_direct(&direct_body("me", &direct)), Ok(direct));
        let letter = DeadLetter {
            instance: "b".into(),
            message: message(None),
            failed_ms: 99,
            stored: true,
        };
        assert_eq!(parse_dead_letter(&dead_letter_entry(&letter)), Ok(letter));
    }

    #[test]
    fn names_and_patterns() {
        assert_eq!(topic_channel("wse", "a.b"), "wse:t:a.b");
        assert_eq!(topic_of("wse", "wse:t:a.b"), Some("a.b"));
        assert_eq!(topic_of("wse", "wse:i:x"), None);
        assert_eq!(topic_of("wse", "other:t:x"), None);
        assert_eq!(topic_pattern("wse", "chat.*"), "wse:t:chat.*");
        assert_eq!(topic_pattern("wse", r"a[1]\?"), r"wse:t:a\[1\]\\?");
        assert_eq!(instance_channel("p", "i1"), "p:i:i1");
        assert_eq!(sequence_key("p", "t"), "p:seq:t");
        assert_eq!((dlq_key("p", "t"), dlq_index_key("p")), ("p:dlq:t".into(), "p:dlq".into()));
    }
}
