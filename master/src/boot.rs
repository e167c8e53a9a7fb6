//! The master's start, one step after another: block signals, load and
//! check the config, take or bind the listeners (writing the pid file), open
//! the error log, start the signal thread, the control socket and the admin
//! listener. The first step that fails ends the start with its own
//! [`StartError`]; a pid file written on the way is removed then.

use crate::admin;
use crate::control_socket::{self, ControlSocket};
use crate::listeners::{BindError, Listeners};
use crate::os::{self, Credentials};
use crate::pidfile::{self, PidFileError};
use crate::query::Asked;
use crate::run::Startup;
use crate::signals;
use crate::start_checks::{expiry_warnings, start_checks};
use crate::systemd::{self, ActivationError, Systemd};
use crate::ticket_keys::TicketKeys;
use crate::upgrade::{self, Inherited};
use crossbeam_channel::Sender;
use prefork_shared::config::{self, ConfigError, Loaded};
use prefork_shared::log::{self, Logs};
use prefork_shared::Config;
use slog::{error, info, warn, Logger};
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the master could not start: one variant per step, each shown to the
/// user as it is worded here.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Blocking the signals the signal thread takes.
    #[error("prefork: sigprocmask: {0}")]
    SignalMask(#[source] nix::Error),
    /// Reading or validating the config file.
    #[error(transparent)]
    Config(ConfigError),
    /// What the config names beyond the file (see [`start_checks`]).
    #[error(transparent)]
    StartChecks(ConfigError),
    /// Finding the binary to exec workers from.
    #[error("prefork: cannot find its own binary: {0}")]
    OwnExe(#[source] io::Error),
    /// Taking what the old master passed in a binary upgrade.
    #[error("prefork: {0}")]
    Inherited(#[from] upgrade::InheritError),
    /// Taking the sockets systemd passed (socket activation).
    #[error("prefork: {0}")]
    Activation(#[source] ActivationError),
    /// Binding the listeners, or adding to those inherited.
    #[error("prefork: {0}")]
    Listeners(#[source] BindError),
    /// Writing the pid file.
    #[error("prefork: {0}")]
    PidFile(#[source] PidFileError),
    /// Opening the error log.
    #[error("prefork: cannot open the error log: {0}")]
    ErrorLog(#[source] io::Error),
    /// Starting the thread that waits for signals.
    #[error("prefork: cannot start the signal thread: {0}")]
    SignalThread(#[source] io::Error),
    /// Making the session-ticket keys.
    #[error("prefork: cannot make session-ticket keys: {0}")]
    TicketKeys(#[source] io::Error),
    /// Binding the control socket.
    #[error("prefork: control socket: {0}")]
    ControlSocket(#[source] io::Error),
    /// Binding or serving the admin listener.
    #[error("prefork: admin listener: {0}")]
    Admin(#[source] io::Error),
}

/// A master ready to run, and what must live as long as it runs.
pub struct Booted {
    /// What the master loop starts with.
    pub startup: Startup,
    /// The error log; dropping it flushes the last lines.
    pub logs: Logs,
    /// Keeps the query channel open while the master runs, whichever of the
    /// control socket's and the admin listener's threads ends first.
    pub queries: Sender<Asked>,
}

/// Starts the master from the config file at `path`.
pub fn boot(path: &Path) -> Result<Booted, StartError> {
    // Before any thread exists, so that every thread inherits the mask and
    // only the signal thread takes these signals.
    signals::block().map_err(StartError::SignalMask)?;
    let Loaded {
        mut config,
        locator,
    } = config::load(path).map_err(StartError::Config)?;
    let credentials = start_checks(&mut config, &locator).map_err(StartError::StartChecks)?;
    let exe = os::OwnImage::open().map_err(StartError::OwnExe)?;
    let mut handoff = upgrade::inherited()?;
    let (systemd, activated) = systemd::take_from_env().map_err(StartError::Activation)?;
    let activated =
        systemd::match_listen(activated, &config.listen).map_err(StartError::Activation)?;
    let (listeners, pid_file) = listeners(&config, handoff.as_mut(), activated)?;
    let generation = Arc::new(AtomicU64::new(1));
    let logs = log::open_master(&config.log.error_log, generation.clone())
        .map_err(StartError::ErrorLog)?;
    let (signal_tx, signals) = crossbeam_channel::unbounded();
    signals::forward(signal_tx).map_err(StartError::SignalThread)?;
    let (queries_tx, queries) = crossbeam_channel::unbounded();
    let control = control_socket(&config, handoff.is_some(), &queries_tx, &logs.error)?;
    let inherited_admin = handoff.as_mut().and_then(|h| h.admin.take());
    let admin = admin_listener(&config, inherited_admin, &queries_tx, &logs.error)?;
    let inherited_keys = handoff.as_mut().and_then(|h| h.ticket_keys.take());
    let ticket_keys = ticket_keys(
        inherited_keys.as_deref(),
        config.tls_session_timeout,
        &logs.error,
    )?;
    started(
        &logs.error,
        path,
        &config,
        credentials.as_ref(),
        &listeners,
        &systemd,
    );
    // The master removes the pid file when it stops (wherever a reload
    // moved it).
    if let Some(guard) = pid_file {
        guard.disarm();
    }
    Ok(Booted {
        startup: Startup {
            log: logs.error.clone(),
            log_generation: generation,
            config_path: path.to_owned(),
            config,
            credentials,
            listeners,
            signals,
            exe,
            queries,
            control,
            admin,
            handoff,
            ticket_keys,
            systemd,
        },
        logs,
        queries: queries_tx,
    })
}

/// The session-ticket keys: those the old master of a binary upgrade
/// passed, so that its workers' tickets resume on this master's, or new ones.
fn ticket_keys(
    inherited: Option<&[u8]>,
    interval: Duration,
    log: &Logger,
) -> Result<TicketKeys, StartError> {
    let now = Instant::now();
    if let Some(bytes) = inherited {
        match TicketKeys::decode(bytes, now, interval) {
            Ok(keys) => {
                info!(log, "session-ticket keys taken from the old master"; "key" => keys.ring().current.short_name());
                return Ok(keys);
            }
            Err(e) => {
                warn!(log, "binary upgrade: cannot take the old master's session-ticket keys; clients resume after one full handshake"; "error" => %e)
            }
        }
    }
    let keys = TicketKeys::fresh(now, interval).map_err(StartError::TicketKeys)?;
    info!(log, "session-ticket keys made"; "key" => keys.ring().current.short_name());
    Ok(keys)
}

/// The listeners: those the old master handed over, completed to match the
/// config, or those systemd passed (`activated`) and the others bound anew
/// after writing the pid file (whose guard is returned, to remove it if a
/// later step fails).
fn listeners(
    config: &Config,
    handoff: Option<&mut Inherited>,
    activated: Vec<(std::net::SocketAddr, socket2::Socket)>,
) -> Result<(Listeners, Option<pidfile::Guard>), StartError> {
    match handoff {
        // The old master still serves and names itself in the pid file
        // until this one takes over (see `upgrade`).
        Some(h) => {
            let mut l = Listeners::adopt(std::mem::take(&mut h.listeners), &h.activated);
            l.reconcile(&config.listen, config.workers)
                .map_err(StartError::Listeners)?;
            Ok((l, None))
        }
        None => {
            let pid_file = pidfile::Guard::write(&config.pid_file).map_err(StartError::PidFile)?;
            let l = Listeners::with_activated(&config.listen, config.workers, activated)
                .map_err(StartError::Listeners)?;
            Ok((l, Some(pid_file)))
        }
    }
}

/// Binds the control socket. A master started by a binary upgrade binds
/// beside the old master's and moves onto its path once the old master
/// hands over (see `Handoff::take_over` in `handoff.rs`).
fn control_socket(
    config: &Config,
    upgrading: bool,
    queries: &Sender<Asked>,
    log: &Logger,
) -> Result<ControlSocket, StartError> {
    let bind = if upgrading {
        control_socket::listen_beside
    } else {
        control_socket::listen
    };
    bind(&config.control_socket, queries.clone(), log.clone()).map_err(|e| {
        error!(log, "cannot open the control socket"; "error" => %e);
        StartError::ControlSocket(e)
    })
}

/// Serves the admin listener, if the config has one, on the old master's
/// listener when the address is the same (both answer on it until the old
/// master exits). Returns a copy of it, passed on by a binary upgrade.
fn admin_listener(
    config: &Config,
    inherited: Option<TcpListener>,
    queries: &Sender<Asked>,
    log: &Logger,
) -> Result<Option<TcpListener>, StartError> {
    let Some(a) = &config.admin else {
        return Ok(None);
    };
    let listener = match inherited.filter(|l| l.local_addr().is_ok_and(|l| l == a.addr)) {
        Some(l) => Ok(l),
        None => admin::bind(a.addr),
    };
    let served = listener.and_then(|l| {
        let kept = l.try_clone()?;
        admin::serve_on(l, queries.clone(), log.clone()).map(|addr| (kept, addr))
    });
    match served {
        Ok((kept, addr)) => {
            info!(log, "admin listener started"; "addr" => %addr);
            Ok(Some(kept))
        }
        Err(e) => {
            error!(log, "cannot start the admin listener"; "error" => %e);
            Err(StartError::Admin(e))
        }
    }
}

/// Logs the start.
fn started(
    log: &Logger,
    path: &Path,
    config: &Config,
    credentials: Option<&Credentials>,
    listeners: &Listeners,
    systemd: &Systemd,
) {
    let addrs: Vec<String> = config.listen.iter().map(|l| l.addr.to_string()).collect();
    info!(log, "prefork started";
        "config" => %path.display(), "listen" => addrs.join(" "), "workers" => config.workers);
    for l in config
        .listen
        .iter()
        .filter(|l| listeners.is_activated(l.addr))
    {
        info!(log, "listening on the socket systemd passed"; "addr" => %l.addr);
        if l.reuseport {
            warn!(log, "`reuseport` is ignored for a socket systemd passed: every worker shares it"; "addr" => %l.addr);
        }
    }
    if let Some(why) = &systemd.unusable {
        warn!(log, "cannot notify systemd"; "error" => why);
    }
    if let Some(every) = systemd.watchdog {
        info!(log, "pinging the systemd watchdog"; "every_ms" => every.as_millis() as u64);
    }
    if config.user.is_some() && credentials.is_none() {
        warn!(log, "`user` is ignored: the master is not running as root");
    }
    for why in expiry_warnings(config) {
        warn!(log, "{why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start that fails after writing the pid file leaves none behind:
    /// here the listen address is taken. (The steps after the listeners
    /// start threads, which a unit test should not leave running.)
    #[test]
    fn a_start_that_cannot_bind_removes_the_pid_file_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let pid_file = dir.path().join("p.pid");
        let path = dir.path().join("t.toml");
        let text = format!(
            "workers = 1\npid_file = \"{}\"\n[[listen]]\naddr = \"{addr}\"\n",
            pid_file.display()
        );
        std::fs::write(&path, text).unwrap();
        let Err(e) = boot(&path) else {
            panic!("the start should fail: {addr} is taken");
        };
        assert!(matches!(e, StartError::Listeners(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("prefork: cannot listen on {addr}: bind failed")),
            "{e}"
        );
        assert!(!pid_file.exists(), "the pid file is removed");
    }

    /// The messages users see on stderr, word for word: every step's,
    /// those whose error comes from elsewhere (the config, the checks
    /// beyond it, binding, the pid file) made by the code the step runs.
    #[test]
    fn each_step_is_worded_as_users_see_it() {
        let io = || io::Error::other("why");
        let shown = [
            (
                StartError::SignalMask(nix::Error::EPERM),
                "prefork: sigprocmask: EPERM: Operation not permitted",
            ),
            (
                StartError::OwnExe(io()),
                "prefork: cannot find its own binary: why",
            ),
            (
                StartError::Inherited(upgrade::InheritError::Variable("X")),
                "prefork: binary upgrade: invalid X",
            ),
            (
                StartError::ErrorLog(io()),
                "prefork: cannot open the error log: why",
            ),
            (
                StartError::SignalThread(io()),
                "prefork: cannot start the signal thread: why",
            ),
            (
                StartError::ControlSocket(io()),
                "prefork: control socket: why",
            ),
            (StartError::Admin(io()), "prefork: admin listener: why"),
        ];
        for (e, message) in shown {
            assert_eq!(e.to_string(), message);
        }

        fn failed<T>(step: Result<T, StartError>) -> StartError {
            match step {
                Ok(_) => panic!("the step should fail"),
                Err(e) => e,
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let absent = missing.join("t.toml");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "workers = 0\nshutdown_timeout = \"0s\"\n").unwrap();
        let invalid = failed(config::load(&path).map_err(StartError::Config));
        let pid_file = missing.join("p.pid");
        let text = format!("workers = 1\npid_file = \"{}\"\n", pid_file.display());
        std::fs::write(&path, text).unwrap();
        let Loaded {
            mut config,
            locator,
        } = config::load(&path).unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let listen = [prefork_shared::config::Listen {
            addr,
            backlog: 16,
            reuseport: false,
            defer_accept: false,
            tls: false,
            proxy_protocol: false,
            http2: false,
        }];
        let (p, m) = (path.display(), missing.display());
        let enoent = "No such file or directory (os error 2)";
        let made = [
            (
                failed(config::load(&absent).map_err(StartError::Config)),
                format!("{}: cannot read config: {enoent}", absent.display()),
            ),
            (
                invalid,
                format!(
                    "{p}:1: workers: must be at least 1 (found 0)\n\
                     {p}:2: shutdown_timeout: must be longer than zero"
                ),
            ),
            (
                failed(start_checks(&mut config, &locator).map_err(StartError::StartChecks)),
                format!(
                    "{p}: control_socket: {sock}: directory {m}: {enoent}\n\
                     {p}:2: pid_file: {pid}: directory {m}: {enoent}",
                    sock = missing.join("p.sock").display(),
                    pid = pid_file.display(),
                ),
            ),
            (
                failed(Listeners::bind(&listen, 1).map_err(StartError::Listeners)),
                format!(
                    "prefork: cannot listen on {addr}: bind failed: \
                     Address already in use (os error 98)"
                ),
            ),
            (
                failed(pidfile::Guard::write(&pid_file).map_err(StartError::PidFile)),
                format!("prefork: {}: {enoent}", pid_file.display()),
            ),
        ];
        for (e, message) in made {
            assert_eq!(e.to_string(), message);
        }
    }
}
