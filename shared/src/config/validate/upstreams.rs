//! `[upstreams.NAME]`: the servers of each group, how requests are balanced
//! across them, and their health checks.

use super::upstream_tls::RawTls;
use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{
    Balance, HealthCheck, ProxyVersion, Server, Upstream, UpstreamProtocol,
};
use crate::config::raw::{RawHealthCheck, RawUpstream};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Largest server `weight`.
pub const MAX_WEIGHT: i64 = 1000;

impl Validator<'_> {
    pub(super) fn upstreams(
        &mut self,
        path: KeyPath,
        raw: BTreeMap<String, RawUpstream>,
    ) -> BTreeMap<String, Upstream> {
        let mut out = BTreeMap::new();
        for (name, u) in raw {
            let p = path.key(&name);
            if u.servers.is_empty() {
                self.problem(&p.key("servers"), "needs at least one server");
            }
            let mut servers = Vec::new();
            for (i, s) in u.servers.iter().enumerate() {
                let weight = match s.weight {
                    None => 1,
                    Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
                    Some(w) => {
                        self.problem(
                            &p.key("servers").index(i).key("weight"),
                            format!("must be between 1 and {MAX_WEIGHT} (found {w})"),
                        );
                        1
                    }
                };
                match resolve_server(&s.addr) {
                    // A name with several addresses is a server per address.
                    Ok(addrs) => servers.extend(addrs.into_iter().map(|addr| Server {
                        name: s.addr.clone(),
                        addr,
                        weight,
                    })),
                    Err(why) => self.problem(&p.key("servers").index(i), why),
                }
            }
            let tls = RawTls {
                tls: u.tls,
                server_name: u.tls_server_name,
                ca: u.tls_ca,
            };
            let tls = self.upstream_tls(&p, tls, &servers);
            let resolve = self.resolve_interval(p.key("resolve"), u.resolve.as_deref());
            let protocol = self.upstream_protocol(&p, u.protocol.as_deref(), tls.is_some());
            let send_proxy_protocol =
                self.send_proxy_protocol(&p, u.send_proxy_protocol.as_deref(), protocol);
            let upstream = Upstream {
                tls,
                resolve,
                protocol,
                send_proxy_protocol,
                servers,
                balance: self.balance(p.key("balance"), u.balance.as_deref()),
                max_fails: u.max_fails.unwrap_or(1),
                fail_timeout: self.duration(
                    p.key("fail_timeout"),
                    u.fail_timeout.as_deref(),
                    Duration::from_secs(10),
                ),
                health_check: u
                    .health_check
                    .map(|h| self.health_check(p.key("health_check"), h)),
                connect_timeout: self.duration(
                    p.key("connect_timeout"),
                    u.connect_timeout.as_deref(),
                    Duration::from_secs(5),
                ),
                read_timeout: self.duration(
                    p.key("read_timeout"),
                    u.read_timeout.as_deref(),
                    Duration::from_secs(60),
                ),
                write_timeout: self.duration(
                    p.key("write_timeout"),
                    u.write_timeout.as_deref(),
                    Duration::from_secs(60),
                ),
                keepalive: u.keepalive.unwrap_or(256),
                keepalive_timeout: self.duration(
                    p.key("keepalive_timeout"),
                    u.keepalive_timeout.as_deref(),
                    Duration::from_secs(60),
                ),
            };
            out.insert(name, upstream);
        }
        out
    }

    fn balance(&mut self, path: KeyPath, raw: Option<&str>) -> Balance {
        match raw {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_conn") => Balance::LeastConn,
            Some("random_two") => Balance::RandomTwo,
            Some(other) => {
                self.problem(
                    &path,
                    format!(
                        "unknown balance {other:?}: write \"round_robin\", \"least_conn\" or \"random_two\""
                    ),
                );
                Balance::RoundRobin
            }
        }
    }

    fn health_check(&mut self, path: KeyPath, raw: RawHealthCheck) -> HealthCheck {
        let check_path = raw.path.unwrap_or_else(|| "/".to_owned());
        if !check_path.starts_with('/')
            || check_path
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
        {
            self.problem(
                &path.key("path"),
                format!(
                    "must start with '/' and hold no spaces, control or non-ASCII characters (found {check_path:?})"
                ),
            );
        }
        let mut count = |key: &str, value: Option<u32>| match value {
            Some(0) => {
                self.problem(&path.key(key), "must be at least 1");
                1
            }
            v => v.unwrap_or(1),
        };
        let (passes, fails) = (count("passes", raw.passes), count("fails", raw.fails));
        HealthCheck {
            path: check_path,
            interval: self.duration(
                path.key("interval"),
                raw.interval.as_deref(),
                Duration::from_secs(5),
            ),
            timeout: self.duration(
                path.key("timeout"),
                raw.timeout.as_deref(),
                Duration::from_secs(2),
            ),
            passes,
            fails,
        }
    }
}

