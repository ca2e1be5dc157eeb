//! Shared helpers for husk's end-to-end tests.
//!
//! End-to-end tests run the real `husk` binary on real KVM with the real guest
//! kernel and agent from `build/` (made by `scripts/build.sh`). On hosts
//! without hardware virtualization they run inside the nested testbed
//! (`scripts/testbed.sh`), which runs them directly where hardware KVM
//! exists. They are `#[ignore]`d so that `cargo test --workspace` stays a
//! quick unit-test run; `scripts/test.sh` runs them with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the repository")
        .to_path_buf()
}

/// A file from `build/`; fails the test with the fix when it is missing.
pub fn artifact(name: &str) -> PathBuf {
    let path = repo_root().join("build").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build.sh first",
        path.display()
    );
    path
}

/// What a command printed (stdout and stderr together) and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status; -1 when the process died of a signal.
    pub status: i32,
    /// Everything printed, stdout first, then stderr.
    pub output: String,
}

impl Outcome {
    /// Whether any printed line contains `needle`.
    pub fn has_line(&self, needle: &str) -> bool {
        self.output.lines().any(|l| l.contains(needle))
    }

    /// The check of a guest script's suite (`tests/guest/*.sh`): prints its `figure ...`
    /// lines, then fails naming the first of `cases` without a `case NAME ok` line, or a
    /// non-zero exit status, with the whole output.
    pub fn expect_cases(&self, cases: &[&str]) {
        for line in self.output.lines().filter(|l| l.starts_with("figure ")) {
            println!("{line}");
        }
        for case in cases {
            assert!(
                self.has_line(&format!("case {case} ok")),
                "case {case} did not pass (exit status {}):\n{}",
                self.status,
                self.output
            );
        }
        assert_eq!(self.status, 0, "{}", self.output);
    }
}

/// Runs `args` as root on real KVM through `scripts/testbed.sh`, making each
/// of `shares` visible inside at the same path (testbed limit: 900 s).
///
/// A run that the testbed's own flaw ended (README "Testing": the nested
/// testbed's kernel, kvm_amd on QEMU's emulated SVM, sometimes oopses or
/// freezes when a VM starts or is killed) is run once more, and says so on
/// stderr and at the top of the outcome's output. A second failure of the
/// kind is returned as it is. See [`testbed_flaw`] for what counts.
pub fn in_testbed(shares: &[&Path], args: &[&str]) -> Outcome {
    in_testbed_within(shares, args, 900)
}

/// [`in_testbed`] with the testbed killed after `timeout_secs`.
pub fn in_testbed_within(shares: &[&Path], args: &[&str], timeout_secs: u32) -> Outcome {
    let first = in_testbed_once(shares, args, timeout_secs);
    let flaw = testbed_flaw(&first);
    once_more(first, flaw, || in_testbed_once(shares, args, timeout_secs))
}

/// `first` as it is when `why` is `None`; otherwise says why on stderr (with
/// `first`'s output) and returns `again()`, its output headed by why.
fn once_more(first: Outcome, why: Option<String>, again: impl FnOnce() -> Outcome) -> Outcome {
    let Some(why) = why else {
        return first;
    };
    eprintln!(
        "in_testbed: {why}, a known flaw of the nested testbed (README, Testing); \
         running the command once more. The first run's output:\n{}",
        first.output
    );
    let mut second = again();
    second.output = format!(
        "in_testbed: second run, the first one ended because {why}\n{}",
        second.output
    );
    second
}

/// How a guest's crash shows in a husk run's output when the nested testbed
/// delivered an event the guest kernel cannot take (README "Testing": seen
/// as a non-IST exception at the first instruction of the syscall entry,
/// with interrupts off, or one that even the double-fault handler cannot
/// take).
const GUEST_FAULT_SIGNS: &[&str] = &["husk: guest triple-faulted", "PANIC: double fault"];

/// The first sign of a crashed guest in `out`, if any.
pub fn guest_fault(out: &Outcome) -> Option<&'static str> {
    GUEST_FAULT_SIGNS
        .iter()
        .copied()
        .find(|sign| out.output.contains(sign))
}

