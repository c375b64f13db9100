//! The control API: one JSON request per line on the control socket, one JSON reply per line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a client asks the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    Status,
    Pause,
    Resume,
    /// Ask the guest to stop (ctrl-alt-del through the i8042 where the guest handles it), wait
    /// up to `grace_ms`, then stop the VM regardless. `grace_ms: 0` stops it at once.
    Shutdown {
        #[serde(default)]
        grace_ms: u64,
    },
    Metrics,
    /// Pauses the VM (if running) and writes a snapshot of it into `dir` (created if missing;
    /// refused if it already holds one). The VM stays paused.
    Snapshot {
        dir: std::path::PathBuf,
    },
}

/// The VM's lifecycle as the control API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    ShuttingDown,
}

/// The VMM's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ControlReply {
    Status {
        state: VmState,
        vcpus: u8,
        memory_mib: u32,
        /// Milliseconds since the VMM started.
        uptime_ms: u64,
    },
    /// The request was carried out.
    Done,
    Metrics(Metrics),
    /// The request could not be carried out, and why.
    Error {
        message: String,
    },
}

/// Counters since start: vCPU exits by kind and per-device counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Exit kind (`io_in`, `io_out`, `mmio_read`, `mmio_write`, `hlt`, `intr`, ...) → count,
    /// summed over vCPUs.
    pub vcpu_exits: BTreeMap<String, u64>,
    /// Device name → counter name → value.
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Why the VMM exited, and the process exit status for each reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Every vCPU halted with interrupts off: the guest powered off (or halted).
    GuestPoweroff,
    /// The guest asked for a reset (reboot, or a panic with `panic=-1`).
    GuestReset,
    /// The guest crashed: a triple fault, or KVM could not run it (emulation failure).
    GuestCrash,
    /// The control API's shutdown request, or a signal (SIGTERM/SIGINT).
    Stopped,
}

impl ExitReason {
    /// The process exit status. 1 and 2 stay for VMM errors and bad configuration.
    pub const fn exit_code(self) -> u8 {
        match self {
            ExitReason::GuestPoweroff => 0,
            ExitReason::GuestReset => 3,
            ExitReason::GuestCrash => 4,
            ExitReason::Stopped => 5,
        }
    }
}

/// Exit status for a VMM error (could not build or run the VM).
pub const EXIT_VMM_ERROR: u8 = 1;
/// Exit status for an invalid command line or configuration.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status when a thread made a system call the seccomp filter forbids (128 + SIGSYS,
/// what a shell shows for a death by SIGSYS); hako-vmm's stderr names the call.
pub const EXIT_SECCOMP_VIOLATION: u8 = 159;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r: ControlRequest = serde_json::from_str(r#"{"request":"shutdown"}"#).unwrap();
        assert_eq!(r, ControlRequest::Shutdown { grace_ms: 0 });
        let r: ControlRequest =
            serde_json::from_str(r#"{"request":"shutdown","grace_ms":500}"#).unwrap();
        assert_eq!(r, ControlRequest::Shutdown { grace_ms: 500 });
        assert!(serde_json::from_str::<ControlRequest>(r#"{"request":"reboot"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).unwrap(),
            r#"{"request":"status"}"#
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_avoid_error_codes() {
        let all = [
            ExitReason::GuestPoweroff,
            ExitReason::GuestReset,
            ExitReason::GuestCrash,
            ExitReason::Stopped,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|r| r.exit_code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&EXIT_VMM_ERROR) && !codes.contains(&EXIT_BAD_CONFIG));
        assert!(!codes.contains(&EXIT_SECCOMP_VIOLATION));
    }
}
