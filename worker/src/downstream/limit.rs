//! The connection budget where connections are accepted. At
//! `max_connections` a worker closes its oldest parked (idle keep-alive)
//! connection to make room, as nginx does; with none parked it stops
//! accepting until a connection closes or parks (the listener's queue holds
//! new clients meanwhile, and other workers on a shared socket take them).
//! An accept that fails for want of a descriptor (`EMFILE`, `ENFILE`) makes
//! room the same way. Both are counted for `/metrics` and logged at most
//! once a second, with how many happened since the line before.

use crate::downstream::park::{Parkable, ParkingLot};
use crate::state::Snapshot;
use slog::{error, warn};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// Pause after an accept error other than a full descriptor table, or
/// while one stays full with nothing to close, so that the loop does not
/// spin (a connection closing ends it sooner).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where idle connections wait that can be closed to make room.
pub(crate) trait Evict {
    /// Closes the connection idle longest; whether one closed.
    fn evict_oldest(&self) -> bool;
}

impl<P: Parkable> Evict for Rc<ParkingLot<P>> {
    fn evict_oldest(&self) -> bool {
        ParkingLot::evict_oldest(self)
    }
}

/// Makes room for one more connection if the worker holds
/// `max_connections`, by closing the oldest parked ones; returns whether
/// there is room (if not, wait with [`room_made`]).
pub(crate) fn make_room(snapshot: &Snapshot, lot: Option<&impl Evict>) -> bool {
    if !snapshot.full() {
        return true;
    }
    let stats = snapshot.stats();
    if let Some(times) = stats.limit_reached(Instant::now()) {
        warn!(snapshot.log, "max_connections reached: the oldest idle connections close to make room, or accepting waits";
            "max_connections" => snapshot.max_connections(), "times" => times);
    }
    while snapshot.full() {
        if !lot.is_some_and(|lot| lot.evict_oldest()) {
            return false;
        }
        stats.evicted();
    }
    true
}

/// Whether a connection waits in `listener`'s queue now (asked of the
/// kernel, where tokio's readiness flag may be stale).
pub(crate) fn queued(listener: &std::net::TcpListener) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    // An error: let the accept tell.
    n != 0 && (n < 0 || fd.revents & libc::POLLIN != 0)
}

/// Resolves once a connection closed or parked, or a stop or a new
/// configuration came; `false` on a stop.
pub(crate) async fn room_made(snapshot: &Rc<Snapshot>) -> bool {
    tokio::select! {
        biased;
        () = snapshot.on_change(|| snapshot.stopping() || snapshot.superseded()) => {}
        () = snapshot.room_made() => {}
    }
    !snapshot.stopping()
}

/// Handles an accept (or readiness) error on the listener at `listen`: a
/// full descriptor table closes the oldest parked connection and tries
/// again at once; otherwise the loop waits a moment, or until a connection
/// closes. Logged at most once a second.
pub(crate) async fn accept_failed(
    snapshot: &Snapshot,
    lot: Option<&impl Evict>,
    listen: impl FnOnce() -> String,
    e: &io::Error,
) {
    let fd_exhausted = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    let stats = snapshot.stats();
    if let Some(times) = stats.accept_failed(fd_exhausted, Instant::now()) {
        error!(snapshot.log, "accept failed"; "listen" => listen(), "error" => %e, "times" => times);
    }
    if fd_exhausted && lot.is_some_and(|lot| lot.evict_oldest()) {
        stats.evicted();
        return;
    }
    tokio::select! {
        () = snapshot.room_made() => {}
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ActiveConnection;
    use crate::stop::Stop;
    use crate::testing::config;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use tokio::sync::watch;

    /// A parked connection: the server side of a loopback pair.
    struct Fake(TcpStream);

    impl Parkable for Fake {
        fn fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn idle_since(&self) -> Instant {
            Instant::now()
        }
        fn peer(&self) -> Option<SocketAddr> {
            None
        }
        fn has_unread(&self) -> bool {
            false
        }
        fn resume(self, _: Rc<Snapshot>, _: &Rc<ParkingLot<Self>>, _: ActiveConnection) {}
    }

    fn snapshot(max: u64) -> (Rc<Snapshot>, watch::Sender<Stop>) {
        let mut config = config(prefork_testkit::origins::refused_addr());
        config.max_connections = Some(max);
        crate::testing::snapshot(config)
    }

    #[tokio::test]
    async fn below_the_limit_nothing_closes_and_nothing_is_counted() {
        let (snapshot, _stop) = snapshot(2);
        let _one = snapshot.track();
        assert!(make_room(&snapshot, None::<&Rc<ParkingLot<Fake>>>));
        assert_eq!(snapshot.stats_snapshot().limits.reached, 0);
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_parked_connection_closes_to_make_room() {
        let (snapshot, _stop) = snapshot(2);
        let lot = ParkingLot::new(snapshot.newest(), snapshot.stats().clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
            let (server, _) = listener.accept().unwrap();
            lot.park(Fake(server), snapshot.track());
        }
        assert!(make_room(&snapshot, Some(&lot)));
        assert_eq!((snapshot.active_connections(), lot.len()), (1, 1));
        let limits = snapshot.stats_snapshot().limits;
        assert_eq!((limits.reached, limits.evicted), (1, 1));
    }

    #[tokio::test]
    async fn at_the_limit_with_nothing_parked_accepting_waits() {
        let (snapshot, _stop) = snapshot(1);
        let busy = snapshot.track();
        assert!(!make_room(&snapshot, None::<&Rc<ParkingLot<Fake>>>));
        assert_eq!(snapshot.stats_snapshot().limits.reached, 1);
        // A connection closing wakes the wait; there is room again.
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let waiting = tokio::task::spawn_local({
                    let snapshot = snapshot.clone();
                    async move { snapshot.room_made().await }
                });
                tokio::task::yield_now().await;
                drop(busy);
                tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
                    .await
                    .expect("woken")
                    .unwrap();
            })
            .await;
        assert!(make_room(&snapshot, None::<&Rc<ParkingLot<Fake>>>));
    }

    #[tokio::test]
    async fn a_full_descriptor_table_closes_a_parked_connection_and_is_counted() {
        let (snapshot, _stop) = snapshot(10);
        let lot = ParkingLot::new(snapshot.newest(), snapshot.stats().clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        lot.park(Fake(server), snapshot.track());
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        accept_failed(&snapshot, Some(&lot), String::new, &emfile).await;
        let limits = snapshot.stats_snapshot().limits;
        assert_eq!((limits.fd_exhausted, limits.evicted, lot.len()), (1, 1, 0));
    }
}
