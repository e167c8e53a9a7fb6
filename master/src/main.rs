//! `prefork`: the command line, and the entry point of both roles (master and
//! worker) of the same binary.

mod admin;
mod boot;
mod cli;
mod control_socket;
mod deadline;
mod generations;
mod handoff;
mod link;
mod link_table;
mod listeners;
mod load_cells;
mod log_files;
mod metrics;
mod os;
mod pidfile;
mod query;
mod reload;
mod resolver;
mod run;
mod signals;
mod start_checks;
mod status;
mod supervisor;
mod systemd;
mod ticket_keys;
mod upgrade;

use clap::Parser;
use cli::{Cli, Role};

/// jemalloc, not glibc's malloc: tokio allocates each connection's task and
/// socket registration 128-byte aligned, which glibc serves on a slow path
/// (~560 instructions each); jemalloc's size classes make it cheap. Measured
/// with bench/scripts/callgrind.py (see docs/performance.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. `background_thread`: a thread
/// returns freed pages to the system over `dirty_decay_ms` (10 s), whether
/// or not the process allocates meanwhile; without it, a worker whose
/// connections went idle (and were parked, their tasks freed) would keep
/// the memory of its busiest moment until its next burst of work.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,max_background_threads:1\0";

fn main() {
    let cli = Cli::parse();
    let code = match cli.role {
        Some(Role::Worker {
            slot,
            generation,
            ipc,
        }) => prefork_worker::main(prefork_worker::WorkerArgs {
            slot,
            generation,
            ipc_name: ipc,
        }),
        Some(Role::Status { config, json }) => status::run_status(&config, json),
        Some(Role::Top {
            config,
            delay,
            iterations,
        }) => status::run_top(
            &config,
            std::time::Duration::from_secs_f64(delay.clamp(0.1, 3600.0)),
            iterations,
        ),
        None if cli.test => cli::test_config(&cli.config),
        None => match cli.signal {
            Some(signal) => cli::send_signal(&cli.config, signal),
            None => cli::run_master(&cli.config),
        },
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_are_distinct() {
        use prefork_shared::exit;
        let codes = [
            exit::OK,
            exit::FAILURE,
            exit::USAGE,
            exit::WORKER_BOOT_FAILURE,
        ];
        for (i, a) in codes.iter().enumerate() {
            assert!(codes[i + 1..].iter().all(|b| a != b));
        }
    }
}
