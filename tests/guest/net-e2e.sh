#!/bin/sh
# End to end for pod networking (`--network user` through passt, the default; `-p`,
# `--network none`, `user:host-loopback`, --hostname/--add-host/--dns, the host-side filter) in
# the testbed, which has no network card: every address used here is one this script creates,
# so nothing leaves the testbed (test-environment.md §6):
#   - 127.0.0.1 of the testbed: busybox httpd on :18081, which a pod reaches at the gateway
#     10.0.2.2 only with --network user:host-loopback (passt's --map-gw);
#   - "the world": a network namespace husk-far joined to the testbed by a veth pair, the
#     testbed's end 10.99.0.1/24 (an address of the host itself, with an httpd on :18082 that
#     pods must not reach), the far end 10.99.0.2 with an httpd ("from-far") and dnsmasq
#     answering svc.test, plus 169.254.169.254 (a stand-in for a cloud's metadata service,
#     which pods must not reach either), routed from the testbed via 10.99.0.2.
# Timeouts are `timeout N wget`, not `wget -T`: busybox-static's wget crashed with -T here
# (SIGSEGV, status 139).
# Every case prints `case NAME ok` or `case NAME FAILED: why`; tests/tests/net_e2e.rs checks each.
# Usage: net-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
BULK=400  # 64 MiB at the testbed's nested-virtualisation speed
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

# The far side ("the world") and the host's own second address.
ip netns del husk-far 2>/dev/null
ip netns add husk-far || { echo "ip netns add failed"; exit 1; }
ip link add hfar0 type veth peer name far0 && ip link set far0 netns husk-far &&
ip addr add 10.99.0.1/24 dev hfar0 && ip link set hfar0 up &&
ip netns exec husk-far sh -c 'ip link set lo up && ip link set far0 up &&
    ip addr add 10.99.0.2/24 dev far0 && ip addr add 169.254.169.254/32 dev far0' &&
ip route add 169.254.169.254/32 via 10.99.0.2 || { echo "the far side could not be set up"; exit 1; }
mkdir -p "$D/far" "$D/meta" "$D/own"
echo from-far > "$D/far/index.html"
ln "$D/www/big" "$D/far/big"
echo metadata > "$D/meta/index.html"
echo host-own-address > "$D/own/index.html"
ip netns exec husk-far "$BB" httpd -f -p 10.99.0.2:80 -h "$D/far" & far_pid=$!
ip netns exec husk-far "$BB" httpd -f -p 169.254.169.254:80 -h "$D/meta" & meta_pid=$!
"$BB" httpd -f -p 10.99.0.1:18082 -h "$D/own" & own_pid=$!
ip netns exec husk-far dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address=10.99.0.2 --bind-interfaces --address=/svc.test/10.99.0.2 \
    --pid-file="$D/dnsmasq.pid" 2>"$D/dnsmasq.log" & dns_pid=$!
cleanup() {
    kill $httpd_pid $far_pid $meta_pid $own_pid $dns_pid 2>/dev/null
    ip route del 169.254.169.254/32 2>/dev/null
    ip link del hfar0 2>/dev/null
    ip netns del husk-far 2>/dev/null
}
trap cleanup EXIT
sleep 0.5
husk_tables() { nft list tables 2>/dev/null | grep -c husk_net_; }

# 1. --network none: loopback only
out=$(lim $V $H run --rm --network none busybox sh -c 'cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " "'); rc=$?
[ $rc -eq 0 ] && [ "$out" = lo ] && ok none-loopback-only || bad none-loopback-only "rc=$rc out=$out"

