//! virtio-fs tests from the driver side.
//!
//! `queue.rs` runs single passes of the queue logic over virtio-queue's mock split queue,
//! with real FUSE requests against real temp-dir shares, well-formed and hostile;
//! `device.rs` runs the whole device (MMIO registers, activation, worker thread, eventfds,
//! reset) the way the Linux driver does.

mod device;
mod queue;

use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, GetattrIn, InHeader, InitIn, Opcode, OpenIn, OutHeader, ReadIn, WriteIn,
};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::queue::{process_queue, Pass};
use crate::devices::virtio::testing::{DESC_F_NEXT, DESC_F_WRITE};
use crate::devices::virtio::GuestMemory;
use crate::fs::{prepare_server_thread, CacheMode, FdBudget, FsServer, ShareServer, ShareSpec};

pub(super) const ROOT: u64 = 1;
const OUT_LEN: usize = std::mem::size_of::<OutHeader>();

/// A share server over `dir`, for the calling thread.
pub(super) fn share(dir: &Path, read_only: bool) -> ShareServer {
    prepare_server_thread().unwrap();
    let spec = ShareSpec {
        tag: "t".into(),
        host_dir: dir.to_path_buf(),
        read_only,
        cache: CacheMode::Auto,
    };
    ShareServer::new(spec.open().unwrap(), FdBudget::new(1000)).unwrap()
}

/// Request bytes: `fuse_in_header` with the right `len`, then `args`.
pub(super) fn req(opcode: Opcode, unique: u64, nodeid: u64, args: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = args.concat();
    let h = InHeader {
        len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
        opcode: opcode as u32,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    };
    [h.as_slice(), &body].concat()
}

pub(super) fn init_req(unique: u64) -> Vec<u8> {
    let i = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 1 << 17,
        flags: 0,
    };
    req(Opcode::Init, unique, 0, &[i.as_slice()])
}

pub(super) fn cname(name: &str) -> Vec<u8> {
    [name.as_bytes(), b"\0"].concat()
}

pub(super) fn lookup_req(unique: u64, parent: u64, name: &str) -> Vec<u8> {
    req(Opcode::Lookup, unique, parent, &[&cname(name)])
}

pub(super) fn getattr_req(unique: u64, node: u64) -> Vec<u8> {
    let g = GetattrIn::default();
    req(Opcode::Getattr, unique, node, &[g.as_slice()])
}

pub(super) fn open_req(unique: u64, node: u64, flags: i32) -> Vec<u8> {
    let o = OpenIn {
        flags: flags as u32,
        fuse_flags: 0,
    };
    req(Opcode::Open, unique, node, &[o.as_slice()])
}

pub(super) fn read_req(unique: u64, node: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let r = ReadIn {
        fh,
        offset,
        size,
        ..Default::default()
    };
    req(Opcode::Read, unique, node, &[r.as_slice()])
}

pub(super) fn write_req(unique: u64, node: u64, fh: u64, data: &[u8]) -> Vec<u8> {
    let w = WriteIn {
        fh,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    req(Opcode::Write, unique, node, &[w.as_slice(), data])
}

pub(super) fn create_req(unique: u64, parent: u64, name: &str) -> Vec<u8> {
    let c = CreateIn {
        flags: (libc::O_CREAT | libc::O_WRONLY) as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    req(
        Opcode::Create,
        unique,
        parent,
        &[c.as_slice(), &cname(name)],
    )
}

/// A reply as the driver finds it.
#[derive(Debug)]
pub(super) struct Reply {
    /// Length on the used ring.
    pub used_len: u32,
    /// The `fuse_out_header` at the start of the reply buffer.
    pub header: OutHeader,
    /// What follows the header, `header.len - 16` bytes.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn parse(used_len: u32, buf: &[u8]) -> Self {
        let mut header = OutHeader::default();
        header.as_mut_slice().copy_from_slice(&buf[..OUT_LEN]);
        let end = (header.len as usize).clamp(OUT_LEN, buf.len());
        Reply {
            used_len,
            header,
            body: buf[OUT_LEN..end].to_vec(),
        }
    }

    /// The positive errno of an error reply, 0 for success.
    pub fn errno(&self) -> i32 {
        -self.header.error
    }

    /// The reply's first argument.
    pub fn obj<T: ByteValued + Default>(&self) -> T {
        let mut t = T::default();
        let n = t.as_slice().len();
        t.as_mut_slice().copy_from_slice(&self.body[..n]);
        t
    }
}

/// One buffer of a chain: guest address, length, device-writable.
pub(super) type Seg = (u64, u32, bool);

const QSIZE: u16 = 64;
/// Where requests go in guest memory.
pub(super) const REQ_AT: u64 = 0x10_0000;
/// Where replies go.
pub(super) const REPLY_AT: u64 = 0x20_0000;
/// Test guest memory size.
pub(super) const MEM_SIZE: usize = 8 << 20;

/// A driver over virtio-queue's mock split queue, serving each chain with one pass of
/// [`process_queue`].
pub(super) struct MockDriver<'a> {
    mem: &'a GuestMemory,
    mock: MockSplitQueue<'a, GuestMemory>,
    pub queue: Queue,
    next_desc: u16,
    used_seen: u16,
}

