//! One client connection: the keep-alive loop, reading request heads, and
//! the responses prefork answers by itself.

use crate::access_log::{Entry, RequestInfo, Served};
use crate::buffers::{Buffers, Scratch, HEAD_BUFFER};
use crate::client_socket::{is_register_error, ClientSocket};
use crate::http::body::BodyCursor;
use crate::http::heads::{self, ConnectionField};
use crate::http::request::{self, RequestError};
use crate::http::{with_header_slots, Framing, Version};
use crate::io::{timed_until, write_last_within, write_two_within};
use crate::request_id;
use crate::server::{ActiveConnection, Worker};
use bytes::{Buf, BytesMut};
use prefork_shared::config::RouteAction;
use slog::{error, warn};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, Interest};
use tokio::time::{sleep, timeout_at, Instant, Sleep};

/// Spare room below which the read buffer grows before a read.
const MIN_SPARE: usize = 1024;
/// Lingering close (nginx's `lingering_time`): the longest a closing
/// connection keeps reading and discarding what the client still sends, so
/// the client reads the answer instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest pause between two reads while lingering (nginx's
/// `lingering_timeout`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// One client connection and the buffers it reuses across requests.
pub(crate) struct Connection {
    /// The worker's shared state.
    pub(crate) worker: Rc<Worker>,
    /// The client socket.
    pub(crate) stream: ClientSocket,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Bytes read from the client and not consumed yet; a pipelined request
    /// may already wait here.
    pub(crate) buf: BytesMut,
    /// The head forwarded upstream (kept for a retry).
    pub(crate) request_head: Vec<u8>,
    /// The head of the response being written to the client.
    pub(crate) response_head: Vec<u8>,
    /// The current request's fields for the access log.
    info: RequestInfo,
    /// The current request's id (sent upstream as `X-Request-Id`).
    pub(crate) request_id: String,
    /// The current request's route (index in the config; `None`: none).
    route: Option<usize>,
    /// Whether TCP_NODELAY is set yet (see [`set_nodelay`]).
    pub(crate) nodelay: bool,
    /// Whether the current request's body may still be on its way: a close
    /// then lingers (RFC 9112 §9.6; nginx sets `lingering_close` so).
    pub(crate) body_unread: bool,
    /// Counts the connection as open until it is dropped, after the socket.
    active: ActiveConnection,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The per-request buffers go back to the worker's free lists.
        let buffers = self.worker.buffers();
        buffers.put_scratch(Scratch {
            request_head: std::mem::take(&mut self.request_head),
            response_head: std::mem::take(&mut self.response_head),
            request_id: std::mem::take(&mut self.request_id),
            info: std::mem::take(&mut self.info),
        });
        if self.buf.capacity() > 0 {
            buffers.put_head(std::mem::take(&mut self.buf));
        }
    }
}

/// A parsed request; its head has been consumed from the buffer.
pub(crate) struct Request<'w> {
    /// The request's version.
    pub(crate) version: Version,
    /// Whether it is a `HEAD` request (the response has no body).
    pub(crate) is_head: bool,
    /// Whether it may be replayed on another connection.
    pub(crate) idempotent: bool,
    /// Whether the connection may serve another request afterwards.
    pub(crate) keep_alive: bool,
    /// How its body is framed.
    pub(crate) body: Framing,
    /// The largest body allowed (0: no limit).
    pub(crate) max_body: u64,
    /// Whether it asks to switch protocols (a 101 then opens a tunnel).
    pub(crate) upgrade: bool,
    /// Whether prefork answers `100 Continue` before reading the body.
    pub(crate) expect_continue: bool,
    /// What the matching route does (`None`: no route, 404).
    action: Option<&'w RouteAction>,
}

/// The result of serving one request.
pub(crate) struct Done {
    /// For the access log.
    pub(crate) served: Served,
    /// Whether the connection must close now.
    pub(crate) close: bool,
}

/// Why no request head could be read.
enum HeadEnd {
    /// The client closed or stayed idle too long, or the worker is stopping.
    Closed,
    /// `client_header_timeout` passed.
    Timeout,
    /// The head was refused.
    Invalid(RequestError),
    /// A new configuration arrived while idle: read the next request under it.
    Reconfigured,
}

impl Connection {
    /// A connection just accepted from `peer`.
    pub(crate) fn new(
        worker: Rc<Worker>,
        stream: ClientSocket,
        peer: SocketAddr,
        active: ActiveConnection,
    ) -> Self {
        let Scratch {
            request_head,
            response_head,
            request_id,
            info,
        } = worker.buffers().take_scratch();
        Connection {
            worker,
            stream,
            peer,
            buf: BytesMut::new(),
            request_head,
            response_head,
            info,
            request_id,
            route: None,
            nodelay: false,
            body_unread: false,
            active,
        }
    }

