//! The 16550A console on COM1 (0x3f8, IRQ 4), built on vm-superio's
//! `Serial`.
//!
//! Output goes to any writer (stdout or a file). Input is pushed by the
//! event loop with [`SerialDevice::enqueue_input`], only as much as the
//! receive FIFO has room for, and only once the guest driver has enabled
//! the received-data interrupt: before that, the kernel's port probing and
//! set-up read and flush the receive register, and early input would be
//! lost. When the guest enables that interrupt or drains the FIFO, the
//! `rx_ready` EventFd fires so the loop reads more from stdin. The interrupt
//! line is an EventFd the builder registers as an irqfd for GSI 4.

use std::io::Write;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// COM1's I/O base.
pub const COM1_BASE: u64 = 0x3f8;
/// Registers per UART.
pub const UART_PORTS: u64 = 8;
/// Interrupt enable register offset.
const IER_OFFSET: u8 = 1;
/// IER bit: received data available interrupt.
const IER_RDA: u8 = 1;

/// Errors from the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The receive FIFO refused input.
    #[error("cannot queue console input")]
    Enqueue,
}

/// Raises the UART's interrupt line by writing to an EventFd (an irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Tells the event loop that the guest emptied the receive FIFO.
#[derive(Debug)]
pub struct RxReady(pub EventFd);

impl SerialEvents for RxReady {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

/// The console UART as a bus device.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, RxReady, Box<dyn Write + Send>>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART that interrupts through `irq`, signals `rx_ready` when its
    /// input FIFO drains and writes what the guest sends to `out`.
    pub fn new(irq: EventFd, rx_ready: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            serial: Serial::with_events(EventFdTrigger(irq), RxReady(rx_ready), out),
        }
    }

    /// Whether the guest driver listens for input (IER "received data
    /// available" set).
    fn rx_enabled(&self) -> bool {
        self.serial.state().interrupt_enable & IER_RDA != 0
    }

    /// Room for input: free FIFO space once the guest listens, else 0.
    pub fn input_capacity(&self) -> usize {
        if self.rx_enabled() {
            self.serial.fifo_capacity()
        } else {
            0
        }
    }

    /// Queues console input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        let n = bytes.len().min(self.input_capacity());
        if n == 0 {
            return Ok(0);
        }
        self.serial
            .enqueue_raw_bytes(&bytes[..n])
            .map_err(|_| SerialError::Enqueue)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.serial.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&byte), Ok(off)) = (data.first(), u8::try_from(offset)) {
            let listening = off == IER_OFFSET && self.rx_enabled();
            // A full or closed console loses the byte, as a real UART with
            // nothing attached would; the guest must not stall on it.
            let _ = self.serial.write(off, byte);
            if off == IER_OFFSET && !listening && self.rx_enabled() {
                // The driver starts listening: let pending input in.
                let _ = self.serial.events().0.write(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn device() -> (SerialDevice, Sink, EventFd, EventFd) {
        let sink = Sink::default();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let rx = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            rx.try_clone().unwrap(),
            Box::new(sink.clone()),
        );
        (dev, sink, irq, rx)
    }

    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut d, sink, _, _) = device();
        for b in b"hi\n" {
            d.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn transmit_interrupt_when_enabled() {
        let (mut d, _, irq, _) = device();
        d.write(0, b"a");
        assert!(irq.read().is_err(), "no interrupt while IER is clear");
        d.write(IER, &[0x02]); // THR empty interrupt; fires at once
        d.write(0, b"b");
        assert!(irq.read().unwrap() >= 1);
    }

    #[test]
    fn no_input_until_the_driver_listens() {
        let (mut d, _, _, rx) = device();
        assert_eq!(d.input_capacity(), 0);
        assert_eq!(d.enqueue_input(b"early").unwrap(), 0);
        d.write(IER, &[0x01]);
        assert_eq!(rx.read().unwrap(), 1, "enabling RX wakes the input loop");
        assert!(d.input_capacity() > 0);
        d.write(IER, &[0x03]);
        assert!(rx.read().is_err(), "only the transition signals");
    }

    #[test]
    fn input_respects_fifo_capacity_and_interrupts() {
        let (mut d, _, irq, rx) = device();
        d.write(IER, &[0x01]); // received-data interrupt
        let _ = rx.read();
        let cap = d.input_capacity();
        assert!(cap > 0);
        let big = vec![b'x'; cap + 10];
        assert_eq!(d.enqueue_input(&big).unwrap(), cap);
        assert_eq!(d.input_capacity(), 0);
        assert_eq!(d.enqueue_input(b"more").unwrap(), 0);
        assert!(irq.read().unwrap() >= 1);
        let mut lsr = [0u8];
        d.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut b = [0u8];
        for _ in 0..cap {
            d.read(0, &mut b);
            assert_eq!(b[0], b'x');
        }
        assert_eq!(d.input_capacity(), cap);
        assert_eq!(rx.read().unwrap(), 1, "drained FIFO signals the loop");
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (mut d, _, _, _) = device();
        let mut buf = [0xaau8; 4];
        d.read(0x1234, &mut buf);
        d.read(2, &mut []);
        d.write(300, &[1, 2]);
        d.write(0, &[]);
    }
}
