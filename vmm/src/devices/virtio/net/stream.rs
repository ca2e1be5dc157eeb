//! The stream backend: Ethernet frames over a connected Unix stream socket,
//! each preceded by its length as a 4-byte big-endian number (qemu's
//! `-netdev stream`/`-net socket` framing, which passt speaks).
//!
//! The socket is opened before the VMM is jailed (the jail has an empty
//! network namespace and an empty root: the VMM can neither reach passt's
//! socket path nor any network later) and is only ever read and written
//! here. Both directions are bounded: at most [`IN_CAPACITY`] bytes read
//! ahead of the guest (reading stops, and the peer blocks, until the guest
//! takes frames), and output above [`OUT_HIGH_WATER`] makes
//! [`NetBackend::can_send`] false until the socket drains. A frame length over
//! [`MAX_FRAME_LEN`] cannot be skipped in a stream: the backend closes then,
//! as it does when the peer hangs up; the guest's link then carries nothing.
//!
//! # One frame per write
//! Output goes out one frame per `write(2)`, and a frame the socket took only
//! part of is finished by a write of its rest alone, before the next frame:
//! the stream is the same either way, but its reader sees different pieces.
//! Debian 12's passt (0.0~git20230309) reads what is queued with one
//! non-blocking `recv`, completes a frame cut by its end with **one**
//! blocking `recv` and gives up on the stream (silently, for good) if that
//! returns less than the rest; a tail of four bytes or fewer (part of a
//! length prefix) it drops. The kernel queues a Unix stream write in pieces
//! of at most ~36 KiB (`unix_stream_sendmsg`: one page of head plus 32 KiB
//! of fragments), each readable at once. Writes that ran frames together
//! let such a piece end anywhere in a frame, or in a prefix, with the rest
//! of the frame more than one piece away, and the frames passt then misreads
//! are lost (it finds its place again only when a read starts at a frame).
//! With 64 KiB frames (MTU 65520) a guest → host iperf3 in the testbed ran
//! at 33 Mbit/s with such writes and 181 Mbit/s with one frame per write
//! (one run each; QEMU on the same passt: 98). One frame per write leaves
//! at most two pieces per frame, the second written alone: this is what
//! qemu's `-netdev stream` does (`net_stream_receive`: one frame per
//! `writev`, the rest of a partial one on its own), which passt was
//! written against.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use event_manager::EventSet;
use log::warn;

use super::{NetBackend, NetError, MAX_FRAME_LEN};

/// Bytes read ahead of the guest.
pub const IN_CAPACITY: usize = 4 * (MAX_FRAME_LEN + 4);
/// Output pending above this stops taking tx frames.
pub const OUT_HIGH_WATER: usize = 256 << 10;

/// See the module doc.
#[derive(Debug)]
pub struct StreamBackend {
    fd: OwnedFd,
    inbuf: Box<[u8]>,
    /// Unread bytes are `inbuf[in_start..in_end]`.
    in_start: usize,
    in_end: usize,
    out: Vec<u8>,
    out_start: usize,
    /// Where in `out` the frame being written ends; equal to `out_start`
    /// between frames. Writes never cross it (see the module doc).
    out_frame_end: usize,
    closed: bool,
    /// Frames dropped because the peer was gone.
    pub dropped: u64,
}

