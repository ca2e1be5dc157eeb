#!/usr/bin/env bash
# Build the husk guest kernel (vmlinux and bzImage) from Debian's
# linux-source-6.12 with kernel-config/husk.config, cached outside the tree.
#
# Why a cache: a build takes ~7 minutes on 2 cores, and the result depends
# only on the config fragment, the kernel source package version and this
# script (plus the config checker). Their hash names the cache entry:
#   ${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}/kernel/<hash>/
#     vmlinux  bzImage  config (the final .config)  System.map
#     husk.config (the fragment used)  build.log  build-info
# A running or failed build logs to kernel/<hash>.log (path printed on failure).
#
# Usage: scripts/build-kernel.sh [-v|--verbose] [--print-cache-dir] [OUTDIR]
#   OUTDIR (default <repo>/build) receives copies of vmlinux and bzImage.
#   --print-cache-dir prints the cache entry's path and exits without building.
#   -v streams the build log to stderr.
# Environment: HUSK_CACHE_DIR, XDG_CACHE_HOME, HUSK_KERNEL_JOBS (default nproc).
#
# Concurrency: builds of one hash are serialised with flock; each builds in a
# private temp dir that is renamed into place, so readers never see a half
# entry. Exit 0 on success; 1 on a failed build or a config that Kconfig did
# not honour; 2 on bad usage.
set -euo pipefail

readonly SRC_PKG=linux-source-6.12
readonly SRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
readonly APT_PKGS=(linux-source-6.12 flex bison bc libelf-dev libssl-dev make gcc libc6-dev xz-utils)

die() {
    echo "build-kernel: $*" >&2
    exit 1
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fragment=$repo/kernel-config/husk.config
checker=$repo/scripts/check-kernel-config.sh
self=$repo/scripts/build-kernel.sh

verbose=0
print_dir=0
outdir=
while [[ $# -gt 0 ]]; do
    case $1 in
    -v | --verbose) verbose=1 ;;
    --print-cache-dir) print_dir=1 ;;
    -h | --help)
        sed -n '13,17p' "$self" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "build-kernel: unknown option $1 (see --help)" >&2
        exit 2
        ;;
    *)
        if [[ -n $outdir ]]; then
            echo "build-kernel: only one OUTDIR may be given" >&2
            exit 2
        fi
        outdir=$1
        ;;
    esac
    shift
done
outdir=${outdir:-$repo/build}
[[ -r $fragment ]] || die "missing config fragment $fragment"

