//! One exchange with an upstream server, in phases: send the head (with
//! the body bytes at hand), stream the rest of the body while waiting for
//! the response head (relaying interim responses), then relay the response
//! body, or join a tunnel after a 101.

use super::downstream::{Done, Downstream, RequestBody, ResponseSink, Timeouts};
use super::error::{ExchangeError, PumpError};
use super::relay::relay_body;
use super::request::{Request, RequestCtx};
use super::response::{read_response_head, Expecting, Head, ResponseMeta};
use crate::http::body::BodyCursor;
use crate::http::Framing;
use crate::io::splice::{self, SpliceEnd};
use crate::io::timed::TimedOut;
use crate::io::write::{write_two, write_two_within};
use crate::io::BODY_READ;
use crate::observe::access_log::Served;
use crate::observe::stats;
use crate::state::Snapshot;
use crate::upstream::error::UpstreamError;
use crate::upstream::{Group, UpstreamConn};
use bytes::BytesMut;
use slog::error;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// Far enough away to mean "not armed yet" for a timer.
pub(super) const NOT_ARMED: Duration = Duration::from_secs(365 * 24 * 3600);

/// One request/response exchange on `up` to server `addr`, counted in
/// `counted`; `deadline` times the wait for the response head. Returns
/// what was served and whether the whole request body went upstream.
#[allow(clippy::manual_async_fn, clippy::too_many_arguments)]
pub(super) fn exchange<'a, 'r, D: Downstream>(
    client: &'a mut D,
    ctx: &'a RequestCtx,
    snapshot: &'a Snapshot,
    req: &'a Request<'r>,
    group: &'a Group,
    mut up: UpstreamConn,
    addr: SocketAddr,
    counted: &'a stats::Busy,
    deadline: Pin<&'a mut Sleep>,
) -> impl Future<Output = Result<(Done, bool), ExchangeError>> + use<'a, 'r, D> {
    // An async block, not an async fn: an async fn's future keeps each
    // argument twice (as passed and moved), in every connection's future
    // (and its memory while idle).
    async move {
        let t = timeouts(snapshot, group);
        let (mut body, mut sink) = client.split(snapshot, req);
        let (mut up_rd, mut up_wr) = up.stream.split();

        let initial = send_head(&mut body, &ctx.request_head, &mut up_wr, t).await?;
        // `Expect` is not forwarded: prefork asks for the body itself, once
        // it is about to read it, unless the client already began sending.
        if req.expect_continue && initial == 0 && !body.is_done() {
            sink.send_continue(t.client_write)
                .await
                .map_err(ExchangeError::client)?;
        }

        // The rest of the body goes up while the response head is awaited:
        // a server may answer early before reading it.
        let mut sent: Option<Result<(), UpstreamError>> = body.is_done().then_some(Ok(()));
        let expecting = Expecting {
            is_head: req.is_head,
            upgrade: req.upgrade,
            forward_interim: sink.forwards_interim(),
            via: snapshot.config.http.via.as_deref(),
            read_size: if sink.splices() && up_rd.splices() {
                splice::HEAD_READ
            } else {
                BODY_READ
            },
        };
        let head = {
            // Pinned where it is made: moving it costs a copy.
            let pump = pin!(stream_request_body(&mut body, &mut up_wr, t));
            let upstream = Upstream {
                rd: &mut up_rd,
                buf: &mut up.buf,
            };
            await_final_head(pump, &mut sent, upstream, &mut sink, expecting, deadline, t).await?
        };
        // The body source counts body bytes as taken before their write
        // upstream: only a pump that finished says the whole body left.
        let request_done = matches!(sent, Some(Ok(())));
        let meta = match head {
            Ok(meta) => meta,
            Err((error, any_bytes)) => {
                let error: PumpError = match (error, sent) {
                    // Report why the request could not be sent, not the
                    // closed connection that followed.
                    (UpstreamError::Closed, Some(Err(write))) => write.into(),
                    (error, _) => error.into(),
                };
                return Err(ExchangeError::new(error, !any_bytes, request_done));
            }
        };
        drop(body);

        if meta.status == 101 {
            // The body pump stopped where it was: bytes it had taken may be
            // half written upstream or held in a splice pipe, and would be
            // sent twice or lost ahead of the tunnel's. An upgrade request
            // has no body as a rule, so a switch before the whole body went
            // up is refused (nothing reached the client yet).
            if !request_done {
                return Err(ExchangeError::new(UpstreamError::EarlySwitch, false, false));
            }
            drop(sink);
            let opened = client
                .tunnel(snapshot, &mut up_rd, &mut up_wr, &up.buf, t)
                .await;
            return Ok(match opened {
                Some(bytes_sent) => {
                    counted.ok();
                    let done = Done {
                        served: Served {
                            status: 101,
                            bytes_sent,
                            upstream: None,
                            upstream_time: None,
                        },
                        close: true,
                    };
                    (done, request_done)
                }
                None => (cut_short(101), request_done),
            });
        }

        let plan = sink.plan_body(meta.framing);
        let close = !req.keep_alive || snapshot.stopping() || !request_done || plan.ends_session;
        let content_length = match meta.framing {
            Framing::Length(n) => Some(n),
            Framing::Empty if meta.status != 204 => meta.content_length,
            _ => None,
        };
        sink.finish_head(content_length, plan.chunked, close);
        let whole = match meta.framing {
            Framing::Empty => true,
            Framing::Length(n) => up.buf.len() as u64 >= n,
            Framing::Chunked | Framing::Close => false,
        };
        let mut body = match BodyCursor::new(meta.framing) {
            // A decoded body's trailers go to the sink as fields.
            BodyCursor::Chunked(decoder) if plan.decode => {
                BodyCursor::Chunked(decoder.keeping_trailers())
            }
            body => body,
        };
        let result = relay_body(
            &mut up_rd,
            &mut up.buf,
            &mut sink,
            close && whole,
            &mut body,
            plan.decode,
            t,
        )
        .await;
        let status = meta.status;
        let bytes_sent = match relayed(
            result,
            &mut sink,
            snapshot,
            ctx,
            addr,
            counted,
            status,
            request_done,
        ) {
            Ok(n) => n,
            Err(end) => return end,
        };
        reuse(group, up, &meta, request_done);
        let done = Done {
            served: Served {
                status,
                bytes_sent,
                upstream: None,
                upstream_time: None,
            },
            close,
        };
        Ok((done, request_done))
    }
}

