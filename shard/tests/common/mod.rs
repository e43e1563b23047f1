//! Loopback harness for the `wse-server` integration tests.
//!
//! Place: outside the data path. Every test starts the real binary as a child process on
//! port 0 ([`Server`]), talks to it over real sockets with a byte-exact client ([`RawClient`],
//! which writes masked frames with a chosen masking key and parses the server's frames) or
//! with tungstenite ([`ws_connect`]), and asserts the conventions of the fault cases
//! (`../shared/cases/README.md`): H0, FAIL(n) ([`RawClient::expect_close`]) and UNHARMED
//! ([`Unharmed`]). Nothing is mocked.
//!
//! Each test binary compiles this module on its own, so some helpers are unused in some of
//! them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod engine;
pub mod json;
pub mod mp;
pub mod redis_server;
pub mod token;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use json::Value;

/// The H0 key of RFC 6455 §1.3 and the accept value the server must answer with.
pub const H0_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `Sec-WebSocket-Accept` for [`H0_KEY`].
pub const H0_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The masking key every documented client frame uses.
pub const DOC_KEY: [u8; 4] = [1, 2, 3, 4];

/// Frame opcodes, as RFC 6455 §5.2 numbers them.
pub const CONT: u8 = 0x0;
/// Text opcode.
pub const TEXT: u8 = 0x1;
/// Binary opcode.
pub const BINARY: u8 = 0x2;
/// Close opcode.
pub const CLOSE: u8 = 0x8;
/// Ping opcode.
pub const PING: u8 = 0x9;
/// Pong opcode.
pub const PONG: u8 = 0xA;
/// FIN bit of the first header byte.
pub const FIN: u8 = 0x80;

// ------------------------------------------------------------------------------------------
// The server process
// ------------------------------------------------------------------------------------------

/// A running `wse-server` child process, killed when dropped.
pub struct Server {
    child: Mutex<Child>,
    /// Where the shards listen.
    pub addr: SocketAddr,
    /// The child's process id.
    pub pid: u32,
    /// The last lines the server logged, printed when a test fails.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `wse-server --host 127.0.0.1 --port 0` plus `args`, and waits (bounded) for its
    /// `listening` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wse-server"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("WSE_LOG", std::env::var("WSE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wse-server");
        let pid = child.id();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        drain_lines(child.stderr.take().expect("piped stderr"), Arc::clone(&log));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let tail: Vec<String> = log.lock().unwrap().iter().cloned().collect();
                panic!("wse-server {args:?} printed no listening line; log:\n{}", tail.join("\n"));
            }
        };
        let addr = line
            .strip_prefix("wse-server listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
        Server { child: Mutex::new(child), addr, pid, log }
    }

    /// The server's TCP port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://` URL of `path_and_query` on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid, "TERM");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running (same PID, never restarted: we own it).
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().try_wait().expect("try_wait").is_none()
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// Open file descriptors of the process, from `/proc/PID/fd`.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).expect("read /proc/PID/fd").count()
    }

    /// `GET path` over a fresh connection; the whole response (the server closes after it).
    pub fn get(&self, path: &str) -> HttpResponse {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        http_exchange(self.addr, request.as_bytes())
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics");
        response.body_text()
    }

    /// The value of one series, e.g. `wse_connections{shard="0"}`, or of the sum of every
    /// series of a name when `series` has no labels (`wse_connections`).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Polls `series` until `accept` holds or `within` passes; the last value seen.
    pub fn wait_metric(&self, series: &str, within: Duration, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(series);
            if accept(value) || Instant::now() >= deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- wse-server {} log tail ---\n{}", self.addr, self.log_tail());
        }
        let Ok(mut child) = self.child.lock() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(self.pid, "TERM");
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL fallback.
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends `SIG<name>` to `pid` with the `kill` command (the crate forbids `unsafe`).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Keeps the last [`LOG_LINES`] lines of `from` in `log`, so the pipe never fills.
fn drain_lines(from: impl Read + Send + 'static, log: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// One series of a Prometheus text, or the sum over a name's series.
pub fn metric_value(text: &str, series: &str) -> f64 {
    let labelled = series.contains('{');
    let mut total = 0.0;
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let base = name.split('{').next().unwrap_or(name);
        if (labelled && name == series) || (!labelled && base == series) {
            total += value.parse::<f64>().expect("numeric sample");
            found = true;
        }
    }
    assert!(found, "no series {series} in /metrics:\n{text}");
    total
}

