//! Mounts the agent makes in a container's root before libcontainer runs: the spec's tmpfs and
//! devpts mounts, which do not depend on the container's namespaces (proc needs its PID
//! namespace, sysfs its network namespace, mqueue its IPC namespace, cgroup its cgroup
//! namespace; those stay with libcontainer). libcontainer resolves each destination through
//! pathrs, re-opening through /proc and re-checking its procfs handle at every step (~55
//! system calls a mount, each an emulated kernel entry in this machine's guests); here each
//! destination is resolved once with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` in the
//! container's root, so a symlink in the image is followed inside that root and never out of
//! it, missing directories are made one at a time and reopened without following symlinks,
//! and the file system is made detached (`fsopen`, `fsmount`) and attached to that descriptor
//! with `move_mount`. The container's mount namespace, made by libcontainer afterwards, starts
//! as a copy of the agent's and its root bind is recursive, so the container sees these
//! mounts where the spec put them. Before that the agent binds the root at a short path of its
//! own (`<state dir>-<id>`, beside the state directory) and hands libcontainer that path, which
//! it resolves with realpath(3) once per device node it makes. A directory under a tmpfs the
//! agent has just made (/dev/pts under /dev) is made in that tmpfs directly. The agent undoes
//! it all when the container is removed or its creation fails: one lazy unmount of the bind,
//! or, without one, each mount by identity (through the mount's own descriptor).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

/// Why the agent could not make a mount itself (libcontainer then makes them all).
#[derive(Debug, thiserror::Error)]
pub enum PremountError {
    #[error("{what} {path} in the container's root")]
    Op {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying up what the image has at {path} (tmpcopyup)")]
    CopyUp {
        path: PathBuf,
        #[source]
        source: super::copy_up::CopyUpError,
    },
}

fn op(what: &'static str, path: &Path) -> impl FnOnce(Errno) -> PremountError {
    let path = path.to_owned();
    move |e| PremountError::Op {
        what,
        path,
        source: e.into(),
    }
}

/// The mounts the agent made for a container's root, undone (most recent first) when dropped:
/// the root's bind at a short path, if made, and the spec's mounts made in the root.
#[derive(Debug, Default)]
pub struct RootMounts {
    bind: Option<PathBuf>,
    mounts: Vec<(PathBuf, OwnedFd)>,
}

impl RootMounts {
    pub fn is_empty(&self) -> bool {
        self.bind.is_none() && self.mounts.is_empty()
    }

