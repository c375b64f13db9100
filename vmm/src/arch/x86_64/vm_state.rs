//! The VM-wide KVM state of an x86 guest, saved for a snapshot: the in-kernel PICs and
//! IOAPIC, the PIT, and the kvm-clock.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Errors reading or writing VM state.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct VmStateError {
    what: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmStateError {
    move |source| VmStateError { what, source }
}

/// Interrupt controllers, timer and clock of a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn irqchip(fd: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, VmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip).map_err(kvm(what))?;
    Ok(chip)
}

impl VmState {
    /// Saves the state of a VM whose vCPUs are paused.
    pub fn save(fd: &VmFd) -> Result<Self, VmStateError> {
        let pic_master = irqchip(fd, KVM_IRQCHIP_PIC_MASTER, "reading the master PIC")?;
        let pic_slave = irqchip(fd, KVM_IRQCHIP_PIC_SLAVE, "reading the slave PIC")?;
        let ioapic = irqchip(fd, KVM_IRQCHIP_IOAPIC, "reading the IOAPIC")?;
        let pit = fd.get_pit2().map_err(kvm("reading the PIT"))?;
        let clock = fd.get_clock().map_err(kvm("reading the kvm-clock"))?;
        Ok(Self {
            pic_master,
            pic_slave,
            ioapic,
            pit,
            clock,
        })
    }

    /// Puts the state into a new VM that has its irqchip and PIT created.
    pub fn restore(&self, fd: &VmFd) -> Result<(), VmStateError> {
        fd.set_pit2(&self.pit).map_err(kvm("setting the PIT"))?;
        // KVM_SET_CLOCK takes only the clock value; the flags it reported describe the host.
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        fd.set_clock(&clock).map_err(kvm("setting the kvm-clock"))?;
        fd.set_irqchip(&self.pic_master)
            .map_err(kvm("setting the master PIC"))?;
        fd.set_irqchip(&self.pic_slave)
            .map_err(kvm("setting the slave PIC"))?;
        fd.set_irqchip(&self.ioapic)
            .map_err(kvm("setting the IOAPIC"))?;
        Ok(())
    }
}
