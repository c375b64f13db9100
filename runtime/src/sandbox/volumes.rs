//! What a container needs from the host, shared into its sandbox: the bundle's root file
//! system and every bind mount (hostPath, configMap, secret, emptyDir, /etc/hosts...) bound
//! under `<shared>/<container-id>/`, and its OCI config rewritten to the guest's paths.
//! `/dev/shm` becomes a tmpfs made in the guest.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use hako_agent_api::SHARED_FS_MOUNT_POINT;
use serde_json::{Value, json};

use crate::host::share::{ContainerShare, MOUNTS, Share};

/// The host path of the bundle's root file system.
pub fn host_rootfs(spec: &Value, bundle: &Path) -> anyhow::Result<PathBuf> {
    let root = spec
        .pointer("/root/path")
        .and_then(Value::as_str)
        .context("the OCI config has no root.path")?;
    let path = if Path::new(root).is_absolute() {
        PathBuf::from(root)
    } else {
        bundle.join(root)
    };
    if !path.is_dir() {
        bail!("root.path {} is not a directory", path.display());
    }
    Ok(path)
}

/// Binds `cid`'s root file system and bind mounts into the sandbox's share (id-mapped to
/// the sandbox VMM's user namespace `userns`, when it has one, but for a root file system
/// whose layers are id-mapped already) and rewrites `spec` to the paths the guest sees. The
/// binds are undone when the returned part of the share is dropped.
pub fn share(
    spec: &mut Value,
    bundle: &Path,
    share: &Arc<Share>,
    cid: &str,
    userns: Option<BorrowedFd<'_>>,
    rootfs_id_mapped: bool,
) -> anyhow::Result<ContainerShare> {
    let rootfs = host_rootfs(spec, bundle)?;
    let mut part = share
        .container(cid)
        .with_context(|| format!("sharing container {cid}'s files"))?;
    let rootfs_userns = userns.filter(|_| !rootfs_id_mapped);
    part.bind_rootfs(&rootfs, rootfs_userns)
        .with_context(|| format!("sharing the root file system {}", rootfs.display()))?;
    if let Some(r) = spec.pointer_mut("/root/path") {
        *r = Value::String("rootfs".into());
    }
    let guest_dir = Path::new(SHARED_FS_MOUNT_POINT).join(cid).join(MOUNTS);
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(part);
    };
    for (n, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        if m.get("destination").and_then(Value::as_str) == Some("/dev/shm") {
            *m = guest_shm();
            continue;
        }
        let source = m
            .get("source")
            .and_then(Value::as_str)
            .with_context(|| format!("mount {n} is a bind without a source"))?;
        part.bind_mount(
            n,
            Path::new(source),
            (is_read_only(m), from_host(m)),
            userns,
        )
        .with_context(|| format!("sharing bind mount {source}"))?;
        m["source"] = Value::String(guest_dir.join(n.to_string()).display().to_string());
    }
    Ok(part)
}

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// A mount whose options ask for the host's later mounts below it (`rslave`, `slave`, and
/// `rshared`/`shared`, which a VM can honour only from host to guest).
fn from_host(m: &Value) -> bool {
    m.get("options").and_then(Value::as_array).is_some_and(|o| {
        o.iter()
            .any(|x| matches!(x.as_str(), Some("rslave" | "slave" | "rshared" | "shared")))
    })
}

/// A mount whose options say `ro`.
fn is_read_only(m: &Value) -> bool {
    m.get("options")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|x| x == "ro"))
}

fn guest_shm() -> Value {
    json!({
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = json!({"root": {"path": "nope"}});
        let e = host_rootfs(&spec, dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(host_rootfs(&json!({}), dir.path()).is_err());
    }

    #[test]
    fn propagation_from_the_host_is_recognised() {
        assert!(from_host(&json!({"options": ["rbind", "rslave"]})));
        assert!(from_host(&json!({"options": ["rbind", "rshared"]})));
        assert!(!from_host(&json!({"options": ["rbind", "rprivate"]})));
        assert!(!from_host(&json!({"type": "bind"})));
    }

    #[test]
    fn read_only_binds_are_recognised() {
        assert!(is_read_only(&json!({"options": ["rbind", "ro"]})));
        assert!(!is_read_only(&json!({"options": ["rbind", "rw"]})));
        assert!(!is_read_only(&json!({"type": "bind"})));
    }

    #[test]
    fn binds_are_recognised_by_type_or_option() {
        assert!(is_bind(&json!({"type": "bind"})));
        assert!(is_bind(
            &json!({"type": "none", "options": ["rbind", "ro"]})
        ));
        assert!(!is_bind(&json!({"type": "tmpfs", "options": ["nosuid"]})));
    }
}
