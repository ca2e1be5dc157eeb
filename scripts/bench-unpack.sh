#!/usr/bin/env bash
# Image unpack benchmark: the agent's unpack code against `tar -xzf` run per
# layer and `umoci unpack` (if installed), on the same multi-layer gzip image,
# the same disk, in the same run. Prints medians, MB/s and ratios.
#
# Usage: scripts/bench-unpack.sh [--layers N] [--mib-per-layer M] [--runs R]
#   defaults: 4 layers x 64 MiB uncompressed (256 MiB total), 3 runs.
# Environment: BENCH_DIR (default /var/tmp/husk-bench-unpack) holds the
#   generated image (reused across calls with the same parameters) and the
#   unpacked trees; CARGO_TARGET_DIR is honoured for the agent build.
#
# What is timed, for each tool, with the blobs already in the page cache and
# the previous output removed and synced beforehand:
#   tar:   `tar -xzf LAYER -C DIR` for each layer in order (GNU tar pipes
#          through gzip; it does not interpret OCI whiteouts)
#   agent: `husk-agent unpack SPEC.json` (digest verification, whiteouts,
#          concurrent decompression, in-order apply)
#   umoci: `umoci unpack` of the same image as an OCI layout (digests,
#          whiteouts), when umoci is available
# MB/s counts uncompressed layer bytes. The agent's tree is checked against
# umoci's (same files and contents) when both ran.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
layers=4
mib=64
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --mib-per-layer) mib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "bench-unpack: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$layers$mib$runs" in *[!0-9]*) echo "bench-unpack: numbers expected" >&2; exit 2 ;; esac
[ "$layers" -ge 1 ] && [ "$mib" -ge 1 ] && [ "$runs" -ge 1 ] || { echo "bench-unpack: values must be >= 1" >&2; exit 2; }

bench=${BENCH_DIR:-/var/tmp/husk-bench-unpack}
image="$bench/image-${layers}x${mib}"
out="$bench/out"
mkdir -p "$bench"
log() { printf 'bench-unpack: %s\n' "$*" >&2; }

log "building husk-agent (release)"
(cd "$repo" && cargo build --quiet --release -p husk-agent)
agent="${CARGO_TARGET_DIR:-$repo/target}/release/husk-agent"

if [ ! -f "$image/spec.json" ]; then
  log "generating a ${layers}-layer image, ${mib} MiB per layer, in $image"
  rm -rf "$image"
  python3 - "$image" "$layers" "$mib" <<'PY'
import hashlib, io, json, os, random, subprocess, sys, tarfile
root, nlayers, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
         for _ in range(5000)]

def content(size):
    # Roughly what images hold: mostly text-like data with some binary
    # noise; gzip -6 gets about 3:1 on it, like typical image layers.
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.2:
            out += os.urandom(min(512, size - len(out)))
        else:
            line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
            out += line * 8
    return bytes(out[:size])

