//! One shard: a pinned glommio executor and everything it owns.
//!
//! Place: `accept → **shard** → conn tasks`, and `rings → **shard** → subscribers' queues`.
//! A shard owns its listener, its connection table, its part of the topic index, the
//! sequencers and de-duplication window of the topics it owns, its history of every topic
//! (for recovery), and one read buffer shared by all its connections (a connection borrows it
//! only while a read is being parsed, never across an await, so idle connections hold no read
//! buffer at all). Nothing here is touched by another thread.
//!
//! Tasks per shard: the accept loop, one task per connection, the owner task that stamps
//! publications of the topics this shard owns, one receiver task per peer ring, the
//! housekeeping sweep (heartbeats, idle timeouts, topic and history eviction, gauges), the
//! control loop (calls from the application, served in `control.rs` beside this file), and,
//! with an application, the room task that wakes connections waiting for the inbound ring.
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
//!
//! Scale-out (`scaleout.rs`, only with `redis_url`): for a topic that travels between
//! instances the owner does not stamp; Redis does, and the owner fans out what the Redis
//! bridge hands back, with Redis's stamp, through the same encode-once path. While the
//! bridge cannot route, the owner stamps under a local epoch as without Redis.
//!
//! Recovery: every publication reaches every shard, so [`Shard::deliver_local`] records it in
//! the shard's history before queueing it for local subscribers, and [`Shard::recover`]
//! replays from that history into one connection's queue in the same synchronous step in
//! which the connection subscribes: the history's newest offset is exactly the last
//! publication this shard delivered, and the next one finds the new subscriber in the index.

mod control;
mod presence;
mod scaleout;

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
use tracing::{debug, info_span, trace, warn, Instrument};
use wse_fanout::acl::TopicAcl;
use wse_fanout::bridge::{FromBridge, Outgoing};
use wse_fanout::dedup::DedupWindow;
use wse_fanout::history::{self, History, Recovery};
use wse_fanout::ids::ConnId;
use wse_fanout::index::TopicIndex;
use wse_fanout::mesh::{Encoded, MeshSetup, Publication, PublishRequest, Rings, ToOwner};
use wse_fanout::presence::{PresenceChange, PresenceTable};
use wse_fanout::sequencer::TopicSequencer;
use wse_protocol::auth::TopicRules;
use wse_protocol::deflate::{Deflater, Inflater};
use wse_protocol::e2e::IvPool;
use wse_protocol::engine::{self, RecoveryAnswer};
use wse_protocol::envelope::{self, DirectMeta, Priority, PublicationMeta};
use wse_protocol::filter::{self, Filter, RegexCache};
use wse_protocol::frame::{Data, OpCode};
use wse_protocol::msgpack;
use wse_protocol::signing;
use wse_protocol::writer;

use crate::app::inbound::ShardSide;
use crate::conn::{self, Conn, Squeeze, Waiting};
use crate::metrics::{Codec, DropReason, ShardMetrics};
use crate::outqueue::{Push, FRAME_OVERHEAD};
use crate::security;
use crate::server::{Control, Shared};
use scaleout::{OwnerWork, ScaleOut};

