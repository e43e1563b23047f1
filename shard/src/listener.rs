//! Building each shard's listening socket.
//!
//! Place: called by the server before any shard starts, so that a port that cannot be bound
//! fails `start` at once. Every shard gets its own socket on the same address
//! (`SO_REUSEPORT`: the kernel spreads new connections over the shards), with
//! `SO_REUSEADDR` and the configured backlog, which glommio's own `bind` does not offer.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::Error;

/// Binds `count` listening sockets on `addr`. Port 0 is resolved by the first socket and
/// reused by the others, so all shards share one port.
pub(crate) fn bind_all(addr: SocketAddr, count: usize, backlog: i32) -> Result<Vec<Socket>, Error> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = bind_one(addr, backlog).map_err(|e| Error::Bind { addr, source: e })?;
        if addr.port() == 0 {
            addr = local_addr(&socket)?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The address a bound socket listens on.
pub(crate) fn local_addr(socket: &Socket) -> Result<SocketAddr, Error> {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| Error::Config("listener has no inet address".into()))
}

/// Hands a bound socket to the current glommio executor.
pub(crate) fn into_glommio(socket: Socket) -> glommio::net::TcpListener {
    let fd = socket.into_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: `fd` was just released by `into_raw_fd`, so it is an open, bound, listening TCP
    // socket that nothing else owns or will close; the glommio listener takes sole ownership
    // and closes it on drop. This runs on an executor thread, as `from_raw_fd` requires.
    unsafe {
        glommio::net::TcpListener::from_raw_fd(fd)
    }
}

fn bind_one(addr: SocketAddr, backlog: i32) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    Ok(socket)
}
