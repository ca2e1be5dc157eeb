#!/bin/sh
# End to end for measured launch (issue 14, item 4), on real KVM in the testbed: pods really start
# while a software TPM (Debian's swtpm, started here on the testbed's own loopback) takes their
# measurements. After the pods, tpm2_pcrread's PCR 15 must equal an independent replay of the
# measurement log (Python's hashlib, not husk's code), and `husk attest --verify` must agree; each
# pod's events must be what it ran (its config.json's SHA-256, the kernel and initramfs files', the
# guest's own /proc/cmdline, the image's digest and admission); a tampered record fails --verify.
# Without a TPM: a one-line warning and the log still written; --require-tpm (or measure.json's
# require_tpm) refuses the pod with status 119, one line, nothing left behind.
# Every case prints `case NAME ok` or `case NAME FAILED: why` (tests/tests/measure_e2e.rs).
# Usage: measure-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
unset HUSK_TPM
LOG="$HUSK_ROOT/measurements.log"
records() { [ -e "$LOG" ] && wc -l < "$LOG" || echo 0; }

rm -rf "$HUSK_ROOT" "$D/img"
mkdir -p "$HUSK_ROOT"
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }

# The TPM: swtpm on TCP 127.0.0.1:2321 (control channel 2322, where tpm2-tss's swtpm TCTI looks),
# its state in the testbed's own /tmp.
state=$(mktemp -d)
swtpm socket --tpm2 --tpmstate "dir=$state" --flags not-need-init,startup-clear \
    --server type=tcp,port=2321,bindaddr=127.0.0.1 --ctrl type=tcp,port=2322,bindaddr=127.0.0.1 \
    --log "file=$D/swtpm.log" &
swtpm_pid=$!
trap 'kill $swtpm_pid 2>/dev/null' EXIT
T=swtpm:host=127.0.0.1,port=2321
for _ in $(seq 100); do tpm2_pcrread -T "$T" sha256:15 >/dev/null 2>&1 && break; sleep 0.1; done
echo "{\"tpm\":\"$T\",\"pcr\":15}" > "$HUSK_ROOT/measure.json"

# The independent verifier (Python's hashlib, not husk's code): the value the log replays to.
replay() { python3 "$repo/tests/guest/measure-replay.py" "$LOG" "$T" 15; }
pcr15() { tpm2_pcrread -T "$T" sha256:15 | sed -n 's/^ *15: 0x//p' | tr 'A-F' 'a-f'; }
# field POD EVENT KEY: a value of a pod's record, by Python's json.
field() {
    python3 - "$LOG" "$1" "$2" "$3" <<'EOF'
import json, sys
log, pod, event, key = sys.argv[1:]
for line in open(log):
    r = json.loads(line)
    c = r["content"]
    if c["pod_name"] == pod and c["event"] == event:
        print(r["digests"][0]["digest"] if key == "digest" else c[key])
EOF
}

# 1. Three pods start and run with the TPM (one foreground with --require-tpm, one detached, one
#    two-app pod): 5 + 5 + 6 events. The PCR equals the independent replay and husk's own.
out=$(lim $V $H run --name m1 --require-tpm --network none busybox cat /proc/cmdline 2>"$D/m1.err"); rc1=$?
cmdline=$out
id2=$(lim $V $H run -d --name m2 --network none busybox sleep 600 2>"$D/m2.err"); rc2=$?
lim $Q $H stop -t 1 m2 >/dev/null 2>&1
cat > "$D/two.toml" <<'EOF'
name = "m3"
network = "none"
[[apps]]
name = "a"
image = "busybox"
command = ["true"]
[[apps]]
name = "b"
image = "busybox"
command = ["true"]
EOF
lim $V $H pod run "$D/two.toml" >/dev/null 2>"$D/m3.err"; rc3=$?
want=$(pcr15)
got=$(replay)
lim $Q $H attest --verify >"$D/verify.out" 2>&1; vrc=$?
n=$(records)
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [ "$n" -eq 16 ] && [ -n "$want" ] \
   && [ "$want" != 0000000000000000000000000000000000000000000000000000000000000000 ] \
   && [ "$got" = "$want" ] && [ $vrc -eq 0 ] && grep -q "$want" "$D/verify.out" \
   && [ ! -s "$D/m1.err" ]; then
    ok measure-pcr-equals-replay
else
    bad measure-pcr-equals-replay "rc=$rc1/$rc2/$rc3 records=$n pcr=$want replay=$got verify=$vrc $(head -c 300 "$D/verify.out" "$D/m1.err" "$D/m2.err" "$D/m3.err")"
fi

