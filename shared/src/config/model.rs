//! The validated configuration model.
//!
//! Everything here is already checked: addresses are resolved, durations
//! parsed, every route's upstream exists. The master builds it from the TOML
//! file (see [`super::load`]) and sends it to each worker over IPC, so
//! a worker never reads or validates the file itself.

use super::access_format::AccessFormat;
use super::redirect::Redirect;
use crate::tls::TlsSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A complete, validated prefork configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The file this configuration was read from (for messages and reloads).
    pub source: PathBuf,
    /// Number of worker processes (already resolved from `"auto"`).
    pub workers: usize,
    /// CPUs the workers are pinned to (`worker_cpu_affinity`, already
    /// resolved from `"auto"`): the worker in slot `i` runs on entry
    /// `i % len`. Empty: workers are not pinned.
    pub worker_cpu_affinity: Vec<usize>,
    /// Where the master writes its pid.
    pub pid_file: PathBuf,
    /// Unprivileged user the workers run as when the master is root.
    pub user: Option<String>,
    /// How long a graceful stop or reload lets in-flight requests finish.
    pub shutdown_timeout: Duration,
    /// What SIGTERM asks for: a fast stop (nginx's meaning) or a graceful
    /// one (what Kubernetes and systemd expect).
    pub sigterm: SigtermMode,
    /// How long the workers keep accepting and serving after a graceful
    /// stop is asked, while `/healthz` answers 503, before they drain: load
    /// balancers withdraw the instance meanwhile.
    pub shutdown_delay: Duration,
    /// A worker whose event loop sends no heartbeat for this long is killed
    /// and replaced.
    pub worker_timeout: Duration,
    /// How long a TLS client may resume its session with a ticket; the
    /// session-ticket keys rotate at this interval.
    pub tls_session_timeout: Duration,
    /// Most client connections one worker holds open, parked ones included
    /// (nginx's `worker_connections`). `None` as written when absent: the
    /// master then sets what the file-descriptor limit allows (see
    /// [`crate::fd_budget`]), so workers always get a number.
    pub max_connections: Option<u64>,
    /// Error and access log destinations.
    pub log: LogConfig,
    /// Addresses the master binds; every worker accepts on all of them.
    pub listen: Vec<Listen>,
    /// Client-side limits and timeouts.
    pub http: HttpLimits,
    /// Limits of client HTTP/2 connections.
    pub http2: Http2Limits,
    /// Named groups of backend servers.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routing table, in file order.
    pub routes: Vec<Route>,
    /// The master's control socket (`prefork status`, `prefork -s reload`).
    pub control_socket: PathBuf,
    /// The admin HTTP listener (`/metrics`, `/healthz`); off when `None`.
    pub admin: Option<Admin>,
    /// TLS: the settings, the certificate files and (filled by the master)
    /// the certificates read from them.
    pub tls: TlsSettings,
}

/// What SIGTERM asks the master for (`sigterm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigtermMode {
    /// Close every connection now, as nginx does.
    #[default]
    Fast,
    /// Stop as SIGQUIT does: after `shutdown_delay`, drain.
    Graceful,
}

/// The admin HTTP listener serving `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// The address it binds (loopback unless configured otherwise).
    pub addr: SocketAddr,
}

/// The control socket used when the config names none: beside the pid file,
/// with the pid file's name and a `.sock` extension.
pub fn default_control_socket(pid_file: &Path) -> PathBuf {
    pid_file.with_extension("sock")
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    /// The address to bind.
    pub addr: SocketAddr,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// One `SO_REUSEPORT` socket per worker slot instead of one shared
    /// socket, so that the kernel spreads connections evenly over workers.
    pub reuseport: bool,
    /// `TCP_DEFER_ACCEPT`: the kernel queues a connection for accept(2) only
    /// once the client has sent its first bytes (nginx's `deferred`,
    /// HAProxy's `defer-accept`).
    pub defer_accept: bool,
    /// The listener speaks TLS (HTTPS).
    pub tls: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// naming the client, sent by the load balancer in front.
    pub proxy_protocol: bool,
    /// HTTP/2 is accepted too: offered by ALPN (before `http/1.1`) on a TLS
    /// listener, recognised by its connection preface (h2c with prior
    /// knowledge) on a plain one; HTTP/1.1 is still served.
    pub http2: bool,
}

