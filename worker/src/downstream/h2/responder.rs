//! The sending half of one HTTP/2 stream: its response handle and, once
//! the head went, its body's `SendStream`, shared by the stream's sink and
//! the watch for the client's reset; and the wait for the client's window.

use crate::proxy::error::ClientError;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::SendStream;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::timeout;

/// The sending half of a stream, shared by its sink and the watch for the
/// client's reset (each borrows it only between two awaits).
pub(super) struct Responder {
    pub(super) respond: SendResponse<Bytes>,
    /// Where the body goes, once the head was sent.
    pub(super) send: Option<SendStream<Bytes>>,
}

impl Responder {
    /// Ready once the client reset the stream (or the connection is gone).
    pub(super) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let polled = match self.send.as_mut() {
            Some(send) => send.poll_reset(cx),
            None => self.respond.poll_reset(cx),
        };
        polled.map(|_| ())
    }
}

/// A failure of `h2` on this stream, as the core classifies the client's.
pub(super) fn client_error(e: h2::Error) -> ClientError {
    if e.is_io() {
        return ClientError::Write(e.into_io().unwrap_or_else(|| io::Error::other("h2")));
    }
    ClientError::Read(io::Error::other(e))
}

impl Responder {
    pub(super) fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), ClientError> {
        match self.send.as_mut() {
            Some(send) => send.send_data(data, end).map_err(client_error),
            None => Err(ClientError::Closed),
        }
    }

    /// Asks for `wanted` bytes of the client's window; what is there now.
    fn reserve(&mut self, wanted: usize) -> Option<usize> {
        let send = self.send.as_mut()?;
        send.reserve_capacity(wanted);
        Some(send.capacity())
    }

    fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<usize, h2::Error>>> {
        match self.send.as_mut() {
            Some(send) => send.poll_capacity(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Waits, at most `limit`, for the client's window to let out some of
/// `wanted` bytes on the stream `io` sends; how many it may send now.
pub(super) async fn window(
    io: &RefCell<Responder>,
    wanted: usize,
    limit: Duration,
) -> Result<usize, ClientError> {
    loop {
        match io.borrow_mut().reserve(wanted) {
            None => return Err(ClientError::Closed),
            Some(0) => {}
            Some(now) => return Ok(now.min(wanted)),
        }
        match timeout(limit, poll_fn(|cx| io.borrow_mut().poll_capacity(cx))).await {
            Err(_) => return Err(ClientError::WriteTimeout),
            Ok(None) => return Err(ClientError::Closed),
            Ok(Some(Err(e))) => return Err(client_error(e)),
            Ok(Some(Ok(_))) => {}
        }
    }
}
