#!/bin/sh
# End to end for the VMM's seccomp filters when a thread breaks its filter: the VMM dies by SIGSYS
# after one stderr line naming the thread kind and the system call, and a pod that meets it
# fails with that line in its reason. HUSK is a build with the `test-utils` feature, in which
# HUSK_SECCOMP_TEST_VIOLATE=KIND makes each thread of that kind call socket(AF_INET) (41, on no
# allowlist) right after installing its filter. Prints `case NAME ok` or `case NAME FAILED: why`.
# Usage: seccomp-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
# HUSK is not in build/, beside the guest kernel and initramfs a pod needs: name them.
export HUSK_KERNEL="$repo/build/vmlinux" HUSK_INITRD="$repo/build/initramfs.cpio"

# 1. `husk vm`: each thread kind in turn (sh reports death by signal 31 as 159)
mkdir -p "$D/share"
for kind in vcpu vmm fs; do
    HUSK_SECCOMP_TEST_VIOLATE=$kind lim $V $H vm --kernel "$repo/build/vmlinux" \
        --initrd "$repo/build/initramfs.cpio" --console "$D/console-$kind.log" \
        --share "tag=$D/share" >/dev/null 2>"$D/$kind.err"; rc=$?
    line="husk: seccomp: the $kind thread made a forbidden system call 41"
    [ $rc -eq 159 ] && grep -qx "$line" "$D/$kind.err" && ok "vm-$kind" || bad "vm-$kind" "rc=$rc $(cat "$D/$kind.err")"
done

# 2. a pod whose vCPU thread breaks its filter fails to start, with the line in its reason (a pod
# that fails before its apps start leaves nothing behind, so the reason is what `husk run` prints)
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
HUSK_SECCOMP_TEST_VIOLATE=vcpu lim $V $H run --name bad busybox true >"$D/run.out" 2>&1; rc=$?
want="the pod's VM failed: the VMM was killed by signal 31: husk: seccomp: the vcpu thread made a forbidden system call 41"
if [ $rc -ne 0 ] && grep -qF "$want" "$D/run.out"; then
    ok pod-failed-reason
else
    bad pod-failed-reason "rc=$rc $(cat "$D/run.out")"
fi

echo "seccomp-e2e: $fails failed"
[ $fails -eq 0 ]