/// Limits of each client HTTP/2 connection, named as nginx names them
/// where it has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Limits {
    /// Streams a client may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Largest request header list, decoded, in bytes (RFC 9113's size:
    /// name, value and 32 bytes per field); `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_size: u32,
    /// How long a connection without open streams is kept.
    pub idle_timeout: Duration,
    /// Each stream's receive window at its start
    /// (`SETTINGS_INITIAL_WINDOW_SIZE`): the most request body one stream
    /// may have buffered in the worker.
    pub initial_window_size: u32,
    /// The connection's receive window: the most request body all of a
    /// connection's streams may have buffered.
    pub initial_connection_window_size: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 128,
            max_header_list_size: 32 * 1024,
            idle_timeout: HttpLimits::default().keepalive_timeout,
            initial_window_size: 65_535,
            initial_connection_window_size: 1024 * 1024,
        }
    }
}

/// Client-side (downstream) limits and timeouts, named as nginx names them,
/// and how forwarded messages are marked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpLimits {
    /// Time allowed to receive a whole request head (408 after it).
    pub client_header_timeout: Duration,
    /// Longest pause allowed between two reads of a request body.
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_timeout: Duration,
    /// Requests served on one client connection before it is closed.
    pub keepalive_requests: u64,
    /// Largest request head (request line plus headers) in bytes (431 above it).
    pub max_request_header_size: usize,
    /// Most header fields in one request (431 above it).
    pub max_request_headers: usize,
    /// Longest request target in bytes (414 above it).
    pub max_uri_length: usize,
    /// Largest request body in bytes (413 above it); 0 means no limit.
    /// A route may set its own.
    pub max_body_size: u64,
    /// Longest stall of a write to the client (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// How long an upgraded (WebSocket) tunnel may stay idle both ways.
    pub tunnel_timeout: Duration,
    /// The pseudonym in the `Via` field added to forwarded messages; `None`
    /// adds none.
    pub via: Option<String>,
    /// Large `Content-Length` bodies are moved between the sockets with
    /// `splice(2)` instead of being copied through user space (off by
    /// default: on loopback the receiver pays more than the proxy saves).
    pub splice: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: 1000,
            max_request_header_size: 32 * 1024,
            max_request_headers: 100,
            max_uri_length: 8 * 1024,
            max_body_size: 100 * 1024 * 1024,
            send_timeout: Duration::from_secs(60),
            tunnel_timeout: Duration::from_secs(3600),
            via: Some("prefork".to_owned()),
            splice: false,
        }
    }
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogTarget {
    /// The process's standard error.
    Stderr,
    /// The process's standard output.
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

/// Log destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Where errors and lifecycle events go.
    pub error_log: LogTarget,
    /// Where the per-request access log goes; `None` turns it off.
    pub access_log: Option<LogTarget>,
    /// How access-log lines look.
    pub access_log_format: AccessFormat,
}