// ------------------------------------------------------------------------------------------
// Plain HTTP
// ------------------------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines as (name, value), names as sent.
    pub headers: Vec<(String, String)>,
    /// Whatever followed the head until the server closed (or the read timed out).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` on a fresh connection and reads the response until the server closes.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send request");
    let mut raw = Vec::new();
    let deadline = Instant::now() + IO_LIMIT;
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        }
    }
    parse_response(&raw).unwrap_or_else(|| panic!("no HTTP response head in {raw:?}"))
}

/// Parses a response head (and keeps the rest as the body); `None` if the head is
/// incomplete.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(HttpResponse { status, headers, body: raw[end + 4..].to_vec() })
}

/// The H0 request of the cases README for `path` (with query), `extra` lines appended.
pub fn h0_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {H0_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

// ------------------------------------------------------------------------------------------
// Frames
// ------------------------------------------------------------------------------------------

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The first header byte: FIN, RSV1–3 and the opcode.
    pub b0: u8,
    /// The unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.b0 & 0x0f
    }

    /// The status code of a Close frame, if its body has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Why reading a frame ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed TCP (FIN or RST).
    Closed,
    /// Nothing complete arrived before the deadline.
    Timeout,
}

/// A masked client frame: header byte `b0`, `payload` masked with `key`.
pub fn masked(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64, Some(key));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// An unmasked frame (what a broken client would send).
pub fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64, None);
    out.extend_from_slice(payload);
    out
}

