//! The proxy core: what happens to a request once its head is read,
//! whatever protocol the client speaks. A client's session (see
//! [`downstream`]) hands the head to [`RequestCtx::begin`], which routes it,
//! then calls [`serve`], and [`RequestCtx::record`] once it is done.
//!
//! - `request`: routing, request ids, the head forwarded upstream, the
//!   access-log line and counters;
//! - `downstream`: the seam: what the core needs of the client side;
//! - `forward`: pick a server, connect, retry (`retry` decides), answer
//!   failures;
//! - `redirect`: a `redirect` route's `Location`;
//! - `exchange`: one exchange with a server, in phases (`response` reads
//!   its head, `relay` its body); `exchange_h2`: the same with a server
//!   that speaks HTTP/2, on a stream of a shared connection;
//! - `error`: failures, classified: the client's or the upstream's, and
//!   whether the request may be replayed.

pub(crate) mod downstream;
pub(crate) mod error;
mod exchange;
mod exchange_h2;
mod forward;
mod redirect;
mod relay;
pub(crate) mod request;
mod response;
mod retry;

pub(crate) use downstream::{Done, Downstream};
pub(crate) use request::{Request, RequestCtx};

use crate::http::{heads, Framing};
use crate::state::Snapshot;
use prefork_shared::config::RouteAction;
use slog::error;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Sleep;

/// Serves `req`, whose head `client` read and `ctx` began: refuses a body
/// announced too large, answers by itself (no route: 404; a `respond`
/// route, a `redirect`), or forwards it; `timer` times the wait for an upstream's
/// response.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<'a, 'r, D: Downstream>(
    client: &'a mut D,
    ctx: &'a RequestCtx,
    snapshot: &'a Snapshot,
    req: &'a Request<'r>,
    timer: Pin<&'a mut Sleep>,
) -> impl Future<Output = Done> + use<'a, 'r, D> {
    // An async block, not an async fn: an async fn's future keeps each
    // argument twice (as passed and moved), in every connection's future.
    async move {
        if let Framing::Length(n) = req.body {
            if req.max_body > 0 && n > req.max_body {
                // Refused before reading it; the session absorbs what the
                // client already sent.
                return answer_error(client, snapshot, req, 413, true).await;
            }
        }
        if req.misdirected {
            let close = client.must_close(snapshot, req);
            return answer_error(client, snapshot, req, 421, close).await;
        }
        match req.action {
            None => {
                let close = client.must_close(snapshot, req);
                answer_error(client, snapshot, req, 404, close).await
            }
            Some(RouteAction::Respond(fixed)) => {
                let close = client.must_close(snapshot, req);
                let body = fixed.body.as_bytes();
                client
                    .answer(
                        snapshot,
                        req.is_head,
                        fixed.status,
                        &fixed.content_type,
                        None,
                        body,
                        close,
                    )
                    .await
            }
            Some(RouteAction::Redirect(redirect)) => {
                let close = client.must_close(snapshot, req);
                // `begin` built the `Location` where a forwarded head goes.
                let location = String::from_utf8_lossy(&ctx.request_head);
                let body = heads::error_body(redirect.status);
                client
                    .answer(
                        snapshot,
                        req.is_head,
                        redirect.status,
                        "text/html",
                        Some(&location),
                        body.as_bytes(),
                        close,
                    )
                    .await
            }
            Some(RouteAction::Proxy(name)) => match snapshot.upstreams.get(name) {
                Some(group) => forward::forward(client, ctx, snapshot, req, group, timer).await,
                None => {
                    // Validation guarantees the upstream exists and has servers.
                    error!(snapshot.log, "route names an unknown or empty upstream"; "upstream" => name);
                    let close = client.must_close(snapshot, req);
                    answer_error(client, snapshot, req, 500, close).await
                }
            },
        }
    }
}

/// Answers an error page.
async fn answer_error<D: Downstream>(
    client: &mut D,
    snapshot: &Snapshot,
    req: &Request<'_>,
    status: u16,
    close: bool,
) -> Done {
    let body = heads::error_body(status);
    client
        .answer(
            snapshot,
            req.is_head,
            status,
            "text/html",
            None,
            body.as_bytes(),
            close,
        )
        .await
}

#[cfg(test)]
mod tests;
