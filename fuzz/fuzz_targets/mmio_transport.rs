//! A guest driver's virtio-mmio register accesses, any sequence: reads and writes of any
//! width at any offset of a device's window (registers and configuration space), queue
//! addresses anywhere. The device may be activated only after the virtio status sequence,
//! with features it offered, VERSION_1 among them.
//!
//! Input: 7-byte records: op (bit 0: write; bits 1-2: width 1, 2, 4 or 8 bytes), the offset
//! (u16, little-endian, within the 0x200-byte window) and the value (u32, little-endian).
#![no_main]

use hako_fuzz::MEMORY;
use hako_vmm::fuzzing::{MMIO_OFFERED, MmioDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const REG_STATUS: u64 = 0x70;
const FEATURES_OK: u32 = 8;
const DRIVER_OK: u32 = 4;
const VERSION_1: u64 = 1 << 32;

fn status(device: &mut MmioDevice) -> u32 {
    let mut b = [0u8; 4];
    device.read(REG_STATUS, &mut b);
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]) else {
        return;
    };
    let mut device = MmioDevice::new(mem).expect("the transport");
    for r in data.chunks_exact(7) {
        let width = 1usize << ((r[0] >> 1) & 3);
        let offset = u64::from(u16::from_le_bytes([r[1], r[2]])) % 0x200;
        let value = u32::from_le_bytes([r[3], r[4], r[5], r[6]]);
        let bytes = (u64::from(value) | u64::from(value) << 32).to_le_bytes();
        if r[0] & 1 == 1 {
            device.write(offset, &bytes[..width]);
        } else {
            let mut b = [0u8; 8];
            device.read(offset, &mut b[..width]);
        }
        let s = status(&mut device);
        assert!(s & DRIVER_OK == 0 || s & FEATURES_OK != 0, "status {s:#x}");
        if let Some(features) = device.active_features() {
            assert_eq!(features & !MMIO_OFFERED, 0, "features {features:#x}");
            assert_ne!(features & VERSION_1, 0, "features {features:#x}");
            assert_eq!(
                s & (FEATURES_OK | DRIVER_OK),
                FEATURES_OK | DRIVER_OK,
                "{s:#x}"
            );
        }
    }
    device.save();
});
