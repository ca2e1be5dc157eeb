//! A simulated guest vsock driver, and a backend test double.
//!
//! [`VsockDriver`] sets up a real [`MmioTransport`] around a real [`Vsock`]
//! device through its registers, then exchanges packets through split
//! virtqueues in guest memory, exactly as the Linux driver would. The unit
//! tests, the fuzz target and the benchmark all use it. Built only for tests
//! and behind the `test-utils` feature: never part of the product.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::EventSet;
use virtio_vsock::packet::PKT_HEADER_SIZE;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{op, Packet, Vsock, VsockBackend, TYPE_STREAM, VSOCK_HOST_CID, VSOCK_QUEUE_SIZE};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::testing::{guest_memory, mmio_setup, Buf, BufAlloc, DriverQueue};
use crate::devices::virtio::{
    GuestMemory, VirtioDevice, STATUS_DRIVER_OK, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// A packet header in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    /// A stream packet from guest `cid` port `src` to host port `dst`.
    pub fn guest(cid: u64, src: u32, dst: u32, op: u16) -> Self {
        Self {
            src_cid: cid,
            dst_cid: VSOCK_HOST_CID,
            src_port: src,
            dst_port: dst,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 256 * 1024,
            ..Default::default()
        }
    }

    /// Wire format.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parses the wire format.
    pub fn from_bytes(b: &[u8; PKT_HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// A backend that records what the guest sent and replays scripted packets.
#[derive(Debug)]
pub struct TestBackend {
    evt: EventFd,
    /// Packets the guest sent, with their data.
    pub sent: Vec<(Hdr, Vec<u8>)>,
    /// Packets to deliver to the guest, in order.
    pub to_guest: VecDeque<(Hdr, Vec<u8>)>,
    /// How many times `reset` ran.
    pub resets: usize,
}

impl TestBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self {
            evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            sent: vec![],
            to_guest: VecDeque::new(),
            resets: 0,
        }
    }
}

impl TestBackend {
    /// Makes the backend's fd readable, as host activity would.
    pub fn wake(&self) {
        self.evt.write(1).unwrap();
    }
}

impl Default for TestBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRawFd for TestBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }
}

impl VsockBackend for TestBackend {
    fn send_pkt(&mut self, pkt: &Packet<'_>) {
        let mut raw = [0u8; PKT_HEADER_SIZE];
        pkt.header_slice().copy_to(&mut raw[..]);
        let data = pkt.data_slice().map_or_else(Vec::new, |d| {
            let mut v = vec![0u8; d.len()];
            d.copy_to(&mut v[..]);
            v
        });
        self.sent.push((Hdr::from_bytes(&raw), data));
    }

    fn recv_pkt(&mut self, pkt: &mut Packet<'_>) -> bool {
        let Some((mut h, data)) = self.to_guest.pop_front() else {
            return false;
        };
        let room = pkt.data_slice().map_or(0, |d| d.len());
        let n = data.len().min(room);
        if let Some(d) = pkt.data_slice() {
            d.subslice(0, n).unwrap().copy_from(&data[..n]);
        }
        h.len = n as u32;
        pkt.set_header_from_raw(&h.to_bytes()).unwrap();
        true
    }

    fn has_pending_rx(&self) -> bool {
        !self.to_guest.is_empty()
    }

    fn notify(&mut self, _evset: EventSet) {
        let _ = self.evt.read();
    }

    fn reset(&mut self) {
        self.resets += 1;
        self.to_guest.clear();
    }
}

/// Guest memory size of the simulated VM.
pub const MEM_SIZE: usize = 64 << 20;
const QUEUE_BASE: u64 = 0x1000;
const BUF_BASE: u64 = 0x10_0000;

/// How the simulated driver lays out rx buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxLayout {
    /// One descriptor holding header and data (Linux ≥ 6.2).
    Single,
    /// Header and data in two descriptors (older Linux).
    Split,
}

