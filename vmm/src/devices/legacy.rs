//! Legacy PC ports a Linux guest touches even on a microVM.
//!
//! Most need no device at all: with the in-kernel irqchip and PIT, KVM
//! handles the PICs (0x20, 0xa0), the PIT (0x40) and port 0x61; ports no
//! device claims (0x80 POST/io-delay, 0x87 DMA, PCI config 0xcf8/0xcfc...)
//! read as all ones and ignore writes in the vCPU loop. The one that needs
//! sane answers is the CMOS/RTC at 0x70/0x71: a guest that reads the time
//! from it must not see garbage or wait forever for "update in progress" to
//! clear, so it reports the host's UTC time, BCD-encoded, in 24-hour mode.

use super::bus::BusDevice;

/// CMOS index port; data is at +1.
pub const CMOS_BASE: u64 = 0x70;
/// Ports covered.
pub const CMOS_PORTS: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The value of CMOS register `reg` at `unix_secs`.
pub fn cmos_register(reg: u8, unix_secs: u64) -> u8 {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    match reg {
        REG_SECONDS => bcd(secs % 60),
        REG_MINUTES => bcd(secs / 60 % 60),
        REG_HOURS => bcd(secs / 3600),
        REG_WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64), // 1970-01-01 was a Thursday
        REG_DAY => bcd(u64::from(d)),
        REG_MONTH => bcd(u64::from(m)),
        REG_YEAR => bcd((y % 100) as u64),
        REG_CENTURY => bcd((y / 100) as u64),
        REG_STATUS_A => 0x26, // 32.768 kHz time base, 1024 Hz rate, no update in progress
        REG_STATUS_B => 0x02, // 24-hour, BCD, no interrupts
        REG_STATUS_D => 0x80, // RAM and time valid
        _ => 0,
    }
}

/// The CMOS/RTC.
#[derive(Debug, Default)]
pub struct Cmos {
    index: u8,
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(b) = data.first_mut() else { return };
        *b = match offset {
            0 => self.index,
            1 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                cmos_register(self.index, now)
            }
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, Some(&v)) = (offset, data.first()) {
            // Bit 7 is the NMI mask, not part of the index.
            self.index = v & 0x7f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_date() {
        // 2024-02-29 13:45:56 UTC, a Thursday.
        let t = 1_709_214_356;
        assert_eq!(cmos_register(REG_SECONDS, t), 0x56);
        assert_eq!(cmos_register(REG_MINUTES, t), 0x45);
        assert_eq!(cmos_register(REG_HOURS, t), 0x13);
        assert_eq!(cmos_register(REG_DAY, t), 0x29);
        assert_eq!(cmos_register(REG_MONTH, t), 0x02);
        assert_eq!(cmos_register(REG_YEAR, t), 0x24);
        assert_eq!(cmos_register(REG_CENTURY, t), 0x20);
        assert_eq!(cmos_register(REG_WEEKDAY, t), 5);
        assert_eq!(
            cmos_register(REG_STATUS_A, t) & 0x80,
            0,
            "no update in progress"
        );
    }

    #[test]
    fn index_then_data() {
        let mut c = Cmos::default();
        c.write(0, &[0x80 | REG_STATUS_B]);
        let mut b = [0u8];
        c.read(1, &mut b);
        assert_eq!(b[0], 0x02);
        c.read(0, &mut b);
        assert_eq!(b[0], REG_STATUS_B);
        c.read(5, &mut b);
        c.write(9, &[1]);
    }
}
