//! `husk-agent`: the guest's /init, or (for host tests) a request server.
//!
//! Modes:
//! - PID 1: the guest's init (see `husk_agent::init`).
//! - `husk-agent --version`: prints the version.

use std::process::ExitCode;

fn main() -> ExitCode {
    if husk_agent::sys::getpid() == 1 {
        husk_agent::init::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") => {
            println!("husk-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("husk-agent: usage: husk-agent --version (as PID 1 it is the guest's init)");
            ExitCode::from(2)
        }
    }
}
