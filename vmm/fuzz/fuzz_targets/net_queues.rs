//! A hostile guest driving the virtio-net device: arbitrary descriptor chains
//! (any address, length, flags, next, indirect tables, loops) and virtio-net
//! headers on the tx queue, arbitrary rx buffers, bogus ring indexes, used
//! event indexes, resets and re-probes, interleaved with frames arriving from
//! the host side. The host side is either the backend test double (frames of
//! any length up to the largest, the backend refusing output at times) or the
//! real stream backend over a socket pair whose peer writes arbitrary bytes:
//! well-framed frames, torn frames, bad lengths, and hangs up.
//!
//! Checked: no panic; every used element names a valid head, a tx one with
//! length 0 and an rx one no longer than a header plus the largest frame;
//! what the stream backend writes is well framed (each frame 14 to
//! `MAX_FRAME_LEN` bytes) and its pending output stays within its bound.
#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use event_manager::EventSet;
use husk_vmm::devices::virtio::net::stream::OUT_HIGH_WATER;
use husk_vmm::devices::virtio::net::testing::{NetDriver, TestBackend, MEM_SIZE};
use husk_vmm::devices::virtio::net::{
    NetBackend, StreamBackend, MAX_FRAME_LEN, MIN_FRAME_LEN, NET_HDR_LEN, OFFLOAD_FEATURES,
};
use husk_vmm::devices::virtio::testing::{mmio_setup, DriverQueue, DESC_F_NEXT, DESC_F_WRITE};
use husk_vmm::devices::virtio::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

/// `VIRTIO_NET_F_MRG_RXBUF`.
const MRG_RXBUF: u64 = 1 << 15;
/// Buffers live here; the fuzzer picks offsets inside (or, sometimes, outside).
const BUF_BASE: u64 = 0x20_0000;
const BUF_SPAN: u64 = 0x40_0000;
/// Well-formed rx buffers go here, one slot per descriptor index.
const RX_BASE: u64 = BUF_BASE + BUF_SPAN;
const RX_SLOT: u64 = 0x1_0000;

#[path = "common/input.rs"]
mod input;
use input::{Input, Layout};

const LAYOUT: Layout = Layout {
    mem_size: MEM_SIZE as u64,
    buf_base: BUF_BASE,
    buf_span: BUF_SPAN,
    header_len: NET_HDR_LEN as u32,
};

/// A frame length: mostly valid, sometimes at or past the edges.
fn frame_len(input: &mut Input) -> Option<usize> {
    let sel = input.byte()?;
    Some(match sel & 3 {
        0 => MAX_FRAME_LEN - usize::from(sel >> 2),
        1 => MIN_FRAME_LEN + usize::from(sel >> 2) - 8,
        _ => MIN_FRAME_LEN + usize::from(input.u16()?) % 9000,
    })
}

/// Frame contents from the input, repeated to `len` bytes.
fn frame(input: &mut Input, len: usize) -> Vec<u8> {
    let seed = input.bytes(32).to_vec();
    let seed = if seed.is_empty() { vec![0x5a] } else { seed };
    seed.iter().copied().cycle().take(len).collect()
}

/// The host side of the device, as the fuzzer drives it.
trait Host: NetBackend + Sized + 'static {
    /// Offers frame bytes for the guest (`raw`: without framing rules).
    fn inject(d: &mut NetDriver<Self>, peer: &mut Peer, bytes: Vec<u8>, raw: bool);
    /// Host-side event: `arg` picks what happens.
    fn host_event(d: &mut NetDriver<Self>, peer: &mut Peer, arg: u8);
    /// Checks the backend's bounds.
    fn check(d: &NetDriver<Self>, peer: &mut Peer);
}

/// The stream backend's peer (the role passt plays), and what it has read.
struct Peer {
    sock: Option<UnixStream>,
    received: Vec<u8>,
}

impl Peer {
    /// Reads what the device wrote and checks its framing.
    fn drain(&mut self) {
        let Some(s) = &mut self.sock else { return };
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            self.received.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        while self.received.len() - at >= 4 {
            let len = u32::from_be_bytes(self.received[at..at + 4].try_into().unwrap()) as usize;
            assert!(
                (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len),
                "device wrote a {len}-byte frame"
            );
            if self.received.len() - at - 4 < len {
                break;
            }
            at += 4 + len;
        }
        self.received.drain(..at);
    }
}

