//! Scale-out through Redis, as one owner shard takes part in it.
//!
//! Place: `owner task → **route** → Redis bridge → Redis → bridge → **from_bridge** → fan
//! out`. Only publications of topics that travel between instances
//! ([`BridgeHandle::travels`]) come here; the others are stamped by the owner as without
//! Redis. For each one the owner decides where its stamp comes from:
//!
//! - **Redis** (the bridge is [`accepting`](BridgeHandle::accepting)): the publication goes
//!   to the bridge unstamped, and is fanned out when it comes back from the subscription
//!   with Redis's `(epoch, offset)`, exactly as another instance's publication is. The
//!   topic's subscribers on this instance wait one Redis round trip for it; in exchange,
//!   every instance delivers the topic in the same order with the same stamps.
//! - **this shard** (the bridge is not accepting, and nothing of the topic is inside it):
//!   stamped at once by the shard's sequencer, under a local epoch (a new one after any
//!   Redis stamp, [`TopicSequencer::yield_to`](wse_fanout::TopicSequencer::yield_to)), and
//!   handed to the bridge as a dead letter for the other instances.
//!
//! Order within a topic survives the switch: while publications of a topic are inside the
//! bridge (counted in `inflight`), later ones follow them there even when the bridge no
//! longer accepts; the bridge resolves them in order, each either coming back stamped or
//! handed back as a fallback to stamp locally.
//!
//! The owner task waits for room in the bridge's channel without blocking the shard, and
//! keeps taking what the bridge hands it meanwhile ([`ScaleOut::next`] and the wait in
//! `route`): the bridge, blocked on this shard's full channel, can then always go on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use futures_lite::future;
use futures_lite::FutureExt;
use glommio::channels::local_channel::LocalReceiver;
use wse_fanout::bridge::{BridgeHandle, FromBridge, Outgoing};
use wse_fanout::mesh::ToOwner;

use super::Shard;
use crate::server::Shared;

/// A shard's part in the scale-out.
pub(crate) struct ScaleOut {
    /// The way to the bridge.
    pub bridge: BridgeHandle,
    /// What the bridge hands this shard.
    from_bridge: flume::Receiver<FromBridge>,
    /// Publications of each topic handed to the bridge and not yet resolved (came back or
    /// handed back). A topic with none has no entry.
    inflight: RefCell<HashMap<Arc<str>, u32>>,
}

/// The owner task's next piece of work.
pub(crate) enum OwnerWork {
    /// From this instance: a publication or a presence change.
    Local(ToOwner),
    /// From the bridge.
    Bridge(FromBridge),
}

impl ScaleOut {
    /// The shard's part, when the server runs with Redis.
    pub(crate) fn new(
        shared: &Shared,
        from_bridge: Option<flume::Receiver<FromBridge>>,
    ) -> Option<ScaleOut> {
        let bridge = shared.bridge.clone()?;
        let from_bridge = from_bridge?;
        Some(ScaleOut { bridge, from_bridge, inflight: RefCell::new(HashMap::new()) })
    }

    /// The next work for the owner task: whichever of the local queue and the bridge's
    /// channel has some first. `None` once the local queue is closed (shutdown).
    pub(crate) async fn next(&self, queue: &LocalReceiver<ToOwner>) -> Option<OwnerWork> {
        let local = async { queue.recv().await.map(OwnerWork::Local) };
        let bridge = async {
            match self.from_bridge.recv_async().await {
                Ok(message) => Some(OwnerWork::Bridge(message)),
                // The bridge holds its senders as long as the shards run.
                Err(_) => future::pending().await,
            }
        };
        local.race(bridge).await
    }

    fn inflight(&self, topic: &str) -> u32 {
        self.inflight.borrow().get(topic).copied().unwrap_or(0)
    }

    fn enter(&self, topic: &Arc<str>) {
        *self.inflight.borrow_mut().entry(Arc::clone(topic)).or_insert(0) += 1;
    }

    /// One publication of `topic` left the bridge.
    fn resolve(&self, topic: &str) {
        let mut inflight = self.inflight.borrow_mut();
        if let Some(n) = inflight.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                inflight.remove(topic);
            }
        }
    }
}

impl Shard {
    /// A travelling publication: to the bridge for Redis to stamp, or stamped here when the
    /// bridge cannot take it (see the module docs).
    pub(super) async fn route(&self, scale_out: &ScaleOut, message: Outgoing) {
        let accepting = scale_out.bridge.accepting();
        if !accepting && scale_out.inflight(&message.topic) == 0 {
            let message = Arc::new(message);
            self.stamp_locally(&message).await;
            scale_out.bridge.dead_letter(message);
            return;
        }
        let topic = Arc::clone(&message.topic);
        scale_out.enter(&topic);
        let handed = {
            let handing = scale_out.bridge.publish(Arc::new(message));
            futures_lite::pin!(handing);
            loop {
                let handed = async { Step::Handed(handing.as_mut().await) };
                let taken = async {
                    match scale_out.from_bridge.recv_async().await {
                        Ok(message) => Step::Took(message),
                        Err(_) => future::pending().await,
                    }
                };
                match handed.or(taken).await {
                    Step::Handed(result) => break result,
                    Step::Took(message) => self.take_from_bridge(message).await,
                }
            }
        };
        if let Err(message) = handed {
            // The bridge stopped (shutdown): deliver here.
            scale_out.resolve(&topic);
            self.stamp_locally(&message).await;
        }
    }

    /// What the bridge handed this shard: a stamped publication to fan out, one of ours to
    /// stamp locally after all, or a direct message for a connection of this shard.
    pub(super) async fn take_from_bridge(&self, message: FromBridge) {
        let Some(scale_out) = &self.scale_out else { return };
        match message {
            FromBridge::Deliver { message, epoch, offset, own } => {
                if own {
                    scale_out.resolve(&message.topic);
                }
                let now = std::time::Instant::now();
                self.sequencer.borrow_mut().yield_to(&message.topic, epoch, now);
                self.fan_out(&message, epoch, offset).await;
            }
            FromBridge::Fallback(message) => {
                scale_out.resolve(&message.topic);
                self.stamp_locally(&message).await;
            }
            FromBridge::Direct(direct) => {
                let Some(conn) = self.conns.borrow().get(&direct.conn).cloned() else { return };
                let cid = direct.cid.as_deref();
                self.send_event(&conn, &direct.t, &direct.payload, direct.pri, cid);
            }
        }
    }
}

/// One step of waiting for room in the bridge's channel.
enum Step {
    /// The bridge took the publication, or gave it back (stopped).
    Handed(Result<(), Arc<Outgoing>>),
    /// The bridge handed this shard something meanwhile.
    Took(FromBridge),
}
