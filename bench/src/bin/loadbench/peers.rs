//! The four servers of a side-by-side run and how each is started.
//!
//! Every server runs as its own process under `taskset -c SERVER_CORES`, listens on
//! loopback, checks the same HS256 JWT, and prints `NAME listening on ADDR`. Ours is the
//! `wse-server` binary (and, for the inbound scenario, our `wse_server` Python package under
//! `drain_host.py` when `--wse-python` names an interpreter that has it, else
//! `wse-drain-host`, our engine drained by a Rust application thread); the product we replace
//! runs under CPython 3.12 through `bench/peers/drain_host.py`; the two baselines are
//! `tokio-peer` (in this crate) and `bench/peers/websockets_host.py`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jwt_simple::prelude::{Claims, HS256Key, MACLike};
use wse_bench::host;
use wse_bench::server::Server;

/// One server of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Ours: `wse-server`.
    Wse,
    /// The product we replace: PyPI `wse-server` 2.5.x under CPython 3.12.
    Legacy,
    /// The ordinary Rust baseline: tokio + tokio-tungstenite.
    Tokio,
    /// The Python `websockets` asyncio server.
    Websockets,
}

/// What the server must do besides the common subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Connections, subscriptions, publications, pings.
    Plain,
    /// Messages handed to an application that drains them and counts.
    Inbound,
}

/// Paths and settings shared by every start.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Our `wse-server` binary.
    pub(crate) wse_server: PathBuf,
    /// Directory of `wse-drain-host` and `tokio-peer` (this binary's own).
    pub(crate) bin_dir: PathBuf,
    /// CPython 3.12 with `wse-server` 2.5.x, `websockets` and `msgpack`.
    pub(crate) python: PathBuf,
    /// A Python whose `wse_server` is ours (the py/ package): ours is then drained from
    /// Python through `drain_host.py` like the product we replace. `None`: through
    /// `wse-drain-host`, in Rust.
    pub(crate) wse_python: Option<PathBuf>,
    /// `bench/peers`.
    pub(crate) peers_dir: PathBuf,
    /// The cores every server is pinned to (`taskset -c`).
    pub(crate) server_cores: String,
    /// HS256 secret of every server.
    pub(crate) secret: String,
    /// Where server logs go.
    pub(crate) logs: PathBuf,
}

impl Peer {
    /// Every peer, ours first.
    pub(crate) const ALL: [Peer; 4] = [Peer::Wse, Peer::Legacy, Peer::Tokio, Peer::Websockets];

    /// The name in tables and charts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Peer::Wse => "wse (ours)",
            Peer::Legacy => "wse-server 2.5 (replaced)",
            Peer::Tokio => "tokio-tungstenite",
            Peer::Websockets => "Python websockets",
        }
    }

    /// A short name for files and JSON.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Peer::Wse => "wse",
            Peer::Legacy => "legacy",
            Peer::Tokio => "tokio",
            Peer::Websockets => "websockets",
        }
    }

    /// Whether several processes of it can share one port (`SO_REUSEPORT`).
    pub(crate) fn shares_port(self) -> bool {
        !matches!(self, Peer::Legacy)
    }
}

impl Setup {
    /// Starts `peer` for `role` on `port` (0: a free one), admitting `max_connections`.
    pub(crate) fn start(
        &self,
        peer: Peer,
        role: Role,
        port: u16,
        max_connections: usize,
    ) -> Result<Server, String> {
        let (program, args) = self.command(peer, role, port, max_connections);
        let mut pinned = vec!["-c".to_owned(), self.server_cores.clone(), program];
        pinned.extend(args);
        let log = self.logs.join(format!("{}-{}-{port}.log", peer.key(), std::process::id()));
        let log = unique(log);
        Server::start(Path::new("taskset"), &pinned, log)
            .map_err(|e| format!("{}: {e}", peer.key()))
    }

    /// The command line (program first) that [`Setup::start`] runs under `taskset`.
    pub(crate) fn command_line(&self, peer: Peer, role: Role, max_connections: usize) -> String {
        let (program, args) = self.command(peer, role, 0, max_connections);
        let words = [format!("taskset -c {}", self.server_cores), program].into_iter();
        words.chain(args).collect::<Vec<_>>().join(" ")
    }

