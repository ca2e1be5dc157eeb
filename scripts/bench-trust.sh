#!/usr/bin/env bash
# Trust benchmark (issue 14, item 6): what signature verification costs.
#
# Per pull, two ways:
# 1. whole pulls: `husk pull` of the busybox test image (tests/images/mkimage.py) from a local
#    Debian docker-registry, signed by skopeo with a GPG key (`--sign-by`, into a file://
#    lookaside storage), a fresh store each time (and `sync` first, so that one pull's writeback
#    does not land in the next one's time), under two policies, interleaved run by run:
#    open (insecureAcceptAnything: no signature read) and gpg (signedBy the signing key's keyring).
#    median(gpg) - median(open) is the cost as a whole pull sees it, within the pulls' noise
#    (the interquartile ranges are printed with it);
# 2. in process (vmm/examples/trust_bench.rs): the admission step a signedBy pull adds (policy,
#    registries.d, the lookaside signature files, keyring, verification, decision), median of
#    500, as a % of median(open): the figure for the target, <= 5 % of the pull. (Sigstore is not
#    measured: Debian 12's skopeo cannot sign with sigstore.)
# Per `husk run`: the host-side re-check (policy load + decision from the store's record) of the
# signed image under the gpg policy, and the measured launch the supervisor makes before the VMM's
# fork (settings, the kernel's and initramfs' digests from the cache, five PCR extends into a
# swtpm started here on a Unix socket, five log records, fdatasync; also without a TPM, and with
# the digest cache emptied), by the same example; target for re-check + measurement <= 5 ms.
# The measurement is skipped (saying so) without swtpm or build/vmlinux and build/initramfs.cpio.
#
# Usage: scripts/bench-trust.sh [RUNS]   (default 10; needs build/husk and build/husk-pull from
# scripts/build.sh, and docker-registry, skopeo, gpg, busybox-static from scripts/deps.sh)
# Environment: BENCH_DIR (default /var/tmp/husk-bench-trust), made afresh and removed at the end
# (kept with BENCH_KEEP=1).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-10}
case "$runs" in ''|*[!0-9]*) echo "bench-trust: RUNS must be a number" >&2; exit 2 ;; esac
husk="$repo/build/husk"
[ -x "$husk" ] && [ -x "$repo/build/husk-pull" ] || { echo "bench-trust: run scripts/build.sh first" >&2; exit 2; }
for t in docker-registry skopeo gpg python3; do
  command -v "$t" >/dev/null || { echo "bench-trust: $t is missing (scripts/deps.sh)" >&2; exit 2; }
done
bench=${BENCH_DIR:-/var/tmp/husk-bench-trust}
rm -rf "$bench"
mkdir -p "$bench"
cleanup() {
  [ -n "${reg_pid:-}" ] && kill "$reg_pid" 2>/dev/null
  [ -n "${tpm_pid:-}" ] && kill "$tpm_pid" 2>/dev/null
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$bench"
}
trap cleanup EXIT

python3 "$repo/tests/images/mkimage.py" "$bench/img" >/dev/null
export GNUPGHOME="$bench/gnupg"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key "bench <bench@husk.test>" ed25519 sign never 2>/dev/null
fpr=$(gpg --with-colons --list-keys bench@husk.test 2>/dev/null | awk -F: '/^fpr/ { print $10; exit }')
gpg --export "$fpr" > "$bench/key.gpg" 2>/dev/null

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$bench/registry" "$host" > "$bench/registry.yml"
docker-registry serve "$bench/registry.yml" >/dev/null 2>&1 &
reg_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
mkdir -p "$bench/lookaside" "$bench/registries.d"
printf 'docker:\n  %s:\n    lookaside: file://%s\n    lookaside-staging: file://%s\n' \
  "$host" "$bench/lookaside" "$bench/lookaside" > "$bench/registries.d/bench.yaml"
skopeo --registries.d "$bench/registries.d" --insecure-policy copy -q --dest-tls-verify=false \
  --sign-by "$fpr" "oci:$bench/img:latest" "docker://$host/bench/busybox:1"

echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$bench/open.json"
printf '{"default":[{"type":"reject"}],"transports":{"docker":{"%s/bench":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"%s"}]}}}\n' \
  "$host" "$bench/key.gpg" > "$bench/gpg.json"

