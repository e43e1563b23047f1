//! The WSE JSON envelope (PROTOCOL.md §3): reading client messages, writing server messages.
//!
//! Place in the data path: `shard → protocol (frame reader → **envelope**) → shard/fanout`.
//! A text or binary data message that the frame layer reassembled comes here as bytes and
//! leaves as an [`Inbound`]; [`crate::engine`] then decides whether the engine answers it
//! itself. On the way out, the builders here write JSON text straight into a byte buffer with
//! a fixed key order, so that the bytes clients match on (heartbeats, §7) are exact and a
//! topic publication is serialised once for all its subscribers.
//!
//! This module does not compress, encrypt, sign or frame: those wrap the bytes it writes.

use std::io::Write;

use sonic_rs::{JsonValueTrait, Value};

use crate::time::write_iso8601_millis;
use crate::Error;

/// The `c` key of an envelope: which family of events a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// `WSE`: messages of the protocol itself (handshake, heartbeats, errors, ...).
    System,
    /// `S`: snapshots, answers to a `sync_request`.
    Snapshot,
    /// `U`: updates, everything else.
    Update,
}

impl Category {
    /// The wire spelling: `"WSE"`, `"S"` or `"U"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::System => "WSE",
            Category::Snapshot => "S",
            Category::Update => "U",
        }
    }
}

/// The category of event type `t`, by the rule of PROTOCOL.md §3.
///
/// The snapshot test comes first, so `snapshot_complete` is [`Category::Snapshot`] even though
/// it is also in the system list.
pub fn category_for(t: &str) -> Category {
    if t.contains("_snapshot") || t.starts_with("snapshot_") {
        return Category::Snapshot;
    }
    if SYSTEM_TYPES.contains(&t) {
        return Category::System;
    }
    Category::Update
}

/// The `pri` key: which waiting messages leave first and which are dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Lowest priority, dropped first under backpressure.
    Background = 1,
    /// Below normal.
    Low = 3,
    /// The default; a message without `pri` has this priority.
    #[default]
    Normal = 5,
    /// Above normal.
    High = 8,
    /// Highest priority, sent first and dropped last.
    Critical = 10,
}

impl Priority {
    /// The number of priority levels, i.e. the length of per-priority queue arrays.
    pub const COUNT: usize = 5;

    /// All levels in [`Priority::index`] order, most urgent first.
    pub const ALL: [Priority; Priority::COUNT] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background];

    /// The level for a `pri` number from the wire: exact values map to themselves, others to
    /// the nearest lower level (0 to [`Priority::Background`], above 10 to
    /// [`Priority::Critical`]).
    pub fn from_wire(value: u64) -> Priority {
        match value {
            10.. => Priority::Critical,
            8..=9 => Priority::High,
            5..=7 => Priority::Normal,
            3..=4 => Priority::Low,
            _ => Priority::Background,
        }
    }

    /// The wire number: 10, 8, 5, 3 or 1.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Position in a per-priority array, 0 for [`Priority::Critical`] to 4 for
    /// [`Priority::Background`].
    pub fn index(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
            Priority::Background => 4,
        }
    }
}

/// A client message read as a WSE envelope.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Event type, from `t` or its alias `type`. Always present.
    pub t: String,
    /// Payload, from `p` or its alias `payload`; JSON `null` when neither is present.
    pub p: Value,
    /// Message id (`id`) when it is a string.
    pub id: Option<String>,
    /// Correlation id (`cid`) when it is a string; replies echo it.
    pub cid: Option<String>,
    /// Priority (`pri`) when it is a number.
    pub pri: Option<Priority>,
    /// The whole object as received (after the legacy prefix was removed), for the
    /// application.
    pub raw: Value,
}

/// Reads one data message as an envelope. Never panics, whatever the bytes.
///
/// A legacy `WSE{`, `S{` or `U{` prefix is stripped (the `{` stays). Errors with
/// [`Error::InvalidMessage`] when the rest is not JSON, is nested deeper than
/// [`MAX_NESTING`], is not an object, or has no string `t` or `type`.
pub fn parse_inbound(text: &[u8]) -> Result<Inbound, Error> {
    let body = strip_legacy_prefix(text);
    if nesting_exceeds(body, MAX_NESTING) {
        return Err(invalid("message is nested too deeply"));
    }
    let raw: Value =
        sonic_rs::from_slice(body).map_err(|_| invalid("message is not valid JSON"))?;
    if !raw.is_object() {
        return Err(invalid("message is not a JSON object"));
    }

    let t = string_at(&raw, "t")
        .or_else(|| string_at(&raw, "type"))
        .ok_or_else(|| invalid("message has no string \"t\" or \"type\""))?;
    let p = raw.get("p").or_else(|| raw.get("payload")).cloned().unwrap_or_default();
    let pri = raw.get("pri").and_then(priority_of);
    Ok(Inbound { t, p, id: string_at(&raw, "id"), cid: string_at(&raw, "cid"), pri, raw })
}

