//! The opening handshake of one socket, and the plain HTTP endpoints beside it.
//!
//! Place: `accept → gate → **handshake** → session`. Reads the request head into a buffer
//! that lives only as long as the handshake (capped by [`HandshakeLimits`]), under one
//! deadline counted from accept so that trickling bytes cannot extend it, then answers:
//! `101` for a valid upgrade on the configured path, `/health` and `/metrics`, or an HTTP
//! error (400, 401, 403, 404, 405, 426, 431, 503) after which the socket is closed. The
//! origin and the token are checked here, before the upgrade, so that no refused client
//! costs more than this one exchange.

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::transport::Transport;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::timer::timeout;
use tracing::debug;
use wse_protocol::auth::AuthError;
use wse_protocol::extensions::negotiate_permessage_deflate;
use wse_protocol::handshake::{self, HandshakeLimits, Request};
use wse_protocol::Error as ProtocolError;

use crate::config::AuthFailureMode;
use crate::gate::Ticket;
use crate::metrics::{Rejection, SecurityEvent, ShardMetrics};
use crate::security::{self, Admission};
use crate::shard::Shard;

/// A socket that completed the upgrade.
pub(crate) struct Upgraded {
    pub stream: Transport,
    /// The upgrade request (query, cookies and headers for later decisions).
    pub request: Request,
    /// Bytes that followed the request head in the same reads: the first frames.
    pub leftover: Vec<u8>,
    /// The token's verdict. A refusal gets here only in the `close` failure mode.
    pub admission: Admission,
    /// permessage-deflate was agreed in the `101` (RFC 7692).
    pub permessage_deflate: bool,
}

/// Runs the handshake under the configured deadline. `None` when the socket was answered
/// with plain HTTP, refused, or timed out; the socket is closed then.
pub(super) async fn run(shard: &Rc<Shard>, stream: Transport, ticket: Ticket) -> Option<Upgraded> {
    let metrics = shard.metrics();
    ShardMetrics::add(&metrics.handshaking, 1);
    let limit = shard.shared.config.handshake_timeout;
    let mut stream = stream;
    let outcome = timeout(limit, async { Ok(exchange(shard, &mut stream).await) }).await;
    ShardMetrics::dec(&metrics.handshaking);
    drop(ticket);
    match outcome {
        Ok(Some((request, leftover, admission, permessage_deflate))) => {
            Some(Upgraded { stream, request, leftover, admission, permessage_deflate })
        }
        Ok(None) => None,
        Err(_) => {
            metrics.rejected(Rejection::Timeout);
            debug!("handshake timed out");
            None
        }
    }
}

/// Reads the request head and answers it.
async fn exchange(shard: &Rc<Shard>, stream: &mut Transport) -> Option<Accepted> {
    let limits = HandshakeLimits::default();
    let mut head = Vec::new();
    loop {
        read_some(shard, stream, &mut head).await?;
        match handshake::parse_request(&head, &limits) {
            Ok(None) => continue,
            Ok(Some((request, used))) => {
                let leftover = head.split_off(used);
                return respond(shard, stream, request, leftover).await;
            }
            Err(e) => {
                refuse(shard, stream, &e).await;
                return None;
            }
        }
    }
}

/// Routes a complete request: the WebSocket path, the HTTP endpoints, or 404/405.
async fn respond(
    shard: &Rc<Shard>,
    stream: &mut Transport,
    request: Request,
    leftover: Vec<u8>,
) -> Option<Accepted> {
    let shared = &shard.shared;
    let path = request.path.as_str();
    let endpoint = path == "/health" || path == "/metrics";
    // Echo mode serves every path, as conformance clients pick their own.
    if path == shared.config.path || (shared.config.echo && !endpoint) {
        return upgrade(shard, stream, request, leftover).await;
    }
    let (status, content_type, body) = match path {
        _ if !endpoint => (404, "text/plain", "not found\n".into()),
        _ if request.method != "GET" => (405, "text/plain", "method not allowed\n".into()),
        "/health" => (200, "application/json", shared.health_json()),
        _ => (200, "text/plain; version=0.0.4", shared.prometheus()),
    };
    if status == 404 {
        shard.metrics().rejected(Rejection::NotFound);
    }
    let response = handshake::http_response(status, &[], content_type, body.as_bytes());
    answer_and_close(stream, &response).await;
    None
}

