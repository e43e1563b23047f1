//! Starting, addressing and stopping the shards.
//!
//! Place: the outermost layer. `main` (and later the Python facade) calls [`Server::start`],
//! which binds every shard's listener on the calling thread (so a busy port fails at once),
//! then starts one pinned glommio executor per configured core. Other threads talk to the
//! shards only through [`Control`] messages on bounded channels, which [`App`] (from
//! [`Server::app`]) sends.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{info, warn};
use wse_fanout::bridge::{Bridge, BridgeHandle, FromBridge};
use wse_fanout::ids::ConnId;
use wse_fanout::mesh::{MeshSetup, PublishRequest};
use wse_fanout::presence::{MemberView, TopicStats};
use wse_protocol::auth::TopicRules;
use wse_protocol::envelope::Priority;

use crate::app::inbound::Inbound;
use crate::app::{App, ConnectionInfo};
use crate::gate::HandshakeGate;
use crate::metrics::{self, Metrics};
use crate::security::Guard;
use crate::shard::{self, ShardSetup};
use crate::{listener, tls, Config, Error};

/// A message from outside the shards to one shard. [`App`] builds them; the shard's control
/// loop serves them in order.
#[derive(Debug)]
pub enum Control {
    /// Stop accepting, close every connection with `code`, then end the shard.
    Shutdown {
        /// Close code sent to clients (1012 for a restart or shutdown).
        code: u16,
    },
    /// Publish to a topic on behalf of the application.
    Publish(PublishRequest),
    /// Replace one connection's topic ACL (`None` removes it: every topic allowed).
    SetTopicAcl {
        /// The connection, as the application knows it.
        conn: ConnId,
        /// The new rules.
        rules: Option<TopicRules>,
    },
    /// Queue a complete frame, as it is, for one connection.
    Frame {
        /// The connection.
        conn: ConnId,
        /// A whole unmasked WebSocket frame.
        frame: Bytes,
    },
    /// Queue a WSE message for one connection (envelope, `seq`, signing and sealing are done
    /// by the shard).
    SendEvent {
        /// The connection.
        conn: ConnId,
        /// The event type `t`.
        t: Box<str>,
        /// The payload `p`, JSON text.
        payload: Box<str>,
        /// Priority in the connection's queue.
        pri: Priority,
        /// Correlation id to carry.
        cid: Option<Box<str>>,
    },
    /// Queue a complete frame for every connection of the shard.
    Broadcast(Bytes),
    /// Subscribe one connection (no ACL check; the subscription limit applies).
    Subscribe {
        /// The connection.
        conn: ConnId,
        /// Topics or globs.
        topics: Vec<Box<str>>,
    },
    /// Unsubscribe one connection from some topics, or from all of them.
    Unsubscribe {
        /// The connection.
        conn: ConnId,
        /// Topics or globs; `None` for every subscription.
        topics: Option<Vec<Box<str>>>,
    },
    /// Set one connection's presence data and announce it on the topics it is on.
    UpdatePresence {
        /// The connection.
        conn: ConnId,
        /// JSON text, already checked; `None` clears the data.
        data: Option<Arc<str>>,
    },
    /// Answer with the presence members this shard keeps for a topic it owns.
    Presence {
        /// The topic.
        topic: Arc<str>,
        /// Where the answer goes.
        reply: flume::Sender<Vec<MemberView>>,
    },
    /// Answer with the presence counts this shard keeps for a topic it owns.
    PresenceStats {
        /// The topic.
        topic: Arc<str>,
        /// Where the answer goes.
        reply: flume::Sender<TopicStats>,
    },
    /// Close one connection.
    Disconnect {
        /// The connection.
        conn: ConnId,
        /// Close code.
        code: u16,
        /// Close reason (at most 123 bytes).
        reason: Box<str>,
    },
    /// End the snapshot hold of some topics (all when empty) on one connection.
    SnapshotComplete {
        /// The connection.
        conn: ConnId,
        /// Topics as the `sync_request` named them.
        topics: Vec<Box<str>>,
    },
    /// Answer with what was kept of a connection's upgrade request.
    ConnectionInfo {
        /// The connection.
        conn: ConnId,
        /// Where the answer goes.
        reply: flume::Sender<Option<ConnectionInfo>>,
    },
    /// Admit a connection waiting under `require_accept`.
    Accept {
        /// The connection.
        conn: ConnId,
        /// Its user id; `None` keeps the token's, if any.
        user_id: Option<Box<str>>,
    },
    /// Refuse a connection waiting under `require_accept`.
    Reject {
        /// The connection.
        conn: ConnId,
        /// Close code.
        code: u16,
        /// Close reason (at most 123 bytes).
        reason: Box<str>,
    },
    /// Answer with the shard's open connections.
    Connections {
        /// Where the answer goes.
        reply: flume::Sender<Vec<ConnId>>,
    },
    /// Answer with how many of the shard's connections receive `topic`.
    SubscriberCount {
        /// An exact topic name.
        topic: Arc<str>,
        /// Where the answer goes.
        reply: flume::Sender<usize>,
    },
}

