//! Starting, addressing and stopping the shards.
//!
//! Place: the outermost layer. `main` (and later the Python facade) calls [`Server::start`],
//! which binds every shard's listener on the calling thread (so a busy port fails at once),
//! then starts one pinned glommio executor per configured core. Other threads talk to the
//! shards only through [`Control`] messages on bounded channels.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{info, warn};
use wse_fanout::ids::ConnId;
use wse_fanout::mesh::{MeshSetup, PublishRequest};
use wse_protocol::auth::TopicRules;
use wse_protocol::envelope::Priority;

use crate::gate::HandshakeGate;
use crate::metrics::Metrics;
use crate::security::Guard;
use crate::shard::{self, ShardSetup};
use crate::{listener, tls, Config, Error};

/// A message from outside the shards to one shard.
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
    /// Send an application event to one connection (`send_event`).
    Send {
        /// The connection.
        conn: ConnId,
        /// What to send.
        event: DirectEvent,
    },
    /// List the shard's connections as `(id, connection_id)` on `reply`.
    Connections {
        /// Where the list goes.
        reply: flume::Sender<Vec<(ConnId, String)>>,
    },
}

/// A message the application addresses to one connection: a direct message with the
/// connection's next `seq` (PROTOCOL.md §3), sent as a binary `{` frame (§4).
#[derive(Debug, Clone)]
pub struct DirectEvent {
    /// The event type `t`.
    pub t: String,
    /// The payload `p`, as JSON text.
    pub payload_json: String,
    /// Its priority: its place in the connection's queue, and `pri` in the envelope.
    pub pri: Priority,
}

/// A running server: its shards and the handles to reach them.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    controls: Vec<flume::Sender<Control>>,
    joins: Vec<ExecutorJoinHandle<()>>,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            gate: Arc::new(HandshakeGate::new(config.max_handshakes, config.max_handshakes_per_ip)),
            metrics: Metrics::new(shards, Instant::now()),
            admitted: AtomicUsize::new(0),
            tls,
            guard,
            config,
        });
        let mesh = MeshSetup::new(shards, shared.config.ring_capacity);
        let mut server = Server { local_addr, controls: Vec::new(), joins: Vec::new(), shared };
        for (index, socket) in sockets.into_iter().enumerate() {
            server.spawn_shard(index, socket, mesh.clone())?;
        }
        info!(addr = %local_addr, shards, "wse-server listening");
        Ok(server)
    }

    /// The address the shards listen on (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters of every shard.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Publishes on behalf of the application; the topic's owner shard stamps it.
    ///
    /// Requests from one caller keep their order: they all enter through shard 0.
    pub fn publish(&self, request: PublishRequest) -> Result<(), Error> {
        self.controls[0]
            .send(Control::Publish(request))
            .map_err(|_| Error::Config("the server is stopped".into()))
    }

    /// Replaces the topic ACL of connection `conn` (PROTOCOL.md §2, `wse_topics`): later
    /// subscriptions, deliveries and publishes follow `rules`; `None` lifts every limit.
    /// A connection that is gone by the time the shard looks is ignored.
    pub fn set_topic_acl(&self, conn: ConnId, rules: Option<TopicRules>) -> Result<(), Error> {
        let shard = shard::shard_of(conn);
        let control = self
            .controls
            .get(shard)
            .ok_or_else(|| Error::Config(format!("connection {conn} does not exist")))?;
        control
            .send(Control::SetTopicAcl { conn, rules })
            .map_err(|_| Error::Config("the server is stopped".into()))
    }

    /// Sends `event` to connection `conn` (`send_event`). A connection that is gone by the
    /// time its shard looks is ignored.
    pub fn send_event(&self, conn: ConnId, event: DirectEvent) -> Result<(), Error> {
        let control = self
            .controls
            .get(shard::shard_of(conn))
            .ok_or_else(|| Error::Config(format!("connection {conn} does not exist")))?;
        control
            .send(Control::Send { conn, event })
            .map_err(|_| Error::Config("the server is stopped".into()))
    }

    /// Every open connection as `(id, connection_id)`, asked of each shard; a shard that
    /// does not answer within `limit` is left out. For tests and operators: it waits.
    pub fn connections(&self, limit: Duration) -> Vec<(ConnId, String)> {
        let (reply, answers) = flume::unbounded();
        let asked = self
            .controls
            .iter()
            .filter(|c| c.send(Control::Connections { reply: reply.clone() }).is_ok())
            .count();
        let deadline = Instant::now() + limit;
        let mut all = Vec::new();
        for _ in 0..asked {
            match answers.recv_deadline(deadline) {
                Ok(list) => all.extend(list),
                Err(_) => break,
            }
        }
        all
    }

    /// Asks every shard to stop accepting and close its connections with `code`.
    pub fn shutdown(&self, code: u16) {
        for control in &self.controls {
            let _ = control.send(Control::Shutdown { code });
        }
    }

    /// Waits for every shard to end, at most `limit`; `false` if some were still running.
    pub fn join(self, limit: Duration) -> bool {
        let (done_tx, done_rx) = flume::bounded(1);
        let joins = self.joins;
        std::thread::spawn(move || {
            for join in joins {
                let _ = join.join();
            }
            let _ = done_tx.send(());
        });
        done_rx.recv_timeout(limit).is_ok()
    }

    fn spawn_shard(
        &mut self,
        index: usize,
        socket: socket2::Socket,
        mesh: MeshSetup,
    ) -> Result<(), Error> {
        let core = self.shared.config.cores[index];
        let (control_tx, control_rx) = flume::bounded(CONTROL_CAPACITY);
        let setup = ShardSetup { index, socket, mesh, control: control_rx };
        let shared = Arc::clone(&self.shared);
        let join = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("wse-shard-{index}"))
            .spawn(move || shard::run(shared, setup))
            .map_err(|e| Error::Executor { shard: index, reason: e.to_string() })?;
        self.controls.push(control_tx);
        self.joins.push(join);
        Ok(())
    }
}

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

/// Control messages waiting per shard before `publish` blocks the caller.
const CONTROL_CAPACITY: usize = 65_536;
