//! Idle keep-alive connections parked outside a task.
//!
//! A connection's task holds its whole future (a few KiB) while it waits for
//! the next request. A connection idle for [`PARK_AFTER`] leaves its task
//! instead: the lot keeps only what resumes it (its socket and a few bytes
//! of state, a few dozen bytes in all) and watches the socket in an epoll
//! instance of its own, so it holds no registration in tokio's event loop
//! either. When bytes arrive the connection gets a task again. A busy
//! keep-alive connection never waits that long, and pays nothing for it.
//!
//! A parked connection behaves as one that is not: it closes at its
//! `keepalive_timeout`, counts as open (for draining and the load board),
//! and on a graceful stop closes at the point of the drain spread an idle
//! one would (`Snapshot::drain_close_at`), or is resumed to answer a request
//! on its way (with `Connection: close`).
//!
//! The lot does not know the protocol: a session parks what [`Parkable`]
//! describes, and resumes it itself.

use crate::io::epoll::{Epoll, Token};
use crate::observe::stats::Stats;
use crate::state::{ActiveConnection, Newest, Snapshot};
use crate::stop::Stop;
use prefork_shared::Config;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

/// How long a keep-alive connection waits for its next request in its own
/// task before it is parked.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// Most sockets taken from the lot's epoll instance per system call.
const READY_BATCH: usize = 256;

/// What a session keeps of an idle connection to resume it; dropping it
/// closes the connection.
pub(crate) trait Parkable: Sized + 'static {
    /// The client socket, watched for the next request's bytes.
    fn fd(&self) -> RawFd;
    /// When the connection last finished a request.
    fn idle_since(&self) -> Instant;
    /// The client's address (a stop spreads closes by it), if the
    /// connection still has one.
    fn peer(&self) -> Option<SocketAddr>;
    /// Whether the client has sent bytes not read yet.
    fn has_unread(&self) -> bool;
    /// How long the connection may stay idle under `config`.
    fn idle_timeout(config: &Config) -> Duration {
        config.http.keepalive_timeout
    }
    /// On a graceful stop, whether the connection closes at once rather
    /// than at its point of the drain's spread (an HTTP/2 connection is
    /// told to go away at once, parked or not).
    const CLOSES_AT_ONCE: bool = false;
    /// Closes the connection at once: its place is free on return (to make
    /// room at `max_connections`).
    fn close(self) {}
    /// Ends the connection at its idle timeout or on a drain, counted as
    /// open by `active` until it is closed; `snapshot`: the newest, if the
    /// worker still has one. At once, unless its protocol says goodbye
    /// first.
    fn go_away(self, snapshot: Option<Rc<Snapshot>>, active: ActiveConnection) {
        let _ = snapshot;
        self.close();
        drop(active);
    }
    /// Gives the connection a task again, counted as open by `active`:
    /// bytes arrived, or the client closed, or a stop found a request on
    /// its way.
    fn resume(self, snapshot: Rc<Snapshot>, lot: &Rc<ParkingLot<Self>>, active: ActiveConnection);
}

