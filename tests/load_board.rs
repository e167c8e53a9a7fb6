//! The load board: each worker gets a cell of the master's shared memory
//! file and publishes there the client connections it holds; the cell of a
//! worker that is gone goes to the next. Read here as an operator could,
//! through /proc.

use crate::support::http::Conn;
use crate::support::origins;
use crate::support::prefork::{is_stopped, Continue, Prefork, Proc, Setup};
use crate::support::{wait_for, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prefork_shared::load_board::{LoadBoard, LOAD_CELL_ENV};
use std::time::Duration;

/// A worker's cell and its value now. With one listener at fd 3, the board
/// follows at fd 4.
fn cell_of(worker: &Proc) -> Option<(usize, u32)> {
    let environ = std::fs::read(format!("/proc/{}/environ", worker.pid)).ok()?;
    let prefix = format!("{LOAD_CELL_ENV}=");
    let cell = environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))?;
    let cell: usize = std::str::from_utf8(cell).ok()?.parse().ok()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{}/fd/4", worker.pid))
        .ok()?;
    let board = LoadBoard::open(file).ok()?;
    Some((cell, board.get(cell)))
}

/// Every worker's (pid, cell, value), once all can be read.
fn cells(p: &Prefork) -> Option<Vec<(i32, usize, u32)>> {
    p.workers()
        .iter()
        .map(|w| cell_of(w).map(|(cell, value)| (w.pid, cell, value)))
        .collect()
}

#[test]
fn workers_publish_their_connections_and_a_replacement_takes_the_dead_workers_cell() {
    let origin = origins::minihttp("board");
    let p = Prefork::start(Setup::new(2).body(&format!(
        "[upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n"
    )));
    let wait = Duration::from_secs(5);
    // Distinct cells, nothing open (the start-up probes have closed).
    let start = wait_for(wait, || {
        cells(&p).filter(|c| c.len() == 2 && c.iter().all(|&(_, _, v)| v == 0))
    })
    .unwrap_or_else(|| panic!("workers' cells: {:?}\n{}", cells(&p), p.logs()));
    let mut taken: Vec<usize> = start.iter().map(|&(_, cell, _)| cell).collect();
    taken.sort();
    assert_eq!(taken, [0, 1]);

    // Six keep-alive connections stay open while the worker in cell 0 is
    // stopped: the one in cell 1 takes them all (holding back a moment for
    // each past the margin, then accepting anyway).
    let pid_in = |cell| start.iter().find(|&&(_, c, _)| c == cell).unwrap().0;
    let (survivor, victim) = (pid_in(0), pid_in(1));
    kill(Pid::from_raw(survivor), Signal::SIGSTOP).unwrap();
    let resume = Continue(survivor);
    assert!(
        wait_until(wait, || is_stopped(survivor)),
        "worker {survivor} did not stop"
    );
    let mut conns: Vec<Conn> = (0..6).map(|_| Conn::local(p.port()).unwrap()).collect();
    for c in &mut conns {
        assert_eq!(c.get("x", "/").unwrap().status, 200);
    }
    drop(resume);
    let held = cells(&p).unwrap();
    assert!(held.contains(&(victim, 1, 6)), "{held:?}");

    // That worker dies with its connections: its replacement gets the cell
    // back and starts from zero; the survivor's is untouched.
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let after = wait_for(wait, || {
        cells(&p).filter(|c| {
            c.len() == 2
                && c.iter()
                    .any(|&(pid, cell, v)| pid != victim && cell == 1 && v == 0)
        })
    })
    .unwrap_or_else(|| panic!("cells after the kill: {:?}\n{}", cells(&p), p.logs()));
    assert!(after.contains(&(survivor, 0, 0)), "{after:?}");
}
