#!/usr/bin/env bash
# testbed.sh: run a command as root inside the nested SVM testbed, where /dev/kvm is real
# (hardware-semantics KVM with nested paging), or directly on a host that already has hardware KVM.
#
# Usage:
#   scripts/testbed.sh [--share DIR]... [--mem MIB] [--cpus N] [--timeout SECS] [--env NAME=VALUE]...
#                      -- CMD [ARGS...]
#
#   --share DIR       make host directory DIR available read-write at the same absolute path inside
#                     (repeatable). The repository (with its build/, created if missing) is always
#                     shared this way.
#   --mem MIB         testbed RAM (default 4096).
#   --cpus N          testbed vCPUs, each a QEMU TCG thread (default 2).
#   --timeout SECS    kill the testbed after SECS seconds (default 900). Before that (45 s before,
#                     or half-way below 120 s) a watchdog inside prints what the testbed's tasks
#                     are stuck in (scripts/testbed/stuck-tasks.sh) and ends it; if the testbed
#                     kernel is too stuck for that, 10 s before the end QEMU's vCPU registers are
#                     recorded and an NMI makes the kernel panic with every CPU's backtrace.
#                     A testbed that froze (no heartbeat from its init for 60 s, or
#                     $HUSK_TESTBED_FREEZE_SECS) gets the same at once and ends with exit 124 and
#                     "testbed: the testbed froze: ..." instead of waiting for the timeout.
#   --env NAME=VALUE  set an environment variable for CMD (repeatable). HUSK_*, RUST_LOG,
#                     RUST_BACKTRACE and CI are passed through from the caller's environment.
#
# CMD runs as root with build/ first on PATH, in the caller's working directory (or / if that is
# not visible inside), stdin from /dev/null. Its stdout and stderr are copied to ours (separately),
# and testbed.sh exits with its exit status. Testbed failures exit 125 and timeouts 124, each with
# one line on stderr starting "testbed:" followed by the tail of the testbed's console log (after a
# timeout: the watchdog's report of stuck tasks; after a testbed kernel oops, which panics the
# testbed at once: the oops, on a line "testbed: testbed kernel oops: ..."). A command killed by a
# signal (status 128+N) adds "testbed: the command was killed by signal N (SIGx)" and the testbed
# kernel's last log lines.
#
# Environment:
#   HUSK_TESTBED=force|direct   force the nested testbed, or run CMD directly (default: direct when
#                               /dev/kvm comes from kvm_intel/kvm_amd with vmx/svm, else the testbed)
#   HUSK_TESTBED_TIMING=1       print on stderr: "testbed: prep P s, boot B s (kernel+init K s),
#                               cmd C s, shutdown S s, total T s" (prep: script start to QEMU
#                               launch; boot: QEMU launch to CMD start, of which K is the testbed's
#                               own uptime; total: script start to end)
#   HUSK_TESTBED_KEEP=1         keep the run's temp dir (console.log, qemu.log, virtiofsd.log)
#   HUSK_TESTBED_APPEND=...     extra testbed kernel command-line arguments (debugging)
#   HUSK_TESTBED_FREEZE_SECS=N  seconds without a heartbeat that count as a frozen testbed (60)
#   HUSK_TESTBED_LOCK=PATH|none nested runs wait for each other on this lock file
#                               (default /run/lock/husk-testbed.lock); none: do not wait
#   HUSK_CACHE_DIR              cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/husk); the
#                               kernel, its modules and the initramfs live under testbed/
#
# How it works (nested mode):
#   - QEMU TCG emulates an AMD EPYC with SVM (`-accel tcg -cpu EPYC,+svm`); Debian bookworm's cloud
#     kernel (linux-image-cloud-amd64, fetched once with apt-get download) boots it and loads
#     kvm_amd, which gives a real /dev/kvm inside.
#   - That kernel has no 9p, so files come over virtio-fs: QEMU's virtiofsd exports the host's `/`
#     (mounted read-only inside, under a tmpfs overlay so writes succeed but vanish), plus one
#     virtiofsd per read-write share. Dynamically linked host programs therefore run unchanged.
#   - scripts/testbed/init is PID 1: it mounts all that, chroots into it, runs CMD, and reports on
#     named virtio-serial ports (out, err, status). The serial console carries only kernel noise
#     (`quiet`), kept in a log that is shown when the testbed fails.
# Needs root (virtiofsd). Installs qemu-system-x86, busybox-static and kmod with apt-get if missing.
#
# What CMD sees: the whole host filesystem read-only-underneath (writes land in a tmpfs overlay and
# vanish; the export itself is a read-only bind, so the host cannot be written even on purpose),
# empty tmpfs /tmp, /var/tmp, /run, /dev/shm (a --share under /tmp still appears), cgroup v2 at
# /sys/fs/cgroup, loopback networking only, the testbed kernel's modules (modprobe and
# auto-loading via /dev/net/tun, /dev/vhost-vsock... work). Caveats: everything runs under TCG, so
# program start-up costs 10-100x native (bash ~0.1 s, python3 ~0.4 s warm, ~1 s cold); stdout and
# stderr travel separately, so their relative order is not kept; the cached kernel is used until
# $HUSK_CACHE_DIR/testbed is deleted. scripts/testbed/selftest.sh checks all of the above.
set -euo pipefail
t_script=$EPOCHREALTIME

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BUILD="$REPO/build"
VIRTIOFSD=/usr/lib/qemu/virtiofsd
KERNEL_META=linux-image-cloud-amd64