/// [`in_testbed_within`] for tests whose guests run real workloads and never
/// crash on purpose: a failed run whose output shows a guest crash
/// ([`guest_fault`]) is run once more, and says so on stderr and at the top
/// of the outcome's output. A crash that comes back is a failure, so a VMM
/// that crashes its guests still fails the test.
pub fn in_testbed_guests(shares: &[&Path], args: &[&str], timeout_secs: u32) -> Outcome {
    let first = in_testbed_within(shares, args, timeout_secs);
    let crash = guest_fault(&first)
        .filter(|_| first.status != 0)
        .map(|sign| format!("a guest crashed ({sign})"));
    once_more(first, crash, || {
        in_testbed_within(shares, args, timeout_secs)
    })
}

/// Runs `tests/guest/<name>.sh HUSK SCRATCH EXTRA...` in the testbed with a
/// fresh scratch directory shared in (the pod suites' shape), the testbed
/// killed after `timeout_secs`, through [`in_testbed_guests`].
pub fn run_guest_script(name: &str, extra: &[&str], timeout_secs: u32) -> Outcome {
    guest_script(name, extra, |shares, args| {
        in_testbed_guests(shares, args, timeout_secs)
    })
}

/// [`run_guest_script`] without the second run after a testbed flaw, for a
/// suite that resumes by itself where the flawed run stopped.
pub fn run_guest_script_once(name: &str, extra: &[&str], timeout_secs: u32) -> Outcome {
    guest_script(name, extra, |shares, args| {
        in_testbed_once(shares, args, timeout_secs)
    })
}

fn guest_script(
    name: &str,
    extra: &[&str],
    run_in_testbed: impl FnOnce(&[&Path], &[&str]) -> Outcome,
) -> Outcome {
    let scratch = Scratch::new(name);
    let script = repo_root().join(format!("tests/guest/{name}.sh"));
    let (husk, dir) = (artifact("husk"), scratch.path().display().to_string());
    let mut args = vec!["sh", script.to_str().expect("UTF-8 repository path")];
    args.extend([husk.to_str().expect("UTF-8 repository path"), dir.as_str()]);
    args.extend_from_slice(extra);
    run_in_testbed(&[scratch.path()], &args)
}

fn in_testbed_once(shares: &[&Path], args: &[&str], timeout_secs: u32) -> Outcome {
    let mut cmd = Command::new(repo_root().join("scripts/testbed.sh"));
    cmd.arg("--timeout").arg(timeout_secs.to_string());
    // The testbed has no TPM: pods log their launch without one, and
    // without the warning that would add a line to every husk run's
    // stderr. tests/guest/measure-e2e.sh unsets it to test the warning.
    cmd.args(["--env", "HUSK_TPM=none"]);
    for share in shares {
        cmd.arg("--share").arg(share);
    }
    cmd.arg("--").args(args);
    run(&mut cmd)
}

/// What `scripts/testbed.sh` prints when an oops of the testbed kernel ended
/// the run (it exits 125 then).
const TESTBED_OOPS: &str = "testbed: testbed kernel oops: ";

/// What `scripts/testbed.sh` prints when the testbed ran into its time limit
/// (it exits 124 then).
const TESTBED_TIMEOUT: &str = "testbed: timed out after ";

/// What `scripts/testbed.sh` prints when the testbed's init stopped sending
/// its heartbeat while the command ran (it exits 124 then).
const TESTBED_FROZE: &str = "testbed: the testbed froze: ";

/// What it adds when the watchdog inside the testbed reported what was stuck:
/// the testbed's kernel was alive, so the command itself hung.
const WATCHDOG_REPORTED: &str = "what was stuck follows";

/// Why the testbed itself, not the command, ended the run, if it did:
/// - its kernel oopsed (an oops or soft lockup panics it at once);
/// - it froze: its init's heartbeat stopped for a minute, or it ran into its
///   time limit and its own watchdog (a shell loop in its init that fires
///   before the limit and prints every stuck task) never ran: either way the
///   testbed kernel had stopped scheduling.
///   A command that hangs in a live testbed is reported by that watchdog,
///   and by the `lim` limit of each step before it, and is not retried.
pub fn testbed_flaw(out: &Outcome) -> Option<String> {
    let line = |prefix: &str| out.output.lines().find(|l| l.starts_with(prefix));
    match out.status {
        125 => line(TESTBED_OOPS)
            .map(|l| format!("the testbed kernel oopsed ({})", &l[TESTBED_OOPS.len()..])),
        124 => line(TESTBED_FROZE)
            .map(|_| "the testbed froze (no heartbeat from its init)".to_owned())
            .or_else(|| {
                line(TESTBED_TIMEOUT)
                    .filter(|l| !l.contains(WATCHDOG_REPORTED))
                    .map(|_| "the testbed froze (its own watchdog never reported)".to_owned())
            }),
        _ => None,
    }
}

