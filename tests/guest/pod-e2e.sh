#!/bin/sh
# End to end for `husk run` and friends, on a host with real KVM (the testbed): the real CLI,
# the real VMM, the real guest kernel and agent, images built by tests/images/mkimage.py.
# Every case prints `case NAME ok` or `case NAME FAILED: why`; tests/tests/pod_e2e.rs checks
# each line. Every husk step runs under `lim` (tests/guest/lib.sh): one that hangs fails its case,
# naming the step and what was stuck, instead of the whole suite timing out.
# Usage: pod-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
python3 "$repo/tests/images/mkimage.py" "$D/img2" --layer-file /etc/motd=second >/dev/null || exit 1
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
lim $Q $H import --tag corrupt "$D/img2" >/dev/null || exit 1

# 1. the app's output, and nothing left behind by --rm
out=$(lim $V $H run --rm busybox echo hi); rc=$?
[ "$out" = hi ] && [ $rc -eq 0 ] && [ "$(pods_left)" -eq 0 ] && ok run-echo || bad run-echo "out=$out rc=$rc pods=$(pods_left)"

# 2. the app's exit status is husk's, signals as 128+N
lim $V $H run --rm busybox sh -c 'exit 42'; rc=$?
lim $V $H run --rm busybox sh -c 'kill -USR1 $$'; rc2=$?
[ $rc -eq 42 ] && [ $rc2 -eq 138 ] && ok exit-status || bad exit-status "rc=$rc rc2=$rc2"