def write_blob(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return h

layers, diff_ids, seen = [], [], []
for n in range(nlayers):
    buf = io.BytesIO()
    budget = mib << 20
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name):
            ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = 0o755
            ti.mtime = 1_600_000_000; tar.addfile(ti)
        def add_file(name, data, mode=0o644):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = mode
            ti.mtime = 1_600_000_000; tar.addfile(ti, io.BytesIO(data))
        top = f"layer{n}"
        add_dir(top)
        i = 0
        while budget > 0:
            d = f"{top}/d{i // 200}"
            if i % 200 == 0:
                add_dir(d)
            # 70% of the bytes in large files, the rest in many small ones.
            size = rng.randint(1 << 20, 6 << 20) if rng.random() < 0.04 else rng.randint(512, 48 << 10)
            size = min(size, budget)
            name = f"{d}/f{i}"
            add_file(name, content(size))
            seen.append(name)
            budget -= size
            i += 1
        for j in range(20):
            ti = tarfile.TarInfo(f"{top}/link{j}"); ti.type = tarfile.SYMTYPE
            ti.linkname = f"d0/f{j}"; tar.addfile(ti)
            ti = tarfile.TarInfo(f"{top}/hard{j}"); ti.type = tarfile.LNKTYPE
            ti.linkname = f"{top}/d0/f{j}"; tar.addfile(ti)
        if n > 0:
            # Whiteouts of a few files from lower layers.
            lower = [s for s in seen if not s.startswith(top + "/")]
            for name in rng.sample(lower, min(50, len(lower) // 4)):
                head, tail = name.rsplit("/", 1)
                add_file(f"{head}/.wh.{tail}", b"")
    raw = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = subprocess.run(["gzip", "-6", "-n", "-c"], input=raw, capture_output=True, check=True).stdout
    layers.append({"digest": "sha256:" + write_blob(gz),
                   "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "size": len(gz), "unpacked": len(raw)})
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cdig = write_blob(config)
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + cdig, "size": len(config)},
    "layers": [{k: l[k] for k in ("mediaType", "digest", "size")} for l in layers]}).encode()
mdig = write_blob(manifest)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + mdig, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
with open(os.path.join(root, "layers.txt"), "w") as f:
    for l in layers:
        f.write(l["digest"].split(":")[1] + "\n")
with open(os.path.join(root, "unpacked_bytes"), "w") as f:
    f.write(str(sum(l["unpacked"] for l in layers)))
spec = {"blob_dir": os.path.join(root, "blobs"), "rootfs": "",
        "layers": [{"digest": l["digest"], "media_type": l["mediaType"], "size": l["size"]} for l in layers]}
with open(os.path.join(root, "spec.json"), "w") as f:
    json.dump(spec, f)
PY
fi

total=$(cat "$image/unpacked_bytes")
compressed=$(cd "$image/blobs/sha256" && cat "$image/layers.txt" | xargs stat -c %s | paste -sd+ | bc)
log "image: $layers layers, $((total >> 20)) MiB unpacked, $((compressed >> 20)) MiB gzip"

fresh() {  # removes and re-creates an output dir; flushes, warms the blobs
  rm -rf "$1"
  sync
  mkdir -p "$(dirname "$1")"
  cat "$image"/blobs/sha256/* >/dev/null
}
# Runs a command; prints "wall_seconds cpu_seconds" (cpu = user + system of
# the command and its children). CPU time is the steadier figure on a busy
# machine; wall time is what a user waits.
timed() {
  local f; f=$(mktemp)
  /usr/bin/time -o "$f" -f '%e %U %S' "$@" >/dev/null 2>&1 || { rm -f "$f"; log "failed: $*"; exit 1; }
  awk '{printf "%s %.2f\n", $1, $2 + $3}' "$f"
  rm -f "$f"
}

run_tar() {
  fresh "$out/tar"; mkdir -p "$out/tar"
  timed sh -c 'while read -r hex; do tar -xzf "$1/blobs/sha256/$hex" -C "$2" || exit 1; done <"$1/layers.txt"' \
    sh "$image" "$out/tar"
}
run_agent() {
  fresh "$out/agent"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s["rootfs"]=sys.argv[2]; json.dump(s,open(sys.argv[3],"w"))' \
    "$image/spec.json" "$out/agent" "$bench/spec-run.json"
  timed "$agent" unpack "$bench/spec-run.json"
}
run_umoci() {
  fresh "$out/umoci"
  timed umoci unpack --image "$image:bench" "$out/umoci"
}

have_umoci=0
command -v umoci >/dev/null && have_umoci=1
[ $have_umoci = 1 ] || log "umoci not installed (apt-get install umoci): skipping it"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A wall cpu
tools="tar agent $([ $have_umoci = 1 ] && echo umoci)"
for tool in $tools; do
  walls=(); cpus=()
  for ((r = 1; r <= runs; r++)); do
    read -r w c < <(run_$tool)
    walls+=("$w"); cpus+=("$c")
  done
  wall[$tool]=$(printf '%s\n' "${walls[@]}" | median)
  cpu[$tool]=$(printf '%s\n' "${cpus[@]}" | median)
  log "$tool: wall ${walls[*]} s; cpu ${cpus[*]} s"
done

if [ $have_umoci = 1 ]; then
  if diff -r --no-dereference -q "$out/agent" "$out/umoci/rootfs" >/dev/null; then
    log "check: the agent's tree matches umoci's"
  else
    log "check FAILED: the agent's tree differs from umoci's:"
    diff -r --no-dereference -q "$out/agent" "$out/umoci/rootfs" | head -5 >&2
    exit 1
  fi
fi

mbps() { echo "scale=1; $total / 1000000 / $1" | bc; }
printf '\nunpack of %d layers, %d MB unpacked (%d MB gzip), median of %d runs, on %s, %s CPUs\n' \
  "$layers" $((total / 1000000)) $((compressed / 1000000)) "$runs" \
  "$(df --output=source,fstype "$bench" | tail -1 | tr -s ' ')" "$(nproc)"
printf '%-6s %8s %8s %12s %12s\n' tool wall_s MB/s cpu_s "agent vs it"
for tool in $tools; do
  printf '%-6s %8.2f %8s %12.2f %11sx\n' "$tool" "${wall[$tool]}" "$(mbps "${wall[$tool]}")" \
    "${cpu[$tool]}" "$(echo "scale=2; ${wall[$tool]} / ${wall[agent]}" | bc)"
done
printf '(agent vs it = wall-clock speed-up of the agent over that tool)\n'
rm -rf "$out" "$bench/spec-run.json"
