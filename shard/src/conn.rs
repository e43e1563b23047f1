//! One client connection, from the first byte to the last.
//!
//! Place: `accept → **conn** (handshake, then frames) → protocol → shard/fanout`, and
//! `outqueue → **conn** (coalesced writes) → socket`. One task per connection. The task
//! reads into the shard's shared buffer, feeds the bytes to the sans-I/O
//! [`Reader`](wse_protocol::reader::Reader), acts on the events, and writes whatever its
//! [`OutQueue`] holds, several frames per write. Other tasks reach a connection only through
//! its [`Conn`] record in the shard's table: they queue frames, then wake the task.
//!
//! The handshake lives in `handshake.rs` beside this file; the WSE messages the engine
//! answers itself live in `engine.rs`; closing, with the lingering RFC 6455 close handshake,
//! lives in `closing.rs`; events for the application and the backlog that stops reading
//! when its ring is full live in `events.rs`; snapshot holds live in `snapshot.rs`.

mod accept;
mod closing;
mod engine;
mod events;
mod handshake;
mod inbound;
mod snapshot;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::spawn_local;
use tracing::{debug, debug_span, trace, Instrument};
use wse_fanout::acl::TopicAcl;
use wse_fanout::ids::ConnId;
use wse_protocol::e2e::{IvPool, SessionKeys};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::handshake::Request;
use wse_protocol::reader::{Event, Reader, ReaderConfig};
use wse_protocol::writer;

use crate::app::inbound::Slot;
use crate::app::ConnectionInfo;
use crate::metrics::{CloseReason, Rejection, ShardMetrics};
use crate::outqueue::OutQueue;
use crate::security::{self, Identity};
use crate::shard::Shard;
use crate::transport::Transport;
use inbound::InboundLimit;

use accept::Entry;
pub(crate) use accept::{Verdict, Waiting};
pub(crate) use handshake::Upgraded;

/// Close code for a slow consumer whose CRITICAL data no longer fits (PROTOCOL.md §9).
pub(crate) const SLOW_CONSUMER: u16 = 4503;
/// Close code for a connection silent past `idle_timeout`.
pub(crate) const IDLE_TIMEOUT: u16 = 4408;
/// Close code when the token expired while connected (PROTOCOL.md §9).
pub(crate) const TOKEN_EXPIRED: u16 = 4403;
/// Close code when authentication failed (PROTOCOL.md §9).
pub(crate) const AUTH_FAILED: u16 = 4401;
/// Close code for a connection that stays over its inbound rate limit.
pub(crate) const RATE_LIMITED: u16 = 4429;
/// Close code for a connection that sends too many malformed messages (PROTOCOL.md §9).
pub(crate) const MALFORMED: u16 = 4400;
/// Close code when the server goes away without a requested code.
pub(crate) const GOING_AWAY: u16 = 1001;

/// How a connection takes compressed messages; fixed at the upgrade (PROTOCOL.md §1, §4).
///
/// Who gets what: a connection that negotiated permessage-deflate gets its large messages
/// deflated at the WebSocket layer and never `C:` frames (compressing twice gains nothing);
/// every other WSE connection gets `C:` frames, which the 2.x clients read; echo
/// connections without the extension get nothing compressed. E2E connections get neither
/// for sealed frames: `C:` is never used inside `E:`, and ciphertext does not deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Squeeze {
    /// Nothing is compressed.
    Off,
    /// JSON over the threshold goes as a binary `C:` frame.
    CFrames,
    /// Messages over the threshold go as permessage-deflate frames (RSV1).
    Deflate,
}

impl Squeeze {
    /// The mode for a connection under `config`, given whether it negotiated
    /// permessage-deflate and asked for msgpack (`C:` carries JSON only, so a msgpack
    /// connection without the extension gets nothing compressed).
    fn for_connection(
        config: &crate::config::Config,
        permessage_deflate: bool,
        msgpack: bool,
    ) -> Squeeze {
        if permessage_deflate {
            Squeeze::Deflate
        } else if config.compression.c_frames && !config.echo && !msgpack {
            Squeeze::CFrames
        } else {
            Squeeze::Off
        }
    }
}

/// The wire forms a connection asked for at the upgrade.
#[derive(Debug, Clone, Copy)]
struct Format {
    /// `format=msgpack`.
    msgpack: bool,
    /// How it takes compressed frames.
    squeeze: Squeeze,
}

