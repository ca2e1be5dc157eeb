//! End to end: the VMM jail, checked from outside the jailed process
//! (tests/guest/jail-e2e.sh). A running pod's VMM has its own mount, UTS,
//! IPC, network, cgroup and user namespaces, the user namespace mapping the
//! pod's own host id range (`uid_map`, `/proc/PID/status`, `husk inspect`);
//! its root (`/proc/PID/root`) holds only `proc/self` and the path to its
//! vsock directory, read-only; its capabilities are CHOWN, DAC_OVERRIDE,
//! FOWNER, SETGID and SETUID in the effective, permitted and bounding sets,
//! none inheritable or ambient, with no_new_privs; no core file, its
//! process and descriptor limits; its descriptors are only those it opened
//! on purpose, the shares' in private clones of their mounts; and it still
//! serves `exec` and a volume. Ownership on an id-mapped volume (ext4) is
//! the host's both ways, an empty-dir volume's files belong to the pod's
//! range on the host, and a volume that cannot be id-mapped (virtiofs) runs
//! the VMM in the root jail with one warning. `--no-jail` prints one warning
//! and leaves the VMM in husk's namespaces. The jail's set-up time and the
//! VMM's resident memory, jailed and not, are printed as `figure` lines.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "jail-namespaces",
    "jail-root",
    "jail-capabilities",
    "jail-limits",
    "jail-user-namespace",
    "jail-descriptors",
    "jail-serves",
    "jail-volume-ownership",
    "jail-root-fallback",
    "jail-emptydir-ownership",
    "no-jail",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn the_vmm_runs_jailed() {
    let out = run_guest_script("jail-e2e", &[], 600);
    out.expect_cases(CASES);
}
