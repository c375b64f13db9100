//! The host side of a sandbox's share: the one place that makes, binds into, unbinds from and
//! removes the tree hako-vmm exports to the guest over virtio-fs. The guest (its kernel may be
//! anything) and a compromised hako-vmm can rewrite whatever they can write there, while this
//! code runs as root in the host's mount namespace; so it never resolves a path there by name
//! with the kernel's default rules.
//!
//! Layout, under a sandbox's directory `<dir>`:
//! ```text
//! <dir>/staging/            the runtime's side: a mount of its own (shared propagation); never
//!                           in hako-vmm's jail, never written by anyone but this module
//! <dir>/shared/             what hako-vmm exports: a read-only peer of staging
//!   <cid>/                  one per container (read-only to the guest)
//!     rootfs                its root file system: a bind, writable
//!     mounts/<n>            its n-th OCI bind mount (volume), read-only if the spec says ro
//! ```
//! The guest writes only inside `rootfs` and writable volumes: each is a mount of its own,
//! so the skeleton around them (the share's root, `<cid>/`, `mounts/`) stays as this module
//! made it (`EROFS`), and no byte of the guest's lands on the host file system holding the
//! state directory (`/run`).
//!
//! How each operation holds even if the tree was rewritten anyway (a compromised VMM):
//! - everything is opened relative to a descriptor of `staging` with `openat2`
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and `RESOLVE_NO_XDEV` where no mount may be
//!   crossed); directories and files are created with `mkdirat`/`O_CREAT | O_EXCL |
//!   O_NOFOLLOW`;
//! - a bind is attached onto the descriptor of the mount point it just made (`move_mount`
//!   with `MOVE_MOUNT_T_EMPTY_PATH`), and its mount id is recorded;
//! - a bind is undone only after the mount found at its place has the recorded id (else it is
//!   looked up by id below the sandbox directory), through `/proc/self/fd/<fd>`, which
//!   unmounts the mount the descriptor holds and nothing else;
//! - mountinfo is read as bytes ([`super::mountinfo`]), and trees are removed without
//!   crossing a mount point or following a symlink ([`super::fs::remove_tree_at`]).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MsFlags, mount};

use super::fs::{
    create_file_at, fd_path, mkdir_at, mount_of, open_beneath, open_dir, remove_tree_at,
    same_file_at, unmount,
};
use super::mountinfo;

/// The runtime's side of the share, in the sandbox directory.
pub const STAGING: &str = "staging";
/// hako-vmm's side (the directory it exports), in the sandbox directory.
pub const SHARED: &str = "shared";
/// A container's root file system, in its directory.
pub const ROOTFS: &str = "rootfs";
/// A container's bind mounts, in its directory.
pub const MOUNTS: &str = "mounts";

/// The size of the sandbox directory's own file system (state, configs, hako-vmm's log
/// (capped at 1 MiB by hako-vmm), the share's skeleton): whatever a compromised hako-vmm
/// writes to its log stays within it, off the host's `/run`.
pub const SANDBOX_TMPFS_SIZE: &str = "16m";

/// How many times [`unmount_tree`] re-reads the mount table (stacked mounts come off one
/// layer a pass).
const UNMOUNT_PASSES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("binding {source_path} into the share at {target}")]
    Bind {
        source_path: PathBuf,
        target: String,
        #[source]
        source: hako_mount::MountError,
    },
    #[error("{0:?} cannot name an entry of a share (one component, not . or ..)")]
    BadName(String),
    #[error("mounts left under {dir} (each checked by its mount id): {left}")]
    Left { dir: PathBuf, left: String },
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> ShareError {
    let action = action.into();
    move |source| ShareError::Io { action, source }
}

/// A bind into the share: where (below `staging`) and which mount it is. It holds the
/// attached tree's descriptor, which keeps the mount (and so its id) alive: the id cannot be
/// given to another mount while the record exists, even if the bind was detached behind the
/// runtime's back.
#[derive(Debug)]
pub struct ShareBind {
    pub rel: PathBuf,
    pub mount_id: u64,
    _pinned: OwnedFd,
}

/// A sandbox's share (see the module's documentation for its layout).
#[derive(Debug)]
pub struct Share {
    /// The sandbox directory.
    dir: PathBuf,
    /// `<dir>/staging`, the root of its mount.
    staging: OwnedFd,
}

