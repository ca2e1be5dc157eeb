#!/usr/bin/env bash
# Runs where /dev/kvm is real (inside the testbed): boots a guest whose /init
# is `vsock_peer guest`, with `husk vm --vsock`, and drives it from the host
# side with `vsock_peer host` (one PASS/FAIL line per case).
#
# Usage: vsock-e2e.sh HUSK KERNEL INITRD PEER
set -u
husk=$1 kernel=$2 initrd=$3 peer=$4
dir=$(mktemp -d /tmp/husk-vsock-e2e.XXXXXX)
sock=$dir/v.sock
"$husk" vm --kernel "$kernel" --initrd "$initrd" --mem 256 --vsock "$sock" \
    --console "$dir/console.log" --cmdline 'quiet -- guest' &
vmm=$!
for _ in $(seq 200); do
    [[ -S $sock ]] && break
    kill -0 "$vmm" 2>/dev/null || break
    sleep 0.05
done
"$peer" host --sock "$sock" --vmm-pid "$vmm" --mib "${VSOCK_E2E_MIB:-64}"
rc=$?
# The guest powers itself off at the end; the VMM must then exit 0.
for _ in $(seq 300); do
    kill -0 "$vmm" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$vmm" 2>/dev/null; then
    echo "FAIL vmm-exit: husk still running after the guest powered off"
    kill -9 "$vmm"
    rc=1
else
    wait "$vmm"
    status=$?
    if [[ $status -eq 0 ]]; then echo "PASS vmm-exit: status 0"; else echo "FAIL vmm-exit: status $status"; rc=1; fi
fi
if [[ -e $sock ]]; then echo "FAIL socket-cleanup: $sock left behind"; rc=1; fi
echo "--- guest console (tail)"
tail -n 15 "$dir/console.log"
rm -rf "$dir"
exit $rc
