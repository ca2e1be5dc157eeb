//! Virtio devices and the virtio-mmio transport.
//!
//! A device implements the small [`VirtioDevice`] trait: what it is (type,
//! queue sizes, features, config space) and what it does once the driver has
//! set it up ([`VirtioDevice::activate`]). The transport ([`mmio::MmioTransport`])
//! owns everything the guest programs through registers (feature and queue
//! selectors, queue addresses, device status) and hands the device finished
//! [`Queue`]s only when the driver writes DRIVER_OK. Devices therefore never see
//! half-configured queues, and a second transport (PCI) could wrap the same
//! devices.
//!
//! Queue notifications and interrupts are `EventFd`s: the builder registers
//! the transport's queue eventfds as KVM ioeventfds and its interrupt eventfd
//! as an irqfd, so devices run on the event loop thread and their tests need
//! no `/dev/kvm`.

pub mod fs;
pub mod mmio;
pub mod net;
pub mod ratelimit;
#[cfg(any(test, feature = "test-utils"))]
#[doc(hidden)]
pub mod testing;
pub mod vsock;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as STATUS_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as STATUS_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as STATUS_DRIVER_OK, VIRTIO_CONFIG_S_FAILED as STATUS_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as STATUS_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET as STATUS_NEEDS_RESET,
};

/// Guest memory as devices see it. Cloning is cheap (the regions are behind
/// `Arc`s), which is how the event loop thread gets its own handle.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Feature bit: the device follows virtio 1.x (the only version we offer).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit: used/avail event indexes suppress notifications and interrupts.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Why the device raises an interrupt. The values are the virtio-mmio
/// InterruptStatus bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    /// The device added buffers to a used ring.
    Queue = 1,
    /// The configuration space (or NEEDS_RESET) changed.
    Config = 2,
}

/// How a device tells the driver that something happened.
pub trait VirtioInterrupt: Send + Sync {
    /// Records `kind` and raises the interrupt line.
    fn trigger(&self, kind: InterruptKind) -> io::Result<()>;
}

/// The virtio-mmio interrupt: a status word the guest reads and acknowledges
/// through registers, and an eventfd the builder registers as a KVM irqfd.
#[derive(Debug)]
pub struct MmioInterrupt {
    status: AtomicU32,
    evt: EventFd,
}

impl MmioInterrupt {
    /// A new interrupt with a fresh (non-blocking) eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// The eventfd to register as irqfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// Current InterruptStatus register value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn trigger(&self, kind: InterruptKind) -> io::Result<()> {
        self.status.fetch_or(kind as u32, Ordering::AcqRel);
        self.evt.write(1)
    }
}

/// A queue handed to a device at activation, with the eventfd the guest's
/// notifications for it arrive on.
#[derive(Debug)]
pub struct ActiveQueue {
    /// The queue, configured and validated by the transport.
    pub queue: Queue,
    /// Signalled when the driver notifies this queue.
    pub notify: EventFd,
}

/// Errors from activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device has.
    #[error("device expects {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    /// Activation happened twice without a reset in between.
    #[error("device is already active")]
    AlreadyActive,
    /// The device could not signal its event loop.
    #[error("cannot signal the device's event loop")]
    EventFd(#[source] io::Error),
    /// A queue was not enabled or lies outside guest memory.
    #[error("queue {0} is not ready or does not fit in guest memory")]
    InvalidQueue(usize),
}

/// A virtio device, independent of the transport that exposes it.
///
/// Every method is called with the transport's lock held, from a vCPU thread;
/// data-path work belongs on the event loop (see each device's event handler).
pub trait VirtioDevice: Send {
    /// Virtio device id (19 = vsock, 26 = fs, ...).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (must include [`VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// The features the driver accepted, a subset of `avail_features`.
    /// Called once per negotiation, before activation.
    fn set_acked_features(&mut self, features: u64);
    /// Reads device config space at `offset`. Bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space; read-only config ignores writes.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver's queues.
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// Whether [`VirtioDevice::activate`] has succeeded since the last reset.
    fn is_activated(&self) -> bool;
    /// Returns the device to its state before activation (driver reset).
    /// Returns false if the device cannot do that; the transport then reports
    /// DEVICE_NEEDS_RESET instead of pretending the reset worked.
    fn reset(&mut self) -> bool;
}
