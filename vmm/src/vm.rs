//! The KVM VM: guest memory slots, the in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT, and
//! the irqfds that let devices raise interrupts.
#![allow(unsafe_code)]

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// Errors creating or wiring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Kvm { what, source }
}

/// A VM with its memory registered and interrupt controllers created.
pub struct Vm {
    // Field order matters: the VM fd closes before the memory it maps is unmapped.
    fd: VmFd,
    memory: GuestMemoryMmap,
}

impl Vm {
    pub fn new(kvm_handle: &Kvm, memory: GuestMemoryMmap) -> Result<Self, VmError> {
        let fd = kvm_handle.create_vm().map_err(kvm("creating the VM"))?;
        for (slot, region) in memory.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the host range is a live mapping owned by `memory`, which this struct
            // keeps until after `fd` (and every vCPU, which holds its own clone) is closed,
            // so KVM never maps freed host memory into the guest.
            unsafe { fd.set_user_memory_region(r) }
                .map_err(kvm(format!("registering guest memory slot {slot}")))?;
        }
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm("setting the TSS address"))?;
        fd.create_irq_chip()
            .map_err(kvm("creating the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(kvm("creating the in-kernel PIT"))?;
        Ok(Self { fd, memory })
    }

    /// The VM fd, for wiring devices (irqfds, ioeventfds).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(kvm(format!("creating vCPU {index}")))
    }

    /// Makes every write to `evt` raise GSI `gsi` in the guest.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(kvm(format!("registering an irqfd for GSI {gsi}")))
    }
}
