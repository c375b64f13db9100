//! A process's private view of one directory as its whole file system: the container's
//! stand-in (`cli/stand_in.rs`) shows the container's root file system this way. That tree is
//! the guest's to write, and root tools on the host enter this view (`podman cp` setns-es into
//! its mount namespace and execs `/proc/self/exe` there), so nothing in it may run: the root
//! is bound `noexec,nosuid,nodev`, and /proc and /dev are empty read-only tmpfs (a file the
//! guest planted at `/proc/self/exe` is covered; a host procfs would lead back out to the
//! host). The process also gets network, IPC and UTS namespaces of its own, so a caller that
//! configures "the container's" network through its pid (Docker's libnetwork hook) changes an
//! empty namespace, never the host's.

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

/// What the root and the covers are mounted with: nothing there runs.
const INERT: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Moves the calling process (single-threaded: `unshare` applies to the calling thread only)
/// into namespaces of its own whose root is `root`, holding nothing else: `root` is bound
/// without what is mounted below it and inert, the old root is detached, /proc and /dev are
/// covered, and mount events of the host reach it only as a slave.
pub fn enter(root: &Path) -> Result<(), PrivateRootError> {
    let step = |step: &'static str| {
        move |source| PrivateRootError::Step {
            step,
            root: root.to_owned(),
            source,
        }
    };
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(step("unsharing the namespaces"))?;
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
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | INERT,
        None::<&str>,
    )
    .map_err(step("making the root noexec, nosuid, nodev"))?;
    chdir(root).map_err(step("entering the root"))?;
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?;
    chdir("/").map_err(step("entering the new root"))?;
    // From here every path resolves inside the new root (a symlink the guest made there
    // included), so the covers land inside it whatever the guest put at these names.
    for dir in ["/proc", "/dev"] {
        match nix::unistd::mkdir(dir, nix::sys::stat::Mode::from_bits_truncate(0o555)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(step("making a directory to cover")(e)),
        }
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | INERT,
            Some("size=4k,mode=0555"),
        )
        .map_err(step("covering /proc and /dev"))?;
    }
    Ok(())
}
