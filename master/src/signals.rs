//! Signals to the master: one table from signal to meaning, and a thread that
//! turns them into channel messages.
//!
//! The signals are blocked on every thread (the mask is set on the main thread
//! before any other thread starts, and threads inherit it) and taken with
//! `sigwait` by one dedicated thread, so no code runs in a signal handler.

use crossbeam_channel::Sender;
use nix::sys::signal::{SigSet, Signal};

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGQUIT: graceful stop.
    GracefulStop,
    /// SIGINT: fast stop.
    FastStop,
    /// SIGTERM: a fast stop, or a graceful one with `sigterm = "graceful"`.
    Terminate,
    /// SIGCHLD: a child changed state; reap.
    ReapChildren,
    /// SIGTTIN: one more worker.
    AddWorker,
    /// SIGTTOU: one worker less.
    RemoveWorker,
    /// SIGUSR1: reopen the log files.
    ReopenLogs,
    /// SIGUSR2: binary upgrade.
    Upgrade,
    /// A signal prefork takes but does not act on yet (logged, never fatal).
    Unsupported(Signal),
}

/// Every signal the master takes through [`Request`]s.
const TAKEN: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// The meaning of a signal to the master.
pub fn request_for(signal: Signal) -> Request {
    match signal {
        Signal::SIGHUP => Request::Reload,
        Signal::SIGQUIT => Request::GracefulStop,
        Signal::SIGINT => Request::FastStop,
        Signal::SIGTERM => Request::Terminate,
        Signal::SIGCHLD => Request::ReapChildren,
        Signal::SIGTTIN => Request::AddWorker,
        Signal::SIGTTOU => Request::RemoveWorker,
        Signal::SIGUSR1 => Request::ReopenLogs,
        Signal::SIGUSR2 => Request::Upgrade,
        other => Request::Unsupported(other),
    }
}

/// The set of signals the master takes.
pub fn taken() -> SigSet {
    let mut set = SigSet::empty();
    for s in TAKEN {
        set.add(s);
    }
    set
}

/// Blocks the master's signals on the calling thread. Call it on the main
/// thread before any other thread exists, so that every thread inherits it.
pub fn block() -> nix::Result<()> {
    taken().thread_block()
}

/// Starts the thread that waits for signals and forwards their meaning.
pub fn forward(to: Sender<Request>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = taken();
            loop {
                match set.wait() {
                    Ok(signal) => {
                        if to.send(request_for(signal)).is_err() {
                            return;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        assert_eq!(request_for(Signal::SIGHUP), Request::Reload);
        assert_eq!(request_for(Signal::SIGQUIT), Request::GracefulStop);
        assert_eq!(request_for(Signal::SIGTERM), Request::Terminate);
        assert_eq!(request_for(Signal::SIGINT), Request::FastStop);
        assert_eq!(request_for(Signal::SIGINT), Request::FastStop);
        assert_eq!(request_for(Signal::SIGCHLD), Request::ReapChildren);
        assert_eq!(request_for(Signal::SIGUSR1), Request::ReopenLogs);
        assert_eq!(request_for(Signal::SIGUSR2), Request::Upgrade);
        assert_eq!(request_for(Signal::SIGTTIN), Request::AddWorker);
        assert_eq!(request_for(Signal::SIGTTOU), Request::RemoveWorker);
        assert_eq!(
            request_for(Signal::SIGWINCH),
            Request::Unsupported(Signal::SIGWINCH)
        );
        for s in TAKEN {
            assert!(taken().contains(s));
        }
    }
}
