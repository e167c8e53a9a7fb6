//! Proxying one request: pick a server, forward the request while its body
//! streams in, and stream the response back.

use crate::downstream::h1::{ack_now, connection_field, set_nodelay, Connection, Done, Request};
use crate::http::body::BodyCursor;
use crate::http::chunked::ChunkedDecoder;
use crate::http::heads::{self, ConnectionField};
use crate::http::response::{self, MAX_RESPONSE_HEADERS};
use crate::http::{with_header_slots, Framing, Version};
use crate::io::splice::{self, Failure, Moved, Pipes, SpliceEnd};
use crate::io::timed::{timed, TimedOut};
use crate::io::tunnel;
use crate::io::write::{write_last_within, write_two, write_two_within, TryWrite};
use crate::io::BODY_READ;
use crate::observe::access_log::Served;
use crate::observe::stats::{self, Stats};
use crate::proxy::error::{ClientError, PumpError};
use crate::upstream::error::UpstreamError;
use crate::upstream::health::Change;
use crate::upstream::{Group, UpstreamConn};
use bytes::{Buf, BufMut, BytesMut};
use slog::{error, info, warn};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

/// The interim response asking an HTTP/1.1 client for its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Far enough away to mean "not armed yet" for a timer.
const NOT_ARMED: Duration = Duration::from_secs(365 * 24 * 3600);

/// The facts of a final response head whose status line and end-to-end
/// fields are already in the connection's `response_head`.
struct ResponseMeta {
    status: u16,
    framing: Framing,
    content_length: Option<u64>,
    keep_alive: bool,
    /// Bodyless, though its head announces a body (see [`response::ResponseHead`]).
    announces_absent_body: bool,
}

/// A response head read from the upstream.
enum Head {
    /// An interim response to relay to the client: its head is in the
    /// connection's `response_head`.
    Interim,
    /// The final response.
    Final(ResponseMeta),
}

/// An exchange that failed before a final response head reached the client.
struct Early {
    error: PumpError,
    /// No response byte arrived: replaying the request is safe if it is
    /// idempotent and had no body.
    retryable: bool,
    /// Whether the whole request body was read from the client.
    request_done: bool,
}

impl Early {
    /// Whether the failure counts against the server's health: it did not
    /// answer properly before the response head (a body error does not
    /// count, nor does a client's).
    fn is_server_failure(&self) -> bool {
        matches!(&self.error, PumpError::Upstream(e) if !matches!(e, UpstreamError::BadChunk(_)))
    }

    fn upstream(error: UpstreamError, retryable: bool, request_done: bool) -> Self {
        Early {
            error: error.into(),
            retryable,
            request_done,
        }
    }
}

/// What the response to a request may be, for reading its head.
#[derive(Clone, Copy)]
struct Expecting<'a> {
    /// The request was `HEAD`: the response has no body.
    is_head: bool,
    /// The request asked to upgrade: a 101 is its final response.
    upgrade: bool,
    /// Interim (1xx) responses other than 100 are relayed (HTTP/1.1 clients
    /// only); a 100 never is, since prefork answers `Expect` itself.
    forward_interim: bool,
    /// The client gets a chunked body's trailers (HTTP/1.1: the body passes
    /// as received), so the `Trailer` field announcing them is forwarded.
    trailers: bool,
    /// The `Via` pseudonym, if any.
    via: Option<&'a str>,
    /// Most bytes one read of the head takes: with splicing on, little more
    /// than a head, so that the body bytes read along with it (and so copied)
    /// are few.
    read_size: usize,
}

/// Read and write time limits of one exchange.
#[derive(Clone, Copy)]
struct Timeouts {
    client_read: Duration,
    client_write: Duration,
    upstream_read: Duration,
    upstream_write: Duration,
}