/// Per-message keys of a message addressed to one connection (a direct message).
#[derive(Debug, Clone, Copy)]
pub struct DirectMeta<'a> {
    /// The connection's next sequence number (`server_ready` is 1).
    pub seq: u64,
    /// Message id (a UUIDv7 string, made by the caller).
    pub id: &'a str,
    /// Creation time, unix milliseconds; written as ISO-8601 in `ts`.
    pub now_ms: u64,
    /// Correlation id to echo, when answering a message that carried one.
    pub cid: Option<&'a str>,
    /// Priority; `pri` is written only when it is not [`Priority::Normal`].
    pub pri: Priority,
}

impl<'a> DirectMeta<'a> {
    /// Meta with no correlation id and normal priority.
    pub fn new(seq: u64, id: &'a str, now_ms: u64) -> Self {
        DirectMeta { seq, id, now_ms, cid: None, pri: Priority::Normal }
    }

    /// The same meta, echoing correlation id `cid`.
    pub fn with_cid(self, cid: Option<&'a str>) -> Self {
        DirectMeta { cid, ..self }
    }

    /// The same meta at priority `pri`.
    pub fn with_priority(self, pri: Priority) -> Self {
        DirectMeta { pri, ..self }
    }
}

/// Appends a direct message `{"c","t","p","id","ts","v":1,"seq"[,"cid"][,"pri"]}` to `out`.
///
/// `payload_json` must already be JSON text; it is copied as is.
pub fn direct(t: &str, payload_json: &str, meta: &DirectMeta<'_>, out: &mut Vec<u8>) {
    direct_with(t, meta, out, |out| out.extend_from_slice(payload_json.as_bytes()));
}

/// Like [`direct`], but `write_payload` appends the payload's JSON text in place, which
/// saves building it in a separate buffer first.
pub fn direct_with(
    t: &str,
    meta: &DirectMeta<'_>,
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>),
) {
    let mut w = ObjectWriter::new(out);
    w.string("c", category_for(t).as_str()).string("t", t).nested("p", write_payload);
    w.string("id", meta.id).timestamp("ts", meta.now_ms).uint("v", 1).uint("seq", meta.seq);
    if let Some(cid) = meta.cid {
        w.string("cid", cid);
    }
    if meta.pri != Priority::Normal {
        w.uint("pri", meta.pri.as_u8().into());
    }
    w.finish();
}

/// Keys of one topic publication, serialised once for every subscriber.
#[derive(Debug, Clone, Copy)]
pub struct PublicationMeta<'a> {
    /// The topic published to (`tp`); never a pattern.
    pub topic: &'a str,
    /// The type the publisher gave; `t` is the topic name when this is `None`.
    pub event_type: Option<&'a str>,
    /// Message id (a UUIDv7 string, made by the caller).
    pub id: &'a str,
    /// Creation time, unix milliseconds; written as ISO-8601 in `ts`.
    pub now_ms: u64,
    /// The topic's current epoch (`e`), written as 8 lowercase hex digits.
    pub epoch: u32,
    /// The publication's offset within the epoch (`o`).
    pub offset: u64,
    /// Priority; `pri` is written only when it is not [`Priority::Normal`].
    pub pri: Priority,
}

/// Appends a topic publication `{"c","t","p","id","ts","v":1,"tp","e","o"[,"pri"]}` to `out`.
///
/// Publications carry no `seq`: the same bytes go to every subscriber, and their order is
/// told by `(tp, e, o)`. `payload_json` must already be JSON text; it is copied as is.
pub fn publication(meta: &PublicationMeta<'_>, payload_json: &str, out: &mut Vec<u8>) {
    let t = meta.event_type.unwrap_or(meta.topic);
    let mut w = ObjectWriter::new(out);
    w.string("c", category_for(t).as_str()).string("t", t).raw("p", payload_json.as_bytes());
    w.string("id", meta.id).timestamp("ts", meta.now_ms).uint("v", 1);
    w.string("tp", meta.topic).nested("e", |out| write_epoch(meta.epoch, out));
    w.uint("o", meta.offset);
    if meta.pri != Priority::Normal {
        w.uint("pri", meta.pri.as_u8().into());
    }
    w.finish();
}

