//! The listening sockets, bound once by the master and kept across worker
//! restarts, reloads and binary upgrades, keyed by address: either one socket
//! every worker accepts on, or (`reuseport = true`) one `SO_REUSEPORT` socket
//! per worker slot, which the kernel balances connections over and which
//! outlives the slot's worker.

use crate::supervisor::Slot;
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

/// A socket handed from one master to the next: its address and, for a
/// per-slot socket, its slot.
pub type Handed = (SocketAddr, Option<Slot>, Socket);

/// The sockets of one address.
enum Sockets {
    /// One socket shared by every worker.
    Shared(Socket),
    /// One `SO_REUSEPORT` socket per worker slot.
    PerSlot(BTreeMap<Slot, Socket>),
}

struct Entry {
    /// Applied to sockets bound later (a slot added by SIGTTIN).
    options: Options,
    sockets: Sockets,
}

/// The settings of a listening socket that a reload may change in place.
#[derive(Clone, Copy, Default)]
struct Options {
    /// `listen(2)` backlog.
    backlog: i32,
    /// `TCP_DEFER_ACCEPT` on or off.
    defer_accept: bool,
}

impl Options {
    fn of(l: &Listen) -> Self {
        Options {
            backlog: l.backlog,
            defer_accept: l.defer_accept,
        }
    }

    /// Applies them to a socket, bound or already listening (listen(2) again
    /// only updates the backlog), and turns quick ACKs off.
    fn apply(self, addr: SocketAddr, socket: &Socket) -> Result<(), BindError> {
        set_defer_accept(socket, self.defer_accept)
            .map_err(error(addr, "setsockopt(TCP_DEFER_ACCEPT)"))?;
        socket.listen(self.backlog).map_err(error(addr, "listen"))?;
        // Connections accepted from it start with delayed ACKs, as HAProxy's
        // HTTP listeners do: the ACK of a request then rides on its response
        // instead of leaving alone (one segment less per new connection).
        // The worker turns quick ACKs back on whenever it waits for more of
        // a request, so that a client's Nagle never waits on a delayed ACK.
        // After listen(2), which resets the socket's ACK state.
        socket
            .set_tcp_quickack(false)
            .map_err(error(addr, "setsockopt(TCP_QUICKACK)"))
    }
}

/// The master's listening sockets.
#[derive(Default)]
pub struct Listeners {
    by_addr: BTreeMap<SocketAddr, Entry>,
    /// The sockets systemd passed (socket activation), by address, kept for
    /// as long as the master runs: an address a reload drops and a later one
    /// lists again gets its activated socket back (systemd holds a copy, so
    /// binding it anew would fail). Each is shared by every worker, even
    /// under `reuseport`.
    activated: BTreeMap<SocketAddr, Socket>,
}

impl Listeners {
    /// Binds every address in `listen`, a `reuseport` one once per slot of
    /// `slots`.
    #[cfg(test)]
    pub fn bind(listen: &[Listen], slots: usize) -> Result<Self, BindError> {
        let mut listeners = Listeners::default();
        listeners.reconcile(listen, slots)?;
        Ok(listeners)
    }

    /// Binds every address in `listen` as [`Listeners::bind`] does, except
    /// those systemd passed a socket for (`activated`), which are used as
    /// they are.
    pub fn with_activated(
        listen: &[Listen],
        slots: usize,
        activated: Vec<(SocketAddr, Socket)>,
    ) -> Result<Self, BindError> {
        let mut listeners = Listeners {
            activated: activated.into_iter().collect(),
            ..Listeners::default()
        };
        listeners.reconcile(listen, slots)?;
        Ok(listeners)
    }

    /// Whether systemd passed the socket of `addr`.
    pub fn is_activated(&self, addr: SocketAddr) -> bool {
        self.activated.contains_key(&addr)
    }

    /// The addresses whose socket systemd passed.
    pub fn activated(&self) -> Vec<SocketAddr> {
        self.activated.keys().copied().collect()
    }

