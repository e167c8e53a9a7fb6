//! The HTTP/1.1 side of a connection as the proxy core's [`Downstream`]:
//! answers of prefork's own, the tunnel after a 101, and the lingering
//! close.

use super::body::Body;
use super::sink::Sink;
use super::{ack_now, client_result, connection_field, set_nodelay};
use crate::downstream::{local_addr, Carried};
use crate::http::body::BodyCursor;
use crate::http::heads::{self, ConnectionField};
use crate::http::{Framing, Version};
use crate::io::client_stream::ClientStream;
use crate::io::timed::within;
use crate::io::tunnel;
use crate::io::write::{write_last_within, write_two_within};
use crate::observe::access_log::Served;
use crate::proxy::downstream::Timeouts;
use crate::proxy::error::PumpError;
use crate::proxy::{Done, Downstream, Request};
use crate::state::Snapshot;
use crate::upstream::error::UpstreamError;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// Lingering close (nginx's `lingering_time`): the longest a closing
/// connection keeps reading and discarding what the client still sends, so
/// the client reads the answer instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest pause between two reads while lingering (nginx's
/// `lingering_timeout`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// The HTTP/1.1 side of one client connection.
pub(super) struct Session {
    /// The client's stream (plain or TLS).
    pub(super) stream: ClientStream,
    /// Bytes read from the client and not consumed yet; a pipelined request
    /// may already wait here.
    pub(super) buf: BytesMut,
    /// The head of the response being written to the client.
    pub(super) response_head: Vec<u8>,
    /// The current request's version.
    pub(super) version: Version,
    /// Whether TCP_NODELAY is set yet (see [`set_nodelay`]).
    pub(super) nodelay: bool,
    /// Whether the current request's body may still be on its way: a close
    /// then lingers (RFC 9112 §9.6; nginx sets `lingering_close` so).
    pub(super) body_unread: bool,
    /// The address the client connected to, if a PROXY header carried it.
    pub(super) carried: Carried,
}

impl Session {
    /// The session of a connection just accepted on `stream`.
    pub(super) fn new(stream: ClientStream, response_head: Vec<u8>, carried: Carried) -> Self {
        Session {
            stream,
            buf: BytesMut::new(),
            response_head,
            version: Version::Http11,
            nodelay: false,
            body_unread: false,
            carried,
        }
    }

    /// Answers an error page to a client of `version`; the connection
    /// closes after it.
    pub(super) async fn answer_error(
        &mut self,
        snapshot: &Snapshot,
        version: Version,
        status: u16,
    ) -> Done {
        let body = heads::error_body(status);
        self.answer_with(
            snapshot,
            version,
            false,
            status,
            "text/html",
            None,
            body.as_bytes(),
            true,
        )
        .await
    }

    /// Answers a response of prefork's own to a client of `version`.
    #[allow(clippy::too_many_arguments)]
    async fn answer_with(
        &mut self,
        snapshot: &Snapshot,
        version: Version,
        is_head: bool,
        status: u16,
        content_type: &str,
        location: Option<&str>,
        body: &[u8],
        close: bool,
    ) -> Done {
        let close = close || snapshot.stopping();
        heads::own_response_head(
            &mut self.response_head,
            status,
            content_type,
            location,
            body.len(),
            connection_field(version, close),
        );
        let body = if is_head { &[][..] } else { body };
        if !close {
            set_nodelay(&self.stream, &mut self.nodelay);
        }
        let send_timeout = snapshot.config.http.send_timeout;
        let (head, mut stream) = (&self.response_head, &self.stream);
        let written = if close {
            // The FIN leaves with the answer (see `write_last_within`).
            write_last_within(&mut stream, head, body, send_timeout).await
        } else {
            write_two_within(&mut stream, head, body, send_timeout).await
        };
        let ok = matches!(written, Ok(Ok(())));
        Done {
            served: Served {
                status,
                bytes_sent: if ok {
                    (self.response_head.len() + body.len()) as u64
                } else {
                    0
                },
                upstream: None,
                upstream_time: None,
            },
            close: close || !ok,
        }
    }

