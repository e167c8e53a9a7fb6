//! Binary upgrade (SIGUSR2), nginx-style but automatic.
//!
//! The old master starts the binary on disk as a new master with the
//! listening sockets at fds 3.. (as for workers, but every per-slot
//! `reuseport` socket with its slot, so the new master's slots accept on the
//! same sockets) and, right after them, its end of a socket pair, the
//! hand-off link. [`HANDOFF_FD_ENV`] tells the new master which fd that
//! is, and [`OLD_MASTER_ENV`] whose pid file it takes over. The session-ticket
//! keys come on a socket of their own ([`TICKET_KEYS_FD_ENV`]), written and
//! closed before the new master starts, so that no secret is in its
//! command line or environment: tickets issued by the old master's workers
//! resume on the new master's. The new master
//! starts its workers and, once all are Ready, writes [`READY`] on the link.
//! The old master answers [`GO`] and then drains its workers and exits; only
//! on that answer does the new master take over the pid file and the control
//! socket. The old master alone decides, so a stop or the supervisor's
//! deadline arriving at the same moment either comes first (the new master
//! is killed before it touched anything) or finds the hand-over done. If the
//! link closes without [`READY`] (the new master died) or the deadline
//! passes, the old master carries on.

use crate::listeners::Handed;
use crate::os;
use crate::supervisor::{Pid, Slot};
use crossbeam_channel::{Receiver, Sender};
use prefork_shared::fds::{self, LISTEN_FDS_ENV};
use socket2::Socket;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Names the fd of the hand-off link in a new master's environment.
pub const HANDOFF_FD_ENV: &str = "PREFORK_UPGRADE_FD";
/// Names the old master's pid in a new master's environment.
pub const OLD_MASTER_ENV: &str = "PREFORK_UPGRADE_FROM";
/// Names the fd of the admin listener (`/metrics`) the new master takes
/// over, when the old one has one.
pub const ADMIN_FD_ENV: &str = "PREFORK_UPGRADE_ADMIN_FD";
/// Names the fd the new master reads the session-ticket keys from (to its
/// end, then closes it).
pub const TICKET_KEYS_FD_ENV: &str = "PREFORK_UPGRADE_TICKET_KEYS_FD";
/// The most a new master reads as session-ticket keys.
const MAX_TICKET_KEYS: u64 = 4096;
/// What the new master writes when it serves.
const READY: &[u8] = b"ready\n";
/// What the old master answers when it hands over.
const GO: &[u8] = b"go\n";
/// Longest line either master reads from the link.
const MAX_LINE: usize = 64;
/// How long an old master that handed over waits, before it exits, for the
/// new master to have taken over.
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the old master learns from the hand-off link.
#[derive(Debug)]
pub struct Outcome {
    /// The new master.
    pub pid: Pid,
    /// The link, if the new master said it serves (else the link closed
    /// without it): [`hand_over`] answers on it.
    pub ready: Option<UnixStream>,
}

/// The old master's answer to [`READY`], as the new master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It handed over: it drains and exits.
    HandedOver,
    /// The link closed without an answer: the old master is gone.
    Gone,
}

/// Starts the new master and a thread that reports its [`Outcome`].
///
/// The admin listener, if any, is passed too (after the link): both masters
/// answer on it until the old one exits, so `/metrics` and `/healthz` never
/// refuse a connection during the upgrade. So are the session-ticket keys
/// (`ticket_keys`, see `TicketKeys::encode`).
pub fn start(
    exe: &Path,
    config: &Path,
    listeners: &[(SocketAddr, Option<Slot>, RawFd)],
    admin: Option<RawFd>,
    ticket_keys: &[u8],
    outcomes: Sender<Outcome>,
) -> io::Result<Pid> {
    let (ours, theirs) = UnixStream::pair()?;
    let keys = ticket_keys_link(ticket_keys)?;
    let handoff_fd = fds::FIRST_LISTEN_FD + listeners.len() as RawFd;
    let mut env = vec![
        (HANDOFF_FD_ENV, handoff_fd.to_string()),
        (OLD_MASTER_ENV, std::process::id().to_string()),
    ];
    let mut extra = vec![theirs.as_raw_fd()];
    if let Some(fd) = admin {
        env.push((ADMIN_FD_ENV, (handoff_fd + 1).to_string()));
        extra.push(fd);
    }
    env.push((
        TICKET_KEYS_FD_ENV,
        (handoff_fd + extra.len() as RawFd).to_string(),
    ));
    extra.push(keys.as_raw_fd());
    let pid = os::spawn_master(exe, config, listeners, &extra, &env)?;
    // Only the new master may hold its end, or EOF never comes.
    drop(theirs);
    drop(keys);
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            let ready = read_line(&ours).starts_with(READY);
            let _ = outcomes.send(Outcome {
                pid,
                ready: ready.then_some(ours),
            });
        })?;
    Ok(pid)
}