    /// Takes over sockets bound by a previous master (binary upgrade); the
    /// shared sockets of the `activated` addresses came from systemd and are
    /// kept as [`Listeners::with_activated`] keeps them. Their options are
    /// set by the [`Listeners::reconcile`] that must follow.
    pub fn adopt(sockets: Vec<Handed>, activated: &[SocketAddr]) -> Self {
        let mut by_addr: BTreeMap<SocketAddr, Entry> = BTreeMap::new();
        let mut from_systemd = BTreeMap::new();
        for (addr, slot, socket) in sockets {
            let Some(slot) = slot else {
                if activated.contains(&addr) {
                    // The reconcile that follows lists it.
                    from_systemd.insert(addr, socket);
                    continue;
                }
                let sockets = Sockets::Shared(socket);
                by_addr.insert(
                    addr,
                    Entry {
                        options: Options::default(),
                        sockets,
                    },
                );
                continue;
            };
            let entry = by_addr.entry(addr).or_insert_with(|| Entry {
                options: Options::default(),
                sockets: Sockets::PerSlot(BTreeMap::new()),
            });
            // A master never holds both kinds for one address; were it to,
            // the shared socket listed first wins and this one is closed.
            if let Sockets::PerSlot(have) = &mut entry.sockets {
                have.insert(slot, socket);
            }
        }
        Listeners {
            by_addr,
            activated: from_systemd,
        }
    }

    /// Every socket with its slot, for handing over to a new master.
    pub fn all(&self) -> Vec<(SocketAddr, Option<Slot>, RawFd)> {
        let mut all = Vec::new();
        for (addr, entry) in &self.by_addr {
            match &entry.sockets {
                Sockets::Shared(s) => all.push((*addr, None, s.as_raw_fd())),
                Sockets::PerSlot(slots) => all.extend(
                    slots
                        .iter()
                        .map(|(slot, s)| (*addr, Some(*slot), s.as_raw_fd())),
                ),
            }
        }
        all
    }