# Install the kernel source and build tools when missing (root only, e.g. CI).
missing_tools() {
    local t
    for t in make gcc flex bison bc xz tar; do
        command -v "$t" >/dev/null || echo "$t"
    done
    [[ -r $SRC_TARBALL ]] || echo "$SRC_TARBALL"
    [[ -r /usr/include/libelf.h ]] || echo "libelf-dev"
    [[ -r /usr/include/openssl/opensslv.h ]] || echo "libssl-dev"
}
ensure_deps() {
    local missing
    missing=$(missing_tools | tr '\n' ' ')
    [[ -z $missing ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing ${missing% }; install with: apt-get install -y ${APT_PKGS[*]}"
    fi
    echo "build-kernel: installing ${APT_PKGS[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${APT_PKGS[@]}" </dev/null >/dev/null 2>&1; then
        apt-get update -q </dev/null >/dev/null 2>&1 || true
        apt-get install -y -q "${APT_PKGS[@]}" </dev/null >/dev/null ||
            die "apt-get install ${APT_PKGS[*]} failed"
    fi
    missing=$(missing_tools | tr '\n' ' ')
    [[ -z $missing ]] || die "still missing after install: ${missing% }"
}

# The source version names the input; fall back to the tarball's digest.
source_version() {
    local v
    if v=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) && [[ -n $v ]]; then
        echo "$SRC_PKG $v"
    else
        echo "$SRC_TARBALL $(sha256sum "$SRC_TARBALL" | cut -d' ' -f1)"
    fi
}

if [[ -n ${HUSK_CACHE_DIR:-} ]]; then
    cache_base=$HUSK_CACHE_DIR
elif [[ -n ${XDG_CACHE_HOME:-} ]]; then
    cache_base=$XDG_CACHE_HOME/husk
elif [[ -n ${HOME:-} ]]; then
    cache_base=$HOME/.cache/husk
else
    die "no cache directory: set HUSK_CACHE_DIR (HOME is unset)"
fi
cache_root=$cache_base/kernel

if [[ $print_dir -eq 0 ]]; then
    ensure_deps
fi
[[ -r $SRC_TARBALL ]] || die "missing $SRC_TARBALL; install with: apt-get install -y $SRC_PKG"
version=$(source_version)
key=$({
    echo "husk-kernel-cache v1"
    echo "$version"
    cat "$fragment" "$self" "$checker"
} | sha256sum | cut -c1-16)
entry=$cache_root/$key

if [[ $print_dir -eq 1 ]]; then
    echo "$entry"
    exit 0
fi

entry_complete() {
    [[ -f $entry/build-info && -f $entry/vmlinux && -f $entry/bzImage ]]
}

# Run one build step, logging to $log; on failure name the step and the log.
step() {
    local what=$1
    shift
    echo "=== $what: $*" >>"$log"
    local rc=0
    if [[ $verbose -eq 1 ]]; then
        "$@" </dev/null 2>&1 | tee -a "$log" >&2 || rc=$?
    else
        "$@" </dev/null >>"$log" 2>&1 || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        echo "build-kernel: $what failed (exit $rc); log: $log" >&2
        exit 1
    fi
}

build() {
    local tmp src jobs start secs
    jobs=${HUSK_KERNEL_JOBS:-$(nproc)}
    tmp=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
    # shellcheck disable=SC2064 # expand $tmp now: it is local
    trap "rm -rf '$tmp'" EXIT
    log=$cache_root/$key.log
    : >"$log"
    echo "build-kernel: building $version with $(basename "$fragment") ($key, 9+ min on 2 cores)" >&2
    start=$(date +%s)
    step "extract $SRC_TARBALL" tar -xJf "$SRC_TARBALL" -C "$tmp"
    src=$tmp/linux-source-6.12
    [[ -d $src ]] || die "$SRC_TARBALL did not contain linux-source-6.12/; log: $log"
    local -a mk=(make -C "$src" ARCH=x86_64 KBUILD_BUILD_USER=husk KBUILD_BUILD_HOST=husk)
    step "make tinyconfig" "${mk[@]}" tinyconfig
    step "merge $(basename "$fragment")" \
        env -C "$src" scripts/kconfig/merge_config.sh -m .config "$fragment"
    step "make olddefconfig" "${mk[@]}" olddefconfig
    # Fail before compiling if Kconfig dropped or re-enabled anything we asked for.
    "$checker" "$fragment" "$src/.config" 2>>"$log" || {
        tail -n1 "$log" >&2
        echo "build-kernel: log: $log" >&2
        exit 1
    }
    step "make vmlinux bzImage" "${mk[@]}" -j"$jobs" vmlinux bzImage
    "$checker" "$fragment" "$src/.config" || die "final .config changed during the build; log: $log"

    mkdir "$tmp/out"
    cp "$src/vmlinux" "$src/arch/x86/boot/bzImage" "$src/System.map" "$fragment" "$tmp/out/"
    cp "$src/.config" "$tmp/out/config"
    secs=$(($(date +%s) - start))
    {
        echo "key=$key"
        echo "source=$version"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "build_seconds=$secs"
        echo "jobs=$jobs"
        echo "vmlinux_bytes=$(stat -c %s "$tmp/out/vmlinux")"
        echo "bzImage_bytes=$(stat -c %s "$tmp/out/bzImage")"
    } >"$tmp/out/build-info"
    mv "$log" "$tmp/out/build.log"
    log=$entry/build.log
    mv -T "$tmp/out" "$entry"
    build_tree=$tmp # removed after the lock is released: deleting takes minutes
    echo "build-kernel: built in $((secs / 60))m$((secs % 60))s: $entry" >&2
}

mkdir -p "$cache_root"
if ! entry_complete; then
    exec 9>"$cache_root/$key.lock"
    if ! flock -n 9; then
        echo "build-kernel: waiting for another build of $key" >&2
        flock 9
    fi
    if [[ -e $entry ]] && ! entry_complete; then
        rm -rf "$entry" # an entry without build-info is not ours to trust
    fi
    build_tree=
    entry_complete || build
    flock -u 9
    exec 9>&-
    if [[ -n $build_tree ]]; then
        rm -rf "$build_tree"
        trap - EXIT
    fi
fi

# Publish into OUTDIR atomically: copy to a temp name, then rename. A copy,
# not a hard link, so that a later in-place write to OUTDIR/vmlinux cannot
# corrupt the cache entry (the files are small: ~15 MiB together).
mkdir -p "$outdir"
for f in vmlinux bzImage; do
    tmpf=$outdir/.$f.$$
    cp --reflink=auto -f "$entry/$f" "$tmpf"
    mv -f "$tmpf" "$outdir/$f"
done
echo "build-kernel: $outdir/vmlinux $outdir/bzImage (from $entry)"
