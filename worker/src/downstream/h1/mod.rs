//! The HTTP/1.1 session: one client connection's keep-alive loop. It reads
//! request heads (`read`), hands each request to the proxy core, and is the
//! core's [`Downstream`](crate::proxy::Downstream) for it: the request body
//! comes from the connection (`body`), the response goes to it (`sink`),
//! and prefork's own answers and the lingering close are its own
//! (`session`). `LIFECYCLE.md` beside this file draws the connection's
//! states.

mod body;
mod read;
mod session;
mod sink;

use crate::downstream::park::{Parkable, ParkingLot};
use crate::downstream::Carried;
use crate::http::heads::{self, ConnectionField};
use crate::http::{Framing, Scheme, Version};
use crate::io::client_socket::ClientSocket;
use crate::io::client_stream::ClientStream;
use crate::io::timed::TimedOut;
use crate::observe::access_log::TlsInfo;
use crate::proxy::error::ClientError;
use crate::proxy::{self, RequestCtx};
use crate::state::{ActiveConnection, Snapshot};
use read::HeadEnd;
use session::Session;
use slog::warn;
use socket2::SockRef;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// One client connection.
pub(crate) struct Connection {
    /// The configuration it serves under (the newest, between requests).
    snapshot: Rc<Snapshot>,
    /// The HTTP/1.1 side: the socket and what requests and responses need.
    session: Session,
    /// The proxy core's state of the current request.
    ctx: RequestCtx,
    /// Requests served so far.
    served: u64,
    /// When the connection last had nothing to do: accepted, or done with a
    /// request (the clock is read once per request, at its start).
    idle_since: Instant,
    /// Bytes may wait that the event loop has not reported: a connection
    /// just accepted or resumed reads before it waits.
    unseen: bool,
    /// Where it waits for its next request once idle for a while (`None`:
    /// the worker could not make one; it waits in its task).
    lot: Option<Rc<ParkingLot<Idle>>>,
    /// Counts the connection as open until it is dropped, after the socket.
    active: ActiveConnection,
}

/// How a connection's task ends.
enum End {
    /// The connection closes.
    Closed,
    /// It is idle: it leaves its task for the parking lot.
    Park,
}

impl Connection {
    /// A connection just accepted from `peer` (to `carried`, if a PROXY
    /// header said so).
    pub(crate) fn new(
        snapshot: Rc<Snapshot>,
        stream: ClientSocket,
        (peer, carried): (SocketAddr, Carried),
        active: ActiveConnection,
        lot: Option<Rc<ParkingLot<Idle>>>,
    ) -> Self {
        let scratch = snapshot.buffers().take_scratch();
        let (ctx, response_head) = RequestCtx::new(peer, Scheme::Http, scratch);
        let stream = ClientStream::Plain(stream);
        let session = Session::new(stream, response_head, carried);
        Connection::with(snapshot, session, ctx, active, lot)
    }

    /// A connection from `peer` (to `carried`, if a PROXY header said so)
    /// whose TLS handshake is done: `info` says what was negotiated.
    pub(crate) fn tls(
        snapshot: Rc<Snapshot>,
        stream: ClientStream,
        (peer, carried): (SocketAddr, Carried),
        active: ActiveConnection,
        info: TlsInfo,
        lot: Option<Rc<ParkingLot<Idle>>>,
    ) -> Self {
        let scratch = snapshot.buffers().take_scratch();
        let (mut ctx, response_head) = RequestCtx::new(peer, Scheme::Https, scratch);
        ctx.set_tls(info);
        let session = Session::new(stream, response_head, carried);
        Connection::with(snapshot, session, ctx, active, lot)
    }

    fn with(
        snapshot: Rc<Snapshot>,
        session: Session,
        ctx: RequestCtx,
        active: ActiveConnection,
        lot: Option<Rc<ParkingLot<Idle>>>,
    ) -> Self {
        Connection {
            snapshot,
            session,
            ctx,
            served: 0,
            idle_since: Instant::now(),
            unseen: true,
            lot,
            active,
        }
    }

