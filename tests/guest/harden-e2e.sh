#!/bin/sh
# End to end for what apps run with inside the guest (issue 13, part 2), on real KVM in the
# testbed: docker's default capabilities and podman's default seccomp profile, --cap-add,
# --cap-drop ALL, --security-opt seccomp=unconfined|PROFILE.json and no-new-privileges,
# --read-only with --tmpfs, --privileged, the same for `husk exec` into an app, `husk inspect`
# showing each app's settings, and bad input refused before anything is made. Every case prints
# `case NAME ok` or `case NAME FAILED: why` (tests/tests/harden_e2e.rs checks each line); every
# husk step runs under `lim` (tests/guest/lib.sh). Five pods boot in all, with `--network none`
# (nothing here needs a network).
# Usage: harden-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
# The capability and seccomp lines of /proc/self/status, one line: `CapInh: 0...0 CapPrm: ...`.
STATUS="grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status | tr -s '\t ' ' ' | tr '\n' ' '; echo"
# docker's 14 capabilities (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP)
DOCKER=00000000a80425fb
# `husk inspect`'s security entries, one line per app: name, number of capabilities, MKNOD or -,
# seccomp, no_new_privileges, read_only_rootfs, privileged, tmpfs mounts (or -).
security_of() {
    python3 -c 'import json, sys
for pod in json.load(sys.stdin):
    for s in pod["security"]:
        print(s["app"], len(s["capabilities"]), "MKNOD" if "CAP_MKNOD" in s["capabilities"] else "-",
              s["seccomp"], s["no_new_privileges"], s["read_only_rootfs"], s["privileged"],
              ",".join(s["tmpfs"]) or "-")'
}
DEFAULT_STATUS="CapInh: 0000000000000000 CapPrm: $DOCKER CapEff: $DOCKER CapBnd: $DOCKER CapAmb: 0000000000000000 NoNewPrivs: 0 Seccomp: 2 Seccomp_filters: 1 "

rm -rf "$HUSK_ROOT"
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null || { echo "mkimage failed"; exit 1; }
lim $Q $H import --tag busybox "$D/img" >/dev/null || { echo "import failed"; exit 1; }