/// What other tasks of the shard may touch of a connection.
///
/// Invariant: only the connection's own task writes to the socket; everyone else queues
/// into `out` and calls [`Conn::wake`].
pub(crate) struct Conn {
    pub id: ConnId,
    /// The `connection_id` clients see (UUIDv7).
    pub uuid: uuid::Uuid,
    pub out: RefCell<OutQueue>,
    /// The task's waker, taken by [`Conn::wake`].
    waker: Cell<Option<Waker>>,
    /// When the last bytes arrived from the client.
    last_seen: Cell<Instant>,
    /// When the last heartbeat was queued.
    last_ping: Cell<Instant>,
    /// A close the shard asked for (idle, slow consumer, shutdown); the first one wins.
    close: Cell<Option<u16>>,
    /// The last `seq` handed out; `server_ready` gets 1.
    seq: Cell<u64>,
    /// Topics and patterns this connection is subscribed to, as given.
    pub topics: RefCell<Vec<Box<str>>>,
    /// The token's `sub`; `None` for anonymous connections.
    pub user_id: Option<Box<str>>,
    /// The presence data the application set (JSON text); members join topics with it.
    pub presence_data: RefCell<Option<Arc<str>>>,
    /// When the token expires (Unix seconds); 0 when there is no token.
    expires_at: u64,
    /// Which topics the connection may receive and publish; `None` allows every topic.
    pub acl: RefCell<Option<Box<TopicAcl>>>,
    /// The E2E keys once `client_hello` agreed them; every data frame is sealed then.
    pub e2e: RefCell<Option<Box<SessionKeys>>>,
    /// The client asked for `format=msgpack`: server messages go as `M:` frames, except the
    /// heartbeats (PROTOCOL.md §4, §7), and unprefixed msgpack is accepted from it.
    pub msgpack: bool,
    /// Which compressed frames the connection takes (for its JSON frames; `M:` frames are
    /// never compressed).
    pub squeeze: Squeeze,
    /// What the application may ask about the upgrade request; kept only with an application.
    pub info: Option<Box<ConnectionInfo>>,
    /// The reason text of the close: the client's, or the application's `disconnect`.
    pub close_reason: RefCell<Option<Box<str>>>,
    /// Publications held back for snapshots (`snapshot.rs`); `None` while nothing is held.
    holds: RefCell<Option<Box<snapshot::Holds>>>,
}

impl Conn {
    fn new(
        id: ConnId,
        now: Instant,
        identity: Option<Identity>,
        info: Option<Box<ConnectionInfo>>,
        format: Format,
    ) -> Conn {
        let (user_id, expires_at, acl) = match identity {
            Some(id) => (Some(id.user_id), id.expires_at, id.acl),
            None => (None, 0, None),
        };
        Conn {
            id,
            uuid: uuid::Uuid::now_v7(),
            out: RefCell::new(OutQueue::default()),
            waker: Cell::new(None),
            last_seen: Cell::new(now),
            last_ping: Cell::new(now),
            close: Cell::new(None),
            seq: Cell::new(0),
            topics: RefCell::new(Vec::new()),
            user_id,
            presence_data: RefCell::new(None),
            expires_at,
            acl: RefCell::new(acl),
            e2e: RefCell::new(None),
            msgpack: format.msgpack,
            squeeze: format.squeeze,
            info,
            close_reason: RefCell::new(None),
            holds: RefCell::new(None),
        }
    }