    /// A parked connection given a task again.
    fn resumed(
        snapshot: Rc<Snapshot>,
        idle: Idle,
        active: ActiveConnection,
        lot: Rc<ParkingLot<Idle>>,
    ) -> Self {
        let Idle {
            stream,
            client,
            carried,
            tls,
            served,
            idle_since,
            nodelay,
        } = idle;
        let socket = ClientSocket::new(stream);
        let peer = (client, carried);
        let mut conn = match tls {
            IdleTls::Plain => Connection::new(snapshot, socket, peer, active, Some(lot)),
            IdleTls::Tls(tls) => {
                let info = TlsInfo::of(&tls);
                let stream = ClientStream::tls(socket, tls);
                Connection::tls(snapshot, stream, peer, active, info, Some(lot))
            }
        };
        conn.session.nodelay = nodelay;
        conn.served = served;
        conn.idle_since = idle_since;
        conn
    }

    /// Serves requests until the connection closes, or parks.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> {
        // An async block, not an async fn: an async fn's future keeps its
        // argument and a moved copy of it, twice the connection's bytes in
        // every connection's future (and its memory when idle).
        async move {
            // Each wait on one side gets its own timer, reused from request to
            // request: its deadline then only ever moves later (see
            // `timed_until`). Neither is set before it is needed.
            let mut client_timer = pin!(sleep(Duration::ZERO));
            let mut upstream_timer = pin!(sleep(Duration::ZERO));
            let end = loop {
                // Between requests: take the newest configuration (hot reload).
                let snapshot = self.snapshot.latest();
                self.snapshot = snapshot.clone();
                let request = self.read_request(&snapshot, client_timer.as_mut()).await;
                let started = Instant::now();
                let done = match request {
                    Ok(req) => {
                        self.served += 1;
                        if !req.keep_alive {
                            self.active.closing();
                        }
                        self.session.body_unread =
                            !matches!(req.body, Framing::Empty | Framing::Length(0));
                        proxy::serve(
                            &mut self.session,
                            &self.ctx,
                            &snapshot,
                            &req,
                            upstream_timer.as_mut(),
                        )
                        .await
                    }
                    Err(HeadEnd::Closed) => break End::Closed,
                    Err(HeadEnd::Park) => break End::Park,
                    Err(HeadEnd::Reconfigured) => continue,
                    Err(HeadEnd::Timeout) => {
                        self.ctx.unknown(&snapshot);
                        self.session
                            .answer_error(&snapshot, Version::Http11, 408)
                            .await
                    }
                    Err(HeadEnd::Invalid(e)) => {
                        warn!(snapshot.log, "bad request"; "client" => %self.ctx.client, "error" => %e, "request_id" => &self.ctx.request_id);
                        self.session
                            .answer_error(&snapshot, Version::Http11, e.status())
                            .await
                    }
                };
                let took = started.elapsed();
                self.idle_since = started + took;
                self.ctx.record(&snapshot, &done.served, took);
                if done.close {
                    // Answered: what is left is the close, lingering perhaps
                    // for seconds; it no longer weighs on the load board.
                    self.active.closing();
                    self.session.close(&snapshot, done.served.status).await;
                    break End::Closed;
                }
            };
            self.give_back_buffers();
            if let End::Park = end {
                self.park();
            }
        }
    }

    /// Gives the per-request buffers back to the worker's free lists.
    fn give_back_buffers(&mut self) {
        let buffers = self.snapshot.buffers();
        let response_head = std::mem::take(&mut self.session.response_head);
        buffers.put_scratch(self.ctx.take_scratch(response_head));
        if self.session.buf.capacity() > 0 {
            buffers.put_head(std::mem::take(&mut self.session.buf));
        }
    }

    /// Parks the connection (its buffers given back): it leaves its task.
    fn park(self) {
        let Connection {
            session,
            served,
            idle_since,
            lot,
            active,
            ctx,
            ..
        } = self;
        if let Some(lot) = lot {
            let (socket, tls) = session.stream.into_parts();
            let idle = Idle {
                stream: socket.into_std(),
                client: ctx.client,
                carried: session.carried,
                tls: tls.map_or(IdleTls::Plain, IdleTls::Tls),
                served,
                idle_since,
                nodelay: session.nodelay,
            };
            // Given back if the lot cannot watch it: it closes.
            drop(lot.park(idle, active));
        }
    }
}

