//! One client HTTP/2 connection: the handshake (within
//! `client_header_timeout`), then `h2` driven in this task while each
//! stream runs in a task of its own, until the connection ends:
//! - a graceful stop (a drain, a reload to a new generation, a binary
//!   upgrade) or `http2_idle_timeout` without streams sends GOAWAY in two
//!   steps (`h2`'s graceful shutdown: first the highest stream id, then,
//!   once a PING came back, the last one taken), and the connection ends
//!   once its streams are done;
//! - a flood (see `meter`) or a client whose window stays shut for
//!   `send_timeout` on every stream gets GOAWAY ENHANCE_YOUR_CALM, and the
//!   connection is dropped within a second whether or not it could be sent;
//! - `h2`'s own limits (concurrent streams, resets, header list size) end
//!   it with the GOAWAY it chose.
//!
//! A connection without streams for [`PARK_AFTER`] leaves its task for the
//! worker's parking lot (`parked`), its buffers given back and `h2`'s state
//! frozen, and gets a task again (`h2`'s connection thawed) when the client
//! sends bytes, at its idle timeout or on a drain.

use super::meter::{Flood, Metered};
use super::parked::{Counted, H2Io, Parked, Session};
use super::shared::Shared;
use super::stream;
use crate::downstream::park::{Parkable, ParkingLot, PARK_AFTER};
use crate::http::Scheme;
use crate::observe::access_log::TlsInfo;
use crate::state::{ActiveConnection, Snapshot};
use bytes::Bytes;
use h2::Reason;
use prefork_shared::config::Http2Limits;
use prefork_shared::Config;
use socket2::SockRef;
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{sleep_until, timeout_at, Instant};

/// Most response bytes `h2` holds for one stream beyond what the client's
/// window lets out: the worker buffers no more per stream.
const SEND_BUFFER: usize = 64 * 1024;
/// Streams the client reset that `h2` remembers (to ignore their late
/// frames), and for how long.
const RESET_STREAMS: usize = 64;
const RESET_MEMORY: Duration = Duration::from_secs(1);
/// Streams reset by the client before they were accepted (Rapid Reset
/// while the worker is busy): beyond this, GOAWAY ENHANCE_YOUR_CALM.
const PENDING_ACCEPT_RESETS: usize = 20;
/// Streams prefork had to reset for the client's errors (MadeYouReset,
/// CVE-2025-8671), over the connection's life: beyond this, GOAWAY
/// ENHANCE_YOUR_CALM. Streams refused beyond `http2_max_concurrent_streams`
/// count too, and a client may open hundreds before it has read the
/// server's SETTINGS: h2's default, which allows for that.
const LOCAL_ERROR_RESETS: usize = 1024;
/// How long a connection told to go away (idle, or flooding) may take to
/// end once it has no stream.
const GOODBYE: Duration = Duration::from_secs(1);

/// A stream `h2` accepted: its request, and where its response goes.
type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

/// The first wait before another try to park, after one found something
/// still buffered.
const PARK_RETRY: Duration = Duration::from_millis(20);

/// What woke the connection's task (a stream the client opened is
/// served as it is accepted).
enum Event {
    Accepted,
    Ended(Option<h2::Error>),
    Flood,
    Changed,
    Stop,
    Idle,
    Park,
    GiveUp,
}

/// What a connection's task starts with.
enum Start {
    /// Serving streams (a new connection, or one whose client sent bytes
    /// while it was parked).
    Serve,
    /// Going away: a parked connection's idle timeout, or a drain.
    GoAway,
}

/// Serves an HTTP/2 connection from a client to a destination (`addrs`:
/// the client's address and the one it connected to) over `io` (TLS
/// already removed, or plain with the preface still to read); idle, it
/// parks in `lot`.
pub(crate) async fn serve<T: H2Io>(
    snapshot: Rc<Snapshot>,
    io: T,
    addrs: (SocketAddr, SocketAddr),
    scheme: Scheme,
    tls: Option<TlsInfo>,
    active: ActiveConnection,
    lot: Option<Rc<ParkingLot<Parked<T>>>>,
) {
    let flood = Rc::new(Flood::default());
    let limits = &snapshot.config.http2;
    let handshake = builder(limits).handshake::<_, Bytes>(Metered::new(io, flood.clone()));
    let deadline = Instant::now() + snapshot.config.http.client_header_timeout;
    let Ok(Ok(conn)) = timeout_at(deadline, handshake).await else {
        return;
    };
    let stats = snapshot.stats().clone();
    stats.http2_connection(true);
    let shared = Rc::new(Shared::new(
        addrs,
        scheme,
        tls,
        snapshot.config.http.send_timeout,
    ));
    let session = Session {
        conn,
        shared,
        flood,
        counted: Counted(stats),
    };
    drive(snapshot, session, active, lot, Start::Serve).await;
}

