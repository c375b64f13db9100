//! An address space (port I/O or MMIO) mapped to devices: each exit's address is routed to
//! the device whose range holds it, with the offset into that range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. Reads and writes get the offset into the device's range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
    #[error("range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
}

type Shared = Arc<Mutex<dyn BusDevice>>;

/// Device ranges, built before the vCPUs start and read-only afterwards.
#[derive(Default)]
pub struct Bus {
    /// base → (length, device)
    ranges: BTreeMap<u64, (u64, Shared)>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, base: u64, len: u64, device: Shared) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if let Some((&other, &(other_len, _))) = self.ranges.range(..end).next_back()
            && other + other_len > base
        {
            return Err(BusError::Overlap { base, len, other });
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Shared)> {
        let (&base, (len, device)) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= *len).then_some((offset, device))
    }

    /// Reads from the device at `addr`; false when no device covers the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                // A device that panicked while locked is broken for good; serve it anyway
                // rather than taking the vCPU down (its state is plain registers).
                let mut d = device.lock().unwrap_or_else(|p| p.into_inner());
                d.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false when no device covers the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                let mut d = device.lock().unwrap_or_else(|p| p.into_inner());
                d.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_with_their_offset() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 5);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(dev.lock().unwrap().writes, vec![(0, vec![b'x'])]);
    }

    #[test]
    fn accesses_outside_or_straddling_a_range_miss() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x10, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0xfff, &mut b[..1]));
        assert!(!bus.read(0x1010, &mut b[..1]));
        assert!(!bus.read(0x100e, &mut b), "straddles the end");
        assert!(bus.read(0x100c, &mut b));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x100, 0x10, d()).unwrap();
        assert!(matches!(
            bus.insert(0x108, 0x10, d()),
            Err(BusError::Overlap { other: 0x100, .. })
        ));
        assert!(matches!(
            bus.insert(0xf8, 0x10, d()),
            Err(BusError::Overlap { .. })
        ));
        assert!(bus.insert(0x110, 0x10, d()).is_ok(), "adjacent is fine");
        assert!(matches!(
            bus.insert(0x200, 0, d()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, d()),
            Err(BusError::BadRange { .. })
        ));
    }
}
