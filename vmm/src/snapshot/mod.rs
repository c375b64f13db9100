//! Snapshots: a paused VM written to a directory (`memory`, guest RAM, sparse; `state.json`,
//! every vCPU, the VM's interrupt controllers and clock, and each device's registers), and
//! read back to start another VMM from it.
//!
//! A snapshot is made for templates: the guest has booted and its agent listens, no host
//! connection is open and the shared directory is not mounted yet. Restoring it takes a new
//! configuration: same machine size and devices in the same order, but its own vsock socket
//! and CID, shared directory and console. The vsock device tells the guest its connections
//! are gone and its CID may have changed (transport reset); everything else a sandbox makes
//! its own (hostname, clock, entropy) goes through the agent.

pub mod memory;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hako_vmm_api::{CpuProfile, VmConfig};
use serde::{Deserialize, Serialize};

use crate::arch::x86_64::vcpu_state::VcpuState;
use crate::arch::x86_64::vm_state::VmState;
use crate::devices::legacy::i8042::I8042Snapshot;
use crate::devices::legacy::serial::SerialSnapshot;
use crate::devices::virtio::mmio::TransportState;

pub use memory::RegionLayout;

/// Bumped whenever the state file's meaning changes; other versions are refused.
pub const FORMAT_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const MEMORY_FILE: &str = "memory";

/// Errors making or reading a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the snapshot state {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the snapshot state")]
    Encode(#[source] serde_json::Error),
    #[error(
        "the snapshot in {path} has format version {found} (made by hako-vmm {vmm}); this hako-vmm reads version {FORMAT_VERSION}"
    )]
    Version {
        path: PathBuf,
        found: u32,
        vmm: String,
    },
    #[error("the snapshot does not fit this configuration: {0}")]
    Mismatch(String),
    #[error("the snapshot directory {0} already holds a snapshot")]
    Exists(PathBuf),
    #[error(transparent)]
    Memory(#[from] memory::MemoryFileError),
}

/// The machine a snapshot was taken of; a restore's configuration must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineShape {
    pub vcpus: u8,
    pub memory_mib: u32,
    pub cpu_profile: CpuProfile,
    /// Device names in the order they were wired (`vsock`, `fs:<tag>`, `block:<id>`): it
    /// decides their MMIO windows and interrupt lines, which the guest remembers.
    pub devices: Vec<String>,
    pub console: bool,
}

impl MachineShape {
    pub fn of(config: &VmConfig) -> Self {
        let mut devices = Vec::new();
        if config.devices.vsock.is_some() {
            devices.push("vsock".to_owned());
        }
        devices.extend(config.devices.fs.iter().map(|f| format!("fs:{}", f.tag)));
        devices.extend(
            config
                .devices
                .block
                .iter()
                .map(|b| format!("block:{}", b.id)),
        );
        devices.extend(config.devices.net.iter().map(|n| format!("net:{}", n.id)));
        Self {
            vcpus: config.machine.vcpus,
            memory_mib: config.machine.memory_mib,
            cpu_profile: config.machine.cpu_profile,
            devices,
            console: !matches!(config.console, hako_vmm_api::ConsoleConfig::Off),
        }
    }

    /// Why a VM configured as `other` cannot take this snapshot, if it cannot.
    pub fn check(&self, other: &MachineShape) -> Result<(), SnapshotError> {
        let mut diffs = Vec::new();
        if self.vcpus != other.vcpus {
            diffs.push(format!("{} vCPUs, not {}", self.vcpus, other.vcpus));
        }
        if self.memory_mib != other.memory_mib {
            diffs.push(format!(
                "{} MiB of memory, not {}",
                self.memory_mib, other.memory_mib
            ));
        }
        if self.cpu_profile != other.cpu_profile {
            diffs.push(format!(
                "CPU profile {:?}, not {:?}",
                self.cpu_profile, other.cpu_profile
            ));
        }
        if self.devices != other.devices {
            diffs.push(format!(
                "devices [{}], not [{}]",
                self.devices.join(", "),
                other.devices.join(", ")
            ));
        }
        if self.console != other.console {
            diffs.push(format!(
                "a serial console {}",
                if self.console { "on" } else { "off" }
            ));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::Mismatch(format!(
                "it was taken of a VM with {}",
                diffs.join("; ")
            )))
        }
    }
}

