//! An HTTP/2 request's head as the proxy core reads one (RFC 9113 §8.3):
//! `:method` and `:path` make the request line, `:authority` the host,
//! `cookie` fields are joined into one (§8.2.3), and the body's framing
//! comes from `content-length` or the end of the stream. `h2` has already
//! refused connection-specific fields and a `te` other than `trailers`
//! (§8.2.2) with a stream error.

use crate::http::request::{RequestError, RequestHead};
use crate::http::{Framing, Version};
use prefork_shared::config::HttpLimits;
use prefork_shared::uri_path;

/// Reads `parts` into a head whose fields borrow from it, from `fields`
/// (filled here) and from `cookie` (the joined cookie, filled here);
/// `ended`: the stream ended with its HEADERS (no body).
pub(super) fn head<'h, 'b>(
    parts: &'b http::request::Parts,
    fields: &'h mut Vec<httparse::Header<'b>>,
    cookie: &'b mut Vec<u8>,
    ended: bool,
    limits: &HttpLimits,
) -> Result<RequestHead<'h, 'b>, RequestError> {
    let method = parts.method.as_str();
    if parts.method == http::Method::CONNECT {
        return Err(RequestError::Connect);
    }
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    if target.len() > limits.max_uri_length {
        return Err(RequestError::UriTooLong(limits.max_uri_length));
    }
    let path = match &target[..target.find('?').unwrap_or(target.len())] {
        "" | "*" => "/",
        p => p,
    };
    let path = uri_path::normalize(path.as_bytes()).map_err(|_| RequestError::InvalidTarget)?;

    let mut host_field = None;
    let mut content_length: Option<u64> = None;
    let mut cookies = 0;
    for (name, value) in &parts.headers {
        if name == http::header::HOST {
            if host_field.is_some() {
                return Err(RequestError::MultipleHost);
            }
            host_field = Some(value.to_str().map_err(|_| RequestError::InvalidHost)?);
        } else if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(RequestError::InvalidContentLength)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(RequestError::InvalidContentLength);
            }
            content_length = Some(n);
        } else if name == http::header::COOKIE {
            cookies += 1;
        }
    }
    // `:authority` is the host; a `host` field only stands in for it.
    let host = match parts.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => host_field,
    };
    if host.is_none_or(str::is_empty) {
        return Err(RequestError::MissingHost);
    }

    fields.clear();
    if parts.headers.len() > limits.max_request_headers {
        return Err(RequestError::TooManyHeaders(limits.max_request_headers));
    }
    if cookies > 1 {
        cookie.clear();
        for value in parts.headers.get_all(http::header::COOKIE) {
            if !cookie.is_empty() {
                cookie.extend_from_slice(b"; ");
            }
            cookie.extend_from_slice(value.as_bytes());
        }
    }
    let mut cookie_written = false;
    for (name, value) in &parts.headers {
        if cookies > 1 && name == http::header::COOKIE {
            if !std::mem::replace(&mut cookie_written, true) {
                fields.push(httparse::Header {
                    name: "cookie",
                    value: cookie,
                });
            }
            continue;
        }
        fields.push(httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        });
    }
    let body = match (ended, content_length) {
        (true, _) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        // Streamed: forwarded chunked, its trailers in the last chunk.
        (false, None) => Framing::Chunked,
    };
    Ok(RequestHead {
        method,
        target,
        path,
        version: Version::Http2,
        headers: fields,
        len: 0,
        host,
        body,
        keep_alive: true,
        upgrade: false,
        // No client of HTTP/2 waits for `100 Continue`: flow control paces
        // its body.
        expect_continue: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn pseudo_fields_make_the_request_line_and_host_and_cookies_are_joined() {
        let p = parts(
            http::Request::post("https://example.com:8443/a/../b?q=1")
                .header("cookie", "a=1")
                .header("accept", "*/*")
                .header("cookie", "b=2"),
        );
        let (mut fields, mut cookie) = (Vec::new(), Vec::new());
        let head = head(&p, &mut fields, &mut cookie, false, &HttpLimits::default()).unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/a/../b?q=1");
        assert_eq!(&*head.path, b"/b");
        assert_eq!(head.host, Some("example.com:8443"));
        assert_eq!(head.version, Version::Http2);
        assert_eq!(head.body, Framing::Chunked);
        let fields: Vec<(&str, &[u8])> = head.headers.iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(
            fields,
            [("cookie", &b"a=1; b=2"[..]), ("accept", &b"*/*"[..])]
        );
    }

    /// The body's framing of `req`, or the error reading its head.
    fn framing(req: http::request::Builder, ended: bool) -> Result<Framing, RequestError> {
        let p = parts(req);
        let (mut fields, mut cookie) = (Vec::new(), Vec::new());
        head(&p, &mut fields, &mut cookie, ended, &HttpLimits::default()).map(|h| h.body)
    }

    #[test]
    fn framing_comes_from_the_end_of_the_stream_or_content_length() {
        let get = http::Request::get("http://h/");
        assert!(matches!(framing(get, true), Ok(Framing::Empty)));
        let put = http::Request::put("http://h/").header("content-length", "12");
        assert!(matches!(framing(put, false), Ok(Framing::Length(12))));
        for bad in ["", "-1", "1x", "99999999999999999999999"] {
            let put = http::Request::put("http://h/").header("content-length", bad);
            let e = framing(put, false).err();
            assert!(
                matches!(e, Some(RequestError::InvalidContentLength)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_requests_get_the_statuses_http1_gets() {
        let limits = HttpLimits {
            max_uri_length: 16,
            max_request_headers: 2,
            ..HttpLimits::default()
        };
        let status = |req: http::request::Builder| {
            let p = parts(req);
            let (mut fields, mut cookie) = (Vec::new(), Vec::new());
            head(&p, &mut fields, &mut cookie, true, &limits)
                .err()
                .map(RequestError::status)
        };
        assert_eq!(status(http::Request::get("/")), Some(400), "no authority");
        assert_eq!(status(http::Request::get("http://h/../../x")), Some(400));
        assert_eq!(
            status(http::Request::get("http://h/0123456789abcdef")),
            Some(414)
        );
        let many = http::Request::get("http://h/")
            .header("a", "1")
            .header("b", "2")
            .header("c", "3");
        assert_eq!(status(many), Some(431));
        assert_eq!(status(http::Request::connect("http://h:443")), Some(405));
        assert_eq!(status(http::Request::get("/").header("host", "h")), None);
    }
}
