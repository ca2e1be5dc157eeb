#!/bin/sh
# End to end: a pod's processes killed with SIGKILL, over and over (issues 17 and 13 part 4), on
# real KVM (the testbed). Each iteration starts a detached pod and kills one of its processes at
# one of five moments, then starts another pod:
#   boot        the VMM, while the guest boots (as soon as its pid is recorded, plus 0 to 1 s);
#   app         the VMM, while the app runs;
#   exec        the VMM, while a `husk exec` into the pod runs (the exec must end, failing);
#   cli         `husk run -d` itself, 0 to 1.5 s in: before, while or after it starts the pod's
#               supervisor (a supervisor already started brings the pod up by itself; it is then
#               stopped);
#   supervisor  the pod's supervisor, while the app runs: its VMM must die with it, and the pod
#               read as failed ("the pod's supervisor ... died").
# Checked every time: a pod whose VMM was killed reports why ("the VMM was killed by signal 9",
# from `run -d` or in `ps -a` and `inspect`), the next pod starts and runs, `husk gc` leaves
# nothing behind (no pod directory, no mount under the store, no husk process), and `husk check`
# finds the store intact. Every step runs under
# `lim` (tests/guest/lib.sh), so a step that hangs fails the run naming the step and what was
# stuck. Prints `iter N MOMENT ok` or `iter N MOMENT FAILED: why` per iteration, then
# `case vmm-kill-loop ok` (or FAILED) with the iterations run and the time taken. FIRST (default
# 1) resumes a loop whose testbed froze (tests/tests/vmm_kill_e2e.rs) at the iteration it was in.
# Pods run with `--network none`: the subject is the VMM's death, and a passt plus its nftables
# table per pod would double an iteration's time in the nested testbed (net_e2e covers a user pod
# whose supervisor and VMM are killed).
# A guest that crashes by itself (a triple or double fault: the nested testbed's flaw, which the
# other suites retry once) ends the loop with `case vmm-kill-loop guest-crashed (iteration N)`.
# Usage: vmm-kill-e2e.sh HUSK SCRATCH_DIR [ITERATIONS [FIRST]]   (default 40, 1)
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
N=${3:-40}
FIRST=${4:-1}
REASON="VMM was killed by signal 9"
HX=$(readlink -f "$H")

husk_procs() { # pids of running husk processes (the CLI, supervisors, VMMs)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$HX" ] && echo "${p#/proc/}"
    done
}
mounts_left() { grep -c " $HUSK_ROOT" /proc/self/mountinfo; }
supervisors() { # pids of running pod supervisors (`husk pod supervise DIR`)
    for p in $(husk_procs); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' pod supervise ' && echo "$p"
    done
}
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
# pid_of NAME vmm|supervisor: that process's pid once the pod's status records it (the VMM is
# forked before the guest boots).
pid_of() {
    i=0
    while [ $i -lt 600 ]; do
        v=$(lim $Q $H inspect "$1" 2>/dev/null | grep -o "\"$2_pid\": [0-9]*" | grep -o '[0-9]*$')
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
    case $((it % 5)) in
    1)
        moment=boot
        lim $V $H run -d --network none --name $name busybox sleep 1000 >"$D/run.out" 2>"$D/run.err" & rpid=$!
        if vmm=$(pid_of $name vmm); then
            # Spread the kill over the boot: 0, 0.25, ... 1 s after the VMM started.
            sleep "$(( (it / 5) % 5 / 4 )).$(( (it / 5) % 5 % 4 * 25 ))"
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
            vmm=$(pid_of $name vmm) && kill -9 "$vmm" || why="$why no VMM pid"
            reported=
        else
            # Nothing to kill (and no VMM pid to wait for): the iteration has failed already.
            why="run -d failed: $(cat "$D/run.err")"
            reported=yes
        fi
        ;;
    3)
        moment=exec
        if lim $V $H run -d --network none --name $name busybox sleep 1000 >/dev/null 2>"$D/run.err"; then
            lim $Q $H exec $name sh -c 'echo in-exec; sleep 1000' >"$D/exec.out" 2>&1 & epid=$!
            wait_for in-exec "$D/exec.out"
            vmm=$(pid_of $name vmm) && kill -9 "$vmm" || why="$why no VMM pid"
            wait $epid; erc=$?
            # The exec ends by itself (the VM is gone) and fails; lim's SIGKILL would be 137.
            [ $erc -ne 0 ] && [ $erc -ne 137 ] || why="$why exec rc=$erc: $(cat "$D/exec.out")"
            reported=
        else
            why="run -d failed: $(cat "$D/run.err")"
            reported=yes
        fi
        ;;
    4)
        # The spread: 0, 0.5, 1 and 1.5 s in.
        delay="$(( (it / 5) % 4 / 2 )).$(( (it / 5) % 2 * 5 ))"
        moment="cli ($delay s)"
        $H run -d --network none --name $name busybox sleep 1000 >/dev/null 2>"$D/run.err" & rpid=$!
        sleep "$delay"
        kill -9 $rpid 2>/dev/null
        wait $rpid
        # A supervisor it had started brings the pod up (or fails it) by itself: wait for that,
        # then stop the pod. A pod it left half made is gc's.
        i=0
        while [ -n "$(supervisors)" ] && ! lim $Q $H ps | grep -q " $name .*Up" && [ $i -lt 600 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if lim $Q $H ps | grep -q " $name .*Up"; then
            lim $V $H stop $name >"$D/stop.out" 2>&1 || why="$why stop: $(cat "$D/stop.out")"
        fi
        reported=yes
        ;;
    0)
        moment=supervisor
        if lim $V $H run -d --network none --name $name busybox sh -c 'echo up; sleep 1000' >/dev/null 2>"$D/run.err"; then
            wait_log $name up
            vmm=$(pid_of $name vmm)
            if sup=$(pid_of $name supervisor); then kill -9 "$sup"; else why="$why no supervisor pid"; fi
            # Its VMM goes with it (PR_SET_PDEATHSIG), and the pod reads as failed.
            i=0
            while [ -n "$vmm" ] && alive "$vmm" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
            [ -n "$vmm" ] && alive "$vmm" && why="$why the VMM $vmm outlived its supervisor"
            psa=$(lim $Q $H ps -a)
            echo "$psa" | grep -q " $name .*Failed: .*supervisor .*died" || why="$why ps -a: $psa"
        else
            why="run -d failed: $(cat "$D/run.err")"
        fi
        reported=yes
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
    lim $Q $H check >"$D/check.out" 2>&1 || why="$why check: $(cat "$D/check.out")"
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