# 1. the defaults, in the app and in `husk exec` (root: docker's set effective; another user: none
# effective, the same bounding set), and what the default profile refuses: swapon is on its EPERM
# list whatever the capabilities; mount and sethostname need CAP_SYS_ADMIN (the kernel's check,
# and the profile's `includes` for sethostname)
id=$(lim $V $H run -d --network none --name hard busybox sh -c "$STATUS; exec sleep 1000"); rc=$?
i=0; while [ $rc -eq 0 ] && [ -z "$($H logs hard 2>&1)" ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
app=$(lim $Q $H logs hard 2>&1)
ex=$(lim $Q $H exec hard sh -c "$STATUS")
user=$(lim $Q $H exec -u 1000 hard sh -c "$STATUS")
denied=$(lim $Q $H exec hard sh -c 'swapon /etc/passwd; mount -t tmpfs none /run; hostname other' 2>&1)
if [ $rc -eq 0 ] && [ "$app" = "$DEFAULT_STATUS" ] && [ "$ex" = "$DEFAULT_STATUS" ] \
   && echo "$user" | grep -q "CapEff: 0000000000000000 CapBnd: $DOCKER " \
   && echo "$denied" | grep -q 'swapon: /etc/passwd: Operation not permitted' \
   && echo "$denied" | grep -q 'mount: permission denied' \
   && echo "$denied" | grep -q 'hostname: sethostname: Operation not permitted'; then
    ok defaults
else
    bad defaults "rc=$rc app=[$app] exec=[$ex] user=[$user] denied=[$denied]"
fi

# 2. husk inspect says what each app runs with
sec=$(lim $Q $H inspect hard | security_of 2>&1)
if [ "$sec" = "busybox 14 MKNOD default False False False -" ]; then
    ok inspect-defaults
else
    bad inspect-defaults "$sec"
fi
lim $V $H stop hard >/dev/null
lim $Q $H rm hard >/dev/null

# 3. --cap-add SYS_ADMIN: mount and sethostname work now (the profile follows the capabilities),
# swapon is still refused by the profile; with no-new-privileges, a read-only root and a tmpfs
out=$(lim $V $H run --rm --network none --cap-add SYS_ADMIN --security-opt no-new-privileges --read-only \
    --tmpfs /scratch:1m busybox sh -c "$STATUS; swapon /etc/passwd; mount -t tmpfs none /run && echo mounted;
    hostname other && hostname; touch /x; echo in-tmpfs > /scratch/f && cat /scratch/f" 2>&1)
if echo "$out" | grep -q "CapEff: 00000000a82425fb .*NoNewPrivs: 1 Seccomp: 2 " \
   && echo "$out" | grep -q 'swapon.*Operation not permitted' \
   && echo "$out" | grep -qx mounted && echo "$out" | grep -qx other \
   && echo "$out" | grep -q 'touch: /x: Read-only file system' && echo "$out" | grep -qx in-tmpfs; then
    ok cap-add-sys-admin
else
    bad cap-add-sys-admin "$out"
fi

# 4. seccomp=unconfined: no profile, only the agent's vsock/io_uring guard (one filter); swapon gets
# the kernel's own answer (this kernel has no swap: ENOSYS), not the profile's EPERM. --cap-drop ALL
# with --cap-add SYS_ADMIN: that capability alone
out=$(lim $V $H run --rm --network none --security-opt seccomp=unconfined --cap-drop ALL --cap-add SYS_ADMIN \
    busybox sh -c "$STATUS; swapon /etc/passwd; mount -t tmpfs none /run && echo mounted" 2>&1)
if echo "$out" | grep -q "CapEff: 0000000000200000 CapBnd: 0000000000200000 " \
   && echo "$out" | grep -q "Seccomp: 2 Seccomp_filters: 1 " && echo "$out" | grep -q '^swapon' \
   && ! echo "$out" | grep -q 'Operation not permitted' && echo "$out" | grep -qx mounted; then
    ok seccomp-unconfined
else
    bad seccomp-unconfined "$out"
fi

# 5. --privileged: every capability of the guest kernel, no filter at all, /sys writable; still in
# the pod's VM
out=$(lim $V $H run --rm --network none --privileged busybox sh -c \
    "$STATUS; printf 'full %016x\n' \$(( (1 << (\$(cat /proc/sys/kernel/cap_last_cap) + 1)) - 1 )); swapon /etc/passwd; mount -t tmpfs none /run && echo mounted; grep ' /sys ' /proc/mounts" 2>&1)
full=$(echo "$out" | sed -n 's/^full //p')
if [ -n "$full" ] && echo "$out" | grep -q "CapEff: $full CapBnd: $full " && echo "$out" | grep -q "Seccomp: 0 " \
   && ! echo "$out" | grep -q 'Operation not permitted' && echo "$out" | grep -qx mounted \
   && echo "$out" | grep -q ' sysfs rw,'; then
    ok privileged
else
    bad privileged "$out"
fi

# 6. a manifest's apps, each with its own settings, kept by `husk exec` into them: "locked" drops
# every capability, sets no-new-privileges, has a read-only root and a 1 MiB tmpfs; "custom" runs
# under a profile of its own (relative to the manifest) that refuses mkdir
cat > "$D/deny-mkdir.json" <<'JSON'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
JSON
cat > "$D/pod.toml" <<'TOML'
name = "apps"
network = "none"
[[apps]]
name = "locked"
image = "busybox"
command = ["sleep", "1000"]
cap_drop = ["ALL"]
security_opt = ["no-new-privileges"]
read_only = true
tmpfs = ["/scratch:1m"]
[[apps]]
name = "custom"
image = "busybox"
command = ["sleep", "1000"]
security_opt = ["seccomp=deny-mkdir.json"]
TOML
lim $V $H pod run -d "$D/pod.toml" >/dev/null; rc=$?
locked=$(lim $Q $H exec --app locked apps sh -c "$STATUS; touch /x; echo in-tmpfs > /scratch/f && cat /scratch/f;
    touch /tmp/t && echo tmp-ok; head -c 2000000 /dev/zero > /scratch/big || echo scratch-full; chown 1000 /tmp/t;
    grep ' /scratch ' /proc/mounts" 2>&1)
custom=$(lim $Q $H exec --app custom apps sh -c "$STATUS; mkdir /tmp/d; touch /tmp/f && echo touch-ok" 2>&1)
if [ $rc -eq 0 ] && echo "$locked" | grep -q 'CapPrm: 0000000000000000 CapEff: 0000000000000000 CapBnd: 0000000000000000 CapAmb: 0000000000000000 NoNewPrivs: 1 ' \
   && echo "$locked" | grep -q 'touch: /x: Read-only file system' && echo "$locked" | grep -qx in-tmpfs \
   && echo "$locked" | grep -qx tmp-ok && echo "$locked" | grep -qx scratch-full \
   && echo "$locked" | grep -q 'chown.*Operation not permitted' \
   && echo "$locked" | grep ' /scratch ' | grep -q 'nosuid,nodev,noexec.*size=1024k'; then
    ok manifest-locked-app
else
    bad manifest-locked-app "rc=$rc $locked"
fi
if [ $rc -eq 0 ] && echo "$custom" | grep -q "CapEff: $DOCKER .*NoNewPrivs: 0 Seccomp: 2 " \
   && echo "$custom" | grep -q "mkdir: can't create directory '/tmp/d': Operation not permitted" \
   && echo "$custom" | grep -qx touch-ok; then
    ok manifest-custom-profile
else
    bad manifest-custom-profile "rc=$rc $custom"
fi
sec=$(lim $Q $H inspect apps | security_of 2>&1)
if [ "$sec" = "locked 0 - default True True False /scratch:size=1048576,mode=1777,rw,noexec,nosuid,nodev
custom 14 MKNOD $D/deny-mkdir.json False False False -" ]; then
    ok inspect-apps
else
    bad inspect-apps "$sec"
fi
lim $V $H stop apps >/dev/null
lim $Q $H rm apps >/dev/null

# 7. bad input: one line, status 125, no pod made
echo '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [' > "$D/broken.json"
why=""
for args in "--cap-add SYS_FLY" "--cap-drop nope" "--security-opt seccomp=$D/missing.json" \
            "--security-opt seccomp=$D/broken.json" "--security-opt apparmor=unconfined" \
            "--security-opt no-new-privileges=maybe" "--tmpfs scratch" "--tmpfs /s:lots"; do
    # shellcheck disable=SC2086
    lim $Q $H run --rm --network none $args busybox true 2> "$D/bad.err"; brc=$?
    if [ $brc -ne 125 ] || [ "$(wc -l < "$D/bad.err")" -ne 1 ] || ! grep -q -- "${args%% *}" "$D/bad.err" || [ "$(pods_left)" -ne 0 ]; then
        why="$why; $args: rc=$brc pods=$(pods_left) $(cat "$D/bad.err")"
    fi
done
printf 'network = "none"\n[[apps]]\nname = "a"\nimage = "busybox"\ncap_add = ["SYS_FLY"]\n' > "$D/bad.toml"
lim $Q $H pod run "$D/bad.toml" 2> "$D/bad.err"; brc=$?
[ $brc -eq 125 ] && [ "$(wc -l < "$D/bad.err")" -eq 1 ] && grep -q 'app "a" cap_add SYS_FLY: unknown capability' "$D/bad.err" \
    && [ "$(pods_left)" -eq 0 ] || why="$why; manifest cap_add: rc=$brc $(cat "$D/bad.err")"
printf 'network = "none"\n[[apps]]\nname = "a"\nimage = "busybox"\nsecurity_opt = ["seccomp=broken.json"]\n' > "$D/bad.toml"
lim $Q $H pod run "$D/bad.toml" 2> "$D/bad.err"; brc=$?
[ $brc -eq 125 ] && [ "$(wc -l < "$D/bad.err")" -eq 1 ] && grep -q 'broken.json: not a usable seccomp profile' "$D/bad.err" \
    && [ "$(pods_left)" -eq 0 ] || why="$why; manifest profile: rc=$brc $(cat "$D/bad.err")"
[ -z "$why" ] && ok bad-input || bad bad-input "${why#; }"

exit $fails