usage() {
    echo "usage: scripts/testbed.sh [--share DIR]... [--mem MIB] [--cpus N] [--timeout SECS] [--env NAME=VALUE]... -- CMD [ARGS...]" >&2
    exit 2
}
die() {
    echo "testbed: $*" >&2
    exit 2
}

shares=()
envs=()
mem=4096
cpus=2
timeout=900
while [ $# -gt 0 ]; do
    case "$1" in
    --share)
        [ $# -ge 2 ] || usage
        [ -d "$2" ] || die "--share $2: not a directory"
        shares+=("$(realpath -- "$2")")
        shift 2
        ;;
    --mem)
        [ $# -ge 2 ] || usage
        [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 256 ] || die "--mem $2: expected a number of MiB >= 256"
        mem=$2
        shift 2
        ;;
    --cpus)
        [ $# -ge 2 ] || usage
        [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 64 ] || die "--cpus $2: expected 1..64"
        cpus=$2
        shift 2
        ;;
    --timeout)
        [ $# -ge 2 ] || usage
        [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] || die "--timeout $2: expected a number of seconds >= 1"
        timeout=$2
        shift 2
        ;;
    --env)
        [ $# -ge 2 ] || usage
        [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $2: expected NAME=VALUE"
        envs+=("$2")
        shift 2
        ;;
    --)
        shift
        break
        ;;
    -h | --help) usage ;;
    *) die "unknown option $1 (the command goes after --)" ;;
    esac
done
[ $# -ge 1 ] || usage
for d in "${shares[@]}"; do
    [ "$d" != / ] || die "--share /: the host root is always visible (read-only); share a subdirectory"
done

mkdir -p "$BUILD"

# Hardware KVM: /dev/kvm from kvm_intel/kvm_amd and the CPU shows vmx/svm.
hardware_kvm() {
    [ -c /dev/kvm ] || return 1
    [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ] || return 1
    grep -qE '^flags.*\b(vmx|svm)\b' /proc/cpuinfo
}

mode=${HUSK_TESTBED:-}
case "$mode" in
"") if hardware_kvm; then mode=direct; else mode=force; fi ;;
force | direct) ;;
*) die "HUSK_TESTBED=$mode: expected force or direct" ;;
esac

if [ "$mode" = direct ]; then
    for kv in "${envs[@]}"; do export "${kv?}"; done
    export PATH="$BUILD:$PATH"
    rc=0
    timeout --kill-after=10 "$timeout" "$@" </dev/null || rc=$?
    [ "$rc" != 124 ] || echo "testbed: timed out after ${timeout}s (direct run)" >&2
    exit "$rc"
fi

[ "$(id -u)" = 0 ] || die "the nested testbed needs root (virtiofsd); run as root"

# One nested testbed at a time per host. Each is a multi-threaded TCG QEMU that wants the host's
# cores to itself: two at once on a small machine starve each other's guests into soft lockups and
# time-outs that look like husk bugs. The wait happens before --timeout starts counting. The lock
# is held by this script and everything it starts (QEMU, virtiofsd), so it is released only when
# the whole testbed is gone. HUSK_TESTBED_LOCK names another lock file; =none skips the lock.
lock=${HUSK_TESTBED_LOCK:-/run/lock/husk-testbed.lock}
if [ "$lock" != none ]; then
    mkdir -p "$(dirname "$lock")"
    exec {lock_fd}>>"$lock"
    if ! flock -n "$lock_fd"; then
        echo "testbed: waiting for another testbed run to end ($lock)" >&2
        flock "$lock_fd"
    fi
fi
for d in "${shares[@]}"; do
    case "$d" in *$'\n'* | *' '*) die "--share $d: paths with spaces or newlines are not supported" ;; esac