/// Validates the upgrade, applies `max_connections`, and sends `101`.
async fn upgrade(
    shard: &Rc<Shard>,
    stream: &mut Transport,
    request: Request,
    leftover: Vec<u8>,
) -> Option<Accepted> {
    let upgrade = match handshake::validate_upgrade(&request) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            refuse(shard, stream, &e).await;
            return None;
        }
    };
    let admission = admission(shard, stream, &request).await?;
    if shard.stopping.get() || !take_connection_slot(shard) {
        shard.metrics().rejected(Rejection::Full);
        let headers = [("Retry-After", "1")];
        let response = handshake::http_response(503, &headers, "text/plain", b"server full\n");
        answer_and_close(stream, &response).await;
        return None;
    }
    let deflate = permessage_deflate_answer(shard, &upgrade);
    let extensions: Vec<(&str, &str)> =
        deflate.iter().map(|value| ("Sec-WebSocket-Extensions", value.as_str())).collect();
    let response = handshake::switching_protocols(&upgrade, &extensions);
    if stream.write_all(&response).await.is_err() || stream.flush().await.is_err() {
        shard.shared.admitted.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some((request, leftover, admission, deflate.is_some()))
}

/// The `Sec-WebSocket-Extensions` answer when permessage-deflate is enabled and the request
/// offered it acceptably; `None` declines (the upgrade goes on uncompressed).
fn permessage_deflate_answer(shard: &Shard, upgrade: &handshake::Upgrade) -> Option<String> {
    if !shard.shared.config.compression.permessage_deflate {
        return None;
    }
    let agreement = negotiate_permessage_deflate(upgrade.extensions.as_deref()?)?;
    Some(agreement.response())
}

/// The origin check and the token check (PROTOCOL.md §2). `None` when the request was
/// answered with 403 or 401 and the socket closed; a refused token comes back as
/// [`Admission::Refused`] in the `close` failure mode, to be answered after the upgrade.
async fn admission(shard: &Shard, stream: &mut Transport, request: &Request) -> Option<Admission> {
    let shared = &shard.shared;
    let security = &shared.config.security;
    if !shared.guard.check_origin(security, request) {
        shard.metrics().rejected(Rejection::Origin);
        debug!("origin not allowed");
        let response = handshake::http_response(403, &[], "text/plain", b"origin not allowed\n");
        answer_and_close(stream, &response).await;
        return None;
    }
    let admission = shared.guard.admit(security, request);
    let Admission::Refused(error) = &admission else { return Some(admission) };
    shard.metrics().security(match error {
        AuthError::Missing => SecurityEvent::AuthRequired,
        AuthError::Invalid(_) => SecurityEvent::AuthFailed,
    });
    debug!(%error, "token refused");
    if security.failure_mode == AuthFailureMode::Close {
        return Some(admission);
    }
    shard.metrics().rejected(Rejection::Unauthorized);
    let body = security::refusal_text(error);
    let headers = [("WWW-Authenticate", "Bearer")];
    let response = handshake::http_response(401, &headers, "text/plain", body.as_bytes());
    answer_and_close(stream, &response).await;
    None
}

/// Counts the connection against `max_connections`; `false` when the server is full.
fn take_connection_slot(shard: &Shard) -> bool {
    let admitted = &shard.shared.admitted;
    if admitted.fetch_add(1, Ordering::AcqRel) >= shard.shared.config.max_connections {
        admitted.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// Answers a malformed or unsupported request with its HTTP status and closes.
async fn refuse(shard: &Shard, stream: &mut Transport, error: &ProtocolError) {
    let why = match error.http_status() {
        Some(426) => Rejection::Version,
        Some(431) => Rejection::HeadersTooLarge,
        _ => Rejection::BadRequest,
    };
    shard.metrics().rejected(why);
    debug!(%error, "handshake refused");
    answer_and_close(stream, &handshake::error_response(error)).await;
}

/// Writes a final HTTP response, then half-closes and drains what the client still sends,
/// so that closing does not reset the connection before the client reads the response.
async fn answer_and_close(stream: &mut Transport, response: &[u8]) {
    if stream.write_all(response).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    stream.shutdown_write().await;
    let _ = timeout(LINGER, async {
        let mut sink = [0u8; 512];
        while let Ok(n) = futures_lite::AsyncReadExt::read(stream, &mut sink).await {
            if n == 0 {
                break;
            }
        }
        Ok(())
    })
    .await;
}

/// Appends what the socket has to `head`, read through the shard's shared buffer.
/// `None` at end of stream or on an error.
async fn read_some(shard: &Shard, stream: &mut Transport, head: &mut Vec<u8>) -> Option<()> {
    poll_fn(|cx| {
        let mut buf = shard.read_buf.borrow_mut();
        match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
            std::task::Poll::Ready(Err(e)) if crate::tls::is_tls_failure(&e) => {
                shard.metrics().rejected(Rejection::Tls);
                debug!(error = %e, "TLS handshake failed");
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => {
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Ok(n)) => {
                head.extend_from_slice(&buf[..n]);
                std::task::Poll::Ready(Some(()))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// A request that may be upgraded: the request, the bytes after its head, the verdict, and
/// whether permessage-deflate was agreed.
type Accepted = (Request, Vec<u8>, Admission, bool);

/// How long a refused socket is drained before it is closed.
const LINGER: Duration = Duration::from_millis(500);
