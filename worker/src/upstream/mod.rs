//! Upstream groups: server choice (balancing and health) and a per-worker
//! pool of idle keep-alive connections for each server.
//!
//! In a `send_proxy_protocol` group each new connection starts with a PROXY
//! header naming the client it was opened for, and is that client's alone
//! (HAProxy makes such connections private to their session): an idle one
//! is kept with the addresses its header named, and only a request from
//! the same addresses takes it again.
//!
//! A worker runs one thread, so the state lives in `Cell`s and `RefCell`s.

pub(crate) mod balance;
pub(crate) mod error;
pub(crate) mod h2;
pub(crate) mod health;
pub(crate) mod health_check;
pub(crate) mod stream;
pub(crate) mod tls;

use crate::http::proxy_protocol::Addresses;
use crate::http::proxy_protocol_encode;
use crate::io::BODY_READ;
use crate::observe::stats::{ServerCell, Stats};
use crate::upstream::balance::Balancer;
use crate::upstream::error::{TlsFailure, UpstreamError};
use crate::upstream::h2::{H2Pool, H2Stream};
use crate::upstream::health::{Change, Health};
use crate::upstream::stream::UpStream;
use crate::upstream::tls::GroupTls;
use bytes::BytesMut;
use prefork_shared::config::{Config, Server, Upstream, UpstreamProtocol};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// A connection to one upstream server.
pub(crate) struct UpstreamConn {
    /// The socket, plain or with TLS.
    pub(crate) stream: UpStream,
    /// Response bytes read and not yet forwarded; kept with the connection
    /// so idle client connections hold no upstream buffer.
    pub(crate) buf: BytesMut,
    /// Whether the connection served a request before (and so may have been
    /// closed by the server meanwhile).
    pub(crate) reused: bool,
    /// Set before pooling it after a response whose announced body was
    /// absent (see [`crate::http::response::ResponseHead`]): a server that
    /// sends that body anyway may do so just after the head, so taking the
    /// connection again asks the socket itself whether anything came.
    pub(crate) recheck: bool,
    /// Index of the server in its group.
    server: usize,
    /// The client its PROXY header named (`send_proxy_protocol` groups
    /// only): no other client's request may go on it. Boxed: connections
    /// of other groups keep only a pointer's room for it.
    client: Option<Box<Addresses>>,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

/// One upstream group with its servers' idle connections.
pub(crate) struct Group {
    /// The group's configuration.
    pub(crate) config: Upstream,
    /// Idle connections per server (same index as `config.servers`),
    /// most recently used at the back.
    idle: Vec<RefCell<VecDeque<Idle>>>,
    /// Chooses the server for each request.
    balancer: Balancer,
    /// Each server's health, as this worker sees it.
    health: Vec<RefCell<Health>>,
    /// Each server's requests in flight from this worker.
    busy: Vec<Cell<usize>>,
    /// Set once a hot reload replaced the group: it pools nothing more and
    /// its health checks end, even while an older snapshot still holds it.
    retired: Cell<bool>,
    /// Each server's counters, shared with the worker's [`Stats`]
    /// (resolved when the group is made, never per request).
    counters: Vec<ServerCell>,
    /// TLS to the servers, set up once for the group's configuration
    /// (shared with its health checks).
    tls: Option<Rc<GroupTls>>,
    /// The HTTP/2 connections, for a group whose servers speak it.
    h2: Option<H2Pool>,
    /// Held while a new HTTP/2 connection to a server is made, so that the
    /// requests that find none wait for it rather than each open one.
    h2_connecting: Vec<tokio::sync::Mutex<()>>,
}

/// Counts a request in flight on a server until dropped.
pub(crate) struct Busy<'g>(&'g Cell<usize>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Group {
    fn new(config: Upstream, rng: fastrand::Rng, counters: Vec<ServerCell>) -> Self {
        let idle = config.servers.iter().map(|_| RefCell::default()).collect();
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        // As in nginx, a lone server is never paused by failures: there is
        // nowhere else to send the request.
        let max_fails = if config.servers.len() > 1 {
            config.max_fails
        } else {
            0
        };
        let health = config
            .servers
            .iter()
            .map(|_| RefCell::new(Health::new(max_fails, config.fail_timeout)))
            .collect();
        let h2 = config.protocol != UpstreamProtocol::Http1;
        let tls = config
            .tls
            .as_ref()
            .map(|tls| Rc::new(GroupTls::new(tls, &config.servers, h2)));
        Group {
            tls,
            h2: h2.then(|| H2Pool::new(config.servers.len())),
            h2_connecting: config
                .servers
                .iter()
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            balancer: Balancer::new(config.balance, &weights, rng),
            busy: config.servers.iter().map(|_| Cell::new(0)).collect(),
            health,
            config,
            idle,
            retired: Cell::new(false),
            counters,
        }
    }

