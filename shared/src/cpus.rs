//! The CPUs prefork may run on, and pinning a worker to one of them
//! (`worker_cpu_affinity`, as nginx's directive of that name).
//!
//! A pinned worker keeps its caches warm and, on a busy machine, cannot be
//! stacked on one core with another worker while a core sits idle: in
//! `bench/`, pinning both workers cut the p99 of `wrk -c256` by about a third
//! for prefork and for nginx alike.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on (its affinity mask), in order. Falls
/// back to `0..available_parallelism` if the mask cannot be read.
pub fn allowed() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// CPU numbers as `taskset` and `/proc/PID/status` write them: "0-3,6".
pub fn list(cpus: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    text.join(",")
}

/// Pins the calling thread, and every thread it starts afterwards, to `cpu`.
/// Call it before the process starts its other threads: those started
/// before keep their own mask.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// Pins every thread of the process to `cpu`: the calling thread, those it
/// starts afterwards, and those that run already (such as the allocator's
/// background thread, which starts before `main`). A thread that ends
/// meanwhile is no error.
pub fn pin_process(cpu: usize) -> nix::Result<()> {
    pin_current_thread(cpu)?;
    let mut set = CpuSet::new();
    set.set(cpu)?;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Ok(());
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_cpus_as_ranges() {
        assert_eq!(list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(list(&[1]), "1");
        assert_eq!(list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(list(&[]), "");
    }

    #[test]
    fn allowed_lists_at_least_one_cpu_in_range() {
        let cpus = allowed();
        assert!(!cpus.is_empty());
        assert!(cpus.iter().all(|&c| c < CpuSet::count()));
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "in order: {cpus:?}");
    }

    #[test]
    fn a_pinned_thread_and_its_children_run_on_that_cpu_only() {
        let last = *allowed().last().expect("one CPU at least");
        // In a thread of its own, so that the test process keeps its mask.
        let seen = std::thread::spawn(move || {
            pin_current_thread(last).expect("pin to an allowed CPU");
            let child = std::thread::spawn(allowed).join().expect("child thread");
            (allowed(), child)
        })
        .join()
        .expect("pinning thread");
        assert_eq!(seen, (vec![last], vec![last]));
    }

    #[test]
    fn pinning_to_a_cpu_out_of_range_fails() {
        let result = std::thread::spawn(|| pin_current_thread(CpuSet::count()))
            .join()
            .expect("thread");
        assert!(result.is_err());
    }
}
