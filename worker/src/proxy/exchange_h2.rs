//! One exchange with a server that speaks HTTP/2 (`protocol = "h2c"` or
//! `"h2"`), on a stream of a shared connection: the forwarded head, built
//! once as HTTP/1.1 text by the core, becomes the stream's HEADERS; the
//! request body, framed as that head announces, becomes DATA frames and,
//! for a chunked body, its trailer section a trailing HEADERS frame. The
//! response goes into the same sink as an HTTP/1.1 upstream's, its data
//! as the client takes it (the stream's window opens only then, so a slow
//! client slows the server), its trailers through
//! [`ResponseSink::send_trailers`]. The request body keeps streaming up
//! while the response comes down (gRPC's bidirectional streams).

use super::downstream::{Done, Downstream, RequestBody, ResponseSink, Timeouts};
use super::error::{ClientError, ExchangeError, PumpError};
use super::exchange::{pumped, relayed, timeouts, NOT_ARMED};
use super::request::{Request, RequestCtx};
use crate::http::chunked::{parse_trailers, ChunkedDecoder, MAX_TRAILER_FIELDS};
use crate::http::response::{ResponseError, ResponseHead, MAX_RESPONSE_HEADERS};
use crate::http::{merge_content_length, reason, with_header_slots, Framing, Version};
use crate::io::timed::timed;
use crate::observe::access_log::Served;
use crate::observe::stats;
use crate::state::Snapshot;
use crate::upstream::error::UpstreamError;
use crate::upstream::h2::H2Stream;
use crate::upstream::Group;
use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use std::future::poll_fn;
use std::future::Future;
use std::io::Write;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Fields of an HTTP/1.1 head that HTTP/2 does not carry: the connection's
/// own (RFC 9113 §8.2.2), the framing (DATA frames frame the body), and
/// `Host`, which becomes `:authority`.
const NOT_FORWARDED: [&str; 8] = [
    "connection",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Fields prefork may add to a forwarded head beyond the client's.
const ADDED_FIELDS: usize = 16;

/// One exchange of `req` with server `index` on `stream`, counted in
/// `counted`; `deadline` times the wait for the response head. Returns
/// what was served and whether the whole request body went upstream.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange_h2<D: Downstream>(
    client: &mut D,
    ctx: &RequestCtx,
    snapshot: &Snapshot,
    req: &Request<'_>,
    group: &Group,
    stream: H2Stream,
    index: usize,
    counted: &stats::Busy,
    mut deadline: Pin<&mut Sleep>,
) -> Result<(Done, bool), ExchangeError> {
    let t = timeouts(snapshot, group);
    let scheme = if group.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = group.server(index);
    let addr = server.addr;
    let fields = snapshot.config.http.max_request_headers + ADDED_FIELDS;
    let head = request(&ctx.request_head, scheme, &server.name, fields)
        .map_err(|e| ExchangeError::new(e, true, false))?;
    let (mut body, mut sink) = client.split(snapshot, req);
    let bodyless = matches!(req.body, Framing::Empty | Framing::Length(0));

    // The request never left: the connection is given up, the request may
    // go elsewhere.
    let unsent = |e| {
        stream.retire_connection();
        ExchangeError::new(UpstreamError::http2_unsent(e), true, false)
    };
    let mut send = stream.send.clone().ready().await.map_err(unsent)?;
    let (response, up) = send.send_request(head, bodyless).map_err(unsent)?;
    // `Expect` is not forwarded: prefork asks for the body itself once the
    // stream is open, unless the client already began sending it.
    let waiting = !bodyless && !body.is_done() && body.ready().is_ok_and(<[u8]>::is_empty);
    if req.expect_continue && waiting {
        sink.send_continue(t.client_write)
            .await
            .map_err(ExchangeError::client)?;
    }
    let mut sent: Option<Result<(), UpstreamError>> = bodyless.then_some(Ok(()));
    let mut pump = pin!(pump_body(&mut body, req.body, up, bodyless, t));

    // The response head, while the body goes up; the wait is timed once
    // the request is all sent.
    let wait = if sent.is_some() {
        t.upstream_read
    } else {
        NOT_ARMED
    };
    deadline.as_mut().reset(Instant::now() + wait);
    let mut response = response;
    // Interim (1xx) responses are relayed as an HTTP/1.1 upstream's are
    // (a 100 never is: prefork answers `Expect` itself).
    let mut interim = sink.forwards_interim();
    let response = loop {
        tokio::select! {
            biased;
            result = pump.as_mut(), if sent.is_none() => {
                sent = Some(pumped(result)?);
                deadline.as_mut().reset(Instant::now() + t.upstream_read);
            }
            head = next_head(&mut response, interim) => match head {
                Head::Interim(Some(Ok(head))) if head.status() != http::StatusCode::CONTINUE => {
                    let (parts, ()) = head.into_parts();
                    start_interim(&parts, &mut sink, snapshot);
                    sink.send_interim(t.client_write).await.map_err(|error| {
                        ExchangeError::new(error, false, matches!(sent, Some(Ok(()))))
                    })?;
                }
                Head::Interim(Some(Ok(_))) => {}
                // The final response tells of a failure.
                Head::Interim(Some(Err(_)) | None) => interim = false,
                Head::Final(response) => break response,
            },
            _ = deadline.as_mut() => {
                let request_done = matches!(sent, Some(Ok(())));
                return Err(ExchangeError::new(UpstreamError::ReadTimeout, false, request_done));
            }
        }
    };
    let request_done = matches!(sent, Some(Ok(())));
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            let error = match (UpstreamError::http2(e), sent) {
                // Why the request could not be sent, rather than the
                // stream's end that followed.
                (e, Some(Err(write))) if !e.unprocessed() => write,
                (e, _) => e,
            };
            if error.unprocessed() {
                stream.retire_connection();
            }
            return Err(ExchangeError::new(error, true, request_done));
        }
    };
    let (parts, mut recv) = response.into_parts();
    let meta = start_head(&parts, &recv, req.is_head, &mut sink, snapshot)
        .map_err(|e| ExchangeError::new(e, false, request_done))?;

    let plan = sink.plan_body(meta.framing);
    let close = !req.keep_alive || snapshot.stopping() || !request_done || plan.ends_session;
    let content_length = match meta.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty if meta.status != 204 => meta.content_length,
        _ => None,
    };
    sink.finish_head(content_length, plan.chunked, close);
    let relay = Relay {
        // The client takes the chunked coding, which HTTP/2 data is not in.
        frame_chunks: plan.chunked && !plan.decode,
        unknown_length: meta.framing == Framing::Chunked,
        bodyless: meta.framing == Framing::Empty,
    };
    let result = {
        let mut body_pump = if sent.is_none() {
            Some(pump.as_mut())
        } else {
            None
        };
        relay
            .run(&mut recv, &mut sink, &mut body_pump, &mut sent, t)
            .await
    };
    let request_done = matches!(sent, Some(Ok(())));
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
    let done = Done {
        served: Served {
            status,
            bytes_sent,
            upstream: None,
            upstream_time: None,
        },
        close: close || !request_done,
    };
    Ok((done, request_done))
}

