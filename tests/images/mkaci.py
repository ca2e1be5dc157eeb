#!/usr/bin/env python3
"""Builds an App Container Image (ACI) of the busybox userland, with no network and no root
(`actool` is not packaged anywhere husk is tested).

Usage:
  mkaci.py OCI_DIR OUT.aci [--name NAME] [--version V] [--exec ARG]... [--env K=V]...
           [--workdir DIR] [--user U] [--group G] [--file PATH=CONTENT]...
           [--compress gzip|bzip2|xz|none] [--hostile traversal]

OCI_DIR is an image layout made by mkimage.py; its first layer (the userland) becomes the
ACI's rootfs/, every path prefixed with `rootfs/`, beside a `manifest` written from the options
(App Container spec, image manifest schema). --file adds files to rootfs. --hostile traversal
adds an entry `rootfs/../../../tmp/aci-escaped` (refused by husk import).
"""

import argparse
import bz2
import gzip
import io
import json
import lzma
import os
import tarfile


def first_layer(oci_dir):
    with open(os.path.join(oci_dir, "index.json")) as f:
        index = json.load(f)
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    with open(os.path.join(oci_dir, "blobs", "sha256", digest)) as f:
        manifest = json.load(f)
    layer = manifest["layers"][0]["digest"].split(":", 1)[1]
    with open(os.path.join(oci_dir, "blobs", "sha256", layer), "rb") as f:
        return gzip.decompress(f.read())


def climbs_above_root(name, target):
    if target.startswith("/"):
        return False
    depth = name.strip("/").count("/")
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("oci_dir")
    p.add_argument("out")
    p.add_argument("--name", default="example.com/hello")
    p.add_argument("--version", default="1.0")
    p.add_argument("--exec", dest="exec_", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir")
    p.add_argument("--user", default="0")
    p.add_argument("--group", default="0")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--compress", default="gzip", choices=["gzip", "bzip2", "xz", "none"])
    p.add_argument("--hostile", choices=["traversal"])
    a = p.parse_args()

    app = {"exec": a.exec_ or ["/bin/sh"], "user": a.user, "group": a.group,
           "environment": [dict(zip(("name", "value"), e.split("=", 1))) for e in a.env]}
    if a.workdir:
        app["workingDirectory"] = a.workdir
    manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": a.name,
                "labels": [{"name": "version", "value": a.version},
                           {"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
                "app": app}

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as aci:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest")
        info.size = len(data)
        aci.addfile(info, io.BytesIO(data))
        root = tarfile.TarInfo("rootfs")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        aci.addfile(root)
        with tarfile.open(fileobj=io.BytesIO(first_layer(a.oci_dir))) as layer:
            for member in layer.getmembers():
                data = layer.extractfile(member) if member.isfile() else None
                if member.islnk():
                    member.linkname = "rootfs/" + member.linkname
                if member.issym() and climbs_above_root(member.name, member.linkname):
                    # mkimage.py's root-level applets (linuxrc) point at ../bin/busybox, which
                    # a container resolves at / but which, in the ACI, leaves rootfs/ (husk
                    # import refuses that): write the target the container sees.
                    member.linkname = "/" + os.path.normpath(member.linkname).lstrip("./")
                member.name = "rootfs/" + member.name
                aci.addfile(member, data)
        extra = [f.split("=", 1) for f in a.file]
        if a.hostile == "traversal":
            extra.append(("../../../tmp/aci-escaped", "escaped"))
        for path, content in extra:
            info = tarfile.TarInfo("rootfs/" + path.lstrip("/"))
            info.size, info.mode = len(content.encode()), 0o644
            aci.addfile(info, io.BytesIO(content.encode()))
    raw = out.getvalue()
    packed = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
              "none": lambda b: b}[a.compress](raw)
    with open(a.out, "wb") as f:
        f.write(packed)
    print(a.out)


if __name__ == "__main__":
    main()
