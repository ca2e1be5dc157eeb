//! Reading a fuzz input as a queue driver's choices: numbers, byte runs,
//! guest addresses (mostly inside the target's buffer area, sometimes
//! anywhere) and descriptor lengths (mostly small or a device header's
//! size, sometimes huge), and raw descriptors written from them. Shared by
//! the queue targets through `#[path]`.

use husk_vmm::devices::virtio::testing::{DriverQueue, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use husk_vmm::devices::virtio::GuestMemory;

/// Where a target's buffers are and its device's header size.
pub struct Layout {
    /// Guest memory size.
    pub mem_size: u64,
    /// The buffer area's start and length.
    pub buf_base: u64,
    pub buf_span: u64,
    /// A length the device treats specially (its header).
    pub header_len: u32,
}

/// The unread rest of the input.
pub struct Input<'a> {
    data: &'a [u8],
    layout: Layout,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8], layout: Layout) -> Self {
        Input { data, layout }
    }
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    /// An address: usually a buffer slot, sometimes anywhere.
    pub fn addr(&mut self) -> Option<u64> {
        let sel = self.byte()?;
        let l = &self.layout;
        let (mem_size, base, span) = (l.mem_size, l.buf_base, l.buf_span);
        Some(match sel & 7 {
            0 => u64::from(self.u32()?) << (sel >> 3 & 31),
            1 => mem_size - u64::from(self.u16()?),
            _ => base + (u64::from(self.u16()?) * 16) % span,
        })
    }
    /// A length: usually small or header-sized, sometimes huge.
    pub fn len(&mut self) -> Option<u32> {
        let sel = self.byte()?;
        Some(match sel & 3 {
            0 => self.u32()?,
            1 => self.layout.header_len,
            _ => u32::from(self.u16()?),
        })
    }

    /// Writes up to four raw descriptors (any index, address, length,
    /// flags and `next`) into `q`, offers a fuzzed head and publishes it.
    /// The caller then runs the device.
    pub fn raw_descriptors(&mut self, q: &mut DriverQueue, mem: &GuestMemory) {
        let Some(count) = self.byte() else { return };
        for _ in 0..count % 5 {
            let (Some(i), Some(addr), Some(len), Some(flags), Some(next)) =
                (self.u16(), self.addr(), self.len(), self.byte(), self.u16())
            else {
                break;
            };
            let flags = u16::from(flags) & (DESC_F_NEXT | DESC_F_WRITE | DESC_F_INDIRECT);
            q.write_desc(mem, i % q.size, addr, len, flags, next % 300);
        }
        if let Some(head) = self.u16() {
            q.push_avail(mem, head % 300);
        }
        q.publish(mem);
    }
}
