//! `VmConfig`: the JSON file `hako-vmm run --config` reads. One definition, used by the VMM
//! and by the runtime that writes it. Unknown fields are refused so a typo is an error, not a
//! silently ignored setting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::CpuProfile;

/// Everything one VM needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub machine: MachineConfig,
    pub kernel: KernelConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Unix socket serving the control API (status, pause, resume, shutdown, metrics). The
    /// VMM creates it, refuses to start if it exists, and removes it on exit.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    #[serde(default)]
    pub devices: DevicesConfig,
    #[serde(default)]
    pub security: SecurityConfig,
}

/// How hako-vmm confines itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Install the seccomp filters (every thread, before the guest runs). Default true;
    /// turn off only to debug.
    #[serde(default = "SecurityConfig::default_seccomp")]
    pub seccomp: bool,
    /// Run in a jail (see [`JailConfig`]). Off unless set.
    #[serde(default)]
    pub jail: Option<JailConfig>,
}

/// hako-vmm's jail. Before any thread starts, the VMM opens /dev/kvm and its taps, enters a
/// mount namespace of its own, mounts a small tmpfs on `root` (seen only in that namespace),
/// binds in only what this config names (kernel and initrd read-only, shared directories,
/// disks, the directories of its sockets and console file, a snapshot to resume read-only,
/// /dev/null and /dev/urandom) at their own paths, mounts a /proc that shows processes only,
/// pivots into it, becomes [`JailUser`]'s unprivileged ids if set, keeps only the
/// capabilities its devices need (none without virtio-fs), and sets no_new_privs. Every path
/// in the config must then be absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// An existing empty directory (e.g. `<sandbox dir>/jail`); nothing is written to it on
    /// the host's side.
    pub root: PathBuf,
    /// Run as unprivileged host ids (a user namespace); unset: uid 0 with the capabilities
    /// its devices need.
    #[serde(default)]
    pub user: Option<JailUser>,
}

/// The host ids a jailed hako-vmm runs as. It enters a user namespace whose ids
/// `0..count` are the host's `uid..uid + count` (and `gid..gid + count`), and every bind in
/// its jail is id-mapped the same way (`mount_setattr(MOUNT_ATTR_IDMAP)`): inside, the files
/// keep their owners (a host root file is its root's), and what the guest writes as uid `n`
/// lands on the host as uid `n`. Its capabilities hold in that namespace only, over the
/// files of those binds only; everywhere else it is the unprivileged host uid `uid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailUser {
    /// The host uid the jail's uid 0 is; not 0.
    pub uid: u32,
    /// The host gid the jail's gid 0 is; not 0.
    pub gid: u32,
    /// How many ids the namespace maps (guest ids beyond are refused): default 65536.
    #[serde(default = "JailUser::default_count")]
    pub count: u32,
    /// Where this host cannot do it (user namespaces turned off, a file system of the jail
    /// that cannot be id-mapped, a kernel before 5.12), stay uid 0 with a warning instead
    /// of failing.
    #[serde(default)]
    pub fallback_to_root: bool,
}

impl JailUser {
    pub const DEFAULT_COUNT: u32 = 65536;

    fn default_count() -> u32 {
        Self::DEFAULT_COUNT
    }
}

impl SecurityConfig {
    fn default_seccomp() -> bool {
        true
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            seccomp: Self::default_seccomp(),
            jail: None,
        }
    }
}

/// vCPUs, memory and the CPU features the guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    #[serde(default = "MachineConfig::default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "MachineConfig::default_memory_mib")]
    pub memory_mib: u32,
    #[serde(default)]
    pub cpu_profile: CpuProfile,
}

impl MachineConfig {
    pub const MAX_VCPUS: u8 = 32;
    pub const MIN_MEMORY_MIB: u32 = 32;

    fn default_vcpus() -> u8 {
        1
    }
    fn default_memory_mib() -> u32 {
        256
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpus: Self::default_vcpus(),
            memory_mib: Self::default_memory_mib(),
            cpu_profile: CpuProfile::default(),
        }
    }
}

