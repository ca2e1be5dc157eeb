//! Event-manager plumbing for the net device: which fd means what.
//!
//! At start only the activation eventfd is watched. When the driver activates
//! the device (on a vCPU thread) that eventfd fires here, on the event loop
//! thread, and the queue eventfds and the backend's socket get registered.
//! The socket is watched for what the backend wants at the moment
//! ([`NetBackend::interest`]: reading while it has room, writing while output
//! waits), re-computed after every event, so a guest that takes no frames
//! does not make the loop spin on a readable socket. The data path lives in
//! `device.rs`.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::{Net, NetBackend, RXQ, TXQ};
use crate::warn_limited;

const TOKEN_RXQ: u32 = RXQ as u32;
const TOKEN_TXQ: u32 = TXQ as u32;
const TOKEN_BACKEND: u32 = 2;
const TOKEN_ACTIVATE: u32 = 3;

/// What the event loop watches the backend's socket for: `None` while it
/// is not registered.
#[derive(Debug, Default)]
pub(super) struct Watch(pub(super) Option<EventSet>);

impl<B: NetBackend> Net<B> {
    fn register_queue_fds(&mut self, ops: &mut EventOps) {
        let Some(evts) = &self.queue_evts else { return };
        for (i, e) in evts.iter().enumerate() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(e);
            match ops.add(Events::with_data_raw(fd, i as u32, EventSet::IN)) {
                Ok(()) | Err(event_manager::Error::FdAlreadyRegistered) => {}
                Err(e) => error!("net: cannot register fd {fd} with the event loop: {e}"),
            }
        }
    }

    /// Brings the backend's registration in line with what it wants now.
    fn update_backend_watch(&mut self, ops: &mut EventOps) {
        let fd = self.backend_fd();
        // Only an active device reads the socket: before activation and
        // after a reset, frames wait in the socket (bounded by the kernel).
        let want = if self.active.is_some() {
            self.backend.interest()
        } else {
            EventSet::empty()
        };
        let want = (!want.is_empty()).then_some(want);
        if want == self.watch.0 {
            return;
        }
        let result = match (self.watch.0, want) {
            (None, Some(w)) => ops.add(Events::with_data_raw(fd, TOKEN_BACKEND, w)),
            (Some(_), Some(w)) => ops.modify(Events::with_data_raw(fd, TOKEN_BACKEND, w)),
            (Some(old), None) => ops.remove(Events::with_data_raw(fd, TOKEN_BACKEND, old)),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => self.watch.0 = want,
            Err(e) => warn_limited!("net: cannot update the backend's registration: {e}"),
        }
    }

    fn drain_queue_evt(&self, idx: usize) {
        if let Some(evt) = self.queue_evts.as_ref().and_then(|e| e.get(idx)) {
            if let Err(e) = evt.read() {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    warn_limited!("net: cannot read queue {idx} eventfd: {e}");
                }
            }
        }
    }
}

impl<B: NetBackend> MutEventSubscriber for Net<B> {
    fn init(&mut self, ops: &mut EventOps) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.activate_evt);
        if let Err(e) = ops.add(Events::with_data_raw(fd, TOKEN_ACTIVATE, EventSet::IN)) {
            error!("net: cannot register the activation eventfd: {e}");
        }
        if self.active.is_some() {
            self.register_queue_fds(ops);
        }
        self.update_backend_watch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_ACTIVATE => {
                let _ = self.activate_evt.read();
                self.on_activated();
                self.register_queue_fds(ops);
                // The guest may have queued frames before we were listening.
                self.handle_tx_event();
            }
            TOKEN_RXQ => {
                self.drain_queue_evt(RXQ);
                self.handle_rx_event();
            }
            TOKEN_TXQ => {
                self.drain_queue_evt(TXQ);
                self.handle_tx_event();
            }
            TOKEN_BACKEND => self.handle_backend_event(events.event_set()),
            other => warn_limited!("net: event for unknown token {other}"),
        }
        self.update_backend_watch(ops);
    }
}