    /// The counters of server `index` (for the worker's metrics).
    pub(crate) fn counters(&self, index: usize) -> &ServerCell {
        &self.counters[index % self.len()]
    }

    /// Closes the idle connections of a group a hot reload replaced, and
    /// keeps it from pooling more.
    fn retire(&self) {
        self.retired.set(true);
        for idle in &self.idle {
            idle.borrow_mut().clear();
        }
        if let Some(h2) = &self.h2 {
            h2.clear();
        }
    }

    /// Whether a hot reload replaced the group.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.get()
    }

    /// How many servers the group has.
    pub(crate) fn len(&self) -> usize {
        self.config.servers.len()
    }

    /// The server at `index`.
    pub(crate) fn server(&self, index: usize) -> &Server {
        &self.config.servers[index % self.len()]
    }

    /// The server for the next request, leaving out those in `skip` (tried
    /// already) and those down; `None` when no server is left.
    pub(crate) fn pick(&self, skip: &[usize]) -> Option<usize> {
        // The clock is read only if a server is paused.
        let now = std::cell::OnceCell::new();
        let now = || *now.get_or_init(Instant::now);
        let index = self.balancer.pick(
            |i| !skip.contains(&i) && self.health[i].borrow().usable_with(now),
            |i| self.busy[i].get(),
        )?;
        self.health[index].borrow_mut().picked(now);
        Some(index)
    }

    /// Whether this worker's health state lets requests go to server
    /// `index` at `now` (for reports: `pick` decides for requests).
    pub(crate) fn usable(&self, index: usize, now: Instant) -> bool {
        self.health
            .get(index)
            .is_none_or(|h| h.borrow().usable(now))
    }