/// The devices' state, in wiring order.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: Option<SerialSnapshot>,
    pub i8042: I8042Snapshot,
    pub virtio: Vec<TransportState>,
}

/// `state.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub format_version: u32,
    pub vmm_version: String,
    pub machine: MachineShape,
    pub memory: Vec<RegionLayout>,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { what, path, source }
}

/// Creates `dir` (or takes it empty) for a new snapshot; a directory that already holds one
/// is refused rather than overwritten.
pub fn prepare_dir(dir: &Path) -> Result<(), SnapshotError> {
    // Owner-only, like the files in it (see memory::write).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating the snapshot directory", dir))?;
    if dir.join(STATE_FILE).exists() || dir.join(MEMORY_FILE).exists() {
        return Err(SnapshotError::Exists(dir.to_owned()));
    }
    Ok(())
}

/// Writes `state.json` last and atomically, so a directory with one holds a whole snapshot.
pub fn write_state(dir: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let json = serde_json::to_vec(snapshot).map_err(SnapshotError::Encode)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(&json).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    let path = dir.join(STATE_FILE);
    fs::rename(&tmp, &path).map_err(io("renaming the state into", &path))?;
    Ok(())
}

/// Reads and checks `state.json` of the snapshot in `dir`.
pub fn read_state(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io("reading the snapshot state", &path))?;
    parse_state(&bytes, path)
}

/// Parses and checks the bytes of a `state.json` (read from `path`, for messages).
pub fn parse_state(bytes: &[u8], path: std::path::PathBuf) -> Result<Snapshot, SnapshotError> {
    // The version first, so an old or newer file says so instead of a field error.
    #[derive(Deserialize)]
    struct Head {
        format_version: u32,
        #[serde(default)]
        vmm_version: String,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|source| SnapshotError::Parse {
        path: path.clone(),
        source,
    })?;
    if head.format_version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path,
            found: head.format_version,
            vmm: head.vmm_version,
        });
    }
    let snapshot: Snapshot =
        serde_json::from_slice(bytes).map_err(|source| SnapshotError::Parse {
            path: path.clone(),
            source,
        })?;
    if snapshot.vcpus.len() != usize::from(snapshot.machine.vcpus) {
        return Err(SnapshotError::Mismatch(format!(
            "the state holds {} vCPUs for a machine of {}",
            snapshot.vcpus.len(),
            snapshot.machine.vcpus
        )));
    }
    if snapshot.devices.virtio.len() != snapshot.machine.devices.len() {
        return Err(SnapshotError::Mismatch(format!(
            "the state holds {} virtio devices for a machine of {}",
            snapshot.devices.virtio.len(),
            snapshot.machine.devices.len()
        )));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MachineShape {
        MachineShape {
            vcpus: 1,
            memory_mib: 256,
            cpu_profile: CpuProfile::Host,
            devices: vec!["vsock".into(), "fs:hako".into()],
            console: true,
        }
    }

    #[test]
    fn shape_mismatch_names_every_difference() {
        let a = shape();
        assert!(a.check(&shape()).is_ok());
        let mut b = shape();
        b.memory_mib = 512;
        b.devices.pop();
        let e = a.check(&b).unwrap_err().to_string();
        assert!(e.contains("256 MiB of memory, not 512"), "{e}");
        assert!(e.contains("[vsock, fs:hako], not [vsock]"), "{e}");
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_names() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_state(dir.path()).unwrap_err().to_string();
        assert!(e.contains("reading the snapshot state"), "{e}");
        fs::write(
            dir.path().join(STATE_FILE),
            r#"{"format_version":99,"vmm_version":"9.9"}"#,
        )
        .unwrap();
        let e = read_state(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format version 99") && e.contains("9.9"), "{e}");
        fs::write(dir.path().join(STATE_FILE), "{\"format_version\":1").unwrap();
        let e = read_state(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
    }

    #[test]
    fn a_used_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path()).unwrap();
        fs::write(dir.path().join(MEMORY_FILE), b"x").unwrap();
        assert!(matches!(
            prepare_dir(dir.path()),
            Err(SnapshotError::Exists(_))
        ));
    }
}
