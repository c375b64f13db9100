//! hako-vmm as the VM tests run it: a config written into a per-test directory (console to
//! stdout, control socket beside it) and the command that boots it.

use std::path::{Path, PathBuf};
use std::process::Command;

use hako_vmm_api::{ConsoleConfig, CpuProfile, KernelConfig, MachineConfig, VmConfig};

/// A VM for the probe image: conservative CPU profile (correct on every host; needed where
/// guest kernel mode is emulated), console on stdout, control socket in `dir`.
pub fn probe_vm(dir: &Path, kernel: &Path, initrd: &Path, cmdline: &str) -> VmConfig {
    VmConfig {
        machine: MachineConfig {
            vcpus: 1,
            memory_mib: 256,
            cpu_profile: CpuProfile::Conservative,
        },
        kernel: KernelConfig {
            path: kernel.to_owned(),
            initrd: Some(initrd.to_owned()),
            cmdline: cmdline.to_owned(),
            boot_protocol: Default::default(),
        },
        console: ConsoleConfig::Stdout,
        control_socket: Some(control_socket(dir)),
        devices: Default::default(),
    }
}

/// Where `probe_vm` puts the control socket.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Writes `config` into `dir` and returns the command that boots it.
pub fn command(vmm: &Path, dir: &Path, config: &VmConfig) -> std::io::Result<Command> {
    let path = dir.join("vm.json");
    let json = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config").arg(path).env("HAKO_LOG", "info");
    Ok(cmd)
}
