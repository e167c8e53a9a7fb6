//! The master loop's own bookkeeping, driven without worker processes: the
//! supervisor's decisions are tested in `supervisor.rs`, these tests cover
//! what the loop does around them.

use super::{Link, Master, Startup};
use crate::control_socket;
use crate::link::LinkEvent;
use crate::listeners::Listeners;
use crate::query::{self, Asked, Query};
use crate::signals::Request;
use crate::supervisor::{Event, ExitStatus, Generation, Pid, Slot};
use crossbeam_channel::Sender;
use prefork_shared::ipc::{MasterMsg, WorkerMsg};
use prefork_shared::stats::{RouteCounters, WorkerStats};
use slog::Logger;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A master with one worker slot and no listener, and the ends of its
/// signal and query channels.
struct Harness {
    master: Master,
    signals: Sender<Request>,
    queries: Sender<Asked>,
    /// Holds the pid file and the control socket.
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "workers = 1\npid_file = \"{}\"\n",
        dir.path().join("prefork.pid").display()
    );
    let config = prefork_shared::config_file::parse(Path::new("t.toml"), &text).expect("config");
    let log = Logger::root(slog::Discard, slog::o!());
    let (signals, signals_rx) = crossbeam_channel::unbounded();
    let (queries, queries_rx) = crossbeam_channel::unbounded();
    let control = control_socket::listen(&dir.path().join("c.sock"), queries.clone(), log.clone())
        .expect("control socket");
    let master = Master::new(Startup {
        log,
        log_generation: Arc::new(AtomicU64::new(1)),
        config_path: dir.path().join("t.toml"),
        config,
        credentials: None,
        listeners: Listeners::default(),
        signals: signals_rx,
        // Never started: a worker spawn fails at once.
        exe: dir.path().join("no-such-binary"),
        queries: queries_rx,
        control,
        admin: None,
        handoff: None,
    });
    Harness {
        master,
        signals,
        queries,
        _dir: dir,
    }
}

/// Counters of a worker that served `requests` requests.
fn stats(requests: u64) -> Box<WorkerStats> {
    Box::new(WorkerStats {
        routes: vec![RouteCounters {
            route: "*/".into(),
            by_class: [0, 0, requests, 0, 0, 0],
            latency: Default::default(),
        }],
        ..WorkerStats::default()
    })
}

/// Makes `pid` a worker of slot 0 that said hello, as `try_spawn` and the
/// hello do for a real one.
fn started_worker(m: &mut Master, pid: Pid) {
    let (control, _commands) = ipc_channel::ipc::channel::<MasterMsg>().expect("channel");
    m.feed(Event::Spawned {
        slot: Slot(0),
        generation: Generation(1),
        pid,
    });
    m.links.insert(
        pid,
        Link {
            name: String::new(),
            control: Some(control),
            cell: None,
            slot: Slot(0),
            reaped: false,
            closed: false,
        },
    );
}

fn report(m: &mut Master, pid: Pid, requests: u64) {
    m.on_link(LinkEvent::Message(pid, WorkerMsg::Stats(stats(requests))));
}

fn reap(m: &mut Master, pid: Pid) {
    for event in m.on_reaped(vec![(pid, ExitStatus::Code(0))]) {
        m.feed(event);
    }
}

fn link_closed(m: &mut Master, pid: Pid) {
    m.on_link(LinkEvent::Closed {
        pid,
        reason: "Disconnected".into(),
    });
}

#[test]
fn a_workers_last_report_counts_when_its_exit_is_reaped_first() {
    // The worker sends its final counters and exits; SIGCHLD and the IPC
    // reader thread race, and the loop may well see the exit first.
    let mut h = harness();
    let m = &mut h.master;
    started_worker(m, 7001);
    report(m, 7001, 3);
    reap(m, 7001);
    report(m, 7001, 5);
    link_closed(m, 7001);
    assert_eq!(
        m.observed.total().requests(),
        5,
        "the final report, forwarded after the reap, was lost"
    );
    assert!(m.links.is_empty(), "the worker's link is kept");
}

#[test]
fn a_workers_last_report_counts_once_when_its_link_closes_first() {
    let mut h = harness();
    let m = &mut h.master;
    started_worker(m, 7001);
    report(m, 7001, 3);
    report(m, 7001, 5);
    link_closed(m, 7001);
    reap(m, 7001);
    // Its successor in the slot adds to the slot's total.
    started_worker(m, 7002);
    report(m, 7002, 2);
    assert_eq!(m.observed.total().requests(), 7);
    assert_eq!(m.links.len(), 1, "the first worker's link is kept");
}

/// Waits until `done` holds, for at most `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[test]
fn an_old_master_waiting_for_the_new_one_to_take_over_still_answers() {
    // The old master of a binary upgrade has said `go` and drained; the new
    // master has not taken the control socket over yet, so questions still
    // come here for up to 2 s.
    let h = harness();
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let mut master = h.master;
    master.handed_over = Some(ours);
    h.signals.send(Request::GracefulStop).expect("send");
    let running = std::thread::spawn(move || master.run().0);
    // Taken: the loop is carrying the stop out, or has done so.
    assert!(wait_until(Duration::from_secs(5), || h.signals.is_empty()));
    let answer = query::ask(&h.queries, Query::Status, Duration::from_secs(1));
    assert!(
        answer.is_some_and(|a| a.body.contains("\"shutting_down\":true")),
        "nobody answered while the old master waited for the new one"
    );
    // Once the new master took over (it closes the link), the old one exits.
    drop(theirs);
    assert!(
        wait_until(Duration::from_secs(1), || running.is_finished()),
        "the old master did not exit once the new one took over"
    );
    assert_eq!(running.join().expect("the master loop panicked"), 0);
}
