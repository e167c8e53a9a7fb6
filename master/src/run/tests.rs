//! The master loop's own bookkeeping, driven without worker processes: the
//! supervisor's decisions are tested in `supervisor/tests.rs`, these tests
//! cover what the loop does around them.

use super::{Master, Startup};
use crate::control_socket;
use crate::link::{LinkEvent, LinkId};
use crate::listeners::Listeners;
use crate::os::OwnImage;
use crate::query::{self, Asked, Query};
use crate::signals::Request;
use crate::supervisor::{Event, ExitStatus, Generation, Pid, Slot, WorkerPhase};
use crate::ticket_keys::TicketKeys;
use crate::upgrade::Answer;
use crossbeam_channel::Sender;
use ipc_channel::ipc::IpcReceiver;
use prefork_shared::ipc::{MasterMsg, StopMode, WorkerMsg};
use prefork_shared::stats::{RouteCounters, WorkerStats};
use prefork_shared::ticket_keys::{TicketKey, TicketKeyRing, KEY_NAME_LEN, KEY_SECRET_LEN};
use slog::Logger;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

/// A session-ticket key named and filled with `fill`.
fn key(fill: u8) -> TicketKey {
    TicketKey::new([fill; KEY_NAME_LEN], [fill; KEY_SECRET_LEN])
}

/// A master with one worker slot and no listener, and the ends of its
/// signal and query channels.
struct Harness {
    master: Master,
    signals: Sender<Request>,
    queries: Sender<Asked>,
    /// Holds the config file, the pid file and the control socket.
    dir: tempfile::TempDir,
}

/// Writes the config file a reload reads.
fn write_config(dir: &Path, workers: usize, more: &str) {
    let text = config_text(dir, workers, more);
    std::fs::write(dir.join("t.toml"), text).expect("write the config");
}

/// One loopback listener on a port free now (the default would be
/// 0.0.0.0:80, which a reload run as root would bind).
fn config_text(dir: &Path, workers: usize, more: &str) -> String {
    format!(
        "workers = {workers}\npid_file = \"{}\"\n{more}\n[[listen]]\naddr = \"{}\"\n",
        dir.join("prefork.pid").display(),
        std::fs::read_to_string(dir.join("addr")).expect("the harness's address")
    )
}

fn harness() -> Harness {
    harness_with("")
}

