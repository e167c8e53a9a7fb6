//! An epoll instance of the worker's own, beside tokio's: sockets that wait
//! long (parked idle connections) are watched there, so that they hold no
//! registration in tokio's event loop, only the kernel's.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance; it reports each socket added once, when it becomes
/// readable or its peer closes, until the socket is added again.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

/// What one wait found: the token a socket was added with.
pub(crate) type Token = u64;

impl Epoll {
    /// A new, empty instance (close-on-exec).
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointer; a non-negative result is a
        // new descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by no one else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `socket` until it is readable or closed, reported with
    /// `token` once (level-triggered, so bytes that came before count).
    pub(crate) fn add(&self, socket: RawFd, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call's duration.
        let rc = unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, socket, &mut event)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `socket` (before it goes back to tokio's event loop;
    /// closing it removes it as well).
    pub(crate) fn remove(&self, socket: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed
        // since Linux 2.6.9).
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tokens of the sockets ready now, without waiting: appended to
    /// `out`, at most `max` of them.
    pub(crate) fn ready(&self, out: &mut Vec<Token>, max: usize) -> io::Result<usize> {
        let mut events: Vec<libc::epoll_event> = Vec::with_capacity(max);
        // SAFETY: the kernel writes at most `max` events into the vector's
        // spare capacity and returns how many.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max.min(i32::MAX as usize) as i32,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_wait initialised the first n events.
        unsafe { events.set_len(n as usize) };
        out.extend(events.iter().map(|e| e.u64));
        Ok(n as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn reports_a_socket_once_when_readable_or_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.add(b.as_raw_fd(), 7).unwrap();
        let mut out = Vec::new();
        assert_eq!(epoll.ready(&mut out, 16).unwrap(), 0, "nothing to read yet");
        a.write_all(b"x").unwrap();
        // Loopback delivers before write returns.
        assert_eq!(epoll.ready(&mut out, 16).unwrap(), 1);
        assert_eq!(out, [7]);
        // Reported once until added again.
        assert_eq!(epoll.ready(&mut out, 16).unwrap(), 0);
        epoll.remove(b.as_raw_fd()).unwrap();
        // Bytes that came before it was added count.
        epoll.add(b.as_raw_fd(), 8).unwrap();
        out.clear();
        assert_eq!(epoll.ready(&mut out, 16).unwrap(), 1);
        assert_eq!(out, [8]);
        epoll.remove(b.as_raw_fd()).unwrap();

        let (c, _) = (
            TcpStream::connect(listener.local_addr().unwrap()).unwrap(),
            (),
        );
        let (d, _) = listener.accept().unwrap();
        epoll.add(d.as_raw_fd(), 9).unwrap();
        drop(c);
        out.clear();
        assert_eq!(epoll.ready(&mut out, 16).unwrap(), 1, "a close is reported");
        assert_eq!(out, [9]);
    }
}
