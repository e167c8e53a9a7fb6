//! A `redirect` route's `Location`, built from the request: `$host`,
//! `$request_uri`, `$scheme`, `$uri` and `$args` as nginx names them.

use crate::http::request::RequestHead;
use crate::http::Scheme;
use prefork_shared::config::{RedirectPart, RedirectVar};

/// Writes into `out` (cleared first) the `Location` that `to` makes of
/// `head`, routed by `host`, spoken over `scheme`. What comes from the request is checked by
/// the parser (no control characters), and the decoded path (`$uri`) is
/// escaped again, so the value is always a valid header field.
pub(super) fn location(
    out: &mut Vec<u8>,
    to: &[RedirectPart],
    head: &RequestHead<'_, '_>,
    host: &str,
    scheme: Scheme,
) {
    out.clear();
    for part in to {
        match part {
            RedirectPart::Text(text) => out.extend_from_slice(text.as_bytes()),
            RedirectPart::Var(RedirectVar::Host) => out.extend_from_slice(host.as_bytes()),
            RedirectPart::Var(RedirectVar::RequestUri) => {
                // An absolute-form target keeps what follows its authority,
                // which may lack the leading '/'.
                if !head.target.starts_with('/') && head.target != "*" {
                    out.push(b'/');
                }
                out.extend_from_slice(head.target.as_bytes());
            }
            RedirectPart::Var(RedirectVar::Scheme) => out.extend_from_slice(match scheme {
                Scheme::Http => b"http",
                Scheme::Https => b"https",
            }),
            RedirectPart::Var(RedirectVar::Uri) => escape_path(out, &head.path),
            RedirectPart::Var(RedirectVar::Args) => {
                if let Some((_, query)) = head.target.split_once('?') {
                    out.extend_from_slice(query.as_bytes());
                }
            }
        }
    }
}

/// Appends `path` with every byte that cannot stand in a URI path
/// (controls, space, non-ASCII, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`,
/// `}`, `?`, `#`, `%`) percent-encoded.
fn escape_path(out: &mut Vec<u8>, path: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path {
        let plain = b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'?' | b'#' | b'%'
            );
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{request, with_header_slots};
    use prefork_shared::config::HttpLimits;

    fn built(template: &str, request_text: &str, scheme: Scheme) -> String {
        let to = prefork_shared::config::parse(
            std::path::Path::new("t.toml"),
            &format!("[[routes]]\nredirect = {{ to = {template:?} }}\n"),
        )
        .unwrap()
        .routes
        .remove(0)
        .action;
        let prefork_shared::config::RouteAction::Redirect(r) = to else {
            unreachable!()
        };
        let limits = HttpLimits::default();
        let mut out = Vec::new();
        with_header_slots(limits.max_request_headers, |slots| {
            let head = request::parse(request_text.as_bytes(), &limits, slots)
                .unwrap()
                .unwrap();
            let host = crate::http::request::route_host(head.host.unwrap_or(""));
            location(&mut out, &r.to, &head, &host, scheme);
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn variables_come_from_the_request() {
        let get = "GET /a/../b%20c?x=1&y HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n";
        assert_eq!(
            built("https://$host$request_uri", get, Scheme::Http),
            "https://example.com/a/../b%20c?x=1&y"
        );
        assert_eq!(
            built("$scheme://${host}:8443$uri?$args&z", get, Scheme::Https),
            "https://example.com:8443/b%20c?x=1&y&z"
        );
        // An absolute-form target: the host and the path it names.
        let absolute = "GET http://other.test:81/p?q HTTP/1.1\r\nHost: other.test:81\r\n\r\n";
        assert_eq!(
            built("https://$host$request_uri", absolute, Scheme::Http),
            "https://other.test/p?q"
        );
        // No query: `$args` is empty.
        let plain = "GET /only HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(built("/to?$args", plain, Scheme::Http), "/to?");
    }

    #[test]
    fn a_decoded_path_is_escaped_again() {
        let mut out = Vec::new();
        escape_path(&mut out, b"/a b\r\n%?#\xc3\xa9~");
        assert_eq!(out, b"/a%20b%0D%0A%25%3F%23%C3%A9~");
    }
}
