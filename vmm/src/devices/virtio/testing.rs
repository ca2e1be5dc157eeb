//! The driver side of virtio, simulated in guest memory.
//!
//! Unit tests, the fuzz target and the vsock benchmark drive devices the way a
//! guest kernel does: program the transport through its registers, put
//! descriptor chains in a split virtqueue in a `GuestMemoryMmap`, notify, and
//! read the used ring back. virtio-queue's `mock::MockSplitQueue` builds single
//! chains well but cannot run a ring through wrap-around, which streaming
//! tests and the benchmark need, hence this small driver.
//!
//! Built only for tests and behind the `test-utils` feature (the benchmark,
//! the fuzz targets): never part of the product.

use std::sync::atomic::Ordering;

use vm_memory::{Address, Bytes, GuestAddress};

use super::mmio::MmioTransport;
use super::{GuestMemory, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use crate::devices::bus::BusDevice;

/// Descriptor flag: another descriptor follows.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const DESC_F_INDIRECT: u16 = 4;

/// One buffer of a chain, as the driver offers it.
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (rx) rather than device-readable (tx).
    pub write: bool,
}

/// A split virtqueue from the driver's point of view.
#[derive(Debug)]
pub struct DriverQueue {
    /// Number of descriptors.
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    free: Vec<u16>,
    in_use: Vec<bool>,
    avail_idx: u16,
    last_used: u16,
}

impl DriverQueue {
    /// Bytes of guest memory a queue of `size` descriptors occupies at `base`.
    pub fn footprint(size: u16) -> u64 {
        let n = u64::from(size);
        let used = align(16 * n + 6 + 2 * n, 4);
        align(used + 6 + 8 * n, 4096)
    }

    /// Lays a queue out at `base` (16-byte aligned) and zeroes its rings.
    pub fn new(mem: &GuestMemory, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = align(avail + 6 + 2 * n, 4);
        let zeros = vec![0u8; Self::footprint(size) as usize];
        mem.write_slice(&zeros, GuestAddress(base))
            .expect("queue outside guest memory");
        Self {
            size,
            desc,
            avail,
            used,
            free: (0..size).rev().collect(),
            in_use: vec![false; size as usize],
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// Free descriptors left.
    pub fn free_descs(&self) -> usize {
        self.free.len()
    }

    /// Writes descriptor `index` as-is (for malformed chains).
    pub fn write_desc(
        &self,
        mem: &GuestMemory,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = self.desc + 16 * u64::from(index % self.size);
        mem.write_slice(&raw, GuestAddress(at)).unwrap();
    }

    /// Puts a chain of `bufs` in the descriptor table and on the available
    /// ring (not yet published). Returns the head index, or None when there are
    /// not enough free descriptors.
    pub fn add_chain(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap()).collect();
        for &id in &ids {
            self.in_use[id as usize] = true;
        }
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.write { DESC_F_WRITE } else { 0 };
            let next = if i + 1 < bufs.len() {
                flags |= DESC_F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            self.write_desc(mem, ids[i], b.addr, b.len, flags, next);
        }
        self.push_avail(mem, ids[0]);
        Some(ids[0])
    }

    /// Puts `head` on the available ring without touching descriptors.
    pub fn push_avail(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Sets the available index to an arbitrary value (for malformed rings).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
    }

    /// Makes everything added so far visible to the device.
    pub fn publish(&self, mem: &GuestMemory) {
        mem.store(
            self.avail_idx.to_le(),
            GuestAddress(self.avail + 2),
            Ordering::Release,
        )
        .unwrap();
    }

    /// The device's used index.
    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(
            mem.load(GuestAddress(self.used + 2), Ordering::Acquire)
                .unwrap(),
        )
    }

    /// The used ring's flags (bit 0: device does not want notifications).
    pub fn used_flags(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(mem.read_obj(GuestAddress(self.used)).unwrap())
    }

    /// `avail_event` (EVENT_IDX): the device wants a notification once the
    /// available index passes it.
    pub fn avail_event(&self, mem: &GuestMemory) -> u16 {
        let at = self.used + 4 + 8 * u64::from(self.size);
        u16::from_le(mem.read_obj(GuestAddress(at)).unwrap())
    }

    /// Sets `used_event` (EVENT_IDX): interrupt once used passes it.
    pub fn set_used_event(&self, mem: &GuestMemory, v: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        mem.write_obj(v.to_le(), GuestAddress(at)).unwrap();
    }

