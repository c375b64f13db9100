//! A vCPU's whole KVM state, saved for a snapshot and put back on restore: CPUID, MP state,
//! general and special registers, FPU (and XSAVE/XCRs where KVM has them), debug registers,
//! the local APIC, every MSR KVM lists, and pending events.
//!
//! The order on restore follows what KVM needs: CPUID before anything else (it decides which
//! MSRs and features exist), special registers before MSRs, the LAPIC before the MSRs (the
//! TSC-deadline MSR is only accepted once the LAPIC is in deadline mode), the TSC before the
//! TSC deadline (ascending MSR order), and events last.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

/// How many MSRs one KVM_GET/SET_MSRS call carries.
const MSR_CHUNK: usize = 64;

/// Errors reading or writing vCPU state.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("{what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("building the {what} list for KVM")]
    Fam {
        what: &'static str,
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    #[error("KVM restored {done} of the {total} saved MSRs (MSR {first_refused:#x} refused)")]
    MsrsRefused {
        done: usize,
        total: usize,
        first_refused: u32,
    },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Kvm { what, source }
}

/// `kvm_fpu` in serde form (kvm-bindings serialises most KVM structs, not this one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FpuState {
    fpr: Vec<[u8; 16]>,
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: Vec<[u8; 16]>,
    mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        Self {
            fpr: f.fpr.to_vec(),
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.to_vec(),
            mxcsr: f.mxcsr,
        }
    }
}

impl FpuState {
    fn to_kvm(&self) -> kvm_fpu {
        let mut f = kvm_fpu {
            fcw: self.fcw,
            fsw: self.fsw,
            ftwx: self.ftwx,
            last_opcode: self.last_opcode,
            last_ip: self.last_ip,
            last_dp: self.last_dp,
            mxcsr: self.mxcsr,
            ..Default::default()
        };
        for (dst, src) in f.fpr.iter_mut().zip(&self.fpr) {
            *dst = *src;
        }
        for (dst, src) in f.xmm.iter_mut().zip(&self.xmm) {
            *dst = *src;
        }
        f
    }
}

/// Everything KVM holds for one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: FpuState,
    pub xsave: Option<kvm_xsave>,
    pub xcrs: Option<kvm_xcrs>,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

/// The MSR indices KVM saves and restores for its guests (KVM_GET_MSR_INDEX_LIST).
pub fn msr_indices(handle: &Kvm) -> Result<Vec<u32>, VcpuStateError> {
    let list = handle
        .get_msr_index_list()
        .map_err(kvm("reading KVM's MSR index list"))?;
    Ok(list.as_slice().to_vec())
}

/// What the host's KVM offers beyond the basics.
#[derive(Debug, Clone, Copy)]
pub struct StateCaps {
    pub xsave: bool,
    pub xcrs: bool,
}

impl StateCaps {
    pub fn of(handle: &Kvm) -> Self {
        Self {
            xsave: handle.check_extension(Cap::Xsave),
            xcrs: handle.check_extension(Cap::Xcrs),
        }
    }
}

/// Reads the MSRs in `indices` that this vCPU has. KVM stops a KVM_GET_MSRS at the first
/// MSR it cannot read, so a short chunk is retried one MSR at a time and unreadable ones
/// (features hidden from this guest) are left out.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let entry = |index| kvm_msr_entry {
        index,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(MSR_CHUNK) {
        let entries: Vec<_> = chunk.iter().copied().map(entry).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Fam {
            what: "MSR",
            source,
        })?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm("reading MSRs"))?;
        if n == chunk.len() {
            out.extend_from_slice(msrs.as_slice());
            continue;
        }
        for &index in chunk {
            let mut one =
                Msrs::from_entries(&[entry(index)]).map_err(|source| VcpuStateError::Fam {
                    what: "MSR",
                    source,
                })?;
            if fd.get_msrs(&mut one).map_err(kvm("reading an MSR"))? == 1 {
                out.extend_from_slice(one.as_slice());
            }
        }
    }
    out.sort_by_key(|e| e.index);
    Ok(out)
}

