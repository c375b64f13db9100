//! Binds on the runtime's own paths (a bundle's `rootfs`, the scratch directory of an
//! id-mapped overlay's layers), never in a sandbox's share: binds there are made and undone
//! by [`crate::host::share`] alone, relative to descriptors.
//!
//! Every bind is `nodev` and `nosuid`, submounts included: the guest reaches these files
//! through hako-vmm's virtio-fs server, and an image (or a guest) may hold a device node or a
//! setuid-root file. When the sandbox's hako-vmm runs in a user namespace, each bind is also
//! id-mapped to it, as its jail's own binds are.
//!
//! A bind is made detached (`hako_mount`): cloned, its attributes set while no one can see it
//! (the only way to id-map), then attached: it never appears without them.

use std::os::fd::BorrowedFd;
use std::path::Path;

use anyhow::Context;
use nix::mount::{MntFlags, umount2};

/// Binds the directory or file `source` at `target` (created to match), recursively and
/// private (mounts the container makes never go back to the host), `nodev` and `nosuid`,
/// read-only when asked (a volume the spec mounts `ro` is read-only on the host too, so not
/// even a guest kernel that ignores its own `ro` can write), and id-mapped to `userns` if
/// given.
pub fn bind_at(
    source: &Path,
    target: &Path,
    read_only: bool,
    userns: Option<BorrowedFd<'_>>,
) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(source).with_context(|| format!("bind source {}", source.display()))?;
    if meta.is_dir() {
        std::fs::create_dir_all(target)
            .with_context(|| format!("creating {}", target.display()))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // Never truncating what is there.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(target)
            .with_context(|| format!("creating {}", target.display()))?;
    }
    let attrs = hako_mount::BindAttrs::guest_facing(read_only, userns);
    let tree = hako_mount::detached_bind(source, &attrs).with_context(|| match userns {
        Some(_) => "id-mapping it to the sandbox VMM's user namespace (where a file system \
                    cannot be, set [vm] user_namespace = \"off\")"
            .to_owned(),
        None => format!("binding {}", source.display()),
    })?;
    tree.attach(target)
        .with_context(|| format!("binding {} at {}", source.display(), target.display()))
}

/// Why the files at `path` cannot be id-mapped, if this runtime knows they cannot: the file
/// systems without id-mapped mounts that a caller's root file system is likely to be on
/// (overlayfs, whose mounts take no id mapping, and network or FUSE file systems). None
/// for the others (a file system that turns out unable fails the bind, naming it).
pub fn cannot_be_id_mapped(path: &Path) -> Option<String> {
    const OVERLAYFS: i64 = 0x794c_7630;
    const NFS: i64 = 0x6969;
    const FUSE: i64 = 0x6573_5546;
    const CIFS: i64 = 0xff53_4d42;
    const SMB2: i64 = 0xfe53_4d42;
    const V9FS: i64 = 0x0102_1997;
    let stat = nix::sys::statfs::statfs(path).ok()?;
    let name = match stat.filesystem_type().0 {
        OVERLAYFS => "overlayfs",
        NFS => "NFS",
        FUSE => "FUSE",
        CIFS | SMB2 => "SMB",
        V9FS => "9p",
        _ => return None,
    };
    Some(format!(
        "{} is on {name}, which cannot be id-mapped",
        path.display()
    ))
}

/// Detaches the mount at `target` (a runtime-owned path; a symlink there is not followed);
/// logs failures (teardown goes on).
pub fn unbind(target: &Path) {
    if let Err(e) = umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        tracing::warn!("unmounting {}: {e}", target.display());
    }
}
