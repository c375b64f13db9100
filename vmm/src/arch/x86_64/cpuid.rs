//! CPUID for guests: KVM's supported set, adjusted per [`CpuProfile`]. The `conservative`
//! profile hides what a host that emulates guest kernel mode cannot emulate (CMPXCHG16B,
//! XSAVE, SMAP/SMEP, POPCNT, AVX*, BMI*, FSGSBASE, ERMS/FSRM, MOVBE) and reports an Intel
//! vendor so the guest skips AMD-only workarounds (FNCLEX), with an Intel family-6 signature
//! so the guest kernel copies and clears memory with `rep movsq`/`rep stosq` (its REP_GOOD
//! choice, made only for Intel family 6) rather than unrolled loops. Every profile offers the
//! TSC-deadline timer, without which guest timers fail where kernel mode is emulated.

use hako_vmm_api::CpuProfile;
use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf 1 ECX.
const L1_ECX_CX16: u32 = 1 << 13;
const L1_ECX_MOVBE: u32 = 1 << 22;
const L1_ECX_POPCNT: u32 = 1 << 23;
const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const L1_ECX_XSAVE: u32 = 1 << 26;
const L1_ECX_OSXSAVE: u32 = 1 << 27;
const L1_ECX_AVX: u32 = 1 << 28;
const L1_ECX_F16C: u32 = 1 << 29;
const L1_ECX_FMA: u32 = 1 << 12;
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 7.0 EBX: FSGSBASE(0) BMI1(3) AVX2(5) SMEP(7) BMI2(8) ERMS(9) AVX512F(16) AVX512DQ(17)
/// SMAP(20) AVX512IFMA(21) AVX512PF(26) AVX512ER(27) AVX512CD(28) AVX512BW(30) AVX512VL(31).
const L7_EBX_HIDDEN: u32 = (1 << 0)
    | (1 << 3)
    | (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 16)
    | (1 << 17)
    | (1 << 20)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
/// Leaf 7.0 ECX: AVX512VBMI(1) AVX512VBMI2(6) VAES(9) VPCLMULQDQ(10) AVX512VNNI(11)
/// AVX512BITALG(12) AVX512VPOPCNTDQ(14).
const L7_ECX_HIDDEN: u32 =
    (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
/// Leaf 7.0 EDX: FSRM(4).
const L7_EDX_HIDDEN: u32 = 1 << 4;
/// Leaf 0x8000_0001 ECX: ABM (LZCNT/POPCNT on AMD)(5).
const LX1_ECX_HIDDEN: u32 = 1 << 5;

/// Leaf 1 EAX of the conservative profile: family 6, model 0x8f, stepping 8 (a Sapphire Rapids
/// signature). Linux sets its synthetic REP_GOOD feature only for Intel family 6, and with it
/// clears and copies pages (clear_page, copy_page, memset, memcpy, clear_user) with one
/// `rep stosq`/`rep movsq` instead of an unrolled loop of moves. Where kernel mode is
/// emulated one instruction at a time, that halves the cost of every page the guest
/// touches: an 8 MiB `dd` from /dev/zero in a guest container went from 17.7 s to about
/// 9.7 s here, a container's create + start from 9.9 to 8.6 s (first) and 8.1 to 6.9 s
/// (second; hako-bench-guest-create). (The host's AMD family 0x1a, reported as "Intel",
/// got no REP_GOOD; ERMS/FSRM stay hidden: `rep movsb` repeats eight times as often.)
/// Model 0x8f is at least 15 (PAT stays on) and matches none of the kernel's Intel errata.
const CONSERVATIVE_SIGNATURE: u32 = 0x0008_06f8;

/// "GenuineIntel" as CPUID leaf 0 returns it (EBX, EDX, ECX).
const INTEL_VENDOR: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];

fn adjust(entry: &mut kvm_cpuid_entry2, profile: CpuProfile) {
    let conservative = profile == CpuProfile::Conservative;
    match (entry.function, entry.index) {
        (0, _) if conservative => {
            entry.ebx = INTEL_VENDOR[0];
            entry.edx = INTEL_VENDOR[1];
            entry.ecx = INTEL_VENDOR[2];
        }
        (1, _) => {
            entry.ecx |= L1_ECX_TSC_DEADLINE | L1_ECX_HYPERVISOR;
            if conservative {
                entry.eax = CONSERVATIVE_SIGNATURE;
                entry.ecx &= !(L1_ECX_CX16
                    | L1_ECX_MOVBE
                    | L1_ECX_POPCNT
                    | L1_ECX_XSAVE
                    | L1_ECX_OSXSAVE
                    | L1_ECX_AVX
                    | L1_ECX_F16C
                    | L1_ECX_FMA);
            }
        }
        (7, 0) if conservative => {
            entry.ebx &= !L7_EBX_HIDDEN;
            entry.ecx &= !L7_ECX_HIDDEN;
            entry.edx &= !L7_EDX_HIDDEN;
        }
        // XSAVE state enumeration goes with XSAVE.
        (0xd, _) if conservative => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        (0x8000_0001, _) if conservative => entry.ecx &= !LX1_ECX_HIDDEN,
        _ => {}
    }
}

