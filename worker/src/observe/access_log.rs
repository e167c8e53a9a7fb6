//! The access log: one line per request, in the configured format
//! (`combined`, `json` or a template), to the route's destination.

use crate::observe::access_sink::Sink;
use prefork_shared::config::{
    AccessField, AccessFormat, Config, LogTarget, RouteAccessLog, Segment,
};
use prefork_shared::stats::UNROUTED;
use slog::Logger;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request fields an access-log line shows, copied out of the request
/// head (into buffers reused across requests) only when a log is on.
#[derive(Debug, Default)]
pub(crate) struct RequestInfo {
    method: String,
    host: String,
    uri: String,
    protocol: &'static str,
    /// Kept as bytes: a value that is not UTF-8 is still logged (escaped).
    referer: Vec<u8>,
    user_agent: Vec<u8>,
}

impl RequestInfo {
    /// Records the fields of the current request.
    pub(crate) fn set(&mut self, head: &crate::http::request::RequestHead<'_, '_>) {
        let field = |name: &str| {
            head.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map_or(&b""[..], |h| h.value)
        };
        for (out, value) in [
            (&mut self.method, head.method),
            (&mut self.host, head.host.unwrap_or("")),
            (&mut self.uri, head.target),
        ] {
            out.clear();
            out.push_str(value);
        }
        for (out, value) in [
            (&mut self.referer, field("referer")),
            (&mut self.user_agent, field("user-agent")),
        ] {
            out.clear();
            out.extend_from_slice(value);
        }
        self.protocol = match head.version {
            crate::http::Version::Http10 => "HTTP/1.0",
            crate::http::Version::Http11 => "HTTP/1.1",
            crate::http::Version::Http2 => "HTTP/2.0",
        };
    }

    /// Forgets the fields (for a request that could not be parsed).
    pub(crate) fn clear(&mut self) {
        for field in [&mut self.method, &mut self.host, &mut self.uri] {
            field.clear();
        }
        self.referer.clear();
        self.user_agent.clear();
        self.protocol = "";
    }

    /// The largest capacity of its fields (to free grown ones).
    pub(crate) fn capacity(&self) -> usize {
        [
            self.method.capacity(),
            self.host.capacity(),
            self.uri.capacity(),
            self.referer.capacity(),
            self.user_agent.capacity(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// What a TLS connection negotiated, as the access log shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub(crate) protocol: &'static str,
    /// The cipher suite, as rustls names it.
    pub(crate) cipher: &'static str,
    /// The name the client asked for (SNI), if any.
    pub(crate) server_name: Option<String>,
}

impl TlsInfo {
    /// What `conn`'s completed handshake negotiated.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            protocol: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "-",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("-"),
            server_name: conn.server_name().map(str::to_owned),
        }
    }
}

/// What serving one request did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    /// The status sent (0 if the client got no response).
    pub(crate) status: u16,
    /// Bytes written to the client, head included.
    pub(crate) bytes_sent: u64,
    /// The upstream server used, if any.
    pub(crate) upstream: Option<SocketAddr>,
    /// For a proxied request, the time from its head to the end of the
    /// response (as the total: choosing the server takes no time to speak of).
    pub(crate) upstream_time: Option<Duration>,
}

/// One request's line, as the formats see it.
pub(crate) struct Entry<'a> {
    /// The client.
    pub(crate) client: SocketAddr,
    /// Fields of the request head.
    pub(crate) info: &'a RequestInfo,
    /// The request id sent upstream.
    pub(crate) request_id: &'a str,
    /// The matching route (`None`: no route).
    pub(crate) route: Option<usize>,
    /// What serving it did.
    pub(crate) served: &'a Served,
    /// From the complete head to the end of the response.
    pub(crate) total: Duration,
    /// What the connection's TLS negotiated (`None`: plain HTTP).
    pub(crate) tls: Option<&'a TlsInfo>,
}

/// The access logs of one configuration: the destinations and which route
/// uses which. A hot reload builds new ones with [`AccessLogs::reconfigured`],
/// which keeps the destinations still named open (a file is never reopened
/// just because routes or the format changed).
pub(crate) struct AccessLogs {
    sinks: Vec<Rc<Sink>>,
    /// Sink of each route, then of unrouted requests (`None`: off).
    by_route: Vec<Option<usize>>,
    labels: Vec<String>,
    format: AccessFormat,
    clock: RefCell<Clock>,
    /// The line being formatted, reused across requests.
    line: RefCell<String>,
}

