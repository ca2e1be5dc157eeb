//! `husk` command-line behaviour that needs no /dev/kvm: every bad flag or
//! input ends with exit status 125 (husk's usage status on every command, as
//! Docker's) and exactly one line on stderr, never a panic. Runs the real
//! binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn husk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_husk"))
        .args(args)
        .output()
        .expect("run husk")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("husk-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A minimal x86_64 ELF "kernel" (one PT_LOAD at 16 MiB): enough to pass
/// the format check; these tests never run it.
fn tiny_elf() -> PathBuf {
    let path = scratch("tiny.elf");
    let base: u64 = 0x100_0000;
    let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes());
    e.extend_from_slice(&0x3eu16.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + 120).to_le_bytes());
    e.extend_from_slice(&64u64.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    for h in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&h.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&5u32.to_le_bytes());
    for q in [0u64, base, base, 122, 122, 0x1000] {
        e.extend_from_slice(&q.to_le_bytes());
    }
    e.extend_from_slice(&[0xf4, 0xf4]);
    // Tests run in parallel and share the file: write it whole under a
    // name of this thread's, then rename, so no test reads it half-written.
    let part = scratch(&format!("tiny.elf.{:?}", std::thread::current().id()));
    std::fs::write(&part, e).unwrap();
    std::fs::rename(&part, &path).unwrap();
    path
}

/// Exit status 125 and one line on stderr that contains `needle`.
fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("husk: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn no_arguments() {
    let out = husk(&[]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn unknown_flag() {
    assert_usage_error(&husk(&["vm", "--kernel", "k", "--bogus"]), "--bogus");
}

#[test]
fn kernel_is_required() {
    assert_usage_error(&husk(&["vm"]), "--kernel");
}

#[test]
fn missing_kernel() {
    assert_usage_error(
        &husk(&["vm", "--kernel", "/nonexistent/vmlinux"]),
        "cannot read kernel /nonexistent/vmlinux",
    );
}

#[test]
fn kernel_that_is_not_a_kernel() {
    let path = scratch("script.sh");
    std::fs::write(&path, "#!/bin/sh\necho not a kernel\n").unwrap();
    assert_usage_error(
        &husk(&["vm", "--kernel", path.to_str().unwrap()]),
        "neither an x86_64 ELF vmlinux nor a bzImage",
    );
    let empty = scratch("empty");
    std::fs::write(&empty, "").unwrap();
    assert_usage_error(
        &husk(&["vm", "--kernel", empty.to_str().unwrap()]),
        "neither",
    );
    // A directory cannot be read as a kernel either.
    assert_usage_error(&husk(&["vm", "--kernel", "/"]), "kernel /");
}

#[test]
fn missing_initrd() {
    let k = tiny_elf();
    assert_usage_error(
        &husk(&[
            "vm",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            "/nonexistent.cpio",
        ]),
        "cannot read initramfs /nonexistent.cpio",
    );
}

#[test]
fn memory_bounds() {
    let k = tiny_elf();
    let k = k.to_str().unwrap();
    assert_usage_error(
        &husk(&["vm", "--kernel", k, "--mem", "16"]),
        "at least 64 MiB",
    );
    assert_usage_error(
        &husk(&["vm", "--kernel", k, "--mem", "100000000"]),
        "more than this host's",
    );
    assert_usage_error(&husk(&["vm", "--kernel", k, "--mem", "-1"]), "-1");
    assert_usage_error(&husk(&["vm", "--kernel", k, "--mem", "lots"]), "--mem");
}

#[test]
fn vcpu_bounds() {
    let k = tiny_elf();
    let k = k.to_str().unwrap();
    assert_usage_error(&husk(&["vm", "--kernel", k, "--vcpus", "0"]), "at least 1");
    assert_usage_error(&husk(&["vm", "--kernel", k, "--vcpus", "255"]), "254");
}

#[test]
fn over_long_command_line() {
    let k = tiny_elf();
    let long = "x".repeat(3000);
    assert_usage_error(
        &husk(&["vm", "--kernel", k.to_str().unwrap(), "--cmdline", &long]),
        "kernel command line too long",
    );
}

#[test]
fn empty_console() {
    let k = tiny_elf();
    let out = husk(&["vm", "--kernel", k.to_str().unwrap(), "--console", ""]);
    assert_usage_error(&out, "--console");
}

#[test]
fn help_and_version_succeed() {
    let out = husk(&["vm", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("console=ttyS0 reboot=k panic=-1"), "{text}");
    assert_eq!(husk(&["--version"]).status.code(), Some(0));
}

#[test]
fn doctor_gives_a_verdict() {
    let out = husk(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict:"), "{text}");
    assert!(
        matches!(out.status.code(), Some(0 | 3 | 124)),
        "{:?}",
        out.status
    );
}

/// What an app runs with inside the guest (issue 13): a bad capability,
/// `--security-opt`, `--tmpfs` or seccomp profile is one line and 125
/// before anything is made, on a host without /dev/kvm too.
#[test]
fn bad_security_flags_are_usage_errors() {
    let root = scratch("sec-root");
    let broken = scratch("broken-profile.json");
    std::fs::write(
        &broken,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["#,
    )
    .unwrap();
    let notify = scratch("notify-profile.json");
    std::fs::write(
        &notify,
        r#"{"defaultAction": "SCMP_ACT_NOTIFY", "syscalls": []}"#,
    )
    .unwrap();
    let (broken, notify) = (broken.display().to_string(), notify.display().to_string());
    let cases: [(&[&str], &str); 9] = [
        (
            &["--cap-add", "SYS_FLY"],
            "--cap-add SYS_FLY: unknown capability \"CAP_SYS_FLY\"",
        ),
        (
            &["--cap-drop", "nope"],
            "--cap-drop nope: unknown capability",
        ),
        (&["--security-opt", "apparmor=unconfined"], "unknown option"),
        (
            &["--security-opt", "no-new-privileges=maybe"],
            "expected true or false",
        ),
        (
            &["--security-opt", "seccomp=/no/such.json"],
            "/no/such.json: No such file",
        ),
        (
            &["--security-opt", &format!("seccomp={broken}")],
            "not a usable seccomp profile",
        ),
        (
            &["--security-opt", &format!("seccomp={notify}")],
            "SCMP_ACT_NOTIFY is not supported",
        ),
        (&["--tmpfs", "scratch"], "--tmpfs scratch: "),
        (&["--tmpfs", "/s:lots"], "--tmpfs /s:lots: "),
    ];
    for (flags, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_husk"))
            .env("HUSK_ROOT", &root)
            .arg("run")
            .args(flags)
            .args(["--network", "none", "busybox", "true"])
            .output()
            .expect("run husk");
        assert_usage_error(&out, needle);
        let pods = std::fs::read_dir(root.join("pods"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pods, 0, "{flags:?} left a pod");
    }
}
