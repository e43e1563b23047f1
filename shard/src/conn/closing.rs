//! Ending a connection: the RFC 6455 closing handshake, bounded in time.
//!
//! Place: the last step of a session. When the client closes, the server answers with the
//! same code and drops TCP at once (the server closes TCP first, RFC 6455 §7.1.1). When the
//! server closes (protocol error, idle timeout, shutdown, slow consumer), it sends its Close,
//! then waits at most `close_timeout` for the client's Close, or for end of stream when the
//! frame stream is already broken, and only then drops TCP: closing a socket with unread
//! input makes the kernel send RST, which can destroy the Close frame before the client
//! reads it.

use std::future::poll_fn;

use bytes::Bytes;
use glommio::timer::timeout;
use wse_protocol::close::CloseFrame;
use wse_protocol::reader::Event;
use wse_protocol::writer;

use super::Session;
use crate::metrics::{CloseReason, DropReason};

impl Session {
    /// The client sent Close: answer it and end.
    pub(super) async fn close_by_client(&mut self, frame: Option<CloseFrame>) -> CloseReason {
        self.conn.request_close(frame.as_ref().map_or(NO_STATUS, |f| f.code));
        if let Some(reason) = frame.as_ref().map(|f| &f.reason).filter(|r| !r.is_empty()) {
            *self.conn.close_reason.borrow_mut() = Some(reason.as_str().into());
        }
        self.send_close(frame.map(|f| f.code)).await;
        CloseReason::ClientClose
    }

    /// The server ends the connection with `code`. `frames_ok` says whether the client's
    /// input can still be read as frames (false after a protocol error).
    pub(super) async fn close_by_server(&mut self, code: u16, frames_ok: bool) -> CloseReason {
        self.conn.request_close(code);
        let limit = self.shard.shared.config.close_timeout;
        let _ = timeout(limit, async {
            self.send_close(Some(code)).await;
            if frames_ok {
                self.await_client_close().await;
            } else {
                self.stream.shutdown_write().await;
                self.discard_until_eof().await;
            }
            Ok(())
        })
        .await;
        if self.conn.close_reason.borrow().is_some() {
            // Only the application gives a reason for a close the server starts.
            return CloseReason::Application;
        }
        CloseReason::for_code(code)
    }

    /// Writes what is already queued (a slow consumer's queue is dropped instead), then the
    /// Close frame, all within `close_timeout`. Nothing new is queued meanwhile: the close
    /// request makes the shard skip this connection.
    async fn send_close(&mut self, code: Option<u16>) {
        if code == Some(super::SLOW_CONSUMER) {
            let dropped = self.conn.out.borrow_mut().clear_data();
            self.shard.metrics().dropped(DropReason::Closing, dropped as u64);
        }
        let reason = self.conn.close_reason.borrow().clone().filter(|_| code.is_some());
        let mut frame = Vec::with_capacity(4);
        writer::encode_close(code, reason.as_deref().unwrap_or(""), &mut frame);
        let limit = self.shard.shared.config.close_timeout;
        let _ = timeout(limit, async {
            poll_fn(|cx| self.poll_flush(cx)).await?;
            let _ = self.conn.out.borrow_mut().push_control(Bytes::from(frame), usize::MAX);
            poll_fn(|cx| self.poll_flush(cx)).await?;
            Ok(())
        })
        .await;
    }

    /// Reads frames until the client's Close, end of stream, or a broken frame.
    async fn await_client_close(&mut self) {
        loop {
            let read = poll_fn(|cx| self.poll_read_shared(cx)).await;
            let Ok(n) = read else { return };
            if n == 0 {
                return;
            }
            let (events, result) = self.parse_shared(n);
            if result.is_err() || events.iter().any(|e| matches!(e, Event::Close(_))) {
                return;
            }
        }
    }

    /// Reads and ignores input until the client closes TCP.
    async fn discard_until_eof(&mut self) {
        loop {
            match poll_fn(|cx| self.poll_read_shared(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// The code reported when the client's Close carried none (RFC 6455 §7.1.5).
pub(super) const NO_STATUS: u16 = 1005;
