#!/bin/sh
# End to end for the VMM jail, on a host with real KVM (the testbed): a running pod's VMM is
# inspected from outside through /proc (namespaces, user namespace and id range, root,
# capabilities, limits, descriptors), the ownership on its volumes is checked from the guest
# and the host (id-mapped, empty-dir, and the root-jail fallback), then `--no-jail` is checked. Every case prints
# `case NAME ok` or `case NAME FAILED: why`; tests/tests/jail_e2e.rs checks each line. The
# jail's set-up time (from the VMM's log at HUSK_LOG=info) is printed as `figure jail-setup ...`.
# Usage: jail-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
vmm_pid() { lim $Q $H inspect "$1" | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$'; }

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
# The main pod's volume is on ext4 (a loop device in the testbed's tmpfs): a file system that
# Linux 6.1 can id-map, so its VMM gets a user namespace. The scratch directory is on
# virtiofs, which cannot be id-mapped: a pod with a volume there runs in the root jail.
modprobe loop 2>/dev/null
E=/tmp/jail-e2e-ext4
mkdir -p "$E" && truncate -s 64M "$E.img" && mkfs.ext4 -q -F "$E.img" && mount -o loop "$E.img" "$E" \
    || { echo "case jail-ext4 FAILED: cannot make an ext4 volume"; exit 1; }
trap 'umount -l "$E" 2>/dev/null' EXIT
VOL="$E/vol"
mkdir -p "$VOL" "$D/vol"
echo host > "$VOL/owned" && chown 1234:4321 "$VOL/owned"

# A pod with the volume $VOL, its app running, started with the flags given (HUSK_LOG=info puts
# the jail's set-up time in vmm.log); prints its id once the app has written to the volume.
start_pod() {
    name=$1; shift
    rm -f "$VOL/f"
    lim $V env HUSK_LOG=info $H run -d --name "$name" "$@" -v "$VOL:/data" busybox \
        sh -c 'echo in-vol > /data/f; while true; do sleep 0.2; done'
    i=0; while [ ! -s "$VOL/f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
rss() { grep -E '^(VmRSS|RssAnon|RssFile):' "/proc/$1/status" | tr -s '\t ' ' ' | tr '\n' ' '; }

id=$(start_pod jailed 2>"$D/jailed.err"); rc=$?
P="$HUSK_ROOT/pods/$id"
pid=$(vmm_pid jailed)
[ $rc -eq 0 ] && [ -n "$pid" ] && [ -d "/proc/$pid" ] || { echo "case jail-pod FAILED: rc=$rc pid=$pid"; exit 1; }

# 1. its own mount, UTS, IPC, network, cgroup and user namespaces
same=
for ns in mnt uts ipc net cgroup user; do
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

# 4. limits: no core file, processes of its uid, the descriptor limit of the shares' pool
lims=$(grep -E '^Max (core file size|processes|open files)' "/proc/$pid/limits" | awk '{$1 = $1; printf "%s ", $0}')
[ "$lims" = "Max core file size 0 0 bytes Max processes 1024 1024 processes Max open files 66560 66560 files " ] \
    && ok jail-limits || bad jail-limits "$lims"

# 4b. not host root: the pod's own id range (recorded in its directory), mapped in a user
#     namespace; inspect says so; no warning at run
base=$(cat "$P/ids")
umap=$(awk '{$1 = $1; print}' "/proc/$pid/uid_map")
gmap=$(awk '{$1 = $1; print}' "/proc/$pid/gid_map")
uids=$(grep -E '^(Uid|Gid):' "/proc/$pid/status" | tr -s '\t ' ' ' | tr '\n' ' ')
mapped=$(lim $Q $H inspect jailed | tr -d ' \n' | grep -o '"user_ns":{"mapped":{"base":[0-9]*' | grep -o '[0-9]*$')
want_ids="Uid: $base $base $base $base Gid: $base $base $base $base "
if [ -n "$base" ] && [ "$base" -ge 65536 ] && [ "$umap" = "0 $base 65536" ] && [ "$gmap" = "0 $base 65536" ] \
   && [ "$uids" = "$want_ids" ] && [ "$mapped" = "$base" ] && ! grep -q warning "$D/jailed.err"; then
    ok jail-user-namespace
else
    bad jail-user-namespace "base=$base uid_map=[$umap] gid_map=[$gmap] ids=[$uids] inspect=$mapped err=$(cat "$D/jailed.err")"
fi

# 5. descriptors: nothing of the supervisor's (its lock, state and log files, pipes, the
#    client's socket); only what the VMM opened on purpose: stdio, /dev/kvm, the kernel and
#    initramfs, the console's pipe (its write end only: the supervisor copies it into the
#    capped console.log), the shares, its own /proc/self, sockets, and KVM's and the event
#    loop's anonymous inodes
#    A share's descriptors are in a private clone of its mount, which is in no mount table:
#    their names are relative to the clone, and their mount is neither husk's nor the jail's.
unexpected=
clones=0
pipes=0
for fd in /proc/$pid/fd/*; do
    t=$(readlink "$fd") || continue
    mnt=$(awk '/^mnt_id:/ {print $2}' "/proc/$pid/fdinfo/${fd##*/}" 2>/dev/null)
    if [ -n "$mnt" ] && ! grep -q "^$mnt " /proc/self/mountinfo "/proc/$pid/mountinfo" 2>/dev/null; then
        case "$t" in /*) clones=$((clones + 1)); continue ;; esac
    fi
    case "$t" in
    /dev/null | /dev/kvm | "$P/vmm.log" | "$P/console.log") ;;
    */build/vmlinux | */build/initramfs.cpio) ;;
    # the passthrough's /proc/self/fd and mountinfo, named from outside the jail's mounts
    */proc/self/fd | */proc/self/mountinfo | "/proc/$pid/fd" | "/proc/$pid/mountinfo") ;;
    socket:* | anon_inode:*) ;;
    pipe:*)
        # One pipe, opened write-only (the access mode is the low digit of fdinfo's octal flags).
        pipes=$((pipes + 1))
        acc=$(awk '/^flags:/ {print substr($2, length($2))}' "/proc/$pid/fdinfo/${fd##*/}")
        [ "$pipes" -eq 1 ] && [ "$acc" = 1 ] || unexpected="$unexpected ${fd##*/}=$t(access $acc)" ;;
    *) unexpected="$unexpected ${fd##*/}=$t" ;;
    esac
