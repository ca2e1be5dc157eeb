# Helpers for the end-to-end scripts in tests/guest/ that run inside the testbed (sourced by them;
# plain POSIX sh).
#
# lim SECONDS CMD [ARGS...]
#   Runs CMD (a program or a shell function) with the caller's stdin, stdout and stderr and returns
#   its status. Every step of a test that may wait on the VM, the agent or the kernel goes through
#   it, so a stuck step fails its case instead of the whole suite running into the testbed's
#   timeout: past SECONDS, lim prints on stderr which step ran past its limit and what the
#   system's tasks are waiting for (scripts/testbed/stuck-tasks.sh: every process with its state
#   and wchan, the kernel stacks of tasks in uninterruptible sleep, sysrq-w and the hung-task
#   reports), then SIGKILLs CMD and every process it started; it returns 137 then. The step is
#   also noted in the file $LIM_NOTES (suite_init puts it in the scratch directory), which
#   outlives a $(lim ...) subshell.
#   A task stuck in the kernel (state D) cannot be killed: lim then still waits for it, but the
#   report on stderr already names the step and the kernel stacks.
#
# lim_stuck
#   Prints "; past its limit: STEP, ..." for the steps that ran past their limit since the last
#   call (nothing if none did), for a case's failure message.
#
# suite_init HUSK SCRATCH
#   The suites' common start (call it with the suite's "$@"): H is the husk binary, D the scratch
#   directory, HUSK_ROOT=$D/root (exported: this run's store and pods), lim's notes in
#   $D/lim.notes. `repo` (the checkout) is set when this file is sourced.
#
# pods_left
#   How many pods the store holds.
#
# ok NAME / bad NAME WHY
#   Print the lines the suites' Rust side checks (`case NAME ok`, `case NAME FAILED: WHY`, with
#   lim_stuck's note); bad counts the failures in $fails. V and Q are the usual limits of a step
#   that waits for a VM (V) and of a quick one (Q), in seconds.

repo=$(cd "$(dirname "$0")/../.." && pwd)
LIM_STUCK_TASKS="$repo/scripts/testbed/stuck-tasks.sh"
LIM_NOTES=${LIM_NOTES:-/dev/null}
V=120 Q=60
fails=0
ok() { echo "case $1 ok"; }
bad() { echo "case $1 FAILED: $2$(lim_stuck)"; fails=$((fails + 1)); }

suite_init() {
    H=$1
    D=$2
    export HUSK_ROOT="$D/root"
    LIM_NOTES="$D/lim.notes"
    : >"$LIM_NOTES"
}

pods_left() { ls "$HUSK_ROOT/pods" 2>/dev/null | grep -v '^\.' | wc -l; }

# PID and every process below it.
lim_tree() {
    for _lim_s in /proc/[0-9]*/stat; do
        read -r _lim_l 2>/dev/null <"$_lim_s" || continue
        # Fields after the command name: state, ppid, ...
        set -- ${_lim_l##*) }
        _lim_p=${_lim_s#/proc/}
        echo "${_lim_p%/stat} $2"
    done | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            keep[root] = 1; n = 1
            while (n) { n = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; n = 1 } }
            for (p in keep) print p
        }'
}

lim() {
    _lim_secs=$1
    shift
    # A background job's stdin is /dev/null unless redirected explicitly: hand it ours (fd 9).
    { "$@" <&9 9<&- & } 9<&0
    _lim_pid=$!
    # The watcher writes to stderr only (never to a pipe the caller reads to its end, such as a
    # $(...)), and takes its sleep with it when it is stopped.
    (
        exec >&2 9<&-
        trap 'kill "$_lim_sleep" 2>/dev/null; exit 0' TERM
        sleep "$_lim_secs" &
        _lim_sleep=$!
        wait "$_lim_sleep"
        kill -0 "$_lim_pid" 2>/dev/null || exit 0
        echo "$*" >>"$LIM_NOTES"
        echo "lim: step ran past its limit of ${_lim_secs}s: $*"
        echo "lim: what the system is waiting for:"
        sh "$LIM_STUCK_TASKS" 80 2>&1 | sed 's/^/lim: | /'
        # Stop the whole tree first, so nothing forks while it is being killed.
        _lim_all=$(lim_tree "$_lim_pid")
        # shellcheck disable=SC2086
        kill -STOP $_lim_all 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $_lim_all 2>/dev/null
    ) &
    _lim_watch=$!
    wait "$_lim_pid"
    _lim_rc=$?
    kill "$_lim_watch" 2>/dev/null
    wait "$_lim_watch" 2>/dev/null
    return $_lim_rc
}

lim_stuck() {
    if [ -s "$LIM_NOTES" ]; then
        printf '; past its limit: %s' "$(sed -n 'H; ${x; s/^\n//; s/\n/, /g; p}' "$LIM_NOTES")"
        : >"$LIM_NOTES"
    fi
}
