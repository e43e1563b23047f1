//! `wss://` against the real `wse-server` binary: TLS handshake, upgrade and messaging,
//! HTTPS endpoints, clients that do not speak TLS, C02 (slowloris) over TLS, and start-up
//! with unusable TLS files.
//!
//! Every test makes a fresh self-signed certificate for `localhost` and 127.0.0.1 with rcgen
//! into a temporary directory; the client is rustls ([`StreamOwned`] over a std socket)
//! trusting exactly that certificate, with tungstenite on top for WebSocket.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::ServerName;

use common::json::Value;
use common::*;

/// A TLS client over a std socket.
type TlsSocket = StreamOwned<ClientConnection, TcpStream>;
/// tungstenite over [`TlsSocket`].
type Wss = tungstenite::WebSocket<TlsSocket>;

// ------------------------------------------------------------------------------------------
// Handshake, upgrade and messages
// ------------------------------------------------------------------------------------------

#[test]
fn wss_upgrade_greets_with_server_ready_and_answers_ping_with_pong() {
    let pki = Pki::new("ping");
    let server = pki.start(&[]);
    let mut ws = pki.wss(&server, "/wse");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    wss_send(&mut ws, r#"{"t":"ping","p":{"timestamp":123}}"#);
    let pong = wss_next_json(&mut ws);
    assert_eq!(pong.str_at("t"), Some("PONG"), "answer to ping: {pong:?}");
    ws.close(None).expect("close");
}

#[test]
fn wss_subscription_receives_a_publication_from_another_tls_client() {
    let pki = Pki::new("pubsub");
    let server = pki.start(&["--allow-client-publish"]);
    let mut subscriber = pki.wss(&server, "/wse");
    let topics = r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["news"]}}"#;
    wss_send(&mut subscriber, topics);
    let answer = wss_next_json(&mut subscriber);
    let ok = answer.get("p").and_then(|p| p.get("success_topics")).map(Value::strings);
    assert_eq!(ok, Some(vec!["news".to_owned()]), "answer {answer:?}");

    let mut publisher = pki.wss(&server, "/wse");
    wss_send(&mut publisher, &publish_json("news", r#"{"over":"tls"}"#));
    let message = wss_next_json(&mut subscriber);
    let publication = Publication::from_json(&message).expect("a publication");
    assert_eq!(publication.topic, "news");
    assert_eq!(publication.data.str_at("over"), Some("tls"));
}

#[test]
fn wss_echo_of_a_message_larger_than_the_tls_send_buffer_comes_back_whole() {
    let pki = Pki::new("echo");
    let server = pki.start(&["--echo"]);
    let mut ws = pki.wss(&server, "/echo");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(tungstenite::Message::binary(payload.clone())).expect("send");
    loop {
        match ws.read().expect("echo") {
            tungstenite::Message::Binary(data) => {
                assert!(data[..] == payload[..], "echo differs ({} bytes)", data.len());
                break;
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn health_and_metrics_are_served_over_https_on_the_same_port() {
    let pki = Pki::new("https");
    let server = pki.start(&[]);
    let health = pki.get(server.addr, "/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert!(health.body_text().starts_with("{\"status\":\"ok\""), "{}", health.body_text());
    let metrics = pki.get(server.addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body_text().contains("wse_handshake_rejections_total{reason=\"tls\"} 0"));
}

// ------------------------------------------------------------------------------------------
// Clients that do not speak TLS
// ------------------------------------------------------------------------------------------

#[test]
fn plain_http_on_the_tls_port_is_cut_off_and_counted() {
    let pki = Pki::new("plain");
    let server = pki.start(&[]);
    let mut plain = connect(server.addr);
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    plain.write_all(request.as_bytes()).expect("send");
    let answer = read_until_closed(&mut plain, IO_LIMIT).expect("the socket was not closed");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {answer:?}");
    // At most a TLS alert record (content type 21) came back.
    assert!(answer.is_empty() || answer[0] == 21, "unexpected bytes {answer:?}");
    pki.expect_tls_rejections(&server, 1.0);
    pki.assert_served(&server);
}

#[test]
fn garbage_instead_of_a_client_hello_is_cut_off_and_counted() {
    let pki = Pki::new("garbage");
    let server = pki.start(&[]);
    // A handshake record header announcing a length TLS does not allow, then noise.
    let inputs: [&[u8]; 2] = [&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3], &[0x55; 64]];
    for input in inputs {
        let mut socket = connect(server.addr);
        socket.write_all(input).expect("send");
        let answer = read_until_closed(&mut socket, IO_LIMIT).expect("the socket was not closed");
        assert!(answer.is_empty() || answer[0] == 21, "unexpected bytes {answer:?}");
    }
    pki.expect_tls_rejections(&server, 2.0);
    assert!(server.is_running());
    pki.assert_served(&server);
}

// ------------------------------------------------------------------------------------------
// C02 over TLS
// ------------------------------------------------------------------------------------------

#[test]
fn c02_tls_half_a_client_hello_or_nothing_is_cut_off_at_the_deadline() {
    let pki = Pki::new("c02");
    let server = pki.start(&["--handshake-timeout", "2"]);
    let hello = pki.client_hello();
    let limit = Duration::from_secs(2 + 2);
    let slow: Vec<_> = [hello.len() / 2, 0, hello.len() - 1]
        .into_iter()
        .map(|sent| {
            let (addr, part) = (server.addr, hello[..sent].to_vec());
            thread::spawn(move || {
                let started = Instant::now();
                let mut socket = connect(addr);
                socket.write_all(&part).expect("partial ClientHello");
                let answer = read_until_closed(&mut socket, limit + Duration::from_secs(1));
                assert_eq!(answer.as_deref(), Some(&[][..]), "sent {sent} bytes");
                started.elapsed()
            })
        })
        .collect();
    for handle in slow {
        let took = handle.join().expect("slow client thread");
        assert!(took >= Duration::from_millis(1800), "cut off early, after {took:?}");
        assert!(took <= limit, "cut off after {took:?}, limit {limit:?}");
    }
    let timeouts = r#"wse_handshake_rejections_total{reason="timeout"}"#;
    let seen = wait_https_metric(&pki, &server, timeouts, |v| v >= 3.0);
    assert_eq!(seen, 3.0);
    pki.assert_served(&server);
}

#[test]
fn c02_tls_flood_of_partial_client_hellos_leaves_other_addresses_served_and_sockets_at_baseline() {
    let pki = Pki::new("c02flood");
    let server = pki.start(&["--handshake-timeout", "2", "--allow-client-publish"]);
    // glommio creates some descriptors (eventfds) on first use: count sockets only.
    let baseline = socket_count(&server);
    let hello = pki.client_hello();

    // 300 sockets from 127.0.0.1, each with half a ClientHello, then a byte now and then.
    let mut flood: Vec<TcpStream> = (0..300).map(|_| connect(server.addr)).collect();
    for socket in &mut flood {
        let _ = socket.write_all(&hello[..hello.len() / 2]);
    }
    let started = Instant::now();
    let rest = hello[hello.len() / 2..].to_vec();
    let trickler = thread::spawn(move || {
        let mut next = 0;
        while started.elapsed() < Duration::from_secs(5) && next < rest.len() - 1 {
            for socket in &mut flood {
                let _ = socket.write_all(&rest[next..next + 1]);
            }
            next += 1;
            thread::sleep(Duration::from_millis(500));
        }
        flood
    });

    // Meanwhile a TLS client from 127.0.0.2 is served within 2 s and publishing works.
    thread::sleep(Duration::from_millis(300));
    let began = Instant::now();
    let other: IpAddr = [127, 0, 0, 2].into();
    let socket = RawClient::connect_from(other, server.addr).stream;
    let mut ws = pki.wss_over(socket, server.addr, "/wse?topics=flood");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "TLS + H0 from 127.0.0.2 took {took:?}");
    let answer = wss_next_json(&mut ws);
    assert_eq!(answer.str_at("t"), Some("subscription_update"), "{answer:?}");
    wss_send(&mut ws, &publish_json("flood", r#"{"round":"trip"}"#));
    let message = wss_next_json(&mut ws);
    assert_eq!(message.str_at("tp"), Some("flood"), "publish round-trip: {message:?}");
    drop(ws);

    // Every flood socket is closed by the deadline; the server's sockets return to baseline.
    let flood = trickler.join().expect("trickler");
    for mut socket in flood {
        let end = read_until_closed(&mut socket, Duration::from_millis(100));
        assert!(end.is_some(), "a flood socket is still open");
    }
    let capped = r#"wse_handshake_rejections_total{reason="handshake_cap"}"#;
    let capped = metric_value(&pki.get(server.addr, "/metrics").body_text(), capped);
    assert!(capped > 0.0, "the flood never reached the per-address handshake cap");
    let back = eventually(IO_LIMIT, || socket_count(&server) <= baseline);
    assert!(back, "{} sockets, baseline {baseline}", socket_count(&server));
    pki.assert_served(&server);
}

// ------------------------------------------------------------------------------------------
// Start-up
// ------------------------------------------------------------------------------------------

#[test]
fn start_up_with_a_missing_key_file_exits_non_zero_naming_the_file() {
    let pki = Pki::new("nokey");
    let missing = pki.dir.join("no-such-key.pem");
    let output = Command::new(env!("CARGO_BIN_EXE_wse-server"))
        .args(["--host", "127.0.0.1", "--port", "0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .expect("run wse-server");
    assert!(!output.status.success(), "wse-server started without its key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-key.pem"), "stderr does not name the file:\n{stderr}");
    assert!(output.stdout.is_empty(), "it printed a listening line");
}

#[test]
fn start_up_with_a_key_of_another_certificate_exits_non_zero_naming_both_files() {
    let pki = Pki::new("mismatch");
    let other = Pki::new("mismatch-other");
    let output = Command::new(env!("CARGO_BIN_EXE_wse-server"))
        .args(["--host", "127.0.0.1", "--port", "0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&other.key)
        .stdin(Stdio::null())
        .output()
        .expect("run wse-server");
    assert!(!output.status.success(), "wse-server started with a foreign key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(stderr.contains(&*other.key.to_string_lossy()), "{stderr}");
    assert!(stderr.contains(&*pki.cert.to_string_lossy()), "{stderr}");
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// A certificate and key for `localhost`/127.0.0.1 in a temporary directory, and a client
/// configuration that trusts only that certificate. The directory goes when this is dropped.
struct Pki {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<ClientConfig>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("wse-tls-test-{name}-{}", random_u64()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("write cert");
        std::fs::write(&key, made.key_pair.serialize_pem()).expect("write key");

        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).expect("trust the certificate");
        let mut client =
            ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pki { dir, cert, key, client: Arc::new(client) }
    }

    /// Starts `wse-server` serving TLS with this certificate, plus `args`.
    fn start(&self, args: &[&str]) -> Server {
        let cert = self.cert.to_str().expect("UTF-8 temp path");
        let key = self.key.to_str().expect("UTF-8 temp path");
        let mut all = vec!["--tls-cert", cert, "--tls-key", key];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// A TLS session to `addr` over a fresh socket, handshake completed.
    fn tls(&self, addr: SocketAddr) -> TlsSocket {
        self.tls_over(connect(addr))
    }

    fn tls_over(&self, socket: TcpStream) -> TlsSocket {
        socket.set_read_timeout(Some(IO_LIMIT)).expect("read timeout");
        let name = ServerName::try_from("localhost").expect("server name");
        let session = ClientConnection::new(Arc::clone(&self.client), name).expect("session");
        let mut tls = StreamOwned::new(session, socket);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        tls
    }

    /// Upgrades to `wss://` on `path` and reads `server_ready`.
    fn wss(&self, server: &Server, path: &str) -> Wss {
        self.wss_over(connect(server.addr), server.addr, path)
    }

    fn wss_over(&self, socket: TcpStream, addr: SocketAddr, path: &str) -> Wss {
        let tls = self.tls_over(socket);
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (mut ws, response) = tungstenite::client(url, tls).expect("wss upgrade");
        assert_eq!(response.status(), 101);
        if path.starts_with("/wse") {
            let ready = wss_next_json(&mut ws);
            assert_eq!(ready.str_at("t"), Some("server_ready"), "first message: {ready:?}");
        }
        ws
    }

    /// `GET path` over HTTPS; the whole response (the server closes after it).
    fn get(&self, addr: SocketAddr, path: &str) -> HttpResponse {
        let mut tls = self.tls(addr);
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls.write_all(request.as_bytes()).expect("send request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match tls.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("HTTPS read after {} bytes: {e}", raw.len()),
            }
        }
        parse_response(&raw).unwrap_or_else(|| panic!("no HTTP response head in {raw:?}"))
    }

    /// A complete ClientHello as this client sends it.
    fn client_hello(&self) -> Vec<u8> {
        let name = ServerName::try_from("localhost").expect("server name");
        let mut session = ClientConnection::new(Arc::clone(&self.client), name).expect("session");
        let mut hello = Vec::new();
        session.write_tls(&mut hello).expect("ClientHello");
        assert!(hello.len() > 100, "ClientHello of {} bytes", hello.len());
        hello
    }

    /// Waits until `wse_handshake_rejections_total{reason="tls"}` is `count`.
    fn expect_tls_rejections(&self, server: &Server, count: f64) {
        let series = r#"wse_handshake_rejections_total{reason="tls"}"#;
        assert_eq!(wait_https_metric(self, server, series, |v| v >= count), count);
    }

    /// The server still serves: a fresh `wss://` client gets `PONG` within 1 s.
    fn assert_served(&self, server: &Server) {
        assert!(server.is_running(), "the server process exited");
        let started = Instant::now();
        let mut ws = self.wss(server, "/wse");
        wss_send(&mut ws, r#"{"t":"ping","p":{"timestamp":1}}"#);
        assert_eq!(wss_next_json(&mut ws).str_at("t"), Some("PONG"));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "TLS + H0 + PONG took {took:?}");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls a series of `/metrics` (over HTTPS) until `accept` holds or [`IO_LIMIT`] passes.
fn wait_https_metric(
    pki: &Pki,
    server: &Server,
    series: &str,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + IO_LIMIT;
    loop {
        let value = metric_value(&pki.get(server.addr, "/metrics").body_text(), series);
        if accept(value) || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sockets the server process holds open (listeners and connections), from `/proc`.
fn socket_count(server: &Server) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid)).expect("read /proc/PID/fd");
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Reads until the server closes the socket (EOF or reset) within `within`: what came
/// before the close, or `None` if the socket was still open.
fn read_until_closed(socket: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(left)).expect("read timeout");
        match socket.read(&mut chunk) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

/// The next JSON text message, skipping heartbeats.
fn wss_next_json(ws: &mut Wss) -> Value {
    loop {
        match ws.read().expect("wss read") {
            tungstenite::Message::Text(text) => {
                let value = json::parse(text.as_bytes()).expect("JSON text");
                if !is_heartbeat(&value) {
                    return value;
                }
            }
            tungstenite::Message::Binary(data) => panic!("unexpected binary {data:?}"),
            _ => {}
        }
    }
}

fn wss_send(ws: &mut Wss, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("wss send");
}
