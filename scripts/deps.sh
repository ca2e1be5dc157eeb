#!/usr/bin/env bash
# Installs the Debian packages husk's build, tests and testbed need, once.
#
# Usage: scripts/deps.sh [PACKAGE...]   (no arguments: the standard set)
# Idempotent and quiet when everything is present; needs root (or sudo) to
# install. Safe under CI (no stdin, no TTY).
set -euo pipefail

packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
  packages=(
    qemu-system-x86 busybox-static          # the nested testbed and test userlands
    linux-source-6.12 flex bison bc         # the guest kernel build
    libelf-dev libssl-dev cpio xz-utils
    python3 time                            # initramfs packing, benchmarks
    docker-registry skopeo apache2-utils    # registry pull tests (registry, push, htpasswd)
    openssl gnupg                           # test certificates; trust tests: P-256 keys, openssl dgst signatures, GPG keys
    passt                                   # user-mode networking for pods (--network user)
    nftables                                # the host-side filter of a user pod's network, TAP NAT
    iproute2                                # --network tap: ip, tc (bridge, veth, mirred)
    ethtool                                 # net e2e: the TAP offloads the guest took
    iperf3                                  # bench-net.sh: TCP throughput, guest and host ends
    dnsmasq-base                            # net e2e: the test's own DNS server
    swtpm swtpm-tools tpm2-tools            # measured launch tests: a software TPM 2.0, tpm2_pcrread/readclock
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null
fi
