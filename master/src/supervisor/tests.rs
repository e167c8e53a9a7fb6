//! The supervisor's decisions, driven by feeding it events: no process,
//! no clock but the instants the tests pass.

use super::cohort::backoff;
use super::*;

/// Heartbeat limit of the tests that are not about heartbeats.
const NO_HEARTBEAT_LIMIT: Duration = Duration::from_secs(3600);

fn sup(workers: usize) -> Supervisor {
    sup_with(workers, NO_HEARTBEAT_LIMIT)
}

fn sup_with(workers: usize, worker_timeout: Duration) -> Supervisor {
    Supervisor::new(
        Logger::root(slog::Discard, slog::o!()),
        workers,
        Timeouts {
            shutdown_timeout: Duration::from_secs(30),
            worker_timeout,
            shutdown_delay: Duration::ZERO,
        },
    )
}

fn reload(workers: usize, shutdown_timeout: Duration) -> Event {
    Event::Reload {
        workers,
        shutdown_timeout,
        worker_timeout: NO_HEARTBEAT_LIMIT,
        shutdown_delay: Duration::ZERO,
    }
}

fn spawns(actions: &[Action]) -> Vec<(u32, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, generation } => Some((slot.0, generation.0)),
            _ => None,
        })
        .collect()
}

/// Starts `n` workers with pids 100.. and reports them all Ready.
fn running(n: usize, now: Instant) -> Supervisor {
    let mut s = sup(n);
    let actions = s.handle(Event::Started, now);
    assert_eq!(spawns(&actions).len(), n);
    for i in 0..n {
        s.handle(
            Event::Spawned {
                slot: Slot(i as u32),
                generation: Generation(1),
                pid: 100 + i as u32,
            },
            now,
        );
        s.handle(Event::WorkerReady(100 + i as u32), now);
    }
    s
}

#[test]
fn starts_one_worker_per_slot() {
    let mut s = sup(3);
    let actions = s.handle(Event::Started, Instant::now());
    assert_eq!(spawns(&actions), vec![(0, 1), (1, 1), (2, 1)]);
}

#[test]
fn a_killed_worker_is_restarted_at_once_in_its_slot() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    let later = t0 + Duration::from_secs(60);
    let actions = s.handle(Event::WorkerExited(101, ExitStatus::Signal(9)), later);
    assert_eq!(spawns(&actions), vec![(1, 1)]);
}

#[test]
fn a_crash_loop_backs_off_exponentially_up_to_a_cap() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let mut now = t0 + Duration::from_secs(60);
    let mut pid = 100;
    let mut delays = Vec::new();
    for _ in 0..12 {
        let actions = s.handle(Event::WorkerExited(pid, ExitStatus::Code(101)), now);
        let delay = match spawns(&actions).as_slice() {
            [(0, 1)] => Duration::ZERO,
            [] => {
                let at = s.next_wakeup().expect("a restart is scheduled");
                let delay = at - now;
                assert!(spawns(&s.handle(Event::Tick, at - Duration::from_millis(1))).is_empty());
                now = at;
                assert_eq!(spawns(&s.handle(Event::Tick, now)), vec![(0, 1)]);
                delay
            }
            other => panic!("unexpected spawns {other:?}"),
        };
        delays.push(delay);
        pid += 1;
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(1),
                pid,
            },
            now,
        );
        s.handle(Event::WorkerReady(pid), now);
        now += Duration::from_millis(10);
    }
    assert_eq!(delays[0], Duration::ZERO);
    assert_eq!(delays[1], Duration::from_millis(200));
    assert_eq!(delays[2], Duration::from_millis(400));
    assert!(delays.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(*delays.last().unwrap(), BACKOFF_CAP);
}

#[test]
fn a_healthy_run_resets_the_backoff() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let now = t0 + Duration::from_secs(1);
    s.handle(Event::WorkerExited(100, ExitStatus::Code(1)), now);
    s.handle(
        Event::Spawned {
            slot: Slot(0),
            generation: Generation(1),
            pid: 200,
        },
        now,
    );
    s.handle(Event::WorkerReady(200), now);
    let much_later = now + HEALTHY_UPTIME + Duration::from_secs(1);
    let actions = s.handle(Event::WorkerExited(200, ExitStatus::Signal(9)), much_later);
    assert_eq!(spawns(&actions), vec![(0, 1)]);
}

#[test]
fn a_worker_stopped_by_a_signal_is_replaced_at_once_and_not_counted() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let signalled = ExitStatus::Code(exit::WORKER_STOPPED_BY_SIGNAL);
    let mut pid = 100;
    for i in 1..=3u64 {
        // Each stopped right after it started: a crash would back off.
        let now = t0 + Duration::from_millis(10 * i);
        let actions = s.handle(Event::WorkerExited(pid, signalled), now);
        assert_eq!(spawns(&actions), vec![(0, 1)], "stop {i}");
        pid += 100;
        s.handle(
            Event::Spawned {
                slot: Slot(0),
                generation: Generation(1),
                pid,
            },
            now,
        );
        s.handle(Event::WorkerReady(pid), now);
    }
    assert!(s.restarts.values().all(|&n| n == 0), "{:?}", s.restarts);
}

#[test]
fn reload_drains_old_generation_only_after_new_one_is_ready() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    let actions = s.handle(reload(2, Duration::from_secs(5)), t0);
    assert_eq!(spawns(&actions), vec![(0, 2), (1, 2)]);
    assert_eq!(s.generation(), Generation(2));
    for (i, pid) in [200, 201].into_iter().enumerate() {
        let a = s.handle(
            Event::Spawned {
                slot: Slot(i as u32),
                generation: Generation(2),
                pid,
            },
            t0,
        );
        assert!(a.is_empty());
    }
    assert!(
        s.handle(Event::WorkerReady(200), t0).is_empty(),
        "one new worker is not enough"
    );
    let actions = s.handle(Event::WorkerReady(201), t0);
    assert_eq!(
        actions,
        vec![
            Action::Stop(100, StopMode::Graceful),
            Action::Stop(101, StopMode::Graceful)
        ]
    );
    // Old workers exiting after being asked to is not a crash.
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0);
    assert!(a.is_empty());
    // One that ignores the request is killed a grace after its own
    // shutdown timeout (generation 1's: the reload's is generation 2's).
    let deadline = t0 + Duration::from_secs(30) + FAST_STOP_GRACE;
    assert_eq!(s.next_wakeup(), Some(deadline));
    assert_eq!(s.handle(Event::Tick, deadline), vec![Action::Kill(101)]);
    // Only the new workers' heartbeat deadlines remain.
    assert!(s
        .next_wakeup()
        .is_some_and(|t| t > deadline + Duration::from_secs(60)));
}

