//! The cross-shard rings that carry publications between shards.
//!
//! Place: `publisher's shard → **ring** → owner shard → **ring** → every shard`.
//! Two full meshes of bounded single-producer single-consumer rings (glommio
//! `channel_mesh`), one ring per ordered pair of shards in each:
//!
//! - the *publish* mesh carries [`ToOwner`] messages from the publisher's shard to the
//!   topic's owner shard ([`crate::owner::owner_shard`]), which alone stamps the topic's
//!   offsets and keeps its presence: [`PublishRequest`]s, and [`PresenceChange`]s, which
//!   ride the same FIFO ring so that one connection's join reaches the owner before its
//!   leave;
//! - the *delivery* mesh carries stamped, already encoded [`Publication`]s from the owner to
//!   every other shard.
//!
//! Two meshes rather than one keep the graph acyclic: a delivery receiver never sends, so it
//! always drains, and an owner blocked on a full delivery ring is always eventually
//! unblocked. Rings are FIFO and each topic has one owner, so every shard sees a topic's
//! publications in offset order.

use std::sync::Arc;

use bytes::Bytes;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use wse_protocol::envelope::Priority;

use crate::ids::ShardId;
use crate::owner::owner_shard;
use crate::presence::PresenceChange;

/// What travels from any shard to a topic's owner shard.
#[derive(Debug, Clone)]
pub enum ToOwner {
    /// A publication to stamp and fan out.
    Publish(PublishRequest),
    /// A connection joined, left or updated its presence on a topic.
    Presence(PresenceChange),
}

impl ToOwner {
    /// The topic the message is about, which names its owner.
    pub fn topic(&self) -> &str {
        match self {
            ToOwner::Publish(request) => &request.topic,
            ToOwner::Presence(change) => &change.topic,
        }
    }
}

/// A request to publish, on its way to the topic's owner shard (not yet stamped).
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Exact topic name, already validated.
    pub topic: Arc<str>,
    /// Event type `t`; the topic name when absent.
    pub event_type: Option<Box<str>>,
    /// The payload `p`, as serialised JSON.
    pub data: Box<str>,
    /// Priority of the publication.
    pub pri: Priority,
    /// The message id its publisher gave, if any: it becomes the publication's `id`, and the
    /// owner's de-duplication window drops a second publication of the topic with the same
    /// id (PROTOCOL.md §3, §10). `None`: the owner makes a fresh UUIDv7.
    pub id: Option<Box<str>>,
}

/// A stamped publication, encoded once as a complete WebSocket frame shared by every
/// subscriber on every shard.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Exact topic name; subscribers are looked up by it.
    pub topic: Arc<str>,
    /// Priority for the subscribers' outbound queues.
    pub pri: Priority,
    /// The topic's epoch (`e`) when it was stamped.
    pub epoch: u32,
    /// Its offset (`o`) within the epoch.
    pub offset: u64,
    /// The whole server frame (header and JSON payload), reference-counted.
    pub frame: Bytes,
    /// The JSON payload alone: a view into `frame`, for connections that must transform it
    /// (end-to-end encryption seals it under each subscriber's key).
    pub json: Bytes,
    /// Where `,"sig":` begins in `json` when the publication was signed with the shared key
    /// (PROTOCOL.md §6); `None` when unsigned. See [`Publication::unsigned_json`].
    pub sig_at: Option<usize>,
    /// The same JSON as a `C:` frame (PROTOCOL.md §4), compressed once by the owner shard;
    /// `None` when the JSON is within the compression threshold or does not shrink.
    pub compressed: Option<Bytes>,
    /// The same JSON as one permessage-deflate text frame (RSV1 set), cut from the same
    /// compression, for connections that negotiated the extension; `None` as above.
    pub deflated: Option<Bytes>,
    /// The same publication as an `M:` frame for `format=msgpack` connections (PROTOCOL.md
    /// §4), encoded once by the owner when any such connection exists; `None` otherwise, and
    /// a shard that finds a msgpack subscriber then encodes it once for itself.
    pub msgpack: Option<Encoded>,
}

/// One message encoded in one wire format, ready to share between connections.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The whole server frame (header and payload).
    pub frame: Bytes,
    /// The payload alone, a view into `frame` (what E2E seals).
    pub body: Bytes,
}

impl Publication {
    /// The JSON payload without the shared-key signature, for subscribers that do not get the
    /// plaintext frame: a sealed `E:` frame is authenticated by AES-GCM and carries no `sig`
    /// (§6 signs JSON text frames, with the E2E key on E2E connections). Borrowed when the
    /// publication was not signed.
    pub fn unsigned_json(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.sig_at {
            Some(at) if at < self.json.len() => {
                let mut json = Vec::with_capacity(at + 1);
                json.extend_from_slice(&self.json[..at]);
                json.push(b'}');
                std::borrow::Cow::Owned(json)
            }
            _ => std::borrow::Cow::Borrowed(&self.json[..]),
        }
    }

    /// Bytes of encoded frames this publication holds alive, for history accounting. `json`
    /// is a view into `frame` and costs nothing more.
    pub fn encoded_bytes(&self) -> usize {
        let extra = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        let msgpack = self.msgpack.as_ref().map_or(0, |m| m.frame.len());
        self.frame.len() + extra(&self.compressed) + extra(&self.deflated) + msgpack
    }
}

/// Everything a shard needs to join both meshes; clone one per shard.
#[derive(Debug, Clone)]
pub struct MeshSetup {
    publish: MeshBuilder<ToOwner, Full>,
    deliver: MeshBuilder<Publication, Full>,
}

/// One shard's ends of both meshes.
#[derive(Debug)]
pub struct Rings {
    /// Senders towards owner shards (index = peer id in the publish mesh).
    pub to_owner: Senders<ToOwner>,
    /// Requests and presence changes from other shards for topics this shard owns.
    pub from_publishers: Receivers<ToOwner>,
    /// Senders towards every other shard's subscribers.
    pub to_shards: Senders<Publication>,
    /// Publications stamped by other shards.
    pub from_owners: Receivers<Publication>,
}

impl MeshSetup {
    /// Rings for `shards` shards, each holding at most `capacity` messages.
    pub fn new(shards: usize, capacity: usize) -> MeshSetup {
        MeshSetup {
            publish: MeshBuilder::full(shards, capacity),
            deliver: MeshBuilder::full(shards, capacity),
        }
    }

    /// Joins both meshes; completes once every shard has joined. Must run on an executor.
    pub async fn join(self) -> Result<Rings, crate::Error> {
        let (to_owner, from_publishers) =
            self.publish.join().await.map_err(|_| crate::Error::MeshJoin)?;
        let (to_shards, from_owners) =
            self.deliver.join().await.map_err(|_| crate::Error::MeshJoin)?;
        Ok(Rings { to_owner, from_publishers, to_shards, from_owners })
    }
}

impl Rings {
    /// Number of shards in the mesh.
    pub fn shards(&self) -> usize {
        self.to_owner.nr_consumers()
    }

    /// The shard that stamps `topic`, as a peer id of the publish mesh.
    pub fn owner_of(&self, topic: &str) -> ShardId {
        owner_shard(topic, self.shards())
    }

    /// Whether this shard stamps `topic`.
    pub fn owns(&self, topic: &str) -> bool {
        self.owner_of(topic).0 == self.to_owner.peer_id()
    }

    /// Peer ids of the delivery mesh other than this shard's own.
    pub fn other_shards(&self) -> impl Iterator<Item = usize> + '_ {
        let me = self.to_shards.peer_id();
        (0..self.to_shards.nr_consumers()).filter(move |&p| p != me)
    }
}