    /// Counts a request in flight on server `index` (for `least_conn` and
    /// `random_two`) until the guard is dropped.
    pub(crate) fn busy(&self, index: usize) -> Busy<'_> {
        let cell = &self.busy[index % self.len()];
        cell.set(cell.get() + 1);
        Busy(cell)
    }

    /// Records a failed request to server `index` (passive health).
    pub(crate) fn failed(&self, index: usize) -> Option<Change> {
        self.health[index % self.len()]
            .borrow_mut()
            .failure(Instant::now())
    }

    /// Records a request to server `index` that got a response head.
    pub(crate) fn succeeded(&self, index: usize) -> Option<Change> {
        self.health[index % self.len()]
            .borrow_mut()
            .success(Instant::now)
    }

    /// Records a health check result of server `index`.
    pub(crate) fn checked(&self, index: usize, pass: bool) -> Option<Change> {
        let check = self.config.health_check.as_ref()?;
        self.health[index % self.len()]
            .borrow_mut()
            .checked(pass, check.passes, check.fails)
    }

    /// Whether the group's connections start with a PROXY header
    /// (`send_proxy_protocol`): a request then takes its connection with
    /// [`Group::acquire_for`].
    pub(crate) fn sends_proxy_header(&self) -> bool {
        self.config.send_proxy_protocol.is_some()
    }

    /// A connection to server `index`: a live idle one unless `fresh`,
    /// otherwise a new one.
    pub(crate) async fn acquire(
        &self,
        index: usize,
        fresh: bool,
    ) -> Result<UpstreamConn, UpstreamError> {
        if !fresh {
            if let Some(conn) = self.take_idle(index) {
                return Ok(conn);
            }
        }
        self.open(index, None).await
    }

    /// [`Group::acquire`] for a request of `client` in a group that sends
    /// PROXY headers: an idle connection only if its header named the same
    /// client, a new one starts with a header naming it.
    pub(crate) async fn acquire_for(
        &self,
        index: usize,
        fresh: bool,
        client: &Addresses,
    ) -> Result<UpstreamConn, UpstreamError> {
        if !fresh {
            if let Some(conn) = self.take_idle_of(index, client) {
                return Ok(conn);
            }
        }
        self.open(index, Some(client)).await
    }

    /// A new connection to server `index`, its PROXY header (if the group
    /// sends them) naming `client` (`None`: the LOCAL form).
    async fn open(
        &self,
        index: usize,
        client: Option<&Addresses>,
    ) -> Result<UpstreamConn, UpstreamError> {
        let mut stream = self.connect(index).await?;
        if let Some(version) = self.config.send_proxy_protocol {
            // First on the connection: before TLS's ClientHello and HTTP.
            let header = proxy_protocol_encode::encode(version, client);
            self.send_header(index, &mut stream, header.as_bytes())
                .await?;
        }
        let stream = match &self.tls {
            None => UpStream::Plain(stream),
            Some(tls) => UpStream::Tls(Box::new(self.handshake(tls, index, stream).await?)),
        };
        Ok(UpstreamConn {
            stream,
            buf: BytesMut::with_capacity(BODY_READ),
            reused: false,
            recheck: false,
            server: index,
            client: client.map(|c| Box::new(*c)),
        })
    }

    /// Writes a PROXY header on a new connection to server `index`, within
    /// `connect_timeout`: a failure is the connect's.
    async fn send_header(
        &self,
        index: usize,
        stream: &mut TcpStream,
        header: &[u8],
    ) -> Result<(), UpstreamError> {
        let addr = self.server(index).addr;
        match timeout(self.config.connect_timeout, stream.write_all(header)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
            Err(_) => Err(UpstreamError::ConnectTimeout { addr }),
        }
    }

    /// Whether the group's servers speak HTTP/2 (`protocol` `h2c` or `h2`).
    pub(crate) fn speaks_h2(&self) -> bool {
        self.h2.is_some()
    }

    /// A stream to server `index` of a group that speaks HTTP/2: on a
    /// shared connection with room for it unless `fresh`, otherwise on a
    /// new one.
    pub(crate) async fn acquire_h2(
        &self,
        index: usize,
        fresh: bool,
    ) -> Result<H2Stream, UpstreamError> {
        let Some(pool) = &self.h2 else {
            return Err(UpstreamError::Http2Handshake);
        };
        let _connecting = if fresh {
            None
        } else {
            if let Some(stream) = pool.stream(index) {
                return Ok(stream);
            }
            let guard = self.h2_connecting[index % self.len()].lock().await;
            // Another request may have made one meanwhile.
            if let Some(stream) = pool.stream(index) {
                return Ok(stream);
            }
            Some(guard)
        };
        let tcp = self.connect(index).await?;
        let keep = !self.retired.get();
        let limit = self.config.connect_timeout;
        match &self.tls {
            None => pool.connect(index, tcp, limit, keep).await,
            Some(tls) => {
                let addr = self.server(index).addr;
                let tls = match timeout(limit, tls.handshake_h2(index, tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(reason)) => {
                        return Err(UpstreamError::Tls(Box::new(TlsFailure {
                            addr,
                            name: tls.name(index),
                            reason,
                        })))
                    }
                    Err(_) => return Err(UpstreamError::TlsTimeout { addr }),
                };
                pool.connect(index, tls, limit, keep).await
            }
        }
    }

    /// How many HTTP/2 connections to server `index` are open.
    #[cfg(test)]
    pub(crate) fn h2_connections(&self, index: usize) -> usize {
        self.h2.as_ref().map_or(0, |h2| h2.connections(index))
    }

    /// A new TCP connection to server `index`, within `connect_timeout`.
    async fn connect(&self, index: usize) -> Result<TcpStream, UpstreamError> {
        let addr = self.server(index).addr;
        let stream = match timeout(self.config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
        };
        // Small heads must not wait for Nagle's algorithm.
        stream
            .set_nodelay(true)
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        Ok(stream)
    }

    /// The TLS handshake with server `index` over `tcp`, given a
    /// `connect_timeout` of its own (as the TCP connect before it).
    async fn handshake(
        &self,
        tls: &GroupTls,
        index: usize,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let addr = self.server(index).addr;
        match timeout(self.config.connect_timeout, tls.handshake(index, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(reason)) => Err(UpstreamError::Tls(Box::new(TlsFailure {
                addr,
                name: tls.name(index),
                reason,
            }))),
            Err(_) => Err(UpstreamError::TlsTimeout { addr }),
        }
    }

    /// The most recently pooled live connection to server `index`; those
    /// found closed or expired on the way are dropped.
    fn take_idle(&self, index: usize) -> Option<UpstreamConn> {
        let mut idle = self.idle.get(index)?.borrow_mut();
        let now = Instant::now();
        while let Some(Idle { mut conn, since }) = idle.pop_back() {
            if self.still_usable(&mut conn, since, now) {
                return Some(conn);
            }
        }
        None
    }

    /// [`Group::take_idle`] for a request of `client` in a group that
    /// sends PROXY headers: the most recently pooled live connection whose
    /// header named it.
    fn take_idle_of(&self, index: usize, client: &Addresses) -> Option<UpstreamConn> {
        let mut idle = self.idle.get(index)?.borrow_mut();
        let now = Instant::now();
        let named = |i: &Idle| i.conn.client.as_deref() == Some(client);
        while let Some(Idle { mut conn, since }) =
            idle.iter().rposition(named).and_then(|at| idle.remove(at))
        {
            if self.still_usable(&mut conn, since, now) {
                return Some(conn);
            }
        }
        None
    }

    /// Whether `conn`, idle since `since`, may take a request at `now`
    /// (then marked reused): not expired, and the server neither closed it
    /// nor sent stray bytes.
    #[inline(always)]
    fn still_usable(&self, conn: &mut UpstreamConn, since: Instant, now: Instant) -> bool {
        let usable = now.duration_since(since) < self.config.keepalive_timeout
            && match &mut conn.stream {
                UpStream::Plain(tcp) if conn.recheck => nothing_arrived(tcp),
                UpStream::Plain(tcp) => is_quiet(tcp),
                UpStream::Tls(tls) => tls_quiet(tls),
            };
        if usable {
            conn.reused = true;
            conn.recheck = false;
        }
        usable
    }

    /// Keeps a connection whose exchange ended cleanly for a later request.
    pub(crate) fn release(&self, mut conn: UpstreamConn) {
        if self.config.keepalive == 0 || !conn.buf.is_empty() || self.retired.get() {
            return;
        }
        let Some(idle) = self.idle.get(conn.server) else {
            return;
        };
        let mut idle = idle.borrow_mut();
        if idle.len() >= self.config.keepalive {
            // The least recently used connection makes room.
            idle.pop_front();
        }
        conn.buf.clear();
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes idle connections older than the group's `keepalive_timeout`.
    fn sweep(&self, now: Instant) {
        if let Some(h2) = &self.h2 {
            h2.sweep(now, self.config.keepalive_timeout);
        }
        for idle in &self.idle {
            let mut idle = idle.borrow_mut();
            while idle
                .front()
                .is_some_and(|e| now.duration_since(e.since) >= self.config.keepalive_timeout)
            {
                idle.pop_front();
            }
        }
    }

    /// How many idle connections the pool of server `index` holds.
    #[cfg(test)]
    pub(crate) fn idle_count(&self, index: usize) -> usize {
        self.idle.get(index).map_or(0, |i| i.borrow().len())
    }
}

