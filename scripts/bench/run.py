#!/usr/bin/env python3
"""Pod start-up benchmark (scripts/bench-run.sh runs it).

testbed BUILD WORK RUNS   inside the testbed (real KVM), median of RUNS each:
    raw boot   `husk vm` of the same kernel and initramfs, with the memory a pod gets,
               `quiet husk.poweroff`: launch -> agent ready (boot to init), -> VMM exit; and
               the same with a pod's devices (vsock, a read-only share) -> agent ready
    pod        `husk run --rm busybox true`: wall time, as a user sees it (image resolve,
               pod dir, VM boot, unpack in the guest, container start, app exit, power-off)
    and the pod overhead on top of boot: pod / boot-to-init - 1 (target <= 30%), plus
    pod / boot-to-exit - 1 (like for like: both include the power-off). One more pod run with
    HUSK_LOG=info prints where the time goes.
    jail       the same pod start with `--no-jail` and with `--no-seccomp`, interleaved with the
               default (jail and filters) run by run: medians, the jail's cost as a ratio (target
               <= +3%), and the jail's setup time the pod's VMM logs at HUSK_LOG=info (target
               <= 10 ms host-side). The VMM's own memory, jailed and not: scripts/bench-boot.sh.
host WORK RUNS            on the host: `runc run` of the same rootfs running `true`, the
    no-isolation reference (needs runc: apt-get install runc).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

READY = b"husk-agent: ready"
MKIMAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "images",
                       "mkimage.py")
# Guest RAM of a default pod: memory 256 MiB + rootfs 512 MiB + 96 MiB overhead
# (vmm/src/pod/spec.rs); the raw boot gets the same so only the pod work differs.
POD_VM_MIB = 256 + 512 + 96


def median(xs):
    return statistics.median(xs)


JAIL_SETUP = re.compile(r"jail: set up in ([0-9.]+) ms")


def pod_vmm_log(root, name):
    """The vmm.log of the pod called `name` under HUSK_ROOT `root` ("" if none)."""
    pods = os.path.join(root, "pods")
    for pod in os.listdir(pods):
        try:
            with open(os.path.join(pods, pod, "name")) as f:
                if f.read().strip() != name:
                    continue
            with open(os.path.join(pods, pod, "vmm.log"), errors="replace") as f:
                return f.read()
        except OSError:
            continue
    return ""


# A run that takes longer than this is killed and reported (a hung guest must not hang the bench).
RUN_TIMEOUT = 120


def boot_once(argv):
    """Returns (ready s, exit s, status)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
    watchdog.start()
    ready = None
    for line in proc.stdout:
        if ready is None and READY in line:
            ready = time.perf_counter() - t0
    status = proc.wait()
    watchdog.cancel()
    return ready, time.perf_counter() - t0, status


