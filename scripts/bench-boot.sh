#!/usr/bin/env bash
# Boot benchmark: husk against QEMU microvm and Firecracker, all measured in this one run.
#   1. on the host (VMM start-up: launch -> first guest instruction, peak RSS)
#   2. inside the testbed (real KVM): launch -> agent ready, -> VMM exit, own RSS
# husk three ways in both, interleaved with QEMU: jailed and filtered (default), --no-jail,
# --no-seccomp; prints the jail's cost as a ratio, its setup time (target <= 10 ms) and the VMM's
# own memory of each (target <= 3 MiB).
# Firecracker joins the testbed part when a binary is found: $FIRECRACKER, else
# ../shared/peers/firecracker beside the checkout (the peer binary the team benchmarks against).
# Prints medians of 5 runs and husk/QEMU and husk/Firecracker ratios. See scripts/bench/boot.py.
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
fc=${FIRECRACKER:-$repo/../shared/peers/firecracker}
if [ -x "$fc" ]; then fc=$(realpath "$fc"); else
    [ -z "${FIRECRACKER:-}" ] || { echo "bench-boot: FIRECRACKER=$FIRECRACKER is not an executable file" >&2; exit 2; }
    fc=""
fi
"$repo/scripts/testbed.sh" -- python3 "$repo/scripts/bench/boot.py" testbed "$repo/build" "$runs" ${fc:+"$fc"}
