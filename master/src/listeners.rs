//! The listening sockets, bound once by the master and kept across worker
//! restarts and reloads, keyed by address.

use prefork_shared::config::Listen;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// A listener that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {step} failed: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The system call that failed.
    pub step: &'static str,
    /// The OS error.
    pub source: io::Error,
}

/// The master's listening sockets.
#[derive(Default)]
pub struct Listeners {
    by_addr: BTreeMap<SocketAddr, Socket>,
}

impl Listeners {
    /// Binds every address in `listen`.
    pub fn bind(listen: &[Listen]) -> Result<Self, BindError> {
        let mut listeners = Listeners::default();
        listeners.reconcile(listen)?;
        Ok(listeners)
    }

    /// Takes over sockets bound by a previous master (binary upgrade).
    pub fn adopt(sockets: Vec<(SocketAddr, Socket)>) -> Self {
        Listeners {
            by_addr: sockets.into_iter().collect(),
        }
    }

    /// Every socket, for handing over to a new master.
    pub fn all(&self) -> Vec<(SocketAddr, RawFd)> {
        self.by_addr
            .iter()
            .map(|(a, s)| (*a, s.as_raw_fd()))
            .collect()
    }

    /// Makes the set match `listen`: binds new addresses (all or nothing: on
    /// error nothing changes), applies backlogs, and closes the master's copy
    /// of addresses no longer listed (workers of older generations keep
    /// theirs until they exit). Returns the addresses closed.
    pub fn reconcile(&mut self, listen: &[Listen]) -> Result<Vec<SocketAddr>, BindError> {
        let mut added = Vec::new();
        for l in listen {
            if !self.by_addr.contains_key(&l.addr) {
                added.push((l.addr, bind(l)?));
            }
        }
        for l in listen {
            if let Some(socket) = self.by_addr.get(&l.addr) {
                // listen(2) again only updates the backlog of a listening socket.
                socket.listen(l.backlog).map_err(|source| BindError {
                    addr: l.addr,
                    step: "listen",
                    source,
                })?;
            }
        }
        self.by_addr.extend(added);
        let removed: Vec<SocketAddr> = self
            .by_addr
            .keys()
            .filter(|a| !listen.iter().any(|l| l.addr == **a))
            .copied()
            .collect();
        for addr in &removed {
            self.by_addr.remove(addr);
        }
        Ok(removed)
    }

    /// The descriptors of `listen`'s addresses, in config order.
    pub fn fds_for(&self, listen: &[Listen]) -> Vec<(SocketAddr, RawFd)> {
        listen
            .iter()
            .filter_map(|l| self.by_addr.get(&l.addr).map(|s| (l.addr, s.as_raw_fd())))
            .collect()
    }
}

fn bind(l: &Listen) -> Result<Socket, BindError> {
    let err = |step| {
        move |source| BindError {
            addr: l.addr,
            step,
            source,
        }
    };
    let socket = Socket::new(
        Domain::for_address(l.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(err("socket"))?;
    // Lets a restarted master bind while old connections sit in TIME_WAIT.
    socket
        .set_reuse_address(true)
        .map_err(err("setsockopt(SO_REUSEADDR)"))?;
    if l.addr.is_ipv6() {
        // "[::]:80" means IPv6 only, so "0.0.0.0:80" can be listed beside it.
        socket
            .set_only_v6(true)
            .map_err(err("setsockopt(IPV6_V6ONLY)"))?;
    }
    socket.bind(&SockAddr::from(l.addr)).map_err(err("bind"))?;
    socket.listen(l.backlog).map_err(err("listen"))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            backlog: 16,
            reuseport: false,
        }
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    #[test]
    fn binds_keeps_adds_and_removes_by_address() {
        let a = listen(free_addr());
        let mut ls = Listeners::bind(std::slice::from_ref(&a)).expect("bind");
        let fd_a = ls.fds_for(std::slice::from_ref(&a))[0].1;
        std::net::TcpStream::connect(a.addr).expect("the socket listens");

        let b = listen(free_addr());
        let removed = ls.reconcile(&[a.clone(), b.clone()]).expect("reconcile");
        assert!(removed.is_empty());
        let fds = ls.fds_for(&[b.clone(), a.clone()]);
        assert_eq!(fds.len(), 2);
        assert_eq!(fds[1], (a.addr, fd_a), "an existing listener is kept as is");

        let removed = ls.reconcile(std::slice::from_ref(&b)).expect("reconcile");
        assert_eq!(removed, vec![a.addr]);
        assert!(std::net::TcpStream::connect(a.addr).is_err());
    }

    #[test]
    fn a_failed_bind_changes_nothing() {
        let a = listen(free_addr());
        let mut ls = Listeners::bind(std::slice::from_ref(&a)).expect("bind");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = listen(taken.local_addr().expect("addr"));
        let err = ls
            .reconcile(&[a.clone(), busy.clone()])
            .expect_err("port in use");
        assert_eq!(err.step, "bind");
        assert!(err.to_string().contains(&busy.addr.to_string()));
        assert_eq!(ls.fds_for(&[a, busy]).len(), 1);
    }
}