#[test]
fn a_reload_during_a_reload_drains_both_older_generations() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    s.handle(
        Event::Spawned {
            slot: Slot(0),
            generation: Generation(2),
            pid: 200,
        },
        t0,
    );
    // Generation 2 never finished starting: its booting worker drains.
    let actions = s.handle(reload(1, Duration::from_secs(5)), t0);
    assert_eq!(spawns(&actions), vec![(0, 3)]);
    assert_eq!(stops(&actions), vec![(200, StopMode::Graceful)]);
    s.handle(
        Event::Spawned {
            slot: Slot(0),
            generation: Generation(3),
            pid: 300,
        },
        t0,
    );
    // The generation-2 worker becoming ready changes nothing.
    assert!(s.handle(Event::WorkerReady(200), t0).is_empty());
    // Generation 1 serves until generation 3 is ready.
    let actions = s.handle(Event::WorkerReady(300), t0);
    assert_eq!(stops(&actions), vec![(100, StopMode::Graceful)]);
    // A worker of a replaced generation that crashes is not restarted.
    assert!(s
        .handle(Event::WorkerExited(200, ExitStatus::Signal(9)), t0)
        .is_empty());
}

#[test]
fn graceful_stop_waits_for_workers_then_exits() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    let actions = s.handle(Event::Stop(StopMode::Graceful), t0);
    assert_eq!(
        actions,
        vec![
            Action::Stop(100, StopMode::Graceful),
            Action::Stop(101, StopMode::Graceful)
        ]
    );
    assert!(s
        .handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0)
        .is_empty());
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0);
    assert_eq!(a, vec![Action::Exit(0)]);
}

/// Running workers whose configuration has `shutdown_delay = delay`
/// (given by a hot reload at `now`).
fn running_with_delay(n: usize, delay: Duration, now: Instant) -> Supervisor {
    let mut s = running(n, now);
    s.handle(
        Event::Reconfigure {
            shutdown_timeout: Duration::from_secs(30),
            worker_timeout: NO_HEARTBEAT_LIMIT,
            shutdown_delay: delay,
        },
        now,
    );
    s
}

#[test]
fn a_graceful_stop_with_a_shutdown_delay_keeps_serving_unhealthy_then_drains() {
    let t0 = Instant::now();
    let delay = Duration::from_secs(5);
    let mut s = running_with_delay(2, delay, t0);
    assert!(s.healthy());
    // Nothing stops yet: the workers serve, /healthz says 503.
    assert!(s.handle(Event::Stop(StopMode::Graceful), t0).is_empty());
    assert!(!s.healthy());
    assert!(s.shutting_down());
    assert_eq!(s.next_wakeup(), Some(t0 + delay));
    // Asked again: still the first deadline.
    assert!(s
        .handle(Event::Stop(StopMode::Graceful), t0 + Duration::from_secs(1))
        .is_empty());
    // A worker that dies meanwhile is replaced: it still takes traffic.
    let t1 = t0 + Duration::from_secs(2);
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Signal(9)), t1);
    assert_eq!(spawns(&a), vec![(1, 1)]);
    s.handle(
        Event::Spawned {
            slot: Slot(1),
            generation: Generation(1),
            pid: 102,
        },
        t1,
    );
    // Neither a new generation nor a binary upgrade starts meanwhile.
    assert!(s.handle(reload(3, Duration::from_secs(1)), t1).is_empty());
    assert!(s.handle(Event::UpgradeRequested, t1).is_empty());
    assert!(s
        .handle(Event::Tick, t0 + delay - Duration::from_millis(1))
        .is_empty());
    // Then the graceful stop proceeds, the new worker with the others.
    let a = s.handle(Event::Tick, t0 + delay);
    assert_eq!(
        stops(&a),
        vec![(100, StopMode::Graceful), (102, StopMode::Graceful)]
    );
    assert!(spawns(&a).is_empty());
}

#[test]
fn a_fast_stop_during_the_shutdown_delay_stops_at_once() {
    let t0 = Instant::now();
    let mut s = running_with_delay(2, Duration::from_secs(5), t0);
    s.handle(Event::Stop(StopMode::Graceful), t0);
    let a = s.handle(Event::Stop(StopMode::Fast), t0 + Duration::from_secs(1));
    assert_eq!(
        stops(&a),
        vec![(100, StopMode::Fast), (101, StopMode::Fast)]
    );
}

#[test]
fn a_binary_upgrade_ending_the_old_master_skips_the_shutdown_delay() {
    let t0 = Instant::now();
    let mut s = running_with_delay(1, Duration::from_secs(5), t0);
    s.handle(Event::UpgradeRequested, t0);
    s.handle(Event::UpgradeStarted(900), t0);
    // The new master serves the same listeners: the old one drains now.
    let a = s.handle(Event::UpgradeReady, t0);
    assert_eq!(stops(&a), vec![(100, StopMode::Graceful)]);
}

#[test]
fn graceful_stop_kills_stragglers_a_grace_after_the_shutdown_timeout() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(Event::Stop(StopMode::Graceful), t0);
    // The worker closes what is left at the shutdown timeout itself.
    let deadline = t0 + Duration::from_secs(30) + FAST_STOP_GRACE;
    assert!(s
        .handle(Event::Tick, deadline - Duration::from_millis(1))
        .is_empty());
    assert_eq!(s.handle(Event::Tick, deadline), vec![Action::Kill(100)]);
    assert_eq!(
        s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), deadline),
        vec![Action::Exit(0)]
    );
}

#[test]
fn fast_stop_overrides_graceful_and_no_restart_happens_while_stopping() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    s.handle(Event::Stop(StopMode::Graceful), t0);
    let a = s.handle(Event::Stop(StopMode::Fast), t0);
    assert_eq!(
        a,
        vec![
            Action::Stop(100, StopMode::Fast),
            Action::Stop(101, StopMode::Fast)
        ]
    );
    assert!(s.handle(Event::Stop(StopMode::Graceful), t0).is_empty());
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t0);
    assert!(spawns(&a).is_empty());
    assert!(s.handle(reload(4, Duration::from_secs(1)), t0).is_empty());
    assert_eq!(
        s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0),
        vec![Action::Exit(0)]
    );
}

#[test]
fn a_worker_that_never_becomes_ready_is_killed_and_replaced_with_backoff() {
    let t0 = Instant::now();
    let mut s = sup(1);
    s.handle(Event::Started, t0);
    s.handle(
        Event::Spawned {
            slot: Slot(0),
            generation: Generation(1),
            pid: 100,
        },
        t0,
    );
    assert_eq!(s.next_wakeup(), Some(t0 + BOOT_TIMEOUT));
    assert_eq!(
        s.handle(Event::Tick, t0 + BOOT_TIMEOUT),
        vec![Action::Kill(100)]
    );
    let a = s.handle(
        Event::WorkerExited(100, ExitStatus::Signal(9)),
        t0 + BOOT_TIMEOUT,
    );
    assert_eq!(spawns(&a), vec![(0, 1)]);
}