    fn command(
        &self,
        peer: Peer,
        role: Role,
        port: u16,
        max_connections: usize,
    ) -> (String, Vec<String>) {
        let port = port.to_string();
        let max = max_connections.to_string();
        let common = |extra: &[&str]| -> Vec<String> {
            let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            args.extend(["--port".into(), port.clone(), "--secret".into(), self.secret.clone()]);
            args.extend(["--max-connections".into(), max.clone()]);
            args
        };
        let script = |name: &str| self.peers_dir.join(name).display().to_string();
        let python = self.python.display().to_string();
        match (peer, role) {
            (Peer::Wse, Role::Plain) => {
                (self.wse_server.display().to_string(), self.wse_args(&port, &max))
            }
            (Peer::Wse, Role::Inbound) if self.wse_python.is_some() => {
                let ours = self.wse_python.as_ref().map(|p| p.display().to_string());
                (ours.unwrap_or_default(), common(&[&script("drain_host.py")]))
            }
            (Peer::Wse, Role::Inbound) => {
                // No Python with our wheel (`--wse-python`; scripts/loadbench.sh passes
                // one after `make py-build`): a Rust drain, labelled provisional.
                let host = self.bin_dir.join("wse-drain-host").display().to_string();
                let mut args = common(&[]);
                args.extend(["--cores".into(), self.server_cores.clone()]);
                (host, args)
            }
            (Peer::Legacy, _) => (python, common(&[&script("drain_host.py")])),
            (Peer::Tokio, _) => {
                (self.bin_dir.join("tokio-peer").display().to_string(), common(&[]))
            }
            (Peer::Websockets, _) => (python, common(&[&script("websockets_host.py")])),
        }
    }

    /// Our server's flags: loopback, JWT, client publishing, no rate limit, long idle
    /// timeout, handshake caps raised for the accept-rate test, shards on the server cores.
    fn wse_args(&self, port: &str, max: &str) -> Vec<String> {
        let flags = [
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--jwt-secret",
            &self.secret,
            "--allow-client-publish",
            "--idle-timeout",
            "600",
            "--rate-limit-capacity",
            "1000000000",
            "--rate-limit-refill",
            "1000000000",
            "--max-connections",
            max,
            "--max-handshakes",
            "4096",
            "--max-handshakes-per-ip",
            "4096",
            "--cores",
            &self.server_cores,
        ];
        flags.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The version line of `peer`'s software.
    pub(crate) fn version(&self, peer: Peer) -> String {
        let python = self.python.to_string_lossy().into_owned();
        let pip_version = |package: &str| {
            let code = format!(
                "import importlib.metadata as m, platform; print('{package}', \
                 m.version('{package}'), 'on CPython', platform.python_version())"
            );
            host::command_line(&python, &["-c", &code])
        };
        match peer {
            Peer::Wse => host::command_line(&self.wse_server.to_string_lossy(), &["--version"]),
            Peer::Legacy => pip_version("wse-server"),
            Peer::Tokio => {
                let bin = self.bin_dir.join("tokio-peer");
                host::command_line(&bin.to_string_lossy(), &["--version"])
            }
            Peer::Websockets => pip_version("websockets"),
        }
    }

    /// Whether the inbound row of ours is drained in Rust instead of Python.
    pub(crate) fn provisional_drain(&self) -> bool {
        self.wse_python.is_none()
    }

    /// Why `peer` cannot run here, if it cannot.
    pub(crate) fn unavailable(&self, peer: Peer) -> Option<String> {
        let needs = match peer {
            Peer::Wse => return (!self.wse_server.exists()).then(|| "wse-server not built".into()),
            Peer::Tokio => return None,
            Peer::Legacy => "wse_server",
            Peer::Websockets => "websockets, msgpack",
        };
        let python = self.python.to_string_lossy().into_owned();
        let probe = format!("import {needs}");
        let ok = std::process::Command::new(&python)
            .args(["-c", &probe])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!ok).then(|| format!("{python} cannot import {needs} (make bench-venv)"))
    }
}

/// A token every server accepts: HS256 with `secret`, subject `loadbench`, valid two hours.
pub(crate) fn token(secret: &str) -> Result<String, String> {
    let key = HS256Key::from_bytes(secret.as_bytes());
    let claims =
        Claims::create(jwt_simple::prelude::Duration::from_hours(2)).with_subject("loadbench");
    key.authenticate(claims).map_err(|e| format!("token: {e}"))
}

/// `path`, or the same name with a counter when it exists (several servers per run).
fn unique(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    (1..).map(|i| path.with_extension(format!("{i}.log"))).find(|p| !p.exists()).unwrap_or(path)
}

/// How long a server may take to exit once asked.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(5);