impl AccessLogs {
    /// Opens the destinations `config` names (each file once); their
    /// writers report to `log`.
    pub(crate) fn open(config: &Config, log: &Logger) -> io::Result<AccessLogs> {
        let (logs, mut failed) = AccessLogs::build(config, &[], log);
        match failed.pop() {
            Some(e) => Err(e),
            None => Ok(logs),
        }
    }

    /// The access logs of `config`, reusing the open destinations of these
    /// ones. Destinations that cannot be opened are off (the errors are
    /// returned for the error log): the rest of the configuration still
    /// applies.
    pub(crate) fn reconfigured(
        &self,
        config: &Config,
        log: &Logger,
    ) -> (AccessLogs, Vec<io::Error>) {
        AccessLogs::build(config, &self.sinks, log)
    }

    fn build(config: &Config, open: &[Rc<Sink>], log: &Logger) -> (AccessLogs, Vec<io::Error>) {
        let mut sinks: Vec<Rc<Sink>> = Vec::new();
        let mut failed = Vec::new();
        let mut sink_for = |target: &LogTarget| -> Option<usize> {
            if let Some(i) = sinks.iter().position(|s| s.target() == target) {
                return Some(i);
            }
            let sink = match open.iter().find(|s| s.target() == target) {
                Some(sink) => sink.clone(),
                None => match Sink::open(target, log) {
                    Ok(sink) => Rc::new(sink),
                    Err(e) => {
                        failed.push(e);
                        return None;
                    }
                },
            };
            sinks.push(sink);
            Some(sinks.len() - 1)
        };
        let default = config.log.access_log.as_ref().and_then(&mut sink_for);
        let mut by_route = Vec::with_capacity(config.routes.len() + 1);
        for route in &config.routes {
            by_route.push(match &route.access_log {
                RouteAccessLog::Inherit => default,
                RouteAccessLog::Off => None,
                RouteAccessLog::To(target) => sink_for(target),
            });
        }
        by_route.push(default);
        let logs = AccessLogs {
            sinks,
            by_route,
            labels: config.routes.iter().map(|r| r.label()).collect(),
            format: config.log.access_log_format.clone(),
            clock: RefCell::default(),
            line: RefCell::default(),
        };
        (logs, failed)
    }

    /// No access log at all (tests).
    #[cfg(test)]
    pub(crate) fn off() -> AccessLogs {
        AccessLogs {
            sinks: Vec::new(),
            by_route: vec![None],
            labels: Vec::new(),
            format: AccessFormat::Combined,
            clock: RefCell::default(),
            line: RefCell::default(),
        }
    }

