//! Address-space dispatch for emulated devices.
//!
//! A vCPU exit for port I/O or MMIO names an address; the [`Bus`] finds the
//! device whose range holds it and hands it the offset into that range. Port
//! I/O (serial, i8042, ACPI power) and MMIO (virtio-mmio) each get their own
//! `Bus`. Devices are behind `Arc<Mutex<_>>` because every vCPU thread may
//! touch them; the lock is held only for the one access.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a [`Bus`].
///
/// `offset` is relative to the start of the range the device was inserted
/// with. Accesses come straight from the guest: implementations must accept
/// any offset and any `data` length without panicking (unknown registers read
/// as zero and ignore writes).
pub trait BusDevice: Send {
    /// Guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else needs it (the event loop).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("bus range at {base:#x} with length {len:#x} is invalid")]
    InvalidRange { base: u64, len: u64 },
    /// The new range overlaps one already on the bus.
    #[error("bus range at {base:#x} with length {len:#x} overlaps a device already there")]
    Overlap { base: u64, len: u64 },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Maps non-overlapping address ranges to devices.
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by range start; ranges never overlap, so the candidate for an
    // address is the last range starting at or below it.
    ranges: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(b, e)| (b, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let overlaps_prev = self
            .ranges
            .range(..=base)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        let overlaps_next = self.ranges.range(base..end).next().is_some();
        if overlaps_prev || overlaps_next {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64, access_len: usize) -> Option<(u64, &SharedDevice)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        let end = offset.checked_add(access_len as u64)?;
        (end <= entry.len).then_some((offset, &entry.device))
    }

    /// Dispatches a guest read. Returns false (and leaves `data` untouched)
    /// when no device claims the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest write. Returns false when no device claims the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from poisoning: a panic in one access must not
/// take every later access (and the VMM's other duties) down with it.
pub fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_with_offsets() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(bus.write(0x3f9, &[7]));
        assert_eq!(dev.lock().unwrap().last_write, Some((1, vec![7])));
    }

    #[test]
    fn misses_and_straddles_are_refused() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x1000, 0x200)
            .unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0xfff, &mut b[..1]));
        assert!(!bus.read(0x1200, &mut b[..1]));
        // Starts inside, ends past the range.
        assert!(!bus.read(0x11fe, &mut b));
        assert!(bus.read(0x11fc, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_rejected() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default())) as SharedDevice;
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(d(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0xf8, 0x10),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0x50, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(d(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(d(), 0x110, 0x10).unwrap();
        bus.insert(d(), 0xf0, 0x10).unwrap();
    }
}
