#!/bin/sh
# End to end for the pods' host cgroups (vmm/src/pod/cgroup.rs), on a host with real KVM and a
# pure cgroup v2 (the testbed): a running pod's VMM is in /sys/fs/cgroup/husk/husk-<id> with its
# limits, the supervisor is not; the cgroup goes when the pod ends, and after a kill -9 of the
# supervisor and the VMM `husk gc` removes it (killing a process left in it); bad parents are
# refused with one line and exit 125; an explicit parent is used; a VMM over its memory is
# OOM-killed and the pod says so; without cgroup2 a pod runs with one warning. The cgroup tree is
# compared before and after. Every case prints `case NAME ok` or `case NAME FAILED: why`;
# tests/tests/cgroup_e2e.rs checks each line. Figures (threads, memory) as `figure ...` lines.
# Usage: cgroup-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
CG=/sys/fs/cgroup
MIB=1048576
# The first number after "KEY": in `husk inspect POD`.
field() { lim $Q $H inspect "$1" | grep -o "\"$2\": [0-9]*" | head -1 | grep -o '[0-9]*$'; }
tree() { find $CG -mindepth 1 -type d | sort; }
pods() { ls "$HUSK_ROOT/pods" 2>/dev/null | tr '\n' ' '; }
# A detached pod whose app idles, started with the flags given; prints its id.
start_pod() {
    name=$1; shift
    lim $V $H run -d --name "$name" "$@" busybox sh -c 'while true; do sleep 0.2; done'
}

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
mkdir -p "$D/vol"
tree >"$D/tree.before"

# 1. a running pod's VMM (2 vCPUs, 128m for the app, one volume) in its cgroup with the limits;
#    every VMM thread there, and nothing else but KVM's per-VM kthread (kvm-nx-lpage-recovery,
#    which KVM attaches to the VM maker's cgroups; newer kernels make it a thread of the VMM);
#    the supervisor outside; `husk inspect` shows it
id=$(start_pod limited --cpus 2 -m 128m -v "$D/vol:/data"); rc=$?
pid=$(field limited vmm_pid)
sup=$(field limited supervisor_pid)
P=$CG/husk/husk-$id
# guest RAM: 128m + the rootfs' 512m + 96m for the guest = 736 MiB
want_mem=$(((736 + 32) * MIB + 736 * MIB / 256))
want="0::/husk/husk-$id|$pid|200000 100000|$want_mem|14"
others=$(grep -vx "$pid" "$P/cgroup.procs" | while read -r o; do cat "/proc/$o/comm"; done | tr '\n' ' ')
got="$(cat "/proc/$pid/cgroup" 2>&1)|$(grep -x "$pid" "$P/cgroup.procs" 2>&1)|$(cat "$P/cpu.max" 2>&1)|$(cat "$P/memory.max" 2>&1)|$(cat "$P/pids.max" 2>&1)"
threads=$(ls "/proc/$pid/task" | wc -l)
in_cg=$(grep -c . "$P/cgroup.threads")
vmm_in_cg=0
for t in /proc/$pid/task/*; do grep -qx "${t##*/}" "$P/cgroup.threads" && vmm_in_cg=$((vmm_in_cg + 1)); done
sup_cg=$(cat "/proc/$sup/cgroup")
insp=$(lim $Q $H inspect limited)
if [ $rc -eq 0 ] && [ "$got" = "$want" ] && [ "$threads" = "$vmm_in_cg" ] && [ -z "$(echo "$others" | tr ' ' '\n' | grep -v '^kvm-' | grep .)" ] \
   && [ "$sup_cg" != "0::/husk/husk-$id" ] \
   && echo "$insp" | grep -q "\"path\": \"$P\"" && echo "$insp" | grep -q "\"memory_max\": $want_mem" \
   && echo "$insp" | grep -q '"pids_max": 14' && echo "$insp" | grep -q '"cpu_quota_us": 200000' \
   && [ "$(lim $Q $H exec limited echo served)" = served ]; then
    ok cgroup-limits
else
    bad cgroup-limits "rc=$rc got=[$got] want=[$want] threads=$threads in-cgroup=$vmm_in_cg others=[$others] supervisor=[$sup_cg] inspect=$(echo "$insp" | grep -A8 '"cgroup"')"
