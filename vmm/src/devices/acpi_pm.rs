//! The hardware-reduced ACPI power-management port: the sleep control /
//! status register (offset 0) and the reset register (offset 1) that the
//! FADT points the guest at (see boot::acpi).
//!
//! Offset 0: the guest first writes WAK_STS (bit 7) to clear wake status,
//! then SLP_TYP << 2 | SLP_EN (bit 5). SLP_EN with the `\_S5_` type is a
//! poweroff. Offset 1: writing the FADT's reset value is a reset.

use std::sync::Arc;

use super::bus::BusDevice;
use crate::boot::acpi::{RESET_VALUE, S5_SLEEP_TYPE, SLEEP_ENABLE, SLEEP_TYPE_SHIFT};
use crate::exit::{ExitReason, ExitSignal};

/// Ports covered: sleep control/status and reset.
pub const ACPI_PM_PORTS: u64 = 2;

/// The ACPI PM device.
#[derive(Debug)]
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
}

impl AcpiPm {
    /// A PM port that reports poweroff and reset through `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        AcpiPm { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; reset register: write-only.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 if v & SLEEP_ENABLE != 0 => {
                let sleep_type = (v >> SLEEP_TYPE_SHIFT) & 0x7;
                if sleep_type == S5_SLEEP_TYPE {
                    self.exit.request(ExitReason::PowerOff);
                } else {
                    log::warn!("guest asked for unsupported ACPI sleep type {sleep_type}");
                }
            }
            1 if v == RESET_VALUE => self.exit.request(ExitReason::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_is_poweroff() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(0, &[0x80]); // clear wake status
        assert_eq!(exit.reason(), None);
        pm.write(0, &[(3 << 2) | 0x20]); // S3: not supported, ignored
        assert_eq!(exit.reason(), None);
        pm.write(0, &[(5 << 2) | 0x20]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn reset_register() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(1, &[0]);
        pm.write(7, &[1]);
        pm.write(1, &[]);
        assert_eq!(exit.reason(), None);
        pm.write(1, &[1]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
