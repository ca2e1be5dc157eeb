//! The vsock device: config space, activation, and moving packets between
//! the virtqueues and a [`VsockBackend`].
//!
//! Queue processing runs on the event loop thread. Both directions keep
//! guest notifications off while they work and use virtio-queue's
//! enable-then-recheck dance before going idle, so no notification is lost
//! and, with EVENT_IDX, a busy stream costs few VM exits. The rx queue is only
//! armed for notifications when the backend has something to deliver and the
//! guest has run out of buffers: refilling rx buffers is otherwise silent.

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vmm_sys_util::eventfd::EventFd;

use super::{VsockBackend, VsockError, MAX_PKT_BUF_SIZE, RXQ, TXQ};
use crate::devices::virtio::{
    ActivateError, ActiveQueue, GuestMemory, InterruptKind, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::warn_limited;

/// Size of each of the three queues.
pub const VSOCK_QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [VSOCK_QUEUE_SIZE; 3];

pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) queues: Vec<Queue>,
}

/// The virtio-vsock device.
pub struct Vsock<B: VsockBackend> {
    cid: u64,
    pub(super) backend: B,
    acked_features: u64,
    pub(super) activate_evt: EventFd,
    /// Queue notification eventfds, kept from the first activation on: the
    /// transport hands out clones of the same eventfds every time, so the
    /// event loop registers them once.
    pub(super) queue_evts: Option<Vec<EventFd>>,
    pub(super) active: Option<Active>,
    /// Bounce buffer for tx packets whose data spans several descriptors.
    tx_scratch: Vec<u8>,
}

impl<B: VsockBackend> std::fmt::Debug for Vsock<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("active", &self.active.is_some())
            .finish()
    }
}

impl<B: VsockBackend> Vsock<B> {
    /// A vsock device for a guest with CID `cid`, bridged to `backend`.
    pub fn new(cid: u64, backend: B) -> Result<Self, VsockError> {
        if cid <= 2 || cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(cid));
        }
        Ok(Self {
            cid,
            backend,
            acked_features: 0,
            activate_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(VsockError::EventFd)?,
            queue_evts: None,
            active: None,
            tx_scratch: Vec::new(),
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The backend (tests and the benchmark look inside).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Mutable access to the backend.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The backend's pollable fd.
    pub fn backend_fd(&self) -> RawFd {
        self.backend.as_raw_fd()
    }

    /// Moves packets from the backend into guest rx buffers. Returns whether
    /// any buffer was used (the caller then signals).
    pub fn process_rx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = &active.mem;
        let rxq = &mut active.queues[RXQ];
        let mut used = false;
        'outer: while self.backend.has_pending_rx() {
            let chain = match rxq.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    warn_limited!("vsock: rx queue unusable: {e}");
                    break;
                }
            };
            let Some(mut chain) = chain else {
                // Out of buffers with packets waiting: ask the guest to
                // notify us when it adds some, then re-check for a race.
                match rxq.enable_notification(mem) {
                    Ok(true) => {
                        let _ = rxq.disable_notification(mem);
                        continue;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        warn_limited!("vsock: cannot enable rx notifications: {e}");
                        break;
                    }
                }
            };
            let head = chain.head_index();
            let len = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_BUF_SIZE) {
                Ok(mut pkt) => {
                    if !self.backend.recv_pkt(&mut pkt) {
                        // Nothing after all: give the buffer back untouched.
                        rxq.set_next_avail(rxq.next_avail().wrapping_sub(1));
                        break 'outer;
                    }
                    PKT_HEADER_SIZE as u32 + pkt.len()
                }
                Err(e) => {
                    warn_limited!("vsock: dropping bad rx buffer {head}: {e}");
                    0
                }
            };
            if let Err(e) = rxq.add_used(mem, head, len) {
                warn_limited!("vsock: cannot return rx buffer {head}: {e}");
                break;
            }
            used = true;
        }
        used
    }

    /// Hands every packet on the tx queue to the backend. Returns whether any
    /// buffer was used.
    pub fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = &active.mem;
        let txq = &mut active.queues[TXQ];
        let mut used = false;
        loop {
            if let Err(e) = txq.disable_notification(mem) {
                warn_limited!("vsock: cannot disable tx notifications: {e}");
                return used;
            }
            loop {
                let chain = match txq.iter(mem) {
                    Ok(mut it) => it.next(),
                    Err(e) => {
                        warn_limited!("vsock: tx queue unusable: {e}");
                        return used;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                // The common layouts (header and data in one or two
                // descriptors) are used in place; anything else is gathered.
                match VsockPacket::from_tx_virtq_chain(mem, &mut chain.clone(), MAX_PKT_BUF_SIZE) {
                    Ok(pkt) => self.backend.send_pkt(&pkt),
                    Err(_) => match gather_tx(mem, chain, &mut self.tx_scratch) {
                        Ok(hdr) => send_gathered(&mut self.backend, hdr, &mut self.tx_scratch),
                        Err(e) => warn_limited!("vsock: dropping bad tx packet {head}: {e}"),
                    },
                }
                if let Err(e) = txq.add_used(mem, head, 0) {
                    warn_limited!("vsock: cannot return tx buffer {head}: {e}");
                    return used;
                }
                used = true;
            }
            match txq.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return used,
                Err(e) => {
                    warn_limited!("vsock: cannot enable tx notifications: {e}");
                    return used;
                }
            }
        }
    }

    /// Raises the used-buffer interrupt for `queue` if the driver wants one.
    pub fn signal_used(&mut self, queue: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let q = &mut active.queues[queue];
        match q.needs_notification(&active.mem) {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                if let Err(e) = active.interrupt.trigger(InterruptKind::Queue) {
                    warn_limited!("vsock: cannot raise interrupt: {e}");
                }
            }
        }
    }

    /// Runs tx then rx and signals: the body of a tx-queue event. Public so
    /// tests and the benchmark can drive the device without an event loop.
    pub fn handle_tx_event(&mut self) {
        if self.process_tx() {
            self.signal_used(TXQ);
        }
        if self.process_rx() {
            self.signal_used(RXQ);
        }
    }

    /// The body of an rx-queue event (new rx buffers).
    pub fn handle_rx_event(&mut self) {
        if self.process_rx() {
            self.signal_used(RXQ);
        }
    }

    /// The body of a backend event.
    pub fn handle_backend_event(&mut self, evset: event_manager::EventSet) {
        self.backend.notify(evset);
        if self.process_rx() {
            self.signal_used(RXQ);
        }
    }
}

