//! Taking over what the master passed across exec: the link secret, the
//! listening sockets and the load board.

use crate::state::load_share::LoadShare;
use prefork_shared::fds::{self, FIRST_LISTEN_FD, IMAGE_FD_ENV, LISTEN_FDS_ENV};
use prefork_shared::link_secret::{LinkSecret, LINK_SECRET_FD_ENV, LINK_SECRET_LEN};
use prefork_shared::load_board::{LoadBoard, BOARD_BYTES, LOAD_CELL_ENV};
use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Why the inherited listeners could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InheritError {
    /// The environment variable naming them is missing.
    #[error("{LISTEN_FDS_ENV} is not set")]
    Missing,
    /// The environment variable is malformed.
    #[error("{0}")]
    Malformed(#[source] fds::DecodeError),
    /// It names no listener at all.
    #[error("{LISTEN_FDS_ENV} names no listener")]
    Empty,
    /// A descriptor is not an open listening socket.
    #[error("fd {fd} ({addr}) is not a listening socket: {source}")]
    NotListening {
        /// The descriptor.
        fd: RawFd,
        /// The address the master said it holds.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A listening socket handed over by the master.
pub(crate) struct Inherited {
    /// The address the master bound it to.
    pub(crate) addr: SocketAddr,
    /// The socket.
    pub(crate) listener: TcpListener,
    /// Whether other workers accept on it too: not when it is this slot's own
    /// (`reuseport`), which the master marks with the slot.
    pub(crate) shared: bool,
}

/// Takes the listeners named by [`LISTEN_FDS_ENV`], ready for tokio:
/// close-on-exec (the worker's own children must not inherit them) and
/// non-blocking (tokio needs it; the flag is shared with the master's copy,
/// which never accepts).
pub(crate) fn take_listeners() -> Result<Vec<Inherited>, InheritError> {
    let value = std::env::var(LISTEN_FDS_ENV).map_err(|_| InheritError::Missing)?;
    let named = fds::decode(&value).map_err(InheritError::Malformed)?;
    if named.is_empty() {
        return Err(InheritError::Empty);
    }
    named
        .into_iter()
        .map(|(fd, addr, slot)| {
            let not_listening = |source| InheritError::NotListening { fd, addr, source };
            check_listening(fd).map_err(not_listening)?;
            // SAFETY: `check_listening` proved `fd` is an open listening
            // socket; the master handed it to this process, nothing else in
            // the worker refers to it, so the listener may own it.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            set_cloexec(fd).map_err(not_listening)?;
            listener.set_nonblocking(true).map_err(not_listening)?;
            Ok(Inherited {
                addr,
                listener,
                shared: slot.is_none(),
            })
        })
        .collect()
}

/// Fails unless `fd` is an open socket in the listening state.
fn check_listening(fd: RawFd) -> io::Result<()> {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt only writes an int into `listening` and its size
    // into `len`, both valid for writes; a bad fd yields an error, not UB.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if listening == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket is not listening",
        ));
    }
    Ok(())
}

/// Reads the secret the master handed this worker for its hello, from the
/// socket [`LINK_SECRET_FD_ENV`] names, and closes that socket.
pub(crate) fn take_link_secret() -> Result<LinkSecret, String> {
    let value = std::env::var(LINK_SECRET_FD_ENV)
        .map_err(|_| format!("{LINK_SECRET_FD_ENV} is not set"))?;
    let fd = value
        .parse::<RawFd>()
        .ok()
        .filter(|fd| *fd >= FIRST_LISTEN_FD)
        .ok_or_else(|| format!("{LINK_SECRET_FD_ENV}: invalid descriptor {value:?}"))?;
    read_link_secret(fd).map_err(|e| format!("link secret fd {fd}: {e}"))
}

/// Reads exactly [`LINK_SECRET_LEN`] bytes from the socket `fd` and closes
/// it. Anything but a socket is left open and refused: the master never
/// sends the secret on a pipe, which other processes of the worker's user
/// could open again through `/proc` and read.
fn read_link_secret(fd: RawFd) -> io::Result<LinkSecret> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into `stat` or fails without touching it.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so `stat` is initialised.
    if unsafe { stat.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    // SAFETY: a socket at the number the master named for the secret;
    // nothing else in this process refers to it, so the stream may own (and
    // close) it.
    let mut socket = unsafe { UnixStream::from_raw_fd(fd) };
    let mut bytes = [0; LINK_SECRET_LEN];
    socket.read_exact(&mut bytes)?;
    Ok(LinkSecret::from_bytes(bytes))
}

