//! A minimal blocking WebSocket client over `std::net::TcpStream`, for load generators.
//!
//! Place: the client end of a benchmark, outside the engine: `bench → socket → shard`. It
//! opens the TCP connection, sends the RFC 6455 upgrade with a fresh random key, checks the
//! `101` and its `Sec-WebSocket-Accept`, and reads server frames. It owns nothing but the
//! socket: an idle [`Client`] is one file descriptor and a few words of memory, so a single
//! process can hold many thousands of them. That is why it does not use tungstenite's
//! client, whose default read buffer costs 128 KiB per connection.
//!
//! The handshake is split in two ([`Handshake::start`], [`Handshake::finish`]) so that a
//! caller can put several upgrades in flight before waiting for the answers.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::IpBindAddressNoPort;
use socket2::{Domain, Protocol, Socket, Type};

/// Why a connection could not be opened or a frame not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, writing or reading failed, or timed out (`step` names which). Retry
    /// later or report the connection as failed.
    #[error("{step}: {source}")]
    Io {
        /// The step that failed, for the report.
        step: &'static str,
        /// What the socket said.
        source: io::Error,
    },
    /// The server closed the socket before the step finished; often a refused handshake
    /// (for example the server's per-source handshake cap). Report it as failed.
    #[error("server closed the connection during {0}")]
    Closed(&'static str),
    /// The server answered the upgrade with another status (503 when full, 4xx when the
    /// request was refused). The connection is unusable.
    #[error("upgrade answered with HTTP {0}")]
    Status(u16),
    /// The `101` response was malformed, too long, or lacked the right
    /// `Sec-WebSocket-Accept`. The server is not speaking RFC 6455 correctly.
    #[error("bad upgrade response: {0}")]
    Response(&'static str),
    /// A server frame broke RFC 6455 framing (masked, reserved bits, oversized). Fail the
    /// connection.
    #[error("bad frame from server: {0}")]
    Frame(&'static str),
}

/// One frame as the server sent it (server frames are never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// The 4-bit opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong, 0 continuation).
    pub opcode: u8,
    /// Application data.
    pub payload: Vec<u8>,
}

/// Where and how a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The server.
    pub addr: SocketAddr,
    /// Request target: the WebSocket path and its query.
    pub path: String,
    /// A JWT sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Local addresses the connections are bound to in turn (empty: the OS picks). Each
    /// source address has its own 64K ports towards one server address; the port is chosen
    /// at connect time (`IP_BIND_ADDRESS_NO_PORT`), so binding does not use one up early.
    pub sources: Vec<IpAddr>,
}

/// An upgrade request on the wire whose answer has not been read yet.
#[derive(Debug)]
pub struct Handshake {
    stream: TcpStream,
    /// The `Sec-WebSocket-Accept` value the server must send back for our key.
    accept: String,
}

/// An open WebSocket connection.
///
/// Invariant: `pending` holds bytes already read from the socket that begin the next frame;
/// it is empty (no heap memory) for an idle connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// Random `Sec-WebSocket-Key` values: base64 of 16 bytes from `/dev/urandom`.
#[derive(Debug)]
pub struct Keys {
    urandom: File,
}

impl Dial {
    /// Connects to `addr` for `path`, with no token and the source address the OS picks.
    pub fn new(addr: SocketAddr, path: &str) -> Dial {
        Dial { addr, path: path.to_owned(), token: None, sources: Vec::new() }
    }

    /// The source address of connection number `index`: the sources taken in turn.
    fn source(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }
}

impl Handshake {
    /// Connects to `addr` and sends the upgrade request for `path` with a new key from
    /// `keys`. Every later read or write on the socket gives up after `timeout`.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        keys: &mut Keys,
        timeout: Duration,
    ) -> Result<Handshake, Error> {
        Handshake::dial(&Dial::new(addr, path), 0, keys, timeout)
    }

    /// Like [`Handshake::start`] for connection number `index` of `dial`: from its source
    /// address for that index, with its token as `Authorization: Bearer`.
    pub fn dial(
        dial: &Dial,
        index: usize,
        keys: &mut Keys,
        timeout: Duration,
    ) -> Result<Handshake, Error> {
        let key = keys.fresh().map_err(|source| Error::Io { step: "key", source })?;
        let io = |step| move |source| Error::Io { step, source };
        let mut stream = connect(dial.addr, dial.source(index), timeout).map_err(io("connect"))?;
        stream.set_read_timeout(Some(timeout)).map_err(io("connect"))?;
        stream.set_write_timeout(Some(timeout)).map_err(io("connect"))?;
        stream.set_nodelay(true).map_err(io("connect"))?;
        let (addr, path) = (dial.addr, &dial.path);
        let authorization = match &dial.token {
            Some(token) => format!("Authorization: Bearer {token}\r\n"),
            None => String::new(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n{authorization}\r\n"
        );
        stream.write_all(request.as_bytes()).map_err(io("upgrade request"))?;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        Ok(Handshake { stream, accept })
    }

    /// Reads and checks the server's answer. Bytes after the response head stay buffered
    /// for [`Client::read_frame`].
    pub fn finish(mut self) -> Result<Client, Error> {
        let mut head = Vec::with_capacity(HEAD_CHUNK);
        let end = loop {
            if let Some(end) = find_head_end(&head) {
                break end;
            }
            if head.len() >= MAX_HEAD {
                return Err(Error::Response("response head over 16 KiB"));
            }
            read_more(&mut self.stream, &mut head, "upgrade response")?;
        };
        check_response(&head[..end], &self.accept)?;
        let pending = head.split_off(end);
        Ok(Client { stream: self.stream, pending })
    }
}

