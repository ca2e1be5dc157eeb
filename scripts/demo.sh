#!/usr/bin/env bash
# The demo: builds husk, the guest kernel and the agent initramfs, builds a busybox OCI image
# locally (tests/images/mkimage.py: no network), imports it, and runs it as a pod: its own
# microVM with the real VMM on real KVM, the image unpacked by the in-guest agent, the app's
# output on this terminal and its exit status as the demo's. On hosts without hardware
# virtualization (e.g. PVM cloud VMs) the pod runs inside the nested testbed (scripts/testbed.sh).
#
# Usage: scripts/demo.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/build.sh"
demo=$repo/build/demo
rm -rf "$demo"
mkdir -p "$demo"
python3 "$repo/tests/images/mkimage.py" "$demo/image" --tag latest >/dev/null
echo "demo: running a pod: husk run --rm demo/busybox ... (store: $demo/root)" >&2
exec "$repo/scripts/testbed.sh" --env HUSK_ROOT="$demo/root" -- bash -c '
  set -e
  husk import --tag demo/busybox "$1" >/dev/null
  husk run --rm --cpus 2 --memory 128m demo/busybox sh -c "
    echo \"hello from pod \$(hostname): Linux \$(uname -r), \$(nproc) vCPUs, PID \$\$ in its own namespace\"
    echo \"rootfs: \$(ls / | tr \"\\n\" \" \")\"
    echo \"VM memory: \$(free -m | awk \"/Mem:/{print \\\$2}\") MiB\""
' demo "$demo/image"
