//! TLS termination for `wss://`.
//!
//! TODO(#3): rustls on the aws-lc-rs provider through its sans-I/O connection API.

use std::io;
use std::task::{Context, Poll};

/// A TLS session over a TCP stream (not built yet: no configuration creates one).
pub(crate) struct TlsStream {
    _private: (),
}

impl TlsStream {
    pub(crate) fn poll_read_plain(
        &mut self,
        _cx: &mut Context<'_>,
        _buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    pub(crate) fn poll_write_plain(
        &mut self,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    pub(crate) fn poll_flush_tls(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    pub(crate) async fn shutdown_write(&mut self) {}
}
