//! Binds a bundle's root file system into the sandbox's shared directory, where the agent
//! finds it as `<shared>/<container-id>/rootfs`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Binds `rootfs` at `<shared>/<id>/rootfs` (recursively, private); returns the target.
pub fn bind(rootfs: &Path, shared: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let target = shared.join(id).join("rootfs");
    bind_at(rootfs, &target)?;
    Ok(target)
}

/// Binds the directory or file `source` at `target` (created to match), recursively and
/// private.
pub fn bind_at(source: &Path, target: &Path) -> anyhow::Result<()> {
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
    Ok(())
}

/// Detaches a bind made by [`bind`]; logs failures (teardown goes on).
pub fn unbind(target: &Path) {
    if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
        eprintln!("hako: unmounting {}: {e}", target.display());
    }
}
