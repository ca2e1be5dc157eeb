#!/usr/bin/env bash
# seccomp-audit.sh: run e2e suites with the VMM's seccomp filters in log mode and list, per thread,
# every system call outside its allowlist: what a change to the VMM now calls.
#
# Usage: scripts/seccomp-audit.sh [SUITE...]   (default: every e2e suite; run scripts/build.sh first)
#
# How: HUSK_SECCOMP=log makes each filter log a call it would refuse (SECCOMP_RET_LOG) and let it
# run; the testbed kernel is booted with `audit=1 loglevel=7 sysctl.kernel.printk_ratelimit=0` so
# that every one of those "audit: type=1326 ... syscall=N" lines reaches its console log, which
# HUSK_TESTBED_KEEP=1 keeps. The thread is the line's comm: `husk` (the VMM thread), `vcpuN`,
# `fs-TAG`. The suites themselves must pass as usual (the calls ran).
# It holds /tmp/husk-testbed.lock while the suites run, as every e2e run must.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(boot vsock agent_e2e pod_e2e vmm_kill_e2e fs_e2e fs_nested_e2e)
unistd=$(ls /usr/include/x86_64-linux-gnu/asm/unistd_64.h /usr/include/asm/unistd_64.h 2>/dev/null | head -1 || true)
name_of() {
    if [ -n "$unistd" ]; then
        awk -v n="$1" '$1 == "#define" && $3 == n { sub("__NR_", "", $2); print $2; exit }' "$unistd"
    fi
}
found=$(mktemp)
trap 'rm -f "$found"' EXIT
# One hold of the lock for all the suites: the kept testbed directories that appear meanwhile are ours.
flock /tmp/husk-testbed.lock bash -c '
    before=$(ls -d /tmp/husk-testbed.*/ 2>/dev/null | sort)
    for suite in "$@"; do
        echo "seccomp-audit: $suite" >&2
        HUSK_SECCOMP=log HUSK_TESTBED_KEEP=1 \
            HUSK_TESTBED_APPEND="audit=1 loglevel=7 sysctl.kernel.printk_ratelimit=0" \
            cargo test -q -p husk-tests --test "$suite" -- --ignored >&2 || echo "seccomp-audit: $suite failed" >&2
    done
    after=$(ls -d /tmp/husk-testbed.*/ 2>/dev/null | sort)
    for d in $(comm -13 <(echo "$before") <(echo "$after")); do
        grep -ho "type=1326.*" "$d/console.log" || true
        rm -rf "$d"
    done' _ "${suites[@]}" >"$found"
grep -o 'comm="[^"]*".*syscall=[0-9]*' "$found" |
    sed -E 's/comm="([^"]*)".*syscall=([0-9]+)/\1 \2/; s/^vcpu[0-9]+ /vcpu /; s/^fs-[^ ]+ /fs /; s/^husk /vmm /' |
    sort | uniq -c | while read -r count thread nr; do
        echo "$thread $nr $(name_of "$nr") ($count)"
    done
