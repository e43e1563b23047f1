//! The crate's one error type.

/// Everything that can go wrong while interpreting bytes from a peer.
///
/// Handshake variants map to an HTTP status ([`Error::http_status`]); frame-layer variants map
/// to the close code to send ([`Error::close_code`]); envelope variants are answered with an
/// `error` message whose code is [`Error::wire_code`] and the connection stays open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    // --- handshake (before the upgrade) ---
    /// The request is not a valid HTTP/1.1 request or not a valid WebSocket upgrade.
    /// Answer HTTP 400 and close the socket.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The method is not `GET`. Answer HTTP 405 and close.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `Sec-WebSocket-Version` is not 13. Answer HTTP 426 listing version 13, then close.
    #[error("unsupported websocket version")]
    UnsupportedVersion,
    /// The request head exceeds the byte or line cap. Answer HTTP 431 and close.
    #[error("request header fields too large")]
    HeadersTooLarge,

    // --- frame layer (after the upgrade) ---
    /// The peer broke RFC 6455 framing rules. Send Close 1002, then close.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message (or a Close reason) is not valid UTF-8. Send Close 1007, then close.
    #[error("invalid utf-8 in text message")]
    InvalidUtf8,
    /// A frame or the reassembled message exceeds the configured message size. Send Close
    /// 1009, then close.
    #[error("message too big: limit {limit} bytes")]
    MessageTooBig {
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A permessage-deflate message (RFC 7692), or the zlib stream of a `C:` frame
    /// (PROTOCOL.md §4), does not inflate: not a DEFLATE or zlib stream, or a bad checksum.
    /// For permessage-deflate send Close 1007 ([`Error::close_code`]) and close; for a `C:`
    /// frame drop the message, count it and answer `error` `INVALID_MESSAGE`.
    #[error("compressed data does not inflate")]
    BadCompressedData,

    // --- envelope (one message; the connection stays open) ---
    /// A data message could not be read as a WSE envelope. Answer `error` `INVALID_MESSAGE`
    /// (or hand the raw message to the application, depending on the caller).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A topic name breaks the rules of PROTOCOL.md §3. Answer `error` `INVALID_TOPIC`.
    #[error("invalid topic: {0}")]
    InvalidTopic(&'static str),
    /// A subscription's filter criteria (PROTOCOL.md §7 "Filters") cannot be compiled: not an
    /// object, an unknown operator, an operand of the wrong kind, a bad regex, or over the
    /// bounds of [`crate::filter`]. Fail that topic's subscription with `INVALID_FILTER`.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),

    // --- end-to-end encryption and signing (PROTOCOL.md §4-§6) ---
    /// The client's E2E public key in `client_hello` is unusable: not standard base64, not 65
    /// bytes, not an uncompressed point (`0x04` first), or not on P-256. Answer `error`
    /// `KEY_EXCHANGE_FAILED` with `recoverable: true`, leave `encryption_public_key` (and
    /// `features.encryption`) out of `server_hello`, and go on unencrypted.
    #[error("key exchange failed: {0}")]
    KeyExchange(&'static str),
    /// The crypto library failed where it should not (random source, key generation). The
    /// connection cannot be served securely: send Close 1011, then close.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// An inbound frame handed to the E2E layer does not start with `E:`. A caller bug or a
    /// misrouted frame: treat it as an unreadable message (`error` `INVALID_MESSAGE`).
    #[error("not an encrypted frame")]
    NotEncrypted,
    /// An `E:` frame is shorter than `E:` + 12-byte IV + 16-byte tag. Drop it, count it, and
    /// answer `error` `INVALID_MESSAGE`; the connection stays open.
    #[error("encrypted frame too short: {len} bytes")]
    EncryptedFrameTooShort {
        /// The whole frame's length in bytes, prefix included.
        len: usize,
    },
    /// An `E:` frame failed authentication: its IV, ciphertext or tag was altered, or it was
    /// sealed under another key. Drop it, count it, and answer `error` `INVALID_MESSAGE`; the
    /// connection stays open.
    #[error("encrypted frame failed authentication")]
    DecryptFailed,
    /// A frame that must be signed (PROTOCOL.md §6) has no `"sig"` as its last key. Drop it,
    /// count it, and answer `error` `BAD_SIGNATURE`.
    #[error("signature missing")]
    SignatureMissing,
    /// The last key is `"sig"` but its value is not a standard base64 string of a 32-byte
    /// HMAC followed only by whitespace and the closing `}`. Handle as
    /// [`Error::SignatureMissing`].
    #[error("signature malformed: {0}")]
    SignatureMalformed(&'static str),
    /// The signature is well formed but does not match the frame under the connection's key.
    /// Handle as [`Error::SignatureMissing`].
    #[error("signature mismatch")]
    SignatureMismatch,

    // --- configuration (at start-up) ---
    /// The JWT settings cannot be used: an unknown algorithm name, an HS256 secret shorter
    /// than 32 bytes, or a PEM key that does not parse for the configured algorithm. The
    /// message says which. Refuse to start and show it to the operator.
    #[error("invalid jwt configuration: {0}")]
    JwtConfig(String),
}

impl Error {
    /// The HTTP status to answer a failed handshake with, if this is a handshake error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::BadRequest(_) => Some(400),
            Error::MethodNotAllowed => Some(405),
            Error::UnsupportedVersion => Some(426),
            Error::HeadersTooLarge => Some(431),
            _ => None,
        }
    }

    /// The WebSocket close code to fail the connection with, if this is a frame-layer error.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Protocol(_) => Some(1002),
            Error::InvalidUtf8 | Error::BadCompressedData => Some(1007),
            Error::MessageTooBig { .. } => Some(1009),
            Error::Crypto(_) => Some(1011),
            _ => None,
        }
    }

    /// The `error` message code (PROTOCOL.md §7) for an envelope-level error.
    pub fn wire_code(&self) -> &'static str {
        match self {
            Error::InvalidTopic(_) => "INVALID_TOPIC",
            Error::InvalidFilter(_) => "INVALID_FILTER",
            Error::KeyExchange(_) => "KEY_EXCHANGE_FAILED",
            Error::SignatureMissing | Error::SignatureMalformed(_) | Error::SignatureMismatch => {
                "BAD_SIGNATURE"
            }
            _ => "INVALID_MESSAGE",
        }
    }
}