impl Host for TestBackend {
    fn inject(d: &mut NetDriver<Self>, _: &mut Peer, bytes: Vec<u8>, _: bool) {
        // A header-carrying backend (TAP's kind) delivers a virtio-net
        // header, with whatever offload fields, before each frame.
        let hdr = if d.dev().backend().with_hdr {
            NET_HDR_LEN
        } else {
            0
        };
        let mut frame = bytes;
        frame.truncate(hdr + MAX_FRAME_LEN);
        frame.resize(frame.len().max(hdr + MIN_FRAME_LEN), 0);
        d.dev().backend_mut().to_guest.push_back(frame);
        d.dev().handle_backend_event(EventSet::IN);
    }
    fn host_event(d: &mut NetDriver<Self>, _: &mut Peer, arg: u8) {
        d.dev().backend_mut().accepting = arg & 1 == 0;
        d.dev().handle_backend_event(EventSet::OUT);
    }
    fn check(d: &NetDriver<Self>, _: &mut Peer) {
        let dev = d.dev();
        assert!(dev.backend().to_guest.len() <= 10_000);
        let hdr = if dev.backend().with_hdr {
            NET_HDR_LEN
        } else {
            0
        };
        for f in &dev.backend().sent {
            assert!((hdr + MIN_FRAME_LEN..=hdr + MAX_FRAME_LEN).contains(&f.len()));
        }
    }
}

impl Host for StreamBackend {
    fn inject(d: &mut NetDriver<Self>, peer: &mut Peer, bytes: Vec<u8>, raw: bool) {
        if let Some(s) = &mut peer.sock {
            if !raw {
                let _ = s.write(&(bytes.len() as u32).to_be_bytes());
            }
            let _ = s.write(&bytes);
        }
        d.dev().handle_backend_event(EventSet::IN);
    }
    fn host_event(d: &mut NetDriver<Self>, peer: &mut Peer, arg: u8) {
        match arg % 4 {
            0 => peer.drain(),
            1 => {
                peer.drain();
                peer.sock = None;
                d.dev()
                    .handle_backend_event(EventSet::IN | EventSet::HANG_UP);
                return;
            }
            2 => d.dev().handle_backend_event(EventSet::HANG_UP),
            _ => {}
        }
        d.dev().handle_backend_event(EventSet::OUT);
    }
    fn check(d: &NetDriver<Self>, peer: &mut Peer) {
        let dev = d.dev();
        let pending = dev.backend().pending_out();
        assert!(
            pending <= OUT_HIGH_WATER + 4 + MAX_FRAME_LEN,
            "{pending} bytes pending"
        );
        drop(dev);
        if peer.received.len() > 1 << 20 {
            peer.drain();
        }
    }
}

fn check_used(d: &mut NetDriver<impl Host>) {
    let max_rx = (NET_HDR_LEN + MAX_FRAME_LEN) as u32;
    while let Some((head, len)) = d.txq.pop_used(&d.mem) {
        assert!(head < d.txq.size, "used tx head {head} out of range");
        assert_eq!(len, 0, "tx chains are returned with length 0");
    }
    while let Some((head, len)) = d.rxq.pop_used(&d.mem) {
        assert!(head < d.rxq.size, "used rx head {head} out of range");
        assert!(len <= max_rx, "used rx length {len} past a frame");
    }
}

