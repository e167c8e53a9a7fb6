//! The client-side keys: limits and timeouts on requests from clients, and
//! how forwarded messages are marked (`via`, `splice`).

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{Http2Limits, HttpLimits};
use crate::config::raw::{RawConfig, RawSize, RawVia};

/// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

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

    /// The `http2_*` keys; the idle timeout is `keepalive_timeout` unless
    /// set.
    pub(super) fn http2(&mut self, raw: &RawConfig, http: &HttpLimits) -> Http2Limits {
        let root = KeyPath::default();
        let defaults = Http2Limits::default();
        let streams = match raw.http2_max_concurrent_streams {
            Some(n) if n == 0 || n > u64::from(u32::MAX) => {
                self.problem(
                    &root.key("http2_max_concurrent_streams"),
                    format!("must be between 1 and {} (found {n})", u32::MAX),
                );
                defaults.max_concurrent_streams
            }
            Some(n) => n as u32,
            None => defaults.max_concurrent_streams,
        };
        let mut window = |key: &str, raw: &Option<RawSize>, min: u64, max: u64, default: u32| {
            let Some(n) = raw.as_ref().and_then(|s| self.size(root.key(key), s)) else {
                return default;
            };
            if n < min || n > max {
                self.problem(
                    &root.key(key),
                    format!("must be between {min} and {max} bytes (found {n})"),
                );
                return default;
            }
            n as u32
        };
        let max_header_list_size = window(
            "http2_max_header_list_size",
            &raw.http2_max_header_list_size,
            1024,
            u64::from(u32::MAX),
            defaults.max_header_list_size,
        );
        let initial_window_size = window(
            "http2_initial_window_size",
            &raw.http2_initial_window_size,
            1024,
            MAX_WINDOW,
            defaults.initial_window_size,
        );
        // Below the stream window, the connection window would be the
        // limit of every stream.
        let initial_connection_window_size = window(
            "http2_initial_connection_window_size",
            &raw.http2_initial_connection_window_size,
            65_535,
            MAX_WINDOW,
            defaults.initial_connection_window_size,
        );
        Http2Limits {
            max_concurrent_streams: streams,
            max_header_list_size,
            idle_timeout: self.duration(
                root.key("http2_idle_timeout"),
                raw.http2_idle_timeout.as_deref(),
                http.keepalive_timeout,
            ),
            initial_window_size,
            initial_connection_window_size,
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

    #[test]
    fn http2_limits_have_nginx_defaults_and_are_checked() {
        let d = parse_ok("");
        assert_eq!(d.http2.max_concurrent_streams, 128);
        assert_eq!(d.http2.max_header_list_size, 32 * 1024);
        assert_eq!(d.http2.idle_timeout, d.http.keepalive_timeout);
        assert_eq!(d.http2.initial_window_size, 65_535);
        assert_eq!(d.http2.initial_connection_window_size, 1 << 20);
        let c = parse_ok(
            "keepalive_timeout = \"5s\"\nhttp2_max_concurrent_streams = 10\n\
             http2_max_header_list_size = \"8k\"\nhttp2_initial_window_size = \"1m\"\n\
             http2_initial_connection_window_size = \"4m\"\n",
        );
        assert_eq!(c.http2.max_concurrent_streams, 10);
        assert_eq!(c.http2.max_header_list_size, 8192);
        assert_eq!(c.http2.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.http2.initial_window_size, 1 << 20);
        assert_eq!(c.http2.initial_connection_window_size, 4 << 20);
        let c = parse_ok("keepalive_timeout = \"5s\"\nhttp2_idle_timeout = \"3m\"\n");
        assert_eq!(c.http2.idle_timeout, Duration::from_secs(180));
        let e = parse_err("http2_max_concurrent_streams = 0\n");
        assert!(
            e.starts_with("t.toml:1: http2_max_concurrent_streams: must be between 1"),
            "{e}"
        );
        let e = parse_err("\nhttp2_initial_window_size = \"4g\"\n");
        assert!(
            e.starts_with(
                "t.toml:2: http2_initial_window_size: must be between 1024 and 2147483647"
            ),
            "{e}"
        );
        let e = parse_err("http2_initial_connection_window_size = 100\n");
        assert!(
            e.starts_with("t.toml:1: http2_initial_connection_window_size: must be between 65535"),
            "{e}"
        );
    }
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
