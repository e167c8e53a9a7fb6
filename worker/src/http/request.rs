//! Parsing and validating a client's request head.

use super::{is_forwarded_upgrade, list_items, merge_content_length, Framing, Version};
use prefork_shared::config::HttpLimits;
use prefork_shared::uri_path;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::net::Ipv6Addr;

/// A complete, validated request head, borrowing the client's buffer.
#[derive(Debug)]
pub(crate) struct RequestHead<'h, 'b> {
    /// The method token, as received.
    pub method: &'b str,
    /// The target to forward: as received, or the part of an absolute-form
    /// target after the authority (which may lack its leading `/`).
    pub target: &'b str,
    /// The path for routing: the target without its query (`/` for an
    /// empty one and for `OPTIONS *`), normalised
    /// ([`prefork_shared::uri_path::normalize`]).
    pub path: Cow<'b, [u8]>,
    /// The request's protocol version.
    pub version: Version,
    /// The header fields, in order, as received.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head in bytes (the body starts there).
    pub len: usize,
    /// The authority the request is for: the `Host` field as received, or
    /// the authority of an absolute-form target.
    pub host: Option<&'b str>,
    /// How the request body is framed.
    pub body: Framing,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    /// Whether the client asks to switch protocols (HTTP/1.1 with `Upgrade`
    /// and a `Connection: upgrade`) to a protocol prefork forwards (not
    /// `h2c`): the `Upgrade` field is then forwarded, without `h2c`.
    pub upgrade: bool,
    /// Whether an HTTP/1.1 client with a body sent `Expect: 100-continue`
    /// and may wait for a `100 Continue` before sending the body.
    pub expect_continue: bool,
}

impl RequestHead<'_, '_> {
    /// Whether replaying the request cannot have a different effect.
    pub(crate) fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    /// The head is not valid HTTP/1.x syntax.
    #[error("malformed request head: {0}")]
    Syntax(httparse::Error),
    /// The head is longer than `max_request_header_size`.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than `max_request_headers`.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// HTTP/1.1 without a `Host` field.
    #[error("missing Host header")]
    MissingHost,
    /// More than one `Host` field.
    #[error("multiple Host headers")]
    MultipleHost,
    /// A `Host` value that is not a valid authority.
    #[error("invalid Host header")]
    InvalidHost,
    /// A target that is neither origin-form, absolute-form nor `*`.
    #[error("invalid request target")]
    InvalidTarget,
    /// A `Content-Length` that is not one valid length.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    /// A `Transfer-Encoding` whose final coding is not a single `chunked`,
    /// or one on HTTP/1.0: the body's length cannot be known (RFC 9112 §6.3).
    #[error("invalid Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// A coding before the final `chunked` (`gzip, chunked`): framing is
    /// clear, but prefork does not pass other codings on (501).
    #[error("transfer coding not implemented")]
    UnknownTransferCoding,
    /// The request target is longer than `max_uri_length`.
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// A `CONNECT` request: prefork is a reverse proxy and opens no tunnels.
    #[error("CONNECT is not supported")]
    Connect,
    /// An HTTP major version other than 1 (`HTTP/2.0` as HTTP/1 text).
    #[error("HTTP version not supported")]
    VersionNotSupported,
}

impl RequestError {
    /// The status code answered to the client.
    pub(crate) fn status(self) -> u16 {
        match self {
            RequestError::HeadTooLarge(_) | RequestError::TooManyHeaders(_) => 431,
            RequestError::UriTooLong(_) => 414,
            RequestError::UnknownTransferCoding => 501,
            RequestError::Connect => 405,
            RequestError::VersionNotSupported => 505,
            _ => 400,
        }
    }
}

