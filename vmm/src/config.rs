//! Checks a `VmConfig` before anything is created: sizes in range, files present, sockets
//! free, names valid. Each error names the setting and the value at fault.

use std::path::{Path, PathBuf};

use hako_vmm_api::{MachineConfig, VmConfig};

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not a valid VM config")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("machine.vcpus is {0}; it must be 1 to {max}", max = MachineConfig::MAX_VCPUS)]
    Vcpus(u8),
    #[error("machine.memory_mib is {0}; it must be {min} to {max}", min = MachineConfig::MIN_MEMORY_MIB, max = MAX_MEMORY_MIB)]
    Memory(u32),
    #[error("{field} {path} is not a readable file")]
    MissingFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field} {path}: the directory it goes in does not exist")]
    NoParent { field: &'static str, path: PathBuf },
    #[error("{field} {path} already exists (another VMM, or a stale socket to remove)")]
    SocketExists { field: &'static str, path: PathBuf },
    #[error("kernel.cmdline contains a NUL byte")]
    CmdlineNul,
    #[error("devices.vsock.guest_cid is {0}; it must be at least 3 (0-2 are reserved)")]
    GuestCid(u32),
    #[error("devices.fs tag {0:?} must be 1 to 36 bytes of [A-Za-z0-9_-]")]
    FsTag(String),
    #[error("devices.fs tag {0:?} is used twice")]
    DuplicateFsTag(String),
    #[error("devices.fs shared_dir {0} is not a directory")]
    SharedDir(PathBuf),
    #[error("devices.block id {0:?} is empty or used twice")]
    BlockId(String),
    #[error("devices.net id {0:?} is empty or used twice")]
    NetId(String),
    #[error("devices.net {id}: tap {tap:?} is not an interface name (1 to 15 bytes, no '/')")]
    TapName { id: String, tap: String },
    #[error("devices.net {id}: mac {mac:?} is not a unicast MAC address like 02:00:00:00:00:01")]
    Mac { id: String, mac: String },
    #[error("devices.net {id}: mtu {mtu} is outside 68-65535")]
    Mtu { id: String, mtu: u16 },
    #[error(
        "devices.net {id}: a rate limit needs bytes_per_sec above 0 and burst_bytes, if given, of at least one frame (65562)"
    )]
    RateLimit { id: String },
    #[error(
        "security.jail.user: uid {uid} and gid {gid} must not be 0, count {count} must be 1 or more, and the ranges must end below 2^32-1"
    )]
    JailUser { uid: u32, gid: u32, count: u32 },
}

/// 1 TiB: more than any sandbox needs, small enough that sizes stay far from overflow.
pub const MAX_MEMORY_MIB: u32 = 1 << 20;

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<VmConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: VmConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    validate(&config)?;
    Ok(config)
}

