//! Counters and gauges, and their rendering for `GET /metrics` and `GET /health`.
//!
//! Place: every shard writes only its own [`ShardMetrics`] (relaxed atomics, no contention);
//! the HTTP endpoints, served by whichever shard accepted the request, read all of them.
//! Nothing here is on a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wse_fanout::bridge::{BreakerState, BridgeStats, BridgeStatus};
use wse_fanout::history::{Evictions, Reason};
use wse_protocol::envelope::{ObjectWriter, Priority};

/// Why the engine closed or lost a connection; one counter each, per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent Close (any valid code).
    ClientClose,
    /// TCP ended without a Close frame, or an I/O error.
    Transport,
    /// RFC 6455 violation: 1002.
    ProtocolError,
    /// Invalid UTF-8: 1007.
    InvalidUtf8,
    /// Message over `max_message_size`: 1009.
    MessageTooBig,
    /// Server shutting down: 1012.
    Shutdown,
    /// No frame within `idle_timeout`: 4408.
    IdleTimeout,
    /// Outbound queue over budget with CRITICAL data: 4503.
    SlowConsumer,
    /// No valid token in `close` auth mode: 4401.
    AuthFailed,
    /// The token expired while connected: 4403.
    TokenExpired,
    /// Over the inbound rate limit for too long: 4429.
    RateLimited,
    /// Too many malformed messages: 4400.
    Malformed,
    /// Closed or refused by the application (`disconnect`, `reject`).
    Application,
}

impl CloseReason {
    const ALL: [CloseReason; 13] = [
        CloseReason::ClientClose,
        CloseReason::Transport,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::MessageTooBig,
        CloseReason::Shutdown,
        CloseReason::IdleTimeout,
        CloseReason::SlowConsumer,
        CloseReason::AuthFailed,
        CloseReason::TokenExpired,
        CloseReason::RateLimited,
        CloseReason::Malformed,
        CloseReason::Application,
    ];

    /// The label used in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::Transport => "transport",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Malformed => "malformed",
            CloseReason::Application => "application",
        }
    }

    /// The reason the engine records when it sends `code` itself.
    pub fn for_code(code: u16) -> CloseReason {
        match code {
            1007 => CloseReason::InvalidUtf8,
            1009 => CloseReason::MessageTooBig,
            1012 => CloseReason::Shutdown,
            4408 => CloseReason::IdleTimeout,
            4503 => CloseReason::SlowConsumer,
            4401 => CloseReason::AuthFailed,
            4403 => CloseReason::TokenExpired,
            4429 => CloseReason::RateLimited,
            4400 => CloseReason::Malformed,
            _ => CloseReason::ProtocolError,
        }
    }
}

/// Why a handshake ended without an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed or non-WebSocket request: 400 / 405.
    BadRequest,
    /// Unsupported `Sec-WebSocket-Version`: 426.
    Version,
    /// Head over 16 KiB or 100 lines: 431.
    HeadersTooLarge,
    /// `max_connections` reached: 503.
    Full,
    /// Unknown path: 404.
    NotFound,
    /// Handshake not finished within `handshake_timeout`.
    Timeout,
    /// Too many sockets in the handshake, globally or from that address.
    HandshakeCap,
    /// No valid token in `reject` auth mode: 401.
    Unauthorized,
    /// `Origin` not on the allow-list: 403.
    Origin,
    /// The TLS handshake failed: not TLS (plain HTTP, garbage), an alert from the client,
    /// or no protocol version, cipher suite or ALPN protocol in common.
    Tls,
}

impl Rejection {
    const ALL: [Rejection; 10] = [
        Rejection::BadRequest,
        Rejection::Version,
        Rejection::HeadersTooLarge,
        Rejection::Full,
        Rejection::NotFound,
        Rejection::Timeout,
        Rejection::HandshakeCap,
        Rejection::Unauthorized,
        Rejection::Origin,
        Rejection::Tls,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::Version => "version",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::Full => "full",
            Rejection::NotFound => "not_found",
            Rejection::Timeout => "timeout",
            Rejection::HandshakeCap => "handshake_cap",
            Rejection::Unauthorized => "unauthorized",
            Rejection::Origin => "origin",
            Rejection::Tls => "tls",
        }
    }
}

