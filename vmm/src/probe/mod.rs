//! The KVM probe behind `hako check`: opens /dev/kvm, lists the capabilities the VMM needs
//! and which module serves KVM, and runs a tiny guest that times a loop in guest kernel mode
//! against the same loop in guest user mode, then makes a `syscall` from user mode and
//! reports where it landed (DESIGN.md explains why both matter on hosts like this one).

mod code;
mod guest;
mod layout;
mod tables;

use std::path::Path;

use hako_vmm_api::{CapabilityCheck, GuestProbe, KvmAccess, ProbeReport, UserNamespaceProbe};
use kvm_ioctls::{Cap, Kvm};

pub use guest::GuestProbeError;

/// Capabilities hako-vmm uses, and whether it cannot run without each.
const CAPABILITIES: &[(&str, Cap, bool)] = &[
    ("user_memory", Cap::UserMemory, true),
    ("irqchip", Cap::Irqchip, true),
    ("pit2", Cap::Pit2, true),
    ("ioeventfd", Cap::Ioeventfd, true),
    ("irqfd", Cap::Irqfd, true),
    ("ext_cpuid", Cap::ExtCpuid, true),
    ("set_tss_addr", Cap::SetTssAddr, true),
    ("mp_state", Cap::MpState, false),
    ("adjust_clock", Cap::AdjustClock, false),
    ("vcpu_events", Cap::VcpuEvents, false),
    ("immediate_exit", Cap::ImmediateExit, false),
    ("xsave", Cap::Xsave, false),
    ("kvmclock_ctrl", Cap::KvmclockCtrl, false),
];

/// Kernel modules that can serve /dev/kvm.
const KVM_MODULES: &[&str] = &["kvm_intel", "kvm_amd", "kvm_pvm"];

/// Probes the KVM device at `device` (normally /dev/kvm) and, if `idmap_path` is given,
/// whether a jailed hako-vmm could run as an unprivileged uid with that path bound in (call
/// it while the process has one thread). Never fails: every problem is a finding in the
/// report.
pub fn probe(device: &Path, idmap_path: Option<&Path>) -> ProbeReport {
    // First: it forks a helper, which wants one thread.
    let user_namespace = idmap_path.map(|path| UserNamespaceProbe {
        path: path.display().to_string(),
        error: crate::jail::can_run_unprivileged(path)
            .err()
            .map(|e| crate::error_chain(&e)),
    });
    let mut report = ProbeReport {
        kvm_device: device.display().to_string(),
        access: KvmAccess::Ok,
        api_version: None,
        kvm_modules: loaded_kvm_modules(Path::new("/sys/module")),
        capabilities: Vec::new(),
        tsc_deadline_timer: None,
        guest: None,
        guest_error: None,
        user_namespace,
    };
    let kvm = match open_kvm(device) {
        Ok(kvm) => kvm,
        Err(access) => {
            report.access = access;
            return report;
        }
    };
    report.api_version = Some(kvm.get_api_version());
    report.capabilities = CAPABILITIES
        .iter()
        .map(|&(name, cap, required)| CapabilityCheck {
            name: name.to_string(),
            present: kvm.check_extension(cap),
            required,
        })
        .collect();
    // KVM reports the TSC-deadline timer as a capability; the VMM sets CPUID.1:ECX[24] itself
    // (KVM_GET_SUPPORTED_CPUID leaves it clear).
    report.tsc_deadline_timer = Some(kvm.check_extension(Cap::TscDeadlineTimer));
    let mut errors = Vec::new();
    for _ in 0..GUEST_RUNS {
        match guest::run(&kvm) {
            Ok(found) => report.guest = Some(best_of(report.guest.take(), found)),
            Err(e) => errors.push(crate::error_chain(&e)),
        }
    }
    if report.guest.is_none() {
        report.guest_error = errors.into_iter().next();
    }
    report
}

/// The probe guest runs this many times; the fastest loop timings are kept, so one host
/// preemption cannot make a native host look emulated.
const GUEST_RUNS: usize = 3;

/// Keeps the fastest timings of two runs (the syscall outcome is the same every run).
fn best_of(previous: Option<GuestProbe>, next: GuestProbe) -> GuestProbe {
    match previous {
        None => next,
        Some(p) => GuestProbe {
            kernel_loop_ns_per_iter: p.kernel_loop_ns_per_iter.min(next.kernel_loop_ns_per_iter),
            user_loop_ns_per_iter: p.user_loop_ns_per_iter.min(next.user_loop_ns_per_iter),
            syscall: next.syscall,
        },
    }
}

fn open_kvm(device: &Path) -> Result<Kvm, KvmAccess> {
    let path = std::ffi::CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|_| KvmAccess::Error(format!("{} contains a NUL byte", device.display())))?;
    Kvm::new_with_path(&path).map_err(|e| match e.errno() {
        libc::ENOENT => KvmAccess::Missing,
        libc::EACCES | libc::EPERM => KvmAccess::PermissionDenied,
        _ => KvmAccess::Error(format!("opening {}: {e}", device.display())),
    })
}

/// Which of [`KVM_MODULES`] appear under `sys_module` (normally /sys/module).
pub fn loaded_kvm_modules(sys_module: &Path) -> Vec<String> {
    KVM_MODULES
        .iter()
        .filter(|m| sys_module.join(m).is_dir())
        .map(|m| m.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kvm_modules_in_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("hako-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(loaded_kvm_modules(&dir), vec!["kvm_pvm".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_device_is_a_finding_not_an_error() {
        let report = probe(Path::new("/nonexistent/kvm"), None);
        assert_eq!(report.access, KvmAccess::Missing);
        assert!(report.guest.is_none());
    }
}
