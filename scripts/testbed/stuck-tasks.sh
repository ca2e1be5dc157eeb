#!/bin/sh
# stuck-tasks.sh: print what the kernel's tasks are waiting for, so a step that ran past its limit
# explains itself instead of only timing out. Run as root on the testbed (or any Linux host).
#
# Prints:
#   1. every user process (and every kernel thread that is neither idle nor sleeping): pid, state,
#      wchan (the kernel function it sleeps in), command line;
#   2. for every task (thread) in uninterruptible sleep (state D, where SIGKILL does not reach it):
#      its kernel stack (/proc/PID/task/TID/stack);
#   3. the kernel's own view: `echo w > /proc/sysrq-trigger` (every blocked task with its stack)
#      and the tail of the kernel log, which also holds the hung-task reports
#      ("task ... blocked for more than N seconds").
#
# Plain POSIX sh with busybox-compatible tools only: the testbed's init (busybox, in the
# initramfs) runs it too, when the network of virtio-fs mounts may be what is stuck.
# Usage: stuck-tasks.sh [DMESG_LINES [SINCE]]   the last DMESG_LINES (default 120) kernel log lines
#        stamped SINCE seconds after boot or later (default 0: all)
lines=${1:-120}
since=${2:-0}

field_state() { # the state letter from a /proc/.../stat line (the comm may hold spaces and ')')
    rest=${1##*) }
    echo "${rest%% *}"
}

echo "== processes: pid state wchan command"
for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    read -r stat 2>/dev/null <"$d/stat" || continue
    state=$(field_state "$stat")
    cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline" | cut -c1-120)
    if [ -z "$cmd" ]; then
        case "$state" in I | S) continue ;; esac
        cmd="[$(cat "$d/comm" 2>/dev/null)]"
    fi
    echo "$pid $state $(cat "$d/wchan" 2>/dev/null || echo ?) $cmd"
done

echo "== tasks in uninterruptible sleep (D), with their kernel stacks"
stuck=0
for t in /proc/[0-9]*/task/[0-9]*; do
    read -r stat 2>/dev/null <"$t/stat" || continue
    [ "$(field_state "$stat")" = D ] || continue
    stuck=$((stuck + 1))
    pid=${t#/proc/}
    pid=${pid%%/*}
    echo "-- pid $pid tid ${t##*/} ($(cat "$t/comm" 2>/dev/null)) wchan $(cat "$t/wchan" 2>/dev/null)"
    cat "$t/stack" 2>/dev/null | sed 's/^/   /'
done
echo "($stuck tasks in D state)"

echo "== kernel log since ${since}s (sysrq-w: blocked tasks; hung-task reports), last $lines lines"
echo w 2>/dev/null >/proc/sysrq-trigger
dmesg 2>/dev/null | awk -v since="$since" '
    { t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); if (t + 0 >= since + 0) print }' | tail -n "$lines"
