//! virtio-fs (device id 26): one shared host directory per device, served by an in-process
//! FUSE server ([`crate::fs::ShareServer`]).
//!
//! Layout:
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) implementation (config space with
//!   the tag, features, activation and reset handed to the worker);
//! - `worker.rs`: the device's own thread. FUSE requests touch the host file system and can
//!   block for as long as the host disk takes (a `fsync`, a slow network mount), so they are
//!   served off the VMM's event loop, which keeps the console, vsock and other devices live.
//!   The thread waits on the queue notification eventfds the transport hands over at
//!   activation and on a command eventfd (activate, reset, exit);
//! - `queue.rs`: the pure part, one pass over a virtqueue: descriptor chain → fuse-backend-rs
//!   virtio-fs `Reader` / `VirtioFsWriter` → `Server::handle_message` → used ring. It is
//!   generic over nothing that needs a thread or KVM, so unit tests drive it with virtio-queue's
//!   mock queues.
//!
//! Queues: 0 is the high-priority queue (FORGET, INTERRUPT), 1 is the one request queue
//! (`num_request_queues` = 1). Linux submits every request on one request queue anyway unless
//! the device offers more; more queues would mean more server threads per share, which we do
//! not need for pods yet.
//!
//! No DAX window (no shared memory region): file data is always copied through the queues.
//! No `VIRTIO_FS_F_NOTIFICATION`: the server never sends notifications.
//!
//! # Hostile drivers
//! Every chain is validated before the FUSE server sees it: chains that leave guest memory or
//! whose readable or writable part exceeds [`MAX_REQUEST_BYTES`] (what the FUSE server
//! negotiates with INIT, plus a page of headers) are answered with an error reply if they carry
//! a readable header and a writable reply buffer, and are otherwise returned unused. The FUSE
//! server answers malformed requests with error replies itself. Out-of-range head indexes or
//! ring indexes stop processing of that queue until the next reset. Each pass serves at most
//! one queue's worth of chains before the worker looks at its commands again, so a guest that
//! keeps a queue full cannot keep a reset waiting.

mod device;
pub mod queue;
#[cfg(test)]
mod tests;
mod worker;

pub use device::VirtioFs;

/// Size of the high-priority queue.
pub const HIPRIO_QUEUE_SIZE: u16 = 128;
/// Size of the request queue. Linux's virtio-fs driver limits a request's pages by the queue
/// size; 1024 leaves room for 1 MiB requests even without indirect descriptors.
pub const REQUEST_QUEUE_SIZE: u16 = 1024;
/// Number of request queues advertised in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Index of the high-priority queue.
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the (only) request queue.
pub const REQUEST_QUEUE: usize = 1;

/// Length of the config space's tag field (`u8 tag[36]`, NUL padded, not NUL terminated when
/// full).
pub const TAG_LEN: usize = 36;
/// Config space: `tag[36]` then `le32 num_request_queues`.
pub const CONFIG_LEN: usize = TAG_LEN + 4;

/// Largest readable or writable part of one chain: the FUSE server's `MAX_BUFFER_SIZE` (1 MiB,
/// the `max_write` / `max_pages` it announces in INIT) plus a page for the headers.
pub const MAX_REQUEST_BYTES: usize = (1 << 20) + 4096;

/// How long a driver reset waits for the worker to finish the request it is serving.
pub const RESET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors from creating a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsDeviceError {
    /// The tag does not fit the config space (or is empty).
    #[error("share tag `{0}` must be 1 to {TAG_LEN} bytes")]
    BadTag(String),
    /// An eventfd or the worker's epoll instance could not be created.
    #[error("cannot create the file server's event plumbing")]
    Event(#[source] std::io::Error),
    /// The worker thread could not be started.
    #[error("cannot start the file server thread for share `{tag}`")]
    Spawn {
        /// Share tag.
        tag: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread could not isolate itself (see `prepare_server_thread`).
    #[error("file server thread for share `{tag}` failed to start")]
    Prepare {
        /// Share tag.
        tag: String,
        /// Cause.
        #[source]
        source: crate::fs::ServerError,
    },
}
