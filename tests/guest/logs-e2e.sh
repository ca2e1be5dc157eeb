#!/bin/sh
# End to end for a pod's logs on the host (issue 13, part 1): caps and rotation of the apps' logs
# and of the console, the console's rate limit, and `husk logs` (separate streams, --tail,
# --since, --until, --timestamps, -f across a rotation), on real KVM in the testbed. Every case
# prints `case NAME ok` or `case NAME FAILED: why` (tests/tests/logs_e2e.rs checks each line);
# every husk step runs under `lim` (tests/guest/lib.sh). Waits are bounded loops on what the logs
# say, never on time. The sizes it measures are printed as `figure NAME VALUE` lines. Its pods
# run with `--network none`: logs need no network, and the suite stays clear of passt.
# Usage: logs-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
# until_up N CMD...: runs CMD (quietly) up to N times, a second apart, until it succeeds, while
# the pod in $P runs (one that failed, such as a guest crash in the testbed, is not waited for).
up() { grep -q '"state": "running"' "$P/status.json" 2>/dev/null; }
until_up() { n=$1; shift; i=0; while ! "$@" >/dev/null 2>&1 && [ $i -lt "$n" ] && up; do sleep 1; i=$((i + 1)); done; "$@" >/dev/null 2>&1; }
# bytes FILE...: the total size of the files that exist.
bytes() { t=0; for f in "$@"; do [ -e "$f" ] && t=$((t + $(stat -c %s "$f"))); done; echo $t; }
MIB=1048576

# A fresh store: after a testbed flaw the harness runs this script once more in the same
# scratch directory, where the first attempt's pods (the "flood" name among them) remain.
rm -rf "$HUSK_ROOT"
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }

# The app: floods 20 MB of 1000-byte lines on stdout (about 20 rotations of the 1 MB files; 200 MB
# made the nested testbed crash, guest or testbed kernel, on nearly every run: README, Testing),
# then marked lines on both streams, a second apart (so their arrival order and times on the host
# are theirs); waits for /tmp/go (made by `husk exec`), writes 50,000 numbered lines (5 MB:
# several rotations while `husk logs -f` follows), then waits for /tmp/end.
cat > "$D/app.sh" <<'APP'
echo first-out; echo first-err >&2
L=$(head -c 1000 /dev/zero | tr '\0' x)
yes "$L" | head -n 20000
sleep 1
echo out-1; echo out-2
sleep 1
echo err-1 >&2
sleep 1
echo phase1-done
while [ ! -e /tmp/go ]; do sleep 0.2; done
awk 'BEGIN { p = sprintf("%090d", 0); for (i = 1; i <= 50000; i++) printf "%08d %s\n", i, p }'
echo phase2-done
while [ ! -e /tmp/end ]; do sleep 0.2; done
echo bye
APP
mkdir -p "$D/appdir"; cp "$D/app.sh" "$D/appdir/app.sh"

