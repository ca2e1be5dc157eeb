//! Returning a frame's rx buffers to the used ring in one step, and the rx
//! queue's interrupt decision that goes with it.
//!
//! virtio-queue's `add_used` moves the used index after every buffer. A
//! frame spread over mergeable buffers carries their number in its first
//! buffer's header, and the Linux driver, which polls the used ring while
//! this thread works (NAPI, on a vCPU), may see the first buffer before the
//! others: it then drops the frame ("rx error: N buffers out of M
//! missing") and takes the rest of its buffers for frames of their own,
//! which it drops too. Frames of one buffer never meet this; 64 KiB
//! segments from a TAP device (offloads) meet it all the time: measured in
//! the testbed, one 5-second TCP transfer host → guest, the sender counted
//! about 1,800 retransmitted segments against QEMU's 2 on the same TAP,
//! and ran at a third of QEMU's rate. Here every element of a frame is
//! written first and the index moves once, after them, with release
//! ordering (what QEMU's `virtqueue_flush` of a whole frame does).
//!
//! virtio-queue's EVENT_IDX bookkeeping (`needs_notification`) counts one
//! element per `add_used` call, so it would under-count such a frame and
//! could skip an interrupt the driver asked for; [`RxSignal`] decides for
//! the rx queue instead, with the same rule (the used index crossed the
//! driver's `used_event` since the last decision).

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Error, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::GuestMemory;

/// Bytes before the used ring's first element (flags, index).
const USED_RING_HEADER: u64 = 4;
/// Bytes of one used element (id, len).
const USED_ELEMENT: u64 = 8;
/// Bytes before the available ring's first element (flags, index).
const AVAIL_RING_HEADER: u64 = 4;

/// Puts `elems` (head index, bytes written) on `q`'s used ring, in order,
/// and moves the used index once, after all of them.
pub fn add_used_together(
    q: &mut Queue,
    mem: &GuestMemory,
    elems: &[(u16, u32)],
) -> Result<(), Error> {
    let Some((&(last_head, last_len), first)) = elems.split_last() else {
        return Ok(());
    };
    let size = q.size();
    let start = q.next_used();
    for (i, &(head, len)) in first.iter().enumerate() {
        if head >= size {
            return Err(Error::InvalidDescriptorIndex);
        }
        let slot = u64::from(start.wrapping_add(i as u16) % size);
        let addr = GuestAddress(q.used_ring())
            .0
            .checked_add(USED_RING_HEADER + slot * USED_ELEMENT)
            .ok_or(Error::AddressOverflow)?;
        let mut elem = [0u8; USED_ELEMENT as usize];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr))
            .map_err(Error::GuestMemory)?;
    }
    q.set_next_used(start.wrapping_add(first.len() as u16));
    // Writes the last element, then the index (release): the driver sees
    // the whole frame or none of it.
    q.add_used(mem, last_head, last_len)
}

/// The rx queue's interrupt decision (see the module doc).
#[derive(Debug, Default)]
pub struct RxSignal {
    /// The used index at the last decision.
    last: Wrapping<u16>,
}

impl RxSignal {
    /// Whether the driver wants an interrupt for what `q`'s used ring
    /// gained since the last call.
    pub fn needs_interrupt(&mut self, q: &Queue, mem: &GuestMemory) -> bool {
        let new = Wrapping(q.next_used());
        let old = std::mem::replace(&mut self.last, new);
        if !q.event_idx_enabled() {
            return true;
        }
        // The used index is written before `used_event` is read.
        fence(Ordering::SeqCst);
        let at = q
            .avail_ring()
            .checked_add(AVAIL_RING_HEADER + 2 * u64::from(q.size()));
        let Some(Ok(used_event)) = at.map(|a| mem.read_obj::<u16>(GuestAddress(a))) else {
            return true;
        };
        let used_event = Wrapping(u16::from_le(used_event));
        new - used_event - Wrapping(1) < new - old
    }
}
