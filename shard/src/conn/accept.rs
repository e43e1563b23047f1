//! `require_accept`: the application admits or refuses each connection (PROTOCOL.md §2).
//!
//! Place: `handshake → **accept** → session`. With `require_accept` on, an upgraded
//! connection first reports itself (`connect` or `auth_connect`), then waits, unread and
//! without `server_ready`, until the application calls `accept(conn, user_id)` or
//! `reject(conn, code, reason)`; a connection still waiting after `handshake_timeout` is
//! closed with 4401. While it waits, the connection is not in the shard's table (nothing can
//! be delivered to it) but its request's headers, query and peer address are, in the
//! shard's `waiting_accept` table, for `connection_info`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::timer::timeout;
use wse_fanout::ids::ConnId;
use wse_protocol::auth::AuthError;
use wse_protocol::handshake::Request;

use crate::app::inbound::Slot;
use crate::app::{ConnectionInfo, Event, EventKind};
use crate::metrics::ShardMetrics;
use crate::security::{Admission, Identity};
use crate::shard::Shard;

/// The application's verdict on a waiting connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admit, with this user id (`None` keeps the token's, if any).
    Accept(Option<Box<str>>),
    /// Close with this code and reason.
    Reject(u16, Box<str>),
}

/// A connection waiting for the application's verdict.
pub(crate) struct Waiting {
    pub info: Option<Box<ConnectionInfo>>,
    verdict: RefCell<Option<Verdict>>,
    waker: Cell<Option<Waker>>,
}

impl Waiting {
    /// Records the verdict (the first one wins) and wakes the connection.
    pub(crate) fn decide(&self, verdict: Verdict) {
        let mut slot = self.verdict.borrow_mut();
        if slot.is_none() {
            *slot = Some(verdict);
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// What a session starts with: its id, who it is, and what the application decided.
pub(super) struct Entry {
    pub id: ConnId,
    pub identity: Option<Identity>,
    /// A refused token (`close` failure mode): one `error`, then 4401.
    pub refused: Option<AuthError>,
    pub info: Option<Box<ConnectionInfo>>,
    /// The application's `reject` (or the wait's timeout): close code and reason.
    pub rejected: Option<(u16, Box<str>)>,
    /// Whether `connect` was already reported (it was, under `require_accept`).
    pub reported: bool,
}

/// Allocates the connection's id and, under `require_accept`, reports it and waits for the
/// application's verdict.
pub(super) async fn entry(
    shard: &Rc<Shard>,
    admission: Admission,
    request: &Request,
    peer: SocketAddr,
) -> Entry {
    let (identity, refused) = match admission {
        Admission::Anonymous => (None, None),
        Admission::User(identity) => (Some(identity), None),
        Admission::Refused(error) => (None, Some(error)),
    };
    let id = shard.next_conn_id();
    let info = shard.app.as_ref().map(|_| {
        let user_id = identity.as_ref().map(|i| &*i.user_id);
        let limit = shard.shared.config.max_connection_info_bytes;
        Box::new(super::events::connection_info(request, peer, user_id, limit))
    });
    let mut entry = Entry { id, identity, refused, info, rejected: None, reported: false };
    if entry.refused.is_some() || !shard.shared.config.require_accept || shard.app.is_none() {
        return entry;
    }
    let user_id = entry.identity.as_ref().map(|i| &*i.user_id);
    let kind = super::events::connect_kind(user_id, request);
    let (verdict, info) = await_verdict(shard, id, kind, entry.info.take()).await;
    entry.info = info;
    entry.reported = true;
    match verdict {
        Verdict::Accept(Some(user_id)) => {
            entry.identity = Some(with_user(entry.identity.take(), user_id));
        }
        Verdict::Accept(None) => {}
        Verdict::Reject(code, reason) => entry.rejected = Some((code, reason)),
    }
    if let Some(info) = entry.info.as_mut() {
        info.user_id = entry.identity.as_ref().map(|i| i.user_id.to_string());
    }
    entry
}

/// Reports connection `id` to the application with `kind`, then waits for the verdict, at
/// most `handshake_timeout`; a timeout is a rejection with 4401.
async fn await_verdict(
    shard: &Rc<Shard>,
    id: ConnId,
    kind: EventKind,
    info: Option<Box<ConnectionInfo>>,
) -> (Verdict, Option<Box<ConnectionInfo>>) {
    let waiting = Rc::new(Waiting { info, verdict: RefCell::new(None), waker: Cell::new(None) });
    shard.waiting_accept.borrow_mut().insert(id, Rc::clone(&waiting));
    report(shard, Slot { event: Event { conn: id, kind }, bytes: 0, lifecycle: true }).await;
    let limit = shard.shared.config.handshake_timeout;
    let verdict = timeout(limit, async {
        Ok(poll_fn(|cx| match waiting.verdict.borrow_mut().take() {
            Some(verdict) => Poll::Ready(verdict),
            None => {
                waiting.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await)
    })
    .await
    .unwrap_or_else(|_| Verdict::Reject(super::AUTH_FAILED, "not accepted in time".into()));
    shard.waiting_accept.borrow_mut().remove(&id);
    let info = Rc::try_unwrap(waiting).ok().and_then(|w| w.info);
    (verdict, info)
}

/// `identity` with the user id the application gave to `accept`.
fn with_user(identity: Option<Identity>, user_id: Box<str>) -> Identity {
    match identity {
        Some(identity) => Identity { user_id, ..identity },
        None => Identity { user_id, expires_at: 0, acl: None },
    }
}

/// Hands one lifecycle event to the ring, waiting for room.
async fn report(shard: &Shard, slot: Slot) {
    let Some(app) = &shard.app else { return };
    let mut slot = Some(slot);
    let mut round = 0;
    poll_fn(|cx| {
        let Some(next) = slot.take() else { return Poll::Ready(()) };
        match app.push_or_wait(next, cx, &mut round) {
            Ok(()) => {
                ShardMetrics::add(&shard.metrics().app_events, 1);
                Poll::Ready(())
            }
            Err(back) => {
                slot = Some(back);
                Poll::Pending
            }
        }
    })
    .await;
}
