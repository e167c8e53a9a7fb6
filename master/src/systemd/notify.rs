//! The edge of sd_notify: the datagram socket systemd named in
//! `NOTIFY_SOCKET` (a path, or an abstract name written `@name`), one
//! datagram per message, and the watchdog interval `WATCHDOG_USEC` asks for.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where systemd listens for this master's notifications.
pub struct NotifySocket {
    /// As `NOTIFY_SOCKET` named it (passed on to a new master).
    pub name: String,
    addr: SocketAddr,
    socket: UnixDatagram,
}

impl NotifySocket {
    /// The socket `NOTIFY_SOCKET` names.
    pub fn new(name: &str) -> io::Result<Self> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "neither a path nor an abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(NotifySocket {
            name: name.to_owned(),
            addr,
            socket,
        })
    }

    /// Sends one message (`KEY=value` lines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is set
/// and `WATCHDOG_PID` is absent or `our_pid`.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(our_pid)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// `CLOCK_MONOTONIC` now, in microseconds (what `MONOTONIC_USEC=` carries).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_when_no_other_pid_is_named() {
        let half = Some(Duration::from_secs(1));
        assert_eq!(watchdog_interval(Some("2000000"), None, 5), half);
        assert_eq!(watchdog_interval(Some("2000000"), Some("5"), 5), half);
        assert_eq!(watchdog_interval(Some("2000000"), Some("6"), 5), None);
        assert_eq!(watchdog_interval(Some("2000000"), Some("x"), 5), None);
        assert_eq!(watchdog_interval(Some("0"), None, 5), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 5), None);
        assert_eq!(watchdog_interval(None, Some("5"), 5), None);
    }

    #[test]
    fn messages_reach_a_path_and_an_abstract_name_one_datagram_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let at_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("prefork-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let at_name = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let mut buf = [0u8; 64];
        for (socket, named) in [
            (&at_path, path.display().to_string()),
            (&at_name, format!("@{name}")),
        ] {
            let notify = NotifySocket::new(&named).unwrap();
            notify.send("READY=1\nSTATUS=a").unwrap();
            notify.send("WATCHDOG=1").unwrap();
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1\nSTATUS=a");
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"WATCHDOG=1");
        }
        assert!(NotifySocket::new("vsock:2:9").is_err());
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        assert!(a > 0 && monotonic_usec() >= a);
    }
}