    /// Closes the connection after answering `status`; lingers first when
    /// the client may still be sending, so the answer is not lost to a reset
    /// (RFC 9112 §9.6).
    pub(super) async fn close(&mut self, snapshot: &Snapshot, status: u16) {
        let pending = !self.buf.is_empty()
            || self.body_unread
            || matches!(status, 400 | 408 | 413 | 414 | 431 | 501 | 505)
            || self.stream.has_unread();
        if !pending {
            return;
        }
        // Sending FIN first tells the client no more answers are coming.
        if self.stream.shut_write().is_err() {
            return;
        }
        let until = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        let mut sink = vec![0u8; 64 * 1024];
        let mut client = &self.stream;
        while discarded < LINGER_BYTES {
            let limit = until.min(Instant::now() + LINGER_TIMEOUT);
            let read = tokio::select! {
                read = timeout_at(limit, client.read(&mut sink)) => read,
                // A stopping worker does not wait for slow clients.
                () = snapshot.on_change(|| snapshot.stopping()) => return,
            };
            match read {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }
}

impl Downstream for Session {
    type Body<'a> = Body<'a>;
    type Sink<'a> = Sink<'a>;

    fn split<'a>(&'a mut self, snapshot: &'a Snapshot, req: &Request<'_>) -> (Body<'a>, Sink<'a>) {
        let Session {
            stream,
            buf,
            response_head,
            version,
            nodelay,
            ..
        } = self;
        // The client's body is read while its response is written: two
        // shared handles on one socket, as tokio's `split` makes.
        let pipes = snapshot.pipes();
        let body = Body::new(
            stream,
            buf,
            BodyCursor::request(req.body, req.max_body),
            snapshot.stats(),
            pipes,
        );
        let sink = Sink::new(stream, response_head, *version, nodelay, pipes);
        (body, sink)
    }

    fn destination(&self) -> std::net::SocketAddr {
        match &self.carried {
            Some(carried) => **carried,
            None => local_addr(self.stream.sock_ref()),
        }
    }

    fn forwarding(&mut self, req: &Request<'_>) {
        // More of the body is due: ACK what came at once (see `ack_now`). A
        // chunked body's end is not parsed yet: taken as due.
        let body_due = match req.body {
            Framing::Length(n) => (self.buf.len() as u64) < n,
            Framing::Chunked => true,
            _ => false,
        };
        if body_due {
            ack_now(&self.stream);
        }
    }

    fn must_close(&mut self, snapshot: &Snapshot, req: &Request<'_>) -> bool {
        if !req.keep_alive || snapshot.stopping() {
            return true;
        }
        let mut body = BodyCursor::new(req.body);
        match body.take(&self.buf) {
            Ok(n) if body.is_done() => {
                self.buf.advance(n);
                self.body_unread = false;
                false
            }
            // The body is still on its way (or malformed): unread bytes
            // would be taken for the next request.
            _ => true,
        }
    }

    fn set_request_done(&mut self, done: bool) {
        self.body_unread = !done;
    }

    async fn answer(
        &mut self,
        snapshot: &Snapshot,
        is_head: bool,
        status: u16,
        content_type: &str,
        location: Option<&str>,
        body: &[u8],
        close: bool,
    ) -> Done {
        let version = self.version;
        self.answer_with(
            snapshot,
            version,
            is_head,
            status,
            content_type,
            location,
            body,
            close,
        )
        .await
    }

    async fn tunnel<R, W>(
        &mut self,
        snapshot: &Snapshot,
        up_rd: &mut R,
        up_wr: &mut W,
        up_buf: &[u8],
        t: Timeouts,
    ) -> Option<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        set_nodelay(&self.stream, &mut self.nodelay);
        heads::finish_head(
            &mut self.response_head,
            None,
            false,
            ConnectionField::Upgrade,
        );
        let (mut client_rd, mut client_wr) = (&self.stream, &self.stream);
        // Bytes either side sent early (after its head) go first.
        let opened = async {
            let written =
                write_two_within(&mut client_wr, &self.response_head, up_buf, t.client_write).await;
            client_result(written)?;
            within(
                t.upstream_write,
                up_wr.write_all(&self.buf),
                UpstreamError::Write,
                UpstreamError::WriteTimeout,
            )
            .await?;
            Ok::<(), PumpError>(())
        };
        let sent = (self.response_head.len() + up_buf.len()) as u64;
        if opened.await.is_err() {
            return None;
        }
        self.buf.clear();
        let carried =
            tunnel::run(&mut client_rd, &mut client_wr, up_rd, up_wr, t.tunnel_idle).await;
        snapshot.stats().read_u64(carried.up);
        Some(sent + carried.down)
    }
}
