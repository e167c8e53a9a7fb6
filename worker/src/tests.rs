//! End-to-end tests of the proxy over real loopback sockets: an origin
//! from the test kit, the worker's serve loop on its own thread, and the
//! kit's blocking client.

use crate::downstream::accept::Listener;
use crate::downstream::h1::Connection;
use crate::io::client_socket::ClientSocket;
use crate::observe::access_log::AccessLogs;
use crate::process::serve::serve;
use crate::state::load_share::LoadShare;
use crate::state::Snapshot;
use crate::stop::{request_stop, Stop};
use prefork_shared::config::{
    FixedResponse, HostMatch, HttpLimits, LogConfig, LogTarget, Route, RouteAction, Server,
    Upstream,
};
use prefork_shared::load_board::LoadBoard;
use prefork_shared::Config;
use prefork_testkit::handler::{EchoOrigin, HandlerOrigin};
use prefork_testkit::http::{Conn, Response};
use prefork_testkit::origins::refused_addr;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tokio::sync::watch;

/// The worker's serve loop on its own thread (or several workers' loops,
/// sharing one listening socket and a load board).
struct Proxy {
    addr: SocketAddr,
    stop: watch::Sender<Stop>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(config: Config) -> Proxy {
        Proxy::start_workers(config, None)
    }

    /// `workers` workers sharing a listening socket and the load board
    /// returned, on cells 0.. of it.
    fn start_sharing(config: Config, workers: usize) -> (Proxy, LoadBoard) {
        let board = LoadBoard::create().unwrap();
        board.set_in_use(workers);
        let fd = board.fd().try_clone_to_owned().unwrap();
        (Proxy::start_workers(config, Some((fd, workers))), board)
    }

