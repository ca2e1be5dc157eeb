#!/usr/bin/env python3
"""Builds a real, runnable OCI image of a busybox userland, with no network and no root.

Usage:
  mkimage.py OUT_DIR [--tag TAG] [--name NAME] [--docker-archive FILE]
             [--cmd ARG]... [--entrypoint ARG]... [--env K=V]... [--workdir DIR] [--user U]
             [--layer-file PATH=CONTENT]... [--busybox PATH]

OUT_DIR becomes an OCI image layout (oci-layout, index.json, blobs/sha256/...) holding one
image whose index entry carries `org.opencontainers.image.ref.name` = TAG (default `latest`),
the form `skopeo copy oci:OUT_DIR:TAG ...` and `husk import OUT_DIR` read.

Layers (tar+gzip, deterministic: fixed mtimes, uid/gid 0, gzip mtime 0, so the same inputs
give the same digests):
  1. the userland: /bin/busybox (busybox-static) with a symlink per applet, /etc/passwd and
     /etc/group (root, a `user` with uid 1000, nobody), /tmp (1777), /root, /home/user, and
     empty /proc, /sys, /dev mount points;
  2. only with --layer-file: one more layer with those files (a multi-layer image).
With --docker-archive FILE, the same image is also written as a `docker save` archive
(manifest.json with RepoTags [NAME], default `husk-test/busybox:TAG`), whose layers are
uncompressed tars as docker writes them.

The last line printed is the manifest digest.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

MTIME = 1_700_000_000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def tar_info(name, kind=tarfile.REGTYPE, mode=0o644, size=0, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def add_dir(tar, name, mode=0o755):
    tar.addfile(tar_info(name, tarfile.DIRTYPE, mode))


def add_file(tar, name, data, mode=0o644):
    tar.addfile(tar_info(name, size=len(data), mode=mode), io.BytesIO(data))


def applets(busybox):
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def userland_tar(busybox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "proc", "sys",
                  "dev", "run", "var", "var/tmp"]:
            add_dir(tar, d, 0o700 if d == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        tar.addfile(tar_info("home/user", tarfile.DIRTYPE, 0o755))
        with open(busybox, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), 0o755)
        for applet in applets(busybox):
            path = applet.lstrip("/")
            if path == "bin/busybox":
                continue
            depth = path.count("/")
            target = "../" * depth + "bin/busybox" if depth > 1 else "busybox" if path.startswith("bin/") else "../bin/busybox"
            tar.addfile(tar_info(path, tarfile.SYMTYPE, 0o777, linkname=target))
        add_file(tar, "etc/passwd", PASSWD.encode())
        add_file(tar, "etc/group", GROUP.encode())
        add_file(tar, "etc/hostname", b"husk\n")
    return buf.getvalue()


def files_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for path, content in entries:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    add_dir(tar, d)
            add_file(tar, "/".join(parts), content.encode())
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def put(self, data):
        digest = sha256(data)
        with open(os.path.join(self.root, "blobs", "sha256", digest.split(":")[1]), "wb") as f:
            f.write(data)
        return digest


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--tag", default="latest")
    p.add_argument("--name")
    p.add_argument("--docker-archive")
    p.add_argument("--cmd", action="append")
    p.add_argument("--entrypoint", action="append")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--user", default="")
    p.add_argument("--layer-file", action="append", default=[])
    p.add_argument("--busybox", default="/bin/busybox")
    a = p.parse_args()
    if not os.path.isfile(a.busybox):
        sys.exit(f"mkimage: {a.busybox} not found (apt-get install busybox-static)")

    tars = [userland_tar(a.busybox)]
    if a.layer_file:
        entries = []
        for spec in a.layer_file:
            path, sep, content = spec.partition("=")
            if not sep or not path.strip("/"):
                sys.exit(f"mkimage: --layer-file {spec!r}: expected PATH=CONTENT")
            entries.append((path, content))
        tars.append(files_tar(entries))

    layout = Layout(a.out)
    layers = []
    for t in tars:
        gz = gzip.compress(t, compresslevel=6, mtime=0)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": layout.put(gz), "size": len(gz)})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": [PATH_ENV] + a.env,
            "Cmd": a.cmd if a.cmd is not None else ["sh"],
            "WorkingDir": a.workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/images/mkimage.py"}
                    for _ in tars],
    }
    if a.entrypoint is not None:
        config["config"]["Entrypoint"] = a.entrypoint
    if a.user:
        config["config"]["User"] = a.user
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": layout.put(config_bytes), "size": len(config_bytes)},
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = layout.put(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_digest,
                       "size": len(manifest_bytes),
                       "annotations": {"org.opencontainers.image.ref.name": a.tag}}],
    }
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    if a.docker_archive:
        name = a.name or f"husk-test/busybox:{a.tag}"
        with tarfile.open(a.docker_archive, "w", format=tarfile.PAX_FORMAT) as tar:
            layer_names = []
            for t in tars:
                lname = f"{hashlib.sha256(t).hexdigest()}/layer.tar"
                add_dir(tar, lname.split("/")[0])
                add_file(tar, lname, t)
                layer_names.append(lname)
            cname = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
            add_file(tar, cname, config_bytes)
            docker_manifest = [{"Config": cname, "RepoTags": [name], "Layers": layer_names}]
            add_file(tar, "manifest.json", json.dumps(docker_manifest).encode())
    print(manifest_digest)


if __name__ == "__main__":
    main()
