//! virtio-net (device id 1): one Ethernet interface, its frames carried by a
//! host backend.
//!
//! Layout (as the vsock device):
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) implementation and the
//!   pure queue logic (tx chain → frame → backend; backend frame → one or more rx
//!   chains), generic over a [`NetBackend`] so unit tests and the fuzz target use a
//!   test double and need no `/dev/kvm`;
//! - `event_handler.rs`: event-manager plumbing only (queue eventfds, the backend's
//!   socket with the readiness it currently wants, the activation eventfd);
//! - `stream.rs`: a connected Unix stream socket speaking qemu's `-netdev stream`
//!   framing (a 4-byte big-endian length before each frame), which is what `passt`
//!   serves ([`crate::net::passt`] starts it);
//! - `tap.rs`: a kernel TAP device with `IFF_VNET_HDR` ([`crate::net::tap`] makes it),
//!   the backend that carries offloads.
//!
//! Written by hand: rust-vmm has no virtio-net device crate (Firecracker's and Cloud
//! Hypervisor's live inside their VMMs and are tied to TAP); virtio-queue's
//! `Reader`/`Writer` do the descriptor walking and bounds checks.
//!
//! # Features
//! `VERSION_1`, `RING_EVENT_IDX`, `NET_F_MAC` (a MAC per pod), `NET_F_MTU` (the
//! backend's MTU: 65520 for passt, so a TCP segment is one frame) and
//! `NET_F_MRG_RXBUF` (a frame larger than one rx buffer is spread over several,
//! the count in the first header's `num_buffers`; without it Linux would need
//! 64 KiB buffers per slot for that MTU). With a backend that carries virtio-net
//! headers ([`NetBackend::vnet_hdr`]: TAP) also `CSUM`, `GUEST_CSUM`, `HOST_TSO4/6`
//! and `GUEST_TSO4/6` (Firecracker's set without the deprecated UFO): the guest's
//! header goes to the TAP device as it is (the host kernel validates it, as for
//! any TAP user) and the kernel's header comes to the guest. The stream backend
//! carries whole, checksummed Ethernet frames (passt takes no virtio-net header),
//! so with it no offload is offered and a header asking for one is refused.
//!
//! # Hostile drivers
//! Every tx chain is read through a [`virtio_queue::Reader`] (addresses inside
//! guest memory, lengths summed without overflow, loops cut by the chain's TTL)
//! and must hold a 12-byte header plus a frame of 14 to [`MAX_FRAME_LEN`] bytes
//! with no offload requested; anything else is returned unused and dropped. Rx
//! chains are written through [`virtio_queue::Writer`]; a buffer too small for the
//! header is returned unused, and a frame that does not fit the buffers the guest
//! offers waits (it is never truncated). The backend bounds what it buffers in both
//! directions, so a guest can make its own network stall but cannot make the VMM
//! hold more memory.

mod device;
mod event_handler;
mod host_backend;
pub mod stream;
pub mod tap;
#[cfg(any(test, feature = "test-utils"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod used_ring;

pub use device::{Net, NET_QUEUE_SIZE, OFFLOAD_FEATURES};
pub use host_backend::HostBackend;
pub use stream::StreamBackend;
pub use tap::TapBackend;

use event_manager::EventSet;

/// Queue indexes: receive (device → guest).
pub const RXQ: usize = 0;
/// Transmit queue (guest → device).
pub const TXQ: usize = 1;

/// `struct virtio_net_hdr_v1`: with `VERSION_1` the header always has
/// `num_buffers`, mergeable buffers or not.
pub const NET_HDR_LEN: usize = 12;
/// Smallest frame accepted from the guest: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// Largest frame in either direction: the largest MTU Linux allows (65535)
/// plus the Ethernet header, rounded up.
pub const MAX_FRAME_LEN: usize = 65536 + 14;
/// The MTU offered with `VIRTIO_NET_F_MTU` unless the backend says otherwise:
/// passt's own default, the largest whose frames fit an IPv4 packet.
pub const DEFAULT_MTU: u16 = 65520;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address derived from `seed` (a pod id),
    /// stable for the pod: `02:` then five bytes of the seed's SHA-256.
    pub fn from_seed(seed: &[u8]) -> MacAddr {
        use sha2::Digest;
        let d = sha2::Sha256::digest(seed);
        MacAddr([0x02, d[0], d[1], d[2], d[3], d[4]])
    }

    /// Parses `aa:bb:cc:dd:ee:ff`.
    pub fn parse(s: &str) -> Option<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(out))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The host side of the interface: where guest frames go and host frames
/// come from. Errors never cross this interface: a backend whose peer went
/// away drops what it is given and has nothing to deliver, and logs once.
pub trait NetBackend: std::os::fd::AsRawFd + Send {
    /// Whether [`NetBackend::send_frame`] may be called now; false while
    /// the backend's output is above its bound (the device then leaves tx
    /// chains on the ring until the backend reports it drained).
    fn can_send(&self) -> bool;
    /// Takes one Ethernet frame from the guest (14 to [`MAX_FRAME_LEN`] bytes).
    fn send_frame(&mut self, frame: &[u8]);
    /// The next frame for the guest, left in place.
    fn peek_frame(&self) -> Option<&[u8]>;
    /// Drops the frame [`NetBackend::peek_frame`] returned.
    fn consume_frame(&mut self);
    /// The backend's fd reported `evset`: read, flush, or note the end.
    fn notify(&mut self, evset: EventSet);
    /// The readiness the backend wants now: `IN` while it has room to read,
    /// `OUT` while output waits; empty once the peer is gone.
    fn interest(&self) -> EventSet;
    /// The driver reset the device: frames in flight are dropped.
    fn reset(&mut self);
    /// Whether every frame in both directions starts with a
    /// `virtio_net_hdr_v1` ([`NET_HDR_LEN`] bytes; a TAP device with
    /// `IFF_VNET_HDR`). The device then offers checksum and segmentation
    /// offloads and passes headers through instead of refusing them.
    fn vnet_hdr(&self) -> bool {
        false
    }
    /// The guest acked `features`: deliver only what it can take (called on
    /// the event loop thread after each activation).
    fn set_guest_offloads(&mut self, _features: u64) {}
}

/// Makes a backend's fd non-blocking (the event loop must never wait on it).
fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> Result<(), NetError> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns, integer arguments only.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(NetError::Socket(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Errors from setting up the net device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Creating the activation eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The backend's socket could not be made non-blocking.
    #[error("cannot set up the network backend's socket")]
    Socket(#[source] std::io::Error),
}
