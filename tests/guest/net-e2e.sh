#!/bin/sh
# End to end for pod networking (`--network user` through passt, `-p`, `--network none`,
# --hostname/--add-host/--dns) in the testbed, which has no network card: every address used
# here is the testbed's loopback or the pod's own user-mode network, so nothing leaves the
# testbed (test-environment.md §6). The HTTP servers are busybox httpd started by this script on
# 127.0.0.1 of the testbed; a pod reaches them at the gateway address 10.0.2.2, which passt maps
# to the host's loopback (its default --map-gw). Timeouts are `timeout N wget`, not `wget -T`:
# busybox-static's wget crashed with -T here (SIGSEGV, status 139).
# Every case prints `case NAME ok` or `case NAME FAILED: why`; tests/tests/net_e2e.rs checks each.
# Usage: net-e2e.sh HUSK SCRATCH_DIR
set -u
H=$1
D=$2
export HUSK_ROOT="$D/root"
repo=$(cd "$(dirname "$0")/../.." && pwd)
LIM_NOTES="$D/lim.notes"
. "$repo/tests/guest/lib.sh"
V=120 Q=60 BULK=400  # 64 MiB at the testbed's nested-virtualisation speed
fails=0
ok() { echo "case $1 ok"; }
bad() { echo "case $1 FAILED: $2$(lim_stuck)"; fails=$((fails + 1)); }
pods_left() { ls "$HUSK_ROOT/pods" 2>/dev/null | grep -v '^\.' | wc -l; }
passts() { pgrep passt | wc -l; }  # passt re-executes itself as passt.avx2 where it can
BB=$(command -v busybox)
# Fetch URL to stdout, retrying for up to N tries of 0.5 s (a pod's server takes a moment).
fetch() { i=0; while [ $i -lt "$2" ]; do timeout 10 "$BB" wget -q -O - "$1" 2>/dev/null && return 0; sleep 0.5; i=$((i + 1)); done; return 1; }

python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }
ip link set lo up 2>/dev/null || "$BB" ip link set lo up

# The test's own HTTP server on the testbed's loopback: a small file and 64 MiB of random bytes.
mkdir -p "$D/www"
echo from-the-host > "$D/www/small"
dd if=/dev/urandom of="$D/www/big" bs=1M count=64 2>/dev/null
big_sum=$(sha256sum "$D/www/big" | cut -d' ' -f1)
"$BB" httpd -f -p 127.0.0.1:18081 -h "$D/www" & httpd_pid=$!
trap 'kill $httpd_pid 2>/dev/null' EXIT

# 1. --network none: loopback only
out=$(lim $V $H run --rm --network none busybox sh -c 'cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " "'); rc=$?
[ $rc -eq 0 ] && [ "$out" = lo ] && ok none-loopback-only || bad none-loopback-only "rc=$rc out=$out"

# 2. user: eth0 configured, the host's server reached at the gateway, hostname/hosts/resolv.conf
t0=$(date +%s.%N)
out=$(lim $V $H run --rm --network user --hostname podhost --add-host db.test:10.0.2.2 --dns 10.0.2.3 busybox sh -c '
  timeout 20 wget -q -O - http://10.0.2.2:18081/small; hostname; grep db.test /etc/hosts; cat /etc/resolv.conf
  ip -4 addr show eth0 2>/dev/null | grep -o "inet [0-9./]*" || ifconfig eth0 | grep -o "addr:[0-9.]*"') ; rc=$?
t1=$(date +%s.%N)
exp="from-the-host
podhost
10.0.2.2	db.test
nameserver 10.0.2.3"
case "$out" in
"$exp"*10.0.2.15*) [ $rc -eq 0 ] && ok user-fetch-from-host || bad user-fetch-from-host "rc=$rc out=$out" ;;
*) bad user-fetch-from-host "rc=$rc out=$out $(cat "$HUSK_ROOT"/pods/*/passt.log 2>/dev/null)" ;;
esac
echo "figure: run --network user with one fetch: $(echo "$t1 - $t0" | bc 2>/dev/null || echo "?") s"

