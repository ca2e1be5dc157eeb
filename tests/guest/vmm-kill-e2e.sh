#!/bin/sh
# End to end: the VMM of a pod killed with SIGKILL, over and over (issue 17), on real KVM (the
# testbed). Each iteration starts a detached pod, kills its VMM at one of three moments, then
# starts another pod:
#   boot  while the guest boots (as soon as the VMM's pid is recorded, plus 0 to 1 s);
#   app   while the app runs;
#   exec  while a `husk exec` into the pod runs (the exec must end, failing).
# Checked every time: the killed pod reports why ("the VMM was killed by signal 9", from
# `run -d` or in `ps -a` and `inspect`), the next pod starts and runs, and `husk gc` leaves nothing
# behind: no pod directory, no mount under the store, no husk process. Every step runs under
# `lim` (tests/guest/lib.sh), so a step that hangs fails the run naming the step and what was
# stuck. Prints `iter N MOMENT ok` or `iter N MOMENT FAILED: why` per iteration, then
# `case vmm-kill-loop ok` (or FAILED) with the iterations run and the time taken. FIRST (default
# 1) resumes a loop whose testbed froze (tests/tests/vmm_kill_e2e.rs) at the iteration it was in.
# Pods run with `--network none`: the subject is the VMM's death, and a passt plus its nftables
# table per pod would double an iteration's time in the nested testbed (net_e2e covers a user pod
# whose supervisor and VMM are killed).
# A guest that crashes by itself (a triple or double fault: the nested testbed's flaw, which the
# other suites retry once) ends the loop with `case vmm-kill-loop guest-crashed (iteration N)`.
# Usage: vmm-kill-e2e.sh HUSK SCRATCH_DIR [ITERATIONS [FIRST]]   (default 30, 1)
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
N=${3:-30}
FIRST=${4:-1}
REASON="VMM was killed by signal 9"
HX=$(readlink -f "$H")