/// Drives `session` until the connection ends, or until it parks in `lot`
/// (idle for [`PARK_AFTER`], nothing buffered).
async fn drive<T: H2Io>(
    snapshot: Rc<Snapshot>,
    mut session: Session<T>,
    mut active: ActiveConnection,
    lot: Option<Rc<ParkingLot<Parked<T>>>>,
    start: Start,
) {
    let stats = snapshot.stats().clone();
    let idle_timeout = snapshot.config.http2.idle_timeout;
    // Set once a GOAWAY was sent: prefork's reason is counted once.
    let mut going_away = false;
    // When the graceful GOAWAY was sent (a stop, or idle).
    let mut draining: Option<Instant> = None;
    // Once told to go away for misbehaving, the connection ends by then.
    let mut drop_at: Option<Instant> = None;
    // After a try to park found something still buffered (the answer to a
    // PING waits for the event loop's next turn), when that was and how
    // long until the next try: soon, then longer, up to PARK_AFTER.
    let mut retry: Option<(Instant, Duration)> = None;
    // What h2 gave when polled just before parking.
    let mut late = None;
    if let Start::GoAway = start {
        session.conn.graceful_shutdown();
        stats.http2_goaway(reason_index(Some(Reason::NO_ERROR)));
        going_away = true;
        draining = Some(Instant::now());
    }
    // Made once, not per stream: each registers a waiter when first polled.
    let mut stop = pin!(snapshot.on_change(|| snapshot.stopping()));
    // On a clone: the session moves to the lot if the connection parks.
    let mut changed = pin!(session.shared.clone().changed());
    let mut timer = pin!(sleep_until(Instant::now()));
    let mut timer_at = None;
    loop {
        let shared = &session.shared;
        let streams = shared.streams();
        let idle_at =
            (streams == 0 && draining.is_none()).then(|| shared.idle_since() + idle_timeout);
        // A connection without streams parks once idle for PARK_AFTER, if
        // its idle timeout is not due first (one woken past it by a frame
        // that opened no stream goes away instead).
        let park_at = idle_at
            .filter(|_| lot.is_some() && !going_away)
            .and_then(|idle_at| {
                let since = shared.idle_since();
                let at = match current(retry, since) {
                    Some((tried, wait)) => tried + wait,
                    None => since + PARK_AFTER,
                };
                (at < idle_at && Instant::now() < idle_at).then_some(at)
            });
        // A client that does not answer the drain's PING keeps a connection
        // without streams no longer than this.
        let give_up_at = match (drop_at, draining.filter(|_| streams == 0)) {
            (Some(at), _) => Some(at),
            (None, Some(since)) => Some(shared.idle_since().max(since) + GOODBYE),
            (None, None) => None,
        };
        let wake_at = give_up_at.or(park_at).or(idle_at);
        if let Some(at) = wake_at.filter(|at| timer_at != Some(*at)) {
            timer.as_mut().reset(at);
        }
        timer_at = wake_at;
        let event = match late.take() {
            Some(accepted) => on_accept(accepted, &snapshot, &session.shared),
            None => tokio::select! {
                biased;
                accepted = session.conn.accept() => on_accept(accepted, &snapshot, &session.shared),
                () = poll_fn(|cx| session.flood.poll_found(cx)), if !going_away => Event::Flood,
                () = changed.as_mut() => {
                    changed.set(session.shared.clone().changed());
                    Event::Changed
                }
                () = stop.as_mut(), if draining.is_none() => Event::Stop,
                () = timer.as_mut(), if wake_at.is_some() => {
                    if give_up_at.is_some() {
                        Event::GiveUp
                    } else if park_at.is_some() {
                        Event::Park
                    } else {
                        Event::Idle
                    }
                }
            },
        };
        match event {
            Event::Accepted => {}
            Event::Ended(Some(e)) => {
                if e.is_go_away() && !e.is_remote() && !going_away {
                    stats.http2_goaway(reason_index(e.reason()));
                }
                break;
            }
            Event::Ended(None) | Event::GiveUp => break,
            Event::Flood => {
                session.conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                stats.http2_goaway(reason_index(Some(Reason::ENHANCE_YOUR_CALM)));
                going_away = true;
                drop_at = Some(Instant::now() + GOODBYE);
            }
            Event::Changed => {
                if session.shared.stalled() && !going_away {
                    session.conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    stats.http2_goaway(reason_index(Some(Reason::ENHANCE_YOUR_CALM)));
                    going_away = true;
                    drop_at = Some(Instant::now() + GOODBYE);
                }
            }
            Event::Stop | Event::Idle => {
                if !going_away {
                    session.conn.graceful_shutdown();
                    stats.http2_goaway(reason_index(Some(Reason::NO_ERROR)));
                    going_away = true;
                }
                draining = Some(Instant::now());
            }
            Event::Park => {
                // The wakers h2 and the meter keep would keep this task's
                // memory while the connection is parked: the meter forgets
                // its own, and h2 is polled once more with one that does
                // nothing (it has nothing to do: it was polled first). If it
                // has something after all, that is handled as usual.
                session.flood.forget_waker();
                let mut noop = Context::from_waker(Waker::noop());
                if let Poll::Ready(accepted) = session.conn.poll_accept(&mut noop) {
                    late = Some(accepted);
                    continue;
                }
                // What h2 and TLS still hold is all there is.
                let conn = &mut session.conn;
                let quiet = conn.get_mut().get_mut().is_drained() && conn.release_idle_memory();
                if let (true, Some(lot)) = (quiet, lot.as_ref()) {
                    conn.get_mut().get_mut().socket_mut().unregister();
                    match lot.park(Parked::new(session), active) {
                        None => return,
                        // The lot cannot watch it: it waits in its task.
                        Some((parked, given_back)) => {
                            session = parked.into_session(&builder(&snapshot.config.http2));
                            // Made again, it changes on a new `Shared`.
                            changed.set(session.shared.clone().changed());
                            active = given_back;
                        }
                    }
                }
                let wait = current(retry, session.shared.idle_since())
                    .map_or(PARK_RETRY, |(_, wait)| (wait * 2).min(PARK_AFTER));
                retry = Some((Instant::now(), wait));
            }
        }
    }
    drop(active);
}

