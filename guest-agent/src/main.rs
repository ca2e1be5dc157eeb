//! `husk-agent`: the guest's /init, a container init, or (for host tests)
//! a request server on a Unix socket.
//!
//! Modes, in the order they are recognised:
//! - `husk-agent container-init`: PID 1 of a container (started by the agent
//!   itself; see `husk_agent::container::init`). Checked first: it is PID 1
//!   of its own PID namespace.
//! - PID 1: the guest's init (see `husk_agent::init`).
//! - `husk-agent serve --unix PATH`: serve requests on a Unix socket, as a
//!   child subreaper (host integration tests).
//! - `husk-agent unpack SPEC.json`: run one unpack (an `UnpackSpec` as JSON)
//!   and print its report as JSON (benchmarks, debugging in a guest shell).
//! - `husk-agent --version`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use husk_agent::reaper::Reaper;
use husk_agent::server::{Agent, Listener, Mode};
use husk_agent::{console, signals, sys};

const USAGE: &str = "usage: husk-agent serve --unix PATH | husk-agent unpack SPEC.json | husk-agent --version (as PID 1 it is the guest's init)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("container-init") {
        let code = husk_agent::container::init::main();
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // Before any thread exists, so every thread and child inherits it.
    if let Err(e) = husk_agent::container::privs::clear_inheritable() {
        console::line(format_args!("cannot clear inheritable capabilities: {e}"));
    }
    if sys::getpid() == 1 {
        husk_agent::init::run();
    }
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--version"] => {
            println!("husk-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["serve", "--unix", path] => match serve_unix(Path::new(path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                console::line(format_args!("{e}"));
                ExitCode::FAILURE
            }
        },
        ["unpack", spec] => match unpack_file(Path::new(spec)) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                console::line(format_args!("{e}"));
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("husk-agent: {USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Host mode: serve on a Unix socket until a shutdown request or signal.
fn serve_unix(path: &Path) -> Result<(), String> {
    let reaper = Arc::new(Reaper::new());
    sys::set_child_subreaper().map_err(|e| format!("cannot become a subreaper: {e}"))?;
    let agent = Agent::new(Mode::Host, reaper.clone());
    let stopping = agent.clone();
    signals::start(&reaper, move |_| {
        stopping.shut_down(std::time::Duration::from_secs(2));
    })
    .map_err(|e| format!("cannot take over signal handling: {e}"))?;
    let listener =
        Listener::unix(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    console::line(format_args!("listening on {}", path.display()));
    agent
        .serve(&listener)
        .map_err(|e| format!("listener failed: {e}"))
}

/// One unpack from a JSON spec file; the report as JSON.
fn unpack_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec: husk_proto::UnpackSpec = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not an unpack spec: {e}", path.display()))?;
    let report = husk_agent::unpack::unpack(&spec).map_err(|e| console::chain(&e))?;
    serde_json::to_string(&report).map_err(|e| e.to_string())
}