/// The harness with `more` top-level keys in its configuration.
fn harness_with(more: &str) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = free.local_addr().expect("its address");
    drop(free);
    std::fs::write(dir.path().join("addr"), addr.to_string()).expect("write");
    let text = config_text(dir.path(), 1, more);
    let config = prefork_shared::config::parse(Path::new("t.toml"), &text).expect("config");
    let listeners = Listeners::bind(&config.listen, 1).expect("bind");
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
        listeners,
        signals: signals_rx,
        // Not a program: a worker spawn fails at once.
        exe: OwnImage::of_file(&dir.path().join("addr")).expect("open"),
        queries: queries_rx,
        control,
        admin: None,
        handoff: None,
        ticket_keys: TicketKeys::new(Instant::now(), 12 * HOUR, key(1), key(2)),
        systemd: Default::default(),
    });
    Harness {
        master,
        signals,
        queries,
        dir,
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

/// Makes `pid` a worker of slot 0 that said hello, as `LinkTable::spawn` and
/// the hello do for a real one; returns its link.
fn started_worker(m: &mut Master, pid: Pid) -> LinkId {
    let from = spawned(m, pid, 0, 1);
    hello(m, from);
    from
}

fn report(m: &mut Master, from: LinkId, requests: u64) {
    m.on_link(LinkEvent::Message(from, WorkerMsg::Stats(stats(requests))));
}

fn reap(m: &mut Master, pid: Pid) {
    for event in m.on_reaped(vec![(pid, ExitStatus::Code(0))]) {
        m.feed(event);
    }
}

fn link_closed(m: &mut Master, from: LinkId) {
    m.on_link(LinkEvent::Closed {
        from,
        reason: "Disconnected".into(),
    });
}

#[test]
fn a_workers_last_report_counts_when_its_exit_is_reaped_first() {
    // The worker sends its final counters and exits; SIGCHLD and the IPC
    // reader thread race, and the loop may well see the exit first.
    let mut h = harness();
    let m = &mut h.master;
    let worker = started_worker(m, 7001);
    report(m, worker, 3);
    reap(m, 7001);
    report(m, worker, 5);
    link_closed(m, worker);
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
    let worker = started_worker(m, 7001);
    report(m, worker, 3);
    report(m, worker, 5);
    link_closed(m, worker);
    reap(m, 7001);
    // Its successor in the slot adds to the slot's total.
    let successor = started_worker(m, 7002);
    report(m, successor, 2);
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
    master.handoff.set_handed_over(ours);
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

/// A worker process started for `slot` of `generation`, not connected yet,
/// with its link as `LinkTable::spawn` makes it.
fn spawned(m: &mut Master, pid: Pid, slot: u32, generation: u64) -> LinkId {
    m.feed(Event::Spawned {
        slot: Slot(slot),
        generation: Generation(generation),
        pid,
    });
    m.links.add_for_test(pid, Slot(slot), &mut m.observed)
}

/// The worker says hello; returns what the master sends it.
fn hello(m: &mut Master, from: LinkId) -> IpcReceiver<MasterMsg> {
    let (control, commands) = ipc_channel::ipc::channel::<MasterMsg>().expect("channel");
    m.on_link(LinkEvent::Hello { from, control });
    commands
}

/// The worker of link `from` says it is Ready, and the master acts on it.
fn ready(m: &mut Master, from: LinkId) {
    let events = m.on_link(LinkEvent::Message(from, WorkerMsg::Ready));
    feed_all(m, events);
}

fn feed_all(m: &mut Master, events: Vec<Event>) {
    for event in events {
        assert_eq!(m.feed(event), None);
    }
}

/// The routes of each configuration sent, and whether a stop was asked.
fn received(commands: &IpcReceiver<MasterMsg>) -> (Vec<usize>, bool) {
    let (mut routes, mut stop) = (Vec::new(), false);
    while let Ok(msg) = commands.try_recv_timeout(Duration::from_millis(200)) {
        match msg {
            MasterMsg::Configure(config) => routes.push(config.routes.len()),
            MasterMsg::Stop(_) => stop = true,
            MasterMsg::ReopenLogs | MasterMsg::TicketKeys(_) => {}
        }
    }
    (routes, stop)
}

#[test]
fn a_hot_reload_while_a_generation_starts_reaches_all_of_it_and_the_old_one_drains() {
    // Generation 1 serves; a reload to 2 workers starts generation 2 (one
    // worker connected, one not yet); a second reload, which only adds a
    // route, arrives meanwhile (hot: compared with generation 2's config).
    let h = harness();
    let mut m = h.master;
    write_config(h.dir.path(), 1, "");
    let first = spawned(&mut m, 100, 0, 1);
    let old = hello(&mut m, first);
    ready(&mut m, first);

    write_config(h.dir.path(), 2, "");
    let events = m.reload_and_wait();
    feed_all(&mut m, events);
    assert_eq!(m.supervisor.generation(), Generation(2));
    // (The harness cannot start them: the supervisor retries later.)
    let second = [spawned(&mut m, 200, 0, 2), spawned(&mut m, 201, 1, 2)];
    let connected = hello(&mut m, second[0]);

    let route = "[[routes]]\nrespond = { status = 200, body = \"new\" }\n";
    write_config(h.dir.path(), 2, route);
    let events = m.reload_and_wait();
    assert!(
        matches!(events.as_slice(), [Event::Reconfigure { .. }]),
        "{events:?}"
    );
    feed_all(&mut m, events);
    assert_eq!(
        m.supervisor.generation(),
        Generation(2),
        "no new generation"
    );
    let later = hello(&mut m, second[1]);

    // The newest config reaches every worker of generation 2, whether it
    // was connected at the hot reload or not.
    assert_eq!(received(&connected), (vec![0, 1], false));
    assert_eq!(received(&later), (vec![1], false));
    // Generation 1 serves on with its own config until generation 2 is
    // ready, then drains.
    assert_eq!(received(&old), (vec![0], false));
    for from in second {
        ready(&mut m, from);
    }
    assert_eq!(received(&old), (vec![], true));
    assert_eq!(received(&connected), (vec![], false));
}

#[test]
fn an_old_generations_config_is_dropped_once_the_loop_settles_with_none_of_its_workers_left() {
    // Generation 1 serves; a reload starts generation 2, which becomes
    // ready, so generation 1 drains. The loop feeds `Settled` after each
    // wake-up: only the first one after generation 1's last worker is
    // gone drops its configuration.
    let h = harness();
    let mut m = h.master;
    let first = spawned(&mut m, 100, 0, 1);
    // Every command channel is kept: a stop that cannot be sent would be
    // signalled to the pid instead.
    let old = hello(&mut m, first);
    ready(&mut m, first);

    write_config(h.dir.path(), 2, "");
    let events = m.reload_and_wait();
    feed_all(&mut m, events);
    let mut new = Vec::new();
    for (pid, slot) in [(200, 0), (201, 1)] {
        let from = spawned(&mut m, pid, slot, 2);
        new.push(hello(&mut m, from));
        ready(&mut m, from);
    }
    assert_eq!(received(&old), (vec![0], true), "generation 1 drains");
    feed_all(&mut m, vec![Event::Settled]);
    assert!(
        m.generations.get(Generation(1)).is_some(),
        "dropped while its worker drains"
    );

    reap(&mut m, 100);
    assert!(
        m.generations.get(Generation(1)).is_some(),
        "dropped before the loop settled"
    );
    feed_all(&mut m, vec![Event::Settled]);
    assert!(
        m.generations.get(Generation(1)).is_none(),
        "kept once settled with no worker of its own left"
    );
    assert!(m.generations.get(Generation(2)).is_some());
    assert_eq!(m.current_config().workers, 2);
}

/// The phase the supervisor gives `pid`.
fn phase(m: &Master, pid: Pid) -> Option<WorkerPhase> {
    m.supervisor
        .worker_views()
        .into_iter()
        .find(|w| w.pid == pid)
        .map(|w| w.phase)
}

#[test]
fn a_late_event_from_a_reaped_workers_link_is_not_taken_for_its_pid_successor() {
    // Worker 7001 exits; its reader thread has not forwarded its last
    // messages and its close yet when the kernel gives pid 7001 to the
    // slot's next worker (pids are handed out in a cycle: the counter may
    // sit just below it).
    let mut h = harness();
    let m = &mut h.master;
    let old = started_worker(m, 7001);
    report(m, old, 3);
    reap(m, 7001);
    let new = spawned(m, 7001, 0, 1);
    // The old link's last messages and close come now.
    ready(m, old);
    assert_eq!(
        phase(m, 7001),
        Some(WorkerPhase::Starting),
        "the new worker was taken for ready by its predecessor's message"
    );
    link_closed(m, old);
    // The new worker serves, exits, and its last report comes after its
    // reap, as often.
    hello(m, new);
    report(m, new, 2);
    reap(m, 7001);
    report(m, new, 4);
    link_closed(m, new);
    assert_eq!(
        m.observed.total().requests(),
        3 + 4,
        "the new worker's last report was lost"
    );
    assert!(m.links.is_empty());
}

/// The slots of the per-slot (`reuseport`) sockets the master holds.
fn slot_sockets(m: &Master) -> Vec<u32> {
    let mut slots: Vec<u32> = m
        .listeners
        .all()
        .into_iter()
        .filter_map(|(_, slot, _)| slot.map(|s| s.0))
        .collect();
    slots.sort_unstable();
    slots
}

/// Writes a config of `workers` workers whose listener is `reuseport`.
fn write_reuseport_config(dir: &Path, workers: usize, more: &str) {
    let text = config_text(dir, workers, more) + "reuseport = true\n";
    std::fs::write(dir.join("t.toml"), text).expect("write the config");
}

#[test]
fn a_hot_reload_after_sigttou_binds_no_socket_for_the_slot_given_up() {
    // A `reuseport` socket bound even for a moment joins the port's group:
    // the kernel queues connections on it, lost when the master closes it.
    let h = harness();
    let mut m = h.master;
    write_reuseport_config(h.dir.path(), 2, "");
    let events = m.reload_and_wait();
    feed_all(&mut m, events);
    assert_eq!(slot_sockets(&m), vec![0, 1]);
    let events = m.on_signal(Request::RemoveWorker);
    feed_all(&mut m, events);
    assert_eq!(slot_sockets(&m), vec![0]);

    let route = "[[routes]]\nrespond = { status = 200, body = \"new\" }\n";
    write_reuseport_config(h.dir.path(), 2, route);
    let events = m.reload_and_wait();
    assert!(
        matches!(events.as_slice(), [Event::Reconfigure { .. }]),
        "{events:?}"
    );
    assert_eq!(slot_sockets(&m), vec![0], "slot 1 got a socket again");
    feed_all(&mut m, events);
    assert_eq!(slot_sockets(&m), vec![0]);
}

#[test]
fn a_reload_while_stopping_binds_no_socket_for_slots_that_never_run() {
    let h = harness();
    let mut m = h.master;
    // No worker runs: the stop is over at once, and the master stays stopping.
    assert_eq!(m.feed(Event::Stop(StopMode::Graceful)), Some(0));
    write_reuseport_config(h.dir.path(), 2, "");
    let events = m.reload_and_wait();
    assert!(
        matches!(events.as_slice(), [Event::Reload { .. }]),
        "{events:?}"
    );
    assert_eq!(
        slot_sockets(&m),
        vec![0],
        "a socket for a slot never started"
    );
}

/// The harness's pid file, as a new master taking over writes it.
fn pid_file_written(h: &Path) -> bool {
    h.join("prefork.pid").exists()
}

#[test]
fn a_new_master_takes_over_when_the_old_one_answers() {
    // Started by a binary upgrade, it told the old master that it serves.
    let h = harness();
    let mut m = h.master;
    let (ours, _theirs) = UnixStream::pair().expect("socket pair");
    m.handoff.set_announced(0, ours);
    feed_all(&mut m, vec![Event::ServingAnnounced]);
    assert!(!pid_file_written(h.dir.path()));
    let answered = m.handoff.on_answer(Answer::HandedOver);
    feed_all(&mut m, vec![answered]);
    assert!(pid_file_written(h.dir.path()), "it did not take over");
}

#[test]
fn a_new_master_stopping_before_the_old_one_answers_withdraws_and_takes_nothing_over() {
    let h = harness();
    let mut m = h.master;
    let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
    m.handoff.set_announced(0, ours);
    feed_all(&mut m, vec![Event::ServingAnnounced]);
    // No worker runs: the stop is over at once.
    assert_eq!(m.feed(Event::Stop(StopMode::Graceful)), Some(0));
    // The old master sees the link end, and carries on serving.
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut said = Vec::new();
    assert_eq!(theirs.read_to_end(&mut said).ok(), Some(0), "not withdrawn");
    // Its answer, crossing the withdrawal, takes nothing over.
    let answered = m.handoff.on_answer(Answer::HandedOver);
    feed_all(&mut m, vec![answered]);
    assert!(
        !pid_file_written(h.dir.path()),
        "took over after withdrawing"
    );
}

/// What the master sent a worker: `K<n>` for ticket keys sealing with key
/// `n`, `C` for a configuration.
fn sent(commands: &IpcReceiver<MasterMsg>) -> (Vec<String>, Vec<TicketKeyRing>) {
    let (mut said, mut rings) = (Vec::new(), Vec::new());
    while let Ok(msg) = commands.try_recv_timeout(Duration::from_millis(200)) {
        match msg {
            MasterMsg::TicketKeys(ring) => {
                said.push(format!("K{}", ring.current.name()[0]));
                rings.push(*ring);
            }
            MasterMsg::Configure(_) => said.push("C".into()),
            MasterMsg::Stop(_) => said.push("S".into()),
            MasterMsg::ReopenLogs => said.push("R".into()),
        }
    }
    (said, rings)
}

#[test]
fn a_worker_gets_the_ticket_keys_before_its_configuration() {
    let h = harness();
    let mut m = h.master;
    let first = spawned(&mut m, 100, 0, 1);
    let (said, rings) = sent(&hello(&mut m, first));
    assert_eq!(said, ["K1", "C"]);
    assert_eq!(rings[0], m.ticket_keys.ring());
}

#[test]
fn every_generation_gets_the_same_keys_and_every_worker_each_rotation() {
    let h = harness();
    let mut m = h.master;
    write_config(h.dir.path(), 1, "");
    let first = spawned(&mut m, 100, 0, 1);
    let old = hello(&mut m, first);
    ready(&mut m, first);
    write_config(h.dir.path(), 2, "");
    let events = m.reload_and_wait();
    feed_all(&mut m, events);
    assert_eq!(m.supervisor.generation(), Generation(2));
    let second = spawned(&mut m, 200, 0, 2);
    let new = hello(&mut m, second);
    let (said_old, rings_old) = sent(&old);
    let (said_new, rings_new) = sent(&new);
    assert_eq!(said_old, ["K1", "C"]);
    assert_eq!(said_new, ["K1", "C"]);
    assert_eq!(rings_old, rings_new);

    // Not due yet: nothing sent.
    m.rotate_ticket_keys(Instant::now());
    assert!(sent(&old).0.is_empty());
    let due = m.ticket_keys.rotate_at();
    m.rotate_ticket_keys(due);
    let (said_old, rings_old) = sent(&old);
    let (said_new, rings_new) = sent(&new);
    assert_eq!(said_old, ["K2"]);
    assert_eq!(said_new, ["K2"]);
    assert_eq!(rings_old, rings_new);
    let previous = rings_old[0].find(&[1; KEY_NAME_LEN]);
    assert_eq!(previous, Some(&key(1)), "the previous key still opens");
    assert_eq!(m.ticket_keys.rotate_at(), due + 12 * HOUR);

    // A worker started after the rotation gets the rotated keys.
    let third = spawned(&mut m, 201, 1, 2);
    let (said, rings) = sent(&hello(&mut m, third));
    assert_eq!(said, ["K2", "C"]);
    assert_eq!(rings[0], m.ticket_keys.ring());
}

#[test]
fn a_reload_that_shortens_tls_session_timeout_reaches_every_worker() {
    let h = harness();
    let mut m = h.master;
    let first = spawned(&mut m, 100, 0, 1);
    let commands = hello(&mut m, first);
    ready(&mut m, first);
    assert_eq!(sent(&commands).0, ["K1", "C"]);

    write_config(h.dir.path(), 1, "tls_session_timeout = \"5m\"");
    let events = m.reload_and_wait();
    feed_all(&mut m, events);
    let now = Instant::now();
    m.follow_session_timeout(now);
    let (said, rings) = sent(&commands);
    assert_eq!(said, ["C", "K1"]);
    assert_eq!(rings[0].lifetime, Duration::from_secs(300));
    assert!(m.ticket_keys.rotate_at() <= now + Duration::from_secs(300));
    // Unchanged: nothing more is sent.
    m.follow_session_timeout(Instant::now());
    assert!(sent(&commands).0.is_empty());
}

/// A pid no process can have (above Linux's highest `pid_max`): a kill
/// sent to it by mistake reaches nobody.
const NO_SUCH_PID: Pid = 2_000_000_000;

#[test]
fn a_link_closed_before_its_worker_was_configured_kills_the_worker() {
    let mut h = harness();
    let m = &mut h.master;
    // A bad hello (an impostor connected first, or the worker itself): the
    // worker can never be configured, so it goes now, not at BOOT_TIMEOUT.
    spawned(m, NO_SUCH_PID, 0, 1);
    let reason = "bad hello: wrong secret (pid 1)";
    assert!(m.links.link_closed(NO_SUCH_PID, reason, &mut m.observed));
    reap(m, NO_SUCH_PID);
    assert!(m.links.is_empty());
    // A configured worker's link closes as it exits; one reaped before it
    // said hello has its link closed by the master (`link::abandon`).
    let configured = spawned(m, NO_SUCH_PID, 0, 1);
    hello(m, configured);
    assert!(!m
        .links
        .link_closed(NO_SUCH_PID, "Disconnected", &mut m.observed));
    reap(m, NO_SUCH_PID);
    spawned(m, NO_SUCH_PID, 0, 1);
    reap(m, NO_SUCH_PID);
    assert!(!m
        .links
        .link_closed(NO_SUCH_PID, "no hello", &mut m.observed));
    assert!(m.links.is_empty());
}

#[test]
fn heartbeats_queued_while_the_loop_was_busy_count_before_the_timer() {
    let mut h = harness_with("worker_timeout = \"1s\"");
    let from = spawned(&mut h.master, NO_SUCH_PID, 0, 1);
    let _commands = hello(&mut h.master, from);
    ready(&mut h.master, from);
    assert_eq!(phase(&h.master, NO_SUCH_PID), Some(WorkerPhase::Ready));
    // The worker beats on time, but the loop is busy elsewhere (a slow
    // reload) for longer than worker_timeout: the beats wait in the queue.
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        h.master
            .links
            .queue_for_test(LinkEvent::Message(from, WorkerMsg::Heartbeat));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The timer and the queued beats are ready together: the beats count.
    let events = h.master.on_timer();
    assert_eq!(events.last(), Some(&Event::Tick));
    feed_all(&mut h.master, events);
    assert_eq!(
        phase(&h.master, NO_SUCH_PID),
        Some(WorkerPhase::Ready),
        "a healthy worker was taken for hung"
    );
}

#[test]
fn upstream_addresses_found_again_reach_the_running_workers() {
    let h = harness_with("[upstreams.a]\nservers = [\"localhost:1\"]\nresolve = \"1s\"\n");
    let mut m = h.master;
    let from = spawned(&mut m, NO_SUCH_PID, 0, 1);
    let commands = hello(&mut m, from);
    ready(&mut m, from);
    while commands.try_recv().is_ok() {}
    let addrs = |list: &[&str]| -> Vec<std::net::SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    };
    let found = crate::resolver::Found::from([(
        "localhost:1".to_owned(),
        Ok(addrs(&["10.0.0.1:1", "10.0.0.2:1"])),
    )]);
    let events: Vec<Event> = m.finish_resolve(&found).into_iter().collect();
    assert!(
        matches!(events.as_slice(), [Event::Reconfigure { .. }]),
        "{events:?}"
    );
    feed_all(&mut m, events);
    let configured = std::iter::from_fn(|| commands.try_recv().ok())
        .find_map(|msg| match msg {
            MasterMsg::Configure(config) => Some(config),
            _ => None,
        })
        .expect("the worker gets the new addresses");
    let got: Vec<_> = configured.upstreams["a"]
        .servers
        .iter()
        .map(|s| s.addr)
        .collect();
    assert_eq!(got, addrs(&["10.0.0.1:1", "10.0.0.2:1"]));
    // The same answer again changes nothing.
    assert!(m.finish_resolve(&found).is_none());
}