/// Closes the descriptor of the worker's own binary that the master left
/// open for exec ([`IMAGE_FD_ENV`]), after checking it is a regular file:
/// whatever else holds that number stays open.
pub(crate) fn close_image() {
    let Some(fd) = std::env::var(IMAGE_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|fd| *fd >= FIRST_LISTEN_FD)
    else {
        return;
    };
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into `stat` or fails without touching it.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: fstat succeeded, so `stat` is initialised.
    if unsafe { stat.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFREG {
        // SAFETY: a regular file at the number the master named: the image,
        // which nothing in this process uses.
        unsafe { libc::close(fd) };
    }
}

/// Takes the load board that follows the `listeners` inherited sockets,
/// with this worker's cell, when the master handed one over.
pub(crate) fn take_load_board(listeners: usize) -> Result<Option<LoadShare>, String> {
    let Ok(cell) = std::env::var(LOAD_CELL_ENV) else {
        return Ok(None);
    };
    let cell = cell
        .parse()
        .map_err(|_| format!("{LOAD_CELL_ENV}: invalid cell {cell:?}"))?;
    let fd = FIRST_LISTEN_FD + listeners as RawFd;
    let fd_error = |e: io::Error| format!("load board fd {fd}: {e}");
    // Looked at before it is taken: should it not be a board after all,
    // whatever holds that number must stay open.
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into `stat` or fails (EBADF for a
    // closed fd) without touching it.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return Err(fd_error(io::Error::last_os_error()));
    }
    // SAFETY: fstat succeeded, so `stat` is initialised.
    let len = unsafe { stat.assume_init() }.st_size;
    if u64::try_from(len) != Ok(BOARD_BYTES) {
        return Err(format!("fd {fd} is no load board ({len} bytes)"));
    }
    set_cloexec(fd).map_err(fd_error)?;
    // SAFETY: the master put the board right after the listeners and named
    // its cell; the fd is open and of a board's size, no file of the
    // worker's own is open yet, and nothing else refers to it.
    let file = unsafe { File::from_raw_fd(fd) };
    let board = LoadBoard::open(file).map_err(|e| format!("fd {fd}: {e}"))?;
    Ok(Some(LoadShare::new(board, cell)))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFD/F_SETFD reads and writes descriptor flags
    // only; `fd` is open (checked by the caller).
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn listening_check() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listening(listener.as_raw_fd()).is_ok());
        set_cloexec(listener.as_raw_fd()).unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(check_listening(socket.as_raw_fd()).is_err());
        assert!(check_listening(-1).is_err());
    }

    fn secret_bytes() -> [u8; LINK_SECRET_LEN] {
        std::array::from_fn(|i| 0x40 + i as u8)
    }

    /// The secret is read whole and its socket closed: the master's end
    /// (kept open here) then finds no reader.
    #[test]
    fn reads_the_secret_and_closes_its_socket() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        master.write_all(&secret_bytes()).unwrap();
        let secret = read_link_secret(worker.into_raw_fd()).unwrap();
        assert!(secret.matches(&LinkSecret::from_bytes(secret_bytes())));
        let e = master.write_all(b"more").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_short_secret_is_an_error() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        master.write_all(&secret_bytes()[..5]).unwrap();
        drop(master);
        let e = read_link_secret(worker.into_raw_fd()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A pipe at that number is refused and left open: whatever holds it is
    /// not the master's secret.
    #[test]
    fn a_pipe_is_refused_and_left_open() {
        let mut ends = [-1; 2];
        // SAFETY: pipe2 writes two new descriptors into `ends`.
        assert_eq!(
            unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: both are new descriptors this test alone owns.
        let (mut reader, mut writer) =
            unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) };
        writer.write_all(&secret_bytes()).unwrap();
        let e = read_link_secret(reader.as_raw_fd()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut still = [0; LINK_SECRET_LEN];
        reader.read_exact(&mut still).unwrap();
        assert_eq!(still, secret_bytes());
    }

    #[test]
    fn a_closed_descriptor_is_an_error() {
        assert!(read_link_secret(-1).is_err());
    }
}
