//! Socket activation: the listening sockets systemd passes at fds 3..
//! (`LISTEN_FDS`, for the pid in `LISTEN_PID`, named by the optional
//! `LISTEN_FDNAMES`), matched to the `[[listen]]` entries by the address
//! each is bound to.

use prefork_shared::config::Listen;
use prefork_shared::fds::FIRST_LISTEN_FD;
use socket2::{Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Why the sockets systemd passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number.
    #[error("socket activation: invalid {0} {1:?}")]
    Variable(&'static str, String),
    /// A passed descriptor cannot be inspected.
    #[error("socket activation: {0}: {1}")]
    Descriptor(String, #[source] io::Error),
    /// A passed descriptor is not a TCP stream socket.
    #[error("socket activation: {0} is not a TCP stream socket")]
    NotTcp(String),
    /// A passed socket is bound to an address no `[[listen]]` entry has.
    #[error("socket activation: the socket passed for {addr} ({fd}) matches no [[listen]] entry")]
    Unmatched {
        /// Its address.
        addr: SocketAddr,
        /// The descriptor, and its name if systemd gave one.
        fd: String,
    },
    /// Two passed sockets are bound to the same address.
    #[error("socket activation: two sockets passed for {0}")]
    Twice(SocketAddr),
}

/// A descriptor systemd passed, and its name in `LISTEN_FDNAMES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// The descriptor.
    pub fd: RawFd,
    /// Its name, if `LISTEN_FDNAMES` gave one.
    pub name: Option<String>,
}

impl Passed {
    /// How messages name it: `fd 3` or `fd 3 "web"`.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("fd {} {name:?}", self.fd),
            None => format!("fd {}", self.fd),
        }
    }
}

/// The descriptors the `LISTEN_*` values pass to the process `our_pid`:
/// none when `LISTEN_PID` is unset or names another process (its child, a
/// worker or a new master, must never take them as its own).
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Vec<Passed>, ActivationError> {
    let Some(pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ActivationError::Variable("LISTEN_PID", pid.to_owned()))?;
    if pid != our_pid {
        return Ok(Vec::new());
    }
    let count = listen_fds.unwrap_or_default();
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| ActivationError::Variable("LISTEN_FDS", count.to_owned()))?;
    // Names only make messages clearer: a list of another length is ignored.
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    let names = (names.len() == count as usize).then_some(names);
    Ok((0..count)
        .map(|i| Passed {
            fd: FIRST_LISTEN_FD + i,
            name: names
                .as_ref()
                .map(|n| n[i as usize].to_owned())
                .filter(|n| !n.is_empty()),
        })
        .collect())
}

/// Takes the passed descriptors as sockets (close-on-exec from now on:
/// workers get them as prefork hands listeners to them) with the address
/// each is bound to.
pub fn take(passed: &[Passed]) -> Result<Vec<(SocketAddr, Socket, String)>, ActivationError> {
    let mut sockets = Vec::new();
    for p in passed {
        let label = p.label();
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
        // is ours) and nothing else here refers to it.
        let socket = unsafe { Socket::from(OwnedFd::from_raw_fd(p.fd)) };
        let describe = |e| ActivationError::Descriptor(label.clone(), e);
        socket.set_cloexec(true).map_err(describe)?;
        if socket.r#type().map_err(describe)? != Type::STREAM {
            return Err(ActivationError::NotTcp(label));
        }
        let addr = socket.local_addr().map_err(describe)?;
        let Some(addr) = addr.as_socket() else {
            return Err(ActivationError::NotTcp(label));
        };
        sockets.push((addr, socket, label));
    }
    Ok(sockets)
}

