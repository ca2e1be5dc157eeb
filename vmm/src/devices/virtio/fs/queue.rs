//! One pass over a virtio-fs queue: each available descriptor chain becomes a FUSE request for
//! the share's server and goes back on the used ring with the length of the reply.
//!
//! A virtio-fs request chain is device-readable buffers (`fuse_in_header` + arguments) followed
//! by device-writable buffers (`fuse_out_header` + reply). fuse-backend-rs's virtio-fs transport
//! turns the two parts into a `Reader` and a `VirtioFsWriter` that point straight into guest
//! memory (no copies, and any descriptor outside guest memory fails their construction). What
//! this module adds is the device's side of the contract: size limits before decoding, error
//! replies for requests the server could not answer, the used-ring length, and bounded work per
//! pass. Nothing here blocks except the FUSE server itself (host file system calls).

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemory as _};

use super::MAX_REQUEST_BYTES;
use crate::devices::virtio::GuestMemory;
use crate::fs::FsServer;
use crate::warn_limited;

const OUT_HEADER_LEN: u32 = std::mem::size_of::<OutHeader>() as u32;

/// What one pass over a queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Chains were returned on the used ring (the driver may need an interrupt).
    pub used: bool,
    /// The pass stopped at its budget with chains still waiting; notifications are still
    /// disabled, so the caller must run another pass without waiting for one.
    pub more: bool,
}

/// Serves up to `budget` chains from `queue`, with the enable-then-recheck dance before going
/// idle so no notification is lost. Errors of the queue itself (a ring outside guest memory,
/// an available index that jumps ahead by more than the queue size) end the pass; the queue
/// stays stuck until the driver resets the device.
pub fn process_queue(
    queue: &mut Queue,
    mem: &GuestMemory,
    server: &FsServer,
    budget: usize,
) -> Pass {
    let mut pass = Pass::default();
    let mut served = 0;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            warn_limited!("virtio-fs: cannot disable queue notifications: {e}");
            return pass;
        }
        loop {
            if served >= budget {
                pass.more = true;
                return pass;
            }
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    warn_limited!("virtio-fs: queue unusable: {e}");
                    return pass;
                }
            };
            let Some(chain) = chain else { break };
            served += 1;
            let head = chain.head_index();
            if head >= queue.size() {
                // Nothing to return: virtio-queue refuses (and logs) such a used entry.
                warn_limited!("virtio-fs: dropping chain with head index {head}");
                continue;
            }
            let len = serve_chain(mem, chain, server);
            if let Err(e) = queue.add_used(mem, head, len) {
                warn_limited!("virtio-fs: cannot return chain {head}: {e}");
                return pass;
            }
            pass.used = true;
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => return pass,
            Err(e) => {
                warn_limited!("virtio-fs: cannot enable queue notifications: {e}");
                return pass;
            }
        }
    }
}

/// Serves one chain; returns the number of reply bytes written (the used-ring length).
pub fn serve_chain(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    server: &FsServer,
) -> u32 {
    let head = chain.head_index();
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            warn_limited!("virtio-fs: chain {head}: bad request buffers: {e}");
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain.clone()) {
        Ok(w) => w,
        Err(e) => {
            warn_limited!("virtio-fs: chain {head}: bad reply buffers: {e}");
            return 0;
        }
    };
    let Ok(header) = reader.clone().read_obj::<InHeader>() else {
        warn_limited!("virtio-fs: chain {head}: shorter than a FUSE request header");
        return 0;
    };
    if reader.available_bytes() > MAX_REQUEST_BYTES || writer.available_bytes() > MAX_REQUEST_BYTES
    {
        warn_limited!(
            "virtio-fs: chain {head}: {} request / {} reply bytes exceed {MAX_REQUEST_BYTES}",
            reader.available_bytes(),
            writer.available_bytes()
        );
        return reply_error(writer, &header, libc::E2BIG);
    }
    let reply_room = writer.available_bytes();
    let spare = writer.clone();
    match server.handle_message(reader, writer.into(), None, None) {
        Ok(n) => u32::try_from(n).unwrap_or(0),
        Err(e) => {
            warn_limited!(
                "virtio-fs: request {} (opcode {}) failed: {e}",
                header.unique,
                header.opcode
            );
            // Some failures happen after the server has written its error reply (e.g. a name
            // that is not a C string); keep that one, otherwise answer EINVAL ourselves.
            match read_reply_header(mem, chain) {
                Some(out)
                    if out.unique == header.unique
                        && out.len >= OUT_HEADER_LEN
                        && out.len as usize <= reply_room =>
                {
                    out.len
                }
                _ => reply_error(spare, &header, libc::EINVAL),
            }
        }
    }
}

/// Requests the driver expects no reply to.
fn expects_reply(opcode: u32) -> bool {
    ![
        Opcode::Forget as u32,
        Opcode::BatchForget as u32,
        Opcode::Interrupt as u32,
    ]
    .contains(&opcode)
}

/// Writes a bare `fuse_out_header` carrying `-errno`; returns its length, or 0 when there is
/// nothing to reply to or no room for it.
fn reply_error(mut w: VirtioFsWriter<'_>, header: &InHeader, errno: i32) -> u32 {
    if !expects_reply(header.opcode) {
        return 0;
    }
    let out = OutHeader {
        len: OUT_HEADER_LEN,
        error: -errno,
        unique: header.unique,
    };
    match w.write_obj(out) {
        Ok(()) => OUT_HEADER_LEN,
        Err(_) => 0,
    }
}

/// Reads back the `fuse_out_header` at the start of the chain's writable buffers.
fn read_reply_header(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Option<OutHeader> {
    let mut buf = [0u8; OUT_HEADER_LEN as usize];
    let mut got = 0;
    for desc in chain.writable() {
        let n = (buf.len() - got).min(desc.len() as usize);
        if !mem.check_range(desc.addr(), n) {
            return None;
        }
        mem.read_slice(&mut buf[got..got + n], desc.addr()).ok()?;
        got += n;
        if got == buf.len() {
            break;
        }
    }
    if got < buf.len() {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default());
    Some(OutHeader {
        len: word(0),
        error: word(4) as i32,
        unique: u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default()),
    })
}