/// A security decision about one message or handshake, counted for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEvent {
    /// No token where one is required.
    AuthRequired,
    /// A token was present but invalid (signature, claims, algorithm, size).
    AuthFailed,
    /// A client's public key could not be used; the connection stays unencrypted.
    KeyExchangeFailed,
    /// An `E:` frame failed to decrypt (tampered or wrong key); it was dropped.
    DecryptFailed,
    /// A plaintext message on an encrypted connection; refused.
    EncryptionRequired,
    /// A message whose `sig` did not verify; dropped.
    BadSignature,
    /// A subscription or publication outside the connection's topic ACL.
    Forbidden,
    /// An inbound message over the rate limit; refused.
    RateLimited,
}

impl SecurityEvent {
    const ALL: [SecurityEvent; 8] = [
        SecurityEvent::AuthRequired,
        SecurityEvent::AuthFailed,
        SecurityEvent::KeyExchangeFailed,
        SecurityEvent::DecryptFailed,
        SecurityEvent::EncryptionRequired,
        SecurityEvent::BadSignature,
        SecurityEvent::Forbidden,
        SecurityEvent::RateLimited,
    ];

    fn label(self) -> &'static str {
        match self {
            SecurityEvent::AuthRequired => "auth_required",
            SecurityEvent::AuthFailed => "auth_failed",
            SecurityEvent::KeyExchangeFailed => "key_exchange_failed",
            SecurityEvent::DecryptFailed => "decrypt_failed",
            SecurityEvent::EncryptionRequired => "encryption_required",
            SecurityEvent::BadSignature => "bad_signature",
            SecurityEvent::Forbidden => "forbidden",
            SecurityEvent::RateLimited => "rate_limited",
        }
    }
}

/// Why an outbound message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Evicted or refused because the connection's outbound queue was over budget.
    QueueFull,
    /// The connection was already closing when the message was queued.
    Closing,
    /// Sealing for an E2E connection failed (the system's random source failed).
    SealFailed,
}

impl DropReason {
    const ALL: [DropReason; 3] =
        [DropReason::QueueFull, DropReason::Closing, DropReason::SealFailed];

    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Closing => "closing",
            DropReason::SealFailed => "seal_failed",
        }
    }
}

/// A compressed wire form (PROTOCOL.md §4, RFC 7692).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// A binary `C:` frame: the zlib stream of the JSON.
    CFrame,
    /// A permessage-deflate message (RSV1 set).
    PerMessageDeflate,
}

impl Codec {
    const ALL: [Codec; 2] = [Codec::CFrame, Codec::PerMessageDeflate];

    fn label(self) -> &'static str {
        match self {
            Codec::CFrame => "c_frame",
            Codec::PerMessageDeflate => "permessage_deflate",
        }
    }
}

/// Why an inbound compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateRefusal {
    /// It inflated past `max_message_size` (a zlib bomb, or just too big): close 1009.
    TooBig,
    /// Not a DEFLATE or zlib stream: close 1007 (permessage-deflate) or dropped (`C:`).
    BadData,
    /// A text message that inflated to invalid UTF-8: close 1007.
    InvalidUtf8,
}

impl InflateRefusal {
    const ALL: [InflateRefusal; 3] =
        [InflateRefusal::TooBig, InflateRefusal::BadData, InflateRefusal::InvalidUtf8];