    /// Whether a publication of `topic` may reach this connection under its ACL.
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        self.acl.borrow().as_ref().is_none_or(|acl| acl.may_receive(topic))
    }

    /// The frame that carries `json` (one JSON envelope) to this connection: once E2E is on,
    /// an `E:` binary frame sealed under this connection's key, unless `may_stay_plain`
    /// (PROTOCOL.md §5); otherwise `plain()`, which may be a frame shared by every
    /// subscriber. `None` when sealing failed (counted; the message is not sent).
    pub(crate) fn frame_for(
        &self,
        ivs: &RefCell<IvPool>,
        json: &[u8],
        may_stay_plain: bool,
        plain: impl FnOnce() -> Bytes,
    ) -> Option<Bytes> {
        let keys = self.e2e.borrow();
        let Some(keys) = keys.as_ref().filter(|_| !may_stay_plain) else {
            return Some(plain());
        };
        let mut sealed = Vec::with_capacity(json.len() + SEAL_OVERHEAD);
        keys.seal_with(&mut ivs.borrow_mut(), json, &mut sealed).ok()?;
        let mut frame = Vec::with_capacity(sealed.len() + 10);
        writer::encode_frame(OpCode::Data(Data::Binary), &sealed, &mut frame);
        Some(Bytes::from(frame))
    }

    /// Whether E2E keys were agreed on this connection.
    pub(crate) fn is_encrypted(&self) -> bool {
        self.e2e.borrow().is_some()
    }

    /// Wakes the connection's task so it writes what was queued or acts on a close request.
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Asks the task to close the connection with `code` (the first request wins).
    pub(crate) fn request_close(&self, code: u16) {
        if self.close.get().is_none() {
            self.close.set(Some(code));
        }
    }

    /// Whether a close was requested; frames queued now would never be sent.
    pub(crate) fn is_closing(&self) -> bool {
        self.close.get().is_some()
    }

    /// The next direct-message sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        seq
    }

    /// The housekeeping sweep: idle timeout first, then a heartbeat if one is due.
    /// `heartbeat` holds the shard's `ping` text frame and WebSocket Ping for this tick.
    pub(crate) fn tick(&self, shard: &Shard, now: Instant, heartbeat: &[Bytes; 2]) {
        if self.is_closing() {
            return;
        }
        let expired = self.expire_holds(now);
        if expired > 0 {
            ShardMetrics::add(&shard.metrics().snapshot_timeouts, expired as u64);
            debug!(conn = self.id.0, expired, "snapshot holds timed out");
            self.wake();
        }
        let config = &shard.shared.config;
        if now.saturating_duration_since(self.last_seen.get()) >= config.idle_timeout {
            self.request_close(IDLE_TIMEOUT);
            self.wake();
            return;
        }
        let expiry_closes = config.security.close_on_token_expiry && self.expires_at > 0;
        if expiry_closes && security::unix_secs() >= self.expires_at {
            self.request_close(TOKEN_EXPIRED);
            self.wake();
            return;
        }
        if now.saturating_duration_since(self.last_ping.get()) < config.ping_interval {
            return;
        }
        self.last_ping.set(now);
        let budget = config.max_outbound_queue_bytes;
        for frame in heartbeat {
            let outcome = self.out.borrow_mut().push_control(frame.clone(), budget);
            shard.account(self, outcome);
        }
    }
}

/// Takes a freshly accepted socket through the handshake gate and starts its task.
pub(crate) fn admit(shard: &Rc<Shard>, stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else { return };
    let Some(ticket) = shard.shared.gate.enter(peer.ip()) else {
        shard.metrics().rejected(Rejection::HandshakeCap);
        debug!(%peer, "handshake cap reached; socket dropped");
        return;
    };
    let _ = stream.set_nodelay(true);
    let shard = Rc::clone(shard);
    let span = debug_span!("conn", %peer);
    spawn_local(
        async move {
            let transport = match Transport::accept(stream, shard.shared.tls.as_ref()) {
                Ok(transport) => transport,
                Err(error) => {
                    shard.metrics().rejected(Rejection::Tls);
                    debug!(%error, "no TLS session for the socket");
                    return;
                }
            };
            let Some(upgraded) = handshake::run(&shard, transport, ticket).await else { return };
            // Who the connection is: decided here, where waiting for the application
            // (`require_accept`) costs nothing once the connection runs.
            let entry = accept::entry(&shard, upgraded.admission, &upgraded.request, peer).await;
            let Upgraded { stream, request, leftover, permessage_deflate, .. } = upgraded;
            // The session runs as a task of its own, so that the handshake's larger state is
            // freed rather than carried for the connection's whole life.
            let span = tracing::Span::current();
            let opened = Opened { stream, request, leftover, permessage_deflate, peer };
            let session = Session::start(shard, opened, entry);
            spawn_local(session.instrument(span)).detach();
        }
        .instrument(span),
    )
    .detach();
}

/// A socket that completed the upgrade, as the session takes it.
struct Opened {
    stream: Transport,
    request: Request,
    /// Bytes that followed the request head: the first frames.
    leftover: Vec<u8>,
    /// Whether permessage-deflate was agreed in the `101`.
    permessage_deflate: bool,
    peer: SocketAddr,
}