impl Connection {
    /// Forwards `req` to a server of `group` and its response to the client;
    /// `timer` times the wait for the response.
    pub(crate) async fn proxy(
        &mut self,
        req: &Request<'_>,
        group: &Group,
        mut timer: Pin<&mut Sleep>,
    ) -> Done {
        // More of the body is due: ACK what came at once (see `ack_now`),
        // before a connect upstream can delay it. A chunked body's end is not
        // parsed yet: taken as due.
        let body_due = match req.body {
            Framing::Length(n) => (self.buf.len() as u64) < n,
            Framing::Chunked => true,
            _ => false,
        };
        if body_due {
            ack_now(&self.stream);
        }
        // Servers whose connect failed for this request.
        let mut tried = Vec::new();
        let mut fresh = false;
        let mut retried = false;
        let Some(mut index) = group.pick(&tried) else {
            return self.no_live_server(req, group).await;
        };
        loop {
            let addr = group.server(index).addr;
            let up = match group.acquire(index, fresh).await {
                Ok(up) => up,
                Err(e) => {
                    error!(self.snapshot.log, "upstream connect failed";
                        "client" => %self.peer, "upstream" => %addr, "error" => %e, "request_id" => &self.request_id);
                    stats::failed(group.counters(index), &e);
                    self.note_failure(group, index);
                    // Like nginx, another server gets the request after a
                    // connect failure, each server at most once.
                    tried.push(index);
                    if let Some(next) = group.pick(&tried) {
                        index = next;
                        continue;
                    }
                    let close = self.must_close(req);
                    let done = self
                        .answer_error(req.version, req.is_head, e.status(), close)
                        .await;
                    return with_upstream(done, addr);
                }
            };
            let reused = up.reused;
            let busy = group.busy(index);
            let stats_busy = stats::Busy::start(group.counters(index));
            let result = self
                .exchange(req, group, up, addr, &stats_busy, timer.as_mut())
                .await;
            drop((busy, stats_busy));
            match result {
                Ok(done) => {
                    if let Some(change) = group.succeeded(index) {
                        self.log_change(group, index, change);
                    }
                    return with_upstream(done, addr);
                }
                Err(early) => {
                    let bodyless = matches!(req.body, Framing::Empty | Framing::Length(0));
                    // A pooled connection that fails before any response
                    // byte was most likely closed by the server while idle:
                    // not the server's fault.
                    let stale = early.retryable && reused;
                    if stale && !retried && req.idempotent && bodyless {
                        // The server closed an idle pooled connection as it
                        // was reused: replay once on a new connection.
                        retried = true;
                        fresh = true;
                        continue;
                    }
                    if !stale && early.is_server_failure() {
                        self.note_failure(group, index);
                    }
                    let done = self
                        .fail_early(req, early, addr, group.counters(index))
                        .await;
                    return with_upstream(done, addr);
                }
            }
        }
    }

    /// Answers 502 at once when every server of `group` is down.
    async fn no_live_server(&mut self, req: &Request<'_>, group: &Group) -> Done {
        error!(self.snapshot.log, "no live upstream server";
            "client" => %self.peer, "servers" => group.len(), "request_id" => &self.request_id);
        let close = self.must_close(req);
        self.answer_error(req.version, req.is_head, 502, close)
            .await
    }

    /// Counts a failure against server `index` (passive health).
    fn note_failure(&self, group: &Group, index: usize) {
        if let Some(change) = group.failed(index) {
            self.log_change(group, index, change);
        }
    }

    fn log_change(&self, group: &Group, index: usize, change: Change) {
        let server = &group.server(index).name;
        match change {
            Change::Down => warn!(self.snapshot.log, "upstream server marked down";
                "server" => server, "max_fails" => group.config.max_fails,
                "fail_timeout" => ?group.config.fail_timeout),
            Change::Up => info!(self.snapshot.log, "upstream server back up"; "server" => server),
        }
    }

    /// Answers the client after an exchange failed before its response.
    async fn fail_early(
        &mut self,
        req: &Request<'_>,
        early: Early,
        addr: SocketAddr,
        counters: &stats::ServerCell,
    ) -> Done {
        self.body_unread = !early.request_done;
        let log = &self.snapshot.log;
        match early.error {
            PumpError::Upstream(e) => {
                error!(log, "upstream request failed";
                    "client" => %self.peer, "upstream" => %addr, "error" => %e, "request_id" => &self.request_id);
                stats::failed(counters, &e);
                let close = !early.request_done || !req.keep_alive;
                self.answer_error(req.version, req.is_head, e.status(), close)
                    .await
            }
            PumpError::Client(e) => match e.status() {
                Some(status) => {
                    warn!(log, "bad request body";
                        "client" => %self.peer, "upstream" => %addr, "error" => %e, "request_id" => &self.request_id);
                    self.answer_error(req.version, req.is_head, status, true)
                        .await
                }
                // nginx's 499: the client went away before the response.
                None => cut_short(499),
            },
        }
    }

