#!/usr/bin/env bash
# Pod start-up benchmark: `husk run --rm busybox true` against a raw boot of the same kernel,
# both measured in one testbed session (real KVM), and `runc run` of the same rootfs on the
# host as the no-isolation reference. Prints medians and the pod overhead on top of boot
# (target <= 30%); and the pod start with `--no-jail` and `--no-seccomp`, interleaved with the
# default: the jail's cost as a ratio (target <= +3%) and its setup time as the pod's VMM logs
# it (target <= 10 ms). See scripts/bench/run.py.
#
# Usage: scripts/bench-run.sh [RUNS]   (default 5)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS]" >&2; exit 2; }
"$repo/scripts/build.sh"
work=$(mktemp -d "$repo/build/bench-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$repo/scripts/bench/run.py" host "$work/host" "$runs"
echo
mkdir -p "$work/testbed"
"$repo/scripts/testbed.sh" -- python3 "$repo/scripts/bench/run.py" testbed "$repo/build" "$work/testbed" "$runs"
