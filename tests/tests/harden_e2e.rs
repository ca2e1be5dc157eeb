//! End to end: what apps run with inside the guest (issue 13, part 2),
//! with the real CLI, VMM, guest kernel and agent on real KVM. One testbed
//! session runs tests/guest/harden-e2e.sh: by default an app (and `husk
//! exec` into it) has docker's 14 capabilities (CapEff/CapBnd 0xa80425fb,
//! none effective for another user), no no_new_privs and podman's seccomp
//! profile, which refuses swapon with EPERM whatever the capabilities;
//! `--cap-add SYS_ADMIN` lets mount and sethostname through (the profile
//! follows the capabilities), with `no-new-privileges`, `--read-only` and a
//! `--tmpfs`; `seccomp=unconfined` leaves only the agent's guard, and
//! `--cap-drop ALL --cap-add SYS_ADMIN` that one capability; `--privileged`
//! has every capability and no filter; a manifest's apps keep
//! `cap_drop = ["ALL"]`, no-new-privileges, a read-only root with a tmpfs,
//! and a profile file of their own, in `husk exec` too; `husk inspect`
//! shows each app's settings; bad capabilities, options, tmpfs specs and
//! profiles are one line and status 125 with no pod made.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "defaults",
    "inspect-defaults",
    "cap-add-sys-admin",
    "seccomp-unconfined",
    "privileged",
    "manifest-locked-app",
    "manifest-custom-profile",
    "inspect-apps",
    "bad-input",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn apps_hardened_end_to_end() {
    let out = run_guest_script("harden-e2e", &[], 900);
    out.expect_cases(CASES);
}