    /// Undoes the mounts. Under a bind, the spec's mounts are in the bind's tree, so one lazy
    /// unmount of the bind (its path is the agent's own, nothing in the image names it) takes
    /// them all; without one, each is unmounted by identity: the path of its own descriptor in
    /// /proc names that mount and no other, whatever the container did to its root's tree.
    pub fn unmount(&mut self) {
        if let Some(bind) = self.bind.take() {
            if let Err(e) = rustix::mount::unmount(&bind, rustix::mount::UnmountFlags::DETACH) {
                tracing::warn!(path = %bind.display(), error = %e, "unmounting a container's root bind");
            } else if let Err(e) =
                rustix::fs::unlinkat(rustix::fs::CWD, &bind, rustix::fs::AtFlags::REMOVEDIR)
            {
                tracing::warn!(path = %bind.display(), error = %e, "removing a container's root bind point");
            }
            self.mounts.clear();
            return;
        }
        while let Some((dest, fd)) = self.mounts.pop() {
            let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
            if let Err(e) =
                rustix::mount::unmount(by_fd.as_str(), rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!(destination = %dest.display(), error = %e, "unmounting a container root mount");
            }
        }
    }
}

impl Drop for RootMounts {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Mount flags the agent applies itself (as mount attributes); any other flag (bind, remount,
/// propagation, sync, mand) leaves the mount to libcontainer.
const ATTR_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Whether the spec lets the agent make any mount itself: a mount namespace of the container's
/// own, no user namespace (its mounts belong to it), no SELinux label, no shared root.
fn spec_allows(spec: &Spec) -> bool {
    let Some(linux) = spec.linux() else {
        return false;
    };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let has = |t| namespaces.iter().any(|n| n.typ() == t);
    has(LinuxNamespaceType::Mount)
        && !has(LinuxNamespaceType::User)
        && linux.mount_label().is_none()
        && linux.uid_mappings().is_none()
        && !matches!(linux.rootfs_propagation().as_deref(), Some("shared"))
}

/// A destination the agent resolves itself: absolute, plain components, not `/` and not
/// under /proc or /sys (libcontainer's checks there stay its own).
fn plain_destination(dest: &Path) -> bool {
    let mut components = dest.components();
    if components.next() != Some(Component::RootDir) {
        return false;
    }
    let rest: Vec<_> = components.collect();
    !rest.is_empty()
        && rest.iter().all(|c| matches!(c, Component::Normal(_)))
        && !matches!(rest[0], Component::Normal(n) if n == "proc" || n == "sys")
        && dest.as_os_str().len() < 4096
}

/// Options of a tmpfs or devpts the agent acts on itself rather than passes to the kernel:
/// private propagation (every mount the agent attaches is private: nothing in the guest makes
/// mounts shared) and tmpcopyup (see `copy_up.rs`).
const AGENT_OPTIONS: &[&str] = &["private", "rprivate", super::copy_up::OPTION];

/// `m` without the options the agent acts on itself.
fn kernel_options(m: &Mount) -> Mount {
    let mut m = m.clone();
    if let Some(o) = m.options().clone() {
        m.set_options(Some(
            o.into_iter()
                .filter(|o| !AGENT_OPTIONS.contains(&o.as_str()))
                .collect(),
        ));
    }
    m
}

/// Whether the agent can make `m` itself (its type, options and destination).
fn agent_can_make(m: &Mount) -> bool {
    let m = &kernel_options(m);
    if !matches!(m.typ().as_deref(), Some("tmpfs" | "devpts"))
        || !plain_destination(m.destination())
    {
        return false;
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return false;
    }
    let options = m.options().clone().unwrap_or_default();
    // Binds, remounts and propagation stay libcontainer's (its parser passes some of these
    // through as data).
    const NOT_OURS: &[&str] = &[
        "bind",
        "rbind",
        "remount",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    ];
    if options
        .iter()
        .any(|o| o.is_empty() || o.contains("idmap") || NOT_OURS.contains(&o.as_str()))
    {
        return false;
    }
    match libcontainer::rootfs::utils::parse_mount(m) {
        Ok(c) => c.rec_attr.is_none() && ATTR_FLAGS.contains(c.flags),
        Err(_) => false,
    }
}

/// Which of `mounts` the agent makes: those it can make whose destinations are unrelated (not
/// the same, not one under the other) to every earlier mount libcontainer keeps, so the order
/// in which mounts cover each other stays the spec's.
fn plan(mounts: &[Mount]) -> Vec<bool> {
    let mut kept: Vec<&Path> = Vec::new();
    mounts
        .iter()
        .map(|m| {
            let dest = m.destination().as_path();
            let take = agent_can_make(m)
                && kept
                    .iter()
                    .all(|k| !k.starts_with(dest) && !dest.starts_with(k));
            if !take {
                kept.push(dest);
            }
            take
        })
        .collect()
}

/// Opens directory `dest` inside `root` (an `O_PATH` descriptor), making missing directories.
/// Symlinks in the existing part are followed as if `root` were `/` (`RESOLVE_IN_ROOT`), never
/// out of it, and never through /proc magic links; each directory made is reopened without
/// following any symlink, so one swapped in after the `mkdirat` is not followed either.
pub fn open_dir_in_root(root: &OwnedFd, dest: &Path) -> Result<OwnedFd, PremountError> {
    let in_root = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let open = |parts: &[Component<'_>]| {
        let rel: PathBuf = parts.iter().collect();
        let rel = if parts.is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        rustix::fs::openat2(root, &rel, flags, Mode::empty(), in_root)
    };
    let parts: Vec<Component<'_>> = dest
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    // The whole path first: a destination that exists costs one call.
    let mut existing = parts.len();
    let mut dir = loop {
        match open(&parts[..existing]) {
            Ok(fd) => break fd,
            Err(Errno::NOENT) if existing > 0 => existing -= 1,
            Err(e) => return Err(op("resolving", dest)(e)),
        }
    };
    for part in &parts[existing..] {
        match rustix::fs::mkdirat(&dir, part.as_os_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(op("making a directory of", dest)(e)),
        }
        dir = rustix::fs::openat2(
            &dir,
            part.as_os_str(),
            flags | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
        )
        .map_err(op("opening a directory made for", dest))?;
    }
    Ok(dir)
}

/// Makes `m`'s file system, detached, with its options and attributes.
fn make(m: &Mount) -> Result<OwnedFd, PremountError> {
    let m = &kernel_options(m);
    let dest = m.destination().as_path();
    let typ = m.typ().as_deref().unwrap_or_default();
    let config = libcontainer::rootfs::utils::parse_mount(m).map_err(|e| PremountError::Op {
        what: "parsing the options of",
        path: dest.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let fs = rustix::mount::fsopen(typ, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(op("opening a file system for", dest))?;
    let source = m
        .source()
        .as_ref()
        .map_or(typ.into(), |s| s.as_os_str().to_owned());
    rustix::mount::fsconfig_set_string(&fs, "source", source.as_os_str())
        .map_err(op("configuring the mount on", dest))?;
    // devpts' "newinstance" is accepted and ignored by the kernel (every devpts mount has been
    // a new instance since Linux 4.7) and not shown in the mount's options: not sent.
    let ignored = |o: &str| typ == "devpts" && o == "newinstance";
    for o in config.data.iter().filter(|o| !o.is_empty() && !ignored(o)) {
        match o.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v),
            None => rustix::mount::fsconfig_set_flag(&fs, o.as_str()),
        }
        .map_err(op("configuring the mount on", dest))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(op("creating the file system for", dest))?;
    let mut flags = config.flags;
    if dest == Path::new("/dev") {
        // As libcontainer does: /dev is never read-only (device nodes are made in it).
        flags.remove(MsFlags::MS_RDONLY);
    }
    let mut attrs = MountAttrFlags::empty();
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (
            MsFlags::MS_STRICTATIME,
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
        ),
        (
            MsFlags::MS_NODIRATIME,
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
        ),
    ] {
        if flags.contains(ms) {
            attrs |= attr;
        }
    }
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(op("mounting", dest))
}

/// Whether the tmpfs `m` starts with a copy of what the image has at its destination.
fn copies_up(m: &Mount) -> bool {
    m.options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == super::copy_up::OPTION))
}

/// Makes directory `dest` (relative, plain components) in `fresh`, the root of a tmpfs the
/// agent has just made and nothing else has written to: no symlink can be there to resolve,
/// so each directory is made where it is (`mkdirat`), its parents opened with an `openat2`
/// that follows no symlink and crosses no mount, with no walk from the container's root.
/// Returns the last directory's parent (None: `fresh` itself) and name, for `move_mount` to
/// attach to by name: that lookup follows no symlink in its last component and a directory
/// tree never mounts on anything but a directory.
fn make_dir_in_fresh<'a>(
    fresh: &OwnedFd,
    dest: &'a Path,
    full: &Path,
) -> Result<(Option<OwnedFd>, &'a std::ffi::OsStr), PremountError> {
    let parts: Vec<_> = dest.components().map(|c| c.as_os_str()).collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err(PremountError::Op {
            what: "resolving",
            path: full.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    };
    let mkdir = |at: &OwnedFd, part: &std::ffi::OsStr| {
        let made = rustix::fs::mkdirat(at, part, Mode::from_raw_mode(0o755));
        match made {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(op("making a directory of", full)(e)),
        }
    };
    let mut dir: Option<OwnedFd> = None;
    for part in parents {
        let at = dir.as_ref().unwrap_or(fresh);
        mkdir(at, part)?;
        dir = Some(
            rustix::fs::openat2(
                at,
                *part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
            )
            .map_err(op("opening a directory made for", full))?,
        );
    }
    mkdir(dir.as_ref().unwrap_or(fresh), last)?;
    Ok((dir, last))
}

/// Binds the container's root at `short`, a path of the agent's own with fewer components:
/// libcontainer resolves its root with realpath(3), a readlink per component, in its worker
/// and again for each device node its init makes (~16 calls a container for a root at
/// `/hako-shared/<id>/rootfs`). The bind is recursive (storages mounted in the root come
/// along); `short` must not exist yet (nothing there is followed or reused).
fn bind_root(root: &Path, short: &Path) -> Result<(), PremountError> {
    rustix::fs::mkdir(short, Mode::from_raw_mode(0o700))
        .map_err(op("making the bind point", short))?;
    rustix::mount::mount_bind_recursive(root, short).map_err(|e| {
        let _ = rustix::fs::unlinkat(rustix::fs::CWD, short, rustix::fs::AtFlags::REMOVEDIR);
        op("binding the root at", short)(e)
    })
}

/// Prepares a container's root for libcontainer: binds it at `short` when given (the spec's
/// root then names the bind), and makes the mounts of `spec` the agent can make in it, taking
/// them out of the spec. When a mount fails, those made are undone and the spec keeps its
/// mounts (libcontainer then makes every mount, with its own checks); when the bind fails the
/// root stays where it is.
pub fn premount(spec: &mut Spec, root: &Path, short: Option<&Path>) -> RootMounts {
    let mut made = RootMounts::default();
    let mut root = root;
    if let Some(short) = short {
        match bind_root(root, short) {
            Ok(()) => {
                made.bind = Some(short.to_owned());
                root = short;
                if let Some(mut r) = spec.root().clone() {
                    r.set_path(short.to_owned());
                    spec.set_root(Some(r));
                }
            }
            Err(e) => tracing::warn!(error = %e, "the container's root stays at its own path"),
        }
    }
    made.mounts = make_mounts(spec, root);
    made
}

/// Makes the mounts of `spec` the agent can make in `root` and takes them out of the spec; on
/// a failure undoes those made, leaves the spec whole and returns none.
fn make_mounts(spec: &mut Spec, root: &Path) -> Vec<(PathBuf, OwnedFd)> {
    let Some(mounts) = spec.mounts().clone() else {
        return Vec::new();
    };
    if !spec_allows(spec) {
        return Vec::new();
    }
    let take = plan(&mounts);
    if !take.contains(&true) {
        return Vec::new();
    }
    // Unmounted by identity if dropped before the spec is changed.
    let mut made = RootMounts::default();
    // Whether each mount made is a tmpfs (one made here is fresh: see make_dir_in_fresh).
    let mut tmpfs: Vec<bool> = Vec::new();
    let result = (|| {
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(op("opening", Path::new("/")))?;
        for (m, _) in mounts.iter().zip(&take).filter(|(_, t)| **t) {
            let dest = m.destination().as_path();
            // The latest mount made here at or above `dest` is the one `dest` resolves in.
            let under = made.mounts.iter().rposition(|(d, _)| dest.starts_with(d));
            let mnt = make(m)?;
            let empty = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
            match under {
                Some(i) if tmpfs[i] && made.mounts[i].0 != dest => {
                    let (above, fresh) = &made.mounts[i];
                    let rest = dest.strip_prefix(above).unwrap_or(dest);
                    let (parent, name) = make_dir_in_fresh(fresh, rest, dest)?;
                    let at = parent.as_ref().unwrap_or(fresh);
                    rustix::mount::move_mount(mnt.as_fd(), "", at.as_fd(), name, empty)
                }
                _ => {
                    let target = open_dir_in_root(&root_fd, dest)?;
                    if copies_up(m) {
                        super::copy_up::copy_tree(target.as_fd(), mnt.as_fd()).map_err(
                            |source| PremountError::CopyUp {
                                path: dest.to_owned(),
                                source,
                            },
                        )?;
                    }
                    let flags = empty | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
                    rustix::mount::move_mount(mnt.as_fd(), "", target.as_fd(), "", flags)
                }
            }
            .map_err(op("attaching the mount on", dest))?;
            made.mounts.push((dest.to_owned(), mnt));
            tmpfs.push(m.typ().as_deref() == Some("tmpfs"));
        }
        Ok::<(), PremountError>(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "the agent's own mounts failed; libcontainer makes them");
        return Vec::new();
    }
    let rest: Vec<Mount> = mounts
        .into_iter()
        .zip(take)
        .filter_map(|(m, t)| (!t).then_some(m))
        .collect();
    spec.set_mounts(Some(rest));
    std::mem::take(&mut made.mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mounts(json: &str) -> Vec<Mount> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_namespace_free_mounts_unrelated_to_earlier_kept_ones_are_taken() {
        let m = mounts(
            r#"[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/dev/mqueue/x", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/proc/acpi", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["rprivate"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["rro"]},
            {"destination": "/a/../b", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "bind", "source": "/x", "options": ["rbind"]},
            {"destination": "/shm", "type": "tmpfs", "source": "shm", "options": ["ro", "nodev", "size=1m"]}
        ]"#,
        );
        assert_eq!(
            plan(&m),
            [
                false, true, true, false, false, false, false, true, false, false, false, true
            ]
        );
    }

    #[test]
    fn specs_with_a_user_namespace_or_no_mount_namespace_are_left_whole() {
        let spec = |ns: &str| -> Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.0.2","root":{{"path":"r"}},"linux":{{"namespaces":[{ns}]}}}}"#
            ))
            .unwrap()
        };
        assert!(spec_allows(&spec(r#"{"type":"mount"},{"type":"pid"}"#)));
        assert!(!spec_allows(&spec(r#"{"type":"pid"}"#)));
        assert!(!spec_allows(&spec(r#"{"type":"mount"},{"type":"user"}"#)));
    }

    /// The protection moved out of libcontainer: a mount destination that is a symlink to a
    /// directory outside the container's root (absolute or climbing) resolves inside the root,
    /// and whatever is made is made there, never outside.
    #[test]
    fn symlinked_destinations_never_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dev")).unwrap();
        std::os::unix::fs::symlink("../../../outside", root.join("var")).unwrap();
        std::fs::create_dir(root.join("run")).unwrap();
        std::os::unix::fs::symlink("/outside", root.join("run/lock")).unwrap();
        // The links' targets as the container sees them exist inside the root too.
        let outside_in_root = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&outside_in_root).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        let root_fd =
            rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();

        for (dest, made_in_root) in [
            ("/dev/pts", outside_in_root.join("pts")),
            ("/var", root.join("outside")),
            ("/run/lock/x", root.join("outside/x")),
        ] {
            let fd = open_dir_in_root(&root_fd, Path::new(dest)).unwrap();
            let got = rustix::fs::fstat(&fd).unwrap();
            let want = std::fs::metadata(&made_in_root).unwrap_or_else(|e| {
                panic!(
                    "{dest}: nothing made inside the root at {}: {e}",
                    made_in_root.display()
                )
            });
            assert_eq!((got.st_dev, got.st_ino), (want.dev(), want.ino()), "{dest}");
        }
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing was made outside the root"
        );
    }

    #[test]
    fn directories_in_a_fresh_tmpfs_are_made_in_place_and_named_for_the_attach() {
        let dir = tempfile::tempdir().unwrap();
        let fresh =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let full = Path::new("/dev/a/b");
        let (parent, name) = make_dir_in_fresh(&fresh, Path::new("a/b"), full).unwrap();
        assert_eq!(name, "b");
        let got = rustix::fs::fstat(parent.as_ref().unwrap()).unwrap();
        let want = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!((got.st_dev, got.st_ino), (want.dev(), want.ino()));
        assert!(dir.path().join("a/b").is_dir());
        let (parent, name) = make_dir_in_fresh(&fresh, Path::new("pts"), full).unwrap();
        assert!(parent.is_none() && name == "pts" && dir.path().join("pts").is_dir());
        // Were a symlink there after all, it is not followed.
        std::os::unix::fs::symlink("/", dir.path().join("l")).unwrap();
        assert!(make_dir_in_fresh(&fresh, Path::new("l/x"), full).is_err());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("a")).unwrap();
        // A dangling link (its target missing even inside the root) where a directory is to
        // be made: mkdirat finds it there and the reopen refuses to follow it.
        std::os::unix::fs::symlink("/nowhere", root.join("a/b")).unwrap();
        let root_fd =
            rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(open_dir_in_root(&root_fd, Path::new("/a/b/c")).is_err());
        assert!(!root.join("nowhere").exists());
    }
}
