//! hako-vmm as the VM tests run it: a config written into a per-test directory (console to
//! stdout, control socket beside it) and the command that boots it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use hako_vmm_api::{
    ConsoleConfig, ControlReply, ControlRequest, CpuProfile, KernelConfig, MachineConfig, VmConfig,
};

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
        security: Default::default(),
    }
}

/// A VM like the runtime's sandboxes: the agent image, console on stdout, vsock (CID `cid`,
/// socket `dir/vsock.sock`) and the shared directory `dir/shared` (created).
pub fn agent_vm(dir: &Path, kernel: &Path, image: &Path, cid: u32) -> std::io::Result<VmConfig> {
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared)?;
    let mut config = probe_vm(dir, kernel, image, "quiet");
    config.devices.vsock = Some(hako_vmm_api::VsockConfig {
        guest_cid: cid,
        uds_path: dir.join("vsock.sock"),
    });
    config.devices.fs.push(hako_vmm_api::FsConfig {
        tag: hako_agent_api::SHARED_FS_TAG.into(),
        shared_dir: shared,
        read_only: false,
    });
    Ok(config)
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

/// Like [`command`], with hako-vmm run inside the network namespace `netns` (`ip netns exec`),
/// where its tap devices are.
pub fn command_in_netns(
    vmm: &Path,
    dir: &Path,
    config: &VmConfig,
    netns: &str,
) -> std::io::Result<Command> {
    let inner = command(vmm, dir, config)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("HAKO_LOG", "info");
    Ok(cmd)
}

/// Like [`command`], resuming the snapshot in `snapshot` instead of booting.
pub fn restore_command(
    vmm: &Path,
    dir: &Path,
    config: &VmConfig,
    snapshot: &Path,
) -> std::io::Result<Command> {
    let mut cmd = command(vmm, dir, config)?;
    cmd.arg("--restore").arg(snapshot);
    Ok(cmd)
}

/// Sends one raw line to the control socket on a fresh connection; returns the reply.
pub fn control_line(path: &Path, line: &str) -> Result<ControlReply, String> {
    let mut s =
        UnixStream::connect(path).map_err(|e| format!("connecting {}: {e}", path.display()))?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("sending {line}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("reading the reply to {line}: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("reply {reply:?} to {line}: {e}"))
}

/// Sends one control request (the runtime's own client).
pub fn control(path: &Path, request: &ControlRequest) -> Result<ControlReply, String> {
    hako_runtime::backend::vm::control(path, request).map_err(|e| format!("{e:#}"))
}