/// The task-local state of an upgraded connection.
struct Session {
    shard: Rc<Shard>,
    conn: Rc<Conn>,
    stream: Transport,
    reader: Reader,
    /// Bytes of the current write that the socket has not taken yet.
    writing: Option<Bytes>,
    /// The inbound rate limit.
    inbound: InboundLimit,
    /// Whether the client has sent an `E:` frame; plaintext data is refused from then on.
    peer_sealed: bool,
    /// Events for the application that did not fit its ring yet, oldest first. While any
    /// wait, the socket is not read; so this holds at most the events of one read.
    /// TODO(#4): that is up to 64 KiB of frames plus one reassembled message per stalled
    /// connection, outside the ring's byte bound; parsing one message at a time while the
    /// ring is full would keep one.
    backlog: VecDeque<Slot>,
    /// The room round the task last waited in (see `ShardSide::push_or_wait`).
    backlog_round: u64,
}

/// A connection that is refused before it is served.
enum Opening {
    /// Its token was refused (`close` failure mode): one `error`, then 4401.
    Refused(wse_protocol::auth::AuthError),
    /// The application rejected it, or did not accept it in time: close code and reason.
    Rejected(u16, Box<str>),
}

/// Events parsed from one read, and the error that stopped parsing, if any.
type Parsed = (Vec<Event>, Result<(), wse_protocol::Error>);

/// What woke the connection's task.
enum Step {
    /// `n` bytes are in the shard's read buffer.
    Input(usize),
    /// The client closed TCP, or the socket failed.
    Gone,
    /// The shard asked for a close with this code.
    Close(u16),
}

impl Session {
    /// Builds the session and answers what must be answered before the first read
    /// (`server_ready`, `connect`), then returns the task that serves the connection. The
    /// request is used up here, so the task never carries it.
    fn start(
        shard: Rc<Shard>,
        opened: Opened,
        entry: Entry,
    ) -> impl std::future::Future<Output = ()> {
        let Opened { stream, request, leftover, permessage_deflate, peer } = opened;
        let Entry { id, identity, refused, info, rejected, reported } = entry;
        let now = Instant::now();
        let config = &shard.shared.config;
        let msgpack = request.query_param("format").as_deref() == Some("msgpack");
        let squeeze = Squeeze::for_connection(config, permessage_deflate, msgpack);
        let format = Format { msgpack, squeeze };
        let conn = Rc::new(Conn::new(id, now, identity, info, format));
        if msgpack {
            ShardMetrics::add(&shard.shared.metrics.msgpack_connections, 1);
        }
        let reader = Reader::new(ReaderConfig {
            max_message_size: config.max_message_size,
            allow_rsv1: permessage_deflate,
        });
        let inbound = InboundLimit::new(&config.security, now);
        shard.conns.borrow_mut().insert(conn.id, Rc::clone(&conn));
        ShardMetrics::add(&shard.metrics().connections, 1);
        ShardMetrics::add(&shard.metrics().accepted, 1);
        debug!(conn = conn.id.0, %peer, "upgraded");
        let mut session = Session {
            shard,
            conn,
            stream,
            reader,
            writing: None,
            inbound,
            peer_sealed: false,
            backlog: VecDeque::new(),
            backlog_round: 0,
        };
        let opening = match (refused, rejected) {
            (Some(error), _) => Some(Opening::Refused(error)),
            (None, Some((code, text))) => Some(Opening::Rejected(code, text)),
            (None, None) => {
                if !reported {
                    session.emit_connect(&request);
                }
                if !session.shard.shared.config.echo {
                    session.greet(&request);
                }
                None
            }
        };
        // The request's headers are not needed any more; an idle connection keeps nothing
        // of its handshake.
        drop(request);
        session.run(opening, leftover)
    }

    /// The connection's life after [`Session::start`]: a refusal, or serving until the end.
    async fn run(mut self, opening: Option<Opening>, leftover: Vec<u8>) {
        match opening {
            Some(Opening::Refused(error)) => {
                let reason = Box::pin(self.refuse(&error)).await;
                return self.finish(reason);
            }
            Some(Opening::Rejected(code, text)) => {
                *self.conn.close_reason.borrow_mut() = Some(text);
                let reason = Box::pin(self.close_by_server(code, true)).await;
                return Box::pin(self.end(reason)).await;
            }
            None => {}
        }
        let reason = self.serve(leftover).await;
        Box::pin(self.end(reason)).await;
    }

