//! Forwarding a request to its upstream group: pick a server, connect (or
//! take a pooled connection), run the exchange, and try again as
//! [`retry`](super::retry) allows; on failure, answer the client.

use super::answer_error;
use super::downstream::{Done, Downstream};
use super::error::{ExchangeError, PumpError};
use super::exchange::{cut_short, exchange};
use super::exchange_h2::exchange_h2;
use super::request::{Request, RequestCtx};
use super::retry::{AfterFailure, Attempts};
use crate::http::proxy_protocol::Addresses;
use crate::observe::stats;
use crate::state::Snapshot;
use crate::upstream::h2::H2Stream;
use crate::upstream::health::Change;
use crate::upstream::{Group, UpstreamConn};
use slog::{error, info, warn};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::time::Sleep;

/// Forwards `req` to a server of `group` and its response to `client`;
/// `timer` times the wait for the response.
#[allow(clippy::manual_async_fn)]
pub(super) fn forward<'a, 'r, D: Downstream>(
    client: &'a mut D,
    ctx: &'a RequestCtx,
    snapshot: &'a Snapshot,
    req: &'a Request<'r>,
    group: &'a Group,
    mut timer: Pin<&'a mut Sleep>,
) -> impl Future<Output = Done> + use<'a, 'r, D> {
    // An async block, not an async fn: see `exchange`.
    async move {
        // Before a connect upstream can delay it.
        client.forwarding(req);
        let mut attempts = Attempts::default();
        let Some(mut index) = group.pick(attempts.tried()) else {
            error!(snapshot.log, "no live upstream server";
                "client" => %ctx.client, "servers" => group.len(), "request_id" => &ctx.request_id);
            let close = client.must_close(snapshot, req);
            return answer_error(client, snapshot, req, 502, close).await;
        };
        loop {
            let addr = group.server(index).addr;
            let up = if group.speaks_h2() {
                // Boxed: HTTP/2's connect would weigh on every forward.
                Box::pin(group.acquire_h2(index, attempts.fresh()))
                    .await
                    .map(Conn::H2)
            } else if group.sends_proxy_header() {
                // The connection's PROXY header names the client; only
                // here is its socket asked for its address.
                let addresses = Addresses {
                    source: ctx.client,
                    destination: client.destination(),
                };
                group
                    .acquire_for(index, attempts.fresh(), &addresses)
                    .await
                    .map(Conn::H1)
            } else {
                group.acquire(index, attempts.fresh()).await.map(Conn::H1)
            };
            let up = match up {
                Ok(up) => up,
                Err(e) => {
                    error!(snapshot.log, "upstream connect failed";
                        "client" => %ctx.client, "upstream" => %addr, "error" => %e, "request_id" => &ctx.request_id);
                    stats::failed(group.counters(index), &e);
                    note_failure(snapshot, group, index);
                    attempts.connect_failed(index);
                    if let Some(next) = group.pick(attempts.tried()) {
                        index = next;
                        continue;
                    }
                    let close = client.must_close(snapshot, req);
                    let done = answer_error(client, snapshot, req, e.status(), close).await;
                    return with_upstream(done, addr);
                }
            };
            let reused = match &up {
                Conn::H1(up) => up.reused,
                Conn::H2(stream) => stream.reused,
            };
            let busy = group.busy(index);
            let stats_busy = stats::Busy::start(group.counters(index));
            let result = match up {
                Conn::H1(up) => {
                    exchange(
                        client,
                        ctx,
                        snapshot,
                        req,
                        group,
                        up,
                        addr,
                        &stats_busy,
                        timer.as_mut(),
                    )
                    .await
                }
                // Boxed: an HTTP/1.1 exchange's future stays as small.
                Conn::H2(stream) => {
                    Box::pin(exchange_h2(
                        client,
                        ctx,
                        snapshot,
                        req,
                        group,
                        stream,
                        index,
                        &stats_busy,
                        timer.as_mut(),
                    ))
                    .await
                }
            };
            drop((busy, stats_busy));
            match result {
                Ok((done, request_done)) => {
                    client.set_request_done(request_done);
                    if let Some(change) = group.succeeded(index) {
                        log_change(snapshot, group, index, change);
                    }
                    return with_upstream(done, addr);
                }
                Err(failure) => match attempts.after(&failure, reused, req) {
                    AfterFailure::Replay => continue,
                    AfterFailure::GiveUp { server_failed } => {
                        if server_failed {
                            note_failure(snapshot, group, index);
                        }
                        let counters = group.counters(index);
                        let done =
                            fail_early(client, ctx, snapshot, req, failure, addr, counters).await;
                        return with_upstream(done, addr);
                    }
                },
            }
        }
    }
}

/// A connection to a server, as its group's protocol has it.
enum Conn {
    /// An HTTP/1.1 connection of its own.
    H1(UpstreamConn),
    /// A stream of a shared HTTP/2 connection.
    H2(H2Stream),
}

/// Counts a failure against server `index` (passive health).
fn note_failure(snapshot: &Snapshot, group: &Group, index: usize) {
    if let Some(change) = group.failed(index) {
        log_change(snapshot, group, index, change);
    }
}

/// Logs that server `index` went down or came back up.
fn log_change(snapshot: &Snapshot, group: &Group, index: usize, change: Change) {
    let server = &group.server(index).name;
    match change {
        Change::Down => warn!(snapshot.log, "upstream server marked down";
            "server" => server, "max_fails" => group.config.max_fails,
            "fail_timeout" => ?group.config.fail_timeout),
        Change::Up => info!(snapshot.log, "upstream server back up"; "server" => server),
    }
}

/// Answers the client after an exchange failed before its response.
async fn fail_early<D: Downstream>(
    client: &mut D,
    ctx: &RequestCtx,
    snapshot: &Snapshot,
    req: &Request<'_>,
    failure: ExchangeError,
    addr: SocketAddr,
    counters: &stats::ServerCell,
) -> Done {
    client.set_request_done(failure.request_done);
    let log = &snapshot.log;
    match failure.error {
        PumpError::Upstream(e) => {
            error!(log, "upstream request failed";
                "client" => %ctx.client, "upstream" => %addr, "error" => %e, "request_id" => &ctx.request_id);
            stats::failed(counters, &e);
            let close = !failure.request_done || !req.keep_alive;
            answer_error(client, snapshot, req, e.status(), close).await
        }
        PumpError::Client(e) => match e.status() {
            Some(status) => {
                warn!(log, "bad request body";
                    "client" => %ctx.client, "upstream" => %addr, "error" => %e, "request_id" => &ctx.request_id);
                answer_error(client, snapshot, req, status, true).await
            }
            // nginx's 499: the client went away before the response.
            None => cut_short(499),
        },
    }
}

/// `done`, from server `addr` (the caller times it).
fn with_upstream(mut done: Done, addr: SocketAddr) -> Done {
    done.served.upstream = Some(addr);
    done
}
