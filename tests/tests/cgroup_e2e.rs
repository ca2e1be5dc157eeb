//! End to end: each pod's VMM in a host cgroup v2 of its own
//! (tests/guest/cgroup-e2e.sh, in the testbed, whose cgroup v2 is pure).
//! A running pod's VMM and all its threads are in
//! `/sys/fs/cgroup/husk/husk-<id>` with `cpu.max`, `memory.max` and
//! `pids.max` as computed from its vCPUs, memory and shares, and `husk
//! inspect` shows them; its supervisor is outside. The cgroup goes when the
//! pod ends; after `kill -9` of the supervisor and the VMM, `husk gc` kills
//! what is left in it and removes it. A missing or malformed
//! `--cgroup-parent` (flag or manifest) is one line and exit 125 with no pod
//! and no cgroup left; an explicit parent is used; a VMM pushed past its
//! memory is OOM-killed and the pod's failure says so; without a cgroup2
//! mount a pod runs with one warning line, and `--cgroup-parent` is refused.
//! The cgroup tree is the same before and after (but for the default parent
//! `/husk`, which husk keeps). The VMM's thread count and memory are printed
//! as `figure` lines.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "cgroup-limits",
    "cgroup-removed",
    "cgroup-gc",
    "cgroup-bad-parent",
    "cgroup-parent",
    "cgroup-oom",
    "cgroup-unavailable",
    "cgroup-nothing-left",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn each_pod_vmm_has_a_host_cgroup() {
    let out = run_guest_script("cgroup-e2e", &[], 600);
    out.expect_cases(CASES);
}