impl Share {
    /// Makes `<dir>` a private tmpfs of its own ([`SANDBOX_TMPFS_SIZE`]), then
    /// `<dir>/staging` (a bind onto itself in a peer group of its own) and `<dir>/shared` (a
    /// read-only, nodev, nosuid peer of it). On failure nothing is left.
    ///
    /// `<dir>` is a file system of its own so that what is written there (hako-vmm's log
    /// above all, which a compromised VMM could grow) is bounded and never lands on the host's
    /// `/run`; and it is private because the file system holding it (`/run`) is usually a
    /// shared mount: a mount made below it would be copied, writable, into every namespace
    /// that is its peer or slave (a service's private /run, a pod's hostPath), where the
    /// read-only skeleton would not hold and mounts could be pushed back into the share.
    pub fn create(dir: &Path) -> Result<Arc<Self>, ShareError> {
        let under = open_dir(dir).map_err(io_error(format!("opening {}", dir.display())))?;
        private_tmpfs(dir, under.as_fd())?;
        let dir_fd = match open_dir(dir) {
            Ok(fd) => fd,
            Err(e) => {
                if let Err(left) = unmount_tree(dir, true) {
                    tracing::warn!("{left}");
                }
                return Err(io_error(format!("opening {}", dir.display()))(e));
            }
        };
        for name in [STAGING, SHARED] {
            mkdir_at(dir_fd.as_fd(), OsStr::new(name), 0o755)
                .map_err(io_error(format!("creating {}/{name}", dir.display())))?;
        }
        match Self::mount_both(dir, dir_fd.as_fd()) {
            Ok(staging) => Ok(Arc::new(Self {
                dir: dir.to_owned(),
                staging,
            })),
            Err(e) => {
                if let Err(left) = unmount_tree(dir, false) {
                    tracing::warn!("{left}");
                }
                for name in [SHARED, STAGING] {
                    let _ = remove_tree_at(dir_fd.as_fd(), OsStr::new(name));
                }
                if let Err(left) = unmount_tree(dir, true) {
                    tracing::warn!("{left}");
                }
                Err(e)
            }
        }
    }

    fn mount_both(dir: &Path, dir_fd: BorrowedFd<'_>) -> Result<OwnedFd, ShareError> {
        let sys = |what: &str| {
            let action = format!("{what} in {}", dir.display());
            move |e: nix::Error| ShareError::Io {
                action,
                source: e.into(),
            }
        };
        let open = |name: &str| {
            open_beneath(
                dir_fd,
                Path::new(name),
                libc::O_PATH | libc::O_DIRECTORY,
                false,
            )
            .map_err(io_error(format!("opening {}/{name}", dir.display())))
        };
        let none = None::<&str>;
        let staging_dir = open(STAGING)?;
        let p = fd_path(staging_dir.as_fd());
        mount(Some(&p), &p, none, MsFlags::MS_BIND, none).map_err(sys("binding staging"))?;
        // Reopened: the first descriptor names the directory below the new mount.
        let staging = open(STAGING)?;
        let p = fd_path(staging.as_fd());
        // A peer group of its own, not the one of the file system holding it (/run is
        // often shared with every namespace on the host).
        for (flag, what) in [
            (MsFlags::MS_PRIVATE, "private"),
            (MsFlags::MS_SHARED, "shared"),
        ] {
            mount(none, &p, none, flag, none).map_err(sys(&format!("making staging {what}")))?;
        }
        let shared_dir = open(SHARED)?;
        let q = fd_path(shared_dir.as_fd());
        mount(Some(&p), &q, none, MsFlags::MS_BIND, none).map_err(sys("binding shared"))?;
        let shared = open(SHARED)?;
        let q = fd_path(shared.as_fd());
        let ro = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOSUID;
        mount(none, &q, none, ro, none).map_err(sys("making shared read-only"))?;
        Ok(staging)
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts container `cid`'s part: `<cid>/` and `<cid>/mounts/`. A directory left by an
    /// earlier failed attempt with the same id is removed first.
    pub fn container(self: &Arc<Self>, cid: &str) -> Result<ContainerShare, ShareError> {
        let name = component(cid)?;
        let staging = self.staging.as_fd();
        remove_tree_at(staging, name).map_err(io_error(format!(
            "removing the share's stale directory of container {cid}"
        )))?;
        mkdir_at(staging, name, 0o755).map_err(io_error(format!(
            "creating the share's directory of container {cid}"
        )))?;
        let open = |dir: BorrowedFd<'_>, name: &str| {
            open_beneath(dir, Path::new(name), libc::O_PATH | libc::O_DIRECTORY, true)
                .map_err(io_error(format!("opening {name} in the share")))
        };
        let dir = open(staging, cid)?;
        let mut c = ContainerShare {
            share: self.clone(),
            cid: cid.to_owned(),
            mounts: None,
            dir,
            binds: Vec::new(),
        };
        mkdir_at(c.dir.as_fd(), OsStr::new(MOUNTS), 0o755)
            .map_err(io_error(format!("creating {cid}/{MOUNTS} in the share")))?;
        c.mounts = Some(open(c.dir.as_fd(), MOUNTS)?);
        Ok(c)
    }

