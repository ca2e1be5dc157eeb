#!/usr/bin/env python3
"""Prove that /dev/kvm runs guest code: a real-mode guest of three instructions.

The guest does `mov al, 0x42; out 0x10, al; hlt`. We expect one KVM_EXIT_IO on port 0x10 carrying
0x42, then KVM_EXIT_HLT. Used by scripts/testbed/selftest.sh inside the testbed; plain Python so it
needs nothing built. Prints one line and exits 0 on success, 1 otherwise.
"""
import ctypes
import fcntl
import mmap
import os
import struct
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_REGS, KVM_SET_REGS = 0x8090AE81, 0x4090AE82
KVM_GET_SREGS, KVM_SET_SREGS = 0x8138AE83, 0x4138AE84
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5

MEM_SIZE = 0x10000
CODE_ADDR = 0x1000
CODE = bytes([0xB0, 0x42, 0xE6, 0x10, 0xF4])  # mov al,0x42; out 0x10,al; hlt


def main() -> int:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    api = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
    if api != 12:
        print(f"kvm-smoke: unexpected KVM API version {api}")
        return 1
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)

    mem = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mem[CODE_ADDR : CODE_ADDR + len(CODE)] = CODE
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    region = struct.pack("=IIQQQ", 0, 0, 0, MEM_SIZE, addr)
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)

    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
    struct.pack_into("=Q", sregs, 0, 0)  # cs.base
    struct.pack_into("=H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, sregs)
    regs = bytearray(144)
    struct.pack_into("=QQ", regs, 128, CODE_ADDR, 0x2)  # rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, regs)

    seen_io = False
    for _ in range(10):
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        (reason,) = struct.unpack_from("=I", run, 8)
        if reason == KVM_EXIT_IO:
            direction, size, port, count, offset = struct.unpack_from("=BBHIQ", run, 32)
            value = run[offset]
            if (direction, size, port, count, value) != (1, 1, 0x10, 1, 0x42):
                print(f"kvm-smoke: unexpected port I/O {direction},{size},{port:#x},{count},{value:#x}")
                return 1
            seen_io = True
        elif reason == KVM_EXIT_HLT:
            if not seen_io:
                print("kvm-smoke: guest halted without its port write")
                return 1
            print("kvm-smoke: ok (guest wrote 0x42 to port 0x10, then halted)")
            return 0
        else:
            print(f"kvm-smoke: unexpected exit reason {reason}")
            return 1
    print("kvm-smoke: guest did not halt")
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        print(f"kvm-smoke: {e}")
        sys.exit(1)
