//! The master's system calls: starting worker processes, reaping them,
//! signalling them, and looking up the user they run as.

use crate::supervisor::{ExitStatus, Generation, Pid, Slot};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Uid, User};
use prefork_shared::fds::{self, FIRST_LISTEN_FD, IMAGE_FD_ENV, LISTEN_FDS_ENV};
use prefork_shared::link_secret::{LinkSecret, LINK_SECRET_FD_ENV};
use prefork_shared::load_board::LOAD_CELL_ENV;
use slog::{debug, Logger};
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unprivileged identity workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (for messages).
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
}

/// Looks up `name` in the user database.
pub fn lookup_user(name: &str) -> io::Result<Credentials> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Credentials {
            name: name.to_owned(),
            uid: u.uid,
            gid: u.gid,
        }),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("user {name:?} does not exist"),
        )),
        Err(e) => Err(io::Error::other(format!("getpwnam({name:?}): {e}"))),
    }
}

/// Lets `creds` connect to the one-shot IPC socket at `ipc_name`: ipc-channel
/// creates it in a fresh directory owned by the master, and a worker that
/// starts unprivileged needs to own both to connect.
pub fn give_ipc_socket_to(ipc_name: &str, creds: &Credentials) -> io::Result<()> {
    let socket = Path::new(ipc_name);
    let paths = [socket.parent().unwrap_or(socket), socket];
    for path in paths {
        nix::unistd::chown(path, Some(creds.uid), Some(creds.gid))
            .map_err(|e| io::Error::other(format!("chown({}): {e}", path.display())))?;
    }
    Ok(())
}

/// How to start one worker process.
pub struct WorkerCommand<'a> {
    /// The image the master runs: the worker runs the same.
    pub image: &'a OwnImage,
    /// The slot it fills.
    pub slot: Slot,
    /// Its generation.
    pub generation: Generation,
    /// Name of the one-shot IPC server it connects to.
    pub ipc_name: &'a str,
    /// The socket holding the secret it proves itself with on that server
    /// (see [`secret_socket`]); never on its command line or in its
    /// environment, which other users can read.
    pub secret: RawFd,
    /// Listening sockets it inherits, in order, from fd 3; a per-slot
    /// (`reuseport`) socket with its slot.
    pub listeners: &'a [(SocketAddr, Option<Slot>, RawFd)],
    /// The load board and the worker's cell on it, if any.
    pub load: Option<(RawFd, usize)>,
    /// Identity to drop to before exec, when the master runs as root.
    pub credentials: Option<&'a Credentials>,
}

