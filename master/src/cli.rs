//! Command-line options and the three things a user can ask for: run the
//! master, test a config, or signal a running master.

use crate::boot::{self, Booted};
use crate::run::Master;
use crate::start_checks::start_checks;
use crate::{control_socket, pidfile};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use prefork_shared::config::{self, Loaded};
use prefork_shared::{exit, fd_budget};
use slog::info;
use std::path::{Path, PathBuf};

/// Default config file.
const DEFAULT_CONFIG: &str = "/etc/prefork/prefork.toml";

/// prefork: a multi-process HTTP/1.1 reverse proxy.
///
/// Runs in the foreground: a master process binds the listeners and
/// supervises worker processes that serve the traffic.
#[derive(Parser, Debug)]
#[command(name = "prefork", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Test the configuration file and exit (0 if valid, 1 with the reasons).
    #[arg(short = 't', long = "test", conflicts_with = "signal")]
    pub test: bool,
    /// Send a signal to the running master found through the config's pid file.
    #[arg(short = 's', long = "signal", value_enum)]
    pub signal: Option<SignalName>,
    /// Internal: the role this process plays.
    #[command(subcommand)]
    pub role: Option<Role>,
}

/// Roles other than master, chosen by the master when it execs itself.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// A worker process (started by the master, never by hand).
    #[command(hide = true)]
    Worker {
        /// The slot it fills.
        #[arg(long)]
        slot: u32,
        /// Its generation.
        #[arg(long)]
        generation: u64,
        /// The IPC server to connect to.
        #[arg(long)]
        ipc: String,
    },
    /// Show the running master's workers, traffic and upstream servers.
    Status {
        /// Configuration file (names the control socket).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the status, refreshed live like `top`.
    Top {
        /// Configuration file (names the control socket).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Seconds between refreshes.
        #[arg(short = 'd', long = "delay", default_value_t = 1.0, value_parser = parse_delay)]
        delay: f64,
        /// Stop after this many refreshes.
        #[arg(short = 'n', long = "iterations")]
        iterations: Option<u64>,
    },
}

/// `top -d`: a finite number of seconds above zero (`nan` or `inf` would
/// make no refresh interval).
fn parse_delay(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 => Ok(d),
        _ => Err(format!(
            "expected a number of seconds above 0, found {text:?}"
        )),
    }
}

/// Signals `-s` can send.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalName {
    /// Reload the config (over the control socket; SIGHUP if no master answers there).
    Reload,
    /// SIGQUIT: graceful stop.
    Quit,
    /// SIGTERM: fast stop.
    Stop,
    /// SIGUSR1: reopen the log files (after logrotate renamed them).
    Reopen,
}

impl SignalName {
    fn signal(self) -> Signal {
        match self {
            SignalName::Reload => Signal::SIGHUP,
            SignalName::Quit => Signal::SIGQUIT,
            SignalName::Stop => Signal::SIGTERM,
            SignalName::Reopen => Signal::SIGUSR1,
        }
    }
}

/// `prefork -t`: validates the config file, and what a start would check
/// beyond it (the workers' `user` exists, the log files can be created),
/// as `nginx -t` does.
pub fn test_config(path: &Path) -> i32 {
    let checked = config::load(path).and_then(
        |Loaded {
             mut config,
             locator,
         }| { start_checks(&mut config, &locator).map(|_| config) },
    );
    match checked {
        Ok(c) => {
            let listen: Vec<String> = c.listen.iter().map(|l| l.addr.to_string()).collect();
            println!(
                "prefork: configuration file {} is valid: listen {}, {} workers, {} upstreams, {} routes, max_connections {} per worker",
                path.display(),
                listen.join(" "),
                c.workers,
                c.upstreams.len(),
                c.routes.len(),
                c.max_connections.unwrap_or(fd_budget::DEFAULT_MAX_CONNECTIONS)
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("prefork: configuration file {} test failed", path.display());
            exit::FAILURE
        }
    }
}

/// `prefork -s NAME`: signals the master named in the config's pid file.
pub fn send_signal(path: &Path, name: SignalName) -> i32 {
    let config = match config::load(path) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("prefork: not signalling: the configuration file is invalid");
            return exit::FAILURE;
        }
    };
    if name == SignalName::Reload {
        if let Some(code) = reload_over_control_socket(&config.control_socket) {
            return code;
        }
    }
    let pid = match pidfile::read(&config.pid_file) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("prefork: cannot find the master ({e}); is prefork running?");
            return exit::FAILURE;
        }
    };
    // A pid file left behind by a master that was killed may name a pid
    // since reused by an unrelated process: never signal that.
    if !pidfile::is_prefork(pid) {
        eprintln!(
            "prefork: {} names pid {pid}, which is not a running prefork (stale pid file); is prefork running?",
            config.pid_file.display()
        );
        return exit::FAILURE;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), name.signal()) {
        Ok(()) => {
            println!(
                "prefork: sent {} to master pid {pid}",
                name.signal().as_str()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("prefork: kill({pid}, {}): {e}", name.signal().as_str());
            exit::FAILURE
        }
    }
}

/// Asks the master to reload over its control socket and prints the
/// outcome; `None` when no master answers there (the caller signals instead).
fn reload_over_control_socket(socket: &Path) -> Option<i32> {
    let answer = match control_socket::request(socket, "reload", std::time::Duration::from_secs(30))
    {
        Ok(answer) => answer,
        // Someone else's process listens there: neither ask nor signal.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("prefork: {e}");
            return Some(exit::FAILURE);
        }
        Err(_) => return None,
    };
    let reply: serde_json::Value = serde_json::from_str(&answer).ok()?;
    let message = reply["message"].as_str().unwrap_or("no message");
    if reply["ok"].as_bool() == Some(true) {
        println!("prefork: {message}");
        Some(exit::OK)
    } else {
        eprintln!("{message}");
        eprintln!("prefork: reload failed; the master keeps its previous configuration");
        Some(exit::FAILURE)
    }
}

/// `prefork -c FILE`: runs the master in the foreground until it stops.
pub fn run_master(path: &Path) -> i32 {
    let Booted {
        startup,
        logs,
        queries,
    } = match boot::boot(path) {
        Ok(booted) => booted,
        Err(e) => {
            eprintln!("{e}");
            return exit::FAILURE;
        }
    };
    let (code, pid_file) = Master::new(startup).run();
    drop(queries);
    pidfile::remove(&pid_file);
    info!(logs.error, "prefork stopped"; "exit_code" => code);
    drop(logs);
    code
}
