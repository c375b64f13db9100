//! The jail's user namespace: made by a short-lived child (a process cannot write a
//! many-id map for the namespace it is in), mapped `0..count` → the host's `uid..`/`gid..`,
//! and kept open by descriptor, for the binds' id mappings first and then for the VMM to
//! join as that namespace's root.
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use hako_vmm_api::JailUser;

use super::mounts::check;
use super::{JailError, step};

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(rc.into(), "making a pipe for the user namespace's helper")?;
    // SAFETY: pipe2 succeeded: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the user namespace for `user`; returns a descriptor of it. The caller has one
/// thread (fork copies only the calling thread, and the child runs no Rust code that could
/// need a lock another thread held).
pub(super) fn create(user: &JailUser) -> Result<OwnedFd, JailError> {
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: the process has one thread (checked by the caller); the child below only
    // makes raw system calls on descriptors it inherited, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(step("forking the user namespace's helper")(
            io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: raw system calls on inherited descriptors and _exit, nothing else: no
        // allocation, no locks, no destructors.
        unsafe {
            libc::close(done_w.as_raw_fd());
            let errno: i32 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::write(
                ready_w.as_raw_fd(),
                (&errno as *const i32).cast(),
                std::mem::size_of::<i32>(),
            );
            // Until the parent has what it needs (it closes its end).
            let mut byte = 0u8;
            libc::read(done_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(done_r);
    let made = map_and_open(pid, user, ready_r);
    // Let the helper go whatever happened, and reap it.
    drop(done_w);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid int to write.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    made
}

fn map_and_open(pid: libc::pid_t, user: &JailUser, ready: OwnedFd) -> Result<OwnedFd, JailError> {
    let mut errno = [0u8; 4];
    std::fs::File::from(ready)
        .read_exact(&mut errno)
        .map_err(step("waiting for the user namespace's helper"))?;
    let errno = i32::from_ne_bytes(errno);
    if errno != 0 {
        return Err(step("making a user namespace (unshare CLONE_NEWUSER)")(
            io::Error::from_raw_os_error(errno),
        ));
    }
    for (file, first) in [("uid_map", user.uid), ("gid_map", user.gid)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, format!("0 {first} {}\n", user.count))
            .map_err(step(format!("writing {path} (0 {first} {})", user.count)))?;
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(step("opening the new user namespace"))?;
    Ok(ns.into())
}

/// Becomes root of the user namespace `ns`: no supplementary groups (the host root's would
/// still count on the host), then the namespace's gid 0 and uid 0, which are the host's
/// `gid`/`uid`. The process then holds every capability in that namespace only; the caller
/// cuts them down. Needs one thread.
pub(super) fn become_root_of(ns: &OwnedFd) -> Result<(), JailError> {
    // SAFETY: an empty list: no pointer is read.
    let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
    check(rc.into(), "dropping the supplementary groups")?;
    // SAFETY: an open user namespace descriptor and a flag.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) };
    check(rc.into(), "joining the user namespace (setns)")?;
    // SAFETY: integer arguments.
    let rc = unsafe { libc::setresgid(0, 0, 0) };
    check(rc.into(), "becoming the user namespace's gid 0")?;
    // SAFETY: integer arguments.
    let rc = unsafe { libc::setresuid(0, 0, 0) };
    check(rc.into(), "becoming the user namespace's uid 0")
}
