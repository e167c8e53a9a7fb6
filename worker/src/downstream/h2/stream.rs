//! One HTTP/2 stream, served in a task of its own through the proxy core:
//! the stream is the core's [`Downstream`]. Its request body comes from
//! `h2`'s receive side (flow-control capacity given back only once the
//! bytes went upstream, so the client sends at the upstream's pace), its
//! response goes out as DATA frames no larger than the client's window
//! allows (a slow client slows the upstream; the worker never holds a
//! whole response). A stream the client resets stops at once, whatever the
//! core was waiting for.

use super::request;
use super::responder::{client_error, Responder};
use super::shared::{OpenStream, Shared};
use crate::http::heads;
use crate::http::response::ResponseHead;
use crate::http::{write_date_header, Framing, Version};
use crate::io::splice::{self, Failure, Moved, SpliceEnd};
use crate::observe::access_log::Served;
use crate::proxy::downstream::{BodyPlan, RequestBody, ResponseSink, Timeouts};
use crate::proxy::error::{ClientError, PumpError};
use crate::proxy::{self, Done, Downstream, Request, RequestCtx};
use crate::state::Snapshot;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, timeout, Instant};

/// Serves one stream the client opened with `req`, under the newest
/// configuration (a hot reload applies to new streams at once).
pub(super) async fn serve(
    snapshot: Rc<Snapshot>,
    conn: Rc<Shared>,
    _open: OpenStream,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    snapshot.stats().http2_stream();
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let io = Rc::new(RefCell::new(Responder {
        respond,
        send: None,
    }));
    let ended = body.is_end_stream();
    let mut stream = Stream::new(body, io.clone(), conn.clone());
    let scratch = snapshot.buffers().take_scratch();
    let (mut ctx, response_head) = RequestCtx::new(conn.client, conn.scheme, scratch);
    if let Some(tls) = &conn.tls {
        ctx.set_tls(tls.clone());
    }
    let (mut fields, mut cookie) = (Vec::new(), Vec::new());
    let served = match request::head(
        &parts,
        &mut fields,
        &mut cookie,
        ended,
        &snapshot.config.http,
    ) {
        Ok(head) => {
            let req = ctx.begin(&snapshot, &head, false);
            let timer = pin!(sleep(Duration::ZERO));
            let core = proxy::serve(&mut stream, &ctx, &snapshot, &req, timer);
            tokio::select! {
                done = core => done.served,
                () = poll_fn(|cx| io.borrow_mut().poll_reset(cx)) => {
                    // nginx's 499: the client went away before the response.
                    Served { status: 499, bytes_sent: 0, upstream: None, upstream_time: None }
                }
            }
        }
        Err(e) => {
            ctx.unknown(&snapshot);
            let status = e.status();
            let body = heads::error_body(status);
            let is_head = parts.method == http::Method::HEAD;
            stream
                .answer(
                    &snapshot,
                    is_head,
                    status,
                    "text/html",
                    None,
                    body.as_bytes(),
                    false,
                )
                .await
                .served
        }
    };
    ctx.record(&snapshot, &served, started.elapsed());
    snapshot
        .buffers()
        .put_scratch(ctx.take_scratch(response_head));
}

/// The client side of one stream.
struct Stream {
    body: Body,
    sink: Sink,
}

impl Stream {
    fn new(recv: RecvStream, io: Rc<RefCell<Responder>>, conn: Rc<Shared>) -> Self {
        let done = recv.is_end_stream();
        Stream {
            body: Body {
                recv,
                framed: Vec::new(),
                taken: 0,
                chunked: false,
                done,
                received: 0,
                limit: 0,
            },
            sink: Sink {
                io,
                conn,
                head: None,
                head_sent: false,
                left: None,
                ended: false,
            },
        }
    }
}

/// The request body as the client sends it.
struct Body {
    recv: RecvStream,
    /// Received and not yet forwarded, framed as the forwarded head says.
    framed: Vec<u8>,
    /// Body bytes in `framed`: flow-control capacity given back once
    /// forwarded.
    taken: usize,
    /// The body goes upstream chunked (it came without a length).
    chunked: bool,
    done: bool,
    /// Body bytes received so far, and the most allowed (0: no limit).
    received: u64,
    limit: u64,
}