/// A running server: its shards and the handles to reach them.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    controls: Vec<flume::Sender<Control>>,
    joins: Vec<ExecutorJoinHandle<()>>,
    shared: Arc<Shared>,
    app: App,
    /// The Redis bridge's threads; `None` without Redis.
    bridge: Option<Bridge>,
}

/// State every shard can read: the configuration, counters and the admission limits.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    pub gate: Arc<HandshakeGate>,
    /// Admitted WebSocket connections across all shards, checked against `max_connections`.
    pub admitted: AtomicUsize,
    /// The TLS configuration when `wss://` is served (`--tls-cert`/`--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Parsed JWT and signing keys.
    pub guard: Guard,
    /// The rings events travel to the application on; `None` without `app_events`.
    pub inbound: Option<Arc<Inbound>>,
    /// Per shard, the signal that the application made room in its ring.
    pub rooms: Vec<flume::Receiver<()>>,
    /// The way to the Redis bridge; `None` without Redis (`redis_url`).
    pub bridge: Option<BridgeHandle>,
}

impl Shared {
    /// The `GET /health` body, with the Redis bridge's state when there is one.
    pub(crate) fn health_json(&self) -> String {
        let redis = self.bridge.as_ref().map(|bridge| metrics::redis_health(&bridge.status()));
        self.metrics.health_json(Instant::now(), crate::VERSION, redis.as_deref())
    }

    /// The `GET /metrics` body, with the depth of the inbound rings and the bridge's series.
    pub(crate) fn prometheus(&self) -> String {
        let mut text = self.metrics.prometheus();
        let depth = self.inbound.as_ref().map_or(0, |i| i.depth());
        text.push_str("# HELP wse_inbound_queue_depth Events waiting for the application.\n");
        text.push_str("# TYPE wse_inbound_queue_depth gauge\n");
        text.push_str(&format!("wse_inbound_queue_depth {depth}\n"));
        if let Some(bridge) = &self.bridge {
            metrics::redis_prometheus(bridge.stats(), &mut text);
        }
        text
    }
}

impl Server {
    /// Binds the listeners and starts one shard per configured core.
    pub fn start(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let guard = Guard::new(&config.security)?;
        let shards = config.shards();
        let sockets =
            listener::bind_all((config.host, config.port).into(), shards, config.backlog)?;
        let local_addr = listener::local_addr(&sockets[0])?;
        warn_if_over_fd_limit(config.max_connections);
        let (inbound, rooms) = if config.app_events {
            let (inbound, rooms) =
                Inbound::new(shards, config.max_inbound_queue_size, config.max_inbound_queue_bytes);
            (Some(inbound), rooms)
        } else {
            (None, Vec::new())
        };
        let (bridge, from_bridge) = start_bridge(&config, shards)?;
        let shared = Arc::new(Shared {
            gate: Arc::new(HandshakeGate::new(config.max_handshakes, config.max_handshakes_per_ip)),
            metrics: Metrics::new(shards, Instant::now()),
            admitted: AtomicUsize::new(0),
            tls,
            guard,
            inbound,
            rooms,
            bridge: bridge.as_ref().map(|b| b.handle().clone()),
            config,
        });
        let mesh = MeshSetup::new(shards, shared.config.ring_capacity);
        let capacity = shared.config.control_capacity;
        let (controls, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| flume::bounded(capacity)).unzip();
        let app = App::new(controls.clone(), Arc::clone(&shared));
        let mut server = Server { local_addr, controls, joins: Vec::new(), shared, app, bridge };
        let (ready, started) = flume::bounded(shards);
        let mut from_bridge = from_bridge.into_iter();
        for (index, (socket, control)) in sockets.into_iter().zip(receivers).enumerate() {
            let setup = ShardSetup {
                index,
                socket,
                mesh: mesh.clone(),
                control,
                ready: ready.clone(),
                from_bridge: from_bridge.next(),
            };
            if let Err(e) = server.spawn_shard(setup) {
                server.shutdown(1011);
                return Err(e);
            }
        }
        drop(ready);
        server.wait_started(&started, shards)?;
        info!(addr = %local_addr, shards, "wse-server listening");
        Ok(server)
    }