# 3. env (ours over the image's PATH) and workdir; user
out=$(lim $V $H run --rm -e FOO=bar -w /tmp -u 1000:1000 busybox sh -c 'echo $FOO $(pwd) $(id -u):$(id -g) $PATH')
[ "$out" = "bar /tmp 1000:1000 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ] && ok env-workdir-user || bad env-workdir-user "$out"

# 4. stdin (-i) reaches the app
out=$(printf 'one\ntwo\n' | lim $V $H run --rm -i busybox wc -l)
[ "$(echo $out)" = 2 ] && ok stdin || bad stdin "$out"

# 5. volumes: the app writes a read-write one, the host reads it; a read-only one refuses
mkdir -p "$D/vol" "$D/ro"; echo from-host > "$D/ro/in"
lim $V $H run --rm -v "$D/vol:/data" -v "$D/ro:/in:ro" busybox sh -c 'cat /in/in > /data/out; echo app >> /data/out; echo x > /in/no' 2>"$D/ro.err"; rc=$?
[ "$(cat "$D/vol/out" 2>/dev/null)" = "from-host
app" ] && [ $rc -ne 0 ] && grep -q "Read-only file system" "$D/ro.err" && [ ! -e "$D/ro/no" ] && ok volumes || bad volumes "rc=$rc $(cat "$D/vol/out" "$D/ro.err" 2>&1)"

# 6. detached: -d prints the id, ps lists it, logs has its output, exec runs in it, stop ends it
id=$(lim $V $H run -d --name web busybox sh -c 'echo started; trap "echo got-term; exit 3" TERM; while true; do sleep 0.2; done'); rc=$?
sleep 1
ps=$(lim $Q $H ps)
logs=$(lim $Q $H logs web)
host=$(lim $Q $H exec web sh -c 'echo in-$(hostname); exit 7'); erc=$?
lim $V $H stop web >/dev/null; src=$?
state=$(lim $Q $H inspect web | grep -o '"state": "[a-z]*"' | head -1)
logs2=$(lim $Q $H logs web)
psa=$(lim $Q $H ps -a)
if [ $rc -eq 0 ] && [ ${#id} -eq 12 ] && echo "$ps" | grep -q "web .*Up" && [ "$logs" = started ] \
   && [ "$host" = in-web ] && [ $erc -eq 7 ] && [ $src -eq 0 ] && [ "$state" = '"state": "exited"' ] \
   && echo "$logs2" | grep -q got-term && echo "$psa" | grep -q "web .*Exited (3)"; then
    ok detach-logs-exec-stop
else
    bad detach-logs-exec-stop "rc=$rc id=$id erc=$erc src=$src state=$state ps=$ps logs=$logs host=$host logs2=$logs2 psa=$psa"
fi
# 6a. (F7) the pod's state is private to its user: directories 0700, files 0600
P="$HUSK_ROOT/pods/$id"
wrong=$(for f in config.json status.json name console.log vmm.log supervisor.log "$(ls "$P"/logs/*.log | head -1)"; do
            m=$(stat -c %a "$P/${f#"$P/"}" 2>&1); [ "$m" = 600 ] || echo "$f=$m"; done)
[ "$(stat -c %a "$HUSK_ROOT/pods")" = 700 ] && [ "$(stat -c %a "$P")" = 700 ] && [ -z "$wrong" ] \
    && [ "$(stat -c %a "$HUSK_ROOT/images")" = 700 ] && ok state-private \
    || bad state-private "pods=$(stat -c %a "$HUSK_ROOT/pods") pod=$(stat -c %a "$P") images=$(stat -c %a "$HUSK_ROOT/images") $wrong"
lim $Q $H rm web >/dev/null

# 6b. signals: SIGINT to `husk run` and to `husk exec` reaches the app, which traps it
wait_for() { i=0; while ! grep -q "$1" "$2" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }
trap_int='trap "echo got-int; exit 3" INT; echo ready; while true; do sleep 0.1; done'
$H run --rm --name sig busybox sh -c "$trap_int" > "$D/sig.out" 2>&1 & rpid=$!
wait_for ready "$D/sig.out"
$H exec sig sh -c "$trap_int" > "$D/exec.out" 2>&1 & epid=$!
wait_for ready "$D/exec.out"
# A husk that does not forward the signal would wait forever: give each 20 s, then SIGKILL.
# (Not under lim: the signal must reach husk itself.)
reap() { i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
         kill -9 "$1" 2>/dev/null; wait "$1"; }
kill -INT $epid; reap $epid; erc=$?
kill -INT $rpid; reap $rpid; rrc=$?
if [ $erc -eq 3 ] && grep -q got-int "$D/exec.out" && [ $rrc -eq 3 ] && grep -q got-int "$D/sig.out"; then
    ok signals-forwarded
else
    bad signals-forwarded "exec rc=$erc $(cat "$D/exec.out") run rc=$rrc $(cat "$D/sig.out")"
    lim $V $H stop sig >/dev/null 2>&1; lim $Q $H rm sig >/dev/null 2>&1
fi

# 7. stop of an app that ignores SIGTERM: SIGKILL after the grace period; logs -f ends with the pod
lim $V $H run -d --name stubborn busybox sh -c 'trap "" TERM; echo ignoring; while true; do sleep 0.2; done' >/dev/null
sleep 1
( lim $V $H logs -f stubborn > "$D/follow.out" ) & fpid=$!
t0=$(date +%s); lim $V $H stop -t 1 stubborn >/dev/null; t1=$(date +%s)
wait $fpid; frc=$?
psa=$(lim $Q $H ps -a)
echo "$psa" | grep -q "stubborn .*Exited (137)" && [ $((t1 - t0)) -lt 15 ] && [ $frc -eq 0 ] && grep -q ignoring "$D/follow.out" \
    && ok stop-grace-kill || bad stop-grace-kill "took $((t1 - t0))s frc=$frc $psa"
lim $Q $H rm stubborn >/dev/null

# 8. a two-app pod sharing an empty-dir volume; each app's status reported
cat > "$D/pod.toml" <<'TOML'
name = "pair"
[[volumes]]
name = "shared"
[[apps]]
name = "producer"
image = "busybox"
command = ["sh", "-c", "echo hello-from-producer > /data/msg.tmp && mv /data/msg.tmp /data/msg"]
mounts = [{ volume = "shared", path = "/data" }]
[[apps]]
name = "consumer"
image = "busybox"
command = ["sh", "-c", "while [ ! -e /data/msg ]; do sleep 0.1; done; cat /data/msg; exit 5"]
mounts = [{ volume = "shared", path = "/data", read_only = true }]
TOML
out=$(lim $V $H pod run "$D/pod.toml" 2>"$D/pod.err"); rc=$?
if [ $rc -eq 5 ] && echo "$out" | grep -q "^consumer | hello-from-producer$" \
   && grep -q "app producer exited 0, app consumer exited 5" "$D/pod.err"; then
    ok two-app-pod
else
    bad two-app-pod "rc=$rc out=$out err=$(cat "$D/pod.err")"
fi
lim $Q $H rm pair >/dev/null

# 9. the VMM dies: the pod shows as failed with the reason; gc cleans it up
lim $V $H run -d --name doomed busybox sleep 1000 >/dev/null
vmm=$(lim $Q $H inspect doomed | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$')
kill -9 "$vmm"; sleep 1
psa=$(lim $Q $H ps -a)
gc=$(lim $Q $H gc)
if echo "$psa" | grep -q "doomed .*Failed: .*VMM was killed by signal 9" && echo "$gc" | grep -q "removed pod doomed" \
   && [ "$(pods_left)" -eq 0 ]; then
    ok vmm-death-reported
else
    bad vmm-death-reported "vmm=$vmm psa=$psa gc=$gc"
fi

# 10. errors: one line, a distinct status, nothing left behind
check_err() { # name expected-status command...
    name=$1 want=$2; shift 2
    lim $V "$@" >"$D/err.out" 2>"$D/err.txt"; rc=$?
    lines=$(wc -l < "$D/err.txt")
    if [ $rc -eq "$want" ] && [ "$lines" -eq 1 ] && grep -q '^husk: ' "$D/err.txt" && [ "$(pods_left)" -eq 0 ]; then
        ok "$name"
    else
        bad "$name" "rc=$rc (want $want) lines=$lines pods=$(pods_left) $(cat "$D/err.txt")"
    fi
}
# Bad usage is 125 on every command, as in Docker.
check_err error-unknown-flag 125 $H run --no-such-flag busybox true
check_err error-unknown-image 120 $H run --rm --pull never no-such-image:latest true
check_err error-bad-reference 125 $H run --rm 'UPPER/Case::x' true
check_err error-bad-memory 125 $H run --rm --memory lots busybox true
# More guest memory than the host has: refused before any VMM starts, in the pod's own terms.
check_err error-memory-over-host 125 $H run --rm -m 100000g busybox true
grep -q 'the pod needs .* MiB of guest memory' "$D/err.txt" || bad error-memory-over-host-wording "$(cat "$D/err.txt")"
check_err error-missing-volume 125 $H run --rm -v /no/such/dir:/x busybox true
check_err error-command-not-found 127 $H run --rm busybox /no/such/cmd
check_err error-no-such-pod 123 $H logs no-such-pod
check_err error-registry-unreachable 121 $H run --rm 127.0.0.1:1/nothing:latest true
# A layer blob that no longer matches its digest: the agent refuses it while unpacking.
layer=$(python3 -c "import json,sys; m=json.load(open('$D/img2/blobs/sha256/'+json.load(open('$D/img2/index.json'))['manifests'][0]['digest'].split(':')[1])); print(m['layers'][1]['digest'].split(':')[1])")
chmod u+w "$HUSK_ROOT/images/blobs/sha256/$layer" && printf 'X' | dd of="$HUSK_ROOT/images/blobs/sha256/$layer" bs=1 seek=100 conv=notrunc 2>/dev/null
check_err error-digest-mismatch 122 $H run --rm corrupt true
# No usable KVM: /dev/kvm hidden behind /dev/null in a private mount namespace.
check_err error-no-kvm 124 unshare -m sh -c "mount --bind /dev/null /dev/kvm && exec $H run --rm busybox true"

# 11. (F6) an empty-dir volume is a size-limited tmpfs on the host: writing past its size fails with
# ENOSPC inside the pod; it is mounted while the pod runs and gone once the pod ends
vol_mounts() { grep -F " $HUSK_ROOT/pods/$1/volumes/" /proc/self/mountinfo | grep -c ' - tmpfs husk-volume '; }
cat > "$D/small.toml" <<'TOML'
name = "small"
[[volumes]]
name = "scratch"
size = "4m"
[[apps]]
name = "writer"
image = "busybox"
command = ["sh", "-c", "while true; do sleep 0.2; done"]
mounts = [{ volume = "scratch", path = "/data" }]
TOML
id=$($H pod run -d "$D/small.toml"); rc=$?
running=$(vol_mounts "$id")
opts=$(grep -F " $HUSK_ROOT/pods/$id/volumes/scratch " /proc/self/mountinfo)
# An app that is not root can use the volume too (its root is 1777, tmpfs's default mode).
user_out=$($H exec -u 1000:1000 small sh -c 'echo mine > /data/u1000 && stat -c %u /data/u1000' 2>&1)
vol_mode=$(stat -c %a "$HUSK_ROOT/pods/$id/volumes/scratch")
out=$($H exec small sh -c 'dd if=/dev/zero of=/data/big bs=1M count=8 2>&1; echo rc=$?' 2>&1)
$H stop -t 1 small >/dev/null
ended=$(vol_mounts "$id")
$H rm small >/dev/null
if [ $rc -eq 0 ] && [ "$running" -eq 1 ] && echo "$opts" | grep -q 'nosuid,nodev' \
   && echo "$opts" | grep -q 'size=4096k,nr_inodes=1024' && [ "$vol_mode" = 1777 ] && [ "$user_out" = 1000 ] \
   && echo "$out" | grep -q "No space left on device" && ! echo "$out" | grep -q "^rc=0" && [ "$ended" -eq 0 ]; then
    ok volume-size-limit
else
    bad volume-size-limit "rc=$rc running=$running ended=$ended opts=$opts out=$out mode=$vol_mode user_out=$user_out"
fi

# 12. (F6) a pod whose supervisor is killed (-9) keeps its volume mounted until `rm` or `gc`
# removes it: then no mount is left
cat > "$D/keep.toml" <<'TOML'
[[volumes]]
name = "v"
[[apps]]
name = "sleeper"
image = "busybox"
command = ["sleep", "1000"]
mounts = [{ volume = "v", path = "/v" }]
TOML
cleanup=""
for how in rm gc; do
    id=$($H pod run -d --name "kept-$how" "$D/keep.toml")
    sup=$($H inspect "kept-$how" | grep -o '"supervisor_pid": [0-9]*' | grep -o '[0-9]*$')
    kill -9 "$sup"; sleep 1
    before=$(vol_mounts "$id")
    line=$(grep -F " $HUSK_ROOT/pods/$id/volumes/v " /proc/self/mountinfo)
    if [ $how = rm ]; then $H rm "kept-$how" >/dev/null; else $H gc >/dev/null; fi; rrc=$?
    after=$(vol_mounts "$id")
    # The default size: 256m.
    echo "$line" | grep -q 'size=262144k,nr_inodes=16384' && [ "$before" -eq 1 ] && [ "$after" -eq 0 ] \
        && [ $rrc -eq 0 ] && [ ! -e "$HUSK_ROOT/pods/$id" ] || cleanup="$cleanup $how: before=$before after=$after rc=$rrc line=$line;"
done
[ -z "$cleanup" ] && [ "$(pods_left)" -eq 0 ] && ok volume-cleanup || bad volume-cleanup "$cleanup pods=$(pods_left)"

# 13. (F6) where the limit cannot be enforced (no CAP_SYS_ADMIN to mount the tmpfs) the pod is refused
check_err volume-limit-unenforceable 125 setpriv --bounding-set -sys_admin $H pod run "$D/small.toml"

# 14. (F11) root in a container may make device nodes (docker's CAP_MKNOD) but none of them opens:
# /dev (with the guest's nodes bound in), /tmp and its root are nodev; so it cannot write the guest's
# console (console.log) through one. Its stdout and stderr go to files of their own: the two streams
# reach the host apart, so in one file a line of one could be cut by the other.
$H run --name devs busybox sh -c 'mknod /dev/kmsg c 1 11 && echo "<1>FORGED-KMSG" > /dev/kmsg;
    mknod /dev/ttyS0 c 4 64 && echo FORGED-TTY > /dev/ttyS0; mknod /kmsg c 1 11 && echo "<1>FORGED-ROOT" > /kmsg;
    mknod /tmp/n c 1 3 && { echo x > /tmp/n || echo mknod-refused; };
    echo x > /dev/null && echo null-ok; head -c 8 /dev/urandom | wc -c; grep " /dev tmpfs " /proc/mounts' \
    > "$D/devs.out" 2> "$D/devs.err"; rc=$?
pod_dir=$($H inspect devs | grep -o '"path": "[^"]*"' | head -1 | cut -d'"' -f4)
forged=$(grep -c FORGED "$pod_dir/console.log" 2>&1)
$H rm devs >/dev/null
if [ $rc -eq 0 ] && [ "$forged" = 0 ] && grep -q '^mknod-refused$' "$D/devs.out" && grep -q '^null-ok$' "$D/devs.out" \
   && grep -q '^ *8$' "$D/devs.out" && grep ' /dev tmpfs ' "$D/devs.out" | grep -q nodev; then
    ok container-no-device-nodes
else
    bad container-no-device-nodes "rc=$rc forged=$forged $(cat "$D/devs.out") stderr: $(cat "$D/devs.err")"
fi

# 15. (F11) an app cannot open AF_VSOCK sockets to the host, nor io_uring rings (seccomp: EPERM);
# the probe is the testbed's python3, given to the container through read-only volumes
probe=$(cat "$repo/tests/guest/no-vsock-probe.py")
# (stderr apart: /usr is on the testbed's overlayfs, which cannot be id-mapped, so husk warns that
# this pod's VMM runs in the root jail)
out=$($H run --rm -v /usr:/usr:ro -v /usr/lib:/lib:ro -v /usr/lib64:/lib64:ro busybox /usr/bin/python3 -S -c "$probe" 2>"$D/novsock.err")
[ "$out" = "vsock EPERM io_uring EPERM" ] && ok container-no-vsock || bad container-no-vsock "$out $(cat "$D/novsock.err")"

# 16. every thread of a running pod's VMM (the VMM thread, vcpu0, an fs worker per share) is under
# its seccomp filter: `Seccomp: 2` (filter mode) and one filter each; --no-seccomp leaves them
# without, and says so
vmm_threads() { # POD: one "comm Seccomp Seccomp_filters" line per thread of the pod's VMM
    v=$(lim $Q $H inspect "$1" | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$')
    for t in /proc/$v/task/*; do
        echo "$(cat $t/comm) $(awk '$1 == "Seccomp:" || $1 == "Seccomp_filters:" { printf "%s ", $2 }' $t/status)"
    done
}
lim $V $H run -d --name sc busybox sleep 1000 >/dev/null
on=$(vmm_threads sc)
lim $V $H stop -t 1 sc >/dev/null; lim $Q $H rm sc >/dev/null
lim $V $H run -d --no-seccomp --name nosc busybox sleep 1000 >/dev/null 2>"$D/nosc.err"
off=$(vmm_threads nosc)
lim $V $H stop -t 1 nosc >/dev/null; lim $Q $H rm nosc >/dev/null
if [ "$(echo "$on" | grep -vc ' 2 1 $')" = 0 ] && echo "$on" | grep -q '^vcpu0 ' && echo "$on" | grep -q '^fs-' \
   && [ "$(echo "$on" | wc -l)" -ge 3 ]; then
    ok vmm-seccomp
else
    bad vmm-seccomp "$on"
fi
[ "$(echo "$off" | grep -vc ' 0 0 $')" = 0 ] && grep -q "without its seccomp filters" "$D/nosc.err" \
    && ok no-seccomp || bad no-seccomp "$off $(cat "$D/nosc.err")"

echo "pod-e2e: $fails failed"
[ $fails -eq 0 ]
