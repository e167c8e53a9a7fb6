//! `reuseport = true`: one SO_REUSEPORT socket per worker slot, held by the
//! master, kept across worker restarts and binary upgrades.

use crate::reload::routes_to;
use crate::support::client_loop::ClientLoop;
use crate::support::http;
use crate::support::origins;
use crate::support::prefork::{self, Prefork, Proc, Setup, BIN};
use crate::support::{wait_for, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Inodes of the sockets listening on 127.0.0.1:`port`.
fn listening(port: u16) -> BTreeSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN.
            (f.len() > 9 && f[1] == local && f[3] == "0A")
                .then(|| f[9].parse().ok())
                .flatten()
        })
        .collect()
}

/// The inodes of the sockets listening on `port` that `pid` holds open.
fn held(pid: i32, port: u16) -> BTreeSet<u64> {
    let listening = listening(port);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(|fd| {
        let link = std::fs::read_link(fd.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .filter(|inode| listening.contains(inode))
    .collect()
}

/// Each worker's slot and the one listening socket it holds (panics if a
/// worker holds more or fewer).
fn slot_sockets(workers: &[Proc], port: u16) -> BTreeMap<u32, u64> {
    workers
        .iter()
        .map(|w| {
            let inodes = held(w.pid, port);
            assert_eq!(inodes.len(), 1, "worker {w:?} holds {inodes:?}");
            let slot = w.slot().expect("a worker has a slot");
            (slot, inodes.into_iter().next().expect("one inode"))
        })
        .collect()
}

/// Requests in the access log, by worker pid.
/// An access log of the serving worker's pid and the path of each request.
const PID_FORMAT: &str = "access_log_format = \"$pid $request_uri\"";

/// The path the counted requests use (the harness's own probes use `/`).
const COUNTED: &str = "/counted";

fn requests_per_pid(p: &Prefork) -> BTreeMap<i32, usize> {
    let log = std::fs::read_to_string(p.dir().join("access.log")).unwrap_or_default();
    let mut counts = BTreeMap::new();
    let counted = log
        .lines()
        .filter_map(|l| l.strip_suffix(&format!(" {COUNTED}")))
        .filter_map(|pid| pid.parse::<i32>().ok());
    for pid in counted {
        *counts.entry(pid).or_insert(0) += 1;
    }
    counts
}

fn get_ok(p: &Prefork) {
    let r = http::get(p.port(), prefork::PROBE_HOST, COUNTED).expect("request");
    assert_eq!(r.status, 200);
}

/// The `PREFORK_LISTEN_FDS` a worker was started with.
fn listen_fds_env(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    environ
        .split(|&b| b == 0)
        .filter_map(|var| std::str::from_utf8(var).ok())
        .find_map(|var| var.strip_prefix("PREFORK_LISTEN_FDS="))
        .unwrap_or_else(|| panic!("worker {pid} has no PREFORK_LISTEN_FDS"))
        .to_owned()
}

/// A worker learns from the master, not from its config, which socket is
/// its own: that one never waits for the load board.
#[test]
fn a_workers_own_socket_is_marked_with_its_slot_and_a_shared_one_is_not() {
    let own = Prefork::start(Setup::new(2).reuseport());
    for w in own.workers() {
        let slot = w.slot().expect("a slot");
        assert_eq!(
            listen_fds_env(w.pid),
            format!("127.0.0.1:{}#{slot}", own.port())
        );
    }
    let shared = Prefork::start(Setup::new(2));
    for w in shared.workers() {
        assert_eq!(
            listen_fds_env(w.pid),
            format!("127.0.0.1:{}", shared.port())
        );
    }
}

#[test]
fn each_worker_owns_its_socket_and_requests_spread_over_all() {
    let p = Prefork::start(Setup::new(3).reuseport().log(PID_FORMAT));
    let workers = p.workers();
    let sockets = slot_sockets(&workers, p.port());
    let all = listening(p.port());
    assert_eq!(all.len(), 3, "one socket per slot: {all:?}");
    let distinct: BTreeSet<u64> = sockets.values().copied().collect();
    assert_eq!(distinct, all, "no two workers share a socket: {sockets:?}");
    assert_eq!(
        held(p.master_pid(), p.port()),
        all,
        "the master holds them all"
    );

    let before = requests_per_pid(&p);
    const N: usize = 90;
    for _ in 0..N {
        get_ok(&p);
    }
    let counted = |c: &BTreeMap<i32, usize>| {
        workers
            .iter()
            .map(|w| c.get(&w.pid).unwrap_or(&0) - before.get(&w.pid).unwrap_or(&0))
            .collect::<Vec<_>>()
    };
    let per_worker = wait_for(Duration::from_secs(5), || {
        let n = counted(&requests_per_pid(&p));
        (n.iter().sum::<usize>() == N).then_some(n)
    })
    .unwrap_or_else(|| panic!("the access log did not show {N} requests\n{}", p.logs()));
    // The kernel hashes each connection to one socket of the group: with 90
    // connections over 3 sockets (about 30 each) fewer than 5 on one is a
    // chance far below one in a million.
    assert!(
        per_worker.iter().all(|n| *n >= 5),
        "requests per worker: {per_worker:?}"
    );
    eprintln!("requests per worker with reuseport: {per_worker:?}");
}

#[test]
fn a_killed_workers_slot_keeps_its_socket_and_serves_again() {
    let p = Prefork::start(Setup::new(2).reuseport().log(PID_FORMAT));
    let workers = p.workers();
    let sockets = slot_sockets(&workers, p.port());
    let victim = workers
        .iter()
        .find(|w| w.slot() == Some(1))
        .expect("slot 1")
        .clone();
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("kill the worker");
    let replaced = p
        .wait_workers(2, Duration::from_secs(10), |w| {
            w.iter().all(|w| w.pid != victim.pid) && w.iter().any(|w| w.slot() == Some(1))
        })
        .unwrap_or_else(|| panic!("slot 1 was not restarted\n{}", p.logs()));
    assert_eq!(
        slot_sockets(&replaced, p.port()),
        sockets,
        "the restarted worker accepts on its slot's socket"
    );
    assert_eq!(listening(p.port()).len(), 2);
    let new = replaced
        .iter()
        .find(|w| w.slot() == Some(1))
        .expect("slot 1")
        .pid;
    // The new worker takes its share: within 200 connections it serves some.
    let mut sent = 0;
    let served = wait_until(Duration::from_secs(10), || {
        if sent < 200 {
            get_ok(&p);
            sent += 1;
        }
        requests_per_pid(&p).contains_key(&new)
    });
    assert!(served, "the restarted worker served nothing\n{}", p.logs());
}

#[test]
fn sigttin_binds_a_socket_for_the_new_slot_and_sigttou_closes_it() {
    let p = Prefork::start(Setup::new(2).reuseport().log(PID_FORMAT));
    let two = slot_sockets(&p.workers(), p.port());
    p.signal(Signal::SIGTTIN);
    let three = p
        .wait_workers(3, Duration::from_secs(10), |_| true)
        .unwrap_or_else(|| panic!("SIGTTIN did not add a worker\n{}", p.logs()));
    let three = slot_sockets(&three, p.port());
    assert_eq!(three.len(), 3);
    let added = three[&2];
    assert!(
        !two.values().any(|s| *s == added),
        "slot 2 got its own socket"
    );
    assert_eq!(three[&0], two[&0]);
    assert_eq!(three[&1], two[&1]);
    assert_eq!(listening(p.port()).len(), 3);

    p.signal(Signal::SIGTTOU);
    p.wait_workers(2, Duration::from_secs(10), |w| {
        w.iter().all(|w| w.slot() != Some(2))
    })
    .unwrap_or_else(|| panic!("SIGTTOU did not remove slot 2\n{}", p.logs()));
    let want: BTreeSet<u64> = two.values().copied().collect();
    assert!(
        wait_until(Duration::from_secs(5), || listening(p.port()) == want),
        "slot 2's socket is still listening: {:?} (want {want:?})\n{}",
        listening(p.port()),
        p.logs()
    );
    // No connection lands on a socket nobody accepts on any more.
    for _ in 0..40 {
        get_ok(&p);
    }
}

#[test]
fn a_binary_upgrade_hands_every_slot_socket_over_with_zero_failed_requests() {
    let dir = tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("temp dir");
    let exe = dir.path().join("prefork-under-test");
    std::fs::copy(BIN, &exe).expect("copy the binary");
    let a = origins::minihttp("upgraded");
    let mut p = Prefork::start_in(
        dir,
        Setup::new(2)
            .reuseport()
            .log(PID_FORMAT)
            .exe(&exe)
            .body(&routes_to("a", a)),
    );
    let sockets = slot_sockets(&p.workers(), p.port());

    let client = ClientLoop::start(p.port());
    assert!(wait_until(Duration::from_secs(5), || client.count() >= 20));
    let (new_master, new_workers) = p.binary_upgrade();
    client.wait_more(20, &p, "the upgrade");
    client.finish_without_failures(&p, "the upgrade");
    assert_eq!(
        slot_sockets(&new_workers, p.port()),
        sockets,
        "the new master's slots accept on the same sockets"
    );
    let all: BTreeSet<u64> = sockets.values().copied().collect();
    assert_eq!(held(new_master, p.port()), all);
    assert_eq!(listening(p.port()), all);
    let out = p.cli(&["-s", "quit"]);
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(10), || prefork::process(new_master)
            .is_none()),
        "the new master did not stop on -s quit\n{}",
        p.logs()
    );
}