/// What a shard is started with.
pub(crate) struct ShardSetup {
    pub index: usize,
    pub socket: socket2::Socket,
    pub mesh: MeshSetup,
    pub control: flume::Receiver<Control>,
    /// Told the shard's index once it has joined the rings and accepts.
    pub ready: flume::Sender<usize>,
    /// What the Redis bridge hands this shard; `None` without Redis.
    pub from_bridge: Option<flume::Receiver<FromBridge>>,
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
    /// Publisher-given ids recently stamped, for the topics this shard owns.
    dedup: RefCell<DedupWindow>,
    /// Recent publications of every topic, for recovery (empty when recovery is off).
    history: RefCell<History<Publication>>,
    /// Scratch space every connection reads into; see the module docs.
    pub read_buf: RefCell<Box<[u8]>>,
    /// Random IVs for sealing `E:` frames, drawn in bulk for all the shard's connections.
    pub ivs: RefCell<IvPool>,
    /// Regexes of subscription filters, shared by the shard's subscriptions.
    pub regexes: RefCell<RegexCache>,
    /// The one compressor of the shard (`C:` frames and permessage-deflate, one-shot).
    deflater: RefCell<Deflater>,
    /// The one decompressor of the shard, bounded by `max_message_size`.
    pub inflater: RefCell<Inflater>,
    rings: Rings,
    /// Publish requests and presence changes waiting for the owner task, in arrival order.
    owner_queue: LocalSender<ToOwner>,
    /// Who is on each topic this shard owns (empty when presence is off).
    presence: RefCell<PresenceTable>,
    /// Presence changes of this shard's connections on their way to the topics' owners
    /// (`presence.rs`). Unbounded, but each subscription puts at most one join and one leave
    /// in it, so the subscription limits bound it.
    presence_out: LocalSender<PresenceChange>,
    next_conn: Cell<u64>,
    /// Set once shutdown began: no new connections, no new subscriptions.
    pub stopping: Cell<bool>,
    /// This shard's end of the application's inbound ring; `None` without `app_events`.
    pub app: Option<ShardSide>,
    /// Its part in the scale-out through Redis; `None` without Redis.
    scale_out: Option<ScaleOut>,
    /// Connections waiting for the application's `accept` or `reject` (`require_accept`).
    pub waiting_accept: RefCell<HashMap<ConnId, Rc<Waiting>>>,
}