    /// Undoes `bind`: the mount at its place if it has the recorded id, else the mount with
    /// that id wherever it is below the sandbox directory; else nothing (it is gone).
    pub fn unbind(&self, bind: &ShareBind) -> Result<(), ShareError> {
        if let Ok(fd) = open_mount_point(self.staging.as_fd(), &bind.rel, true)
            && is_mount(&fd, bind.mount_id)
        {
            return unmount_verified(fd, bind.mount_id, &bind.rel);
        }
        tracing::warn!(
            dir = %self.dir.display(),
            "the share's bind {} (mount {}) is not where it was made; looking for it",
            bind.rel.display(),
            bind.mount_id
        );
        let mounts = mountinfo::read().map_err(io_error("reading this thread's mountinfo"))?;
        let Some(m) = mountinfo::under(&mounts, &self.dir)
            .into_iter()
            .find(|m| m.id == bind.mount_id)
        else {
            return Ok(());
        };
        unmount_checked(&self.dir, &m)
    }
}

/// One container's part of a share; its binds are undone and its directory removed when it
/// is dropped.
#[derive(Debug)]
pub struct ContainerShare {
    share: Arc<Share>,
    cid: String,
    /// `staging/<cid>`.
    dir: OwnedFd,
    /// `staging/<cid>/mounts`.
    mounts: Option<OwnedFd>,
    binds: Vec<ShareBind>,
}