fi
stat() { grep -E "^($1) " "$P/memory.stat" | awk '{printf "%s=%.1fMiB ", $1, $2 / 1048576}'; }
echo "figure cgroup-vmm-threads $threads (2 vCPUs, 2 shares); tasks in the cgroup $in_cg (with [$others]); pids.current $(cat "$P/pids.current")"
echo "figure cgroup-memory current=$(($(cat "$P/memory.current") / MIB))MiB peak=$(($(cat "$P/memory.peak" 2>/dev/null || echo 0) / MIB))MiB max=$((want_mem / MIB))MiB $(stat 'anon|file|kernel|pagetables|sec_pagetables|slab')"
echo "figure cgroup-vmm-rss $(grep -E '^(VmRSS|RssAnon|RssFile):' "/proc/$pid/status" | tr -s '\t ' ' ' | tr '\n' ' ')"

# 2. the pod ends: its cgroup is gone (before `rm`)
lim $V $H stop limited >/dev/null
[ ! -e "$P" ] && ok cgroup-removed || bad cgroup-removed "$P still there: $(ls "$P" 2>&1 | head -3)"
lim $Q $H rm limited >/dev/null

# 3. kill -9 of the supervisor and the VMM, with a stray process moved into the pod's cgroup:
#    `husk gc` kills it and removes the cgroup; no mount is left, and no process of the pod's
#    host id range (nothing holds its user namespace)
mounts() { awk '{print $5, $9, $10}' /proc/self/mountinfo | sort; }
mounts >"$D/mounts.before"
id=$(start_pod killed); rc=$?
range=$(cat "$HUSK_ROOT/pods/$id/ids" 2>/dev/null)
pid=$(field killed vmm_pid)
sup=$(field killed supervisor_pid)
P=$CG/husk/husk-$id
sleep 600 &
stray=$!
echo $stray >"$P/cgroup.procs"
kill -9 "$sup" "$pid"
sleep 0.5
left=no; [ -d "$P" ] && left=yes
gc=$(lim $Q $H gc 2>&1); grc=$?
sleep 0.2
sstate=$(awk '{print $3}' "/proc/$stray/stat" 2>/dev/null)
[ "$sstate" = Z ] || [ -z "$sstate" ] && strayed=killed || { strayed="alive ($sstate)"; kill -9 $stray; }
wait $stray 2>/dev/null
mounts >"$D/mounts.after"
mdiff=$(diff "$D/mounts.before" "$D/mounts.after" | grep '^[<>]' | tr '\n' ';')
holders=$(for s in /proc/[0-9]*/status; do awk -v r="$range" '$1 == "Uid:" && $2 == r' "$s" 2>/dev/null; done | grep -c .)
if [ $rc -eq 0 ] && [ $left = yes ] && [ $grc -eq 0 ] && [ ! -e "$P" ] && [ "$strayed" = killed ] \
   && ! lim $Q $H ps -a | grep -q killed && [ -n "$range" ] && [ -z "$mdiff" ] && [ "$holders" = 0 ]; then
    ok cgroup-gc
else
    bad cgroup-gc "rc=$rc left-after-kill=$left gc=$grc [$gc] cgroup-now=$([ -e "$P" ] && echo present || echo gone) stray=$strayed range=$range mounts changed: [$mdiff] processes of the range: $holders"
fi

# 4. bad parents: one line, exit 125, no pod and no cgroup left
before_pods=$(pods)
tree >"$D/tree.mid"
lim $Q $H run --cgroup-parent /does/not/exist busybox true 2>"$D/bad1.err"; rc1=$?
lim $Q $H run --cgroup-parent ../escape busybox true 2>"$D/bad2.err"; rc2=$?
printf 'cgroup_parent = "/does/not/exist"\n[[apps]]\nname = "a"\nimage = "busybox"\n' >"$D/bad.toml"
lim $Q $H pod run "$D/bad.toml" 2>"$D/bad3.err"; rc3=$?
lines="$(grep -c . "$D/bad1.err") $(grep -c . "$D/bad2.err") $(grep -c . "$D/bad3.err")"
tree >"$D/tree.mid2"
if [ "$rc1 $rc2 $rc3" = "125 125 125" ] && [ "$lines" = "1 1 1" ] && [ "$(pods)" = "$before_pods" ] \
   && cmp -s "$D/tree.mid" "$D/tree.mid2" && grep -q 'does not exist' "$D/bad1.err" && grep -q '\.\.' "$D/bad2.err"; then
    ok cgroup-bad-parent
