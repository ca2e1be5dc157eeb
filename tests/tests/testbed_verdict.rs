//! The testbed's verdict on a run (scripts/testbed/verdict.sh), on job
//! directories laid out as a testbed run leaves them: what it exits with
//! and what it says, for a command that exited, one killed by a signal, a
//! testbed kernel oops (with and without the panic's replay of the whole
//! log), a panic without an oops and a timeout with a long report.
//!
//! The oops without a replayed boot line is the case that went wrong: a
//! stack overflow in the testbed kernel (a nested-virtualisation flaw of
//! TCG, under a flood of guest exits) filled the kernel's log buffer, the
//! report's search for "Linux version" found nothing, and the report ended
//! under `set -e` with status 1 and no word, so the e2e harness neither
//! said what happened nor ran the suite again.

use std::path::Path;
use std::process::Command;

use husk_tests::{repo_root, Scratch};

/// Runs the verdict on a job directory made of `status` (status.log) and
/// `console` (console.log); returns its exit status and stderr.
fn verdict(case: &str, qemu_status: i32, status: &str, console: &str) -> (i32, String) {
    let scratch = Scratch::new(&format!("verdict-{case}"));
    let dir = scratch.path();
    std::fs::write(dir.join("status.log"), status).expect("write status.log");
    std::fs::write(dir.join("console.log"), console).expect("write console.log");
    std::fs::write(dir.join("qemu.log"), "").expect("write qemu.log");
    run(dir, qemu_status)
}

fn run(dir: &Path, qemu_status: i32) -> (i32, String) {
    let out = Command::new(repo_root().join("scripts/testbed/verdict.sh"))
        .arg(dir)
        .args([qemu_status.to_string().as_str(), "900", "60"])
        .output()
        .expect("run scripts/testbed/verdict.sh");
    let code = out.status.code().expect("verdict.sh exits, not killed");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

const STARTED: &str = "1796613670.99 start 3.42\n1796613676.00 beat 9.26\n";

/// The frames a stack overflow repeats until the log buffer holds little
/// else.
fn overflow_trace(frames: usize) -> String {
    let mut s = String::from(
        "[   38.188515] BUG: TASK stack guard page was hit at 00000000f36a5df5\n\
         [   38.189462] stack guard page: 0000 [#1] PREEMPT SMP NOPTI\n",
    );
    for _ in 0..frames {
        s.push_str("[   38.189462] RIP: 0010:exc_page_fault+0x15/0x170\n");
        s.push_str("[   38.189462]  asm_exc_page_fault+0x22/0x30\n");
    }
    s.push_str("[   38.189462] Kernel panic - not syncing: Fatal exception in interrupt\n");
    s
}

#[test]
fn the_commands_status_is_passed_on_silently() {
    let (code, err) = verdict("exit", 0, &format!("{STARTED}1796613680.1 exit 3\n"), "");
    assert_eq!((code, err.as_str()), (3, ""));
}

#[test]
fn a_command_killed_by_a_signal_is_named() {
    let (code, err) = verdict(
        "signal",
        0,
        &format!("{STARTED}1796613680.1 exit 137\n"),
        "",
    );
    assert_eq!(code, 137);
    assert!(err.contains("killed by signal 9 (SIGKILL)"), "{err}");
}

#[test]
fn an_oops_whose_log_lost_its_start_is_still_reported() {
    let (code, err) = verdict("oops-no-replay", 0, STARTED, &overflow_trace(800));
    assert_eq!(code, 125, "{err}");
    assert!(
        err.starts_with("testbed: testbed kernel oops: BUG: TASK stack guard page was hit"),
        "{err}"
    );
}

#[test]
fn an_oops_is_reported_from_the_panics_replay() {
    // Live, only the emergency lines reach the console; the replay after
    // "Linux version" has the whole oops.
    let console = format!(
        "[    9.1] Oops: live fragment\n\
         [    0.000000] Linux version 6.1.0-57-cloud-amd64\n\
         [    9.0] some boot line\n{}",
        overflow_trace(2)
    );
    let (code, err) = verdict("oops-replay", 0, STARTED, &console);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.starts_with("testbed: testbed kernel oops: BUG: TASK stack guard page"),
        "{err}"
    );
}

#[test]
fn a_panic_without_an_oops_is_reported() {
    let console = "[   12.0] Kernel panic - not syncing: sysrq triggered crash\n";
    let (code, err) = verdict("panic", 0, STARTED, console);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.starts_with("testbed: the testbed kernel panicked before the command finished"),
        "{err}"
    );
}

#[test]
fn a_timeout_with_a_long_report_exits_124() {
    // More report than the 400 lines shown: the pipe closed early must not
    // end the verdict before its exit status.
    let mut console = String::from("testbed-watchdog: begin: the command ran past 855s\n");
    for i in 0..5000 {
        console.push_str(&format!("task {i} D wchan\n"));
    }
    console.push_str("testbed-watchdog: end\n");
    let status = format!("{STARTED}1796614500.0 watchdog 855\n");
    let (code, err) = verdict("timeout", 0, &status, &console);
    assert_eq!(code, 124, "{err}");
    assert!(err.starts_with("testbed: timed out after 900s"), "{err}");
}

#[test]
fn wrong_arguments_are_one_line_and_status_2() {
    let out = Command::new(repo_root().join("scripts/testbed/verdict.sh"))
        .arg("/nonexistent")
        .output()
        .expect("run scripts/testbed/verdict.sh");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
