#!/usr/bin/env python3
"""Boot benchmark harness for scripts/bench-boot.sh.

  boot.py host BUILD_DIR WORK_DIR [RUNS]
      On the host itself (no testbed). Guest code is emulated on a PVM host,
      so only what a VMM does before and around its first KVM_RUN is timed:
      each VMM boots a tiny kernel whose first instructions end the VM (husk:
      i8042 reset; QEMU microvm: isa-debug-exit writing 5, which QEMU
      turns into exit status 11), so launch -> exit is launch -> first
      guest instruction plus one exit. Peak resident memory
      comes from GNU time (%M). husk's own trace (HUSK_BOOT_TRACE) adds launch ->
      first KVM_RUN with the real vmlinux and initramfs.

  boot.py testbed BUILD_DIR [RUNS] [FIRECRACKER]
      Inside the testbed (real SVM KVM): husk vs QEMU microvm (and Firecracker,
      when the path of its binary is given) booting the same vmlinux +
      initramfs with the same command line, `console=ttyS0 reboot=k panic=-1
      pci=off quiet husk.reboot`: launch -> agent readiness line, launch -> VMM exit
      after the guest reboots, and the VMM's own resident memory at readiness
      (VmRSS minus the guest-RAM mapping's Rss). The VMM binaries, the
      kernel and the initramfs are run from copies in the testbed's tmpfs.

Both modes run husk three ways, interleaved run by run with QEMU (the order
rotated each run) so a slow phase of the machine hits every side alike:
jailed and filtered (the default), `--no-jail` and `--no-seccomp`; they print
the jail's cost as a ratio, the jail's own setup time (the VMM logs "jail: set
up in X ms" at HUSK_LOG=info) and the VMM's own memory of each.

Prints medians of RUNS (default 5) runs and husk/QEMU ratios.
"""

import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

MEM_MIB = 256
READY = b"husk-agent: ready"
JAIL_SETUP = re.compile(r"jail: set up in ([0-9.]+) ms")
# husk's variants: the default (jail and seccomp filters), and each wall off.
HUSK_VARIANTS = (("husk", []), ("husk --no-jail", ["--no-jail"]),
                 ("husk --no-seccomp", ["--no-seccomp"]))
# Targets of issue 11 for the jail.
JAIL_TARGETS = "jail targets: setup <= 10 ms host-side, pod start <= +3%, VMM own memory <= 3 MiB"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def rotated(items, i):
    """items rotated by i: run by run, no variant always follows the same one."""
    items = list(items)
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def jail_setup_ms(text):
    """The jail's setup time from a VMM's HUSK_LOG=info output, or None."""
    m = JAIL_SETUP.search(text)
    return float(m.group(1)) if m else None


def print_jail_cost(label, rows, col):
    """The jail's and the filters' cost on column `col` of rows (name -> tuple)."""
    base = rows.get("husk")
    for name, what in (("husk --no-jail", "jail"), ("husk --no-seccomp", "seccomp filters")):
        other = rows.get(name)
        if base is None or other is None or not other[col] or other[col] != other[col]:
            continue
        r = base[col] / other[col]
        print(f"  {what} cost on {label}: husk / {name} = {r:.3f}x ({100 * (r - 1):+.1f}%)")


def tiny_elf(code, pvh_entry_note=False):
    """An ELF64 kernel with one PT_LOAD at 16 MiB, entered at `code`.

    With pvh_entry_note, adds the Xen PVH entry note QEMU needs to boot an
    ELF directly (entered in 32-bit protected mode; the code is mode-neutral).
    """
    base = 0x1000000
    phnum = 2 if pvh_entry_note else 1
    hdrs = 64 + 56 * phnum
    note = b""
    if pvh_entry_note:
        desc = struct.pack("<I", 0)  # patched below once the entry is known
        note = struct.pack("<III", 4, len(desc), 18) + b"Xen\0" + desc
    entry = base + hdrs + len(note)
    if pvh_entry_note:
        note = note[:-4] + struct.pack("<I", entry)
    total = hdrs + len(note) + len(code)
    ehdr = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, entry, 64, 0, 0, 64, 56, phnum, 64, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
    phdrs = load
    if pvh_entry_note:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, hdrs, base + hdrs, base + hdrs, len(note), len(note), 4)
    return ehdr + phdrs + note + code


