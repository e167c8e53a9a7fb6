//! The seam between the proxy core and the client's protocol: all the core
//! sees of the client side of one request.
//!
//! The HTTP/1.1 session (`downstream::h1`) implements it over a client
//! connection; `proxy/tests/message_client.rs` implements it for a client
//! that speaks in messages, as an HTTP/2 stream does. Routing, retries,
//! timeouts, body limits, the access log and the counters stay in the core
//! whatever the implementation. A TLS connection carries the HTTP/1.1
//! session once that session is generic over its byte stream: today it
//! uses a plain socket's calls (quick ACK, no-delay, splice, the FIN with
//! the last bytes, the peek before a lingering close), which are what a
//! TLS stream answers differently.
//!
//! The core drives one request through [`Downstream`]; for an exchange with
//! an upstream it splits it into a [`RequestBody`], which may still stream
//! the body up while the response comes down, and a [`ResponseSink`].

use super::request::Request;
use crate::http::response::ResponseHead;
use crate::http::Framing;
use crate::io::splice::{self, Failure, Moved, SpliceEnd};
use crate::observe::access_log::Served;
use crate::proxy::error::{ClientError, PumpError};
use crate::state::Snapshot;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The result of serving one request.
pub(crate) struct Done {
    /// For the access log.
    pub(crate) served: Served,
    /// Whether the client's session may not go on after this request: the
    /// client did not allow it, the worker is stopping, or the request's
    /// body or the response was not all carried. HTTP/1.1 then closes the
    /// connection; an HTTP/2 stream would reset itself if its request was
    /// not all read.
    pub(crate) close: bool,
}

/// The client side of one request.
pub(crate) trait Downstream {
    /// Where the request body comes from during an exchange.
    type Body<'a>: RequestBody
    where
        Self: 'a;
    /// Where the response goes during an exchange.
    type Sink<'a>: ResponseSink
    where
        Self: 'a;

    /// The request body's source and the response's sink for one exchange
    /// with an upstream, usable at once.
    fn split<'a>(
        &'a mut self,
        snapshot: &'a Snapshot,
        req: &Request<'_>,
    ) -> (Self::Body<'a>, Self::Sink<'a>);

    /// `req` is about to be forwarded: a client waiting to send the rest of
    /// its body may be told to go on.
    fn forwarding(&mut self, req: &Request<'_>);

    /// The address the client connected to: the destination a PROXY header
    /// carried on a `proxy_protocol` listener, else the socket's own. Asked
    /// only for a group that sends a PROXY header upstream.
    fn destination(&self) -> SocketAddr;

    /// Whether the session must end after answering `req` without
    /// forwarding it (its body may still be on its way); a body already
    /// received whole is skipped.
    fn must_close(&mut self, snapshot: &Snapshot, req: &Request<'_>) -> bool;

    /// Records whether the whole request body was forwarded: if not, the
    /// client may still be sending it.
    fn set_request_done(&mut self, done: bool);

    /// Answers with a response of prefork's own, with a `Location` field
    /// if `location` is set (a redirect); `close`: the session ends after
    /// it.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &mut self,
        snapshot: &Snapshot,
        is_head: bool,
        status: u16,
        content_type: &str,
        location: Option<&str>,
        body: &[u8],
        close: bool,
    ) -> Done;

    /// After a `101 Switching Protocols` whose head the sink started, joins
    /// the client to the upstream connection (`up_buf`: what the upstream
    /// sent after the head) until either side ends. Returns the bytes sent
    /// to the client, or `None` if the tunnel could not open.
    async fn tunnel<R, W>(
        &mut self,
        snapshot: &Snapshot,
        up_rd: &mut R,
        up_wr: &mut W,
        up_buf: &[u8],
        timeouts: Timeouts,
    ) -> Option<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin;
}

/// The request body, as the client sends it. It refuses more body data
/// than the request's `max_body` (0: no limit) with
/// [`ClientError::TooLarge`] (413): the core refuses a declared length
/// above it before forwarding anything, but only the source sees a body
/// that comes chunked or streamed.
pub(crate) trait RequestBody {
    /// Whether all of the body has been taken from the client.
    fn is_done(&self) -> bool;

    /// Body bytes received and not forwarded yet, framed as the head
    /// forwarded upstream announces.
    fn ready(&mut self) -> Result<&[u8], ClientError>;

    /// The bytes [`RequestBody::ready`] gave went upstream.
    fn forwarded(&mut self);

    /// Waits for more of the body, at most `limit` between two reads.
    async fn receive(&mut self, limit: Duration) -> Result<(), ClientError>;