impl ContainerShare {
    /// Binds `source` (a directory) at `<cid>/rootfs`, recursively, private, nodev, nosuid,
    /// id-mapped to `userns` if given.
    pub fn bind_rootfs(
        &mut self,
        source: &Path,
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<(), ShareError> {
        self.bind(None, ROOTFS, source, (false, false), userns)
    }

    /// Binds `source` (a directory or file) at `<cid>/mounts/<n>`, like the root file system,
    /// read-only if asked (then not even a guest kernel that ignores the container's own
    /// `ro` can write through it), and a slave of the source if `from_host` (OCI `rslave`,
    /// Kubernetes' HostToContainer): mounts the host makes below the source later reach the
    /// guest, and there they are mount points the guest cannot remove (a private bind would
    /// not have them, and a guest's rmdir of the directory under one would detach it on the
    /// host). A read-only volume is never a slave: a mount that propagates in later keeps its
    /// own flags (writable, devices, no id mapping), so the guest could write through a
    /// volume the spec made read-only; it is bound private, as Kubernetes' recursive
    /// read-only mounts require propagation None.
    pub fn bind_mount(
        &mut self,
        n: usize,
        source: &Path,
        (read_only, from_host): (bool, bool),
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<(), ShareError> {
        let name = n.to_string();
        if read_only && from_host {
            tracing::info!(
                container_id = %self.cid,
                "volume {} is read-only: bound private, without the host's later mounts",
                source.display()
            );
        }
        let from_host = from_host && !read_only;
        self.bind(Some(MOUNTS), &name, source, (read_only, from_host), userns)
    }

    /// The binds made so far, in order.
    pub fn binds(&self) -> &[ShareBind] {
        &self.binds
    }

    fn bind(
        &mut self,
        sub: Option<&str>,
        name: &str,
        source: &Path,
        (read_only, from_host): (bool, bool),
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<(), ShareError> {
        let rel: PathBuf = [Some(self.cid.as_str()), sub, Some(name)]
            .into_iter()
            .flatten()
            .collect();
        let parent = match sub {
            Some(_) => self.mounts.as_ref().unwrap_or(&self.dir),
            None => &self.dir,
        }
        .as_fd();
        let is_dir = std::fs::metadata(source)
            .map_err(io_error(format!("bind source {}", source.display())))?
            .is_dir();
        let attrs = hako_mount::BindAttrs {
            slave: from_host,
            ..hako_mount::BindAttrs::guest_facing(read_only, userns)
        };
        let bind_error = |source_err| ShareError::Bind {
            source_path: source.to_owned(),
            target: rel.display().to_string(),
            source: source_err,
        };
        let tree = hako_mount::detached_bind(source, &attrs).map_err(bind_error)?;
        let made = if is_dir {
            mkdir_at(parent, OsStr::new(name), 0o755)
        } else {
            create_file_at(parent, OsStr::new(name), 0o644)
        };
        made.map_err(io_error(format!(
            "creating the mount point {} in the share",
            rel.display()
        )))?;
        let target = open_beneath(
            parent,
            Path::new(name),
            libc::O_PATH | libc::O_NOFOLLOW,
            true,
        )
        .map_err(io_error(format!("opening {} in the share", rel.display())))?;
        let attached = tree.attach_to(target.as_fd()).map_err(bind_error)?;
        let id = mount_of(attached.as_fd()).map_err(io_error(format!(
            "reading the mount id of {}",
            rel.display()
        )))?;
        self.binds.push(ShareBind {
            rel,
            mount_id: id.id,
            _pinned: attached,
        });
        Ok(())
    }

    /// Undoes every bind (last first) and removes `<cid>/`; says what it could not undo.
    pub fn remove(mut self) -> Result<(), ShareError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), ShareError> {
        let mut first = None;
        while let Some(b) = self.binds.pop() {
            if let Err(e) = self.share.unbind(&b) {
                first.get_or_insert(e);
            }
        }
        self.mounts = None;
        let staging = self.share.staging.as_fd();
        if let Ok(name) = component(&self.cid)
            && same_file_at(self.dir.as_fd(), staging, name)
            && let Err(e) = remove_tree_at(staging, name)
        {
            first.get_or_insert(ShareError::Io {
                action: format!("removing container {}'s directory in the share", self.cid),
                source: e,
            });
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for ContainerShare {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            tracing::warn!(container_id = %self.cid, "{e}");
        }
    }
}

/// Mounts a tmpfs of its own on the directory `dir` (open as `fd`) and makes it private.
fn private_tmpfs(dir: &Path, fd: BorrowedFd<'_>) -> Result<(), ShareError> {
    let none = None::<&str>;
    let p = fd_path(fd);
    let sys = |what: &str| {
        let action = format!("{what} {}", dir.display());
        move |e: nix::Error| ShareError::Io {
            action,
            source: e.into(),
        }
    };
    let data = format!("size={SANDBOX_TMPFS_SIZE},nr_inodes=4096,mode=0755");
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    mount(Some("hako"), &p, Some("tmpfs"), flags, Some(data.as_str()))
        .map_err(sys("mounting a tmpfs on"))?;
    let top = open_dir(dir).map_err(io_error(format!("opening {}", dir.display())))?;
    let made_private = mount(none, &fd_path(top.as_fd()), none, MsFlags::MS_PRIVATE, none)
        .map_err(sys("making private"));
    if made_private.is_err()
        && let Err(left) = unmount_tree(dir, true)
    {
        tracing::warn!("{left}");
    }
    made_private
}

/// `name` as one path component (a container id names a directory of the share).
fn component(name: &str) -> Result<&OsStr, ShareError> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(c)), None) if c.as_encoded_bytes() == name.as_bytes() => Ok(c),
        _ => Err(ShareError::BadName(name.to_owned())),
    }
}

/// Opens `rel` below `base` as an `O_PATH` descriptor that, when a mount is there, names its
/// root: every component beneath `base`, no symlink (the last one included), mount points
/// crossed only on the way if `!no_xdev` and always at the last component.
fn open_mount_point(base: BorrowedFd<'_>, rel: &Path, no_xdev: bool) -> io::Result<OwnedFd> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => open_beneath(base, p, libc::O_PATH | libc::O_DIRECTORY, no_xdev)?,
        None => open_beneath(base, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, true)?,
    };
    open_beneath(
        parent.as_fd(),
        Path::new(name),
        libc::O_PATH | libc::O_NOFOLLOW,
        false,
    )
}