/// An idle connection parked outside its task: what resumes it.
pub(crate) struct Idle {
    /// The client socket.
    stream: std::net::TcpStream,
    /// The client's address: the socket's peer, or the one a PROXY
    /// protocol header carried (which the socket cannot tell again).
    client: SocketAddr,
    /// The address it connected to, if a PROXY header carried it.
    carried: Carried,
    /// What it keeps of TLS, if it speaks it.
    tls: IdleTls,
    /// Requests served so far.
    served: u64,
    /// When it finished its last request.
    idle_since: Instant,
    /// Whether TCP_NODELAY is set on it.
    nodelay: bool,
}

/// The TLS side of a parked connection.
enum IdleTls {
    /// Plain HTTP: nothing.
    Plain,
    /// rustls's state (keys, sequence numbers, its buffers as small as
    /// rustls leaves them): the connection goes on with it when resumed.
    Tls(Box<rustls::ServerConnection>),
}

impl Parkable for Idle {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn idle_since(&self) -> Instant {
        self.idle_since
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.client)
    }

    fn has_unread(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::uninit(); 1];
        matches!(SockRef::from(&self.stream).peek(&mut probe), Ok(n) if n > 0)
    }

    fn close(self) {
        // A TLS client is told the connection ends (then the FIN): it
        // reads an orderly end, not a truncation.
        if let IdleTls::Tls(mut tls) = self.tls {
            let socket = ClientSocket::new(self.stream);
            crate::io::client_stream::close_notify(&socket, &mut tls);
            let _ = socket.shut_write();
        }
    }

    fn resume(self, snapshot: Rc<Snapshot>, lot: &Rc<ParkingLot<Self>>, active: ActiveConnection) {
        // A client gone meanwhile has no address left: it closes.
        if self.stream.peer_addr().is_err() {
            return;
        }
        let conn = Connection::resumed(snapshot, self, active, lot.clone());
        // Boxed as a connection just accepted is (see `accept.rs`).
        tokio::task::spawn_local(Box::pin(conn.run()));
    }
}

/// Acknowledges what a client sent at once and keeps quick ACKs on for a
/// while: called when more of a request is due. Listeners start connections
/// with delayed ACKs (the ACK rides on the response), but a client that
/// leaves Nagle's algorithm on holds its next small segment until it sees
/// the ACK of the last one: up to a delayed-ACK timeout (40 ms) per wait.
fn ack_now(stream: &ClientStream) {
    // A failure costs at most that delay; the request goes on regardless.
    let _ = stream.sock_ref().set_tcp_quickack(true);
}

/// Sets TCP_NODELAY on a client connection, once: request/response traffic
/// wants latency, not Nagle's batching. Callers skip it for a connection's
/// last response when all of it is at hand: it leaves in one write followed
/// at once by the FIN (`write_last_within`), which sends whatever was held
/// back. A `Connection: close` request then costs one system call less
/// (nginx, too, sets it only once a connection is kept alive).
fn set_nodelay(stream: &ClientStream, done: &mut bool) {
    if !*done {
        *done = true;
        let _ = stream.sock_ref().set_tcp_nodelay(true);
    }
}

/// The `Connection` field for a response to a client of `version`.
fn connection_field(version: Version, close: bool) -> ConnectionField {
    match (close, version) {
        (true, _) => ConnectionField::Close,
        (false, Version::Http10) => ConnectionField::KeepAlive,
        (false, Version::Http11 | Version::Http2) => ConnectionField::Omit,
    }
}

/// Completes a response head in `out` for a client of `version`.
fn finish_head(
    out: &mut Vec<u8>,
    version: Version,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
) {
    heads::finish_head(
        out,
        content_length,
        chunked,
        connection_field(version, close),
    );
}

/// A write to the client, as the proxy core sees its failure.
fn client_result(written: Result<std::io::Result<()>, TimedOut>) -> Result<(), ClientError> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ClientError::Write(e)),
        Err(_) => Err(ClientError::WriteTimeout),
    }
}

#[cfg(test)]
mod tests;