/// Writes one JSON object, key by key in call order, into a byte buffer.
///
/// Keys and string values are escaped; raw values are trusted to be JSON text already.
/// [`ObjectWriter::finish`] closes the object; an unfinished writer leaves it open.
#[derive(Debug)]
pub struct ObjectWriter<'a> {
    /// The buffer being appended to; it holds at least the opening `{`.
    out: &'a mut Vec<u8>,
    /// True until the first key is written, so commas go between members only.
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes `key` with a string value.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_str(value, self.out);
        self
    }

    /// Writes `key` with a string value, or `null` when there is none.
    pub fn opt_string(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.string(key, value),
            None => self.null(key),
        }
    }

    /// Writes `key` with an unsigned integer value.
    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{value}");
        self
    }

    /// Writes `key` with a number (see [`write_number`]).
    pub fn number(&mut self, key: &str, value: f64) -> &mut Self {
        self.key(key);
        write_number(value, self.out);
        self
    }

    /// Writes `key` with `true` or `false`.
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { b"true" } else { b"false" })
    }

    /// Writes `key` with `null`.
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.raw(key, b"null")
    }

    /// Writes `key` with an ISO-8601 string for `unix_ms`.
    pub fn timestamp(&mut self, key: &str, unix_ms: u64) -> &mut Self {
        self.nested(key, |out| {
            out.push(b'"');
            write_iso8601_millis(unix_ms, out);
            out.push(b'"');
        })
    }

    /// Writes `key` with `json`, which must already be one JSON value.
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.nested(key, |out| out.extend_from_slice(json))
    }

    /// Writes `key`, then lets `write_value` append exactly one JSON value.
    pub fn nested(&mut self, key: &str, write_value: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        write_value(self.out);
        self
    }

    /// Closes the object.
    pub fn finish(self) {
        self.out.push(b'}');
    }

    /// Writes the separator (when needed), the escaped key and the colon.
    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(key, self.out);
        self.out.push(b':');
    }
}

/// Appends `value` as a quoted, escaped JSON string.
pub fn write_str(value: &str, out: &mut Vec<u8>) {
    sonic_rs::to_writer(&mut *out, value)
        .expect("invariant: serialising a str into a Vec<u8> cannot fail");
}

/// Appends `value` as a JSON number: integers up to 2^53 without a fraction (`1700000000000`,
/// not `1700000000000.0`), other finite values in shortest form, and `null` for NaN or
/// infinity, which JSON cannot express.
pub fn write_number(value: f64, out: &mut Vec<u8>) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
    } else if value.fract() == 0.0 && value.abs() <= MAX_EXACT_INTEGER {
        // Writing into a Vec cannot fail; the cast is exact in this range.
        let _ = write!(out, "{}", value as i64);
    } else {
        sonic_rs::to_writer(&mut *out, &value)
            .expect("invariant: serialising a finite f64 into a Vec<u8> cannot fail");
    }
}

/// Appends a topic epoch as a JSON string of 8 lowercase hex digits.
fn write_epoch(epoch: u32, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "\"{epoch:08x}\"");
}

/// `text` without a legacy `WSE`, `S` or `U` category prefix in front of its `{`.
fn strip_legacy_prefix(text: &[u8]) -> &[u8] {
    for prefix in [&b"WSE{"[..], b"S{", b"U{"] {
        if text.starts_with(prefix) {
            return &text[prefix.len() - 1..];
        }
    }
    text
}

/// Whether arrays and objects in `text` nest deeper than `limit`.
///
/// A cheap byte scan that skips string contents, run before parsing so that hostile input
/// cannot drive a parser or a recursive drop into deep recursion. Malformed text is left to
/// the parser to reject.
fn nesting_exceeds(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            (in_string, escaped) = match (escaped, byte) {
                (true, _) => (true, false),
                (false, b'\\') => (true, true),
                (false, b'"') => (false, false),
                _ => (true, false),
            };
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > limit {
            return true;
        }
    }
    false
}

/// The string at `key` of object `value`, owned, if it is a string.
fn string_at(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

/// A `pri` value read leniently: a non-negative integer maps by [`Priority::from_wire`], a
/// negative one to [`Priority::Background`], anything else is ignored.
pub(crate) fn priority_of(value: &Value) -> Option<Priority> {
    if let Some(n) = value.as_u64() {
        return Some(Priority::from_wire(n));
    }
    value.as_i64().map(|_| Priority::Background)
}

/// An [`Error::InvalidMessage`] with a fixed reason.
fn invalid(reason: &str) -> Error {
    Error::InvalidMessage(reason.to_owned())
}

/// Event types of category `WSE` (PROTOCOL.md §3).
const SYSTEM_TYPES: [&str; 10] = [
    "server_ready",
    "server_hello",
    "client_hello_ack",
    "connection_state_change",
    "subscription_update",
    "snapshot_complete",
    "error",
    "ping",
    "pong",
    "PONG",
];

/// The deepest nesting of arrays and objects accepted in a client message.
pub const MAX_NESTING: usize = 128;

/// 2^53: beyond it not every integer is an f64, so larger values are written as floats.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;
