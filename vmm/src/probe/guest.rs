//! Runs the probe guest on one vCPU and turns its exits and mailbox into a [`GuestProbe`].
#![allow(unsafe_code)]

use std::time::Instant;

use hako_vmm_api::{GuestProbe, SyscallOutcome};
use kvm_bindings::{Msrs, kvm_msr_entry, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use super::code;
use super::layout::*;
use super::tables;

/// Why the probe guest could not be set up or run to its end.
#[derive(Debug, thiserror::Error)]
pub enum GuestProbeError {
    #[error("KVM call {call} failed")]
    Kvm {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("mapping {size} bytes of guest memory failed")]
    Mmap { size: usize, source: std::io::Error },
    #[error("setting up the probe guest: {0}")]
    Setup(String),
    #[error("the probe guest stopped early: {0}")]
    Stopped(String),
}

fn kvm_err(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> GuestProbeError {
    move |source| GuestProbeError::Kvm { call, source }
}

/// Anonymous guest RAM, unmapped on drop.
struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

impl GuestRam {
    fn new(len: usize) -> Result<Self, GuestProbeError> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(GuestProbeError::Mmap {
                size: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self; the guest may write it
        // concurrently only while the vCPU runs, and we read it only between KVM_RUNs.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self gives exclusive access from the host side.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        let start = addr as usize;
        self.as_mut_slice()[start..start + bytes.len()].copy_from_slice(bytes);
    }

    fn read_u64(&self, addr: u32) -> u64 {
        let start = addr as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.as_slice()[start..start + 8]);
        u64::from_le_bytes(b)
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in new(); the VM that used it is dropped first
        // (fields of run() are declared so), and nothing else refers to it.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Builds the probe guest, runs it to its report and measures it.
pub(super) fn run(kvm: &Kvm) -> Result<GuestProbe, GuestProbeError> {
    let mut ram = GuestRam::new(MEM_SIZE)?;
    let user_return = load_program(&mut ram);
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    map_memory(&vm, &ram)?;
    let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    setup_vcpu(&vcpu)?;

    let marks = run_to_done(&mut vcpu)?;
    let outcome = read_outcome(&ram, user_return);
    let [t0, t1, t2, t3, done] = marks;
    let short = t1.duration_since(t0).as_nanos() as f64;
    let long = t2.duration_since(t1).as_nanos() as f64;
    let extra_iters = f64::from(KERNEL_LONG_LOOP - KERNEL_SHORT_LOOP);
    let user = done.duration_since(t3).as_nanos() as f64;
    drop(vcpu);
    drop(vm);
    Ok(GuestProbe {
        kernel_loop_ns_per_iter: ((long - short) / extra_iters).max(0.0),
        user_loop_ns_per_iter: user / f64::from(USER_LOOP),
        syscall: outcome,
    })
}

/// Writes tables and code into guest RAM; returns the address SYSCALL should put in RCX.
fn load_program(ram: &mut GuestRam) -> u64 {
    ram.write(GDT, &tables::gdt());
    ram.write(TSS, &tables::tss());
    for (addr, bytes) in tables::page_tables() {
        ram.write(addr, &bytes);
    }
    let (handlers, stubs) = code::exception_handlers();
    ram.write(EXCEPTION_CODE, handlers.bytes());
    ram.write(IDT, &tables::idt(&stubs));
    ram.write(KERNEL_CODE, code::kernel_entry().bytes());
    ram.write(SYSCALL_ENTRY, code::syscall_entry().bytes());
    let (user, user_return) = code::user_code();
    ram.write(USER_CODE, user.bytes());
    user_return
}

fn map_memory(vm: &VmFd, ram: &GuestRam) -> Result<(), GuestProbeError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.len as u64,
        userspace_addr: ram.ptr as u64,
    };
    // SAFETY: the region is a live mapping of exactly memory_size bytes that outlives the VM
    // (run() drops the VM before the RAM).
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))
}

