//! End to end: virtio-vsock through the real `husk vm --vsock`, the real
//! guest kernel and a guest test program (issue: "virtio-mmio transport and
//! virtio-vsock, bridged to host Unix sockets").
//!
//! The guest's /init is `vsock_peer guest` (tests/src/bin/vsock_peer.rs,
//! built static here); `tests/guest/vsock-e2e.sh` boots it inside the
//! testbed and drives it with `vsock_peer host` over the VMM's Unix socket:
//! 64 MiB echoed host→guest and guest→host with every byte checked, 32
//! concurrent connections, a guest that stops reading (the host writer must
//! block and the VMM's memory stay flat), nothing listening on either side,
//! and a clean power-off.

use std::path::{Path, PathBuf};
use std::process::Command;

use husk_tests::{artifact, in_testbed, repo_root, Scratch};

/// Builds `vsock_peer` as a static binary (the guest has no libc) and copies
/// it into `dir`, which the testbed can see.
fn static_peer(dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("static");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "husk-tests",
            "--bin",
            "vsock_peer",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo_root())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the static vsock_peer failed");
    let out = dir.join("vsock_peer");
    std::fs::copy(
        target.join("x86_64-unknown-linux-gnu/release/vsock_peer"),
        &out,
    )
    .unwrap();
    out
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (through scripts/testbed.sh)"]
fn vsock_end_to_end() {
    let husk = artifact("husk");
    let vmlinux = artifact("vmlinux");
    let scratch = Scratch::new("vsock");
    let peer = static_peer(scratch.path());
    let initrd = scratch.path().join("vsock.cpio");
    let status = Command::new("python3")
        .arg(repo_root().join("scripts/mkinitramfs.py"))
        .arg(&initrd)
        .args(["dir:/dev", "nod:/dev/console:c:5:1"])
        .arg(format!("file:/init:{}:0755", peer.display()))
        .status()
        .expect("run mkinitramfs.py");
    assert!(status.success());
    let script = repo_root().join("tests/guest/vsock-e2e.sh");
    let args = [&script, &husk, &vmlinux, &initrd, &peer].map(|p| p.display().to_string());
    let mut cmd = vec!["bash"];
    cmd.extend(args.iter().map(String::as_str));
    let out = in_testbed(&[], &cmd);
    println!("{}", out.output);
    for case in [
        "ready",
        "h2g-echo",
        "g2h-echo",
        "concurrent-32",
        "guest-stops-reading",
        "nothing-listening-in-guest",
        "nothing-listening-on-host",
        "vmm-exit",
    ] {
        assert!(
            out.has_line(&format!("PASS {case}")),
            "case {case} did not pass"
        );
    }
    assert_eq!(out.status, 0);
}
