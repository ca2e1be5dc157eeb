#!/usr/bin/env bash
# Network benchmark: husk's user-mode networking (virtio-net, stream backend, passt) against
# QEMU microvm's virtio-net-device on `-netdev stream` connected to the same passt, and husk's
# TAP backend (`husk vm --net tap:DEV`) against QEMU's `-netdev tap` on the same TAP device, all
# measured in one testbed session (real KVM) with the same kernel and guest userspace
# (busybox and Debian's iperf3 in one initramfs). Prints medians of interleaved runs:
# TCP throughput guest -> host and host -> guest (iperf3), a 1-byte TCP round trip, their
# husk/QEMU ratios (target >= 1.0 on every figure), and the pod start with
# `--network user` against `--network none` (target <= 1.10). See scripts/bench/net.py.
#
# Usage: scripts/bench-net.sh [RUNS] [SECONDS]   (default 5 runs, iperf3 -t 5)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-5}
secs=${2:-5}
[[ $runs =~ ^[1-9][0-9]*$ && $secs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS] [SECONDS]" >&2; exit 2; }
"$repo/scripts/build.sh"
work=$(mktemp -d "$repo/build/bench-net.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$repo/scripts/bench/net.py" initramfs "$repo/build" "$work/net.cpio" "$secs"
mkdir -p "$work/testbed"
"$repo/scripts/testbed.sh" --timeout $((600 + runs * (8 * secs + 120))) -- \
  python3 "$repo/scripts/bench/net.py" testbed "$repo/build" "$work/net.cpio" "$work/testbed" "$runs"