    fn start_workers(config: Config, board: Option<(OwnedFd, usize)>) -> Proxy {
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let log = slog::Logger::root(slog::Discard, slog::o!());
                let workers = board.as_ref().map_or(1, |(_, n)| *n);
                let mut serving = Vec::new();
                for cell in 0..workers {
                    let load = board.as_ref().map(|(fd, _)| {
                        let file = std::fs::File::from(fd.try_clone().unwrap());
                        LoadShare::new(LoadBoard::open(file).unwrap(), cell)
                    });
                    let snapshot = Snapshot::new(
                        config.clone(),
                        log.clone(),
                        AccessLogs::off(),
                        stop_rx.clone(),
                        load,
                    );
                    let socket = listener.try_clone().unwrap();
                    let listener = Listener::new(socket, true).unwrap();
                    serving.push(tokio::task::spawn_local(serve(
                        snapshot,
                        vec![listener],
                        || {},
                    )));
                }
                for done in serving {
                    done.await.unwrap();
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Proxy {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Conn {
        Conn::connect(self.addr).unwrap()
    }

    /// Stops the worker and waits for its serve loop to return.
    fn stop(&mut self, how: Stop) {
        request_stop(&self.stop, how);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop(Stop::Fast);
    }
}

fn upstream(addr: SocketAddr) -> Upstream {
    Upstream {
        servers: vec![Server {
            name: addr.to_string(),
            addr,
            weight: 1,
        }],
        balance: Default::default(),
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        health_check: None,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(2),
        keepalive: 8,
        keepalive_timeout: Duration::from_secs(30),
    }
}

fn config(origin: SocketAddr) -> Config {
    let dead = refused_addr();
    let mut upstreams = BTreeMap::new();
    upstreams.insert("app".to_owned(), upstream(origin));
    upstreams.insert("down".to_owned(), upstream(dead));
    let route = |host, path: &str, action| Route {
        host,
        path: path.to_owned(),
        action,
        access_log: Default::default(),
        max_body_size: None,
    };
    Config {
        source: "test.toml".into(),
        workers: 1,
        worker_cpu_affinity: Vec::new(),
        pid_file: "/tmp/prefork-test.pid".into(),
        user: None,
        shutdown_timeout: Duration::from_secs(5),
        worker_timeout: Duration::from_secs(30),
        log: LogConfig {
            error_log: LogTarget::Stderr,
            access_log: None,
            access_log_format: prefork_shared::config::AccessFormat::Combined,
        },
        listen: Vec::new(),
        http: HttpLimits {
            client_header_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        },
        upstreams,
        control_socket: "/tmp/prefork-test.sock".into(),
        admin: None,
        routes: vec![
            route(HostMatch::Any, "/app", RouteAction::Proxy("app".into())),
            route(HostMatch::Any, "/down", RouteAction::Proxy("down".into())),
            route(
                HostMatch::Exact("fixed.test".into()),
                "/",
                RouteAction::Respond(FixedResponse {
                    status: 201,
                    body: "fixed\n".into(),
                    content_type: "text/plain".into(),
                }),
            ),
        ],
    }
}

/// Sends `request` and reads the next response (an interim one included).
fn exchange(c: &mut Conn, request: &str) -> Response {
    c.send(request.as_bytes()).unwrap();
    read_response(c, request.starts_with("HEAD"))
}

/// Reads the next response (an interim one included); `head` says the
/// request was `HEAD`.
fn read_response(c: &mut Conn, head: bool) -> Response {
    c.read_next_response(head).expect("a response")
}

fn assert_closed(c: &mut Conn) {
    let rest = c.read_to_close().unwrap_or_default();
    assert_eq!(
        rest.len(),
        0,
        "expected EOF, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn proxies_with_keep_alive_and_a_pooled_upstream_connection() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/echo?x=1 HTTP/1.1\r\nHost: Site.Test:8080\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\
         Keep-Alive: timeout=1\r\nX-Forwarded-For: 1.2.3.4\r\nTE: trailers\r\nx-keep: Yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(
        echoed.starts_with(
            "conn=1\nGET /app/echo?x=1 HTTP/1.1\r\nHost: Site.Test:8080\r\nx-keep: Yes\r\n"
        ),
        "{echoed}"
    );
    assert!(
        echoed.contains("X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("X-Forwarded-Proto: http\r\n"));
    assert!(echoed.contains("X-Forwarded-Host: Site.Test:8080\r\n"));
    for dropped in ["X-Drop", "Keep-Alive", "TE:", "Connection"] {
        assert!(!echoed.contains(dropped), "{dropped} forwarded: {echoed}");
    }
    // The origin's hop-by-hop fields do not reach the client.
    assert_eq!(r.header("x-origin-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);

    // The same client connection, and the pooled origin connection.
    let r = exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"), "{}", r.text());
    assert_eq!(origin.connections(), 1);
    // A HEAD answer announcing a body (Content-Length) has none: its
    // connection goes back to the pool too.
    let r = exchange(&mut c, "HEAD /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
    let r = exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"), "{}", r.text());

    // HTTP/1.0 keeps the connection only when asked.
    let r = exchange(
        &mut c,
        "GET /app/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.text().contains("Host: \r\n"), "{}", r.text());
    let r = exchange(&mut c, "GET /app/echo HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut c);
}

#[test]
fn streams_a_chunked_upload_and_expect_continue() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"POST /app/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    c.send(b"3\r\nef").unwrap();
    thread::sleep(Duration::from_millis(50));
    c.send(b"g\r\n0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(
        echoed.contains("Transfer-Encoding: chunked\r\n"),
        "{echoed}"
    );
    assert!(echoed.ends_with("\r\n\r\nabcdefg"), "{echoed}");

    // A Content-Length upload that waits for 100 Continue.
    c.send(
        b"PUT /app/put HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let interim = read_response(&mut c, false);
    assert_eq!(interim.status, 100);
    c.send(b"hello").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("Content-Length: 5\r\n\r\nhello"),
        "{}",
        r.text()
    );
}

#[test]
fn answers_pipelined_requests_in_order() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(
        b"GET /app/one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
          GET /x HTTP/1.1\r\nHost: fixed.test\r\n\r\n\
          GET /app/four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let one = read_response(&mut c, false);
    assert!(one.text().contains("GET /app/one "), "{}", one.text());
    let two = read_response(&mut c, false);
    assert!(
        two.text().contains("POST /app/two ") && two.text().ends_with("xyz"),
        "{}",
        two.text()
    );
    let three = read_response(&mut c, false);
    assert_eq!((three.status, three.text().as_str()), (201, "fixed\n"));
    assert_eq!(three.header("content-type"), Some("text/plain"));
    assert_eq!(three.header("server"), Some("prefork"));
    assert!(three.header("date").is_some());
    let four = read_response(&mut c, false);
    assert!(four.text().contains("GET /app/four "), "{}", four.text());
    assert_eq!(four.header("connection"), Some("close"));
    assert!(c.buffered().is_empty());
    assert_closed(&mut c);
}

#[test]
fn forwards_chunked_and_close_delimited_responses() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "hello, world");
    // Still usable after a chunked response.
    let r = exchange(&mut c, "GET /app/close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "close-delimited body");

    // HTTP/1.0 gets the chunked body decoded, delimited by close.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "hello, world");
}

#[test]
fn classifies_errors() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));

    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), None, "404 keeps the connection");
    let r = exchange(&mut c, "GET /down HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("502 Bad Gateway"));
    let r = exchange(&mut c, "GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 504);

    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    assert_closed(&mut c);

    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    assert_closed(&mut c);

    let mut c = proxy.connect();
    let huge = format!(
        "GET /app HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40 * 1024)
    );
    let r = exchange(&mut c, &huge);
    assert_eq!(r.status, 431);

    // A slow client times out alone; others are served meanwhile.
    let mut slow = proxy.connect();
    slow.send(b"GET /app HTTP/1.1\r\nHo").unwrap();
    let mut c = proxy.connect();
    assert_eq!(
        exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let r = read_response(&mut slow, false);
    assert_eq!((r.status, r.header("connection")), (408, Some("close")));
}

#[test]
fn graceful_stop_finishes_busy_connections_and_closes_idle_ones() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    if let Some(app) = config.upstreams.get_mut("app") {
        app.read_timeout = Duration::from_secs(5);
    }
    let mut proxy = Proxy::start(config);
    let mut idle = proxy.connect();
    assert_eq!(
        exchange(&mut idle, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let mut busy = proxy.connect();
    busy.send(b"GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    request_stop(&proxy.stop, Stop::Graceful);
    assert_closed(&mut idle);
    let r = read_response(&mut busy, false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_closed(&mut busy);
    proxy.stop(Stop::Graceful);
    assert!(
        TcpStream::connect(proxy.addr).is_err(),
        "listener closed after the stop"
    );
}

#[test]
fn replays_an_idempotent_request_once_when_a_pooled_connection_was_closed() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/drop-second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(r.text().starts_with("conn=1\n"));
    let r = exchange(&mut c, "GET /app/drop-second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("conn=2\n"), "{}", r.text());
    // A request with a body is not replayed.
    let r = exchange(
        &mut c,
        "POST /app/drop-second HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(r.status, 502);
    assert_eq!(origin.connections(), 2);
}

#[test]
fn streams_large_bodies_both_ways() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /app/big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = c.stream().try_clone().unwrap();
    let upload = body.clone();
    let sender = thread::spawn(move || {
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&upload).unwrap();
    });
    let r = read_response(&mut c, false);
    sender.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&body), "the echoed body differs");
    assert_eq!(
        exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
}

#[test]
fn a_burst_of_connections_is_spread_over_workers_sharing_a_socket() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 2);
    // All connect and send at once; each keeps its connection open.
    let mut clients: Vec<Conn> = (0..24).map(|_| proxy.connect()).collect();
    for c in &mut clients {
        c.send(b"GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
    }
    for c in &mut clients {
        assert_eq!(read_response(c, false).status, 200);
    }
    // Without the board, the first worker to wake takes the whole queue.
    // With it, a worker more than 4 ahead holds back while the other
    // accepts, and takes one connection at most after each pause.
    let (a, b) = (board.get(0), board.get(1));
    assert_eq!(a + b, 24, "both workers count every open connection");
    assert!(a.abs_diff(b) <= 8, "connections split {a} / {b}");
}

#[test]
fn connections_arriving_one_by_one_are_spread_too() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 2);
    // Each arrives when both workers wait for one, longer after the last
    // than a pause lasts: the decision is taken when a connection waits,
    // not when a worker starts waiting.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut c = proxy.connect();
        assert_eq!(
            exchange(&mut c, "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n").status,
            200
        );
        clients.push(c);
        thread::sleep(3 * crate::state::load_share::ACCEPT_DEFER);
    }
    let (a, b) = (board.get(0), board.get(1));
    assert_eq!(a + b, 16);
    assert!(a.abs_diff(b) <= 6, "connections split {a} / {b}");
}

#[test]
fn a_busier_worker_holds_back_only_for_a_moment() {
    let origin = EchoOrigin::start();
    let (proxy, board) = Proxy::start_sharing(config(origin.addr()), 1);
    // A second worker that says it accepts with no connection, and never
    // accepts: the first defers to it, a pause per connection, but serves.
    board.set(1, 0);
    board.set_in_use(2);
    let request = "GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut clients: Vec<Conn> = (0..5).map(|_| proxy.connect()).collect();
    for c in &mut clients {
        assert_eq!(exchange(c, request).status, 200);
    }
    // The pause after the 5th accept may have begun before this.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let mut c = proxy.connect();
        assert_eq!(exchange(&mut c, request).status, 200);
        clients.push(c);
    }
    assert!(
        started.elapsed() >= 2 * crate::state::load_share::ACCEPT_DEFER,
        "each connection past the margin waits for a pause: {:?}",
        started.elapsed()
    );
    assert_eq!(board.get(0), 8);
    // Connections that close after their request do not weigh.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "GET /app/echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_closed(&mut c);
    assert_eq!(board.get(0), 8);
}

#[test]
fn a_connection_closing_after_its_answer_does_not_weigh_while_the_close_lingers() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    config.http.max_body_size = 16;
    let (proxy, board) = Proxy::start_sharing(config, 1);
    // A keep-alive upload too large: refused with a 413 that closes the
    // connection, which then lingers (up to 5 s) while the client is still
    // sending its body.
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut weighed = board.get(0);
    while weighed != 0 && std::time::Instant::now() < deadline {
        c.send(&[b'x'; 1024]).unwrap();
        thread::sleep(Duration::from_millis(20));
        weighed = board.get(0);
    }
    assert_eq!(
        weighed, 0,
        "a connection that only lingers before its close is published as staying"
    );
}

#[test]
fn body_chunked_upload_byte_by_byte_then_pipelined() {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let origin = HandlerOrigin::start(move |mut s, _| {
        while let Ok(Some(request)) = s.read_request_head() {
            let path = request.path;
            if request.chunked {
                s.read_until(b"\r\n\r\n");
                let end = s
                    .buffered()
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap()
                    + 4;
                seen.lock().unwrap().extend(s.consume(end));
            }
            let body = format!("path={path}");
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.send(r.as_bytes()).unwrap();
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let chunked = b"3;a=b;c=\"d e\"\r\nabc\r\nA\r\n0123456789\r\n0;z\r\nX-T: 1\r\nY: 2\r\n\r\n";
    let mut all =
        b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    all.extend_from_slice(chunked);
    all.extend_from_slice(b"GET /app/next HTTP/1.1\r\nHost: a\r\n\r\n");
    c.trickle(&all);
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "path=/app/up");
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "path=/app/next");
    assert_eq!(&got.lock().unwrap()[..], &chunked[..]);
}

#[test]
fn body_chunked_response_decoded_for_http10_byte_by_byte() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            s.trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n",
            );
            thread::sleep(Duration::from_secs(2));
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/x HTTP/1.0\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello, world"), "{text}");
}

