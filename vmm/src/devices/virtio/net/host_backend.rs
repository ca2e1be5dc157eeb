//! The product's backends behind one type, so that the device and its
//! event handler are compiled once for both (the VMM's text is part of its
//! memory budget) and the builder picks one at run time.

use std::os::fd::{AsRawFd, RawFd};

use event_manager::EventSet;

use super::{NetBackend, StreamBackend, TapBackend};

/// passt's stream socket or a TAP device.
#[derive(Debug)]
pub enum HostBackend {
    /// [`StreamBackend`].
    Stream(StreamBackend),
    /// [`TapBackend`].
    Tap(TapBackend),
}

macro_rules! each {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            HostBackend::Stream($b) => $e,
            HostBackend::Tap($b) => $e,
        }
    };
}

impl AsRawFd for HostBackend {
    fn as_raw_fd(&self) -> RawFd {
        each!(self, b => b.as_raw_fd())
    }
}

impl NetBackend for HostBackend {
    fn can_send(&self) -> bool {
        each!(self, b => b.can_send())
    }
    fn send_frame(&mut self, frame: &[u8]) {
        each!(self, b => b.send_frame(frame))
    }
    fn peek_frame(&self) -> Option<&[u8]> {
        each!(self, b => b.peek_frame())
    }
    fn consume_frame(&mut self) {
        each!(self, b => b.consume_frame())
    }
    fn notify(&mut self, evset: EventSet) {
        each!(self, b => b.notify(evset))
    }
    fn interest(&self) -> EventSet {
        each!(self, b => b.interest())
    }
    fn reset(&mut self) {
        each!(self, b => b.reset())
    }
    fn vnet_hdr(&self) -> bool {
        each!(self, b => b.vnet_hdr())
    }
    fn set_guest_offloads(&mut self, features: u64) {
        each!(self, b => b.set_guest_offloads(features))
    }
}