    /// The last steps: out of the shard's tables, then `disconnect` to the application
    /// (after the socket is closed, waiting for room if need be).
    async fn end(mut self, reason: CloseReason) {
        self.finish(reason);
        self.emit_disconnect(reason);
        let (shard, backlog) = self.into_backlog();
        events::hand_over(&shard, backlog).await;
    }

    /// The connection's main loop. Rare and bulky steps (acting on messages, closing) run
    /// in boxed futures, so the state an idle connection keeps is only this loop's.
    async fn serve(&mut self, leftover: Vec<u8>) -> CloseReason {
        if !leftover.is_empty() {
            if let Some(reason) = Box::pin(self.input(&leftover)).await {
                return reason;
            }
        }
        drop(leftover);
        loop {
            let step = poll_fn(|cx| self.poll_step(cx)).await;
            let reason = match step {
                Step::Input(n) => {
                    let parsed = self.parse_shared(n);
                    Box::pin(self.act(parsed)).await
                }
                Step::Gone => Some(CloseReason::Transport),
                Step::Close(code) => Some(Box::pin(self.close_by_server(code, true)).await),
            };
            if let Some(reason) = reason {
                return reason;
            }
        }
    }

    /// Parses `bytes` and acts on every complete event; `Some` when the connection ended.
    async fn input(&mut self, bytes: &[u8]) -> Option<CloseReason> {
        let parsed = self.parse(bytes);
        self.act(parsed).await
    }

    /// Parses the first `n` bytes of the shard's read buffer. Synchronous on purpose: the
    /// buffer belongs to whichever connection reads next once this task yields.
    fn parse_shared(&mut self, n: usize) -> Parsed {
        let shard = Rc::clone(&self.shard);
        let buf = shard.read_buf.borrow();
        self.parse(&buf[..n])
    }

    fn parse(&mut self, bytes: &[u8]) -> Parsed {
        self.conn.last_seen.set(Instant::now());
        ShardMetrics::add(&self.shard.metrics().bytes_in, bytes.len() as u64);
        let mut events = Vec::new();
        let result = self.reader.feed(bytes, &mut events);
        (events, result)
    }

    /// Acts on parsed events in order, then on a parse error; `Some` when the connection
    /// ended.
    async fn act(&mut self, (events, result): Parsed) -> Option<CloseReason> {
        for event in events {
            if let Some(reason) = self.event(event).await {
                return Some(reason);
            }
            if self.conn.is_closing() {
                // The close is sent by the main loop; later input is not acted on.
                return None;
            }
        }
        let error = result.err()?;
        debug!(conn = self.conn.id.0, %error, "failing the connection");
        let code = error.close_code().unwrap_or(1002);
        Some(self.close_by_server(code, false).await)
    }

    async fn event(&mut self, event: Event) -> Option<CloseReason> {
        match event {
            Event::Message { text, data, compressed } => {
                ShardMetrics::add(&self.shard.metrics().messages_in, 1);
                let data = if compressed {
                    match self.inflate(text, data) {
                        Ok(data) => data,
                        Err(code) => return Some(self.close_by_server(code, true).await),
                    }
                } else {
                    data
                };
                self.message(text, data).await;
                None
            }
            Event::Ping(payload) => {
                self.queue_control(control_frame(PONG, &payload));
                None
            }
            Event::Pong(_) => None,
            Event::Close(frame) => Some(self.close_by_client(frame).await),
        }
    }