    fn label(self) -> &'static str {
        match self {
            InflateRefusal::TooBig => "too_big",
            InflateRefusal::BadData => "bad_data",
            InflateRefusal::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// Selects one counter of a shard.
type Field = fn(&ShardMetrics) -> &AtomicU64;

/// One shard's counters. Written only by that shard; read by anyone.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Admitted WebSocket connections open now (gauge).
    pub connections: AtomicU64,
    /// Sockets in the handshake now (gauge).
    pub handshaking: AtomicU64,
    /// Subscriptions (exact topics and patterns) held by this shard's connections (gauge).
    pub subscriptions: AtomicU64,
    /// Connections upgraded since start.
    pub accepted: AtomicU64,
    /// Data messages received from clients.
    pub messages_in: AtomicU64,
    /// Frames written to clients (data and control).
    pub messages_out: AtomicU64,
    /// Bytes read from client sockets after the handshake.
    pub bytes_in: AtomicU64,
    /// Bytes written to client sockets after the handshake.
    pub bytes_out: AtomicU64,
    /// Write system calls that carried those bytes (coalescing makes this < messages_out).
    pub writes: AtomicU64,
    /// Publications stamped by this shard as the topics' owner.
    pub publications: AtomicU64,
    /// Publications this shard encoded as msgpack: as owner, or for its own subscribers when
    /// the owner had not (PROTOCOL.md §4: once per format, not per subscriber).
    pub msgpack_encoded: AtomicU64,
    /// Messages queued in msgpack for msgpack connections (publications and direct
    /// messages; `M:` frames, or `E:` frames sealing them).
    pub msgpack_out: AtomicU64,
    /// Msgpack messages received from clients (`M:` or unprefixed), valid or not.
    pub msgpack_in: AtomicU64,
    /// Msgpack messages from clients refused as malformed (`error` `INVALID_MESSAGE`).
    pub msgpack_invalid: AtomicU64,
    /// Messages sent as JSON text to a msgpack connection because they could not be
    /// converted (nested deeper than the msgpack converter allows).
    pub msgpack_fallbacks: AtomicU64,
    /// Deliveries a subscription filter kept back (one per connection and publication).
    pub filtered_out: AtomicU64,
    /// Publications the owner's de-duplication window refused (same topic and id).
    pub duplicates: AtomicU64,
    /// Bytes waiting in this shard's outbound queues (gauge, refreshed every housekeeping
    /// tick).
    pub queued_bytes: AtomicU64,
    /// The fullest outbound queue of this shard, in bytes (gauge, as `queued_bytes`).
    pub queued_bytes_max: AtomicU64,
    /// Topics with a known position in this shard's history (gauge, as `queued_bytes`).
    pub history_topics: AtomicU64,
    /// Messages in this shard's history (gauge, as `queued_bytes`).
    pub history_messages: AtomicU64,
    /// Charged bytes of this shard's history (gauge, as `queued_bytes`).
    pub history_bytes: AtomicU64,
    /// Recovery requests that replayed everything missed.
    pub recovered: AtomicU64,
    /// Recovery requests answered `recovered: false`.
    pub not_recovered: AtomicU64,
    /// Messages replayed by recoveries.
    pub replayed: AtomicU64,
    /// Events handed to the application's ring.
    pub app_events: AtomicU64,
    /// Times a connection stopped reading because the application's ring was full.
    pub app_stalls: AtomicU64,
    /// Application calls that gave up on a full control ring (`Error::Busy`).
    pub control_timeouts: AtomicU64,
    /// Topics held back for a snapshot after a `sync_request`.
    pub snapshot_holds: AtomicU64,
    /// Snapshot holds released by `snapshot_timeout` instead of `snapshot_complete`.
    pub snapshot_timeouts: AtomicU64,
    /// Topics with presence members on this owner shard (gauge, as `queued_bytes`).
    pub presence_topics: AtomicU64,
    /// Presence members over this owner shard's topics (gauge, as `queued_bytes`).
    pub presence_users: AtomicU64,
    /// Presence announcements (`presence_join`, `presence_leave`, `presence_update`).
    pub presence_events: AtomicU64,
    /// New presence members refused by the per-topic member limit.
    pub presence_refused: AtomicU64,
    closes: [AtomicU64; CloseReason::ALL.len()],
    rejections: [AtomicU64; Rejection::ALL.len()],
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Messages dropped for a full queue ([`DropReason::QueueFull`]), by priority index.
    drops_by_priority: [AtomicU64; Priority::COUNT],
    security: [AtomicU64; SecurityEvent::ALL.len()],
    history_evictions: [AtomicU64; Reason::ALL.len()],
    compressions: [AtomicU64; Codec::ALL.len()],
    saved_bytes: [AtomicU64; Codec::ALL.len()],
    inflated: [AtomicU64; Codec::ALL.len()],
    inflate_refusals: [AtomicU64; InflateRefusal::ALL.len()],
}

impl ShardMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge.
    pub fn dec(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one closed connection.
    pub fn closed(&self, reason: CloseReason) {
        Self::add(&self.closes[reason as usize], 1);
    }

    /// Counts one handshake that ended without an upgrade.
    pub fn rejected(&self, why: Rejection) {
        Self::add(&self.rejections[why as usize], 1);
    }

    /// Counts `n` dropped outbound messages.
    pub fn dropped(&self, why: DropReason, n: u64) {
        Self::add(&self.drops[why as usize], n);
    }

    /// Counts `n` messages of priority `pri` dropped for a full queue, under both
    /// `queue_full` and their priority.
    pub fn dropped_full(&self, pri: Priority, n: u64) {
        self.dropped(DropReason::QueueFull, n);
        Self::add(&self.drops_by_priority[pri.index()], n);
    }

    /// Counts messages that left a history.
    pub fn history_evicted(&self, evicted: &Evictions) {
        for reason in Reason::ALL {
            let n = evicted.of(reason);
            if n > 0 {
                Self::add(&self.history_evictions[reason as usize], n);
            }
        }
    }

    /// Counts one security decision.
    pub fn security(&self, event: SecurityEvent) {
        Self::add(&self.security[event as usize], 1);
    }

    /// Counts one message compressed into `codec` (a publication counts once, however many
    /// subscribers share the frame).
    pub fn compressed(&self, codec: Codec) {
        Self::add(&self.compressions[codec as usize], 1);
    }

    /// Counts `n` bytes that a queued `codec` frame saved against the uncompressed frame.
    pub fn saved(&self, codec: Codec, n: u64) {
        Self::add(&self.saved_bytes[codec as usize], n);
    }

    /// Counts one inbound message inflated from `codec`.
    pub fn inflated(&self, codec: Codec) {
        Self::add(&self.inflated[codec as usize], 1);
    }

    /// Counts one inbound compressed message refused.
    pub fn inflate_refused(&self, why: InflateRefusal) {
        Self::add(&self.inflate_refusals[why as usize], 1);
    }

    /// Reads a close counter (tests and health).
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason as usize].load(Ordering::Relaxed)
    }
}

