//! The proxy core driven by a client that is not an HTTP/1.1 connection:
//! [`MessageClient`] hands the core a request head built field by field and
//! its body as unframed pieces of data, and takes the response as a status,
//! fields and decoded data, the way an HTTP/2 stream does. Routing, the
//! request id, body limits, retries, time limits and the counters work for
//! it through the `Downstream` seam alone, with no change to the core.

use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::{Framing, Scheme, Version};
use crate::io::splice::{self, Failure, Moved, SpliceEnd};
use crate::observe::access_log::Served;
use crate::proxy::downstream::{BodyPlan, RequestBody, ResponseSink, Timeouts};
use crate::proxy::error::{ClientError, PumpError};
use crate::proxy::{serve, Done, Downstream, Request, RequestCtx};
use crate::state::Snapshot;
use crate::testing::config;
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};
use prefork_testkit::origins::SilentOrigin;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::sleep;

/// A request as a message-level protocol carries it.
struct Message {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    fields: Vec<(&'static str, &'static str)>,
    /// The body, in the pieces it arrives in (no framing).
    body: Option<Vec<&'static [u8]>>,
}

/// What the client received.
#[derive(Debug, Default)]
struct Received {
    /// The interim responses relayed to it.
    interim: Vec<u16>,
    /// The status of the interim head started and not yet relayed.
    pending_interim: Option<u16>,
    status: Option<u16>,
    /// The `Location` of an answer of the core's own.
    location: Option<String>,
    fields: Vec<(String, String)>,
    data: Vec<u8>,
    /// The trailer fields, lower-cased, once the body ended with them.
    trailers: Option<Vec<(String, String)>>,
    /// The final head's length (if known) and whether the core asked to end
    /// the session after it.
    head: Option<(Option<u64>, bool)>,
    /// How the response ended: whole or cut short.
    whole: Option<bool>,
    /// Whether the core said the request body was all forwarded.
    request_done: Option<bool>,
}

/// The client side of one message-level request.
struct MessageClient {
    body: Pieces,
    got: Received,
}

/// A request body as it arrives.
struct Pieces {
    /// Pieces not yet received by the core.
    waiting: VecDeque<&'static [u8]>,
    /// Body bytes received, framed for the upstream (chunked), not yet
    /// forwarded.
    framed: Vec<u8>,
    done: bool,
    /// Body data received so far, and the most allowed (0: no limit).
    received: u64,
    limit: u64,
}

impl MessageClient {
    fn new(message: &Message) -> Self {
        MessageClient {
            body: Pieces {
                waiting: message.body.clone().unwrap_or_default().into(),
                framed: Vec::new(),
                done: message.body.is_none(),
                received: 0,
                limit: 0,
            },
            got: Received::default(),
        }
    }
}

struct Body<'a>(&'a mut Pieces);
struct Sink<'a> {
    got: &'a mut Received,
    head_sent: bool,
}

impl Downstream for MessageClient {
    type Body<'a> = Body<'a>;
    type Sink<'a> = Sink<'a>;

    fn split<'a>(&'a mut self, _: &'a Snapshot, req: &Request<'_>) -> (Body<'a>, Sink<'a>) {
        let MessageClient { body, got } = self;
        body.limit = req.max_body;
        let sink = Sink {
            got,
            head_sent: false,
        };
        (Body(body), sink)
    }

    fn forwarding(&mut self, _: &Request<'_>) {}

    fn destination(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 80))
    }

    fn must_close(&mut self, _: &Snapshot, _: &Request<'_>) -> bool {
        false
    }

    fn set_request_done(&mut self, done: bool) {
        self.got.request_done = Some(done);
    }

    async fn answer(
        &mut self,
        _: &Snapshot,
        _: bool,
        status: u16,
        _: &str,
        location: Option<&str>,
        body: &[u8],
        close: bool,
    ) -> Done {
        self.got.status = Some(status);
        self.got.location = location.map(str::to_owned);
        self.got.data.extend_from_slice(body);
        Done {
            served: Served {
                status,
                bytes_sent: body.len() as u64,
                upstream: None,
                upstream_time: None,
            },
            close,
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
        None
    }
}