fn segment(selector: u16, code: bool, long: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn setup_vcpu(vcpu: &VcpuFd) -> Result<(), GuestProbeError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    sregs.cs = segment(KERNEL_CS, true, true, 0);
    let data = segment(KERNEL_DS, false, false, 0);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = GDT;
    sregs.gdt.limit = (GDT_ENTRIES.len() * 8 - 1) as u16;
    sregs.idt.base = IDT;
    sregs.idt.limit = (IDT_VECTORS * 16 - 1) as u16;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PML4;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA | EFER_SCE;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    regs.rip = KERNEL_CODE;
    regs.rsp = KERNEL_STACK_TOP;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;

    let entries = [
        (
            MSR_STAR,
            (u64::from(KERNEL_CS) << 32) | (u64::from(0x18u16 | 3) << 48),
        ),
        (MSR_LSTAR, SYSCALL_ENTRY),
        (MSR_SYSCALL_MASK, 0x4700),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&entries)
        .map_err(|_| GuestProbeError::Setup("too many MSRs for one KVM_SET_MSRS".into()))?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(GuestProbeError::Setup(format!(
            "KVM set only {set} of {} SYSCALL MSRs",
            entries.len()
        )));
    }
    Ok(())
}

/// Runs the vCPU until the guest reports on [`PORT_DONE`]; returns the host time of each
/// mark (four [`PORT_MARK`]s, then the report).
fn run_to_done(vcpu: &mut VcpuFd) -> Result<[Instant; 5], GuestProbeError> {
    let mut marks = Vec::with_capacity(5);
    loop {
        let exit = vcpu.run().map_err(kvm_err("KVM_RUN"))?;
        let now = Instant::now();
        match exit {
            VcpuExit::IoOut(port, _) if port == u16::from(PORT_MARK) && marks.len() < 4 => {
                marks.push(now)
            }
            VcpuExit::IoOut(port, _) if port == u16::from(PORT_DONE) => {
                marks.push(now);
                break;
            }
            VcpuExit::Shutdown => {
                return Err(GuestProbeError::Stopped(format!(
                    "the guest shut down (triple fault) after {} of 4 marks",
                    marks.len()
                )));
            }
            VcpuExit::InternalError => {
                return Err(GuestProbeError::Stopped(format!(
                    "KVM internal error (emulation failure?) after {} of 4 marks",
                    marks.len()
                )));
            }
            VcpuExit::FailEntry(reason, _) => {
                return Err(GuestProbeError::Stopped(format!(
                    "VM entry failed, hardware reason {reason:#x}"
                )));
            }
            other => {
                return Err(GuestProbeError::Stopped(format!(
                    "unexpected exit {other:?} after {} marks",
                    marks.len()
                )));
            }
        }
    }
    if marks.len() != 5 {
        return Err(GuestProbeError::Stopped(format!(
            "the guest reported after only {} of 4 marks",
            marks.len() - 1
        )));
    }
    let mut out = [marks[0]; 5];
    out.copy_from_slice(&marks);
    Ok(out)
}

fn read_outcome(ram: &GuestRam, user_return: u64) -> SyscallOutcome {
    let kind = ram.read_u64(MAILBOX_KIND) as u32;
    let rcx = ram.read_u64(MAILBOX_RCX);
    let cs = ram.read_u64(MAILBOX_CS);
    let rax = ram.read_u64(MAILBOX_RAX);
    if rax != u64::from(SYSCALL_MAGIC) {
        return SyscallOutcome::Unexpected {
            detail: format!(
                "the handler (kind {kind}) ran with RAX {rax:#x}, not the probe's syscall marker"
            ),
        };
    }
    match kind {
        KIND_SYSCALL_ENTRY if cs & 3 == 0 => SyscallOutcome::EnteredKernel,
        KIND_SYSCALL_ENTRY => SyscallOutcome::Unexpected {
            detail: format!("the SYSCALL entry ran with CS {cs:#x}"),
        },
        KIND_EXCEPTION => {
            let vector = ram.read_u64(MAILBOX_VECTOR);
            let error_code = ram.read_u64(MAILBOX_ERROR_CODE);
            let rip = ram.read_u64(MAILBOX_RIP);
            let cr2 = ram.read_u64(MAILBOX_CR2);
            if vector == 14 && rip == SYSCALL_ENTRY && cr2 == SYSCALL_ENTRY && cs & 3 == 3 {
                SyscallOutcome::FaultedAtEntryInUserMode {
                    error_code,
                    rcx_is_return_address: rcx == user_return,
                }
            } else {
                SyscallOutcome::Unexpected {
                    detail: format!(
                        "exception vector {vector} (error code {error_code:#x}) at RIP {rip:#x}, CS {cs:#x}, CR2 {cr2:#x}"
                    ),
                }
            }
        }
        other => SyscallOutcome::Unexpected {
            detail: format!("the guest reported an unknown result kind {other}"),
        },
    }
}
