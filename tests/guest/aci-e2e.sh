#!/bin/sh
# End to end for App Container Images (issue 14, item 3): an ACI built here (tests/images/mkaci.py,
# the busybox userland as rootfs/, xz-compressed) is imported with `husk import FILE.aci` and run
# by `husk run` on real KVM in the testbed: its exec, environment, working directory and
# user/group reach the app, and arguments after the image are appended to its exec. A policy
# tightened after the import refuses it at `husk run` (the record is re-checked), and a hostile
# ACI (a path climbing out of rootfs/) is one line, status 122, and stores nothing. Every case
# prints `case NAME ok` or `case NAME FAILED: why` (tests/tests/aci_e2e.rs checks each line).
# Usage: aci-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"

# A fresh store and policy: the harness may rerun this script in the same scratch directory.
rm -rf "$HUSK_ROOT" "$D/img"
mkdir -p "$HUSK_ROOT"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$HUSK_ROOT/policy.json"
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
python3 "$repo/tests/images/mkaci.py" "$D/img" "$D/hello.aci" --compress xz \
    --exec=/bin/sh --exec=-c --exec='echo "marker=$MARKER cwd=$(pwd) uid=$(id -u) gid=$(id -g) data=$(cat data) args=$*"' --exec=aci \
    --env MARKER=from-aci --workdir /srv --user user --group user --file /srv/data=aci-data >/dev/null \
    || { echo "mkaci failed"; exit 1; }

# 1. import, then run: exec, environment, working directory, user:group (from the image's
#    /etc/passwd and /etc/group: user is 1000:1000) and appended arguments.
name=$(lim $Q $H import "$D/hello.aci" 2>"$D/import.err"); irc=$?
out=$(lim $V $H run --rm --network none example.com/hello:1.0 one two 2>"$D/run.err"); rc=$?
want="marker=from-aci cwd=/srv uid=1000 gid=1000 data=aci-data args=one two"
if [ $irc -eq 0 ] && [ "$name" = example.com/hello:1.0 ] && [ $rc -eq 0 ] && [ "$out" = "$want" ]; then
    ok aci-import-run
else
    bad aci-import-run "irc=$irc name=$name rc=$rc out=$out err=$(head -c 300 "$D/import.err" "$D/run.err")"
fi

# 2. a policy that rejects example.com, written after the import: husk run refuses, status 119.
echo '{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"example.com":[{"type":"reject"}]}}}' \
    > "$HUSK_ROOT/policy.json"
lim $V $H run --rm --network none example.com/hello:1.0 >/dev/null 2>"$D/recheck.err"; rc=$?
if [ $rc -eq 119 ] && [ "$(wc -l < "$D/recheck.err")" -eq 1 ] && grep -q "reject (scope example.com)" "$D/recheck.err"; then
    ok aci-recheck-at-run
else
    bad aci-recheck-at-run "rc=$rc err=$(head -c 300 "$D/recheck.err")"
fi
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$HUSK_ROOT/policy.json"

# 3. a hostile ACI: one line, status 122, nothing new in the store, nothing escaped.
python3 "$repo/tests/images/mkaci.py" "$D/img" "$D/evil.aci" --name example.com/evil --hostile traversal >/dev/null
before=$(ls "$HUSK_ROOT/images/blobs/sha256" | wc -l)
lim $Q $H import "$D/evil.aci" >/dev/null 2>"$D/evil.err"; rc=$?
after=$(ls "$HUSK_ROOT/images/blobs/sha256" | wc -l)
if [ $rc -eq 122 ] && [ "$(wc -l < "$D/evil.err")" -eq 1 ] && grep -q "climbs out" "$D/evil.err" \
   && [ "$before" -eq "$after" ] && [ -z "$(ls "$HUSK_ROOT/images/tmp")" ] && [ ! -e /tmp/aci-escaped ] \
   && ! $H images | grep -q evil; then
    ok aci-hostile-refused
else
    bad aci-hostile-refused "rc=$rc blobs $before -> $after err=$(head -c 300 "$D/evil.err")"
fi

echo "aci-e2e: $fails failed"
[ "$fails" -eq 0 ]
