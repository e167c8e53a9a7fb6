//! Running under systemd: notifications (`NOTIFY_SOCKET`: ready, reloading,
//! stopping, the new main pid after a binary upgrade, watchdog pings) and
//! socket activation (`LISTEN_FDS`). What to say and when is decided by
//! [`Notices`]; this module reads the environment and sends.

mod activation;
mod notices;
mod notify;

pub use activation::ActivationError;
pub use notices::{Happening, Notices};
use notify::NotifySocket;
use slog::{warn, Logger};
use socket2::Socket;
use std::net::SocketAddr;
use std::time::Duration;

pub use activation::match_listen;
pub use notify::monotonic_usec;

/// The variables systemd sets for its main process. All are removed from
/// this process's environment at start, so that no worker sees them; a new
/// master (binary upgrade) gets the notification ones back explicitly.
const VARIABLES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// What systemd set up for this master.
#[derive(Default)]
pub struct Systemd {
    /// Where to send notifications, if anywhere.
    notify: Option<NotifySocket>,
    /// How often to ping the watchdog, if it is this master's to ping.
    pub watchdog: Option<Duration>,
    /// `WATCHDOG_USEC` as given, passed on to a new master with the socket.
    watchdog_usec: Option<String>,
    /// Why `NOTIFY_SOCKET` cannot be used, if it is set but cannot.
    pub unusable: Option<String>,
}

/// The sockets systemd passed, each with its address and how messages name it.
pub type Activated = Vec<(SocketAddr, Socket, String)>;

/// Reads and clears systemd's variables, and takes the sockets it passed to
/// this process. Call before any thread starts (it changes the environment).
pub fn take_from_env() -> Result<(Systemd, Activated), ActivationError> {
    let var = |name| std::env::var(name).ok();
    let our_pid = std::process::id();
    let passed = activation::parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        our_pid,
    );
    let watchdog = notify::watchdog_interval(
        var("WATCHDOG_USEC").as_deref(),
        var("WATCHDOG_PID").as_deref(),
        our_pid,
    );
    let (notify, unusable) = match var("NOTIFY_SOCKET").map(|n| (NotifySocket::new(&n), n)) {
        None => (None, None),
        Some((Ok(notify), _)) => (Some(notify), None),
        Some((Err(e), name)) => (None, Some(format!("NOTIFY_SOCKET {name:?}: {e}"))),
    };
    let systemd = Systemd {
        notify,
        watchdog,
        watchdog_usec: watchdog.and(var("WATCHDOG_USEC")),
        unusable,
    };
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    let activated = activation::take(&passed?)?;
    Ok((systemd, activated))
}

impl Systemd {
    /// Sends `message`, if systemd listens; a failure is logged, never fatal.
    pub fn send(&self, log: &Logger, message: &str) {
        if let Some(notify) = &self.notify {
            if let Err(e) = notify.send(message) {
                warn!(log, "cannot notify systemd"; "socket" => &notify.name, "error" => %e);
            }
        }
    }

    /// The variables a new master (binary upgrade) needs to notify systemd
    /// in turn: the socket, and the watchdog (its pid is not known yet, so
    /// `WATCHDOG_PID` is left out).
    pub fn for_new_master(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(notify) = &self.notify {
            env.push(("NOTIFY_SOCKET", notify.name.clone()));
            if let Some(usec) = &self.watchdog_usec {
                env.push(("WATCHDOG_USEC", usec.clone()));
            }
        }
        env
    }
}