# 2. What pod m1's events say is what it ran: config.json's bytes, the kernel's and initramfs'
#    files, the command line its guest saw, its image's digest and admission.
id1=$(ls "$HUSK_ROOT/pods" | while read -r p; do grep -q '"name": "m1"' "$HUSK_ROOT/pods/$p/config.json" && echo "$p"; done)
cfg=$(sha256sum "$HUSK_ROOT/pods/$id1/config.json" | cut -d' ' -f1)
kpath=$(field m1 kernel data); ipath=$(field m1 initramfs data)
kern=$(sha256sum "$kpath" | cut -d' ' -f1); init=$(sha256sum "$ipath" | cut -d' ' -f1)
image=$(field m1 image data)
digest=$(sed -n 's/.*"manifest_digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "$HUSK_ROOT/pods/$id1/config.json")
cfg2=$(sha256sum "$HUSK_ROOT/pods/$id2/config.json" 2>/dev/null | cut -d' ' -f1)
if [ -n "$id1" ] && [ "$(field m1 pod-config digest)" = "$cfg" ] && [ "$(field m1 kernel digest)" = "$kern" ] \
   && [ "$(field m1 initramfs digest)" = "$init" ] && [ "$(field m1 cmdline data)" = "$cmdline" ] \
   && [ "$image" = "docker.io/library/busybox:latest@$digest accepted unsigned (scope default)" ] \
   && [ "$(field m2 pod-config digest)" = "$cfg2" ] && [ "$(field m3 image app | tr '\n' ' ')" = "a b " ] \
   && [ "$(lim $Q $H attest m1 | wc -l)" -eq 6 ]; then
    ok measure-events-are-what-ran
else
    bad measure-events-are-what-ran "id=$id1 cfg=$cfg/$(field m1 pod-config digest) kernel=$kern/$(field m1 kernel digest) init=$init cmdline=[$cmdline]/[$(field m1 cmdline data)] image=[$image] digest=$digest m2cfg=$cfg2/$(field m2 pod-config digest)"
fi

# 3. A tampered record (m1's kernel digest) fails --verify: one line, status 122; restored, it passes.
cp "$LOG" "$D/log.orig"
python3 - "$LOG" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
for i, l in enumerate(lines):
    r = json.loads(l)
    if r["content"]["pod_name"] == "m1" and r["content"]["event"] == "kernel":
        r["digests"][0]["digest"] = "00" * 32
        lines[i] = json.dumps(r, separators=(",", ":"))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
EOF
lim $Q $H attest --verify >/dev/null 2>"$D/tamper.err"; trc=$?
cp "$D/log.orig" "$LOG"
lim $Q $H attest --verify >/dev/null 2>&1; vrc=$?
if [ $trc -eq 122 ] && [ "$(wc -l < "$D/tamper.err")" -eq 1 ] && grep -q "does not account for PCR 15" "$D/tamper.err" && [ $vrc -eq 0 ]; then
    ok measure-tamper-fails-verify
else
    bad measure-tamper-fails-verify "rc=$trc restored=$vrc err=$(head -c 300 "$D/tamper.err")"
fi
lim $Q $H rm m1 m2 m3 >/dev/null 2>&1

# 4. No TPM (the testbed has no /dev/tpmrm0, and measure.json is gone): the pod runs, one warning
#    line, and its 5 events are logged without the TPM part.
rm "$HUSK_ROOT/measure.json"
before=$(records)
out=$(lim $V $H run --rm --network none busybox echo ran 2>"$D/notpm.err"); rc=$?
after=$(records)
if [ $rc -eq 0 ] && [ "$out" = ran ] && [ "$(wc -l < "$D/notpm.err")" -eq 1 ] \
   && grep -q "warning: pod .*'s launch is logged in .* but not measured into a TPM: no /dev/tpmrm0" "$D/notpm.err" \
   && [ $((after - before)) -eq 5 ] && ! tail -n 5 "$LOG" | grep -q '"tpm"'; then
    ok measure-no-tpm-warns-and-logs
else
    bad measure-no-tpm-warns-and-logs "rc=$rc out=$out records $before -> $after err=$(head -c 300 "$D/notpm.err")"
fi

# 5. No TPM and --require-tpm (foreground, detached, pod run), or measure.json's require_tpm:
#    refused with status 119, one line, no pod left, nothing logged.
before=$(records)
lim $V $H run --rm --require-tpm --network none busybox true >/dev/null 2>"$D/req1.err"; r1=$?
lim $V $H run -d --require-tpm --network none busybox true >/dev/null 2>"$D/req2.err"; r2=$?
lim $V $H pod run --require-tpm --name m4 "$D/two.toml" >/dev/null 2>"$D/req3.err"; r3=$?
echo '{"require_tpm":true}' > "$HUSK_ROOT/measure.json"
lim $V $H run --network none busybox true >/dev/null 2>"$D/req4.err"; r4=$?
rm "$HUSK_ROOT/measure.json"
after=$(records)
lines=$(cat "$D/req1.err" "$D/req2.err" "$D/req3.err" "$D/req4.err" | wc -l)
if [ $r1 -eq 119 ] && [ $r2 -eq 119 ] && [ $r3 -eq 119 ] && [ $r4 -eq 119 ] && [ "$lines" -eq 4 ] \
   && grep -q "cannot be measured into a TPM, which --require-tpm requires" "$D/req1.err" \
   && grep -q "require_tpm" "$D/req4.err" && [ "$(pods_left)" -eq 0 ] && [ "$before" -eq "$after" ]; then
    ok measure-require-tpm-refuses
else
    bad measure-require-tpm-refuses "rc=$r1/$r2/$r3/$r4 lines=$lines pods=$(pods_left) records $before -> $after err=$(head -c 400 "$D/req1.err" "$D/req2.err" "$D/req4.err")"
fi

echo "measure-e2e: $fails failed"
[ "$fails" -eq 0 ]
