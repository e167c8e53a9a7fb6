//! Configuration: the validated model the master builds and sends to every
//! worker, and how it is made from the TOML file.
//!
//! - `model.rs`: the validated types, [`Config`] and one type per section;
//!   all a worker sees. `access_format.rs`: the access-log line format;
//!   `redirect.rs`: a `redirect` route's target template.
//! - `load.rs`: [`load`] reads the file and parses it into the types of
//!   `raw.rs` (the TOML as written, unknown keys refused), which
//!   `validate/` checks with one validator per section.
//! - `locate.rs`: every [`Problem`] found is located in the file, so that it
//!   reads `file:line: key: reason`; a [`Loaded`] config keeps the file's
//!   text in a [`Locator`] for problems found later, beyond the file.

mod access_format;
mod load;
mod locate;
mod model;
mod raw;
mod redirect;
mod template;
#[cfg(test)]
pub(crate) mod testing;
mod validate;

pub use access_format::{parse_template, AccessField, AccessFormat, Segment};
pub use load::{load, parse, ConfigError, Loaded};
pub use locate::{KeyPath, Locator, Problem};
pub use model::{
    default_control_socket, Admin, Balance, Config, Der, FixedResponse, HealthCheck, HostMatch,
    Http2Limits, HttpLimits, Listen, LogConfig, LogTarget, ProxyVersion, Route, RouteAccessLog,
    RouteAction, Server, SigtermMode, TlsRoots, Upstream, UpstreamProtocol, UpstreamTls,
};
pub use redirect::{Redirect, RedirectPart, RedirectVar, REDIRECT_STATUSES};
pub use validate::server_host;
pub use validate::{
    default_pid_file, resolve_server, DEFAULT_LISTEN, DEFAULT_PID_FILE, DEFAULT_RESOLVE,
    DEFAULT_ROOT_PID_FILE, DEFAULT_WORKER_TIMEOUT, MAX_DURATION, MAX_REQUEST_HEADERS, MAX_WEIGHT,
    MIN_WORKER_TIMEOUT,
};