    /// Whether any request may be logged (request fields are then kept).
    pub(crate) fn any(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Logs one request, if its route has a log.
    pub(crate) fn record(&self, entry: &Entry<'_>) {
        let last = self.by_route.len() - 1;
        let Some(sink) = self.by_route[entry.route.unwrap_or(last).min(last)] else {
            return;
        };
        let mut line = self.line.borrow_mut();
        line.clear();
        let now = SystemTime::now();
        let mut clock = self.clock.borrow_mut();
        let route = entry
            .route
            .and_then(|r| self.labels.get(r))
            .map_or(UNROUTED, String::as_str);
        let v = Values {
            e: entry,
            route,
            clock: clock.at(now),
        };
        // Writing into a String cannot fail.
        let _ = match &self.format {
            AccessFormat::Combined => v.combined(&mut line),
            AccessFormat::Json => v.json(&mut line),
            AccessFormat::Template(t) => v.template(t, &mut line),
        };
        line.push('\n');
        self.sinks[sink].send(&line);
    }
}

/// The formatted times of the current second, computed once per second.
#[derive(Default)]
struct Clock {
    second: u64,
    local: String,
    iso: String,
}

impl Clock {
    fn at(&mut self, now: SystemTime) -> &Clock {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.second || self.local.is_empty() {
            let (y, mo, d, h, mi, s) = civil(secs);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            self.local = format!(
                "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
                MONTHS[(mo - 1) as usize]
            );
            self.iso = format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
            self.second = secs;
        }
        self
    }
}

/// UTC date and time of a Unix time (Howard Hinnant's days-to-civil).
fn civil(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year as u64,
        month as u64,
        day as u64,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

struct Values<'a> {
    e: &'a Entry<'a>,
    route: &'a str,
    clock: &'a Clock,
}

impl Values<'_> {
    /// nginx's `combined`, then the request id and the request time.
    fn combined(&self, out: &mut String) -> fmt::Result {
        let i = self.e.info;
        push_ip(out, self.e.client.ip().to_canonical());
        out.push_str(" - - [");
        out.push_str(&self.clock.local);
        out.push_str("] \"");
        if i.method.is_empty() {
            out.push('-');
        } else {
            quoted(out, &i.method);
            out.push(' ');
            quoted(out, &i.uri);
            out.push(' ');
            out.push_str(i.protocol);
        }
        out.push_str("\" ");
        push_number(out, self.e.served.status);
        out.push(' ');
        push_number(out, self.e.served.bytes_sent);
        out.push_str(" \"");
        quoted(out, dash(&i.referer));
        out.push_str("\" \"");
        quoted(out, dash(&i.user_agent));
        out.push_str("\" \"");
        quoted(out, self.e.request_id);
        out.push_str("\" ");
        push_secs(out, self.e.total);
        Ok(())
    }

    fn json(&self, out: &mut String) -> fmt::Result {
        let i = self.e.info;
        let s = self.e.served;
        out.push('{');
        json_field(out, "time", &self.clock.iso);
        out.push(',');
        json_field(
            out,
            "remote_addr",
            &self.e.client.ip().to_canonical().to_string(),
        );
        out.push(',');
        json_field(out, "request_id", self.e.request_id);
        out.push(',');
        json_field(out, "method", &i.method);
        out.push(',');
        json_field(out, "uri", &i.uri);
        out.push(',');
        json_field(out, "protocol", i.protocol);
        out.push(',');
        json_field(out, "host", &i.host);
        out.push(',');
        json_field(out, "route", self.route);
        write!(
            out,
            ",\"status\":{},\"bytes_sent\":{},\"request_time\":{}",
            s.status,
            s.bytes_sent,
            Secs(self.e.total)
        )?;
        out.push(',');
        match s.upstream {
            Some(addr) => json_field(out, "upstream_addr", &addr.to_string()),
            None => out.push_str("\"upstream_addr\":null"),
        }
        match s.upstream_time {
            Some(t) => write!(out, ",\"upstream_response_time\":{}", Secs(t))?,
            None => out.push_str(",\"upstream_response_time\":null"),
        }
        out.push(',');
        json_field(out, "http_referer", &String::from_utf8_lossy(&i.referer));
        out.push(',');
        json_field(
            out,
            "http_user_agent",
            &String::from_utf8_lossy(&i.user_agent),
        );
        out.push('}');
        Ok(())
    }

    fn template(&self, segments: &[Segment], out: &mut String) -> fmt::Result {
        let i = self.e.info;
        let s = self.e.served;
        for seg in segments {
            let field = match seg {
                Segment::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Segment::Field(f) => f,
            };
            match field {
                AccessField::RemoteAddr => push_ip(out, self.e.client.ip().to_canonical()),
                AccessField::TimeLocal => out.push_str(&self.clock.local),
                AccessField::TimeIso8601 => out.push_str(&self.clock.iso),
                AccessField::Request => {
                    quoted(out, &i.method);
                    out.push(' ');
                    quoted(out, &i.uri);
                    out.push(' ');
                    out.push_str(i.protocol);
                }
                AccessField::RequestMethod => quoted(out, dash(&i.method)),
                AccessField::RequestUri => quoted(out, dash(&i.uri)),
                AccessField::ServerProtocol => quoted(out, dash(i.protocol)),
                AccessField::Host => quoted(out, dash(&i.host)),
                AccessField::Status => push_number(out, s.status),
                AccessField::BytesSent => push_number(out, s.bytes_sent),
                AccessField::RequestTime => push_secs(out, self.e.total),
                AccessField::UpstreamAddr => write!(out, "{}", OrDash(s.upstream))?,
                AccessField::UpstreamResponseTime => {
                    write!(out, "{}", OrDash(s.upstream_time.map(Secs)))?
                }
                AccessField::HttpReferer => quoted(out, dash(&i.referer)),
                AccessField::HttpUserAgent => quoted(out, dash(&i.user_agent)),
                AccessField::RequestId => quoted(out, self.e.request_id),
                AccessField::Route => quoted(out, self.route),
                AccessField::Pid => write!(out, "{}", std::process::id())?,
                AccessField::SslProtocol => quoted(out, self.e.tls.map_or("-", |t| t.protocol)),
                AccessField::SslCipher => quoted(out, self.e.tls.map_or("-", |t| t.cipher)),
                AccessField::SslServerName => quoted(
                    out,
                    self.e
                        .tls
                        .and_then(|t| t.server_name.as_deref())
                        .unwrap_or("-"),
                ),
            }
        }
        Ok(())
    }
}