#[test]
fn spawn_failures_back_off() {
    let t0 = Instant::now();
    let mut s = sup(1);
    s.handle(Event::Started, t0);
    let fail = || Event::SpawnFailed {
        slot: Slot(0),
        generation: Generation(1),
        reason: "EAGAIN".into(),
    };
    assert_eq!(spawns(&s.handle(fail(), t0)), vec![(0, 1)]);
    assert!(spawns(&s.handle(fail(), t0)).is_empty());
    assert_eq!(s.next_wakeup(), Some(t0 + BACKOFF_BASE));
}

#[test]
fn stop_with_no_worker_exits_at_once() {
    let mut s = sup(1);
    assert_eq!(
        s.handle(Event::Stop(StopMode::Graceful), Instant::now()),
        vec![Action::Exit(0)]
    );
}

#[test]
fn backoff_schedule() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), Duration::ZERO);
    assert_eq!(backoff(2), Duration::from_millis(200));
    assert_eq!(backoff(3), Duration::from_millis(400));
    assert_eq!(backoff(8), Duration::from_millis(200 * 64));
    assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
}

fn spawned(s: &mut Supervisor, slot: u32, generation: u64, pid: Pid, now: Instant) -> Vec<Action> {
    s.handle(
        Event::Spawned {
            slot: Slot(slot),
            generation: Generation(generation),
            pid,
        },
        now,
    )
}

fn stops(actions: &[Action]) -> Vec<(Pid, StopMode)> {
    let mut out: Vec<(Pid, StopMode)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop(pid, mode) => Some((*pid, *mode)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(pid, _)| *pid);
    out
}

fn reconfigure() -> Event {
    Event::Reconfigure {
        shutdown_timeout: Duration::from_secs(30),
        worker_timeout: NO_HEARTBEAT_LIMIT,
        shutdown_delay: Duration::ZERO,
    }
}

#[test]
fn a_hot_reload_while_a_generation_starts_leaves_the_switch_to_it_intact() {
    // Generation 2 is starting (one worker connected, one not yet) when
    // a hot reload comes: it reaches generation 2 only (a worker not
    // connected yet gets its generation's newest config at hello, from
    // `LinkTable::hello`), generation 1 keeps serving until generation 2
    // is ready, then drains by its own limit (its workers close what is
    // left at their own 30 s, not the new 5 s); nothing more is started.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    assert_eq!(
        spawns(&s.handle(reload(2, Duration::from_secs(30)), t0)),
        vec![(0, 2), (1, 2)]
    );
    spawned(&mut s, 0, 2, 200, t0);
    spawned(&mut s, 1, 2, 201, t0);
    s.handle(Event::WorkerReady(200), t0);
    let mut a = s.handle(
        Event::Reconfigure {
            shutdown_timeout: Duration::from_secs(5),
            worker_timeout: NO_HEARTBEAT_LIMIT,
            shutdown_delay: Duration::ZERO,
        },
        t0,
    );
    a.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(a, vec![Action::Configure(200), Action::Configure(201)]);
    let a = s.handle(Event::WorkerReady(201), t0);
    assert_eq!(stops(&a), vec![(100, StopMode::Graceful)]);
    assert!(spawns(&a).is_empty());
    let drained = t0 + Duration::from_secs(30) + FAST_STOP_GRACE;
    assert!(s
        .handle(Event::Tick, drained - Duration::from_millis(1))
        .is_empty());
    assert_eq!(s.handle(Event::Tick, drained), vec![Action::Kill(100)]);
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), drained);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.oldest_needed_generation(), Some(Generation(2)));
    assert_eq!(s.workers.len(), 2);
}

#[test]
fn hot_reconfigure_reaches_every_current_worker_and_starts_none() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    // A reload rolled generation 2; generation 1 drains.
    s.handle(reload(2, Duration::from_secs(30)), t0);
    for (slot, pid) in [(0, 200), (1, 201)] {
        spawned(&mut s, slot, 2, pid, t0);
        s.handle(Event::WorkerReady(pid), t0);
    }
    let mut actions = s.handle(reconfigure(), t0);
    actions.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        actions,
        vec![Action::Configure(200), Action::Configure(201)]
    );
    assert_eq!(s.generation(), Generation(2));
    // A worker still starting gets it too (it may have its config already).
    s.handle(
        Event::WorkerExited(201, ExitStatus::Signal(9)),
        t0 + Duration::from_secs(60),
    );
    spawned(&mut s, 1, 2, 202, t0 + Duration::from_secs(60));
    let mut actions = s.handle(reconfigure(), t0 + Duration::from_secs(60));
    actions.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        actions,
        vec![Action::Configure(200), Action::Configure(202)]
    );
    // Not while stopping.
    s.handle(
        Event::Stop(StopMode::Graceful),
        t0 + Duration::from_secs(61),
    );
    assert!(s
        .handle(reconfigure(), t0 + Duration::from_secs(61))
        .is_empty());
}

#[test]
fn a_worker_without_heartbeats_is_killed_and_replaced() {
    let t0 = Instant::now();
    let limit = Duration::from_secs(2);
    let mut s = sup_with(2, limit);
    s.handle(Event::Started, t0);
    for (slot, pid) in [(0, 100), (1, 101)] {
        spawned(&mut s, slot, 1, pid, t0);
        s.handle(Event::WorkerReady(pid), t0);
    }
    assert_eq!(s.next_wakeup(), Some(t0 + limit));
    // 100 keeps beating; 101 goes silent.
    let t1 = t0 + Duration::from_secs(1);
    s.handle(Event::Heartbeat(100), t1);
    assert!(s
        .handle(Event::Tick, t0 + limit - Duration::from_millis(1))
        .is_empty());
    assert_eq!(s.handle(Event::Tick, t0 + limit), vec![Action::Kill(101)]);
    // Killed once, not again at every tick.
    assert!(s.handle(Event::Tick, t0 + limit).is_empty());
    let t2 = t0 + limit + Duration::from_millis(5);
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Signal(9)), t2);
    assert_eq!(spawns(&a), vec![(1, 1)]);
    assert_eq!(s.handle(Event::Tick, t1 + limit), vec![Action::Kill(100)]);
}

#[test]
fn sigttin_adds_a_slot_and_sigttou_removes_the_last_but_never_the_first() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    assert_eq!(spawns(&s.handle(Event::AddWorker, t0)), vec![(2, 1)]);
    spawned(&mut s, 2, 1, 102, t0);
    s.handle(Event::WorkerReady(102), t0);
    let a = s.handle(Event::RemoveWorker, t0);
    assert_eq!(stops(&a), vec![(102, StopMode::Graceful)]);
    // Its exit is not a crash: no restart.
    let a = s.handle(Event::WorkerExited(102, ExitStatus::Code(0)), t0);
    assert!(spawns(&a).is_empty());
    assert_eq!(
        stops(&s.handle(Event::RemoveWorker, t0)),
        vec![(101, StopMode::Graceful)]
    );
    s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0);
    assert!(
        s.handle(Event::RemoveWorker, t0).is_empty(),
        "one worker is kept"
    );
    // A reload keeps the adjusted count... until its config says otherwise.
    assert_eq!(spawns(&s.handle(Event::AddWorker, t0)), vec![(1, 1)]);
    let a = s.handle(reload(3, Duration::from_secs(5)), t0);
    assert_eq!(spawns(&a), vec![(0, 2), (1, 2), (2, 2)]);
}