/// Runs a command on the host and collects its outcome.
pub fn run(cmd: &mut Command) -> Outcome {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Outcome {
        status: out.status.code().unwrap_or(-1),
        output,
    }
}

/// A fresh scratch directory under the build dir (visible to the testbed,
/// which shares `build/`), removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Makes `build/test-scratch/<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        let dir = repo_root()
            .join("build/test-scratch")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Guest-physical address the tiny test kernels load and start at (the same
/// 16 MiB a Linux vmlinux uses).
pub const TINY_KERNEL_BASE: u64 = 0x100_0000;

/// A minimal ELF64 x86_64 "kernel": one PT_LOAD segment at
/// [`TINY_KERNEL_BASE`] holding the headers and `code`, entered at `code`.
/// Used to drive the VMM's exit paths with a handful of guest instructions.
pub fn tiny_elf_kernel(code: &[u8]) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let total = EHDR + PHDR + code.len() as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(TINY_KERNEL_BASE + EHDR + PHDR).to_le_bytes()); // entry
    elf.extend_from_slice(&EHDR.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [EHDR as u16, PHDR as u16, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&TINY_KERNEL_BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&TINY_KERNEL_BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&total.to_le_bytes()); // filesz
    elf.extend_from_slice(&total.to_le_bytes()); // memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    elf.extend_from_slice(code);
    elf
}

/// Guest code: pulse the reset line through the i8042 (`out 0x64, 0xfe`),
/// then halt forever.
pub const CODE_I8042_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];

/// Guest code: `ud2` with no usable IDT, which escalates to a triple fault.
pub const CODE_TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_testbeds_own_failures_are_retried() {
        let oops = Outcome {
            status: 125,
            output: "case a ok\ntestbed: testbed kernel oops: BUG: TASK stack guard page was hit\n  | RIP: x\n".into(),
        };
        assert_eq!(
            testbed_flaw(&oops).unwrap(),
            "the testbed kernel oopsed (BUG: TASK stack guard page was hit)"
        );
        let frozen = Outcome {
            status: 124,
            output: "iter 18 exec ok (9 s)\ntestbed: timed out after 900s (command started)\n"
                .into(),
        };
        assert!(testbed_flaw(&frozen).unwrap().contains("froze"));
        let no_heartbeat = Outcome {
            status: 124,
            output: "iter 7 boot ok (6 s)\ntestbed: the testbed froze: no heartbeat for 60s while the command ran (its kernel stopped scheduling)\n".into(),
        };
        assert!(testbed_flaw(&no_heartbeat)
            .unwrap()
            .contains("no heartbeat"));
        // A hang the testbed's watchdog saw is the command's.
        let hung = Outcome {
            status: 124,
            output: "testbed: timed out after 900s (the command ran past 870s; what was stuck follows)\n".into(),
        };
        assert_eq!(testbed_flaw(&hung), None);
        // The command's own failure, or a testbed that failed otherwise.
        let failed = Outcome {
            status: 1,
            output: "testbed: testbed kernel oops: quoted by the command\n".into(),
        };
        assert_eq!(testbed_flaw(&failed), None);
        let panicked = Outcome {
            status: 125,
            output: "testbed: the testbed kernel panicked before the command finished: x\n".into(),
        };
        assert_eq!(testbed_flaw(&panicked), None);
    }

    #[test]
    fn a_crashed_guest_is_recognised() {
        let crashed = Outcome {
            status: 1,
            output: "case oom-reported ok\nvm-exit 4\nhusk: guest triple-faulted\n".into(),
        };
        assert_eq!(guest_fault(&crashed), Some("husk: guest triple-faulted"));
        let panicked = Outcome {
            status: 1,
            output: "traps: PANIC: double fault, error_code: 0x0\n".into(),
        };
        assert_eq!(guest_fault(&panicked), Some("PANIC: double fault"));
        let failed = Outcome {
            status: 1,
            output: "case pids-max-enforced FAILED: pids.events: \"max 0\"\n".into(),
        };
        assert_eq!(guest_fault(&failed), None);
    }

    #[test]
    fn tiny_kernel_layout() {
        let elf = tiny_elf_kernel(CODE_TRIPLE_FAULT);
        assert_eq!(elf.len(), 64 + 56 + 2);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, TINY_KERNEL_BASE + 120);
        assert_eq!(&elf[120..], CODE_TRIPLE_FAULT);
    }
}