/// Runs a shard until it is told to shut down and its connections are gone.
pub(crate) async fn run(shared: Arc<Shared>, setup: ShardSetup) {
    let index = setup.index;
    let span = info_span!("shard", shard = index);
    async move {
        let joining = Rc::new(Cell::new(true));
        spawn_local(wake_while(Rc::clone(&joining))).detach();
        let joined = setup.mesh.join().await;
        joining.set(false);
        let mut rings = match joined {
            Ok(rings) => rings,
            Err(e) => return warn!(error = %e, "shard could not join the rings"),
        };
        let requests = rings.from_publishers.streams();
        let publications = rings.from_owners.streams();
        let (owner_queue, owner_rx) = local_channel::new_bounded(OWNER_QUEUE);
        let (presence_out, presence_rx) = local_channel::new_unbounded();
        let queues = Queues { owner: owner_queue, presence: presence_out };
        let scale_out = ScaleOut::new(&shared, setup.from_bridge);
        let shard = Rc::new(Shard::new(index, shared, rings, queues, scale_out));
        spawn_local(owner_task(Rc::clone(&shard), owner_rx)).detach();
        spawn_local(presence::forward(Rc::clone(&shard), presence_rx)).detach();
        if let Some(room) = shard.shared.rooms.get(index).cloned() {
            spawn_local(room_task(Rc::clone(&shard), room)).detach();
        }
        shard.spawn_ring_receivers(requests, publications);
        spawn_local(housekeeping(Rc::clone(&shard))).detach();
        let listener = crate::listener::into_glommio(setup.socket);
        let accept = spawn_local(accept_loop(Rc::clone(&shard), listener));
        let _ = setup.ready.send(index);
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
        queues: Queues,
        scale_out: Option<ScaleOut>,
    ) -> Shard {
        let config = &shared.config;
        let dedup = DedupWindow::new(config.dedup_window, config.dedup_window_age);
        let history = History::new(history_limits(&shared));
        let app = shared.inbound.as_ref().map(|inbound| ShardSide::new(Arc::clone(inbound), index));
        Shard {
            index,
            app,
            scale_out,
            waiting_accept: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            topics: RefCell::new(TopicIndex::default()),
            sequencer: RefCell::new(TopicSequencer::default()),
            dedup: RefCell::new(dedup),
            history: RefCell::new(history),
            read_buf: RefCell::new(vec![0; READ_BUF].into_boxed_slice()),
            ivs: RefCell::new(IvPool::new()),
            regexes: RefCell::new(RegexCache::new()),
            deflater: RefCell::new(new_deflater(config.compression.level)),
            inflater: RefCell::new(Inflater::new(config.max_message_size)),
            rings,
            owner_queue: queues.owner,
            presence: RefCell::new(PresenceTable::new(config.presence.max_members)),
            presence_out: queues.presence,
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
        self.send_to_owner(ToOwner::Publish(request)).await;
    }

    /// Sends `message` to the owner of its topic: this shard's owner task, or a peer's ring.
    async fn send_to_owner(&self, message: ToOwner) {
        let owner = self.rings.owner_of(message.topic());
        if self.rings.owns(message.topic()) {
            let _ = self.owner_queue.send(message).await;
        } else if self.rings.to_owner.send_to(owner.0, message).await.is_err() {
            debug!("owner shard is gone; message dropped during shutdown");
        }
    }

    /// A publication of a topic this shard owns, as the owner task takes it: a
    /// publisher-given id already seen on the topic (the de-duplication window) drops it
    /// before it takes an offset; then it is stamped here, or, when the topic travels
    /// between instances, by Redis (`scaleout.rs`).
    pub(crate) async fn publish_owned(&self, request: PublishRequest) {
        let now = Instant::now();
        if let Some(id) = request.id.as_deref() {
            if !self.dedup.borrow_mut().first_time(&request.topic, id, now) {
                ShardMetrics::add(&self.metrics().duplicates, 1);
                return trace!(topic = &*request.topic, "duplicate publication dropped");
            }
        }
        let message = Outgoing {
            id: request.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string().into()),
            topic: request.topic,
            event_type: request.event_type,
            data: request.data,
            pri: request.pri,
            ts_ms: unix_ms(),
        };
        match &self.scale_out {
            Some(scale_out) if scale_out.bridge.travels(&message.topic) => {
                self.route(scale_out, message).await;
            }
            _ => self.stamp_locally(&message).await,
        }
    }

    /// Stamps `message` with this shard's sequencer and fans it out.
    async fn stamp_locally(&self, message: &Outgoing) {
        let topic = &message.topic;
        let stamp = self.sequencer.borrow_mut().stamp(topic, Instant::now(), new_epoch);
        self.fan_out(message, stamp.epoch, stamp.offset).await;
    }

    /// Encodes a stamped publication once per wire format and hands the same bytes to
    /// local subscribers and to every other shard.
    async fn fan_out(&self, message: &Outgoing, epoch: u32, offset: u64) {
        let meta = PublicationMeta {
            topic: &message.topic,
            event_type: message.event_type.as_deref(),
            id: &message.id,
            now_ms: message.ts_ms,
            epoch,
            offset,
            pri: message.pri,
        };
        let mut json = Vec::with_capacity(message.data.len() + 160);
        envelope::publication(&meta, &message.data, &mut json);
        // Converted whenever any msgpack connection is open, whether or not one subscribes
        // to this topic: the trade-off the module docs explain (knowing per topic would take
        // state shared between shards).
        let msgpack = self
            .shared
            .metrics
            .any_msgpack_connection()
            .then(|| self.encode_publication(&json))
            .flatten();
        let t = message.event_type.as_deref().unwrap_or(&message.topic);
        let unsigned_len = json.len();
        let json = self.sign_if_selected(self.shared.guard.signing_key(), t, json);
        let sig_at = (json.len() != unsigned_len).then(|| unsigned_len - 1);
        let (compressed, deflated) = self.compress_publication(&json);
        let frame = text_frame(&json);
        let json = frame.slice(frame.len() - json.len()..);
        let publication = Publication {
            topic: Arc::clone(&message.topic),
            pri: message.pri,
            epoch,
            offset,
            frame,
            json,
            sig_at,
            compressed,
            deflated,
            msgpack,
        };
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

    /// Appends `sig` (PROTOCOL.md §6) under `key` when messages of type `t` are selected for
    /// signing and there is a key; otherwise returns `json` as it is.
    pub(crate) fn sign_if_selected(
        &self,
        key: Option<&signing::SigningKey>,
        t: &str,
        json: Vec<u8>,
    ) -> Vec<u8> {
        let Some(key) = key else { return json };
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

    /// Records `publication` in the history, then queues it for every local subscriber of
    /// its topic whose filter, if any, lets it through, in the subscriber's format.
    pub(crate) fn deliver_local(&self, publication: &Publication) {
        self.remember(publication);
        let conns = self.conns.borrow();
        let formats = Formats::new(self, publication);
        let topics = self.topics.borrow();
        let passes = |filter: &Filter| formats.passes(filter);
        let filtered_out = topics.for_each_subscriber_where(&publication.topic, passes, |id| {
            let Some(conn) = conns.get(&id) else { return };
            if conn.is_closing() {
                return self.metrics().dropped(DropReason::Closing, 1);
            }
            if !conn.may_receive(&publication.topic) {
                // A glob subscription also matches topics the ACL denies.
                return;
            }
            self.queue_publication(conn, publication, &formats);
        });
        if filtered_out > 0 {
            ShardMetrics::add(&self.metrics().filtered_out, filtered_out as u64);
        }
    }

    /// Queues `publication` for one connection in the form it takes: the `M:` frame on a
    /// msgpack connection, else the shared JSON frame, compressed (`C:` or permessage-deflate)
    /// as the connection takes it; sealed for that connection when it is E2E (never
    /// compressed then). Live delivery and replay both come through here, so a replay is
    /// filtered and encoded as live delivery is.
    fn queue_publication(&self, conn: &Conn, publication: &Publication, formats: &Formats<'_>) {
        let msgpack = if conn.msgpack { formats.msgpack() } else { None };
        let mut saved = None;
        let frame = match msgpack {
            Some(encoded) => {
                conn.frame_for(&self.ivs, &encoded.body, false, || encoded.frame.clone())
            }
            None if conn.is_encrypted() => {
                let json = publication.unsigned_json();
                conn.frame_for(&self.ivs, &json, false, || publication.frame.clone())
            }
            None => conn.frame_for(&self.ivs, &publication.json, false, || {
                let (frame, codec) = shared_frame(publication, conn.squeeze);
                saved = codec.map(|c| (c, publication.frame.len().saturating_sub(frame.len())));
                frame
            }),
        };
        let Some(frame) = frame else {
            return self.metrics().dropped(DropReason::SealFailed, 1);
        };
        if msgpack.is_some() {
            ShardMetrics::add(&self.metrics().msgpack_out, 1);
        }
        let budget = self.shared.config.max_outbound_queue_bytes;
        let outcome = conn.queue_publication(&publication.topic, publication.pri, frame, budget);
        if let (Some((codec, n)), Push::Queued { .. }) = (saved, outcome) {
            self.metrics().saved(codec, n as u64);
        }
        self.account(conn, outcome);
    }

    /// Keeps `publication` in this shard's history, charged its share of the shared frame
    /// (every shard holds the same bytes) plus the history's own record of it.
    fn remember(&self, publication: &Publication) {
        if !self.shared.config.history.enabled {
            return;
        }
        let share = publication.encoded_bytes().div_ceil(self.shared.config.shards());
        let evicted = self.history.borrow_mut().record(
            &publication.topic,
            publication.epoch,
            publication.offset,
            publication.clone(),
            share,
            Instant::now(),
        );
        if !evicted.is_empty() {
            self.metrics().history_evicted(&evicted);
        }
    }

    /// Replays to `conn` what it missed of `topic` since `from` (the client's last
    /// `(epoch, offset)`), from this shard's history, and says how it went. Call it in the
    /// same synchronous step that subscribes `conn`, so that live delivery continues exactly
    /// where the replay ends. All or nothing: when the missed messages are not all retained,
    /// are more than `history_max_replay`, or do not fit the connection's free outbound
    /// budget, nothing is replayed and the answer carries the topic's current position.
    pub(crate) fn recover(
        &self,
        conn: &Conn,
        topic: &str,
        from: Option<(u32, u64)>,
    ) -> RecoveryAnswer {
        let history = self.history.borrow();
        let current = history.position(topic).map(|p| (p.epoch, p.offset));
        let Some((epoch, offset)) = from else {
            return self.not_recovered(topic, current);
        };
        let max = self.shared.config.history.max_replay;
        let (position, messages) = match history.recover(topic, epoch, offset, max, Instant::now())
        {
            Recovery::Replay { position, messages } => (position, messages),
            Recovery::Unrecoverable { position, .. } => {
                return self.not_recovered(topic, position.map(|p| (p.epoch, p.offset)));
            }
        };
        let per_frame = FRAME_OVERHEAD + if conn.is_encrypted() { conn::SEAL_OVERHEAD } else { 0 };
        let need: usize = messages.iter().map(|p| p.frame.len() + per_frame).sum();
        let budget = self.shared.config.max_outbound_queue_bytes;
        if need > budget.saturating_sub(conn.out.borrow().bytes()) {
            return self.not_recovered(topic, Some((position.epoch, position.offset)));
        }
        let topics = self.topics.borrow();
        for publication in &messages {
            let formats = Formats::new(self, publication);
            let passes = |filter: &Filter| formats.passes(filter);
            if topics.admits(conn.id, &publication.topic, passes) {
                self.queue_publication(conn, publication, &formats);
            }
        }
        let count = messages.len() as u64;
        ShardMetrics::add(&self.metrics().recovered, 1);
        ShardMetrics::add(&self.metrics().replayed, count);
        let position = Some((position.epoch, position.offset));
        RecoveryAnswer { topic: topic.to_owned(), position, recovered: true, count }
    }

    fn not_recovered(&self, topic: &str, position: Option<(u32, u64)>) -> RecoveryAnswer {
        ShardMetrics::add(&self.metrics().not_recovered, 1);
        RecoveryAnswer { topic: topic.to_owned(), position, recovered: false, count: 0 }
    }

    /// The frame of a direct message of type `t` for `conn`: next `seq`, fresh id, `pri` in
    /// the envelope unless NORMAL, signed when `t` is selected for signing, sealed on an E2E
    /// connection unless `t` stays plaintext; an `M:` frame on a msgpack connection, else a
    /// text frame (binary when `binary`) compressed as the connection takes it when it is
    /// over the threshold. `None` when sealing failed (counted).
    pub(crate) fn direct_frame(
        &self,
        conn: &Conn,
        t: &str,
        pri: Priority,
        cid: Option<&str>,
        binary: bool,
        build: impl FnOnce(&DirectMeta<'_>, &mut Vec<u8>),
    ) -> Option<Bytes> {
        let id = uuid::Uuid::now_v7().to_string();
        let meta =
            DirectMeta::new(conn.next_seq(), &id, unix_ms()).with_cid(cid).with_priority(pri);
        let mut json = Vec::with_capacity(256);
        build(&meta, &mut json);
        let stays_plain = security::stays_plaintext(t);

        // Msgpack connections get `M:` frames, unsigned (§6 signs JSON text only).
        let encoded = (conn.msgpack && !msgpack::stays_json(t)).then(|| self.msgpack_of(&json));
        let frame = if let Some(encoded) = encoded.flatten() {
            ShardMetrics::add(&self.metrics().msgpack_out, 1);
            conn.frame_for(&self.ivs, &encoded.body, stays_plain, || encoded.frame.clone())
        } else {
            // §6: JSON text frames are signed, under the E2E key on an E2E connection; a
            // sealed frame is authenticated by AES-GCM and carries no `sig`.
            let json = match conn.e2e.borrow().as_deref() {
                Some(keys) if stays_plain => {
                    self.sign_if_selected(Some(keys.signing_key()), t, json)
                }
                Some(_) => json,
                None => self.sign_if_selected(self.shared.guard.signing_key(), t, json),
            };
            // Heartbeats are never `C:` frames: 2.x clients match their first bytes as text.
            let opcode = OpCode::Data(if binary { Data::Binary } else { Data::Text });
            let may_compress = || t != "PONG" && t != "ping";
            let plain = || self.frame_of(conn.squeeze, opcode, &json, may_compress);
            conn.frame_for(&self.ivs, &json, stays_plain, plain)
        };
        if frame.is_none() {
            self.metrics().dropped(DropReason::SealFailed, 1);
        }
        frame
    }

    /// Applies the drop policy's outcome to a connection and the metrics.
    pub(crate) fn account(&self, conn: &Conn, outcome: Push) {
        match outcome {
            Push::Queued { evicted } => {
                for (pri, n) in evicted.by_priority() {
                    self.metrics().dropped_full(pri, n);
                }
            }
            Push::Dropped { pri } => self.metrics().dropped_full(pri, 1),
            Push::Overflow => conn.request_close(conn::SLOW_CONSUMER),
        }
        conn.wake();
    }

    /// Housekeeping for history and the owner's state: forgets idle topics (their next
    /// publication opens a new epoch), expires history and ids, refreshes the gauges.
    fn sweep(&self, now: Instant) {
        let ttl = self.shared.config.history.ttl;
        self.sequencer.borrow_mut().evict_idle(now, ttl);
        self.dedup.borrow_mut().expire(now);
        let mut history = self.history.borrow_mut();
        let evicted = history.expire(now);
        self.metrics().history_evicted(&evicted);
        let stats = history.stats();
        drop(history);
        let m = self.metrics();
        let set = |gauge: &std::sync::atomic::AtomicU64, v: usize| {
            gauge.store(v as u64, std::sync::atomic::Ordering::Relaxed);
        };
        set(&m.history_topics, stats.topics);
        set(&m.history_messages, stats.messages);
        set(&m.history_bytes, stats.bytes);
        let (mut total, mut max) = (0, 0);
        for conn in self.conns.borrow().values() {
            let bytes = conn.out.borrow().bytes();
            total += bytes;
            max = max.max(bytes);
        }
        set(&m.queued_bytes, total);
        set(&m.queued_bytes_max, max);
        let (topics, users) = self.presence.borrow().totals();
        set(&m.presence_topics, topics);
        set(&m.presence_users, users);
    }

    /// One task per peer ring: requests go to the owner queue, publications to subscribers.
    fn spawn_ring_receivers(
        self: &Rc<Self>,
        requests: Vec<(usize, ConnectedReceiver<ToOwner>)>,
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

/// Stamps publications, applies presence changes and takes what the Redis bridge hands this
/// shard, each in arrival order; the only task that fans out as an owner, so a topic's
/// offsets leave this shard in the order they were assigned.
async fn owner_task(shard: Rc<Shard>, queue: local_channel::LocalReceiver<ToOwner>) {
    loop {
        let next = match &shard.scale_out {
            Some(scale_out) => scale_out.next(&queue).await,
            None => queue.recv().await.map(OwnerWork::Local),
        };
        match next {
            Some(OwnerWork::Local(ToOwner::Publish(request))) => {
                shard.publish_owned(request).await;
            }
            Some(OwnerWork::Local(ToOwner::Presence(change))) => shard.apply_presence(change).await,
            Some(OwnerWork::Bridge(message)) => shard.take_from_bridge(message).await,
            None => break,
        }
    }
}

/// Wakes the executor every few milliseconds while `flag` is set. Joining the rings waits on
/// glommio shared channels, whose cross-thread wake-up can be lost while the executor sleeps:
/// under load about 1 % of starts hung in the join (reproduced: 3 of 300 starts of two
/// shards beside three busy loops never finished). A timer that fires makes the executor
/// look at its shared channels again. Once the shard runs, its housekeeping tick does that.
async fn wake_while(flag: Rc<Cell<bool>>) {
    while flag.get() {
        sleep(STARTUP_TICK).await;
    }
}

/// The local queues a shard's tasks feed.
struct Queues {
    owner: LocalSender<ToOwner>,
    presence: LocalSender<PresenceChange>,
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
            other => shard.serve_app(other),
        }
    }
    conn::GOING_AWAY
}

/// Wakes the connections that wait for room in the inbound ring whenever the application
/// drained some.
async fn room_task(shard: Rc<Shard>, room: flume::Receiver<()>) {
    while room.recv_async().await.is_ok() {
        if let Some(app) = &shard.app {
            app.room_made();
        }
    }
}

/// Every tick: heartbeats due, idle connections, idle topics, history, gauges.
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
        shard.sweep(now);
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
    writer::encode_frame(OpCode::Data(Data::Text), payload, &mut frame);
    Bytes::from(frame)
}

/// A complete unmasked binary frame around `payload`.
pub(crate) fn binary_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    writer::encode_frame(OpCode::Data(Data::Binary), payload, &mut frame);
    Bytes::from(frame)
}

/// What one publication looks like to its subscribers on this shard, worked out at most once
/// and only when a subscriber needs it: its envelope parsed for filters, and its `M:` frame
/// when the owner did not encode one.
struct Formats<'a> {
    shard: &'a Shard,
    publication: &'a Publication,
    document: OnceCell<Result<sonic_rs::Value, wse_protocol::Error>>,
    msgpack: OnceCell<Option<Encoded>>,
}

