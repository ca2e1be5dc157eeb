//! A simulated guest virtio-net driver and a backend test double.
//!
//! [`NetDriver`] sets up a real [`MmioTransport`] around a real [`Net`]
//! device through its registers and exchanges frames through split
//! virtqueues in guest memory, as the Linux driver would. The unit tests and
//! the fuzz target use it. Built only for tests and behind the `test-utils`
//! feature: never part of the product.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::EventSet;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{MacAddr, Net, NetBackend, DEFAULT_MTU, NET_HDR_LEN, NET_QUEUE_SIZE};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::testing::{guest_memory, mmio_setup, Buf, BufAlloc, DriverQueue};
use crate::devices::virtio::GuestMemory;
use crate::devices::virtio::{STATUS_DRIVER_OK, VIRTIO_F_VERSION_1};

/// A backend that records what it is sent and delivers what a test queues.
#[derive(Debug)]
pub struct TestBackend {
    evt: EventFd,
    /// Frames from the guest.
    pub sent: Vec<Vec<u8>>,
    /// Frames for the guest.
    pub to_guest: VecDeque<Vec<u8>>,
    /// Whether `can_send` says yes.
    pub accepting: bool,
    /// Resets seen.
    pub resets: usize,
    /// Whether frames carry a virtio-net header (as a TAP backend's do).
    pub with_hdr: bool,
    /// The guest features of the last `set_guest_offloads`.
    pub offloads: Option<u64>,
}

impl TestBackend {
    /// An empty backend that accepts frames.
    pub fn new() -> Self {
        Self {
            evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            sent: vec![],
            to_guest: VecDeque::new(),
            accepting: true,
            resets: 0,
            with_hdr: false,
            offloads: None,
        }
    }

    /// An empty backend whose frames carry virtio-net headers.
    pub fn with_headers() -> Self {
        Self {
            with_hdr: true,
            ..Self::new()
        }
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

impl NetBackend for TestBackend {
    fn can_send(&self) -> bool {
        self.accepting
    }
    fn send_frame(&mut self, frame: &[u8]) {
        self.sent.push(frame.to_vec());
    }
    fn peek_frame(&self) -> Option<&[u8]> {
        self.to_guest.front().map(Vec::as_slice)
    }
    fn consume_frame(&mut self) {
        self.to_guest.pop_front();
    }
    fn notify(&mut self, _evset: EventSet) {
        let _ = self.evt.read();
    }
    fn interest(&self) -> EventSet {
        EventSet::IN
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.to_guest.clear();
    }
    fn vnet_hdr(&self) -> bool {
        self.with_hdr
    }
    fn set_guest_offloads(&mut self, features: u64) {
        self.offloads = Some(features);
    }
}

/// Guest memory size of the simulated VM.
pub const MEM_SIZE: usize = 32 << 20;
const QUEUE_BASE: u64 = 0x1000;
const BUF_BASE: u64 = 0x10_0000;
/// The MAC the driver's device gets.
pub const MAC: MacAddr = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

/// The simulated guest driver plus the device under test.
pub struct NetDriver<B: NetBackend + 'static> {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The transport, programmed through its registers.
    pub transport: MmioTransport,
    /// The device.
    pub dev: Arc<Mutex<Net<B>>>,
    /// Receive queue.
    pub rxq: DriverQueue,
    /// Transmit queue.
    pub txq: DriverQueue,
    /// rx buffers in flight: head → (address, length).
    rx_bufs: HashMap<u16, (u64, u32)>,
    alloc: BufAlloc,
}

impl<B: NetBackend + 'static> std::fmt::Debug for NetDriver<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDriver").finish_non_exhaustive()
    }
}

