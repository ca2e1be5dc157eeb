#!/usr/bin/env bash
# Checks that scripts/testbed.sh does what its header promises, through real testbed runs:
# exit status and separate stdout/stderr, SVM-backed /dev/kvm that runs a guest, build/ on PATH,
# read-write shares visible on the host, a read-only host root, lossless large output, a command
# killed by a signal, timeouts
# (with the watchdog's report of stuck tasks, or the vCPUs' registers and an NMI's backtraces when
# the testbed kernel cannot report), a testbed kernel crash, bad options, and two runs
# at once. Prints one line per check and the
# timing of a `true` run; exits non-zero if any check fails. Takes about a minute or two.
#
# Usage: scripts/testbed/selftest.sh   (HUSK_TESTBED=force|direct is honoured as by testbed.sh)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TB="$REPO/scripts/testbed.sh"
W=$(mktemp -d "${TMPDIR:-/tmp}/husk-testbed-selftest.XXXXXX")
trap 'rm -rf "$W"' EXIT
failed=0

check() { # name, then a command whose success is the check
    local name=$1
    shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failed=1; fi
}

# 1. Exit status, stdout and stderr kept apart.
"$TB" -- sh -c 'echo to-stdout; echo to-stderr >&2; exit 42' >"$W/o" 2>"$W/e"
rc=$?
check "exit status is the command's (42, got $rc)" test "$rc" = 42
check "stdout carried" grep -qx to-stdout "$W/o"
check "stderr carried separately" bash -c "grep -qx to-stderr '$W/e' && ! grep -q to-stderr '$W/o'"

# 2. Real KVM inside: SVM in the CPU, kvm_amd loaded when nested, a guest that runs and halts.
"$TB" -- sh -c 'grep -qw svm /proc/cpuinfo && test -c /dev/kvm && test -d /sys/module/kvm_amd &&
    python3 '"$HERE"'/kvm-smoke.py' >"$W/o" 2>&1
rc=$?
check "svm + kvm_amd + KVM_RUN inside ($(tail -n1 "$W/o"))" test "$rc" = 0

# 3. build/ first on PATH, cwd kept, the caller's HUSK_* variables passed.
(cd "$REPO" && HUSK_SELFTEST_VAR=v1 "$TB" --env EXTRA='a b' -- \
    sh -c 'echo "${PATH%%:*}|$PWD|$HUSK_SELFTEST_VAR|$EXTRA"') >"$W/o" 2>"$W/e"
check "build/ on PATH, cwd, env ($(cat "$W/o"))" grep -qx "$REPO/build|$REPO|v1|a b" "$W/o"

# 4. A read-write share; the host root is read-only underneath an in-memory overlay, and stays
#    read-only on the host side even if the guest mounts the host root export again.
mkdir -p "$W/share"
# Outside the repository, which the testbed shares read-write.
probe=/root/.husk-testbed-overlay-probe
"$TB" --share "$W/share" -- sh -c "sha256sum /usr/bin/sha256sum > '$W/share/sum' && echo x > '$probe' &&
    cat '$probe' && mkdir /escape && mount -t virtiofs -o rw hostroot /escape &&
    ! touch '/escape$probe' 2>/dev/null" >"$W/o" 2>&1
rc=$?
check "share written inside is on the host" bash -c "[ \"\$(cat '$W/share/sum')\" = \"\$(sha256sum /usr/bin/sha256sum)\" ]"
check "writes outside shares stay in the testbed (rc $rc)" bash -c "[ $rc = 0 ] && [ ! -e '$probe' ]"

# 5. Large output arrives complete.
"$TB" -- seq 1 300000 >"$W/o" 2>"$W/e"
check "300000 lines of output arrive intact" bash -c "[ \"\$(sha256sum <'$W/o' | cut -d' ' -f1)\" = \"\$(seq 1 300000 | sha256sum | cut -d' ' -f1)\" ]"