/// How often an upstream's host names are resolved again by default.
pub const DEFAULT_RESOLVE: Duration = Duration::from_secs(30);

impl Validator<'_> {
    /// `resolve = "30s" | "off"` (default 30 s).
    fn resolve_interval(&mut self, path: KeyPath, raw: Option<&str>) -> Option<Duration> {
        match raw {
            Some("off") => None,
            None => Some(DEFAULT_RESOLVE),
            Some(_) => Some(self.duration(path, raw, DEFAULT_RESOLVE)),
        }
    }

    /// `protocol = "http1" | "h2c" | "h2"`: h2c is HTTP/2 without TLS, h2
    /// needs `tls = true` (it is chosen by ALPN).
    fn upstream_protocol(&mut self, p: &KeyPath, raw: Option<&str>, tls: bool) -> UpstreamProtocol {
        let path = p.key("protocol");
        match raw {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("h2c") if tls => {
                self.problem(
                    &path,
                    "\"h2c\" is HTTP/2 without TLS: with tls = true, write \"h2\"",
                );
                UpstreamProtocol::Http1
            }
            Some("h2c") => UpstreamProtocol::H2c,
            Some("h2") if !tls => {
                self.problem(
                    &path,
                    "\"h2\" needs tls = true (HTTP/2 without TLS is \"h2c\")",
                );
                UpstreamProtocol::Http1
            }
            Some("h2") => UpstreamProtocol::H2,
            Some(other) => {
                self.problem(
                    &path,
                    format!("must be \"http1\", \"h2c\" or \"h2\" (found {other:?})"),
                );
                UpstreamProtocol::Http1
            }
        }
    }
}

impl Validator<'_> {
    /// `send_proxy_protocol = "v1" | "v2"` (default: none). Refused with an
    /// HTTP/2 `protocol`: an HTTP/2 connection carries every client's
    /// streams, and a header names one client.
    fn send_proxy_protocol(
        &mut self,
        p: &KeyPath,
        raw: Option<&str>,
        protocol: UpstreamProtocol,
    ) -> Option<ProxyVersion> {
        let path = p.key("send_proxy_protocol");
        let version = match raw? {
            "v1" => ProxyVersion::V1,
            "v2" => ProxyVersion::V2,
            other => {
                self.problem(&path, format!("must be \"v1\" or \"v2\" (found {other:?})"));
                return None;
            }
        };
        if protocol != UpstreamProtocol::Http1 {
            self.problem(
                &path,
                "needs protocol = \"http1\": an HTTP/2 connection carries the streams of \
                 every client, and a PROXY header names one",
            );
            return None;
        }
        Some(version)
    }
}

