//! The byte stream under a connection: plain TCP, or TLS over TCP.
//!
//! Place: `socket → **transport** → conn (handshake, session) → protocol`. The connection
//! task reads and writes through [`Transport`] and never knows whether TLS is in between.
//! Plain TCP is the default and costs nothing extra; the TLS variant is boxed so that plain
//! connections do not carry its size.
//!
//! Contract of the TLS variant (see `tls.rs`): `poll_read` returns plaintext and drives the
//! TLS handshake; `poll_write` accepts plaintext; `poll_flush` pushes every pending encrypted
//! byte to the socket, and the session calls it after each batch of writes.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::tls::TlsStream;

/// A connection's byte stream.
pub(crate) enum Transport {
    /// `ws://`: bytes as they are on the socket.
    Plain(TcpStream),
    /// `wss://`: TLS terminated here.
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The transport for an accepted socket: TLS when `tls` is configured, else plain.
    /// Fails only when rustls refuses to start a session with that configuration.
    pub(crate) fn accept(
        stream: TcpStream,
        tls: Option<&Arc<rustls::ServerConfig>>,
    ) -> io::Result<Transport> {
        match tls {
            None => Ok(Transport::Plain(stream)),
            Some(config) => Ok(Transport::Tls(Box::new(TlsStream::new(config, stream)?))),
        }
    }

    /// Half-closes the write side once everything written so far has left.
    pub(crate) async fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(stream) => {
                let _ = stream.shutdown(Shutdown::Write).await;
            }
            Transport::Tls(stream) => stream.shutdown_write().await,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => stream.poll_read_plain(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => stream.poll_write_plain(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(_) => Poll::Ready(Ok(())),
            Transport::Tls(stream) => stream.poll_flush_tls(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_close(cx),
            Transport::Tls(stream) => stream.poll_flush_tls(cx),
        }
    }
}
