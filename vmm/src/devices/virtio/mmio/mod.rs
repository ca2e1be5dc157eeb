//! The virtio-mmio transport (virtio 1.x register layout, "version 2").
//!
//! One [`MmioTransport`] per device, placed on the MMIO bus in a 4 KiB slot
//! and announced to the guest with `virtio_mmio.device=4K@<base>:<irq>` on the
//! kernel command line ([`cmdline_device`]). Only modern devices are offered:
//! the legacy (version 1) page-based queue registers do not exist here, and
//! FEATURES_OK is refused unless the driver accepts `VIRTIO_F_VERSION_1`.
//!
//! Everything in here is driven by guest writes, so every register write is
//! checked against the device status state machine (virtio 1.2 §2.1, §3.1):
//! features can be written only between DRIVER and FEATURES_OK, queues only
//! between FEATURES_OK and DRIVER_OK, status bits only ever get added (0
//! resets). Anything else is ignored and logged (rate-limited).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory as _};
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateError, ActiveQueue, GuestMemory, InterruptKind, MmioInterrupt, VirtioDevice,
    VirtioInterrupt, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED,
    STATUS_FEATURES_OK, STATUS_NEEDS_RESET, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::bus::BusDevice;
use crate::warn_limited;

#[cfg(test)]
mod tests;

/// Size of one device's MMIO window.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register: the builder puts one ioeventfd per
/// queue here, with the queue index as datamatch.
pub const NOTIFY_REG_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4b53_5548; // "HUSK"
const CONFIG_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;

/// The kernel command line fragment that announces a device to the guest.
pub fn cmdline_device(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

/// Errors from creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A device declared a queue size virtio-queue cannot use.
    #[error("queue {index} has invalid maximum size {size}")]
    QueueSize { index: usize, size: u16 },
    /// The device does not offer VIRTIO_F_VERSION_1.
    #[error("device does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] io::Error),
}

/// What the builder registers for one transport: the bus device, one
/// ioeventfd per queue (datamatch = queue index on QueueNotify) and the irqfd.
pub struct MmioWiring {
    /// Goes on the MMIO bus.
    pub device: crate::devices::bus::SharedDevice,
    /// Queue notification eventfds, in queue order.
    pub queue_evts: Vec<EventFd>,
    /// The interrupt eventfd.
    pub irq: EventFd,
}

impl std::fmt::Debug for MmioWiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioWiring")
            .field("queues", &self.queue_evts.len())
            .finish_non_exhaustive()
    }
}