    fn timeouts(&self, group: &Group) -> Timeouts {
        Timeouts {
            client_read: self.snapshot.config.http.client_body_timeout,
            client_write: self.send_timeout(),
            upstream_read: group.config.read_timeout,
            upstream_write: group.config.write_timeout,
        }
    }

    /// One request/response exchange on `up`, counted in `counted`.
    #[allow(clippy::manual_async_fn)]
    fn exchange<'a, 'r>(
        &'a mut self,
        req: &'a Request<'r>,
        group: &'a Group,
        mut up: UpstreamConn,
        addr: SocketAddr,
        counted: &'a stats::Busy,
        mut deadline: Pin<&'a mut Sleep>,
    ) -> impl Future<Output = Result<Done, Early>> + use<'a, 'r> {
        // An async block, not an async fn: an async fn's future keeps each
        // argument twice (as passed and moved), in every connection's
        // future (and its memory while idle).
        async move {
            let t = self.timeouts(group);
            let Connection {
                stream,
                buf,
                request_head,
                response_head,
                snapshot,
                peer,
                request_id,
                nodelay,
                body_unread,
                ..
            } = self;
            // The client's body is read while its response is written: two
            // shared handles on one socket, as tokio's `split` makes.
            let (mut client_rd, mut client_wr) = (&*stream, &*stream);
            let (mut up_rd, mut up_wr) = up.stream.split();

            // The head and the body bytes already buffered leave together.
            let mut body = BodyCursor::request(req.body, req.max_body);
            let initial = body.take(buf).map_err(|e| Early {
                error: ClientError::BadChunk(e).into(),
                retryable: false,
                request_done: false,
            })?;
            upstream_result(
                write_two_within(&mut up_wr, request_head, &buf[..initial], t.upstream_write).await,
            )
            .map_err(|e| Early::upstream(e, true, false))?;
            buf.advance(initial);

            // `Expect` is not forwarded: prefork asks for the body itself, once
            // it is about to read it, unless the client already began sending.
            if req.expect_continue && initial == 0 && !body.is_done() {
                within(
                    t.client_write,
                    client_wr.write_all(CONTINUE),
                    ClientError::Write,
                    ClientError::WriteTimeout,
                )
                .await
                .map_err(|e| Early {
                    error: e.into(),
                    retryable: false,
                    request_done: false,
                })?;
                // Sending it may have put the connection back to delayed ACKs
                // (the kernel takes it for an interactive exchange).
                ack_now(client_wr);
            }

            // The rest of the body goes up while the response head is awaited:
            // a server may answer early before reading it.
            let mut sent: Option<Result<(), UpstreamError>> = body.is_done().then_some(Ok(()));
            let head = {
                // Pinned where they are made: moving them costs a copy each.
                let mut pump = pin!(pump_request_body(
                    snapshot.stats(),
                    snapshot.pipes(),
                    &mut client_rd,
                    buf,
                    &mut up_wr,
                    &mut body,
                    t,
                ));
                let expecting = Expecting {
                    is_head: req.is_head,
                    upgrade: req.upgrade,
                    forward_interim: req.version == Version::Http11,
                    trailers: req.version == Version::Http11,
                    via: snapshot.config.http.via.as_deref(),
                    read_size: if snapshot.pipes().is_some() {
                        splice::HEAD_READ
                    } else {
                        BODY_READ
                    },
                };
                // The read timeout runs once the request is fully sent, and
                // stops while an interim response is relayed: a slow client's
                // time is not the upstream's.
                let wait = if sent.is_some() {
                    t.upstream_read
                } else {
                    NOT_ARMED
                };
                deadline.as_mut().reset(Instant::now() + wait);
                loop {
                    let head = {
                        let mut head = pin!(read_response_head(
                            &mut up_rd,
                            &mut up.buf,
                            response_head,
                            expecting,
                        ));
                        loop {
                            tokio::select! {
                                biased;
                                result = pump.as_mut(), if sent.is_none() => {
                                    sent = Some(pumped(result)?);
                                    deadline.as_mut().reset(Instant::now() + t.upstream_read);
                                }
                                head = head.as_mut() => break head,
                                _ = deadline.as_mut() => {
                                    let request_done = matches!(sent, Some(Ok(())));
                                    return Err(Early::upstream(UpstreamError::ReadTimeout, false, request_done));
                                }
                            }
                        }
                    };
                    match head {
                        Ok(Head::Final(meta)) => break Ok(meta),
                        Err(e) => break Err(e),
                        Ok(Head::Interim) => {}
                    }
                    let mut left = deadline
                        .deadline()
                        .saturating_duration_since(Instant::now());
                    // Another head follows: under Nagle's algorithm it would wait
                    // for the ACK of this one, which a client may delay (40 ms).
                    set_nodelay(client_wr, nodelay);
                    let mut relay = pin!(write_client(&mut client_wr, response_head, &[], t));
                    loop {
                        tokio::select! {
                            biased;
                            result = pump.as_mut(), if sent.is_none() => {
                                sent = Some(pumped(result)?);
                                left = t.upstream_read;
                            }
                            written = relay.as_mut() => {
                                written.map_err(|error| Early {
                                    error,
                                    retryable: false,
                                    request_done: matches!(sent, Some(Ok(()))),
                                })?;
                                break;
                            }
                        }
                    }
                    deadline.as_mut().reset(Instant::now() + left);
                }
            };
            // The cursor counts body bytes as taken before their write upstream:
            // only a pump that finished says the whole body left (and was
            // consumed from `buf`).
            let request_done = matches!(sent, Some(Ok(())));
            *body_unread = !request_done;
            let meta = match head {
                Ok(meta) => meta,
                Err((error, any_bytes)) => {
                    let error = match (error, sent) {
                        // Report why the request could not be sent, not the
                        // closed connection that followed.
                        (UpstreamError::Closed, Some(Err(write))) => write.into(),
                        (error, _) => error.into(),
                    };
                    return Err(Early {
                        error,
                        retryable: !any_bytes,
                        request_done,
                    });
                }
            };

            if meta.status == 101 {
                // The body pump stopped where it was: bytes it had taken may be
                // half written upstream or held in a splice pipe, and would be
                // sent twice or lost ahead of the tunnel's. An upgrade request
                // has no body as a rule, so a switch before the whole body went
                // up is refused (nothing reached the client yet).
                if !request_done {
                    return Err(Early::upstream(UpstreamError::EarlySwitch, false, false));
                }
                set_nodelay(client_wr, nodelay);
                heads::finish_head(response_head, None, false, ConnectionField::Upgrade);
                let idle = snapshot.config.http.tunnel_timeout;
                // Bytes either side sent early (after its head) go first.
                let opened = async {
                    write_client(&mut client_wr, response_head, &up.buf, t).await?;
                    within(
                        t.upstream_write,
                        up_wr.write_all(buf),
                        UpstreamError::Write,
                        UpstreamError::WriteTimeout,
                    )
                    .await?;
                    Ok::<(), PumpError>(())
                };
                let sent = (response_head.len() + up.buf.len()) as u64;
                if opened.await.is_ok() {
                    buf.clear();
                    let carried =
                        tunnel::run(&mut client_rd, &mut client_wr, &mut up_rd, &mut up_wr, idle)
                            .await;
                    counted.ok();
                    snapshot.stats().read_u64(carried.up);
                    return Ok(Done {
                        served: Served {
                            status: 101,
                            bytes_sent: sent + carried.down,
                            upstream: None,
                            upstream_time: None,
                        },
                        close: true,
                    });
                }
                return Ok(cut_short(101));
            }

            // An HTTP/1.0 client cannot take chunks: decode, and close to end.
            let decode = meta.framing == Framing::Chunked && req.version == Version::Http10;
            let to_client = if decode { Framing::Close } else { meta.framing };
            let close = !req.keep_alive
                || snapshot.stopping()
                || !request_done
                || to_client == Framing::Close;
            let content_length = match meta.framing {
                Framing::Length(n) => Some(n),
                Framing::Empty if meta.status != 204 => meta.content_length,
                _ => None,
            };
            heads::finish_head(
                response_head,
                content_length,
                to_client == Framing::Chunked,
                connection_field(req.version, close),
            );

            let whole = match meta.framing {
                Framing::Empty => true,
                Framing::Length(n) => up.buf.len() as u64 >= n,
                Framing::Chunked | Framing::Close => false,
            };
            let last = close && whole;
            if !last {
                set_nodelay(client_wr, nodelay);
            }
            let mut body = BodyCursor::new(meta.framing);
            let relay = if decode {
                Relay::Decoded
            } else {
                Relay::AsIs(snapshot.pipes())
            };
            let result = send_response(
                &mut up_rd,
                &mut up.buf,
                &mut client_wr,
                OutHead {
                    bytes: response_head,
                    last,
                },
                &mut body,
                relay,
                t,
            )
            .await;
            let status = meta.status;
            let bytes_sent = match result {
                Ok(n) => n,
                // Nothing reached the client yet: it still gets an error page.
                Err((PumpError::Upstream(e), false)) => {
                    return Err(Early::upstream(e, false, request_done));
                }
                Err((error, _)) => {
                    if let PumpError::Upstream(e) = &error {
                        error!(snapshot.log, "upstream response failed";
                            "client" => %peer, "upstream" => %addr, "error" => %e, "request_id" => &*request_id);
                        counted.failed(e);
                    }
                    // Closing is the only way to tell the client the body is
                    // incomplete once its head has gone out.
                    return Ok(cut_short(status));
                }
            };
            counted.ok();
            let reusable = meta.keep_alive && request_done && meta.framing != Framing::Close;
            if reusable {
                // A body announced but absent that the server sends anyway would
                // answer the next request on the connection: bytes read with the
                // head keep it out of the pool (`release`), bytes that come
                // before it is taken again make it closed then.
                up.recheck = meta.announces_absent_body;
                group.release(up);
            }
            Ok(Done {
                served: Served {
                    status,
                    bytes_sent,
                    upstream: None,
                    upstream_time: None,
                },
                close,
            })
        }
    }
}

