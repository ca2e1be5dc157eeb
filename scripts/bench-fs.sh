#!/usr/bin/env bash
# virtio-fs server benchmark on the host: the share's FUSE server mounted through /dev/fuse
# (vmm/examples/fs_mount.rs, the same ShareServer a guest gets) against the native directory it
# serves, both measured in this one run on the same file system.
#
#   sequential write  1 GiB, dd bs=1M, conv=fsync (so both sides pay for reaching the disk)
#   sequential read   1 GiB, dd bs=1M, page cache dropped before each read (cold: both read
#                     from disk; the FUSE side adds the server round trips). A warm read (second
#                     pass, data in the page cache) is printed too.
#   metadata          10k small files: create, then stat, then unlink each, files per second.
#                     ROUNDS rounds per side, interleaved native, FUSE, native, FUSE, ... so that
#                     a change in the machine's load hits both sides alike; the figure per side
#                     is the median and the ratio is the ratio of the medians. The FUSE requests
#                     the server received per file during those rounds are printed by opcode
#                     (counted in fs_mount --count-ops): that number does not depend on load.
#
# FUSE round trips are context switches between the client and the server threads, so on a
# loaded machine (2 shared cores) the FUSE side suffers more than native: the load average is
# printed at the start and the end. Prints MB/s and files/s per side and the FUSE/native ratios
# against the targets (>= 0.5x native sequential read, >= 0.25x native metadata). Needs root
# (mount, drop_caches).
#
# --threads: FUSE server threads (default 2: with ASYNC_READ the second one serves readahead in
# parallel). A VM's virtio-fs device serves each share from one thread, which --threads 1
# mimics; all threads wait on the same /dev/fuse descriptor, so with 2 each request wakes both.
#
# Usage: scripts/bench-fs.sh [--cache never|auto|always] [--dir DIR] [--rounds N] [--threads N]
#        (DIR default: /var/tmp; N default: 7 rounds, 2 threads)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=auto
base=/var/tmp
rounds=7
threads=2
usage="usage: $0 [--cache never|auto|always] [--dir DIR] [--rounds N] [--threads N]"
while [[ $# -gt 0 ]]; do
    case $1 in
        --cache) cache=$2; shift 2 ;;
        --dir) base=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ && $threads =~ ^[1-9][0-9]*$ ]] || { echo "$usage" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-fs: needs root (mount through /dev/fuse, drop_caches)" >&2
    exit 2
fi

target=${CARGO_TARGET_DIR:-$repo/target}
cargo build --quiet --release -p husk-vmm --example fs_mount --manifest-path "$repo/Cargo.toml"
bin=$target/release/examples/fs_mount

work=$(mktemp -d "$base/husk-bench-fs.XXXXXX")
native=$work/native share=$work/share mnt=$work/mnt
mkdir -p "$native" "$share" "$mnt"
pid=
cleanup() {
    if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    umount -l "$mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" "$share" "$mnt" --cache "$cache" --threads "$threads" --count-ops > "$work/mount.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q "fuse.*$mnt\|$mnt.*fuse" /proc/mounts && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/mount.log" >&2; exit 1; }
    sleep 0.05
done
grep -q "$mnt" /proc/mounts || { echo "bench-fs: mount did not appear" >&2; exit 1; }

now() { date +%s%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# mbps BYTES NANOS
mbps() { awk -v b="$1" -v n="$2" 'BEGIN { printf "%.1f", b / 1048576 / (n / 1e9) }'; }

size_mib=1024
bytes=$((size_mib * 1048576))
seq_write() { # DIR -> MB/s
    local t0 t1; t0=$(now)
    dd if=/dev/zero of="$1/big" bs=1M count=$size_mib conv=fsync status=none
    t1=$(now); mbps $bytes $((t1 - t0))
}
seq_read() { # DIR -> MB/s
    local t0 t1; t0=$(now)
    dd if="$1/big" of=/dev/null bs=1M status=none
    t1=$(now); mbps $bytes $((t1 - t0))
}
meta() { # DIR -> files/s for create+stat+unlink of 10k files
    python3 - "$1" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "meta"); os.mkdir(d)
names = [os.path.join(d, "f%05d" % i) for i in range(10000)]
t0 = time.perf_counter()
for n in names:
    os.close(os.open(n, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
for n in names:
    os.stat(n)
for n in names:
    os.unlink(n)
t1 = time.perf_counter()
os.rmdir(d)
print("%.0f" % (len(names) / (t1 - t0)))
PY
}

load() { awk '{print $1, $2, $3}' /proc/loadavg; }
echo "bench-fs: cache=$cache, threads=$threads, files under $work ($(df -T "$work" | awk 'NR==2 {print $2}'))"
echo "bench-fs: load average at start: $(load) ($(nproc) CPUs)"
nw=$(seq_write "$native"); fw=$(seq_write "$mnt")
drop_caches; nr=$(seq_read "$native"); nrw=$(seq_read "$native")
drop_caches; fr=$(seq_read "$mnt"); frw=$(seq_read "$mnt")
rm -f "$native/big" "$mnt/big"
# Metadata rounds are short and the machine may be shared: interleave the sides and take the
# median of each, so a burst of someone else's load neither decides nor skews the ratio.
# SIGUSR1 makes fs_mount print (and reset) its request counts: once to drop what the data
# benchmarks sent, once after the rounds.
ops() { # -> the last "fs_mount: ops ..." line once it has been written after the signal
    local before; before=$(grep -c '^fs_mount: ops' "$work/mount.log" || true)
    kill -USR1 "$pid"
    for _ in $(seq 100); do
        (($(grep -c '^fs_mount: ops' "$work/mount.log" || true) > before)) && break
        sleep 0.02
    done
    grep '^fs_mount: ops' "$work/mount.log" | tail -1
}
ops > /dev/null
nms=() fms=()
for _ in $(seq "$rounds"); do
    nms+=("$(meta "$native")")
    fms+=("$(meta "$mnt")")
done
fops=$(ops)
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
nm=$(median "${nms[@]}") fm=$(median "${fms[@]}")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "meets" : "BELOW" }'; }
printf '%-34s %12s %12s %7s  %s\n' "" native fuse ratio target
printf '%-34s %12s %12s %7s  %s\n' "seq write 1 GiB (MB/s, fsync)" "$nw" "$fw" "$(ratio "$fw" "$nw")" "-"
r=$(ratio "$fr" "$nr")
printf '%-34s %12s %12s %7s  %s\n' "seq read 1 GiB cold (MB/s)" "$nr" "$fr" "$r" ">= 0.50 $(verdict "$r" 0.5)"
printf '%-34s %12s %12s %7s  %s\n' "seq read 1 GiB warm (MB/s)" "$nrw" "$frw" "$(ratio "$frw" "$nrw")" "-"
r=$(ratio "$fm" "$nm")
printf '%-34s %12s %12s %7s  %s\n' "create+stat+unlink 10k (files/s)" "$nm" "$fm" "$r" ">= 0.25 $(verdict "$r" 0.25)"
echo "  metadata: median of $rounds interleaved rounds per side"
echo "    native files/s: ${nms[*]}"
echo "    fuse   files/s: ${fms[*]}"
# Requests per file: the counts cover all FUSE rounds (10k files each).
echo "    fuse requests per file: $(echo "$fops" | awk -v n=$((rounds * 10000)) '{
    t = 0; s = ""
    for (i = 3; i <= NF; i++) { split($i, kv, "="); t += kv[2]; s = s sprintf(" %s %.2f", kv[1], kv[2] / n) }
    printf "%.2f total:%s", t / n, s }')"
echo "bench-fs: load average at end: $(load)"
