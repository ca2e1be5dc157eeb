#!/usr/bin/env python3
"""Holds one idle KVM VM open for the whole testbed run (scripts/testbed/init starts it).

Why: the testbed kernel (Debian's 6.1 under QEMU TCG with several vCPU threads) live-patches its
own code whenever a KVM static key flips: `preempt_notifier_key` (a jump label inside __schedule)
goes on when the first VM is created and off when the last one is destroyed, and the LAPIC's
`apic_sw_disabled` key when the first vCPU is created. The kernel patches with int3
(text_poke_bp) while the other CPU runs that code, and QEMU 7.2's multi-threaded TCG sometimes
gets such cross-CPU self-modifying code wrong: a CPU is left looping between the int3 handler and
__schedule with interrupts off, and the whole testbed freezes (an NMI showed exactly that: one
CPU in asm_exc_int3 from __schedule+0x2ac, the other at __schedule+0x2ab). Each husk VM that
starts or dies on an otherwise idle testbed takes those keys 0 -> 1 -> 0, so suites that start and
kill many VMs met the freeze often. With this VM (an in-kernel irqchip and one vCPU that never
runs) alive, the counts never fall to 0, so husk's VMs coming and going patch nothing.

It prints "kvm-anchor: holding" on stdout once the VM exists, then sleeps until killed.
"""

import fcntl
import os
import signal
import sys

KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_CREATE_IRQCHIP = 0xAE60


def main() -> int:
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
        fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    except OSError as e:
        print(f"kvm-anchor: cannot hold a VM: {e}", file=sys.stderr)
        return 1
    print("kvm-anchor: holding", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
