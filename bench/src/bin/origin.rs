//! `origin --addr 127.0.0.1:3000 --name a [--threads N]`: runs the benchmark
//! origin in the foreground.

use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: origin [--addr IP:PORT] [--name NAME] [--threads N]";

fn main() -> ExitCode {
    let mut addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 3000));
    let mut name = String::from("origin");
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--addr" | "--name" | "--threads" => match args.next() {
                Some(v) => v,
                None => {
                    eprintln!("origin: {flag} needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("origin: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match flag.as_str() {
            "--addr" => match value.parse() {
                Ok(a) => addr = a,
                Err(e) => {
                    eprintln!("origin: --addr {value:?}: {e}");
                    return ExitCode::from(2);
                }
            },
            "--threads" => match value.parse::<usize>() {
                Ok(n) if n > 0 => threads = Some(n),
                _ => {
                    eprintln!("origin: --threads {value:?}: expected a positive number");
                    return ExitCode::from(2);
                }
            },
            _ => name = value,
        }
    }
    if let Some(n) = threads {
        may::config().set_workers(n);
    }
    match prefork_bench::start(addr, &name) {
        Ok(bound) => {
            println!("origin {name} listening on {bound}");
            // The server runs on may's threads; this one only has to stay.
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("origin: cannot listen on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