/// A frame header announcing `len` payload bytes, with the shortest length encoding.
pub fn header(b0: u8, len: u64, key: Option<[u8; 4]>) -> Vec<u8> {
    let mask = if key.is_some() { 0x80 } else { 0 };
    let mut out = vec![b0];
    if len < 126 {
        out.push(mask | len as u8);
    } else if len <= 0xffff {
        out.push(mask | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = key {
        out.extend_from_slice(&key);
    }
    out
}

/// Bytes from a hex string with optional spaces and `·` separators: `"81 05 68"`.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert!(digits.len() % 2 == 0, "odd hex string {text:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// A fresh random masking key, never [`DOC_KEY`] and never all zeros.
pub fn random_key() -> [u8; 4] {
    loop {
        let key = (random_u64() as u32).to_be_bytes();
        if key != DOC_KEY && key != [0; 4] {
            return key;
        }
    }
}

/// 64 random bits from the standard library's per-process hash seed.
pub fn random_u64() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

// ------------------------------------------------------------------------------------------
// The byte-exact client
// ------------------------------------------------------------------------------------------

/// A client on a std `TcpStream` that writes exact bytes and parses server frames.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects without sending anything.
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient { stream: connect(addr), buf: Vec::new() }
    }

    /// Connects from the local address `source` (e.g. 127.0.0.2).
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> RawClient {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.bind(&SocketAddr::new(source, 0).into()).expect("bind source address");
        socket.connect_timeout(&addr.into(), IO_LIMIT).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("nodelay");
        RawClient { stream, buf: Vec::new() }
    }

    /// Connects with a receive buffer of `rcvbuf` bytes, set before connecting so that the
    /// TCP window stays small: once such a client stops reading, the server's writes stall
    /// after a little data and the rest waits in its outbound queue.
    pub fn connect_small(addr: SocketAddr, rcvbuf: usize) -> RawClient {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        socket.connect_timeout(&addr.into(), IO_LIMIT).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("nodelay");
        stream.set_write_timeout(Some(IO_LIMIT)).expect("write timeout");
        RawClient { stream, buf: Vec::new() }
    }

    /// [`RawClient::open_wse`] over [`RawClient::connect_small`].
    pub fn open_wse_small(addr: SocketAddr, path: &str, rcvbuf: usize) -> (RawClient, Value) {
        let mut client = RawClient::connect_small(addr, rcvbuf);
        client.upgrade(addr, path, &[]);
        let ready = client.next_json(IO_LIMIT);
        assert_eq!(ready.str_at("t"), Some("server_ready"), "first message: {ready:?}");
        (client, ready)
    }

    /// Connects and completes H0 on `path`; panics unless the answer is a correct 101.
    pub fn open(addr: SocketAddr, path: &str) -> RawClient {
        let mut client = RawClient::connect(addr);
        client.upgrade(addr, path, &[]);
        client
    }

    /// Completes H0 and reads `server_ready` (WSE mode); returns it with the client.
    pub fn open_wse(addr: SocketAddr, path: &str) -> (RawClient, Value) {
        RawClient::open_wse_with(addr, path, &[])
    }

    /// Like [`RawClient::open_wse`], with `extra` header lines on H0 (credentials).
    pub fn open_wse_with(addr: SocketAddr, path: &str, extra: &[&str]) -> (RawClient, Value) {
        let mut client = RawClient::connect(addr);
        client.upgrade(addr, path, extra);
        let ready = client.next_json(IO_LIMIT);
        assert_eq!(ready.str_at("t"), Some("server_ready"), "first message: {ready:?}");
        assert_eq!(ready.num_at("seq"), Some(1.0), "server_ready seq: {ready:?}");
        (client, ready)
    }

    /// Sends H0 (with `extra` header lines) and checks the 101 answer.
    pub fn upgrade(&mut self, addr: SocketAddr, path: &str, extra: &[&str]) {
        self.send(h0_request(addr, path, extra).as_bytes());
        let response = self.read_head(IO_LIMIT).expect("a response to H0");
        assert_eq!(response.status, 101, "H0 answer: {response:?}");
        assert_eq!(response.header("Sec-WebSocket-Accept"), Some(H0_ACCEPT));
    }

    /// Reads an HTTP response head; bytes after it stay buffered as frames.
    pub fn read_head(&mut self, within: Duration) -> Option<HttpResponse> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let rest = self.buf.split_off(end + 4);
                let head = std::mem::replace(&mut self.buf, rest);
                return parse_response(&head);
            }
            if self.fill(deadline).is_err() {
                return None;
            }
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Writes `bytes`; `false` if the server already closed the socket.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Sends a masked text frame with a random key.
    pub fn send_text(&mut self, text: &str) {
        self.send(&masked(FIN | TEXT, text.as_bytes(), random_key()));
    }

    /// Sends a masked Ping with `payload`.
    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send(&masked(FIN | PING, payload, random_key()));
    }

    /// The next complete frame, or why none came before `within` passed.
    pub fn read_frame(&mut self, within: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }

    /// The next text frame parsed as JSON, skipping server heartbeats (`ping` texts and
    /// WebSocket Pings, which are answered).
    pub fn next_json(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.read_frame(left).unwrap_or_else(|e| panic!("no JSON message: {e:?}"));
            match frame.opcode() {
                PING => self.send(&masked(FIN | PONG, &frame.payload, random_key())),
                TEXT | BINARY => {
                    let value =
                        frame_json(&frame).unwrap_or_else(|| panic!("not JSON: {}", frame.text()));
                    if !is_heartbeat(&value) {
                        return value;
                    }
                }
                _ => panic!("unexpected frame {frame:?}"),
            }
        }
    }

    /// Sends a `subscription_update` and waits for its answer; returns the answer.
    pub fn subscribe(&mut self, action: &str, topics: &[&str]) -> Value {
        let list: Vec<String> = topics.iter().map(|t| json::quote(t)).collect();
        self.send_text(&format!(
            r#"{{"t":"subscription_update","p":{{"action":"{action}","topics":[{}]}}}}"#,
            list.join(",")
        ));
        let answer = self.next_json(IO_LIMIT);
        assert_eq!(answer.str_at("t"), Some("subscription_update"), "answer: {answer:?}");
        answer
    }

    /// Publishes `data` (JSON text) to `topic` with the `publish` message.
    pub fn publish(&mut self, topic: &str, data: &str) {
        self.send_text(&publish_json(topic, data));
    }

    /// FAIL(n), strictly: within `within` the next frame is a Close with status `code`,
    /// and then the server closes TCP. We answer the Close as a client would and half-close,
    /// so that the server has no reason to linger.
    pub fn expect_close(&mut self, code: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let frame = self.read_frame(within).unwrap_or_else(|e| {
            panic!("FAIL({code}): expected a Close frame, got {e:?} (non-strict if Closed)")
        });
        self.expect_close_frame(&frame, code, deadline);
    }

    /// The rest of FAIL(n) once its first frame was read: `frame` is Close `code`, then the
    /// server closes TCP before `deadline`.
    pub fn expect_close_frame(&mut self, frame: &Frame, code: u16, deadline: Instant) {
        assert_eq!(frame.opcode(), CLOSE, "FAIL({code}): next frame is not Close: {frame:?}");
        assert_eq!(frame.b0, FIN | CLOSE, "Close frame header: {frame:?}");
        assert_eq!(frame.close_code(), Some(code), "FAIL({code}): Close frame {frame:?}");
        self.answer_close_and_expect_eof(frame, deadline);
    }

    /// A clean close started by the client: the next frame is a Close whose code is one of
    /// `codes` (`None` for an empty body), then the server closes TCP.
    pub fn expect_close_reply(&mut self, codes: &[Option<u16>], within: Duration) {
        let deadline = Instant::now() + within;
        let frame = self.read_frame(within).expect("a Close reply");
        assert_eq!(frame.opcode(), CLOSE, "expected a Close reply, got {frame:?}");
        assert!(codes.contains(&frame.close_code()), "Close reply {frame:?}, want {codes:?}");
        self.expect_eof(deadline.saturating_duration_since(Instant::now()));
    }

    /// Reads until the server closes TCP; panics on any frame or on a timeout.
    pub fn expect_eof(&mut self, within: Duration) {
        match self.read_frame(within) {
            Err(End::Closed) => {}
            Err(End::Timeout) => panic!("the server did not close TCP within {within:?}"),
            Ok(frame) => panic!("frame after the Close: {frame:?}"),
        }
    }

    /// Reads until EOF or RST, ignoring any bytes; `false` if `within` passed first.
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Ok(()) => {}
                Err(End::Closed) => return true,
                Err(End::Timeout) => return false,
            }
        }
    }

    /// Asserts that nothing arrives for `quiet` (the socket stays open and silent).
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.read_frame(quiet) {
            Err(End::Timeout) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    fn answer_close_and_expect_eof(&mut self, frame: &Frame, deadline: Instant) {
        let _ = self.try_send(&masked(FIN | CLOSE, &frame.payload, random_key()));
        let _ = self.stream.shutdown(Shutdown::Write);
        self.expect_eof(deadline.saturating_duration_since(Instant::now()));
    }

    /// Parses one frame from the buffer, if complete.
    fn parse_frame(&mut self) -> Option<Frame> {
        let buf = &self.buf;
        if buf.len() < 2 {
            return None;
        }
        assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked: {:02x?}", &buf[..2]);
        let (len, at) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let end = at + usize::try_from(len).expect("frame length fits usize");
        if buf.len() < end {
            return None;
        }
        let frame = Frame { b0: buf[0], payload: buf[at..end].to_vec() };
        self.buf.drain(..end);
        Some(frame)
    }

    /// Reads more bytes into the buffer before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).expect("set read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(End::Closed),
            }
        }
    }
}

