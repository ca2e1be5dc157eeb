//! Event-manager plumbing for the vsock device: which fd means what.
//!
//! At start only the activation eventfd is watched. When the driver activates
//! the device (on a vCPU thread) that eventfd fires here, on the event loop
//! thread, and the queue eventfds and the backend's epoll fd get registered.
//! The data path itself lives in `device.rs`.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::error;

use super::{Vsock, VsockBackend, EVQ, RXQ, TXQ};
use crate::warn_limited;

const TOKEN_RXQ: u32 = RXQ as u32;
const TOKEN_TXQ: u32 = TXQ as u32;
const TOKEN_EVQ: u32 = EVQ as u32;
const TOKEN_BACKEND: u32 = 3;
const TOKEN_ACTIVATE: u32 = 4;

impl<B: VsockBackend> Vsock<B> {
    fn register_runtime_fds(&mut self, ops: &mut EventOps) {
        let Some(evts) = &self.queue_evts else { return };
        let mut fds: Vec<(i32, u32)> = evts
            .iter()
            .enumerate()
            .map(|(i, e)| (std::os::fd::AsRawFd::as_raw_fd(e), i as u32))
            .collect();
        fds.push((self.backend_fd(), TOKEN_BACKEND));
        for (fd, token) in fds {
            match ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                Ok(()) | Err(event_manager::Error::FdAlreadyRegistered) => {}
                Err(e) => error!("vsock: cannot register fd {fd} with the event loop: {e}"),
            }
        }
    }

    fn drain_queue_evt(&self, idx: usize) {
        if let Some(evt) = self.queue_evts.as_ref().and_then(|e| e.get(idx)) {
            if let Err(e) = evt.read() {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    warn_limited!("vsock: cannot read queue {idx} eventfd: {e}");
                }
            }
        }
    }
}

impl<B: VsockBackend> MutEventSubscriber for Vsock<B> {
    fn init(&mut self, ops: &mut EventOps) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.activate_evt);
        if let Err(e) = ops.add(Events::with_data_raw(fd, TOKEN_ACTIVATE, EventSet::IN)) {
            error!("vsock: cannot register the activation eventfd: {e}");
        }
        // Activation may have happened before the subscriber was added.
        if self.active.is_some() {
            self.register_runtime_fds(ops);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_ACTIVATE => {
                let _ = self.activate_evt.read();
                self.register_runtime_fds(ops);
                // The guest may have queued packets before we were listening.
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
            TOKEN_EVQ => {
                // We never post events; the driver's buffers just wait.
                self.drain_queue_evt(EVQ);
            }
            TOKEN_BACKEND => self.handle_backend_event(events.event_set()),
            other => warn_limited!("vsock: event for unknown token {other}"),
        }
    }
}
