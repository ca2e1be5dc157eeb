//! The Unix-socket backend of the vsock device.
//!
//! Convention (shared with Firecracker and Cloud Hypervisor, so their
//! tooling works against husk):
//! - host → guest: a client connects to the device's socket path, writes
//!   `CONNECT <port>\n`, and gets `OK <host_port>\n` once the guest accepted,
//!   followed by the byte stream. If nothing listens in the guest (it answers
//!   RST), the client's connection is closed.
//! - guest → host: a guest connection to CID 2 port P is bridged to a new
//!   connection to `<path>_P`; if that fails the guest gets an RST.
//!
//! Everything is nonblocking, including the connect towards `<path>_P`: a
//! host listener with a full backlog must not stall the event loop.

mod connection;
mod muxer;
mod txbuf;

use std::time::Duration;

pub use connection::State as ConnState;
pub use muxer::VsockMuxer;

/// Credit we advertise per connection, and the bound on what we buffer for
/// a host socket that does not keep up.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Queue a CREDIT_UPDATE once the guest believes less than this is free.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_TX_BUF_SIZE / 2;
/// Concurrent connections (both directions). With the tx buffer this bounds
/// the backend's memory at 64 MiB even if no host peer ever reads.
pub const MAX_CONNECTIONS: usize = 256;
/// Host clients that connected but have not sent `CONNECT <port>\n` yet.
pub const MAX_PENDING_HOSTS: usize = 32;
/// RSTs for unknown connections waiting for an rx buffer.
pub const MAX_PENDING_RST: usize = 256;
/// Longest accepted `CONNECT <port>\n` line.
pub const CONNECT_LINE_MAX: usize = 32;
/// Host-initiated connections the guest has not answered in this time get
/// an RST and their host client is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After our SHUTDOWN with both flags, the guest has this long to send RST.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Host clients must send their CONNECT line within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First local port for host-initiated connections (high, so they do not
/// collide with well-known ports the guest may connect to).
pub const LOCAL_PORT_BASE: u32 = 1 << 30;

/// Errors from setting up the backend.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// Something other than a stale socket is in the way at the path.
    #[error("{0} exists and is not a socket")]
    PathInUse(std::path::PathBuf),
    /// Binding the host socket failed.
    #[error("cannot listen on {0}")]
    Bind(std::path::PathBuf, #[source] std::io::Error),
    /// Creating the epoll instance or timer failed.
    #[error("cannot create the backend's epoll or timer")]
    Setup(#[source] std::io::Error),
}