done
[ -z "$unexpected" ] && [ $clones -ge 2 ] && ok jail-descriptors \
    || bad jail-descriptors "unexpected:$unexpected; descriptors in share clones: $clones"

# 6. the jailed VMM still serves the pod: exec, the volume (written above), and its
#    set-up time from vmm.log
out=$(lim $Q $H exec jailed cat /data/f)
setup=$(grep -o 'jail: set up in [0-9.]* ms' "$P/vmm.log" | grep -o '[0-9.]* ms')
[ "$out" = in-vol ] && [ "$(cat "$VOL/f")" = in-vol ] && [ -n "$setup" ] && ok jail-serves \
    || bad jail-serves "out=$out vol=$(cat "$VOL/f" 2>&1) setup=$setup log=$(cat "$P/vmm.log")"

# 6b. the id-mapped volume's ownership is the host's, both ways: the guest sees the host's ids,
#     and what it creates or chowns is stored with the guest's ids (not the range's)
seen=$(lim $Q $H exec jailed stat -c '%u:%g' /data /data/owned | tr '\n' ' ')
lim $Q $H exec jailed chown 1000:1001 /data/f
made=$(stat -c '%u:%g' "$VOL/f")
lim $Q $H exec jailed sh -c 'echo x > /data/g'
made_root=$(stat -c '%u:%g' "$VOL/g")
if [ "$seen" = "0:0 1234:4321 " ] && [ "$made" = "1000:1001" ] && [ "$made_root" = "0:0" ]; then
    ok jail-volume-ownership
else
    bad jail-volume-ownership "guest sees [$seen] (want 0:0 1234:4321); chown 1000:1001 stored $made; root's new file $made_root"
fi
echo "figure jail-setup $setup"
echo "figure jail-vmm-rss $(rss "$pid")"
lim $V $H stop jailed >/dev/null
lim $Q $H rm jailed >/dev/null

# 6c. a volume on a file system that cannot be id-mapped (the scratch directory, virtiofs):
#     one warning line at run, the VMM host root in the rest of its jail, the volume served
rm -f "$D/vol/f"
lim $V $H run -d --name rootjail -v "$D/vol:/data" busybox \
    sh -c 'echo in-vol > /data/f; while true; do sleep 0.2; done' >/dev/null 2>"$D/rootjail.err"
i=0; while [ ! -s "$D/vol/f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
rpid=$(vmm_pid rootjail)
ruid=$(grep '^Uid:' "/proc/$rpid/status" 2>/dev/null | tr -s '\t ' ' ')
rcap=$(grep '^CapEff:' "/proc/$rpid/status" 2>/dev/null | tr -s '\t ' ' ')
lim $V $H stop rootjail >/dev/null
lim $Q $H rm rootjail >/dev/null
if [ "$(cat "$D/vol/f" 2>/dev/null)" = in-vol ] && [ "$ruid" = "Uid: 0 0 0 0" ] && [ "$rcap" = "CapEff: 00000000000000cb" ] \
   && [ "$(grep -c 'cannot id-map' "$D/rootjail.err")" = 1 ] && [ "$(grep -c . "$D/rootjail.err")" = 1 ]; then
    ok jail-root-fallback
else
    bad jail-root-fallback "vol=$(cat "$D/vol/f" 2>&1) $ruid $rcap err=$(cat "$D/rootjail.err")"
fi

# 6d. an empty-dir volume belongs to the pod's own range on the host, and to root in the guest
cat > "$D/empty.toml" <<EOF
name = "emptydir"
[[volumes]]
name = "scratch"
size = "8m"
[[apps]]
name = "w"
image = "busybox"
command = ["sh", "-c", "echo x > /v/f && stat -c '%u:%g' /v /v/f && sleep 30"]
mounts = [{ volume = "scratch", path = "/v" }]
EOF
lim $V $H pod run -d "$D/empty.toml" >/dev/null 2>"$D/empty.err"
eid=$(lim $Q $H inspect emptydir | grep -o '"id": "[0-9a-f]*"' | head -1 | cut -d'"' -f4)
EP="$HUSK_ROOT/pods/$eid"
i=0; while [ ! -s "$EP/volumes/scratch/f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
ebase=$(cat "$EP/ids" 2>/dev/null)
host_owner=$(stat -c '%u:%g' "$EP/volumes/scratch/f" 2>/dev/null)
guest_view=$(lim $Q $H logs emptydir 2>/dev/null | tr '\n' ' ')
lim $V $H stop emptydir >/dev/null
lim $Q $H rm emptydir >/dev/null
if [ -n "$ebase" ] && [ "$host_owner" = "$ebase:$ebase" ] \
   && echo "$guest_view" | grep -q '0:0 0:0'; then
    ok jail-emptydir-ownership
else
    bad jail-emptydir-ownership "range=$ebase host owner=$host_owner guest=[$guest_view] err=$(cat "$D/empty.err")"
fi

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