impl RequestBody for Body<'_> {
    fn is_done(&self) -> bool {
        self.0.done
    }

    fn ready(&mut self) -> Result<&[u8], ClientError> {
        Ok(&self.0.framed)
    }

    fn forwarded(&mut self) {
        self.0.framed.clear();
    }

    async fn receive(&mut self, _: Duration) -> Result<(), ClientError> {
        // One piece arrives (as a DATA frame would), framed as a chunk; the
        // end of the body, as the last chunk.
        let body = &mut *self.0;
        match body.waiting.pop_front() {
            Some(piece) => {
                body.received += piece.len() as u64;
                if body.limit > 0 && body.received > body.limit {
                    return Err(ClientError::TooLarge);
                }
                body.framed
                    .extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                body.framed.extend_from_slice(piece);
                body.framed.extend_from_slice(b"\r\n");
            }
            None => {
                body.framed.extend_from_slice(b"0\r\n\r\n");
                body.done = true;
            }
        }
        Ok(())
    }

    async fn splice_rest<W: SpliceEnd>(
        &mut self,
        _: &W,
        _: splice::Limits,
    ) -> Option<Result<(), PumpError>> {
        None
    }
}

impl ResponseSink for Sink<'_> {
    fn forwards_interim(&self) -> bool {
        true
    }

    fn splices(&self) -> bool {
        false
    }

    fn plan_body(&self, _: Framing) -> BodyPlan {
        // Data only, whatever the upstream's framing, and the end of the
        // body is the end of the stream, not of the session.
        BodyPlan {
            decode: true,
            chunked: false,
            ends_session: false,
        }
    }

    fn start_head(&mut self, head: &ResponseHead<'_, '_>, _: Option<&str>) {
        if head.status < 200 {
            self.got.pending_interim = Some(head.status);
            return;
        }
        self.got.status = Some(head.status);
        self.got.fields = lowercase(head.headers);
    }

    async fn send_interim(&mut self, _: Duration) -> Result<(), ClientError> {
        self.got.interim.extend(self.got.pending_interim.take());
        Ok(())
    }

    async fn send_continue(&mut self, _: Duration) -> Result<(), ClientError> {
        Ok(())
    }

    fn finish_head(&mut self, content_length: Option<u64>, _: bool, close: bool) {
        self.got.head = Some((content_length, close));
    }

    fn head_sent(&self) -> bool {
        self.head_sent
    }

    async fn send(&mut self, body: &[u8], _: bool, _: Duration) -> Result<u64, ClientError> {
        self.head_sent = true;
        self.got.data.extend_from_slice(body);
        Ok(body.len() as u64)
    }

    async fn send_trailers(
        &mut self,
        fields: &[httparse::Header<'_>],
        _: Duration,
    ) -> Result<u64, ClientError> {
        self.head_sent = true;
        self.got.trailers = Some(lowercase(fields));
        Ok(0)
    }

    fn finished(&mut self, whole: bool) {
        self.got.whole = Some(whole);
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

/// `fields` as (lower-case name, value) pairs.
fn lowercase(fields: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect()
}

/// Serves `messages` one after another through the core, under one
/// snapshot of the test configuration with `origin` as the `app` upstream;
/// returns what each client received and the worker's counters.
fn serve_all(
    origin: SocketAddr,
    messages: &[Message],
) -> (Vec<Received>, prefork_shared::stats::WorkerStats) {
    serve_all_with(config(origin), messages)
}

/// As [`serve_all`], under `config`.
fn serve_all_with(
    config: prefork_shared::Config,
    messages: &[Message],
) -> (Vec<Received>, prefork_shared::stats::WorkerStats) {
    crate::testing::run_local(async {
        let (snapshot, _stop) = crate::testing::snapshot(config);
        let client_addr: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        // As an HTTP/2 stream behind TLS would be.
        let (mut ctx, _) = RequestCtx::new(client_addr, Scheme::Https, Default::default());
        let mut timer = pin!(sleep(Duration::ZERO));
        let mut received = Vec::new();
        for message in messages {
            let headers: Vec<httparse::Header<'_>> = message
                .fields
                .iter()
                .map(|(name, value)| httparse::Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect();
            let head = RequestHead {
                method: message.method,
                target: message.path,
                path: Cow::Borrowed(message.path.as_bytes()),
                version: Version::Http11,
                headers: &headers,
                len: 0,
                host: Some(message.host),
                body: if message.body.is_some() {
                    Framing::Chunked
                } else {
                    Framing::Empty
                },
                keep_alive: true,
                upgrade: false,
                expect_continue: false,
            };
            let req = ctx.begin(&snapshot, &head, false);
            let mut client = MessageClient::new(message);
            let started = tokio::time::Instant::now();
            let done = serve(&mut client, &ctx, &snapshot, &req, timer.as_mut()).await;
            ctx.record(&snapshot, &done.served, started.elapsed());
            received.push(client.got);
        }
        (received, snapshot.stats_snapshot())
    })
}

fn get(host: &'static str, path: &'static str) -> Message {
    Message {
        method: "GET",
        host,
        path,
        fields: vec![("host", host), ("accept", "*/*")],
        body: None,
    }
}

#[test]
fn a_message_level_client_is_routed_answered_and_counted_by_the_same_core() {
    let origin = EchoOrigin::start();
    let upload = Message {
        method: "POST",
        host: "app.test",
        path: "/app/upload",
        fields: vec![("host", "app.test"), ("content-type", "text/plain")],
        body: Some(vec![b"first ", b"second ", b"third"]),
    };
    let (got, stats) = serve_all(
        origin.addr(),
        &[
            get("app.test", "/app/chunked"),
            upload,
            get("fixed.test", "/"),
            get("app.test", "/nowhere"),
        ],
    );

    // Proxied, and the chunked response arrives as data alone, whole.
    assert_eq!(got[0].status, Some(200));
    assert_eq!(got[0].data, b"hello, world");
    assert_eq!(got[0].head, Some((None, false)));
    assert_eq!(got[0].whole, Some(true));
    // The body went up framed as the forwarded head announced, whole.
    assert_eq!(got[1].status, Some(200));
    let echoed = String::from_utf8_lossy(&got[1].data).into_owned();
    assert!(
        echoed.contains("Transfer-Encoding: chunked\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("X-Request-Id: "), "{echoed}");
    assert!(
        echoed.contains("X-Forwarded-For: 192.0.2.7\r\n"),
        "{echoed}"
    );
    assert!(echoed.ends_with("first second third"), "{echoed}");
    // The core's own answers: a `respond` route, then no route.
    assert_eq!(got[2].status, Some(201));
    assert_eq!(got[2].data, b"fixed\n");
    assert_eq!(got[3].status, Some(404));
    // Counted per route as any request: two on `/app`, one each on the
    // fixed route and unrouted.
    let by_route: Vec<(String, u64)> = stats
        .routes
        .iter()
        .map(|r| (r.route.clone(), r.requests()))
        .collect();
    assert_eq!(
        by_route,
        [
            ("*/app".to_owned(), 2),
            ("*/down".to_owned(), 0),
            ("fixed.test/".to_owned(), 1),
            ("-".to_owned(), 1),
        ]
    );
}

#[test]
fn a_message_level_client_gets_the_cores_retries_and_time_limits() {
    // The second request finds its pooled connection closed by the server:
    // the core replays it on a new one.
    let origin = EchoOrigin::start();
    let (got, _) = serve_all(
        origin.addr(),
        &[
            get("app.test", "/app/drop-second"),
            get("app.test", "/app/drop-second"),
        ],
    );
    assert_eq!((got[0].status, got[1].status), (Some(200), Some(200)));
    assert_eq!(origin.connections(), 2);

    // A server that never answers: 504 after the upstream's read timeout.
    let silent = SilentOrigin::start();
    let (got, _) = serve_all(silent.addr(), &[get("app.test", "/app/x")]);
    assert_eq!(got[0].status, Some(504));
}

#[test]
fn a_message_level_client_gets_interim_responses_as_such() {
    let origin = HandlerOrigin::start(|mut conn, _| {
        if conn.read_request().ok().flatten().is_some() {
            // A 100 is never relayed (prefork answers `Expect` itself).
            let _ = conn.send(
                b"HTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    let (got, _) = serve_all(origin.addr(), &[get("app.test", "/app/hints")]);
    assert_eq!(got[0].interim, [103]);
    assert_eq!(got[0].status, Some(200));
    assert_eq!(got[0].data, b"ok");
    assert_eq!(got[0].head, Some((Some(2), false)));
    assert_eq!(got[0].whole, Some(true));
}

#[test]
fn a_message_level_clients_body_is_held_to_the_routes_limit() {
    let origin = EchoOrigin::start();
    let mut limited = config(origin.addr());
    limited.http.max_body_size = 10;
    let upload = Message {
        method: "POST",
        host: "app.test",
        path: "/app/upload",
        fields: vec![("host", "app.test")],
        body: Some(vec![b"first ", b"second ", b"third"]),
    };
    let (got, _) = serve_all_with(limited, &[upload]);
    assert_eq!(got[0].status, Some(413));
    assert_eq!(got[0].request_done, Some(false));
}

#[test]
fn a_response_cut_short_is_told_to_a_message_level_client() {
    // Ten bytes announced, five sent, then the connection closes.
    let origin = HandlerOrigin::start(|mut conn, _| {
        if conn.read_request().ok().flatten().is_some() {
            let _ = conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        }
    });
    let (got, _) = serve_all(origin.addr(), &[get("app.test", "/app/short")]);
    assert_eq!(got[0].status, Some(200));
    assert_eq!(got[0].data, b"hello");
    assert_eq!(got[0].whole, Some(false));
}

/// A `redirect` route is answered by the core with its status and a
/// `Location` built from the request, and counted as any request.
#[test]
fn a_redirect_route_is_answered_by_the_core() {
    use prefork_shared::config::{
        HostMatch, Redirect, RedirectPart, RedirectVar, Route, RouteAction,
    };
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    config.routes.push(Route {
        host: HostMatch::Exact("moved.test".into()),
        path: "/".into(),
        action: RouteAction::Redirect(Redirect {
            status: 308,
            to: vec![
                RedirectPart::Text("https://".into()),
                RedirectPart::Var(RedirectVar::Host),
                RedirectPart::Var(RedirectVar::RequestUri),
            ],
        }),
        access_log: Default::default(),
        max_body_size: None,
    });
    let (got, stats) = serve_all_with(config, &[get("Moved.Test:8080", "/old?a=1")]);
    assert_eq!(got[0].status, Some(308));
    assert_eq!(
        got[0].location.as_deref(),
        Some("https://moved.test/old?a=1")
    );
    assert!(
        String::from_utf8_lossy(&got[0].data).contains("308 Permanent Redirect"),
        "{:?}",
        got[0]
    );
    let moved = stats
        .routes
        .iter()
        .find(|r| r.route == "moved.test/")
        .unwrap();
    assert_eq!(moved.requests(), 1);
}

/// A chunked response's trailers reach a message-level client as fields,
/// after its data; a chunked body without trailers ends with none.
#[test]
fn a_chunked_upstreams_trailers_reach_a_message_level_client_as_fields() {
    let origin = HandlerOrigin::start(|mut conn, _| {
        while let Ok(Some(request)) = conn.read_request_head() {
            let trailers = if request.path.contains("with") {
                "grpc-status: 0\r\ngrpc-message: fine\r\n"
            } else {
                ""
            };
            let r = format!(
                "HTTP/1.1 200 OK\r\nTrailer: grpc-status\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n{trailers}\r\n"
            );
            if conn.send(r.as_bytes()).is_err() {
                return;
            }
        }
    });
    let (got, _) = serve_all(
        origin.addr(),
        &[get("app.test", "/app/with"), get("app.test", "/app/none")],
    );
    assert_eq!(got[0].data, b"hello");
    assert_eq!(
        got[0].trailers.as_deref(),
        Some(
            &[
                ("grpc-status".to_owned(), "0".to_owned()),
                ("grpc-message".to_owned(), "fine".to_owned())
            ][..]
        )
    );
    assert_eq!(got[0].whole, Some(true));
    assert_eq!(got[1].data, b"hello");
    assert_eq!(got[1].trailers.as_deref(), Some(&[][..]));
    assert_eq!(origin.connections(), 1, "the connection was reused");
}
