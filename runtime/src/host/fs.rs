//! File-system calls relative to directory descriptors, for trees a guest (or a compromised
//! hako-vmm) can rewrite: opening below a directory without leaving it or following a
//! symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and `RESOLVE_NO_XDEV`
//! where no mount point may be crossed), creating with `O_EXCL | O_NOFOLLOW`, a mount's
//! identity (`statx`'s mount id), unmounting the very mount a descriptor names, and removing
//! a tree without crossing a mount point. The runtime's only `unsafe` code.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// How deep [`remove_tree_at`] goes before it gives up (the trees it removes are the
/// runtime's own, a few levels deep).
pub const MAX_TREE_DEPTH: usize = 32;

/// Never above the directory, never through a symlink (nor a `/proc` magic link).
const BENEATH: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: a NUL byte in the path", path.display()),
        )
    })
}

fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `path` (relative) below `dir` with `flags` (`O_CLOEXEC` is added), resolving every
/// component beneath `dir` and through no symlink; with `no_xdev`, through no mount point
/// either (so a path that ends on a mount point fails with `EXDEV`).
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    no_xdev: bool,
) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open_how is plain data; all-zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = BENEATH | if no_xdev { libc::RESOLVE_NO_XDEV } else { 0 };
    // SAFETY: a NUL-terminated path and an open_how (whose size is passed) that outlive the
    // call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(rc)
}

/// Opens a directory the caller names by an absolute path it owns (a state directory), as
/// an `O_PATH` descriptor, not following a symlink at its last component.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: a NUL-terminated path that outlives the call; flags only.
    let rc = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    owned(rc.into())
}

/// Makes the directory `name` in `dir`; fails if anything is there (`EEXIST`, a symlink
/// included: mkdirat never follows one at its last component).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstring(Path::new(name))?;
    // SAFETY: an open directory descriptor and a NUL-terminated name that outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

/// Creates the empty file `name` in `dir`; fails if anything is there (`O_EXCL` also
/// refuses a symlink, dangling or not).
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstring(Path::new(name))?;
    // SAFETY: an open directory descriptor and a NUL-terminated name that outlives the call.
    let rc = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    owned(rc.into()).map(drop)
}

/// Which mount a descriptor is on, and whether it names that mount's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountIdentity {
    /// The mount id (`/proc/self/mountinfo`'s first field).
    pub id: u64,
    /// The descriptor names the mount's root (a mount point, seen from above).
    pub root: bool,
}

/// The mount `fd` is on (`statx` with `STATX_MNT_ID`, Linux 5.8 or later).
pub fn mount_of(fd: BorrowedFd<'_>) -> io::Result<MountIdentity> {
    // SAFETY: statx is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, the empty NUL-terminated path and `st`, which outlives the
    // call that fills it.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    check(rc)?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gives no mount id (Linux 5.8 or later)",
        ));
    }
    let root_bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(MountIdentity {
        id: st.stx_mnt_id,
        root: st.stx_attributes_mask & root_bit != 0 && st.stx_attributes & root_bit != 0,
    })
}

/// Detaches the mount whose root `fd` names (lazily, like `umount -l`). The path handed to
/// umount2 is `/proc/self/fd/<fd>`, a magic link the kernel resolves to the descriptor's own
/// place, not by name: whatever was renamed since the descriptor was opened and checked, no
/// other place is unmounted. At that place the kernel takes the top of the mount stack, so
/// a mount stacked there after the check would be taken instead: callers check afterwards
/// that the mount they meant is gone.
pub fn unmount(fd: OwnedFd) -> io::Result<()> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path that outlives the call; flags only.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) })
}

/// `name` in `dir` is the file `fd` holds (same device and inode; a symlink there is not
/// followed and never is).
pub fn same_file_at(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    let Ok(c) = cstring(Path::new(name)) else {
        return false;
    };
    // SAFETY: stat is plain data; all-zero is a valid value to be overwritten.
    let (mut a, mut b): (libc::stat, libc::stat) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: open descriptors, a NUL-terminated name that outlives the calls, and stat
    // buffers that outlive the calls that fill them.
    let ok = unsafe {
        libc::fstat(fd.as_raw_fd(), &mut a) == 0
            && libc::fstatat(
                dir.as_raw_fd(),
                c.as_ptr(),
                &mut b,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
    };
    ok && a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// A path (of the runtime's own) as `/proc/self/fd/<fd>`, for calls that take only paths
/// (mount(2)) but must act on the inode a descriptor holds.
pub fn fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// Removes the entry `name` in `dir`: a file, a symlink (never followed) or a directory
/// with everything below it, crossing no mount point (a mount found inside is left there,
/// with the directories leading to it, and the error says so) and going at most
/// [`MAX_TREE_DEPTH`] levels down. A missing entry is no error.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_entry(dir, name, 0)
}

fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: an open directory descriptor and a NUL-terminated name that outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    let c = cstring(Path::new(name))?;
    match unlink_at(dir, &c, 0) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
        Err(e) => return Err(e),
    }
    if depth >= MAX_TREE_DEPTH {
        return Err(io::Error::other(format!(
            "more than {MAX_TREE_DEPTH} directories deep; left"
        )));
    }
    let sub = match open_beneath(
        dir,
        Path::new(name),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        true,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return Err(io::Error::other(format!(
                "{} is a mount point; left with what is mounted there",
                Path::new(name).display()
            )));
        }
        Err(e) => return Err(e),
    };
    let mut first_error = None;
    for child in list_dir(&sub)? {
        if let Err(e) = remove_entry(borrow(&sub), &child, depth + 1) {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    unlink_at(dir, &c, libc::AT_REMOVEDIR)
}

fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

/// The names in the directory `fd` (opened for reading), without `.` and `..`.
fn list_dir(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) duplicates an open descriptor; flags only.
    let dup = owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) }.into())?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    let mut dir = nix::dir::Dir::from_fd(raw).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn opening_beneath_refuses_symlinks_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("d", t.path().join("rel")).unwrap();
        let dir = open_dir(t.path()).unwrap();
        let open = |p: &str| open_beneath(dir.as_fd(), Path::new(p), libc::O_PATH, false);
        assert!(open("d/f").is_ok());
        for bad in ["abs/passwd", "rel/f", "../x", "/etc/passwd", "abs"] {
            assert!(open(bad).is_err(), "{bad} was opened");
        }
    }

    #[test]
    fn creating_refuses_what_is_there_symlinks_included() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", t.path().join("dangling")).unwrap();
        let dir = open_dir(t.path()).unwrap();
        for name in ["link", "dangling", "victim"] {
            assert!(create_file_at(dir.as_fd(), OsStr::new(name), 0o644).is_err());
            assert!(mkdir_at(dir.as_fd(), OsStr::new(name), 0o755).is_err());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!Path::new("/nonexistent/x").exists());
        create_file_at(dir.as_fd(), OsStr::new("new"), 0o644).unwrap();
        mkdir_at(dir.as_fd(), OsStr::new("newdir"), 0o755).unwrap();
    }

    #[test]
    fn trees_are_removed_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/c/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        std::fs::write(tree.join("name\u{ff}"), "x").unwrap();
        let dir = open_dir(t.path()).unwrap();
        remove_tree_at(dir.as_fd(), OsStr::new("tree")).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        // Missing is no error.
        remove_tree_at(dir.as_fd(), OsStr::new("tree")).unwrap();
    }
}
