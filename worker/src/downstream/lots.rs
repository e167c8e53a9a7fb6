//! The worker's parking lots, one per kind of idle connection: HTTP/1.1
//! (plain or TLS), HTTP/2 over plain TCP, HTTP/2 over TLS. Each watches
//! its parked sockets in a task of its own (see `park`).

use crate::downstream::h1::Idle;
use crate::downstream::h2;
use crate::downstream::limit::Evict;
use crate::downstream::park::ParkingLot;
use crate::io::client_socket::ClientSocket;
use crate::io::tls_stream::TlsIo;
use crate::observe::stats::Stats;
use crate::state::Newest;
use crate::stop::Stop;
use std::io;
use std::rc::Rc;
use tokio::sync::watch;

/// The parking lots of one worker process.
pub(crate) struct Lots {
    /// Idle HTTP/1.1 connections.
    pub(crate) h1: Rc<ParkingLot<Idle>>,
    /// Idle HTTP/2 connections over plain TCP (h2c).
    pub(crate) h2c: Rc<ParkingLot<h2::Parked<ClientSocket>>>,
    /// Idle HTTP/2 connections over TLS.
    pub(crate) h2_tls: Rc<ParkingLot<h2::Parked<TlsIo>>>,
}

impl Lots {
    /// Empty lots for the worker whose newest snapshot `newest` finds,
    /// each watching until the worker stops (`stop`).
    pub(crate) fn start(
        newest: &Newest,
        stats: &Rc<Stats>,
        stop: &watch::Receiver<Stop>,
    ) -> io::Result<Rc<Lots>> {
        let lots = Lots {
            h1: ParkingLot::new(newest.clone(), stats.clone())?,
            h2c: ParkingLot::new(newest.clone(), stats.clone())?,
            h2_tls: ParkingLot::new(newest.clone(), stats.clone())?,
        };
        tokio::task::spawn_local(lots.h1.clone().run(stop.clone()));
        tokio::task::spawn_local(lots.h2c.clone().run(stop.clone()));
        tokio::task::spawn_local(lots.h2_tls.clone().run(stop.clone()));
        Ok(Rc::new(lots))
    }
}

impl Evict for Lots {
    /// The oldest parked HTTP/1.1 connection first, then HTTP/2 ones (their
    /// clients are told with a GOAWAY).
    fn evict_oldest(&self) -> bool {
        self.h1.evict_oldest() || self.h2c.evict_oldest() || self.h2_tls.evict_oldest()
    }
}

/// The HTTP/1.1 lot of `lots`, if the worker has lots.
pub(crate) fn h1(lots: &Option<Rc<Lots>>) -> Option<Rc<ParkingLot<Idle>>> {
    lots.as_ref().map(|lots| lots.h1.clone())
}