    /// Forgets the current request (it could not be read): a new id, no
    /// route, no fields.
    fn unknown_request(&mut self) {
        self.info.clear();
        self.route = None;
        self.worker.next_request_id(&mut self.request_id);
    }

    /// Serves requests until the connection closes.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> {
        // An async block, not an async fn: an async fn's future keeps its
        // argument and a moved copy of it, twice the connection's bytes in
        // every connection's future (and its memory when idle).
        async move {
            // Each wait on one side gets its own timer, reused from request to
            // request: its deadline then only ever moves later (see
            // `timed_until`). Neither is set before it is needed.
            let mut client_timer = pin!(sleep(Duration::ZERO));
            let mut upstream_timer = pin!(sleep(Duration::ZERO));
            let mut served = 0u64;
            // When the connection last had nothing to do: accepted, or done with
            // a request (the clock is read once per request, at its start).
            let mut idle_since = Instant::now();
            loop {
                // Between requests: take the newest configuration (hot reload).
                let worker = self.worker.latest();
                self.worker = worker.clone();
                let request = self
                    .read_request(&worker, served, idle_since, client_timer.as_mut())
                    .await;
                let started = Instant::now();
                let mut done = match request {
                    Ok(req) => {
                        served += 1;
                        if !req.keep_alive {
                            self.active.closing();
                        }
                        self.body_unread = !matches!(req.body, Framing::Empty | Framing::Length(0));
                        self.serve(&worker, &req, upstream_timer.as_mut()).await
                    }
                    Err(HeadEnd::Closed) => return,
                    Err(HeadEnd::Reconfigured) => continue,
                    Err(HeadEnd::Timeout) => {
                        self.unknown_request();
                        self.answer_error(Version::Http11, false, 408, true).await
                    }
                    Err(HeadEnd::Invalid(e)) => {
                        warn!(worker.log, "bad request"; "client" => %self.peer, "error" => %e, "request_id" => &self.request_id);
                        self.answer_error(Version::Http11, false, e.status(), true)
                            .await
                    }
                };
                let took = started.elapsed();
                idle_since = started + took;
                if done.served.upstream.is_some() {
                    // The upstream's part is timed from the same start.
                    done.served.upstream_time = Some(took);
                }
                let s = &done.served;
                worker.count_request(self.route, s.status, s.bytes_sent, took);
                worker.access.record(&Entry {
                    client: self.peer,
                    info: &self.info,
                    request_id: &self.request_id,
                    route: self.route,
                    served: s,
                    total: took,
                });
                if done.close {
                    // Answered: what is left is the close, lingering perhaps
                    // for seconds; it no longer weighs on the load board.
                    self.active.closing();
                    self.close(done.served.status).await;
                    return;
                }
            }
        }
    }

    /// Closes the connection after answering `status`; lingers first when
    /// the client may still be sending, so the answer is not lost to a reset
    /// (RFC 9112 §9.6).
    async fn close(&mut self, status: u16) {
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
                () = self.worker.on_change(|| self.worker.stopping()) => return,
            };
            match read {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }

    /// Answers `req`; `timer` times the wait for an upstream's response.
    async fn serve(&mut self, worker: &Worker, req: &Request<'_>, timer: Pin<&mut Sleep>) -> Done {
        if let Framing::Length(n) = req.body {
            if req.max_body > 0 && n > req.max_body {
                // Refused before reading it; the lingering close absorbs
                // what the client already sent.
                return self.answer_error(req.version, req.is_head, 413, true).await;
            }
        }
        match req.action {
            None => {
                let close = self.must_close(req);
                self.answer_error(req.version, req.is_head, 404, close)
                    .await
            }
            Some(RouteAction::Respond(fixed)) => {
                let close = self.must_close(req);
                let body = fixed.body.as_bytes();
                self.answer(
                    req.version,
                    req.is_head,
                    fixed.status,
                    &fixed.content_type,
                    body,
                    close,
                )
                .await
            }
            Some(RouteAction::Proxy(name)) => match worker.upstreams.get(name) {
                Some(group) => self.proxy(req, group, timer).await,
                None => {
                    // Validation guarantees the upstream exists and has servers.
                    error!(worker.log, "route names an unknown or empty upstream"; "upstream" => name);
                    let close = self.must_close(req);
                    self.answer_error(req.version, req.is_head, 500, close)
                        .await
                }
            },
        }
    }

    /// Reads what a connection just accepted has sent, without waiting:
    /// with `TCP_DEFER_ACCEPT` its request is there already, while the event
    /// loop would report the socket readable only on its next turn.
    fn read_first(&mut self, worker: &Worker) {
        if !self.buf.is_empty() {
            return;
        }
        let buffers = worker.buffers();
        let mut head = buffers.take_head();
        match self.stream.sock_ref().recv(head.spare_capacity_mut()) {
            Ok(n) if n > 0 => {
                // SAFETY: recv initialised the first n bytes of the spare
                // capacity.
                unsafe { head.set_len(head.len() + n) };
                self.buf = head;
                worker.stats().read(n);
            }
            // Nothing yet, the end, or an error (consumed here: the waiting
            // read then sees the end).
            _ => buffers.put_head(head),
        }
    }

    /// Reads until a complete request head is buffered, the connection
    /// idle since `idle_since`; `timer` times the wait.
    async fn read_request<'w>(
        &mut self,
        worker: &'w Rc<Worker>,
        served: u64,
        idle_since: Instant,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Request<'w>, HeadEnd> {
        let limits = &worker.config.http;
        // The first request is due within the header timeout of the accept;
        // later ones within it of their first byte, after an idle wait.
        let mut deadline = (served == 0).then(|| idle_since + limits.client_header_timeout);
        // Set once a stop was seen while this fresh connection had sent nothing.
        let mut stop_grace = false;
        if served == 0 {
            self.read_first(worker);
        }
        loop {
            if !self.buf.is_empty() {
                if let Some(req) = self.parse_request(worker, served)? {
                    return Ok(req);
                }
                deadline.get_or_insert_with(|| Instant::now() + limits.client_header_timeout);
                ack_now(&self.stream);
            }
            let idle = self.buf.is_empty();
            // No deadline yet: this is the first pass, at `idle_since`.
            let until = deadline.unwrap_or(idle_since + limits.keepalive_timeout);
            let read = tokio::select! {
                // Bytes already sent win over a stop: they are a request to answer.
                biased;
                read = timed_until(timer.as_mut(), until, read_head(&self.stream, &mut self.buf, worker.buffers())) => read,
                () = worker.on_change(|| worker.stopping() || worker.superseded()), if idle && !stop_grace => {
                    if !worker.stopping() {
                        return Err(HeadEnd::Reconfigured);
                    }
                    // The client may be sending a request right now: closing
                    // at once would reset it. Answer what arrives meanwhile
                    // (with `Connection: close`), close once quiet.
                    stop_grace = true;
                    let close_at = worker.drain_close_at(idle_since, self.peer, served);
                    // Never later than the wait's own limit (the header
                    // timeout, or keepalive_timeout while idle).
                    deadline = Some(until.min(close_at));
                    continue;
                }
            };
            match read {
                Err(_) if stop_grace && self.buf.is_empty() => return Err(HeadEnd::Closed),
                Err(_) if deadline.is_some() => return Err(HeadEnd::Timeout),
                Ok(Ok(n)) if n > 0 => worker.stats().read(n),
                Ok(Err(e)) if is_register_error(&e) => {
                    error!(worker.log, "closing a connection the event loop cannot watch"; "client" => %self.peer, "error" => %e);
                    return Err(HeadEnd::Closed);
                }
                // Idle timeout, EOF or a reset: nothing to answer.
                _ => return Err(HeadEnd::Closed),
            }
        }
    }

    /// Parses the buffered head, routes it and, for a proxied request,
    /// builds the head to forward; `Ok(None)` when incomplete.
    fn parse_request<'w>(
        &mut self,
        worker: &'w Worker,
        served: u64,
    ) -> Result<Option<Request<'w>>, HeadEnd> {
        let limits = &worker.config.http;
        let client_ip = self.peer.ip().to_canonical();
        let last = served + 1 >= limits.keepalive_requests;
        let Connection {
            buf,
            request_head,
            info,
            request_id,
            route,
            ..
        } = self;
        let parsed = with_header_slots(limits.max_request_headers, |slots| {
            let Some(head) = request::parse(buf, limits, slots)? else {
                return Ok(None);
            };
            let host = head.host.unwrap_or("");
            *route = worker.routes.lookup(&request::route_host(host), &head.path);
            let matched = route.map(|i| &worker.config.routes[i]);
            let action = matched.map(|r| &r.action);
            let max_body = matched.map_or(limits.max_body_size, |r| r.max_body_size(limits));
            let client_id = request_id::from_client(head.headers);
            match client_id {
                Some(id) => {
                    request_id.clear();
                    request_id.push_str(id);
                }
                None => worker.next_request_id(request_id),
            }
            if matches!(action, Some(RouteAction::Proxy(_))) {
                // A client's own id is already among the fields forwarded.
                let added_id = client_id.is_none().then_some(request_id.as_str());
                heads::request_head(
                    request_head,
                    &head,
                    client_ip,
                    limits.via.as_deref(),
                    added_id,
                );
            }
            if worker.access.any() {
                info.set(&head);
            }
            let req = Request {
                version: head.version,
                is_head: head.method == "HEAD",
                idempotent: head.is_idempotent(),
                keep_alive: head.keep_alive && !last,
                body: head.body,
                max_body,
                upgrade: head.upgrade,
                expect_continue: head.expect_continue,
                action,
            };
            Ok(Some((head.len, req)))
        });
        match parsed {
            Ok(Some((len, req))) => {
                self.buf.advance(len);
                Ok(Some(req))
            }
            Ok(None) => Ok(None),
            Err(RequestError::Syntax(httparse::Error::Version)) => {
                self.parse_later_minor(worker, served)
            }
            Err(e) => {
                self.unknown_request();
                Err(HeadEnd::Invalid(e))
            }
        }
    }

    /// Parses again a head whose version httparse refused, if it is a later
    /// HTTP/1 minor one, read as 1.1 (see `read_later_minor_as_1_1`). Out of
    /// line: the usual request's parse stays as lean as before.
    #[cold]
    #[inline(never)]
    fn parse_later_minor<'w>(
        &mut self,
        worker: &'w Worker,
        served: u64,
    ) -> Result<Option<Request<'w>>, HeadEnd> {
        match request::read_later_minor_as_1_1(&mut self.buf) {
            Ok(()) => self.parse_request(worker, served),
            Err(e) => {
                self.unknown_request();
                Err(HeadEnd::Invalid(e))
            }
        }
    }

    /// Whether the connection must close after answering `req` without
    /// forwarding it; skips its body when it is already fully buffered.
    pub(crate) fn must_close(&mut self, req: &Request<'_>) -> bool {
        if !req.keep_alive || self.worker.stopping() {
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

    /// How long a write to the client may stall (nginx's `send_timeout`).
    pub(crate) fn send_timeout(&self) -> Duration {
        self.worker.config.http.send_timeout
    }

    /// Answers an error page.
    pub(crate) async fn answer_error(
        &mut self,
        version: Version,
        is_head: bool,
        status: u16,
        close: bool,
    ) -> Done {
        let body = heads::error_body(status);
        self.answer(
            version,
            is_head,
            status,
            "text/html",
            body.as_bytes(),
            close,
        )
        .await
    }

    /// Answers a response of prefork's own.
    pub(crate) async fn answer(
        &mut self,
        version: Version,
        is_head: bool,
        status: u16,
        content_type: &str,
        body: &[u8],
        close: bool,
    ) -> Done {
        let close = close || self.worker.stopping();
        heads::own_response_head(
            &mut self.response_head,
            status,
            content_type,
            body.len(),
            connection_field(version, close),
        );
        let body = if is_head { &[][..] } else { body };
        if !close {
            set_nodelay(&self.stream, &mut self.nodelay);
        }
        let send_timeout = self.send_timeout();
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
}

/// Reads more of a request head into `buf`. A connection waiting idle for
/// its next request holds no buffer: it goes back to the worker's free list
/// before the wait and one is taken again once bytes arrive (as nginx
/// does), which keeps idle keep-alive connections cheap.
async fn read_head(
    mut stream: &ClientSocket,
    buf: &mut BytesMut,
    buffers: &Buffers,
) -> std::io::Result<usize> {
    if buf.is_empty() {
        if buf.capacity() > 0 {
            buffers.put_head(std::mem::take(buf));
        }
        stream.ready(Interest::READABLE).await?;
        *buf = buffers.take_head();
    }
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(HEAD_BUFFER);
    }
    stream.read_buf(buf).await
}

/// Acknowledges what a client sent at once and keeps quick ACKs on for a
/// while: called when more of a request is due. Listeners start connections
/// with delayed ACKs (the ACK rides on the response), but a client that
/// leaves Nagle's algorithm on holds its next small segment until it sees
/// the ACK of the last one: up to a delayed-ACK timeout (40 ms) per wait.
pub(crate) fn ack_now(stream: &ClientSocket) {
    // A failure costs at most that delay; the request goes on regardless.
    let _ = stream.sock_ref().set_tcp_quickack(true);
}

/// Sets TCP_NODELAY on a client connection, once: request/response traffic
/// wants latency, not Nagle's batching. Callers skip it for a connection's
/// last response when all of it is at hand: it leaves in one write followed
/// at once by the FIN (`write_last_within`), which sends whatever was held
/// back. A `Connection: close` request then costs one system call less
/// (nginx, too, sets it only once a connection is kept alive).
pub(crate) fn set_nodelay(stream: &ClientSocket, done: &mut bool) {
    if !*done {
        *done = true;
        let _ = stream.sock_ref().set_tcp_nodelay(true);
    }
}

/// The `Connection` field for a response to a client of `version`.
pub(crate) fn connection_field(version: Version, close: bool) -> ConnectionField {
    match (close, version) {
        (true, _) => ConnectionField::Close,
        (false, Version::Http10) => ConnectionField::KeepAlive,
        (false, Version::Http11) => ConnectionField::Omit,
    }
}
