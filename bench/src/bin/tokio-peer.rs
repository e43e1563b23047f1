//! `tokio-peer`: the "ordinary Rust" baseline of the side-by-side benchmarks.
//!
//! A WebSocket server written the way most Rust services would write one: a tokio runtime
//! with one worker per core it may use, `tokio-tungstenite` with its default configuration,
//! one task reading each connection and one writing it through a bounded channel, and the
//! topics in a `Mutex<HashMap>`. It speaks only the subset of the WSE protocol that
//! `loadbench` needs:
//!
//! - the upgrade must carry `Authorization: Bearer <HS256 JWT>` signed with `--secret`
//!   (else HTTP 401), and the connection then gets `server_ready`;
//! - `subscription_update` subscribes and is answered; `publish` stamps the topic's next
//!   offset and sends `{c, t, p, tp, e, o}` to every subscriber (encoded once); `ping` is
//!   answered with `PONG`;
//! - any other message, JSON text or msgpack binary, counts as handed to the application
//!   (decoded, its `p.n` checked to follow the connection's previous one), and
//!   `bench_stats` answers the count.
//!
//! A subscriber whose channel is full loses the publication (counted by the load client
//! through the offsets). It prints `tokio-peer listening on ADDR` once it listens, and binds
//! with `SO_REUSEPORT`, so several processes can share one port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use jwt_simple::prelude::{HS256Key, MACLike, NoCustomClaims};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

/// The ordinary tokio + tokio-tungstenite baseline server.
#[derive(Debug, Parser)]
#[command(name = "tokio-peer", version, about, long_about = None)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HS256 secret of the tokens.
    #[arg(long)]
    secret: String,
    /// Connections admitted at once; further ones are closed after accept.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
}

/// What every connection shares.
struct State {
    key: HS256Key,
    max_connections: usize,
    connections: AtomicUsize,
    next_conn: AtomicU64,
    topics: Mutex<HashMap<String, Topic>>,
    /// Messages handed to the application, and those whose `p.n` did not follow.
    messages: AtomicU64,
    disorder: AtomicU64,
    /// Nanoseconds since `started` of the first and the latest such message (0: none).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    started: Instant,
}