#[test]
fn body_longer_than_content_length_is_not_forwarded_nor_reused() {
    let origin = HandlerOrigin::start(|mut s, id| {
        while let Ok(Some(_)) = s.read_request_head() {
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nc{id:03}xEXTRA");
            s.trickle(r.as_bytes());
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001x");
    thread::sleep(Duration::from_millis(100));
    c.send(b"GET /app/2 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c002x");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 2);
}

#[test]
fn body_shorter_than_content_length_closes_the_client() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            s.trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

#[test]
fn body_head_and_204_carrying_bytes() {
    let origin = HandlerOrigin::start(|mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let (method, path) = (request.method, request.path);
            let r = if method == "HEAD" {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nBOGUS".to_string()
            } else if path.contains("204") {
                "HTTP/1.1 204 No Content\r\n\r\nBOGUS".to_string()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}")
            };
            s.trickle(r.as_bytes());
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"HEAD /app/1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, true);
    assert_eq!(r.status, 200);
    thread::sleep(Duration::from_millis(100));
    c.send(b"GET /app/204 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 204);
    thread::sleep(Duration::from_millis(100));
    c.send(b"GET /app/3 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c003");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 3);
}

/// HEAD, 204 and 304 answers have no body whatever their head announces
/// (RFC 9112 §6.3): their upstream connection goes back to the pool, as in
/// nginx and HAProxy; a new connection per HEAD would churn ports.
#[test]
fn bodyless_answers_announcing_a_body_keep_their_upstream_connection() {
    let origin = HandlerOrigin::start(|mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let (method, path) = (request.method, request.path);
            let r = if method == "HEAD" && path.contains("chunked") {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            } else if method == "HEAD" {
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_owned()
            } else if path.contains("304") {
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_owned()
            } else if path.contains("204") {
                "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}")
            };
            if s.send(r.as_bytes()).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    for i in 0..5 {
        c.send(format!("HEAD /app/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut c, true);
        assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
    }
    c.send(b"HEAD /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c, true).status, 200);
    for (path, status) in [("/app/304", 304), ("/app/204", 204)] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_response(&mut c, false).status, status);
    }
    c.send(b"GET /app/last HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001");
    assert!(
        c.buffered().is_empty(),
        "{:?}",
        String::from_utf8_lossy(c.buffered())
    );
    assert_eq!(origin.connections(), 1);
}

#[test]
fn body_chunked_upload_at_the_limit_exactly() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            s.read_until(b"0\r\n\r\n");
            s.consume(usize::MAX);
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    });
    let mut cfg = config(origin.addr());
    cfg.http.max_body_size = 10;
    let proxy = Proxy::start(cfg);
    let mut c = proxy.connect();
    let req = b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
    c.trickle(req);
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    let req = b"POST /app/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n7\r\nefghijk\r\n0\r\n\r\n";
    c.send(req).unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 413);
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Origin echoing a Content-Length body back, each in two writes: the head
/// with `first` body bytes, then the rest.
fn echo_origin(first: usize) -> HandlerOrigin {
    HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(request)) = s.read_request() {
            let body = request.body;
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Conn: {id}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            let cut = r.len() + first.min(body.len());
            r.extend_from_slice(&body);
            if s.send(&r[..cut]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
            if s.send(&r[cut..]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn body_spliced_both_ways_around_the_threshold() {
    for first in [0, 1, 100, 20_000] {
        let origin = echo_origin(first);
        let mut cfg = config(origin.addr());
        cfg.http.splice = true;
        let proxy = Proxy::start(cfg);
        let mut c = proxy.connect();
        let sizes = [
            65_535,
            65_536,
            65_537,
            65_536 + 1,
            65_536 + 100,
            65_536 + 20_000,
            200_000,
            1,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
            let body = pattern(len);
            let head =
                format!("POST /app/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
            // The head with the first `first` body bytes, then the rest.
            let mut req = head.into_bytes();
            let cut = req.len() + first.min(len);
            req.extend_from_slice(&body);
            c.send(&req[..cut]).unwrap();
            thread::sleep(Duration::from_millis(20));
            c.send(&req[cut..]).unwrap();
            let r = read_response(&mut c, false);
            assert_eq!(r.status, 200, "len {len} first {first}");
            assert!(r.body == body, "len {len} first {first}: body differs");
            assert!(c.buffered().is_empty(), "len {len} first {first}");
        }
        assert_eq!(origin.connections(), 1, "first {first}");
    }
}

#[test]
fn body_upstream_closing_mid_splice_closes_the_client() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
            r.extend_from_slice(&pattern(150_000));
            let _ = s.send(&r);
            thread::sleep(Duration::from_millis(50));
        }
    });
    let mut cfg = config(origin.addr());
    cfg.http.splice = true;
    let proxy = Proxy::start(cfg);
    let mut c = proxy.connect();
    c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - start, 150_000);
}

