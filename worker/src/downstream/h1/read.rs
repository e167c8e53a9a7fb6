//! Reading request heads: waiting idle between requests, the header
//! timeout, a stop or a new configuration while idle, and parsing.

use super::Connection;
use crate::downstream::park::PARK_AFTER;
use crate::http::request::{self, RequestError};
use crate::http::with_header_slots;
use crate::io::client_socket::is_register_error;
use crate::io::client_stream::ClientStream;
use crate::io::timed::timed_until;
use crate::proxy::Request;
use crate::state::buffers::{Buffers, HEAD_BUFFER};
use crate::state::Snapshot;
use bytes::{Buf, BytesMut};
use slog::error;
use std::pin::Pin;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, Interest};
use tokio::time::{Instant, Sleep};

/// Spare room below which the read buffer grows before a read.
const MIN_SPARE: usize = 1024;

/// Why no request head could be read.
pub(super) enum HeadEnd {
    /// The client closed or stayed idle too long, or the worker is stopping.
    Closed,
    /// `client_header_timeout` passed.
    Timeout,
    /// The head was refused.
    Invalid(RequestError),
    /// A new configuration arrived while idle: read the next request under it.
    Reconfigured,
    /// Idle for [`PARK_AFTER`] after a request: the connection leaves its
    /// task for the parking lot.
    Park,
}

impl Connection {
    /// Reads what a connection just accepted, or just resumed from the
    /// parking lot, has sent, without waiting: its request is there already
    /// (with `TCP_DEFER_ACCEPT`, or as the lot saw), while the event loop
    /// would report the socket readable only on its next turn.
    fn read_first(&mut self, snapshot: &Snapshot) {
        let session = &mut self.session;
        if !session.buf.is_empty() {
            return;
        }
        // TLS bytes go through rustls: its stream's first read waits.
        let Some(socket) = session.stream.plain() else {
            return;
        };
        let buffers = snapshot.buffers();
        let mut head = buffers.take_head();
        match socket.sock_ref().recv(head.spare_capacity_mut()) {
            Ok(n) if n > 0 => {
                // SAFETY: recv initialised the first n bytes of the spare
                // capacity.
                unsafe { head.set_len(head.len() + n) };
                session.buf = head;
                snapshot.stats().read(n);
            }
            // Nothing yet, the end, or an error (consumed here: the waiting
            // read then sees the end).
            _ => buffers.put_head(head),
        }
    }

    /// Reads until a complete request head is buffered; `timer` times the
    /// wait.
    pub(super) async fn read_request<'s>(
        &mut self,
        snapshot: &'s Rc<Snapshot>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Request<'s>, HeadEnd> {
        let (served, idle_since) = (self.served, self.idle_since);
        let limits = &snapshot.config.http;
        // The first request is due within the header timeout of the accept;
        // later ones within it of their first byte, after an idle wait.
        let mut deadline = (served == 0).then(|| idle_since + limits.client_header_timeout);
        // Set once a stop was seen while this fresh connection had sent nothing.
        let mut stop_grace = false;
        // Set once rustls was found holding bytes when the connection was to park.
        let mut stay = false;
        if std::mem::take(&mut self.unseen) {
            self.read_first(snapshot);
        }
        loop {
            if !self.session.buf.is_empty() {
                if let Some(req) = self.parse_request(snapshot, served)? {
                    return Ok(req);
                }
                deadline.get_or_insert_with(|| Instant::now() + limits.client_header_timeout);
                super::ack_now(&self.session.stream);
            }
            let session = &mut self.session;
            let idle = session.buf.is_empty();
            // No deadline yet: this is the first pass, at `idle_since`.
            let until = deadline.unwrap_or(idle_since + limits.keepalive_timeout);
            // A connection idle after a request parks once idle for
            // PARK_AFTER (unless its timeout comes first): the timer that
            // times the wait tells when.
            let park_at = (deadline.is_none() && served > 0 && self.lot.is_some() && !stay)
                .then(|| idle_since + PARK_AFTER)
                .filter(|at| *at < until);
            let read = tokio::select! {
                // Bytes already sent win over a stop: they are a request to answer.
                biased;
                read = timed_until(timer.as_mut(), park_at.unwrap_or(until), read_head(&session.stream, &mut session.buf, snapshot.buffers())) => read,
                () = snapshot.on_change(|| snapshot.stopping() || snapshot.superseded()), if idle && !stop_grace => {
                    if !snapshot.stopping() {
                        return Err(HeadEnd::Reconfigured);
                    }
                    // The client may be sending a request right now: closing
                    // at once would reset it. Answer what arrives meanwhile
                    // (with `Connection: close`), close once quiet.
                    stop_grace = true;
                    let close_at = snapshot.drain_close_at(idle_since, self.ctx.client, served);
                    // Never later than the wait's own limit (the header
                    // timeout, or keepalive_timeout while idle).
                    deadline = Some(until.min(close_at));
                    continue;
                }
            };
            match read {
                Err(_) if park_at.is_some() => {
                    if self.session.stream.tls_drained() {
                        return Err(HeadEnd::Park);
                    }
                    // rustls holds bytes of this connection's: it waits on
                    // here, as an unparked connection does.
                    stay = true;
                }
                Err(_) if stop_grace && self.session.buf.is_empty() => return Err(HeadEnd::Closed),
                Err(_) if deadline.is_some() => return Err(HeadEnd::Timeout),
                Ok(Ok(n)) if n > 0 => snapshot.stats().read(n),
                Ok(Err(e)) if is_register_error(&e) => {
                    error!(snapshot.log, "closing a connection the event loop cannot watch"; "client" => %self.ctx.client, "error" => %e);
                    return Err(HeadEnd::Closed);
                }
                // Idle timeout, EOF or a reset: nothing to answer.
                _ => return Err(HeadEnd::Closed),
            }
        }
    }