    /// One step of the connection: write what is queued, then look for input or a close.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
            trace!(conn = self.conn.id.0, error = %e, "write failed");
            return Poll::Ready(Step::Gone);
        }
        if let Some(code) = self.conn.close.get() {
            return Poll::Ready(Step::Close(code));
        }
        // While the application's ring is full the socket is not read (TCP backpressure).
        if self.poll_backlog(cx).is_ready() {
            match self.poll_read_shared(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Step::Gone),
                Poll::Ready(Ok(n)) => return Poll::Ready(Step::Input(n)),
                Poll::Pending => {}
            }
        }
        self.conn.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    /// Reads into the shard's shared buffer; the borrow ends before this returns.
    fn poll_read_shared(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = self.shard.read_buf.borrow_mut();
        Pin::new(&mut self.stream).poll_read(cx, &mut buf[..])
    }

    /// Writes queued frames until the queue is empty (`Ready(Ok)`) or the socket is full
    /// (`Pending`, woken when it drains).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.writing.is_none() {
                self.writing = self.next_batch();
            }
            if self.writing.is_none() && self.release_held() {
                continue;
            }
            let Some(batch) = self.writing.as_mut() else {
                // Everything is handed over; push out what the transport still holds (TLS).
                return Pin::new(&mut self.stream).poll_flush(cx);
            };
            let written = match Pin::new(&mut self.stream).poll_write(cx, batch) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let metrics = self.shard.metrics();
            ShardMetrics::add(&metrics.bytes_out, written as u64);
            ShardMetrics::add(&metrics.writes, 1);
            batch.advance(written);
            if batch.is_empty() {
                self.writing = None;
            }
        }
    }

    /// Takes the next frames to write: one frame as it is, or several copied into one
    /// buffer (at most [`BATCH`] bytes) so they leave in one system call.
    fn next_batch(&mut self) -> Option<Bytes> {
        let mut out = self.conn.out.borrow_mut();
        let first = out.pop()?;
        let mut frames = 1;
        if out.is_empty() || first.len() >= BATCH {
            ShardMetrics::add(&self.shard.metrics().messages_out, 1);
            return Some(first);
        }
        let mut batch = Vec::with_capacity((first.len() + out.bytes()).min(BATCH));
        batch.extend_from_slice(&first);
        while batch.len() < BATCH {
            let Some(frame) = out.pop() else { break };
            batch.extend_from_slice(&frame);
            frames += 1;
        }
        ShardMetrics::add(&self.shard.metrics().messages_out, frames);
        Some(Bytes::from(batch))
    }

    /// Queues a control frame (Pong, Close, heartbeat) ahead of data.
    fn queue_control(&self, frame: Bytes) {
        let budget = self.conn.budget_left(self.budget());
        let outcome = self.conn.out.borrow_mut().push_control(frame, budget);
        self.shard.account(&self.conn, outcome);
    }

    /// The outbound byte budget: the configured one, or room for an echoed message.
    fn budget(&self) -> usize {
        let config = &self.shard.shared.config;
        if config.echo {
            config.max_outbound_queue_bytes.max(2 * config.max_message_size + 64)
        } else {
            config.max_outbound_queue_bytes
        }
    }

    /// Moves the publications of ended snapshot holds into the (empty) queue; whether any
    /// were moved.
    fn release_held(&mut self) -> bool {
        if !self.conn.is_holding() {
            return false;
        }
        let Some(outcomes) = self.conn.release_ended(self.budget()) else { return false };
        let moved = !outcomes.is_empty();
        for outcome in outcomes {
            self.shard.account(&self.conn, outcome);
        }
        moved
    }

    /// Removes every trace of the connection from the shard.
    fn finish(&mut self, reason: CloseReason) {
        let shard = &self.shard;
        let topics = std::mem::take(&mut *self.conn.topics.borrow_mut());
        let mut index = shard.topics.borrow_mut();
        for topic in topics.iter() {
            index.unsubscribe(self.conn.id, topic);
        }
        drop(index);
        let held = topics.len() as u64;
        shard.metrics().subscriptions.fetch_sub(held, std::sync::atomic::Ordering::Relaxed);
        for topic in topics.iter() {
            shard.presence_leave(&self.conn, topic);
        }
        shard.conns.borrow_mut().remove(&self.conn.id);
        if self.conn.msgpack {
            ShardMetrics::dec(&shard.shared.metrics.msgpack_connections);
        }
        // The close is counted before the connection leaves the gauges, so that whoever sees
        // the connection gone also sees why it went.
        shard.metrics().closed(reason);
        shard.shared.admitted.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        ShardMetrics::dec(&shard.metrics().connections);
        debug!(conn = self.conn.id.0, reason = reason.label(), "closed");
    }
}

/// A complete unmasked control frame.
fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.push(0x80 | opcode);
    frame.push(payload.len().min(125) as u8);
    frame.extend_from_slice(&payload[..payload.len().min(125)]);
    Bytes::from(frame)
}

/// Pong opcode.
const PONG: u8 = 0xA;
/// Ping opcode.
pub(crate) const PING: u8 = 0x9;
/// Bytes an `E:` frame adds to its plaintext: prefix, IV and tag.
pub(crate) const SEAL_OVERHEAD: usize = 2 + 12 + 16;
/// Largest write assembled from several frames.
const BATCH: usize = 64 * 1024;

/// A WebSocket Ping frame with an empty payload, as sent by heartbeats.
pub(crate) fn ping_frame() -> Bytes {
    control_frame(PING, &[])
}
