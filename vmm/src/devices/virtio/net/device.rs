//! The net device: config space, activation, and moving frames between the
//! virtqueues and a [`NetBackend`].
//!
//! Queue processing runs on the event loop thread. Both directions keep
//! guest notifications off while they work and use virtio-queue's
//! enable-then-recheck dance before going idle. The rx queue is armed for
//! notifications only when a frame waits and the guest has run out of
//! buffers; tx stops (notifications armed) only when the ring is empty, or
//! leaves chains on the ring while the backend is over its output bound.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vmm_sys_util::eventfd::EventFd;

use super::used_ring::{add_used_together, RxSignal};
use super::{MacAddr, NetBackend, NetError, MAX_FRAME_LEN, MIN_FRAME_LEN, NET_HDR_LEN, RXQ, TXQ};
use crate::devices::virtio::{
    ActivateError, ActiveQueue, GuestMemory, InterruptKind, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::warn_limited;

/// Size of each of the two queues.
pub const NET_QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [NET_QUEUE_SIZE; 2];

/// Feature bits offered with every backend.
const FEATURES: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_RING_F_EVENT_IDX
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_MTU)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

/// Offloads, offered only with a backend that carries virtio-net headers.
pub const OFFLOAD_FEATURES: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6);

pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) queues: Vec<Queue>,
    /// The rx queue's interrupt decisions ([`super::used_ring`]).
    pub(super) rx_signal: RxSignal,
}

/// Counters, for tests and the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the backend.
    pub tx_frames: u64,
    /// Tx chains dropped as malformed.
    pub tx_dropped: u64,
    /// Frames written into guest buffers.
    pub rx_frames: u64,
    /// Rx buffers returned unused as malformed.
    pub rx_bad_buffers: u64,
}

/// The virtio-net device.
pub struct Net<B: NetBackend> {
    mac: MacAddr,
    mtu: u16,
    pub(super) backend: B,
    acked_features: u64,
    pub(super) activate_evt: EventFd,
    /// Queue notification eventfds, kept from the first activation on (the
    /// transport hands out clones of the same ones every time).
    pub(super) queue_evts: Option<Vec<EventFd>>,
    pub(super) active: Option<Active>,
    /// One tx frame, gathered from its chain.
    tx_scratch: Vec<u8>,
    stats: NetStats,
    /// What the event loop watches the backend for.
    pub(super) watch: super::event_handler::Watch,
}

impl<B: NetBackend> std::fmt::Debug for Net<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &self.mac)
            .field("active", &self.active.is_some())
            .finish()
    }
}

