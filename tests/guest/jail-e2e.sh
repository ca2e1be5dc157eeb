#!/bin/sh
# End to end for the VMM jail, on a host with real KVM (the testbed): a running pod's VMM is
# inspected from outside through /proc, then `--no-jail` is checked. Every case prints
# `case NAME ok` or `case NAME FAILED: why`; tests/tests/jail_e2e.rs checks each line. The
# jail's set-up time (from the VMM's log at HUSK_LOG=info) is printed as `figure jail-setup ...`.
# Usage: jail-e2e.sh HUSK SCRATCH_DIR
set -u
H=$1
D=$2
export HUSK_ROOT="$D/root"
repo=$(cd "$(dirname "$0")/../.." && pwd)
LIM_NOTES="$D/lim.notes"
. "$repo/tests/guest/lib.sh"
V=120 Q=60
fails=0
ok() { echo "case $1 ok"; }
bad() { echo "case $1 FAILED: $2$(lim_stuck)"; fails=$((fails + 1)); }
vmm_pid() { lim $Q $H inspect "$1" | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$'; }

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
mkdir -p "$D/vol"

# A pod with a volume, its app running, started with the flags given (HUSK_LOG=info puts the
# jail's set-up time in vmm.log); prints its id once the app has written to the volume.
start_pod() {
    name=$1; shift
    rm -f "$D/vol/f"
    lim $V env HUSK_LOG=info $H run -d --name "$name" "$@" -v "$D/vol:/data" busybox \
        sh -c 'echo in-vol > /data/f; while true; do sleep 0.2; done'
    i=0; while [ ! -s "$D/vol/f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
rss() { grep -E '^(VmRSS|RssAnon|RssFile):' "/proc/$1/status" | tr -s '\t ' ' ' | tr '\n' ' '; }

id=$(start_pod jailed); rc=$?
P="$HUSK_ROOT/pods/$id"
pid=$(vmm_pid jailed)
[ $rc -eq 0 ] && [ -n "$pid" ] && [ -d "/proc/$pid" ] || { echo "case jail-pod FAILED: rc=$rc pid=$pid"; exit 1; }

# 1. its own mount, UTS, IPC and network namespaces
same=
for ns in mnt uts ipc net; do
    [ "$(readlink "/proc/$pid/ns/$ns")" = "$(readlink "/proc/self/ns/$ns")" ] && same="$same $ns"
done
[ -z "$same" ] && ok jail-namespaces || bad jail-namespaces "shared with husk:$same"

# 2. its root holds only /proc (its own /proc/self) and the path to its vsock directory
root=$(ls -A "/proc/$pid/root" | tr '\n' ' ')
first=$(echo "$P" | cut -d/ -f2)
want=$(printf 'proc\n%s\n' "$first" | sort -u | tr '\n' ' ')
procs=$(ls -A "/proc/$pid/root/proc" | tr '\n' ' ')
vsockdir=$(ls -A "/proc/$pid/root$P" | tr '\n' ' ')
[ "$(ls -A "/proc/$pid/root/proc/self/fd" | wc -l)" -gt 3 ] && selffd=yes || selffd=no
if [ "$root" = "$want" ] && [ "$procs" = "self " ] && [ "$vsockdir" = "vsock " ] && [ $selffd = yes ] \
   && ! touch "/proc/$pid/root/x" 2>/dev/null; then
    ok jail-root
else
    bad jail-root "root=[$root] want=[$want] proc=[$procs] pod dir=[$vsockdir] self/fd=$selffd"
fi

# 3. capabilities: CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID (0xcb) in every set, no
#    inheritable or ambient ones; no_new_privs
st=$(cat "/proc/$pid/status")
caps=$(echo "$st" | grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' | tr -s '\t ' ' ' | tr '\n' ' ')
want_caps="CapInh: 0000000000000000 CapPrm: 00000000000000cb CapEff: 00000000000000cb CapBnd: 00000000000000cb CapAmb: 0000000000000000 NoNewPrivs: 1 "
[ "$caps" = "$want_caps" ] && ok jail-capabilities || bad jail-capabilities "$caps"

# 4. limits: no core file, the descriptor limit of the shares' pool
lims=$(grep -E '^Max (core file size|open files)' "/proc/$pid/limits" | awk '{$1 = $1; printf "%s ", $0}')
[ "$lims" = "Max core file size 0 0 bytes Max open files 66560 66560 files " ] && ok jail-limits \
    || bad jail-limits "$lims"

# 5. descriptors: nothing of the supervisor's (its lock, state and log files, pipes, the
#    client's socket); only what the VMM opened on purpose: stdio, /dev/kvm, the kernel and
#    initramfs, the console log, the shares, its own /proc/self, sockets, and KVM's and the
#    event loop's anonymous inodes
unexpected=
for fd in /proc/$pid/fd/*; do
    t=$(readlink "$fd") || continue
    case "$t" in
    /dev/null | /dev/kvm | "$P/vmm.log" | "$P/console.log" | "$P/blobs" | "$P/blobs/"* | "$D/vol" | "$D/vol/"*) ;;
    */build/vmlinux | */build/initramfs.cpio) ;;
    # the passthrough's /proc/self/fd and mountinfo, named from outside the jail's mounts
    */proc/self/fd | */proc/self/mountinfo | "/proc/$pid/fd" | "/proc/$pid/mountinfo") ;;
    socket:* | anon_inode:*) ;;
    *) unexpected="$unexpected ${fd##*/}=$t" ;;
    esac