/// The response, as the client gets it.
struct Sink {
    io: Rc<RefCell<Responder>>,
    conn: Rc<Shared>,
    /// The head being built, before it is sent.
    head: Option<http::Response<()>>,
    head_sent: bool,
    /// The body bytes still to send, when the head announced a length:
    /// the last ones end the stream (no empty DATA frame after them).
    left: Option<u64>,
    /// The stream's end was sent.
    ended: bool,
}

impl Downstream for Stream {
    type Body<'a> = &'a mut Body;
    type Sink<'a> = &'a mut Sink;

    fn split<'a>(&'a mut self, _: &'a Snapshot, req: &Request<'_>) -> (&'a mut Body, &'a mut Sink) {
        self.body.limit = req.max_body;
        self.body.chunked = req.body == Framing::Chunked;
        (&mut self.body, &mut self.sink)
    }

    fn forwarding(&mut self, _: &Request<'_>) {}

    fn destination(&self) -> std::net::SocketAddr {
        self.sink.conn.destination
    }

    fn must_close(&mut self, _: &Snapshot, _: &Request<'_>) -> bool {
        // A body not read is refused by resetting the stream once the
        // response is sent (`h2` does), not by closing the connection.
        false
    }

    fn set_request_done(&mut self, _: bool) {}

    async fn answer(
        &mut self,
        _: &Snapshot,
        is_head: bool,
        status: u16,
        content_type: &str,
        location: Option<&str>,
        body: &[u8],
        _: bool,
    ) -> Done {
        let mut head = response(status);
        let fields = head.headers_mut();
        fields.insert(http::header::SERVER, HeaderValue::from_static("prefork"));
        insert_date(fields);
        if let Ok(v) = HeaderValue::from_str(content_type) {
            fields.insert(http::header::CONTENT_TYPE, v);
        }
        if let Some(v) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
            fields.insert(http::header::LOCATION, v);
        }
        fields.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let sink = &mut self.sink;
        sink.head = Some(head);
        let body = if is_head { &[][..] } else { body };
        let limit = sink.conn.send_timeout;
        let sent = Sink::send(sink, Bytes::copy_from_slice(body), true, limit).await;
        Done {
            served: Served {
                status,
                bytes_sent: sent.unwrap_or(0),
                upstream: None,
                upstream_time: None,
            },
            close: false,
        }
    }

    async fn tunnel<R, W>(
        &mut self,
        _: &Snapshot,
        _: &mut R,
        _: &mut W,
        _: &[u8],
        _: Timeouts,
    ) -> Option<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // HTTP/2 has no `Upgrade`: the core never asks for a tunnel.
        None
    }
}

impl RequestBody for &mut Body {
    fn is_done(&self) -> bool {
        self.done
    }

    fn ready(&mut self) -> Result<&[u8], ClientError> {
        Ok(&self.framed)
    }

    fn forwarded(&mut self) {
        self.framed.clear();
        let taken = std::mem::take(&mut self.taken);
        // The client may send as much again; an error means the stream is
        // gone, which the next receive says.
        let _ = self.recv.flow_control().release_capacity(taken);
    }

    async fn receive(&mut self, limit: Duration) -> Result<(), ClientError> {
        let data = match timeout(limit, self.recv.data()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(data) => data,
        };
        match data {
            Some(Ok(data)) => {
                self.received += data.len() as u64;
                if self.limit > 0 && self.received > self.limit {
                    return Err(ClientError::TooLarge);
                }
                self.taken += data.len();
                if self.chunked {
                    if !data.is_empty() {
                        self.framed
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        self.framed.extend_from_slice(&data);
                        self.framed.extend_from_slice(b"\r\n");
                    }
                } else {
                    self.framed.extend_from_slice(&data);
                }
                Ok(())
            }
            Some(Err(e)) => Err(client_error(e)),
            None => {
                let trailers = self.recv.trailers().await.map_err(client_error)?;
                if self.chunked {
                    self.framed.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers.iter().flatten() {
                        self.framed.extend_from_slice(name.as_str().as_bytes());
                        self.framed.extend_from_slice(b": ");
                        self.framed.extend_from_slice(value.as_bytes());
                        self.framed.extend_from_slice(b"\r\n");
                    }
                    self.framed.extend_from_slice(b"\r\n");
                }
                self.done = true;
                Ok(())
            }
        }
    }

