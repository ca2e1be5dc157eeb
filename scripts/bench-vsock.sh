#!/usr/bin/env bash
# vsock device throughput per VMM CPU second, from an in-process harness
# (vmm/examples/vsock_bench.rs): the real device and Unix-socket backend on
# an event-manager thread, a simulated Linux guest driver on split virtqueues
# in guest memory (EVENT_IDX, Linux's credit-update rule), and a Unix socket
# peer on the host side. The figure is bytes moved per CPU second of the
# device's thread (user + system), so it does not depend on how busy the two
# shared cores are with the driver and peer threads.
#
# Printed per direction: Gbit/s per VMM CPU-s, the wall-clock rate, the ratio
# to the 20 Gbit/s per core target, to Firecracker's published 12.1 Gbit/s
# guest->host figure, and to a baseline measured in the same run: one thread
# pushing the same bytes through a plain Unix socket pair in the same chunk
# size (the copy the device cannot avoid).
#
# host->guest is measured with Linux's default 4 KiB rx buffers and, for
# reference, with 64 KiB ones (--rx-buf).
#
# Usage: scripts/bench-vsock.sh [--mib N]      (default 2048 MiB per direction)
# End-to-end figures through a real guest come from the testbed suite.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mib=2048
while [[ $# -gt 0 ]]; do
    case $1 in
        --mib) mib=$2; shift 2 ;;
        *) echo "usage: $0 [--mib N]" >&2; exit 2 ;;
    esac
done
[[ $mib =~ ^[0-9]+$ && $mib -gt 0 ]] || { echo "bench-vsock: --mib needs a positive number" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$repo/target}
cargo build --quiet --release -p husk-vmm --features test-utils --example vsock_bench --manifest-path "$repo/Cargo.toml"
bin=$target/release/examples/vsock_bench

echo "bench-vsock: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $mib MiB per direction"
echo "== Linux-sized rx buffers (4 KiB)"
"$bin" --mib "$mib" --rx-buf 4096
echo "== large rx buffers (64 KiB)"
"$bin" --mib "$mib" --rx-buf 65536 | grep -v '^guest->host'