/// Whether an idle connection has nothing to say: a server that closed it
/// (EOF) or sent stray bytes makes it unusable. Cheap: tokio answers from
/// its readiness cache without a system call while nothing arrived.
fn is_quiet(stream: &TcpStream) -> bool {
    matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// [`is_quiet`], asking the socket itself (one system call): tokio's
/// readiness cache learns of bytes only on the event loop's next turn, and
/// a busy loop may hand the connection out again before that.
fn nothing_arrived(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    matches!(
        socket2::SockRef::from(stream).peek(&mut byte),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// [`nothing_arrived`] for a TLS connection: neither rustls (bytes it
/// decrypted with the last response and nobody read) nor the socket (only
/// peeked at: a byte read from it would be lost to rustls) holds anything.
fn tls_quiet(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> bool {
    let (tcp, tls) = stream.get_mut();
    matches!(tls.process_new_packets(), Ok(io) if io.plaintext_bytes_to_read() == 0)
        && nothing_arrived(tcp)
}

/// Every upstream group of a configuration.
pub(crate) struct Upstreams {
    /// Shared with the snapshots of later configurations that left the
    /// group unchanged (hot reload keeps its pool). Looked up per request:
    /// Fx hashing, as names come from the configuration, not from clients.
    groups: FxHashMap<String, Rc<Group>>,
}

impl Upstreams {
    /// Groups with empty pools for every upstream in `config`, counted in
    /// `stats`.
    pub(crate) fn new(config: &Config, stats: &Stats) -> Self {
        let groups = config
            .upstreams
            .iter()
            .filter(|(_, u)| !u.servers.is_empty())
            .map(|(name, u)| {
                let counters = u
                    .servers
                    .iter()
                    .map(|s| stats.server(name, s.addr))
                    .collect();
                let group = Group::new(u.clone(), fastrand::Rng::new(), counters);
                (name.clone(), Rc::new(group))
            })
            .collect();
        Upstreams { groups }
    }

    /// The groups of `config`, keeping (with their idle connections) those
    /// of `self` whose settings are unchanged. The others of `self` are
    /// retired: an older snapshot (a request in flight, the accept loops)
    /// may keep them alive, but they pool nothing more and their health
    /// checks end.
    pub(crate) fn carried_over(&self, config: &Config, stats: &Stats) -> Self {
        let mut next = Upstreams::new(config, stats);
        for (name, group) in &mut next.groups {
            if let Some(old) = self.groups.get(name) {
                if old.config == group.config {
                    *group = old.clone();
                }
            }
        }
        for (name, old) in &self.groups {
            if !next.shares(name, old) {
                old.retire();
            }
        }
        next
    }

    /// The group named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Group> {
        self.groups.get(name).map(|g| &**g)
    }

    /// Whether `group` is this set's group `name` (kept across a hot reload).
    pub(crate) fn shares(&self, name: &str, group: &Rc<Group>) -> bool {
        self.groups.get(name).is_some_and(|g| Rc::ptr_eq(g, group))
    }

    /// Every group, with its name.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&str, &Rc<Group>)> {
        self.groups.iter().map(|(name, g)| (name.as_str(), g))
    }

    /// Closes expired idle connections in every group.
    pub(crate) fn sweep(&self, now: Instant) {
        for group in self.groups.values() {
            group.sweep(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(addr: std::net::SocketAddr, keepalive: usize) -> Group {
        group_of(&[addr], keepalive)
    }

    fn group_of(addrs: &[std::net::SocketAddr], keepalive: usize) -> Group {
        Group::new(
            Upstream {
                servers: addrs
                    .iter()
                    .map(|&addr| Server {
                        name: addr.to_string(),
                        addr,
                        weight: 1,
                    })
                    .collect(),
                balance: Default::default(),
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                health_check: None,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(1),
                keepalive,
                keepalive_timeout: Duration::from_secs(60),
                tls: None,
                resolve: None,
                send_proxy_protocol: None,
                protocol: Default::default(),
            },
            fastrand::Rng::with_seed(1),
            addrs.iter().map(|_| ServerCell::default()).collect(),
        )
    }

    #[tokio::test]
    async fn pools_reuse_cap_and_expire_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = group(listener.local_addr().unwrap(), 1);
        assert_eq!((g.pick(&[]), g.pick(&[])), (Some(0), Some(0)));
        assert_eq!(g.pick(&[0]), None);

        let a = g.acquire(0, false).await.unwrap();
        assert!(!a.reused);
        let (_server_a, _) = listener.accept().await.unwrap();
        let b = g.acquire(0, false).await.unwrap();
        let (server_b, _) = listener.accept().await.unwrap();
        g.release(a);
        g.release(b);
        assert_eq!(g.idle_count(0), 1, "capped at keepalive");

        // The most recent connection (b) is reused, unless a fresh one is asked for.
        let fresh = g.acquire(0, true).await.unwrap();
        assert!(!fresh.reused);
        let (_server_fresh, _) = listener.accept().await.unwrap();
        let b = g.acquire(0, false).await.unwrap();
        assert!(b.reused);
        g.release(b);

        // A connection the server closed is dropped, not handed out.
        drop(server_b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = g.acquire(0, false).await.unwrap();
        assert!(!c.reused);
        g.release(c);
        g.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(g.idle_count(0), 0);
    }

    /// In a group that sends PROXY headers, a new connection starts with
    /// one naming the client it is for, and only that client's requests
    /// take it again from the pool; a replay's fresh connection names it
    /// too.
    #[tokio::test]
    async fn proxy_header_connections_are_their_clients_alone() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = group(listener.local_addr().unwrap(), 8).config;
        config.send_proxy_protocol = Some(prefork_shared::config::ProxyVersion::V1);
        let g = Group::new(
            config,
            fastrand::Rng::with_seed(1),
            vec![ServerCell::default()],
        );
        assert!(g.sends_proxy_header());
        let client = |port: u16| Addresses {
            source: std::net::SocketAddr::from(([192, 0, 2, 7], port)),
            destination: "10.0.0.1:443".parse().unwrap(),
        };
        // What the server reads first on the next connection it accepts.
        async fn header_of(listener: &tokio::net::TcpListener) -> String {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n") {
                assert_ne!(s.read_buf(&mut got).await.unwrap(), 0);
            }
            std::mem::forget(s);
            String::from_utf8(got).unwrap()
        }
        let a = g.acquire_for(0, false, &client(1000)).await.unwrap();
        assert_eq!(
            header_of(&listener).await,
            "PROXY TCP4 192.0.2.7 10.0.0.1 1000 443\r\n"
        );
        g.release(a);
        // Another client does not get A's idle connection.
        let b = g.acquire_for(0, false, &client(2000)).await.unwrap();
        assert!(!b.reused);
        assert_eq!(
            header_of(&listener).await,
            "PROXY TCP4 192.0.2.7 10.0.0.1 2000 443\r\n"
        );
        assert_eq!(g.idle_count(0), 1, "A's stays pooled");
        g.release(b);
        // Each client takes its own back, whichever was pooled last.
        let a = g.acquire_for(0, false, &client(1000)).await.unwrap();
        assert!(a.reused);
        assert_eq!(a.client.as_deref(), Some(&client(1000)));
        let b = g.acquire_for(0, false, &client(2000)).await.unwrap();
        assert!(b.reused);
        assert_eq!(b.client.as_deref(), Some(&client(2000)));
        g.release(a);
        // A fresh one (a replay) is opened with the header again.
        let fresh = g.acquire_for(0, true, &client(1000)).await.unwrap();
        assert!(!fresh.reused);
        assert_eq!(
            header_of(&listener).await,
            "PROXY TCP4 192.0.2.7 10.0.0.1 1000 443\r\n"
        );
        assert_eq!(g.idle_count(0), 1);
        drop((b, fresh));
    }

    /// A connection pooled after a response whose announced body was absent
    /// is checked on the socket itself when taken: bytes the event loop has
    /// not seen yet (tokio's readiness cache still says nothing came) count.
    #[tokio::test]
    async fn a_connection_to_recheck_is_dropped_when_bytes_came_unseen() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = group(listener.local_addr().unwrap(), 2);
        let mut a = g.acquire(0, false).await.unwrap();
        let (server_a, _) = listener.accept().await.unwrap();
        let mut server_a = server_a.into_std().unwrap();
        server_a.set_nonblocking(false).unwrap();
        a.recheck = true;
        g.release(a);
        // No await from here on: the event loop does not turn.
        std::io::Write::write_all(&mut server_a, b"BODY").unwrap();
        let taken = g.take_idle(0);
        assert!(taken.is_none(), "stray bytes went unnoticed");
        assert_eq!(g.idle_count(0), 0);
    }

    #[tokio::test]
    async fn connect_errors_are_classified() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let g = group(addr, 4);
        let err = g.acquire(0, false).await.err().unwrap();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err}");
        assert_eq!(err.status(), 502);
    }

    #[tokio::test]
    async fn failures_take_a_server_out_and_busy_guards_count() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut config = group_of(&[addr, addr], 4).config;
        config.fail_timeout = Duration::from_secs(1);
        let counters = config
            .servers
            .iter()
            .map(|_| ServerCell::default())
            .collect();
        let g = Group::new(config, fastrand::Rng::with_seed(1), counters);
        {
            let _a = g.busy(0);
            let _b = g.busy(0);
            assert_eq!(g.busy[0].get(), 2);
        }
        assert_eq!(g.busy[0].get(), 0);
        assert_eq!(g.failed(0), Some(Change::Down), "max_fails = 1");
        assert_eq!((g.pick(&[]), g.pick(&[])), (Some(1), Some(1)));
        assert_eq!(g.failed(1), Some(Change::Down));
        assert_eq!(g.pick(&[]), None, "every server is down");
        // A response to a request sent before the pause does not end it.
        assert_eq!(g.succeeded(0), None);
        assert_eq!(g.pick(&[]), None);
        // After fail_timeout, one request probes each server; the others
        // skip it while the probe runs, and its response brings it back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a = g.pick(&[]).unwrap();
        let b = g.pick(&[]).unwrap();
        assert_ne!(a, b);
        assert_eq!(g.pick(&[]), None, "both probes in flight");
        assert_eq!(g.succeeded(a), Some(Change::Up));
        assert_eq!(g.pick(&[]), Some(a));
        assert_eq!(g.checked(0, false), None, "no health_check configured");

        // A lone server is never paused.
        let lone = group(addr, 4);
        assert_eq!(lone.failed(0), None);
        assert_eq!(lone.pick(&[]), Some(0));
    }

    #[test]
    fn a_new_config_keeps_the_pools_of_unchanged_upstreams() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut config: Config =
            prefork_shared::config::parse(std::path::Path::new("t.toml"), "").unwrap();
        config
            .upstreams
            .insert("same".into(), group(addr, 4).config);
        config
            .upstreams
            .insert("changed".into(), group(addr, 4).config);
        let (stats, _) = Stats::new(&config);
        let old = Upstreams::new(&config, &stats);
        config.upstreams.get_mut("changed").unwrap().keepalive = 8;
        let new = old.carried_over(&config, &stats);
        assert!(Rc::ptr_eq(&old.groups["same"], &new.groups["same"]));
        assert!(old.shares("same", &new.groups["same"]));
        assert!(!old.shares("changed", &new.groups["changed"]));
        assert!(!Rc::ptr_eq(&old.groups["changed"], &new.groups["changed"]));
        assert_eq!(new.groups["changed"].config.keepalive, 8);
        assert!(old.groups["changed"].is_retired());
        assert!(!old.groups["same"].is_retired() && !new.groups["changed"].is_retired());
    }

    /// Streams share one HTTP/2 connection per server (the first request's
    /// connect is waited for by those that come meanwhile); a fresh one is
    /// a connection of its own; a retired group keeps none.
    #[tokio::test(flavor = "current_thread")]
    async fn http2_streams_share_a_connection_per_server() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let origin = prefork_testkit::h2_origin::H2Origin::start();
                let mut config = group(origin.addr(), 4).config;
                config.protocol = UpstreamProtocol::H2c;
                let g = Group::new(
                    config,
                    fastrand::Rng::with_seed(1),
                    vec![ServerCell::default()],
                );
                assert!(g.speaks_h2());
                let (a, b) = tokio::join!(g.acquire_h2(0, false), g.acquire_h2(0, false));
                let (a, b) = (a.unwrap(), b.unwrap());
                assert!(
                    !a.reused && b.reused,
                    "the second waited for the first's connect"
                );
                assert_eq!(g.h2_connections(0), 1);
                let fresh = g.acquire_h2(0, true).await.unwrap();
                assert!(!fresh.reused);
                assert_eq!(g.h2_connections(0), 2);
                drop((a, b, fresh));
                g.sweep(Instant::now() + Duration::from_secs(61));
                assert_eq!(g.h2_connections(0), 0, "idle past keepalive_timeout");
                let c = g.acquire_h2(0, false).await.unwrap();
                g.retire();
                assert_eq!(g.h2_connections(0), 0);
                drop(c);
                assert!(prefork_testkit::wait_until(Duration::from_secs(5), || {
                    origin.connections() == 3
                }));
            })
            .await;
    }

    /// `protocol = "h2"`: HTTP/2 over verified TLS, chosen by ALPN; a
    /// server that does not choose it is a TLS failure that says so.
    #[tokio::test(flavor = "current_thread")]
    async fn http2_over_tls_is_chosen_by_alpn() {
        use prefork_testkit::h2_origin::H2Origin;
        use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let ca = TestCa::new("test CA");
                let leaf = ca.leaf(&["api.internal"]);
                let h2_group = |addr| {
                    let mut config = tls_group(addr, "api.internal", &ca.pem()).config;
                    config.protocol = UpstreamProtocol::H2;
                    Group::new(
                        config,
                        fastrand::Rng::with_seed(1),
                        vec![ServerCell::default()],
                    )
                };
                let origin = H2Origin::start_tls(&leaf);
                let g = h2_group(origin.addr());
                let stream = g.acquire_h2(0, false).await.unwrap();
                let response = stream
                    .send
                    .clone()
                    .ready()
                    .await
                    .unwrap()
                    .send_request(
                        http::Request::get("https://api.internal/x")
                            .body(())
                            .unwrap(),
                        true,
                    )
                    .unwrap()
                    .0
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(origin.streams(), 1);

                let http1 = TlsOrigin::start(&leaf);
                let err = h2_group(http1.addr())
                    .acquire_h2(0, false)
                    .await
                    .err()
                    .unwrap();
                let text = err.to_string();
                assert!(matches!(err, UpstreamError::Tls(_)), "{text}");
                assert!(text.contains("HTTP/2"), "{text}");
            })
            .await;
    }

    /// A group of one server over TLS, verified by `server_name` against
    /// `ca`.
    fn tls_group(addr: std::net::SocketAddr, server_name: &str, ca: &str) -> Group {
        use prefork_shared::config::{Der, TlsRoots, UpstreamTls};
        use rustls::pki_types::pem::PemObject;
        let mut config = group(addr, 4).config;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes())
            .map(|c| Der(c.unwrap().to_vec()))
            .collect();
        config.tls = Some(UpstreamTls {
            server_name: Some(server_name.into()),
            roots: TlsRoots::Ca {
                file: "ca.pem".into(),
                certs,
            },
        });
        Group::new(
            config,
            fastrand::Rng::with_seed(1),
            vec![ServerCell::default()],
        )
    }

    #[tokio::test]
    async fn tls_connections_verify_and_are_pooled_like_plain_ones() {
        use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = TestCa::new("test CA");
        let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
        let g = tls_group(origin.addr(), "api.internal", &ca.pem());
        for round in 0..3 {
            let mut conn = g.acquire(0, false).await.unwrap();
            assert_eq!(conn.reused, round > 0);
            let UpStream::Tls(tls) = &mut conn.stream else {
                panic!("a plain connection")
            };
            tls.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            tls.flush().await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"conn=1") {
                assert_ne!(tls.read_buf(&mut got).await.unwrap(), 0);
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
            g.release(conn);
        }
        assert_eq!((origin.accepted(), origin.handshakes()), (1, 1));

        // A new connection resumes the session of the first (the group's
        // configuration keeps rustls's session cache).
        let fresh = g.acquire(0, true).await.unwrap();
        let UpStream::Tls(tls) = &fresh.stream else {
            panic!("a plain connection")
        };
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    #[tokio::test]
    async fn tls_verification_failures_say_why() {
        use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
        let ca = TestCa::new("test CA");
        let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
        let wrong_name = tls_group(origin.addr(), "other.internal", &ca.pem());
        let err = wrong_name.acquire(0, false).await.err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, UpstreamError::Tls(_)), "{text}");
        assert!(
            text.contains("certificate not valid for name \"other.internal\""),
            "{text}"
        );
        assert_eq!(err.status(), 502);
        let other_ca = TestCa::new("another CA");
        let wrong_ca = tls_group(origin.addr(), "api.internal", &other_ca.pem());
        let text = wrong_ca.acquire(0, false).await.err().unwrap().to_string();
        assert!(
            text.contains("unknown issuer (not signed by tls_ca ca.pem)"),
            "{text}"
        );
    }

    /// A pooled TLS connection whose last response left decrypted bytes
    /// unread in rustls is not handed out again, though its socket is
    /// empty.
    #[tokio::test]
    async fn a_tls_connection_holding_unread_bytes_is_not_reused() {
        use prefork_testkit::tls_origin::{TestCa, TlsOrigin};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = TestCa::new("test CA");
        let origin = TlsOrigin::start(&ca.leaf(&["api.internal"]));
        let g = tls_group(origin.addr(), "api.internal", &ca.pem());
        let mut conn = g.acquire(0, false).await.unwrap();
        let UpStream::Tls(tls) = &mut conn.stream else {
            panic!("a plain connection")
        };
        tls.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut first = [0u8; 1];
        tls.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"H");
        g.release(conn);
        assert_eq!(g.idle_count(0), 1);
        assert!(g.take_idle(0).is_none(), "handed out with bytes unread");
    }
}
