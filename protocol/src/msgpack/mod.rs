//! MessagePack frames (PROTOCOL.md §4): `M:` plus one msgpack map with the envelope's keys.
//!
//! Place in the data path: on the way out, `envelope (JSON text) → **msgpack** → shard`: a
//! message is built once as JSON text by [`crate::envelope`] and [`from_envelope`] rewrites
//! that text as msgpack for `format=msgpack` connections, keeping the key order and the type of
//! every value (integers stay integers, floats stay floats). On the way in, `frame reader →
//! **msgpack** → envelope`: [`parse_inbound`] turns a client's msgpack map into the same
//! [`Inbound`] that JSON gives, through JSON text ([`to_json`]), so the engine and the
//! application see one shape whatever the client sent.
//!
//! One conversion in each direction, both from and to JSON text, the form the rest of the
//! engine already has and trusts. Outbound, [`from_envelope`] reads the JSON once and writes
//! msgpack as it goes, with no tree in between (this runs once per publication). Inbound,
//! the client's msgpack becomes JSON text that sonic-rs then parses as it parses any
//! message: sonic-rs keeps the key order of what it parses, where a tree built by hand would
//! not.
//!
//! Mapping of msgpack types that JSON lacks, inbound: `bin` and `ext` become lowercase hex
//! strings of their bytes (as the 2.x server gives them to applications), map keys that are
//! numbers, booleans or nil become their JSON text (`1` → `"1"`), NaN and infinities become
//! `null`, and the reserved marker `0xc1` reads as nil (rmpv's reading). Keys that are arrays
//! or maps, strings that are not UTF-8, nesting deeper than [`MAX_NESTING`], truncated values
//! and trailing bytes are refused.
//!
//! This module does not frame, seal or decide who gets msgpack: the shard does.

mod scan;
mod transcode;

pub use scan::{Token, Tokens};

use std::borrow::Cow;
use std::io::Write;

use rmpv::ValueRef;
use sonic_rs::Value;

use crate::envelope::{self, Head, Inbound, MAX_NESTING};
use crate::Error;

/// The two bytes every msgpack frame starts with.
pub const PREFIX: &[u8] = b"M:";

/// Appends `M:` and the msgpack form of `json`, one envelope as JSON text, to `out`.
///
/// Like [`from_json`], except that a top-level `sig` key is left out: signatures cover JSON
/// text only (PROTOCOL.md §6) and would be meaningless in a msgpack frame. On error, `out`
/// is left as it was.
pub fn from_envelope(json: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(PREFIX);
    transcode::transcode(json, Some("sig"), out).inspect_err(|_| out.truncate(start))
}

/// Appends the msgpack form of `json` (one JSON value of any kind) to `out`.
///
/// Object keys keep their order. Integers are written as the smallest msgpack integer that
/// holds them, floats as float 64, strings as str. Errors with [`Error::InvalidMessage`] when
/// `json` is not valid JSON or nests deeper than [`MAX_NESTING`]; `out` is then left as it
/// was.
pub fn from_json(json: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    transcode::transcode(json, None, out).inspect_err(|_| out.truncate(start))
}

/// Appends the JSON text of one msgpack value, `bytes` exactly (no trailing bytes), to `out`.
///
/// Errors with [`Error::InvalidMessage`] when `bytes` is not one complete msgpack value,
/// nests deeper than [`MAX_NESTING`], holds a string that is not UTF-8 or a key that is an
/// array or a map, or when the JSON text would exceed `max_len` bytes. `out` is then left as
/// it was. See the module docs for how `bin`, `ext` and non-string keys are written.
pub fn to_json(bytes: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    let value = decode(bytes)?;
    let start = out.len();
    let limit = start.saturating_add(max_len);
    let written = write_json(&value, 0, out).and_then(|()| {
        if out.len() > limit {
            return Err(invalid("message is too large once converted"));
        }
        Ok(())
    });
    written.inspect_err(|_| out.truncate(start))
}

/// The msgpack value `bytes` as a sonic-rs [`Value`] (see [`to_json`]), for callers such as
/// the Python layer that want the same tree a JSON message gives.
pub fn to_value(bytes: &[u8], max_len: usize) -> Result<Value, Error> {
    let mut json = Vec::with_capacity(bytes.len() * 2);
    to_json(bytes, max_len, &mut json)?;
    sonic_rs::from_slice(&json).map_err(|_| invalid("converted message is not JSON"))
}

/// Reads one client message sent as msgpack (without its `M:` prefix) as an envelope.
///
/// The same rules as [`envelope::parse_inbound`] apply to the result: it must be a map with a
/// string `t` or `type`; [`Inbound::raw`] is the message as JSON would have given it.
/// `max_len` bounds the JSON text the message becomes.
pub fn parse_inbound(bytes: &[u8], max_len: usize) -> Result<Inbound, Error> {
    let (json, _) = to_envelope(bytes, max_len)?;
    envelope::parse_inbound(&json)
}