done
[ -z "$unexpected" ] && ok jail-descriptors || bad jail-descriptors "$unexpected"

# 6. the jailed VMM still serves the pod: exec, the volume (written above), and its
#    set-up time from vmm.log
out=$(lim $Q $H exec jailed cat /data/f)
setup=$(grep -o 'jail: set up in [0-9.]* ms' "$P/vmm.log" | grep -o '[0-9.]* ms')
[ "$out" = in-vol ] && [ "$(cat "$D/vol/f")" = in-vol ] && [ -n "$setup" ] && ok jail-serves \
    || bad jail-serves "out=$out vol=$(cat "$D/vol/f" 2>&1) setup=$setup log=$(cat "$P/vmm.log")"
echo "figure jail-setup $setup"
echo "figure jail-vmm-rss $(rss "$pid")"
lim $V $H stop jailed >/dev/null
lim $Q $H rm jailed >/dev/null

# 7. --no-jail: one warning line on stderr, and the VMM in husk's own namespaces
id=$(start_pod free --no-jail 2>"$D/nojail.err"); rc=$?
pid=$(vmm_pid free)
out=$(lim $Q $H exec free cat /data/f)
warn=$(grep -c 'warning: --no-jail' "$D/nojail.err")
nsm=$(readlink "/proc/$pid/ns/mnt"); myns=$(readlink /proc/self/ns/mnt)
capeff=$(grep CapEff "/proc/$pid/status" | tr -s '\t ' ' ')
echo "figure no-jail-vmm-rss $(rss "$pid")"
lim $V $H stop free >/dev/null
lim $Q $H rm free >/dev/null
out2=$(lim $V $H run --rm --no-jail busybox echo hi 2>"$D/nojail2.err"); rc2=$?
if [ $rc -eq 0 ] && [ "$warn" = 1 ] && [ "$nsm" = "$myns" ] && [ "$capeff" != "CapEff: 00000000000000cb" ] \
   && [ "$out" = in-vol ] && [ $rc2 -eq 0 ] && [ "$out2" = hi ] && [ "$(grep -c . "$D/nojail2.err")" = 1 ]; then
    ok no-jail
else
    bad no-jail "rc=$rc warn=$warn ns=$nsm/$myns $capeff out=$out rc2=$rc2 out2=$out2 err=$(cat "$D/nojail.err" "$D/nojail2.err")"
fi

echo "jail-e2e: $fails failed"
[ $fails -eq 0 ]