/// Why one chain was not used.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("descriptor chain outside guest memory or malformed")]
    Chain(#[from] virtio_queue::Error),
    #[error("descriptor chain loops, or is longer than the queue")]
    Unterminated,
    #[error("cannot copy the frame")]
    Copy(#[from] std::io::Error),
    #[error("frame of {0} bytes outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN}")]
    Length(usize),
    #[error("offload requested (flags {0:#x}, gso type {1}) but none was negotiated")]
    Offload(u8, u8),
}

impl<B: NetBackend> Net<B> {
    /// A net device with address `mac` and MTU `mtu`, bridged to `backend`.
    pub fn new(mac: MacAddr, mtu: u16, backend: B) -> Result<Self, NetError> {
        Ok(Self {
            mac,
            mtu,
            backend,
            acked_features: 0,
            activate_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(NetError::EventFd)?,
            queue_evts: None,
            active: None,
            tx_scratch: Vec::with_capacity(NET_HDR_LEN + MAX_FRAME_LEN),
            stats: NetStats::default(),
            watch: Default::default(),
        })
    }

    /// The backend (tests look inside).
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

    /// The counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn mergeable(&self) -> bool {
        self.acked_features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// The features this device offers with its backend.
    fn offered(&self) -> u64 {
        if self.backend.vnet_hdr() {
            FEATURES | OFFLOAD_FEATURES
        } else {
            FEATURES
        }
    }

    /// The driver activated the device (event loop thread): the backend
    /// learns which offloads the guest takes.
    pub fn on_activated(&mut self) {
        if self.backend.vnet_hdr() {
            self.backend.set_guest_offloads(self.acked_features);
        }
    }

    /// Hands tx frames to the backend while it takes them. Returns whether any chain was used.
    pub fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = &active.mem;
        let txq = &mut active.queues[TXQ];
        let with_hdr = self.backend.vnet_hdr();
        let mut used = false;
        loop {
            if let Err(e) = txq.disable_notification(mem) {
                warn_limited!("net: cannot disable tx notifications: {e}");
                return used;
            }
            loop {
                if !self.backend.can_send() {
                    // Chains wait on the ring; the backend's writable
                    // event brings us back.
                    return used;
                }
                let chain = match txq.iter(mem) {
                    Ok(mut it) => it.next(),
                    Err(e) => {
                        warn_limited!("net: tx queue unusable: {e}");
                        return used;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                match read_tx_frame(mem, chain, &mut self.tx_scratch, with_hdr) {
                    Ok(()) => {
                        self.backend.send_frame(&self.tx_scratch);
                        self.stats.tx_frames += 1;
                    }
                    Err(e) => {
                        self.stats.tx_dropped += 1;
                        warn_limited!("net: dropping bad tx chain {head}: {e}");
                    }
                }
                if let Err(e) = txq.add_used(mem, head, 0) {
                    warn_limited!("net: cannot return tx chain {head}: {e}");
                    return used;
                }
                used = true;
            }
            match txq.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return used,
                Err(e) => {
                    warn_limited!("net: cannot enable tx notifications: {e}");
                    return used;
                }
            }
        }
    }

    /// Moves frames from the backend into guest rx buffers. Returns whether
    /// any buffer was used.
    pub fn process_rx(&mut self) -> bool {
        let mergeable = self.mergeable();
        let with_hdr = self.backend.vnet_hdr();
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = &active.mem;
        let rxq = &mut active.queues[RXQ];
        let mut used = false;
        while let Some(frame) = self.backend.peek_frame() {
            let (hdr, frame) = split_header(frame, with_hdr);
            match deliver(mem, rxq, hdr, frame, mergeable, &mut self.stats) {
                Delivery::Done => {
                    used = true;
                    self.stats.rx_frames += 1;
                    self.backend.consume_frame();
                }
                Delivery::Dropped => self.backend.consume_frame(),
                Delivery::BadBuffer => used = true,
                Delivery::Unusable => break,
                Delivery::NoRoom(seen) => {
                    // Not enough buffers for the frame waiting: ask the
                    // guest to notify us once it adds one past the `seen`
                    // it already offered (EVENT_IDX's avail_event), then
                    // re-check for a race.
                    let next = rxq.next_avail();
                    rxq.set_next_avail(next.wrapping_add(seen as u16));
                    let more = rxq.enable_notification(mem);
                    rxq.set_next_avail(next);
                    match more {
                        Ok(true) => {
                            let _ = rxq.disable_notification(mem);
                            continue;
                        }
                        Ok(false) => break,
                        Err(e) => {
                            warn_limited!("net: cannot enable rx notifications: {e}");
                            break;
                        }
                    }
                }
            }
        }
        used
    }

    /// Raises the used-buffer interrupt for `queue` if the driver wants one.
    pub fn signal_used(&mut self, queue: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let q = &mut active.queues[queue];
        let needed = if queue == RXQ {
            Ok(active.rx_signal.needs_interrupt(q, &active.mem))
        } else {
            q.needs_notification(&active.mem)
        };
        match needed {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                if let Err(e) = active.interrupt.trigger(InterruptKind::Queue) {
                    warn_limited!("net: cannot raise interrupt: {e}");
                }
            }
        }
    }

    /// The body of a tx-queue event: tx, then rx (the backend may have
    /// answered already), then signal.
    pub fn handle_tx_event(&mut self) {
        if self.process_tx() {
            self.signal_used(TXQ);
        }
        self.handle_rx_event();
    }

    /// The body of an rx-queue event (new rx buffers).
    pub fn handle_rx_event(&mut self) {
        if self.process_rx() {
            self.signal_used(RXQ);
        }
    }

    /// The body of a backend event: read or flush, deliver, and resume tx
    /// if the backend drained.
    pub fn handle_backend_event(&mut self, evset: event_manager::EventSet) {
        self.backend.notify(evset);
        self.handle_rx_event();
        if self.process_tx() {
            self.signal_used(TXQ);
        }
    }
}

