#!/usr/bin/env bash
# Builds everything a pod needs into build/ (git-ignored):
#   build/husk              the CLI and VMM (release)
#   build/husk-pull         the registry client `husk pull` runs (kept out of the VMM binary)
#   build/husk-agent        the in-guest agent, statically linked (it is the guest's /init)
#   build/vmlinux           the guest kernel, uncompressed ELF (direct boot)
#   build/bzImage           the same kernel, compressed (the VMM loads both)
#   build/initramfs.cpio    the guest's initramfs: husk-agent as /init
#
# Usage: scripts/build.sh
# Installs missing Debian packages (scripts/deps.sh); the kernel build is
# cached outside the tree by config hash (scripts/build-kernel.sh), so only
# the first run on a machine pays its ~7 minutes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$repo/build"
cd "$repo"

"$repo/scripts/deps.sh"
mkdir -p "$out"

log() { printf 'build: %s\n' "$*" >&2; }

log "husk (release)"
cargo build --quiet --release -p husk-vmm
install -m 0755 target/release/husk "$out/husk"
install -m 0755 target/release/husk-pull "$out/husk-pull"

# The agent runs before anything else exists in the guest: link it statically
# (gnu target with crt-static; RUSTFLAGS with an explicit --target leaves
# build scripts and proc-macros dynamically linked, as they must be).
log "husk-agent (release, static)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --release --target x86_64-unknown-linux-gnu -p husk-agent
install -m 0755 target/x86_64-unknown-linux-gnu/release/husk-agent "$out/husk-agent"
if ! file_out=$(LC_ALL=C readelf -l "$out/husk-agent" 2>&1) || grep -q 'Requesting program interpreter' <<<"$file_out"; then
  log "husk-agent is not statically linked"; exit 1
fi

log "guest kernel"
"$repo/scripts/build-kernel.sh" "$out"

log "initramfs"
python3 "$repo/scripts/mkinitramfs.py" "$out/initramfs.cpio" \
  dir:/dev nod:/dev/console:c:5:1 nod:/dev/null:c:1:3:0666 \
  dir:/proc dir:/sys dir:/tmp:1777 dir:/run dir:/mnt \
  file:/init:"$out/husk-agent":0755

log "done: $(cd "$out" && ls | tr '\n' ' ')"