/// One topic: its next offset and its subscribers' outbound channels.
#[derive(Default)]
struct Topic {
    next_offset: u64,
    subscribers: Vec<(u64, mpsc::Sender<Message>)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio-peer: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-peer: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    println!("tokio-peer listening on {}", listener.local_addr()?);
    let state = Arc::new(State {
        key: HS256Key::from_bytes(args.secret.as_bytes()),
        max_connections: args.max_connections,
        connections: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
        topics: Mutex::new(HashMap::new()),
        messages: AtomicU64::new(0),
        disorder: AtomicU64::new(0),
        first_ns: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        started: Instant::now(),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors or a reset before accept: keep serving the others.
            Err(_) => continue,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if state.connections.fetch_add(1, Ordering::Relaxed) < state.max_connections {
                connection(&state, stream).await;
            }
            state.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One connection from the upgrade to its end.
async fn connection(state: &Arc<State>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut user = None;
    // The callback's type is tungstenite's: its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| match authorize(&state.key, request) {
        Some(sub) => {
            user = Some(sub);
            Ok(response)
        }
        None => {
            let mut refused = ErrorResponse::new(Some("bad or missing token".to_owned()));
            *refused.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refused)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { return };
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);

    // The writer: everything waiting goes out before one flush.
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let ready = server_ready(id, user.as_deref().unwrap_or(""));
    let _ = tx.send(Message::text(ready)).await;

    let mut next_n = 0u64;
    let mut subscribed = Vec::new();
    while let Some(Ok(message)) = source.next().await {
        match &message {
            Message::Text(text) => {
                let Ok(value) = sonic_rs::from_str::<sonic_rs::Value>(text.as_str()) else {
                    continue;
                };
                handle(state, id, &value, &tx, &mut next_n, &mut subscribed).await;
            }
            // The load sends msgpack only as application messages.
            Message::Binary(bytes) => count(state, msgpack_n(bytes), &mut next_n),
            Message::Close(_) => break,
            _ => {}
        }
    }
    unsubscribe(state, id, &subscribed);
    drop(tx);
    let _ = writer.await;
}

/// Acts on one decoded message.
async fn handle(
    state: &State,
    id: u64,
    value: &sonic_rs::Value,
    tx: &mpsc::Sender<Message>,
    next_n: &mut u64,
    subscribed: &mut Vec<String>,
) {
    let kind = value.get("t").and_then(|t| t.as_str()).unwrap_or("");
    let payload = value.get("p");
    match kind {
        "ping" => {
            let client = payload.and_then(|p| p.get("timestamp")).and_then(|t| t.as_i64());
            let now = unix_ms();
            let client = client.unwrap_or(0);
            let text = format!(
                concat!(
                    r#"{{"c":"WSE","t":"PONG","p":{{"client_timestamp":{client},"#,
                    r#""server_timestamp":{now}}},"v":1}}"#
                ),
                client = client,
                now = now
            );
            let _ = tx.send(Message::text(text)).await;
        }
        "subscription_update" => {
            let topics = payload.and_then(|p| p.get("topics")).and_then(|t| t.as_array());
            let names: Vec<String> = topics
                .map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            subscribe(state, id, &names, tx);
            subscribed.extend(names.iter().cloned());
            let list = sonic_rs::to_string(&names).unwrap_or_else(|_| "[]".to_owned());
            let text = format!(
                concat!(
                    r#"{{"c":"WSE","t":"subscription_update","#,
                    r#""p":{{"success_topics":{list},"failed_topics":[]}},"v":1}}"#
                ),
                list = list
            );
            let _ = tx.send(Message::text(text)).await;
        }
        "publish" => {
            let topic = payload.and_then(|p| p.get("topic")).and_then(|t| t.as_str());
            let data = payload.and_then(|p| p.get("data"));
            if let (Some(topic), Some(data)) = (topic, data) {
                publish(state, topic, &sonic_rs::to_string(data).unwrap_or_default());
            }
        }
        "bench_stats" => {
            let first = state.first_ns.load(Ordering::Relaxed);
            let last = state.last_ns.load(Ordering::Relaxed);
            let text = format!(
                r#"{{"c":"WSE","t":"bench_stats","p":{{"msgs":{},"disorder":{},"span_ns":{}}}}}"#,
                state.messages.load(Ordering::Relaxed),
                state.disorder.load(Ordering::Relaxed),
                last.saturating_sub(first)
            );
            let _ = tx.send(Message::text(text)).await;
        }
        _ => count(state, payload.and_then(|p| p.get("n")).and_then(|n| n.as_u64()), next_n),
    }
}

/// Counts one message handed to the application, checking that its `n` follows.
fn count(state: &State, n: Option<u64>, next_n: &mut u64) {
    if n != Some(*next_n) {
        state.disorder.fetch_add(1, Ordering::Relaxed);
    }
    *next_n = n.unwrap_or(*next_n) + 1;
    let now = u64::try_from(state.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
    let _ = state.first_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    state.last_ns.store(now, Ordering::Relaxed);
    state.messages.fetch_add(1, Ordering::Relaxed);
}

/// The token's `sub` when the request carries a valid `Authorization: Bearer` token.
fn authorize(key: &HS256Key, request: &Request) -> Option<String> {
    let header = request.headers().get("authorization")?.to_str().ok()?;
    let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
    let claims = key.verify_token::<NoCustomClaims>(token.trim(), None).ok()?;
    Some(claims.subject.unwrap_or_default())
}

fn subscribe(state: &State, id: u64, topics: &[String], tx: &mpsc::Sender<Message>) {
    let mut all = state.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for topic in topics {
        all.entry(topic.clone()).or_default().subscribers.push((id, tx.clone()));
    }
}

fn unsubscribe(state: &State, id: u64, topics: &[String]) {
    let mut all = state.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for topic in topics {
        if let Some(entry) = all.get_mut(topic) {
            entry.subscribers.retain(|(sub, _)| *sub != id);
        }
    }
}

/// Stamps the next offset and queues the frame (encoded once) to every subscriber.
fn publish(state: &State, topic: &str, data: &str) {
    let mut all = state.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = all.entry(topic.to_owned()).or_default();
    let offset = entry.next_offset;
    entry.next_offset += 1;
    let text = format!(
        r#"{{"c":"U","t":"{topic}","p":{data},"v":1,"tp":"{topic}","e":"{EPOCH}","o":{offset}}}"#
    );
    let message = Message::text(text);
    for (_, tx) in &entry.subscribers {
        // A full channel loses this publication for that subscriber.
        let _ = tx.try_send(message.clone());
    }
}

/// `p.n` of a msgpack message (bare, or after `M:`), decoded whole as the application
/// would see it.
fn msgpack_n(bytes: &[u8]) -> Option<u64> {
    let mut body = bytes.strip_prefix(b"M:").unwrap_or(bytes);
    let value = rmpv::decode::read_value(&mut body).ok()?;
    let field = |value: &rmpv::Value, key: &str| {
        let map = value.as_map()?;
        map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone())
    };
    field(&field(&value, "p")?, "n")?.as_u64()
}

fn server_ready(id: u64, user: &str) -> String {
    format!(
        concat!(
            r#"{{"c":"WSE","t":"server_ready","p":{{"message":"Connection established","#,
            r#""details":{{"connection_id":"{id}","user_id":"{user}","server_time":{time},"#,
            r#""version":1,"features":{{}}}}}},"v":1,"seq":1}}"#
        ),
        id = id,
        user = user,
        time = unix_ms()
    )
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// Listen backlog.
const BACKLOG: u32 = 4096;
/// Frames waiting per connection before publications are lost for it.
const QUEUE: usize = 4096;
/// The topic epoch this server announces (it never restarts a topic).
const EPOCH: &str = "00000001";