/// Converts one client message sent as msgpack (without its `M:` prefix) to the JSON text
/// of an envelope, and reads its type ([`envelope::scan_inbound`]).
///
/// Errors as [`parse_inbound`] does. The text is valid JSON, so the rest of it parses as
/// any envelope does.
pub fn to_envelope(bytes: &[u8], max_len: usize) -> Result<(Vec<u8>, Head), Error> {
    if !starts_map(bytes) {
        return Err(invalid("msgpack message is not a map"));
    }
    let mut json = Vec::with_capacity(bytes.len() * 2);
    to_json(bytes, max_len, &mut json)?;
    let head = envelope::scan_inbound(&json)?;
    Ok((json, head))
}

/// Reads only the type of one client message sent as msgpack (without its `M:` prefix), for
/// routing, without converting it: the msgpack counterpart of [`envelope::scan_inbound`].
///
/// Unlike the JSON scan it checks the whole message, which costs little in msgpack: one
/// complete map, nothing after it, nesting within [`MAX_NESTING`], strings UTF-8, no key an
/// array or a map. So every message it accepts converts ([`to_json`], without a size
/// bound) and its type is the one [`to_envelope`] reads: the first top-level string key
/// `t` when its value is a string, else the first `type` (`start` is 0).
pub fn scan_inbound(bytes: &[u8]) -> Result<Head, Error> {
    let types = scan::top_map(bytes)?;
    let t = types.t.or(types.alias).ok_or_else(|| invalid(envelope::NO_TYPE))?;
    Ok(Head { t: t.to_owned(), start: 0 })
}

/// One complete msgpack value, `bytes` exactly, as rmpv reads it (strings borrowed).
///
/// Errors when `bytes` is not one value, has bytes after it, or nests far deeper than
/// [`MAX_NESTING`]; the exact nesting rule, UTF-8 and key kinds are [`scan_inbound`]'s and
/// [`to_json`]'s to check.
pub fn decode(bytes: &[u8]) -> Result<ValueRef<'_>, Error> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value_ref_with_max_depth(&mut rest, DECODE_DEPTH)
        .map_err(|_| invalid("message is not valid msgpack or nests too deeply"))?;
    if !rest.is_empty() {
        return Err(invalid("bytes after the msgpack value"));
    }
    Ok(value)
}

