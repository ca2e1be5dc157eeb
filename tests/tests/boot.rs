//! End to end: the real `husk vm` boots the real guest kernel and agent on
//! real KVM (issue: "Boot a real Linux guest").
//!
//! All cases run in ONE testbed session (booting the testbed costs seconds
//! of emulated CPU); each `#[test]` then checks its own case's output and
//! exit status, so a failure names the case.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use husk_tests::{
    artifact, in_testbed, tiny_elf_kernel, Outcome, Scratch, CODE_I8042_RESET, CODE_TRIPLE_FAULT,
    TINY_KERNEL_BASE,
};

/// Exit statuses of `husk vm` (see vmm/src/cli).
const EXIT_POWEROFF: i32 = 0;
const EXIT_RESET: i32 = 3;
const EXIT_TRIPLE_FAULT: i32 = 4;

struct Case {
    name: &'static str,
    /// Environment for the run (`NAME=VALUE ...`).
    env: &'static str,
    args: String,
}

fn cases(tiny_reset: &str, tiny_triple: &str) -> Vec<Case> {
    let vmlinux = artifact("vmlinux");
    let bzimage = artifact("bzImage");
    let initrd = artifact("initramfs.cpio");
    let (vmlinux, bzimage, initrd) = (vmlinux.display(), bzimage.display(), initrd.display());
    let boot = |kernel: &dyn std::fmt::Display, extra: &str| {
        format!("--kernel {kernel} --initrd {initrd} --mem 256 {extra}")
    };
    vec![
        Case {
            name: "vmlinux-1cpu",
            env: "HUSK_LOG=info HUSK_BOOT_TRACE=1",
            args: boot(&vmlinux, "--vcpus 1 --cmdline 'quiet husk.poweroff'"),
        },
        Case {
            name: "vmlinux-2cpu",
            env: "",
            args: boot(&vmlinux, "--vcpus 2 --cmdline 'quiet husk.poweroff'"),
        },
        Case {
            name: "bzimage-2cpu",
            env: "",
            args: boot(&bzimage, "--vcpus 2 --cmdline 'quiet husk.poweroff'"),
        },
        Case {
            name: "panic",
            env: "",
            args: boot(&vmlinux, "--cmdline 'quiet husk.panic'"),
        },
        Case {
            name: "tiny-reset",
            env: "",
            args: format!("--kernel {tiny_reset} --mem 64"),
        },
        Case {
            name: "tiny-triple-fault",
            env: "",
            args: format!("--kernel {tiny_triple} --mem 64"),
        },
    ]
}

struct Suite {
    testbed: Outcome,
    results: HashMap<&'static str, Outcome>,
}

fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let scratch = Scratch::new("boot");
        let dir = scratch.path();
        let tiny_reset = dir.join("tiny-reset.elf");
        let tiny_triple = dir.join("tiny-triple.elf");
        std::fs::write(&tiny_reset, tiny_elf_kernel(CODE_I8042_RESET)).unwrap();
        std::fs::write(&tiny_triple, tiny_elf_kernel(CODE_TRIPLE_FAULT)).unwrap();
        let cases = cases(
            &tiny_reset.display().to_string(),
            &tiny_triple.display().to_string(),
        );

        let husk = artifact("husk");
        let mut script = String::from("set -u\n");
        for case in &cases {
            let _ = writeln!(
                script,
                "timeout 300 env {} {} vm {} >{d}/{n}.out 2>&1 </dev/null; echo $? >{d}/{n}.status",
                case.env,
                husk.display(),
                case.args,
                d = dir.display(),
                n = case.name
            );
        }
        let script_path = dir.join("run.sh");
        std::fs::write(&script_path, script).unwrap();
        let testbed = in_testbed(&[dir], &["bash", &script_path.display().to_string()]);

        let results = cases
            .iter()
            .map(|case| {
                let read =
                    |ext: &str| std::fs::read_to_string(dir.join(format!("{}.{ext}", case.name)));
                let outcome = match (read("status"), read("out")) {
                    (Ok(status), Ok(output)) => Outcome {
                        status: status.trim().parse().unwrap_or(-1),
                        output,
                    },
                    _ => Outcome {
                        status: -1,
                        output: String::from("(case did not run)"),
                    },
                };
                (case.name, outcome)
            })
            .collect();
        Suite { testbed, results }
    })
}

fn case(name: &str) -> &'static Outcome {
    let suite = suite();
    let outcome = &suite.results[name];
    if outcome.status == -1 {
        panic!(
            "case {name} did not run; testbed exited {} and printed:\n{}",
            suite.testbed.status, suite.testbed.output
        );
    }
    outcome
}

