#!/usr/bin/env bash
# The demo: builds husk, the guest kernel and the agent initramfs, then boots a
# 2-vCPU microVM with the real VMM on real KVM until the in-guest agent reports
# ready and powers the guest off. On hosts without hardware virtualization
# (e.g. PVM cloud VMs) it runs inside the nested testbed (scripts/testbed.sh).
#
# Usage: scripts/demo.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/build.sh"
echo "demo: booting a 2-vCPU microVM (husk vm) ..." >&2
exec "$repo/scripts/testbed.sh" -- "$repo/build/husk" vm \
  --kernel "$repo/build/vmlinux" --initrd "$repo/build/initramfs.cpio" \
  --vcpus 2 --mem 256 --cmdline "quiet husk.poweroff"