/// Whether the chain ends where its last descriptor says so. virtio-queue
/// stops walking after a queue's worth of descriptors (or at a `next` out
/// of range), which bounds a loop but would hand us its truncated walk as a
/// chain; such a chain is refused instead.
fn chain_is_whole(chain: &DescriptorChain<&GuestMemory>) -> bool {
    chain.clone().last().is_some_and(|d| !d.has_next())
}

/// The header to give the guest for a backend frame, and the frame: the
/// backend's own header (its first 10 bytes; `num_buffers` is the device's)
/// when it carries one, else an empty one.
fn split_header(frame: &[u8], with_hdr: bool) -> ([u8; NET_HDR_LEN], &[u8]) {
    let mut hdr = [0u8; NET_HDR_LEN];
    if !with_hdr {
        return (hdr, frame);
    }
    let (h, rest) = frame.split_at(NET_HDR_LEN.min(frame.len()));
    // The first 10 bytes: `num_buffers` is the device's to fill.
    let n = h.len().min(10);
    hdr[..n].copy_from_slice(&h[..n]);
    (hdr, rest)
}

/// Reads one tx chain's frame into `scratch`: after its header, or with
/// its header when the backend takes headers (`with_hdr`).
fn read_tx_frame(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    scratch: &mut Vec<u8>,
    with_hdr: bool,
) -> Result<(), ChainError> {
    if !chain_is_whole(&chain) {
        return Err(ChainError::Unterminated);
    }
    let mut r: Reader<'_> = Reader::new(mem, chain)?;
    let total = r.available_bytes();
    let frame_len = total.saturating_sub(NET_HDR_LEN);
    if total < NET_HDR_LEN || !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
        return Err(ChainError::Length(frame_len));
    }
    let mut hdr = [0u8; NET_HDR_LEN];
    r.read_exact(&mut hdr)?;
    if with_hdr {
        // The backend (the host kernel's TAP) validates offload requests.
        scratch.clear();
        scratch.extend_from_slice(&hdr);
        scratch.resize(total, 0);
        r.read_exact(&mut scratch[NET_HDR_LEN..])?;
        return Ok(());
    }
    // flags (NEEDS_CSUM/DATA_VALID) and gso_type need offload features
    // this device does not offer with this backend.
    if hdr[0] != 0 || hdr[1] != 0 {
        return Err(ChainError::Offload(hdr[0], hdr[1]));
    }
    scratch.resize(frame_len, 0);
    r.read_exact(scratch)?;
    Ok(())
}

/// What became of one frame offered to the rx queue.
enum Delivery {
    /// Written.
    Done,
    /// The frame can never fit a single buffer: dropped, buffer kept.
    Dropped,
    /// A malformed buffer was returned unused; the frame waits.
    BadBuffer,
    /// Not enough buffers: none taken, this many seen.
    NoRoom(usize),
    /// The ring itself is broken: stop until reset.
    Unusable,
}

