//! Reading the TOML config file and validating it into a [`Config`].
//!
//! The file is deserialized into a raw model that mirrors the TOML exactly
//! (unknown keys are rejected there), then checked key by key. Every problem
//! is reported with the file, line and key it concerns.

use crate::config::{
    Balance, Config, FixedResponse, HealthCheck, HostMatch, HttpLimits, Listen, LogConfig,
    LogTarget, Route, RouteAction, Server, Upstream,
};
pub use crate::config_locate::KeyPath;
use crate::config_locate::{duplicate_key_at, key_at, line_at, line_of};
use crate::cpus;
use crate::uri_path::{self, AboveRoot};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod observe;
use observe::RawAdmin;

/// Listen address used when a config names none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:80";
/// `worker_timeout` when a config names none.
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pid file used when a config names none.
pub const DEFAULT_PID_FILE: &str = "/tmp/prefork.pid";
/// Largest server `weight`.
pub const MAX_WEIGHT: i64 = 1000;
/// Longest duration any key takes: longer ones are absurd, and one far
/// longer overflows the clock arithmetic of the timers it arms.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest `worker_timeout`: workers beat every quarter of it but at most
/// every 50 ms, so a shorter one has healthy workers killed as hung.
pub const MIN_WORKER_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest `max_request_headers`: each request reserves that many slots.
pub const MAX_REQUEST_HEADERS: usize = 10_000;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Problems(.problems))]
    Invalid {
        /// Every problem found, in file order where known.
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when it could be located.
    pub line: Option<usize>,
    /// The key concerned (`routes[1].upstream`), empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A problem with the value at `key` found by a check beyond the file
/// itself (the system's users, the file system), located in `file` as the
/// validator's own problems are, so that it reads `file:line: key: reason`
/// too. The file is read again for the line; without it, the line is left out.
pub fn problem_at(file: &Path, key: &KeyPath, message: impl Into<String>) -> Problem {
    let line = std::fs::read_to_string(file)
        .ok()
        .and_then(|source| line_of(&source, key));
    Problem {
        file: file.to_owned(),
        line,
        key: key.to_string(),
        message: message.into(),
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(source) => parse(path, source),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            Err(ConfigError::Invalid {
                problems: vec![Problem {
                    file: path.to_owned(),
                    line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
                    key: String::new(),
                    message: format!(
                        "invalid UTF-8 at byte {}: a TOML file must be UTF-8",
                        e.valid_up_to()
                    ),
                }],
            })
        }
    }
}

