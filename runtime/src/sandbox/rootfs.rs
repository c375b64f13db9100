//! Binds a bundle's root file system into the sandbox's shared directory, where the agent
//! finds it as `<shared>/<container-id>/rootfs`.
//!
//! Every bind is `nodev` and `nosuid`, submounts included: the guest reaches these files
//! through hako-vmm's virtio-fs server, which runs as root on the host, and an image (or a
//! guest) may hold a device node or a setuid-root file. Through the bind a device node cannot
//! be opened and a setuid bit gives nothing, whoever on the host looks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Binds `rootfs` at `<shared>/<id>/rootfs` (recursively, private); returns the target.
pub fn bind(rootfs: &Path, shared: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let target = shared.join(id).join("rootfs");
    bind_at(rootfs, &target, false)?;
    Ok(target)
}

/// Binds the directory or file `source` at `target` (created to match), recursively and
/// private, `nodev` and `nosuid`, and read-only when asked (a volume the spec mounts `ro` is
/// read-only on the host too, so not even a guest kernel that ignores its own `ro` can write).
pub fn bind_at(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<()> {
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
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("binding {} at {}", source.display(), target.display()))?;
    // Private, so mounts the container makes never propagate back to the host.
    if let Err(e) = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    ) {
        unbind(target);
        return Err(e).with_context(|| format!("making {} private", target.display()));
    }
    if let Err(e) = harden(target, read_only) {
        unbind(target);
        return Err(e);
    }
    Ok(())
}

/// Adds `nodev` and `nosuid` (and `ro` if asked) to the mount at `target` and every mount
/// below it.
#[allow(unsafe_code)]
fn harden(target: &Path, read_only: bool) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .with_context(|| format!("{}: a NUL byte in the path", target.display()))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOSUID
            | if read_only {
                libc::MOUNT_ATTR_RDONLY
            } else {
                0
            },
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is NUL-terminated and `attr` lives across the call, whose size it is
    // given; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "making {} nodev,nosuid{} (mount_setattr, Linux 5.12 or later)",
                target.display(),
                if read_only { ",ro" } else { "" }
            )
        });
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
