//! Types shared between `hako-vmm` and the runtime: the VM configuration, the control API's
//! messages and exit statuses, and the KVM probe report that `hako check` reads.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;

pub use config::{
    Bandwidth, BlockConfig, BootProtocol, ConsoleConfig, DevicesConfig, FsConfig, JailConfig,
    JailUser, KernelConfig, MachineConfig, NetConfig, NetRateLimit, SecurityConfig, VmConfig,
    VsockConfig,
};
pub use control::{ControlReply, ControlRequest, ExitReason, Metrics, VmState};

use serde::{Deserialize, Serialize};

/// The KVM API version every supported host reports (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// What `hako-vmm probe` found out about this host's KVM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Path of the KVM device that was probed.
    pub kvm_device: String,
    /// Whether the device could be opened read-write, and the error if not.
    pub access: KvmAccess,
    /// `KVM_GET_API_VERSION`, when the device could be opened.
    pub api_version: Option<i32>,
    /// Kernel modules that serve KVM on this host (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub kvm_modules: Vec<String>,
    /// Capabilities the VMM needs, each with whether the host has it.
    pub capabilities: Vec<CapabilityCheck>,
    /// Whether the host's supported CPUID offers the TSC-deadline timer (guest timers need it
    /// where kernel mode is emulated; DESIGN.md).
    pub tsc_deadline_timer: Option<bool>,
    /// The tiny guest's findings, when it could run.
    pub guest: Option<GuestProbe>,
    /// Why the tiny guest could not run, when it could not.
    pub guest_error: Option<String>,
    /// Whether a jailed hako-vmm can run as an unprivileged uid here, when asked.
    #[serde(default)]
    pub user_namespace: Option<UserNamespaceProbe>,
}

/// Whether hako-vmm could make a user namespace and an id-mapped bind of `path` (what its
/// jail does with `security.jail.user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespaceProbe {
    pub path: String,
    /// Why it could not; None when it could.
    pub error: Option<String>,
}

/// Whether the KVM device is usable by this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum KvmAccess {
    Ok,
    Missing,
    PermissionDenied,
    Error(String),
}

/// One KVM capability and whether the host has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityCheck {
    pub name: String,
    pub present: bool,
    /// A capability the VMM cannot run without (others only degrade it).
    pub required: bool,
}

/// Findings of the tiny probe guest: a loop in guest kernel mode, a loop in guest user mode,
/// then a `syscall` from user mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestProbe {
    /// Host nanoseconds per iteration of the loop run in guest kernel mode (CPL 0).
    pub kernel_loop_ns_per_iter: f64,
    /// Host nanoseconds per iteration of the same loop run in guest user mode (CPL 3).
    pub user_loop_ns_per_iter: f64,
    /// Where the guest's `syscall` landed.
    pub syscall: SyscallOutcome,
}

/// Where a `syscall` from guest user mode ended up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SyscallOutcome {
    /// The SYSCALL entry point ran in guest kernel mode, as on real hardware.
    EnteredKernel,
    /// The CPU jumped to the SYSCALL entry point still in user mode and faulted fetching
    /// supervisor-only code (a page fault at LSTAR with RCX/R11 set as SYSCALL sets them).
    FaultedAtEntryInUserMode {
        error_code: u64,
        rcx_is_return_address: bool,
    },
    /// Anything else: another exception, a shutdown, an emulation failure.
    Unexpected { detail: String },
}

impl GuestProbe {
    /// How many times slower guest kernel code ran than guest user code.
    pub fn kernel_slowdown(&self) -> f64 {
        if self.user_loop_ns_per_iter > 0.0 {
            self.kernel_loop_ns_per_iter / self.user_loop_ns_per_iter
        } else {
            f64::INFINITY
        }
    }
}

/// Which CPU features a guest sees (VmConfig's `cpu_profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CpuProfile {
    /// What KVM supports, passed through.
    #[default]
    Host,
    /// Hides the features whose instructions hosts that emulate guest kernel mode cannot
    /// emulate (DESIGN.md): `hako check` picks it where guest kernel mode is emulated.
    Conservative,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_report_round_trips_through_json() {
        let report = ProbeReport {
            kvm_device: "/dev/kvm".into(),
            access: KvmAccess::Ok,
            api_version: Some(12),
            kvm_modules: vec!["kvm_pvm".into()],
            capabilities: vec![CapabilityCheck {
                name: "irqchip".into(),
                present: true,
                required: true,
            }],
            tsc_deadline_timer: Some(true),
            guest: Some(GuestProbe {
                kernel_loop_ns_per_iter: 2000.0,
                user_loop_ns_per_iter: 0.5,
                syscall: SyscallOutcome::FaultedAtEntryInUserMode {
                    error_code: 0x15,
                    rcx_is_return_address: true,
                },
            }),
            guest_error: None,
            user_namespace: Some(UserNamespaceProbe {
                path: "/run/hako".into(),
                error: None,
            }),
        };
        let json = serde_json::to_string(&report).unwrap();
        let back: ProbeReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!((back.guest.unwrap().kernel_slowdown() - 4000.0).abs() < 1e-9);
    }
}
