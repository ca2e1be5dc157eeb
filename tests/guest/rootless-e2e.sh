#!/bin/sh
# End to end for rootless husk, on a host with real KVM (the testbed): an ordinary user (uid
# 2000, no account, in the kvm group only) runs pods with no set-uid helper. Checked: run, a
# detached pod with a volume, exec, logs, stop, rm; its VMM inspected from outside (its own user
# namespace mapping only the user's uid, the jail's capabilities in it, no_new_privs, its own
# namespaces); what needs root refused in one line with nothing left (an empty-dir volume, a
# --cgroup-parent the user cannot write). Every case prints `case NAME ok` or
# `case NAME FAILED: why`; tests/tests/rootless_e2e.rs checks each line.
# Usage: rootless-e2e.sh HUSK SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
suite_init "$@"
unset HUSK_ROOT  # the user's own store (as_user), not the run's

U=2000
# The kvm group, or a gid standing in for it on a host without one.
KVM_GID=$(getent group kvm | cut -d: -f3)
KVM_GID=${KVM_GID:-2001}
chgrp "$KVM_GID" /dev/kvm && chmod 0660 /dev/kvm || { echo "case rootless-setup FAILED: /dev/kvm"; exit 1; }
HOME_U=/tmp/rootless-home
mkdir -p "$HOME_U/vol" && chown -R $U:$U "$HOME_U"
python3 "$repo/tests/images/mkimage.py" "$D/img" >/dev/null && chmod -R a+rX "$D" \
    || { echo "case rootless-setup FAILED: mkimage"; exit 1; }
# As the user: no HUSK_ROOT, so the store is $XDG_DATA_HOME/husk (here $HOME/.local/share/husk).
as_user() {
    setpriv --reuid=$U --regid=$U --groups="$KVM_GID" --inh-caps=-all --bounding-set=-all \
        env -i PATH="$PATH" HOME="$HOME_U" ${HUSK_TPM:+HUSK_TPM=$HUSK_TPM} "$@"
}
as_user $H import --tag busybox "$D/img" >/dev/null 2>"$D/import.err" \
    || { echo "case rootless-setup FAILED: import: $(cat "$D/import.err")"; exit 1; }
STORE="$HOME_U/.local/share/husk"

# 1. husk run in the foreground: the app's output and status; warnings only about cgroups
out=$(lim $V as_user $H run --rm busybox sh -c 'echo hi; id -u' 2>"$D/run.err"); rc=$?
other=$(grep -v 'warning: .*cgroup' "$D/run.err" | grep -c .)
if [ $rc -eq 0 ] && [ "$(echo $out)" = "hi 0" ] && [ "$other" = 0 ]; then
    ok rootless-run
else
    bad rootless-run "rc=$rc out=[$out] err=$(cat "$D/run.err")"
fi

# 2. detached, with a volume of the user's: exec, logs, the volume's files the user's
rm -f "$HOME_U/vol/f"
lim $V as_user $H run -d --name bg -v "$HOME_U/vol:/data" busybox \
    sh -c 'echo in-vol > /data/f; echo started; while true; do sleep 0.2; done' >/dev/null 2>"$D/bg.err"
i=0; while [ ! -s "$HOME_U/vol/f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ex=$(lim $Q as_user $H exec bg cat /data/f 2>&1)
logs=$(lim $Q as_user $H logs bg 2>&1)
owner=$(stat -c '%u:%g' "$HOME_U/vol/f" 2>&1)
# only the user's own id is mapped: a chown to another id fails in the guest
lim $Q as_user $H exec bg chown 1000 /data/f >/dev/null 2>&1 && chowned=yes || chowned=no
if [ "$ex" = in-vol ] && echo "$logs" | grep -q '^started$' && [ "$owner" = "$U:$U" ] && [ $chowned = no ]; then
    ok rootless-exec-logs-volume
else
    bad rootless-exec-logs-volume "exec=[$ex] logs=[$logs] owner=$owner chown to 1000 worked: $chowned err=$(cat "$D/bg.err")"
fi

# 3. its VMM from outside: the user's own uid, mapped alone in a user namespace of its own;
#    the jail's capabilities there, no_new_privs, namespaces of its own
pid=$(lim $Q as_user $H inspect bg | grep -o '"vmm_pid": [0-9]*' | grep -o '[0-9]*$')
umap=$(awk '{$1 = $1; print}' "/proc/$pid/uid_map" 2>&1)
st=$(grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):' "/proc/$pid/status" 2>&1 | tr -s '\t ' ' ' | tr '\n' ' ')
same=
for ns in user mnt net ipc uts; do
    [ "$(readlink "/proc/$pid/ns/$ns")" = "$(readlink /proc/self/ns/$ns)" ] && same="$same $ns"
done
want="Uid: $U $U $U $U CapEff: 00000000000000cb CapBnd: 00000000000000cb NoNewPrivs: 1 "
if [ -n "$pid" ] && [ "$umap" = "0 $U 1" ] && [ "$st" = "$want" ] && [ -z "$same" ]; then
    ok rootless-jail
else
    bad rootless-jail "pid=$pid uid_map=[$umap] status=[$st] shared:$same"
fi
lim $V as_user $H stop bg >/dev/null 2>&1
lim $Q as_user $H rm bg >/dev/null 2>&1
left=$(ls -A "$STORE/pods" 2>/dev/null | grep -v '^\.' | tr '\n' ' ')
[ -z "$left" ] && [ ! -d "/proc/$pid" ] && ok rootless-stop-rm || bad rootless-stop-rm "left: [$left]"

# 4. what needs root is refused in one line, with nothing left behind
cat > "$D/empty.toml" <<EOT
[[volumes]]
name = "scratch"
[[apps]]
name = "w"
image = "busybox"
command = ["true"]
mounts = [{ volume = "scratch", path = "/v" }]
EOT
chmod a+r "$D/empty.toml"
lim $V as_user $H pod run --rm "$D/empty.toml" >/dev/null 2>"$D/empty.err"; rc1=$?
lim $V as_user $H run --rm --cgroup-parent /husk busybox true >/dev/null 2>"$D/cg.err"; rc2=$?
lim $V as_user $H run --rm --network tap busybox true >/dev/null 2>"$D/tap.err"; rc3=$?
left=$(ls -A "$STORE/pods" 2>/dev/null | grep -v '^\.' | tr '\n' ' ')
# (besides the warning that the pod would have had no host cgroup, as in case 1)
errs=$(grep -v 'warning: .*host cgroup' "$D/empty.err" | grep -c .)
if [ $rc1 -ne 0 ] && [ "$errs" = 1 ] && grep -q 'need root' "$D/empty.err" \
   && [ $rc2 -eq 125 ] && [ "$(grep -c . "$D/cg.err")" = 1 ] \
   && [ $rc3 -eq 125 ] && [ "$(grep -c . "$D/tap.err")" = 1 ] && grep -q 'tap needs root' "$D/tap.err" \
   && [ -z "$left" ]; then
    ok rootless-refusals
else
    bad rootless-refusals "empty-dir rc=$rc1 [$(cat "$D/empty.err")]; cgroup-parent rc=$rc2 [$(cat "$D/cg.err")]; tap rc=$rc3 [$(cat "$D/tap.err")]; left [$left]"
fi

echo "rootless-e2e: $fails failed"
[ $fails -eq 0 ]
