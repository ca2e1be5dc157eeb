//! The VMM thread's event loop (rust-vmm event-manager) and the two
//! subscribers the core VM needs: the end of the VM, and console input.
//!
//! Devices with their own event sources (virtio queues, vsock sockets)
//! register further subscribers through the builder.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::SerialDevice;
use crate::exit::ExitSignal;

/// The subscriber type every husk event source uses.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;
/// The VMM thread's event manager.
pub type VmmEventManager = EventManager<Subscriber>;

/// Wakes the loop when the VM ends; the loop then reads the reason from
/// the [`ExitSignal`].
pub struct ExitWatcher(pub Arc<ExitSignal>);

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.event_fd(), EventSet::IN)) {
            log::error!("cannot watch the VM exit event: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Drain; the reason stays in the ExitSignal.
        let _ = self.0.event_fd().read();
    }
}

/// Feeds a byte source (stdin) into the serial receive FIFO, only as fast
/// as the guest drains it: when the FIFO is full, the source is dropped
/// from the epoll set until the UART reports it empty (`rx_ready`).
pub struct ConsoleInput<R: Read + AsRawFd + Send> {
    source: R,
    serial: Arc<Mutex<SerialDevice>>,
    rx_ready: EventFd,
    watching: bool,
    eof: bool,
}

const INPUT_DATA: u32 = 1;
const RX_READY_DATA: u32 = 2;

impl<R: Read + AsRawFd + Send> ConsoleInput<R> {
    /// Input from `source` into `serial`; `rx_ready` is the UART's
    /// "receive FIFO empty" EventFd.
    pub fn new(source: R, serial: Arc<Mutex<SerialDevice>>, rx_ready: EventFd) -> Self {
        ConsoleInput {
            source,
            serial,
            rx_ready,
            watching: false,
            eof: false,
        }
    }

    fn source_fd(&self) -> RawFd {
        self.source.as_raw_fd()
    }

    fn watch(&mut self, ops: &mut EventOps) {
        if self.watching || self.eof {
            return;
        }
        let ev = Events::with_data_raw(self.source_fd(), INPUT_DATA, EventSet::IN);
        match ops.add(ev) {
            Ok(()) => self.watching = true,
            // Regular files and /dev/null cannot be polled: no console input.
            Err(e) => {
                log::debug!("console input not pollable: {e:?}");
                self.eof = true;
            }
        }
    }

    fn unwatch(&mut self, ops: &mut EventOps) {
        if self.watching {
            let ev = Events::with_data_raw(self.source_fd(), INPUT_DATA, EventSet::IN);
            let _ = ops.remove(ev);
            self.watching = false;
        }
    }

    /// Moves what fits from the source into the FIFO. Returns false once
    /// the FIFO is full.
    fn pump(&mut self) -> bool {
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let room = serial.input_capacity();
        if room == 0 {
            return false;
        }
        let mut buf = [0u8; 64];
        let want = room.min(buf.len());
        match self.source.read(&mut buf[..want]) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                let _ = serial.enqueue_input(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.eof = true,
        }
        serial.input_capacity() > 0
    }
}

impl<R: Read + AsRawFd + Send> MutEventSubscriber for ConsoleInput<R> {
    fn init(&mut self, ops: &mut EventOps) {
        let ev = Events::with_data(&self.rx_ready, RX_READY_DATA, EventSet::IN);
        if let Err(e) = ops.add(ev) {
            log::error!("cannot watch the console's receive FIFO: {e:?}");
        }
        self.watch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            INPUT_DATA => {
                let room_left = if events.event_set().contains(EventSet::IN) {
                    self.pump()
                } else {
                    // HUP/ERR without data: the other end is gone.
                    self.eof = true;
                    true
                };
                if self.eof || !room_left {
                    self.unwatch(ops);
                }
            }
            RX_READY_DATA => {
                let _ = self.rx_ready.read();
                self.watch(ops);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::SubscriberOps;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn stdin_bytes_reach_the_uart_at_fifo_pace() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let rx = EventFd::new(EFD_NONBLOCK).unwrap();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq,
            rx.try_clone().unwrap(),
            Box::new(std::io::sink()),
        )));
        // The guest driver enables the received-data interrupt.
        use crate::devices::bus::BusDevice;
        serial.lock().unwrap().write(1, &[0x01]);
        let cap = serial.lock().unwrap().input_capacity();
        let mut em = VmmEventManager::new().unwrap();
        em.add_subscriber(Arc::new(Mutex::new(ConsoleInput::new(
            guest_side,
            serial.clone(),
            rx,
        ))));
        let data: Vec<u8> = (0..cap as u32 + 20)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        host.write_all(&data).unwrap();
        for _ in 0..8 {
            em.run_with_timeout(50).unwrap();
        }
        assert_eq!(serial.lock().unwrap().input_capacity(), 0, "FIFO filled");
        // The guest drains the FIFO; the rest arrives.
        let mut got = Vec::new();
        let mut b = [0u8];
        for _ in 0..cap {
            serial.lock().unwrap().read(0, &mut b);
            got.push(b[0]);
        }
        for _ in 0..8 {
            em.run_with_timeout(50).unwrap();
        }
        for _ in 0..20 {
            serial.lock().unwrap().read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, data);
    }
}