fn run<B: Host>(mut input: Input, backend: B, features: u64, mut peer: Peer) {
    let mut d = NetDriver::new(backend, features);
    // Heads of well-formed rx buffers the fuzzer offered, to keep offering
    // fresh slots rather than reusing one in flight.
    let mut next_rx: VecDeque<u16> = (0..d.rxq.size).collect();
    while let Some(op) = input.byte() {
        match op % 12 {
            // A well-formed tx chain: a fuzzed header (offload bits mostly
            // clear) and frame, in one to three descriptors.
            0..=2 => {
                let Some(len) = frame_len(&mut input) else {
                    break;
                };
                let mut hdr = [0u8; NET_HDR_LEN];
                hdr.copy_from_slice(&{
                    let mut h = input.bytes(NET_HDR_LEN).to_vec();
                    h.resize(NET_HDR_LEN, 0);
                    h
                });
                if op & 0x10 == 0 {
                    hdr[0] = 0;
                    hdr[1] = 0;
                }
                let body = frame(&mut input, len);
                let Some(slot) = input.u16() else { break };
                let at = BUF_BASE + (u64::from(slot) * 64) % (BUF_SPAN - 0x2_0000);
                d.mem.write_slice(&hdr, GuestAddress(at)).unwrap();
                d.mem
                    .write_slice(&body, GuestAddress(at + NET_HDR_LEN as u64))
                    .ok();
                let i = u16::from(input.byte().unwrap_or(0)) % (d.txq.size - 2);
                let total = (NET_HDR_LEN + len) as u32;
                match op >> 5 & 3 {
                    0 => d.txq.write_desc(&d.mem, i, at, total, 0, 0),
                    1 => {
                        d.txq
                            .write_desc(&d.mem, i, at, NET_HDR_LEN as u32, DESC_F_NEXT, i + 1);
                        d.txq
                            .write_desc(&d.mem, i + 1, at + NET_HDR_LEN as u64, len as u32, 0, 0);
                    }
                    _ => {
                        let cut = (u32::from(op) * 97) % total;
                        d.txq.write_desc(&d.mem, i, at, cut, DESC_F_NEXT, i + 1);
                        d.txq
                            .write_desc(&d.mem, i + 1, at + u64::from(cut), 1, DESC_F_NEXT, i + 2);
                        d.txq.write_desc(
                            &d.mem,
                            i + 2,
                            at + u64::from(cut) + 1,
                            total - cut - 1,
                            0,
                            0,
                        );
                    }
                }
                d.txq.push_avail(&d.mem, i);
                d.txq.publish(&d.mem);
                d.dev().handle_tx_event();
            }
            // Raw descriptors on either queue.
            3 | 4 => {
                let q = if op & 0x10 == 0 {
                    &mut d.txq
                } else {
                    &mut d.rxq
                };
                input.raw_descriptors(q, &d.mem);
                if op & 0x10 == 0 {
                    d.dev().handle_tx_event();
                } else {
                    d.dev().handle_rx_event();
                }
            }
            // Well-formed rx buffers of a fuzzed size (Linux's are 1518
            // to a page or so with mergeable buffers, 1526 or 64 KiB without).
            5 | 6 => {
                let n = input.byte().unwrap_or(1) % 48;
                let size = u32::from(input.u16().unwrap_or(2048)) % (RX_SLOT as u32 + 1);
                for _ in 0..n {
                    let Some(i) = next_rx.pop_front() else { break };
                    next_rx.push_back(i);
                    let at = RX_BASE + u64::from(i) * RX_SLOT;
                    d.rxq.write_desc(&d.mem, i, at, size, DESC_F_WRITE, 0);
                    d.rxq.push_avail(&d.mem, i);
                }
                d.rxq.publish(&d.mem);
                d.dev().handle_rx_event();
            }
            // Frames from the host side.
            7 | 8 => {
                let Some(len) = frame_len(&mut input) else {
                    break;
                };
                let raw = op & 0x10 != 0;
                let len = if raw { len % 300 } else { len };
                let bytes = frame(&mut input, len);
                B::inject(&mut d, &mut peer, bytes, raw);
            }
            9 => {
                let arg = input.byte().unwrap_or(0);
                B::host_event(&mut d, &mut peer, arg);
            }
            // Bogus ring indexes and used-event indexes.
            10 => {
                let Some(idx) = input.u16() else { break };
                let q = if op & 0x10 == 0 {
                    &mut d.txq
                } else {
                    &mut d.rxq
                };
                if op & 0x20 == 0 {
                    q.set_avail_idx(idx);
                    q.publish(&d.mem);
                } else {
                    q.set_used_event(&d.mem, idx);
                }
                if op & 0x10 == 0 {
                    d.dev().handle_tx_event();
                } else {
                    d.dev().handle_rx_event();
                }
            }
            // A reset and a re-probe with fresh rings, as a rebooting guest does.
            _ => {
                let (rx_base, tx_base, size) = (d.rxq.desc, d.txq.desc, d.rxq.size);
                d.rxq = DriverQueue::new(&d.mem, rx_base, size);
                d.txq = DriverQueue::new(&d.mem, tx_base, size);
                mmio_setup(
                    &mut d.transport,
                    &[&d.rxq, &d.txq],
                    features | VIRTIO_F_VERSION_1,
                );
                d.dev().handle_tx_event();
            }
        }
        check_used(&mut d);
        B::check(&d, &mut peer);
    }
    peer.drain();
}

fuzz_target!(|data: &[u8]| {
    // The stream backend writes to a peer that may have hung up. husk's
    // own main is Rust's, whose runtime ignores SIGPIPE (the write then
    // fails with EPIPE and the backend closes); libFuzzer's main does not.
    static SIGPIPE_IGNORED: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a signal's disposition to SIG_IGN; no handler runs.
    SIGPIPE_IGNORED.call_once(|| unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    });
    let mut input = Input::new(data, LAYOUT);
    let Some(cfg) = input.byte() else { return };
    let mut features = 0;
    if cfg & 1 != 0 {
        features |= VIRTIO_RING_F_EVENT_IDX;
    }
    if cfg & 2 != 0 {
        features |= MRG_RXBUF;
    }
    if cfg & 4 == 0 {
        let peer = Peer {
            sock: None,
            received: vec![],
        };
        let backend = if cfg & 8 != 0 {
            // With offloads: guest headers pass through to the backend.
            features |= OFFLOAD_FEATURES;
            TestBackend::with_headers()
        } else {
            TestBackend::new()
        };
        run(input, backend, features, peer);
    } else {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let backend = StreamBackend::new(OwnedFd::from(ours)).unwrap();
        let peer = Peer {
            sock: Some(theirs),
            received: vec![],
        };
        run(input, backend, features, peer);
    }
});