def timed_run(argv, env=None):
    """Runs argv to completion; returns (seconds, peak RSS KiB, status, stderr).

    The peak RSS comes from GNU time (`%M`), not from this process's wait4():
    a child spawned by a large process inherits that process's high-water
    mark in ru_maxrss across exec. Both VMMs pay the same small extra exec
    of `time` in the elapsed figure.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib=%M", *argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False, env=env)
    elapsed = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    rss = next((int(l.split("=", 1)[1]) for l in err.splitlines() if l.startswith("maxrss_kib=")), 0)
    # GNU time reports the child's status, adding a line when it is non-zero.
    return elapsed, rss, proc.returncode, err


def host(build, work, runs):
    os.makedirs(work, exist_ok=True)
    husk = os.path.join(build, "husk")
    reset_elf = os.path.join(work, "tiny-reset.elf")
    with open(reset_elf, "wb") as f:
        f.write(tiny_elf(bytes([0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD])))
    qemu_elf = os.path.join(work, "tiny-pvh-exit.elf")
    with open(qemu_elf, "wb") as f:
        f.write(tiny_elf(bytes([0xB0, 0x05, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]), pvh_entry_note=True))

    qemu_argv = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host",
                 "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-display", "none",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", qemu_elf]
    vmms = [(name, [husk, "vm", "--kernel", reset_elf, "--mem", str(MEM_MIB), *flags], 3)
            for name, flags in HUSK_VARIANTS]
    vmms.append(("qemu-microvm", qemu_argv, 11))
    # HUSK_LOG=info for the jail's setup line; the same small cost for every husk variant.
    info_env = dict(os.environ, HUSK_LOG="info")
    samples = {name: ([], [], []) for name, _, _ in vmms}
    failed = set()
    for i in range(runs):
        for name, argv, want in rotated(vmms, i):
            if name in failed:
                continue
            t, r, status, err = timed_run(argv, env=info_env)
            if status != want:
                print(f"  {name}: unexpected exit status {status}: {err.strip()[:300]}")
                failed.add(name)
                continue
            times, rss, setups = samples[name]
            times.append(t)
            rss.append(r)
            if (ms := jail_setup_ms(err)) is not None:
                setups.append(ms)
    rows = {name: (median(t) * 1e3, median(r) / 1024, median(j) if j else None)
            for name, (t, r, j) in samples.items() if t}

    # husk's own trace with the real kernel: launch -> first KVM_RUN, and
    # the VMM's own memory then (VmRSS less the resident guest RAM, which
    # holds the kernel and initramfs just loaded); jailed and not.
    traces = {name: ([], [], []) for name, _ in HUSK_VARIANTS[:2]}
    env = dict(os.environ, HUSK_BOOT_TRACE="1")
    for i in range(runs):
        for name, flags in rotated(HUSK_VARIANTS[:2], i):
            launched_ns = time.time_ns()
            proc = subprocess.Popen([husk, "vm", "--kernel", os.path.join(build, "vmlinux"),
                                     "--initrd", os.path.join(build, "initramfs.cpio"),
                                     "--mem", str(MEM_MIB), "--cmdline", "quiet", *flags],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env)
            line = b""
            for line in proc.stderr:
                if b"first_kvm_run" in line:
                    break
            proc.kill()
            proc.wait()
            proc.stderr.close()
            fields = dict(kv.split("=", 1) for kv in line.decode().split() if "=" in kv)
            if "realtime_ns" in fields:
                ms, own, rss = traces[name]
                ms.append((int(fields["realtime_ns"]) - launched_ns) / 1e6)
                own.append(int(fields["vmm_own_kib"]) / 1024)
                rss.append(int(fields["vm_rss_kib"]) / 1024)

    print(f"Host (no testbed), median of {runs} runs, launch -> first guest instruction -> exit (tiny kernel):")
    print(f"  {'VMM':<20}{'time ms':>10}{'peak RSS MiB':>14}{'jail setup ms':>15}")
    for name, (ms, mib, setup) in rows.items():
        setup = f"{setup:>15.2f}" if setup is not None else f"{'-':>15}"
        print(f"  {name:<20}{ms:>10.2f}{mib:>14.2f}{setup}")
    if "husk" in rows and "qemu-microvm" in rows:
        h, q = rows["husk"], rows["qemu-microvm"]
        print(f"  ratio husk/qemu: time {h[0] / q[0]:.2f}x, memory {h[1] / q[1]:.2f}x")
    print_jail_cost("launch -> exit", rows, 0)
    for name, (ms, own, rss) in traces.items():
        if ms:
            print(f"  {name} with the real vmlinux+initramfs: launch -> first KVM_RUN {median(ms):.2f} ms; "
                  f"then VmRSS {median(rss):.2f} MiB, of which the VMM's own {median(own):.2f} MiB "
                  "(the rest is the kernel and initramfs in guest RAM)")
    print("  targets: husk <= 5 ms and <= 3 MiB; reference Firecracker 1.16: 10.6 ms, 4.2 MiB")
    print(f"  {JAIL_TARGETS}")


def guest_ram_rss_kib(pid, mem_mib):
    """Resident KiB of the guest's RAM in a VMM process, read from smaps.

    Guest RAM is one run of adjacent anonymous mappings at least mem_mib
    long (a VMM's madvise calls may split it); the largest such run is taken.
    """
    runs, cur, prev_end = [], None, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                path = head[5] if len(head) > 5 else ""
                eligible = path == ""
                if eligible and cur is not None and start == prev_end:
                    cur[1] = end
                elif eligible:
                    cur = [start, end, 0]
                    runs.append(cur)
                else:
                    cur = None
                prev_end = end
            elif line.startswith("Rss:") and cur is not None:
                cur[2] += int(head[1])
    big = [r for r in runs if r[1] - r[0] >= mem_mib << 20]
    return max((r[2] for r in big), default=0)


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def boot_once(argv, env=None):
    """Returns (ready s, exit s, own RSS KiB, status, tail of output, jail setup ms)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    ready, own, tail, setup = None, None, [], None
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if setup is None:
            setup = jail_setup_ms(line.decode(errors="replace"))
        if ready is None and READY in line:
            ready = time.perf_counter() - t0
            try:
                own = vm_rss_kib(proc.pid) - guest_ram_rss_kib(proc.pid, MEM_MIB)
            except OSError:
                own = None
    status = proc.wait()
    done = time.perf_counter() - t0
    return ready, done, own, status, b"".join(tail).decode(errors="replace"), setup


def firecracker_argv(firecracker, kernel, initrd, cmdline):
    """Firecracker without its API socket, from a config file (in this run's
    /tmp) that describes the same VM as husk's: the kernel, the initramfs and
    the whole command line (Firecracker adds nothing to a given one), 1 vCPU,
    MEM_MIB, no devices. It exits 0 when the guest resets through the i8042."""
    config = {"boot-source": {"kernel_image_path": kernel, "initrd_path": initrd,
                              "boot_args": cmdline},
              "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": MEM_MIB}}
    fd, path = tempfile.mkstemp(prefix="fc-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return [firecracker, "--no-api", "--config-file", path, "--level", "Error"]


def staged(paths):
    """Copies of `paths` in a fresh directory of this testbed's /tmp (a tmpfs).

    The testbed reads build/ over virtio-fs with `cache=auto`, which drops a
    file's page cache at every open: every launch would read the VMM binary,
    the kernel and the initramfs from the host again, a cost of the testbed
    that grows with the file (~0.1 s for husk's binary) and that a peer
    binary shared with `cache=always` does not pay. From a tmpfs, every VMM
    starts from memory, as from a warm page cache on a real host."""
    stage = tempfile.mkdtemp(prefix="bench-boot-", dir="/tmp")
    out = []
    for i, path in enumerate(paths):
        dest = os.path.join(stage, f"{i}-{os.path.basename(path)}")
        shutil.copy2(path, dest)
        out.append(dest)
    return out


def testbed(build, runs, firecracker=None):
    names = [os.path.join(build, f) for f in ("husk", "vmlinux", "initramfs.cpio")]
    husk_bin, kernel, initrd, *fc = staged(names + ([firecracker] if firecracker else []))
    firecracker = fc[0] if fc else None
    append = "quiet husk.reboot"
    # husk's default command line (DEFAULT_CMDLINE in vmm/src/boot/cmdline.rs)
    # before `append`, given whole to Firecracker.
    full_cmdline = f"console=ttyS0 reboot=k panic=-1 pci=off {append}"
    husk = [husk_bin, "vm", "--kernel", kernel, "--initrd", initrd,
            "--mem", str(MEM_MIB), "--cmdline", append]
    vmms = {name: (husk + flags, 3) for name, flags in HUSK_VARIANTS}
    vmms.update({
        # acpi=off: with QEMU's microvm ACPI tables the guest's serial
        # interrupt never arrives, so nothing user space prints would show;
        # without them QEMU describes the machine with an MP table, as husk
        # also does (husk adds ACPI only for the S5 poweroff).
        "qemu-microvm": (["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host",
                          "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-nographic",
                          "-no-reboot", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
                          "-append", f"console=ttyS0 reboot=t panic=-1 pci=off {append}"], 0),
    })
    if firecracker:
        vmms["firecracker"] = (firecracker_argv(firecracker, kernel, initrd, full_cmdline), 0)
    # HUSK_LOG=info for the jail's setup line; the same small cost for every husk variant.
    env = dict(os.environ, HUSK_LOG="info")
    samples = {name: ([], [], [], []) for name in vmms}
    failed = set()
    # Interleaved, so a slow phase of the machine hits every side alike.
    for i in range(runs):
        for name, (argv, want) in rotated(vmms.items(), i):
            if name in failed:
                continue
            ready, done, own, status, tail, setup = boot_once(argv, env)
            if ready is None or status != want:
                print(f"  {name}: run failed (status {status}, ready={ready}); last output:\n{tail}")
                failed.add(name)
                continue
            readies, exits, owns, setups = samples[name]
            readies.append(ready)
            exits.append(done)
            if own is not None:
                owns.append(own)
            if setup is not None:
                setups.append(setup)
    rows = {name: (median(r), median(e), median(o) / 1024 if o else float("nan"),
                   median(j) if j else None)
            for name, (r, e, o, j) in samples.items() if r}

    print(f"Testbed (nested SVM KVM), median of {runs} runs, same vmlinux + initramfs, cmdline '{append}':")
    print(f"  {'VMM':<20}{'-> ready s':>12}{'-> exit s':>12}{'own RSS MiB':>13}{'jail setup ms':>15}")
    for name, (r, e, m, j) in rows.items():
        j = f"{j:>15.2f}" if j is not None else f"{'-':>15}"
        print(f"  {name:<20}{r:>12.3f}{e:>12.3f}{m:>13.2f}{j}")
    if "husk" in rows and "qemu-microvm" in rows:
        h, q = rows["husk"], rows["qemu-microvm"]
        print(f"  ratio husk/qemu: ready {h[0] / q[0]:.2f}x, exit {h[1] / q[1]:.2f}x, own memory {h[2] / q[2]:.2f}x")
    if "husk" in rows and "firecracker" in rows:
        h, f = rows["husk"], rows["firecracker"]
        print(f"  ratio husk/firecracker: ready {h[0] / f[0]:.2f}x, exit {h[1] / f[1]:.2f}x, "
              f"own memory {h[2] / f[2]:.2f}x (target: ready <= 0.80x)")
    elif firecracker:
        print("  ratio husk/firecracker: not measured (a side failed above)")
    else:
        print("  firecracker: no binary (set FIRECRACKER or see ../shared/peers/firecracker)")
    print_jail_cost("launch -> ready", rows, 0)
    print_jail_cost("launch -> exit", rows, 1)
    if "husk" in rows and "husk --no-jail" in rows:
        d = rows["husk"][2] - rows["husk --no-jail"][2]
        print(f"  jail cost on the VMM's own memory: {d:+.2f} MiB")
    print("  targets: husk <= QEMU on time, <= 3 MiB own memory; reference Firecracker ~4.1 MiB")
    print(f"  {JAIL_TARGETS} (the testbed runs everything under TCG: setup there is slower)")


def main(argv):
    if len(argv) >= 4 and argv[1] == "host":
        host(argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 5)
    elif len(argv) >= 3 and argv[1] == "testbed":
        testbed(argv[2], int(argv[3]) if len(argv) > 3 else 5, argv[4] if len(argv) > 4 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
