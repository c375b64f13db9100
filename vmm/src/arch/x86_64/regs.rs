//! Initial vCPU state for each boot protocol: general registers, segments and control
//! registers, FPU, boot MSRs, and the local APIC's LINT0/LINT1 wiring.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::gdt::{BOOT_GDT, PVH_GDT, kvm_segment_from_gdt};
use super::layout::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER};
use super::loader::EntryPoint;
use super::page_tables::setup_identity_map;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// Local APIC LVT registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("{what} of vCPU")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM took {set} of the {wanted} boot MSRs")]
    Msrs { set: usize, wanted: usize },
    #[error("writing the boot GDT/IDT at {addr:#x}")]
    Write {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error(transparent)]
    PageTables(#[from] super::page_tables::PageTableError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

/// General registers at entry. `boot_info` is the start info (PVH) or zero page (64-bit).
pub fn boot_regs(entry: EntryPoint, boot_info: u64) -> kvm_regs {
    match entry {
        EntryPoint::Pvh(rip) => kvm_regs {
            rip: rip.0,
            rbx: boot_info,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
        EntryPoint::Linux64(rip) => kvm_regs {
            rip: rip.0,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: boot_info,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
    }
}

/// Writes the GDT (and an empty IDT) for `entry` and returns the segment/control registers
/// on top of `sregs` (the vCPU's reset state). Long mode also gets identity page tables.
pub fn boot_sregs(
    mem: &impl GuestMemory,
    entry: EntryPoint,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    let gdt: &[u64] = match entry {
        EntryPoint::Pvh(_) => &PVH_GDT,
        EntryPoint::Linux64(_) => &BOOT_GDT,
    };
    for (i, e) in gdt.iter().enumerate() {
        let addr = BOOT_GDT_START + (i * 8) as u64;
        mem.write_obj(*e, GuestAddress(addr))
            .map_err(|source| RegsError::Write { addr, source })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|source| RegsError::Write {
            addr: BOOT_IDT_START,
            source,
        })?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(gdt[3], 3);
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
    if let EntryPoint::Linux64(_) = entry {
        sregs.cr3 = setup_identity_map(mem)?;
        sregs.cr4 |= CR4_PAE;
        sregs.cr0 |= CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    Ok(sregs)
}

/// x87 control word and MXCSR as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// The MSRs every boot vCPU starts with.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        msr(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
}

fn set_lvt_mode(regs: &mut [u8], offset: usize, mode: u32) {
    let mut word = [0u8; 4];
    word.copy_from_slice(&regs[offset..offset + 4]);
    let value = (u32::from_le_bytes(word) & !0x700) | (mode << 8);
    regs[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Sets up one vCPU for `entry`: registers, segments, FPU, MSRs, LINT0 = ExtINT, LINT1 = NMI.
/// Only the boot vCPU (index 0) gets entry registers; the others wait for the SIPI.
pub fn setup_vcpu(
    vcpu: &VcpuFd,
    mem: &impl GuestMemory,
    index: u8,
    entry: EntryPoint,
    boot_info: u64,
) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("reading the local APIC"))?;
    let mut bytes: Vec<u8> = lapic.regs.iter().map(|b| *b as u8).collect();
    set_lvt_mode(&mut bytes, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut bytes, APIC_LVT1, APIC_MODE_NMI);
    for (reg, b) in lapic.regs.iter_mut().zip(bytes) {
        *reg = b as _;
    }
    vcpu.set_lapic(&lapic)
        .map_err(kvm("setting LINT0/LINT1 of the local APIC"))?;

    let wanted = boot_msrs();
    let msrs = Msrs::from_entries(&wanted).map_err(|_| RegsError::Msrs {
        set: 0,
        wanted: wanted.len(),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("setting the boot MSRs"))?;
    if set != wanted.len() {
        return Err(RegsError::Msrs {
            set,
            wanted: wanted.len(),
        });
    }
    vcpu.set_fpu(&boot_fpu()).map_err(kvm("setting the FPU"))?;
    if index == 0 {
        let sregs = vcpu.get_sregs().map_err(kvm("reading sregs"))?;
        vcpu.set_sregs(&boot_sregs(mem, entry, sregs)?)
            .map_err(kvm("setting sregs"))?;
        vcpu.set_regs(&boot_regs(entry, boot_info))
            .map_err(kvm("setting registers"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::ZERO_PAGE_START;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn pvh_starts_in_flat_32_bit_protected_mode_without_paging() {
        let entry = EntryPoint::Pvh(GuestAddress(0x100_0000));
        let s = boot_sregs(&mem(), entry, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!(s.efer, 0);
        assert_eq!(
            (s.cs.l, s.cs.db, s.cs.base, s.cs.limit),
            (0, 1, 0, 0xffff_ffff)
        );
        assert_eq!(s.ds.selector, 0x10);
        let r = boot_regs(entry, 0x6000);
        assert_eq!((r.rip, r.rbx), (0x100_0000, 0x6000));
    }

    #[test]
    fn linux64_starts_in_long_mode_with_the_zero_page_in_rsi() {
        let m = mem();
        let entry = EntryPoint::Linux64(GuestAddress(0x100_0000));
        let s = boot_sregs(&m, entry, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.cs.l, 1);
        let pml4: u64 = m.read_obj(GuestAddress(s.cr3)).unwrap();
        assert_ne!(pml4 & 1, 0, "PML4[0] present");
        let gdt1: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, BOOT_GDT[1]);
        let r = boot_regs(entry, ZERO_PAGE_START);
        assert_eq!((r.rsi, r.rsp), (ZERO_PAGE_START, BOOT_STACK_POINTER));
    }

    #[test]
    fn lint_modes_are_set_without_touching_other_bits() {
        let mut regs = vec![0u8; 0x400];
        regs[APIC_LVT0..APIC_LVT0 + 4].copy_from_slice(&0x0001_0700u32.to_le_bytes());
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut regs, APIC_LVT1, APIC_MODE_NMI);
        let word = |o: usize| u32::from_le_bytes(regs[o..o + 4].try_into().unwrap());
        assert_eq!(word(APIC_LVT0), 0x0001_0700);
        assert_eq!(word(APIC_LVT1), 0x400);
    }

    #[test]
    fn boot_msrs_enable_mtrrs() {
        let msrs = boot_msrs();
        let mtrr = msrs.iter().find(|m| m.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(mtrr.data & (1 << 11), 1 << 11);
    }
}