#[test]
fn sigttou_of_a_slot_not_started_yet_cancels_it() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    // Slot 1 is crash-looping and waits for its backoff.
    s.handle(Event::AddWorker, t0);
    s.handle(
        Event::SpawnFailed {
            slot: Slot(1),
            generation: Generation(1),
            reason: "x".into(),
        },
        t0,
    );
    s.handle(
        Event::SpawnFailed {
            slot: Slot(1),
            generation: Generation(1),
            reason: "x".into(),
        },
        t0,
    );
    assert!(s.next_wakeup().is_some());
    s.handle(Event::RemoveWorker, t0);
    assert_eq!(
        s.next_wakeup(),
        Some(t0 + NO_HEARTBEAT_LIMIT),
        "no restart left for a removed slot, only worker 100's heartbeat deadline"
    );
}

#[test]
fn reloads_while_draining_leak_nothing_lose_no_slot_and_cap_draining() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    let mut pid = 1000;
    let mut live: Vec<Pid> = vec![100, 101];
    // Each reload's workers become Ready; the previous generation drains
    // and never exits (long requests).
    for g in 2..=8u64 {
        s.handle(reload(2, Duration::from_secs(30)), t0);
        for slot in 0..2 {
            pid += 1;
            spawned(&mut s, slot, g, pid, t0);
            live.push(pid);
        }
        for p in [pid - 1, pid] {
            s.handle(Event::WorkerReady(p), t0);
        }
        assert!(s.draining_generations() <= MAX_DRAINING_GENERATIONS);
    }
    assert_eq!(s.draining_generations(), MAX_DRAINING_GENERATIONS);
    // Every worker asked to stop exits; the current generation stays.
    for p in &live[..live.len() - 2] {
        let a = s.handle(Event::WorkerExited(*p, ExitStatus::Code(0)), t0);
        assert!(
            spawns(&a).is_empty(),
            "old worker {p} exiting must not restart"
        );
    }
    assert_eq!(s.draining_generations(), 0);
    assert_eq!(s.workers.len(), 2);
    // The current generation still restarts a crashed worker in its slot.
    let a = s.handle(
        Event::WorkerExited(pid, ExitStatus::Signal(9)),
        t0 + Duration::from_secs(60),
    );
    assert_eq!(spawns(&a), vec![(1, 8)]);
}

#[test]
fn too_many_draining_generations_stop_the_oldest_fast() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let mut fast = Vec::new();
    for g in 2..=(MAX_DRAINING_GENERATIONS as u64 + 2) {
        s.handle(reload(1, Duration::from_secs(30)), t0);
        let pid = 100 * g as Pid;
        spawned(&mut s, 0, g, pid, t0);
        let a = s.handle(Event::WorkerReady(pid), t0);
        fast.extend(stops(&a).into_iter().filter(|(_, m)| *m == StopMode::Fast));
    }
    assert_eq!(
        fast,
        vec![(100, StopMode::Fast)],
        "generation 1 is stopped fast"
    );
    // And killed if it ignores that.
    let a = s.handle(Event::Tick, t0 + FAST_STOP_GRACE);
    assert_eq!(a, vec![Action::Kill(100)]);
}

#[test]
fn a_reload_stops_workers_of_a_superseded_generation_still_booting() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    s.handle(reload(2, Duration::from_secs(30)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    spawned(&mut s, 1, 2, 201, t0);
    s.handle(Event::WorkerReady(200), t0);
    let a = s.handle(reload(2, Duration::from_secs(30)), t0);
    assert_eq!(stops(&a), vec![(201, StopMode::Graceful)]);
    assert_eq!(spawns(&a), vec![(0, 3), (1, 3)]);
    // Generation 1 keeps serving until generation 3 is ready.
    spawned(&mut s, 0, 3, 300, t0);
    spawned(&mut s, 1, 3, 301, t0);
    s.handle(Event::WorkerReady(300), t0);
    let a = s.handle(Event::WorkerReady(301), t0);
    assert_eq!(
        stops(&a),
        vec![
            (100, StopMode::Graceful),
            (101, StopMode::Graceful),
            (200, StopMode::Graceful)
        ]
    );
}

#[test]
fn a_crash_loop_never_stops_the_master() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let mut now = t0;
    for pid in 100..200 {
        let a = s.handle(Event::WorkerExited(pid, ExitStatus::Code(1)), now);
        assert!(!a.iter().any(|a| matches!(a, Action::Exit(_))));
        if spawns(&a).is_empty() {
            let at = s.next_wakeup().expect("a restart is always scheduled");
            assert!(at - now <= BACKOFF_CAP);
            now = at;
            assert_eq!(spawns(&s.handle(Event::Tick, now)), vec![(0, 1)]);
        }
        spawned(&mut s, 0, 1, pid + 1, now);
    }
}

#[test]
fn serving_is_announced_once_when_the_first_generation_is_ready() {
    let t0 = Instant::now();
    let mut s = sup(2);
    s.handle(Event::Started, t0);
    spawned(&mut s, 0, 1, 100, t0);
    spawned(&mut s, 1, 1, 101, t0);
    assert!(!s
        .handle(Event::WorkerReady(100), t0)
        .contains(&Action::Serving));
    assert!(s
        .handle(Event::WorkerReady(101), t0)
        .contains(&Action::Serving));
    s.handle(reload(2, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    spawned(&mut s, 1, 2, 201, t0);
    s.handle(Event::WorkerReady(200), t0);
    assert!(!s
        .handle(Event::WorkerReady(201), t0)
        .contains(&Action::Serving));
}

#[test]
fn a_binary_upgrade_hands_over_once_the_new_master_serves() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    assert_eq!(
        s.handle(Event::UpgradeRequested, t0),
        vec![Action::StartUpgrade]
    );
    s.handle(Event::UpgradeStarted(500), t0);
    assert!(
        s.handle(Event::UpgradeRequested, t0).is_empty(),
        "one at a time"
    );
    assert_eq!(s.upgrade_pid(), Some(500));
    let a = s.handle(Event::UpgradeReady, t0);
    assert_eq!(
        stops(&a),
        vec![(100, StopMode::Graceful), (101, StopMode::Graceful)]
    );
    assert!(!a.iter().any(|a| matches!(a, Action::AbortUpgrade(_))));
    s.handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0);
    assert_eq!(
        s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0),
        vec![Action::Exit(0)]
    );
}