/// The simulated guest driver plus the device under test.
pub struct VsockDriver<B: VsockBackend + 'static> {
    pub mem: GuestMemory,
    pub transport: MmioTransport,
    pub dev: Arc<Mutex<Vsock<B>>>,
    pub cid: u64,
    pub rxq: DriverQueue,
    pub txq: DriverQueue,
    pub evq: DriverQueue,
    /// rx buffers in flight: head → (address, length, layout).
    rx_bufs: HashMap<u16, (u64, u32, RxLayout)>,
    /// Recycled rx buffers by size.
    rx_free: Vec<(u64, u32)>,
    /// tx buffers in flight: head → (address, capacity).
    tx_bufs: HashMap<u16, (u64, u32)>,
    tx_free: Vec<(u64, u32)>,
    alloc: BufAlloc,
    pub rx_layout: RxLayout,
}

impl<B: VsockBackend + 'static> std::fmt::Debug for VsockDriver<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockDriver")
            .field("cid", &self.cid)
            .finish()
    }
}

impl<B: VsockBackend + 'static> VsockDriver<B> {
    /// Builds the device around `backend` and runs the driver's probe,
    /// accepting `features` (VERSION_1 is always accepted).
    pub fn new(cid: u64, backend: B, features: u64) -> Self {
        let mem = guest_memory(MEM_SIZE);
        let dev = Arc::new(Mutex::new(Vsock::new(cid, backend).unwrap()));
        let mut transport = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
        let qs = VSOCK_QUEUE_SIZE;
        let step = DriverQueue::footprint(qs);
        let rxq = DriverQueue::new(&mem, QUEUE_BASE, qs);
        let txq = DriverQueue::new(&mem, QUEUE_BASE + step, qs);
        let evq = DriverQueue::new(&mem, QUEUE_BASE + 2 * step, qs);
        let status = mmio_setup(
            &mut transport,
            &[&rxq, &txq, &evq],
            features | VIRTIO_F_VERSION_1,
        );
        assert_ne!(
            status & STATUS_DRIVER_OK,
            0,
            "device did not activate: status {status:#x}"
        );
        Self {
            mem,
            transport,
            dev,
            cid,
            rxq,
            txq,
            evq,
            rx_bufs: HashMap::new(),
            rx_free: vec![],
            tx_bufs: HashMap::new(),
            tx_free: vec![],
            alloc: BufAlloc::new(BUF_BASE, MEM_SIZE as u64),
            rx_layout: RxLayout::Single,
        }
    }

    /// Resets the device through the status register and probes it again
    /// with fresh rings (what a guest driver reload does).
    pub fn reprobe(&mut self, features: u64) -> u32 {
        let qs = VSOCK_QUEUE_SIZE;
        let step = DriverQueue::footprint(qs);
        self.rxq = DriverQueue::new(&self.mem, QUEUE_BASE, qs);
        self.txq = DriverQueue::new(&self.mem, QUEUE_BASE + step, qs);
        self.evq = DriverQueue::new(&self.mem, QUEUE_BASE + 2 * step, qs);
        self.rx_bufs.clear();
        self.tx_bufs.clear();
        mmio_setup(
            &mut self.transport,
            &[&self.rxq, &self.txq, &self.evq],
            features | VIRTIO_F_VERSION_1,
        )
    }

    /// Same, with EVENT_IDX negotiated.
    pub fn with_event_idx(cid: u64, backend: B) -> Self {
        Self::new(cid, backend, VIRTIO_RING_F_EVENT_IDX)
    }

    /// Locks the device.
    pub fn dev(&self) -> MutexGuard<'_, Vsock<B>> {
        self.dev.lock().unwrap()
    }

    /// Offers up to `n` rx buffers with `data_len` bytes of payload room each
    /// (not notifying: the device is expected to poll them, as Linux's
    /// refills are silent while the device has notifications off).
    pub fn fill_rx(&mut self, n: usize, data_len: u32) {
        for _ in 0..n {
            let total = PKT_HEADER_SIZE as u32 + data_len;
            let idx = self.rx_free.iter().position(|&(_, l)| l == total);
            let addr = match idx {
                Some(i) => self.rx_free.swap_remove(i).0,
                None => self.alloc.alloc(u64::from(total)),
            };
            let bufs: Vec<Buf> = match self.rx_layout {
                RxLayout::Single => vec![Buf {
                    addr,
                    len: total,
                    write: true,
                }],
                RxLayout::Split => vec![
                    Buf {
                        addr,
                        len: PKT_HEADER_SIZE as u32,
                        write: true,
                    },
                    Buf {
                        addr: addr + PKT_HEADER_SIZE as u64,
                        len: data_len,
                        write: true,
                    },
                ],
            };
            match self.rxq.add_chain(&self.mem, &bufs) {
                Some(head) => {
                    self.rx_bufs.insert(head, (addr, total, self.rx_layout));
                }
                None => {
                    self.rx_free.push((addr, total));
                    break;
                }
            }
        }
        self.rxq.publish(&self.mem);
    }

    /// Rx buffers the device has not used yet.
    pub fn rx_outstanding(&self) -> usize {
        self.rx_bufs.len()
    }

    /// Queues a packet on the tx queue without notifying.
    pub fn queue_tx(&mut self, mut h: Hdr, data: &[u8]) {
        h.len = data.len() as u32;
        let total = (PKT_HEADER_SIZE + data.len()) as u32;
        let idx = self.tx_free.iter().position(|&(_, cap)| cap >= total);
        let (addr, cap) = match idx {
            Some(i) => self.tx_free.swap_remove(i),
            None => {
                let cap = total.max(4096);
                (self.alloc.alloc(u64::from(cap)), cap)
            }
        };
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(data, GuestAddress(addr + PKT_HEADER_SIZE as u64))
            .unwrap();
        let mut bufs = vec![Buf {
            addr,
            len: PKT_HEADER_SIZE as u32,
            write: false,
        }];
        if !data.is_empty() {
            bufs.push(Buf {
                addr: addr + PKT_HEADER_SIZE as u64,
                len: data.len() as u32,
                write: false,
            });
        }
        if self.txq.free_descs() < bufs.len() {
            self.reap_tx();
        }
        let head = self.txq.add_chain(&self.mem, &bufs).expect("tx queue full");
        self.tx_bufs.insert(head, (addr, cap));
        self.txq.publish(&self.mem);
    }

    /// Sends one packet and lets the device process the tx queue (what the
    /// ioeventfd + event loop do for real).
    pub fn send(&mut self, h: Hdr, data: &[u8]) {
        self.queue_tx(h, data);
        self.kick_tx();
    }

    /// Runs the tx queue handler and recycles used tx buffers.
    pub fn kick_tx(&mut self) {
        self.dev().handle_tx_event();
        self.reap_tx();
    }

    fn reap_tx(&mut self) {
        while let Some((head, _)) = self.txq.pop_used(&self.mem) {
            if let Some(b) = self.tx_bufs.remove(&head) {
                self.tx_free.push(b);
            }
        }
    }

    /// Lets the backend handle host-side events, then moves rx packets.
    pub fn pump(&mut self) {
        self.dev().handle_backend_event(EventSet::IN);
    }

    /// Runs the rx handler (as a guest notification of new rx buffers would).
    pub fn kick_rx(&mut self) {
        self.dev().handle_rx_event();
    }

    /// Takes every packet the device delivered, recycling their buffers.
    pub fn recv(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        let mut out = vec![];
        while let Some((head, used_len)) = self.rxq.pop_used(&self.mem) {
            let (addr, total, _) = self
                .rx_bufs
                .remove(&head)
                .expect("device used an unknown rx head");
            self.rx_free.push((addr, total));
            if used_len == 0 {
                continue;
            }
            let mut raw = [0u8; PKT_HEADER_SIZE];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let h = Hdr::from_bytes(&raw);
            assert_eq!(
                used_len,
                PKT_HEADER_SIZE as u32 + h.len,
                "used length disagrees with header"
            );
            let mut data = vec![0u8; h.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(addr + PKT_HEADER_SIZE as u64))
                .unwrap();
            out.push((h, data));
        }
        out
    }

    /// Interrupt status bits raised so far (and acknowledges them).
    pub fn take_interrupt(&mut self) -> u32 {
        let i = self.transport.interrupt();
        let s = i.status();
        i.ack(s);
        let _ = i.eventfd().read();
        s
    }

    /// Whether the device is still active (not failed or reset).
    pub fn active(&self) -> bool {
        self.dev().is_activated()
    }

    /// A reply header for packet `h` received from the host.
    pub fn reply(&self, h: &Hdr, op_: u16) -> Hdr {
        Hdr {
            src_cid: self.cid,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: op_,
            buf_alloc: 256 * 1024,
            ..Default::default()
        }
    }
}

/// Whether a header is an RST.
pub fn is_rst(h: &Hdr) -> bool {
    h.op == op::RST
}