/// Every shard's metrics, shared by the whole server.
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by shard number.
    pub shards: Vec<ShardMetrics>,
    /// Open `format=msgpack` connections on every shard (gauge). Owners read it for each
    /// publication to decide whether to encode msgpack, so it lives apart from the per-shard
    /// counters that their shards write all the time.
    pub msgpack_connections: AtomicU64,
    started: Instant,
}

impl Metrics {
    /// Zeroed metrics for `shards` shards; `started` is the server's start time.
    pub fn new(shards: usize, started: Instant) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            msgpack_connections: AtomicU64::new(0),
            started,
        }
    }

    /// Whether any shard has a `format=msgpack` connection open.
    pub fn any_msgpack_connection(&self) -> bool {
        self.msgpack_connections.load(Ordering::Relaxed) > 0
    }

    /// Open WebSocket connections over all shards.
    pub fn connections(&self) -> u64 {
        self.sum(|m| &m.connections)
    }

    fn sum(&self, field: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|m| field(m).load(Ordering::Relaxed)).sum()
    }

    /// The `GET /health` body; `redis`, a JSON object, is added as the `redis` member.
    pub fn health_json(&self, now: Instant, version: &str, redis: Option<&str>) -> String {
        let redis = redis.map(|r| format!(",\"redis\":{r}")).unwrap_or_default();
        format!(
            "{{\"status\":\"ok\",\"version\":\"{version}\",\"shards\":{},\"connections\":{},\
             \"handshaking\":{},\"uptime_seconds\":{}{redis}}}",
            self.shards.len(),
            self.connections(),
            self.sum(|m| &m.handshaking),
            now.saturating_duration_since(self.started).as_secs()
        )
    }

    /// The `GET /metrics` body in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.per_shard(&mut out, "wse_connections", "gauge", "Open WebSocket connections.", |m| {
            &m.connections
        });
        self.per_shard(&mut out, "wse_handshaking", "gauge", "Sockets in the handshake.", |m| {
            &m.handshaking
        });
        let help = "Subscriptions held by connections.";
        self.per_shard(&mut out, "wse_subscriptions", "gauge", help, |m| &m.subscriptions);
        let gauges: [(&str, &str, Field); 7] = [
            ("wse_outbound_queued_bytes", "Bytes in outbound queues.", |m| &m.queued_bytes),
            ("wse_outbound_queue_max_bytes", "The fullest outbound queue.", |m| {
                &m.queued_bytes_max
            }),
            ("wse_history_topics", "Topics with a known position.", |m| &m.history_topics),
            ("wse_history_messages", "Messages kept for recovery.", |m| &m.history_messages),
            ("wse_history_bytes", "Charged bytes of history.", |m| &m.history_bytes),
            ("wse_presence_topics", "Topics with presence members.", |m| &m.presence_topics),
            ("wse_presence_users", "Presence members over all topics.", |m| &m.presence_users),
        ];
        for (name, help, field) in gauges {
            self.per_shard(&mut out, name, "gauge", help, field);
        }
        let counters: [(&str, &str, Field); 24] = [
            ("wse_connections_accepted_total", "Upgraded connections.", |m| &m.accepted),
            ("wse_messages_in_total", "Data messages received.", |m| &m.messages_in),
            ("wse_messages_out_total", "Frames sent.", |m| &m.messages_out),
            ("wse_bytes_in_total", "Bytes received after upgrade.", |m| &m.bytes_in),
            ("wse_bytes_out_total", "Bytes sent after upgrade.", |m| &m.bytes_out),
            ("wse_writes_total", "Socket writes (coalesced frames).", |m| &m.writes),
            ("wse_publications_total", "Publications stamped.", |m| &m.publications),
            ("wse_msgpack_encoded_total", "Publications encoded as msgpack.", |m| {
                &m.msgpack_encoded
            }),
            ("wse_msgpack_frames_out_total", "Messages queued as msgpack.", |m| &m.msgpack_out),
            ("wse_msgpack_messages_in_total", "Msgpack messages received.", |m| &m.msgpack_in),
            ("wse_msgpack_invalid_total", "Malformed msgpack messages refused.", |m| {
                &m.msgpack_invalid
            }),
            ("wse_msgpack_fallbacks_total", "Messages sent as JSON to msgpack connections.", |m| {
                &m.msgpack_fallbacks
            }),
            ("wse_filtered_out_total", "Deliveries kept back by subscription filters.", |m| {
                &m.filtered_out
            }),
            ("wse_duplicate_publications_total", "Publications refused as duplicates.", |m| {
                &m.duplicates
            }),
            ("wse_recovered_total", "Recoveries that replayed all missed.", |m| &m.recovered),
            ("wse_not_recovered_total", "Recoveries answered recovered:false.", |m| {
                &m.not_recovered
            }),
            ("wse_replayed_messages_total", "Messages replayed by recoveries.", |m| &m.replayed),
            ("wse_app_events_total", "Events handed to the application.", |m| &m.app_events),
            ("wse_app_stalls_total", "Reads stopped for a full inbound ring.", |m| &m.app_stalls),
            ("wse_control_timeouts_total", "Calls refused on a full ring.", |m| {
                &m.control_timeouts
            }),
            ("wse_snapshot_holds_total", "Topics held back for a snapshot.", |m| &m.snapshot_holds),
            ("wse_snapshot_timeouts_total", "Snapshot holds ended by timeout.", |m| {
                &m.snapshot_timeouts
            }),
            ("wse_presence_events_total", "Presence joins, leaves and updates announced.", |m| {
                &m.presence_events
            }),
            ("wse_presence_refused_total", "Presence members over the member limit.", |m| {
                &m.presence_refused
            }),
        ];
        for (name, help, field) in counters {
            self.per_shard(&mut out, name, "counter", help, field);
        }
        let _ = writeln!(
            out,
            "# HELP wse_msgpack_connections Open format=msgpack connections.\n\
             # TYPE wse_msgpack_connections gauge\nwse_msgpack_connections {}",
            self.msgpack_connections.load(Ordering::Relaxed)
        );
        self.labelled(
            &mut out,
            "wse_closes_total",
            "Connections closed, by reason.",
            "reason",
            CloseReason::ALL.iter().map(|r| (r.label(), *r as usize)),
            |m, i| &m.closes[i],
        );
        self.labelled(
            &mut out,
            "wse_handshake_rejections_total",
            "Handshakes refused.",
            "reason",
            Rejection::ALL.iter().map(|r| (r.label(), *r as usize)),
            |m, i| &m.rejections[i],
        );
        self.labelled(
            &mut out,
            "wse_dropped_messages_total",
            "Outbound messages dropped.",
            "reason",
            DropReason::ALL.iter().map(|r| (r.label(), *r as usize)),
            |m, i| &m.drops[i],
        );
        self.labelled(
            &mut out,
            "wse_dropped_by_priority_total",
            "Messages dropped for a full outbound queue, by priority.",
            "priority",
            Priority::ALL.iter().map(|p| (priority_label(*p), p.index())),
            |m, i| &m.drops_by_priority[i],
        );
        self.labelled(
            &mut out,
            "wse_history_evictions_total",
            "Messages that left topic history, by reason.",
            "reason",
            Reason::ALL.iter().map(|r| (eviction_label(*r), *r as usize)),
            |m, i| &m.history_evictions[i],
        );
        self.labelled(
            &mut out,
            "wse_security_events_total",
            "Security decisions, by kind.",
            "kind",
            SecurityEvent::ALL.iter().map(|e| (e.label(), *e as usize)),
            |m, i| &m.security[i],
        );
        self.compression(&mut out);
        out
    }

    /// The compression series: what was compressed and saved, what inflated or was refused.
    fn compression(&self, out: &mut String) {
        let codecs = || Codec::ALL.iter().map(|c| (c.label(), *c as usize));
        let help = "Outbound messages compressed (a publication once for all subscribers).";
        self.labelled(out, "wse_compressions_total", help, "format", codecs(), |m, i| {
            &m.compressions[i]
        });
        let help = "Bytes saved by compressed frames queued, against the uncompressed frame.";
        self.labelled(
            out,
            "wse_compression_saved_bytes_total",
            help,
            "format",
            codecs(),
            |m, i| &m.saved_bytes[i],
        );
        let help = "Inbound compressed messages inflated.";
        self.labelled(out, "wse_inflated_messages_total", help, "format", codecs(), |m, i| {
            &m.inflated[i]
        });
        self.labelled(
            out,
            "wse_inflate_refusals_total",
            "Inbound compressed messages refused, by reason.",
            "reason",
            InflateRefusal::ALL.iter().map(|r| (r.label(), *r as usize)),
            |m, i| &m.inflate_refusals[i],
        );
    }

    fn per_shard(
        &self,
        out: &mut String,
        name: &str,
        kind: &str,
        help: &str,
        field: impl Fn(&ShardMetrics) -> &AtomicU64,
    ) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (shard, m) in self.shards.iter().enumerate() {
            let v = field(m).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {v}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn labelled<'a>(
        &self,
        out: &mut String,
        name: &str,
        help: &str,
        label: &str,
        values: impl Iterator<Item = (&'a str, usize)>,
        field: impl Fn(&ShardMetrics, usize) -> &AtomicU64,
    ) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, i) in values {
            let total: u64 = self.shards.iter().map(|m| field(m, i).load(Ordering::Relaxed)).sum();
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {total}");
        }
    }
}