/// A socket holding `bytes` and then EOF: the other end is written and
/// closed at once (the keys are far smaller than a socket's buffer).
fn ticket_keys_link(bytes: &[u8]) -> io::Result<UnixStream> {
    let (mut writer, reader) = UnixStream::pair()?;
    writer.write_all(bytes)?;
    Ok(reader)
}

/// Reads the session-ticket keys to EOF (at most [`MAX_TICKET_KEYS`]).
fn read_ticket_keys(link: UnixStream) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    link.take(MAX_TICKET_KEYS).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Tells a new master that said [`READY`] to take over: from now on this
/// master only drains. Fails if the new master withdrew (it is stopping) or
/// died meanwhile.
pub fn hand_over(link: &mut UnixStream) -> io::Result<()> {
    link.write_all(GO)
}

/// Waits on a thread (at most [`TAKE_OVER_TIMEOUT`]) until a new master
/// told to take over closes the link, which it does once it holds the pid
/// file and the control socket: an old master exiting before that would
/// leave a moment when no master answers on the control socket. The
/// returned channel disconnects when the wait is over; the master loop
/// keeps answering (questions, signals) until then.
pub fn watch_taken_over(link: UnixStream) -> Receiver<()> {
    let (done, over) = crossbeam_channel::bounded(0);
    let link = Arc::new(link);
    let waiting = Arc::clone(&link);
    let watching = std::thread::Builder::new()
        .name("take-over".into())
        .spawn(move || {
            wait_taken_over(&waiting);
            drop(done);
        });
    if watching.is_err() {
        // No thread: wait here, as the only way left to keep the promise.
        wait_taken_over(&link);
    }
    over
}

fn wait_taken_over(mut link: &UnixStream) {
    if link.set_read_timeout(Some(TAKE_OVER_TIMEOUT)).is_ok() {
        let _ = link.read_to_end(&mut Vec::new());
    }
}

/// Reads up to the end of the first line, or to EOF.
fn read_line(mut link: &UnixStream) -> Vec<u8> {
    let mut said = Vec::new();
    let mut buf = [0u8; MAX_LINE];
    while said.len() < MAX_LINE && !said.contains(&b'\n') {
        match link.read(&mut buf[..MAX_LINE - said.len()]) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    said
}

/// What a new master inherits from the old one.
pub struct Inherited {
    /// The listening sockets, by address and (per-slot sockets) slot.
    pub listeners: Vec<Handed>,
    /// The old master's pid (the pid file names it until the hand-over).
    pub old_master: i32,
    /// The old master's admin listener, if it had one.
    pub admin: Option<TcpListener>,
    /// The old master's session-ticket keys (see `TicketKeys::decode`), if
    /// it passed them (an older binary does not).
    pub ticket_keys: Option<Vec<u8>>,
    handoff: UnixStream,
}

impl Inherited {
    /// Tells the old master that this one serves, and waits on a thread for
    /// its [`Answer`]: this master takes over the pid file and the control
    /// socket only then, as the old one may be giving up on it right now.
    /// Returns the link; shutting it down withdraws the offer (the old
    /// master then carries on).
    pub fn announce(self, answers: Sender<Answer>) -> io::Result<UnixStream> {
        let mut link = self.handoff;
        link.write_all(READY)?;
        let reader = link.try_clone()?;
        std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || {
                let answer = if read_line(&reader).starts_with(GO) {
                    Answer::HandedOver
                } else {
                    Answer::Gone
                };
                let _ = answers.send(answer);
            })?;
        Ok(link)
    }
}

