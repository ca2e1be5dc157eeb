#!/usr/bin/env bash
# Check that a final kernel .config honours every line of a config fragment.
#
# Why: `make olddefconfig` silently drops an option whose dependencies are not
# met (e.g. VIRTIO_MMIO without VIRTIO_MENU) and silently turns on an option we
# switched off when something else selects it. The build must fail then, not
# produce a kernel that lacks virtio-mmio and boots without its devices.
#
# Usage: scripts/check-kernel-config.sh FRAGMENT DOTCONFIG
# Exit 0 when every `CONFIG_X=v` line of FRAGMENT appears verbatim in
# DOTCONFIG and every `# CONFIG_X is not set` option is absent or unset there;
# otherwise print one line naming the offending options and exit 1.
# Bad usage or unreadable files: one line, exit 2.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 FRAGMENT DOTCONFIG" >&2
    exit 2
fi
fragment=$1
dotconfig=$2
for f in "$fragment" "$dotconfig"; do
    if [[ ! -r $f ]]; then
        echo "check-kernel-config: cannot read $f" >&2
        exit 2
    fi
done

# Final values: NAME -> value ("n" for "# CONFIG_X is not set").
declare -A final=()
while IFS= read -r line; do
    if [[ $line =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]]; then
        final[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    elif [[ $line =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        final[${BASH_REMATCH[1]}]=n
    fi
done <"$dotconfig"

bad=()
lineno=0
while IFS= read -r line; do
    lineno=$((lineno + 1))
    if [[ $line =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]]; then
        name=${BASH_REMATCH[1]}
        want=${BASH_REMATCH[2]}
    elif [[ $line =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        name=${BASH_REMATCH[1]}
        want=n
    elif [[ $line =~ ^[[:space:]]*(#.*)?$ ]]; then
        continue
    else
        echo "check-kernel-config: $fragment:$lineno: not a config line: $line" >&2
        exit 2
    fi
    got=${final[$name]-n}
    if [[ $want == n && $got == n ]]; then
        continue
    fi
    if [[ $got != "$want" ]]; then
        bad+=("CONFIG_$name (asked $want, got $got)")
    fi
done <"$fragment"

if [[ ${#bad[@]} -ne 0 ]]; then
    joined=$(printf '%s, ' "${bad[@]}")
    echo "kernel config: Kconfig did not honour ${#bad[@]} option(s) of $(basename "$fragment"): ${joined%, }" >&2
    exit 1
fi