/// The guest kernel, its initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// An uncompressed ELF `vmlinux` (PVH entry used when the kernel has the note) or a bzImage.
    pub path: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Appended to the VMM's own arguments (console, reboot, virtio-mmio devices, and the CPU
    /// profile's fallbacks).
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub boot_protocol: BootProtocol,
}

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BootProtocol {
    /// PVH when the ELF kernel has the PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// The 64-bit Linux boot protocol (zero page, long mode) even when PVH is available.
    Linux64,
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    tag = "output",
    content = "path"
)]
pub enum ConsoleConfig {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Discarded; the guest gets no serial console.
    Off,
}

/// The virtio-mmio devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    #[serde(default)]
    pub block: Vec<BlockConfig>,
    #[serde(default)]
    pub net: Vec<NetConfig>,
}

/// A virtio-net device attached to an existing tap interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// A name for logs and metrics (the guest names its interfaces itself).
    pub id: String,
    /// The tap interface in hako-vmm's network namespace (it must exist).
    pub tap: String,
    /// The guest's MAC address, `02:00:00:00:00:01` style (a unicast address).
    pub mac: String,
    /// The MTU offered to the guest (68-65535); none leaves the guest's default (1500).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Bandwidth limits (token buckets) on what the guest receives and sends; none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<NetRateLimit>,
}

/// A net device's bandwidth limits, each direction as the guest sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRateLimit {
    /// Frames to the guest.
    #[serde(default)]
    pub rx: Option<Bandwidth>,
    /// Frames from the guest.
    #[serde(default)]
    pub tx: Option<Bandwidth>,
}

/// A token bucket: `bytes_per_sec` refill, holding at most `burst_bytes` (default: one
/// second's worth). A frame waits (it is never dropped) until the bucket holds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    pub bytes_per_sec: u64,
    #[serde(default)]
    pub burst_bytes: Option<u64>,
}

impl NetConfig {
    /// The MAC address's bytes, if it is six hex octets separated by colons.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        let mut out = [0u8; 6];
        let mut parts = self.mac.split(':');
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(out)
    }
}

/// A hybrid vsock device: the host side is a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id (3 or more; 0–2 are reserved).
    pub guest_cid: u32,
    /// Host connects here and writes `CONNECT <port>\n`; guest connections to port P arrive at
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// A virtio-fs device sharing one host directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The mount tag the guest uses (`mount -t virtiofs <tag> /mnt`).
    pub tag: String,
    pub shared_dir: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// A virtio-blk device backed by a raw image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// A name for logs and metrics.
    pub id: String,
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_takes_defaults() {
        let cfg: VmConfig = serde_json::from_str(r#"{"kernel": {"path": "/k"}}"#).unwrap();
        assert_eq!(cfg.machine, MachineConfig::default());
        assert_eq!(cfg.machine.vcpus, 1);
        assert_eq!(cfg.console, ConsoleConfig::Stdout);
        assert!(cfg.control_socket.is_none());
        assert!(cfg.devices.block.is_empty());
    }

    #[test]
    fn full_config_round_trips() {
        let json = r#"{
            "machine": {"vcpus": 2, "memory_mib": 512, "cpu_profile": "conservative"},
            "kernel": {"path": "/k", "initrd": "/i", "cmdline": "quiet", "boot_protocol": "linux64"},
            "console": {"output": "file", "path": "/tmp/console.log"},
            "control_socket": "/run/hako/x/control.sock",
            "devices": {
                "vsock": {"guest_cid": 3, "uds_path": "/run/hako/x/vsock.sock"},
                "fs": [{"tag": "hako-shared", "shared_dir": "/srv", "read_only": true}],
                "block": [{"id": "root", "path": "/img.raw"}]
            }
        }"#;
        let cfg: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.machine.cpu_profile, CpuProfile::Conservative);
        assert_eq!(cfg.kernel.boot_protocol, BootProtocol::Linux64);
        assert_eq!(cfg.console, ConsoleConfig::File("/tmp/console.log".into()));
        assert!(cfg.devices.fs[0].read_only);
        assert!(!cfg.devices.block[0].read_only);
        let back: VmConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = serde_json::from_str::<VmConfig>(r#"{"kernel": {"path": "/k"}, "vcpus": 2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("vcpus"), "{err}");
    }
}
