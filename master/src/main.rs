//! `prefork`: the command line, and the entry point of both roles (master and
//! worker) of the same binary.

mod cli;
mod link;
mod listeners;
mod os;
mod pidfile;
mod reload;
mod run;
mod signals;
mod supervisor;
mod upgrade;

use clap::Parser;
use cli::{Cli, Role};

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