/// Why a master started by a binary upgrade cannot take what the old master
/// passed.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// An environment variable of the hand-off is missing or malformed.
    #[error("binary upgrade: invalid {0}")]
    Variable(&'static str),
    /// The listening sockets named in `LISTEN_FDS` are malformed.
    #[error("{0}")]
    Listeners(#[from] fds::DecodeError),
    /// The admin listener's descriptor cannot be made close-on-exec.
    #[error("binary upgrade: admin fd {fd}: {source}")]
    AdminFd {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        source: std::io::Error,
    },
    /// A listening socket's descriptor cannot be made close-on-exec.
    #[error("binary upgrade: fd {fd} ({addr}): {source}")]
    ListenerFd {
        /// The descriptor.
        fd: RawFd,
        /// The address it listens on.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The hand-off link's descriptor cannot be made close-on-exec.
    #[error("binary upgrade: hand-off fd: {0}")]
    HandoffFd(#[source] nix::Error),
    /// The session-ticket keys cannot be read.
    #[error("binary upgrade: session-ticket keys: {0}")]
    TicketKeys(#[source] std::io::Error),
}

/// Takes what the old master passed, if this master was started by a binary
/// upgrade. Clears the variables so that nothing started later sees them.
pub fn inherited() -> Result<Option<Inherited>, InheritError> {
    let Some(handoff) = std::env::var_os(HANDOFF_FD_ENV) else {
        return Ok(None);
    };
    let handoff: RawFd = handoff
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or(InheritError::Variable(HANDOFF_FD_ENV))?;
    let old_master: i32 = std::env::var(OLD_MASTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(InheritError::Variable(OLD_MASTER_ENV))?;
    let named = fds::decode(&std::env::var(LISTEN_FDS_ENV).unwrap_or_default())?;
    let admin_fd = match std::env::var_os(ADMIN_FD_ENV) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .and_then(|v| v.parse::<RawFd>().ok())
                .ok_or(InheritError::Variable(ADMIN_FD_ENV))?,
        ),
    };
    let keys_fd = match std::env::var_os(TICKET_KEYS_FD_ENV) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .and_then(|v| v.parse::<RawFd>().ok())
                .ok_or(InheritError::Variable(TICKET_KEYS_FD_ENV))?,
        ),
    };
    // Set before any thread exists (the first thing the master does).
    std::env::remove_var(HANDOFF_FD_ENV);
    std::env::remove_var(OLD_MASTER_ENV);
    std::env::remove_var(LISTEN_FDS_ENV);
    std::env::remove_var(ADMIN_FD_ENV);
    std::env::remove_var(TICKET_KEYS_FD_ENV);
    let ticket_keys = match keys_fd {
        None => None,
        // SAFETY: the old master placed the keys' socket at this fd for
        // this process, and nothing else here refers to it; reading closes
        // it.
        Some(fd) => Some(
            read_ticket_keys(unsafe { UnixStream::from_raw_fd(fd) })
                .map_err(InheritError::TicketKeys)?,
        ),
    };
    let admin = match admin_fd {
        None => None,
        Some(fd) => {
            // SAFETY: the old master placed its admin listener at this fd
            // for this process, and nothing else here refers to it.
            let socket = unsafe { Socket::from(OwnedFd::from_raw_fd(fd)) };
            socket
                .set_cloexec(true)
                .map_err(|source| InheritError::AdminFd { fd, source })?;
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
                .map_err(|source| InheritError::ListenerFd { fd, addr, source })?;
            Ok((addr, slot.map(Slot), socket))
        })
        .collect::<Result<Vec<_>, InheritError>>()?;
    // SAFETY: the old master placed its hand-off link's other end at this fd.
    let handoff = unsafe { UnixStream::from_raw_fd(handoff) };
    if let Err(e) = nix::fcntl::fcntl(
        &handoff,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        return Err(InheritError::HandoffFd(e));
    }
    Ok(Some(Inherited {
        listeners,
        old_master,
        admin,
        ticket_keys,
        handoff,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The system call's error stays in the chain, under the message.
    #[test]
    fn the_hand_off_fds_error_is_its_source() {
        let e = InheritError::HandoffFd(nix::Error::EBADF);
        assert_eq!(
            e.to_string(),
            format!("binary upgrade: hand-off fd: {}", nix::Error::EBADF)
        );
        let source = e.source().and_then(|s| s.downcast_ref::<nix::Error>());
        assert_eq!(source, Some(&nix::Error::EBADF));
    }

    #[test]
    fn the_ticket_keys_reach_the_other_end_whole_and_then_eof() {
        let keys: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let link = ticket_keys_link(&keys).unwrap();
        assert_eq!(read_ticket_keys(link).unwrap(), keys);
    }

    #[test]
    fn a_new_master_reads_no_more_than_the_keys_can_take() {
        let huge = vec![7u8; 10_000];
        let link = ticket_keys_link(&huge).unwrap();
        assert_eq!(read_ticket_keys(link).unwrap().len(), 4096);
    }

    /// A malformed `LISTEN_FDS` reads as `fds::decode` words it, and its
    /// error is the source.
    #[test]
    fn a_malformed_listener_list_is_worded_by_its_decoder() {
        let decoded = fds::decode("nonsense").unwrap_err();
        let e = InheritError::from(decoded.clone());
        assert_eq!(e.to_string(), decoded.to_string());
        let source = e
            .source()
            .and_then(|s| s.downcast_ref::<fds::DecodeError>());
        assert_eq!(source, Some(&decoded));
    }
}