    /// Parses the buffered head and begins the request with the proxy core
    /// (routing it); `Ok(None)` when incomplete.
    fn parse_request<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        served: u64,
    ) -> Result<Option<Request<'s>>, HeadEnd> {
        let limits = &snapshot.config.http;
        let last = served + 1 >= limits.keepalive_requests;
        let Connection { session, ctx, .. } = self;
        let parsed = with_header_slots(limits.max_request_headers, |slots| {
            let Some(head) = request::parse(&session.buf, limits, slots)? else {
                return Ok(None);
            };
            session.version = head.version;
            let req = ctx.begin(snapshot, &head, last);
            Ok(Some((head.len, req)))
        });
        match parsed {
            Ok(Some((len, req))) => {
                self.session.buf.advance(len);
                Ok(Some(req))
            }
            Ok(None) => Ok(None),
            Err(RequestError::Syntax(httparse::Error::Version)) => {
                self.parse_later_minor(snapshot, served)
            }
            Err(e) => {
                self.ctx.unknown(snapshot);
                Err(HeadEnd::Invalid(e))
            }
        }
    }

    /// Parses again a head whose version httparse refused, if it is a later
    /// HTTP/1 minor one, read as 1.1 (see `read_later_minor_as_1_1`). Out of
    /// line: the usual request's parse stays as lean as before.
    #[cold]
    #[inline(never)]
    fn parse_later_minor<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        served: u64,
    ) -> Result<Option<Request<'s>>, HeadEnd> {
        match request::read_later_minor_as_1_1(&mut self.session.buf) {
            Ok(()) => self.parse_request(snapshot, served),
            Err(e) => {
                self.ctx.unknown(snapshot);
                Err(HeadEnd::Invalid(e))
            }
        }
    }
}

/// Reads more of a request head into `buf`. A connection waiting idle for
/// its next request holds no buffer: it goes back to the worker's free list
/// before the wait and one is taken again once bytes arrive (as nginx
/// does), which keeps idle keep-alive connections cheap.
async fn read_head(
    mut stream: &ClientStream,
    buf: &mut BytesMut,
    buffers: &Buffers,
) -> std::io::Result<usize> {
    if buf.is_empty() {
        if buf.capacity() > 0 {
            buffers.put_head(std::mem::take(buf));
        }
        stream.ready(Interest::READABLE).await?;
        *buf = buffers.take_head();
    }
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(HEAD_BUFFER);
    }
    stream.read_buf(buf).await
}