#[test]
fn a_failed_binary_upgrade_leaves_the_old_master_serving() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    // The new binary exits before serving.
    s.handle(Event::UpgradeRequested, t0);
    s.handle(Event::UpgradeStarted(500), t0);
    assert!(s
        .handle(Event::WorkerExited(500, ExitStatus::Code(1)), t0)
        .is_empty());
    assert_eq!(s.upgrade_pid(), None);
    assert!(
        s.handle(Event::UpgradeReady, t0).is_empty(),
        "a late ready is ignored"
    );
    // It cannot even be started.
    s.handle(Event::UpgradeRequested, t0);
    s.handle(Event::UpgradeFailed("ENOENT".into()), t0);
    assert_eq!(s.upgrade_pid(), None);
    // It never serves: killed at the deadline; the old workers stay.
    assert_eq!(
        s.handle(Event::UpgradeRequested, t0),
        vec![Action::StartUpgrade]
    );
    s.handle(Event::UpgradeStarted(501), t0);
    assert_eq!(s.next_wakeup(), Some(t0 + UPGRADE_TIMEOUT));
    assert_eq!(
        s.handle(Event::Tick, t0 + UPGRADE_TIMEOUT),
        vec![Action::AbortUpgrade(501)]
    );
    assert!(s
        .handle(
            Event::WorkerExited(501, ExitStatus::Signal(9)),
            t0 + UPGRADE_TIMEOUT
        )
        .is_empty());
    // The old master still restarts its own workers.
    let later = t0 + UPGRADE_TIMEOUT;
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), later);
    assert_eq!(spawns(&a), vec![(0, 1)]);
}

#[test]
fn stopping_during_a_binary_upgrade_takes_the_new_master_along() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(Event::UpgradeRequested, t0);
    s.handle(Event::UpgradeStarted(500), t0);
    let a = s.handle(Event::Stop(StopMode::Fast), t0);
    assert!(a.contains(&Action::AbortUpgrade(500)));
    assert_eq!(stops(&a), vec![(100, StopMode::Fast)]);
}

#[test]
fn a_hot_reload_that_shortens_worker_timeout_gives_running_workers_time_to_adapt() {
    // Workers beat at an interval derived from the timeout they were
    // configured with (30 s: every 5 s); a hot reload to 1 s must not
    // judge a beat sent before the reload by the new limit.
    let t0 = Instant::now();
    let mut s = sup_with(1, Duration::from_secs(30));
    s.handle(Event::Started, t0);
    spawned(&mut s, 0, 1, 100, t0);
    s.handle(Event::WorkerReady(100), t0);
    let t1 = t0 + Duration::from_secs(4);
    let a = s.handle(
        Event::Reconfigure {
            shutdown_timeout: Duration::from_secs(30),
            worker_timeout: Duration::from_secs(1),
            shutdown_delay: Duration::ZERO,
        },
        t1,
    );
    assert_eq!(a, vec![Action::Configure(100)]);
    let a = s.handle(Event::Tick, t1 + Duration::from_millis(500));
    assert!(
        a.is_empty(),
        "a worker that beat 4.5 s ago under a 30 s limit is not hung: {a:?}"
    );
    // Once it has had the new limit's time to take the new config and
    // beat, the new limit applies.
    let a = s.handle(Event::Tick, t1 + Duration::from_secs(1));
    assert_eq!(a, vec![Action::Kill(100)]);
}

#[test]
fn a_new_generation_reload_keeps_the_old_generations_heartbeat_limit() {
    let t0 = Instant::now();
    let mut s = sup_with(1, Duration::from_secs(30));
    s.handle(Event::Started, t0);
    spawned(&mut s, 0, 1, 100, t0);
    s.handle(Event::WorkerReady(100), t0);
    let t1 = t0 + Duration::from_secs(4);
    let mut a = s.handle(
        Event::Reload {
            workers: 1,
            shutdown_timeout: Duration::from_secs(30),
            worker_timeout: Duration::from_secs(1),
            shutdown_delay: Duration::ZERO,
        },
        t1,
    );
    // Generation 1 still serves (generation 2 is starting) and still
    // beats every 5 s, as its config says.
    a.extend(s.handle(Event::Tick, t1 + Duration::from_millis(500)));
    assert_eq!(
        a,
        vec![
            Action::AdoptConfig(Generation(2)),
            Action::Spawn {
                slot: Slot(0),
                generation: Generation(2)
            }
        ],
        "the serving generation was judged by the new config's limit"
    );
}

#[test]
fn sigttou_that_completes_the_first_generation_announces_serving() {
    // A master started by a binary upgrade: slot 1 never becomes ready,
    // the operator gives it up with SIGTTOU. The one worker left is all
    // the generation needs, so the master serves and must say so (or
    // the old master kills it at the upgrade deadline).
    let t0 = Instant::now();
    let mut s = sup(2);
    s.handle(Event::Started, t0);
    spawned(&mut s, 0, 1, 100, t0);
    spawned(&mut s, 1, 1, 101, t0);
    assert!(!s
        .handle(Event::WorkerReady(100), t0)
        .contains(&Action::Serving));
    let a = s.handle(Event::RemoveWorker, t0);
    assert_eq!(stops(&a), vec![(101, StopMode::Graceful)]);
    assert!(a.contains(&Action::Serving), "{a:?}");
}

#[test]
fn a_stop_never_extends_the_deadline_of_a_worker_already_stopping() {
    // Generation 1 drains after a reload (its own 30 s limit); a
    // graceful stop 29 s later must not give it another 30 s.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    assert_eq!(
        spawns(&s.handle(reload(1, Duration::from_secs(30)), t0)),
        vec![(0, 2)]
    );
    spawned(&mut s, 0, 2, 200, t0);
    let a = s.handle(Event::WorkerReady(200), t0);
    assert_eq!(stops(&a), vec![(100, StopMode::Graceful)]);
    let t1 = t0 + Duration::from_secs(29);
    let a = s.handle(Event::Stop(StopMode::Graceful), t1);
    assert_eq!(
        stops(&a),
        vec![(200, StopMode::Graceful)],
        "100 is stopping already"
    );
    let a = s.handle(Event::Tick, t0 + Duration::from_secs(30) + FAST_STOP_GRACE);
    assert_eq!(
        a,
        vec![Action::Kill(100)],
        "the drain keeps its own deadline"
    );
    // A fast stop still shortens a longer one.
    let a = s.handle(Event::Stop(StopMode::Fast), t1 + Duration::from_secs(1));
    assert_eq!(stops(&a), vec![(200, StopMode::Fast)]);
}

#[test]
fn a_fast_stop_reaches_a_worker_draining_gracefully() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(30)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    s.handle(Event::WorkerReady(200), t0);
    // 1 s before its drain deadline, earlier than the fast stop's.
    let own = t0 + Duration::from_secs(30) + FAST_STOP_GRACE;
    let t1 = own - Duration::from_secs(1);
    let a = s.handle(Event::Stop(StopMode::Fast), t1);
    assert_eq!(
        stops(&a),
        vec![(100, StopMode::Fast), (200, StopMode::Fast)]
    );
    let a = s.handle(Event::Tick, own);
    assert_eq!(
        a,
        vec![Action::Kill(100)],
        "its own, earlier deadline holds"
    );
}