/// Makes a request line whose version httparse refused (it knows only
/// HTTP/1.0 and 1.1) parse again when its version is a later HTTP/1 minor
/// one (`HTTP/1.2`): RFC 9112 §2.3 has a server handle it as the highest
/// minor version it supports, so its digit in `buf` becomes `1`. Another
/// major version (`HTTP/2.0`, `HTTP/0.9`) is refused with 505, as nginx
/// does; anything else stays the syntax error it was. Called only after
/// such a refusal: the usual request pays nothing for it.
pub(crate) fn read_later_minor_as_1_1(buf: &mut [u8]) -> Result<(), RequestError> {
    let refused = RequestError::Syntax(httparse::Error::Version);
    let Some(version) = version_start(buf) else {
        return Err(refused);
    };
    match &mut buf[version..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, ..] if (b'2'..=b'9').contains(minor) => {
            *minor = b'1';
            Ok(())
        }
        [b'H', b'T', b'T', b'P', b'/', major, ..] if major.is_ascii_digit() && *major != b'1' => {
            Err(RequestError::VersionNotSupported)
        }
        _ => Err(refused),
    }
}

/// Where the version of the request line in `buf` starts: httparse skips
/// empty lines before it, and refuses a version only after a method and a
/// target each followed by one space.
fn version_start(buf: &[u8]) -> Option<usize> {
    let line = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let target = line + buf[line..].iter().position(|&b| b == b' ')? + 1;
    Some(target + buf[target..].iter().position(|&b| b == b' ')? + 1)
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; `slots` bounds the number
/// of header fields.
pub(crate) fn parse<'h, 'b>(
    buf: &'b [u8],
    limits: &HttpLimits,
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<RequestHead<'h, 'b>>, RequestError> {
    let max = limits.max_request_header_size;
    let window = &buf[..buf.len().min(max)];
    if target_too_long(window, limits.max_uri_length) {
        return Err(RequestError::UriTooLong(limits.max_uri_length));
    }
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= max => {
            return Err(RequestError::HeadTooLarge(max))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::TooManyHeaders(limits.max_request_headers))
        }
        Err(e) => return Err(RequestError::Syntax(e)),
    };
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Syntax(httparse::Error::Token));
    };
    let version = Version::from_minor(minor);
    let headers: &'h [httparse::Header<'b>] = req.headers;
    // Checked before the target: CONNECT's authority-form target is not an
    // error of syntax but a method prefork refuses (as nginx does).
    if method == "CONNECT" {
        return Err(RequestError::Connect);
    }

    let (target, target_authority) = split_target(method, raw_target)?;
    // `OPTIONS *` is about the server as a whole, as `OPTIONS http://h` is
    // (forwarded as `*`): both are routed as the host's root.
    let path = match &target[..ascii_find(target, b'?').unwrap_or(target.len())] {
        "" | "*" => "/",
        p => p,
    };
    // Routed as nginx matches locations, whatever escapes or dot segments
    // spell it; a path climbing above the root is refused, as nginx does.
    let path = uri_path::normalize(path.as_bytes()).map_err(|_| RequestError::InvalidTarget)?;

    let mut host_field = None;
    let mut content_length = None;
    let mut transfer_encoding = false;
    let mut codings = Codings::default();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut upgrade_field = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            if host_field.is_some() {
                return Err(RequestError::MultipleHost);
            }
            host_field = Some(std::str::from_utf8(h.value).map_err(|_| RequestError::InvalidHost)?);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length = merge_content_length(content_length, h.value)
                .map_err(|_| RequestError::InvalidContentLength)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            list_items(h.value).for_each(|c| codings.push(c));
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_items(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_field |= list_items(h.value).any(is_forwarded_upgrade);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }

    if let Some(host) = host_field {
        if !is_valid_authority(host) {
            return Err(RequestError::InvalidHost);
        }
    } else if version == Version::Http11 {
        return Err(RequestError::MissingHost);
    }
    let chunked = transfer_encoding;
    if transfer_encoding {
        if content_length.is_some() {
            return Err(RequestError::LengthAndTransferEncoding);
        }
        if !codings.chunked_once_and_last() || version == Version::Http10 {
            return Err(RequestError::UnsupportedTransferEncoding);
        }
        if codings.other {
            return Err(RequestError::UnknownTransferCoding);
        }
    }
    let body = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };
    let keep_alive = match version {
        Version::Http10 => keep_alive_token && !close,
        Version::Http11 | Version::Http2 => !close,
    };
    Ok(Some(RequestHead {
        method,
        target,
        path,
        version,
        headers,
        len,
        host: target_authority.or(host_field),
        body,
        keep_alive,
        upgrade: version == Version::Http11 && upgrade_token && upgrade_field,
        expect_continue: expect_continue
            && version == Version::Http11
            && !matches!(body, Framing::Empty | Framing::Length(0)),
    }))
}