/// Every address of `host:port` (an address as it is), sorted and without
/// repeats, so that a resolver answering in rotating order changes nothing:
/// blocking (DNS), so the master calls it off its loop.
pub fn resolve_server(server: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = server.parse() {
        return Ok(vec![addr]);
    }
    let found = server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server {server:?} ({e}); write host:port"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("server {server:?} resolves to no address"));
    }
    addrs.sort();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use crate::config::model::{Balance, HealthCheck, UpstreamProtocol};
    use crate::config::testing::{parse_err, parse_ok};

    #[test]
    fn protocol_is_http1_unless_h2c_or_h2_with_tls() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [upstreams.b]\nservers = [\"127.0.0.1:2\"]\nprotocol = \"h2c\"\n\
             [upstreams.c]\nservers = [\"127.0.0.1:3\"]\nprotocol = \"h2\"\ntls = true\n",
        );
        assert_eq!(c.upstreams["a"].protocol, UpstreamProtocol::Http1);
        assert_eq!(c.upstreams["b"].protocol, UpstreamProtocol::H2c);
        assert_eq!(c.upstreams["c"].protocol, UpstreamProtocol::H2);
        let e = parse_err("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\n");
        assert!(
            e.starts_with("t.toml:3: upstreams.a.protocol: \"h2\" needs tls = true"),
            "{e}"
        );
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\ntls = true\nprotocol = \"h2c\"\n",
        );
        assert!(
            e.starts_with("t.toml:4: upstreams.a.protocol: \"h2c\" is HTTP/2"),
            "{e}"
        );
        let e = parse_err("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"grpc\"\n");
        assert!(
            e.starts_with("t.toml:3: upstreams.a.protocol: must be \"http1\""),
            "{e}"
        );
    }
    use std::time::Duration;

    #[test]
    fn send_proxy_protocol_is_v1_v2_or_absent() {
        use crate::config::model::ProxyVersion;
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [upstreams.b]\nservers = [\"127.0.0.1:2\"]\nsend_proxy_protocol = \"v1\"\n\
             [upstreams.c]\nservers = [\"127.0.0.1:3\"]\nsend_proxy_protocol = \"v2\"\ntls = true\n",
        );
        assert_eq!(c.upstreams["a"].send_proxy_protocol, None);
        assert_eq!(c.upstreams["b"].send_proxy_protocol, Some(ProxyVersion::V1));
        assert_eq!(c.upstreams["c"].send_proxy_protocol, Some(ProxyVersion::V2));
        for bad in ["\"v3\"", "\"V1\"", "\"\"", "true"] {
            let e = parse_err(&format!(
                "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nsend_proxy_protocol = {bad}\n"
            ));
            assert!(
                e.starts_with("t.toml:3: upstreams.a.send_proxy_protocol: "),
                "{bad}: {e}"
            );
        }
        let e =
            parse_err("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nsend_proxy_protocol = \"v3\"\n");
        assert!(e.contains("must be \"v1\" or \"v2\" (found \"v3\")"), "{e}");
    }

    #[test]
    fn send_proxy_protocol_is_refused_with_http2_upstreams() {
        for protocol in ["protocol = \"h2c\"", "protocol = \"h2\"\ntls = true"] {
            let e = parse_err(&format!(
                "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n{protocol}\nsend_proxy_protocol = \"v2\"\n"
            ));
            let line = e.lines().next().unwrap_or_default();
            assert!(
                line.contains(": upstreams.a.send_proxy_protocol: needs protocol = \"http1\""),
                "{protocol}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn resolve_defaults_to_30s_and_takes_off_or_a_duration() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [upstreams.b]\nservers = [\"127.0.0.1:1\"]\nresolve = \"off\"\n\
             [upstreams.c]\nservers = [\"127.0.0.1:1\"]\nresolve = \"5s\"\n",
        );
        assert_eq!(c.upstreams["a"].resolve, Some(Duration::from_secs(30)));
        assert_eq!(c.upstreams["b"].resolve, None);
        assert_eq!(c.upstreams["c"].resolve, Some(Duration::from_secs(5)));
        let e = parse_err("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nresolve = \"often\"\n");
        assert!(
            e.starts_with("t.toml:3: upstreams.a.resolve: invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn a_host_name_is_a_server_per_address_sorted() {
        let c = parse_ok("[upstreams.a]\nservers = [\"localhost:9\"]\n");
        let servers = &c.upstreams["a"].servers;
        assert!(!servers.is_empty());
        assert!(servers
            .iter()
            .all(|s| s.name == "localhost:9" && s.addr.port() == 9));
        assert!(servers.windows(2).all(|w| w[0].addr < w[1].addr));
        assert_eq!(c.upstreams["a"].host_names(), vec!["localhost:9"]);
    }

    #[test]
    fn upstream_balancing_and_health_defaults() {
        let c = parse_ok("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n");
        let u = &c.upstreams["a"];
        assert_eq!(u.servers[0].weight, 1);
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!((u.max_fails, u.fail_timeout), (1, Duration::from_secs(10)));
        assert_eq!(u.health_check, None);
    }

    #[test]
    fn servers_take_strings_or_tables_with_weights() {
        let c = parse_ok(
            r#"
[upstreams.a]
servers = ["127.0.0.1:1", { addr = "127.0.0.1:2", weight = 3 }, { addr = "127.0.0.1:3" }]
balance = "least_conn"
max_fails = 0
fail_timeout = "3s"
health_check = { path = "/health", interval = "1s", passes = 2 }
"#,
        );
        let u = &c.upstreams["a"];
        let weights: Vec<u32> = u.servers.iter().map(|s| s.weight).collect();
        assert_eq!(weights, [1, 3, 1]);
        assert_eq!(u.servers[1].name, "127.0.0.1:2");
        assert_eq!(u.balance, Balance::LeastConn);
        assert_eq!((u.max_fails, u.fail_timeout), (0, Duration::from_secs(3)));
        assert_eq!(
            u.health_check,
            Some(HealthCheck {
                path: "/health".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                passes: 2,
                fails: 1,
            })
        );
        assert_eq!(
            parse_ok("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nbalance = \"random_two\"\n")
                .upstreams["a"]
                .balance,
            Balance::RandomTwo
        );
    }

    #[test]
    fn bad_balancing_and_health_values_name_line_and_key() {
        let e = parse_err(
            r#"[upstreams.a]
servers = [
  { addr = "127.0.0.1:1", weight = 0 },
]
balance = "fastest"
fail_timeout = "0s"
health_check = { path = "health", fails = 0, interval = "often" }
"#,
        );
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 6, "{e}");
        assert!(
            lines[0]
                .starts_with("t.toml:3: upstreams.a.servers[0].weight: must be between 1 and 1000"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("t.toml:5: upstreams.a.balance: unknown balance \"fastest\""),
            "{e}"
        );
        assert!(
            lines[2].starts_with("t.toml:6: upstreams.a.fail_timeout: must be longer than zero"),
            "{e}"
        );
        for line in &lines[3..] {
            assert!(
                line.starts_with("t.toml:7: upstreams.a.health_check."),
                "{e}"
            );
        }
        assert!(e.contains("health_check.path: must start with '/'"), "{e}");
        assert!(e.contains("health_check.fails: must be at least 1"), "{e}");
        assert!(e.contains("health_check.interval: invalid duration"), "{e}");
    }

    #[test]
    fn bad_server_entries_name_line_and_key() {
        let e = parse_err(
            "[upstreams.a]\nservers = [\n  \"127.0.0.1:1\",\n  { addr = \"127.0.0.1:2\", wieght = 2 },\n]\n",
        );
        assert!(e.starts_with("t.toml:4: upstreams.a.servers[1]"), "{e}");
        assert!(e.contains("wieght"), "{e}");
        let e = parse_err("[upstreams.a]\nservers = [{ weight = 2 }]\n");
        assert!(e.starts_with("t.toml:2: upstreams.a.servers[0]"), "{e}");
        assert!(e.contains("missing field `addr`"), "{e}");
        let e = parse_err("[upstreams.a]\nservers = [7]\n");
        assert!(e.contains("\"host:port\" or { addr"), "{e}");
    }
}
