//! The in-process harness of the worker's end-to-end tests (in
//! `downstream/`, `proxy/` and `process/`): the worker's serve loop on its
//! own thread, the configuration it serves, and the test kit's client
//! (`prefork-testkit`, shared with the black-box tests) read as those tests
//! want it.

use crate::downstream::accept::Listener;
use crate::downstream::protocols::Protocols;
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
use prefork_testkit::http::{Conn, Response};
use prefork_testkit::origins::refused_addr;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::thread;
use std::time::Duration;
use tokio::sync::watch;

/// The worker's serve loop on its own thread (or several workers' loops,
/// sharing one listening socket and a load board).
pub(crate) struct Proxy {
    /// Where the workers listen.
    pub(crate) addr: SocketAddr,
    /// Tells the workers to stop (see [`request_stop`]).
    pub(crate) stop: watch::Sender<Stop>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// One worker serving `config`.
    pub(crate) fn start(config: Config) -> Proxy {
        Proxy::start_workers(config, None)
    }

    /// `workers` workers sharing a listening socket and the load board
    /// returned, on cells 0.. of it.
    pub(crate) fn start_sharing(config: Config, workers: usize) -> (Proxy, LoadBoard) {
        let board = LoadBoard::create().unwrap();
        board.set_in_use(workers);
        let fd = board.fd().try_clone_to_owned().unwrap();
        (Proxy::start_workers(config, Some((fd, workers))), board)
    }

    fn start_workers(config: Config, board: Option<(OwnedFd, usize)>) -> Proxy {
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            run_local(async move {
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
                    let listener = Listener::new(socket, true, Protocols::default()).unwrap();
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

    /// A client connection to the worker.
    pub(crate) fn connect(&self) -> Conn {
        Conn::connect(self.addr).unwrap()
    }

    /// Stops the worker and waits for its serve loop to return.
    pub(crate) fn stop(&mut self, how: Stop) {
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

/// An upstream group of the one server `addr`: a 300 ms read timeout, a
/// pool of 8 connections.
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
        tls: None,
        resolve: None,
        send_proxy_protocol: None,
        protocol: Default::default(),
    }
}

/// Runs `future` to its end as a worker runs its connections: on a
/// current-thread runtime with its I/O and time drivers, in a `LocalSet`.
pub(crate) fn run_local<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The tasks left go before the runtime, as in a worker (`process::boot`).
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, future)
}

/// A worker's snapshot of `config` (logging nowhere, no access log, no load
/// board) and the sender that asks it to stop.
pub(crate) fn snapshot(config: Config) -> (std::rc::Rc<Snapshot>, watch::Sender<Stop>) {
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let snapshot = Snapshot::new(config, log, AccessLogs::off(), stop_rx, None);
    (snapshot, stop)
}

/// A configuration routing `/app` to `origin`, `/down` to a port that
/// refuses connections, and host `fixed.test` to a fixed `201` answer.
pub(crate) fn config(origin: SocketAddr) -> Config {
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
        sigterm: Default::default(),
        shutdown_delay: Duration::ZERO,
        worker_timeout: Duration::from_secs(30),
        tls_session_timeout: Duration::from_secs(12 * 3600),
        max_connections: None,
        http2: Default::default(),
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
        tls: Default::default(),
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
pub(crate) fn exchange(c: &mut Conn, request: &str) -> Response {
    c.send(request.as_bytes()).unwrap();
    read_response(c, request.starts_with("HEAD"))
}

/// Reads the next response (an interim one included); `head` says the
/// request was `HEAD`.
pub(crate) fn read_response(c: &mut Conn, head: bool) -> Response {
    c.read_next_response(head).expect("a response")
}

/// Fails unless the worker closes `c` (an end of stream, or a reset) with
/// nothing more sent on it; a read timeout is a failure.
pub(crate) fn assert_closed(c: &mut Conn) {
    match c.read_to_close() {
        Ok(rest) => assert!(
            rest.is_empty(),
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => {
            assert!(
                prefork_testkit::http::is_reset(&e),
                "expected EOF, got {e} (with {:?} before it)",
                String::from_utf8_lossy(c.buffered())
            );
            assert!(
                c.buffered().is_empty(),
                "got {:?} before the reset",
                String::from_utf8_lossy(c.buffered())
            );
        }
    }
}