# 5b. A command killed by a signal is named, with the testbed kernel's last lines.
"$TB" -- sh -c 'kill -SEGV $$' >"$W/o" 2>"$W/e"
rc=$?
check "killed by a signal: status 139 ($rc) and named" \
    bash -c "test $rc = 139 && grep -q '^testbed: the command was killed by signal 11 (SIGSEGV)' '$W/e' && grep -q '^  | \[' '$W/e'"

# 6. Failures: timeout, testbed kernel crash, bad options.
"$TB" --timeout 20 -- sleep 600 >"$W/o" 2>"$W/e"
rc=$?
check "timeout exits 124 with a message (got $rc: $(head -n1 "$W/e"))" bash -c "[ $rc = 124 ] && grep -q '^testbed: timed out' '$W/e'"
check "timeout reports what was stuck (the watchdog's report)" bash -c "grep -q 'testbed-watchdog: begin' '$W/e' &&
    grep -q 'tasks in uninterruptible sleep' '$W/e' && grep -q ' sleep 600' '$W/e'"
# A testbed kernel too stuck to report (here: its watchdog killed): QEMU's registers, an NMI panic.
"$TB" --timeout 40 -- sh -c 'pkill -9 -f "^/bin/busybox sh /init"; sleep 600' >"$W/o" 2>"$W/e"
rc=$?
check "a testbed that cannot report: 124, vCPU registers and the NMI's backtraces (got $rc)" bash -c "[ $rc = 124 ] &&
    grep -q '^  | RIP=' '$W/e' && grep -q 'NMI backtrace for cpu' '$W/e'"
# A testbed whose heartbeat stops (here: killed with the watchdog) is ended as frozen long before
# its timeout.
t=$EPOCHSECONDS
HUSK_TESTBED_FREEZE_SECS=15 "$TB" --timeout 300 -- sh -c 'pkill -9 -f "^/bin/busybox sh /init"; sleep 600' >"$W/o" 2>"$W/e"
rc=$? t=$((EPOCHSECONDS - t))
check "no heartbeat: 124 as frozen after ${t}s, registers and backtraces (got $rc: $(head -n1 "$W/e"))" bash -c "[ $rc = 124 ] &&
    [ $t -lt 150 ] && grep -q '^testbed: the testbed froze: ' '$W/e' && grep -q '^  | RIP=' '$W/e' && grep -q 'NMI backtrace for cpu' '$W/e'"
"$TB" -- sh -c 'echo c > /proc/sysrq-trigger' >"$W/o" 2>"$W/e"
rc=$?
check "testbed crash exits 125 with a message (got $rc: $(head -n1 "$W/e"))" bash -c "[ $rc = 125 ] && grep -q '^testbed: ' '$W/e'"
"$TB" --share /nonexistent/dir -- true 2>"$W/e"
rc=$?
check "missing share dir: exit 2 ($rc), one line ($(cat "$W/e"))" bash -c "[ $rc = 2 ] && [ \$(wc -l <'$W/e') = 1 ]"
"$TB" --mem lots -- true 2>"$W/e"
rc=$?
check "bad --mem: exit 2 ($rc)" test "$rc" = 2
"$TB" true 2>"$W/e"
rc=$?
check "missing --: exit 2 ($rc)" test "$rc" = 2

# 7. Two runs at once do not collide.
mkdir -p "$W/a" "$W/b"
"$TB" --share "$W/a" -- sh -c "echo a > $W/a/f; exit 3" >/dev/null 2>&1 &
p1=$!
"$TB" --share "$W/b" -- sh -c "echo b > $W/b/f; exit 4" >/dev/null 2>&1 &
p2=$!
wait $p1
r1=$?
wait $p2
r2=$?
check "concurrent runs ($r1, $r2)" bash -c "[ $r1 = 3 ] && [ $r2 = 4 ] && grep -qx a '$W/a/f' && grep -qx b '$W/b/f'"

# 8. Overhead of an empty command.
start=$EPOCHREALTIME
HUSK_TESTBED_TIMING=1 "$TB" -- true 2>"$W/e"
end=$EPOCHREALTIME
echo "time $(grep '^testbed: prep' "$W/e" || echo 'direct run:') wall $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f s", b - a }')"

exit $failed