/// The failed try to park, `retry`, if it still counts: no stream came
/// since it (the connection idle since `since`); else tries start over.
fn current(retry: Option<(Instant, Duration)>, since: Instant) -> Option<(Instant, Duration)> {
    retry.filter(|(tried, _)| *tried >= since)
}

/// What a connection does with what `h2` accepted: a stream is served in a
/// task of its own.
fn on_accept(
    accepted: Option<Result<Accepted, h2::Error>>,
    snapshot: &Rc<Snapshot>,
    shared: &Rc<Shared>,
) -> Event {
    match accepted {
        Some(Ok((req, respond))) => {
            let open = shared.stream_opened();
            let task = stream::serve(snapshot.latest(), shared.clone(), open, req, respond);
            tokio::task::spawn_local(Box::pin(task));
            Event::Accepted
        }
        Some(Err(e)) => Event::Ended(Some(e)),
        None => Event::Ended(None),
    }
}

/// `h2`'s server with every limit it has set: none is left to a default
/// that may change.
fn builder(limits: &Http2Limits) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .initial_window_size(limits.initial_window_size)
        .initial_connection_window_size(limits.initial_connection_window_size)
        .max_frame_size(16_384)
        .header_table_size(4096)
        .max_send_buffer_size(SEND_BUFFER)
        .max_concurrent_reset_streams(RESET_STREAMS)
        .reset_stream_duration(RESET_MEMORY)
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .data_frame_budget(limits.initial_connection_window_size as usize / 2);
    b
}

/// Where `reason` is counted in
/// [`prefork_shared::stats::GOAWAY_REASONS`].
fn reason_index(reason: Option<Reason>) -> usize {
    match reason {
        Some(Reason::NO_ERROR) => 0,
        Some(Reason::PROTOCOL_ERROR) => 1,
        Some(Reason::FLOW_CONTROL_ERROR) => 2,
        Some(Reason::FRAME_SIZE_ERROR) => 3,
        Some(Reason::COMPRESSION_ERROR) => 4,
        Some(Reason::ENHANCE_YOUR_CALM) => 5,
        _ => 6,
    }
}