    /// Makes the set match `listen`: binds new addresses (a `reuseport` one
    /// for each of `slots`, and any such slot missing so far), applies
    /// backlogs and `defer_accept`, and closes the master's copy of addresses no longer listed
    /// (workers of older generations keep theirs until they stop). All or
    /// nothing: on error nothing changes. Returns the addresses closed.
    ///
    /// An address whose `reuseport` flips gets new sockets while the old
    /// generation still accepts on the old ones: both sides are given
    /// `SO_REUSEPORT` so they can coexist in one group until the old
    /// workers close theirs. Per-slot sockets of slots at or above the
    /// running worker count are left to [`Listeners::retain_slots`].
    pub fn reconcile(
        &mut self,
        listen: &[Listen],
        slots: usize,
    ) -> Result<Vec<SocketAddr>, BindError> {
        let mut replaced = Vec::new();
        let mut added_slots = Vec::new();
        for l in listen {
            if let Some(socket) = self.activated.get(&l.addr) {
                if self.by_addr.contains_key(&l.addr) {
                    continue;
                }
                let copy = socket.try_clone().map_err(error(l.addr, "dup"))?;
                let entry = Entry {
                    options: Options::of(l),
                    sockets: Sockets::Shared(copy),
                };
                replaced.push((l.addr, entry));
                continue;
            }
            match (self.by_addr.get(&l.addr).map(|e| &e.sockets), l.reuseport) {
                (None, false) => replaced.push((l.addr, shared(l, false)?)),
                (None, true) => replaced.push((l.addr, per_slot(l, slots)?)),
                (Some(Sockets::Shared(old)), true) => {
                    old.set_reuse_port(true)
                        .map_err(error(l.addr, "setsockopt(SO_REUSEPORT)"))?;
                    replaced.push((l.addr, per_slot(l, slots)?));
                }
                (Some(Sockets::PerSlot(_)), false) => {
                    replaced.push((l.addr, shared(l, true)?));
                }
                (Some(Sockets::PerSlot(have)), true) => {
                    for slot in (0..slots as u32).map(Slot) {
                        if !have.contains_key(&slot) {
                            added_slots.push((l.addr, slot, bind(l, true)?));
                        }
                    }
                }
                (Some(Sockets::Shared(_)), false) => {}
            }
        }
        for l in listen {
            if let Some(entry) = self.by_addr.get(&l.addr) {
                for socket in entry.sockets() {
                    Options::of(l).apply(l.addr, socket)?;
                }
            }
        }
        self.by_addr.extend(replaced);
        for (addr, slot, socket) in added_slots {
            if let Some(Sockets::PerSlot(have)) =
                self.by_addr.get_mut(&addr).map(|e| &mut e.sockets)
            {
                have.insert(slot, socket);
            }
        }
        for l in listen {
            if let Some(entry) = self.by_addr.get_mut(&l.addr) {
                entry.options = Options::of(l);
            }
        }
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

    /// The descriptors a worker in `slot` inherits for `listen`'s addresses,
    /// in config order: the shared socket of an address, or the slot's own
    /// socket (with its slot), bound now if the slot is new (SIGTTIN).
    pub fn for_worker(
        &mut self,
        listen: &[Listen],
        slot: Slot,
    ) -> Result<Vec<(SocketAddr, Option<Slot>, RawFd)>, BindError> {
        let mut fds = Vec::new();
        for l in listen {
            let Some(entry) = self.by_addr.get_mut(&l.addr) else {
                continue;
            };
            let (socket, own) = match &mut entry.sockets {
                Sockets::Shared(s) => (s, None),
                Sockets::PerSlot(slots) => match slots.entry(slot) {
                    std::collections::btree_map::Entry::Occupied(o) => (o.into_mut(), Some(slot)),
                    std::collections::btree_map::Entry::Vacant(v) => (
                        v.insert(bind_with(l.addr, entry.options, true)?),
                        Some(slot),
                    ),
                },
            };
            fds.push((l.addr, own, socket.as_raw_fd()));
        }
        Ok(fds)
    }

    /// Closes the master's copy of every per-slot socket whose slot is
    /// `slots` or above (SIGTTOU, or a reload to fewer workers). Called as
    /// soon as the slot is given up, before its worker stops: the worker's
    /// copy is then the last, and it accepts what is queued before closing
    /// it. Returns what was closed.
    pub fn retain_slots(&mut self, slots: usize) -> Vec<(SocketAddr, Slot)> {
        let mut closed = Vec::new();
        for (addr, entry) in &mut self.by_addr {
            if let Sockets::PerSlot(have) = &mut entry.sockets {
                let gone = have.split_off(&Slot(slots as u32));
                closed.extend(gone.into_keys().map(|slot| (*addr, slot)));
            }
        }
        closed
    }
}

impl Entry {
    fn sockets(&self) -> Vec<&Socket> {
        match &self.sockets {
            Sockets::Shared(s) => vec![s],
            Sockets::PerSlot(slots) => slots.values().collect(),
        }
    }
}

fn error(addr: SocketAddr, step: &'static str) -> impl Fn(io::Error) -> BindError {
    move |source| BindError { addr, step, source }
}

fn shared(l: &Listen, reuseport: bool) -> Result<Entry, BindError> {
    Ok(Entry {
        options: Options::of(l),
        sockets: Sockets::Shared(bind(l, reuseport)?),
    })
}

fn per_slot(l: &Listen, slots: usize) -> Result<Entry, BindError> {
    let sockets = (0..slots as u32)
        .map(|s| Ok((Slot(s), bind(l, true)?)))
        .collect::<Result<_, BindError>>()?;
    Ok(Entry {
        options: Options::of(l),
        sockets: Sockets::PerSlot(sockets),
    })
}

fn bind(l: &Listen, reuseport: bool) -> Result<Socket, BindError> {
    bind_with(l.addr, Options::of(l), reuseport)
}

fn bind_with(addr: SocketAddr, options: Options, reuseport: bool) -> Result<Socket, BindError> {
    let err = |step| error(addr, step);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(err("socket"))?;
    // Lets a restarted master bind while old connections sit in TIME_WAIT.
    socket
        .set_reuse_address(true)
        .map_err(err("setsockopt(SO_REUSEADDR)"))?;
    if reuseport {
        socket
            .set_reuse_port(true)
            .map_err(err("setsockopt(SO_REUSEPORT)"))?;
    }
    if addr.is_ipv6() {
        // "[::]:80" means IPv6 only, so "0.0.0.0:80" can be listed beside it.
        socket
            .set_only_v6(true)
            .map_err(err("setsockopt(IPV6_V6ONLY)"))?;
    }
    socket.bind(&SockAddr::from(addr)).map_err(err("bind"))?;
    options.apply(addr, &socket)?;
    Ok(socket)
}

/// How long the kernel holds a silent connection before queueing it anyway
/// (rounded up to its SYN-ACK retransmission schedule).
const DEFER_ACCEPT_SECONDS: libc::c_int = 1;

/// Turns `TCP_DEFER_ACCEPT` on or off. On, an HTTP connection reaches
/// accept(2) with its request already readable: the worker reads it at once
/// instead of registering the socket, finding it empty and waiting for
/// another wake-up (one system call, one `epoll_wait` and most of a context
/// switch less per new connection). socket2 has no setter for it.
fn set_defer_accept(socket: &Socket, on: bool) -> io::Result<()> {
    let seconds: libc::c_int = if on { DEFER_ACCEPT_SECONDS } else { 0 };
    // SAFETY: the descriptor is open for the borrow of `socket`, and the
    // option value is a c_int whose size is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn listen(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            backlog: 16,
            reuseport: false,
            // The queue tests connect without sending anything.
            defer_accept: false,
            tls: false,
            proxy_protocol: false,
            http2: false,
        }
    }

    fn reuseport(addr: SocketAddr) -> Listen {
        Listen {
            reuseport: true,
            ..listen(addr)
        }
    }

    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    fn fd(ls: &mut Listeners, l: &Listen, slot: u32) -> RawFd {
        let fds = ls
            .for_worker(std::slice::from_ref(l), Slot(slot))
            .expect("fds");
        assert_eq!(fds.len(), 1);
        fds[0].2
    }

    /// How many connections wait in the queue of the listening socket `fd`.
    fn queued(fd: RawFd) -> usize {
        // SAFETY: `fd` is a listening socket the test's Listeners own; the
        // borrowed socket is not closed (ManuallyDrop).
        let socket = std::mem::ManuallyDrop::new(unsafe {
            <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        socket.set_nonblocking(true).expect("non-blocking");
        std::iter::from_fn(|| socket.accept().ok()).count()
    }

    #[test]
    fn binds_keeps_adds_and_removes_by_address() {
        let a = listen(free_addr());
        let mut ls = Listeners::bind(std::slice::from_ref(&a), 2).expect("bind");
        let fd_a = fd(&mut ls, &a, 0);
        assert_eq!(fd(&mut ls, &a, 1), fd_a, "every slot shares the socket");
        TcpStream::connect(a.addr).expect("the socket listens");
        // SAFETY: as in `queued`.
        let socket = std::mem::ManuallyDrop::new(unsafe {
            <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd_a)
        });
        assert!(
            !socket.tcp_quickack().expect("TCP_QUICKACK"),
            "delayed ACKs"
        );

        let b = listen(free_addr());
        let removed = ls.reconcile(&[a.clone(), b.clone()], 2).expect("reconcile");
        assert!(removed.is_empty());
        let fds = ls
            .for_worker(&[b.clone(), a.clone()], Slot(0))
            .expect("fds");
        assert_eq!(fds.len(), 2);
        assert_eq!(
            fds[1],
            (a.addr, None, fd_a),
            "an existing listener is kept as is"
        );

        let removed = ls
            .reconcile(std::slice::from_ref(&b), 2)
            .expect("reconcile");
        assert_eq!(removed, vec![a.addr]);
        assert!(TcpStream::connect(a.addr).is_err());
    }

    /// The `TCP_DEFER_ACCEPT` value of `fd`, in seconds.
    fn defer_accept(fd: RawFd) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is open (owned by the test's Listeners); value and len
        // describe a c_int.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn defer_accept_is_set_and_changed_in_place() {
        let on = Listen {
            defer_accept: true,
            ..listen(free_addr())
        };
        let mut ls = Listeners::bind(std::slice::from_ref(&on), 1).expect("bind");
        let socket = fd(&mut ls, &on, 0);
        assert!(defer_accept(socket) > 0);
        // A client that has sent its request is queued for accept(2).
        let mut client = TcpStream::connect(on.addr).expect("connect");
        std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n").expect("send");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = 0;
        while seen == 0 && std::time::Instant::now() < deadline {
            seen = queued(socket);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, 1);

        let off = Listen {
            defer_accept: false,
            ..on.clone()
        };
        ls.reconcile(std::slice::from_ref(&off), 1)
            .expect("reconcile");
        assert_eq!(fd(&mut ls, &off, 0), socket, "the same socket");
        assert_eq!(defer_accept(socket), 0);
        let per_slot = Listen {
            defer_accept: true,
            ..reuseport(free_addr())
        };
        let mut ls = Listeners::bind(std::slice::from_ref(&per_slot), 1).expect("bind");
        let added = fd(&mut ls, &per_slot, 1);
        assert!(defer_accept(added) > 0, "a slot bound later gets it too");
    }

    #[test]
    fn a_failed_bind_changes_nothing() {
        let a = listen(free_addr());
        let mut ls = Listeners::bind(std::slice::from_ref(&a), 1).expect("bind");
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = reuseport(taken.local_addr().expect("addr"));
        let err = ls
            .reconcile(&[a.clone(), busy.clone()], 2)
            .expect_err("port in use");
        assert_eq!(err.step, "bind");
        assert!(err.to_string().contains(&busy.addr.to_string()));
        assert_eq!(ls.all().len(), 1);
    }

    #[test]
    fn reuseport_gives_each_slot_its_own_socket_in_one_group() {
        let l = Listen {
            backlog: 64,
            ..reuseport(free_addr())
        };
        let mut ls = Listeners::bind(std::slice::from_ref(&l), 2).expect("bind");
        let (s0, s1) = (fd(&mut ls, &l, 0), fd(&mut ls, &l, 1));
        assert_ne!(s0, s1);
        assert_eq!(
            fd(&mut ls, &l, 0),
            s0,
            "a restarted slot gets its socket back"
        );
        // The kernel hashes connections over the group: 24 connections all
        // landing on one of two sockets would take a 2^-23 chance. (Fewer
        // than the backlog: a full queue would stall connect.)
        let clients: Vec<TcpStream> = (0..24)
            .map(|_| TcpStream::connect(l.addr).expect("connect"))
            .collect();
        let (n0, n1) = (queued(s0), queued(s1));
        assert_eq!(n0 + n1, clients.len());
        assert!(n0 > 0 && n1 > 0, "unbalanced: {n0}/{n1}");
    }

    #[test]
    fn slots_are_added_on_demand_and_closed_when_given_up() {
        let l = reuseport(free_addr());
        let shared = listen(free_addr());
        let both = [l.clone(), shared.clone()];
        let mut ls = Listeners::bind(&both, 2).expect("bind");
        let s0 = fd(&mut ls, &l, 0);
        // SIGTTIN: slot 2 is bound when its worker starts.
        let s2 = fd(&mut ls, &l, 2);
        assert_eq!(ls.all().len(), 4);
        assert_eq!(fd(&mut ls, &l, 2), s2);
        // A hot reload with `workers = 2` keeps the extra slot.
        ls.reconcile(&both, 2).expect("reconcile");
        assert_eq!(fd(&mut ls, &l, 2), s2);
        // SIGTTOU back to 2: slot 2 goes, the shared socket stays.
        assert_eq!(ls.retain_slots(2), vec![(l.addr, Slot(2))]);
        assert!(ls.retain_slots(2).is_empty());
        let all = ls.all();
        assert_eq!(all.len(), 3);
        assert!(all.contains(&(l.addr, Some(Slot(0)), s0)));
        assert!(all.contains(&(shared.addr, None, fd(&mut ls, &shared, 7))));
        // A reload to more workers binds every new slot up front.
        ls.reconcile(&both, 4).expect("reconcile");
        assert_eq!(ls.all().len(), 5);
    }

    #[test]
    fn reuseport_can_be_switched_while_old_workers_hold_the_old_sockets() {
        let shared = listen(free_addr());
        let mut ls = Listeners::bind(std::slice::from_ref(&shared), 2).expect("bind");
        // What an old worker holds: its own copy of the shared socket.
        let old_worker = ls.by_addr[&shared.addr].sockets()[0]
            .try_clone()
            .expect("dup");
        let on = reuseport(shared.addr);
        ls.reconcile(std::slice::from_ref(&on), 2)
            .expect("switch on beside the old shared socket");
        let (s0, s1) = (fd(&mut ls, &on, 0), fd(&mut ls, &on, 1));
        assert_ne!(s0, s1);
        let slot_copy = ls.by_addr[&on.addr].sockets()[0].try_clone().expect("dup");
        ls.reconcile(std::slice::from_ref(&shared), 2)
            .expect("switch off beside the old per-slot sockets");
        assert_eq!(ls.all().len(), 1);
        drop((old_worker, slot_copy));
        TcpStream::connect(shared.addr).expect("the new socket listens");
    }

    #[test]
    fn a_new_master_adopts_every_socket_with_its_slot() {
        let l = reuseport(free_addr());
        let shared = listen(free_addr());
        let both = [l.clone(), shared.clone()];
        let ls = Listeners::bind(&both, 3).expect("bind");
        let handed: Vec<Handed> = ls
            .by_addr
            .iter()
            .flat_map(|(addr, e)| match &e.sockets {
                Sockets::Shared(s) => vec![(*addr, None, s.try_clone().expect("dup"))],
                Sockets::PerSlot(slots) => slots
                    .iter()
                    .map(|(slot, s)| (*addr, Some(*slot), s.try_clone().expect("dup")))
                    .collect(),
            })
            .collect();
        let mut adopted = Listeners::adopt(handed, &[]);
        adopted.reconcile(&both, 2).expect("reconcile");
        let mut kinds: Vec<_> = adopted.all().iter().map(|(a, s, _)| (*a, *s)).collect();
        kinds.sort();
        let mut want = vec![
            (l.addr, Some(Slot(0))),
            (l.addr, Some(Slot(1))),
            (l.addr, Some(Slot(2))),
            (shared.addr, None),
        ];
        want.sort();
        assert_eq!(
            kinds, want,
            "adopted as handed; extra slots wait for retain_slots"
        );
        assert_eq!(adopted.retain_slots(2), vec![(l.addr, Slot(2))]);
    }

    /// Stands for a socket systemd passed: bound and listening elsewhere.
    fn activated(addr: SocketAddr) -> (SocketAddr, Socket) {
        let l = TcpListener::bind(addr).expect("bind the activated socket");
        (addr, Socket::from(l))
    }

    #[test]
    fn an_activated_socket_is_used_shared_and_kept_across_reloads() {
        let a = reuseport(free_addr());
        let b = listen(free_addr());
        let (addr, socket) = activated(a.addr);
        let systemd_copy = socket.try_clone().expect("dup");
        let mut ls = Listeners::with_activated(&[a.clone(), b.clone()], 2, vec![(addr, socket)])
            .expect("bind");
        assert!(ls.is_activated(a.addr) && !ls.is_activated(b.addr));
        // Shared by every slot despite reuseport: not bound anew.
        let fd_a = fd(&mut ls, &a, 0);
        assert_eq!(fd(&mut ls, &a, 1), fd_a);
        TcpStream::connect(a.addr).expect("connect");
        assert_eq!(queued(systemd_copy.as_raw_fd()), 1, "the same queue");
        TcpStream::connect(b.addr).expect("the other address is bound");

        // Dropped by a reload, listed again by the next: the same socket.
        ls.reconcile(std::slice::from_ref(&b), 2).expect("drop a");
        ls.reconcile(&[a.clone(), b.clone()], 2).expect("a again");
        let fd_again = fd(&mut ls, &a, 0);
        TcpStream::connect(a.addr).expect("connect");
        assert_eq!(queued(fd_again), 1);
    }

    #[test]
    fn a_new_master_keeps_a_socket_systemd_passed_shared() {
        let a = reuseport(free_addr());
        let (addr, socket) = activated(a.addr);
        let old = Listeners::with_activated(std::slice::from_ref(&a), 2, vec![(addr, socket)])
            .expect("bind");
        assert_eq!(old.activated(), vec![a.addr]);
        let handed: Vec<Handed> = old
            .all()
            .into_iter()
            .map(|(addr, slot, fd)| {
                // SAFETY: a copy of a descriptor `old` keeps open.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let copy = borrowed.try_clone_to_owned().expect("dup");
                (addr, slot, Socket::from(copy))
            })
            .collect();
        assert_eq!(handed.len(), 1, "one shared socket is handed over");
        let mut new = Listeners::adopt(handed, &old.activated());
        new.reconcile(std::slice::from_ref(&a), 2)
            .expect("reconcile");
        assert!(new.is_activated(a.addr));
        let kinds: Vec<_> = new.all().iter().map(|(a, s, _)| (*a, *s)).collect();
        assert_eq!(kinds, vec![(a.addr, None)], "still shared under reuseport");
    }
}