    /// Takes the next used element, returning its head and written length, and
    /// frees the chain's descriptors.
    pub fn pop_used(&mut self, mem: &GuestMemory) -> Option<(u16, u32)> {
        if self.used_idx(mem) == self.last_used {
            return None;
        }
        let at = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        let id: u32 = u32::from_le(mem.read_obj(GuestAddress(at)).unwrap());
        let len: u32 = u32::from_le(mem.read_obj(GuestAddress(at + 4)).unwrap());
        self.last_used = self.last_used.wrapping_add(1);
        let head = id as u16;
        // Walk the chain to give its descriptors back.
        let mut idx = head;
        for _ in 0..self.size {
            if idx >= self.size || !self.in_use[idx as usize] {
                break;
            }
            self.in_use[idx as usize] = false;
            self.free.push(idx);
            let d = self.desc + 16 * u64::from(idx);
            let flags: u16 = mem.read_obj(GuestAddress(d + 12)).unwrap();
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            idx = mem.read_obj(GuestAddress(d + 14)).unwrap();
        }
        Some((head, len))
    }
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Reads a 32-bit register.
pub fn mmio_read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Writes a 32-bit register.
pub fn mmio_write(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Runs the Linux virtio-mmio probe sequence: reset, ACKNOWLEDGE, DRIVER,
/// feature negotiation (accepting `features` & offered), queue setup for
/// `queues`, DRIVER_OK. Returns the final status register.
pub fn mmio_setup(t: &mut MmioTransport, queues: &[&DriverQueue], features: u64) -> u32 {
    use virtio_bindings::virtio_mmio::*;
    let reg = |r: u32| u64::from(r);
    mmio_write(t, reg(VIRTIO_MMIO_STATUS), 0);
    mmio_write(t, reg(VIRTIO_MMIO_STATUS), STATUS_ACKNOWLEDGE);
    mmio_write(
        t,
        reg(VIRTIO_MMIO_STATUS),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER,
    );
    let mut offered = 0u64;
    for sel in 0..2u32 {
        mmio_write(t, reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL), sel);
        offered |= u64::from(mmio_read(t, reg(VIRTIO_MMIO_DEVICE_FEATURES))) << (32 * sel);
    }
    let accepted = offered & features;
    for sel in 0..2u32 {
        mmio_write(t, reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL), sel);
        mmio_write(
            t,
            reg(VIRTIO_MMIO_DRIVER_FEATURES),
            (accepted >> (32 * sel)) as u32,
        );
    }
    let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    mmio_write(t, reg(VIRTIO_MMIO_STATUS), s);
    if mmio_read(t, reg(VIRTIO_MMIO_STATUS)) & STATUS_FEATURES_OK == 0 {
        return mmio_read(t, reg(VIRTIO_MMIO_STATUS));
    }
    for (i, q) in queues.iter().enumerate() {
        mmio_write(t, reg(VIRTIO_MMIO_QUEUE_SEL), i as u32);
        mmio_write(t, reg(VIRTIO_MMIO_QUEUE_NUM), u32::from(q.size));
        for (lo, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, q.desc),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, q.avail),
            (VIRTIO_MMIO_QUEUE_USED_LOW, q.used),
        ] {
            mmio_write(t, reg(lo), addr as u32);
            mmio_write(t, reg(lo) + 4, (addr >> 32) as u32);
        }
        mmio_write(t, reg(VIRTIO_MMIO_QUEUE_READY), 1);
    }
    mmio_write(t, reg(VIRTIO_MMIO_STATUS), s | STATUS_DRIVER_OK);
    mmio_read(t, reg(VIRTIO_MMIO_STATUS))
}

/// A flat guest memory of `size` bytes at address 0.
pub fn guest_memory(size: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), size)]).expect("cannot map test guest memory")
}

/// A trivial bump allocator for buffers in test guest memory.
#[derive(Debug)]
pub struct BufAlloc {
    next: u64,
    end: u64,
}

impl BufAlloc {
    /// Hands out addresses in `[start, end)`.
    pub fn new(start: u64, end: u64) -> Self {
        Self { next: start, end }
    }

    /// A 16-byte aligned buffer of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = align(self.next, 16);
        assert!(at + len <= self.end, "test buffer space exhausted");
        self.next = at + len;
        GuestAddress(at).raw_value()
    }
}
