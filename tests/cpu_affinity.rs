//! `worker_cpu_affinity`: each worker, with all its threads, runs on the CPU
//! its slot is given; so does a worker that replaces it; a reload that turns
//! pinning off starts workers that may run anywhere.

use crate::support::origins;
use crate::support::prefork::{Prefork, Proc, Setup};
use crate::support::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::time::Duration;

const BODY: &str = r#"
[upstreams.app]
servers = ["ORIGIN"]
[[routes]]
upstream = "app"
"#;

/// Parses a `Cpus_allowed_list` value ("0-3,6").
fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        cpus.extend(a..=b);
    }
    cpus
}

/// The CPUs each thread of `pid` may run on (empty if it is gone).
fn thread_cpus(pid: i32) -> Vec<Vec<usize>> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))?;
            Some(parse_cpu_list(&line["Cpus_allowed_list:".len()..]))
        })
        .collect()
}

/// The CPUs this test process may run on: what `"auto"` hands out. With
/// one CPU, a pinned worker would look unpinned: the tests need two.
fn allowed() -> Vec<usize> {
    let cpus = thread_cpus(std::process::id() as i32)
        .into_iter()
        .next()
        .expect("this process has a main thread");
    assert!(
        cpus.len() >= 2,
        "these tests need 2 CPUs at least, have {cpus:?}"
    );
    cpus
}

/// Whether every thread of `w` may run on `cpus` exactly.
fn runs_on(w: &Proc, cpus: &[usize]) -> bool {
    let threads = thread_cpus(w.pid);
    !threads.is_empty() && threads.iter().all(|t| t == cpus)
}

#[test]
fn auto_pins_each_slot_and_its_replacement_and_a_reload_unpins() {
    let allowed = allowed();
    let origin = origins::minihttp("pinned");
    let body = BODY.replace("ORIGIN", &origin.to_string());
    let p = Prefork::start(
        Setup::new(3)
            .top("worker_cpu_affinity = \"auto\"")
            .body(&body),
    );
    let expected = |w: &Proc| vec![allowed[w.slot().expect("a slot") as usize % allowed.len()]];
    let workers = p.workers();
    assert_eq!(workers.len(), 3);
    for w in &workers {
        assert!(
            runs_on(w, &expected(w)),
            "worker {} in slot {:?} should run on {:?} only, its threads may run on {:?}",
            w.pid,
            w.slot(),
            expected(w),
            thread_cpus(w.pid)
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || p
            .error_log()
            .contains("pinned to a CPU")),
        "{}",
        p.logs()
    );

    // A replacement takes its slot's CPU.
    let victim = workers[1].clone();
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();
    let replaced = p
        .wait_workers(3, Duration::from_secs(10), |ws| {
            ws.iter().any(|w| {
                w.slot() == victim.slot() && w.pid != victim.pid && runs_on(w, &expected(w))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no pinned replacement in slot {:?}\n{}",
                victim.slot(),
                p.logs()
            )
        });
    assert_eq!(replaced.len(), 3);

    // Turning pinning off takes a new generation, which may run anywhere.
    let old: Vec<i32> = replaced.iter().map(|w| w.pid).collect();
    p.write_raw_config(
        &p.config_for(&body)
            .replace("worker_cpu_affinity = \"auto\"", ""),
    );
    p.signal(Signal::SIGHUP);
    p.wait_workers(3, Duration::from_secs(20), |ws| {
        ws.iter()
            .all(|w| !old.contains(&w.pid) && runs_on(w, &allowed))
    })
    .unwrap_or_else(|| {
        panic!(
            "no unpinned generation after the reload; workers {:?}\n{}",
            p.workers(),
            p.logs()
        )
    });
    let r = crate::support::http::get(p.port(), "x", "/").expect("served after the reload");
    assert_eq!(r.status, 200);
}

#[test]
fn listed_cpus_go_to_slots_in_order() {
    let allowed = allowed();
    let last = *allowed.last().expect("one CPU at least");
    let origin = origins::minihttp("listed");
    let p = Prefork::start(
        Setup::new(2)
            .top(&format!("worker_cpu_affinity = [{last}, {}]", allowed[0]))
            .body(&BODY.replace("ORIGIN", &origin.to_string())),
    );
    for w in p.workers() {
        let cpu = if w.slot() == Some(0) {
            last
        } else {
            allowed[0]
        };
        assert!(
            runs_on(&w, &[cpu]),
            "slot {:?}: {:?}",
            w.slot(),
            thread_cpus(w.pid)
        );
    }
    let r = crate::support::http::get(p.port(), "x", "/").expect("served");
    assert_eq!(r.status, 200);
}
