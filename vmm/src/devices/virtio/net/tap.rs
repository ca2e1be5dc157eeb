//! The TAP backend: frames through a kernel TAP device opened with
//! `IFF_VNET_HDR`, so each frame in both directions carries the same
//! 12-byte `virtio_net_hdr_v1` the guest's driver uses. That is what makes
//! checksum and segmentation offloads possible: the guest hands over 64 KiB
//! TCP segments with a partial checksum and the host kernel finishes them
//! (or never has to, when they stay virtual), and the host hands the guest
//! segments it has not split, each one frame instead of ~45.
//!
//! The TAP fd is opened and configured by husk before the VMM starts
//! ([`crate::net::tap`]: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, header size
//! 12); the VMM only reads, writes and, once the guest has acked its
//! features, sets the offloads the guest can take (`TUNSETOFFLOAD`, the one
//! ioctl the VMM's seccomp filter allows for it). A TAP fd delivers one
//! frame per `read`, so the backend holds at most one frame (the one the
//! guest has no buffer for yet) and reads the next only when that one is
//! taken: a guest that takes nothing costs no memory, and the kernel's TAP
//! queue (bounded by its `txqueuelen`) drops what comes meanwhile. Writes
//! never wait: a frame the kernel does not take is dropped, as a NIC does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use event_manager::EventSet;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
};

use super::{NetBackend, NetError, MAX_FRAME_LEN, MIN_FRAME_LEN, NET_HDR_LEN};
use crate::warn_limited;

/// `TUNSETOFFLOAD`'s argument: the offloads the guest can take, from the
/// features it acked.
pub fn tun_offloads(guest_features: u64) -> libc::c_uint {
    let has = |bit: u32| guest_features & (1u64 << bit) != 0;
    let mut flags = 0;
    if has(VIRTIO_NET_F_GUEST_CSUM) {
        flags |= libc::TUN_F_CSUM;
        // Segmentation offloads need checksum offload (the kernel refuses
        // them alone).
        if has(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= libc::TUN_F_TSO4;
        }
        if has(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= libc::TUN_F_TSO6;
        }
    }
    flags
}

/// See the module doc.
#[derive(Debug)]
pub struct TapBackend {
    fd: OwnedFd,
    /// One frame with its header, `buf[..len]`; `len == 0`: none.
    buf: Box<[u8]>,
    len: usize,
    closed: bool,
    /// Frames the kernel did not take.
    pub dropped: u64,
}

impl TapBackend {
    /// Takes `fd`, a TAP fd with `IFF_VNET_HDR` and a 12-byte header, and
    /// makes it non-blocking.
    pub fn new(fd: OwnedFd) -> Result<Self, NetError> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, integer arguments only.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(NetError::Socket(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            buf: vec![0u8; NET_HDR_LEN + MAX_FRAME_LEN].into_boxed_slice(),
            len: 0,
            closed: false,
            dropped: 0,
        })
    }

    fn close(&mut self, why: &str) {
        if !self.closed {
            log::warn!(
                "net: TAP device gone ({why}); the guest's interface carries nothing from now on"
            );
        }
        self.closed = true;
        self.len = 0;
    }

    /// Reads the next frame if none is held.
    fn fill(&mut self) {
        while self.len == 0 && !self.closed {
            // SAFETY: reads into our own buffer, with its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n >= NET_HDR_LEN + MIN_FRAME_LEN {
                    self.len = n;
                } else {
                    // Shorter than a header and an Ethernet header: the
                    // kernel never sends that; skip it.
                    warn_limited!("net: skipping a {n}-byte read from the TAP device");
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return,
                _ => return self.close(&format!("read: {e}")),
            }
        }
    }
}

impl AsRawFd for TapBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetBackend for TapBackend {
    fn can_send(&self) -> bool {
        true
    }

    fn send_frame(&mut self, frame: &[u8]) {
        if self.closed {
            self.dropped += 1;
            return;
        }
        loop {
            // SAFETY: writes from a slice we borrow, with its length.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.dropped += 1;
                    return;
                }
                _ => {
                    // EINVAL for a header the kernel refuses (a hostile
                    // guest's GSO request): that frame only.
                    self.dropped += 1;
                    warn_limited!("net: the TAP device refused a frame: {e}");
                    return;
                }
            }
        }
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| &self.buf[..self.len])
    }

    fn consume_frame(&mut self) {
        self.len = 0;
        self.fill();
    }

    fn notify(&mut self, evset: EventSet) {
        if evset.intersects(EventSet::ERROR | EventSet::HANG_UP) && !evset.contains(EventSet::IN) {
            return self.close("error on its fd");
        }
        self.fill();
    }

    fn interest(&self) -> EventSet {
        if self.closed || self.len > 0 {
            EventSet::empty()
        } else {
            EventSet::IN
        }
    }

    fn reset(&mut self) {
        self.len = 0;
    }

    fn vnet_hdr(&self) -> bool {
        true
    }

    fn set_guest_offloads(&mut self, guest_features: u64) {
        let flags = tun_offloads(guest_features);
        // SAFETY: TUNSETOFFLOAD takes an integer argument by value.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if r < 0 {
            warn_limited!(
                "net: cannot set the TAP device's offloads to {flags:#x}: {}",
                io::Error::last_os_error()
            );
        }
    }
}