    /// Moves the rest of the body straight into `upstream` (splice), when
    /// nothing is buffered, the transports allow it and enough is left;
    /// `None` when the body is to be copied instead.
    async fn splice_rest<W: SpliceEnd>(
        &mut self,
        upstream: &W,
        limits: splice::Limits,
    ) -> Option<Result<(), PumpError>>;
}

/// How a response body from an upstream goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyPlan {
    /// A chunked body goes without its framing: only the data.
    pub(crate) decode: bool,
    /// The client gets the body in the chunked coding.
    pub(crate) chunked: bool,
    /// Only the end of the session can tell the client the body is over.
    pub(crate) ends_session: bool,
}

/// The response, as the client gets it.
pub(crate) trait ResponseSink {
    /// Whether interim (1xx) responses other than `100 Continue` are
    /// passed on (a 100 never is: prefork answers `Expect` itself).
    fn forwards_interim(&self) -> bool;

    /// Whether large bodies may go to this client by splice (its socket
    /// carries the body's bytes as they are): the response head is then
    /// read in small reads, so that few body bytes come along with it.
    fn splices(&self) -> bool;

    /// How a body framed as `framing` by the upstream reaches the client.
    fn plan_body(&self, framing: Framing) -> BodyPlan;

    /// Takes the status and end-to-end fields of a response head read from
    /// the upstream, with a `Via` naming `via` if set.
    fn start_head(&mut self, head: &ResponseHead<'_, '_>, via: Option<&str>);

    /// Sends the interim response whose head was started.
    async fn send_interim(&mut self, limit: Duration) -> Result<(), ClientError>;

    /// Tells a client that sent `Expect: 100-continue` to send its body.
    async fn send_continue(&mut self, limit: Duration) -> Result<(), ClientError>;

    /// Completes the final response head: its length if known, whether the
    /// body goes chunked, and whether the session ends after it.
    fn finish_head(&mut self, content_length: Option<u64>, chunked: bool, close: bool);

    /// Whether the final head has been sent.
    fn head_sent(&self) -> bool;

    /// Sends the final head if not sent yet, then `body`; `last` when this
    /// is the whole response and the session ends after it. Returns the
    /// bytes sent.
    async fn send(&mut self, body: &[u8], last: bool, limit: Duration) -> Result<u64, ClientError>;

    /// Whether [`ResponseSink::send_bytes`] saves a copy: the sink keeps
    /// body bytes until the client's window lets them out (HTTP/2), so it
    /// takes what was read instead of copying it.
    fn takes_bytes(&self) -> bool {
        false
    }

    /// As [`ResponseSink::send`], taking `body` whole.
    async fn send_bytes(
        &mut self,
        body: bytes::Bytes,
        last: bool,
        limit: Duration,
    ) -> Result<u64, ClientError> {
        self.send(&body, last, limit).await
    }

    /// Ends a body of no announced length (chunked from an HTTP/1.1
    /// upstream whose framing the sink does not keep, or data from an
    /// HTTP/2 upstream) with its trailer section, `fields` (often empty);
    /// also called for trailers that follow a body of known length. Returns
    /// the bytes sent. By default they are dropped: a client that cannot
    /// take trailers (an HTTP/1.0 one, a body of known length) is never
    /// told of them.
    async fn send_trailers(
        &mut self,
        fields: &[httparse::Header<'_>],
        limit: Duration,
    ) -> Result<u64, ClientError> {
        let _ = (fields, limit);
        Ok(0)
    }

    /// The response is over: `whole` when all of it was sent, else it was
    /// cut short, the client perhaps holding part of it (an HTTP/1.1
    /// connection then closes; an HTTP/2 stream is reset).
    fn finished(&mut self, whole: bool);

    /// Moves `left` bytes of body straight from `upstream` to the client
    /// (splice) when the transports allow it; `None` when they are to be
    /// copied instead.
    async fn splice_from<R: SpliceEnd>(
        &mut self,
        upstream: &R,
        left: u64,
        limits: splice::Limits,
    ) -> Option<Result<Moved, Failure>>;
}

/// The time limits of one exchange, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Longest pause between two reads of the request body.
    pub(crate) client_read: Duration,
    /// Longest pause between two writes to the client.
    pub(crate) client_write: Duration,
    /// Longest wait for the upstream's response, and between two of its
    /// reads.
    pub(crate) upstream_read: Duration,
    /// Longest pause between two writes upstream.
    pub(crate) upstream_write: Duration,
    /// How long a tunnel may stay idle.
    pub(crate) tunnel_idle: Duration,
}