/// A group of backend servers that requests are balanced across.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// The servers, in file order.
    pub servers: Vec<Server>,
    /// How a server is chosen for each request.
    pub balance: Balance,
    /// Failures within `fail_timeout` that take a server out of rotation
    /// (0: never).
    pub max_fails: u32,
    /// The window in which `max_fails` failures are counted, and how long a
    /// failed server is then skipped.
    pub fail_timeout: Duration,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// Time allowed to establish a TCP connection (502 after it).
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of a response (504 before any byte).
    pub read_timeout: Duration,
    /// Longest wait for a write to the server to make progress.
    pub write_timeout: Duration,
    /// Most idle keep-alive connections a worker keeps per server.
    pub keepalive: usize,
    /// How long an idle pooled connection is kept.
    pub keepalive_timeout: Duration,
    /// TLS to every server of the group (`tls = true`); `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// How often the master resolves the host names among `servers` again
    /// (`resolve`, nginx's `resolve` on a server), every address kept;
    /// `None`: only at start and reload.
    pub resolve: Option<Duration>,
    /// The HTTP version requests go to the servers in.
    pub protocol: UpstreamProtocol,
    /// The PROXY protocol header each new connection to a server starts
    /// with (`send_proxy_protocol`, HAProxy's `send-proxy`); `None`: none.
    pub send_proxy_protocol: Option<ProxyVersion>,
}

/// The version of the PROXY protocol header sent to an upstream group's
/// servers (`send_proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyVersion {
    /// The text header (`"v1"`): `PROXY TCP4 src dst sport dport`.
    V1,
    /// The binary header (`"v2"`).
    V2,
}

/// The HTTP version an upstream group's servers speak (`protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, over pooled keep-alive connections (`"http1"`).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge (`"h2c"`), as gRPC servers
    /// speak it.
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN (`"h2"`, with `tls = true`).
    H2,
}

impl Upstream {
    /// The host names among the servers as written (`host:port` that is
    /// not an address), each once, in file order.
    pub fn host_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for s in &self.servers {
            if s.name.parse::<SocketAddr>().is_err() && !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
        names
    }
}

/// TLS to an upstream group's servers, always verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified in each server's certificate
    /// (`tls_server_name`); `None`: each server's host as written in
    /// `servers` (an IP address is verified as an IP address).
    pub server_name: Option<String>,
    /// What the servers' certificates are verified against.
    pub roots: TlsRoots,
}

/// The trust roots of upstream TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsRoots {
    /// The system's trust store, loaded by each worker (it is readable by
    /// any user).
    System,
    /// The certificates of `tls_ca`, read by the master (the file may be
    /// readable by root alone): workers never open it.
    Ca {
        /// The file they came from (for messages).
        file: PathBuf,
        /// Each certificate, DER-encoded.
        certs: Vec<Der>,
    },
}

/// DER-encoded bytes, shown by their size only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Der(pub Vec<u8>);

impl std::fmt::Debug for Der {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Der({} bytes)", self.0.len())
    }
}

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The address as written in the config (for logs).
    pub name: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Relative share of the requests (at least 1).
    pub weight: u32,
}

/// How an upstream group picks a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's).
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight relative to its weight.
    LeastConn,
    /// Power of two choices: two servers drawn at random by weight, the less
    /// busy one wins.
    RandomTwo,
}

/// Active health checks: each worker probes every server of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path requested with `GET`; a 2xx or 3xx answer is a pass.
    pub path: String,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// Time allowed for one check (connect, send, response head).
    pub timeout: Duration,
    /// Consecutive passes that bring a down server back.
    pub passes: u32,
    /// Consecutive failures that take a server down.
    pub fails: u32,
}

/// Which `Host` values a route applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostMatch {
    /// Any host (the key was omitted).
    Any,
    /// Exactly this host, lower-cased, without a port.
    Exact(String),
    /// `*.example.com`: any name ending in this suffix (stored as
    /// `.example.com`, lower-cased); `example.com` itself does not match.
    Suffix(String),
}

/// The rules of a host match one route at a time, as the route table's
/// tests check it against (routing itself goes through
/// [`crate::route_table::RouteTable`]).
#[cfg(test)]
impl HostMatch {
    /// Whether `host` (lower-cased, port already removed) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// How specific the match is: exact beats any wildcard, a longer
    /// wildcard beats a shorter one, and any host comes last.
    pub fn specificity(&self) -> usize {
        match self {
            HostMatch::Any => 0,
            HostMatch::Suffix(s) => 1 + s.len(),
            HostMatch::Exact(_) => usize::MAX,
        }
    }
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Hosts this route applies to.
    pub host: HostMatch,
    /// Path prefix; the longest matching prefix wins.
    pub path: String,
    /// What to do with a matching request.
    pub action: RouteAction,
    /// Where this route's requests are logged.
    pub access_log: RouteAccessLog,
    /// This route's request body limit, overriding the top-level one.
    pub max_body_size: Option<u64>,
}