/// The `redis` member of `GET /health`: the instance id, the breaker, the connections and
/// the dead letters waiting locally.
pub fn redis_health(status: &BridgeStatus) -> String {
    let mut out = Vec::with_capacity(192);
    let mut w = ObjectWriter::new(&mut out);
    w.string("instance", &status.instance).string("breaker", status.breaker.label());
    w.boolean("publisher_connected", status.publisher_connected);
    w.boolean("subscribed", status.subscribed).boolean("accepting", status.accepting);
    w.uint("dlq_buffered", status.dlq_buffered as u64);
    w.finish();
    String::from_utf8(out).unwrap_or_default()
}

/// The `wse_redis_*` series of the Redis bridge.
pub fn redis_prometheus(stats: &BridgeStats, out: &mut String) {
    let state = BreakerState::from_index(BridgeStats::get(&stats.breaker_state) as usize);
    let _ = writeln!(
        out,
        "# HELP wse_redis_breaker_state Redis circuit breaker: 1 for the current state.\n\
         # TYPE wse_redis_breaker_state gauge"
    );
    for s in BreakerState::ALL {
        let _ = writeln!(
            out,
            "wse_redis_breaker_state{{state=\"{}\"}} {}",
            s.label(),
            u8::from(s == state)
        );
    }
    let gauges: [(&str, &str, &AtomicU64); 4] = [
        (
            "wse_redis_publisher_connected",
            "1 while the publishing connection is up.",
            &stats.publisher_connected,
        ),
        ("wse_redis_subscribed", "1 while the subscription is up.", &stats.subscribed),
        ("wse_redis_pending", "Publications waiting to come back through Redis.", &stats.pending),
        ("wse_redis_dlq_buffered", "Dead letters waiting locally for Redis.", &stats.dlq_buffered),
    ];
    for (name, help, gauge) in gauges {
        let v = BridgeStats::get(gauge);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let counters: [(&str, &str, &AtomicU64); 17] = [
        (
            "wse_redis_published_total",
            "Publications Redis stamped for this instance.",
            &stats.published,
        ),
        (
            "wse_redis_round_trips_total",
            "Pipelined round trips that carried them.",
            &stats.round_trips,
        ),
        ("wse_redis_received_total", "Publications of other instances received.", &stats.received),
        ("wse_redis_echoed_total", "Own publications delivered from Redis.", &stats.echoed),
        (
            "wse_redis_fallbacks_total",
            "Own publications delivered locally instead.",
            &stats.fallbacks,
        ),
        (
            "wse_redis_own_dropped_total",
            "Own messages back from Redis after local delivery.",
            &stats.own_dropped,
        ),
        (
            "wse_redis_dead_letters_total",
            "Publications that could not be sent.",
            &stats.dead_letters,
        ),
        ("wse_redis_dlq_written_total", "Dead letters written to Redis.", &stats.dlq_written),
        ("wse_redis_dlq_dropped_total", "Dead letters lost to a full buffer.", &stats.dlq_dropped),
        ("wse_redis_replays_total", "Dead letters replayed.", &stats.replays),
        ("wse_redis_failures_total", "Redis calls that failed.", &stats.failures),
        ("wse_redis_connects_total", "Connections made to Redis.", &stats.connects),
        (
            "wse_redis_breaker_opened_total",
            "Times the circuit breaker opened.",
            &stats.breaker_opened,
        ),
        (
            "wse_redis_direct_sent_total",
            "Direct messages sent to other instances.",
            &stats.direct_sent,
        ),
        (
            "wse_redis_direct_received_total",
            "Direct messages from other instances.",
            &stats.direct_received,
        ),
        (
            "wse_redis_direct_dropped_total",
            "Direct messages not delivered to Redis or an instance.",
            &stats.direct_dropped,
        ),
        ("wse_redis_malformed_total", "Unreadable messages on our channels.", &stats.malformed),
    ];
    for (name, help, counter) in counters {
        let v = BridgeStats::get(counter);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
}

/// The `priority` label of a level.
fn priority_label(pri: Priority) -> &'static str {
    match pri {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
        Priority::Background => "background",
    }
}

/// The `reason` label of a history eviction.
fn eviction_label(reason: Reason) -> &'static str {
    match reason {
        Reason::Count => "count",
        Reason::TopicBytes => "topic_bytes",
        Reason::Age => "age",
        Reason::Budget => "budget",
        Reason::Restart => "restart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_per_shard_and_labelled_series() {
        let m = Metrics::new(2, Instant::now());
        ShardMetrics::add(&m.shards[1].connections, 3);
        m.shards[0].closed(CloseReason::IdleTimeout);
        m.shards[1].closed(CloseReason::IdleTimeout);
        m.shards[0].dropped(DropReason::QueueFull, 5);
        m.shards[1].dropped_full(Priority::Low, 2);
        let text = m.prometheus();
        assert!(text.contains("wse_dropped_by_priority_total{priority=\"low\"} 2"), "{text}");
        assert!(text.contains("wse_dropped_messages_total{reason=\"queue_full\"} 7"));
        assert!(text.contains("wse_connections{shard=\"1\"} 3"));
        assert!(text.contains("wse_closes_total{reason=\"idle_timeout\"} 2"));
        assert!(text.contains("\nwse_msgpack_connections 0\n"));
        m.shards[0].compressed(Codec::CFrame);
        m.shards[1].saved(Codec::PerMessageDeflate, 700);
        m.shards[1].inflate_refused(InflateRefusal::TooBig);
        let text = m.prometheus();
        assert!(text.contains("wse_compressions_total{format=\"c_frame\"} 1"));
        assert!(
            text.contains("wse_compression_saved_bytes_total{format=\"permessage_deflate\"} 700")
        );
        assert!(text.contains("wse_inflate_refusals_total{reason=\"too_big\"} 1"));
        assert_eq!(m.connections(), 3);
    }

    #[test]
    fn health_is_json_with_connection_count() {
        let m = Metrics::new(1, Instant::now());
        ShardMetrics::add(&m.shards[0].connections, 2);
        let body = m.health_json(Instant::now(), "0.1.0", None);
        assert!(body.starts_with("{\"status\":\"ok\""));
        assert!(body.contains("\"connections\":2"));
    }
}