impl<'a> MockDriver<'a> {
    pub fn new(mem: &'a GuestMemory) -> Self {
        let mock = MockSplitQueue::new(mem, QSIZE);
        let queue = mock.create_queue::<Queue>().unwrap();
        Self {
            mem,
            mock,
            queue,
            next_desc: 0,
            used_seen: 0,
        }
    }

    /// Offers one chain of buffers, linked in order.
    pub fn offer(&mut self, bufs: &[Seg]) {
        let n = bufs.len() as u16;
        if self.next_desc + n > QSIZE {
            self.next_desc = 0;
        }
        let first = self.next_desc;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let last = i + 1 == bufs.len();
                let mut flags = if write { DESC_F_WRITE } else { 0 };
                if !last {
                    flags |= DESC_F_NEXT;
                }
                let next = if last { 0 } else { first + i as u16 + 1 };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.mock.add_desc_chains(&descs, first).unwrap();
        self.next_desc += n;
    }

    /// Writes raw descriptors at `index` and offers the first as a chain head.
    pub fn add_raw(&mut self, descs: &[RawDescriptor], index: u16) {
        self.mock.add_desc_chains(descs, index).unwrap();
    }

    /// Puts a raw head index on the available ring (for out-of-range heads).
    pub fn offer_head(&mut self, head: u16) {
        let avail = self.mock.avail_addr();
        let idx: u16 = self.mem.read_obj(GuestAddress(avail.0 + 2)).unwrap();
        let slot = GuestAddress(avail.0 + 4 + 2 * u64::from(idx % QSIZE));
        self.mem.write_obj(head, slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail.0 + 2))
            .unwrap();
    }

    /// Runs one pass of the device's queue logic.
    pub fn serve(&mut self, server: &FsServer) -> Pass {
        process_queue(&mut self.queue, self.mem, server, usize::from(QSIZE))
    }

    /// The next used element, if the device returned one.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let used = self.mock.used_addr();
        let idx: u16 = self.mem.read_obj(GuestAddress(used.0 + 2)).unwrap();
        if idx == self.used_seen {
            return None;
        }
        let at = used.0 + 4 + 8 * u64::from(self.used_seen % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }

    /// Sends `request` with `room` bytes of reply buffer and returns the reply.
    pub fn call(&mut self, server: &FsServer, request: &[u8], room: u32) -> Reply {
        self.mem.write_slice(request, GuestAddress(REQ_AT)).unwrap();
        let poison = vec![0xa5u8; room as usize];
        self.mem
            .write_slice(&poison, GuestAddress(REPLY_AT))
            .unwrap();
        self.offer(&[
            (REQ_AT, request.len() as u32, false),
            (REPLY_AT, room, true),
        ]);
        let pass = self.serve(server);
        assert!(pass.used && !pass.more, "{pass:?}");
        let (_, len) = self.pop_used().expect("no used element");
        let mut buf = vec![0u8; room as usize];
        self.mem
            .read_slice(&mut buf, GuestAddress(REPLY_AT))
            .unwrap();
        Reply::parse(len, &buf)
    }
}

/// Guest memory for the mock driver.
pub(super) fn memory() -> GuestMemory {
    crate::devices::virtio::testing::guest_memory(MEM_SIZE)
}
