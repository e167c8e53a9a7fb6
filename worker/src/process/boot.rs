//! A worker's start: inherit the listeners, say hello to the master, take
//! the first configuration, open the logs, and run the event loop until a
//! stop.

#[cfg(debug_assertions)]
use super::test_hooks;
use super::{control, heartbeat, inherit, reload, report, serve};
use crate::downstream::accept::Listener;
use crate::downstream::protocols::Protocols;
use crate::observe::access_log;
use crate::state::{tickets, Snapshot};
use crate::stop::Stop;
use ipc_channel::ipc::{self, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use prefork_shared::cpus;
use prefork_shared::exit;
use prefork_shared::ipc::{MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use prefork_shared::log::{self as plog, Role};
use prefork_shared::Config;
use slog::{error, info, o, warn};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long a new worker waits for its configuration.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments the master passes on the worker's command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The worker's slot in the master's table.
    pub slot: u32,
    /// The configuration generation the worker belongs to.
    pub generation: u64,
    /// Name of the master's one-shot IPC server.
    pub ipc_name: String,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
enum BootError {
    #[error("{0}")]
    Secret(String),
    #[error("inherited listeners: {0}")]
    Listeners(#[from] inherit::InheritError),
    #[error("cannot connect to the master's IPC server {name:?}: {source}")]
    Connect {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot create the control channel: {0}")]
    Channel(std::io::Error),
    #[error("cannot send Hello to the master: {0}")]
    Hello(IpcError),
    #[error("no configuration from the master within {0:?}")]
    ConfigTimeout(Duration),
    #[error("control channel failed before configuration: {0}")]
    ConfigRecv(IpcError),
    #[error("cannot open the logs: {0}")]
    Logs(std::io::Error),
    #[error("cannot start the control thread: {0}")]
    ControlThread(std::io::Error),
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
}

/// Runs a worker process to completion; returns the process exit code (see
/// [`prefork_shared::exit`]).
pub fn main(args: WorkerArgs) -> i32 {
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "prefork worker (slot {}, generation {}, pid {}): {e}",
                args.slot,
                args.generation,
                std::process::id()
            );
            exit::WORKER_BOOT_FAILURE
        }
    }
}

fn run(args: &WorkerArgs) -> Result<i32, BootError> {
    // First thing: the secret's socket stays open no longer than needed.
    let secret = inherit::take_link_secret().map_err(BootError::Secret)?;
    let listeners = inherit::take_listeners()?;
    // Before the worker opens anything that could take the board's number.
    let load = inherit::take_load_board(listeners.len());
    inherit::close_image();
    let to_master = IpcSender::<WorkerMsg>::connect(args.ipc_name.clone()).map_err(|source| {
        BootError::Connect {
            name: args.ipc_name.clone(),
            source,
        }
    })?;
    let (control, commands) = ipc::channel::<MasterMsg>().map_err(BootError::Channel)?;
    to_master
        .send(WorkerMsg::Hello {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
            secret,
            control,
        })
        .map_err(BootError::Hello)?;
    let configure_by = Instant::now() + CONFIGURE_TIMEOUT;
    let config: Config = loop {
        let left = configure_by.saturating_duration_since(Instant::now());
        match commands.try_recv_timeout(left) {
            Ok(MasterMsg::Configure(config)) => break *config,
            Ok(MasterMsg::TicketKeys(ring)) => tickets::install(&ring),
            // Told to stop before starting: nothing to do.
            Ok(MasterMsg::Stop(_)) => return Ok(exit::OK),
            // No log is open yet: nothing to reopen.
            Ok(MasterMsg::ReopenLogs) => continue,
            Err(TryRecvError::Empty) => return Err(BootError::ConfigTimeout(CONFIGURE_TIMEOUT)),
            Err(TryRecvError::IpcError(e)) => return Err(BootError::ConfigRecv(e)),
        }
    };
    // Before the worker starts its other threads (the log writers, the IPC
    // reader), so that they inherit the pinning; the allocator's background
    // thread, already running, is pinned too.
    let pinned = config
        .cpu_for_slot(args.slot)
        .map(|cpu| (cpu, cpus::pin_process(cpu)));

    let logs = plog::open(&config.log.error_log, Role::Worker, args.generation)
        .map_err(BootError::Logs)?;
    let log = logs.error.new(o!("slot" => args.slot));
    let access = access_log::AccessLogs::open(&config, &log).map_err(BootError::Logs)?;
    super::fd_limit::raise(&config, &log);
    match pinned {
        Some((cpu, Ok(()))) => info!(log, "pinned to a CPU"; "cpu" => cpu),
        Some((cpu, Err(e))) => {
            warn!(log, "cannot pin to a CPU, running unpinned"; "cpu" => cpu, "error" => %e)
        }
        None => {}
    }
    let load = load.unwrap_or_else(|e| {
        warn!(log, "accepting without the load board"; "error" => %e);
        None
    });

    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let (updates_tx, updates_rx) = mpsc::unbounded_channel();
    control::spawn_ipc_reader(commands, stop_tx.clone(), updates_tx, log.clone())
        .map_err(BootError::ControlThread)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BootError::Runtime)?;
    let local = tokio::task::LocalSet::new();

    let code = local.block_on(&runtime, async {
        let signalled = Rc::new(Cell::new(false));
        let signals = match control::watch_signals(stop_tx, signalled.clone()) {
            Ok(signals) => signals,
            Err(e) => {
                error!(log, "cannot install signal handlers"; "error" => %e);
                return exit::WORKER_BOOT_FAILURE;
            }
        };
        tokio::task::spawn_local(signals);
        let mut tokio_listeners = Vec::with_capacity(listeners.len());
        for inherit::Inherited {
            addr,
            listener,
            shared,
        } in listeners
        {
            let protocols = config
                .listen
                .iter()
                .find(|l| l.addr == addr)
                .map(|l| Protocols {
                    proxy_protocol: l.proxy_protocol,
                    tls: l.tls,
                    http2: l.http2,
                })
                .unwrap_or_default();
            match Listener::new(listener, shared, protocols) {
                Ok(listener) => tokio_listeners.push(listener),
                Err(e) => {
                    error!(log, "cannot register listener"; "listen" => %addr, "error" => %e);
                    return exit::WORKER_BOOT_FAILURE;
                }
            }
        }
        #[cfg(debug_assertions)]
        test_hooks::install(&log);
        // A new configuration may change worker_timeout: the beats follow it.
        let (timeout_tx, timeout_rx) = watch::channel(config.worker_timeout);
        let snapshot = Snapshot::new(config, log.clone(), access, stop_rx, load);
        tokio::task::spawn_local(reload::apply_updates(
            snapshot.clone(),
            updates_rx,
            timeout_tx,
            args.slot,
            args.generation,
        ));
        let beats = to_master.clone();
        tokio::task::spawn_local(heartbeat::heartbeats(beats, timeout_rx));
        let newest = snapshot.newest();
        tokio::task::spawn_local(report::report_every(newest.clone(), to_master.clone()));
        let ready_log = log.clone();
        let ready_to = to_master.clone();
        // A task of its own: the LocalSet polls the future it runs until
        // done at every wake-up of any of its tasks (twice per request),
        // while a task is polled only when woken itself.
        let serving = serve::serve(snapshot, tokio_listeners, move || {
            info!(ready_log, "worker ready");
            if let Err(e) = ready_to.send(WorkerMsg::Ready) {
                error!(ready_log, "cannot tell the master we are ready"; "error" => %e);
            }
        });
        if let Err(e) = tokio::task::spawn_local(serving).await {
            // A panic still ends the worker, as it did in this future.
            if let Ok(panic) = e.try_into_panic() {
                std::panic::resume_unwind(panic);
            }
        }
        if let Some(last) = newest.get() {
            report::report(&last, &to_master);
        }
        if signalled.get() {
            exit::WORKER_STOPPED_BY_SIGNAL
        } else {
            exit::OK
        }
    });
    // Close every connection before the logs flush.
    drop(local);
    drop(runtime);
    drop(logs.guard);
    Ok(code)
}