/// A parked connection's place in the lot; the generation tells a slot's
/// later occupants apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    fn token(self) -> Token {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_token(token: Token) -> Key {
        Key {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

/// One place in the lot.
struct Slot<P> {
    generation: u32,
    parked: Option<P>,
}

/// The parked connections of one worker process.
pub(crate) struct ParkingLot<P> {
    /// The newest configuration, whose limits apply.
    newest: Newest,
    /// Where the parked connections are counted.
    stats: Rc<Stats>,
    /// Watches the parked sockets; readable (for tokio) when one is.
    epoll: AsyncFd<Epoll>,
    slots: RefCell<Vec<Slot<P>>>,
    /// Indexes of empty slots.
    free: RefCell<Vec<u32>>,
    /// When each parked connection became idle, earliest first: they close
    /// at that plus their idle timeout. A heap, not the parking order: an
    /// HTTP/2 connection woken by a frame that was no request (a PING)
    /// parks again still idle since its last stream. Entries of connections
    /// since resumed stay until they come up, or until
    /// [`ParkingLot::compact`].
    by_idle: RefCell<BinaryHeap<Reverse<(Instant, Key)>>>,
    /// On a graceful stop, when each closes, earliest first.
    by_close: RefCell<BinaryHeap<Reverse<(Instant, Key)>>>,
    /// Woken when the earliest deadline may have moved.
    rearm: Notify,
    /// Parks refused because the lot could not watch the socket.
    #[cfg(test)]
    refused: std::cell::Cell<usize>,
}

impl<P: Parkable> ParkingLot<P> {
    /// An empty lot for the worker whose newest snapshot `newest` finds.
    pub(crate) fn new(newest: Newest, stats: Rc<Stats>) -> io::Result<Rc<Self>> {
        // SAFETY: the epoll instance owns its descriptor, which stays open
        // and the same as long as the AsyncFd holds it.
        let epoll = unsafe { AsyncFd::register_with_interest(Epoll::new()?, Interest::READABLE) }?;
        Ok(Rc::new(ParkingLot {
            newest,
            stats,
            epoll,
            slots: RefCell::default(),
            free: RefCell::default(),
            by_idle: RefCell::default(),
            by_close: RefCell::default(),
            rearm: Notify::new(),
            #[cfg(test)]
            refused: Default::default(),
        }))
    }

    /// Watches `socket` already, so that parking it fails as when epoll
    /// refuses a socket (EEXIST here; ENOMEM or ENOSPC in earnest).
    #[cfg(test)]
    pub(crate) fn watch_before_parking(&self, socket: RawFd) {
        self.epoll.get_ref().add(socket, u64::MAX).unwrap();
    }

    /// How many parks the lot refused.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> usize {
        self.refused.get()
    }

    /// How many connections are parked.
    pub(crate) fn len(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }

    /// Parks `conn`, counted as open by `active` (it keeps counting). If the
    /// lot cannot watch its socket, both are given back.
    pub(crate) fn park(
        self: &Rc<Self>,
        conn: P,
        active: ActiveConnection,
    ) -> Option<(P, ActiveConnection)> {
        let key = self.place();
        if self.epoll.get_ref().add(conn.fd(), key.token()).is_err() {
            #[cfg(test)]
            self.refused.set(self.refused.get() + 1);
            self.free.borrow_mut().push(key.index);
            return Some((conn, active));
        }
        active.park();
        let idle_since = conn.idle_since();
        let closes_at = self.stopping().then(|| self.close_at(&conn));
        self.slots.borrow_mut()[key.index as usize].parked = Some(conn);
        self.stats.parked(1);
        self.compact();
        let mut by_idle = self.by_idle.borrow_mut();
        let earliest = by_idle
            .peek()
            .is_none_or(|Reverse((at, _))| idle_since < *at);
        by_idle.push(Reverse((idle_since, key)));
        if let Some(at) = closes_at {
            self.by_close.borrow_mut().push(Reverse((at, key)));
        }
        if earliest || closes_at.is_some() {
            self.rearm.notify_one();
        }
        drop(by_idle);
        self.newest.parked_one();
        None
    }

    /// Closes the connection parked longest, to make room for a new one at
    /// `max_connections` (nginx closes its oldest idle keep-alive
    /// connections so); one whose next request is on its way is resumed
    /// instead, and the next oldest closes. Returns whether one closed.
    pub(crate) fn evict_oldest(self: &Rc<Self>) -> bool {
        loop {
            let Some(Reverse((_, key))) = self.by_idle.borrow_mut().pop() else {
                return false;
            };
            let on_its_way = match self.slots.borrow().get(key.index as usize) {
                Some(Slot {
                    generation,
                    parked: Some(conn),
                }) if *generation == key.generation => conn.has_unread(),
                // Resumed or closed since: a stale entry.
                _ => continue,
            };
            if on_its_way {
                self.resume(key);
            } else if let Some((conn, active)) = self.take(key) {
                // Closed as the keep-alive timeout closes it (a TLS one
                // with close_notify).
                conn.close();
                drop(active);
                return true;
            }
        }
    }

    /// An empty slot, and its key.
    fn place(&self) -> Key {
        let mut slots = self.slots.borrow_mut();
        let index = self.free.borrow_mut().pop().unwrap_or_else(|| {
            slots.push(Slot {
                generation: 0,
                parked: None,
            });
            // At most one slot per open connection: far below u32::MAX.
            (slots.len() - 1) as u32
        });
        let slot = &mut slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        Key {
            index,
            generation: slot.generation,
        }
    }

    /// Takes the connection parked under `key`, if it still is, with the
    /// guard that counts it as open.
    fn take(&self, key: Key) -> Option<(P, ActiveConnection)> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let conn = slot.parked.take()?;
        self.free.borrow_mut().push(key.index);
        self.stats.parked(-1);
        Some((conn, self.newest.parked_guard()))
    }

    /// Resumes the connection parked under `key`, if it still is; it closes
    /// if the worker has no snapshot left (it is exiting).
    fn resume(self: &Rc<Self>, key: Key) {
        let Some((conn, active)) = self.take(key) else {
            return;
        };
        // Back to tokio's event loop: out of the lot's (a failure leaves
        // it disarmed there until it closes).
        let _ = self.epoll.get_ref().remove(conn.fd());
        if let Some(snapshot) = self.newest.get() {
            conn.resume(snapshot, self, active);
        }
    }

    /// Closes the connection parked under `key`, if it still is.
    fn close(&self, key: Key) {
        if let Some((conn, active)) = self.take(key) {
            conn.go_away(self.newest.get(), active);
        }
    }

    /// Drops the deadlines of connections no longer parked (resumed ones
    /// leave theirs behind) once they outnumber the parked ones, so that a
    /// connection parked and woken again and again costs no memory.
    fn compact(&self) {
        let live = self.len();
        let mut by_idle = self.by_idle.borrow_mut();
        if by_idle.len() <= 2 * live + 1024 {
            return;
        }
        let slots = self.slots.borrow();
        by_idle.retain(|Reverse((_, key))| {
            let slot = &slots[key.index as usize];
            slot.generation == key.generation && slot.parked.is_some()
        });
    }

    fn stopping(&self) -> bool {
        self.newest.get().is_some_and(|s| s.stopping())
    }

    /// When a parked connection closes on a graceful stop.
    fn close_at(&self, conn: &P) -> Instant {
        if P::CLOSES_AT_ONCE {
            return Instant::now();
        }
        match (self.newest.get(), conn.peer()) {
            (Some(snapshot), Some(peer)) => snapshot.drain_close_at(conn.idle_since(), peer, 1),
            _ => Instant::now(),
        }
    }

    /// Resumes the connections whose sockets became readable.
    fn resume_ready(self: &Rc<Self>) -> io::Result<()> {
        let mut tokens = Vec::new();
        loop {
            tokens.clear();
            let n = self.epoll.get_ref().ready(&mut tokens, READY_BATCH)?;
            for &token in &tokens {
                self.resume(Key::from_token(token));
            }
            if n < READY_BATCH {
                return Ok(());
            }
        }
    }

    /// The next moment something is due: a keep-alive timeout, or a close
    /// of the drain.
    fn next_deadline(&self) -> Option<Instant> {
        let keepalive = P::idle_timeout(&self.newest.get()?.config);
        let idle = self
            .by_idle
            .borrow()
            .peek()
            .map(|Reverse((at, _))| *at + keepalive);
        let close = self.by_close.borrow().peek().map(|Reverse((at, _))| *at);
        match (idle, close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes the connections idle for `keepalive_timeout`, and those the
    /// drain closes by now; one whose client is sending a request is
    /// resumed instead, to answer it (with `Connection: close`).
    fn expire(self: &Rc<Self>, now: Instant) {
        if let Some(keepalive) = self.newest.get().map(|s| P::idle_timeout(&s.config)) {
            loop {
                let due = {
                    let mut by_idle = self.by_idle.borrow_mut();
                    match by_idle.peek() {
                        Some(Reverse((at, _))) if *at + keepalive <= now => by_idle.pop(),
                        _ => None,
                    }
                };
                let Some(Reverse((_, key))) = due else { break };
                self.close(key);
            }
        }
        loop {
            let due = {
                let mut by_close = self.by_close.borrow_mut();
                match by_close.peek() {
                    Some(Reverse((at, _))) if *at <= now => by_close.pop(),
                    _ => None,
                }
            };
            let Some(Reverse((_, key))) = due else { break };
            let on_its_way = self.slots.borrow()[key.index as usize]
                .parked
                .as_ref()
                .is_some_and(P::has_unread);
            if on_its_way {
                self.resume(key);
            } else {
                self.close(key);
            }
        }
    }

    /// A graceful stop: every parked connection gets its point of the drain.
    fn start_drain(&self) {
        let slots = self.slots.borrow();
        let mut by_close = self.by_close.borrow_mut();
        for (index, slot) in slots.iter().enumerate() {
            if let Some(conn) = &slot.parked {
                let key = Key {
                    index: index as u32,
                    generation: slot.generation,
                };
                by_close.push(Reverse((self.close_at(conn), key)));
            }
        }
    }

    /// Watches the parked connections: resumes those with bytes to read,
    /// closes those whose time is up, until the worker stops fast (they
    /// close with it) or exits.
    pub(crate) async fn run(self: Rc<Self>, mut stop: watch::Receiver<Stop>) {
        let mut stop_seen = false;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                ready = self.epoll.readable() => {
                    let Ok(mut ready) = ready else { return };
                    if self.resume_ready().is_ok() {
                        // Every ready socket was taken: wait for the next.
                        ready.clear_ready();
                    }
                }
                changed = stop.wait_for(|s| *s != Stop::Running), if !stop_seen => {
                    stop_seen = true;
                    match changed.map(|s| *s) {
                        Ok(Stop::Graceful) => self.start_drain(),
                        // The worker exits at once: parked connections close with it.
                        _ => return,
                    }
                }
                () = self.rearm.notified() => {}
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.expire(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::request_stop;
    use crate::testing::config;
    use std::cell::Cell;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A parked connection that notes when it is resumed or closed.
    struct Fake {
        stream: TcpStream,
        idle_since: Instant,
        resumed: Rc<Cell<usize>>,
        closed: Rc<Cell<usize>>,
    }

    impl Parkable for Fake {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn idle_since(&self) -> Instant {
            self.idle_since
        }
        fn peer(&self) -> Option<SocketAddr> {
            self.stream.peer_addr().ok()
        }
        fn has_unread(&self) -> bool {
            let mut probe = [0u8; 1];
            matches!(self.stream.peek(&mut probe), Ok(n) if n > 0)
        }
        fn close(self) {
            self.closed.set(self.closed.get() + 1);
        }
        fn resume(self, _: Rc<Snapshot>, _: &Rc<ParkingLot<Self>>, _: ActiveConnection) {
            self.resumed.set(self.resumed.get() + 1);
        }
    }

    /// A client and the server side of its connection, the latter
    /// non-blocking as a worker's sockets are.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (client, server)
    }

    struct World {
        snapshot: Rc<Snapshot>,
        stop: watch::Sender<Stop>,
        lot: Rc<ParkingLot<Fake>>,
        listener: TcpListener,
        resumed: Rc<Cell<usize>>,
        closed: Rc<Cell<usize>>,
    }

    fn world(keepalive: Duration) -> World {
        let mut config = config(prefork_testkit::origins::refused_addr());
        config.http.keepalive_timeout = keepalive;
        let (snapshot, stop) = crate::testing::snapshot(config);
        let lot = ParkingLot::new(snapshot.newest(), snapshot.stats().clone()).unwrap();
        World {
            snapshot,
            stop,
            lot,
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            resumed: Rc::default(),
            closed: Rc::default(),
        }
    }

    impl World {
        /// Parks the server side of a new connection, idle since `idle_since`.
        fn park(&self, idle_since: Instant) -> TcpStream {
            let (client, server) = pair(&self.listener);
            let fake = Fake {
                stream: server,
                idle_since,
                resumed: self.resumed.clone(),
                closed: self.closed.clone(),
            };
            self.lot.park(fake, self.snapshot.track());
            client
        }
    }

    #[tokio::test]
    async fn a_parked_connection_closes_at_its_keepalive_timeout() {
        let w = world(Duration::from_secs(5));
        let now = Instant::now();
        let mut old = w.park(now - Duration::from_secs(4));
        let young = w.park(now);
        assert_eq!((w.lot.len(), w.snapshot.active_connections()), (2, 2));
        assert_eq!(w.lot.next_deadline(), Some(now + Duration::from_secs(1)));
        w.lot.expire(now + Duration::from_secs(1));
        assert_eq!(w.lot.len(), 1, "the young one waits on");
        assert_eq!(old.read(&mut [0u8; 1]).unwrap(), 0, "the old one closed");
        assert_eq!(
            w.closed.get(),
            1,
            "closed through its own close (TLS: close_notify)"
        );
        assert_eq!(w.snapshot.active_connections(), 1);
        drop(young);
    }

    #[tokio::test]
    async fn a_drain_resumes_a_connection_whose_request_is_on_its_way_and_closes_the_others() {
        let w = world(Duration::from_secs(75));
        let idle = Instant::now() - Duration::from_secs(2);
        let mut quiet = w.park(idle);
        let mut sending = w.park(idle);
        sending.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        request_stop(&w.stop, Stop::Graceful);
        w.lot.start_drain();
        // Every close falls within the drain's spread.
        w.lot.expire(Instant::now() + Duration::from_secs(10));
        assert_eq!(w.resumed.get(), 1, "the one sending a request is resumed");
        assert_eq!(
            w.closed.get(),
            1,
            "the quiet one is closed through its own close"
        );
        assert_eq!(w.lot.len(), 0);
        assert_eq!(
            quiet.read(&mut [0u8; 1]).unwrap(),
            0,
            "the quiet one closed"
        );
        assert_eq!(w.snapshot.active_connections(), 0);
        drop(sending);
    }

    #[tokio::test]
    async fn eviction_closes_the_oldest_parked_connection_and_spares_one_sending_a_request() {
        let w = world(Duration::from_secs(75));
        let now = Instant::now();
        let mut sending = w.park(now - Duration::from_secs(3));
        sending.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut oldest = w.park(now - Duration::from_secs(2));
        let mut young = w.park(now);
        assert!(w.lot.evict_oldest());
        assert_eq!(w.resumed.get(), 1, "the one sending a request is resumed");
        assert_eq!(oldest.read(&mut [0u8; 1]).unwrap(), 0, "the oldest closed");
        assert_eq!((w.lot.len(), w.snapshot.active_connections()), (1, 1));
        assert!(w.lot.evict_oldest());
        assert_eq!(young.read(&mut [0u8; 1]).unwrap(), 0);
        assert!(!w.lot.evict_oldest(), "nothing left to close");
        assert_eq!(w.snapshot.active_connections(), 0);
    }

    #[tokio::test]
    async fn the_lot_resumes_a_connection_when_bytes_arrive() {
        let w = world(Duration::from_secs(75));
        let mut client = w.park(Instant::now());
        client.write_all(b"GET").unwrap();
        let run = tokio::task::LocalSet::new();
        let (stop, lot, resumed) = (w.stop.subscribe(), w.lot.clone(), w.resumed.clone());
        run.spawn_local(lot.run(stop));
        run.run_until(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while resumed.get() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(w.resumed.get(), 1);
        assert_eq!(w.lot.len(), 0);
    }

    #[tokio::test]
    async fn connections_parked_and_resumed_again_and_again_cost_no_memory() {
        let w = world(Duration::from_secs(75));
        let (_client, server) = pair(&w.listener);
        let mut fake = Fake {
            stream: server,
            idle_since: Instant::now(),
            resumed: w.resumed.clone(),
            closed: w.closed.clone(),
        };
        for _ in 0..10_000 {
            w.lot.park(fake, w.snapshot.track());
            let key = Key {
                index: 0,
                generation: w.lot.slots.borrow()[0].generation,
            };
            let (back, active) = w.lot.take(key).expect("parked");
            w.lot.epoll.get_ref().remove(back.fd()).unwrap();
            drop(active);
            fake = back;
        }
        assert!(
            w.lot.by_idle.borrow().len() <= 1025,
            "{} deadlines kept",
            w.lot.by_idle.borrow().len()
        );
        assert_eq!(w.lot.slots.borrow().len(), 1);
    }
}
