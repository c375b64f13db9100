//! Bind mounts made detached, with Linux's new mount API: `open_tree` clones a tree no one can
//! see yet, `mount_setattr` sets its attributes (read-only, nodev, nosuid, private, an id
//! mapping, which only a detached tree can take), `move_mount` attaches it. A bind so made
//! never appears without its attributes, and one that cannot take them (a file system without
//! id-mapped mounts) fails before anything was attached. Used by hako-vmm's jail (its binds)
//! and by the runtime (containers' binds into a sandbox's share), which must agree on how an
//! id-mapped bind is made.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `<linux/mount.h>` values libc does not carry on every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (its first version, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Errors making a bind; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}: a NUL byte in the path")]
    Nul(PathBuf),
    #[error("cloning the mounts at {path} (open_tree, Linux 5.2 or later)")]
    Clone {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "setting {attrs} on the bind of {path} (mount_setattr, Linux 5.12 or later{})",
        if *.id_mapped { "; an id mapping needs a file system that supports id-mapped mounts" } else { "" }
    )]
    SetAttr {
        path: PathBuf,
        attrs: String,
        id_mapped: bool,
        #[source]
        source: io::Error,
    },
    #[error("attaching the bind at {target} (move_mount)")]
    Attach {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching the bind of {source_path} onto a mount point held open (move_mount)")]
    AttachFd {
        source_path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a bind is to be.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindAttrs<'a> {
    /// With the mounts below the source.
    pub recursive: bool,
    pub read_only: bool,
    pub nodev: bool,
    pub nosuid: bool,
    /// Private propagation: no mount made later on either side reaches the other. Otherwise
    /// the clone keeps its source's (a slave stays a slave and receives its master's mounts).
    pub private: bool,
    /// Slave propagation (wins over `private`): mounts made later below the source (on a
    /// shared mount) reach the bind, nothing made below the bind goes back.
    pub slave: bool,
    /// Id-mapped like this user namespace (its ids as the files' owners are seen and
    /// written through the bind).
    pub idmap: Option<BorrowedFd<'a>>,
}

impl<'a> BindAttrs<'a> {
    /// A bind whose files a guest reaches (a container's root or volume): recursive,
    /// private, nodev and nosuid (submounts included), read-only if asked, id-mapped like
    /// `idmap` if given.
    pub fn guest_facing(read_only: bool, idmap: Option<BorrowedFd<'a>>) -> Self {
        Self {
            recursive: true,
            read_only,
            nodev: true,
            nosuid: true,
            private: true,
            slave: false,
            idmap,
        }
    }

    /// The attributes in words, for messages.
    fn describe(&self) -> String {
        let words = [
            (self.read_only, "ro"),
            (self.nodev, "nodev"),
            (self.nosuid, "nosuid"),
            (self.private && !self.slave, "private"),
            (self.slave, "slave"),
            (self.idmap.is_some(), "an id mapping"),
        ];
        let set: Vec<&str> = words
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
        set.join(",")
    }
}

/// A tree cloned and set, not attached yet; dropped unattached, it vanishes.
#[derive(Debug)]
pub struct DetachedBind {
    tree: OwnedFd,
    source: PathBuf,
}

fn cstring(path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::Nul(path.to_owned()))
}

/// Clones the mount tree at `source` (the file or directory, with what is mounted below it
/// if `attrs.recursive`) and sets `attrs` on every mount of the clone.
pub fn detached_bind(source: &Path, attrs: &BindAttrs<'_>) -> Result<DetachedBind, MountError> {
    let c = cstring(source)?;
    let rec = if attrs.recursive { AT_RECURSIVE } else { 0 };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec;
    // SAFETY: a NUL-terminated path that outlives the call; flags only.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let clone_err = || MountError::Clone {
        path: source.to_owned(),
        source: io::Error::last_os_error(),
    };
    if fd < 0 {
        return Err(clone_err());
    }
    let raw = i32::try_from(fd).map_err(|_| clone_err())?;
    // SAFETY: open_tree returned this descriptor, which nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    for (on, bit) in [
        (attrs.read_only, MOUNT_ATTR_RDONLY),
        (attrs.nodev, MOUNT_ATTR_NODEV),
        (attrs.nosuid, MOUNT_ATTR_NOSUID),
    ] {
        if on {
            attr.attr_set |= bit;
        }
    }
    if attrs.slave {
        attr.propagation = libc::MS_SLAVE;
    } else if attrs.private {
        attr.propagation = libc::MS_PRIVATE;
    }
    if let Some(ns) = attrs.idmap {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u64::from(ns.as_raw_fd().unsigned_abs());
    }
    if attr.attr_set != 0 || attr.propagation != 0 {
        let empty = c"";
        // SAFETY: `tree` is an open mount descriptor, the empty path is NUL-terminated and
        // `attr` (whose size is passed) outlives the call, which only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | rec,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(MountError::SetAttr {
                path: source.to_owned(),
                attrs: attrs.describe(),
                id_mapped: attrs.idmap.is_some(),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(DetachedBind {
        tree,
        source: source.to_owned(),
    })
}

impl DetachedBind {
    /// Attaches the tree at `target` (an existing directory or file to mount over).
    pub fn attach(self, target: &Path) -> Result<(), MountError> {
        let c = cstring(target)?;
        self.move_to(libc::AT_FDCWD, &c, 0)
            .map(drop)
            .map_err(|source| MountError::Attach {
                target: target.to_owned(),
                source,
            })
    }

    /// Attaches the tree onto `target`, a descriptor (`O_PATH` will do) of the directory or
    /// file to mount over: no path is resolved, so the bind lands on that very inode however
    /// the tree around it was renamed since it was opened. Returns the tree's descriptor,
    /// which now names the attached mount (its root), for the caller to learn its mount id.
    pub fn attach_to(self, target: BorrowedFd<'_>) -> Result<OwnedFd, MountError> {
        let source_path = self.source.clone();
        self.move_to(target.as_raw_fd(), c"", MOVE_MOUNT_T_EMPTY_PATH)
            .map_err(|source| MountError::AttachFd {
                source_path,
                source,
            })
    }

    /// move_mount(2) of the tree to `(to_dir, to_path)` with `flags` added; the tree's
    /// descriptor, which then names the attached mount.
    fn move_to(
        self,
        to_dir: libc::c_int,
        to_path: &std::ffi::CStr,
        flags: libc::c_uint,
    ) -> io::Result<OwnedFd> {
        let empty = c"";
        // SAFETY: `tree` is an open mount descriptor, `to_dir` an open descriptor or
        // AT_FDCWD, and both paths are NUL-terminated and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                self.tree.as_raw_fd(),
                empty.as_ptr(),
                to_dir,
                to_path.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | flags,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_named_in_errors() {
        let a = BindAttrs {
            read_only: true,
            nodev: true,
            nosuid: true,
            ..Default::default()
        };
        assert_eq!(a.describe(), "ro,nodev,nosuid");
        let e = MountError::SetAttr {
            path: "/x".into(),
            attrs: "an id mapping".into(),
            id_mapped: true,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        let text = e.to_string();
        assert!(
            text.contains("/x") && text.contains("supports id-mapped mounts"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_source_is_named() {
        let e = detached_bind(Path::new("/nonexistent/hako"), &BindAttrs::default()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hako"), "{e}");
    }
}
