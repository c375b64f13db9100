//! Processes the agent started (a container's init, execs): their streams and their exit
//! status. Exits are watched through a pidfd, because a container's init is cloned with
//! CLONE_PARENT and no exit signal (libcontainer), so no SIGCHLD announces it; the status is
//! kept until the process record goes, so WaitProcess can come late and still get it.
#![allow(unsafe_code)]

pub mod tty;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::io::ProcessIo;

/// A started process.
pub struct Process {
    pub pid: Pid,
    pub io: Arc<ProcessIo>,
    exit: watch::Receiver<Option<i32>>,
}

impl Process {
    /// Watches `pid` (a child of the agent) for its exit.
    pub fn watch(pid: Pid, io: Arc<ProcessIo>) -> std::io::Result<Self> {
        let pidfd = pidfd_open(pid)?;
        let (tx, rx) = watch::channel(None);
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the descriptor stays open
        // and refers to the same pidfd until the AsyncFd is dropped, and OwnedFd::as_raw_fd
        // always returns that descriptor.
        let afd = unsafe { AsyncFd::register(pidfd) }?;
        tokio::spawn(async move {
            // Readable once the process has exited.
            let _ = afd.readable().await;
            let status = reap(pid);
            tracing::info!(pid = pid.as_raw(), status, "process exited");
            let _ = tx.send(Some(status));
        });
        Ok(Self { pid, io, exit: rx })
    }

    /// The exit status once the process has ended (runc's convention: code, or 128+signal).
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return status;
            }
            if rx.changed().await.is_err() {
                return 255;
            }
        }
    }

    /// The status if the process has ended.
    pub fn exited(&self) -> Option<i32> {
        *self.exit.borrow()
    }
}

/// runc's exit status convention.
pub fn exit_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Collects the exit status of `pid` (any kind of child, clone children included).
fn reap(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(s) => {
                if let Some(code) = exit_status(s) {
                    return code;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            // Someone else reaped it: the status is lost; report a generic failure.
            Err(_) => return 255,
        }
    }
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn statuses_follow_runc() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_status(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_status(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            exit_status(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }

    #[tokio::test(flavor = "current_thread")]
    #[allow(clippy::zombie_processes)] // reaped by Process::watch, not by Child::wait
    async fn a_childs_exit_is_seen_through_its_pidfd() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let (io, _) = ProcessIo::pipes().unwrap();
        let p = Process::watch(Pid::from_raw(child.id() as i32), io).unwrap();
        assert_eq!(p.wait().await, 7);
        assert_eq!(p.exited(), Some(7), "kept after the first wait");
    }
}
