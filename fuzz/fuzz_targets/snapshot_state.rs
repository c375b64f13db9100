//! A snapshot's `state.json`, any bytes: parsed and checked as hako-vmm reads a template's
//! (a file written from a guest's device state), then each virtio transport's state restored
//! onto a transport over guest memory, as a resumed VM's are. Bad input is an error, never a
//! panic, and a transport restored active went through the virtio status sequence with
//! VERSION_1 accepted and features the device offered.
#![no_main]

use hako_fuzz::MEMORY;
use hako_vmm::fuzzing::{MMIO_OFFERED, MmioDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const VERSION_1: u64 = 1 << 32;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = hako_vmm::snapshot::parse_state(data, "state.json".into()) else {
        return;
    };
    assert_eq!(snapshot.vcpus.len(), usize::from(snapshot.machine.vcpus));
    for mut state in snapshot.devices.virtio {
        let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]) else {
            return;
        };
        let Ok(mut device) = MmioDevice::new(mem) else {
            return;
        };
        // Most states name a real device (vsock, fs); restore them onto the stub too.
        state.device_type = MmioDevice::DEVICE_TYPE;
        if device.restore(&state) && state.activated {
            let features = device.active_features().expect("restored active");
            assert!(features & VERSION_1 != 0, "{features:#x}");
            assert!(features & !MMIO_OFFERED == 0, "{features:#x}");
            assert!(state.status & 0xf == 0xf, "status {:#x}", state.status);
        }
    }
});