fn readable_file(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    let err = |source| ConfigError::MissingFile {
        field,
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    Ok(())
}

fn free_socket_path(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.symlink_metadata().is_ok() {
        return Err(ConfigError::SocketExists {
            field,
            path: path.to_owned(),
        });
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return Err(ConfigError::NoParent {
            field,
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn valid_tag(tag: &str) -> bool {
    (1..=36).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks every setting; the first problem found is the error.
pub fn validate(config: &VmConfig) -> Result<(), ConfigError> {
    let m = &config.machine;
    if m.vcpus == 0 || m.vcpus > MachineConfig::MAX_VCPUS {
        return Err(ConfigError::Vcpus(m.vcpus));
    }
    if !(MachineConfig::MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&m.memory_mib) {
        return Err(ConfigError::Memory(m.memory_mib));
    }
    readable_file("kernel.path", &config.kernel.path)?;
    if let Some(initrd) = &config.kernel.initrd {
        readable_file("kernel.initrd", initrd)?;
    }
    if config.kernel.cmdline.contains('\0') {
        return Err(ConfigError::CmdlineNul);
    }
    if let Some(path) = &config.control_socket {
        free_socket_path("control_socket", path)?;
    }
    if let Some(vsock) = &config.devices.vsock {
        if vsock.guest_cid < 3 {
            return Err(ConfigError::GuestCid(vsock.guest_cid));
        }
        free_socket_path("devices.vsock.uds_path", &vsock.uds_path)?;
    }
    let mut tags = std::collections::BTreeSet::new();
    for fs in &config.devices.fs {
        if !valid_tag(&fs.tag) {
            return Err(ConfigError::FsTag(fs.tag.clone()));
        }
        if !tags.insert(fs.tag.as_str()) {
            return Err(ConfigError::DuplicateFsTag(fs.tag.clone()));
        }
        if !fs.shared_dir.is_dir() {
            return Err(ConfigError::SharedDir(fs.shared_dir.clone()));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for blk in &config.devices.block {
        if blk.id.is_empty() || !ids.insert(blk.id.as_str()) {
            return Err(ConfigError::BlockId(blk.id.clone()));
        }
        readable_file("devices.block.path", &blk.path)?;
    }
    let mut ids = std::collections::BTreeSet::new();
    for net in &config.devices.net {
        if net.id.is_empty() || !ids.insert(net.id.as_str()) {
            return Err(ConfigError::NetId(net.id.clone()));
        }
        if net.tap.is_empty() || net.tap.len() > 15 || net.tap.contains('/') {
            return Err(ConfigError::TapName {
                id: net.id.clone(),
                tap: net.tap.clone(),
            });
        }
        if net.mac_bytes().is_none_or(|m| m[0] & 1 != 0) {
            return Err(ConfigError::Mac {
                id: net.id.clone(),
                mac: net.mac.clone(),
            });
        }
        if let Some(mtu) = net.mtu.filter(|m| *m < 68) {
            return Err(ConfigError::Mtu {
                id: net.id.clone(),
                mtu,
            });
        }
        let limits = net.rate_limit.unwrap_or_default();
        let bad = |b: &hako_vmm_api::Bandwidth| {
            b.bytes_per_sec == 0
                || b.burst_bytes
                    .is_some_and(|burst| burst < crate::devices::virtio::net::MAX_FRAME as u64)
        };
        if limits.rx.iter().chain(limits.tx.iter()).any(bad) {
            return Err(ConfigError::RateLimit { id: net.id.clone() });
        }
    }
    if let Some(user) = config.security.jail.as_ref().and_then(|j| j.user.as_ref()) {
        // (u32)-1 is "no id" to the kernel: a range must end before it.
        let fits = |first: u32| {
            first != 0 && u64::from(first) + u64::from(user.count) <= u64::from(u32::MAX)
        };
        if user.count == 0 || !fits(user.uid) || !fits(user.gid) {
            return Err(ConfigError::JailUser {
                uid: user.uid,
                gid: user.gid,
                count: user.count,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_vmm_api::{FsConfig, KernelConfig, VsockConfig};

    fn base(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        VmConfig {
            machine: MachineConfig::default(),
            kernel: KernelConfig {
                path: kernel,
                initrd: None,
                cmdline: String::new(),
                boot_protocol: Default::default(),
            },
            console: Default::default(),
            control_socket: Some(dir.join("control.sock")),
            devices: Default::default(),
            security: Default::default(),
        }
    }

    #[test]
    fn net_devices_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        let net = |id: &str, tap: &str, mac: &str, mtu| hako_vmm_api::NetConfig {
            id: id.into(),
            tap: tap.into(),
            mac: mac.into(),
            mtu,
            rate_limit: None,
        };
        let limited = |tx| hako_vmm_api::NetConfig {
            rate_limit: Some(hako_vmm_api::NetRateLimit {
                rx: None,
                tx: Some(tx),
            }),
            ..net("eth0", "tap0", "02:00:00:00:00:01", None)
        };
        c.devices.net = vec![net("eth0", "tap0", "02:00:00:00:00:01", Some(1400))];
        validate(&c).unwrap();
        c.devices.net = vec![limited(hako_vmm_api::Bandwidth {
            bytes_per_sec: 1_000_000,
            burst_bytes: None,
        })];
        validate(&c).unwrap();
        for (bad, needle) in [
            (net("eth0", "tap0", "03:00:00:00:00:01", None), "unicast"),
            (net("eth0", "tap0", "02:00:00:00:01", None), "unicast"),
            (net("eth0", "tap0", "zz:00:00:00:00:01", None), "unicast"),
            (
                net("eth0", "a-very-long-tap-name", "02:00:00:00:00:01", None),
                "interface name",
            ),
            (net("eth0", "tap0", "02:00:00:00:00:01", Some(10)), "mtu 10"),
            (net("", "tap0", "02:00:00:00:00:01", None), "empty"),
            (
                limited(hako_vmm_api::Bandwidth {
                    bytes_per_sec: 0,
                    burst_bytes: None,
                }),
                "rate limit",
            ),
            (
                limited(hako_vmm_api::Bandwidth {
                    bytes_per_sec: 1_000_000,
                    burst_bytes: Some(1500),
                }),
                "rate limit",
            ),
        ] {
            c.devices.net = vec![bad];
            let e = validate(&c).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        c.devices.net = vec![
            net("eth0", "tap0", "02:00:00:00:00:01", None),
            net("eth0", "tap1", "02:00:00:00:00:02", None),
        ];
        assert!(validate(&c).unwrap_err().to_string().contains("used twice"));
    }

    #[test]
    fn jail_users_must_be_unprivileged_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        let user = |uid, gid, count| hako_vmm_api::JailConfig {
            root: dir.path().to_owned(),
            user: Some(hako_vmm_api::JailUser {
                uid,
                gid,
                count,
                fallback_to_root: false,
            }),
        };
        c.security.jail = Some(user(0x7000_0000, 0x7000_0000, 65536));
        validate(&c).unwrap();
        for (uid, gid, count) in [
            (0, 0x7000_0000, 65536),
            (0x7000_0000, 0, 65536),
            (0x7000_0000, 0x7000_0000, 0),
            (u32::MAX - 10, 0x7000_0000, 65536),
        ] {
            c.security.jail = Some(user(uid, gid, count));
            let e = validate(&c).unwrap_err().to_string();
            assert!(e.contains("security.jail.user"), "{e}");
        }
    }

    #[test]
    fn a_sound_config_passes() {
        let dir = tempfile::tempdir().unwrap();
        validate(&base(dir.path())).unwrap();
    }

    #[test]
    fn sizes_out_of_range_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        c.machine.vcpus = 0;
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("machine.vcpus is 0")
        );
        c.machine.vcpus = 33;
        assert!(matches!(validate(&c), Err(ConfigError::Vcpus(33))));
        c.machine.vcpus = 1;
        c.machine.memory_mib = 8;
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("memory_mib is 8")
        );
    }

    #[test]
    fn missing_kernel_and_initrd_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        c.kernel.initrd = Some(dir.path().join("nope.cpio"));
        let e = validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("kernel.initrd") && e.contains("nope.cpio"),
            "{e}"
        );
        c.kernel.initrd = None;
        c.kernel.path = dir.path().to_owned();
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("kernel.path")
        );
    }

    #[test]
    fn an_existing_socket_path_or_missing_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        std::fs::write(dir.path().join("control.sock"), b"").unwrap();
        assert!(matches!(
            validate(&c),
            Err(ConfigError::SocketExists { .. })
        ));
        c.control_socket = Some(dir.path().join("no/such/dir/control.sock"));
        assert!(matches!(validate(&c), Err(ConfigError::NoParent { .. })));
    }

    #[test]
    fn device_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = base(dir.path());
        c.devices.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: dir.path().join("v.sock"),
        });
        assert!(matches!(validate(&c), Err(ConfigError::GuestCid(2))));
        c.devices.vsock = None;
        let fs = |tag: &str| FsConfig {
            tag: tag.into(),
            shared_dir: dir.path().to_owned(),
            read_only: false,
        };
        c.devices.fs = vec![fs("bad tag")];
        assert!(matches!(validate(&c), Err(ConfigError::FsTag(_))));
        c.devices.fs = vec![fs("a"), fs("a")];
        assert!(matches!(validate(&c), Err(ConfigError::DuplicateFsTag(_))));
        c.devices.fs = vec![fs("hako-shared")];
        validate(&c).unwrap();
    }
}