/// `done`, from server `addr` (the caller times it).
fn with_upstream(mut done: Done, addr: SocketAddr) -> Done {
    done.served.upstream = Some(addr);
    done
}

/// A response that ends with the connection closed before it was all sent:
/// logged with `status`, no bytes counted as sent.
fn cut_short(status: u16) -> Done {
    Done {
        served: Served {
            status,
            bytes_sent: 0,
            upstream: None,
            upstream_time: None,
        },
        close: true,
    }
}

/// Runs `io` within `limit`, mapping a timeout to `on_timeout`.
async fn within<T, E>(
    limit: Duration,
    io: impl Future<Output = std::io::Result<T>>,
    on_error: impl FnOnce(std::io::Error) -> E,
    on_timeout: E,
) -> Result<T, E> {
    match timed(limit, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(on_error(e)),
        Err(_) => Err(on_timeout),
    }
}

/// How the request body's pump ended, for `sent`; a client's failure ends
/// the exchange.
fn pumped(result: Result<(), PumpError>) -> Result<Result<(), UpstreamError>, Early> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(PumpError::Client(e)) => Err(Early {
            error: e.into(),
            retryable: false,
            request_done: false,
        }),
        // The server may still answer (say, 413): wait for it.
        Err(PumpError::Upstream(e)) => Ok(Err(e)),
    }
}