def testbed(build, work, runs):
    husk = os.path.join(build, "husk")
    env = dict(os.environ, HUSK_ROOT=os.path.join(work, "root"))
    subprocess.run([sys.executable, MKIMAGE, os.path.join(work, "img")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([husk, "import", "--tag", "busybox", os.path.join(work, "img")], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    raw_argv = [husk, "vm", "--kernel", os.path.join(build, "vmlinux"), "--initrd",
                os.path.join(build, "initramfs.cpio"), "--mem", str(POD_VM_MIB),
                "--cmdline", "quiet husk.poweroff"]
    # The same VM shape as a pod's: a vsock device and a read-only share.
    os.makedirs(os.path.join(work, "share"), exist_ok=True)
    dev_argv = raw_argv + ["--vsock", os.path.join(work, "v.sock"), "--share",
                           f"blobs={os.path.join(work, 'share')}:ro:cache=always"]
    pod_argv = [husk, "run", "--rm", "busybox", "true"]
    # The pod start with each wall of the VMM off, against the default (both on).
    variants = {"default": pod_argv,
                "--no-jail": [husk, "run", "--rm", "--no-jail", "busybox", "true"],
                "--no-seccomp": [husk, "run", "--rm", "--no-seccomp", "busybox", "true"]}
    readies, exits, dev_readies = [], [], []
    pod_times = {name: [] for name in variants}
    # Interleaved, so a slow phase of the machine hits every side alike.
    for i in range(runs):
        ready, done, status = boot_once(raw_argv)
        if ready is None or status != 0:
            sys.exit(f"bench-run: raw boot failed (status {status}, ready {ready})")
        readies.append(ready)
        exits.append(done)
        ready, _, status = boot_once(dev_argv)
        if ready is None or status != 0:
            sys.exit(f"bench-run: raw boot with devices failed (status {status}, ready {ready})")
        dev_readies.append(ready)
        # Rotated each run, so no variant always follows the same one.
        names = list(variants)
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            p = subprocess.run(variants[name], env=env, capture_output=True, timeout=RUN_TIMEOUT)
            pod_times[name].append(time.perf_counter() - t0)
            if p.returncode != 0:
                sys.exit(f"bench-run: husk run ({name}) failed ({p.returncode}): {p.stderr.decode()}")
    pods = pod_times["default"]
    b, e, d, r = median(readies), median(exits), median(dev_readies), median(pods)
    print(f"testbed (real KVM, median of {runs}, guest RAM {POD_VM_MIB} MiB):")
    print(f"  raw boot: launch -> init ready   {b:7.3f} s")
    print(f"  raw boot: launch -> VMM exit     {e:7.3f} s")
    print(f"  raw boot + vsock + share: ready  {d:7.3f} s  (a pod's VM shape)")
    print(f"  husk run --rm busybox true       {r:7.3f} s")
    print(f"  pod overhead on top of boot-to-init: {100 * (r / b - 1):5.1f}%  (target <= 30%)")
    print(f"  pod overhead on top of boot-to-exit: {100 * (r / e - 1):5.1f}%  (both include the end)")
    print(f"  pod overhead on top of the same VM shape's boot: {100 * (r / d - 1):5.1f}%")
    print(f"  pod start, jailed and not (median of {runs}, interleaved):")
    for name, times in pod_times.items():
        print(f"    husk run --rm {'' if name == 'default' else name + ' '}busybox true"
              f"{'':{14 - (0 if name == 'default' else len(name) + 1)}} {median(times):7.3f} s")
    for name, what in (("--no-jail", "jail"), ("--no-seccomp", "seccomp filters")):
        ratio = r / median(pod_times[name])
        print(f"    {what} cost on pod start: {ratio:.3f}x ({100 * (ratio - 1):+.1f}%)"
              + ("  (target <= +3%)" if what == "jail" else ""))
    # The pod's VMM logs to the pod's vmm.log, which --rm removes: these runs keep the pod,
    # read it, then remove the pod.
    setups = []
    for i in range(runs):
        name = f"bench-jail-{i}"
        p = subprocess.run([husk, "run", "--name", name, "busybox", "true"],
                           env=dict(env, HUSK_LOG="info"), capture_output=True,
                           timeout=RUN_TIMEOUT)
        m = JAIL_SETUP.search(pod_vmm_log(env["HUSK_ROOT"], name))
        subprocess.run([husk, "rm", name], env=env, capture_output=True)
        if m:
            setups.append(float(m.group(1)))
    if setups:
        print(f"    jail setup in the pod's VMM (HUSK_LOG=info, median of {len(setups)}): "
              f"{median(setups):.2f} ms  (target <= 10 ms host-side; here under TCG)")
    else:
        print("    jail setup: the pod's VMM logged no 'jail: set up in' line")
    phases = [l for l in p.stderr.decode(errors="replace").splitlines() if "husk: info:" in l]
    if phases:
        print("  where one pod run's time goes:")
        for line in phases:
            print("    " + line.split("husk: info: ", 1)[1])


def host(work, runs):
    runc = shutil.which("runc")
    print(f"host (no isolation reference, median of {runs}):")
    if runc is None:
        print("  runc: not installed (apt-get install runc)")
        return
    img = os.path.join(work, "img")
    subprocess.run([sys.executable, MKIMAGE, img], check=True, stdout=subprocess.DEVNULL)
    bundle = os.path.join(work, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    index = json.load(open(os.path.join(img, "index.json")))
    mdigest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(open(os.path.join(img, "blobs", "sha256", mdigest)))
    for layer in manifest["layers"]:
        blob = os.path.join(img, "blobs", "sha256", layer["digest"].split(":")[1])
        subprocess.run(["tar", "-xzf", blob, "-C", rootfs], check=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    spec_path = os.path.join(bundle, "config.json")
    spec = json.load(open(spec_path))
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    json.dump(spec, open(spec_path, "w"))
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([runc, "run", "--bundle", bundle, f"husk-bench-{os.getpid()}-{i}"],
                           capture_output=True)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            print(f"  runc run: failed ({p.returncode}): {p.stderr.decode().strip()}")
            return
    print(f"  runc run (same rootfs, true)     {median(times):7.3f} s")


def main(argv):
    if len(argv) == 5 and argv[1] == "testbed":
        testbed(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 4 and argv[1] == "host":
        host(argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