impl Client {
    /// Connects and upgrades in one step; see [`Handshake`] to pipeline several.
    pub fn connect(
        addr: SocketAddr,
        path: &str,
        keys: &mut Keys,
        timeout: Duration,
    ) -> Result<Client, Error> {
        Handshake::start(addr, path, keys, timeout)?.finish()
    }

    /// Reads the next frame, blocking up to the socket's timeout for each read.
    pub fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.pending)? {
                self.pending.drain(..used);
                self.pending.shrink_to_fit();
                return Ok(frame);
            }
            read_more(&mut self.stream, &mut self.pending, "frame")?;
        }
    }

    /// The socket, for callers that write their own frames or tune options.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket and the bytes already read from it that begin the next frame, for
    /// callers that read frames themselves (non-blocking readers over many sockets).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.pending)
    }
}

/// A TCP connection to `addr`, from `source` when given.
fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect_timeout(&addr, timeout) };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    setsockopt(&socket, IpBindAddressNoPort, &true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// A masked client text frame carrying `payload`, masked with `key` (RFC 6455 §5.3).
pub fn masked_text(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    push_masked(&mut out, TEXT, payload, key);
    out
}

/// Appends one final masked client frame of `opcode` (1 text, 2 binary) to `out`.
pub fn push_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], key: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

impl Keys {
    /// Opens the system's random source.
    pub fn new() -> io::Result<Keys> {
        Ok(Keys { urandom: File::open("/dev/urandom")? })
    }

    /// A fresh `Sec-WebSocket-Key`.
    pub fn fresh(&mut self) -> io::Result<String> {
        let mut raw = [0u8; 16];
        self.urandom.read_exact(&mut raw)?;
        Ok(STANDARD.encode(raw))
    }
}

/// Parses one unmasked frame at the start of `buf`: the frame and the bytes it used, or
/// `None` when `buf` does not hold all of it yet.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
    let [b0, b1, rest @ ..] = buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(Error::Frame("reserved bits set"));
    }
    if b1 & 0x80 != 0 {
        return Err(Error::Frame("masked frame from the server"));
    }
    let (len, header) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => (u64::from_be_bytes(bytes.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let len = usize::try_from(len).ok().filter(|&n| n <= MAX_PAYLOAD);
    let len = len.ok_or(Error::Frame("payload over 16 MiB"))?;
    let Some(payload) = buf.get(header..header + len) else { return Ok(None) };
    let frame = Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload: payload.to_vec() };
    Ok(Some((frame, header + len)))
}

/// Checks status, `Upgrade`, `Connection` and `Sec-WebSocket-Accept` of a response head.
fn check_response(head: &[u8], accept: &str) -> Result<(), Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Error::Response("unparsable response head")),
    }
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(Error::Status(status));
    }
    let header = |name: &str| {
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| {
            v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Error::Response("missing Upgrade: websocket or Connection: Upgrade"));
    }
    if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(accept.as_bytes()) {
        return Err(Error::Response("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// Index just past the blank line that ends an HTTP head, if `buf` holds one.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// Appends one read's worth of bytes to `buf`; end of stream is [`Error::Closed`].
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, step: &'static str) -> Result<(), Error> {
    let mut chunk = [0u8; HEAD_CHUNK];
    let n = stream.read(&mut chunk).map_err(|source| Error::Io { step, source })?;
    if n == 0 {
        return Err(Error::Closed(step));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Text frame opcode.
pub const TEXT: u8 = 1;
/// Binary frame opcode.
pub const BINARY: u8 = 2;
/// Close frame opcode.
pub const CLOSE: u8 = 8;
/// Bytes read from the socket at a time.
const HEAD_CHUNK: usize = 1024;
/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest frame payload accepted from the server.
const MAX_PAYLOAD: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_extended_lengths() {
        let short = [0x81, 2, b'h', b'i', 0xff];
        let (frame, used) = parse_frame(&short).unwrap().unwrap();
        assert_eq!(
            (frame.fin, frame.opcode, frame.payload.as_slice(), used),
            (true, 1, &b"hi"[..], 4)
        );

        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        let (frame, used) = parse_frame(&long).unwrap().unwrap();
        assert_eq!((frame.payload.len(), used), (256, 260));
        assert!(parse_frame(&long[..100]).unwrap().is_none());
    }

    #[test]
    fn rejects_masked_server_frame() {
        assert!(matches!(parse_frame(&[0x81, 0x81, 0, 0, 0, 0, b'x']), Err(Error::Frame(_))));
    }

    #[test]
    fn checks_the_accept_key() {
        let accept = tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert!(check_response(head.as_bytes(), &accept).is_ok());
        assert!(matches!(check_response(head.as_bytes(), "nope"), Err(Error::Response(_))));
        let full = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(check_response(full, &accept), Err(Error::Status(503))));
    }
}
