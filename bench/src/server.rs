//! A server child process under a benchmark's control: `wse-server` or a peer.
//!
//! Place: the benchmark starts the engine itself, so that it knows the exact command, the
//! process id whose memory it reads, and that nothing else shares the server. This module
//! spawns it, learns its address from the `NAME listening on ADDR` line on stdout (which
//! `wse-server` and every peer of `loadbench` print), asks `GET /health` (wse-server only),
//! and stops it: stdin closed (the peers' signal to exit), then SIGTERM, then SIGKILL after
//! a deadline. The server's log (stderr) goes to a file so that it does not mix with the
//! benchmark's table.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why the server could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary could not be spawned (wrong `--server` path, not built). Build it first.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The server exited or stayed silent instead of printing its address; its log says
    /// why (bad flags, port in use).
    #[error("server did not report its address within {0:?}; see its log")]
    NotListening(Duration),
    /// `GET /health` failed or answered something unexpected.
    #[error("GET /health: {0}")]
    Health(String),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Held open while the server runs: peers exit when it closes.
    stdin: Option<ChildStdin>,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// The server's stderr.
    pub log: PathBuf,
}

/// What `GET /health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Shards the server runs.
    pub shards: u64,
    /// Open WebSocket connections over all shards.
    pub connections: u64,
    /// Sockets still in the handshake.
    pub handshaking: u64,
}

impl Server {
    /// Starts `binary` with `args`, logging to `log`, and waits until it listens.
    pub fn start(binary: &Path, args: &[String], log: PathBuf) -> Result<Server, Error> {
        let spawn_error = |source| Error::Spawn { path: binary.to_owned(), source };
        let log_file = File::create(&log).map_err(spawn_error)?;
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(spawn_error)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(Error::NotListening(Duration::ZERO));
        };
        let stdin = child.stdin.take();
        match wait_for_address(stdout, START_DEADLINE) {
            Some(addr) => Ok(Server { child, stdin, addr, log }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::NotListening(START_DEADLINE))
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks `GET /health`.
    pub fn health(&self) -> Result<Health, Error> {
        health(self.addr)
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit; then SIGKILL. Returns the exit
    /// status and whether the server had to be killed.
    pub fn stop(mut self, deadline: Duration) -> io::Result<(ExitStatus, bool)> {
        drop(self.stdin.take());
        let pid = self.pid().to_string();
        // `kill` the program rather than libc: the workspace denies unsafe code.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok((self.child.wait()?, true))
    }
}

impl Drop for Server {
    /// A run that ends early must not leave the server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /health` on `addr`, over a fresh plain HTTP connection.
pub fn health(addr: SocketAddr) -> Result<Health, Error> {
    let fail = |e: io::Error| Error::Health(e.to_string());
    let mut stream = TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(HEALTH_TIMEOUT)).map_err(fail)?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    let field = |name| json_number(body, name).ok_or_else(|| Error::Health(body.to_owned()));
    Ok(Health {
        shards: field("shards")?,
        connections: field("connections")?,
        handshaking: field("handshaking")?,
    })
}

/// Reads the server's stdout on a thread until the address line, then keeps draining it
/// so that the server never blocks on a full pipe.
fn wait_for_address(stdout: impl Read + Send + 'static, deadline: Duration) -> Option<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, addr)) = line.split_once(LISTENING) {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().ok());
            }
        }
    });
    rx.recv_timeout(deadline).ok().flatten()
}

/// The unsigned integer value of `"name":` in a flat JSON object.
fn json_number(body: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let start = body.find(&key)? + key.len();
    let digits: String =
        body[start..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What `wse-server` (once every shard listens) and the peers print before their address.
const LISTENING: &str = " listening on ";
/// How long the server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Connect and read limit of a health request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_from_the_health_body() {
        let body = r#"{"status":"ok","version":"0.1.0","shards":2,"connections":10000,
            "handshaking":0,"uptime_seconds":12}"#;
        assert_eq!(json_number(body, "connections"), Some(10_000));
        assert_eq!(json_number(body, "shards"), Some(2));
        assert_eq!(json_number(body, "missing"), None);
    }
}