# 1. a 20 MB flood on stdout: the app's log stays within max-size x max-file
id=$(lim $V $H run -d --network none --name flood --log-opt max-size=1m --log-opt max-file=3 -v "$D/appdir:/app:ro" busybox sh /app/app.sh); rc=$?
P="$HUSK_ROOT/pods/$id"
[ $rc -eq 0 ] && until_up 1200 sh -c "$H logs --tail 1 flood 2>/dev/null | grep -qx phase1-done"
logs_files=$(ls "$P/logs" | tr '\n' ' ')
app_bytes=$(bytes "$P"/logs/*)
biggest=$(for f in "$P"/logs/*; do stat -c %s "$f"; done | sort -n | tail -1)
echo "figure flood-log-files $logs_files"
echo "figure flood-log-bytes $app_bytes (cap $((3 * MIB)))"
echo "figure du $(du -sb "$P/logs")"
echo "figure du $(du -sb "$P")"
if [ $rc -eq 0 ] && [ "$app_bytes" -le $((3 * MIB)) ] && [ "$biggest" -le $MIB ] \
   && [ "$(ls "$P/logs" | wc -l)" -eq 3 ]; then
    ok flood-within-caps
else
    bad flood-within-caps "rc=$rc files=$logs_files bytes=$app_bytes biggest=$biggest pod: $(grep -E '"(state|reason)"' "$P/status.json" 2>&1 | tr -s ' \n' ' ')"
fi

# 2. separate streams, --tail across files, the oldest output rotated away
lim $Q $H logs flood > "$D/all.out" 2> "$D/all.err"; lrc=$?
lim $Q $H logs --tail 2 flood > "$D/tail.out" 2> "$D/tail.err"; trc=$?
lines=$(wc -l < "$D/all.out")
echo "figure flood-lines-kept $lines"
if [ $lrc -eq 0 ] && [ $trc -eq 0 ] && [ "$(cat "$D/tail.out")" = phase1-done ] && [ "$(cat "$D/tail.err")" = err-1 ] \
   && [ "$(cat "$D/all.err")" = err-1 ] && ! grep -q err-1 "$D/all.out" && ! grep -q first-out "$D/all.out" \
   && [ "$(tail -3 "$D/all.out" | tr '\n' ' ')" = "out-1 out-2 phase1-done " ] && [ "$lines" -gt 1000 ]; then
    ok streams-and-tail
else
    bad streams-and-tail "lrc=$lrc trc=$trc tail=$(cat "$D/tail.out" "$D/tail.err") err=$(head -c 300 "$D/all.err") lines=$lines last=$(tail -3 "$D/all.out" | cut -c1-40)"
fi

# 3. --timestamps, --since and --until (RFC 3339 as printed, a date, a duration)
t1=$(lim $Q $H logs -t --tail 4 flood 2>/dev/null | grep ' out-1$' | cut -d' ' -f1)
since=$(lim $Q $H logs --since "$t1" flood 2>/dev/null | tr '\n' ' ')
until=$(lim $Q $H logs --until "$t1" --tail 3 flood 2>/dev/null)
old=$(lim $Q $H logs --until 2000-01-01 flood 2>&1 | wc -c)
recent=$(lim $Q $H logs --since 1h flood 2>/dev/null | tail -1)
ts_ok=$(echo "$t1" | grep -cE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$')
if [ "$ts_ok" = 1 ] && [ "$since" = "out-1 out-2 phase1-done " ] && echo "$until" | grep -q '^xxxx' \
   && ! echo "$until" | grep -q phase1-done && [ "$old" -eq 0 ] && [ "$recent" = phase1-done ]; then
    ok since-until-timestamps
else
    bad since-until-timestamps "t1=$t1 since=$since until=$(echo "$until" | cut -c1-20 | tr '\n' ' ') old=$old recent=$recent"
fi

# 4. -f follows across rotations: 5 MB of numbered lines through 1 MiB files, none lost or doubled
( lim $V $H logs -f --tail 0 flood > "$D/follow.out" 2> "$D/follow.err" ) & fpid=$!
sleep 1
lim $Q $H exec flood touch /tmp/go; erc=$?
until_up 600 grep -qx phase2-done "$D/follow.out"
lim $Q $H exec flood touch /tmp/end
wait $fpid; frc=$?
numbered=$(grep -c '^[0-9]\{8\} 0' "$D/follow.out")
in_order=$(grep '^[0-9]\{8\} 0' "$D/follow.out" | awk '{ if ($1 + 0 != NR) { print "gap at " NR ": " $1; exit } }')
rotations=$(ls "$P/logs" | wc -l)
echo "figure follow-lines $numbered"
if [ $erc -eq 0 ] && [ $frc -eq 0 ] && [ "$numbered" -eq 50000 ] && [ -z "$in_order" ] \
   && grep -qx phase2-done "$D/follow.out" && grep -qx bye "$D/follow.out" && ! grep -q phase1-done "$D/follow.out"; then
    ok follow-across-rotation
else
    bad follow-across-rotation "erc=$erc frc=$frc numbered=$numbered $in_order files=$rotations err=$(head -c 300 "$D/follow.err")"
fi
state=$(lim $Q $H inspect flood | grep -o '"state": "[a-z]*"' | head -1)
[ "$state" = '"state": "exited"' ] && ok flood-ended ||
    bad flood-ended "$state $(grep -o '"reason": .*' "$P/status.json" 2>/dev/null | head -1)"
lim $Q $H rm flood >/dev/null

# 5. the guest floods its console: the rate limit drops what is beyond it, says so, and the
# console log stays within its cap. The agent prints a console line for every host connection
# that fails its handshake; a Python client makes 200 of them (~20 KB of console output against
# a bucket of 2 KiB refilled at 256 bytes/s).
id=$(lim $V $H run -d --network none --name noisy --log-opt console-rate=256 busybox sleep 1000); rc=$?
P="$HUSK_ROOT/pods/$id"
# The agent drops a connection as soon as its first frame header is wrong, which may be before
# the rest of the garbage is written: a reset or broken pipe then is the agent doing its job.
cat > "$D/knock.py" <<'PY'
import socket, sys
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    try:
        s.sendall(b"CONNECT 1024\n")
        s.recv(64)
        s.sendall(b"not the agent protocol\n" * 4)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
PY
lim $V python3 "$D/knock.py" "$P/vsock/vsock.sock" 200; krc=$?
# The marker goes in front of the first output let through after the drops: knock once a second
# until the bucket has refilled enough for one more line.
until_up 60 sh -c "timeout 30 python3 '$D/knock.py' '$P/vsock/vsock.sock' 1; grep -q 'bytes of console output dropped' '$P/console.log'"
lim $V $H stop noisy >/dev/null
marker=$(grep -o '\[husk: [0-9]* bytes of console output dropped\]' "$P/console.log" | head -1)
console_bytes=$(bytes "$P"/console.log*)
echo "figure console-bytes $console_bytes (cap $((2 * MIB)))"
echo "figure console-marker $marker"
if [ $rc -eq 0 ] && [ $krc -eq 0 ] && [ -n "$marker" ] && [ "$console_bytes" -le $((2 * MIB)) ] && [ ! -e "$P/console.log.2" ] \
   && grep -q "husk-agent: ready" "$P/console.log"; then
    ok console-rate-limited
else
    bad console-rate-limited "rc=$rc krc=$krc bytes=$console_bytes marker=$marker console=$(tail -c 400 "$P/console.log")"
fi
lim $Q $H rm noisy >/dev/null

# 6. bad values: one line naming the flag, status 125, nothing left behind
why=""
for opt in max-size=1k max-size=lots max-file=0 colour=red max-size; do
    lim $Q $H run --rm --log-opt "$opt" busybox true 2> "$D/bad.err"; brc=$?
    if [ $brc -ne 125 ] || [ "$(wc -l < "$D/bad.err")" -ne 1 ] || ! grep -q -- "--log-opt $opt" "$D/bad.err" || [ "$(pods_left)" -ne 0 ]; then
        why="$why; $opt: rc=$brc pods=$(pods_left) $(cat "$D/bad.err")"
    fi
done
printf '[[apps]]\nname = "a"\nimage = "busybox"\n[log_opts]\nmax-file = 0\n' > "$D/bad.toml"
lim $Q $H pod run "$D/bad.toml" 2> "$D/bad.err"; brc=$?
[ $brc -eq 125 ] && grep -q "log_opts.max-file" "$D/bad.err" && [ "$(pods_left)" -eq 0 ] \
    || why="$why; manifest: rc=$brc $(cat "$D/bad.err")"
lim $Q $H logs --since yesterday nosuchpod 2> "$D/bad.err"; brc=$?
[ $brc -eq 125 ] && grep -q -- "--since" "$D/bad.err" || why="$why; logs --since: rc=$brc $(cat "$D/bad.err")"
lim $Q $H logs --tail many nosuchpod 2> "$D/bad.err"; brc=$?
[ $brc -eq 125 ] && grep -q -- "--tail" "$D/bad.err" || why="$why; logs --tail: rc=$brc $(cat "$D/bad.err")"
[ -z "$why" ] && ok bad-log-opts || bad bad-log-opts "${why#; }"

exit $fails
