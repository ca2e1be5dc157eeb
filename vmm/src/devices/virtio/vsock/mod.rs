//! virtio-vsock (device id 19): stream sockets between the guest and host
//! Unix sockets.
//!
//! Layout (after Firecracker's vsock device):
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) implementation and
//!   queue processing, generic over a [`VsockBackend`] so unit tests and the
//!   fuzz target can use a test double;
//! - `event_handler.rs`: event-manager plumbing only (queue eventfds, the
//!   backend's epoll fd, the activation eventfd);
//! - `unix/`: the real backend, a muxer that maps vsock connections onto
//!   host Unix sockets with Firecracker's `CONNECT <port>` convention, and the
//!   per-connection state machine with credit-based flow control.
//!
//! Packets are parsed from descriptor chains by the `virtio-vsock` crate.

mod device;
mod event_handler;
#[cfg(any(test, feature = "test-utils"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod unix;

pub use device::{Vsock, VSOCK_QUEUE_SIZE};
pub use unix::VsockMuxer;

use virtio_vsock::packet::VsockPacket;

/// The host's CID, the only peer a guest reaches through this device.
pub const VSOCK_HOST_CID: u64 = 2;
/// The guest CID `husk vm --vsock` uses unless told otherwise.
pub const DEFAULT_GUEST_CID: u64 = 3;
/// Largest payload in one packet, in either direction (Linux uses the same
/// 64 KiB cap, VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_BUF_SIZE: u32 = 64 * 1024;

/// Queue indexes.
pub const RXQ: usize = 0;
/// Transmit queue (guest → device).
pub const TXQ: usize = 1;
/// Event queue (only used for transport resets, which we never send).
pub const EVQ: usize = 2;

/// The only socket type supported (no SEQPACKET feature is offered).
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (virtio 1.2 §5.10.6).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// No more data in one or both directions.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Sender's buffer space changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Sender asks for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// A vsock packet in guest memory (header + optional data).
pub type Packet<'a> = VsockPacket<'a, ()>;

/// The host side of the device: where guest packets go and host packets come
/// from.
///
/// Errors never cross this interface: a backend answers a bad packet with an
/// RST of its own (queued for rx) or drops it, and logs.
pub trait VsockBackend: std::os::fd::AsRawFd + Send {
    /// Handles a packet from the guest's tx queue.
    fn send_pkt(&mut self, pkt: &Packet<'_>);
    /// Fills `pkt` (an rx buffer from the guest) with the next packet for the
    /// guest. Returns false, leaving the buffer untouched, if there was
    /// nothing to send after all.
    fn recv_pkt(&mut self, pkt: &mut Packet<'_>) -> bool;
    /// Whether [`VsockBackend::recv_pkt`] may have something.
    fn has_pending_rx(&self) -> bool;
    /// The backend's fd (registered with the event loop) became ready.
    fn notify(&mut self, evset: event_manager::EventSet);
    /// The driver reset the device: drop every connection.
    fn reset(&mut self);
}

/// Errors from setting up the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0, 1, 2 and u32::MAX and above).
    #[error("guest CID {0} is reserved")]
    InvalidCid(u64),
    /// Creating the activation eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}