# 3. 64 MiB host → pod over one TCP connection, every byte checked (sha256 both ends)
t0=$(date +%s)
out=$(lim $BULK $H run --rm --network user -m 512m busybox sh -c 'timeout 380 wget -q -O - http://10.0.2.2:18081/big | sha256sum | cut -d" " -f1'); rc=$?
echo "figure: 64 MiB host -> pod (with pod start): $(($(date +%s) - t0)) s"
[ $rc -eq 0 ] && [ "$out" = "$big_sum" ] && ok bulk-host-to-pod || bad bulk-host-to-pod "rc=$rc got=$out want=$big_sum"

# 4. a published port: busybox httpd in the pod, -p 8080:80, wget from the testbed; then 64 MiB
# pod → host, checked against the sum the pod computed.
id=$(lim $V $H run -d --name web --network user -p 8080:80 -m 512m busybox sh -c '
  mkdir -p /www; echo hello-from-pod > /www/index.html
  dd if=/dev/urandom of=/www/big bs=1M count=64 2>/dev/null; sha256sum /www/big | cut -d" " -f1 > /www/sum
  exec httpd -f -p 80 -h /www'); rc=$?
page=$(fetch http://127.0.0.1:8080/ 60)
sum=$(fetch http://127.0.0.1:8080/sum 20)
t0=$(date +%s)
got=$(timeout $BULK "$BB" wget -q -O - http://127.0.0.1:8080/big | sha256sum | cut -d' ' -f1)
echo "figure: 64 MiB pod -> host: $(($(date +%s) - t0)) s"
ps=$(lim $Q $H ps)
insp=$(lim $Q $H inspect web)
[ $rc -eq 0 ] && [ "$page" = hello-from-pod ] && ok publish-http || bad publish-http "rc=$rc page=$page id=$id $(cat "$HUSK_ROOT"/pods/*/passt.log 2>/dev/null)"
[ -n "$sum" ] && [ "$got" = "$sum" ] && ok bulk-pod-to-host || bad bulk-pod-to-host "got=$got want=$sum"
echo "$ps" | grep -q "0.0.0.0:8080->80/tcp" && echo "$insp" | grep -q '"host_port": 8080' && ok ps-inspect-ports || bad ps-inspect-ports "ps=$ps"

# 5. a host port in use is refused before the VM boots: one line, usage status, nothing left
out=$(lim $V $H run --rm --network user -p 8080:80 busybox true 2>&1); rc=$?
[ $rc -eq 125 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "already in use" \
    && [ "$(pods_left)" -eq 1 ] && [ "$(passts)" -eq 1 ] && ok error-port-in-use || bad error-port-in-use "rc=$rc out=$out pods=$(pods_left) passts=$(passts)"
lim $V $H stop web >/dev/null
lim $Q $H rm web >/dev/null
sleep 1
[ "$(passts)" -eq 0 ] && [ "$(pods_left)" -eq 0 ] && ok passt-reaped || bad passt-reaped "passts=$(passts) pods=$(pods_left)"

# 6. bad input: malformed -p, unknown --network, missing passt: one line each, nothing left
out=$(lim $Q $H run --rm --network user -p 80 busybox true 2>&1); rc=$?
[ $rc -eq 125 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q HOSTPORT && ok error-bad-publish || bad error-bad-publish "rc=$rc out=$out"
out=$(lim $Q $H run --rm --network bridge busybox true 2>&1); rc=$?
[ $rc -eq 125 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "user or none" && ok error-bad-network || bad error-bad-network "rc=$rc out=$out"
out=$(HUSK_PASST=/nonexistent/passt lim $Q $H run --rm --network user busybox true 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "needs passt" && [ "$(pods_left)" -eq 0 ] && ok error-no-passt || bad error-no-passt "rc=$rc out=$out"

echo "net-e2e: $fails failed"
[ $fails -eq 0 ]
