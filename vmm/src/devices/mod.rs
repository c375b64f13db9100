//! Devices the guest reaches through port I/O or MMIO exits: the bus that routes an exit to a
//! device, the legacy devices (serial console, i8042 reset), and the interrupt trigger they
//! share.

pub mod bus;
pub mod legacy;
pub mod log_limit;
pub mod manager;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

pub use bus::{Bus, BusDevice, BusError};

/// Raises a guest interrupt by writing an EventFd that KVM has as an irqfd for one GSI.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl vm_superio::Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