/// Writes `frame` with its header into the next rx buffer(s): one buffer
/// without mergeable buffers, as many as it needs with them. Buffers are
/// taken only once the frame fits in them all.
fn deliver(
    mem: &GuestMemory,
    rxq: &mut Queue,
    mut hdr: [u8; NET_HDR_LEN],
    frame: &[u8],
    mergeable: bool,
    stats: &mut NetStats,
) -> Delivery {
    let need = NET_HDR_LEN + frame.len();
    let mut writers: Vec<(u16, Writer<'_>)> = Vec::new();
    let mut room = 0usize;
    while room < need {
        if !mergeable && !writers.is_empty() {
            break;
        }
        let chain = match rxq.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => {
                warn_limited!("net: rx queue unusable: {e}");
                give_back(rxq, writers.len());
                return Delivery::Unusable;
            }
        };
        let Some(chain) = chain else {
            give_back(rxq, writers.len());
            return Delivery::NoRoom(writers.len());
        };
        let head = chain.head_index();
        let writer = if chain_is_whole(&chain) {
            Writer::new(mem, chain)
        } else {
            Err(virtio_queue::Error::InvalidChain)
        };
        let cap = writer.as_ref().map_or(0, Writer::available_bytes);
        let min = if writers.is_empty() { NET_HDR_LEN } else { 1 };
        let Ok(writer) = writer.map_err(ChainError::from).and_then(|w| {
            if cap < min {
                Err(ChainError::Length(cap))
            } else {
                Ok(w)
            }
        }) else {
            // Return it unused, with the buffers taken before it for this
            // frame (they cannot go back on the ring ahead of it; Linux
            // drops a zero-length used buffer as "too short").
            stats.rx_bad_buffers += 1;
            warn_limited!("net: returning bad rx buffer {head} ({cap} writable bytes)");
            let taken: Vec<u16> = writers.iter().map(|(h, _)| *h).collect();
            for h in taken.into_iter().chain(std::iter::once(head)) {
                if rxq.add_used(mem, h, 0).is_err() {
                    return Delivery::Unusable;
                }
            }
            return Delivery::BadBuffer;
        };
        room += cap;
        writers.push((head, writer));
    }
    if room < need {
        // Without mergeable buffers the frame must fit one buffer: a guest
        // whose buffers are all too small for it never gets it. Drop it.
        let (head, _) = writers.pop().expect("one writer taken");
        warn_limited!("net: rx buffer {head} too small for a {need}-byte frame; frame dropped");
        give_back(rxq, 1);
        return Delivery::Dropped;
    }
    let count = writers.len();
    hdr[10..12].copy_from_slice(&(count as u16).to_le_bytes());
    let mut rest: &[u8] = frame;
    let mut first = true;
    let mut used = Vec::with_capacity(count);
    for (head, mut w) in writers {
        let mut written = 0;
        let mut ok = true;
        if first {
            ok &= w.write_all(&hdr).is_ok();
            written += NET_HDR_LEN;
            first = false;
        }
        let n = rest.len().min(w.available_bytes());
        ok &= w.write_all(&rest[..n]).is_ok();
        written += n;
        rest = &rest[n..];
        if !ok {
            stats.rx_bad_buffers += 1;
            warn_limited!("net: cannot write rx buffer {head}");
        }
        used.push((head, written as u32));
    }
    // All of the frame's buffers at once (see `used_ring`).
    if let Err(e) = add_used_together(rxq, mem, &used) {
        warn_limited!("net: cannot return rx buffers {used:?}: {e}");
        return Delivery::Unusable;
    }
    Delivery::Done
}

/// Puts `n` chains taken from the available ring back.
fn give_back(rxq: &mut Queue, n: usize) {
    rxq.set_next_avail(rxq.next_avail().wrapping_sub(n as u16));
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.offered()
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.offered();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config { u8 mac[6]; le16 status;
        //   le16 max_virtqueue_pairs; le16 mtu; }
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&self.mac.0);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| config.get(usize::try_from(o).ok()?))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR-less legacy
        // devices; a modern device's config is read-only here.
        warn_limited!("net: guest wrote read-only config at {offset:#x}");
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
            rx_signal: RxSignal::default(),
        });
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
