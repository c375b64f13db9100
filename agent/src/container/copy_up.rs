//! `tmpcopyup` (a tmpfs mount option of runc and crun that podman puts on the tmpfs of a
//! `--read-only` container): the tmpfs starts with a copy of what the image has at its
//! destination. The agent copies the tree into the detached tmpfs before attaching it
//! (`premount.rs`). Every step is relative to a directory descriptor and follows no symlink
//! (symlinks are copied as symlinks); directories, regular files and symlinks are copied with
//! their modes and owners, other file types are skipped; depth and size are bounded.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The mount option, which no file system knows: the agent acts on it and drops it.
pub const OPTION: &str = "tmpcopyup";
/// Deepest directory copied (a tree deeper than this is an error).
const MAX_DEPTH: usize = 32;
/// Most bytes copied into one tmpfs.
const MAX_BYTES: u64 = 64 << 20;
/// Most directory entries copied into one tmpfs.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CopyUpError {
    #[error("{what} {name:?}")]
    Io {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tree to copy up is deeper than {MAX_DEPTH} directories")]
    TooDeep,
    #[error("the tree to copy up holds more than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("the tree to copy up holds more than {MAX_ENTRIES} entries")]
    TooMany,
}

fn io<'a, E: Into<std::io::Error>>(
    what: &'static str,
    name: &'a std::ffi::CStr,
) -> impl FnOnce(E) -> CopyUpError + 'a {
    move |e| CopyUpError::Io {
        what,
        name: name.to_string_lossy().into_owned(),
        source: e.into(),
    }
}

/// Copies the contents of directory `from` (any descriptor of it, `O_PATH` too) into
/// directory `to`.
pub fn copy_tree(from: BorrowedFd, to: BorrowedFd) -> Result<(), CopyUpError> {
    let (mut bytes, mut entries) = (0, 0);
    copy_dir(from, to, 0, &mut bytes, &mut entries)
}

fn copy_dir(
    from: BorrowedFd,
    to: BorrowedFd,
    depth: usize,
    bytes: &mut u64,
    entries: &mut u64,
) -> Result<(), CopyUpError> {
    if depth > MAX_DEPTH {
        return Err(CopyUpError::TooDeep);
    }
    let dot = c".";
    let listing = rustix::fs::openat(
        from,
        dot,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("opening", dot))?;
    let mut dir = rustix::fs::Dir::read_from(&listing).map_err(io("listing", dot))?;
    for entry in dir.by_ref() {
        let entry = entry.map_err(io("listing", dot))?;
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Err(CopyUpError::TooMany);
        }
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io("reading", name))?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        );
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name, mode).map_err(io("making", name))?;
                let open = |at: BorrowedFd| {
                    rustix::fs::openat(
                        at,
                        name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                };
                let src: OwnedFd = open(from).map_err(io("opening", name))?;
                let dst: OwnedFd = open(to).map_err(io("opening the copy of", name))?;
                copy_dir(src.as_fd(), dst.as_fd(), depth + 1, bytes, entries)?;
                rustix::fs::chownat(to, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("setting the owner of", name))?;
                // mkdirat applied the umask.
                rustix::fs::chmodat(to, name, mode, AtFlags::empty())
                    .map_err(io("setting the mode of", name))?;
            }
            FileType::RegularFile => {
                *bytes += st.st_size as u64;
                if *bytes > MAX_BYTES {
                    return Err(CopyUpError::TooLarge);
                }
                // Non-blocking, and checked to be the file just looked at: one swapped for a
                // FIFO since would block the agent.
                let src = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io("opening", name))?;
                let opened = rustix::fs::fstat(&src).map_err(io("reading", name))?;
                if FileType::from_raw_mode(opened.st_mode) != FileType::RegularFile
                    || (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino)
                {
                    tracing::debug!(name = ?name, "tmpcopyup skips a file that changed");
                    continue;
                }
                let dst = rustix::fs::openat(
                    to,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode,
                )
                .map_err(io("making", name))?;
                let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
                std::io::copy(&mut (&mut src).take(st.st_size as u64), &mut dst)
                    .map_err(io("copying", name))?;
                rustix::fs::fchown(&dst, uid, gid).map_err(io("setting the owner of", name))?;
                rustix::fs::fchmod(&dst, mode).map_err(io("setting the mode of", name))?;
            }
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(from, name, Vec::new()).map_err(io("reading", name))?;
                rustix::fs::symlinkat(&target, to, name).map_err(io("making", name))?;
                rustix::fs::chownat(to, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("setting the owner of", name))?;
            }
            _ => tracing::debug!(name = ?name, "tmpcopyup skips a special file"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_tree_is_copied_with_modes_and_symlinks_as_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir_all(from.join("d/e")).unwrap();
        std::fs::create_dir(&to).unwrap();
        std::fs::write(from.join("f"), "data").unwrap();
        std::fs::set_permissions(from.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(from.join("d"), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::write(from.join("d/e/g"), "deep").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("l")).unwrap();
        let open = |p: &std::path::Path| {
            rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
        };
        copy_tree(open(&from).as_fd(), open(&to).as_fd()).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("f")).unwrap(), "data");
        assert_eq!(
            std::fs::metadata(to.join("f")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::metadata(to.join("d")).unwrap().mode() & 0o777,
            0o711
        );
        assert_eq!(std::fs::read_to_string(to.join("d/e/g")).unwrap(), "deep");
        assert_eq!(
            std::fs::read_link(to.join("l")).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
    }
}