#[test]
fn a_crash_of_the_serving_generation_while_a_reload_starts_is_replaced() {
    // Generation 1 serves; generation 2's worker is still booting (it
    // may never say hello, or crash-loop). Generation 1's only worker
    // crashes: something must take its place, or nothing serves until
    // (unless) generation 2 gets ready.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    assert_eq!(
        spawns(&s.handle(reload(1, Duration::from_secs(30)), t0)),
        vec![(0, 2)]
    );
    spawned(&mut s, 0, 2, 200, t0);
    let later = t0 + Duration::from_secs(1);
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), later);
    assert_eq!(
        spawns(&a),
        vec![(0, 1)],
        "the serving generation's crashed worker is restarted"
    );
    spawned(&mut s, 0, 1, 101, later);
    s.handle(Event::WorkerReady(101), later);
    // Generation 2 ready: the replacement drains like the rest of
    // generation 1, and is not restarted when it exits.
    let a = s.handle(Event::WorkerReady(200), later);
    assert_eq!(stops(&a), vec![(101, StopMode::Graceful)]);
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), later);
    assert!(spawns(&a).is_empty());
    assert_eq!(s.oldest_needed_generation(), Some(Generation(2)));
}

#[test]
fn a_crash_looping_serving_generation_backs_off_and_keeps_its_config() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(30)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(
        spawns(&s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t1)),
        vec![(0, 1)]
    );
    spawned(&mut s, 0, 1, 101, t1);
    // It dies at once: the restart waits, and generation 1's config
    // must be kept meanwhile although none of its workers is alive.
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Code(1)), t1);
    assert!(spawns(&a).is_empty());
    assert_eq!(s.oldest_needed_generation(), Some(Generation(1)));
    assert_eq!(s.next_wakeup(), Some(t1 + BACKOFF_BASE));
    assert_eq!(
        spawns(&s.handle(Event::Tick, t1 + BACKOFF_BASE)),
        vec![(0, 1)]
    );
    // A stop cancels it.
    let t2 = t1 + BACKOFF_BASE;
    spawned(&mut s, 0, 1, 102, t2);
    s.handle(Event::WorkerExited(102, ExitStatus::Code(1)), t2);
    s.handle(Event::Stop(StopMode::Fast), t2);
    assert!(spawns(&s.handle(Event::Tick, t2 + BACKOFF_CAP)).is_empty());
}

/// `Event::Reconfigure` with this drain limit (and no heartbeat limit).
fn reconfigure_to(shutdown_timeout: Duration) -> Event {
    Event::Reconfigure {
        shutdown_timeout,
        worker_timeout: NO_HEARTBEAT_LIMIT,
        shutdown_delay: Duration::ZERO,
    }
}

/// Ticks just before and at `deadline`: `pid` alone is killed, at it.
fn killed_at(s: &mut Supervisor, pid: Pid, deadline: Instant) {
    let early = s.handle(Event::Tick, deadline - Duration::from_millis(1));
    assert!(
        early.is_empty(),
        "killed before {pid}'s deadline: {early:?}"
    );
    assert_eq!(
        s.handle(Event::Tick, deadline),
        vec![Action::Kill(pid)],
        "at {pid}'s deadline"
    );
}

#[test]
fn a_reload_that_shortens_shutdown_timeout_lets_the_old_generation_drain_by_its_own() {
    // Generation 1 runs with 30 s; the reload brings 5 s. Old workers
    // close their connections at their own 30 s (the config they run):
    // killing them at 5 s + grace would cut their long requests and lose
    // their last log lines and counters.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    // Generation 1's worker crashes meanwhile: its replacement runs
    // generation 1's config too.
    let t1 = t0 + Duration::from_secs(1);
    s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t1);
    spawned(&mut s, 0, 1, 101, t1);
    s.handle(Event::WorkerReady(101), t1);
    let a = s.handle(Event::WorkerReady(200), t1);
    assert_eq!(stops(&a), vec![(101, StopMode::Graceful)]);
    killed_at(&mut s, 101, t1 + Duration::from_secs(30) + FAST_STOP_GRACE);
    // The new generation drains by the new limit.
    s.handle(Event::Stop(StopMode::Graceful), t1);
    killed_at(&mut s, 200, t1 + Duration::from_secs(5) + FAST_STOP_GRACE);
}

#[test]
fn a_graceful_stop_while_a_generation_starts_gives_each_worker_its_own_limit() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    let a = s.handle(Event::Stop(StopMode::Graceful), t0);
    assert_eq!(
        stops(&a),
        vec![(100, StopMode::Graceful), (200, StopMode::Graceful)]
    );
    killed_at(&mut s, 200, t0 + Duration::from_secs(5) + FAST_STOP_GRACE);
    killed_at(&mut s, 100, t0 + Duration::from_secs(30) + FAST_STOP_GRACE);
    // A fast stop still shortens the long one.
    let t1 = t0 + Duration::from_secs(10);
    let a = s.handle(Event::Stop(StopMode::Fast), t1);
    assert_eq!(stops(&a), vec![(100, StopMode::Fast)]);
    killed_at(&mut s, 100, t1 + FAST_STOP_GRACE);
}

#[test]
fn a_superseded_generation_still_booting_drains_by_its_own_limit() {
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(60)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    let a = s.handle(reload(1, Duration::from_secs(5)), t0);
    assert_eq!(stops(&a), vec![(200, StopMode::Graceful)]);
    killed_at(&mut s, 200, t0 + Duration::from_secs(60) + FAST_STOP_GRACE);
}

#[test]
fn a_hot_reload_gives_the_running_workers_its_drain_limit() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    s.handle(reconfigure_to(Duration::from_secs(60)), t0);
    let a = s.handle(Event::RemoveWorker, t0);
    assert_eq!(stops(&a), vec![(101, StopMode::Graceful)]);
    killed_at(&mut s, 101, t0 + Duration::from_secs(60) + FAST_STOP_GRACE);
    // A hot reload while generation 2 starts reaches generation 2 only;
    // generation 1, and a worker restarted in it meanwhile, keep 60 s.
    let t1 = t0 + Duration::from_secs(100);
    s.handle(reload(1, Duration::from_secs(30)), t1);
    spawned(&mut s, 0, 2, 200, t1);
    s.handle(reconfigure_to(Duration::from_secs(5)), t1);
    s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t1);
    spawned(&mut s, 0, 1, 102, t1);
    s.handle(Event::WorkerReady(102), t1);
    let a = s.handle(Event::WorkerReady(200), t1);
    assert_eq!(stops(&a), vec![(102, StopMode::Graceful)]);
    killed_at(&mut s, 102, t1 + Duration::from_secs(60) + FAST_STOP_GRACE);
    s.handle(Event::Stop(StopMode::Graceful), t1);
    killed_at(&mut s, 200, t1 + Duration::from_secs(5) + FAST_STOP_GRACE);
}

