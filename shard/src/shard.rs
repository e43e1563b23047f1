//! One shard: a pinned glommio executor and everything it owns.
//!
//! Place: `accept → **shard** → conn tasks`, and `rings → **shard** → subscribers' queues`.
//! A shard owns its listener, its connection table, its part of the topic index, the
//! sequencers of the topics it owns, and one read buffer shared by all its connections (a
//! connection borrows it only while a read is being parsed, never across an await, so idle
//! connections hold no read buffer at all). Nothing here is touched by another thread.
//!
//! Tasks per shard: the accept loop, one task per connection, the owner task that stamps
//! publications of the topics this shard owns, one receiver task per peer ring, the
//! housekeeping sweep (heartbeats, idle timeouts, topic eviction), and the control loop.
//!
//! Formats and filters on delivery. A publication is encoded once per wire format: the
//! owner writes the JSON frame, and the `M:` msgpack frame too whenever any shard has a
//! `format=msgpack` connection open (one atomic read per publication). The conversion costs
//! about as much as writing the JSON envelope again (README, "MessagePack"), once per
//! publication; leaving it to every shard that has msgpack subscribers would cost it up to
//! once per shard. The price is a conversion nobody reads when msgpack connections exist
//! but none subscribes to the topic. A shard that meets a msgpack subscriber of a
//! publication that came without the frame (the connection opened after the owner looked)
//! converts it once for all its subscribers. Subscription filters (`wse_protocol::filter`)
//! are judged here, before a publication is queued: the shard parses the publication's JSON
//! at most once, and only when the topic has a filtered subscriber.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::StreamExt;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{spawn_local, timer::sleep};
use tracing::{debug, info_span, warn, Instrument};
use wse_fanout::acl::TopicAcl;
use wse_fanout::ids::ConnId;
use wse_fanout::index::TopicIndex;
use wse_fanout::mesh::{Encoded, MeshSetup, Publication, PublishRequest, Rings};
use wse_fanout::sequencer::TopicSequencer;
use wse_protocol::auth::TopicRules;
use wse_protocol::e2e::IvPool;
use wse_protocol::engine;
use wse_protocol::envelope::{self, PublicationMeta};
use wse_protocol::filter::{self, RegexCache};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::msgpack;
use wse_protocol::signing;
use wse_protocol::writer;

use crate::conn::{self, Conn};
use crate::metrics::{DropReason, ShardMetrics};
use crate::outqueue::Push;
use crate::security;
use crate::server::{Control, Shared};

/// What a shard is started with.
pub(crate) struct ShardSetup {
    pub index: usize,
    pub socket: socket2::Socket,
    pub mesh: MeshSetup,
    pub control: flume::Receiver<Control>,
}

/// A shard's state, shared by its tasks through an `Rc`.
pub(crate) struct Shard {
    /// Position in the configured core list; also the metrics index.
    pub index: usize,
    pub shared: Arc<Shared>,
    /// Open connections of this shard.
    pub conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    /// Who on this shard is subscribed to what.
    pub topics: RefCell<TopicIndex>,
    /// Offsets of the topics this shard owns.
    sequencer: RefCell<TopicSequencer>,
    /// Scratch space every connection reads into; see the module docs.
    pub read_buf: RefCell<Box<[u8]>>,
    /// Random IVs for sealing `E:` frames, drawn in bulk for all the shard's connections.
    pub ivs: RefCell<IvPool>,
    /// Regexes of subscription filters, shared by the shard's subscriptions.
    pub regexes: RefCell<RegexCache>,
    rings: Rings,
    /// Publish requests waiting for the owner task, in arrival order.
    owner_queue: LocalSender<PublishRequest>,
    next_conn: Cell<u64>,
    /// Set once shutdown began: no new connections, no new subscriptions.
    pub stopping: Cell<bool>,
}

/// Runs a shard until it is told to shut down and its connections are gone.
pub(crate) async fn run(shared: Arc<Shared>, setup: ShardSetup) {
    let index = setup.index;
    let span = info_span!("shard", shard = index);
    async move {
        let mut rings = match setup.mesh.join().await {
            Ok(rings) => rings,
            Err(e) => return warn!(error = %e, "shard could not join the rings"),
        };
        let requests = rings.from_publishers.streams();
        let publications = rings.from_owners.streams();
        let (owner_queue, owner_rx) = local_channel::new_bounded(OWNER_QUEUE);
        let shard = Rc::new(Shard::new(index, shared, rings, owner_queue));
        spawn_local(owner_task(Rc::clone(&shard), owner_rx)).detach();
        shard.spawn_ring_receivers(requests, publications);
        spawn_local(housekeeping(Rc::clone(&shard))).detach();
        let listener = crate::listener::into_glommio(setup.socket);
        let accept = spawn_local(accept_loop(Rc::clone(&shard), listener));
        let code = control_loop(&shard, &setup.control).await;
        drop(accept);
        shard.drain(code).await;
    }
    .instrument(span)
    .await
}