else
    bad cgroup-bad-parent "rc=$rc1/$rc2/$rc3 lines=$lines pods=[$before_pods]->[$(pods)] tree: $(diff "$D/tree.mid" "$D/tree.mid2" | tr '\n' ' ') err: $(cat "$D"/bad*.err)"
fi

# 5. an explicit parent (with a memory limit of its own) is used
T=$CG/e2e-parent
mkdir "$T"
echo $((256 * MIB)) >"$T/memory.max"
id=$(start_pod under --cgroup-parent /e2e-parent); rc=$?
pid=$(field under vmm_pid)
where=$(cat "/proc/$pid/cgroup" 2>&1)
lim $V $H stop under >/dev/null
lim $Q $H rm under >/dev/null
[ $rc -eq 0 ] && [ "$where" = "0::/e2e-parent/husk-$id" ] && [ -z "$(find "$T" -mindepth 1 -type d)" ] \
    && ok cgroup-parent || bad cgroup-parent "rc=$rc where=$where left=$(find "$T" -mindepth 1 -type d)"

# 6. a VMM that needs more host memory than its cgroup allows (the parent's 256m, while the
#    app fills 400 MiB of guest RAM) is OOM-killed, and the pod's failure says so
out=$(lim $V $H run --name oom --cgroup-parent /e2e-parent -m 512m busybox \
    dd if=/dev/zero of=/dev/null bs=400M count=1 2>&1); rc=$?
reason=$(lim $Q $H ps -a | grep oom)
echo "figure cgroup-oom-reason $(echo "$out" | tail -1)"
lim $Q $H rm oom >/dev/null 2>&1
if [ $rc -eq 125 ] && echo "$out" | grep -q "OOM killer: its host cgroup's parent $T " && [ -z "$(find "$T" -mindepth 1 -type d)" ]; then
    ok cgroup-oom
else
    bad cgroup-oom "rc=$rc out=[$out] ps=[$reason] left=$(find "$T" -mindepth 1 -type d)"
fi
rmdir "$T"

# 7. without a cgroup2 mount: the default runs the pod with one warning line; an explicit
#    parent is refused with one line, exit 125 (no network: its filter would warn too)
out=$(unshare -m sh -c "umount -l $CG && exec $H run --rm --network none busybox echo hi" 2>"$D/nocg.err"); rc=$?
unshare -m sh -c "umount -l $CG && exec $H run --rm --network none --cgroup-parent /husk busybox echo hi" \
    >/dev/null 2>"$D/nocg2.err"; rc2=$?
if [ $rc -eq 0 ] && [ "$out" = hi ] && [ "$(grep -c . "$D/nocg.err")" = 1 ] \
   && grep -q 'warning: .*without a host cgroup' "$D/nocg.err" \
   && [ $rc2 -eq 125 ] && [ "$(grep -c . "$D/nocg2.err")" = 1 ]; then
    ok cgroup-unavailable
else
    bad cgroup-unavailable "rc=$rc out=$out err=$(cat "$D/nocg.err") rc2=$rc2 err2=$(cat "$D/nocg2.err")"
fi

# 8. nothing left: the cgroup tree as before, but for the default parent husk keeps
tree >"$D/tree.after"
extra=$(comm -13 "$D/tree.before" "$D/tree.after" | grep -v "^$CG/husk\$" | tr '\n' ' ')
gone=$(comm -23 "$D/tree.before" "$D/tree.after" | tr '\n' ' ')
left=$(find $CG/husk -mindepth 1 -type d | tr '\n' ' ')
[ -z "$extra$gone$left" ] && ok cgroup-nothing-left || bad cgroup-nothing-left "new=[$extra] gone=[$gone] under husk=[$left]"
echo "figure cgroup-controllers root=[$(cat $CG/cgroup.subtree_control)] husk=[$(cat $CG/husk/cgroup.subtree_control)]"

echo "cgroup-e2e: $fails failed"
[ $fails -eq 0 ]