/// The request HEADERS for the forwarded head `head` (prefork's own,
/// HTTP/1.1 text), to a server reached by `scheme`; `server` is the
/// `:authority` of a request without `Host`; the head has at most
/// `max_fields` fields. `te: trailers` is always sent: prefork takes
/// trailers, whatever its client does with them (gRPC servers require it).
fn request(
    head: &[u8],
    scheme: &str,
    server: &str,
    max_fields: usize,
) -> Result<http::Request<()>, UpstreamError> {
    with_header_slots(max_fields, |slots| {
        let mut parsed = httparse::Request::new(&mut []);
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            head,
            slots,
        ) {
            Ok(httparse::Status::Complete(_)) => convert(&parsed, scheme, server),
            _ => Err(UpstreamError::Http2Head("the head")),
        }
    })
}

/// [`request`], from the parsed head.
fn convert(
    parsed: &httparse::Request<'_, '_>,
    scheme: &str,
    server: &str,
) -> Result<http::Request<()>, UpstreamError> {
    let method = Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes())
        .map_err(|_| UpstreamError::Http2Head("the method"))?;
    let host = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .filter(|v| !v.is_empty())
        .unwrap_or(server.as_bytes());
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(host)
        .path_and_query(parsed.path.unwrap_or("/"))
        .build()
        .map_err(|_| UpstreamError::Http2Head("the target or Host"))?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())
        .map_err(|_| UpstreamError::Http2Head("the head"))?;
    let fields = request.headers_mut();
    for h in parsed.headers.iter() {
        if NOT_FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| UpstreamError::Http2Head("a field name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| UpstreamError::Http2Head("a field value"))?;
        fields.append(name, value);
    }
    fields.insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(request)
}