/// Why a tx chain could not be gathered.
#[derive(Debug, thiserror::Error)]
enum GatherError {
    #[error("descriptor chain outside guest memory or malformed")]
    Chain(#[from] virtio_queue::Error),
    #[error("chain shorter than its header says")]
    Short(#[from] std::io::Error),
    #[error("payload length {0} over the {MAX_PKT_BUF_SIZE}-byte limit")]
    TooLong(u32),
}

/// Reads a tx packet laid out over any number of descriptors (virtio 1.x
/// lets drivers split buffers freely; virtio-vsock's parser takes at most a
/// header and one data descriptor). The payload lands in `scratch`.
fn gather_tx(
    mem: &GuestMemory,
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    scratch: &mut Vec<u8>,
) -> Result<[u8; PKT_HEADER_SIZE], GatherError> {
    use std::io::Read;
    let mut r: virtio_queue::Reader<'_> = virtio_queue::Reader::new(mem, chain)?;
    let mut hdr = [0u8; PKT_HEADER_SIZE];
    r.read_exact(&mut hdr)?;
    let len = u32::from_le_bytes([hdr[24], hdr[25], hdr[26], hdr[27]]);
    if len > MAX_PKT_BUF_SIZE {
        return Err(GatherError::TooLong(len));
    }
    scratch.resize(len as usize, 0);
    r.read_exact(scratch)?;
    Ok(hdr)
}

fn send_gathered<B: VsockBackend>(
    backend: &mut B,
    mut hdr: [u8; PKT_HEADER_SIZE],
    data: &mut [u8],
) {
    let raw = hdr;
    let data = (!data.is_empty()).then_some(data);
    // SAFETY: `hdr` and `data` are plain host buffers that outlive the
    // packet, and nothing else touches them while it exists.
    let Ok(mut pkt) = (unsafe { VsockPacket::new(&mut hdr, data) }) else {
        return;
    };
    // `new` leaves the parsed header empty; this fills it from the bytes.
    if pkt.set_header_from_raw(&raw).is_ok() {
        backend.send_pkt(&pkt);
    }
}

impl<B: VsockBackend> VirtioDevice for Vsock<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let config = self.cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| config.get(usize::try_from(o).ok()?))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn_limited!("vsock: guest wrote read-only config at {offset:#x}");
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        let (queues, evts): (Vec<_>, Vec<_>) =
            queues.into_iter().map(|q| (q.queue, q.notify)).unzip();
        if self.queue_evts.is_none() {
            self.queue_evts = Some(evts);
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        // The event loop registers the queue eventfds and the backend when it
        // sees this (activation runs on a vCPU thread).
        self.activate_evt.write(1).map_err(ActivateError::EventFd)?;
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.backend.reset();
        true
    }
}
