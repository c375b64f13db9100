//! The jail's mount calls: classic `mount(2)` for the tmpfs root and /proc, and the
//! new mount API for binds (`open_tree` clones a tree detached, `mount_setattr` makes it
//! read-only, private or id-mapped while no one can see it yet, `move_mount` attaches it), so
//! a bind's attributes are in place before it appears, and an id mapping, which only a
//! detached tree can take, is possible at all.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{JailError, step};

/// `<linux/mount.h>` values libc does not carry on every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (the first version, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(super) fn cstring(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| JailError::Relative(p.to_owned()))
}

pub(super) fn check(rc: libc::c_long, what: impl Into<String>) -> Result<(), JailError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(step(what)(io::Error::last_os_error()))
    }
}

/// `mount(2)` with optional source, type and data.
pub(super) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
    what: &str,
) -> Result<(), JailError> {
    let source = source.map(cstring).transpose()?;
    let target_c = cstring(target)?;
    let fstype = fstype.map(|f| CString::new(f).expect("no NUL in a file system name"));
    let data = data.map(|d| CString::new(d).expect("no NUL in mount options"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    check(rc.into(), format!("{what} ({})", target.display()))
}

/// How a detached tree is to be set before it is attached.
#[derive(Debug, Clone, Copy)]
pub(super) struct TreeAttrs<'a> {
    pub read_only: bool,
    /// Private: nothing mounted on the host's side below it later reaches the jail. (A
    /// share is left a slave, so the containers bound into it later do.)
    pub private: bool,
    /// Id-mapped like this user namespace.
    pub idmap: Option<BorrowedFd<'a>>,
}

/// A detached copy of the mount tree at `path` (with the mounts below it if `recursive`),
/// set as `attrs` says. Attach it with [`attach`]; dropped unattached, it vanishes.
pub(super) fn detached_clone(
    path: &Path,
    recursive: bool,
    attrs: TreeAttrs<'_>,
) -> Result<OwnedFd, JailError> {
    let c = cstring(path)?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec;
    // SAFETY: a NUL-terminated path that outlives the call; flags only.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(step(format!("cloning {} (open_tree)", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    let raw = i32::try_from(fd).expect("file descriptors fit in an int");
    // SAFETY: open_tree returned this descriptor, which nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if attrs.read_only {
        attr.attr_set |= MOUNT_ATTR_RDONLY;
    }
    if attrs.private {
        attr.propagation = libc::MS_PRIVATE;
    }
    if let Some(ns) = attrs.idmap {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u64::try_from(ns.as_raw_fd()).expect("descriptors are not negative");
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
        let what = match attrs.idmap {
            Some(_) => format!(
                "id-mapping the bind of {} (mount_setattr MOUNT_ATTR_IDMAP; its file system \
                 and this kernel must support id-mapped mounts)",
                path.display()
            ),
            None => format!("setting the bind of {} (mount_setattr)", path.display()),
        };
        check(rc, what)?;
    }
    Ok(tree)
}

/// Attaches a detached tree at `target`.
pub(super) fn attach(tree: OwnedFd, target: &Path) -> Result<(), JailError> {
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
    check(rc, format!("attaching the bind at {}", target.display()))
}
