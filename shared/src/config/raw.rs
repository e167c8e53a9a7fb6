//! The config file as written: serde types that mirror the TOML exactly.
//! Unknown keys are refused here; every value is checked afterwards, key by
//! key, by the section validators in [`super::validate`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The whole file: the process-level and client-limit keys at the top,
/// then one field per table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) workers: Option<RawWorkers>,
    pub(super) worker_cpu_affinity: Option<RawAffinity>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) worker_timeout: Option<String>,
    pub(super) sigterm: Option<String>,
    pub(super) shutdown_delay: Option<String>,
    pub(super) tls_session_timeout: Option<String>,
    pub(super) client_header_timeout: Option<String>,
    pub(super) client_body_timeout: Option<String>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) keepalive_requests: Option<u64>,
    pub(super) max_request_header_size: Option<usize>,
    pub(super) max_request_headers: Option<usize>,
    pub(super) max_uri_length: Option<usize>,
    pub(super) max_body_size: Option<RawSize>,
    pub(super) send_timeout: Option<String>,
    pub(super) tunnel_timeout: Option<String>,
    pub(super) via: Option<RawVia>,
    pub(super) splice: Option<bool>,
    pub(super) max_connections: Option<u64>,
    pub(super) http2_max_concurrent_streams: Option<u64>,
    pub(super) http2_max_header_list_size: Option<RawSize>,
    pub(super) http2_idle_timeout: Option<String>,
    pub(super) http2_initial_window_size: Option<RawSize>,
    pub(super) http2_initial_connection_window_size: Option<RawSize>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) listen: Vec<RawListen>,
    #[serde(default)]
    pub(super) upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) control_socket: Option<PathBuf>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) tls_protocols: Option<Vec<String>>,
    pub(super) tls_ciphers: Option<Vec<String>>,
    pub(super) tls_prefer_server_ciphers: Option<bool>,
    #[serde(default)]
    pub(super) certificates: Vec<RawCertificate>,
}

/// `workers = N | "auto"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawWorkers {
    Count(i64),
    Named(String),
}

/// `worker_cpu_affinity = "off" | "auto" | [cpu, ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawAffinity {
    Named(String),
    Cpus(Vec<i64>),
}

/// A byte size: a number, or text with a `k`, `m` or `g` suffix.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `via = true | false | "name"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawVia {
    Enabled(bool),
    Named(String),
}

/// `[log]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) error_log: Option<String>,
    pub(super) access_log: Option<String>,
    pub(super) access_log_format: Option<String>,
}

/// One `[[listen]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) addr: String,
    pub(super) backlog: Option<i32>,
    pub(super) reuseport: Option<bool>,
    pub(super) defer_accept: Option<bool>,
    pub(super) tls: Option<bool>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) http2: Option<bool>,
}

/// One `[[certificates]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// One `[upstreams.NAME]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) servers: Vec<RawServer>,
    pub(super) connect_timeout: Option<String>,
    pub(super) read_timeout: Option<String>,
    pub(super) write_timeout: Option<String>,
    pub(super) keepalive: Option<usize>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) balance: Option<String>,
    pub(super) max_fails: Option<u32>,
    pub(super) fail_timeout: Option<String>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) tls: Option<bool>,
    pub(super) tls_server_name: Option<String>,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) resolve: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) send_proxy_protocol: Option<String>,
}

/// A server entry: `"host:port"` or `{ addr = "host:port", weight = 3 }`.
pub(super) struct RawServer {
    pub(super) addr: String,
    pub(super) weight: Option<i64>,
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

/// An upstream's `health_check = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) path: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) passes: Option<u32>,
    pub(super) fails: Option<u32>,
}

/// One `[[routes]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<String>,
    pub(super) path: Option<String>,
    pub(super) upstream: Option<String>,
    pub(super) respond: Option<RawRespond>,
    pub(super) redirect: Option<RawRedirect>,
    pub(super) access_log: Option<String>,
    pub(super) max_body_size: Option<RawSize>,
}

/// A route's `respond = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespond {
    pub(super) status: Option<u16>,
    pub(super) body: Option<String>,
    pub(super) content_type: Option<String>,
}

/// A route's `redirect = { to = "...", status = N }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub(super) to: String,
    pub(super) status: Option<u16>,
}

/// `[admin]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) addr: Option<String>,
}