/// Forwards the rest of the request body; `buf` holds no body bytes on
/// entry (they went out with the head).
async fn pump_request_body<R, W>(
    stats: &Stats,
    mut pipes: Option<&Pipes>,
    client: &mut R,
    buf: &mut BytesMut,
    upstream: &mut W,
    body: &mut BodyCursor,
    t: Timeouts,
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin + SpliceEnd,
    W: AsyncWrite + Unpin + SpliceEnd,
{
    while !body.is_done() {
        // `buf` is empty here: the rest of the body is still in the socket.
        if let (Some(p), &mut BodyCursor::Length(left)) = (pipes, &mut *body) {
            if left >= splice::MIN_SPLICE && buf.is_empty() {
                let limits = splice::Limits {
                    read: t.client_read,
                    write: t.upstream_write,
                };
                // Boxed, as below.
                let moved = Box::pin(splice::transfer(
                    p,
                    &*client,
                    &*upstream,
                    left,
                    |n| stats.read_u64(n),
                    limits,
                ))
                .await;
                match moved {
                    Ok(Moved::Whole) => {
                        *body = BodyCursor::Done;
                        return Ok(());
                    }
                    // Copied instead, below.
                    Ok(Moved::Unsupported) => pipes = None,
                    Err(Failure::Read(e)) => return Err(ClientError::Read(e).into()),
                    Err(Failure::ReadTimeout) => return Err(ClientError::Timeout.into()),
                    Err(Failure::Closed) => return Err(ClientError::Closed.into()),
                    Err(Failure::Write(e)) => return Err(UpstreamError::Write(e).into()),
                    Err(Failure::WriteTimeout) => return Err(UpstreamError::WriteTimeout.into()),
                }
            }
        }
        buf.reserve(BODY_READ);
        let n = within(
            t.client_read,
            client.read_buf(buf),
            ClientError::Read,
            ClientError::Timeout,
        )
        .await?;
        if n == 0 {
            return Err(ClientError::Closed.into());
        }
        stats.read(n);
        let take = body.take(buf).map_err(ClientError::BadChunk)?;
        // Up to a whole read (256 KiB) at once: the write timeout counts
        // between two writes (nginx's `proxy_send_timeout`), not for it all.
        upstream_result(write_two(upstream, &buf[..take], &[], t.upstream_write).await)?;
        buf.advance(take);
    }
    Ok(())
}

/// Reads the next response head to pass on: the final one, or an interim
/// (1xx) response to relay when `forward_interim` (the others are dropped).
/// On success the head's status line and end-to-end fields are in `out`
/// (an interim head whole) and consumed from `buf`. On failure, tells
/// whether any response byte had arrived.
async fn read_response_head<R>(
    upstream: &mut R,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    expecting: Expecting<'_>,
) -> Result<Head, (UpstreamError, bool)>
where
    R: AsyncRead + Unpin,
{
    let mut any_bytes = !buf.is_empty();
    loop {
        if !buf.is_empty() {
            let parsed = with_header_slots(MAX_RESPONSE_HEADERS, |slots| {
                let Some(head) = response::parse(buf, expecting.is_head, expecting.upgrade, slots)?
                else {
                    return Ok(None);
                };
                heads::response_head_start(out, &head, expecting.via, expecting.trailers);
                let meta = ResponseMeta {
                    status: head.status,
                    framing: head.framing,
                    content_length: head.content_length,
                    keep_alive: head.keep_alive,
                    announces_absent_body: head.announces_absent_body,
                };
                Ok(Some((head.len, meta)))
            });
            match parsed {
                Ok(Some((len, meta))) => {
                    buf.advance(len);
                    if meta.status >= 200 || meta.status == 101 {
                        return Ok(Head::Final(meta));
                    }
                    if expecting.forward_interim && meta.status != 100 {
                        heads::finish_head(out, None, false, ConnectionField::Omit);
                        return Ok(Head::Interim);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err((UpstreamError::BadResponse(e), true)),
            }
        }
        buf.reserve(expecting.read_size);
        match upstream.read_buf(&mut buf.limit(expecting.read_size)).await {
            Ok(0) => return Err((UpstreamError::Closed, any_bytes)),
            Ok(_) => any_bytes = true,
            Err(e) => return Err((UpstreamError::Read(e), any_bytes)),
        }
    }
}

/// A response head on its way to the client.
struct OutHead<'a> {
    bytes: &'a [u8],
    /// The whole response is at hand and the connection closes after it:
    /// its one write may then share its last segment with the FIN.
    last: bool,
}

/// How a response body goes to the client.
#[derive(Clone, Copy)]
enum Relay<'a> {
    /// As it comes; large known lengths spliced when there are pipes.
    AsIs(Option<&'a Pipes>),
    /// Without its chunked framing (for an HTTP/1.0 client).
    Decoded,
}

/// Writes the response head and streams the body. Returns the bytes sent,
/// or the failure and whether the head had gone out.
async fn send_response<R, W>(
    upstream: &mut R,
    buf: &mut BytesMut,
    client: &mut W,
    head: OutHead<'_>,
    body: &mut BodyCursor,
    relay: Relay<'_>,
    t: Timeouts,
) -> Result<u64, (PumpError, bool)>
where
    R: AsyncRead + Unpin + SpliceEnd,
    W: TryWrite + SpliceEnd,
{
    let (decode, mut pipes) = match relay {
        Relay::AsIs(pipes) => (false, pipes),
        Relay::Decoded => (true, None),
    };
    let mut sent = 0u64;
    let mut head = Some(head);
    loop {
        // Forward what the buffer holds; the body bytes that came with the
        // head leave with it.
        if let (true, BodyCursor::Chunked(decoder)) = (decode, &mut *body) {
            if let Some(h) = head.take() {
                write_client(client, h.bytes, &[], t)
                    .await
                    .map_err(|e| (e, false))?;
                sent += h.bytes.len() as u64;
            }
            sent += write_decoded(client, decoder, buf, t)
                .await
                .map_err(|e| (e, true))?;
            if decoder.is_done() {
                *body = BodyCursor::Done;
            }
        } else {
            let n = body
                .take(buf)
                .map_err(|e| (UpstreamError::BadChunk(e).into(), head.is_none()))?;
            let h = head.take();
            let head_sent = h.is_none();
            let (h, last) = h.map_or((&[][..], false), |h| (h.bytes, h.last));
            let written = if last {
                write_last_within(client, h, &buf[..n], t.client_write).await
            } else {
                write_two_within(client, h, &buf[..n], t.client_write).await
            };
            client_result(written).map_err(|e| (e, head_sent))?;
            sent += (h.len() + n) as u64;
            buf.advance(n);
        }
        if body.is_done() {
            return Ok(sent);
        }
        // Everything buffered was forwarded (the head too): a large rest of
        // known length goes from socket to socket.
        if let (Some(p), &mut BodyCursor::Length(left)) = (pipes, &mut *body) {
            if left >= splice::MIN_SPLICE {
                let limits = splice::Limits {
                    read: t.upstream_read,
                    write: t.client_write,
                };
                // Boxed: a splice's state would otherwise weigh on every
                // connection's future, idle ones included (one allocation
                // per body of 64 KiB or more).
                let moved = Box::pin(splice::transfer(
                    p,
                    &*upstream,
                    &*client,
                    left,
                    |_| {},
                    limits,
                ))
                .await;
                match moved {
                    Ok(Moved::Whole) => {
                        *body = BodyCursor::Done;
                        return Ok(sent + left);
                    }
                    // Copied instead, below.
                    Ok(Moved::Unsupported) => pipes = None,
                    Err(f) => {
                        let error = match f {
                            Failure::Read(e) => UpstreamError::Read(e).into(),
                            Failure::ReadTimeout => UpstreamError::ReadTimeout.into(),
                            Failure::Closed => UpstreamError::Closed.into(),
                            Failure::Write(e) => ClientError::Write(e).into(),
                            Failure::WriteTimeout => ClientError::WriteTimeout.into(),
                        };
                        return Err((error, true));
                    }
                }
            }
        }
        // Everything buffered was forwarded: read the next part.
        buf.clear();
        buf.reserve(BODY_READ);
        let n = within(
            t.upstream_read,
            upstream.read_buf(buf),
            UpstreamError::Read,
            UpstreamError::ReadTimeout,
        )
        .await
        .map_err(|e| (e.into(), true))?;
        if n == 0 {
            if matches!(body, BodyCursor::UntilClose) {
                return Ok(sent);
            }
            return Err((UpstreamError::Closed.into(), true));
        }
    }
}

async fn write_client<W: TryWrite>(
    client: &mut W,
    head: &[u8],
    body: &[u8],
    t: Timeouts,
) -> Result<(), PumpError> {
    client_result(write_two_within(client, head, body, t.client_write).await)
}

/// A write to the client, as a pump's result.
fn client_result(written: Result<std::io::Result<()>, TimedOut>) -> Result<(), PumpError> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ClientError::Write(e).into()),
        Err(_) => Err(ClientError::WriteTimeout.into()),
    }
}

/// The error of a timed write upstream, as [`client_result`] for a client.
fn upstream_result(written: Result<std::io::Result<()>, TimedOut>) -> Result<(), UpstreamError> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(UpstreamError::Write(e)),
        Err(_) => Err(UpstreamError::WriteTimeout),
    }
}

/// Writes the data of the chunks in `buf` (consuming them) without the
/// chunked framing; returns the bytes written.
async fn write_decoded<W: TryWrite>(
    client: &mut W,
    decoder: &mut ChunkedDecoder,
    buf: &mut BytesMut,
    t: Timeouts,
) -> Result<u64, PumpError> {
    let mut written = 0u64;
    while !buf.is_empty() && !decoder.is_done() {
        let (n, data) = decoder.decode(buf).map_err(UpstreamError::BadChunk)?;
        if let Some(range) = data {
            written += range.len() as u64;
            write_client(client, &buf[range], &[], t).await?;
        }
        buf.advance(n);
        if n == 0 {
            break;
        }
    }
    Ok(written)
}
