#!/usr/bin/env bash
# The verdict on one testbed run, from what its job directory recorded once QEMU ended: prints on
# stderr what went wrong, if anything (README, Testing: timeouts, a frozen testbed, a failed set-up,
# a testbed kernel oops or panic, a command killed by a signal), and exits with the status
# scripts/testbed.sh promises (the command's own, or 124 / 125). A script of its own so that its
# reading of console logs can be tested on recorded ones (tests/tests/testbed_verdict.rs) without
# crashing a testbed.
#
# Usage: verdict.sh JOB_DIR QEMU_STATUS TIMEOUT_SECS FREEZE_SECS
# JOB_DIR holds console.log, status.log and, when the rescue ran, monitor.log and the marks
# `rescued` and `froze` (scripts/testbed.sh says what each is).
# No `set -e` or pipefail: every step here only reports, and under them a grep that matched nothing
# (or a `head` that closed its pipe early) ended the report at once with status 1 and no word, the
# command's output lost with it; the exits below are the only ones.
set -u
[ $# -eq 4 ] || { echo "usage: verdict.sh JOB_DIR QEMU_STATUS TIMEOUT_SECS FREEZE_SECS" >&2; exit 2; }
T=$1 qrc=$2 timeout=$3 freeze_secs=$4

OOPS_RE='BUG: |Oops: |general protection fault|kernel BUG at|stack guard page was hit'
# first_match RE [FROM]: the number of the first line of the console log, from line FROM on, that
# matches the extended regex RE; empty when none does. A panic's replay of the kernel log can lack
# any line: a deep oops, such as a stack overflow's endless trace, floods the log buffer and
# pushes "Linux version" out of it.
first_match() {
    local at
    at=$(tail -n +"${2:-1}" "$T/console.log" 2>/dev/null | grep -n -m1 -E "$1" | cut -d: -f1)
    [ -n "$at" ] && echo $((at + ${2:-1} - 1))
    return 0
}
console_tail() {
    {
        tail -n 5 "$T/qemu.log" 2>/dev/null | grep -v 'TCG doesn.t support requested feature' || true
        tail -n 15 "$T/console.log" 2>/dev/null || true
    } | sed 's/^/  | /' >&2
}
# The watchdog's report (scripts/testbed/init); else what the rescue got: the vCPUs' registers
# and the kernel's NMI panic (backtraces); else the end of the console.
stuck_report() {
    if grep -q '^testbed-watchdog: begin' "$T/console.log" 2>/dev/null; then
        sed -n '/^testbed-watchdog: begin/,/^testbed-watchdog: end/p' "$T/console.log" |
            head -n 400 | sed 's/^/  | /' >&2
        return
    fi
    if grep -q '^RIP=' "$T/monitor.log" 2>/dev/null; then
        echo "testbed: the testbed kernel did not report by itself; its vCPUs (QEMU 'info registers -a'):" >&2
        grep -E '^(CPU#|RIP=|CS =|CR0=|EFER=)' "$T/monitor.log" | sed 's/^/  | /' >&2
    fi
    if grep -q 'Linux version' "$T/console.log" 2>/dev/null; then
        echo "testbed: after an NMI, the testbed kernel's log (from its first report of trouble):" >&2
        from=$(first_match 'Linux version')
        at=$(first_match "$OOPS_RE|INFO: task|soft lockup|rcu_.*stall|NMI received|Kernel panic" "${from:-1}")
        tail -n +"${at:-${from:-1}}" "$T/console.log" | head -n 400 | sed 's/^/  | /' >&2
    else
        console_tail
    fi
}
exit_line=$(grep -m1 ' exit ' "$T/status.log" || true)
fail_line=$(grep -m1 ' fail ' "$T/status.log" || true)
start_line=$(grep -m1 ' start ' "$T/status.log" || true)
watchdog_line=$(grep -m1 ' watchdog ' "$T/status.log" || true)
if [ -z "$exit_line" ] && [ -n "$watchdog_line" ]; then
    echo "testbed: timed out after ${timeout}s (the command ran past ${watchdog_line##* }s; what was stuck follows)" >&2
    stuck_report
    exit 124
fi
if [ -z "$exit_line" ] && [ -e "$T/froze" ]; then
    echo "testbed: the testbed froze: no heartbeat for ${freeze_secs}s while the command ran (its kernel stopped scheduling)" >&2
    stuck_report
    exit 124
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ] || { [ -z "$exit_line" ] && [ -e "$T/rescued" ]; }; then
    echo "testbed: timed out after ${timeout}s (command $([ -n "$start_line" ] && echo started || echo 'never started'))" >&2
    stuck_report
    exit 124
fi
if [ -n "$fail_line" ]; then
    echo "testbed: setup failed: ${fail_line#* fail }" >&2
    console_tail
    exit 125
fi
# An oops panics the testbed (panic_on_oops) and the panic replays the whole kernel log, which
# starts with "Linux version" (not printed at boot, under `quiet loglevel=1`): show the first oops
# of the replay, where it is complete (live, only its KERN_EMERG lines reach the console).
if [ -z "$exit_line" ] && grep -qE "$OOPS_RE" "$T/console.log" 2>/dev/null; then
    from=$(first_match 'Linux version')
    at=$(first_match "$OOPS_RE" "${from:-1}")
    [ -n "$at" ] || at=$(first_match "$OOPS_RE")
    echo "testbed: testbed kernel oops: $(sed -n "${at}p" "$T/console.log" | sed 's/^\[ *[0-9.]*\] //')" >&2
    sed -n "${at},\$p" "$T/console.log" | head -n 80 | sed 's/^/  | /' >&2
    exit 125
fi
if [ -z "$exit_line" ]; then
    panic=$(grep -m1 -o 'Kernel panic - .*' "$T/console.log" 2>/dev/null || true)
    if [ -n "$panic" ]; then
        echo "testbed: the testbed kernel panicked before the command finished: $panic" >&2
    else
        echo "testbed: the testbed stopped before the command finished (qemu exit status $qrc)" >&2
    fi
    console_tail
    exit 125
fi
rc=${exit_line##* }
# A command killed by a signal (a shell script dies silently): say which, with what the testbed
# kernel logged last (the init put it on the console).
if [ "$rc" -gt 128 ] 2>/dev/null; then
    echo "testbed: the command was killed by signal $((rc - 128)) (SIG$(kill -l $((rc - 128)) 2>/dev/null)); the testbed kernel's last lines:" >&2
    sed -n '/^testbed-exit: begin/,/^testbed-exit: end/p' "$T/console.log" 2>/dev/null |
        grep -v '^testbed-exit: ' | tail -n 30 | sed 's/^/  | /' >&2 || true
fi
exit "$rc"
