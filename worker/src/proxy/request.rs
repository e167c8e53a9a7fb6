//! What the proxy core makes of a request head, whatever protocol brought
//! it: the route, the request id, the head forwarded upstream, the fields
//! the access log shows; and, once it is served, its log line and counts.

use crate::http::heads;
use crate::http::request::{route_host, RequestHead};
use crate::http::{Framing, Scheme};
use crate::observe::access_log::{Entry, RequestInfo, Served, TlsInfo};
use crate::observe::request_id;
use crate::state::buffers::Scratch;
use crate::state::Snapshot;
use prefork_shared::config::RouteAction;
use std::net::SocketAddr;
use std::time::Duration;

/// A request whose head was read, as the core serves it.
pub(crate) struct Request<'s> {
    /// Whether it is a `HEAD` request (the response has no body).
    pub(crate) is_head: bool,
    /// Whether it may be replayed on another connection.
    pub(crate) idempotent: bool,
    /// Whether the client's session may go on afterwards.
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
    pub(crate) action: Option<&'s RouteAction>,
    /// Its `Host` belongs to another certificate than the one its TLS
    /// connection's SNI chose (421).
    pub(crate) misdirected: bool,
}

/// The core's state of the request being served, reused from request to
/// request of one client.
pub(crate) struct RequestCtx {
    /// The client's address.
    pub(crate) client: SocketAddr,
    /// The scheme the client speaks (`X-Forwarded-Proto`).
    scheme: Scheme,
    /// The route (index in the config; `None`: none).
    pub(crate) route: Option<usize>,
    /// The head forwarded upstream (kept for a retry); for a `redirect`
    /// route, the `Location` instead.
    pub(crate) request_head: Vec<u8>,
    /// The request's id (sent upstream as `X-Request-Id`).
    pub(crate) request_id: String,
    /// The request's fields for the access log.
    info: RequestInfo,
    /// What the client's TLS negotiated (`None`: plain HTTP).
    tls: Option<Box<TlsInfo>>,
}

impl RequestCtx {
    /// The state for requests from `client`, which speaks `scheme`, in
    /// buffers from the worker's free lists (see
    /// [`RequestCtx::take_scratch`]).
    pub(crate) fn new(client: SocketAddr, scheme: Scheme, scratch: Scratch) -> (Self, Vec<u8>) {
        let Scratch {
            request_head,
            response_head,
            request_id,
            info,
        } = scratch;
        let ctx = RequestCtx {
            client,
            scheme,
            route: None,
            request_head,
            request_id,
            info,
            tls: None,
        };
        (ctx, response_head)
    }

    /// Records what the client's TLS handshake negotiated.
    pub(crate) fn set_tls(&mut self, info: TlsInfo) {
        self.tls = Some(Box::new(info));
    }

    /// Gives the buffers back, with a session's `response_head`, for the
    /// worker's free lists.
    pub(crate) fn take_scratch(&mut self, response_head: Vec<u8>) -> Scratch {
        Scratch {
            request_head: std::mem::take(&mut self.request_head),
            response_head,
            request_id: std::mem::take(&mut self.request_id),
            info: std::mem::take(&mut self.info),
        }
    }

    /// Starts serving `head` under `snapshot`: routes it, names it (the
    /// client's own id if acceptable), builds the head to forward for a
    /// proxied request, and keeps what the access log shows. `last`: the
    /// session ends after this request whatever the client asks.
    pub(crate) fn begin<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        head: &RequestHead<'_, '_>,
        last: bool,
    ) -> Request<'s> {
        let limits = &snapshot.config.http;
        let host = head.host.unwrap_or("");
        let routed_host = route_host(host);
        self.route = snapshot.routes.lookup(&routed_host, &head.path);
        let misdirected = self
            .tls
            .as_ref()
            .is_some_and(|tls| snapshot.misdirected(tls.server_name.as_deref(), &routed_host));
        let matched = self.route.map(|i| &snapshot.config.routes[i]);
        let action = matched.map(|r| &r.action);
        let max_body = matched.map_or(limits.max_body_size, |r| r.max_body_size(limits));
        let client_id = request_id::from_client(head.headers);
        match client_id {
            Some(id) => {
                self.request_id.clear();
                self.request_id.push_str(id);
            }
            None => snapshot.next_request_id(&mut self.request_id),
        }
        if matches!(action, Some(RouteAction::Proxy(_))) {
            // A client's own id is already among the fields forwarded.
            let added_id = client_id.is_none().then_some(self.request_id.as_str());
            heads::request_head(
                &mut self.request_head,
                head,
                self.client.ip().to_canonical(),
                self.scheme,
                limits.via.as_deref(),
                added_id,
            );
        } else if let Some(RouteAction::Redirect(redirect)) = action {
            // No head is forwarded: its buffer holds the `Location`.
            super::redirect::location(
                &mut self.request_head,
                &redirect.to,
                head,
                &routed_host,
                self.scheme,
            );
        }
        if snapshot.access.any() {
            self.info.set(head);
        }
        Request {
            is_head: head.method == "HEAD",
            idempotent: head.is_idempotent(),
            keep_alive: head.keep_alive && !last,
            body: head.body,
            max_body,
            upgrade: head.upgrade,
            expect_continue: head.expect_continue,
            action,
            misdirected,
        }
    }

    /// Forgets the current request (its head could not be read): a new id,
    /// no route, no fields.
    pub(crate) fn unknown(&mut self, snapshot: &Snapshot) {
        self.info.clear();
        self.route = None;
        snapshot.next_request_id(&mut self.request_id);
    }

    /// Counts the request served and writes its access-log line; `took`:
    /// from its head to the end of its response (a proxied request's
    /// upstream part is timed from the same start).
    pub(crate) fn record(&self, snapshot: &Snapshot, served: &Served, took: Duration) {
        let served = Served {
            upstream_time: served.upstream.map(|_| took),
            ..*served
        };
        snapshot.count_request(self.route, served.status, served.bytes_sent, took);
        snapshot.access.record(&Entry {
            client: self.client,
            info: &self.info,
            request_id: &self.request_id,
            route: self.route,
            served: &served,
            total: took,
            tls: self.tls.as_deref(),
        });
    }
}
