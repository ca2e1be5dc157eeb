#!/usr/bin/env bash
# Runs husk's whole test suite, the same way on a laptop and in CI:
#   1. formatting and lints (cargo fmt --check, clippy -D warnings)
#   2. unit and host-integration tests (cargo test --workspace)
#   3. the build (scripts/build.sh: husk, husk-agent, guest kernel, initramfs)
#   4. end-to-end tests on real KVM: the real VMM booting the real guest kernel
#      and agent, through scripts/testbed.sh (the nested SVM testbed on hosts
#      without hardware virtualization, directly on hosts with it)
#
# Usage: scripts/test.sh            (run as root: host integration tests use
#                                    namespaces and /dev/fuse)
# Environment: HUSK_SKIP_LINT=1 skips step 1 for quick local iterations.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n== %s\n' "$*" >&2; }
# Once, on a shared machine, /dev/null turned into a regular file mid-suite and every later
# container test failed on it; say which step did it, should it happen again.
null_intact() {
  [ -c /dev/null ] || { echo "test.sh: /dev/null is no longer a character device (after: $1)" >&2; exit 1; }
}

"$repo/scripts/deps.sh"

if [ "${HUSK_SKIP_LINT:-0}" != 1 ]; then
  step "lint"
  cargo fmt --all --check
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  # Test doubles and what needs them (the vsock benchmark) build only with test-utils.
  cargo clippy --quiet --workspace --all-targets --features husk-vmm/test-utils -- -D warnings
fi

step "unit and host-integration tests"
null_intact "start"
cargo test --workspace
null_intact "unit and host-integration tests"

step "build"
"$repo/scripts/build.sh"

step "end-to-end tests (real KVM through scripts/testbed.sh)"
# One at a time: each test boots a testbed VM, and the machine has 2 cores.
cargo test -p husk-tests -- --ignored --test-threads=1
null_intact "end-to-end tests"