done
case "$BUILD" in *$'\n'* | *' '*) die "repo path $REPO contains spaces or newlines" ;; esac

# ---------------------------------------------------------------------------------------------
# Host tools.

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$@" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q "$@" >/dev/null ||
            { echo "testbed: apt-get install $* failed" >&2; exit 125; }
    fi
}
need=()
command -v qemu-system-x86_64 >/dev/null && [ -x "$VIRTIOFSD" ] || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need+=(kmod)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
export PATH="$PATH:/usr/sbin:/sbin"
BUSYBOX=$(command -v busybox) || { echo "testbed: busybox not found after installing busybox-static" >&2; exit 125; }

# ---------------------------------------------------------------------------------------------
# Kernel, modules and initramfs, cached under $CACHE (built once, published by rename).

CACHE="${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}/testbed"
mkdir -p "$CACHE"

kernel_pkg() {
    apt-cache depends "$KERNEL_META" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1
}
# A kernel already in the cache is used as is: runs stay reproducible and need no apt query
# (apt-cache alone costs ~1 s). Delete $CACHE to pick up a newer Debian kernel.
key=$(for d in "$CACHE"/[0-9]*-cloud-amd64_*/vmlinuz; do [ -f "$d" ] && basename "$(dirname "$d")"; done |
    sort -V | tail -n1 || true)
pkg=
if [ -z "$key" ]; then
    pkg=$(kernel_pkg)
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null 2>&1 || true
        pkg=$(kernel_pkg)
    fi
    [ -n "$pkg" ] || { echo "testbed: cannot find $KERNEL_META with apt-cache (apt-get update failed?)" >&2; exit 125; }
    pkgver=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
    key="${pkg#linux-image-}_$pkgver"
fi
kver=${key%%_*}
KDIR="$CACHE/$key"

if [ ! -f "$KDIR/vmlinuz" ]; then
    echo "testbed: fetching $pkg ($pkgver) into $KDIR" >&2
    stage=$(mktemp -d "$CACHE/.stage.XXXXXX")
    (
        cd "$stage"
        # apt-get download drops privileges to _apt when it can; the staging dir is root's.
        chmod 755 "$stage"
        apt-get download -q "$pkg=$pkgver" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 || true; apt-get download -q "$pkg=$pkgver" >/dev/null; }
        dpkg-deb -x ./*.deb x
        mkdir -p lib/modules
        mv "x/boot/vmlinuz-$kver" vmlinuz
        mv "x/boot/config-$kver" config
        mv "x/lib/modules/$kver" lib/modules/
        rm -rf x ./*.deb
        depmod -b "$stage" "$kver"
    ) || { rm -rf "$stage"; echo "testbed: could not fetch and unpack $pkg" >&2; exit 125; }
    mv -T "$stage" "$KDIR" 2>/dev/null || rm -rf "$stage" # lost a race: someone else published it
fi
MODDIR="$KDIR/lib/modules/$kver"

# Modules the init loads from the initramfs, with their dependencies, in load order.
BOOT_MODULES="virtio_pci virtio_console virtiofs overlay kvm_amd"
INIT="$SCRIPT_DIR/testbed/init"
STUCK="$SCRIPT_DIR/testbed/stuck-tasks.sh"
ANCHOR="$SCRIPT_DIR/testbed/kvm-anchor.py"
ird_key=$( { cat "$INIT" "$STUCK" "$ANCHOR"; echo "$BOOT_MODULES"; sha256sum "$BUSYBOX"; } | sha256sum | cut -c1-16)
INITRD="$KDIR/initramfs-$ird_key.cpio"
if [ ! -f "$INITRD" ]; then
    stage=$(mktemp -d "$CACHE/.initrd.XXXXXX")
    (
        set -e
        mkdir -p "$stage/root/bin" "$stage/root/etc" "$stage/root/lib/modules"
        cp "$BUSYBOX" "$stage/root/bin/busybox"
        install -m 755 "$INIT" "$stage/root/init"
        install -m 755 "$STUCK" "$stage/root/stuck-tasks.sh"
        install -m 644 "$ANCHOR" "$stage/root/kvm-anchor.py"
        order=()
        for m in $BOOT_MODULES; do
            f=$(modinfo -b "$KDIR" -k "$kver" -F filename "$m")
            rel=${f#"$MODDIR"/}
            deps=$(sed -n "s|^$rel: ||p" "$MODDIR/modules.dep")
            # modules.dep lists the full closure; loading it back to front respects dependencies.
            for d in $(echo "$deps" | tr ' ' '\n' | tac) "$rel"; do
                [[ " ${order[*]} " == *" $d "* ]] || order+=("$d")
            done
        done
        for rel in "${order[@]}"; do
            mkdir -p "$stage/root/lib/modules/$(dirname "$rel")"
            cp "$MODDIR/$rel" "$stage/root/lib/modules/$rel"
        done
        printf '%s\n' "${order[@]}" >"$stage/root/etc/modules"
        cd "$stage/root"
        find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc >"$stage/initramfs.cpio" 2>/dev/null
    ) || { rm -rf "$stage"; echo "testbed: could not build the initramfs" >&2; exit 125; }
    mv "$stage/initramfs.cpio" "$INITRD"
    rm -rf "$stage"
    # Initramfs images of older init scripts (not in use by a run starting right now).
    find "$KDIR" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "${INITRD##*/}" -mmin +10 -delete 2>/dev/null || true