/// The text a map key stands for once converted: a string as it is, `bin` and `ext` as
/// lowercase hex, any other scalar as its JSON text (`1` → `"1"`, `true`, `null`, `1.5`).
/// Errors for a key that is an array or a map, or a string that is not UTF-8.
pub fn key_text(key: Token<'_>) -> Result<Cow<'_, str>, Error> {
    let text = match key {
        Token::Str(bytes) => return scan::text(bytes).map(Cow::Borrowed),
        Token::Bin(bytes) | Token::Ext(_, bytes) => hex(bytes),
        Token::Array(_) | Token::Map(_) => return Err(invalid("msgpack map key is not a scalar")),
        Token::Nil => "null".to_owned(),
        Token::Bool(b) => b.to_string(),
        Token::Int(n) => n.to_string(),
        Token::Uint(n) => n.to_string(),
        Token::F32(f) => float_text(f64::from(f)),
        Token::F64(f) => float_text(f),
    };
    Ok(Cow::Owned(text))
}

/// A map key of rmpv's tree as the [`Token`] it was read from.
fn key_token<'a>(key: &'a ValueRef<'a>) -> Token<'a> {
    match key {
        ValueRef::Nil => Token::Nil,
        ValueRef::Boolean(b) => Token::Bool(*b),
        ValueRef::Integer(n) => n.as_u64().map_or(Token::Int(n.as_i64().unwrap_or(0)), Token::Uint),
        ValueRef::F32(f) => Token::F32(*f),
        ValueRef::F64(f) => Token::F64(*f),
        ValueRef::String(s) => Token::Str(s.as_bytes()),
        ValueRef::Binary(bytes) => Token::Bin(bytes),
        ValueRef::Ext(kind, bytes) => Token::Ext(*kind, bytes),
        ValueRef::Array(items) => Token::Array(items.len()),
        ValueRef::Map(members) => Token::Map(members.len()),
    }
}

/// Bytes as lowercase hex, the form `bin` and `ext` values take once converted.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The msgpack body of an inbound binary message, if it is one: after an `M:` prefix on any
/// connection, or the whole message when it starts with a map on a `format=msgpack`
/// connection (`msgpack_connection`). A map marker never collides with the other formats,
/// whose first bytes are `{`, `C:`, `E:` or `0x78`.
pub fn body_of(data: &[u8], msgpack_connection: bool) -> Option<&[u8]> {
    if let Some(body) = data.strip_prefix(PREFIX) {
        return Some(body);
    }
    (msgpack_connection && starts_map(data)).then_some(data)
}

/// Whether `bytes` starts with a msgpack map marker (fixmap, map 16 or map 32).
pub fn starts_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

/// Whether messages of type `t` stay JSON text on msgpack connections: the heartbeats, which
/// 2.x clients recognise only as text frames starting `{"c":"WSE","t":"PONG"` or
/// `{"c":"WSE","t":"ping"` (PROTOCOL.md §7, §11). Everything else goes as `M:`.
pub fn stays_json(t: &str) -> bool {
    matches!(t, "PONG" | "ping")
}

/// Writes one msgpack value as JSON text; `depth` counts the arrays and maps around it.
fn write_json(value: &ValueRef<'_>, depth: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    match value {
        ValueRef::Nil => out.extend_from_slice(b"null"),
        ValueRef::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        ValueRef::Integer(n) => write_integer(n, out),
        ValueRef::F32(f) => write_float(f64::from(*f), out),
        ValueRef::F64(f) => write_float(*f, out),
        ValueRef::String(s) => {
            let s = s.as_str().ok_or_else(|| invalid("msgpack string is not UTF-8"))?;
            envelope::write_str(s, out);
        }
        ValueRef::Binary(bytes) | ValueRef::Ext(_, bytes) => write_hex(bytes, out),
        ValueRef::Array(items) => {
            enter(depth)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, depth + 1, out)?;
            }
            out.push(b']');
        }
        ValueRef::Map(members) => {
            enter(depth)?;
            out.push(b'{');
            for (i, (key, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_key(key, out)?;
                out.push(b':');
                write_json(member, depth + 1, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Errors when one more array or map inside `depth` others would nest too deeply.
fn enter(depth: usize) -> Result<(), Error> {
    if depth >= MAX_NESTING {
        return Err(invalid("message is nested too deeply"));
    }
    Ok(())
}

/// Writes a map key as a JSON string: the text [`key_text`] gives.
fn write_key(key: &ValueRef<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
    envelope::write_str(&key_text(key_token(key))?, out);
    Ok(())
}

fn write_integer(n: &rmpv::Integer, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => write!(out, "{u}"),
        (None, Some(i)) => write!(out, "{i}"),
        // rmpv integers are always one of the two.
        (None, None) => write!(out, "null"),
    };
}

/// Writes a float so that it reads back as a float (`1.0`, never `1`); `null` for NaN and
/// infinities, which JSON cannot express.
fn write_float(f: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(float_text(f).as_bytes());
}

/// The JSON text of a float, as [`write_float`] writes it.
fn float_text(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_owned();
    }
    let mut text = sonic_rs::to_string(&f)
        .expect("invariant: serialising a finite f64 into a String cannot fail");
    if !text.contains(['.', 'e', 'E']) {
        text.push_str(".0");
    }
    text
}

/// Writes bytes as a quoted lowercase hex string.
fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(hex(bytes).as_bytes());
    out.push(b'"');
}

/// An [`Error::InvalidMessage`] with a fixed reason.
fn invalid(reason: &str) -> Error {
    Error::InvalidMessage(reason.to_owned())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The recursion bound handed to rmpv. rmpv counts a level for every value and another for
/// every container's or string's body, so this lets [`MAX_NESTING`] containers through; the
/// exact limit is checked while writing JSON.
const DECODE_DEPTH: usize = 2 * MAX_NESTING + 4;

#[cfg(test)]
mod tests {
    use rmpv::Value as Mp;
    use sonic_rs::JsonValueTrait;

    use super::*;

    /// The msgpack of `json` decoded as an owned rmpv value.
    fn packed(json: &str) -> Mp {
        let mut out = Vec::new();
        from_json(json.as_bytes(), &mut out).expect("valid JSON converts");
        let mut rest = &out[..];
        let value = rmpv::decode::read_value(&mut rest).expect("valid msgpack");
        assert!(rest.is_empty(), "one value only");
        value
    }

    fn encode(value: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encode");
        out
    }

    fn json_of(value: &Mp) -> String {
        let mut out = Vec::new();
        to_json(&encode(value), usize::MAX, &mut out).expect("converts");
        String::from_utf8(out).expect("UTF-8")
    }

    fn map(pairs: Vec<(&str, Mp)>) -> Mp {
        Mp::Map(pairs.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
    }

    #[test]
    fn keeps_key_order_and_value_types() {
        let value = packed(r#"{"c":"U","t":"x","p":{"i":1,"n":-2,"f":1.5,"w":2.0},"o":7}"#);
        let expected = map(vec![
            ("c", Mp::from("U")),
            ("t", Mp::from("x")),
            (
                "p",
                map(vec![
                    ("i", Mp::from(1)),
                    ("n", Mp::from(-2)),
                    ("f", Mp::F64(1.5)),
                    ("w", Mp::F64(2.0)),
                ]),
            ),
            ("o", Mp::from(7)),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn writes_smallest_integer_forms_and_float64() {
        let mut out = Vec::new();
        from_json(
            b"[0,127,128,-1,-33,65536,18446744073709551615,-9223372036854775808,0.5]",
            &mut out,
        )
        .expect("converts");
        let expected = [
            0x99, 0x00, 0x7f, 0xcc, 0x80, 0xff, 0xd0, 0xdf, 0xce, 0x00, 0x01, 0x00, 0x00, 0xcf,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd3, 0x80, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0xcb, 0x3f, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn converts_scalars_strings_and_nesting() {
        let value = packed(r#"{"s":"π \"q\"\n","b":true,"z":null,"a":[[],{}],"e":"","u":"😀"}"#);
        let expected = map(vec![
            ("s", Mp::from("π \"q\"\n")),
            ("b", Mp::Boolean(true)),
            ("z", Mp::Nil),
            ("a", Mp::Array(vec![Mp::Array(vec![]), Mp::Map(vec![])])),
            ("e", Mp::from("")),
            ("u", Mp::from("😀")),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn envelope_drops_only_top_level_sig() {
        let json = br#"{"t":"a","p":{"sig":1},"sig":"abc="}"#;
        let mut out = b"x".to_vec();
        from_envelope(json, &mut out).expect("converts");
        assert!(out.starts_with(b"xM:"));
        let value = rmpv::decode::read_value(&mut &out[3..]).expect("msgpack");
        let expected = map(vec![("t", Mp::from("a")), ("p", map(vec![("sig", Mp::from(1))]))]);
        assert_eq!(value, expected);
    }

    #[test]
    fn refuses_bad_or_too_deep_json_and_leaves_buffer_alone() {
        let deep = format!("{}{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        for bad in [&b"{"[..], b"", b"nul", deep.as_bytes()] {
            let mut out = b"keep".to_vec();
            assert!(from_json(bad, &mut out).is_err(), "{bad:?}");
            assert_eq!(out, b"keep");
            assert!(from_envelope(bad, &mut out).is_err(), "{bad:?}");
            assert_eq!(out, b"keep");
        }
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(from_json(ok.as_bytes(), &mut Vec::new()).is_ok());
    }

    #[test]
    fn msgpack_to_json_keeps_order_and_number_kinds() {
        let value = map(vec![
            ("z", Mp::from(1)),
            ("a", Mp::F64(1.0)),
            ("m", Mp::F32(0.5)),
            ("n", Mp::from(-7)),
            ("big", Mp::from(u64::MAX)),
            ("s", Mp::from("a\"b")),
        ]);
        assert_eq!(
            json_of(&value),
            r#"{"z":1,"a":1.0,"m":0.5,"n":-7,"big":18446744073709551615,"s":"a\"b"}"#
        );
    }

    #[test]
    fn msgpack_to_json_maps_bin_ext_keys_and_non_finite_floats() {
        let value = Mp::Map(vec![
            (Mp::from(1), Mp::Binary(vec![0xff, 0x10])),
            (Mp::Boolean(true), Mp::Ext(1, b"ab".to_vec())),
            (Mp::Nil, Mp::F64(f64::NAN)),
            (Mp::F64(1.5), Mp::F64(f64::INFINITY)),
            (Mp::Binary(vec![1]), Mp::Nil),
        ]);
        assert_eq!(
            json_of(&value),
            r#"{"1":"ff10","true":"6162","null":null,"1.5":null,"01":null}"#
        );
    }

    #[test]
    fn msgpack_to_json_refuses_malformed_input() {
        let too_deep = (0..=MAX_NESTING).fold(Mp::Nil, |inner, _| Mp::Array(vec![inner]));
        let deep_ok = (0..MAX_NESTING).fold(Mp::Nil, |inner, _| Mp::Array(vec![inner]));
        assert!(to_json(&encode(&deep_ok), usize::MAX, &mut Vec::new()).is_ok());
        let mut trailing = encode(&Mp::from(1));
        trailing.push(0xc0);
        let bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x92, 0x01],
            vec![0xa3, b'a'],
            vec![0xa1, 0xff],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0x01],
            encode(&Mp::Map(vec![(Mp::Array(vec![]), Mp::Nil)])),
            encode(&Mp::Map(vec![(Mp::Map(vec![]), Mp::Nil)])),
            encode(&too_deep),
            vec![0x91; 100_000],
            trailing,
        ];
        for input in bad {
            let mut out = b"keep".to_vec();
            let result = to_json(&input, usize::MAX, &mut out);
            assert!(matches!(result, Err(Error::InvalidMessage(_))), "{input:02x?}");
            assert_eq!(out, b"keep");
        }
    }

    #[test]
    fn reserved_marker_reads_as_nil() {
        // rmpv decodes the never-used marker 0xc1 as nil; harmless, so it is not refused.
        let mut out = Vec::new();
        to_json(&[0x91, 0xc1], usize::MAX, &mut out).expect("converts");
        assert_eq!(out, b"[null]");
    }

    #[test]
    fn msgpack_to_json_respects_the_size_bound() {
        let value = Mp::Binary(vec![0; 100]);
        let bytes = encode(&value);
        assert!(to_json(&bytes, 202, &mut Vec::new()).is_ok());
        assert!(to_json(&bytes, 201, &mut Vec::new()).is_err());
    }

    #[test]
    fn parses_inbound_envelope_like_json() {
        let value = map(vec![
            ("t", Mp::from("publish")),
            ("p", map(vec![("topic", Mp::from("a")), ("data", Mp::F64(2.0))])),
            ("cid", Mp::from("c1")),
            ("pri", Mp::from(8)),
        ]);
        let inbound = parse_inbound(&encode(&value), usize::MAX).expect("an envelope");
        assert_eq!(inbound.t, "publish");
        assert_eq!(inbound.cid.as_deref(), Some("c1"));
        assert_eq!(inbound.pri, Some(envelope::Priority::High));
        assert!(inbound.payload().and_then(|p| p.get("data")).is_some_and(|d| d.is_f64()));
        assert_eq!(sonic_rs::to_string(&inbound.raw).expect("JSON"), json_of(&value));
    }

    #[test]
    fn refuses_inbound_that_is_not_an_envelope() {
        for value in [
            Mp::Array(vec![]),
            Mp::from(77),
            map(vec![("p", Mp::Nil)]),
            map(vec![("t", Mp::from(1))]),
        ] {
            let result = parse_inbound(&encode(&value), usize::MAX);
            assert!(matches!(result, Err(Error::InvalidMessage(_))), "{value}");
        }
    }

    #[test]
    fn scan_reads_the_type_conversion_reads() {
        let cases = [
            (map(vec![("p", Mp::Nil), ("t", Mp::from("m"))]), Some("m")),
            (map(vec![("t", Mp::from(1)), ("type", Mp::from("alias"))]), Some("alias")),
            (map(vec![("type", Mp::from("a")), ("t", Mp::from("b"))]), Some("b")),
            (map(vec![("t", Mp::from("x")), ("t", Mp::from("y"))]), Some("x")),
            (Mp::Map(vec![(Mp::Binary(b"t".to_vec()), Mp::from("hex"))]), None),
            (
                Mp::Map(vec![(Mp::from(1), Mp::from("v")), (Mp::from("t"), Mp::from("k"))]),
                Some("k"),
            ),
            (map(vec![("p", Mp::from("m"))]), None),
            (Mp::Array(vec![Mp::from("t"), Mp::from("m")]), None),
        ];
        for (value, t) in cases {
            let bytes = encode(&value);
            let scanned = scan_inbound(&bytes).ok().map(|head| head.t);
            assert_eq!(scanned.as_deref(), t, "{value}");
            let converted = to_envelope(&bytes, usize::MAX).ok().map(|(_, head)| head.t);
            assert_eq!(scanned, converted, "{value}");
        }
    }

    #[test]
    fn scan_accepts_exactly_what_converts() {
        let mut rng = Rng(0x5eed_1234_abcd_0042);
        for round in 0..4_000 {
            let mut members: Vec<(Mp, Mp)> = (0..rng.below(4))
                .map(|i| (Mp::from(format!("k{i}")), random_value(&mut rng, 1)))
                .collect();
            // The kinds JSON lacks, as keys and as values, in every encoding width.
            for _ in 0..rng.below(3) {
                let data =
                    vec![rng.next() as u8; [0, 1, 2, 4, 8, 16, 200, 70_000][rng.below(8) as usize]];
                let odd = match rng.below(6) {
                    0 => Mp::Binary(data),
                    1 => Mp::Ext(rng.next() as i8, data),
                    2 => Mp::F32(f32::from_bits(rng.next() as u32)),
                    3 => Mp::from(rng.next() as i64),
                    4 => Mp::Array(vec![Mp::Map(vec![(Mp::Boolean(true), Mp::Nil)]); 2]),
                    _ => Mp::from("x".repeat(data.len())),
                };
                let key = if rng.below(2) == 0 { odd.clone() } else { Mp::from("odd") };
                members.push((key, odd));
            }
            let key = ["t", "type", "tt"][rng.below(3) as usize];
            let t = if rng.below(4) == 0 { Mp::from(7) } else { Mp::from(random_string(&mut rng)) };
            members.insert(rng.below(members.len() as u64 + 1) as usize, (Mp::from(key), t));
            let mut bytes = encode(&Mp::Map(members));
            if round % 50 == 7 {
                // The reserved marker, which reads as nil.
                bytes = [&[0x82, 0xa1, b't', 0xa1, b'm', 0xa1, b'r', 0xc1][..]].concat();
            }
            // Every other message damaged: cut short, a byte changed, or a byte added.
            match round % 6 {
                1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                3 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
                5 => bytes.push(rng.next() as u8),
                _ => {}
            }
            let scanned = scan_inbound(&bytes).map(|head| head.t);
            let converted = to_envelope(&bytes, usize::MAX).map(|(_, head)| head.t);
            assert_eq!(scanned.ok(), converted.ok(), "{bytes:02x?}");
        }
    }

    #[test]
    fn scan_refuses_what_conversion_refuses() {
        let too_deep = (0..MAX_NESTING).fold(Mp::Nil, |inner, _| Mp::Array(vec![inner]));
        let bad_utf8 = [0x82, 0xa1, b't', 0xa1, b'm', 0xa1, b'p', 0xa2, 0xc3, 0x28];
        let bad_key =
            encode(&Mp::Map(vec![(Mp::from("t"), Mp::from("m")), (Mp::Array(vec![]), Mp::Nil)]));
        let mut trailing = encode(&map(vec![("t", Mp::from("m"))]));
        trailing.push(0xc0);
        let bad: Vec<Vec<u8>> = vec![
            vec![],
            encode(&map(vec![("t", Mp::from("m")), ("p", too_deep)])),
            bad_utf8.to_vec(),
            bad_key,
            trailing,
            vec![0x81, 0xa1, b't'],
        ];
        for input in bad {
            assert!(to_envelope(&input, usize::MAX).is_err(), "{input:02x?}");
            let result = scan_inbound(&input);
            assert!(matches!(result, Err(Error::InvalidMessage(_))), "{input:02x?}");
        }
    }

    /// `bytes` read back through [`Tokens`] into rmpv's tree.
    fn rebuilt(tokens: &mut Tokens<'_>) -> Mp {
        match tokens.next_token().expect("a token") {
            Token::Nil => Mp::Nil,
            Token::Bool(b) => Mp::Boolean(b),
            Token::Int(n) => Mp::from(n),
            Token::Uint(n) => Mp::from(n),
            Token::F32(f) => Mp::F32(f),
            Token::F64(f) => Mp::F64(f),
            Token::Str(bytes) => Mp::from(std::str::from_utf8(bytes).expect("UTF-8")),
            Token::Bin(bytes) => Mp::Binary(bytes.to_vec()),
            Token::Ext(kind, bytes) => Mp::Ext(kind, bytes.to_vec()),
            Token::Array(n) => Mp::Array((0..n).map(|_| rebuilt(tokens)).collect()),
            Token::Map(n) => Mp::Map((0..n).map(|_| (rebuilt(tokens), rebuilt(tokens))).collect()),
        }
    }

    #[test]
    fn tokens_read_what_rmpv_reads() {
        let mut rng = Rng(0x70_6b65_6e73);
        let mut values: Vec<Mp> = (0..2_000).map(|_| random_value(&mut rng, 0)).collect();
        for width in [0, 1, 2, 4, 8, 16, 255, 256, 65_535, 65_536] {
            values.push(Mp::Binary(vec![7; width]));
            values.push(Mp::Ext(-2, vec![9; width]));
            values.push(Mp::from("s".repeat(width)));
            values.push(Mp::Array(vec![Mp::Nil; width]));
        }
        for n in [i64::MIN, -129, -128, -33, -32, -1, 0, 127, 128, 255, 65_536, i64::MAX] {
            values.push(Mp::from(n));
        }
        values.extend([Mp::from(u64::MAX), Mp::F32(-0.25), Mp::F64(f64::MIN_POSITIVE)]);
        for value in values {
            let bytes = encode(&value);
            let mut tokens = Tokens::new(&bytes);
            assert_eq!(rebuilt(&mut tokens), value);
            assert!(tokens.is_done());
        }
        assert!(Tokens::new(&[0xc1]).next_token() == Ok(Token::Nil));
        for cut in
            [&[0xcd, 0x01][..], &[0xd9], &[0xa2, b'a'], &[0xd4, 0x01], &[0xc7, 0x02, 0x01, 0]]
        {
            assert!(Tokens::new(cut).next_token().is_err(), "{cut:02x?}");
        }
    }

    #[test]
    fn key_text_is_the_converted_key() {
        let keys = [
            (Mp::from("é"), "é"),
            (Mp::from(1), "1"),
            (Mp::from(-3), "-3"),
            (Mp::Boolean(false), "false"),
            (Mp::Nil, "null"),
            (Mp::F64(1.5), "1.5"),
            (Mp::F64(2.0), "2.0"),
            (Mp::F32(0.5), "0.5"),
            (Mp::F64(f64::NAN), "null"),
            (Mp::Binary(vec![0xab, 0x01]), "ab01"),
            (Mp::Ext(3, vec![0xff]), "ff"),
        ];
        for (key, text) in keys {
            let bytes = encode(&key);
            let token = Tokens::new(&bytes).next_token().expect("one token");
            assert_eq!(key_text(token).expect("a scalar key"), text, "{key}");
            let converted = json_of(&Mp::Map(vec![(key.clone(), Mp::Nil)]));
            assert_eq!(converted, format!("{{{}:null}}", sonic_rs::to_string(text).expect("JSON")));
        }
        assert!(key_text(Token::Array(0)).is_err() && key_text(Token::Str(b"\xff")).is_err());
        assert_eq!(hex(&[0x00, 0x7f, 0x80, 0xff]), "007f80ff");
    }

    #[test]
    fn finds_msgpack_bodies_by_prefix_or_map_marker() {
        assert_eq!(body_of(b"M:\x80", false), Some(&b"\x80"[..]));
        assert_eq!(body_of(b"\x81\xa1t", true), Some(&b"\x81\xa1t"[..]));
        assert_eq!(body_of(b"\x81\xa1t", false), None);
        for other in [&b"{\"t\":1}"[..], b"E:xx", b"C:xx", b"\x78\x9c", b"\x92", b""] {
            assert_eq!(body_of(other, true), None, "{other:?}");
        }
        assert!(starts_map(&[0xde, 0, 1]) && starts_map(&[0xdf]) && !starts_map(&[0xdc]));
    }

    #[test]
    fn only_heartbeats_stay_json() {
        assert!(stays_json("PONG") && stays_json("ping"));
        for t in ["server_ready", "server_hello", "error", "subscription_update", "pong"] {
            assert!(!stays_json(t), "{t}");
        }
    }

    #[test]
    fn to_value_gives_the_json_tree() {
        let value = map(vec![("a", Mp::from(1)), ("b", Mp::F64(0.25))]);
        let tree = to_value(&encode(&value), usize::MAX).expect("converts");
        assert_eq!(tree.get("a").and_then(|v| v.as_u64()), Some(1));
        assert_eq!(tree.get("b").and_then(|v| v.as_f64()), Some(0.25));
    }

    /// A small deterministic generator (xorshift), so the property tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random JSON-representable msgpack value: what JSON → msgpack → JSON must keep.
    fn random_value(rng: &mut Rng, depth: usize) -> Mp {
        let leaf_only = depth >= 6;
        match rng.below(if leaf_only { 7 } else { 9 }) {
            0 => Mp::Nil,
            1 => Mp::Boolean(rng.below(2) == 1),
            2 => Mp::from(rng.next()),
            3 => Mp::from(-((rng.next() >> 1) as i64) - 1),
            4 => Mp::from(rng.below(300) as i64 - 150),
            5 => {
                let f = f64::from_bits(rng.next());
                Mp::F64(if f.is_finite() { f } else { rng.below(1000) as f64 / 8.0 })
            }
            6 => Mp::from(random_string(rng)),
            7 => Mp::Array((0..rng.below(5)).map(|_| random_value(rng, depth + 1)).collect()),
            _ => Mp::Map(
                (0..rng.below(5))
                    .map(|i| {
                        let key = format!("{}{i}", random_string(rng));
                        (Mp::from(key), random_value(rng, depth + 1))
                    })
                    .collect(),
            ),
        }
    }

    fn random_string(rng: &mut Rng) -> String {
        const PIECES: [&str; 8] = ["a", "Z", "\"", "\\", "\n", "\u{1}", "π", "😀"];
        (0..rng.below(6)).map(|_| PIECES[rng.below(8) as usize]).collect()
    }

    /// The tree-walking conversion through sonic-rs: the reference the one-pass
    /// transcoder must agree with, byte for byte.
    fn oracle(json: &[u8]) -> Option<Vec<u8>> {
        use sonic_rs::JsonContainerTrait;

        fn write(value: &Value, out: &mut Vec<u8>) {
            if let Some(s) = value.as_str() {
                rmp::encode::write_str(out, s).unwrap();
            } else if let Some(n) = value.as_u64() {
                rmp::encode::write_uint(out, n).unwrap();
            } else if let Some(n) = value.as_i64() {
                rmp::encode::write_sint(out, n).unwrap();
            } else if let Some(f) = value.as_f64() {
                rmp::encode::write_f64(out, f).unwrap();
            } else if let Some(b) = value.as_bool() {
                rmp::encode::write_bool(out, b).unwrap();
            } else if let Some(items) = value.as_array() {
                rmp::encode::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|item| write(item, out));
            } else if let Some(object) = value.as_object() {
                rmp::encode::write_map_len(out, object.len() as u32).unwrap();
                for (key, member) in object.iter() {
                    rmp::encode::write_str(out, key).unwrap();
                    write(member, out);
                }
            } else {
                rmp::encode::write_nil(out).unwrap();
            }
        }
        let value: Value = sonic_rs::from_slice(json).ok()?;
        let mut out = Vec::new();
        write(&value, &mut out);
        Some(out)
    }

    fn transcoded(json: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        from_json(json.as_bytes(), &mut out).ok()?;
        Some(out)
    }

    #[test]
    fn transcoder_agrees_with_the_tree_walk_on_edge_cases() {
        let wide: Vec<String> = (0..70_000).map(|i| (i % 7).to_string()).collect();
        let wide = format!("[{}]", wide.join(","));
        let keys: Vec<String> = (0..300).map(|i| format!(r#""k{i}":[{i},{{}}]"#)).collect();
        let keys = format!("{{{}}}", keys.join(","));
        let sixteen = format!("[{}]", vec!["[1]"; 16].join(","));
        let cases = [
            "0",
            "-1",
            "1.0",
            "-2.5e-3",
            "1E5",
            "1e+2",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.1",
            "2.2250738585072014e-308",
            "5e-324",
            "1.7976931348623157e308",
            r#""""#,
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            r#""\u00e9\u4e2d\ud83d\ude00 mixed é""#,
            r#""a\u0000b""#,
            " \t\n\r{ \"a\" : [ 1 , true , false , null ] , \"b\" : { } } \n",
            r#"{"dup":1,"dup":2}"#,
            r#"[[],{},[[]],[{}]]"#,
            &sixteen,
            &wide,
            &keys,
        ];
        for json in cases {
            let expected = oracle(json.as_bytes()).unwrap_or_else(|| panic!("sonic reads {json}"));
            let short: String = json.chars().take(60).collect();
            assert_eq!(transcoded(json), Some(expected), "{short}");
        }
        // The one disagreement: sonic-rs reads `-0` as a float, JSON's grammar (and Python)
        // as the integer 0, which the transcoder keeps.
        assert_eq!(transcoded("-0"), Some(vec![0x00]));
    }

    #[test]
    fn transcoder_refuses_what_is_not_json() {
        let cases: [&[u8]; 26] = [
            b"",
            b" ",
            b"{",
            b"[1,",
            b"[1 2]",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"[1,]",
            b"{1:2}",
            b"\"open",
            b"\"ctl \x01\"",
            b"\"bad \\x\"",
            b"\"\\u12\"",
            b"\"\\u12g4\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\xff\"",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b"1e400",
            b"tru",
            b"nul",
            b"{} {}",
        ];
        for json in cases {
            let mut out = b"keep".to_vec();
            let result = from_json(json, &mut out);
            assert!(matches!(result, Err(Error::InvalidMessage(_))), "{json:?}: {result:?}");
            assert_eq!(out, b"keep", "{json:?}");
        }
    }

    #[test]
    fn transcoder_agrees_with_the_tree_walk_on_random_documents() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..5_000 {
            let json = json_of(&random_value(&mut rng, 0));
            let spaced = json.replace(',', " ,\n ").replace(':', " : ");
            for text in [&json, &spaced] {
                let expected = oracle(text.as_bytes()).expect("sonic reads our JSON");
                assert_eq!(transcoded(text), Some(expected), "{text}");
            }
        }
    }

    #[test]
    fn round_trips_many_random_values_both_ways() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5_000 {
            let value = random_value(&mut rng, 0);
            let json = json_of(&value);
            let mut back = Vec::new();
            from_json(json.as_bytes(), &mut back).expect("our JSON converts back");
            let decoded = rmpv::decode::read_value(&mut &back[..]).expect("msgpack");
            assert_eq!(decoded, value, "via {json}");
        }
    }
}