/// Applies `profile` to a CPUID set (normally KVM_GET_SUPPORTED_CPUID's).
pub fn apply_profile(cpuid: &mut CpuId, profile: CpuProfile) {
    for entry in cpuid.as_mut_slice() {
        adjust(entry, profile);
    }
}

/// Per-vCPU identity: the initial APIC id (leaf 1 EBX[31:24], x2APIC id in leaves 0xb and
/// 0x1f) and the logical processor count (leaf 1 EBX[23:16]) the MP table also announces.
pub fn set_vcpu_identity(cpuid: &mut CpuId, index: u8, vcpus: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(vcpus) << 16);
            }
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
}

/// The `clearcpuid=` kernel argument that hides the same features from inside the guest: the
/// fallback DESIGN.md asks for, in case a host's CPUID masking does not reach the guest.
/// (DESIGN.md's `noxsave` is gone from 6.1 kernels, which report it as unknown;
/// `clearcpuid=xsave` does its job.)
pub fn conservative_cmdline() -> &'static str {
    "clearcpuid=cx16,xsave,smap,smep,popcnt,avx,avx2,bmi1,bmi2,fsgsbase,erms,fsrm,movbe"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, all: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: all,
            ebx: all,
            ecx: all,
            edx: all,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0, 0x6874_7541),
            entry(1, 0, 0),
            entry(7, 0, u32::MAX),
            entry(0xd, 1, u32::MAX),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function)
            .unwrap()
    }

    #[test]
    fn every_profile_offers_the_tsc_deadline_timer() {
        for profile in [CpuProfile::Host, CpuProfile::Conservative] {
            let mut c = sample();
            apply_profile(&mut c, profile);
            assert_ne!(find(&c, 1).ecx & L1_ECX_TSC_DEADLINE, 0, "{profile:?}");
        }
    }

    #[test]
    fn each_vcpu_gets_its_apic_id() {
        let mut c = CpuId::from_entries(&[entry(1, 0, 0x00ff_1234), entry(0xb, 0, 0)]).unwrap();
        set_vcpu_identity(&mut c, 3, 4);
        assert_eq!(find(&c, 1).ebx, 0x0304_1234);
        assert_eq!(find(&c, 0xb).edx, 3);
    }

    #[test]
    fn host_profile_leaves_features_alone() {
        let mut c = sample();
        apply_profile(&mut c, CpuProfile::Host);
        assert_eq!(find(&c, 7).ebx, u32::MAX);
        assert_eq!(find(&c, 0).ebx, 0x6874_7541, "vendor unchanged");
    }

    #[test]
    fn conservative_profile_hides_what_the_emulator_lacks() {
        let mut c = CpuId::from_entries(&[
            entry(0, 0, 0),
            entry(1, 0, u32::MAX),
            entry(7, 0, u32::MAX),
            entry(0xd, 1, u32::MAX),
        ])
        .unwrap();
        apply_profile(&mut c, CpuProfile::Conservative);
        let l1 = find(&c, 1).ecx;
        for bit in [
            L1_ECX_CX16,
            L1_ECX_POPCNT,
            L1_ECX_XSAVE,
            L1_ECX_AVX,
            L1_ECX_MOVBE,
        ] {
            assert_eq!(l1 & bit, 0, "leaf 1 bit {bit:#x}");
        }
        let l7 = find(&c, 7);
        assert_eq!(
            l7.ebx & ((1 << 7) | (1 << 20) | (1 << 0) | (1 << 3) | (1 << 9)),
            0,
            "smep smap fsgsbase bmi1 erms"
        );
        assert_eq!(l7.edx & (1 << 4), 0, "fsrm");
        assert_eq!(find(&c, 0xd).eax, 0);
        let v = find(&c, 0);
        let vendor: Vec<u8> = [v.ebx, v.edx, v.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(vendor, b"GenuineIntel");
    }

    #[test]
    fn conservative_profile_is_an_intel_family_6_cpu() {
        let mut c = sample();
        apply_profile(&mut c, CpuProfile::Conservative);
        let eax = find(&c, 1).eax;
        let (family, ext_family) = ((eax >> 8) & 0xf, (eax >> 20) & 0xff);
        let model = ((eax >> 12) & 0xf0) | ((eax >> 4) & 0xf);
        assert_eq!((family, ext_family), (6, 0), "{eax:#x}");
        assert!(model >= 15, "model {model:#x}: PAT needs at least 15");
        let mut h = sample();
        apply_profile(&mut h, CpuProfile::Host);
        assert_eq!(
            find(&h, 1).eax,
            0,
            "the host profile keeps the host's signature"
        );
    }
}