husk_procs() { # pids of running husk processes (the CLI, supervisors, VMMs)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$HX" ] && echo "${p#/proc/}"
    done
}
mounts_left() { grep -c " $HUSK_ROOT" /proc/self/mountinfo; }
# The VMM's pid once the pod's status records it (the VMM is forked before the guest boots).
vmm_of() {
    i=0
    while [ $i -lt 600 ]; do
        v=$(lim $Q $H inspect "$1" 2>/dev/null | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$')
        [ -n "$v" ] && { echo "$v"; return 0; }
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}
# Waits up to 30 s for a line in a file.
wait_for() { i=0; while ! grep -q "$1" "$2" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }
# Waits up to 30 s for a line in a pod's log.
wait_log() { i=0; while ! lim $Q $H logs "$1" 2>/dev/null | grep -q "$2" && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }

t0=$(date +%s)
fails=0
it=$FIRST
while [ $it -le "$N" ]; do
    ti=$(date +%s)
    name=killed$it
    why=
    case $((it % 3)) in
    1)
        moment=boot
        lim $V $H run -d --network none --name $name busybox sleep 1000 >"$D/run.out" 2>"$D/run.err" & rpid=$!
        if vmm=$(vmm_of $name); then
            # Spread the kill over the boot: 0, 0.25, ... 1 s after the VMM started.
            sleep "$(( (it / 3) % 5 / 4 )).$(( (it / 3) % 5 % 4 * 25 ))"
            kill -9 "$vmm"
        else
            why="no VMM pid recorded for $name"
        fi
        wait $rpid; rrc=$?
        # Either `run -d` failed with the reason (the pod is gone), or the pod was up first and
        # reports the reason itself.
        if [ $rrc -ne 0 ]; then
            grep -q "$REASON" "$D/run.err" || why="$why run -d rc=$rrc: $(cat "$D/run.err")"
            reported=yes
            moment="boot (run -d failed)"
        else
            reported=
            moment="boot (the pod was up first)"
        fi
        ;;
    2)
        moment=app
        if lim $V $H run -d --network none --name $name busybox sh -c 'echo up; sleep 1000' >/dev/null 2>"$D/run.err"; then
            wait_log $name up
            vmm=$(vmm_of $name) && kill -9 "$vmm" || why="$why no VMM pid"
            reported=
        else
            # Nothing to kill (and no VMM pid to wait for): the iteration has failed already.
            why="run -d failed: $(cat "$D/run.err")"
            reported=yes
        fi
        ;;
    0)
        moment=exec
        if lim $V $H run -d --network none --name $name busybox sleep 1000 >/dev/null 2>"$D/run.err"; then
            lim $Q $H exec $name sh -c 'echo in-exec; sleep 1000' >"$D/exec.out" 2>&1 & epid=$!
            wait_for in-exec "$D/exec.out"
            vmm=$(vmm_of $name) && kill -9 "$vmm" || why="$why no VMM pid"
            wait $epid; erc=$?
            # The exec ends by itself (the VM is gone) and fails; lim's SIGKILL would be 137.
            [ $erc -ne 0 ] && [ $erc -ne 137 ] || why="$why exec rc=$erc: $(cat "$D/exec.out")"
            reported=
        else
            why="run -d failed: $(cat "$D/run.err")"
            reported=yes
        fi
        ;;
    esac
    if [ -z "$reported" ]; then
        # The supervisor notices the VMM's death and records it: wait for the pod to settle.
        i=0
        while lim $Q $H ps -a | grep -q " $name .*Up" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        psa=$(lim $Q $H ps -a)
        insp=$(lim $Q $H inspect $name)
        echo "$psa" | grep -q " $name .*Failed: .*$REASON" || why="$why ps -a: $psa"
        echo "$insp" | grep -q "$REASON" || why="$why inspect: $(echo "$insp" | grep -E '"(state|reason)"')"
    fi
    out=$(lim $V $H run --rm --network none busybox echo next-$it 2>&1); rc=$?
    if [ "$out" != "next-$it" ] || [ $rc -ne 0 ]; then
        # What the next pod's guest printed last tells a hung guest from a hung host side.
        why="$why next pod: rc=$rc $out; its console: $(tail -n 15 "$HUSK_ROOT"/pods/*/console.log 2>/dev/null)"
    fi
    lim $Q $H gc >"$D/gc.out" 2>&1 || why="$why gc: $(cat "$D/gc.out")"
    [ "$(pods_left)" -eq 0 ] || why="$why pods left: $(ls "$HUSK_ROOT/pods")"
    [ "$(mounts_left)" -eq 0 ] || why="$why mounts left: $(grep " $HUSK_ROOT" /proc/self/mountinfo)"
    procs=$(husk_procs)
    [ -z "$procs" ] || why="$why husk processes left: $(for p in $procs; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
    why="$why$(lim_stuck)"
    if [ -z "$why" ]; then
        echo "iter $it $moment ok ($(( $(date +%s) - ti )) s)"
    elif echo "$why" | grep -q -e "guest triple-faulted" -e "PANIC: double fault"; then
        # A guest that crashed by itself is the nested testbed's flaw (README, Testing), as in
        # the other suites: stop here, and the Rust side redoes this iteration in a fresh testbed.
        echo "iter $it guest crashed:$why"
        echo "case vmm-kill-loop guest-crashed (iteration $it)"
        exit 3
    else
        echo "iter $it $moment FAILED:$why"
        fails=$((fails + 1))
        # Start the next iteration from a clean store.
        for p in $procs; do kill -9 "$p" 2>/dev/null; done
        lim $Q $H gc >/dev/null 2>&1
    fi
    it=$((it + 1))
done
took=$(( $(date +%s) - t0 ))
if [ $fails -eq 0 ]; then
    echo "case vmm-kill-loop ok (iterations $FIRST-$N, $took s)"
else
    echo "case vmm-kill-loop FAILED: $fails of iterations $FIRST-$N failed ($took s)"
fi
[ $fails -eq 0 ]
