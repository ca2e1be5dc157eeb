//! End to end: App Container Images (issue 14, item 3), with the real CLI,
//! pull helper, VMM, guest kernel and agent on real KVM. One testbed
//! session runs tests/guest/aci-e2e.sh: an ACI built by the test
//! (tests/images/mkaci.py) is imported and run, and its exec, environment,
//! working directory and user/group reach the app; a policy tightened after
//! the import refuses it at `husk run`; a hostile ACI is refused with one
//! line and stores nothing.

use husk_tests::run_guest_script;

const CASES: &[&str] = &[
    "aci-import-run",
    "aci-recheck-at-run",
    "aci-hostile-refused",
];

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn aci_end_to_end() {
    let out = run_guest_script("aci-e2e", &[], 600);
    out.expect_cases(CASES);
}