/// A `publish` message for `topic` carrying `data` (JSON text).
pub fn publish_json(topic: &str, data: &str) -> String {
    format!(r#"{{"t":"publish","p":{{"topic":{},"data":{data}}}}}"#, json::quote(topic))
}

/// A `publish` message at priority `pri` (10, 8, 5, 3 or 1).
pub fn publish_json_at(topic: &str, data: &str, pri: u8) -> String {
    let topic = json::quote(topic);
    format!(r#"{{"t":"publish","p":{{"topic":{topic},"data":{data},"pri":{pri}}}}}"#)
}

/// A `subscription_update` that subscribes to `topics` with `recover: true` and a
/// `recovery` entry `{epoch, offset}` for each `(topic, epoch, offset)` of `from`.
pub fn recover_json(topics: &[&str], from: &[(&str, &str, u64)]) -> String {
    let list: Vec<String> = topics.iter().map(|t| json::quote(t)).collect();
    let entries: Vec<String> = from
        .iter()
        .map(|(t, e, o)| {
            format!(r#"{}:{{"epoch":{},"offset":{o}}}"#, json::quote(t), json::quote(e))
        })
        .collect();
    let (topics, entries) = (list.join(","), entries.join(","));
    format!(
        concat!(
            r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":[{}],"#,
            r#""recover":true,"recovery":{{{}}}}}}}"#
        ),
        topics, entries
    )
}

/// The `recovery.{topic}` entry of a subscription answer, as
/// `(epoch, offset, recovered, count)`; `None` when the answer has no entry for `topic`.
pub fn recovery_entry(
    answer: &Value,
    topic: &str,
) -> Option<(Option<String>, Option<u64>, bool, u64)> {
    let entry = answer.get("p")?.get("recovery")?.get(topic)?;
    let recovered = matches!(entry.get("recovered"), Some(json::Value::Bool(true)));
    Some((
        entry.str_at("epoch").map(str::to_owned),
        entry.num_at("offset").map(|o| o as u64),
        recovered,
        entry.num_at("count").unwrap_or(-1.0) as u64,
    ))
}

/// The JSON a server frame carries: a text frame as it is, a binary `C:` frame inflated
/// (PROTOCOL.md §4), a binary `{` frame as it is. `None` for anything else.
pub fn frame_json(frame: &Frame) -> Option<Value> {
    match (frame.opcode(), frame.payload.strip_prefix(b"C:")) {
        (BINARY, Some(zlib)) => json::parse(&inflate_zlib(zlib)),
        (TEXT | BINARY, _) => json::parse(&frame.payload),
        _ => None,
    }
}

/// Inflates a zlib stream (RFC 1950) with miniz_oxide, independent of the server's
/// libdeflate; panics when it does not inflate.
pub fn inflate_zlib(zlib: &[u8]) -> Vec<u8> {
    miniz_oxide::inflate::decompress_to_vec_zlib(zlib).expect("a zlib stream")
}

/// Whether `value` is a server heartbeat (`{"c":"WSE","t":"ping",...}`).
pub fn is_heartbeat(value: &Value) -> bool {
    value.str_at("c") == Some("WSE") && value.str_at("t") == Some("ping")
}

/// A publication as subscribers see it.
#[derive(Debug, Clone)]
pub struct Publication {
    /// `tp`.
    pub topic: String,
    /// `e`.
    pub epoch: String,
    /// `o`.
    pub offset: u64,
    /// `p`.
    pub data: Value,
}

impl Publication {
    /// Reads the publication fields of `value`; `None` if it is not a publication.
    pub fn from_json(value: &Value) -> Option<Publication> {
        Some(Publication {
            topic: value.str_at("tp")?.to_owned(),
            epoch: value.str_at("e")?.to_owned(),
            offset: value.num_at("o")? as u64,
            data: value.get("p")?.clone(),
        })
    }
}

// ------------------------------------------------------------------------------------------
// A client that keeps itself alive in the background
// ------------------------------------------------------------------------------------------

/// What a [`LiveClient`]'s reader saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A text message (heartbeats excluded).
    Json(Value),
    /// A Pong with this payload.
    Pong(Vec<u8>),
    /// A Close frame, then the end of the connection.
    Close(Option<u16>),
    /// TCP ended.
    Closed,
}

/// An upgraded WSE connection whose reader thread answers Pings and collects messages, so
/// it survives heartbeats and idle timeouts for as long as a case runs.
pub struct LiveClient {
    writer: Arc<Mutex<TcpStream>>,
    seen: Receiver<Seen>,
    reader: Option<JoinHandle<()>>,
}

impl LiveClient {
    /// Opens a WSE connection (H0, `server_ready`) and starts its reader.
    pub fn open(addr: SocketAddr, path: &str) -> LiveClient {
        LiveClient::open_with(addr, path, &[])
    }

    /// Like [`LiveClient::open`], with `extra` header lines on H0 (credentials).
    pub fn open_with(addr: SocketAddr, path: &str, extra: &[&str]) -> LiveClient {
        let (client, _) = RawClient::open_wse_with(addr, path, extra);
        LiveClient::from_raw(client)
    }

    /// Takes over an upgraded client.
    pub fn from_raw(mut client: RawClient) -> LiveClient {
        let writer = Arc::new(Mutex::new(client.stream.try_clone().expect("clone socket")));
        let (tx, seen) = mpsc::channel();
        let answer = Arc::clone(&writer);
        let reader = std::thread::spawn(move || loop {
            let frame = match client.read_frame(Duration::from_secs(3600)) {
                Ok(frame) => frame,
                Err(_) => return drop(tx.send(Seen::Closed)),
            };
            let event = match frame.opcode() {
                PING => {
                    let pong = masked(FIN | PONG, &frame.payload, random_key());
                    let _ = answer.lock().unwrap().write_all(&pong);
                    continue;
                }
                PONG => Seen::Pong(frame.payload),
                CLOSE => Seen::Close(frame.close_code()),
                _ => match frame_json(&frame) {
                    Some(v) if is_heartbeat(&v) => continue,
                    Some(v) => Seen::Json(v),
                    None => continue,
                },
            };
            if tx.send(event).is_err() {
                return;
            }
        });
        LiveClient { writer, seen, reader: Some(reader) }
    }

    /// Sends a masked text frame.
    pub fn send_text(&self, text: &str) {
        let frame = masked(FIN | TEXT, text.as_bytes(), random_key());
        self.writer.lock().unwrap().write_all(&frame).expect("write to server");
    }

    /// Sends a masked Ping.
    pub fn send_ping(&self, payload: &[u8]) {
        let frame = masked(FIN | PING, payload, random_key());
        self.writer.lock().unwrap().write_all(&frame).expect("write to server");
    }

    /// Sends a subscribe and waits for its answer.
    pub fn subscribe(&self, topics: &[&str]) -> Value {
        let list: Vec<String> = topics.iter().map(|t| json::quote(t)).collect();
        self.send_text(&format!(
            r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":[{}]}}}}"#,
            list.join(",")
        ));
        self.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"))
            .expect("subscription answer")
    }

    /// The next event, if one comes within `within`.
    pub fn next(&self, within: Duration) -> Option<Seen> {
        self.seen.recv_timeout(within).ok()
    }

    /// Waits for a JSON message that `accept`s; messages before it are discarded.
    pub fn wait_json(&self, within: Duration, accept: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now()))? {
                Seen::Json(v) if accept(&v) => return Some(v),
                Seen::Close(_) | Seen::Closed => return None,
                _ => {}
            }
        }
    }

    /// Everything that arrives within `within`.
    pub fn collect(&self, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        while let Some(seen) = self.next(deadline.saturating_duration_since(Instant::now())) {
            all.push(seen);
        }
        all
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        let _ = self.writer.lock().map(|s| s.shutdown(Shutdown::Both));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

// ------------------------------------------------------------------------------------------
// UNHARMED
// ------------------------------------------------------------------------------------------

/// The topic the UNHARMED bystander watches.
pub const WATCH_TOPIC: &str = "unharmed";
/// The topic case inputs publish to (evil payloads that must never arrive, or positive
/// controls that must arrive once).
pub const CASE_TOPIC: &str = "case";
/// An evil publication a rejected input carries; its arrival anywhere is a NO-DELIVERY
/// failure.
pub const EVIL: &str = r#"{"evil":true}"#;

/// The UNHARMED convention: a bystander subscribed before the case, a publisher that
/// publishes during it, and the checks afterwards. The server needs
/// `--allow-client-publish`.
pub struct Unharmed {
    /// Credentials for the connections the checks open ("" for none).
    header: String,
    addr: SocketAddr,
    bystander: LiveClient,
    publisher: LiveClient,
    published: u64,
    rss_before: u64,
    /// Positive-control publications to [`CASE_TOPIC`] the bystander received so far.
    case_messages: Vec<Value>,
    watched: Vec<Publication>,
}

impl Unharmed {
    /// Opens the bystander (subscribed to [`WATCH_TOPIC`] and [`CASE_TOPIC`]) and the
    /// publisher, and records the server's RSS.
    pub fn before(server: &Server) -> Unharmed {
        Unharmed::before_with(server, "")
    }

    /// Like [`Unharmed::before`] on a server that wants credentials: `header` (one header
    /// line, e.g. `Authorization: Bearer ...`) goes on every connection the checks open.
    pub fn before_with(server: &Server, header: &str) -> Unharmed {
        let extra: Vec<&str> = [header].into_iter().filter(|h| !h.is_empty()).collect();
        let bystander = LiveClient::open_with(server.addr, "/wse", &extra);
        let answer = bystander.subscribe(&[WATCH_TOPIC, CASE_TOPIC]);
        assert_eq!(answer.get("p").and_then(|p| p.get("success_topics")).map(Value::len), Some(2));
        let publisher = LiveClient::open_with(server.addr, "/wse", &extra);
        Unharmed {
            header: header.to_owned(),
            addr: server.addr,
            bystander,
            publisher,
            published: 0,
            rss_before: server.rss_kb(),
            case_messages: Vec::new(),
            watched: Vec::new(),
        }
    }

    /// Publishes the next numbered message to [`WATCH_TOPIC`]; call it between inputs.
    pub fn publish_one(&mut self) {
        let data = format!(r#"{{"n":{}}}"#, self.published);
        self.publisher.send_text(&publish_json(WATCH_TOPIC, &data));
        self.published += 1;
    }

    /// Waits until the bystander has received `count` positive-control messages on
    /// [`CASE_TOPIC`]; returns them.
    pub fn case_messages(&mut self, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while self.case_messages.len() < count && Instant::now() < deadline {
            self.pump(deadline.saturating_duration_since(Instant::now()));
        }
        self.case_messages.clone()
    }

    /// Asserts that exactly `count` positive-control messages arrived on [`CASE_TOPIC`].
    pub fn assert_case_count(&mut self, count: usize) {
        self.case_messages(count, IO_LIMIT);
        while self.pump(Duration::from_millis(50)) {}
        let got = self.case_messages.len();
        assert_eq!(got, count, "positive controls delivered {got} times, want {count}");
    }

    /// Runs every UNHARMED check; `server` must be the one given to [`Unharmed::before`].
    pub fn check(mut self, server: &Server) {
        self.publish_one();

        // The bystander got every publication, once each, in order.
        // Presence announcements (with `--presence`) share the topic and its offsets but
        // carry no number: only numbered publications count towards what was published.
        let deadline = Instant::now() + IO_LIMIT;
        while self.numbered() < self.published && Instant::now() < deadline {
            self.pump(deadline.saturating_duration_since(Instant::now()));
        }
        while self.pump(Duration::from_millis(100)) {}
        let numbers: Vec<u64> =
            self.watched.iter().filter_map(|p| p.data.num_at("n")).map(|n| n as u64).collect();
        let want: Vec<u64> = (0..self.published).collect();
        assert_eq!(numbers, want, "UNHARMED: bystander's publications");
        for pair in self.watched.windows(2) {
            assert_eq!(pair[1].offset, pair[0].offset + 1, "UNHARMED: offsets {pair:?}");
            assert_eq!(pair[1].epoch, pair[0].epoch, "UNHARMED: epoch changed");
        }

        // The bystander answers Ping.
        self.bystander.send_ping(b"unharmed");
        let deadline = Instant::now() + IO_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bystander.next(left).expect("UNHARMED: bystander got no Pong") {
                Seen::Pong(payload) if payload == b"unharmed" => break,
                Seen::Close(code) => panic!("UNHARMED: bystander closed with {code:?}"),
                Seen::Closed => panic!("UNHARMED: bystander lost its connection"),
                Seen::Json(v) => self.note(v),
                Seen::Pong(_) => {}
            }
        }

        // A fresh connection completes H0 and gets a PONG within 1 s.
        let extra: Vec<&str> =
            [self.header.as_str()].into_iter().filter(|h| !h.is_empty()).collect();
        fresh_pong_within_with(self.addr, &extra, Duration::from_secs(1));

        // Same process, RSS within +64 MiB.
        assert!(server.is_running(), "UNHARMED: the server process exited");
        let rss = server.rss_kb();
        assert!(
            rss <= self.rss_before + 64 * 1024,
            "UNHARMED: RSS grew from {} KiB to {rss} KiB",
            self.rss_before
        );
    }

    /// Moves what the bystander saw into the lists; panics on an evil delivery or a close.
    /// Whether something arrived within `within`.
    /// Publications on [`WATCH_TOPIC`] that carry the publisher's number.
    fn numbered(&self) -> u64 {
        self.watched.iter().filter(|p| p.data.num_at("n").is_some()).count() as u64
    }

    fn pump(&mut self, within: Duration) -> bool {
        match self.bystander.next(within) {
            Some(Seen::Json(v)) => self.note(v),
            Some(Seen::Close(code)) => panic!("UNHARMED: bystander closed with {code:?}"),
            Some(Seen::Closed) => panic!("UNHARMED: bystander lost its connection"),
            Some(Seen::Pong(_)) => {}
            None => return false,
        }
        true
    }

    fn note(&mut self, value: Value) {
        let Some(publication) = Publication::from_json(&value) else { return };
        assert!(
            publication.data.get("evil").is_none(),
            "NO-DELIVERY: an offending message was published: {value:?}"
        );
        match publication.topic.as_str() {
            WATCH_TOPIC => self.watched.push(publication),
            CASE_TOPIC => self.case_messages.push(value),
            _ => {}
        }
    }
}

/// A fresh connection completes H0 and gets `PONG` for a `ping`, all within `limit`.
pub fn fresh_pong_within(addr: SocketAddr, limit: Duration) {
    fresh_pong_within_with(addr, &[], limit);
}

/// [`fresh_pong_within`] with `extra` header lines on H0 (credentials).
pub fn fresh_pong_within_with(addr: SocketAddr, extra: &[&str], limit: Duration) {
    let started = Instant::now();
    let (mut client, _) = RawClient::open_wse_with(addr, "/wse", extra);
    client.send_text(r#"{"t":"ping","p":{"timestamp":123}}"#);
    let pong = client.next_json(limit);
    assert_eq!(pong.str_at("t"), Some("PONG"), "answer to ping: {pong:?}");
    let took = started.elapsed();
    assert!(took < limit, "H0 + PONG took {took:?}, limit {limit:?}");
}

// ------------------------------------------------------------------------------------------
// tungstenite
// ------------------------------------------------------------------------------------------

/// A tungstenite client over a plain socket.
pub type Ws = tungstenite::WebSocket<TcpStream>;

/// Connects with tungstenite to `path_and_query`; reads time out after [`IO_LIMIT`].
pub fn ws_connect(server: &Server, path_and_query: &str) -> Ws {
    let stream = connect(server.addr);
    let (ws, response) =
        tungstenite::client(server.url(path_and_query), stream).expect("tungstenite handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Connects with tungstenite and reads `server_ready`.
pub fn ws_connect_wse(server: &Server, path_and_query: &str) -> Ws {
    let mut ws = ws_connect(server, path_and_query);
    let ready = ws_next_json(&mut ws);
    assert_eq!(ready.str_at("t"), Some("server_ready"));
    ws
}

/// The next JSON text message, skipping heartbeats (tungstenite answers Pings itself).
pub fn ws_next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("tungstenite read") {
            tungstenite::Message::Text(text) => {
                let value = json::parse(text.as_bytes()).expect("JSON text");
                if !is_heartbeat(&value) {
                    return value;
                }
            }
            tungstenite::Message::Binary(data) => {
                let zlib = data.strip_prefix(b"C:").expect("binary frames are C: frames");
                return json::parse(&inflate_zlib(zlib)).expect("JSON in the C: frame");
            }
            _ => {}
        }
    }
}

/// Sends a text message with tungstenite.
pub fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("tungstenite send");
}

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

/// A TCP connection with [`IO_LIMIT`] timeouts and `TCP_NODELAY`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_LIMIT).expect("connect");
    stream.set_read_timeout(Some(IO_LIMIT)).expect("read timeout");
    stream.set_write_timeout(Some(IO_LIMIT)).expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Polls `condition` every 20 ms until it holds or `within` passes; whether it held.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Longest wait for a single expected answer.
pub const IO_LIMIT: Duration = Duration::from_secs(5);
/// Longest wait for the server's `listening` line.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Server log lines kept for failure reports.
const LOG_LINES: usize = 200;