impl<'a> Formats<'a> {
    fn new(shard: &'a Shard, publication: &'a Publication) -> Self {
        Formats { shard, publication, document: OnceCell::new(), msgpack: OnceCell::new() }
    }

    /// Whether `filter` lets the publication through (a publication whose envelope does not
    /// parse passes no filter).
    fn passes(&self, filter: &Filter) -> bool {
        let document = self.document.get_or_init(|| filter::parse_document(&self.publication.json));
        document.as_ref().is_ok_and(|envelope| filter.matches(envelope))
    }

    /// The publication's `M:` frame: the owner's, or one encoded here once for the shard.
    fn msgpack(&self) -> Option<&Encoded> {
        self.publication.msgpack.as_ref().or_else(|| {
            let encoded = || self.shard.encode_publication(&self.publication.json);
            self.msgpack.get_or_init(encoded).as_ref()
        })
    }
}

/// This shard's history bounds: the per-topic ones as configured, and its share of the
/// server's memory budget (every shard holds the same messages, each charged its share).
fn history_limits(shared: &Shared) -> history::Limits {
    let settings = &shared.config.history;
    history::Limits {
        messages_per_topic: settings.messages_per_topic,
        bytes_per_topic: settings.bytes_per_topic / shared.config.shards(),
        ttl: settings.ttl,
        budget: settings.memory_budget / shared.config.shards(),
    }
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
/// How often a starting shard wakes while it joins the rings.
const STARTUP_TICK: Duration = Duration::from_millis(5);
/// Extra time a draining shard gives its connections beyond the close timeout.
const DRAIN_SLACK: Duration = Duration::from_millis(500);
/// Room for `,"sig":"<44 base64 characters>"`.
const SIG_BYTES: usize = 56;
/// Bits of a connection id below the shard index.
const SHARD_SHIFT: u32 = 48;
