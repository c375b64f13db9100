//! Binds a bundle's root file system into the sandbox's shared directory, where the agent
//! finds it as `<shared>/<container-id>/rootfs`.
//!
//! Every bind is `nodev` and `nosuid`, submounts included: the guest reaches these files
//! through hako-vmm's virtio-fs server, and an image (or a guest) may hold a device node or a
//! setuid-root file. Through the bind a device node cannot be opened and a setuid bit gives
//! nothing, whoever on the host looks. When the sandbox's hako-vmm runs in a user namespace,
//! each bind is also id-mapped to it, as its jail's own binds are: through the bind the files
//! keep their owners for the VMM (a host root file is its root's), and what the guest writes
//! as uid n lands as uid n (the mount propagates into the jail as it is made).
//!
//! A bind is made with the new mount API: a detached copy of the tree (`open_tree`), its
//! attributes set while no one can see it (`mount_setattr`, the only way to id-map), then
//! attached (`move_mount`): it never appears without them.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Binds `rootfs` at `<shared>/<id>/rootfs` (recursively, private), id-mapped to `userns`
/// if given; returns the target.
pub fn bind(
    rootfs: &Path,
    shared: &Path,
    id: &str,
    userns: Option<BorrowedFd<'_>>,
) -> anyhow::Result<PathBuf> {
    let target = shared.join(id).join("rootfs");
    bind_at(rootfs, &target, false, userns)?;
    Ok(target)
}

/// Binds the directory or file `source` at `target` (created to match), recursively and
/// private, `nodev` and `nosuid`, read-only when asked (a volume the spec mounts `ro` is
/// read-only on the host too, so not even a guest kernel that ignores its own `ro` can
/// write), and id-mapped to `userns` if given.
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
        std::fs::File::create(target).with_context(|| format!("creating {}", target.display()))?;
    }
    let tree = detached_clone(source)?;
    set_attributes(&tree, source, read_only, userns)?;
    attach(tree, target)
        .with_context(|| format!("binding {} at {}", source.display(), target.display()))
}

fn cstring(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{}: a NUL byte in the path", path.display()))
}

/// A detached copy of the mount tree at `source`, submounts included.
fn detached_clone(source: &Path) -> anyhow::Result<OwnedFd> {
    let c = cstring(source)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE;
    // SAFETY: a NUL-terminated path that outlives the call; flags only.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cloning the mounts at {} (open_tree, Linux 5.2 or later)",
                source.display()
            )
        });
    }
    let raw = i32::try_from(fd).context("open_tree returned a descriptor out of range")?;
    // SAFETY: open_tree returned this descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `nodev`, `nosuid` and private propagation (so mounts the container makes never go back
/// to the host), `ro` if asked and the id mapping if given, on every mount of the tree.
fn set_attributes(
    tree: &OwnedFd,
    source: &Path,
    read_only: bool,
    userns: Option<BorrowedFd<'_>>,
) -> anyhow::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    if read_only {
        attr.attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u64::try_from(ns.as_raw_fd()).context("a negative descriptor")?;
    }
    let empty = c"";
    // SAFETY: `tree` is an open mount descriptor, the empty path is NUL-terminated and
    // `attr` (whose size is passed) outlives the call, which only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "making the bind of {} nodev,nosuid{}{} (mount_setattr, Linux 5.12 or later{})",
                source.display(),
                if read_only { ",ro" } else { "" },
                if userns.is_some() {
                    ", id-mapped to the sandbox VMM's user namespace"
                } else {
                    ""
                },
                if userns.is_some() {
                    "; every file system in it must support id-mapped mounts, or set \
                     [vm] user_namespace = \"off\""
                } else {
                    ""
                }
            )
        });
    }
    Ok(())
}

/// Attaches a detached tree at `target`.
fn attach(tree: OwnedFd, target: &Path) -> anyhow::Result<()> {
    let c = cstring(target)?;
    let empty = c"";
    // SAFETY: `tree` is an open mount descriptor; both paths are NUL-terminated and outlive
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("move_mount");
    }
    Ok(())
}

/// Makes `dir` a mount point of its own (a bind onto itself) with shared propagation: mounts
/// made below it later reach the mount namespaces that copied it as slaves (a jailed
/// hako-vmm's). Undo with [`unbind`].
pub fn share_point(dir: &Path) -> anyhow::Result<()> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("binding {} onto itself", dir.display()))?;
    if let Err(e) = mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    ) {
        unbind(dir);
        return Err(e).with_context(|| format!("making {} a shared mount", dir.display()));
    }
    Ok(())
}

/// Detaches a bind made by [`bind`]; logs failures (teardown goes on).
pub fn unbind(target: &Path) {
    if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
        eprintln!("hako: unmounting {}: {e}", target.display());
    }
}
