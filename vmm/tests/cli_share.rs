//! `husk vm --share` refusals on the real binary: exit status 2 and exactly one line on stderr,
//! before any KVM work (so these run without /dev/kvm).

use std::process::{Command, Output};

use vmm_sys_util::tempdir::TempDir;

fn husk_vm_share(shares: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
    cmd.args(["vm", "--kernel", "/nonexistent/vmlinux"]);
    for s in shares {
        cmd.args(["--share", s]);
    }
    cmd.output().expect("run husk")
}

fn assert_refused(shares: &[String], needle: &str) {
    let out = husk_vm_share(shares);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{shares:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("husk: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
}

#[test]
fn bad_shares_are_refused_with_one_line() {
    let dir = TempDir::new().unwrap();
    let d = dir.as_path().display().to_string();
    std::fs::write(dir.as_path().join("file"), b"x").unwrap();
    let cases: [(Vec<String>, &str); 8] = [
        (vec![format!("{d}")], "is not of the form TAG=HOSTDIR"),
        (vec![format!("t={d}/missing")], "cannot be opened"),
        (vec![format!("t={d}/file")], "is not a directory"),
        (vec![format!("t={d}"), format!("t={d}:ro")], "given twice"),
        (vec![format!("a b={d}")], "may only contain"),
        (vec![format!("={d}")], "empty tag"),
        (vec![format!("{}={d}", "x".repeat(37))], "longer than 36"),
        (vec![format!("t={d}:cache=sometimes")], "unknown cache mode"),
    ];
    for (shares, needle) in cases {
        assert_refused(&shares, needle);
    }
}

#[test]
fn a_good_share_gets_as_far_as_the_kernel() {
    // The share is accepted; the missing kernel is what stops this run.
    let dir = TempDir::new().unwrap();
    let share = format!("data={}:ro:cache=always", dir.as_path().display());
    assert_refused(&[share], "/nonexistent/vmlinux");
}
