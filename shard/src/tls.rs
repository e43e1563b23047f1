//! TLS termination for `wss://`: rustls on the aws-lc-rs provider, driven without threads.
//!
//! Place: `socket → **tls** → transport → conn (handshake, session) → protocol`. At start-up
//! [`server_config`] reads the PEM files once and builds the one [`ServerConfig`] every shard
//! shares. Per connection, [`TlsStream`] owns a rustls [`ServerConnection`] and pumps bytes
//! between it and the glommio socket through rustls's sans-I/O calls (`read_tls`,
//! `process_new_packets`, `reader`, `writer`, `write_tls`). The socket is reached through
//! [`SocketIo`], a `std::io` shim whose `WouldBlock` means "the socket returned `Pending` and
//! holds the waker", so every `Pending` this module returns came from the socket itself.
//!
//! What it leaves to others: the deadline and the gate of the TLS handshake are those of the
//! HTTP handshake (`conn/handshake.rs`), since the first plaintext read drives both; the
//! counting of failed TLS handshakes is the handshake's, through [`is_tls_failure`].

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::crypto::aws_lc_rs;
use rustls::server::ServerConnection;
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::Error;

/// Reads the certificate chain and key named by `files` and builds the server's TLS
/// configuration: aws-lc-rs, TLS 1.2 and 1.3 with rustls's safe defaults, ALPN `http/1.1`,
/// no client certificates.
///
/// Fails with [`Error::Tls`] naming the file at fault: missing or unreadable, no certificate,
/// no private key, or a key that does not belong to the first certificate.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
        pem::Error::NoItemsFound => file_error(&files.key, "no private key in the file".into()),
        other => file_error(&files.key, pem_reason(other)),
    })?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => file_error(
                &files.key,
                format!(
                    "the private key does not match the certificate in {}",
                    files.cert.display()
                ),
            ),
            other => file_error(
                &files.key,
                format!("cannot be used with the certificate in {}: {other}", files.cert.display()),
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether an I/O error from a [`TlsStream`] is a TLS protocol failure (a bad or foreign
/// record, an alert from the client, a failed handshake) rather than a socket error.
pub(crate) fn is_tls_failure(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// A TLS session over an accepted TCP socket.
///
/// Invariant: a method returns `Poll::Pending` only after the socket itself returned
/// `Pending` (so the socket holds the task's waker); rustls buffers never make it wait.
pub(crate) struct TlsStream {
    /// The encrypted side.
    socket: TcpStream,
    /// rustls's state: keys, the handshake, and its record buffers (a read buffer of 4 KiB
    /// while idle, send buffers only while records wait for the socket).
    session: ServerConnection,
}

impl TlsStream {
    /// Starts a server-side TLS session on `socket`; nothing is read or sent yet.
    pub(crate) fn new(config: &Arc<ServerConfig>, socket: TcpStream) -> io::Result<TlsStream> {
        let session = ServerConnection::new(Arc::clone(config)).map_err(tls_error)?;
        Ok(TlsStream { socket, session })
    }

    /// Reads plaintext into `buf`, driving the TLS handshake and sending whatever rustls has
    /// to say (handshake flights, alerts) on the way. `Ok(0)` when the client closed.
    pub(crate) fn poll_read_plain(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP ended without close_notify; WebSocket has its own closing handshake.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // The client may be waiting for our flight before it sends anything more; a full
            // socket is fine here, its waker is kept and the read below is tried as well.
            if let Poll::Ready(Err(e)) = self.poll_send_pending(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Takes plaintext from `buf` into rustls, which encrypts it into records. Records are
    /// pushed to the socket only when rustls's send buffer is full, and by
    /// [`TlsStream::poll_flush_tls`].
    pub(crate) fn poll_write_plain(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let taken = self.session.writer().write(buf)?;
            if taken > 0 {
                return Poll::Ready(Ok(taken));
            }
            // rustls's send buffer is at its limit: make room.
            ready!(self.poll_write_records(cx))?;
        }
    }

    /// Pushes every pending record to the socket. Before the handshake is complete, it also
    /// completes it, as plaintext written meanwhile cannot be sent before.
    pub(crate) fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.is_handshaking() {
            if self.session.wants_write() {
                ready!(self.poll_write_records(cx))?;
                continue;
            }
            if ready!(self.poll_receive(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        while self.session.wants_write() {
            ready!(self.poll_write_records(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends close_notify after everything written so far, then half-closes the socket.
    pub(crate) async fn shutdown_write(&mut self) {
        self.session.send_close_notify();
        if poll_fn(|cx| self.poll_flush_tls(cx)).await.is_ok() {
            let _ = self.socket.shutdown(Shutdown::Write).await;
        }
    }

    /// Reads what the socket has into rustls and processes it: the bytes read, 0 when the
    /// socket ended (rustls remembers that, and its reader reports it).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut io = SocketIo { socket: &mut self.socket, cx };
        let read = match self.session.read_tls(&mut io) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.session.process_new_packets() {
            // rustls queued an alert for the client; one try to send it, then give up.
            let _ = self.poll_send_pending(cx);
            return Poll::Ready(Err(tls_error(e)));
        }
        Poll::Ready(Ok(read))
    }

    /// Writes pending records until none are left (`Ready(Ok)`) or the socket is full
    /// (`Pending`).
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            ready!(self.poll_write_records(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// One write of pending records to the socket.
    fn poll_write_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = SocketIo { socket: &mut self.socket, cx };
        match self.session.write_tls(&mut io) {
            Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The glommio socket seen as a blocking-style `std::io` object by rustls: `Pending` from
/// the socket becomes `WouldBlock`, and the socket keeps the waker of `cx`.
struct SocketIo<'a, 'b> {
    socket: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SocketIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.socket).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SocketIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.socket).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every certificate in the PEM file at `path`, leaf first; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file".into()));
    }
    Ok(certs)
}

/// A PEM error as a reason, without the "I/O error" prefix for a missing file.
fn pem_reason(error: pem::Error) -> String {
    match error {
        pem::Error::Io(e) => e.to_string(),
        other => format!("not a usable PEM file: {other}"),
    }
}

fn file_error(path: &Path, reason: String) -> Error {
    Error::Tls { path: path.to_path_buf(), reason }
}

/// A rustls error as an I/O error that [`is_tls_failure`] recognises.
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory holding `cert.pem` and `key.pem` for `localhost`, and a second key
    /// `other.pem` that belongs to no certificate.
    fn pem_files(name: &str) -> (PathBuf, TlsFiles) {
        let dir = std::env::temp_dir().join(format!("wse-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).expect("write key");
        std::fs::write(dir.join("other.pem"), other.serialize_pem()).expect("write key");
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        (dir, files)
    }

    fn message(result: Result<Arc<ServerConfig>, Error>) -> String {
        result.expect_err("the configuration must be refused").to_string()
    }

    #[test]
    fn builds_a_config_offering_http11_from_matching_files() {
        let (dir, files) = pem_files("ok");
        let config = server_config(&files).expect("valid files");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn names_a_missing_key_file() {
        let (dir, mut files) = pem_files("missing");
        files.key = dir.join("absent.pem");
        let text = message(server_config(&files));
        assert!(text.contains("absent.pem"), "{text}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn refuses_a_certificate_file_without_certificates() {
        let (dir, mut files) = pem_files("nocert");
        files.cert = files.key.clone();
        let text = message(server_config(&files));
        assert!(text.contains("key.pem") && text.contains("no certificate"), "{text}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn refuses_a_key_file_without_a_key() {
        let (dir, mut files) = pem_files("nokey");
        files.key = files.cert.clone();
        let text = message(server_config(&files));
        assert!(text.contains("cert.pem") && text.contains("no private key"), "{text}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (dir, mut files) = pem_files("mismatch");
        files.key = dir.join("other.pem");
        let text = message(server_config(&files));
        assert!(text.contains("other.pem") && text.contains("does not match"), "{text}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn recognises_only_rustls_errors_as_tls_failures() {
        assert!(is_tls_failure(&tls_error(rustls::Error::DecryptError)));
        assert!(!is_tls_failure(&io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(!is_tls_failure(&io::Error::other("socket")));
    }

    #[test]
    fn a_tls_stream_stays_within_its_memory_budget() {
        let size = std::mem::size_of::<TlsStream>();
        println!("TlsStream {size} bytes, ServerConnection {}", size_of::<ServerConnection>());
        assert!(size <= TLS_STREAM_BUDGET, "TlsStream is {size} bytes");
    }

    /// What a boxed TLS session may weigh before rustls's heap buffers.
    const TLS_STREAM_BUDGET: usize = 1536;
}
