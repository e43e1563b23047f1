//! The checks every inbound data message passes before the engine reads it.
//!
//! Place: `session → **inbound** → engine`. In order: the rate limit (PROTOCOL.md §7, §10;
//! refused messages get `RATE_LIMITED`, a connection that stays over the limit is closed
//! with 4429), E2E decryption of `E:` frames (§5; a frame that does not open is dropped and
//! counted, and the client gets `error` `DECRYPT_FAILED`), and the signature of plaintext
//! JSON when the server requires one (§6). A frame sealed under the connection's E2E key
//! needs no `sig`: AES-GCM already authenticates it.
//!
//! Malformed messages (an `E:` frame that does not open, a `C:` frame that does not inflate,
//! msgpack or an engine message that does not read) are answered one by one and counted per
//! connection: more than [`MALFORMED_LIMIT`] within [`MALFORMED_WINDOW`] close it with 4400
//! (PROTOCOL.md §9), so a broken or hostile sender stops costing the shard an answer each.
//!
//! Compressed input is inflated here too, through the shard's one bounded inflater: a
//! permessage-deflate message before anything else (its inflated size is capped at
//! `max_message_size`: over it close 1009, bad data or bad UTF-8 close 1007), and a `C:`
//! frame after E2E (over the cap close 1009; bad data is dropped with `INVALID_MESSAGE`).
//! Bare zlib (a binary message starting `0x78`) is not inflated: PROTOCOL.md §4 lists it
//! only as something servers never send, not as something clients may.
//! Both inflate one whole message at once (libdeflate has no streaming mode); a compressed
//! text message that came in fragments was already judged fragment by fragment by the
//! reader (`wse_protocol::fragment_check`), so bad UTF-8 fails fast there too.

use std::time::{Duration, Instant};

use wse_protocol::deflate::c_frame_body;
use wse_protocol::engine::{self, RateLimitStatus};
use wse_protocol::envelope::{Head, Priority};
use wse_protocol::msgpack;
use wse_protocol::ratelimit::{Take, TokenBucket};
use wse_protocol::{signing, Error as ProtocolError};

use super::{Session, MALFORMED, RATE_LIMITED};
use crate::config::Security;
use crate::metrics::{Codec, InflateRefusal, SecurityEvent, ShardMetrics};

/// A connection's inbound rate limit and what it has told the client about it.
pub(super) struct InboundLimit {
    bucket: TokenBucket,
    /// The bucket's clock origin.
    born: Instant,
    /// The current spell over the limit: when its first refusal was, and its latest. A
    /// spell ends only after a whole [`RECOVERY`] without refusals, so a client that keeps
    /// sending faster than the refill stays over the limit even though a refilled token
    /// lets one of its messages through now and then.
    over: Option<(Instant, Instant)>,
    /// When the client was last sent `RATE_LIMITED` (at most one a second).
    last_refusal_note: Option<Instant>,
    /// Whether `rate_limit_warning` was sent for the current dip under 20 %.
    warned: bool,
    /// Start of the current one-second window, and messages accepted in it.
    window: (Instant, u32),
    /// Start of the current [`MALFORMED_WINDOW`], and malformed messages in it.
    malformed: (Instant, u32),
}

/// Malformed messages a connection may send within [`MALFORMED_WINDOW`]; one more closes it
/// with 4400.
pub(super) const MALFORMED_LIMIT: u32 = 100;
/// The window [`MALFORMED_LIMIT`] counts in.
const MALFORMED_WINDOW: Duration = Duration::from_secs(10);

impl InboundLimit {
    pub(super) fn new(security: &Security, now: Instant) -> InboundLimit {
        InboundLimit {
            bucket: TokenBucket::new(security.rate_limit_capacity, security.rate_limit_refill, 0),
            born: now,
            over: None,
            last_refusal_note: None,
            warned: false,
            window: (now, 0),
            malformed: (now, 0),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.born).as_millis() as u64
    }

    /// Counts an accepted message in the one-second window; returns the window's count.
    fn count(&mut self, now: Instant) -> u32 {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1
    }
}