impl<B: NetBackend + 'static> NetDriver<B> {
    /// Builds the device around `backend` and probes it accepting
    /// `features` (VERSION_1 always).
    pub fn new(backend: B, features: u64) -> Self {
        let mem = guest_memory(MEM_SIZE);
        let dev = Arc::new(Mutex::new(Net::new(MAC, DEFAULT_MTU, backend).unwrap()));
        let mut transport = MmioTransport::new(mem.clone(), dev.clone()).unwrap();
        let qs = NET_QUEUE_SIZE;
        let step = DriverQueue::footprint(qs);
        let rxq = DriverQueue::new(&mem, QUEUE_BASE, qs);
        let txq = DriverQueue::new(&mem, QUEUE_BASE + step, qs);
        let status = mmio_setup(&mut transport, &[&rxq, &txq], features | VIRTIO_F_VERSION_1);
        assert_ne!(status & STATUS_DRIVER_OK, 0, "status {status:#x}");
        Self {
            mem,
            transport,
            dev,
            rxq,
            txq,
            rx_bufs: HashMap::new(),
            alloc: BufAlloc::new(BUF_BASE, MEM_SIZE as u64),
        }
    }

    /// Locks the device.
    pub fn dev(&self) -> MutexGuard<'_, Net<B>> {
        self.dev.lock().unwrap()
    }

    /// Sends `frame` as one tx chain (header and frame in two descriptors)
    /// and runs the device's tx event.
    pub fn send(&mut self, frame: &[u8]) -> u16 {
        self.send_with_header(&[0u8; NET_HDR_LEN], frame)
    }

    /// As [`Self::send`], with the header `header`.
    pub fn send_with_header(&mut self, header: &[u8; NET_HDR_LEN], frame: &[u8]) -> u16 {
        let hdr = self.alloc.alloc(NET_HDR_LEN as u64);
        self.mem.write_slice(header, GuestAddress(hdr)).unwrap();
        let data = self.alloc.alloc(frame.len().max(1) as u64);
        self.mem.write_slice(frame, GuestAddress(data)).unwrap();
        let head = self.send_raw(&[
            Buf {
                addr: hdr,
                len: NET_HDR_LEN as u32,
                write: false,
            },
            Buf {
                addr: data,
                len: frame.len() as u32,
                write: false,
            },
        ]);
        self.dev().handle_tx_event();
        head
    }

    /// Puts `bufs` on the tx ring as one chain and publishes it.
    pub fn send_raw(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.txq.add_chain(&self.mem, bufs).expect("tx ring full");
        self.txq.publish(&self.mem);
        head
    }

    /// Offers `n` rx buffers of `len` bytes each (not running the device).
    pub fn fill_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let addr = self.alloc.alloc(u64::from(len));
            let head = self
                .rxq
                .add_chain(
                    &self.mem,
                    &[Buf {
                        addr,
                        len,
                        write: true,
                    }],
                )
                .expect("rx ring full");
            self.rx_bufs.insert(head, (addr, len));
        }
        self.rxq.publish(&self.mem);
    }

    /// Takes every used rx buffer's written bytes, in order.
    pub fn take_rx(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some((head, len)) = self.rxq.pop_used(&self.mem) {
            let (addr, cap) = self.rx_bufs.remove(&head).expect("unknown rx head");
            assert!(
                len <= cap,
                "device wrote {len} bytes into a {cap}-byte buffer"
            );
            let mut raw = vec![0u8; len as usize];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            out.push(raw);
        }
        out
    }

    /// Reassembles received frames from used buffers: `num_buffers` in
    /// each frame's header says how many buffers it spans.
    pub fn recv_frames(&mut self) -> Vec<Vec<u8>> {
        let bufs = self.take_rx();
        let mut frames = vec![];
        let mut it = bufs.into_iter();
        while let Some(first) = it.next() {
            assert!(first.len() >= NET_HDR_LEN, "used buffer without a header");
            assert_eq!(&first[..10], &[0u8; 10], "no offload fields set");
            let n = u16::from_le_bytes([first[10], first[11]]);
            assert!(n >= 1, "num_buffers is 0");
            let mut data = first[NET_HDR_LEN..].to_vec();
            for _ in 1..n {
                data.extend(it.next().expect("num_buffers larger than what was used"));
            }
            frames.push(data);
        }
        frames
    }
}