/// What the core needs of the response head once the sink took it.
struct Meta {
    status: u16,
    framing: Framing,
    content_length: Option<u64>,
}

/// A response head of the stream.
enum Head {
    /// An interim one; `None`: no more are coming.
    Interim(Option<Result<http::Response<()>, h2::Error>>),
    /// The final one.
    Final(Result<http::Response<RecvStream>, h2::Error>),
}

/// The next response head of `response`: interim ones too if `interim`.
async fn next_head(response: &mut ResponseFuture, interim: bool) -> Head {
    poll_fn(|cx| {
        if interim {
            if let Poll::Ready(head) = response.poll_informational(cx) {
                return Poll::Ready(Head::Interim(head));
            }
        }
        Pin::new(&mut *response).poll(cx).map(Head::Final)
    })
    .await
}

/// Gives the sink the status and fields of an interim response.
fn start_interim<S: ResponseSink>(
    parts: &http::response::Parts,
    sink: &mut S,
    snapshot: &Snapshot,
) {
    let fields = fields_of(&parts.headers);
    let status = parts.status.as_u16();
    let head = ResponseHead {
        status,
        version: Version::Http2,
        reason: reason(status),
        headers: &fields,
        len: 0,
        content_length: None,
        framing: Framing::Empty,
        keep_alive: true,
        announces_absent_body: false,
    };
    sink.start_head(&head, snapshot.config.http.via.as_deref());
}

/// Gives the sink the status and fields of the response head, as an
/// HTTP/1.1 upstream's would be; returns how its body is framed: by its
/// `content-length` if any, else of unknown length (as chunked).
fn start_head<S: ResponseSink>(
    parts: &http::response::Parts,
    recv: &RecvStream,
    is_head: bool,
    sink: &mut S,
    snapshot: &Snapshot,
) -> Result<Meta, UpstreamError> {
    let status = parts.status.as_u16();
    if parts.headers.len() > MAX_RESPONSE_HEADERS {
        return Err(UpstreamError::BadResponse(ResponseError::TooManyHeaders));
    }
    let mut content_length = None;
    for value in parts.headers.get_all(http::header::CONTENT_LENGTH) {
        content_length = merge_content_length(content_length, value.as_bytes())
            .map_err(|_| UpstreamError::BadResponse(ResponseError::InvalidContentLength))?;
    }
    let bodyless = is_head || status == 204 || status == 304;
    let framing = match content_length {
        _ if bodyless => Framing::Empty,
        Some(n) => Framing::Length(n),
        None if recv.is_end_stream() => {
            content_length = Some(0);
            Framing::Empty
        }
        None => Framing::Chunked,
    };
    let fields = fields_of(&parts.headers);
    let head = ResponseHead {
        status,
        version: Version::Http2,
        reason: reason(status),
        headers: &fields,
        len: 0,
        content_length,
        framing,
        keep_alive: true,
        announces_absent_body: false,
    };
    sink.start_head(&head, snapshot.config.http.via.as_deref());
    Ok(Meta {
        status,
        framing,
        content_length,
    })
}

