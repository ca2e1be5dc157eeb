//! End to end: `husk run` and the pod commands with the real CLI, VMM,
//! guest kernel and agent on real KVM (issue: "husk run"). One testbed
//! session runs every case of tests/guest/pod-e2e.sh: output and exit
//! status of `run` (codes and signals), env/workdir/user, stdin, volumes
//! read-write and read-only, `-d` + `ps` + `logs` + `exec` + `stop`, the
//! pod directory's modes (0700 / 0600, F7),
//! Ctrl-C (SIGINT) to `run` and `exec` reaching the app, a stop that
//! needs SIGKILL after the grace period with `logs -f` following it,
//! a two-app pod sharing a volume, a VMM killed under a running pod
//! (reported as failed, cleaned by `gc`), and the error cases: unknown
//! image, bad reference, bad flag value, missing volume, command not
//! found, no such pod, registry unreachable, a corrupt layer blob, no KVM —
//! each one line, its own exit status, nothing left behind. Security
//! review F6: an empty-dir volume's size limit (ENOSPC in the pod), its
//! tmpfs gone after the pod ends and after `rm`/`gc` of a pod whose
//! supervisor was killed, and a clear refusal without CAP_SYS_ADMIN. F11:
//! root in a container cannot make device nodes to forge console lines,
//! nor open AF_VSOCK sockets or io_uring rings. Every thread of a pod's
//! VMM runs under its seccomp filter, and `--no-seccomp` turns them off.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "run-echo",
    "exit-status",
    "env-workdir-user",
    "stdin",
    "volumes",
    "detach-logs-exec-stop",
    "state-private",
    "signals-forwarded",
    "stop-grace-kill",
    "two-app-pod",
    "vmm-death-reported",
    "error-unknown-image",
    "error-bad-reference",
    "error-bad-memory",
    "error-missing-volume",
    "error-command-not-found",
    "error-no-such-pod",
    "error-registry-unreachable",
    "error-digest-mismatch",
    "error-no-kvm",
    "volume-size-limit",
    "volume-cleanup",
    "volume-limit-unenforceable",
    "container-no-device-nodes",
    "container-no-vsock",
    "vmm-seccomp",
    "no-seccomp",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn pods_run_end_to_end() {
    let out = run_guest_script("pod-e2e", &[], 900);
    out.expect_cases(CASES);
}
