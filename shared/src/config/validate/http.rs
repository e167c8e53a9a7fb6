//! The client-side keys: limits and timeouts on requests from clients, and
//! how forwarded messages are marked (`via`, `splice`).

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::HttpLimits;
use crate::config::raw::{RawConfig, RawVia};

/// Largest `max_request_headers`: each request reserves that many slots.
pub const MAX_REQUEST_HEADERS: usize = 10_000;

impl Validator<'_> {
    pub(super) fn http(&mut self, raw: &RawConfig) -> HttpLimits {
        let root = KeyPath::default();
        let defaults = HttpLimits::default();
        HttpLimits {
            client_header_timeout: self.duration(
                root.key("client_header_timeout"),
                raw.client_header_timeout.as_deref(),
                defaults.client_header_timeout,
            ),
            client_body_timeout: self.duration(
                root.key("client_body_timeout"),
                raw.client_body_timeout.as_deref(),
                defaults.client_body_timeout,
            ),
            keepalive_timeout: self.duration(
                root.key("keepalive_timeout"),
                raw.keepalive_timeout.as_deref(),
                defaults.keepalive_timeout,
            ),
            keepalive_requests: self.positive(
                root.key("keepalive_requests"),
                raw.keepalive_requests,
                defaults.keepalive_requests,
            ),
            max_request_header_size: self.at_least(
                root.key("max_request_header_size"),
                raw.max_request_header_size,
                1024,
                defaults.max_request_header_size,
            ),
            max_request_headers: match self.at_least(
                root.key("max_request_headers"),
                raw.max_request_headers,
                1,
                defaults.max_request_headers,
            ) {
                n if n > MAX_REQUEST_HEADERS => {
                    self.problem(
                        &root.key("max_request_headers"),
                        format!("must be at most {MAX_REQUEST_HEADERS} (found {n})"),
                    );
                    defaults.max_request_headers
                }
                n => n,
            },
            max_uri_length: self.at_least(
                root.key("max_uri_length"),
                raw.max_uri_length,
                16,
                defaults.max_uri_length,
            ),
            max_body_size: raw
                .max_body_size
                .as_ref()
                .and_then(|s| self.size(root.key("max_body_size"), s))
                .unwrap_or(defaults.max_body_size),
            send_timeout: self.duration(
                root.key("send_timeout"),
                raw.send_timeout.as_deref(),
                defaults.send_timeout,
            ),
            tunnel_timeout: self.duration(
                root.key("tunnel_timeout"),
                raw.tunnel_timeout.as_deref(),
                defaults.tunnel_timeout,
            ),
            via: match &raw.via {
                None => defaults.via,
                Some(v) => self.via(root.key("via"), v),
            },
            splice: raw.splice.unwrap_or(defaults.splice),
        }
    }

    /// The `Via` pseudonym: a token, since it is written into heads.
    fn via(&mut self, path: KeyPath, raw: &RawVia) -> Option<String> {
        match raw {
            RawVia::Enabled(false) => None,
            RawVia::Enabled(true) => HttpLimits::default().via,
            RawVia::Named(name) => {
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b);
                if name.is_empty() || !name.bytes().all(token) {
                    self.problem(
                        &path,
                        format!("must be true, false or a name without spaces (found {name:?})"),
                    );
                    None
                } else {
                    Some(name.clone())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse_err, parse_ok};
    use crate::config::validate::parse_size;
    use std::time::Duration;

    #[test]
    fn limits_sizes_and_via() {
        let c = parse_ok(
            "max_uri_length = 100\nmax_body_size = \"2m\"\nsend_timeout = \"5s\"\ntunnel_timeout = \"30s\"\nvia = \"edge-1\"\n\
             [[routes]]\npath = \"/up\"\nrespond = { body = \"x\" }\nmax_body_size = 10\n",
        );
        assert_eq!(c.http.max_uri_length, 100);
        assert_eq!(c.http.max_body_size, 2 * 1024 * 1024);
        assert_eq!(c.http.send_timeout, Duration::from_secs(5));
        assert_eq!(c.http.tunnel_timeout, Duration::from_secs(30));
        assert_eq!(c.http.via.as_deref(), Some("edge-1"));
        assert_eq!(c.routes[0].max_body_size, Some(10));
        assert_eq!(c.routes[0].max_body_size(&c.http), 10);
        assert_eq!(parse_ok("via = false").http.via, None);
        assert_eq!(parse_ok("via = true").http.via.as_deref(), Some("prefork"));
        let d = parse_ok("");
        assert_eq!(d.http.max_body_size, 100 * 1024 * 1024);
        assert!(!d.http.splice);
        assert!(parse_ok("splice = true").http.splice);
        assert_eq!(parse_ok("max_body_size = 0").http.max_body_size, 0);
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        for bad in ["", "k", "1x", "-1m", "1.5m", "99999999999g"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        let e = parse_err("max_body_size = \"lots\"\n");
        assert!(
            e.starts_with("t.toml:1: max_body_size: invalid size"),
            "{e}"
        );
        let e = parse_err("via = \"a b\"\n");
        assert!(
            e.starts_with("t.toml:1: via: must be true, false or a name"),
            "{e}"
        );
        let e = parse_err("[[routes]]\nrespond = { body = \"x\" }\nmax_body_size = -1\n");
        assert!(
            e.starts_with("t.toml:3: routes[0].max_body_size: must not be negative"),
            "{e}"
        );
    }

    #[test]
    fn max_request_headers_is_bounded() {
        let e = parse_err("max_request_headers = 9223372036854775807\n");
        assert!(
            e.starts_with("t.toml:1: max_request_headers: must be at most 10000"),
            "{e}"
        );
        assert_eq!(
            parse_ok("max_request_headers = 10000")
                .http
                .max_request_headers,
            10_000
        );
    }
}
