//! Binary upgrade (SIGUSR2), nginx-style but automatic.
//!
//! The old master starts the binary on disk as a new master with the
//! listening sockets at fds 3.. (as for workers, but every per-slot
//! `reuseport` socket with its slot, so the new master's slots accept on the
//! same sockets) and, right after them, the
//! write end of a pipe. [`HANDOFF_FD_ENV`] tells the new master which fd that
//! is, and [`OLD_MASTER_ENV`] whose pid file it takes over. The new master
//! starts its workers and, once all are Ready, writes the pid file and
//! [`READY`] into the pipe; the old master then drains its workers and exits.
//! If the pipe closes without it (the new master died) or the supervisor's
//! deadline passes, the old master carries on.

use crate::listeners::Handed;
use crate::os;
use crate::supervisor::{Pid, Slot};
use crossbeam_channel::Sender;
use prefork_shared::fds::{self, LISTEN_FDS_ENV};
use socket2::Socket;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Names the fd of the hand-off pipe in a new master's environment.
pub const HANDOFF_FD_ENV: &str = "PREFORK_UPGRADE_FD";
/// Names the old master's pid in a new master's environment.
pub const OLD_MASTER_ENV: &str = "PREFORK_UPGRADE_FROM";
/// Names the fd of the admin listener (`/metrics`) the new master takes
/// over, when the old one has one.
pub const ADMIN_FD_ENV: &str = "PREFORK_UPGRADE_ADMIN_FD";
/// What the new master writes when it serves.
const READY: &[u8] = b"ready\n";

/// What the old master learns from the hand-off pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new master.
    pub pid: Pid,
    /// Whether it said it serves (else the pipe closed without it).
    pub ready: bool,
}

/// Starts the new master and a thread that reports its [`Outcome`].
///
/// The admin listener, if any, is passed too (after the pipe): both masters
/// answer on it until the old one exits, so `/metrics` and `/healthz` never
/// refuse a connection during the upgrade.
pub fn start(
    exe: &Path,
    config: &Path,
    listeners: &[(SocketAddr, Option<Slot>, RawFd)],
    admin: Option<RawFd>,
    outcomes: Sender<Outcome>,
) -> io::Result<Pid> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let handoff_fd = fds::FIRST_LISTEN_FD + listeners.len() as RawFd;
    let mut env = vec![
        (HANDOFF_FD_ENV, handoff_fd.to_string()),
        (OLD_MASTER_ENV, std::process::id().to_string()),
    ];
    let mut extra = vec![write.as_raw_fd()];
    if let Some(fd) = admin {
        env.push((ADMIN_FD_ENV, (handoff_fd + 1).to_string()));
        extra.push(fd);
    }
    let pid = os::spawn_master(exe, config, listeners, &extra, &env)?;
    // Only the new master may hold the write end, or EOF never comes.
    drop(write);
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            let mut said = Vec::new();
            let _ = File::from(read).take(64).read_to_end(&mut said);
            let _ = outcomes.send(Outcome {
                pid,
                ready: said.starts_with(READY),
            });
        })?;
    Ok(pid)
}

/// What a new master inherits from the old one.
pub struct Inherited {
    /// The listening sockets, by address and (per-slot sockets) slot.
    pub listeners: Vec<Handed>,
    /// The old master's pid (the pid file names it until the hand-over).
    pub old_master: i32,
    /// The old master's admin listener, if it had one.
    pub admin: Option<TcpListener>,
    handoff: File,
}

impl Inherited {
    /// Tells the old master that this one serves: it drains and exits.
    pub fn announce(mut self) -> io::Result<()> {
        self.handoff.write_all(READY)
    }
}

/// Takes what the old master passed, if this master was started by a binary
/// upgrade. Clears the variables so that nothing started later sees them.
pub fn inherited() -> Result<Option<Inherited>, String> {
    let Some(handoff) = std::env::var_os(HANDOFF_FD_ENV) else {
        return Ok(None);
    };
    let bad = |what: &str| format!("binary upgrade: invalid {what}");
    let handoff: RawFd = handoff
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(HANDOFF_FD_ENV))?;
    let old_master: i32 = std::env::var(OLD_MASTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(OLD_MASTER_ENV))?;
    let named = fds::decode(&std::env::var(LISTEN_FDS_ENV).unwrap_or_default())?;
    let admin_fd = match std::env::var_os(ADMIN_FD_ENV) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .and_then(|v| v.parse::<RawFd>().ok())
                .ok_or_else(|| bad(ADMIN_FD_ENV))?,
        ),
    };
    // Set before any thread exists (the first thing the master does).
    std::env::remove_var(HANDOFF_FD_ENV);
    std::env::remove_var(OLD_MASTER_ENV);
    std::env::remove_var(LISTEN_FDS_ENV);
    std::env::remove_var(ADMIN_FD_ENV);
    let admin = match admin_fd {
        None => None,
        Some(fd) => {
            // SAFETY: the old master placed its admin listener at this fd
            // for this process, and nothing else here refers to it.
            let socket = unsafe { Socket::from(OwnedFd::from_raw_fd(fd)) };
            socket
                .set_cloexec(true)
                .map_err(|e| format!("binary upgrade: admin fd {fd}: {e}"))?;
            Some(TcpListener::from(socket))
        }
    };
    let listeners = named
        .into_iter()
        .map(|(fd, addr, slot)| {
            // SAFETY: the old master placed a listening socket at this fd for
            // this process, and nothing else here refers to it.
            let socket = unsafe { Socket::from(OwnedFd::from_raw_fd(fd)) };
            socket
                .set_cloexec(true)
                .map_err(|e| format!("binary upgrade: fd {fd} ({addr}): {e}"))?;
            Ok((addr, slot.map(Slot), socket))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // SAFETY: the old master placed the pipe's write end at this fd.
    let handoff = unsafe { File::from_raw_fd(handoff) };
    if let Err(e) = nix::fcntl::fcntl(
        &handoff,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        return Err(format!("binary upgrade: hand-off fd: {e}"));
    }
    Ok(Some(Inherited {
        listeners,
        old_master,
        admin,
        handoff,
    }))
}