#[test]
fn capping_the_draining_generations_never_pushes_a_drain_deadline_later() {
    // Generation 1 drains by its own 30 s (the later ones by 60 s); 31 s
    // later a fifth generation starts draining and generation 1, the
    // oldest, is stopped fast. Its own kill deadline (33 s) is earlier than
    // a fresh fast stop's (34 s): it holds, as for an operator's fast stop.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    for g in 2..=(MAX_DRAINING_GENERATIONS as u64 + 1) {
        s.handle(reload(1, Duration::from_secs(60)), t0);
        let pid = 100 * g as Pid;
        spawned(&mut s, 0, g, pid, t0);
        s.handle(Event::WorkerReady(pid), t0);
    }
    assert_eq!(s.draining_generations(), MAX_DRAINING_GENERATIONS);
    let t1 = t0 + Duration::from_secs(31);
    let next = MAX_DRAINING_GENERATIONS as u64 + 2;
    s.handle(reload(1, Duration::from_secs(60)), t1);
    spawned(&mut s, 0, next, 100 * next as Pid, t1);
    let a = s.handle(Event::WorkerReady(100 * next as Pid), t1);
    assert!(stops(&a).contains(&(100, StopMode::Fast)), "{a:?}");
    killed_at(&mut s, 100, t0 + Duration::from_secs(30) + FAST_STOP_GRACE);
}

/// `actions` adopt `generation`'s config once, before any spawn.
fn adopted_before_spawns(actions: &[Action], generation: u64) {
    let adopt = Action::AdoptConfig(Generation(generation));
    let adopted = position(actions, &adopt).expect("adopted");
    let first_spawn = actions
        .iter()
        .position(|a| matches!(a, Action::Spawn { .. }))
        .expect("a spawn");
    assert!(adopted < first_spawn, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == adopt).count(), 1);
}

#[test]
fn a_reload_adopts_its_config_before_any_of_its_workers_is_spawned() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    let a = s.handle(reload(2, Duration::from_secs(5)), t0);
    adopted_before_spawns(&a, 2);
    assert_eq!(spawns(&a), vec![(0, 2), (1, 2)]);
    // A reload while generation 2 starts: generation 3's.
    let a = s.handle(reload(1, Duration::from_secs(5)), t0);
    adopted_before_spawns(&a, 3);
    // A hot reload changes the running generation's config in place.
    assert!(!s
        .handle(reconfigure(), t0)
        .iter()
        .any(|a| matches!(a, Action::AdoptConfig(_))));
    // A reload while stopping starts nothing, so adopts nothing.
    s.handle(Event::Stop(StopMode::Graceful), t0);
    assert!(s.handle(reload(2, Duration::from_secs(5)), t0).is_empty());
}

#[test]
fn configs_are_forgotten_once_settled_with_no_worker_of_theirs_left() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    assert!(s.handle(Event::Settled, t0).is_empty());
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    s.handle(Event::WorkerReady(200), t0);
    // Generation 1 drains: its config stays while one worker is left.
    s.handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0);
    assert!(s.handle(Event::Settled, t0).is_empty());
    s.handle(Event::WorkerExited(101, ExitStatus::Code(0)), t0);
    assert_eq!(
        s.handle(Event::Settled, t0),
        vec![Action::ForgetConfigs {
            older_than: Generation(2)
        }]
    );
    assert!(s.handle(Event::Settled, t0).is_empty(), "once");
    // The current generation's config stays with no worker left.
    s.handle(Event::Stop(StopMode::Fast), t0);
    s.handle(Event::WorkerExited(200, ExitStatus::Code(0)), t0);
    assert!(s.handle(Event::Settled, t0).is_empty());
}

#[test]
fn settling_forgets_a_superseded_generation_once_the_older_serving_one_is_gone_too() {
    // Generation 2 never finished starting; generation 3 replaced it and
    // is ready. The configs of 1 and 2 go with their last workers.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 3, 300, t0);
    s.handle(Event::WorkerReady(300), t0);
    s.handle(Event::WorkerExited(200, ExitStatus::Code(0)), t0);
    assert!(
        s.handle(Event::Settled, t0).is_empty(),
        "generation 1 lives"
    );
    s.handle(Event::WorkerExited(100, ExitStatus::Code(0)), t0);
    assert_eq!(
        s.handle(Event::Settled, t0),
        vec![Action::ForgetConfigs {
            older_than: Generation(3)
        }]
    );
}

#[test]
fn a_serving_generation_waiting_for_a_restart_keeps_its_config() {
    // Generation 1 serves while generation 2 starts; its only worker
    // crashes twice in a row, and waits for its backoff with no worker.
    let t0 = Instant::now();
    let mut s = running(1, t0);
    let t1 = t0 + Duration::from_secs(60);
    s.handle(reload(1, Duration::from_secs(30)), t1);
    s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), t1);
    spawned(&mut s, 0, 1, 101, t1);
    s.handle(Event::WorkerExited(101, ExitStatus::Code(1)), t1);
    assert!(s.handle(Event::Settled, t1).is_empty());
    // Settling checks no deadline: the restart waits for its tick.
    let due = t1 + BACKOFF_BASE;
    assert!(s.handle(Event::Settled, due).is_empty());
    assert_eq!(spawns(&s.handle(Event::Tick, due)), vec![(0, 1)]);
    spawned(&mut s, 0, 1, 102, due);
    s.handle(Event::WorkerReady(102), due);
    // Generation 2 takes over: 102 drains, and its config goes with it.
    spawned(&mut s, 0, 2, 200, due);
    s.handle(Event::WorkerReady(200), due);
    assert!(s.handle(Event::Settled, due).is_empty());
    s.handle(Event::WorkerExited(102, ExitStatus::Code(0)), due);
    assert_eq!(
        s.handle(Event::Settled, due),
        vec![Action::ForgetConfigs {
            older_than: Generation(2)
        }]
    );
}

/// Where `action` is in `actions`.
fn position(actions: &[Action], action: &Action) -> Option<usize> {
    actions.iter().position(|a| a == action)
}

#[test]
fn sigttou_closes_the_slots_listeners_before_its_worker_is_told_to_stop() {
    let t0 = Instant::now();
    let mut s = running(3, t0);
    let a = s.handle(Event::RemoveWorker, t0);
    let close = Action::CloseSlotListeners { from: Slot(2) };
    assert_eq!(a.first(), Some(&close), "{a:?}");
    assert_eq!(stops(&a), vec![(102, StopMode::Graceful)]);
    // The last slot is never given up.
    s.handle(Event::RemoveWorker, t0);
    assert!(s.handle(Event::RemoveWorker, t0).is_empty());
    // Nor is anything while stopping.
    let mut s = running(2, t0);
    s.handle(Event::Stop(StopMode::Graceful), t0);
    assert!(s.handle(Event::RemoveWorker, t0).is_empty());
}