/// The descriptor names the root of the mount `id`.
fn is_mount(fd: &OwnedFd, id: u64) -> bool {
    matches!(mount_of(fd.as_fd()), Ok(m) if m.root && m.id == id)
}

/// Unmounts `m` (from mountinfo, below `base_dir`) if the mount at its mount point is still
/// that one.
fn unmount_checked(base_dir: &Path, m: &mountinfo::Mount) -> Result<(), ShareError> {
    let Some(parent) = base_dir.parent() else {
        return Err(ShareError::BadName(base_dir.display().to_string()));
    };
    let base = open_dir(parent).map_err(io_error(format!("opening {}", parent.display())))?;
    let rel = m
        .mount_point
        .strip_prefix(parent)
        .map_err(|_| ShareError::BadName(m.mount_point.display().to_string()))?;
    let fd = open_mount_point(base.as_fd(), rel, false).map_err(io_error(format!(
        "opening the mount point {}",
        m.mount_point.display()
    )))?;
    if !is_mount(&fd, m.id) {
        return Err(ShareError::Io {
            action: format!(
                "{} is no longer mount {} (moved while it was looked up)",
                m.mount_point.display(),
                m.id
            ),
            source: io::Error::from_raw_os_error(libc::ESTALE),
        });
    }
    unmount_verified(fd, m.id, &m.mount_point)
}

/// Unmounts through `fd` (checked to name mount `id`) and checks that `id` is gone: a mount
/// stacked on the same place after the check would be taken instead (the kernel resolves
/// the descriptor's place to the top of its stack), which is then an error.
pub fn unmount_verified(fd: OwnedFd, id: u64, what: &Path) -> Result<(), ShareError> {
    unmount(fd).map_err(io_error(format!("unmounting {}", what.display())))?;
    let mounts = mountinfo::read().map_err(io_error("reading this thread's mountinfo"))?;
    if mounts.iter().any(|m| m.id == id) {
        return Err(ShareError::Io {
            action: format!(
                "unmounting {} (mount {id}): a mount stacked on it was taken instead",
                what.display()
            ),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        });
    }
    Ok(())
}

/// Unmounts every mount below `dir` (and `dir` itself if `with_dir`), deepest first, each
/// only after the mount at its mount point proved to be the one mountinfo listed (its id).
/// Fails naming what is left.
pub fn unmount_tree(dir: &Path, with_dir: bool) -> Result<(), ShareError> {
    let mut left = Vec::new();
    for _ in 0..UNMOUNT_PASSES {
        let mounts = mountinfo::read().map_err(io_error("reading this thread's mountinfo"))?;
        left = mountinfo::under(&mounts, dir)
            .into_iter()
            .filter(|m| with_dir || m.mount_point != dir)
            .collect();
        let mut progress = false;
        for m in &left {
            progress |= unmount_checked(dir, m).is_ok();
        }
        if left.is_empty() || !progress {
            break;
        }
    }
    // What the last pass saw may have gone with its parents since.
    let mounts = mountinfo::read().map_err(io_error("reading this thread's mountinfo"))?;
    left.retain(|m| mounts.iter().any(|n| n.id == m.id));
    if left.is_empty() {
        return Ok(());
    }
    Err(ShareError::Left {
        dir: dir.to_owned(),
        left: left
            .iter()
            .map(|m| format!("{} (mount {})", m.mount_point.display(), m.id))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Unmounts everything at and below a sandbox directory by identity and removes it,
/// crossing no mount point that could not be undone and following no symlink.
pub fn remove_dir(dir: &Path) -> Result<(), ShareError> {
    let unmounted = unmount_tree(dir, true);
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(ShareError::BadName(dir.display().to_string()));
    };
    let parent_fd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return unmounted,
        Err(e) => return Err(io_error(format!("opening {}", parent.display()))(e)),
    };
    let removed = remove_tree_at(parent_fd.as_fd(), name)
        .map_err(io_error(format!("removing {}", dir.display())));
    unmounted.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_component() {
        assert!(component("c1").is_ok());
        for bad in ["", ".", "..", "a/b", "a/", "/a"] {
            assert!(component(bad).is_err(), "{bad:?}");
        }
    }
}
