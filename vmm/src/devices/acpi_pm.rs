//! The ACPI fixed-hardware power-management block the FADT points the
//! guest at (see boot::acpi): PM1a status and enable (offsets 0 and 2),
//! PM1a control (offset 4) and the reset register (offset 6).
//!
//! Only what poweroff and reset need is live: PM1 control always reads
//! SCI_EN (the platform is in ACPI mode) and a write with SLP_EN and the
//! `\_S5_` sleep type is a poweroff; writing the reset value to the reset
//! register is a reset. Status bits are never raised (no fixed events), the
//! enable register keeps what the guest writes, because ACPICA reads it
//! back to check that an event was enabled.

use std::sync::Arc;

use super::bus::BusDevice;
use crate::boot::acpi::{
    PM1_CNT_OFFSET, PM_BLOCK_LEN, RESET_OFFSET, RESET_VALUE, S5_SLEEP_TYPE, SCI_EN, SLP_EN,
    SLP_TYP_SHIFT,
};
use crate::exit::{ExitReason, ExitSignal};

/// Ports covered.
pub const ACPI_PM_PORTS: u64 = PM_BLOCK_LEN as u64;

const PM1_EN_OFFSET: u64 = 2;

/// The ACPI PM block.
#[derive(Debug)]
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
    pm1_enable: u16,
    pm1_control: u16,
}

impl AcpiPm {
    /// A PM block that reports poweroff and reset through `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        AcpiPm {
            exit,
            pm1_enable: 0,
            pm1_control: SCI_EN,
        }
    }

    fn reg16(&mut self, offset: u64) -> Option<&mut u16> {
        match offset & !1 {
            PM1_EN_OFFSET => Some(&mut self.pm1_enable),
            o if o == u64::from(PM1_CNT_OFFSET) => Some(&mut self.pm1_control),
            _ => None,
        }
    }

    fn control_written(&mut self) {
        let v = self.pm1_control;
        if v & SLP_EN != 0 {
            // SLP_EN is write-only: it never reads back as set.
            self.pm1_control &= !SLP_EN;
            let sleep_type = (v >> SLP_TYP_SHIFT) & 0x7;
            if sleep_type == u16::from(S5_SLEEP_TYPE) {
                self.exit.request(ExitReason::PowerOff);
            } else {
                log::warn!("guest asked for unsupported ACPI sleep type {sleep_type}");
            }
        }
        self.pm1_control |= SCI_EN;
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            *b = match self.reg16(off) {
                Some(r) => r.to_le_bytes()[(off & 1) as usize],
                None => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut control = false;
        for (i, &b) in data.iter().enumerate() {
            let off = offset + i as u64;
            if off == u64::from(RESET_OFFSET) {
                if b == RESET_VALUE {
                    self.exit.request(ExitReason::Reset);
                }
                continue;
            }
            if let Some(r) = self.reg16(off) {
                let mut bytes = r.to_le_bytes();
                bytes[(off & 1) as usize] = b;
                *r = u16::from_le_bytes(bytes);
                control |= off & !1 == u64::from(PM1_CNT_OFFSET);
            }
            // PM1 status (offsets 0, 1) is write-1-to-clear and always 0.
        }
        if control {
            self.control_written();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write16(pm: &mut AcpiPm, off: u64, v: u16) {
        pm.write(off, &v.to_le_bytes());
    }

    fn read16(pm: &mut AcpiPm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn acpi_mode_and_enable_register() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        assert_eq!(read16(&mut pm, 4) & SCI_EN, SCI_EN);
        write16(&mut pm, 2, 0x0120);
        assert_eq!(read16(&mut pm, 2), 0x0120, "enable bits read back");
        write16(&mut pm, 0, 0xffff);
        assert_eq!(read16(&mut pm, 0), 0, "no status bits");
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn s5_is_poweroff() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        // What ACPICA does: SLP_TYP first, then SLP_TYP | SLP_EN.
        write16(&mut pm, 4, 5 << 10);
        assert_eq!(exit.reason(), None);
        write16(&mut pm, 4, (3 << 10) | SLP_EN); // S3: not supported
        assert_eq!(exit.reason(), None);
        assert_eq!(read16(&mut pm, 4) & SLP_EN, 0);
        write16(&mut pm, 4, (5 << 10) | SLP_EN);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn byte_wise_control_write() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        let v = ((5u16 << 10) | SLP_EN).to_le_bytes();
        pm.write(4, &[v[0]]);
        pm.write(5, &[v[1]]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn reset_register() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(6, &[0]);
        pm.write(7, &[1]);
        pm.write(6, &[]);
        pm.write(100, &[1, 2, 3]);
        let mut b = [0u8; 3];
        pm.read(100, &mut b);
        assert_eq!(exit.reason(), None);
        pm.write(6, &[1]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