    /// Waits until every shard has joined the rings and accepts, so that the server is
    /// ready when `start` returns (a connection made right after it is served at once).
    fn wait_started(&self, started: &flume::Receiver<usize>, shards: usize) -> Result<(), Error> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        for _ in 0..shards {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = started.recv_timeout(left) {
                self.shutdown(1011);
                let reason = match e {
                    flume::RecvTimeoutError::Timeout => "shards not ready in time",
                    flume::RecvTimeoutError::Disconnected => "a shard stopped while starting",
                };
                return Err(Error::Executor { shard: shards, reason: reason.into() });
            }
        }
        Ok(())
    }

    /// The address the shards listen on (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters of every shard.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The application's handle: events and calls into the shards (see [`App`]).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Publishes on behalf of the application; see [`App::publish_request`].
    pub fn publish(&self, request: PublishRequest) -> Result<(), Error> {
        self.app.publish_request(request)
    }

    /// Replaces the topic ACL of connection `conn`; see [`App::set_topic_acl`].
    pub fn set_topic_acl(&self, conn: ConnId, rules: Option<TopicRules>) -> Result<(), Error> {
        self.app.set_topic_acl(conn, rules)
    }

    /// Asks every shard to stop accepting and close its connections with `code`.
    ///
    /// Never blocks: a shard whose control ring is full gets the request as soon as it has
    /// room, from a helper thread. A drain waiting for events returns at once.
    pub fn shutdown(&self, code: u16) {
        if let Some(inbound) = &self.shared.inbound {
            inbound.close();
        }
        if let Some(bridge) = &self.shared.bridge {
            bridge.stop();
        }
        for control in &self.controls {
            if let Err(flume::TrySendError::Full(message)) =
                control.try_send(Control::Shutdown { code })
            {
                let control = control.clone();
                std::thread::spawn(move || control.send(message));
            }
        }
    }

    /// Waits for every shard to end, at most `limit`; `false` if some were still running.
    pub fn join(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (done_tx, done_rx) = flume::bounded(1);
        let joins = self.joins;
        std::thread::spawn(move || {
            for join in joins {
                let _ = join.join();
            }
            let _ = done_tx.send(());
        });
        let shards_done = done_rx.recv_deadline(deadline).is_ok();
        let bridge_done = self
            .bridge
            .is_none_or(|bridge| bridge.stop(deadline.saturating_duration_since(Instant::now())));
        shards_done && bridge_done
    }

    fn spawn_shard(&mut self, setup: ShardSetup) -> Result<(), Error> {
        let index = setup.index;
        let core = self.shared.config.cores[index];
        let shared = Arc::clone(&self.shared);
        let join = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("wse-shard-{index}"))
            .spawn(move || shard::run(shared, setup))
            .map_err(|e| Error::Executor { shard: index, reason: e.to_string() })?;
        self.joins.push(join);
        Ok(())
    }
}

/// Starts the Redis bridge when the configuration asks for one: one channel from the bridge
/// to each shard, whose receivers go to the shards.
fn start_bridge(
    config: &Config,
    shards: usize,
) -> Result<(Option<Bridge>, Vec<flume::Receiver<FromBridge>>), Error> {
    let Some(bridge) = config.bridge_config() else { return Ok((None, Vec::new())) };
    let (sinks, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| flume::bounded(BRIDGE_TO_SHARD)).unzip();
    let instance = bridge.instance.clone();
    let bridge = Bridge::start(bridge, sinks, shard::shard_of)?;
    info!(instance, "redis scale-out on");
    Ok((Some(bridge), receivers))
}

/// Capacity of the channel from the Redis bridge to each shard, in messages. Small, so
/// that a shard behind on Redis's publications holds the bridge back (and Redis buffers,
/// within its client output limit) instead of piling up here.
const BRIDGE_TO_SHARD: usize = 1024;

/// Warns when `max_connections` cannot be reached under the process's open-file limit.
fn warn_if_over_fd_limit(max_connections: usize) {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(limit) = soft.filter(|&l| l < max_connections) {
        warn!(limit, max_connections, "max_connections is above the open-file limit");
    }
}

/// Longest a start waits for its shards to join the rings and accept.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