    async fn splice_rest<W: SpliceEnd>(
        &mut self,
        _: &W,
        _: splice::Limits,
    ) -> Option<Result<(), PumpError>> {
        None
    }
}

impl ResponseSink for &mut Sink {
    fn forwards_interim(&self) -> bool {
        true
    }

    fn splices(&self) -> bool {
        false
    }

    fn plan_body(&self, _: Framing) -> BodyPlan {
        // Data only, whatever the upstream's framing: the end of the body is
        // the end of the stream.
        BodyPlan {
            decode: true,
            chunked: false,
            ends_session: false,
        }
    }

    fn start_head(&mut self, head: &ResponseHead<'_, '_>, via: Option<&str>) {
        let mut out = response(head.status);
        let fields = out.headers_mut();
        fields.reserve(head.headers.len() + 2);
        let mut dated = false;
        for h in heads::end_to_end_fields(head, via.is_some()) {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) else {
                // Not valid in HTTP/2 (a name with capitals is lowered by
                // `from_bytes`): left out rather than breaking the stream.
                continue;
            };
            dated |= name == http::header::DATE;
            fields.append(name, value);
        }
        if !dated && head.status >= 200 {
            insert_date(fields);
        }
        if let Some(name) = via {
            if let Some(v) = via_value(head, name) {
                fields.insert(http::header::VIA, v);
            }
        }
        self.head = Some(out);
    }

    async fn send_interim(&mut self, _: Duration) -> Result<(), ClientError> {
        let Some(head) = self.head.take() else {
            return Ok(());
        };
        self.io
            .borrow_mut()
            .respond
            .send_informational(head)
            .map_err(client_error)
    }

    async fn send_continue(&mut self, _: Duration) -> Result<(), ClientError> {
        self.io
            .borrow_mut()
            .respond
            .send_informational(response(100))
            .map_err(client_error)
    }

    fn finish_head(&mut self, content_length: Option<u64>, _: bool, _: bool) {
        if let (Some(n), Some(head)) = (content_length, self.head.as_mut()) {
            head.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        self.left = content_length;
    }

    fn head_sent(&self) -> bool {
        self.head_sent
    }

    async fn send(&mut self, body: &[u8], last: bool, limit: Duration) -> Result<u64, ClientError> {
        Sink::send(self, Bytes::copy_from_slice(body), last, limit).await
    }

    fn takes_bytes(&self) -> bool {
        true
    }

    async fn send_bytes(
        &mut self,
        body: Bytes,
        last: bool,
        limit: Duration,
    ) -> Result<u64, ClientError> {
        Sink::send(self, body, last, limit).await
    }

    /// The trailers end the stream in a HEADERS frame of their own (gRPC's
    /// `grpc-status`); without any, [`ResponseSink::finished`] ends it.
    async fn send_trailers(
        &mut self,
        fields: &[httparse::Header<'_>],
        limit: Duration,
    ) -> Result<u64, ClientError> {
        if fields.is_empty() || self.ended {
            return Ok(0);
        }
        let mut sent = 0;
        if !self.head_sent {
            sent += Sink::send(self, Bytes::new(), false, limit).await?;
        }
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for f in fields {
            if NOT_TRAILERS.iter().any(|n| f.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) {
                // Counted as HTTP/1.1 would write them (see `Sink::send`).
                sent += (name.as_str().len() + value.len() + 4) as u64;
                trailers.append(name, value);
            }
        }
        if let Some(send) = self.io.borrow_mut().send.as_mut() {
            send.send_trailers(trailers).map_err(client_error)?;
            self.ended = true;
        }
        Ok(sent)
    }

    fn finished(&mut self, whole: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut io = self.io.borrow_mut();
        let io = &mut *io;
        match (whole, io.send.as_mut()) {
            (true, Some(send)) => {
                let _ = send.send_data(Bytes::new(), true);
            }
            (true, None) => {
                // A head without a body, never sent: it ends the stream.
                if let Some(head) = self.head.take() {
                    let _ = io.respond.send_response(head, true);
                }
            }
            // The client must not take what it got for the whole response.
            (false, Some(send)) => send.send_reset(Reason::INTERNAL_ERROR),
            (false, None) => io.respond.send_reset(Reason::INTERNAL_ERROR),
        }
    }

    async fn splice_from<R: SpliceEnd>(
        &mut self,
        _: &R,
        _: u64,
        _: splice::Limits,
    ) -> Option<Result<Moved, Failure>> {
        None
    }
}

impl Sink {
    /// Sends the head if not sent yet, then `body` within the client's
    /// window, waiting at most `limit` for the window to open; `last`: the
    /// stream ends with it. Returns the bytes sent: the body's, and the
    /// head's as its fields would be written in HTTP/1.1 (HPACK's own size
    /// is `h2`'s), so that counts and logs compare across protocols.
    async fn send(&mut self, body: Bytes, last: bool, limit: Duration) -> Result<u64, ClientError> {
        let mut head_len = 0;
        // The body ends with these bytes: as announced, or the core says.
        let last = last || self.left == Some(body.len() as u64);
        if !self.head_sent {
            let head = self.head.take().unwrap_or_else(|| response(502));
            head_len = text_size(&head);
            let end = last && body.is_empty();
            let mut io = self.io.borrow_mut();
            let send = io.respond.send_response(head, end).map_err(client_error)?;
            io.send = Some(send);
            self.head_sent = true;
            self.ended = end;
            if end {
                return Ok(head_len);
            }
        }
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(body.len() as u64);
        }
        let len = body.len() as u64;
        let mut rest = body;
        while !rest.is_empty() {
            let n = self.conn.window(&self.io, rest.len(), limit).await?;
            let end = last && n == rest.len();
            self.io.borrow_mut().send_data(rest.split_to(n), end)?;
            self.ended = end;
        }
        if last && !self.ended {
            self.io.borrow_mut().send_data(Bytes::new(), true)?;
            self.ended = true;
        }
        Ok(head_len + len)
    }
}