/// The time limits of an exchange with a server of `group`.
pub(super) fn timeouts(snapshot: &Snapshot, group: &Group) -> Timeouts {
    let http = &snapshot.config.http;
    Timeouts {
        client_read: http.client_body_timeout,
        client_write: http.send_timeout,
        upstream_read: group.config.read_timeout,
        upstream_write: group.config.write_timeout,
        tunnel_idle: http.tunnel_timeout,
    }
}

/// Pools `up` again after a response to a request whose body was all
/// forwarded, when the server keeps it open and its end was seen.
fn reuse(group: &Group, mut up: UpstreamConn, meta: &ResponseMeta, request_done: bool) {
    if meta.keep_alive && request_done && meta.framing != Framing::Close {
        // A body announced but absent that the server sends anyway would
        // answer the next request on the connection: bytes read with the
        // head keep it out of the pool (`release`), bytes that come before
        // it is taken again make it closed then.
        up.recheck = meta.announces_absent_body;
        group.release(up);
    }
}

/// Sends the request head upstream with the body bytes already received;
/// returns how many there were.
async fn send_head<B: RequestBody, W: crate::io::write::TryWrite>(
    body: &mut B,
    head: &[u8],
    upstream: &mut W,
    t: Timeouts,
) -> Result<usize, ExchangeError> {
    let initial = body.ready().map_err(ExchangeError::client)?;
    let n = initial.len();
    upstream_result(write_two_within(upstream, head, initial, t.upstream_write).await)
        .map_err(|e| ExchangeError::new(e, true, false))?;
    body.forwarded();
    Ok(n)
}

/// The upstream side of the wait for the response head: its read half and
/// the bytes read from it and not consumed.
struct Upstream<'u, R> {
    /// The connection's read half.
    rd: &'u mut R,
    /// What was read from it and not consumed yet.
    buf: &'u mut BytesMut,
}

/// Waits for the final response head while the request body streams up
/// (`pump`, whose end goes into `sent`), relaying interim responses to the
/// client. `deadline` times the wait: it runs once the request is fully
/// sent, and stops while an interim response is relayed (a slow client's
/// time is not the upstream's). A failure of the client or the deadline
/// ends the exchange; the upstream's failure to answer is returned, with
/// whether any response byte arrived.
#[allow(clippy::manual_async_fn)]
fn await_final_head<'a, P, R, S>(
    mut pump: Pin<&'a mut P>,
    sent: &'a mut Option<Result<(), UpstreamError>>,
    upstream: Upstream<'a, R>,
    sink: &'a mut S,
    expecting: Expecting<'a>,
    mut deadline: Pin<&'a mut Sleep>,
    t: Timeouts,
) -> impl Future<Output = Result<Result<ResponseMeta, (UpstreamError, bool)>, ExchangeError>>
       + use<'a, P, R, S>
