//! Msgpack for the tests: the server's `M:` frames decoded with rmpv, which shares no code
//! with the server's conversion (JSON text through sonic-rs), and client messages written
//! with it.

use std::time::{Duration, Instant};

pub use rmpv::Value as Mp;

use super::json::{self, Value};
use super::{is_heartbeat, masked, random_key, RawClient, BINARY, FIN, IO_LIMIT, PING, PONG, TEXT};

/// The msgpack bytes of `value`.
pub fn encode(value: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("encode msgpack");
    out
}

/// Decodes exactly one msgpack value from `bytes`; panics on anything else.
pub fn decode(bytes: &[u8]) -> Mp {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest)
        .unwrap_or_else(|e| panic!("not msgpack ({e}): {bytes:02x?}"));
    assert!(rest.is_empty(), "bytes after the msgpack value: {rest:02x?}");
    value
}

/// A map with string keys, in the order given.
pub fn map(pairs: Vec<(&str, Mp)>) -> Mp {
    Mp::Map(pairs.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
}

/// The member `key` of a map.
pub fn get<'a>(value: &'a Mp, key: &str) -> Option<&'a Mp> {
    value.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

/// The value at a path of map keys.
pub fn at<'a>(value: &'a Mp, path: &[&str]) -> Option<&'a Mp> {
    path.iter().try_fold(value, |v, key| get(v, key))
}

/// The string member `key` of a map.
pub fn str_at<'a>(value: &'a Mp, key: &str) -> Option<&'a str> {
    get(value, key)?.as_str()
}

/// The keys of a map, in order.
pub fn keys(value: &Mp) -> Vec<String> {
    let map = value.as_map().expect("a map");
    map.iter().map(|(k, _)| k.as_str().expect("string key").to_owned()).collect()
}

/// The strings of an array value.
pub fn strings(value: &Mp) -> Vec<String> {
    let items = value.as_array().expect("an array");
    items.iter().map(|s| s.as_str().expect("a string").to_owned()).collect()
}

/// A data message a msgpack connection received.
#[derive(Debug, Clone)]
pub enum Received {
    /// An `M:` binary frame, decoded.
    Mp(Mp),
    /// A JSON text frame (server heartbeats excluded).
    Text(Value),
}

/// A byte-exact client of a `format=msgpack` connection.
pub struct MpClient {
    /// The underlying client, for raw frames.
    pub raw: RawClient,
}

impl MpClient {
    /// Completes H0 on `path` (which asks for `format=msgpack`) and reads `server_ready`,
    /// which must come as an `M:` frame with `seq` 1.
    pub fn open(addr: std::net::SocketAddr, path: &str) -> (MpClient, Mp) {
        let mut raw = RawClient::connect(addr);
        raw.upgrade(addr, path, &[]);
        let mut client = MpClient { raw };
        let ready = client.next_mp();
        assert_eq!(str_at(&ready, "t"), Some("server_ready"), "first message: {ready}");
        assert_eq!(get(&ready, "seq").and_then(Mp::as_u64), Some(1), "{ready}");
        (client, ready)
    }

    /// Sends `value` as a masked binary frame `M:` + msgpack.
    pub fn send_mp(&mut self, value: &Mp) {
        let mut payload = b"M:".to_vec();
        payload.extend_from_slice(&encode(value));
        self.send_binary(&payload);
    }

    /// Sends `value` as a masked binary frame of bare msgpack (no prefix).
    pub fn send_bare(&mut self, value: &Mp) {
        self.send_binary(&encode(value));
    }

    /// Sends `payload` as one masked binary frame.
    pub fn send_binary(&mut self, payload: &[u8]) {
        self.raw.send(&masked(FIN | BINARY, payload, random_key()));
    }

    /// The next data message, answering WebSocket Pings and skipping the server's `ping`.
    pub fn next(&mut self) -> Received {
        let deadline = Instant::now() + IO_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.raw.read_frame(left).unwrap_or_else(|e| panic!("no message: {e:?}"));
            match frame.opcode() {
                PING => self.raw.send(&masked(FIN | PONG, &frame.payload, random_key())),
                BINARY => {
                    let body = frame.payload.strip_prefix(b"M:");
                    let body = body.unwrap_or_else(|| panic!("binary frame without M: {frame:?}"));
                    return Received::Mp(decode(body));
                }
                TEXT => {
                    let value = json::parse(&frame.payload).expect("JSON text");
                    if !is_heartbeat(&value) {
                        return Received::Text(value);
                    }
                }
                _ => panic!("unexpected frame {frame:?}"),
            }
        }
    }

    /// The next data message, which must be an `M:` frame.
    pub fn next_mp(&mut self) -> Mp {
        match self.next() {
            Received::Mp(value) => value,
            Received::Text(value) => panic!("expected an M: frame, got text {value:?}"),
        }
    }

    /// The next data message, which must be JSON text.
    pub fn next_text(&mut self) -> Value {
        match self.next() {
            Received::Text(value) => value,
            Received::Mp(value) => panic!("expected JSON text, got M: {value}"),
        }
    }

    /// Asserts that no frame arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        self.raw.expect_silence(quiet);
    }
}
