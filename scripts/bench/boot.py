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

  boot.py testbed BUILD_DIR [RUNS]
      Inside the testbed (real SVM KVM): husk vs QEMU microvm booting the same
      vmlinux + initramfs with `quiet husk.reboot`: launch -> agent readiness
      line, launch -> VMM exit after the guest reboots, and the VMM's own
      resident memory at readiness (VmRSS minus the guest-RAM mapping's Rss).

Prints medians of RUNS (default 5) runs and husk/QEMU ratios.
"""

import os
import statistics
import struct
import subprocess
import sys
import time

MEM_MIB = 256
READY = b"husk-agent: ready"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


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


def timed_run(argv):
    """Runs argv to completion; returns (seconds, peak RSS KiB, status, stderr).

    The peak RSS comes from GNU time (`%M`), not from this process's wait4():
    a child spawned by a large process inherits that process's high-water
    mark in ru_maxrss across exec. Both VMMs pay the same small extra exec
    of `time` in the elapsed figure.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib=%M", *argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
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

    rows = {}
    husk_argv = [husk, "vm", "--kernel", reset_elf, "--mem", str(MEM_MIB)]
    qemu_argv = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host",
                 "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-display", "none",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", qemu_elf]
    for name, argv, want in (("husk", husk_argv, 3), ("qemu-microvm", qemu_argv, 11)):
        times, rss = [], []
        for _ in range(runs):
            t, r, status, err = timed_run(argv)
            if status != want:
                print(f"  {name}: unexpected exit status {status}: {err.strip()[:300]}")
                break
            times.append(t)
            rss.append(r)
        rows[name] = (median(times) * 1e3, median(rss) / 1024)

    # husk's own trace with the real kernel: launch -> first KVM_RUN, and
    # the VMM's own memory then (VmRSS less the resident guest RAM, which
    # holds the kernel and initramfs just loaded).
    trace_ms, trace_own, trace_rss = [], [], []
    env = dict(os.environ, HUSK_BOOT_TRACE="1")
    for _ in range(runs):
        launched_ns = time.time_ns()
        proc = subprocess.Popen([husk, "vm", "--kernel", os.path.join(build, "vmlinux"),
                                 "--initrd", os.path.join(build, "initramfs.cpio"),
                                 "--mem", str(MEM_MIB), "--cmdline", "quiet"],
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
            trace_ms.append((int(fields["realtime_ns"]) - launched_ns) / 1e6)
            trace_own.append(int(fields["vmm_own_kib"]) / 1024)
            trace_rss.append(int(fields["vm_rss_kib"]) / 1024)

    print(f"Host (no testbed), median of {runs} runs, launch -> first guest instruction -> exit (tiny kernel):")
    print(f"  {'VMM':<14}{'time ms':>10}{'peak RSS MiB':>14}")
    for name, (ms, mib) in rows.items():
        print(f"  {name:<14}{ms:>10.2f}{mib:>14.2f}")
    if "husk" in rows and "qemu-microvm" in rows:
        h, q = rows["husk"], rows["qemu-microvm"]
        print(f"  ratio husk/qemu: time {h[0] / q[0]:.2f}x, memory {h[1] / q[1]:.2f}x")
    if trace_ms:
        print(f"  husk with the real vmlinux+initramfs: launch -> first KVM_RUN {median(trace_ms):.2f} ms; "
              f"then VmRSS {median(trace_rss):.2f} MiB, of which the VMM's own {median(trace_own):.2f} MiB "
              "(the rest is the kernel and initramfs in guest RAM)")
    print("  targets: husk <= 5 ms and <= 3 MiB; reference Firecracker 1.16: 10.6 ms, 4.2 MiB")


def guest_ram_rss_kib(pid, mem_mib, backing_files=()):
    """Resident KiB of the guest's RAM in a VMM process, read from smaps.

    Guest RAM is one run of adjacent mappings at least mem_mib long, each
    anonymous or (husk maps the kernel and initramfs copy-on-write from their
    files) backed by one of backing_files. The largest such run is taken.
    """
    runs, cur, prev_end = [], None, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                path = head[5] if len(head) > 5 else ""
                eligible = path == "" or path in backing_files
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


def boot_once(argv, backing_files):
    """Returns (ready s, exit s, own RSS KiB, status, tail of output)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    ready, own, tail = None, None, []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if ready is None and READY in line:
            ready = time.perf_counter() - t0
            try:
                own = vm_rss_kib(proc.pid) - guest_ram_rss_kib(proc.pid, MEM_MIB, backing_files)
            except OSError:
                own = None
    status = proc.wait()
    done = time.perf_counter() - t0
    return ready, done, own, status, b"".join(tail).decode(errors="replace")


def testbed(build, runs):
    kernel = os.path.join(build, "vmlinux")
    initrd = os.path.join(build, "initramfs.cpio")
    append = "quiet husk.reboot"
    vmms = {
        "husk": ([os.path.join(build, "husk"), "vm", "--kernel", kernel, "--initrd", initrd,
                  "--mem", str(MEM_MIB), "--cmdline", append], 3),
        # acpi=off: with QEMU's microvm ACPI tables the guest's serial
        # interrupt never arrives, so nothing user space prints would show;
        # without them QEMU describes the machine with an MP table, as husk
        # also does (husk adds ACPI only for the S5 poweroff).
        "qemu-microvm": (["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host",
                          "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-nographic",
                          "-no-reboot", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
                          "-append", f"console=ttyS0 reboot=t panic=-1 {append}"], 0),
    }
    rows = {}
    for name, (argv, want) in vmms.items():
        readies, exits, owns = [], [], []
        for _ in range(runs):
            ready, done, own, status, tail = boot_once(argv, (os.path.realpath(kernel), os.path.realpath(initrd)))
            if ready is None or status != want:
                print(f"  {name}: run failed (status {status}, ready={ready}); last output:\n{tail}")
                break
            readies.append(ready)
            exits.append(done)
            if own is not None:
                owns.append(own)
        rows[name] = (median(readies), median(exits), median(owns) / 1024 if owns else float("nan"))

    print(f"Testbed (nested SVM KVM), median of {runs} runs, same vmlinux + initramfs, cmdline '{append}':")
    print(f"  {'VMM':<14}{'-> ready s':>12}{'-> exit s':>12}{'own RSS MiB':>13}")
    for name, (r, e, m) in rows.items():
        print(f"  {name:<14}{r:>12.3f}{e:>12.3f}{m:>13.2f}")
    if len(rows) == 2:
        h, q = rows["husk"], rows["qemu-microvm"]
        print(f"  ratio husk/qemu: ready {h[0] / q[0]:.2f}x, exit {h[1] / q[1]:.2f}x, own memory {h[2] / q[2]:.2f}x")
    print("  targets: husk <= QEMU on time, <= 3 MiB own memory; reference Firecracker ~4.1 MiB")


def main(argv):
    if len(argv) >= 4 and argv[1] == "host":
        host(argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 5)
    elif len(argv) >= 3 and argv[1] == "testbed":
        testbed(argv[2], int(argv[3]) if len(argv) > 3 else 5)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