impl StreamBackend {
    /// Takes `fd`, a connected stream socket, and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> Result<Self, NetError> {
        super::set_nonblocking(&fd)?;
        Ok(Self {
            fd,
            inbuf: vec![0u8; IN_CAPACITY].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            out: Vec::new(),
            out_start: 0,
            out_frame_end: 0,
            closed: false,
            dropped: 0,
        })
    }

    /// Whether the peer has gone (or sent garbage).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn close(&mut self, why: &str) {
        if !self.closed {
            warn!("net: network backend closed: {why}; the guest's interface carries nothing from now on");
        }
        self.closed = true;
        self.out.clear();
        self.out_start = 0;
        self.out_frame_end = 0;
    }

    /// The length of the first buffered frame, if its prefix is complete.
    fn first_len(&self) -> Option<usize> {
        let b = self.inbuf.get(self.in_start..self.in_start + 4)?;
        if self.in_end - self.in_start < 4 {
            return None;
        }
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// Reads what the socket has, up to the buffer's room.
    fn fill(&mut self) {
        loop {
            if self.in_start > 0
                && (self.in_end == self.inbuf.len() || self.in_start == self.in_end)
            {
                self.inbuf.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            let room = &mut self.inbuf[self.in_end..];
            if room.is_empty() || self.closed {
                return;
            }
            // SAFETY: reads into the unused tail of our own buffer, with its length.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            match n {
                0 => return self.close("the peer hung up"),
                n if n > 0 => {
                    self.in_end += n as usize;
                    if let Some(len) = self.first_len() {
                        if len > MAX_FRAME_LEN {
                            return self.close(&format!("frame length {len} over {MAX_FRAME_LEN}"));
                        }
                    }
                }
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => return,
                        _ => return self.close(&format!("read: {e}")),
                    }
                }
            }
        }
    }

    /// Writes pending output, one frame or the rest of one per write,
    /// until the socket would block.
    fn flush(&mut self) {
        while self.out_start < self.out.len() && !self.closed {
            if self.out_start == self.out_frame_end {
                // `out` holds whole frames, each after its length prefix.
                let prefix = &self.out[self.out_start..self.out_start + 4];
                let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                self.out_frame_end = self.out_start + 4 + len as usize;
            }
            let pending = &self.out[self.out_start..self.out_frame_end];
            // SAFETY: writes from our own buffer, with its length.
            let n =
                unsafe { libc::write(self.fd.as_raw_fd(), pending.as_ptr().cast(), pending.len()) };
            if n >= 0 {
                self.out_start += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => self.close(&format!("write: {e}")),
            }
        }
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
            self.out_frame_end = 0;
        } else if self.out_start > OUT_HIGH_WATER {
            self.out.drain(..self.out_start);
            self.out_frame_end -= self.out_start;
            self.out_start = 0;
        }
    }

    /// Bytes written by the guest and not yet taken by the socket (bounded:
    /// at most [`OUT_HIGH_WATER`] plus one frame).
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_start
    }
}

impl AsRawFd for StreamBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetBackend for StreamBackend {
    fn can_send(&self) -> bool {
        self.closed || self.pending_out() < OUT_HIGH_WATER
    }

    fn send_frame(&mut self, frame: &[u8]) {
        if self.closed {
            self.dropped += 1;
            return;
        }
        self.out
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.out.extend_from_slice(frame);
        self.flush();
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        let len = self.first_len()?;
        let start = self.in_start + 4;
        (len <= MAX_FRAME_LEN && self.in_end - start >= len)
            .then(|| &self.inbuf[start..start + len])
    }

    fn consume_frame(&mut self) {
        if let Some(len) = self.first_len() {
            if self.in_end - self.in_start >= 4 + len {
                self.in_start += 4 + len;
            }
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        }
        if let Some(len) = self.first_len().filter(|&l| l > MAX_FRAME_LEN) {
            self.close(&format!("frame length {len} over {MAX_FRAME_LEN}"));
            self.in_start = 0;
            self.in_end = 0;
        }
    }

    fn notify(&mut self, evset: EventSet) {
        if evset.contains(EventSet::IN) {
            self.fill();
        }
        if evset.contains(EventSet::OUT) {
            self.flush();
        }
        if evset.intersects(EventSet::HANG_UP | EventSet::ERROR) && !evset.contains(EventSet::IN) {
            self.close("the peer hung up");
        }
    }

    fn interest(&self) -> EventSet {
        if self.closed {
            return EventSet::empty();
        }
        let mut e = EventSet::empty();
        // Room to read: the buffer is not full of unconsumed frames. (A
        // partial frame at the end always has room: the buffer holds four
        // largest frames and compacts before reading.)
        if self.in_end - self.in_start < self.inbuf.len() && self.peek_frame_count_below(4) {
            e |= EventSet::IN;
        }
        if self.pending_out() > 0 {
            e |= EventSet::OUT;
        }
        e
    }

    fn reset(&mut self) {
        // Frames are datagrams to the guest: dropping what is buffered is
        // what a reset NIC does. The stream framing stays intact because
        // only whole frames are dropped.
        while self.peek_frame().is_some() {
            self.consume_frame();
        }
    }
}

impl StreamBackend {
    /// Whether fewer than `n` complete frames are buffered (so reading on
    /// makes progress rather than filling memory the guest is not taking).
    fn peek_frame_count_below(&self, n: usize) -> bool {
        let mut at = self.in_start;
        for _ in 0..n {
            if self.in_end - at < 4 {
                return true;
            }
            let len = u32::from_be_bytes([
                self.inbuf[at],
                self.inbuf[at + 1],
                self.inbuf[at + 2],
                self.inbuf[at + 3],
            ]) as usize;
            if self.in_end - at - 4 < len {
                return true;
            }
            at += 4 + len;
        }
        false
    }
}