fi

# ---------------------------------------------------------------------------------------------
# One run: a private temp dir holds the job files, sockets, FIFOs and logs.

T=$(mktemp -d "${TMPDIR:-/tmp}/husk-testbed.XXXXXX")
chmod 755 "$T"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${HUSK_TESTBED_KEEP:-}" ]; then echo "testbed: kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Job description read by the init (busybox sh) and the command script run by bash inside.
# The watchdog inside fires this long after the command starts, leaving time to report and power
# off before the host-side timeout kills QEMU.
if [ "$timeout" -ge 120 ]; then watchdog=$((timeout - 45)); else watchdog=$((timeout / 2)); fi
{
    printf 'TB_KVER=%q\nTB_MODDIR=%q\nTB_WATCHDOG=%q\n' "$kver" "$MODDIR" "$((watchdog > 0 ? watchdog : 1))"
} >"$T/job.env"
{
    echo "export PATH=$(printf %q "$BUILD"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "export HOME=/root LANG=C.UTF-8 TERM=dumb"
    while IFS= read -r name; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e | grep -E '^(HUSK_.*|RUST_LOG|RUST_BACKTRACE|CI)$' | grep -vx HUSK_TESTBED || true)
    for kv in "${envs[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
    printf 'cd -- %q 2>/dev/null || cd /\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$T/cmd.sh"

# Read-write exports: the repository (so build/, the scripts and test files are there even when the
# checkout lives under a path the testbed starts empty, such as /tmp) and every --share, parents
# mounted before children.
mapfile -t rw < <(printf '%s\n' "$REPO" "${shares[@]}" | sort -u)
: >"$T/mounts"
vfs_args=()
# sandbox=chroot: the default (namespace) cannot pivot_root when the source is `/`.
start_virtiofsd() { # tag source cache-mode [wrapper...]
    local tag=$1 src=$2 cache=$3
    shift 3
    "$@" "$VIRTIOFSD" --socket-path="$T/$tag.sock" -o source="$src" -o cache="$cache" \
        -o sandbox=chroot >>"$T/virtiofsd.log" 2>&1 &
    pids+=($!)
    vfs_args+=(-chardev "socket,id=$tag,path=$T/$tag.sock"
        -device "vhost-user-fs-pci,chardev=$tag,tag=$tag,queue-size=1024")
}
# The host root is served from a read-only recursive bind of / made in a private mount namespace,
# so the host stays safe even from a guest that remounts its view read-write.
ro_root() { # ROOT VIRTIOFSD ARGS...
    unshare -m --propagation private -- bash -c '
        root=$1
        shift
        mount --rbind / "$root" || exit 1
        findmnt -R -n -r -o TARGET "$root" | while read -r m; do
            mount -o remount,bind,ro "$m" 2>/dev/null || true
        done
        exec "$@"' ro_root "$@"
}
mkdir "$T/hostroot"
start_virtiofsd hostroot "$T/hostroot" always ro_root "$T/hostroot"
i=0
for d in "${rw[@]}"; do
    start_virtiofsd "share$i" "$d" auto
    echo "share$i $d" >>"$T/mounts"
    i=$((i + 1))
done
for ((w = 0; w < 100; w++)); do
    n=$(find "$T" -maxdepth 1 -name '*.sock' | wc -l)
    [ "$n" -ge $((i + 1)) ] && break
    sleep 0.05
done
[ "$n" -ge $((i + 1)) ] || { echo "testbed: virtiofsd did not start: $(tail -n1 "$T/virtiofsd.log")" >&2; exit 125; }

# Output channels: FIFOs drained to our stdout/stderr while the command runs.
mkfifo "$T/out" "$T/err" "$T/status"
readers=()
cat "$T/out" &
readers+=($!)
cat "$T/err" >&2 &
readers+=($!)
while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done <"$T/status" >"$T/status.log" &
readers+=($!)
pids+=("${readers[@]}")