impl VcpuState {
    /// Saves the state of a vCPU that is outside KVM_RUN (paused).
    pub fn save(fd: &VcpuFd, msr_indices: &[u32], caps: StateCaps) -> Result<Self, VcpuStateError> {
        // MP state first: reading it settles pending INIT/SIPI into the saved state.
        let mp_state = fd.get_mp_state().map_err(kvm("reading the MP state"))?;
        let regs = fd.get_regs().map_err(kvm("reading registers"))?;
        let sregs = fd.get_sregs().map_err(kvm("reading special registers"))?;
        let fpu = FpuState::from(&fd.get_fpu().map_err(kvm("reading the FPU"))?);
        let xsave = if caps.xsave {
            Some(fd.get_xsave().map_err(kvm("reading XSAVE state"))?)
        } else {
            None
        };
        let xcrs = if caps.xcrs {
            Some(fd.get_xcrs().map_err(kvm("reading XCRs"))?)
        } else {
            None
        };
        let debug_regs = fd
            .get_debug_regs()
            .map_err(kvm("reading debug registers"))?;
        let lapic = fd.get_lapic().map_err(kvm("reading the local APIC"))?;
        let msrs = read_msrs(fd, msr_indices)?;
        let events = fd.get_vcpu_events().map_err(kvm("reading vCPU events"))?;
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("reading CPUID"))?
            .as_slice()
            .to_vec();
        Ok(Self {
            cpuid,
            mp_state,
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            debug_regs,
            lapic,
            msrs,
            events,
        })
    }

    /// Puts the state back into a new vCPU (before its first KVM_RUN).
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|source| VcpuStateError::Fam {
            what: "CPUID",
            source,
        })?;
        fd.set_cpuid2(&cpuid).map_err(kvm("setting CPUID"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm("setting the MP state"))?;
        fd.set_regs(&self.regs).map_err(kvm("setting registers"))?;
        fd.set_sregs(&self.sregs)
            .map_err(kvm("setting special registers"))?;
        fd.set_fpu(&self.fpu.to_kvm())
            .map_err(kvm("setting the FPU"))?;
        if let Some(xsave) = &self.xsave {
            // SAFETY: the buffer is a whole kvm_xsave as KVM_GET_XSAVE returned it; KVM reads
            // no more than its legacy 4 KiB area from it.
            #[allow(unsafe_code)]
            unsafe { fd.set_xsave(xsave) }.map_err(kvm("setting XSAVE state"))?;
        }
        if let Some(xcrs) = &self.xcrs {
            fd.set_xcrs(xcrs).map_err(kvm("setting XCRs"))?;
        }
        fd.set_debug_regs(&self.debug_regs)
            .map_err(kvm("setting debug registers"))?;
        fd.set_lapic(&self.lapic)
            .map_err(kvm("setting the local APIC"))?;
        for chunk in self.msrs.chunks(MSR_CHUNK) {
            let msrs = Msrs::from_entries(chunk).map_err(|source| VcpuStateError::Fam {
                what: "MSR",
                source,
            })?;
            let done = fd.set_msrs(&msrs).map_err(kvm("setting MSRs"))?;
            if done != chunk.len() {
                return Err(VcpuStateError::MsrsRefused {
                    done,
                    total: self.msrs.len(),
                    first_refused: chunk.get(done).map_or(0, |e| e.index),
                });
            }
        }
        fd.set_vcpu_events(&self.events)
            .map_err(kvm("setting vCPU events"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpu_state_round_trips() {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            last_ip: 42,
            ..Default::default()
        };
        f.xmm[15] = [7; 16];
        f.fpr[0] = [1; 16];
        let s = FpuState::from(&f);
        let json = serde_json::to_string(&s).unwrap();
        let back: FpuState = serde_json::from_str(&json).unwrap();
        let k = back.to_kvm();
        assert_eq!(k.fcw, 0x37f);
        assert_eq!(k.mxcsr, 0x1f80);
        assert_eq!(k.last_ip, 42);
        assert_eq!(k.xmm[15], [7; 16]);
        assert_eq!(k.fpr[0], [1; 16]);
    }
}