/// A virtio device behind virtio-mmio registers.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<MmioInterrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    unknown_features: bool,
    queue_sel: u32,
    shm_sel: u32,
    status: u32,
    config_generation: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl MmioTransport {
    /// Wraps `device`. `mem` is the guest memory the device's queues live in.
    pub fn new(mem: GuestMemory, device: Arc<Mutex<dyn VirtioDevice>>) -> Result<Self, MmioError> {
        let (sizes, features) = {
            let d = lock(&device);
            (d.queue_max_sizes().to_vec(), d.avail_features())
        };
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(MmioError::NotModern);
        }
        let queues = sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|_| MmioError::QueueSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(MmioError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(MmioInterrupt::new().map_err(MmioError::EventFd)?),
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features: false,
            queue_sel: 0,
            shm_sel: 0,
            status: 0,
            config_generation: 0,
        })
    }

    /// One eventfd per queue, in queue order: register each as an ioeventfd on
    /// `base + NOTIFY_REG_OFFSET` with datamatch = its index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Puts the transport behind a lock for the bus and hands out the
    /// eventfds the builder registers with KVM.
    pub fn into_wiring(self) -> io::Result<MmioWiring> {
        let queue_evts = self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        let irq = self.interrupt.eventfd().try_clone()?;
        Ok(MmioWiring {
            device: Arc::new(Mutex::new(self)),
            queue_evts,
            irq,
        })
    }

    /// The eventfd to register as the device's irqfd.
    pub fn interrupt_evt(&self) -> &EventFd {
        self.interrupt.eventfd()
    }

    /// The interrupt state shared with the device.
    pub fn interrupt(&self) -> &Arc<MmioInterrupt> {
        &self.interrupt
    }

    /// The wrapped device.
    pub fn device(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        self.device.clone()
    }

    /// The current device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn dev(&self) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
        lock(&self.device)
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    /// Features may be written after DRIVER and before FEATURES_OK.
    fn features_writable(&self) -> bool {
        self.has(STATUS_ACKNOWLEDGE | STATUS_DRIVER)
            && self.status & (STATUS_FEATURES_OK | STATUS_FAILED) == 0
    }

    /// Queues may be configured after FEATURES_OK and before DRIVER_OK.
    fn queues_writable(&self) -> bool {
        self.has(STATUS_FEATURES_OK) && self.status & (STATUS_DRIVER_OK | STATUS_FAILED) == 0
    }

    fn read_reg(&self, offset: u32) -> u32 {
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.dev().device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => {
                let features = self.dev().avail_features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: a length of all ones says so.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                warn_limited!("virtio-mmio: read of unknown or write-only register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u32, v: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if !self.features_writable() {
                    warn_limited!(
                        "virtio-mmio: driver features written in status {:#x}",
                        self.status
                    );
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Feature words past 64 bits: nothing is offered there, so
                    // a driver accepting anything there fails negotiation.
                    _ => self.unknown_features |= v != 0,
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_reg(offset, v),
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Normally caught by the ioeventfd before it gets here; without
                // one (or with a datamatch miss) forward it the same way.
                match self.queue_evts.get(v as usize) {
                    Some(evt) => {
                        if let Err(e) = evt.write(1) {
                            warn_limited!("virtio-mmio: cannot signal queue {v}: {e}");
                        }
                    }
                    None => warn_limited!("virtio-mmio: notify for nonexistent queue {v}"),
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.write_status(v),
            VIRTIO_MMIO_SHM_SEL => self.shm_sel = v,
            _ => warn_limited!("virtio-mmio: write to unknown or read-only register {offset:#x}"),
        }
    }

    fn write_queue_reg(&mut self, offset: u32, v: u32) {
        let writable = self.queues_writable();
        let status = self.status;
        let sel = self.queue_sel;
        let Some(q) = self.queues.get_mut(sel as usize) else {
            warn_limited!(
                "virtio-mmio: queue register {offset:#x} written for nonexistent queue {sel}"
            );
            return;
        };
        // Disabling a queue is harmless and Linux does it while tearing down
        // after a reset; everything else needs the FEATURES_OK window.
        if offset == VIRTIO_MMIO_QUEUE_READY && v == 0 && status & STATUS_DRIVER_OK == 0 {
            q.set_ready(false);
            return;
        }
        if !writable {
            warn_limited!("virtio-mmio: queue register {offset:#x} written in status {status:#x}");
            return;
        }
        if q.ready() && offset != VIRTIO_MMIO_QUEUE_READY {
            warn_limited!("virtio-mmio: queue {sel} reconfigured while ready");
            return;
        }
        let low = |addr: u64| (addr & !0xffff_ffff) | u64::from(v);
        let high = |addr: u64| (addr & 0xffff_ffff) | (u64::from(v) << 32);
        let result = match offset {
            VIRTIO_MMIO_QUEUE_NUM => u16::try_from(v)
                .map_err(|_| virtio_queue::Error::InvalidSize)
                .and_then(|n| q.try_set_size(n)),
            VIRTIO_MMIO_QUEUE_READY => {
                q.set_ready(v == 1);
                Ok(())
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => {
                q.try_set_desc_table_address(GuestAddress(low(q.desc_table())))
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                q.try_set_desc_table_address(GuestAddress(high(q.desc_table())))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => {
                q.try_set_avail_ring_address(GuestAddress(low(q.avail_ring())))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                q.try_set_avail_ring_address(GuestAddress(high(q.avail_ring())))
            }
            VIRTIO_MMIO_QUEUE_USED_LOW => {
                q.try_set_used_ring_address(GuestAddress(low(q.used_ring())))
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH => {
                q.try_set_used_ring_address(GuestAddress(high(q.used_ring())))
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn_limited!("virtio-mmio: queue {sel} register {offset:#x} = {v:#x} refused: {e}");
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        if v & self.status != self.status {
            warn_limited!(
                "virtio-mmio: status {:#x} -> {v:#x} clears bits",
                self.status
            );
            return;
        }
        let added = v & !self.status;
        // FAILED may be set at any time; the driver has given up on the device.
        if added & STATUS_FAILED != 0 {
            self.status |= STATUS_FAILED;
        }
        const ORDER: [(u32, u32); 4] = [
            (STATUS_ACKNOWLEDGE, 0),
            (STATUS_DRIVER, STATUS_ACKNOWLEDGE),
            (STATUS_FEATURES_OK, STATUS_DRIVER),
            (STATUS_DRIVER_OK, STATUS_FEATURES_OK),
        ];
        let known: u32 = ORDER.iter().map(|(bit, _)| bit).sum();
        let steps = added & known;
        if added & !(known | STATUS_FAILED) != 0 {
            warn_limited!("virtio-mmio: unknown status bits in {v:#x} ignored");
        }
        // The whole write is refused if any new bit comes out of order.
        let mut s = self.status;
        for (bit, needs) in ORDER {
            if steps & bit != 0 {
                if s & needs != needs || s & (STATUS_FAILED | STATUS_NEEDS_RESET) != 0 {
                    warn_limited!(
                        "virtio-mmio: status {:#x} -> {v:#x} is out of order",
                        self.status
                    );
                    return;
                }
                s |= bit;
            }
        }
        for (bit, _) in ORDER {
            if steps & bit == 0 {
                continue;
            }
            match bit {
                STATUS_FEATURES_OK if !self.accept_features() => {
                    // Leave FEATURES_OK clear: the driver reads it back and gives up.
                    return;
                }
                STATUS_DRIVER_OK => {
                    self.status |= STATUS_DRIVER_OK;
                    if let Err(e) = self.activate() {
                        warn!(
                            "virtio-mmio: activating device type {} failed: {e}",
                            self.dev().device_type()
                        );
                        self.needs_reset();
                    }
                }
                _ => self.status |= bit,
            }
        }
    }

    fn accept_features(&mut self) -> bool {
        let offered = self.dev().avail_features();
        let unknown = self.driver_features & !offered;
        if unknown != 0 || self.unknown_features || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            warn!(
                "virtio-mmio: driver features {:#x} refused (offered {offered:#x})",
                self.driver_features
            );
            return false;
        }
        let features = self.driver_features;
        self.dev().set_acked_features(features);
        true
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut active = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() || !queue_fits(q, &self.mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
            let mut state = q.state();
            state.event_idx_enabled = event_idx;
            let queue = Queue::try_from(state).map_err(|_| ActivateError::InvalidQueue(i))?;
            let notify = self.queue_evts[i]
                .try_clone()
                .map_err(ActivateError::EventFd)?;
            active.push(ActiveQueue { queue, notify });
        }
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let mem = self.mem.clone();
        self.dev().activate(mem, interrupt, active)
    }

    fn needs_reset(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.trigger(InterruptKind::Config) {
            warn!("virtio-mmio: cannot raise config interrupt: {e}");
        }
    }

    fn reset(&mut self) {
        let ok = {
            let mut d = self.dev();
            !d.is_activated() || d.reset()
        };
        if !ok {
            warn!("virtio-mmio: device cannot be reset; it needs a VM restart");
            self.needs_reset();
            return;
        }
        for q in &mut self.queues {
            q.reset();
        }
        for evt in &self.queue_evts {
            // Drop notifications that were meant for the old queues.
            let _ = evt.read();
        }
        self.interrupt.clear();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.unknown_features = false;
        self.queue_sel = 0;
        self.shm_sel = 0;
        self.status = 0;
    }
}

/// Whether the queue's three areas lie in guest memory. virtio-queue's own
/// `is_valid` logs at error level on every miss, which a guest could use to
/// flood the log.
fn queue_fits(q: &Queue, mem: &GuestMemory) -> bool {
    let n = u64::from(q.size());
    let areas = [
        (q.desc_table(), 16 * n),
        (q.avail_ring(), 6 + 2 * n),
        (q.used_ring(), 6 + 8 * n),
    ];
    areas
        .iter()
        .all(|&(addr, len)| mem.check_range(GuestAddress(addr), len as usize))
}

fn lock(dev: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.dev().read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            warn_limited!(
                "virtio-mmio: {}-byte read at {offset:#x} is not a register access",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset as u32).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            if self.status & STATUS_FAILED != 0 {
                return;
            }
            self.dev().write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn_limited!(
                "virtio-mmio: {}-byte write at {offset:#x} is not a register access",
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            warn_limited!("virtio-mmio: unaligned register write at {offset:#x}");
            return;
        }
        self.write_reg(offset as u32, u32::from_le_bytes(bytes));
    }
}
