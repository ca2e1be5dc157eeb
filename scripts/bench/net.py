#!/usr/bin/env python3
"""Network benchmark harness for scripts/bench-net.sh.

  net.py initramfs BUILD OUT.cpio SECONDS
      On the host: the guest userspace both VMMs boot, an initramfs with busybox-static,
      Debian's iperf3 (with the libraries ldd lists) and an /init that configures eth0
      (10.0.2.15/24 via 10.0.2.2, the fixed user-mode network), then runs, one after the
      other, against servers this harness starts on the testbed's loopback (which the guest
      reaches at the gateway 10.0.2.2):
        iperf3 -c 10.0.2.2 -p 5201 -t SECONDS        TCP guest -> host
        iperf3 -c 10.0.2.2 -p 5202 -t SECONDS -R     TCP host -> guest
      (each prints only iperf3's receiver line: the receiving side's bytes over its time)
        nc 10.0.2.2 5203 -e /bin/cat                 the guest echoes what the host sends
      and reboots. Its console says only "bench-net: ..." lines (a console byte costs ~0.5 ms
      in the testbed).

  net.py testbed BUILD CPIO WORK RUNS
      Inside the testbed (real KVM), RUNS runs interleaved (order rotated each run):
        husk   `husk vm --net user`: husk's virtio-net device, its stream backend, the passt
               husk starts (socket pair, --fd);
        QEMU   microvm with `-device virtio-net-device -netdev stream` (modern virtio-mmio)
               connected to a passt with the same options on a Unix socket;
      both with the same vmlinux, the same initramfs, 256 MiB, 1 vCPU and the MTU husk
      offers (QEMU gets it as host_mtu). Figures: TCP throughput each way (iperf3's server
      receiver's figure), and request/response latency
      (the host sends one byte on a TCP_NODELAY connection, the guest's cat sends it back;
      median round trip of PINGS after WARMUP). Then the pod start, `husk run --rm IMAGE true`
      with `--network user` and with `--network none`, interleaved.
      Prints medians and ratios: throughput husk/QEMU, latency QEMU/husk (so > 1.0 means
      husk is faster on every figure), pod start user/none (target <= 1.10).

      Then the same for TAP: `husk vm --net tap:hbench0` against QEMU's `-netdev
      tap,ifname=hbench0,vhost=off` on one persistent TAP device that this harness makes,
      holding the gateway's address 10.0.2.2/24 on the testbed's side (the servers listen
      there), so the guest talks to the testbed's own kernel stack with offloads both ways.

PAIRS lists (label, husk side, QEMU side); a new backend adds one entry.
"""

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..", "..")
MKIMAGE = os.path.join(REPO, "tests", "images", "mkimage.py")
MKINITRAMFS = os.path.join(REPO, "scripts", "mkinitramfs.py")
MEM_MIB = 256
PORT_TX, PORT_RX, PORT_RR = 5201, 5202, 5203
PINGS, WARMUP = 300, 20
# A run that takes longer than this is killed and reported.
RUN_TIMEOUT = 240
# The fixed user-mode network (vmm/src/net/mod.rs) and passt's options as husk passes them for
# `husk vm` (vmm/src/net/passt.rs: -i lo because the testbed has no default route; the gateway
# maps to the host's loopback, as `husk vm` has it; -M: passt's own MAC, which it cannot take
# from lo).
PASST_ARGS = ["-f", "-q", "-4", "-a", "10.0.2.15", "-n", "24", "-g", "10.0.2.2",
              "--dns-forward", "10.0.2.3", "--no-dhcp", "-i", "lo", "-M", "02:42:00:00:00:0e"]
GUEST_MAC = "02:42:00:00:00:0f"

INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "bench-net: up mtu $(cat /sys/class/net/eth0/mtu)"
echo "bench-net: tx $(timeout {limit} iperf3 -c 10.0.2.2 -p {tx} -t {secs} -f m 2>&1 | grep -E 'receiver|error' | head -n 2)"
echo "bench-net: rx $(timeout {limit} iperf3 -c 10.0.2.2 -p {rx} -t {secs} -f m -R 2>&1 | grep -E 'receiver|error' | head -n 2)"
timeout 120 nc 10.0.2.2 {rr} -e /bin/cat || echo "bench-net: echo failed"
echo "bench-net: done"
reboot -f
"""


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def rotated(items, i):
    items = list(items)
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def initramfs(build, out, secs):
    """Writes the guest's initramfs (see the module doc)."""
    busybox = shutil.which("busybox")
    iperf3 = shutil.which("iperf3")
    if not busybox or not iperf3:
        sys.exit("bench-net: needs busybox-static and iperf3 (scripts/deps.sh)")
    libs = []
    for line in subprocess.run(["ldd", iperf3], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    init = os.path.join(os.path.dirname(out), "bench-net-init")
    with open(init, "w") as f:
        f.write(INIT.format(tx=PORT_TX, rx=PORT_RX, rr=PORT_RR, secs=secs, limit=secs + 40))
    entries = ["dir:/dev", "nod:/dev/console:c:5:1", "nod:/dev/null:c:1:3:0666",
               "nod:/dev/urandom:c:1:9:0666",
               "dir:/proc", "dir:/sys", "dir:/tmp:1777", "dir:/bin", "dir:/lib",
               "dir:/lib64", "dir:/lib/x86_64-linux-gnu",
               f"file:/bin/busybox:{busybox}:0755", f"file:/bin/iperf3:{iperf3}:0755",
               f"file:/init:{init}:0755"]
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries += [f"slink:/bin/{a}:busybox" for a in applets if a != "busybox"]
    for lib in libs:
        entries.append(f"file:{lib}:{os.path.realpath(lib)}:0755")
    subprocess.run([sys.executable, MKINITRAMFS, out, *entries], check=True)


class Servers:
    """The host ends for one VM run: two one-off iperf3 servers and the echo pinger."""

    def __init__(self, host="127.0.0.1"):
        self.ports = (PORT_TX, PORT_RX)
        self.procs = [subprocess.Popen(["iperf3", "-s", "-1", "-B", host, "-p", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       stdin=subprocess.DEVNULL)
                      for port in self.ports]
        self.rtts = []
        self.listener = socket.create_server((host, PORT_RR))
        self.listener.settimeout(RUN_TIMEOUT)
        self.thread = threading.Thread(target=self._pinger, daemon=True)
        self.thread.start()
        # Not probed by connecting: a one-off iperf3 server would take the probe for its client.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_listening(p) for p in self.ports):
            time.sleep(0.05)

    def _pinger(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(10)
            try:
                for i in range(WARMUP + PINGS):
                    t0 = time.perf_counter()
                    conn.sendall(b"x")
                    if conn.recv(1) != b"x":
                        return
                    if i >= WARMUP:
                        self.rtts.append(time.perf_counter() - t0)
            except OSError:
                return

    def finish(self):
        """Waits for the servers; returns the median round trip (s) or None."""
        self.thread.join(timeout=30)
        # A pinger still blocked in accept() (the guest never connected) keeps the port
        # listening past close(); shutdown() wakes it, so the next run can bind the port.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return median(self.rtts) if len(self.rtts) == PINGS else None


def _listening(port):
    """Whether a TCP socket listens on `port` (/proc/net/tcp, state 0A)."""
    with open("/proc/net/tcp") as f:
        return any(l.split()[1].endswith(f":{port:04X}") and l.split()[3] == "0A"
                   for l in f.readlines()[1:])


RECEIVER = re.compile(r"bench-net: (tx|rx) .* ([0-9.]+) Mbits/sec\s+receiver")


def receiver_mbits(console, which):
    """iperf3's receiver figure for `which` (tx, rx) from the guest's console lines."""
    for line in console:
        m = RECEIVER.search(line)
        if m and m.group(1) == which:
            return float(m.group(2))
    return None


def run_vm(argv, work, name, pre=None, host="127.0.0.1"):
    """Boots one VM with fresh servers on `host`; returns the three figures or None."""
    servers = Servers(host)
    helper = pre() if pre else None
    console = []
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
        watchdog.start()
        for line in proc.stdout:
            console.append(line.decode(errors="replace").rstrip())
        proc.wait()
        watchdog.cancel()
    finally:
        if helper:
            helper.terminate()
            helper.wait()
    figures = (receiver_mbits(console, "tx"), receiver_mbits(console, "rx"), servers.finish())
    ok = any("bench-net: done" in l for l in console) and None not in figures
    if not ok:
        tail = "\n    ".join(console[-15:])
        print(f"  {name}: run failed, figures {figures}; last output:\n    {tail}", flush=True)
        return None
    return figures


def husk_argv(build, cpio, net):
    """`husk vm` with the benchmark's guest on network `net`."""
    return [os.path.join(build, "husk"), "vm", "--kernel", os.path.join(build, "vmlinux"),
            "--initrd", cpio, "--mem", str(MEM_MIB), "--net", net, "--cmdline", "quiet"]


def qemu_argv(build, cpio, netdev, mtu):
    """QEMU microvm with the benchmark's guest on a virtio-net-device over `netdev`."""
    return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host",
            "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio", "-global", "virtio-mmio.force-legacy=false",
            "-kernel", os.path.join(build, "vmlinux"), "-initrd", cpio,
            "-append", "console=ttyS0 reboot=t panic=-1 quiet",
            "-netdev", f"{netdev},id=n0",
            "-device", f"virtio-net-device,netdev=n0,mac={GUEST_MAC},host_mtu={mtu}"]


def husk_user(build, cpio, work, mtu):
    return husk_argv(build, cpio, "user"), None, "127.0.0.1"


def qemu_stream(build, cpio, work, mtu):
    # passt drops to nobody before it binds its socket, and this passt ignores a failed bind
    # of an explicit path (then quits at once with -1): the directory must be nobody's, and
    # reachable by nobody (so not under the 0700 work directory).
    sockdir = tempfile.mkdtemp(prefix="bench-net-passt.")
    os.chown(sockdir, 65534, 65534)
    sock = os.path.join(sockdir, "passt.sock")

    def passt():
        if os.path.exists(sock):
            os.unlink(sock)
        log = open(os.path.join(work, "passt-qemu.log"), "w")
        p = subprocess.Popen(["passt", *PASST_ARGS, "-1", "-s", sock], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        return p

    argv = qemu_argv(build, cpio, f"stream,server=off,addr.type=unix,addr.path={sock}", mtu)
    return argv, passt, "127.0.0.1"


def make_tap():
    """The persistent TAP device both VMMs of the TAP pair attach to, one VM at a time, with the
    gateway's address on the testbed's side: the guest's 10.0.2.2 is the testbed's own stack."""
    run = lambda *a: subprocess.run(["ip", *a], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", TAP_DEV], stderr=subprocess.DEVNULL, check=False)
    run("tuntap", "add", TAP_DEV, "mode", "tap")
    run("addr", "add", "10.0.2.2/24", "dev", TAP_DEV)
    run("link", "set", TAP_DEV, "up")


def husk_tap(build, cpio, work, mtu):
    return husk_argv(build, cpio, f"tap:{TAP_DEV}"), None, "10.0.2.2"


def qemu_tap(build, cpio, work, mtu):
    # vhost=off: QEMU's own virtio-net emulation in its process, as husk's is (vhost-net would
    # move the data path into the host kernel, which no VMM of this kind does).
    netdev = f"tap,ifname={TAP_DEV},script=no,downscript=no,vhost=off"
    return qemu_argv(build, cpio, netdev, mtu), None, "10.0.2.2"


# (label, (husk name, builder), (QEMU name, builder)).
PAIRS = [("user-mode (passt)", ("husk --net user", husk_user),
          ("QEMU stream+passt", qemu_stream)),
         ("TAP", ("husk --net tap", husk_tap), ("QEMU tap", qemu_tap))]
TAP_DEV = "hbench0"


def husk_mtu():
    """The MTU husk offers (vmm/src/net/mod.rs), which QEMU is given too."""
    with open(os.path.join(REPO, "vmm", "src", "net", "mod.rs")) as f:
        return int(re.search(r"pub const MTU: u16 = (\d+);", f.read()).group(1))


def pod_start(build, work, runs):
    """`husk run --rm busybox true` with --network user and none, interleaved."""
    husk = os.path.join(build, "husk")
    env = dict(os.environ, HUSK_ROOT=os.path.join(work, "root"))
    subprocess.run([sys.executable, MKIMAGE, os.path.join(work, "img")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([husk, "import", "--tag", "busybox", os.path.join(work, "img")], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    times = {"user": [], "none": []}
    for i in range(runs):
        for mode in rotated(times, i):
            t0 = time.perf_counter()
            p = subprocess.run([husk, "run", "--rm", "--network", mode, "busybox", "true"],
                               env=env, capture_output=True, timeout=RUN_TIMEOUT)
            times[mode].append(time.perf_counter() - t0)
            if p.returncode != 0:
                sys.exit(f"bench-net: husk run --network {mode} failed ({p.returncode}): "
                         f"{p.stderr.decode(errors='replace')}")
    return {m: median(t) for m, t in times.items()}


def testbed(build, cpio, work, runs):
    mtu = husk_mtu()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    make_tap()
    results = {}
    for label, *sides in PAIRS:
        vmms = {}
        for name, builder in sides:
            vmms[name] = builder(build, cpio, work, mtu)
        samples = {name: [] for name in vmms}
        for i in range(runs):
            for name, (argv, pre, host) in rotated(vmms.items(), i):
                figures = run_vm(argv, work, name, pre, host)
                if figures:
                    samples[name].append(figures)
        results[label] = samples
    pods = pod_start(build, work, runs)

    print(f"testbed (real KVM), median of {runs} interleaved runs; same vmlinux and initramfs "
          f"(busybox, iperf3), {MEM_MIB} MiB, 1 vCPU, MTU {mtu}")
    for label, samples in results.items():
        (hname, h), (qname, q) = samples.items()
        print(f"  {label}: {hname} against {qname} ({len(h)} and {len(q)} good runs)")
        print(f"    {'':32} {'husk':>10} {'QEMU':>10}  husk vs QEMU")
        rows = (("TCP guest -> host (Mbit/s)", 0, 1, False),
                ("TCP host -> guest (Mbit/s)", 1, 1, False),
                ("TCP 1-byte round trip (us)", 2, 1e6, True))
        for what, col, scale, lower_better in rows:
            hv = median([s[col] for s in h]) * scale
            qv = median([s[col] for s in q]) * scale
            ratio = qv / hv if lower_better else hv / qv
            print(f"    {what:32} {hv:10.1f} {qv:10.1f}  {ratio:5.2f}x"
                  f"{'  (QEMU/husk)' if lower_better else ''}")
    u, n = pods["user"], pods["none"]
    print(f"  pod start, husk run --rm busybox true (median of {runs}, interleaved):")
    print(f"    --network user  {u:7.3f} s")
    print(f"    --network none  {n:7.3f} s")
    print(f"    user/none       {u / n:7.3f}x  (target <= 1.10)")
    print("  target: husk >= 1.0x QEMU on every figure")


def main(argv):
    if len(argv) == 5 and argv[1] == "initramfs":
        initramfs(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 6 and argv[1] == "testbed":
        testbed(argv[2], argv[3], argv[4], int(argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