/// How the response body reaches the sink.
struct Relay {
    /// Each DATA frame's bytes go as a chunk (the client gets the chunked
    /// coding and the sink passes bytes as they are).
    frame_chunks: bool,
    /// The body's length was not announced: the sink is told of its end
    /// (and trailers) by `send_trailers`.
    unknown_length: bool,
    /// The response has no body (to `HEAD`, a 204 or 304, or none came):
    /// nothing more is read from the stream.
    bodyless: bool,
}

/// The request body's pump, while it still runs.
type Pump<'p, P> = Option<Pin<&'p mut P>>;

impl Relay {
    /// Relays the response body and trailers from `recv` to `sink`, while
    /// `pump` (if still running) streams the request body up, its end
    /// going into `sent`. Returns the bytes sent, or the failure and
    /// whether the head had gone out.
    async fn run<S, P>(
        &self,
        recv: &mut RecvStream,
        sink: &mut S,
        pump: &mut Pump<'_, P>,
        sent: &mut Option<Result<(), UpstreamError>>,
        t: Timeouts,
    ) -> Result<u64, (PumpError, bool)>
    where
        S: ResponseSink,
        P: std::future::Future<Output = Result<(), PumpError>>,
    {
        let mut total = 0u64;
        if self.bodyless {
            return sink
                .send(&[], false, t.client_write)
                .await
                .map_err(|e| (e.into(), false));
        }
        let mut framed = Vec::new();
        loop {
            let data = tokio::select! {
                biased;
                result = async {
                    match pump.as_mut() {
                        Some(pump) => pump.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if pump.is_some() => {
                    *pump = None;
                    match result {
                        Ok(()) => *sent = Some(Ok(())),
                        // The response goes on: the server may answer a
                        // request it did not read whole.
                        Err(PumpError::Upstream(e)) => *sent = Some(Err(e)),
                        Err(error) => return Err((error, sink.head_sent())),
                    }
                    continue;
                }
                data = timed(t.upstream_read, recv.data()) => data,
            };
            let data = match data {
                Err(_) => return Err((UpstreamError::ReadTimeout.into(), sink.head_sent())),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err((UpstreamError::http2(e).into(), sink.head_sent()));
                }
                Ok(Some(Ok(data))) => data,
            };
            if data.is_empty() {
                continue;
            }
            let head_sent = sink.head_sent();
            let len = data.len();
            let written = if self.frame_chunks {
                framed.clear();
                // Writing into a Vec cannot fail.
                let _ = write!(framed, "{len:x}\r\n");
                framed.extend_from_slice(&data);
                framed.extend_from_slice(b"\r\n");
                sink.send(&framed, false, t.client_write).await
            } else if sink.takes_bytes() {
                sink.send_bytes(data, false, t.client_write).await
            } else {
                sink.send(&data, false, t.client_write).await
            };
            total += written.map_err(|e| (e.into(), head_sent))?;
            // Only now may the server send as much again.
            let _ = recv.flow_control().release_capacity(len);
        }
        let trailers = match timed(t.upstream_read, recv.trailers()).await {
            Err(_) => return Err((UpstreamError::ReadTimeout.into(), sink.head_sent())),
            Ok(Err(e)) => return Err((UpstreamError::http2(e).into(), sink.head_sent())),
            Ok(Ok(trailers)) => trailers,
        };
        if !sink.head_sent() {
            total += sink
                .send(&[], false, t.client_write)
                .await
                .map_err(|e| (e.into(), false))?;
        }
        let fields = trailers.as_ref().map(fields_of).unwrap_or_default();
        if self.unknown_length || !fields.is_empty() {
            total += sink
                .send_trailers(&fields, t.client_write)
                .await
                .map_err(|e| (e.into(), true))?;
        }
        Ok(total)
    }
}

/// Streams the request body up `up`: its bytes come framed as the
/// forwarded head announces (a length, or chunked: decoded here, its
/// trailer section sent as trailers); `ended`: the request went with
/// END_STREAM already (no body).
async fn pump_body<B: RequestBody>(
    body: &mut B,
    framing: Framing,
    mut up: SendStream<Bytes>,
    ended: bool,
    t: Timeouts,
) -> Result<(), PumpError> {
    if ended {
        return Ok(());
    }
    let mut decoder =
        (framing == Framing::Chunked).then(|| ChunkedDecoder::default().keeping_trailers());
    loop {
        let ready = body.ready()?;
        let mut at = 0;
        while at < ready.len() {
            let (n, data) = match &mut decoder {
                Some(decoder) => {
                    let (n, range) = decoder
                        .decode(&ready[at..])
                        .map_err(ClientError::BadChunk)?;
                    (n, range.map(|r| &ready[at + r.start..at + r.end]))
                }
                None => (ready.len() - at, Some(&ready[at..])),
            };
            if let Some(data) = data {
                send_data(&mut up, data, t.upstream_write).await?;
            }
            at += n;
            if n == 0 {
                break;
            }
        }
        body.forwarded();
        if body.is_done() {
            break;
        }
        body.receive(t.client_read).await?;
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let fields = match decoder.as_ref().and_then(ChunkedDecoder::trailers) {
        Some(section) => parse_trailers(section, &mut slots).map_err(ClientError::BadChunk)?,
        None => &[],
    };
    if fields.is_empty() {
        up.send_data(Bytes::new(), true)
            .map_err(UpstreamError::http2)?;
    } else {
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for f in fields {
            // Fields HTTP/2 refuses in trailers are left out.
            if NOT_FORWARDED.iter().any(|n| f.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) {
                trailers.append(name, value);
            }
        }
        up.send_trailers(trailers).map_err(UpstreamError::http2)?;
    }
    Ok(())
}

/// Sends `data` on `up` as the stream's send window allows, waiting at most
/// `limit` each time for it to open.
async fn send_data(
    up: &mut SendStream<Bytes>,
    mut data: &[u8],
    limit: Duration,
) -> Result<(), UpstreamError> {
    while !data.is_empty() {
        up.reserve_capacity(data.len());
        let capacity = timed(limit, poll_fn(|cx| up.poll_capacity(cx)))
            .await
            .map_err(|_| UpstreamError::WriteTimeout)?;
        let n = match capacity {
            None => return Err(UpstreamError::Closed),
            Some(Err(e)) => return Err(UpstreamError::http2(e)),
            Some(Ok(n)) => n.min(data.len()),
        };
        if n == 0 {
            continue;
        }
        up.send_data(Bytes::copy_from_slice(&data[..n]), false)
            .map_err(UpstreamError::http2)?;
        data = &data[n..];
    }
    Ok(())
}

/// A head's fields as the core reads them.
fn fields_of(headers: &HeaderMap) -> Vec<httparse::Header<'_>> {
    headers
        .iter()
        .map(|(name, value)| httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(request: &http::Request<()>) -> Vec<(String, String)> {
        request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect()
    }

    #[test]
    fn the_forwarded_head_becomes_http2_fields() {
        let head = b"POST /svc/Method?x=1 HTTP/1.1\r\nHost: api.test:8080\r\n\
            Content-Type: application/grpc\r\nX-Request-Id: r1\r\nCookie: a=1; b=2\r\n\
            X-Forwarded-For: 192.0.2.7\r\nTransfer-Encoding: chunked\r\n\r\n";
        let request = request(head, "http", "10.0.0.1:50051", 16).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "http://api.test:8080/svc/Method?x=1"
        );
        assert_eq!(
            fields(&request),
            [
                ("content-type", "application/grpc"),
                ("x-request-id", "r1"),
                ("cookie", "a=1; b=2"),
                ("x-forwarded-for", "192.0.2.7"),
                ("te", "trailers"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_request_without_host_names_the_server() {
        let request = request(
            b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "https",
            "backend:443",
            4,
        )
        .unwrap();
        assert_eq!(request.uri().to_string(), "https://backend:443/");
        assert!(matches!(
            super::request(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "http", "s", 4),
            Err(UpstreamError::Http2Head(_))
        ));
    }
}
