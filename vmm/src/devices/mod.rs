//! Emulated devices. Devices depend on vm-memory, virtio-queue, vm-superio,
//! event-manager and vmm-sys-util only, never on kvm-ioctls: interrupts and
//! queue notifications reach them as `EventFd`s that the builder wires to KVM.

pub mod bus;