#[test]
fn body_chunked_response_with_trailers_byte_by_byte_then_reuse() {
    let chunked: &[u8] = b"5;x=y\r\nhello\r\n7\r\n, world\r\n0;e\r\nX-T: 1\r\nY:2\r\n\r\n";
    let origin = HandlerOrigin::start(move |mut s, id| {
        while let Ok(Some(request)) = s.read_request_head() {
            let path = request.path;
            if path.contains("chunked") {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend_from_slice(chunked);
                s.trickle(&r);
            } else {
                let r = format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc{id:03}");
                s.send(r.as_bytes()).unwrap();
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(c.read_until(b"\r\n\r\n"));
    let start = c
        .buffered()
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    c.consume(start);
    let body = c.read_exact_body(chunked.len()).unwrap();
    assert_eq!(&body[..], chunked);
    assert_eq!(c.buffered(), b"", "bytes after the chunked body");
    c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.text(), "c001");
    assert_eq!(origin.connections(), 1);
}

/// `Trailer` is an end-to-end field (RFC 9110 §6.6.2): it goes upstream
/// with the chunked body whose trailers prefork passes on unchanged.
#[test]
fn a_request_trailer_field_goes_upstream_with_its_trailers() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(
        &mut c,
        "POST /app/t HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let echoed = r.text();
    assert!(echoed.contains("\r\nTrailer: X-Sum\r\n"), "{echoed}");
}

/// A response's `Trailer` field reaches the client that gets its trailers
/// (HTTP/1.1, chunked as received), not an HTTP/1.0 one, whose body is
/// decoded and loses them.
#[test]
fn a_response_trailer_field_goes_where_its_trailers_go() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            let r = b"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n";
            if s.send(r).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/t HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(c.read_until(b"\r\n0\r\nX-Sum: 5\r\n\r\n"));
    let text = String::from_utf8_lossy(c.buffered());
    assert!(text.contains("\r\nTrailer: X-Sum\r\n"), "{text}");

    let mut c = proxy.connect();
    c.send(b"GET /app/t HTTP/1.0\r\n\r\n").unwrap();
    let all = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("trailer"), "{text}");
}

/// RFC 9112 §2.3: a higher minor version is handled as the highest one
/// supported (HTTP/1.1); another major version gets 505 (as nginx does).
#[test]
fn higher_minor_versions_are_read_as_1_1_and_other_majors_get_505() {
    let origin = EchoOrigin::start();
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    let r = exchange(&mut c, "GET /app/minor HTTP/1.2\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("GET /app/minor HTTP/1.1\r\n"),
        "{}",
        r.text()
    );
    // Kept alive, as HTTP/1.1 is by default.
    let r = exchange(&mut c, "GET /app/next HTTP/1.9\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("connection")), (200, None));

    for line in [
        "GET / HTTP/2.0",
        "GET / HTTP/3.0",
        "GET / HTTP/0.9",
        "GET / HTTP/2",
    ] {
        let mut c = proxy.connect();
        let r = exchange(&mut c, &format!("{line}\r\nHost: a\r\n\r\n"));
        assert_eq!(
            (r.status, r.header("connection")),
            (505, Some("close")),
            "{line}"
        );
        assert_closed(&mut c);
    }
    for line in [
        "GET / HTTP/1.10",
        "GET / HTTP/1.x",
        "GET / HTTPS/1.1",
        "GET / HTTP/x.1",
    ] {
        let mut c = proxy.connect();
        let r = exchange(&mut c, &format!("{line}\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 400, "{line}");
    }
}

#[test]
fn body_chunked_response_cut_short_closes_the_client() {
    for cut in [3usize, 7, 14, 20, 26, 28, 29, 30] {
        let chunked: &[u8] = b"5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let origin = HandlerOrigin::start(move |mut s, _| {
            if let Ok(Some(_)) = s.read_request_head() {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend_from_slice(&chunked[..cut]);
                s.trickle(&r);
            }
        });
        let proxy = Proxy::start(config(origin.addr()));
        for version in ["1.1", "1.0"] {
            let mut c = proxy.connect();
            c.send(
                format!("GET /app/x HTTP/{version}\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let all = c.read_to_close();
            // On an error, what arrived before it.
            let text = String::from_utf8_lossy(all.as_deref().unwrap_or(c.buffered()));
            let r = all.as_ref().map(Vec::len);
            assert!(r.is_ok(), "cut {cut} {version}: {r:?} {text}");
            assert!(
                text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 502"),
                "cut {cut} {version}: {text}"
            );
        }
    }
}

/// `OPTIONS *` asks about the server as a whole (RFC 9112 §3.2.4): it is
/// routed as `OPTIONS http://host` is (by its host, path `/`), and
/// forwarded as received, not answered 404 for want of a route path `*`.
#[test]
fn options_asterisk_reaches_the_root_route_of_its_host() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    config.routes.push(Route {
        host: HostMatch::Exact("star.test".into()),
        path: "/".into(),
        action: RouteAction::Proxy("app".into()),
        access_log: Default::default(),
        max_body_size: None,
    });
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    for request in [
        "OPTIONS * HTTP/1.1\r\nHost: star.test\r\n\r\n",
        "OPTIONS http://star.test HTTP/1.1\r\nHost: star.test\r\n\r\n",
    ] {
        let r = exchange(&mut c, request);
        assert_eq!(r.status, 200, "{request:?}");
        assert!(
            r.text().starts_with("conn=1\nOPTIONS * HTTP/1.1\r\n"),
            "{request:?}: {}",
            r.text()
        );
    }
}

/// Routes match the normalised path, as nginx's locations do: escapes, dot
/// segments and repeated slashes cannot steer a request past a route for
/// `/admin` to the `/` route's upstream (which would serve `/admin` after
/// its own decoding). The upstream still gets the target as the client sent
/// it; a path climbing above the root gets 400.
#[test]
fn routes_match_the_normalised_path_and_the_target_goes_as_sent() {
    let origin = EchoOrigin::start();
    let mut config = config(origin.addr());
    let route = |path: &str, action| Route {
        host: HostMatch::Exact("norm.test".into()),
        path: path.into(),
        action,
        access_log: Default::default(),
        max_body_size: None,
    };
    config
        .routes
        .push(route("/", RouteAction::Proxy("app".into())));
    config.routes.push(route(
        "/admin",
        RouteAction::Respond(FixedResponse {
            status: 403,
            body: "no\n".into(),
            content_type: "text/plain".into(),
        }),
    ));
    let proxy = Proxy::start(config);
    let mut c = proxy.connect();
    for path in [
        "/admin",
        "/%61dmin",
        "/%41DMIN",
        "/public/../admin",
        "/public/%2e%2e/admin/x",
        "/public%2F..%2Fadmin",
        "//admin",
        "/./admin",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: norm.test\r\n\r\n");
        let r = exchange(&mut c, &request);
        // Paths are case-sensitive: `/ADMIN` is another path.
        let want = if path == "/%41DMIN" { 200 } else { 403 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    let r = exchange(
        &mut c,
        "GET /a//b/./c?x=/../y HTTP/1.1\r\nHost: norm.test\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("GET /a//b/./c?x=/../y HTTP/1.1\r\n"),
        "{}",
        r.text()
    );
    let r = exchange(&mut c, "GET /../admin HTTP/1.1\r\nHost: norm.test\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn a_slow_client_does_not_make_interim_responses_time_the_upstream_out() {
    // More interim responses than the socket buffers between prefork and a
    // client that does not read can hold (the sender's grows to tcp_wmem's
    // 4 MiB at most, the client's is set small below), so that relaying
    // them waits on the client.
    const HINTS: usize = 200;
    let link = format!("Link: </{}.css>; rel=preload\r\n", "x".repeat(1000));
    let hint = format!("HTTP/1.1 103 Early Hints\r\n{}\r\n", link.repeat(40));
    let origin = HandlerOrigin::start(move |mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            for _ in 0..HINTS {
                if s.send(hint.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
            let _ = s.read_to_close();
        }
    });
    let config = config(origin.addr());
    let read_timeout = config.upstreams["app"].read_timeout;
    let proxy = Proxy::start(config);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&proxy.addr.into()).unwrap();
    let mut c = TcpStream::from(socket);
    c.write_all(b"GET /app/hints HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // The upstream answers at once; the client reads nothing for three
    // read timeouts: its slowness is not the upstream's.
    thread::sleep(3 * read_timeout);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Read to the end of the response (megabytes: only the tail is checked).
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while !all.ends_with(b"\r\n\r\ndone") {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let hints = text.matches("HTTP/1.1 103 Early Hints\r\n").count();
    let last = text.rfind("HTTP/1.1 ").map_or("", |i| &text[i..]);
    let last_line = last.lines().next().unwrap_or("");
    assert_eq!(
        (hints, last_line, last.ends_with("\r\n\r\ndone")),
        (HINTS, "HTTP/1.1 200 OK", true),
        "every hint, then the response (got {} bytes)",
        all.len()
    );
}

#[test]
fn an_upstream_silent_after_an_interim_response_still_times_out() {
    let origin = HandlerOrigin::start(|mut s, _| {
        if let Ok(Some(_)) = s.read_request_head() {
            let _ = s.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
            // Then nothing, until prefork gives up.
            let _ = s.read_to_close();
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut c = proxy.connect();
    c.send(b"GET /app/hint HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let hint = read_response(&mut c, false);
    assert_eq!(hint.status, 103);
    assert_eq!(read_response(&mut c, false).status, 504);
}

/// Interim responses leave at once: a second one must not wait behind
/// Nagle's algorithm for the ACK of the first, which a client with delayed
/// ACKs sends only after 40 ms or more (deterministically: the kernel's
/// minimum delay). A run is fast unless the machine stalls, so one fast run
/// in three passes; before TCP_NODELAY was set for them, none ever was.
#[test]
fn a_second_interim_response_does_not_wait_for_the_first_ack() {
    let origin = HandlerOrigin::start(|mut s, _| {
        while let Ok(Some(_)) = s.read_request_head() {
            let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                          HTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n";
            let _ = s.send(hints);
            thread::sleep(Duration::from_millis(100));
            let _ = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let proxy = Proxy::start(config(origin.addr()));
    let mut waits = Vec::new();
    for _ in 0..3 {
        // A fresh connection (TCP_NODELAY not set yet), with delayed ACKs.
        let mut c = proxy.connect();
        socket2::SockRef::from(c.stream())
            .set_tcp_quickack(false)
            .unwrap();
        c.send(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(c.read_until(b"</a>"));
        let first = std::time::Instant::now();
        assert!(c.read_until(b"</b>"));
        waits.push(first.elapsed());
        if waits.last() < Some(&Duration::from_millis(20)) {
            return;
        }
    }
    panic!("the second 103 waited each time: {waits:?}");
}

/// A connection's future is allocated whole when it is accepted and kept
/// while the connection idles: it must stay within jemalloc's 4 KiB size
/// class. It once grew past it unnoticed (4,296 bytes, a 5 KiB allocation:
/// 1.5 KiB more per idle connection).
#[test]
fn a_connections_future_fits_a_4_kib_allocation() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, peer) = listener.accept().unwrap();
    let (_stop, stop_rx) = watch::channel(Stop::Running);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let snapshot = Snapshot::new(
        config(client.local_addr().unwrap()),
        log,
        AccessLogs::off(),
        stop_rx,
        None,
    );
    let conn = Connection::new(
        snapshot.latest(),
        ClientSocket::new(accepted),
        peer,
        snapshot.track(),
    );
    let size = std::mem::size_of_val(&conn.run());
    assert!(size <= 4096, "a connection's future takes {size} bytes");
}
