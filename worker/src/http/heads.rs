//! Building the heads prefork writes: requests forwarded upstream, responses
//! forwarded to the client, and responses prefork answers by itself.
//!
//! Forwarded heads keep the fields' order and case as received and drop the
//! hop-by-hop fields; framing and connection fields are added at the end.

use super::request::RequestHead;
use super::response::ResponseHead;
use super::{
    is_forwarded_upgrade, list_items, push_decimal, push_ip, reason, write_date_header,
    write_number_header, Framing, Scheme, Version,
};
use std::net::IpAddr;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1);
/// `HTTP2-Settings` belongs to an `h2c` upgrade, which is never forwarded
/// (RFC 9113 §3.2.1 calls it connection-specific). `Trailer` is not one:
/// it announces the trailer fields, which pass on with a chunked body
/// (RFC 9110 §6.6.2; the `Trailers` of RFC 2616's list was TE's value).
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"http2-settings",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
];

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Field names a `Connection` field lists, which are hop-by-hop as well.
struct ConnectionNamed<'b> {
    /// Empty (and unallocated) in the usual case of `close`/`keep-alive`.
    names: Vec<&'b [u8]>,
}

impl<'b> ConnectionNamed<'b> {
    fn new(headers: &[httparse::Header<'b>]) -> Self {
        let mut names = Vec::new();
        for h in headers {
            if h.name.eq_ignore_ascii_case("connection") {
                names.extend(list_items(h.value).filter(|t| {
                    !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
                }));
            }
        }
        ConnectionNamed { names }
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Appends `Via`: the values received, then this hop (`1.1 name`) for a
/// message received as `version` (RFC 9110 §7.6.3).
fn write_via(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], version: Version, name: &str) {
    out.extend_from_slice(b"Via: ");
    push_via(out, headers, version, name);
    out.extend_from_slice(b"\r\n");
}

/// Appends the value of `Via`: the values received in `headers`, then
/// this hop for a message received as `version`.
pub(crate) fn push_via(
    out: &mut Vec<u8>,
    headers: &[httparse::Header<'_>],
    version: Version,
    name: &str,
) {
    for h in headers {
        if h.name.eq_ignore_ascii_case("via") && !h.value.trim_ascii().is_empty() {
            out.extend_from_slice(h.value.trim_ascii());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(match version {
        Version::Http10 => b"1.0 ",
        Version::Http11 => b"1.1 ",
        Version::Http2 => b"2 ",
    });
    out.extend_from_slice(name.as_bytes());
}

/// The end-to-end fields of an upstream's final response, as a client
/// that is not HTTP/1.1 gets them: without hop-by-hop fields, those its
/// `Connection` names, its `Content-Length` (the client's framing is its
/// own) and, when prefork adds its own `Via`, the upstream's.
pub(crate) fn end_to_end_fields<'r, 'b>(
    resp: &'r ResponseHead<'_, 'b>,
    via: bool,
) -> impl Iterator<Item = &'r httparse::Header<'b>> {
    let named = ConnectionNamed::new(resp.headers);
    resp.headers.iter().filter(move |h| {
        let name = h.name.as_bytes();
        !(is_hop_by_hop(name)
            || named.contains(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || (via && name.eq_ignore_ascii_case(b"via")))
    })
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes an `Upgrade` field with the protocols forwarded (not `h2c`), if
/// any is left.
fn write_upgrade(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if list_items(value).all(is_forwarded_upgrade) {
        return write_field(out, name, value);
    }
    let mut tokens = list_items(value).filter(|t| is_forwarded_upgrade(t));
    let Some(first) = tokens.next() else {
        return;
    };
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(first);
    for t in tokens {
        out.extend_from_slice(b", ");
        out.extend_from_slice(t);
    }
    out.extend_from_slice(b"\r\n");
}

/// `Forwarded` (RFC 7239) as the client sent it, with this hop's element
/// appended (`for`, `proto`, and `host` when known), as `X-Forwarded-For`
/// is: written only when the client sent one, as nginx adds none.
fn write_forwarded(
    out: &mut Vec<u8>,
    headers: &[httparse::Header<'_>],
    client_ip: IpAddr,
    scheme: Scheme,
    host: Option<&str>,
) {
    out.extend_from_slice(b"Forwarded: ");
    for h in headers {
        if h.name.eq_ignore_ascii_case("forwarded") && !h.value.trim_ascii().is_empty() {
            out.extend_from_slice(h.value.trim_ascii());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(b"for=");
    match client_ip {
        IpAddr::V4(_) => push_ip(out, client_ip),
        IpAddr::V6(_) => {
            out.extend_from_slice(b"\"[");
            push_ip(out, client_ip);
            out.extend_from_slice(b"]\"");
        }
    }
    out.extend_from_slice(match scheme {
        Scheme::Http => b";proto=http",
        Scheme::Https => b";proto=https",
    });
    if let Some(host) = host {
        // A valid Host has no quote or backslash: it fits a quoted string.
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes into `out` (cleared first) the head forwarded upstream for `req`,
/// from a client at `client_ip` that spoke `scheme`, with a `Via` naming `via` if set, and an `X-Request-Id` of
/// `request_id` if set (among the fields prefork adds, replacing any the
/// client sent).
///
/// `Upgrade` is forwarded (with `Connection: upgrade`) only when the client
/// asked to upgrade, and never with `h2c` (nor `HTTP2-Settings`). `Expect`
/// never is: prefork answers `100 Continue` itself (as nginx does), so the
/// upstream never waits on an expectation.
pub(crate) fn request_head(
    out: &mut Vec<u8>,
    req: &RequestHead<'_, '_>,
    client_ip: IpAddr,
    scheme: Scheme,
    via: Option<&str>,
    request_id: Option<&str>,
) {
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    if req.target.is_empty() && req.method == "OPTIONS" {
        // `OPTIONS http://h`: the last proxy asks for `*` (RFC 9112 §3.2.4).
        out.push(b'*');
    } else if !req.target.starts_with('/') && req.target != "*" {
        out.push(b'/');
    }
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let named = ConnectionNamed::new(req.headers);
    let host = req.host.unwrap_or("").as_bytes();
    let mut host_written = false;
    let mut has_forwarded_for = false;
    let mut has_forwarded = false;
    for h in req.headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            // An absolute-form target's authority overrides the field.
            write_field(out, name, host);
            host_written = true;
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            has_forwarded_for = true;
        } else if name.eq_ignore_ascii_case(b"forwarded") {
            has_forwarded = true;
        } else if request_id.is_some() && name.eq_ignore_ascii_case(b"x-request-id") {
            // The client's id was refused: prefork's replaces it.
        } else if req.upgrade && name.eq_ignore_ascii_case(b"upgrade") {
            write_upgrade(out, name, h.value);
        } else if !(is_hop_by_hop(name)
            || named.contains(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || (via.is_some() && name.eq_ignore_ascii_case(b"via"))
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            // A client must not name its own address or port: dropped.
            || name.eq_ignore_ascii_case(b"x-real-ip")
            || name.eq_ignore_ascii_case(b"x-forwarded-port"))
        {
            write_field(out, name, h.value);
        }
    }
    if !host_written {
        // HTTP/1.0 without Host: HTTP/1.1 requires the field, empty is valid.
        write_field(out, b"Host", host);
    }

    if let Some(id) = request_id {
        write_field(out, b"X-Request-Id", id.as_bytes());
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if has_forwarded_for {
        for h in req.headers {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") && !h.value.trim_ascii().is_empty() {
                out.extend_from_slice(h.value.trim_ascii());
                out.extend_from_slice(b", ");
            }
        }
    }
    push_ip(out, client_ip);
    out.extend_from_slice(match scheme {
        Scheme::Http => b"\r\nX-Forwarded-Proto: http\r\n",
        Scheme::Https => b"\r\nX-Forwarded-Proto: https\r\n",
    });
    if req.host.is_some() {
        write_field(out, b"X-Forwarded-Host", host);
    }
    if has_forwarded {
        write_forwarded(out, req.headers, client_ip, scheme, req.host);
    }
    if let Some(name) = via {
        write_via(out, req.headers, req.version, name);
    }
    if req.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    match req.body {
        Framing::Length(n) => write_number_header(out, b"Content-Length", n),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes into `out` (cleared first) the status line and end-to-end fields
/// of an upstream response, a `Date` if it has none, and a `Via` naming
/// `via` if set; a 101 keeps its `Upgrade`. `Trailer` is kept only if the
/// client gets the `trailers` (an HTTP/1.0 client's body is decoded and
/// loses them). [`finish_head`] completes it.
pub(crate) fn response_head_start(
    out: &mut Vec<u8>,
    resp: &ResponseHead<'_, '_>,
    via: Option<&str>,
    trailers: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, resp.status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = ConnectionNamed::new(resp.headers);
    let switching = resp.status == 101;
    let mut dated = false;
    for h in resp.headers {
        let name = h.name.as_bytes();
        if (switching && name.eq_ignore_ascii_case(b"upgrade"))
            || !(is_hop_by_hop(name)
                || named.contains(name)
                || name.eq_ignore_ascii_case(b"content-length")
                || (!trailers && name.eq_ignore_ascii_case(b"trailer"))
                || (via.is_some() && name.eq_ignore_ascii_case(b"via")))
        {
            write_field(out, name, h.value);
            dated |= name.eq_ignore_ascii_case(b"date");
        }
    }
    if !dated {
        // RFC 9110 §6.6.1: a recipient with a clock that forwards a
        // response without `Date` adds one (nginx always sends its own).
        write_date_header(out);
    }
    if let Some(name) = via {
        write_via(out, resp.headers, resp.version, name);
    }
}

/// The `Connection` field a response to the client carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionField {
    /// None: HTTP/1.1 keeps the connection open by default.
    Omit,
    /// `Connection: close`: the connection closes after this response.
    Close,
    /// `Connection: keep-alive`: an HTTP/1.0 client may send another request.
    KeepAlive,
    /// `Connection: upgrade`: a 101 switching the connection to a tunnel.
    Upgrade,
}

/// Appends the framing and connection fields and ends the head.
pub(crate) fn finish_head(
    out: &mut Vec<u8>,
    content_length: Option<u64>,
    chunked: bool,
    connection: ConnectionField,
) {
    if let Some(n) = content_length {
        write_number_header(out, b"Content-Length", n);
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    match connection {
        ConnectionField::Omit => {}
        ConnectionField::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnectionField::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionField::Upgrade => out.extend_from_slice(b"Connection: upgrade\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Fields never passed on in a trailer section: framing, routing and
/// connection control cannot come after the body (RFC 9110 §6.5.1).
const NOT_TRAILERS: [&[u8]; 4] = [b"content-length", b"host", b"trailer", b"expect"];

/// Writes into `out` (cleared first) the end of a chunked body: the last
/// chunk and the trailer section made of `fields`, less those that may not
/// be trailers.
pub(crate) fn last_chunk(out: &mut Vec<u8>, fields: &[httparse::Header<'_>]) {
    out.clear();
    out.extend_from_slice(b"0\r\n");
    for f in fields {
        let name = f.name.as_bytes();
        if !(is_hop_by_hop(name) || NOT_TRAILERS.iter().any(|n| name.eq_ignore_ascii_case(n))) {
            write_field(out, name, f.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes into `out` (cleared first) the head of a response prefork answers
/// by itself, with a body of `body_len` bytes and, for a redirect, a
/// `Location`.
pub(crate) fn own_response_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    location: Option<&str>,
    body_len: usize,
    connection: ConnectionField,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, status);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: prefork\r\n");
    write_date_header(out);
    write_field(out, b"Content-Type", content_type.as_bytes());
    if let Some(location) = location {
        write_field(out, b"Location", location.as_bytes());
    }
    finish_head(out, Some(body_len as u64), false, connection);
}

/// The small HTML body of an error response prefork generates.
pub(crate) fn error_body(status: u16) -> String {
    let title = format!("{status} {}", reason(status));
    // prefork answers 405 only to CONNECT: say why.
    let detail = match status {
        405 => {
            "<p>CONNECT is not supported: prefork is a reverse proxy and opens no tunnels.</p>\r\n"
        }
        _ => "",
    };
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n{detail}<hr><center>prefork</center>\r\n</body>\r\n</html>\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{request, response, with_header_slots};
    use prefork_shared::config::HttpLimits;

    fn forwarded(input: &str, ip: &str) -> String {
        forwarded_via(input, ip, None)
    }

    fn forwarded_via(input: &str, ip: &str, via: Option<&str>) -> String {
        let limits = HttpLimits::default();
        let mut out = Vec::new();
        with_header_slots(limits.max_request_headers, |slots| {
            let head = request::parse(input.as_bytes(), &limits, slots)
                .unwrap()
                .unwrap();
            request_head(
                &mut out,
                &head,
                ip.parse().unwrap(),
                Scheme::Http,
                via,
                None,
            );
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_clients_forwarded_gets_this_hops_element_and_its_own_address_fields_are_dropped() {
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h:8080\r\nForwarded: for=1.1.1.1;proto=https\r\n\
             X-Real-IP: 6.6.6.6\r\nX-Forwarded-Port: 1\r\nforwarded: for=2.2.2.2\r\n\r\n",
            "10.0.0.1",
        );
        assert!(
            out.contains(
                "Forwarded: for=1.1.1.1;proto=https, for=2.2.2.2, for=10.0.0.1;proto=http;host=\"h:8080\"\r\n"
            ),
            "{out}"
        );
        assert!(!out.to_ascii_lowercase().contains("x-real-ip"), "{out}");
        assert!(
            !out.to_ascii_lowercase().contains("x-forwarded-port"),
            "{out}"
        );
        assert_eq!(
            out.matches("orwarded:").count(),
            1,
            "one Forwarded field: {out}"
        );
    }

    #[test]
    fn forwarded_quotes_an_ipv6_client_and_is_not_added_unasked() {
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=x\r\n\r\n",
            "::1",
        );
        assert!(
            out.contains("Forwarded: for=x, for=\"[::1]\";proto=http;host=\"a\"\r\n"),
            "{out}"
        );
        let out = forwarded("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "::1");
        assert!(!out.contains("Forwarded:"), "{out}");
    }

    #[test]
    fn request_id_joins_the_fields_prefork_adds() {
        let limits = HttpLimits::default();
        let mut out = Vec::new();
        with_header_slots(limits.max_request_headers, |slots| {
            // A client's id that was refused is not forwarded.
            let input =
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a, b\r\nX-Forwarded-For: 1\r\n\r\n";
            let head = request::parse(input, &limits, slots).unwrap().unwrap();
            request_head(
                &mut out,
                &head,
                "10.0.0.1".parse().unwrap(),
                Scheme::Http,
                None,
                Some("42"),
            );
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 42\r\n\
             X-Forwarded-For: 1, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn removes_hop_by_hop_and_keeps_order_and_case() {
        let out = forwarded(
            "POST /p?q HTTP/1.1\r\nhost: Example.com\r\nX-B: 1\r\nConnection: keep-alive, X-Secret, close\r\n\
             Keep-Alive: timeout=5\r\nx-secret: s\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n\
             Proxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nx-a: 2\r\n\r\n",
            "10.1.2.3",
        );
        assert_eq!(
            out,
            "POST /p?q HTTP/1.1\r\nhost: Example.com\r\nX-B: 1\r\nTrailer: X-T\r\nx-a: 2\r\n\
             X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: Example.com\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn appends_to_forwarded_for_and_replaces_proto_and_host() {
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h:8080\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: evil\r\nx-forwarded-for: 3.3.3.3\r\nContent-Length: 0\r\n\r\n",
            "::1",
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: h:8080\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, ::1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h:8080\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_and_missing_host() {
        let out = forwarded(
            "GET http://a.example/x HTTP/1.1\r\nHost: b\r\n\r\n",
            "1.2.3.4",
        );
        assert!(
            out.starts_with("GET /x HTTP/1.1\r\nHost: a.example\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Host: a.example\r\n"));
        let out = forwarded(
            "GET http://a.example?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "1.2.3.4",
        );
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
        let out = forwarded("GET / HTTP/1.0\r\n\r\n", "1.2.3.4");
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: \r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    /// RFC 9112 §3.2.4: the last proxy forwards an OPTIONS request whose
    /// absolute-form target has an empty path and no query as `OPTIONS *`.
    #[test]
    fn options_with_an_empty_absolute_path_is_forwarded_as_asterisk() {
        let out = forwarded(
            "OPTIONS http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "1.2.3.4",
        );
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
        let out = forwarded(
            "OPTIONS http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "1.2.3.4",
        );
        assert!(out.starts_with("OPTIONS / HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn response_heads_drop_hop_by_hop_and_reframe() {
        let input = "HTTP/1.1 200 Fine\r\nServer: o\r\nDate: d\r\nConnection: x-conn\r\nX-Conn: 1\r\n\
                     Transfer-Encoding: chunked\r\nKeep-Alive: timeout=3\r\nTrailer: X-T\r\nSet-Cookie: a=b\r\n\r\n";
        let forwarded = |trailers| {
            let mut out = Vec::new();
            with_header_slots(16, |slots| {
                let head = response::parse(input.as_bytes(), false, false, slots)
                    .unwrap()
                    .unwrap();
                response_head_start(&mut out, &head, None, trailers);
            });
            finish_head(&mut out, None, trailers, ConnectionField::Close);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            forwarded(true),
            "HTTP/1.1 200 Fine\r\nServer: o\r\nDate: d\r\nTrailer: X-T\r\nSet-Cookie: a=b\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        // Decoded for an HTTP/1.0 client: the trailers, and `Trailer`, go.
        assert_eq!(
            forwarded(false),
            "HTTP/1.1 200 Fine\r\nServer: o\r\nDate: d\r\nSet-Cookie: a=b\r\nConnection: close\r\n\r\n"
        );
    }

    /// A body's end carries its trailers, less the fields no trailer may be.
    #[test]
    fn the_last_chunk_carries_the_trailers_allowed() {
        let mut out = Vec::new();
        last_chunk(&mut out, &[]);
        assert_eq!(out, b"0\r\n\r\n");
        let fields = [
            httparse::Header {
                name: "grpc-status",
                value: b"0",
            },
            httparse::Header {
                name: "Content-Length",
                value: b"3",
            },
            httparse::Header {
                name: "Transfer-Encoding",
                value: b"chunked",
            },
            httparse::Header {
                name: "grpc-message",
                value: b"ok",
            },
        ];
        last_chunk(&mut out, &fields);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");
    }

    /// RFC 9110 §6.6.1: a recipient with a clock forwarding a response
    /// without `Date` adds one (nginx always sends its own); one that has
    /// a `Date` keeps the origin's.
    #[test]
    fn responses_without_a_date_get_one() {
        let forwarded = |input: &str| {
            let mut out = Vec::new();
            with_header_slots(16, |slots| {
                let head = response::parse(input.as_bytes(), false, false, slots)
                    .unwrap()
                    .unwrap();
                response_head_start(&mut out, &head, None, true);
            });
            String::from_utf8(out).unwrap()
        };
        let out = forwarded("HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\n"), "{out}");
        let dated = "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n";
        assert_eq!(
            forwarded(dated),
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        );
        // A Date the upstream named hop-by-hop is not forwarded: one is added.
        let out = forwarded("HTTP/1.1 200 OK\r\nConnection: Date\r\nDate: d\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nDate: ") && !out.contains(": d\r"),
            "{out}"
        );
    }

    #[test]
    fn via_is_appended_and_upgrade_kept_only_when_asked() {
        let out = forwarded_via(
            "GET / HTTP/1.0\r\nVia: 1.1 a\r\nExpect: 100-continue\r\nvia: 2 b\r\n\r\n",
            "1.2.3.4",
            Some("edge"),
        );
        assert!(out.contains("\r\nVia: 1.1 a, 2 b, 1.0 edge\r\n"), "{out}");
        assert_eq!(out.matches("ia: ").count(), 1, "{out}");
        assert!(!out.contains("Expect"), "{out}");

        let out = forwarded_via(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
            "1.2.3.4",
            None,
        );
        assert!(out.contains("\r\nUpgrade: websocket\r\n"), "{out}");
        assert!(out.ends_with("Connection: upgrade\r\n\r\n"), "{out}");
        assert!(!out.contains("Expect"), "{out}");
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            "1.2.3.4",
        );
        assert!(!out.contains("pgrade"), "{out}");

        let input = "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nVia: 1.1 o\r\nDate: d\r\n\r\n";
        let mut out = Vec::new();
        with_header_slots(16, |slots| {
            let head = response::parse(input.as_bytes(), false, true, slots)
                .unwrap()
                .unwrap();
            response_head_start(&mut out, &head, Some("p"), true);
        });
        finish_head(&mut out, None, false, ConnectionField::Upgrade);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nDate: d\r\nVia: 1.1 o, 1.0 p\r\nConnection: upgrade\r\n\r\n"
        );
    }

    /// h2c smuggling: an `h2c` upgrade is never forwarded, nor is
    /// `HTTP2-Settings` (named in `Connection` or not).
    #[test]
    fn h2c_and_http2_settings_are_never_forwarded() {
        for connection in ["Upgrade, HTTP2-Settings", "Upgrade", "keep-alive"] {
            let out = forwarded(
                &format!(
                    "GET / HTTP/1.1\r\nHost: h\r\nConnection: {connection}\r\nUpgrade: h2c\r\n\
                     HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nX-A: 1\r\n\r\n"
                ),
                "1.2.3.4",
            );
            assert_eq!(
                out,
                "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\
                 X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
                "{connection}"
            );
        }
        // Other protocols offered along with h2c are forwarded alone.
        let out = forwarded(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, foo/1 , H2C,bar\r\n\
             Upgrade: h2c\r\nupgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
            "1.2.3.4",
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: foo/1, bar\r\nupgrade: websocket\r\n\
             X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\
             Connection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn own_responses() {
        let mut out = Vec::new();
        own_response_head(
            &mut out,
            404,
            "text/html",
            None,
            12,
            ConnectionField::KeepAlive,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nServer: prefork\r\nDate: "));
        assert!(text.ends_with(
            "Content-Type: text/html\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(error_body(502).contains("<h1>502 Bad Gateway</h1>"));
        assert!(error_body(405).contains("CONNECT"));
    }
}
