//! The access log: one line per request.

use slog::{info, Logger};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The request fields an access-log line shows, copied out of the request
/// head (into buffers reused across requests) only when the log is on.
#[derive(Debug, Default)]
pub(crate) struct RequestInfo {
    method: String,
    host: String,
    path: String,
}

impl RequestInfo {
    /// Records the fields of the current request.
    pub(crate) fn set(&mut self, method: &str, host: &str, path: &str) {
        for (field, value) in [
            (&mut self.method, method),
            (&mut self.host, host),
            (&mut self.path, path),
        ] {
            field.clear();
            field.push_str(value);
        }
    }

    /// Forgets the fields (for a request that could not be parsed).
    pub(crate) fn clear(&mut self) {
        self.set("-", "-", "-");
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
    /// Time spent with the upstream, if any.
    pub(crate) upstream_time: Option<Duration>,
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

/// Writes one access-log line.
pub(crate) fn record(
    log: &Logger,
    client: SocketAddr,
    info: &RequestInfo,
    served: &Served,
    total: Duration,
) {
    // slog-term prints key-values last to first: listed in reverse here so
    // that a line reads client, host, method, path, status, ...
    info!(log, "request";
        "request_time" => %Secs(total),
        "upstream_time" => %OrDash(served.upstream_time.map(Secs)),
        "upstream" => %OrDash(served.upstream),
        "bytes_sent" => served.bytes_sent,
        "status" => served.status,
        "path" => &info.path,
        "method" => &info.method,
        "host" => &info.host,
        "client" => %client.ip().to_canonical(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_dashes() {
        assert_eq!(Secs(Duration::from_millis(1234)).to_string(), "1.234");
        assert_eq!(Secs(Duration::from_micros(500)).to_string(), "0.000");
        assert_eq!(OrDash::<u8>(None).to_string(), "-");
        assert_eq!(OrDash(Some(7)).to_string(), "7");
    }
}
