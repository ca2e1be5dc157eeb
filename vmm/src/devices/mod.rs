//! Emulated devices. Devices depend on vm-memory, virtio-queue, vm-superio,
//! event-manager and vmm-sys-util only, never on kvm-ioctls: interrupts and
//! queue notifications reach them as `EventFd`s that the builder wires to KVM.

pub mod acpi_pm;
pub mod bus;
pub mod i8042;
pub mod legacy;
pub mod serial;
pub mod virtio;