/// Checks that every passed socket has a `[[listen]]` entry of its own.
pub fn match_listen(
    sockets: Vec<(SocketAddr, Socket, String)>,
    listen: &[Listen],
) -> Result<Vec<(SocketAddr, Socket)>, ActivationError> {
    let mut matched: Vec<(SocketAddr, Socket)> = Vec::new();
    for (addr, socket, fd) in sockets {
        if !listen.iter().any(|l| l.addr == addr) {
            return Err(ActivationError::Unmatched { addr, fd });
        }
        if matched.iter().any(|(a, _)| *a == addr) {
            return Err(ActivationError::Twice(addr));
        }
        matched.push((addr, socket));
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::IntoRawFd;

    fn fds(passed: &[Passed]) -> Vec<(RawFd, Option<&str>)> {
        passed.iter().map(|p| (p.fd, p.name.as_deref())).collect()
    }

    #[test]
    fn only_the_process_named_by_listen_pid_takes_the_sockets() {
        let ours = parse(Some("42"), Some("2"), None, 42).unwrap();
        assert_eq!(fds(&ours), [(3, None), (4, None)]);
        assert!(parse(Some("41"), Some("2"), None, 42).unwrap().is_empty());
        assert!(parse(None, Some("2"), None, 42).unwrap().is_empty());
        assert!(parse(Some("42"), Some("0"), None, 42).unwrap().is_empty());
    }

    #[test]
    fn names_label_the_sockets_when_there_is_one_per_socket() {
        let named = parse(Some("9"), Some("3"), Some("web:admin:"), 9).unwrap();
        assert_eq!(
            fds(&named),
            [(3, Some("web")), (4, Some("admin")), (5, None)]
        );
        assert_eq!(named[0].label(), "fd 3 \"web\"");
        assert_eq!(named[2].label(), "fd 5");
        let mismatched = parse(Some("9"), Some("2"), Some("web"), 9).unwrap();
        assert_eq!(fds(&mismatched), [(3, None), (4, None)]);
    }

    #[test]
    fn malformed_values_are_named() {
        let e = parse(Some("me"), Some("1"), None, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socket activation: invalid LISTEN_PID \"me\""
        );
        let e = parse(Some("9"), None, None, 9).unwrap_err();
        assert_eq!(e.to_string(), "socket activation: invalid LISTEN_FDS \"\"");
        let e = parse(Some("9"), Some("-1"), None, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socket activation: invalid LISTEN_FDS \"-1\""
        );
    }

    #[test]
    fn a_socket_matching_no_entry_is_refused_with_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.into_raw_fd();
        let passed = [Passed {
            fd,
            name: Some("web".into()),
        }];
        let taken = take(&passed).unwrap();
        assert_eq!(taken[0].0, addr);
        let other = Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            backlog: 16,
            reuseport: false,
            defer_accept: false,
            tls: false,
            proxy_protocol: false,
            http2: false,
        };
        let e = match_listen(taken, std::slice::from_ref(&other)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "socket activation: the socket passed for {addr} (fd {fd} \"web\") matches no [[listen]] entry"
            )
        );
    }

    #[test]
    fn each_passed_socket_takes_the_entry_of_its_address_once() {
        let entry = |addr| Listen {
            addr,
            backlog: 16,
            reuseport: false,
            defer_accept: false,
            tls: false,
            proxy_protocol: false,
            http2: false,
        };
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        let passed = [Passed {
            fd: a.into_raw_fd(),
            name: None,
        }];
        let other = entry("127.0.0.1:1".parse().unwrap());
        let matched = match_listen(take(&passed).unwrap(), &[other.clone(), entry(addr)]).unwrap();
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].0, addr);
        let copy = matched[0].1.try_clone().unwrap();
        let twice = vec![
            (addr, matched.into_iter().next().unwrap().1, "fd 3".into()),
            (addr, copy, "fd 4".into()),
        ];
        let e = match_listen(twice, &[entry(addr)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("socket activation: two sockets passed for {addr}")
        );
    }

    #[test]
    fn a_descriptor_that_is_not_a_tcp_socket_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        let e = take(&[Passed { fd, name: None }]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("socket activation: fd {fd} is not a TCP stream socket")
        );
    }
}