fn assert_ready(name: &str, cpus: u32) {
    let out = case(name);
    let want = format!("husk-agent: ready cpus={cpus} ");
    assert!(
        out.has_line(&want),
        "{name}: no readiness line with {want:?}; status {}, output:\n{}",
        out.status,
        out.output
    );
    let mem = out
        .output
        .lines()
        .find_map(|l| l.split("mem_mib=").nth(1))
        .and_then(|m| m.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // 256 MiB of guest RAM, less what the kernel keeps for itself.
    assert!(
        (150..=256).contains(&mem),
        "{name}: readiness line reports {mem} MiB for a 256 MiB guest"
    );
    assert_eq!(
        out.status, EXIT_POWEROFF,
        "{name}: a clean guest poweroff must exit 0; output:\n{}",
        out.output
    );
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn vmlinux_boots_to_agent_with_one_vcpu_and_powers_off() {
    assert_ready("vmlinux-1cpu", 1);
}

/// The VMM's start-up steps as `HUSK_LOG=info` logs them, in order.
const START_UP_STEPS: &[&str] = &[
    "arguments-parsed",
    "prepared",
    "seccomp-compiled",
    "vm-and-memory",
    "kernel-and-initrd-loaded",
    "devices",
    "boot-tables",
    "vcpus-set-up",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn start_up_steps_and_first_kvm_run_are_traced() {
    let out = case("vmlinux-1cpu");
    let steps: Vec<(&str, u64)> = out
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("husk: info: start-up: "))
        .filter_map(|l| {
            let (name, ms) = l.split_once(" at ")?;
            Some((name, ms.strip_suffix(" ms")?.parse().ok()?))
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s.0).collect();
    assert_eq!(names, START_UP_STEPS, "output:\n{}", out.output);
    assert!(
        steps.windows(2).all(|w| w[0].1 <= w[1].1),
        "times go backwards: {steps:?}"
    );
    let first_run = out
        .output
        .lines()
        .find(|l| l.starts_with("husk: boot-trace first_kvm_run main_ms="))
        .unwrap_or_else(|| panic!("no first_kvm_run line:\n{}", out.output));
    assert!(
        first_run.contains(" vmm_own_kib="),
        "first_kvm_run line lacks the VMM's own memory: {first_run}"
    );
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn smp_guest_sees_two_cpus() {
    assert_ready("vmlinux-2cpu", 2);
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn bzimage_boots_too() {
    assert_ready("bzimage-2cpu", 2);
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn guest_kernel_panic_is_a_failure() {
    let out = case("panic");
    assert!(out.has_line("husk-agent: ready"), "{}", out.output);
    assert!(
        out.has_line("Kernel panic"),
        "panic case should show the guest's panic:\n{}",
        out.output
    );
    assert_eq!(out.status, EXIT_RESET, "{}", out.output);
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn i8042_reset_ends_the_vm_with_its_own_status() {
    let out = case("tiny-reset");
    assert_eq!(out.status, EXIT_RESET, "{}", out.output);
    assert_eq!(
        out.output.trim().lines().count(),
        1,
        "one line: {}",
        out.output
    );
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn triple_fault_ends_the_vm_with_its_own_status() {
    let out = case("tiny-triple-fault");
    assert_eq!(out.status, EXIT_TRIPLE_FAULT, "{}", out.output);
    assert_eq!(
        out.output.trim().lines().count(),
        1,
        "one line: {}",
        out.output
    );
    // Where KVM keeps the vCPU's state (Intel), the line says where it was,
    // read by the vCPU thread under its seccomp filter: the tiny kernel's
    // ud2 (entry, past the ELF and program headers), which faulted with no
    // IDT to handle it. AMD's KVM (the testbed's) resets the vCPU on a
    // shutdown, and the line names the fault alone.
    let line = out.output.trim();
    let ud2 = format!(":{:x}, RSP ", TINY_KERNEL_BASE + 64 + 56);
    assert!(
        line == "husk: guest triple-faulted"
            || (line.starts_with("husk: guest triple-faulted (vCPU 0 at ") && line.contains(&ud2)),
        "the fault, and the vCPU at {ud2} if KVM kept its state: {line}"
    );
}

/// On this host's own KVM, when it keeps a vCPU's state after a triple fault
/// (Intel; AMD resets it, and the testbed above is AMD): the line names the
/// tiny kernel's ud2, read by the vCPU thread under its seccomp filter in
/// the jail, as `husk vm` runs by default. The testbed cannot show this.
#[test]
#[ignore = "needs build/ and this host's /dev/kvm (scripts/test.sh runs it)"]
fn on_intel_a_triple_fault_names_where_the_vcpu_was() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !std::path::Path::new("/dev/kvm").exists() || !cpuinfo.contains("GenuineIntel") {
        eprintln!("skipped: no /dev/kvm on an Intel CPU here (the testbed case covers AMD)");
        return;
    }
    let scratch = Scratch::new("boot-host-triple");
    let kernel = scratch.path().join("tiny-triple.elf");
    std::fs::write(&kernel, tiny_elf_kernel(CODE_TRIPLE_FAULT)).unwrap();
    let out = std::process::Command::new(artifact("husk"))
        .args(["vm", "--mem", "64", "--kernel"])
        .arg(&kernel)
        .output()
        .expect("run husk vm");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_TRIPLE_FAULT), "{err}");
    let ud2 = format!(
        "husk: guest triple-faulted (vCPU 0 at 0010:{:x}, RSP ",
        TINY_KERNEL_BASE + 64 + 56
    );
    assert!(err.trim().starts_with(&ud2), "{ud2}...: {err}");
}
