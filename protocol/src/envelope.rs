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

/// Checks the type a topic publication goes out with (the publisher's type, else the topic
/// name): the engine's own types are refused, since a publication of type `ping` or
/// `server_ready` would reach every subscriber as a system message (`c` `WSE`) that clients
/// act on.
pub fn check_publication_type(t: &str) -> Result<(), Error> {
    if SYSTEM_TYPES.contains(&t) {
        return Err(Error::InvalidMessage(format!(
            "publication type {t:?} is reserved for the engine's own messages; give the \
             publication another type"
        )));
    }
    Ok(())
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

    let t =
        string_at(&raw, "t").or_else(|| string_at(&raw, "type")).ok_or_else(|| invalid(NO_TYPE))?;
    let pri = raw.get("pri").and_then(priority_of);
    Ok(Inbound { t, id: string_at(&raw, "id"), cid: string_at(&raw, "cid"), pri, raw })
}

/// What the engine routes a client message by: its type, and where its JSON object starts.
/// [`scan_inbound`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Event type, from `t` or its alias `type`.
    pub t: String,
    /// Offset of the JSON object in the message: past a legacy `WSE`, `S` or `U` prefix,
    /// else 0.
    pub start: usize,
}

/// Reads only the type of one data message, for routing, without parsing the rest.
///
/// The type comes from the top-level `t`, or `type` when `t` is not a string (the first
/// occurrence of each, as in [`parse_inbound`]). Only the text before the type and the
/// type itself are validated, and nesting is bounded by [`MAX_NESTING`] as in
/// [`parse_inbound`]: a message that passes may still be invalid JSON further on. It is
/// for the messages the engine hands on unread, whose reader (the application) parses the
/// text anyway and must treat a failure as a non-envelope (`raw`) message; for every valid
/// envelope the type is the one [`parse_inbound`] reads.
pub fn scan_inbound(text: &[u8]) -> Result<Head, Error> {
    let body = strip_legacy_prefix(text);
    if nesting_exceeds(body, MAX_NESTING) {
        return Err(invalid("message is nested too deeply"));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid("message is not a JSON object"));
    }
    let t = top_level_string(body, "t")
        .or_else(|| top_level_string(body, "type"))
        .ok_or_else(|| invalid(NO_TYPE))?;
    Ok(Head { t, start: text.len() - body.len() })
}

