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

use std::cell::{Cell, RefCell};
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
use wse_fanout::mesh::{MeshSetup, Publication, PublishRequest, Rings};
use wse_fanout::sequencer::TopicSequencer;
use wse_protocol::auth::TopicRules;
use wse_protocol::deflate::{Deflater, Inflater};
use wse_protocol::e2e::IvPool;
use wse_protocol::engine;
use wse_protocol::envelope::{self, PublicationMeta};
use wse_protocol::frame::OpCode;
use wse_protocol::signing;
use wse_protocol::writer;

use crate::conn::{self, Conn, Squeeze};
use crate::metrics::{Codec, DropReason, ShardMetrics};
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
    /// The one compressor of the shard (`C:` frames and permessage-deflate, one-shot).
    deflater: RefCell<Deflater>,
    /// The one decompressor of the shard, bounded by `max_message_size`.
    pub inflater: RefCell<Inflater>,
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
            conns: RefCell::new(HashMap::new()),
            topics: RefCell::new(TopicIndex::default()),
            sequencer: RefCell::new(TopicSequencer::default()),
            read_buf: RefCell::new(vec![0; READ_BUF].into_boxed_slice()),
            ivs: RefCell::new(IvPool::new()),
            deflater: RefCell::new(new_deflater(shared.config.compression.level)),
            inflater: RefCell::new(Inflater::new(shared.config.max_message_size)),
            rings,
            owner_queue,
            next_conn: Cell::new(1),
            stopping: Cell::new(false),
            shared,
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
        let t = request.event_type.as_deref().unwrap_or(&request.topic);
        let json = self.sign_if_selected(t, json);
        let (compressed, deflated) = self.compress_publication(&json);
        let frame = text_frame(&json);
        let json = frame.slice(frame.len() - json.len()..);
        let publication =
            Publication { topic: stamp.topic, pri: request.pri, frame, json, compressed, deflated };
        ShardMetrics::add(&self.metrics().publications, 1);
        self.deliver_local(&publication);
        for peer in self.rings.other_shards() {
            if self.rings.to_shards.send_to(peer, publication.clone()).await.is_err() {
                debug!(peer, "peer shard is gone; delivery skipped during shutdown");
            }
        }
    }

    /// The `C:` frame and the permessage-deflate frame of a publication's JSON, from one
    /// compression, when the JSON is over the threshold and shrinks; each only when some
    /// connection may take it.
    fn compress_publication(&self, json: &[u8]) -> (Option<Bytes>, Option<Bytes>) {
        let settings = &self.shared.config.compression;
        let wanted = settings.c_frames || settings.permessage_deflate;
        if !wanted || json.len() <= settings.threshold {
            return (None, None);
        }
        let mut deflater = self.deflater.borrow_mut();
        let Some(compressed) = deflater.compress(json) else { return (None, None) };
        let c_frame = settings.c_frames.then(|| {
            self.metrics().compressed(Codec::CFrame);
            Bytes::from(compressed.c_frame())
        });
        let deflated = settings.permessage_deflate.then(|| {
            self.metrics().compressed(Codec::PerMessageDeflate);
            let text = OpCode::Data(wse_protocol::frame::Data::Text);
            Bytes::from(compressed.deflate_frame(text))
        });
        (c_frame, deflated)
    }

    /// The frame for a message addressed to `conn` alone (`json`, of type `t`): compressed
    /// as the connection takes it when over the threshold, else a plain text frame.
    /// Heartbeats are never `C:` frames: 2.x clients match their first bytes as text.
    pub(crate) fn direct_frame(&self, conn: &Conn, t: &str, json: &[u8]) -> Bytes {
        self.frame_of(conn.squeeze, OpCode::Data(wse_protocol::frame::Data::Text), json, || {
            t != "PONG" && t != "ping"
        })
    }

    /// `payload` as one frame with `opcode` for a connection that takes `squeeze`:
    /// compressed when it is over the threshold, `may_compress()` allows it and it
    /// shrinks, else plain.
    pub(crate) fn frame_of(
        &self,
        squeeze: Squeeze,
        opcode: OpCode,
        payload: &[u8],
        may_compress: impl FnOnce() -> bool,
    ) -> Bytes {
        let plain = || {
            let mut frame = Vec::with_capacity(payload.len() + 10);
            writer::encode_frame(opcode, payload, &mut frame);
            Bytes::from(frame)
        };
        let codec = match squeeze {
            Squeeze::Off => return plain(),
            Squeeze::CFrames => Codec::CFrame,
            Squeeze::Deflate => Codec::PerMessageDeflate,
        };
        if payload.len() <= self.shared.config.compression.threshold || !may_compress() {
            return plain();
        }
        let mut deflater = self.deflater.borrow_mut();
        let Some(compressed) = deflater.compress(payload) else { return plain() };
        let (frame, payload_len) = match codec {
            Codec::CFrame => (compressed.c_frame(), compressed.c_payload_len()),
            Codec::PerMessageDeflate => {
                (compressed.deflate_frame(opcode), compressed.deflate_payload_len())
            }
        };
        self.metrics().compressed(codec);
        self.metrics().saved(codec, (payload.len() - payload_len) as u64);
        Bytes::from(frame)
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

    /// Queues `publication` for every local subscriber of its topic.
    pub(crate) fn deliver_local(&self, publication: &Publication) {
        let conns = self.conns.borrow();
        let budget = self.shared.config.max_outbound_queue_bytes;
        self.topics.borrow().for_each_subscriber(&publication.topic, |id| {
            let Some(conn) = conns.get(&id) else { return };
            if conn.is_closing() {
                return self.metrics().dropped(DropReason::Closing, 1);
            }
            if !conn.may_receive(&publication.topic) {
                // A glob subscription also matches topics the ACL denies.
                return;
            }
            let json = &publication.json;
            let mut saved = None;
            let plain = || {
                let (frame, codec) = shared_frame(publication, conn.squeeze);
                saved = codec.map(|c| (c, publication.frame.len().saturating_sub(frame.len())));
                frame
            };
            let Some(frame) = conn.frame_for(&self.ivs, json, false, plain) else {
                return self.metrics().dropped(DropReason::SealFailed, 1);
            };
            let outcome = conn.out.borrow_mut().push(publication.pri, frame, budget);
            if let (Some((codec, n)), Push::Queued { .. }) = (saved, outcome) {
                self.metrics().saved(codec, n as u64);
            }
            self.account(conn, outcome);
        });
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

/// The frame of `publication` a connection that takes `squeeze` gets, shared with every such
/// subscriber, and the codec when it is a compressed one.
fn shared_frame(publication: &Publication, squeeze: Squeeze) -> (Bytes, Option<Codec>) {
    let compressed = match squeeze {
        Squeeze::Off => None,
        Squeeze::CFrames => publication.compressed.clone().map(|f| (f, Codec::CFrame)),
        Squeeze::Deflate => publication.deflated.clone().map(|f| (f, Codec::PerMessageDeflate)),
    };
    match compressed {
        Some((frame, codec)) => (frame, Some(codec)),
        None => (publication.frame.clone(), None),
    }
}

/// The shard's compressor; the level was validated with the configuration.
fn new_deflater(level: u8) -> Deflater {
    Deflater::new(level).unwrap_or_else(|_| {
        // Config::validate refuses other levels; fall back rather than stop a shard.
        tracing::error!(level, "compression level out of range; using 1");
        Deflater::default()
    })
}

/// The shard that owns connection `conn` (see [`Shard::next_conn_id`]).
pub(crate) fn shard_of(conn: ConnId) -> usize {
    (conn.0 >> SHARD_SHIFT) as usize
}

/// A complete unmasked text frame around `payload`, ready to share between connections.
pub(crate) fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    writer::encode_frame(OpCode::Data(wse_protocol::frame::Data::Text), payload, &mut frame);
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
