//! Events for the application from one connection, and the backlog that makes a full ring
//! stop the connection's reads (PROTOCOL.md §8).
//!
//! Place: `session → **events** → the shard's inbound ring → drain → application`. An event
//! goes straight into the ring when it fits and nothing of this connection waits before
//! it; otherwise it joins the connection's backlog, and the session stops reading its socket
//! until the backlog has been handed over (TCP backpressure: the client's sends block, its
//! kernel buffers fill, nothing is dropped). The connection still writes meanwhile, so its
//! heartbeats, publications and replies keep flowing, and other connections are not
//! touched. When the connection ends, its backlog and its `disconnect` are handed over by
//! the task before it finishes, however long the application takes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wse_protocol::handshake::Request;

use super::Session;
use crate::app::inbound::Slot;
use crate::app::{ConnectionInfo, Envelope, Event, EventKind};
use crate::metrics::{CloseReason, ShardMetrics};
use crate::shard::Shard;

impl Session {
    /// `connect` (with the request's cookies) or `auth_connect` (with the token's `sub`).
    pub(super) fn emit_connect(&mut self, request: &Request) {
        if self.shard.app.is_none() {
            return;
        }
        let kind = connect_kind(self.conn.user_id.as_deref(), request);
        self.emit(kind);
    }

    /// A client message that is a WSE envelope; `size` is its length as received.
    pub(super) fn emit_message(&mut self, envelope: Envelope, size: usize) {
        self.emit_sized(EventKind::Message(envelope), size);
    }

    /// A message that is neither an envelope nor a known binary format: `raw` for text,
    /// `bin` for binary.
    pub(super) fn emit_unknown(&mut self, text: bool, data: Vec<u8>) {
        let size = data.len();
        let kind = match (text, String::from_utf8(data)) {
            (true, Ok(text)) => EventKind::Raw(text.into()),
            (_, Ok(text)) => EventKind::Binary(Bytes::from(text.into_bytes())),
            (_, Err(e)) => EventKind::Binary(Bytes::from(e.into_bytes())),
        };
        self.emit_sized(kind, size);
    }

    /// `disconnect` with the close code (1006 when TCP ended without a Close) and reason.
    pub(super) fn emit_disconnect(&mut self, reason: CloseReason) {
        if self.shard.app.is_none() {
            return;
        }
        let code = match reason {
            CloseReason::Transport => ABNORMAL,
            _ => self.conn.close.get().unwrap_or(ABNORMAL),
        };
        let text = self.conn.close_reason.borrow_mut().take();
        let text = text.unwrap_or_else(|| reason.label().into());
        self.emit(EventKind::Disconnect { code, reason: text });
    }

    /// Pushes the backlog into the ring; `Ready` once it is empty, so reading may go on.
    pub(super) fn poll_backlog(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.backlog.is_empty() {
            return Poll::Ready(());
        }
        let Some(app) = &self.shard.app else {
            self.backlog.clear();
            return Poll::Ready(());
        };
        let metrics = &self.shard.shared.metrics.shards[self.shard.index];
        while let Some(slot) = self.backlog.pop_front() {
            if let Err(slot) = app.push_or_wait(slot, cx, &mut self.backlog_round) {
                self.backlog.push_front(slot);
                return Poll::Pending;
            }
            ShardMetrics::add(&metrics.app_events, 1);
        }
        // A long backlog's buffer is not kept for the rest of the connection's life.
        self.backlog = VecDeque::new();
        Poll::Ready(())
    }

    /// The shard and the backlog, once the session is over (the socket is closed then).
    pub(super) fn into_backlog(self) -> (Rc<Shard>, VecDeque<Slot>) {
        (self.shard, self.backlog)
    }

    fn emit(&mut self, kind: EventKind) {
        let size = match &kind {
            EventKind::Connect { cookies } => cookies.len(),
            EventKind::Disconnect { reason, .. } => reason.len(),
            _ => 0,
        };
        self.emit_sized(kind, size);
    }

    /// Hands an event over: into the ring when it fits and nothing waits before it, else
    /// into the backlog (which stops reading).
    fn emit_sized(&mut self, kind: EventKind, size: usize) {
        let Some(app) = &self.shard.app else { return };
        let lifecycle = matches!(
            kind,
            EventKind::Connect { .. }
                | EventKind::AuthConnect { .. }
                | EventKind::Disconnect { .. }
        );
        let slot = Slot { event: Event { conn: self.conn.id, kind }, bytes: size, lifecycle };
        let metrics = &self.shard.shared.metrics.shards[self.shard.index];
        if !self.backlog.is_empty() {
            return self.backlog.push_back(slot);
        }
        match app.try_push(slot) {
            Ok(()) => ShardMetrics::add(&metrics.app_events, 1),
            Err(slot) => {
                ShardMetrics::add(&metrics.app_stalls, 1);
                self.backlog.push_back(slot);
            }
        }
    }
}

/// `auth_connect` with the token's `sub`, else `connect` with the request's cookies.
pub(super) fn connect_kind(user_id: Option<&str>, request: &Request) -> EventKind {
    match user_id {
        Some(user_id) => EventKind::AuthConnect { user_id: user_id.into() },
        None => {
            let cookies = request.header("cookie").map(String::from_utf8_lossy);
            EventKind::Connect { cookies: cookies.unwrap_or_default().into() }
        }
    }
}

/// Hands what is left of an ended connection's events to the ring, waiting for room.
pub(super) async fn hand_over(shard: &Shard, mut backlog: VecDeque<Slot>) {
    let Some(app) = &shard.app else { return };
    let mut round = 0;
    poll_fn(|cx| {
        while let Some(slot) = backlog.pop_front() {
            if let Err(slot) = app.push_or_wait(slot, cx, &mut round) {
                backlog.push_front(slot);
                return Poll::Pending;
            }
            ShardMetrics::add(&shard.metrics().app_events, 1);
        }
        Poll::Ready(())
    })
    .await;
}

/// What the application may learn of the upgrade request: the query and the headers in
/// order, as long as they fit in `limit` bytes together.
pub(super) fn connection_info(
    request: &Request,
    peer: SocketAddr,
    user_id: Option<&str>,
    limit: usize,
) -> ConnectionInfo {
    let mut left = limit;
    let query = request.query.clone().filter(|q| q.len() <= left);
    left -= query.as_ref().map_or(0, String::len);
    let mut headers = Vec::new();
    let mut truncated = request.query.is_some() && query.is_none();
    for (name, value) in &request.headers {
        let cost = name.len() + value.len();
        if cost > left {
            truncated = true;
            break;
        }
        left -= cost;
        headers.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
    }
    ConnectionInfo {
        connection_id: String::new(),
        peer,
        user_id: user_id.map(str::to_owned),
        query,
        headers,
        truncated,
    }
}

/// The close code reported when TCP ended without a Close frame (RFC 6455 §7.1.5).
const ABNORMAL: u16 = 1006;
