#!/usr/bin/env bash
# Boot benchmark: husk against QEMU microvm, both measured in this one run.
#   1. on the host (VMM start-up: launch -> first guest instruction, peak RSS)
#   2. inside the testbed (real KVM): launch -> agent ready, -> VMM exit, own RSS
# Prints medians of 5 runs and husk/QEMU ratios. See scripts/bench/boot.py.
#
# Usage: scripts/bench-boot.sh [RUNS]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-5}
"$repo/scripts/build.sh"
work=$(mktemp -d "$repo/build/bench-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 "$repo/scripts/bench/boot.py" host "$repo/build" "$work" "$runs"
echo
"$repo/scripts/testbed.sh" -- python3 "$repo/scripts/bench/boot.py" testbed "$repo/build" "$runs"
