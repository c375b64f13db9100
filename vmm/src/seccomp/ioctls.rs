//! The ioctl requests each thread kind may make once confined, by number (the filter compares
//! the request's low 32 bits, which hold all of an ioctl number). Read from the code that
//! runs on those threads (kvm-ioctls' wrappers, the tap's offloads) and checked against
//! `strace -f -e ioctl` of real sandboxes: boot, snapshot, resume, a tap, power-off.

use std::mem::size_of;

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use vmm_sys_util::ioctl::{_IOC_NONE, _IOC_READ, _IOC_WRITE, ioctl_expr};

/// An ioctl request number and its name (for tests and messages).
pub(super) type Request = (u32, &'static str);

const KVMIO: u32 = 0xAE;

/// `_IO(KVMIO, nr)`.
const fn io(nr: u32) -> u32 {
    ioctl_expr(_IOC_NONE, KVMIO, nr, 0) as u32
}

/// `_IOR(KVMIO, nr, size)`.
const fn ior(nr: u32, size: usize) -> u32 {
    ioctl_expr(_IOC_READ, KVMIO, nr, size as u32) as u32
}

/// `_IOWR(KVMIO, nr, size)`.
const fn iowr(nr: u32, size: usize) -> u32 {
    ioctl_expr(_IOC_READ | _IOC_WRITE, KVMIO, nr, size as u32) as u32
}

/// A vCPU thread: KVM_RUN; the halt check (MP state, registers); parking its state for a
/// snapshot (`arch::x86_64::vcpu_state`, reads only: vCPUs are set up and restored on the
/// main thread before they start); and the virtio-net offloads its MMIO write sets when the
/// guest activates the device.
pub(super) const VCPU: &[Request] = &[
    (io(0x80), "KVM_RUN"),
    (ior(0x81, size_of::<kvm_regs>()), "KVM_GET_REGS"),
    (ior(0x83, size_of::<kvm_sregs>()), "KVM_GET_SREGS"),
    (iowr(0x88, size_of::<kvm_msrs>()), "KVM_GET_MSRS"),
    (ior(0x8c, size_of::<kvm_fpu>()), "KVM_GET_FPU"),
    (ior(0x8e, size_of::<kvm_lapic_state>()), "KVM_GET_LAPIC"),
    (iowr(0x91, size_of::<kvm_cpuid2>()), "KVM_GET_CPUID2"),
    (ior(0x98, size_of::<kvm_mp_state>()), "KVM_GET_MP_STATE"),
    (
        ior(0x9f, size_of::<kvm_vcpu_events>()),
        "KVM_GET_VCPU_EVENTS",
    ),
    (ior(0xa1, size_of::<kvm_debugregs>()), "KVM_GET_DEBUGREGS"),
    (ior(0xa4, size_of::<kvm_xsave>()), "KVM_GET_XSAVE"),
    (ior(0xa6, size_of::<kvm_xcrs>()), "KVM_GET_XCRS"),
    (TUNSETOFFLOAD, "TUNSETOFFLOAD"),
];

/// The main thread once the VM runs: the VM-wide state a snapshot saves
/// (`arch::x86_64::vm_state`).
pub(super) const VMM: &[Request] = &[
    (iowr(0x62, size_of::<kvm_irqchip>()), "KVM_GET_IRQCHIP"),
    (ior(0x9f, size_of::<kvm_pit_state2>()), "KVM_GET_PIT2"),
    (ior(0x7c, size_of::<kvm_clock_data>()), "KVM_GET_CLOCK"),
];

/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`).
const TUNSETOFFLOAD: u32 = 0x4004_54d0;

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers <linux/kvm.h> gives (x86_64), as strace prints them.
    #[test]
    fn numbers_match_the_kernel_headers() {
        let want = [
            ("KVM_RUN", 0xae80),
            ("KVM_GET_REGS", 0x8090_ae81),
            ("KVM_GET_SREGS", 0x8138_ae83),
            ("KVM_GET_MSRS", 0xc008_ae88),
            ("KVM_GET_FPU", 0x81a0_ae8c),
            ("KVM_GET_LAPIC", 0x8400_ae8e),
            ("KVM_GET_CPUID2", 0xc008_ae91),
            ("KVM_GET_MP_STATE", 0x8004_ae98),
            ("KVM_GET_VCPU_EVENTS", 0x8040_ae9f),
            ("KVM_GET_DEBUGREGS", 0x8080_aea1),
            ("KVM_GET_XSAVE", 0x9000_aea4),
            ("KVM_GET_XCRS", 0x8188_aea6),
            ("KVM_GET_IRQCHIP", 0xc208_ae62),
            ("KVM_GET_PIT2", 0x8070_ae9f),
            ("KVM_GET_CLOCK", 0x8030_ae7c),
        ];
        for (name, number) in want {
            let got = VCPU
                .iter()
                .chain(VMM)
                .find(|(_, n)| *n == name)
                .map(|(r, _)| *r);
            assert_eq!(got, Some(number), "{name}");
        }
    }
}