/// The transfer codings of a request, as far as framing cares.
#[derive(Default)]
struct Codings {
    /// How many `chunked` codings were listed.
    chunked: usize,
    /// Whether the last coding listed is `chunked`.
    last_chunked: bool,
    /// Whether any other coding was listed.
    other: bool,
}

impl Codings {
    fn push(&mut self, coding: &[u8]) {
        self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if self.last_chunked {
            self.chunked += 1;
        } else {
            self.other = true;
        }
    }

    /// RFC 9112 §6.3: only a final, single `chunked` frames a request.
    fn chunked_once_and_last(&self) -> bool {
        self.chunked == 1 && self.last_chunked
    }
}

/// Whether the request line starting `buf` has a target longer than `max`,
/// known as soon as that many target bytes have arrived (before the head is
/// complete, so a huge target is refused early).
fn target_too_long(buf: &[u8], max: usize) -> bool {
    // Empty lines before a request are allowed (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let target = &line[space + 1..];
    let len = target
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(target.len());
    len > max
}

/// Splits a request target into the target to forward and, for an
/// absolute-form target, its authority.
fn split_target<'b>(
    method: &str,
    target: &'b str,
) -> Result<(&'b str, Option<&'b str>), RequestError> {
    // httparse lets a fragment through: it never belongs in a request target
    // (RFC 9112 §3.2). UTF-8 in the path is forwarded as received, as nginx
    // does: clients send it, and it cannot change how a message is framed.
    if ascii_find(target, b'#').is_some() {
        return Err(RequestError::InvalidTarget);
    }
    if target.starts_with('/') {
        return Ok((target, None));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok((target, None));
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(RequestError::InvalidTarget)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo (`user@host`) is refused: RFC 9110 §4.2.4 calls it an error,
    // and `is_valid_authority` has no `@`.
    if authority.is_empty() || !is_valid_authority(authority) {
        return Err(RequestError::InvalidTarget);
    }
    // The origin-form part; the forwarded request line adds the leading
    // `/` when it is missing (`http://h` or `http://h?q`).
    Ok((&rest[end..], Some(authority)))
}

/// Where the ASCII byte `b` first occurs in `s`: a byte loop, cheaper than
/// `str::find`'s searcher on the short targets and hosts of requests.
fn ascii_find(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Whether `authority` is a valid `uri-host [ ":" port ]` with a host (or
/// empty, which HTTP/1.1 allows in `Host`). The host is an IPv6 literal in
/// brackets or a reg-name (IPv4 included), the port digits: routing takes
/// the host before the port, while the upstream gets the value whole, so a
/// value it could split otherwise (`a:b:c`, `a]`) is refused (RFC 9112
/// §3.2: 400 for an invalid Host; RFC 9110 §4.2.1: no empty host).
fn is_valid_authority(authority: &str) -> bool {
    if authority.is_empty() {
        return true;
    }
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((ip, port)) => (ip.parse::<Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => {
            let end = ascii_find(authority, b':').unwrap_or(authority.len());
            let host = &authority[..end];
            (!host.is_empty() && is_reg_name(host), &authority[end..])
        }
    };
    host_ok
        && (port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit())))
}

/// Whether `host` is a reg-name: unreserved and sub-delims characters and
/// percent-encoded bytes (RFC 3986 §3.2.2).
fn is_reg_name(host: &str) -> bool {
    let bytes = host.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if REG_NAME[b as usize] {
            i += 1;
        } else if b == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// The bytes a reg-name holds as they are: a table, as every request's
/// host goes through it.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~')
            || matches!(
                c,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// The host used for routing: lower-cased, without port or trailing dot.
pub(crate) fn route_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets and colons.
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        &authority[..ascii_find(authority, b':').unwrap_or(authority.len())]
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::with_header_slots;

    /// What the tests look at in a parsed head.
    #[derive(Debug, PartialEq)]
    struct Summary {
        method: String,
        target: String,
        path: String,
        host: Option<String>,
        body: Framing,
        keep_alive: bool,
        len: usize,
        headers: usize,
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            max_request_header_size: 256,
            max_request_headers: 4,
            ..HttpLimits::default()
        }
    }

    fn try_parse(input: &[u8]) -> Result<Option<Summary>, RequestError> {
        let limits = limits();
        with_header_slots(limits.max_request_headers, |slots| {
            parse(input, &limits, slots).map(|head| {
                head.map(|h| Summary {
                    method: h.method.to_owned(),
                    target: h.target.to_owned(),
                    path: String::from_utf8_lossy(&h.path).into_owned(),
                    host: h.host.map(str::to_owned),
                    body: h.body,
                    keep_alive: h.keep_alive,
                    len: h.len,
                    headers: h.headers.len(),
                })
            })
        })
    }

    fn ok(input: &str) -> Summary {
        try_parse(input.as_bytes()).unwrap().expect("complete head")
    }

    fn err(input: &str) -> RequestError {
        try_parse(input.as_bytes()).expect_err("must be refused")
    }

    #[test]
    fn parses_a_simple_get() {
        let s = ok("GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\nNEXT");
        assert_eq!(s.method, "GET");
        assert_eq!(s.target, "/a/b?x=1");
        assert_eq!(s.path, "/a/b");
        assert_eq!(s.host.as_deref(), Some("Example.com:8080"));
        assert_eq!(s.body, Framing::Empty);
        assert!(s.keep_alive);
        assert_eq!(
            s.len,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n".len()
        );
        assert_eq!(s.headers, 1);
    }

    #[test]
    fn partial_heads_need_more() {
        assert_eq!(try_parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(try_parse(b"GE"), Ok(None));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_framing() {
        let s = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(s.body, Framing::Length(10));
        let s =
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(s.body, Framing::Length(3));
        let s = ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(s.body, Framing::Chunked);
    }

    #[test]
    fn absolute_form_gives_host_and_origin_target() {
        let s = ok("GET http://API.example.com:81/x/y?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(s.host.as_deref(), Some("API.example.com:81"));
        assert_eq!(s.target, "/x/y?q");
        assert_eq!(s.path, "/x/y");
        let s = ok("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((s.target.as_str(), s.host.as_deref()), ("", Some("h")));
        assert_eq!(s.path, "/");
        let s = ok("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((s.target.as_str(), s.path.as_str()), ("?q=1", "/"));
        let s = ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((s.target.as_str(), s.path.as_str()), ("*", "/"));
    }

    #[test]
    fn the_path_routed_on_ends_at_the_query() {
        let s = ok("GET /a/b?c=/d?e HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (s.target.as_str(), s.path.as_str()),
            ("/a/b?c=/d?e", "/a/b")
        );
        assert_eq!(ok("GET /?q HTTP/1.1\r\nHost: h\r\n\r\n").path, "/");
    }

    #[test]
    fn rejections() {
        use RequestError::*;
        assert!(matches!(
            err("GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n"),
            Syntax(_)
        ));
        assert!(matches!(
            err("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Syntax(_)
        ));
        assert!(matches!(
            err("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Syntax(_)
        ));
        assert!(matches!(
            err("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Syntax(_)
        ));
        assert!(matches!(
            err("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            Syntax(_)
        ));
        assert_eq!(err("GET / HTTP/1.1\r\n\r\n"), MissingHost);
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            MultipleHost
        );
        assert_eq!(err("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), InvalidHost);
        assert_eq!(err("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), InvalidHost);
        assert_eq!(err("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), InvalidTarget);
        assert_eq!(err("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), InvalidTarget);
        assert_eq!(err("GET a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), InvalidTarget);
        assert_eq!(
            err("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"),
            InvalidTarget
        );
        for cl in ["-1", "1x", "", "1, 2", "99999999999999999999"] {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(err(&input), InvalidContentLength, "{cl:?}");
        }
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            InvalidContentLength
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            LengthAndTransferEncoding
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"),
            LengthAndTransferEncoding
        );
        for te in ["gzip", "chunked, gzip", "chunked, chunked", "identity", ""] {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(err(&input), UnsupportedTransferEncoding, "{te:?}");
        }
        assert_eq!(
            err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            UnsupportedTransferEncoding
        );
        assert_eq!(
            err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            UnsupportedTransferEncoding
        );
    }

    #[test]
    fn other_codings_before_chunked_are_not_implemented() {
        let input = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(err(input), RequestError::UnknownTransferCoding);
        assert_eq!(err(input).status(), 501);
        let split = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(err(split), RequestError::UnknownTransferCoding);
    }

    #[test]
    fn targets_with_fragments_or_userinfo_are_refused() {
        for target in ["/a#b", "http://u@a/x", "http://u:p@a/"] {
            let input = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(err(&input), RequestError::InvalidTarget, "{target:?}");
        }
    }

    /// The routing path is normalised; the forwarded target is not.
    #[test]
    fn the_routing_path_is_normalised_and_the_target_kept() {
        let s = ok("GET /a/%2e%2E//b?q=/../ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (s.target.as_str(), s.path.as_str()),
            ("/a/%2e%2E//b?q=/../", "/b")
        );
        let s = ok("GET http://h/x/../y HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((s.target.as_str(), s.path.as_str()), ("/x/../y", "/y"));
        assert_eq!(
            err("GET /a/../../b HTTP/1.1\r\nHost: h\r\n\r\n"),
            RequestError::InvalidTarget
        );
    }

    /// RFC 9112 §3.2: a Host with an invalid value gets 400. prefork routes
    /// on the part before the port and forwards the value whole, so an
    /// upstream must never see one it could read as another host.
    #[test]
    fn hosts_outside_the_authority_grammar_are_refused() {
        for host in [
            "a:b",
            "a:80:90",
            "a:8o",
            "a]",
            "a[b]",
            "[::1",
            "[::1]x",
            "[::1]:b",
            "[not-ipv6]",
            ":80",
            "a%zz",
            "a%4",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(err(&input), RequestError::InvalidHost, "{host:?}");
            let input = format!("GET http://{host}/ HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(err(&input), RequestError::InvalidTarget, "{host:?}");
        }
        for host in [
            "a",
            "a:",
            "a:8080",
            "A.Example.",
            "[::1]",
            "[::1]:80",
            "[2001:db8::1]:443",
            "10.0.0.1:443",
            "ex%41mple",
            "a-b_c~d.e!$&'()*+,;=",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(ok(&input).host.as_deref(), Some(host));
            let input = format!("GET http://{host}/x HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(ok(&input).host.as_deref(), Some(host));
        }
        // HTTP/1.1 allows an empty Host (a target without an authority).
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: \r\n\r\n").host.as_deref(),
            Some("")
        );
    }

    #[test]
    fn long_targets_give_414_even_before_the_head_is_complete() {
        let limits = HttpLimits {
            max_uri_length: 10,
            ..HttpLimits::default()
        };
        let parse_err = |input: &str| {
            with_header_slots(8, |slots| {
                parse(input.as_bytes(), &limits, slots).map(|h| h.is_some())
            })
        };
        assert_eq!(
            parse_err("GET /0123456789 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(RequestError::UriTooLong(10))
        );
        assert_eq!(
            parse_err("GET /0123456789"),
            Err(RequestError::UriTooLong(10))
        );
        assert_eq!(
            parse_err("GET /012345678 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(RequestError::UriTooLong(10).status(), 414);
    }

    #[test]
    fn bare_lf_ends_lines_and_upgrade_is_seen() {
        let s = ok("GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(s.host.as_deref(), Some("a"));
        let limits = limits();
        let upgrade = |input: &str| {
            with_header_slots(8, |slots| {
                parse(input.as_bytes(), &limits, slots)
                    .unwrap()
                    .unwrap()
                    .upgrade
            })
        };
        assert!(upgrade(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        // h2c is never an upgrade prefork forwards: nothing else is offered.
        assert!(!upgrade(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: H2C, \r\n\r\n"
        ));
        assert!(upgrade(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: foo\r\n\r\n"
        ));
    }

    #[test]
    fn later_minor_versions_read_as_1_1_and_other_majors_refused() {
        let read = |input: &str| {
            let mut buf = input.as_bytes().to_vec();
            read_later_minor_as_1_1(&mut buf).map(|()| String::from_utf8(buf).unwrap())
        };
        assert_eq!(
            read("GET / HTTP/1.2\r\nHost: a\r\n\r\n").as_deref(),
            Ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        );
        // Empty lines before the request line, a partial line.
        assert_eq!(
            read("\r\n\nPOST /x?a=b HTTP/1.9").as_deref(),
            Ok("\r\n\nPOST /x?a=b HTTP/1.1")
        );
        assert_eq!(
            ok(&read("GET / HTTP/1.5\r\nHost: a\r\n\r\n").unwrap())
                .host
                .as_deref(),
            Some("a")
        );
        for input in [
            "GET / HTTP/2.0\r\n",
            "GET / HTTP/3.0\r\n",
            "GET / HTTP/0.9\r\n",
            "GET / HTTP/2",
        ] {
            assert_eq!(
                read(input),
                Err(RequestError::VersionNotSupported),
                "{input:?}"
            );
        }
        assert_eq!(RequestError::VersionNotSupported.status(), 505);
        for input in [
            "GET / HTTP/1.1 \r\n",
            "GET / http/1.2\r\n",
            "GET / HTTP/1.x\r\n",
            "GET / HTTP/x.1\r\n",
            "GET / HTTPS/1.1\r\n",
            "GET /\r\n",
            "\r\n",
        ] {
            assert_eq!(
                read(input),
                Err(RequestError::Syntax(httparse::Error::Version)),
                "{input:?}"
            );
        }
    }

    #[test]
    fn connect_gets_405_whatever_its_target() {
        for input in [
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(err(input), RequestError::Connect, "{input:?}");
        }
        assert_eq!(RequestError::Connect.status(), 405);
    }

    #[test]
    fn expect_continue_only_for_1_1_requests_with_a_body() {
        let limits = limits();
        let expects = |input: &str| {
            with_header_slots(8, |slots| {
                parse(input.as_bytes(), &limits, slots)
                    .unwrap()
                    .unwrap()
                    .expect_continue
            })
        };
        assert!(expects(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(expects(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        for input in [
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: other\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert!(!expects(input), "{input:?}");
        }
    }

    #[test]
    fn limits_give_431() {
        let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
        assert_eq!(err(many), RequestError::TooManyHeaders(4));
        assert_eq!(err(many).status(), 431);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "y".repeat(300)
        );
        assert_eq!(err(&big), RequestError::HeadTooLarge(256));
        // Incomplete but already too long: refused without waiting for more.
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(300));
        assert_eq!(err(&partial), RequestError::HeadTooLarge(256));
        assert_eq!(RequestError::MissingHost.status(), 400);
    }

    #[test]
    fn routing_host_normalisation() {
        assert_eq!(route_host("Example.COM:8080"), "example.com");
        assert_eq!(route_host("example.com."), "example.com");
        assert_eq!(route_host("example.com"), "example.com");
        assert_eq!(route_host("[::1]:80"), "[::1]");
        assert_eq!(route_host("[::1]"), "[::1]");
        assert_eq!(route_host("10.0.0.1:443"), "10.0.0.1");
        assert_eq!(route_host(""), "");
        assert!(matches!(route_host("lower.case"), Cow::Borrowed(_)));
    }
}