/// The size of `head` written as an HTTP/1.1 head: its status line,
/// `name: value` lines and the blank line.
fn text_size(head: &http::Response<()>) -> u64 {
    let fields: usize = head
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let reason = head.status().canonical_reason().map_or(0, str::len);
    (fields + "HTTP/1.1 200 \r\n\r\n".len() + reason) as u64
}

thread_local! {
    /// The `Via` of the last response that came without one, and the
    /// version and name it was made for: usually every response's.
    static VIA: RefCell<Option<(Version, String, HeaderValue)>> = const { RefCell::new(None) };
}

/// The `Via` value of `head` with this hop, `name`, appended.
fn via_value(head: &ResponseHead<'_, '_>, name: &str) -> Option<HeaderValue> {
    let received = head
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("via"));
    if !received {
        let cached = VIA.with_borrow(|via| {
            via.as_ref()
                .filter(|(version, n, _)| *version == head.version && n == name)
                .map(|(_, _, v)| v.clone())
        });
        if cached.is_some() {
            return cached;
        }
    }
    let mut value = Vec::new();
    heads::push_via(&mut value, head.headers, head.version, name);
    let value = HeaderValue::from_bytes(&value).ok()?;
    if !received {
        VIA.set(Some((head.version, name.to_owned(), value.clone())));
    }
    Some(value)
}

/// A response head of `status`, no fields yet.
fn response(status: u16) -> http::Response<()> {
    let mut head = http::Response::new(());
    *head.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    head
}

/// Adds a `Date` field of now.
fn insert_date(fields: &mut HeaderMap) {
    let mut line = Vec::with_capacity(40);
    write_date_header(&mut line);
    // `Date: <value>\r\n`
    let value = line
        .strip_prefix(b"Date: ")
        .and_then(|v| v.strip_suffix(b"\r\n"))
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        fields.insert(http::header::DATE, v);
    }
}

/// Fields never sent as trailers: HTTP/2's connection-specific ones
/// (RFC 9113 §8.2.2) and those no trailer may be (RFC 9110 §6.5.1).
const NOT_TRAILERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
    "host",
    "trailer",
];