/// Validates config text; `path` is used for messages and kept in the result.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError::Invalid {
        problems: vec![Problem {
            file: path.to_owned(),
            line: e.span().map(|s| line_at(source, s.start)),
            key: e
                .span()
                .and_then(|s| key_at(source, s.start).or_else(|| duplicate_key_at(source, s)))
                .map(|k| k.to_string())
                .unwrap_or_default(),
            message: e.message().trim().to_owned(),
        }],
    })?;
    let mut v = Validator {
        file: path,
        source,
        problems: Vec::new(),
    };
    let config = v.config(raw);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line);
        Err(ConfigError::Invalid {
            problems: v.problems,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<RawWorkers>,
    worker_cpu_affinity: Option<RawAffinity>,
    pid_file: Option<PathBuf>,
    user: Option<String>,
    shutdown_timeout: Option<String>,
    worker_timeout: Option<String>,
    client_header_timeout: Option<String>,
    client_body_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    keepalive_requests: Option<u64>,
    max_request_header_size: Option<usize>,
    max_request_headers: Option<usize>,
    max_uri_length: Option<usize>,
    max_body_size: Option<RawSize>,
    send_timeout: Option<String>,
    tunnel_timeout: Option<String>,
    via: Option<RawVia>,
    splice: Option<bool>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    control_socket: Option<PathBuf>,
    admin: Option<RawAdmin>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawWorkers {
    Count(i64),
    Named(String),
}

/// `worker_cpu_affinity = "off" | "auto" | [cpu, ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAffinity {
    Named(String),
    Cpus(Vec<i64>),
}

/// A byte size: a number, or text with a `k`, `m` or `g` suffix.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `via = true | false | "name"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawVia {
    Enabled(bool),
    Named(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    error_log: Option<String>,
    access_log: Option<String>,
    access_log_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: String,
    backlog: Option<i32>,
    reuseport: Option<bool>,
    defer_accept: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    servers: Vec<RawServer>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    write_timeout: Option<String>,
    keepalive: Option<usize>,
    keepalive_timeout: Option<String>,
    balance: Option<String>,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
    health_check: Option<RawHealthCheck>,
}

/// A server entry: `"host:port"` or `{ addr = "host:port", weight = 3 }`.
struct RawServer {
    addr: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTable {
    addr: String,
    weight: Option<i64>,
}

impl<'de> Deserialize<'de> for RawServer {
    // Hand-written rather than `untagged` so a bad table entry gets serde's
    // precise message ("unknown field `wieght`") instead of "did not match
    // any variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"host:port\" or { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawServer, E> {
                Ok(RawServer {
                    addr: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawServer, A::Error> {
                let t =
                    RawServerTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawServer {
                    addr: t.addr,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    passes: Option<u32>,
    fails: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path: Option<String>,
    upstream: Option<String>,
    respond: Option<RawRespond>,
    access_log: Option<String>,
    max_body_size: Option<RawSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
}

struct Validator<'a> {
    file: &'a Path,
    source: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: line_of(self.source, path),
            key: path.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: KeyPath, raw: Option<&str>, default: Duration) -> Duration {
        let Some(text) = raw else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problem(&path, "must be longer than zero");
                default
            }
            Ok(d) if d > MAX_DURATION => {
                self.problem(&path, format!("must be at most 365 days (found {text:?})"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    &path,
                    format!(
                        "invalid duration {text:?} ({e}); write e.g. \"500ms\", \"30s\", \"2m\""
                    ),
                );
                default
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let root = KeyPath::default();
        let workers = self.workers(root.key("workers"), raw.workers);
        let worker_cpu_affinity =
            self.cpu_affinity(root.key("worker_cpu_affinity"), raw.worker_cpu_affinity);
        let defaults = HttpLimits::default();
        let http = HttpLimits {
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
            via: match raw.via {
                None => defaults.via,
                Some(v) => self.via(root.key("via"), v),
            },
            splice: raw.splice.unwrap_or(defaults.splice),
        };
        let shutdown_timeout = self.duration(
            root.key("shutdown_timeout"),
            raw.shutdown_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let mut worker_timeout = self.duration(
            root.key("worker_timeout"),
            raw.worker_timeout.as_deref(),
            DEFAULT_WORKER_TIMEOUT,
        );
        if worker_timeout < MIN_WORKER_TIMEOUT {
            self.problem(
                &root.key("worker_timeout"),
                "must be at least 1s: healthy workers would be killed as hung",
            );
            worker_timeout = DEFAULT_WORKER_TIMEOUT;
        }
        let user = match raw.user {
            Some(u) if u.trim().is_empty() => {
                self.problem(&root.key("user"), "must not be empty");
                None
            }
            other => other,
        };
        let log = self.log(root.key("log"), raw.log);
        let listen = self.listen(root.key("listen"), raw.listen);
        let upstreams = self.upstreams(root.key("upstreams"), raw.upstreams);
        let routes = self.routes(root.key("routes"), raw.routes, &upstreams);
        let pid_file = match raw.pid_file {
            // A start could never write it (nor find the control socket
            // beside it): refused here rather than by the start alone.
            Some(path) if path.as_os_str().is_empty() => {
                self.problem(&root.key("pid_file"), "must not be empty");
                PathBuf::from(DEFAULT_PID_FILE)
            }
            Some(path) => path,
            None => PathBuf::from(DEFAULT_PID_FILE),
        };
        let control_socket = self.control_socket(raw.control_socket, &pid_file);
        let admin = self.admin(root.key("admin"), raw.admin);
        if let Some(a) = &admin {
            let clash = listen.iter().find(|l| binds_collide(l.addr, a.addr));
            if let Some(l) = clash {
                self.problem(
                    &root.key("admin").key("addr"),
                    format!(
                        "{} overlaps listen address {}: both cannot be bound",
                        a.addr, l.addr
                    ),
                );
            }
        }
        Config {
            source: self.file.to_owned(),
            workers,
            worker_cpu_affinity,
            pid_file,
            user,
            shutdown_timeout,
            worker_timeout,
            log,
            listen,
            http,
            upstreams,
            routes,
            control_socket,
            admin,
        }
    }

    /// A byte size; `None` (with a problem recorded) when invalid.
    fn size(&mut self, path: KeyPath, raw: RawSize) -> Option<u64> {
        match raw {
            RawSize::Bytes(n) => match u64::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(&path, "must not be negative");
                    None
                }
            },
            RawSize::Text(text) => {
                let parsed = parse_size(&text);
                if parsed.is_none() {
                    self.problem(
                        &path,
                        format!(
                            "invalid size {text:?}; write e.g. 1048576, \"512k\", \"10m\", \"1g\""
                        ),
                    );
                }
                parsed
            }
        }
    }

    /// The `Via` pseudonym: a token, since it is written into heads.
    fn via(&mut self, path: KeyPath, raw: RawVia) -> Option<String> {
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
                    Some(name)
                }
            }
        }
    }

    fn positive(&mut self, path: KeyPath, raw: Option<u64>, default: u64) -> u64 {
        match raw {
            Some(0) => {
                self.problem(&path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn at_least(&mut self, path: KeyPath, raw: Option<usize>, min: usize, default: usize) -> usize {
        match raw {
            Some(n) if n < min => {
                self.problem(&path, format!("must be at least {min}"));
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn workers(&mut self, path: KeyPath, raw: Option<RawWorkers>) -> usize {
        let auto = || std::thread::available_parallelism().map_or(1, |n| n.get());
        match raw {
            None => auto(),
            Some(RawWorkers::Named(s)) if s == "auto" => auto(),
            Some(RawWorkers::Named(s)) => {
                self.problem(&path, format!("expected a number or \"auto\", found {s:?}"));
                1
            }
            Some(RawWorkers::Count(n)) if n < 1 => {
                self.problem(&path, format!("must be at least 1 (found {n})"));
                1
            }
            Some(RawWorkers::Count(n)) if n > 1024 => {
                self.problem(&path, format!("at most 1024 workers (found {n})"));
                1
            }
            Some(RawWorkers::Count(n)) => n as usize,
        }
    }

    /// The CPUs workers are pinned to, in slot order: `"auto"` takes every
    /// CPU this process may run on, as nginx's `worker_cpu_affinity auto`.
    fn cpu_affinity(&mut self, path: KeyPath, raw: Option<RawAffinity>) -> Vec<usize> {
        let cpus = match raw {
            None => return Vec::new(),
            Some(RawAffinity::Named(s)) if s == "off" => return Vec::new(),
            Some(RawAffinity::Named(s)) if s == "auto" => return cpus::allowed(),
            Some(RawAffinity::Named(s)) => {
                self.problem(
                    &path,
                    format!("expected \"off\", \"auto\" or a list of CPU numbers, found {s:?}"),
                );
                return Vec::new();
            }
            Some(RawAffinity::Cpus(cpus)) => cpus,
        };
        if cpus.is_empty() {
            self.problem(&path, "list at least one CPU, or write \"off\"");
            return Vec::new();
        }
        let allowed = cpus::allowed();
        let mut valid = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            match usize::try_from(cpu) {
                Ok(n) if allowed.contains(&n) => valid.push(n),
                _ => self.problem(
                    &path,
                    format!(
                        "CPU {cpu} is not one prefork may run on (it may run on {})",
                        cpus::list(&allowed)
                    ),
                ),
            }
        }
        valid
    }

    fn log_target(
        &mut self,
        path: KeyPath,
        raw: Option<String>,
        default: LogTarget,
    ) -> Option<LogTarget> {
        match raw.as_deref() {
            None => Some(default),
            Some("off") => None,
            Some("stderr") => Some(LogTarget::Stderr),
            Some("stdout") => Some(LogTarget::Stdout),
            Some("") => {
                self.problem(
                    &path,
                    "expected \"stderr\", \"stdout\", \"off\" or a file path",
                );
                Some(default)
            }
            Some(file) => Some(LogTarget::File(PathBuf::from(file))),
        }
    }

    fn log(&mut self, path: KeyPath, raw: RawLog) -> LogConfig {
        let error_log =
            match self.log_target(path.key("error_log"), raw.error_log, LogTarget::Stderr) {
                Some(t) => t,
                None => {
                    self.problem(&path.key("error_log"), "the error log cannot be turned off");
                    LogTarget::Stderr
                }
            };
        let access_log = self.log_target(path.key("access_log"), raw.access_log, LogTarget::Stdout);
        let access_log_format =
            self.access_format(path.key("access_log_format"), raw.access_log_format);
        LogConfig {
            error_log,
            access_log,
            access_log_format,
        }
    }

    fn listen(&mut self, path: KeyPath, raw: Vec<RawListen>) -> Vec<Listen> {
        if raw.is_empty() {
            let addr = DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid");
            return vec![Listen {
                addr,
                backlog: 1024,
                reuseport: false,
                defer_accept: true,
            }];
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let key = path.index(i).key("addr");
            let addr: SocketAddr = match l.addr.parse() {
                Ok(a) => a,
                Err(_) => {
                    self.problem(
                        &key,
                        format!(
                            "invalid listen address {:?}: write an IP and a port, \"0.0.0.0:80\" or \"[::]:80\"",
                            l.addr
                        ),
                    );
                    continue;
                }
            };
            if addr.port() == 0 {
                self.problem(
                    &key,
                    format!(
                        "port 0 is not a port clients can reach (found {:?})",
                        l.addr
                    ),
                );
                continue;
            }
            if !seen.insert(addr) {
                self.problem(&key, format!("duplicate listen address {addr}"));
                continue;
            }
            let reuseport = l.reuseport.unwrap_or(false);
            // Unless both set SO_REUSEPORT (equal addresses were refused
            // above).
            let overlapping = out
                .iter()
                .find(|o: &&Listen| binds_collide(o.addr, addr) && !(o.reuseport && reuseport));
            if let Some(o) = overlapping {
                self.problem(
                    &key,
                    format!(
                        "{addr} overlaps listen address {}: both cannot be bound",
                        o.addr
                    ),
                );
                continue;
            }
            let backlog = match l.backlog {
                Some(b) if b < 1 => {
                    self.problem(&path.index(i).key("backlog"), "must be at least 1");
                    1024
                }
                Some(b) => b,
                None => 1024,
            };
            out.push(Listen {
                addr,
                backlog,
                reuseport,
                defer_accept: l.defer_accept.unwrap_or(true),
            });
        }
        out
    }

    fn upstreams(
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
                match resolve(&s.addr) {
                    Ok(addr) => servers.push(Server {
                        name: s.addr.clone(),
                        addr,
                        weight,
                    }),
                    Err(why) => self.problem(&p.key("servers").index(i), why),
                }
            }
            let upstream = Upstream {
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

    fn routes(
        &mut self,
        path: KeyPath,
        raw: Vec<RawRoute>,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> Vec<Route> {
        let mut out = Vec::new();
        // The first route of each host and path, looked up rather than
        // searched for: a config may hold many thousands of routes.
        let mut seen: HashMap<((u8, String), String), usize> = HashMap::new();
        for (i, r) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let host = match r.host {
                None => HostMatch::Any,
                Some(h) => match parse_host(&h) {
                    Ok(m) => m,
                    Err(why) => {
                        self.problem(&p.key("host"), why);
                        continue;
                    }
                },
            };
            let route_path = r.path.unwrap_or_else(|| "/".to_owned());
            if !route_path.starts_with('/') {
                self.problem(
                    &p.key("path"),
                    format!("must start with '/' (found {route_path:?})"),
                );
                continue;
            }
            // Routing sees the target without its query; a request target
            // holds no spaces or control characters.
            if route_path
                .bytes()
                .any(|b| b == b'?' || b == b'#' || b == b' ' || b.is_ascii_control())
            {
                self.problem(
                    &p.key("path"),
                    format!(
                        "no request path holds '?', '#', spaces or control characters: this route can never match (found {route_path:?})"
                    ),
                );
                continue;
            }
            // Requests are routed by their normalised path: so is the route's.
            let route_path = match uri_path::normalize(route_path.as_bytes()) {
                Ok(normal) => match String::from_utf8(normal.into_owned()) {
                    Ok(normal) => normal,
                    Err(_) => {
                        self.problem(
                            &p.key("path"),
                            format!("its escapes decode to bytes that are not UTF-8 (found {route_path:?})"),
                        );
                        continue;
                    }
                },
                Err(AboveRoot) => {
                    self.problem(
                        &p.key("path"),
                        format!("'..' climbs above the root: no request path can (found {route_path:?})"),
                    );
                    continue;
                }
            };
            let action = match (r.upstream, r.respond) {
                (Some(_), Some(_)) => {
                    self.problem(&p, "a route takes either `upstream` or `respond`, not both");
                    continue;
                }
                (None, None) => {
                    self.problem(
                        &p,
                        "a route needs `upstream = \"name\"` or `respond = { ... }`",
                    );
                    continue;
                }
                (Some(name), None) => {
                    if !upstreams.contains_key(&name) {
                        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                        self.problem(
                            &p.key("upstream"),
                            format!(
                                "no upstream named {name:?} (defined: {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                        continue;
                    }
                    RouteAction::Proxy(name)
                }
                (None, Some(resp)) => match self.respond(p.key("respond"), resp) {
                    Some(f) => RouteAction::Respond(f),
                    None => continue,
                },
            };
            let key = (host_key(&host), route_path.clone());
            if let Some(first) = seen.get(&key) {
                self.problem(
                    &p,
                    format!(
                        "same host and path as routes[{first}], which always wins: this route can never match"
                    ),
                );
                continue;
            }
            seen.insert(key, i);
            let access_log = self.route_access_log(p.key("access_log"), r.access_log);
            let max_body_size = r
                .max_body_size
                .and_then(|s| self.size(p.key("max_body_size"), s));
            out.push(Route {
                host,
                path: route_path,
                action,
                access_log,
                max_body_size,
            });
        }
        out
    }

    fn respond(&mut self, path: KeyPath, raw: RawRespond) -> Option<FixedResponse> {
        let status = raw.status.unwrap_or(200);
        if !(200..=599).contains(&status) {
            self.problem(
                &path.key("status"),
                format!("must be between 200 and 599 (found {status})"),
            );
            return None;
        }
        if matches!(status, 204 | 304) && raw.body.as_deref().is_some_and(|b| !b.is_empty()) {
            self.problem(
                &path.key("body"),
                format!("a {status} response has no body"),
            );
            return None;
        }
        let content_type = raw.content_type.unwrap_or_else(|| "text/plain".to_owned());
        if content_type.bytes().any(|b| b.is_ascii_control()) {
            self.problem(
                &path.key("content_type"),
                "must not contain control characters",
            );
            return None;
        }
        Some(FixedResponse {
            status,
            body: raw.body.unwrap_or_default(),
            content_type,
        })
    }
}

/// Parses `"123"`, `"64k"`, `"10m"`, `"1g"` (binary multiples) into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

/// Parses a route's `host`: a name, or `*.suffix`.
fn parse_host(raw: &str) -> Result<HostMatch, String> {
    // Requests are matched by their host without its trailing dot (the
    // same name): a route host keeping one could never match.
    let lower = raw.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            })
    };
    // The request's host is matched without its port: a ':' outside an
    // IPv6 literal's brackets could never match.
    let port_like = |s: &str| s.rsplit_once(']').map_or(s, |(_, rest)| rest).contains(':');
    if port_like(host) {
        return Err(format!(
            "invalid host {raw:?}: write it without a port (requests are matched by host alone)"
        ));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if valid(suffix) && !suffix.contains('*') {
            return Ok(HostMatch::Suffix(format!(".{suffix}")));
        }
    } else if valid(host) {
        return Ok(HostMatch::Exact(host.to_owned()));
    }
    Err(format!(
        "invalid host {raw:?}: write a name such as \"app.local\" or a wildcard such as \"*.example.com\""
    ))
}

/// A route's host as a hash key: routes with equal hosts have equal keys.
fn host_key(host: &HostMatch) -> (u8, String) {
    match host {
        HostMatch::Any => (0, String::new()),
        HostMatch::Exact(name) => (1, name.clone()),
        HostMatch::Suffix(suffix) => (2, suffix.clone()),
    }
}

/// Resolves `host:port` once, at load time.
fn resolve(server: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = server.parse() {
        return Ok(addr);
    }
    let mut addrs = server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server {server:?} ({e}); write host:port"))?;
    addrs
        .next()
        .ok_or_else(|| format!("server {server:?} resolves to no address"))
}

/// Whether sockets bound to `a` and `b` collide: the same family and port,
/// and the same address or either a wildcard (IPv6 sockets are
/// IPV6_V6ONLY, so the families never mix).
fn binds_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> Config {
        parse(Path::new("t.toml"), src).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(src: &str) -> String {
        match parse(Path::new("t.toml"), src) {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    const FULL: &str = r#"
workers = 4
pid_file = "/tmp/x.pid"
user = "nobody"
shutdown_timeout = "30s"

[log]
error_log = "stderr"
access_log = "off"

[[listen]]
addr = "127.0.0.1:8080"

[[listen]]
addr = "[::1]:8080"

[upstreams.app]
servers = ["127.0.0.1:3000", "127.0.0.1:3001"]
connect_timeout = "2s"
read_timeout = "60s"

[[routes]]
host = "app.local"
path = "/"
upstream = "app"

[[routes]]
host = "*.example.com"
path = "/api"
upstream = "app"

[[routes]]
host = "status.local"
respond = { status = 200, body = "ok\n" }
"#;

    #[test]
    fn full_example_parses() {
        let c = parse_ok(FULL);
        assert_eq!(c.workers, 4);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.log.access_log, None);
        assert_eq!(c.upstreams["app"].servers.len(), 2);
        assert_eq!(c.upstreams["app"].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.routes[1].host, HostMatch::Suffix(".example.com".into()));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.worker_timeout, DEFAULT_WORKER_TIMEOUT);
        assert!(c.listen.iter().all(|l| !l.reuseport));
    }

    #[test]
    fn worker_timeout_and_reuseport() {
        let c = parse_ok(
            "worker_timeout = \"5s\"\n[[listen]]\naddr = \"127.0.0.1:1\"\nreuseport = true\n",
        );
        assert_eq!(c.worker_timeout, Duration::from_secs(5));
        assert!(c.listen[0].reuseport);
        assert!(c.listen[0].defer_accept, "on unless turned off");
        let c = parse_ok("[[listen]]\naddr = \"127.0.0.1:1\"\ndefer_accept = false\n");
        assert!(!c.listen[0].defer_accept);
        let e = parse_err("worker_timeout = \"0s\"\n");
        assert!(
            e.starts_with("t.toml:1: worker_timeout: must be longer than zero"),
            "{e}"
        );
    }

    #[test]
    fn defaults_apply() {
        let c = parse_ok("");
        assert!(c.workers >= 1);
        assert_eq!(c.listen[0].addr, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.log.error_log, LogTarget::Stderr);
        assert_eq!(c.log.access_log, Some(LogTarget::Stdout));
        assert_eq!(c.pid_file, PathBuf::from(DEFAULT_PID_FILE));
    }

    #[test]
    fn an_empty_pid_file_is_refused() {
        let e = parse_err("workers = 1\npid_file = \"\"\n");
        assert_eq!(e, "t.toml:2: pid_file: must not be empty");
    }

    #[test]
    fn unknown_key_names_line() {
        let e = parse_err("workers = 2\nwrokers = 3\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
    }

    #[test]
    fn missing_upstream_names_line_and_key() {
        let e = parse_err("[[routes]]\nhost = \"a\"\nupstream = \"nope\"\n");
        assert_eq!(
            e,
            "t.toml:3: routes[0].upstream: no upstream named \"nope\" (defined: none)"
        );
    }

    #[test]
    fn route_needs_exactly_one_action() {
        let both = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\nrespond = { body = \"x\" }\n",
        );
        assert!(both.contains("routes[0]: a route takes either"), "{both}");
        let neither = parse_err("[[routes]]\npath = \"/\"\n");
        assert!(neither.contains("routes[0]: a route needs"), "{neither}");
    }

    #[test]
    fn bad_values_are_reported_each_with_its_line() {
        let e = parse_err(
            "workers = 0\nshutdown_timeout = \"soon\"\n[[listen]]\naddr = \"localhost\"\n[[listen]]\naddr = \"127.0.0.1:1\"\n[[listen]]\naddr = \"127.0.0.1:1\"\n",
        );
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(
            lines[0].starts_with("t.toml:1: workers: must be at least 1"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("t.toml:2: shutdown_timeout: invalid duration"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("t.toml:4: listen[0].addr: invalid listen address"),
            "{e}"
        );
        assert!(
            lines[3].starts_with("t.toml:8: listen[2].addr: duplicate listen address"),
            "{e}"
        );
    }

    #[test]
    fn type_error_names_line_and_key() {
        let e = parse_err("workers = 2\n[upstreams.a]\nservers = \"127.0.0.1:1\"\n");
        assert!(
            e.starts_with("t.toml:3: upstreams.a.servers: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse_err("workers = 2\n[log\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }

    #[test]
    fn worker_cpu_affinity_off_auto_and_lists() {
        let allowed = cpus::allowed();
        assert!(parse_ok("workers = 2").worker_cpu_affinity.is_empty());
        assert!(parse_ok("worker_cpu_affinity = \"off\"")
            .worker_cpu_affinity
            .is_empty());
        let auto = parse_ok("workers = 3\nworker_cpu_affinity = \"auto\"");
        assert_eq!(auto.worker_cpu_affinity, allowed);
        // Slots beyond the list wrap around it.
        assert_eq!(auto.cpu_for_slot(0), Some(allowed[0]));
        assert_eq!(auto.cpu_for_slot(allowed.len() as u32), Some(allowed[0]));
        let last = *allowed.last().expect("one CPU at least");
        let listed = parse_ok(&format!("worker_cpu_affinity = [{last}, {}]", allowed[0]));
        assert_eq!(listed.worker_cpu_affinity, vec![last, allowed[0]]);
        assert_eq!(listed.cpu_for_slot(1), Some(allowed[0]));
        assert_eq!(parse_ok("workers = 2").cpu_for_slot(0), None);
    }

    #[test]
    fn worker_cpu_affinity_errors_name_the_key() {
        let e = parse_err("workers = 2\nworker_cpu_affinity = [0, 4096]\n");
        assert!(
            e.starts_with("t.toml:2: worker_cpu_affinity: CPU 4096 is not one prefork may run on (it may run on "),
            "{e}"
        );
        assert!(parse_err("worker_cpu_affinity = [-1]").contains("CPU -1 is not one"));
        assert!(parse_err("worker_cpu_affinity = []").contains("list at least one CPU"));
        assert!(parse_err("worker_cpu_affinity = \"all\"")
            .contains("expected \"off\", \"auto\" or a list of CPU numbers, found \"all\""));
    }

    #[test]
    fn workers_auto_and_bad_names() {
        assert!(parse_ok("workers = \"auto\"").workers >= 1);
        assert!(parse_err("workers = \"many\"").contains("expected a number or \"auto\""));
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
        let target = |host: &str, path: &str| match c.route(host, path).map(|r| &r.action) {
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

    #[test]
    fn no_route_is_none() {
        let c = parse_ok("[[routes]]\nhost = \"a\"\nrespond = { body = \"x\" }\n");
        assert!(c.route("b", "/").is_none());
        assert!(c.route("a", "/").is_some());
    }

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
    fn durations_that_would_overflow_or_kill_healthy_workers_are_refused() {
        for key in [
            "worker_timeout",
            "shutdown_timeout",
            "client_header_timeout",
        ] {
            let e = parse_err(&format!("{key} = \"18446744073709551615s\"\n"));
            assert!(
                e.starts_with(&format!("t.toml:1: {key}: must be at most 365 days")),
                "{e}"
            );
        }
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nfail_timeout = \"500000000000y\"\n",
        );
        assert!(
            e.starts_with("t.toml:3: upstreams.a.fail_timeout: must be at most 365 days"),
            "{e}"
        );
        assert_eq!(
            parse_ok("tunnel_timeout = \"365d\"").http.tunnel_timeout,
            MAX_DURATION
        );
        let e = parse_err("worker_timeout = \"10ms\"\n");
        assert!(
            e.starts_with("t.toml:1: worker_timeout: must be at least 1s"),
            "{e}"
        );
        assert_eq!(
            parse_ok("worker_timeout = \"1s\"").worker_timeout,
            Duration::from_secs(1)
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

    #[test]
    fn listen_addresses_that_cannot_be_bound_are_refused() {
        let e = parse_err("[[listen]]\naddr = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("t.toml:2: listen[0].addr: port 0"), "{e}");
        let e = parse_err(
            "[[listen]]\naddr = \"0.0.0.0:8080\"\n[[listen]]\naddr = \"127.0.0.1:8080\"\n",
        );
        assert!(
            e.starts_with(
                "t.toml:4: listen[1].addr: 127.0.0.1:8080 overlaps listen address 0.0.0.0:8080"
            ),
            "{e}"
        );
        let e = parse_err("[[listen]]\naddr = \"[::1]:8080\"\n[[listen]]\naddr = \"[::]:8080\"\n");
        assert!(
            e.starts_with("t.toml:4: listen[1].addr: [::]:8080 overlaps"),
            "{e}"
        );
        // Different families (IPv6 sockets are v6-only), or both reuseport.
        parse_ok("[[listen]]\naddr = \"0.0.0.0:8080\"\n[[listen]]\naddr = \"[::]:8080\"\n");
        parse_ok(
            "[[listen]]\naddr = \"0.0.0.0:8080\"\nreuseport = true\n[[listen]]\naddr = \"127.0.0.1:8080\"\nreuseport = true\n",
        );
        let e = parse_err("[admin]\naddr = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("t.toml:2: admin.addr: port 0"), "{e}");
        let e = parse_err(
            "[[listen]]\naddr = \"127.0.0.1:8080\"\n[admin]\naddr = \"127.0.0.1:8080\"\n",
        );
        assert!(
            e.starts_with(
                "t.toml:4: admin.addr: 127.0.0.1:8080 overlaps listen address 127.0.0.1:8080"
            ),
            "{e}"
        );
        let e = parse_err("[admin]\naddr = \"127.0.0.1:80\"\n");
        assert!(
            e.contains("admin.addr: 127.0.0.1:80 overlaps listen address 0.0.0.0:80"),
            "{e}"
        );
    }

    #[test]
    fn routes_that_can_never_match_are_refused() {
        let up = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n";
        let e = parse_err(&format!(
            "{up}[[routes]]\nhost = \"A.local\"\nupstream = \"a\"\n[[routes]]\nhost = \"a.local\"\npath = \"/\"\nupstream = \"a\"\n"
        ));
        assert!(
            e.starts_with("t.toml:6: routes[1]: same host and path as routes[0]"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{up}[[routes]]\nhost = \"a.local:8080\"\nupstream = \"a\"\n"
        ));
        assert!(
            e.starts_with(
                "t.toml:4: routes[0].host: invalid host \"a.local:8080\": write it without a port"
            ),
            "{e}"
        );
        assert_eq!(
            parse_ok(&format!(
                "{up}[[routes]]\nhost = \"[::1]\"\nupstream = \"a\"\n"
            ))
            .routes[0]
                .host,
            HostMatch::Exact("[::1]".into())
        );
        for bad in ["/a?b", "/a#b", "/a b", "/a\\t"] {
            let e = parse_err(&format!(
                "{up}[[routes]]\npath = \"{bad}\"\nupstream = \"a\"\n"
            ));
            assert!(
                e.starts_with("t.toml:4: routes[0].path: no request path holds"),
                "{bad}: {e}"
            );
        }
        // Same path under different hosts is fine.
        parse_ok(&format!(
            "{up}[[routes]]\nhost = \"a\"\nupstream = \"a\"\n[[routes]]\nhost = \"b\"\nupstream = \"a\"\n"
        ));
    }

    /// Route paths are normalised as request paths are (escapes decoded,
    /// dot segments resolved, slashes merged), or some could never match.
    #[test]
    fn route_paths_are_normalised_like_request_paths() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/x/../%61pi//v1/\"\nupstream = \"a\"\n",
        );
        assert_eq!(c.routes[0].path, "/api/v1/");
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/../x\"\nupstream = \"a\"\n",
        );
        assert!(
            e.contains("t.toml:4: routes[0].path: '..' climbs above the root"),
            "{e}"
        );
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/%FF\"\nupstream = \"a\"\n",
        );
        assert!(
            e.contains("routes[0].path: its escapes decode to bytes that are not UTF-8"),
            "{e}"
        );
    }

    /// Requests are routed by their host without its trailing dot
    /// (`app.local.` is the name `app.local`): a route host written with one
    /// names the same host, or it could never match.
    #[test]
    fn route_hosts_with_a_trailing_dot_match_their_name() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nhost = \"App.Local.\"\nupstream = \"a\"\n\
             [[routes]]\nhost = \"*.example.com.\"\nupstream = \"a\"\n",
        );
        assert!(c.routes[0].host.matches("app.local"));
        assert!(c.routes[1].host.matches("a.example.com"));
    }

    #[test]
    fn fixed_204_and_304_responses_take_no_body() {
        for status in [204, 304] {
            let e = parse_err(&format!(
                "[[routes]]\nrespond = {{ status = {status}, body = \"x\" }}\n"
            ));
            assert!(
                e.starts_with(&format!(
                    "t.toml:2: routes[0].respond.body: a {status} response has no body"
                )),
                "{e}"
            );
            parse_ok(&format!("[[routes]]\nrespond = {{ status = {status} }}\n"));
        }
    }

    #[test]
    fn non_utf8_bytes_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, b"workers = 1\nuser = \"\xff\"\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: invalid UTF-8 at byte 20: a TOML file must be UTF-8",
                path.display()
            )
        );
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let e = parse_err("workers = 1\n[log]\naccess_log = \"off\"\naccess_log = \"stdout\"\n");
        assert!(
            e.starts_with("t.toml:4: log.access_log: duplicate key"),
            "{e}"
        );
    }
}
