//! End to end: rootless husk (tests/guest/rootless-e2e.sh). An ordinary
//! user in the kvm group, with no set-uid helper, runs a pod in the
//! foreground, a detached one with a volume (exec, logs, stop, rm); its VMM
//! is that user, root only of a user namespace of its own that maps that
//! uid alone, with the jail's capabilities there and no_new_privs; an
//! empty-dir volume and a --cgroup-parent the user cannot write are refused
//! in one line with nothing left behind.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "rootless-run",
    "rootless-exec-logs-volume",
    "rootless-jail",
    "rootless-stop-rm",
    "rootless-refusals",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn an_ordinary_user_runs_pods() {
    let out = run_guest_script("rootless-e2e", &[], 600);
    out.expect_cases(CASES);
}
