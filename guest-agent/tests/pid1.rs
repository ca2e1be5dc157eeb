//! The agent as PID 1, on the host: run inside fresh PID and mount namespaces
//! (`unshare -m -p -f`), it performs its real boot sequence (re-root onto
//! tmpfs, mounts, cgroup2 probe, readiness line) and ends as asked. Needs
//! root; skipped with a message otherwise.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the agent as PID 1 with `cmdline` as its kernel command line.
fn run_as_pid1(cmdline: &str, timeout_s: u32) -> Option<Output> {
    if !is_root() {
        eprintln!("skipped: needs root for PID and mount namespaces");
        return None;
    }
    let out = Command::new("timeout")
        .args([&timeout_s.to_string(), "unshare", "-m", "-p", "-f"])
        .args(["--propagation", "private", env!("CARGO_BIN_EXE_husk-agent")])
        .env("HUSK_AGENT_CMDLINE", cmdline)
        .output()
        .expect("run unshare");
    Some(out)
}

fn ready_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("husk-agent: ready "))
        .unwrap_or_else(|| {
            panic!(
                "no readiness line; stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

#[test]
fn readiness_line_has_cpus_and_memory() {
    let Some(out) = run_as_pid1("husk.poweroff", 20) else {
        return;
    };
    let line = ready_line(&out);
    let rest = line.strip_prefix("husk-agent: ready cpus=").unwrap();
    let (cpus, mem) = rest.split_once(" mem_mib=").expect("mem_mib field");
    let cpus: u32 = cpus.parse().expect("cpus is a number");
    let mem: u64 = mem.parse().expect("mem_mib is a number");
    // SAFETY: sysconf takes an integer and has no side effects.
    let host_cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u32;
    assert_eq!(cpus, host_cpus);
    assert!(mem > 0);
}

#[test]
fn poweroff_flag_powers_off() {
    let Some(out) = run_as_pid1("console=ttyS0 husk.poweroff", 20) else {
        return;
    };
    ready_line(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("husk.poweroff: powering off"), "{stderr}");
    // reboot(POWER_OFF) inside a PID namespace ends its init with SIGINT,
    // and unshare passes the signal on to itself.
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{stderr}");
}

#[test]
fn panic_flag_exits_pid1_with_status_1() {
    let Some(out) = run_as_pid1("husk.panic", 20) else {
        return;
    };
    ready_line(&out);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sigterm_stops_and_powers_off() {
    if !is_root() {
        eprintln!("skipped: needs root for PID and mount namespaces");
        return;
    }
    // `timeout` sends SIGTERM to unshare, which forwards it to the agent.
    let out = Command::new("timeout")
        .args(["1", "unshare", "-m", "-p", "-f", "--propagation", "private"])
        .arg(env!("CARGO_BIN_EXE_husk-agent"))
        .env("HUSK_AGENT_CMDLINE", "")
        .output()
        .expect("run unshare");
    ready_line(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopping all processes and powering off"),
        "{stderr}"
    );
}