impl Session {
    /// Counts a malformed message (already answered); past [`MALFORMED_LIMIT`] within
    /// [`MALFORMED_WINDOW`] the connection is closed with 4400.
    pub(super) fn malformed(&mut self) {
        let now = self.conn.last_seen.get();
        let (since, count) = &mut self.inbound.malformed;
        if now.saturating_duration_since(*since) >= MALFORMED_WINDOW {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        if *count > MALFORMED_LIMIT {
            tracing::debug!(conn = self.conn.id.0, "too many malformed messages; closing 4400");
            self.conn.request_close(MALFORMED);
        }
    }

    /// Takes one token for an inbound data message; `false` when the message is refused.
    /// The message counts as arriving when its bytes were read (one clock read per read,
    /// not per message).
    pub(super) fn take_token(&mut self) -> bool {
        let now = self.conn.last_seen.get();
        let at = self.inbound.millis(now);
        match self.inbound.bucket.try_take(at) {
            Take::Ok { remaining } => {
                let recovered =
                    |(_, last): (Instant, Instant)| now.saturating_duration_since(last) >= RECOVERY;
                if self.inbound.over.is_some_and(recovered) {
                    self.inbound.over = None;
                }
                let rate = self.inbound.count(now);
                self.warn_when_low(remaining, rate);
                true
            }
            Take::Limited { retry_after_ms } => {
                self.refuse_over_limit(now, retry_after_ms);
                false
            }
        }
    }

    /// Sends `rate_limit_warning` once per dip of the bucket under 20 % of its capacity.
    fn warn_when_low(&mut self, remaining: u64, rate: u32) {
        let security = &self.shard.shared.config.security;
        let capacity = security.rate_limit_capacity;
        if remaining >= capacity / 2 {
            self.inbound.warned = false;
        }
        if self.inbound.warned || remaining.saturating_mul(5) >= capacity {
            return;
        }
        self.inbound.warned = true;
        let refill = security.rate_limit_refill;
        let status = RateLimitStatus {
            current_rate: f64::from(rate),
            limit: refill,
            remaining,
            retry_after: (capacity as f64 / 5.0 - remaining as f64).max(0.0) / refill,
        };
        self.send_direct(Priority::High, "rate_limit_warning", None, |meta, out| {
            engine::rate_limit_warning(&status, meta, out);
        });
    }

    /// Refuses a message over the limit: counts it, tells the client at most once a second,
    /// and closes with 4429 once the connection has been over the limit for too long.
    fn refuse_over_limit(&mut self, now: Instant, retry_after_ms: u64) {
        self.shard.metrics().security(SecurityEvent::RateLimited);
        let (since, last) = self.inbound.over.get_or_insert((now, now));
        *last = now;
        let since = *since;
        let close_after = self.shard.shared.config.security.rate_limit_close_after;
        if now.saturating_duration_since(since) >= close_after {
            self.conn.request_close(RATE_LIMITED);
            return;
        }
        let noted = self.inbound.last_refusal_note;
        if noted.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.inbound.last_refusal_note = Some(now);
        let retry_after = Some(retry_after_ms as f64 / 1000.0);
        self.send_direct(Priority::High, "error", None, |meta, out| {
            engine::error("RATE_LIMITED", "too many messages", true, retry_after, meta, out);
        });
    }

    /// Opens an `E:` frame with the connection's key. Returns the plaintext and whether it
    /// arrived sealed; `None` when the frame was dropped (counted).
    pub(super) fn unseal(&mut self, text: bool, data: Vec<u8>) -> Option<(Vec<u8>, bool)> {
        if text || !data.starts_with(b"E:") {
            return Some((data, false));
        }
        let mut data = data;
        let opened = match self.conn.e2e.borrow().as_ref() {
            Some(keys) => keys.open_in_place(&mut data).map(|plain| plain.len()).ok(),
            None => None,
        };
        let Some(len) = opened else {
            self.shard.metrics().security(SecurityEvent::DecryptFailed);
            tracing::debug!(conn = self.conn.id.0, "E: frame did not open; dropped");
            let text = if self.conn.e2e.borrow().is_some() {
                "E: frame did not open under this connection's key"
            } else {
                "E: frame on a connection without an agreed key (send client_hello first)"
            };
            self.send_direct(Priority::High, "error", None, |meta, out| {
                engine::error("DECRYPT_FAILED", text, true, None, meta, out);
            });
            self.malformed();
            return None;
        };
        // The plaintext sits right after the prefix and the IV.
        data.drain(..SEALED_HEADER);
        data.truncate(len);
        Some((data, true))
    }

    /// Reads a msgpack message (its body, after any `M:`): its type, and for the types the
    /// engine acts on its JSON text too; `None` when it is refused. A malformed one is
    /// answered with `error` `INVALID_MESSAGE` and the connection stays open. Msgpack
    /// carries no signature (§6), so when signed messages are required only a sealed one
    /// passes; a plaintext one gets `BAD_SIGNATURE`.
    pub(super) fn read_msgpack(&mut self, body: &[u8], sealed: bool) -> Option<Msgpack> {
        let metrics = self.shard.metrics();
        ShardMetrics::add(&metrics.msgpack_in, 1);
        let config = &self.shard.shared.config;
        if !sealed && config.security.require_signed_inbound {
            metrics.security(SecurityEvent::BadSignature);
            self.send_direct(Priority::High, "error", None, |meta, out| {
                let text = "msgpack messages carry no signature; send signed JSON";
                engine::error("BAD_SIGNATURE", text, true, None, meta, out);
            });
            return None;
        }
        let max_json = config.max_message_size.saturating_mul(MSGPACK_JSON_GROWTH);
        let read = msgpack::scan_inbound(body).and_then(|head| {
            if !engine::needs_document(&head.t) {
                return Ok(Msgpack::Unread);
            }
            let (json, head) = msgpack::to_envelope(body, max_json)?;
            Ok(Msgpack::Converted(json, head))
        });
        read.map_err(|error| {
            ShardMetrics::add(&self.shard.metrics().msgpack_invalid, 1);
            tracing::debug!(conn = self.conn.id.0, %error, "msgpack message refused");
            self.send_direct(Priority::High, "error", None, |meta, out| {
                engine::error_for(&error, meta, out);
            });
            self.malformed();
        })
        .ok()
    }

    /// Inflates a permessage-deflate message; `Err` carries the close code to fail with.
    pub(super) fn inflate(&mut self, text: bool, data: Vec<u8>) -> Result<Vec<u8>, u16> {
        let inflated = self.shard.inflater.borrow_mut().inflate_message(data, text);
        let metrics = self.shard.metrics();
        match inflated {
            Ok(message) => {
                metrics.inflated(Codec::PerMessageDeflate);
                Ok(message)
            }
            Err(error) => {
                metrics.inflate_refused(refusal(&error));
                tracing::debug!(conn = self.conn.id.0, %error, "permessage-deflate refused");
                Err(error.close_code().unwrap_or(1007))
            }
        }
    }

    /// Inflates a plaintext binary `C:` frame (PROTOCOL.md §4); other messages pass as they
    /// are. `None` when the message was refused: too big closes with 1009, data that does
    /// not inflate is answered with `INVALID_MESSAGE`.
    pub(super) fn inflate_c_frame(&mut self, text: bool, data: Vec<u8>) -> Option<Vec<u8>> {
        let Some(zlib) = c_frame_body(&data).filter(|_| !text) else { return Some(data) };
        let inflated = self.shard.inflater.borrow_mut().inflate_zlib(zlib);
        match inflated {
            Ok(message) => {
                self.shard.metrics().inflated(Codec::CFrame);
                return Some(message);
            }
            Err(error) => {
                self.shard.metrics().inflate_refused(refusal(&error));
                tracing::debug!(conn = self.conn.id.0, %error, "C: frame refused");
                if let Some(code @ 1009) = error.close_code() {
                    self.conn.request_close(code);
                    return None;
                }
            }
        }
        self.send_direct(Priority::High, "error", None, |meta, out| {
            engine::error("INVALID_MESSAGE", "C: frame does not inflate", true, None, meta, out);
        });
        self.malformed();
        None
    }

    /// Whether a plaintext JSON message carries a valid `sig` when one is required: under
    /// the connection's E2E signing key once E2E is agreed, else the shared secret (§6). A
    /// refused message is counted and answered with `BAD_SIGNATURE`.
    pub(super) fn signature_ok(&mut self, json: &[u8]) -> bool {
        let shared = &self.shard.shared;
        if !shared.config.security.require_signed_inbound {
            return true;
        }
        let verified = match self.conn.e2e.borrow().as_deref() {
            Some(keys) => signing::verify(keys.signing_key(), json).is_ok(),
            None => {
                shared.guard.signing_key().is_some_and(|key| signing::verify(key, json).is_ok())
            }
        };
        if verified {
            return true;
        }
        self.shard.metrics().security(SecurityEvent::BadSignature);
        self.send_direct(Priority::High, "error", None, |meta, out| {
            engine::error("BAD_SIGNATURE", "signature missing or invalid", true, None, meta, out);
        });
        false
    }
}

/// The metric for an inflation that failed.
fn refusal(error: &ProtocolError) -> InflateRefusal {
    match error {
        ProtocolError::MessageTooBig { .. } => InflateRefusal::TooBig,
        ProtocolError::InvalidUtf8 => InflateRefusal::InvalidUtf8,
        _ => InflateRefusal::BadData,
    }
}

/// A msgpack message the engine accepted.
pub(super) enum Msgpack {
    /// A type the engine hands on: the message stays msgpack, as the client sent it.
    Unread,
    /// A type the engine acts on: the message as JSON text, to parse whole.
    Converted(Vec<u8>, Head),
}

/// How long a connection must go without a refusal to count as back under its limit.
const RECOVERY: Duration = Duration::from_secs(1);
/// Bytes before the ciphertext of an `E:` frame: the prefix and the IV.
const SEALED_HEADER: usize = 2 + 12;
/// How much larger than `max_message_size` the JSON text of a msgpack message may be: `bin`
/// doubles as hex, and a control character in a string grows to a six-byte escape.
const MSGPACK_JSON_GROWTH: usize = 4;