# 2. user:host-loopback: eth0 configured, the host's loopback server reached at the gateway,
# hostname/hosts/resolv.conf
t0=$(date +%s.%N)
out=$(lim $V $H run --rm --network user:host-loopback --hostname podhost --add-host db.test:10.0.2.2 --dns 10.0.2.3 busybox sh -c '
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
out=$(lim $BULK $H run --rm --network user:host-loopback -m 512m busybox sh -c 'timeout 380 wget -q -O - http://10.0.2.2:18081/big | sha256sum | cut -d" " -f1'); rc=$?
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


# 4b. two pods: another pod reaches neither the first one's published port (through the host's
# addresses) nor the host's loopback; the host does reach it.
out=$(lim $V $H run --rm busybox sh -c '
  timeout 10 wget -q -O - http://10.99.0.1:8080/ && echo reached-by-host-address
  timeout 10 wget -q -O - http://10.0.2.2:8080/ && echo reached-by-gateway
  echo done'); rc=$?
[ $rc -eq 0 ] && [ "$out" = done ] && [ "$page" = hello-from-pod ] && ok two-pods-isolated || bad two-pods-isolated "rc=$rc out=$out"

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
[ $rc -eq 125 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "use user, user:host-loopback, tap or none" && ok error-bad-network || bad error-bad-network "rc=$rc out=$out"
out=$(HUSK_PASST=/nonexistent/passt lim $Q $H run --rm --network user busybox true 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "needs passt" && [ "$(pods_left)" -eq 0 ] && ok error-no-passt || bad error-no-passt "rc=$rc out=$out"


# 7. the default network is user: the world is reachable (by address and by a name the test's
# own DNS server answers, with --dns), two apps of one pod reach each other on localhost.
cat > "$D/pair.toml" <<'TOML'
name = "netpair"
dns = ["10.99.0.2"]
[[apps]]
name = "client"
image = "busybox"
command = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:8000/ 2>/dev/null && break; sleep 0.5; done; wget -q -O - http://10.99.0.2/; wget -q -O - http://svc.test/; exit 7"]
[[apps]]
name = "server"
image = "busybox"
command = ["sh", "-c", "mkdir /w && echo from-the-other-app > /w/index.html && exec httpd -f -p 127.0.0.1:8000 -h /w"]
TOML
out=$(lim $V $H pod run --exit-on-first "$D/pair.toml" 2>"$D/pair.err"); rc=$?
exp="client | from-the-other-app
client | from-far
client | from-far"
[ $rc -eq 7 ] && [ "$(echo "$out" | grep '^client')" = "$exp" ] && ok default-user-world-dns-localhost \
    || bad default-user-world-dns-localhost "rc=$rc out=$out err=$(cat "$D/pair.err") dnsmasq: $(cat "$D/dnsmasq.log")"

# 8. the host-side filter: the host reaches its own second address and the metadata stand-in,
# a pod by default does not (nor the host's loopback at the gateway); its table exists while it
# runs; user:host-loopback opens the loopback only.
host_sees=$(timeout 10 "$BB" wget -q -O - http://10.99.0.1:18082/)$(timeout 10 "$BB" wget -q -O - http://169.254.169.254/)
id=$(lim $V $H run -d --name filtered busybox sleep 1000); rc=$?
tables=$(husk_tables)
out=$(lim $Q $H exec filtered sh -c '
  timeout 10 wget -q -O - http://10.99.0.1:18082/ && echo reached-host-address
  timeout 10 wget -q -O - http://169.254.169.254/ && echo reached-link-local
  timeout 10 wget -q -O - http://10.0.2.2:18081/small && echo reached-host-loopback
  timeout 10 wget -q -O - http://10.99.0.2/'); erc=$?
[ "$host_sees" = host-own-addressmetadata ] && [ $rc -eq 0 ] && [ "$tables" -eq 1 ] && [ "$out" = from-far ] \
    && ok filter-host-and-link-local || bad filter-host-and-link-local "host=$host_sees rc=$rc erc=$erc tables=$tables out=$out"
out=$(lim $V $H run --rm --network user:host-loopback busybox sh -c '
  timeout 10 wget -q -O - http://10.0.2.2:18081/small
  timeout 10 wget -q -O - http://10.99.0.1:18082/ && echo reached-host-address
  timeout 10 wget -q -O - http://169.254.169.254/ && echo reached-link-local
  true'); rc=$?
[ $rc -eq 0 ] && [ "$out" = from-the-host ] && ok filter-host-loopback-opt-in || bad filter-host-loopback-opt-in "rc=$rc out=$out"

# 9. kill -9 of the filtered pod's supervisor, then gc: no table, no passt, no cgroup left.
sup=$(lim $Q $H inspect filtered | grep -o '"supervisor_pid": [0-9]*' | grep -o '[0-9]*$')
[ -n "$sup" ] && kill -9 "$sup"
sleep 1
lim $Q $H gc >/dev/null 2>&1
cg_left=$(find /sys/fs/cgroup -maxdepth 3 -name 'husk-net-*' 2>/dev/null | wc -l)
[ -n "$sup" ] && [ "$(husk_tables)" -eq 0 ] && [ "$(passts)" -eq 0 ] && [ "$cg_left" -eq 0 ] && [ "$(pods_left)" -eq 0 ] \
    && ok filter-removed-after-kill || bad filter-removed-after-kill "sup=$sup tables=$(husk_tables) passts=$(passts) cgroups=$cg_left pods=$(pods_left)"

# 9b. IPv6, user mode. Every case above ran without default routes, so passt had no IPv6 and the
# pods no IPv6 address. With default routes for IPv4 and IPv6 (both via the far side, which
# forwards nothing), passt carries IPv6 and a pod gets fd00::15/64 via fd00::2: it reaches the far
# side's IPv6 address but not the host's own (the filter covers IPv6) nor, by default, its
# loopback at the gateway fd00::2 (with user:host-loopback it does), and a published port
# answers on the host's ::1. Then, with the IPv6 route gone again, a pod has no IPv6 address.
v6_ok=1
{ ip -6 addr add fd99::1/64 dev hfar0 nodad &&
  ip netns exec husk-far ip -6 addr add fd99::2/64 dev far0 nodad &&
  ip route add default via 10.99.0.2 && ip -6 route add default via fd99::2; } || v6_ok=0
ip netns exec husk-far "$BB" httpd -f -p 8086 -h "$D/far" & far6_pid=$!
"$BB" httpd -f -p 18086 -h "$D/own" & own6_pid=$!
sleep 0.5
host_sees6=$(timeout 10 "$BB" wget -q -O - "http://[fd99::2]:8086/")$(timeout 10 "$BB" wget -q -O - "http://[fd99::1]:18086/")
id=$(lim $V $H run -d --name v6 -p 8087:80 busybox sh -c 'mkdir /w; echo hello-v6 > /w/index.html; exec httpd -f -p 80 -h /w'); rc=$?
page=$(fetch "http://[::1]:8087/" 60)
out=$(lim $Q $H exec v6 sh -c '
  grep -c "^fd000000000000000000000000000015 .* eth0$" /proc/net/if_inet6
  timeout 10 wget -q -O - "http://[fd99::2]:8086/"
  timeout 10 wget -q -O - "http://[fd99::1]:18086/" && echo reached-host-address6
  timeout 10 wget -q -O - "http://[fd00::2]:18086/" && echo reached-gateway6
  true'); erc=$?
lo6=$(lim $V $H run --rm --network user:host-loopback busybox wget -q -O - "http://[fd00::2]:18086/"); lrc=$?
[ $v6_ok -eq 1 ] && [ "$host_sees6" = from-farhost-own-address ] && [ $rc -eq 0 ] && [ "$page" = hello-v6 ] \
    && [ "$out" = "1
from-far" ] && [ $lrc -eq 0 ] && [ "$lo6" = host-own-address ] && ok user-ipv6 \
    || bad user-ipv6 "setup=$v6_ok host=$host_sees6 rc=$rc page=$page erc=$erc out=$out lrc=$lrc lo6=$lo6 $(cat "$HUSK_ROOT"/pods/*/passt.log 2>/dev/null)"
lim $V $H stop v6 >/dev/null
lim $Q $H rm v6 >/dev/null
ip -6 route del default via fd99::2
out=$(lim $V $H run --rm busybox sh -c 'grep -c "^fd00" /proc/net/if_inet6; wget -q -O - http://10.99.0.2/'); rc=$?
[ $rc -eq 0 ] && [ "$out" = "0
from-far" ] && ok user-no-ipv6-without-route || bad user-no-ipv6-without-route "rc=$rc out=$out"
ip route del default via 10.99.0.2
kill $far6_pid $own6_pid 2>/dev/null

# 10. --network tap: a TAP device in the pod's own network namespace, mirrored to a veth on the
# bridge husk0 (10.89.0.0/16) with NAT. A published port answers from the testbed's loopback and
# from the far side (through the testbed's address); the pod reaches the world and a name by
# --dns, and 64 MiB each way arrive intact (with checksum and segmentation offloads).
tap_state() {
    echo "netns=$(ip netns list 2>/dev/null | grep -c -E '^husk-[0-9a-f]{12}')" \
        "links=$(ip -o link show 2>/dev/null | grep -c -E ': (husk0|hk[0-9a-f]+)[@:]')" \
        "tables=$(nft list tables 2>/dev/null | grep -c husk_tap)" \
        "leases=$(ls /run/husk/net-tap/leases 2>/dev/null | wc -l)"
}
tap_clean="netns=0 links=0 tables=0 leases=0"
id=$(lim $V $H run -d --name tapweb --network tap -p 8081:80 --dns 10.99.0.2 -m 512m busybox sh -c '
  mkdir -p /www; echo hello-from-tap-pod > /www/index.html
  dd if=/dev/urandom of=/www/big bs=1M count=64 2>/dev/null; sha256sum /www/big | cut -d" " -f1 > /www/sum
  exec httpd -f -p 80 -h /www'); rc=$?
page=$(fetch http://127.0.0.1:8081/ 60)
# The guest took the offloads: the kernel's TAP then segments and checksums for it.
tapns=$(ip netns list 2>/dev/null | grep -o -E '^husk-[0-9a-f]{12}' | head -1)
offloads=$(ip netns exec "$tapns" ethtool -k tap0 2>&1)
tso=$(echo "$offloads" | grep -c -E '^(tcp-segmentation-offload|tx-checksumming): on')
far_page=$(ip netns exec husk-far timeout 10 "$BB" wget -q -O - http://10.99.0.1:8081/ 2>&1)
[ $rc -eq 0 ] && [ "$page" = hello-from-tap-pod ] && [ "$far_page" = hello-from-tap-pod ] \
    && [ "$tso" -eq 2 ] \
    && ok tap-publish-http || bad tap-publish-http "rc=$rc page=$page far=$far_page offloads: $(echo "$offloads" | grep -E '^(tcp-seg|tx-check)' | tr '\n' ' ') id=$id state: $(tap_state)"
sum=$(fetch http://127.0.0.1:8081/sum 20)
t0=$(date +%s)
got=$(timeout $BULK "$BB" wget -q -O - http://127.0.0.1:8081/big | sha256sum | cut -d' ' -f1)
echo "figure: tap: 64 MiB pod -> host: $(($(date +%s) - t0)) s"
[ -n "$sum" ] && [ "$got" = "$sum" ] && ok tap-bulk-pod-to-host || bad tap-bulk-pod-to-host "got=$got want=$sum"
t0=$(date +%s)
out=$(lim $BULK $H exec tapweb sh -c 'timeout 380 wget -q -O - http://10.99.0.2/big | sha256sum | cut -d" " -f1'); rc=$?
echo "figure: tap: 64 MiB world -> pod: $(($(date +%s) - t0)) s"
[ $rc -eq 0 ] && [ "$out" = "$big_sum" ] && ok tap-bulk-world-to-pod || bad tap-bulk-world-to-pod "rc=$rc got=$out want=$big_sum"
out=$(lim $Q $H exec tapweb sh -c '
  timeout 10 wget -q -O - http://10.99.0.2/; timeout 10 wget -q -O - http://svc.test/
  timeout 10 wget -q -O - http://10.99.0.1:18082/ && echo reached-host-address
  timeout 10 wget -q -O - http://169.254.169.254/ && echo reached-link-local
  ip -4 addr show eth0 | grep -o "inet [0-9./]*"'); rc=$?
addr=$(echo "$out" | sed -n 's|^inet \([0-9.]*\)/16$|\1|p')
[ $rc -eq 0 ] && [ "$(echo "$out" | head -2)" = "from-far
from-far" ] && [ "$(echo "$out" | wc -l)" -eq 3 ] && [ -n "$addr" ] \
    && ok tap-world-dns-filtered || bad tap-world-dns-filtered "rc=$rc out=$out"
ps=$(lim $Q $H ps)
echo "$ps" | grep -q "0.0.0.0:8081->80/tcp" && ok tap-ps-ports || bad tap-ps-ports "ps=$ps"

# 11. another TAP pod reaches neither the first one (directly, on the bridge) nor its published
# port through the host's address; a taken port is refused before boot with nothing left.
out=$(lim $V $H run --rm --network tap busybox sh -c "
  timeout 10 wget -q -O - http://$addr/ && echo reached-pod
  timeout 10 wget -q -O - http://10.99.0.1:8081/ && echo reached-published
  timeout 10 wget -q -O - http://10.89.0.1:8081/ && echo reached-gateway
  echo done"); rc=$?
[ $rc -eq 0 ] && [ "$out" = done ] && [ -n "$addr" ] && ok tap-two-pods-isolated || bad tap-two-pods-isolated "rc=$rc addr=$addr out=$out"
before=$(tap_state)
out=$(lim $V $H run --rm --network tap -p 8081:80 busybox true 2>&1); rc=$?
[ $rc -eq 125 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "already in use" \
    && [ "$(tap_state)" = "$before" ] && [ "$(pods_left)" -eq 1 ] && ok tap-error-port-in-use \
    || bad tap-error-port-in-use "rc=$rc out=$out before=$before after=$(tap_state)"
lim $V $H stop tapweb >/dev/null
lim $Q $H rm tapweb >/dev/null
[ "$(tap_state)" = "$tap_clean" ] && ok tap-removed-with-pod || bad tap-removed-with-pod "$(tap_state)"

# 12. kill -9 of a TAP pod's supervisor and its VMM, then gc: namespace, links, rules, lease gone.
id=$(lim $V $H run -d --name tapkill --network tap -p 8082:80 busybox sleep 1000); rc=$?
during=$(tap_state)
sup=$(lim $Q $H inspect tapkill | grep -o '"supervisor_pid": [0-9]*' | grep -o '[0-9]*$')
vmm=$(lim $Q $H inspect tapkill | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$')
[ -n "$sup" ] && kill -9 "$sup"
[ -n "$vmm" ] && kill -9 "$vmm"
sleep 1
gc_out=$(lim $Q $H gc 2>&1)
[ $rc -eq 0 ] && [ "$during" = "netns=1 links=2 tables=2 leases=1" ] && [ "$(tap_state)" = "$tap_clean" ] \
    && [ "$(pods_left)" -eq 0 ] && ok tap-removed-after-kill || bad tap-removed-after-kill "rc=$rc during=$during after=$(tap_state) pods=$(pods_left) gc: $gc_out"

echo "net-e2e: $fails failed"
[ $fails -eq 0 ]