fn dash<S: AsRef<[u8]> + ?Sized>(s: &S) -> &[u8] {
    match s.as_ref() {
        b"" => b"-",
        s => s,
    }
}

/// Appends `s` with `"`, `\` and bytes outside printable ASCII escaped as
/// `\xHH`, as nginx does, so a line can never be split or forged.
fn quoted<S: AsRef<[u8]> + ?Sized>(out: &mut String, s: &S) {
    let escaped = |b: &u8| *b == b'"' || *b == b'\\' || !(0x20..0x7f).contains(b);
    let mut rest = s.as_ref();
    // Runs of printable ASCII are copied at once.
    while let Some(at) = rest.iter().position(escaped) {
        out.push_str(std::str::from_utf8(&rest[..at]).unwrap_or_default());
        let _ = write!(out, "\\x{:02X}", rest[at]);
        rest = &rest[at + 1..];
    }
    out.push_str(std::str::from_utf8(rest).unwrap_or_default());
}

/// Appends `n` in decimal (`itoa`: `write!` costs several times more, and
/// lines are formatted per request).
fn push_number(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `ip` (dotted quad for IPv4, without `write!`).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_number(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends a duration as seconds with milliseconds (`1.234`).
fn push_secs(out: &mut String, d: Duration) {
    push_number(out, d.as_secs());
    let ms = d.subsec_millis();
    out.push('.');
    for digit in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends `"key":"value"` with the value escaped for JSON.
fn json_field(out: &mut String, key: &str, value: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Seconds with millisecond precision, as nginx logs times.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0.as_secs(), self.0.subsec_millis())
    }
}

/// `-` for a missing value.
struct OrDash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RequestInfo {
        RequestInfo {
            method: "GET".into(),
            host: "app.test".into(),
            uri: "/a?b=\"c\"".into(),
            protocol: "HTTP/1.1",
            referer: Vec::new(),
            user_agent: b"curl/8".to_vec(),
        }
    }

    #[test]
    fn a_reconfiguration_keeps_destinations_still_named_open() {
        let dir = std::env::temp_dir().join(format!("prefork-access-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = |routes: &str| {
            let text = format!("[log]\naccess_log = \"{}/a.log\"\n{routes}", dir.display());
            prefork_shared::config::parse(std::path::Path::new("t.toml"), &text).unwrap()
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let first = AccessLogs::open(&config(""), &log).unwrap();
        let own = format!(
            "[[routes]]\npath = \"/x\"\nrespond = {{ body = \"x\" }}\naccess_log = \"{}/x.log\"\n",
            dir.display()
        );
        let (second, failed) = first.reconfigured(&config(&own), &log);
        assert!(failed.is_empty());
        assert_eq!(second.sinks.len(), 2);
        assert!(Rc::ptr_eq(&first.sinks[0], &second.sinks[0]));
        assert_eq!(second.labels, ["*/x"]);
        assert_eq!(second.by_route, [Some(1), Some(0)]);
        drop((first, second));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn line(format: AccessFormat) -> String {
        line_of(format, &info(), "abc")
    }

    fn line_of(format: AccessFormat, info: &RequestInfo, request_id: &str) -> String {
        let served = Served {
            status: 200,
            bytes_sent: 42,
            upstream: Some("127.0.0.1:3000".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(3)),
        };
        let entry = Entry {
            client: "127.0.0.1:5555".parse().unwrap(),
            info,
            request_id,
            route: None,
            served: &served,
            total: Duration::from_millis(4),
            tls: None,
        };
        let mut clock = Clock::default();
        let v = Values {
            e: &entry,
            route: "*/",
            clock: clock.at(UNIX_EPOCH + Duration::from_secs(971_186_136)),
        };
        let mut out = String::new();
        match &format {
            AccessFormat::Combined => v.combined(&mut out),
            AccessFormat::Json => v.json(&mut out),
            AccessFormat::Template(t) => v.template(t, &mut out),
        }
        .unwrap();
        out
    }

    #[test]
    fn combined_line() {
        assert_eq!(
            line(AccessFormat::Combined),
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 42 \"-\" \"curl/8\" \"abc\" 0.004"
        );
    }

    #[test]
    fn json_line_escapes() {
        let l = line(AccessFormat::Json);
        assert!(l.starts_with("{\"time\":\"2000-10-10T13:55:36Z\",\"remote_addr\":\"127.0.0.1\",\"request_id\":\"abc\""), "{l}");
        assert!(l.contains("\"uri\":\"/a?b=\\\"c\\\"\""), "{l}");
        assert!(
            l.contains("\"status\":200,\"bytes_sent\":42,\"request_time\":0.004"),
            "{l}"
        );
        assert!(
            l.contains("\"upstream_addr\":\"127.0.0.1:3000\",\"upstream_response_time\":0.003"),
            "{l}"
        );
    }

    #[test]
    fn template_line() {
        let t = prefork_shared::config::parse_template(
            "$request_id $status $upstream_addr $route $pid",
        )
        .unwrap();
        assert_eq!(
            line(AccessFormat::Template(t)),
            format!("abc 200 127.0.0.1:3000 */ {}", std::process::id())
        );
    }

    #[test]
    fn client_bytes_cannot_split_or_forge_a_line() {
        let info = RequestInfo {
            method: "GET".into(),
            host: "h\"x".into(),
            uri: "/\"x\\y".into(),
            protocol: "HTTP/1.1",
            referer: b"r\t\"\\".to_vec(),
            // Not UTF-8: still logged, escaped.
            user_agent: b"ua\xff\xfe\" \"x".to_vec(),
        };
        let combined = line_of(AccessFormat::Combined, &info, "id");
        assert!(
            combined.contains(
                "\"GET /\\x22x\\x5Cy HTTP/1.1\" 200 42 \"r\\x09\\x22\\x5C\" \"ua\\xFF\\xFE\\x22 \\x22x\" \"id\""
            ),
            "{combined}"
        );
        let t = prefork_shared::config::parse_template("$host|$http_user_agent").unwrap();
        assert_eq!(
            line_of(AccessFormat::Template(t), &info, "id"),
            "h\\x22x|ua\\xFF\\xFE\\x22 \\x22x"
        );
        let json = line_of(AccessFormat::Json, &info, "id");
        assert!(
            json.contains("\"http_user_agent\":\"ua\u{fffd}\u{fffd}\\\" \\\"x\""),
            "{json}"
        );
        assert!(
            json.contains("\"http_referer\":\"r\\u0009\\\"\\\\\""),
            "{json}"
        );
    }

    #[test]
    fn formats_times_and_dashes() {
        assert_eq!(Secs(Duration::from_millis(1234)).to_string(), "1.234");
        let mut out = String::new();
        push_secs(&mut out, Duration::from_millis(61_005));
        out.push(' ');
        push_ip(&mut out, "10.0.0.255".parse().unwrap());
        out.push(' ');
        push_ip(&mut out, "::1".parse().unwrap());
        out.push(' ');
        quoted(&mut out, "a\"é\\b\u{7f}");
        assert_eq!(out, "61.005 10.0.0.255 ::1 a\\x22\\xC3\\xA9\\x5Cb\\x7F");
        assert_eq!(OrDash::<u8>(None).to_string(), "-");
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