now_ns() { date +%s%N; }
pull_ms() {  # POLICY: one pull into a fresh store; prints ms
  rm -rf "$bench/root"
  mkdir -p "$bench/root"
  cp -r "$bench/registries.d" "$bench/root/"
  sync
  local t0 t1
  t0=$(now_ns)
  HUSK_ROOT="$bench/root" "$husk" pull -q --policy "$1" "$host/bench/busybox:1" >/dev/null
  t1=$(now_ns)
  echo $(( (t1 - t0) / 1000 ))
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

pull_ms "$bench/open.json" >/dev/null   # warm the page cache and the registry
: > "$bench/open.us"; : > "$bench/gpg.us"
for _ in $(seq "$runs"); do
  pull_ms "$bench/open.json" >> "$bench/open.us"
  pull_ms "$bench/gpg.json" >> "$bench/gpg.us"
done
open=$(median < "$bench/open.us")
signed=$(median < "$bench/gpg.us")
iqr() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f-%.2f", v[int((NR + 3) / 4)] / 1000, v[int((3 * NR + 3) / 4)] / 1000 }'; }

# The in-process figures, on the store the last (gpg) pull left, under the gpg policy.
cp "$bench/gpg.json" "$bench/root/policy.json"
(cd "$repo" && cargo build --quiet --release -p husk-vmm --example trust_bench)
measure_args=()
if command -v swtpm >/dev/null && [ -f "$repo/build/vmlinux" ] && [ -f "$repo/build/initramfs.cpio" ]; then
  mkdir -p "$bench/tpm"
  swtpm socket --tpm2 --tpmstate "dir=$bench/tpm" --flags not-need-init,startup-clear \
    --server "type=unixio,path=$bench/tpm/sock" --ctrl "type=unixio,path=$bench/tpm/sock.ctrl" \
    --log "file=$bench/tpm/log" &
  tpm_pid=$!
  for _ in $(seq 100); do [ -S "$bench/tpm/sock" ] && break; sleep 0.05; done
  printf '{"tpm":"swtpm:path=%s"}\n' "$bench/tpm/sock" > "$bench/root/measure.json"
  measure_args=("$repo/build/vmlinux" "$repo/build/initramfs.cpio")
else
  echo "bench-trust: measured launch not timed (needs swtpm, build/vmlinux and build/initramfs.cpio)" >&2
fi
out=$("${CARGO_TARGET_DIR:-$repo/target}/release/examples/trust_bench" "$bench/root" "$host/bench/busybox:1" "$bench/gpg.json" 500 "${measure_args[@]}")
verify=$(awk '/^verify_us/ { print $2 }' <<<"$out")
resolve=$(awk '/^resolve_us/ { print $2 }' <<<"$out")
recheck=$(awk '/^recheck_us/ { print $2 }' <<<"$out")
measure=$(awk '/^measure_us/ { print $2 }' <<<"$out")
notpm=$(awk '/^measure_notpm_us/ { print $2 }' <<<"$out")
cold=$(awk '/^measure_cold_us/ { print $2 }' <<<"$out")
awk -v o="$open" -v g="$signed" -v n="$runs" -v oq="$(iqr < "$bench/open.us")" -v gq="$(iqr < "$bench/gpg.us")" \
    -v v="$verify" -v r="$resolve" -v c="$recheck" -v m="$measure" -v nt="$notpm" -v cd="$cold" 'BEGIN {
  printf "pull of the busybox test image from a local registry (%d runs each, interleaved, medians):\n", n
  printf "  open policy        %8.2f ms (interquartile %s)\n", o / 1000, oq
  printf "  gpg signedBy       %8.2f ms (interquartile %s)\n", g / 1000, gq
  printf "  difference         %8.2f ms = %.1f %% of the pull (within the noise above)\n", (g - o) / 1000, 100 * (g - o) / o
  printf "  verification step  %8.3f ms in process (median of 500) = %.1f %% of the pull (target <= 5 %%)\n", v / 1000, 100 * v / o
  printf "husk run re-check, host side (median of 500):\n"
  printf "  policy load + decision %6.3f ms (target <= 5 ms); store lookup, paid anyway, %.3f ms\n", c / 1000, r / 1000
  if (m != "") {
    printf "  measured launch        %6.3f ms with swtpm (5 extends, 5 log records, fdatasync; median of 100)\n", m / 1000
    printf "                         %6.3f ms without a TPM (the log alone)\n", nt / 1000
    printf "                         %6.3f ms with the digest cache emptied (kernel and initramfs hashed; median of 5)\n", cd / 1000
    printf "  re-check + measurement %6.3f ms (target <= 5 ms)\n", (c + m) / 1000
  }
}'