where
    P: Future<Output = Result<(), PumpError>>,
    R: AsyncRead + Unpin,
    S: ResponseSink,
{
    // An async block, not an async fn: see `exchange`.
    async move {
        let Upstream { rd, buf } = upstream;
        let wait = if sent.is_some() {
            t.upstream_read
        } else {
            NOT_ARMED
        };
        deadline.as_mut().reset(Instant::now() + wait);
        loop {
            let head = {
                let mut head = pin!(read_response_head(
                    &mut *rd, &mut *buf, &mut *sink, expecting
                ));
                loop {
                    tokio::select! {
                        biased;
                        result = pump.as_mut(), if sent.is_none() => {
                            *sent = Some(pumped(result)?);
                            deadline.as_mut().reset(Instant::now() + t.upstream_read);
                        }
                        head = head.as_mut() => break head,
                        _ = deadline.as_mut() => {
                            let request_done = matches!(sent, Some(Ok(())));
                            return Err(ExchangeError::new(UpstreamError::ReadTimeout, false, request_done));
                        }
                    }
                }
            };
            match head {
                Ok(Head::Final(meta)) => return Ok(Ok(meta)),
                Err(e) => return Ok(Err(e)),
                Ok(Head::Interim) => {}
            }
            let mut left = deadline
                .deadline()
                .saturating_duration_since(Instant::now());
            let mut relay = pin!(sink.send_interim(t.client_write));
            loop {
                tokio::select! {
                    biased;
                    result = pump.as_mut(), if sent.is_none() => {
                        *sent = Some(pumped(result)?);
                        left = t.upstream_read;
                    }
                    written = relay.as_mut() => {
                        written.map_err(|error| ExchangeError::new(
                            error,
                            false,
                            matches!(sent, Some(Ok(()))),
                        ))?;
                        break;
                    }
                }
            }
            deadline.as_mut().reset(Instant::now() + left);
        }
    }
}

/// How the request body's stream ended, for `sent`; a client's failure
/// ends the exchange.
pub(super) fn pumped(
    result: Result<(), PumpError>,
) -> Result<Result<(), UpstreamError>, ExchangeError> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(PumpError::Client(e)) => Err(ExchangeError::client(e)),
        // The server may still answer (say, 413): wait for it.
        Err(PumpError::Upstream(e)) => Ok(Err(e)),
    }
}

/// Forwards the rest of the request body; the body bytes at hand went out
/// with the head.
async fn stream_request_body<B, W>(
    body: &mut B,
    upstream: &mut W,
    t: Timeouts,
) -> Result<(), PumpError>
where
    B: RequestBody,
    W: AsyncWrite + Unpin + splice::SpliceEnd,
{
    let limits = splice::Limits {
        read: t.client_read,
        write: t.upstream_write,
    };
    while !body.is_done() {
        if upstream.splices() {
            if let Some(spliced) = body.splice_rest(&*upstream, limits).await {
                return spliced;
            }
        }
        body.receive(t.client_read).await?;
        let ready = body.ready()?;
        // Up to a whole read (256 KiB) at once: the write timeout counts
        // between two writes (nginx's `proxy_send_timeout`), not for it all.
        upstream_result(write_two(upstream, ready, &[], t.upstream_write).await)?;
        body.forwarded();
    }
    Ok(())
}

/// What relaying a response's body gave: the bytes sent, the sink told the
/// response is whole; or how the exchange ends. A failure before anything
/// reached the client is the exchange's (the client still gets an error
/// page, the request may be replayed); after, the response is cut short
/// (for HTTP/1.1, closing is the only way to tell the client the body is
/// incomplete once its head has gone out).
#[allow(clippy::too_many_arguments)]
// Inlined: as a call it cost the HTTP/1.1 path about 60 instructions per
// request (callgrind).
#[inline(always)]
pub(super) fn relayed<S: ResponseSink>(
    result: Result<u64, (PumpError, bool)>,
    sink: &mut S,
    snapshot: &Snapshot,
    ctx: &RequestCtx,
    addr: SocketAddr,
    counted: &stats::Busy,
    status: u16,
    request_done: bool,
) -> Result<u64, Result<(Done, bool), ExchangeError>> {
    match result {
        Ok(n) => {
            sink.finished(true);
            counted.ok();
            Ok(n)
        }
        Err((PumpError::Upstream(e), false)) => {
            Err(Err(ExchangeError::new(e, false, request_done)))
        }
        Err((error, _)) => {
            sink.finished(false);
            if let PumpError::Upstream(e) = &error {
                error!(snapshot.log, "upstream response failed";
                    "client" => %ctx.client, "upstream" => %addr, "error" => %e, "request_id" => &ctx.request_id);
                counted.failed(e);
            }
            Err(Ok((cut_short(status), request_done)))
        }
    }
}

/// A response that ends with the session closed before it was all sent:
/// logged with `status`, no bytes counted as sent.
pub(super) fn cut_short(status: u16) -> Done {
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

/// The error of a timed write upstream.
fn upstream_result(written: Result<std::io::Result<()>, TimedOut>) -> Result<(), UpstreamError> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(UpstreamError::Write(e)),
        Err(_) => Err(UpstreamError::WriteTimeout),
    }
}
