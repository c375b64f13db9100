//! A process's private view of one directory as its whole file system: the container's
//! stand-in (`cli/stand_in.rs`) shows the container's root file system this way.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{chdir, pivot_root};

#[derive(Debug, thiserror::Error)]
pub enum PrivateRootError {
    #[error("{step} (making {root} the process's root)")]
    Step {
        step: &'static str,
        root: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Moves the calling process (single-threaded: `unshare` of the mount namespace applies to
/// the calling thread only) into a mount namespace of its own whose root is `root` and that
/// holds nothing else: `root` is bound without what is mounted below it, the old root is
/// detached, and mount events of the host reach it only as a slave.
pub fn enter(root: &Path) -> Result<(), PrivateRootError> {
    let step = |step: &'static str| {
        move |source| PrivateRootError::Step {
            step,
            root: root.to_owned(),
            source,
        }
    };
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unsharing the mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(step("making the mounts slaves"))?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("binding the root onto itself"))?;
    chdir(root).map_err(step("entering the root"))?;
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?;
    chdir("/").map_err(step("entering the new root"))?;
    Ok(())
}
