//! The i8042 keyboard controller, reduced to what a microVM needs: the
//! guest's `reboot` (with `reboot=k`, and `panic=-1` after a panic) writes
//! 0xFE (pulse reset line) to port 0x64, which ends the VM with "guest
//! requested a reset". vm-superio's `I8042Device` implements exactly that;
//! this wraps it as a bus device at 0x60..0x65. Its status register reads
//! 0 ("input buffer empty"), so the kernel's wait-before-reset loop ends at
//! once instead of polling through thousands of port exits.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// First port of the controller (data); the command/status port is +4.
pub const I8042_BASE: u64 = 0x60;
/// Ports covered: 0x60..=0x64.
pub const I8042_PORTS: u64 = 5;

/// Turns the controller's reset pulse into the end of the VM.
#[derive(Debug)]
pub struct ResetTrigger(pub Arc<ExitSignal>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(ExitReason::Reset);
        Ok(())
    }
}

/// The i8042 as a bus device.
#[derive(Debug)]
pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    /// A controller whose reset ends the VM through `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        I8042(I8042Device::new(ResetTrigger(exit)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.0.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&v), Ok(off)) = (data.first(), u8::try_from(offset)) {
            let _ = self.0.write(off, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm() {
        let exit = ExitSignal::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        dev.write(4, &[0xaa]);
        dev.write(0, &[0xfe]);
        assert_eq!(exit.reason(), None, "only 0xfe on the command port resets");
        let mut status = [0xffu8];
        dev.read(4, &mut status);
        assert_eq!(status[0] & 0x02, 0, "input buffer reads empty");
        dev.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
        assert_eq!(exit.event_fd().read().unwrap(), 1);
    }
}
