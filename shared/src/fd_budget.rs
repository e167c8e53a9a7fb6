//! How many file descriptors a worker needs, and how many client
//! connections (`max_connections`) it may hold within the limit.
//!
//! A worker's descriptors: one per client connection, one more per client
//! connection while its request is forwarded (when the config has
//! upstreams), the idle upstream pools (`keepalive` per server), and a
//! reserve for everything else (listeners, logs, the IPC link, epoll
//! instances, splice pipes, health checks). nginx counts client and
//! upstream connections together in `worker_connections`; prefork's
//! `max_connections` counts client connections only and sizes the
//! descriptor limit for the upstream ones.

use crate::Config;
use std::io;
use thiserror::Error;

/// `max_connections` when the config names none and the hard limit allows
/// it: enough for an edge proxy's idle keep-alive clients on one worker
/// (an idle connection costs well under a KiB in the worker, a few KiB in
/// the kernel), small enough for the usual hard limits (systemd's 524288;
/// many distributions' 1048576) to cover twice over.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// Descriptors kept for what is not a connection: the listeners are added.
pub const RESERVED_FDS: u64 = 128;

/// The connection budget of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most client connections a worker holds.
    pub max_connections: u64,
    /// The `RLIMIT_NOFILE` soft limit that covers them.
    pub nofile: u64,
}

/// A hard limit below what the configuration needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{} need {needed} file descriptors per worker \
     ({per_client} per client connection, {pooled} for idle upstream pools, {reserved} reserved), \
     but the hard limit (RLIMIT_NOFILE) is {hard}: raise it (ulimit -Hn, systemd's LimitNOFILE=){}",
    self.asked(),
    if *written { " or lower max_connections" } else { "" }
)]
pub struct TooFewDescriptors {
    /// The connections asked for (1 when absent: not even one fits).
    pub max_connections: u64,
    /// Whether the config sets `max_connections`.
    pub written: bool,
    /// The descriptors they need.
    pub needed: u64,
    /// Descriptors per client connection (2 when requests are forwarded).
    pub per_client: u64,
    /// Descriptors of idle upstream pools.
    pub pooled: u64,
    /// Descriptors reserved for the rest.
    pub reserved: u64,
    /// The hard limit.
    pub hard: u64,
}

impl TooFewDescriptors {
    fn asked(&self) -> String {
        if self.written {
            format!("{} connections", self.max_connections)
        } else {
            "even one connection and the upstream pools".to_owned()
        }
    }
}

/// The budget of `config` under the hard limit `hard`: `max_connections`
/// as written, or when absent the default, lowered to what `hard` allows.
pub fn budget(config: &Config, hard: u64) -> Result<Budget, TooFewDescriptors> {
    let per_client = if config.upstreams.is_empty() { 1 } else { 2 };
    let pooled: u64 = config
        .upstreams
        .values()
        .map(|u| (u.keepalive as u64).saturating_mul(u.servers.len() as u64))
        .sum();
    let reserved = RESERVED_FDS + config.listen.len() as u64;
    let fixed = pooled.saturating_add(reserved);
    let needed_for = |n: u64| n.saturating_mul(per_client).saturating_add(fixed);
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| DEFAULT_MAX_CONNECTIONS.min(hard.saturating_sub(fixed) / per_client));
    let needed = needed_for(max_connections.max(1));
    if max_connections == 0 || needed > hard {
        return Err(TooFewDescriptors {
            max_connections: max_connections.max(1),
            written: config.max_connections.is_some(),
            needed,
            per_client,
            pooled,
            reserved,
            hard,
        });
    }
    Ok(Budget {
        max_connections,
        nofile: needed,
    })
}

/// This process's `RLIMIT_NOFILE`: (soft, hard); infinity as `u64::MAX`.
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to `nofile` (never
/// lowers it; the hard limit stays). Returns the soft limit now.
pub fn raise_nofile(nofile: u64) -> io::Result<u64> {
    let (soft, hard) = nofile_limits()?;
    if soft >= nofile {
        return Ok(soft);
    }
    let limit = libc::rlimit {
        rlim_cur: nofile.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given, nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse_err, parse_ok};

    const RESPOND: &str = r#"
[[listen]]
addr = "127.0.0.1:8080"

[[routes]]
path = "/"
respond = { status = 200, body = "ok" }
"#;

    const PROXY: &str = r#"
[[listen]]
addr = "127.0.0.1:8080"

[upstreams.app]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
keepalive = 10

[[routes]]
path = "/"
upstream = "app"
"#;

    fn with_max(src: &str, max: u64) -> Config {
        parse_ok(&format!("max_connections = {max}\n{src}"))
    }

    #[test]
    fn the_default_fits_a_large_hard_limit() {
        let b = budget(&parse_ok(RESPOND), 1 << 20).unwrap();
        assert_eq!(b.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(b.nofile, DEFAULT_MAX_CONNECTIONS + RESERVED_FDS + 1);
    }

    #[test]
    fn the_default_shrinks_to_a_small_hard_limit() {
        let b = budget(&parse_ok(RESPOND), 1024).unwrap();
        assert_eq!(b.max_connections, 1024 - RESERVED_FDS - 1);
        assert_eq!(b.nofile, 1024);
        // Forwarding: two descriptors per client, and the pools.
        let b = budget(&parse_ok(PROXY), 1024).unwrap();
        assert_eq!(b.max_connections, (1024 - 20 - RESERVED_FDS - 1) / 2);
        assert!(b.nofile <= 1024);
    }

    #[test]
    fn a_written_value_counts_clients_upstreams_pools_and_the_reserve() {
        let b = budget(&with_max(PROXY, 100), 20_000).unwrap();
        assert_eq!(
            b,
            Budget {
                max_connections: 100,
                nofile: 200 + 20 + RESERVED_FDS + 1
            }
        );
    }

    #[test]
    fn a_hard_limit_too_low_names_the_numbers() {
        let e = budget(&with_max(RESPOND, 1000), 500).unwrap_err();
        assert_eq!((e.needed, e.hard, e.max_connections), (1129, 500, 1000));
        let text = e.to_string();
        for number in ["1000 connections", "1129 file descriptors", "is 500"] {
            assert!(text.contains(number), "{text}");
        }
        // Not even one connection fits beside the pools and the reserve.
        let e = budget(&parse_ok(PROXY), 100).unwrap_err();
        assert_eq!(e.max_connections, 1);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "even one connection and the upstream pools need 151 file descriptors"
            ),
            "{text}"
        );
        assert!(!text.contains("lower max_connections"), "{text}");
    }

    #[test]
    fn max_connections_must_be_at_least_one() {
        let e = parse_err(&format!("max_connections = 0\n{RESPOND}"));
        assert!(
            e.contains("t.toml:1: max_connections: must be at least 1"),
            "{e}"
        );
    }
}