impl<T: H2Io> Parkable for Parked<T> {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn idle_since(&self) -> Instant {
        Parked::idle_since(self)
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.client())
    }

    fn has_unread(&self) -> bool {
        // SAFETY: the descriptor belongs to the session's socket, which
        // `self` owns: it stays open while borrowed here.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let mut probe = [MaybeUninit::uninit(); 1];
        matches!(SockRef::from(&fd).peek(&mut probe), Ok(n) if n > 0)
    }

    fn idle_timeout(config: &Config) -> Duration {
        config.http2.idle_timeout
    }

    const CLOSES_AT_ONCE: bool = true;

    fn close(self) {
        // GOAWAY as far as the socket takes it now (an idle one takes it
        // all), then the close: h2 writes and shuts down in this one poll.
        // A connection made again only for this: the limits it is made with
        // (on streams) do not matter.
        let mut session = self.into_session(&builder(&Http2Limits::default()));
        session.conn.abrupt_shutdown(Reason::NO_ERROR);
        let stats = session.counted.stats();
        stats.http2_goaway(reason_index(Some(Reason::NO_ERROR)));
        let _ = session
            .conn
            .poll_accept(&mut Context::from_waker(Waker::noop()));
    }

    fn go_away(self, snapshot: Option<Rc<Snapshot>>, active: ActiveConnection) {
        match snapshot {
            // It goes away as one in its task does: GOAWAY, then the close
            // once the client has seen it.
            Some(snapshot) => {
                let session = self.into_session(&builder(&snapshot.config.http2));
                let task = drive(snapshot, session, active, None, Start::GoAway);
                tokio::task::spawn_local(Box::pin(task));
            }
            // The worker is exiting.
            None => self.close(),
        }
    }

    fn resume(self, snapshot: Rc<Snapshot>, lot: &Rc<ParkingLot<Self>>, active: ActiveConnection) {
        let session = self.into_session(&builder(&snapshot.config.http2));
        let task = drive(snapshot, session, active, Some(lot.clone()), Start::Serve);
        tokio::task::spawn_local(Box::pin(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::client_socket::ClientSocket;
    use crate::testing::config;
    use std::os::fd::AsRawFd;
    use tokio::time::{sleep, timeout};

    /// Generous: the idle timeout is 2 s.
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn get(send: &mut h2::client::SendRequest<Bytes>) -> u16 {
        let request = http::Request::get("http://fixed.test/").body(()).unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = timeout(DEADLINE, response).await.unwrap().unwrap();
        response.status().as_u16()
    }

    /// A park the lot refuses leaves the connection in its task, waiting on
    /// the session made again: once its next stream ends, it still goes
    /// away at its idle timeout.
    #[test]
    fn after_a_refused_park_the_connection_still_sees_its_streams_end() {
        crate::testing::run_local(async {
            let mut config = config(prefork_testkit::origins::refused_addr());
            config.http2.idle_timeout = Duration::from_secs(2);
            let (snapshot, _stop) = crate::testing::snapshot(config);
            let lot = ParkingLot::new(snapshot.newest(), snapshot.stats().clone()).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let server = server.into_std().unwrap();
            lot.watch_before_parking(server.as_raw_fd());
            let serving = serve(
                snapshot.clone(),
                ClientSocket::new(server),
                (peer, addr),
                Scheme::Http,
                None,
                snapshot.track(),
                Some(lot.clone()),
            );
            tokio::task::spawn_local(serving);
            let (mut send, conn) = h2::client::handshake(client).await.unwrap();
            let conn = tokio::task::spawn_local(conn);

            assert_eq!(get(&mut send).await, 201);
            let refused = async {
                while lot.refused() == 0 {
                    sleep(Duration::from_millis(20)).await;
                }
            };
            timeout(DEADLINE, refused).await.expect("a park tried");
            assert_eq!(get(&mut send).await, 201, "served in its task");
            let ended = timeout(DEADLINE, conn).await;
            assert!(ended.is_ok(), "not sent away at its idle timeout");
            assert_eq!(lot.len(), 0);
        });
    }
}