# QEMU's monitor, for the rescue below: commands into mon.in, answers from mon.out.
mkfifo "$T/mon.in" "$T/mon.out"
exec {mon}<>"$T/mon.in"
cat "$T/mon.out" >"$T/monitor.log" &
readers+=($!)
pids+=($!)

t0=$EPOCHREALTIME
timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu EPYC,+svm -smp "$cpus" -m "${mem}M" \
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -machine pc,memory-backend=mem \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 husk.tb.job=$T ${HUSK_TESTBED_APPEND:-}" \
    -serial "file:$T/console.log" \
    -device virtio-serial-pci \
    -chardev "file,id=out,path=$T/out" -device virtserialport,chardev=out,name=out \
    -chardev "file,id=err,path=$T/err" -device virtserialport,chardev=err,name=err \
    -chardev "file,id=status,path=$T/status" -device virtserialport,chardev=status,name=status \
    -monitor "pipe:$T/mon" \
    "${vfs_args[@]}" </dev/null >"$T/qemu.log" 2>&1 &
qpid=$!
pids+=("$qpid")
# The rescue, for a testbed kernel so stuck that even the init's watchdog cannot report. The init
# writes a heartbeat line to the status port every 5 s while the command runs; when none has come
# for $freeze_secs seconds (the testbed froze: README, Testing), or 10 s before the timeout
# (after the watchdog had its chance), it records every vCPU's registers (QEMU's view) and sends
# an NMI, which panics the testbed kernel (unknown_nmi_panic) with every CPU's backtrace and the
# whole kernel log on the console (panic_print). A frozen testbed is then ended at once instead
# of at its timeout. The rescue is stopped, sleep and all, when QEMU ends first.
freeze_secs=${HUSK_TESTBED_FREEZE_SECS:-60}
if [ "$timeout" -ge 40 ]; then
    (
        trap 'kill "$s" 2>/dev/null; exit 0' TERM
        end=$(( ${t0%.*} + timeout - 10 ))
        while :; do
            sleep 2 &
            s=$!
            wait "$s"
            now=$EPOCHSECONDS
            [ "$now" -lt "$end" ] || break
            grep -q ' start ' "$T/status.log" 2>/dev/null || continue
            last=$(tail -n 1 "$T/status.log")
            last=${last%%.*}
            if [ $((now - last)) -ge "$freeze_secs" ]; then
                : >"$T/froze"
                break
            fi
        done
        : >"$T/rescued"
        printf 'info registers -a\n' >&"$mon"
        sleep 3
        printf 'nmi\n' >&"$mon"
        [ -e "$T/froze" ] || exit 0
        # Give the panic 10 s to reach the console, then end QEMU (hard, if it does not listen).
        sleep 10
        kill -TERM "$qpid" 2>/dev/null
        sleep 10
        pkill -KILL -P "$qpid" 2>/dev/null
    ) >/dev/null 2>&1 &
    rescue=$!
    pids+=("$rescue")
fi
qrc=0
wait "$qpid" || qrc=$?
t1=$EPOCHREALTIME
if [ -n "${rescue:-}" ]; then
    kill "$rescue" 2>/dev/null || true
    wait "$rescue" 2>/dev/null || true
fi
exec {mon}>&-

# Unblock readers whose FIFO QEMU never opened (it failed early), then let them drain.
for f in out err status mon.out; do
    exec {fd}<>"$T/$f"
    exec {fd}>&-
done
for p in "${readers[@]}"; do wait "$p" 2>/dev/null || true; done

# What went wrong, if anything, and the status to exit with (scripts/testbed/verdict.sh).
rc=0
"$SCRIPT_DIR/testbed/verdict.sh" "$T" "$qrc" "$timeout" "${freeze_secs:-60}" || rc=$?
exit_line=$(grep -m1 ' exit ' "$T/status.log" || true)
if [ -n "${HUSK_TESTBED_TIMING:-}" ] && [ -n "$exit_line" ]; then
    start_line=$(grep -m1 ' start ' "$T/status.log" || true)
    ts=${start_line%% *}
    up=${start_line##* }
    te=${exit_line%% *}
    awk -v p="$t_script" -v a="$t0" -v s="$ts" -v u="$up" -v e="$te" -v b="$t1" 'BEGIN {
        printf "testbed: prep %.2f s, boot %.2f s (kernel+init %.2f s), cmd %.2f s, shutdown %.2f s, total %.2f s\n",
            a-p, s-a, u, e-s, b-e, b-p }' >&2
fi
exit "$rc"