/// Starts a worker: fork, then exec of the prefork binary in the worker
/// role, with the listeners at fds 3.., then the load board, the image and
/// the link secret's socket, and nothing else inherited.
pub fn spawn_worker(cmd: &WorkerCommand<'_>) -> io::Result<Pid> {
    let addrs: Vec<(SocketAddr, Option<u32>)> = cmd
        .listeners
        .iter()
        .map(|(a, slot, _)| (*a, slot.map(|s| s.0)))
        .collect();
    let mut sources: Vec<RawFd> = cmd.listeners.iter().map(|(_, _, fd)| *fd).collect();
    // The board follows the listeners (see prefork_shared::load_board).
    sources.extend(cmd.load.map(|(fd, _)| fd));
    // Then the image, at a number known before fork, so that exec can name
    // it; the worker closes it as it starts (see IMAGE_FD_ENV).
    let image_fd = FIRST_LISTEN_FD + sources.len() as RawFd;
    sources.push(cmd.image.file.as_raw_fd());
    // The secret's socket last; the worker reads it and closes it first
    // thing (see LINK_SECRET_FD_ENV).
    let secret_fd = image_fd + 1;
    sources.push(cmd.secret);
    // Allocated before fork: nothing may allocate between fork and exec.
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let master = nix::unistd::getpid();
    let mut command = Command::new(format!("/proc/self/fd/{image_fd}"));
    command
        .arg0(&cmd.image.path)
        .arg("worker")
        .args(["--slot", &cmd.slot.0.to_string()])
        .args(["--generation", &cmd.generation.0.to_string()])
        .args(["--ipc", cmd.ipc_name])
        .env(LISTEN_FDS_ENV, fds::encode(&addrs))
        .env(IMAGE_FD_ENV, image_fd.to_string())
        .env(LINK_SECRET_FD_ENV, secret_fd.to_string())
        .stdin(Stdio::null());
    // Never inherited from the master's own environment: the worker trusts
    // it to name a descriptor.
    match cmd.load {
        Some((_, cell)) => command.env(LOAD_CELL_ENV, cell.to_string()),
        None => command.env_remove(LOAD_CELL_ENV),
    };
    if let Some(c) = cmd.credentials {
        command.uid(c.uid.as_raw()).gid(c.gid.as_raw());
    }
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls on memory allocated before fork.
    unsafe {
        command.pre_exec(move || {
            // The master blocks its signals for sigwait; the worker must not
            // inherit that mask or signals sent to it would stay pending.
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            place_listeners(&sources, &mut scratch)?;
            // Die with the master. Set after the uid change, which clears it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before the line above took effect.
            if libc::getppid() != master.as_raw() {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(child.id())
}

/// A socket that holds `secret` for one worker to read, then reports end of
/// file: the master's end is written and closed at once, before fork, and
/// the caller closes this one right after spawning. A socket rather than a
/// pipe: another process of the workers' user may open the worker's pipes
/// again through `/proc/PID/fd/N` and read the secret first, but not its
/// sockets (`ENXIO`).
pub fn secret_socket(secret: &LinkSecret) -> io::Result<OwnedFd> {
    let (mut ours, theirs) = UnixStream::pair()?;
    ours.write_all(secret.bytes())?;
    Ok(theirs.into())
}

/// Starts a new master from `exe` (binary upgrade): same arguments style as
/// a user would run, the listeners at fds 3.. (named by [`LISTEN_FDS_ENV`],
/// with the slot of each per-slot socket) followed by the `extra` fds in
/// order (the hand-off link, then the admin listener if any), and `env`
/// added. Unlike a worker it gets no
/// parent-death signal: it must outlive this master.
pub fn spawn_master(
    exe: &Path,
    config: &Path,
    listeners: &[(SocketAddr, Option<Slot>, RawFd)],
    extra: &[RawFd],
    env: &[(&str, String)],
) -> io::Result<Pid> {
    let addrs: Vec<(SocketAddr, Option<u32>)> = listeners
        .iter()
        .map(|(a, slot, _)| (*a, slot.map(|s| s.0)))
        .collect();
    let mut sources: Vec<RawFd> = listeners.iter().map(|(_, _, fd)| *fd).collect();
    sources.extend_from_slice(extra);
    // Allocated before fork: nothing may allocate between fork and exec.
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let mut command = Command::new(exe);
    command
        .arg("-c")
        .arg(config)
        .env(LISTEN_FDS_ENV, fds::encode(&addrs))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls on memory allocated before fork.
    unsafe {
        command.pre_exec(move || {
            // The new master blocks its own signals; it must not start with
            // this master's mask.
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            place_listeners(&sources, &mut scratch)
        });
    }
    let child = command.spawn()?;
    Ok(child.id())
}

/// Moves the `sources` (listeners, then any other fd handed on) to fds 3..
/// in order, clearing close-on-exec on them, and marks every other inherited
/// fd close-on-exec. Runs between fork and exec.
fn place_listeners(sources: &[RawFd], scratch: &mut [RawFd]) -> io::Result<()> {
    let first_free = FIRST_LISTEN_FD + sources.len() as RawFd;
    // First copy every source above the target range, so that moving one
    // listener into place can never overwrite another that sits there.
    for (tmp, &src) in scratch.iter_mut().zip(sources) {
        // SAFETY: fcntl on an fd we own; no memory is touched.
        *tmp = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, first_free) };
        if *tmp < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (i, &tmp) in scratch.iter().enumerate() {
        // SAFETY: dup2 between fds we own; the copy has close-on-exec clear.
        if unsafe { libc::dup2(tmp, FIRST_LISTEN_FD + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Marking (not closing) keeps std's exec-error pipe working.
    // SAFETY: close_range only changes flags of this process's fds.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if marked != 0 {
        // Kernels before 5.11: mark the usual range one by one.
        for fd in first_free..4096 {
            // SAFETY: F_SETFD on a closed fd just fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Reaps every child that has exited, without blocking.
pub fn reap_children() -> Vec<(Pid, ExitStatus)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                exited.push((pid.as_raw() as Pid, ExitStatus::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                exited.push((pid.as_raw() as Pid, ExitStatus::Signal(signal as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return exited,
            Ok(_) => continue,
        }
    }
}

/// Sends `signal` to a worker.
pub fn signal_worker(pid: Pid, signal: Signal) -> nix::Result<()> {
    kill(nix::unistd::Pid::from_raw(pid as i32), signal)
}

/// Sends `signal` to a worker (or to the new master of a binary upgrade);
/// one that is gone already is no error worth more than a debug line.
pub fn signal_process(log: &Logger, pid: Pid, signal: Signal) {
    if let Err(e) = signal_worker(pid, signal) {
        debug!(log, "kill failed"; "worker_pid" => pid, "signal" => signal.as_str(), "error" => %e);
    }
}

/// Whether the master runs as root (and so must drop privileges for workers).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The binary this master runs: its path, which a binary upgrade execs
/// (whatever is there by then), and a descriptor of its image, which
/// workers are started from, so that a file replaced on disk (a package
/// update, an upgrade's first step) starts no worker until an upgrade asks
/// for it.
pub struct OwnImage {
    /// Where it was started from.
    pub path: PathBuf,
    /// The running image, open for exec.
    file: File,
}

impl OwnImage {
    /// Opens the running image; at start, before anything can replace it.
    pub fn open() -> io::Result<OwnImage> {
        let path = std::env::current_exe()?;
        let file = File::open("/proc/self/exe")?;
        Ok(OwnImage { path, file })
    }

    /// The file at `path` taken for the image (tests: a file that is not a
    /// program makes every spawn fail at once).
    #[cfg(test)]
    pub fn of_file(path: &Path) -> io::Result<OwnImage> {
        let file = File::open(path)?;
        Ok(OwnImage {
            path: path.to_owned(),
            file,
        })
    }
}

/// Fills `buf` from the kernel's random number generator (`getrandom(2)`).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, writable memory.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::link_secret::LINK_SECRET_LEN;
    use std::io::Read;

    /// The worker reads the secret and then end of file: the master kept no
    /// end it could write more on. The socket is close-on-exec: only
    /// `spawn_worker` places it in the one child it is for.
    #[test]
    fn a_secret_socket_holds_the_secret_alone() {
        let secret = LinkSecret::from_bytes(std::array::from_fn(|i| i as u8 + 1));
        let fd = secret_socket(&secret).unwrap();
        // SAFETY: F_GETFD on an fd this test owns only reads its flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut read = Vec::new();
        UnixStream::from(fd).read_to_end(&mut read).unwrap();
        assert_eq!(read, secret.bytes());
        assert_eq!(read.len(), LINK_SECRET_LEN);
    }
}
