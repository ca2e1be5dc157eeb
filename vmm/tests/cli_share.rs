//! `husk vm --share` refusals on the real binary: exit status 125 (usage) and exactly one line on stderr,
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
    assert_eq!(out.status.code(), Some(125), "{shares:?}: {stderr}");
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

/// F12 for the flag, the one string form left: a `:` that is not an option is refused, so a
/// directory named `x:rw` is never shared as `x` (at df579e2, `t=DIR/x:rw:ro` was accepted and
/// shared `DIR/x:rw`, and `t=DIR/x:rw` shared `DIR/x` read-write).
#[test]
fn a_colon_in_the_host_directory_is_refused() {
    let dir = TempDir::new().unwrap();
    let d = dir.as_path().display().to_string();
    std::fs::create_dir_all(dir.as_path().join("x:y")).unwrap();
    std::fs::create_dir_all(dir.as_path().join("x:rw")).unwrap();
    for share in [format!("t={d}/x:y"), format!("t={d}/x:rw:ro")] {
        assert_refused(&[share], "containing ':'");
    }
}

/// F1: a host directory with a symlink anywhere in its path is refused, naming the real path.
#[test]
fn a_symlink_in_the_host_directory_is_refused() {
    let dir = TempDir::new().unwrap();
    let d = dir.as_path();
    std::fs::create_dir_all(d.join("real/inner")).unwrap();
    std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
    let share = format!("t={}/link/inner", d.display());
    assert_refused(&[share], &format!("{}/real/inner", d.display()));
}

#[test]
fn a_good_share_gets_as_far_as_the_kernel() {
    // The share is accepted; the missing kernel is what stops this run.
    let dir = TempDir::new().unwrap();
    let share = format!("data={}:ro:cache=always", dir.as_path().display());
    assert_refused(&[share], "/nonexistent/vmlinux");
}
