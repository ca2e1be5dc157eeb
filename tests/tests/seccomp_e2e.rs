//! End to end: a VMM thread that breaks its seccomp filter. The VMM dies by
//! SIGSYS after one stderr line naming the thread kind and the system call
//! (`husk vm`, for each of the vcpu, vmm and fs threads), and a pod that
//! meets it fails with that line in its reason.
//!
//! The violation needs a `husk` built with husk-vmm's `test-utils` feature
//! (its `HUSK_SECCOMP_TEST_VIOLATE=KIND` hook), built here into its own
//! target directory so that `build/husk` never carries the hook.

use std::path::{Path, PathBuf};
use std::process::Command;

use husk_tests::{artifact, in_testbed, repo_root, Scratch};

const CASES: &[&str] = &["vm-vcpu", "vm-vmm", "vm-fs", "pod-failed-reason"];

/// Builds `husk` with the `test-utils` feature and copies it into `dir`.
fn husk_with_test_hook(dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("test-utils");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "husk-vmm",
            "--features",
            "test-utils",
            "--bin",
            "husk",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building husk with test-utils failed");
    let dest = dir.join("husk");
    std::fs::copy(target.join("release/husk"), &dest).expect("copy husk");
    dest
}

#[test]
#[ignore = "needs KVM through the nested testbed; run with --ignored"]
fn a_seccomp_violation_is_reported() {
    // The guest kernel and initramfs the script boots.
    artifact("vmlinux");
    artifact("initramfs.cpio");
    let scratch = Scratch::new("seccomp-e2e");
    let husk = husk_with_test_hook(scratch.path());
    let script = repo_root().join("tests/guest/seccomp-e2e.sh");
    let dir = scratch.path().display().to_string();
    let out = in_testbed(
        &[scratch.path()],
        &[
            "sh",
            script.to_str().expect("UTF-8 repository path"),
            husk.to_str().expect("UTF-8 path"),
            &dir,
        ],
    );
    out.expect_cases(CASES);
}