#[test]
fn a_reload_to_fewer_workers_closes_the_slots_it_gives_up_first() {
    let t0 = Instant::now();
    let mut s = running(3, t0);
    // Generation 2 is starting: the reload supersedes it and stops its
    // booting worker, after closing the slots given up.
    s.handle(reload(3, Duration::from_secs(5)), t0);
    spawned(&mut s, 2, 2, 202, t0);
    let a = s.handle(reload(1, Duration::from_secs(5)), t0);
    let close = Action::CloseSlotListeners { from: Slot(1) };
    assert_eq!(a.first(), Some(&close), "{a:?}");
    assert!(position(&a, &Action::Stop(202, StopMode::Graceful)).is_some());
    // More (or as many) workers give nothing up.
    for workers in [1, 4] {
        let a = s.handle(reload(workers, Duration::from_secs(5)), t0);
        assert!(
            !a.iter()
                .any(|a| matches!(a, Action::CloseSlotListeners { .. })),
            "{a:?}"
        );
    }
}

#[test]
fn a_new_generation_reload_holds_a_socket_for_each_of_its_slots() {
    let t0 = Instant::now();
    let s = running(2, t0);
    assert_eq!(s.slots_for_reload(Some(3)), 3);
    assert_eq!(s.slots_for_reload(Some(1)), 1);
}

#[test]
fn a_new_generation_reload_while_stopping_holds_none_for_slots_never_started() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    s.handle(Event::Stop(StopMode::Graceful), t0);
    assert_eq!(s.slots_for_reload(Some(4)), 2);
    assert_eq!(s.slots_for_reload(Some(1)), 2);
    // Indeed, the reload starts nothing.
    let a = s.handle(reload(4, Duration::from_secs(30)), t0);
    assert!(spawns(&a).is_empty(), "{a:?}");
}

#[test]
fn a_hot_reload_holds_sockets_for_the_count_sigttin_and_sigttou_left() {
    let t0 = Instant::now();
    let mut s = running(2, t0);
    assert_eq!(s.slots_for_reload(None), 2);
    s.handle(Event::AddWorker, t0);
    assert_eq!(s.slots_for_reload(None), 3);
    s.handle(Event::RemoveWorker, t0);
    s.handle(Event::RemoveWorker, t0);
    assert_eq!(s.slots_for_reload(None), 1);
    // A new generation runs what its config says, whatever SIGTTOU left.
    assert_eq!(s.slots_for_reload(Some(2)), 2);
}

#[test]
fn a_master_closes_at_start_the_slots_its_config_does_not_run() {
    // A new master of a binary upgrade gets every slot socket of the old
    // one, which may have run more workers.
    let mut s = sup(2);
    let a = s.handle(Event::Started, Instant::now());
    assert_eq!(
        a.first(),
        Some(&Action::CloseSlotListeners { from: Slot(2) }),
        "{a:?}"
    );
    assert_eq!(spawns(&a), vec![(0, 1), (1, 1)]);
}

#[test]
fn a_serving_worker_restarted_in_a_slot_given_up_leaves_the_master_no_socket() {
    // Generation 1 (2 slots) serves while generation 2 (1 slot) starts.
    // Its slot-1 worker crashes and is restarted with a socket of its
    // own; the master's copy goes at once, after the spawn.
    let t0 = Instant::now();
    let mut s = running(2, t0);
    s.handle(reload(1, Duration::from_secs(5)), t0);
    spawned(&mut s, 0, 2, 200, t0);
    let later = t0 + Duration::from_secs(60);
    let a = s.handle(Event::WorkerExited(101, ExitStatus::Signal(9)), later);
    let spawn = Action::Spawn {
        slot: Slot(1),
        generation: Generation(1),
    };
    let close = Action::CloseSlotListeners { from: Slot(1) };
    assert!(position(&a, &spawn) < position(&a, &close), "{a:?}");
    assert!(position(&a, &spawn).is_some(), "{a:?}");
    // A slot the current generation runs keeps its socket.
    let a = s.handle(Event::WorkerExited(100, ExitStatus::Signal(9)), later);
    assert_eq!(spawns(&a), vec![(0, 1)]);
    assert!(!a.contains(&close), "{a:?}");
}

/// A master started by a binary upgrade whose one worker (pid 100) is
/// Ready: it said so to the old master and waits for its answer.
fn announced(now: Instant) -> Supervisor {
    let mut s = sup(1);
    s.handle(Event::Started, now);
    spawned(&mut s, 0, 1, 100, now);
    assert!(s
        .handle(Event::WorkerReady(100), now)
        .contains(&Action::Serving));
    assert!(s.handle(Event::ServingAnnounced, now).is_empty());
    s
}

#[test]
fn a_new_master_takes_over_when_the_old_one_answers() {
    let t0 = Instant::now();
    let mut s = announced(t0);
    assert_eq!(
        s.handle(Event::OldMasterAnswered, t0),
        vec![Action::TakeOver]
    );
    assert!(s.handle(Event::OldMasterAnswered, t0).is_empty(), "once");
    // Nothing is left to withdraw when it stops later.
    assert_eq!(
        s.handle(Event::Stop(StopMode::Graceful), t0),
        vec![Action::Stop(100, StopMode::Graceful)]
    );
}

#[test]
fn a_stop_before_the_old_master_answers_withdraws_the_announcement_first() {
    let t0 = Instant::now();
    let mut s = announced(t0);
    let a = s.handle(Event::Stop(StopMode::Graceful), t0);
    assert_eq!(
        a,
        vec![
            Action::WithdrawServing,
            Action::Stop(100, StopMode::Graceful)
        ]
    );
    // Its answer, crossing the withdrawal, is not taken for a hand-over.
    assert!(s.handle(Event::OldMasterAnswered, t0).is_empty());
    let a = s.handle(Event::Stop(StopMode::Fast), t0);
    assert_eq!(a, vec![Action::Stop(100, StopMode::Fast)], "withdrawn once");
}

#[test]
fn an_upgrade_of_a_master_still_waiting_for_its_old_one_withdraws_before_draining() {
    // A second binary upgrade whose new master serves before the first
    // old master answered: this one drains, so it withdraws too.
    let t0 = Instant::now();
    let mut s = announced(t0);
    s.handle(Event::UpgradeRequested, t0);
    s.handle(Event::UpgradeStarted(500), t0);
    let a = s.handle(Event::UpgradeReady, t0);
    assert_eq!(
        a,
        vec![
            Action::WithdrawServing,
            Action::Stop(100, StopMode::Graceful)
        ]
    );
}

#[test]
fn an_announcement_made_while_stopping_is_withdrawn_at_once() {
    let t0 = Instant::now();
    let mut s = sup(1);
    s.handle(Event::Started, t0);
    spawned(&mut s, 0, 1, 100, t0);
    s.handle(Event::WorkerReady(100), t0);
    assert_eq!(
        s.handle(Event::Stop(StopMode::Graceful), t0),
        vec![Action::Stop(100, StopMode::Graceful)],
        "nothing announced yet"
    );
    assert_eq!(
        s.handle(Event::ServingAnnounced, t0),
        vec![Action::WithdrawServing]
    );
    assert!(s.handle(Event::OldMasterAnswered, t0).is_empty());
}
