//! HTTP/2 connections to the servers of a group whose `protocol` is `h2c`
//! or `h2`: per worker and server, one connection shared by every request
//! (each a stream), and another one only when the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is reached. Each connection is driven
//! by a task of its own on the worker's event loop; one that failed or got
//! a GOAWAY takes no new stream and goes once its streams end, and one left
//! without streams closes after the group's `keepalive_timeout`.

use super::error::UpstreamError;
use bytes::Bytes;
use h2::client::{Builder, SendRequest};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The receive window of each stream: how far an upstream may send ahead of
/// a client that reads slowly (the worker holds at most this much of one
/// response).
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;
/// The receive window of a connection, shared by its streams: a few slow
/// clients' streams cannot stall the others.
const CONNECTION_WINDOW: u32 = 16 * STREAM_WINDOW;
/// Largest response header list accepted (as an HTTP/1.1 response head).
const MAX_HEADER_LIST: u32 = crate::http::response::MAX_RESPONSE_HEAD as u32;
/// Most request body bytes h2 buffers per stream before the send window
/// opens.
const SEND_BUFFER: usize = 64 * 1024;
/// Streams reset locally (say, for a client gone) whose late frames are
/// still accepted, and for how long.
const RESET_STREAMS: usize = 64;
const RESET_STREAM_TIME: Duration = Duration::from_secs(10);
/// Protocol errors of the server's streams tolerated before the connection
/// is closed.
const LOCAL_ERROR_RESETS: usize = 256;

/// One HTTP/2 connection to a server.
struct Conn {
    /// Opens streams on it (cloned for each).
    send: SendRequest<Bytes>,
    /// The connection ended, or the server said it takes no new stream.
    closed: Rc<Cell<bool>>,
    /// Streams in flight from this worker.
    streams: Cell<usize>,
    /// Whether a stream was opened on it before.
    used: Cell<bool>,
    /// When its last stream ended.
    idle_since: Cell<Instant>,
}

/// The HTTP/2 connections of one group, per server.
#[derive(Default)]
pub(crate) struct H2Pool {
    /// Each server's connections (same index as the group's servers).
    servers: Vec<RefCell<Vec<Rc<Conn>>>>,
}

/// A stream's hold on its connection: counted in flight until dropped.
pub(crate) struct H2Stream {
    conn: Rc<Conn>,
    /// A handle that opens the stream.
    pub(crate) send: SendRequest<Bytes>,
    /// Whether the connection carried a stream before this one.
    pub(crate) reused: bool,
}

impl H2Stream {
    /// The server said the connection takes no new stream (GOAWAY), or it
    /// failed: the next requests open another one.
    pub(crate) fn retire_connection(&self) {
        self.conn.closed.set(true);
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let left = self.conn.streams.get().saturating_sub(1);
        self.conn.streams.set(left);
        if left == 0 {
            self.conn.idle_since.set(Instant::now());
        }
    }
}

impl H2Pool {
    /// An empty pool for `servers` servers.
    pub(crate) fn new(servers: usize) -> Self {
        H2Pool {
            servers: (0..servers).map(|_| RefCell::default()).collect(),
        }
    }

    /// A stream on a live connection to server `index` with room for one
    /// more (the most loaded one, so that few connections are used), or
    /// `None`: a new connection is needed.
    pub(crate) fn stream(&self, index: usize) -> Option<H2Stream> {
        let conns = self.servers.get(index)?;
        let mut conns = conns.borrow_mut();
        conns.retain(|c| !c.closed.get());
        let conn = conns
            .iter()
            .filter(|c| c.streams.get() < c.send.current_max_send_streams())
            .max_by_key(|c| c.streams.get())?;
        Some(open(conn.clone()))
    }

    /// Starts HTTP/2 over `io`, a new connection to server `index`, with its
    /// driving task, within `limit`; returns a stream on it. `keep`: the
    /// connection is shared with later requests.
    pub(crate) async fn connect<T>(
        &self,
        index: usize,
        io: T,
        limit: Duration,
        keep: bool,
    ) -> Result<H2Stream, UpstreamError>
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let handshake = builder().handshake::<T, Bytes>(io);
        let (send, connection) = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(UpstreamError::http2(e)),
            Err(_) => return Err(UpstreamError::Http2Handshake),
        };
        let closed = Rc::new(Cell::new(false));
        let ended = closed.clone();
        tokio::task::spawn_local(async move {
            // Its errors reach the streams, which report them.
            let _ = connection.await;
            ended.set(true);
        });
        let conn = Rc::new(Conn {
            send,
            closed,
            streams: Cell::new(0),
            used: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
        });
        if let (true, Some(conns)) = (keep, self.servers.get(index)) {
            conns.borrow_mut().push(conn.clone());
        }
        Ok(open(conn))
    }

    /// Closes connections without streams since `idle_for` before `now`,
    /// and those that ended.
    pub(crate) fn sweep(&self, now: Instant, idle_for: Duration) {
        for conns in &self.servers {
            conns.borrow_mut().retain(|c| {
                !c.closed.get()
                    && (c.streams.get() > 0 || now.duration_since(c.idle_since.get()) < idle_for)
            });
        }
    }

    /// Lets go of every connection (a hot reload replaced the group): each
    /// closes once its streams end.
    pub(crate) fn clear(&self) {
        for conns in &self.servers {
            conns.borrow_mut().clear();
        }
    }

    /// How many connections to server `index` are open.
    #[cfg(test)]
    pub(crate) fn connections(&self, index: usize) -> usize {
        self.servers
            .get(index)
            .map_or(0, |c| c.borrow().iter().filter(|c| !c.closed.get()).count())
    }
}

/// A stream's hold on `conn`.
fn open(conn: Rc<Conn>) -> H2Stream {
    conn.streams.set(conn.streams.get() + 1);
    let reused = conn.used.replace(true);
    H2Stream {
        send: conn.send.clone(),
        conn,
        reused,
    }
}

/// The client side of an upstream HTTP/2 connection, with every limit h2
/// offers set.
fn builder() -> Builder {
    let mut b = Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(SEND_BUFFER)
        .max_concurrent_reset_streams(RESET_STREAMS)
        .reset_stream_duration(RESET_STREAM_TIME)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        // Servers do not open streams to prefork.
        .enable_push(false)
        .max_concurrent_streams(0);
    b
}