impl Shard {
    fn new(
        index: usize,
        shared: Arc<Shared>,
        rings: Rings,
        owner_queue: LocalSender<PublishRequest>,
    ) -> Shard {
        Shard {
            index,
            shared,
            conns: RefCell::new(HashMap::new()),
            topics: RefCell::new(TopicIndex::default()),
            sequencer: RefCell::new(TopicSequencer::default()),
            read_buf: RefCell::new(vec![0; READ_BUF].into_boxed_slice()),
            ivs: RefCell::new(IvPool::new()),
            regexes: RefCell::new(RegexCache::new()),
            rings,
            owner_queue,
            next_conn: Cell::new(1),
            stopping: Cell::new(false),
        }
    }

    /// This shard's counters.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics.shards[self.index]
    }

    /// A fresh connection id, unique across shards (shard index in the top 16 bits).
    pub(crate) fn next_conn_id(&self) -> ConnId {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        ConnId(((self.index as u64) << SHARD_SHIFT) | n)
    }

    /// Replaces a connection's topic ACL; later deliveries are filtered by it at once.
    fn set_topic_acl(&self, conn: ConnId, rules: Option<TopicRules>) {
        let Some(conn) = self.conns.borrow().get(&conn).cloned() else { return };
        *conn.acl.borrow_mut() = rules.map(|rules| Box::new(TopicAcl::new(&rules)));
    }

    /// Sends `request` towards the owner of its topic. Waits while the rings are full, which
    /// holds back the publisher (its connection stops reading) rather than dropping.
    pub(crate) async fn publish(&self, request: PublishRequest) {
        let owner = self.rings.owner_of(&request.topic);
        if self.rings.owns(&request.topic) {
            let _ = self.owner_queue.send(request).await;
        } else if self.rings.to_owner.send_to(owner.0, request).await.is_err() {
            debug!("owner shard is gone; publication dropped during shutdown");
        }
    }

    /// Stamps a publication of a topic this shard owns, encodes it once, and hands the same
    /// bytes to local subscribers and to every other shard.
    async fn stamp_and_fan_out(&self, request: PublishRequest) {
        let stamp = self.sequencer.borrow_mut().stamp(&request.topic, Instant::now(), new_epoch);
        let id = uuid::Uuid::now_v7().to_string();
        let meta = PublicationMeta {
            topic: &request.topic,
            event_type: request.event_type.as_deref(),
            id: &id,
            now_ms: unix_ms(),
            epoch: stamp.epoch,
            offset: stamp.offset,
            pri: request.pri,
        };
        let mut json = Vec::with_capacity(request.data.len() + 160);
        envelope::publication(&meta, &request.data, &mut json);
        // TODO(#4): while any msgpack connection is open, publications of topics that no
        // msgpack connection subscribes to are converted too; telling owners which topics
        // have msgpack subscribers (a count per topic, kept by the shards) would spare that.
        let msgpack = self
            .shared
            .metrics
            .any_msgpack_connection()
            .then(|| self.encode_publication(&json))
            .flatten();
        let t = request.event_type.as_deref().unwrap_or(&request.topic);
        let json = self.sign_if_selected(t, json);
        let frame = text_frame(&json);
        let json = frame.slice(frame.len() - json.len()..);
        let pri = request.pri;
        let publication = Publication { topic: stamp.topic, pri, frame, json, msgpack };
        ShardMetrics::add(&self.metrics().publications, 1);
        self.deliver_local(&publication);
        for peer in self.rings.other_shards() {
            if self.rings.to_shards.send_to(peer, publication.clone()).await.is_err() {
                debug!(peer, "peer shard is gone; delivery skipped during shutdown");
            }
        }
    }

    /// Appends `sig` (PROTOCOL.md §6, the shared key) when messages of type `t` are
    /// selected for signing; otherwise returns `json` as it is.
    pub(crate) fn sign_if_selected(&self, t: &str, json: Vec<u8>) -> Vec<u8> {
        let Some(key) = self.shared.guard.signing_key() else { return json };
        if !security::signs(&self.shared.config.security, t) {
            return json;
        }
        let mut signed = Vec::with_capacity(json.len() + SIG_BYTES);
        match signing::sign(key, &json, &mut signed) {
            Ok(()) => signed,
            Err(error) => {
                // Only a message that is not one JSON object gets here: a bug of ours.
                tracing::error!(%error, t, "message left unsigned");
                json
            }
        }
    }

    /// [`Shard::msgpack_of`] for a publication, counted as one msgpack encoding.
    fn encode_publication(&self, json: &[u8]) -> Option<Encoded> {
        let encoded = self.msgpack_of(json)?;
        ShardMetrics::add(&self.metrics().msgpack_encoded, 1);
        Some(encoded)
    }

    /// The `M:` frame of an envelope given as JSON text (any `sig` is left out, PROTOCOL.md
    /// §6); `None`, counted as a fallback, when it cannot be converted (nested too deeply),
    /// and msgpack connections then get the JSON frame.
    pub(crate) fn msgpack_of(&self, json: &[u8]) -> Option<Encoded> {
        let mut body = Vec::with_capacity(json.len() + 16);
        if msgpack::from_envelope(json, &mut body).is_err() {
            ShardMetrics::add(&self.metrics().msgpack_fallbacks, 1);
            return None;
        }
        let frame = binary_frame(&body);
        let body = frame.slice(frame.len() - body.len()..);
        Some(Encoded { frame, body })
    }

    /// Queues `publication` for every local subscriber of its topic whose filter, if any,
    /// lets it through, in the subscriber's format.
    pub(crate) fn deliver_local(&self, publication: &Publication) {
        let conns = self.conns.borrow();
        // Parsed for filters at most once, when the first filtered subscriber asks.
        let document = OnceCell::new();
        let passes = |filter: &filter::Filter| {
            let document = document.get_or_init(|| filter::parse_document(&publication.json));
            document.as_ref().is_ok_and(|envelope| filter.matches(envelope))
        };
        // Encoded here at most once, when the owner did not and a msgpack subscriber needs it.
        let local_msgpack = OnceCell::new();
        let msgpack = || {
            publication.msgpack.as_ref().or_else(|| {
                local_msgpack.get_or_init(|| self.encode_publication(&publication.json)).as_ref()
            })
        };

        let topics = self.topics.borrow();
        let filtered_out = topics.for_each_subscriber_where(&publication.topic, passes, |id| {
            let Some(conn) = conns.get(&id) else { return };
            if conn.is_closing() {
                return self.metrics().dropped(DropReason::Closing, 1);
            }
            if !conn.may_receive(&publication.topic) {
                // A glob subscription also matches topics the ACL denies.
                return;
            }
            self.queue_publication(conn, publication, conn.msgpack.then(msgpack).flatten());
        });
        if filtered_out > 0 {
            ShardMetrics::add(&self.metrics().filtered_out, filtered_out as u64);
        }
    }

    /// Queues a publication for one subscriber: the shared JSON frame, or the `msgpack` one
    /// when given, sealed for that subscriber on an E2E connection.
    fn queue_publication(&self, conn: &Conn, publication: &Publication, msgpack: Option<&Encoded>) {
        let (body, shared) = match msgpack {
            Some(encoded) => (&encoded.body, &encoded.frame),
            None => (&publication.json, &publication.frame),
        };
        let Some(frame) = conn.frame_for(&self.ivs, body, false, || shared.clone()) else {
            return self.metrics().dropped(DropReason::SealFailed, 1);
        };
        if msgpack.is_some() {
            ShardMetrics::add(&self.metrics().msgpack_out, 1);
        }
        let budget = self.shared.config.max_outbound_queue_bytes;
        let outcome = conn.out.borrow_mut().push(publication.pri, frame, budget);
        self.account(conn, outcome);
    }

    /// Applies the drop policy's outcome to a connection and the metrics.
    pub(crate) fn account(&self, conn: &Conn, outcome: Push) {
        match outcome {
            Push::Queued { evicted } => {
                if evicted > 0 {
                    self.metrics().dropped(DropReason::QueueFull, evicted as u64);
                }
            }
            Push::Dropped => self.metrics().dropped(DropReason::QueueFull, 1),
            Push::Overflow => conn.request_close(conn::SLOW_CONSUMER),
        }
        conn.wake();
    }

    /// One task per peer ring: requests go to the owner queue, publications to subscribers.
    fn spawn_ring_receivers(
        self: &Rc<Self>,
        requests: Vec<(usize, ConnectedReceiver<PublishRequest>)>,
        publications: Vec<(usize, ConnectedReceiver<Publication>)>,
    ) {
        for (_, mut stream) in requests {
            let shard = Rc::clone(self);
            spawn_local(async move {
                while let Some(request) = stream.next().await {
                    if shard.owner_queue.send(request).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
        }
        for (_, mut stream) in publications {
            let shard = Rc::clone(self);
            spawn_local(async move {
                while let Some(publication) = stream.next().await {
                    shard.deliver_local(&publication);
                }
            })
            .detach();
        }
    }

    /// Closes every connection with `code` and waits (bounded) until they are gone.
    async fn drain(&self, code: u16) {
        self.stopping.set(true);
        for conn in self.conns.borrow().values() {
            conn.request_close(code);
            conn.wake();
        }
        let deadline = Instant::now() + self.shared.config.close_timeout + DRAIN_SLACK;
        while !self.conns.borrow().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Stamps publications in arrival order; the only task that calls `stamp_and_fan_out`, so
/// a topic's offsets leave this shard in the order they were assigned.
async fn owner_task(shard: Rc<Shard>, queue: local_channel::LocalReceiver<PublishRequest>) {
    while let Some(request) = queue.recv().await {
        shard.stamp_and_fan_out(request).await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: glommio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors or a transient error: back off instead of spinning.
                warn!(error = %e, "accept failed");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        conn::admit(&shard, stream);
    }
}

/// Serves control messages until a shutdown arrives; returns its close code.
async fn control_loop(shard: &Rc<Shard>, control: &flume::Receiver<Control>) -> u16 {
    while let Ok(message) = control.recv_async().await {
        match message {
            Control::Shutdown { code } => return code,
            Control::Publish(request) => shard.publish(request).await,
            Control::SetTopicAcl { conn, rules } => shard.set_topic_acl(conn, rules),
        }
    }
    conn::GOING_AWAY
}

/// Every tick: heartbeats due, idle connections, idle topic sequencers.
async fn housekeeping(shard: Rc<Shard>) {
    let config = &shard.shared.config;
    let tick = (config.ping_interval.min(config.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        sleep(tick).await;
        let now = Instant::now();
        if !config.echo {
            let mut ping = Vec::with_capacity(96);
            engine::server_ping(unix_ms(), &mut ping);
            let heartbeat = [text_frame(&ping), conn::ping_frame()];
            let conns: Vec<Rc<Conn>> = shard.conns.borrow().values().cloned().collect();
            for conn in conns {
                conn.tick(&shard, now, &heartbeat);
            }
        }
        shard.sequencer.borrow_mut().evict_idle(now, TOPIC_TTL);
    }
}

/// The shard that owns connection `conn` (see [`Shard::next_conn_id`]).
pub(crate) fn shard_of(conn: ConnId) -> usize {
    (conn.0 >> SHARD_SHIFT) as usize
}

/// A complete unmasked text frame around `payload`, ready to share between connections.
pub(crate) fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    writer::encode_frame(OpCode::Data(Data::Text), payload, &mut frame);
    Bytes::from(frame)
}

/// A complete unmasked binary frame around `payload` (an `M:` message).
pub(crate) fn binary_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    writer::encode_frame(OpCode::Data(Data::Binary), payload, &mut frame);
    Bytes::from(frame)
}

/// Milliseconds since the Unix epoch (wall clock, for `ts` and `server_time`).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A random topic epoch.
fn new_epoch() -> u32 {
    let bits = uuid::Uuid::now_v7().as_u128();
    (bits as u32) ^ ((bits >> 32) as u32)
}

/// Read buffer shared by a shard's connections.
const READ_BUF: usize = 64 * 1024;
/// Publish requests waiting for the owner task.
const OWNER_QUEUE: usize = 1024;
/// A topic not published for this long starts a new epoch (PROTOCOL.md §10 history TTL).
const TOPIC_TTL: Duration = Duration::from_secs(300);
/// Extra time a draining shard gives its connections beyond the close timeout.
const DRAIN_SLACK: Duration = Duration::from_millis(500);
/// Room for `,"sig":"<44 base64 characters>"`.
const SIG_BYTES: usize = 56;
/// Bits of a connection id below the shard index.
const SHARD_SHIFT: u32 = 48;