impl Inbound {
    /// The payload: `p`, or its alias `payload`; `None` when neither is present. Read from
    /// [`Inbound::raw`] rather than copied out of it, so that a message the engine only
    /// hands on costs no second copy of its payload.
    pub fn payload(&self) -> Option<&Value> {
        self.raw.get("p").or_else(|| self.raw.get("payload"))
    }
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
pub(crate) fn nesting_exceeds(text: &[u8], limit: usize) -> bool {
    // Depth can pass the limit only with more opening brackets than that in all (quotes
    // included): memchr's SIMD search for the first `limit + 1` of them settles most
    // messages without the byte-by-byte scan (a 16 KiB message costs a few hundred
    // nanoseconds instead of tens of microseconds).
    if memchr::memchr2_iter(b'[', b'{', text).nth(limit).is_none() {
        return false;
    }
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
/// The string at top-level `key` of the object `body`, read lazily.
fn top_level_string(body: &[u8], key: &str) -> Option<String> {
    let value = sonic_rs::get_from_slice(body, &[key]).ok()?;
    value.as_str().map(str::to_owned)
}

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

/// The deepest nesting of arrays and objects accepted in a client message, the envelope
/// object included.
///
/// sonic-rs parses recursively. Measured here: in a debug build it overflows a 2 MiB thread
/// stack at 41 to 50 levels; in release it stops at 254 levels by itself. 32 levels keep
/// both builds safe and are far more than real envelopes use.
pub const MAX_NESTING: usize = 32;

/// Why a message without a string `t` or `type` is not an envelope.
pub(crate) const NO_TYPE: &str = "message has no string \"t\" or \"type\"";

/// 2^53: beyond it not every integer is an f64, so larger values are written as floats.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

#[cfg(test)]
mod tests {
    use sonic_rs::JsonContainerTrait;

    use super::*;

    /// 2026-01-15T10:30:00.123Z.
    const NOW: u64 = 1_768_473_000_123;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("builders write UTF-8")
    }

    fn reparse(out: &[u8]) -> Value {
        sonic_rs::from_slice(out).expect("builder output is JSON")
    }

    fn keys(value: &Value) -> Vec<String> {
        let object = value.as_object().expect("an object");
        object.iter().map(|(k, _)| k.to_owned()).collect()
    }

    fn parsed(text: &str) -> Inbound {
        parse_inbound(text.as_bytes()).expect("valid envelope")
    }

    #[test]
    fn system_types_are_category_wse() {
        for t in SYSTEM_TYPES.iter().filter(|t| **t != "snapshot_complete") {
            assert_eq!(category_for(t), Category::System, "{t}");
        }
    }

    #[test]
    fn snapshot_rule_wins_over_system_list() {
        // §3 states the snapshot test first; `snapshot_complete` matches it.
        assert_eq!(category_for("snapshot_complete"), Category::Snapshot);
    }

    #[test]
    fn snapshot_types_are_category_s() {
        for t in ["prices_snapshot", "user_snapshot_v2", "snapshot_orders", "a_snapshot"] {
            assert_eq!(category_for(t), Category::Snapshot, "{t}");
        }
    }

    #[test]
    fn other_types_are_category_u() {
        for t in ["price_update", "snapshot", "snapshots", "Ping", "PING", "errors", ""] {
            assert_eq!(category_for(t), Category::Update, "{t:?}");
        }
    }

    #[test]
    fn category_spells_wire_names() {
        assert_eq!(Category::System.as_str(), "WSE");
        assert_eq!(Category::Snapshot.as_str(), "S");
        assert_eq!(Category::Update.as_str(), "U");
    }

    #[test]
    fn priority_maps_exact_and_in_between_values_down() {
        let table = [
            (0, Priority::Background),
            (1, Priority::Background),
            (2, Priority::Background),
            (3, Priority::Low),
            (4, Priority::Low),
            (5, Priority::Normal),
            (7, Priority::Normal),
            (8, Priority::High),
            (9, Priority::High),
            (10, Priority::Critical),
            (11, Priority::Critical),
            (u64::MAX, Priority::Critical),
        ];
        for (wire, pri) in table {
            assert_eq!(Priority::from_wire(wire), pri, "{wire}");
        }
    }

    #[test]
    fn priority_round_trips_wire_numbers_and_indexes() {
        for (i, pri) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(pri.index(), i);
            assert_eq!(Priority::from_wire(pri.as_u8().into()), pri);
        }
        assert_eq!(Priority::Critical.as_u8(), 10);
        assert_eq!(Priority::Background.as_u8(), 1);
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn parses_full_envelope() {
        let msg = parsed(r#"{"c":"U","t":"chat","p":{"x":1},"id":"m1","cid":"c1","pri":8}"#);
        assert_eq!(msg.t, "chat");
        assert_eq!(msg.payload().and_then(|p| p.get("x")).and_then(|v| v.as_u64()), Some(1));
        assert_eq!(msg.id.as_deref(), Some("m1"));
        assert_eq!(msg.cid.as_deref(), Some("c1"));
        assert_eq!(msg.pri, Some(Priority::High));
        assert_eq!(msg.raw.get("c").and_then(|v| v.as_str()), Some("U"));
    }

    #[test]
    fn strips_legacy_prefixes() {
        for text in [r#"WSE{"t":"a"}"#, r#"S{"t":"a"}"#, r#"U{"t":"a"}"#] {
            assert_eq!(parsed(text).t, "a", "{text}");
        }
    }

    #[test]
    fn strips_only_a_leading_prefix() {
        assert!(parse_inbound(br#"XWSE{"t":"a"}"#).is_err());
        assert!(parse_inbound(br#"WSE {"t":"a"}"#).is_err());
    }

    #[test]
    fn reads_type_and_payload_aliases() {
        let msg = parsed(r#"{"type":"chat","payload":[1,2]}"#);
        assert_eq!(msg.t, "chat");
        assert!(msg.payload().is_some_and(|p| p.is_array()));
    }

    #[test]
    fn prefers_short_keys_over_aliases() {
        let msg = parsed(r#"{"type":"long","t":"short","payload":1,"p":2}"#);
        assert_eq!(msg.t, "short");
        assert_eq!(msg.payload().and_then(|p| p.as_u64()), Some(2));
    }

    #[test]
    fn keeps_explicit_null_payload_over_alias() {
        assert!(parsed(r#"{"t":"a","p":null,"payload":1}"#).payload().is_some_and(|p| p.is_null()));
    }

    #[test]
    fn missing_payload_is_none() {
        let msg = parsed(r#"{"t":"a"}"#);
        assert!(msg.payload().is_none());
        assert_eq!((msg.id, msg.cid, msg.pri), (None, None, None));
    }

    #[test]
    fn non_string_type_falls_back_to_alias() {
        assert_eq!(parsed(r#"{"t":7,"type":"a"}"#).t, "a");
    }

    #[test]
    fn ignores_ids_and_priorities_of_the_wrong_type() {
        let msg = parsed(r#"{"t":"a","id":5,"cid":{},"pri":"high"}"#);
        assert_eq!((msg.id, msg.cid, msg.pri), (None, None, None));
        assert_eq!(parsed(r#"{"t":"a","pri":-3}"#).pri, Some(Priority::Background));
        assert_eq!(parsed(r#"{"t":"a","pri":4}"#).pri, Some(Priority::Low));
    }

    #[test]
    fn rejects_nasty_inputs_without_panicking() {
        let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_objects = format!(r#"{}1{}"#, r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        let deep_payload = format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        let nasty: Vec<&[u8]> = vec![
            b"",
            b" ",
            b"{",
            b"}",
            b"[]",
            b"[{\"t\":\"a\"}]",
            b"42",
            b"-0.5e9",
            b"\"t\"",
            b"null",
            b"true",
            b"WSE",
            b"WSE{",
            b"S{",
            b"U{}",
            b"{}",
            b"{\"t\":1}",
            b"{\"t\":null}",
            b"{\"t\":\"\xff\"}",
            b"\xff\xfe\xfd",
            b"{\"t\":\"a\"}trailing",
            b"{\"t\":\"a\",}",
            b"]]]]{{{{",
            b"{\"t\":\"\\ud800\"}x",
            deep_arrays.as_bytes(),
            deep_objects.as_bytes(),
            deep_payload.as_bytes(),
        ];
        for input in nasty {
            let result = parse_inbound(input);
            assert!(matches!(result, Err(Error::InvalidMessage(_))), "{input:?}: {result:?}");
        }
    }

    #[test]
    fn accepts_nesting_up_to_the_limit() {
        let inner = MAX_NESTING - 1;
        let text = format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(inner), "]".repeat(inner));
        assert_eq!(parsed(&text).t, "a");
        let text = format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(inner + 1), "]".repeat(inner + 1));
        assert!(parse_inbound(text.as_bytes()).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let noise = r#"[{\"\\"#.repeat(1_000);
        let msg = parsed(&format!(r#"{{"t":"a","p":"{noise}"}}"#));
        assert_eq!(msg.payload().and_then(|p| p.as_str()), Some("[{\"\\".repeat(1_000).as_str()));
    }

    /// Fails unless [`scan_inbound`] reads the type [`parse_inbound`] reads from `input`
    /// whenever the latter accepts it.
    fn scan_agrees(input: &[u8]) {
        let Ok(parsed) = parse_inbound(input) else { return };
        let scanned = scan_inbound(input).map(|h| h.t).ok();
        assert_eq!(scanned, Some(parsed.t), "{:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn scan_reads_the_type_of_every_envelope_parse_accepts() {
        let deep = MAX_NESTING - 1;
        let at_limit = format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(deep), "]".repeat(deep));
        let over = format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(deep + 1), "]".repeat(deep + 1));
        let cases: Vec<&[u8]> = vec![
            br#"{"t":"m","p":{"n":1,"pad":"xx"}}"#,
            br#"  {"type":"chat","payload":[1,2]}  "#,
            br#"{"type":"long","t":"short"}"#,
            br#"{"t":1,"type":"alias"}"#,
            br#"{"t":"first","t":"second"}"#,
            br#"{"t":1,"t":"second","type":"alias"}"#,
            br#"{"\u0074":"escaped key"}"#,
            br#"{"t":"esc\"aped\u00e9"}"#,
            br#"{"t":{"nested":"t"},"type":"x"}"#,
            br#"WSE{"t":"legacy"}"#,
            br#"S{"t":"snap"}"#,
            br#"U{"t":"upd","p":null}"#,
            br#"{"t":"a","p":[1,2,{"x":[true,false,null,-1.5e3]}]}"#,
            br#"{"t":"a","p":"unterminated}"#,
            br#"{"t":"a","p":01}"#,
            br#"{"t":"a","p":tru}"#,
            br#"{"t":"a","p":[1,]}"#,
            br#"{"t":"a"} {"t":"b"}"#,
            b"{\"t\":\"a\",\"p\":\"\xc3\x28\"}",
            b"{\"t\":\"a\",\"p\":\"tab\there\"}",
            br#"{"t":"a","p":"\x"}"#,
            at_limit.as_bytes(),
            over.as_bytes(),
        ];
        for input in cases {
            scan_agrees(input);
        }
    }

    #[test]
    fn scan_reads_the_type_of_mutated_envelopes_parse_accepts() {
        let seed = br#"{"t":"order","id":"m-1","p":{"n":[1,2.5,-3e2],"s":"a\"b","o":{"x":null}}}"#;
        let alphabet = b"{}[]\\\",:tn0-.e\x00\xff ";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut input = seed.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % input.len();
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => input[at] = byte,
                    1 => input.insert(at, byte),
                    _ => drop(input.remove(at)),
                }
            }
            scan_agrees(&input);
        }
    }

    #[test]
    fn scan_refuses_what_has_no_type_is_no_object_or_nests_too_deep() {
        let deep =
            format!(r#"{{"t":"a","p":{}{}}}"#, "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let refused: Vec<&[u8]> = vec![
            b"",
            b"[{\"t\":\"a\"}]",
            b"\"t\"",
            b"{}",
            b"{\"t\":1}",
            b"{\"t\":null,\"type\":2}",
            b"{\"p\":{\"t\":\"nested\"}}",
            b"WSE",
            deep.as_bytes(),
        ];
        for input in refused {
            assert!(scan_inbound(input).is_err(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn scan_leaves_the_text_after_the_type_unread() {
        // The application parses it and treats a failure as a `raw` message.
        let head = scan_inbound(br#"{"t":"a","p":[1,}"#).expect("type read");
        assert_eq!(head.t, "a");
    }

    #[test]
    fn scan_finds_the_object_after_a_legacy_prefix() {
        let head = scan_inbound(br#"WSE{"t":"x"}"#).expect("envelope");
        assert_eq!((head.t.as_str(), head.start), ("x", 3));
        assert_eq!(scan_inbound(br#"{"t":"x"}"#).map(|h| h.start).ok(), Some(0));
    }

    #[test]
    fn writes_direct_message_with_fixed_key_order() {
        let mut out = Vec::new();
        direct("chat", r#"{"x":1}"#, &DirectMeta::new(7, "m1", NOW), &mut out);
        let expected = concat!(
            r#"{"c":"U","t":"chat","p":{"x":1},"id":"m1","#,
            r#""ts":"2026-01-15T10:30:00.123Z","v":1,"seq":7}"#
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn writes_cid_and_non_normal_priority_last() {
        let meta = DirectMeta::new(2, "m", NOW).with_cid(Some("c9")).with_priority(Priority::Low);
        let mut out = Vec::new();
        direct("prices_snapshot", "[]", &meta, &mut out);
        let value = reparse(&out);
        assert_eq!(keys(&value), ["c", "t", "p", "id", "ts", "v", "seq", "cid", "pri"]);
        assert_eq!(value.get("c").and_then(|v| v.as_str()), Some("S"));
        assert_eq!(value.get("pri").and_then(|v| v.as_u64()), Some(3));
    }

    #[test]
    fn omits_normal_priority() {
        let meta = DirectMeta::new(1, "m", NOW).with_priority(Priority::Normal);
        let mut out = Vec::new();
        direct("a", "null", &meta, &mut out);
        assert_eq!(keys(&reparse(&out)), ["c", "t", "p", "id", "ts", "v", "seq"]);
    }

    #[test]
    fn appends_to_existing_buffer() {
        let mut out = b"xyz".to_vec();
        direct("a", "1", &DirectMeta::new(1, "m", NOW), &mut out);
        assert!(out.starts_with(b"xyz{\"c\":"));
    }

    #[test]
    fn escapes_quotes_control_characters_and_unicode() {
        let nasty = "q\"b\\s/\u{1}\n\t\u{7f}π😀\u{2028}";
        let meta = DirectMeta::new(1, nasty, NOW).with_cid(Some(nasty));
        let mut out = Vec::new();
        direct(nasty, "0", &meta, &mut out);
        assert!(!out.iter().any(|b| *b < 0x20), "raw control byte in {:?}", text(&out));
        let value = reparse(&out);
        for key in ["t", "id", "cid"] {
            assert_eq!(value.get(key).and_then(|v| v.as_str()), Some(nasty), "{key}");
        }
    }

    #[test]
    fn writes_publication_with_fixed_key_order() {
        let meta = PublicationMeta {
            topic: "prices.BTC",
            event_type: None,
            id: "m1",
            now_ms: NOW,
            epoch: 0x2a,
            offset: 0,
            pri: Priority::Normal,
        };
        let mut out = Vec::new();
        publication(&meta, r#"{"bid":1.5}"#, &mut out);
        let expected = concat!(
            r#"{"c":"U","t":"prices.BTC","p":{"bid":1.5},"id":"m1","#,
            r#""ts":"2026-01-15T10:30:00.123Z","v":1,"tp":"prices.BTC","e":"0000002a","o":0}"#
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn publication_uses_given_type_and_priority() {
        let meta = PublicationMeta {
            topic: "t\"1",
            event_type: Some("book_snapshot"),
            id: "m",
            now_ms: NOW,
            epoch: u32::MAX,
            offset: u64::MAX,
            pri: Priority::Critical,
        };
        let mut out = Vec::new();
        publication(&meta, "{}", &mut out);
        let value = reparse(&out);
        assert_eq!(keys(&value), ["c", "t", "p", "id", "ts", "v", "tp", "e", "o", "pri"]);
        assert_eq!(value.get("c").and_then(|v| v.as_str()), Some("S"));
        assert_eq!(value.get("t").and_then(|v| v.as_str()), Some("book_snapshot"));
        assert_eq!(value.get("tp").and_then(|v| v.as_str()), Some("t\"1"));
        assert_eq!(value.get("e").and_then(|v| v.as_str()), Some("ffffffff"));
        assert_eq!(value.get("o").and_then(|v| v.as_u64()), Some(u64::MAX));
        assert_eq!(value.get("pri").and_then(|v| v.as_u64()), Some(10));
    }

    #[test]
    fn object_writer_writes_every_kind_of_value() {
        let mut out = Vec::new();
        let mut w = ObjectWriter::new(&mut out);
        w.string("s", "x").opt_string("n", None).uint("u", 3).number("f", 0.25);
        w.boolean("b", false).null("z").raw("r", b"[1]").timestamp("ts", 0);
        w.finish();
        let expected = concat!(
            r#"{"s":"x","n":null,"u":3,"f":0.25,"b":false,"z":null,"r":[1],"#,
            r#""ts":"1970-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn object_writer_escapes_keys_and_closes_empty_object() {
        let mut out = Vec::new();
        ObjectWriter::new(&mut out).finish();
        assert_eq!(out, b"{}");
        let mut out = Vec::new();
        let mut w = ObjectWriter::new(&mut out);
        w.uint("a\"b", 1);
        w.finish();
        assert_eq!(reparse(&out).get("a\"b").and_then(|v| v.as_u64()), Some(1));
    }

    #[test]
    fn numbers_are_integers_when_whole_and_null_when_not_finite() {
        let cases = [
            (1_700_000_000_000.0, "1700000000000"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_number(value, &mut out);
            assert_eq!(text(&out), expected, "{value}");
        }
        let mut out = Vec::new();
        write_number(1e300, &mut out);
        assert_eq!(reparse(&out).as_f64(), Some(1e300));
    }
}