impl Route {
    /// The route's label in metrics and logs: host (`*` for any) and path.
    pub fn label(&self) -> String {
        let host = match &self.host {
            HostMatch::Any => "*".to_owned(),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*{s}"),
        };
        format!("{host}{}", self.path)
    }
}

/// A route's own access log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RouteAccessLog {
    /// The `[log] access_log` (the key was omitted).
    #[default]
    Inherit,
    /// No access log for this route.
    Off,
    /// This destination instead.
    To(LogTarget),
}

/// What a route does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAction {
    /// Proxy to the named upstream (it exists in [`Config::upstreams`]).
    Proxy(String),
    /// Answer with a fixed response.
    Respond(FixedResponse),
    /// Answer with a redirect whose `Location` is built from the request.
    Redirect(Redirect),
}

/// A response prefork answers by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedResponse {
    /// HTTP status code (100..=999 excluded 1xx: 200..=599).
    pub status: u16,
    /// Response body.
    pub body: String,
    /// `Content-Type` of the body.
    pub content_type: String,
}

impl Route {
    /// The body limit for requests on this route (0: none).
    pub fn max_body_size(&self, limits: &HttpLimits) -> u64 {
        self.max_body_size.unwrap_or(limits.max_body_size)
    }
}

impl Config {
    /// The CPU the worker in `slot` is pinned to, if workers are pinned.
    pub fn cpu_for_slot(&self, slot: u32) -> Option<usize> {
        let cpus = &self.worker_cpu_affinity;
        (!cpus.is_empty()).then(|| cpus[slot as usize % cpus.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse_ok;
    use crate::route_table::RouteTable;

    /// The route `c` gives a request for `host` (lower-cased, without its
    /// port) and `path` (normalised), as a worker's table finds it.
    fn route<'a>(c: &'a Config, host: &str, path: &str) -> Option<&'a Route> {
        RouteTable::new(&c.routes)
            .lookup(host, path.as_bytes())
            .map(|i| &c.routes[i])
    }

    #[test]
    fn control_socket_sits_beside_the_pid_file() {
        assert_eq!(
            default_control_socket(Path::new("/run/prefork.pid")),
            PathBuf::from("/run/prefork.sock")
        );
    }

    #[test]
    fn routing_prefers_specific_host_then_longest_prefix() {
        let c = parse_ok(
            r#"
[upstreams.a]
servers = ["127.0.0.1:1"]
[upstreams.b]
servers = ["127.0.0.1:2"]
[upstreams.c]
servers = ["127.0.0.1:3"]
[[routes]]
path = "/"
upstream = "a"
[[routes]]
host = "*.example.com"
upstream = "b"
[[routes]]
host = "api.example.com"
path = "/v1"
upstream = "c"
"#,
        );
        let target = |host: &str, path: &str| match route(&c, host, path).map(|r| &r.action) {
            Some(RouteAction::Proxy(u)) => u.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(target("other", "/x"), "a");
        assert_eq!(target("www.example.com", "/x"), "b");
        assert_eq!(target("example.com", "/x"), "a");
        assert_eq!(target("api.example.com", "/v1/users"), "c");
        assert_eq!(target("api.example.com", "/v2"), "b");
    }

    #[test]
    fn no_route_is_none() {
        let c = parse_ok("[[routes]]\nhost = \"a\"\nrespond = { body = \"x\" }\n");
        assert!(route(&c, "b", "/").is_none());
        assert!(route(&c, "a", "/").is_some());
    }
}
