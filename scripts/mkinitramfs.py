#!/usr/bin/env python3
"""Writes a newc cpio initramfs from a list of entries, without needing root.

Usage: mkinitramfs.py OUT.cpio ENTRY...
  ENTRY is one of
    dir:PATH[:MODE]              a directory (default mode 0755)
    file:PATH:HOSTFILE[:MODE]    a regular file copied from HOSTFILE (mode default: HOSTFILE's)
    nod:PATH:c|b:MAJOR:MINOR[:MODE]  a device node (default mode 0600)
    slink:PATH:TARGET            a symlink

Why by hand: `cpio` needs the tree on disk and root for device nodes (the
kernel wants /dev/console before it starts /init); the newc format is a
fixed 110-byte ASCII header per entry. Every entry gets uid/gid 0 and mtime 0,
so the same inputs give the same bytes.
"""

import os
import stat
import sys


def header(ino, mode, nlink, size, rdev_major, rdev_minor, name):
    fields = [
        ino, mode, 0, 0, nlink, 0, size,  # ino mode uid gid nlink mtime filesize
        0, 0, rdev_major, rdev_minor,     # devmajor devminor rdevmajor rdevminor
        len(name) + 1, 0,                 # namesize check
    ]
    h = b"070701" + b"".join(b"%08x" % f for f in fields)
    return pad(h + name.encode() + b"\0")


def pad(b):
    return b + b"\0" * (-len(b) % 4)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2])
    out, entries = argv[1], argv[2:]
    blob = bytearray()
    for ino, spec in enumerate(entries, start=1):
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        path = parts[0].lstrip("/")
        if not path:
            sys.exit(f"mkinitramfs: empty path in {spec!r}")
        if kind == "dir":
            mode = int(parts[1], 8) if len(parts) > 1 else 0o755
            blob += header(ino, stat.S_IFDIR | mode, 2, 0, 0, 0, path)
        elif kind == "file":
            src = parts[1]
            with open(src, "rb") as f:
                data = f.read()
            mode = int(parts[2], 8) if len(parts) > 2 else stat.S_IMODE(os.stat(src).st_mode)
            blob += header(ino, stat.S_IFREG | mode, 1, len(data), 0, 0, path) + pad(data)
        elif kind == "nod":
            typ = stat.S_IFCHR if parts[1] == "c" else stat.S_IFBLK
            mode = int(parts[4], 8) if len(parts) > 4 else 0o600
            blob += header(ino, typ | mode, 1, 0, int(parts[2]), int(parts[3]), path)
        elif kind == "slink":
            target = parts[1].encode()
            blob += header(ino, stat.S_IFLNK | 0o777, 1, len(target), 0, 0, path) + pad(target)
        else:
            sys.exit(f"mkinitramfs: unknown entry kind in {spec!r}")
    blob += header(0, 0, 1, 0, 0, 0, "TRAILER!!!")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv)
