//! The VMM process's own limits, set at the start of a run: a bounded open-file limit (a
//! guest pins host descriptors through virtio-fs) and the non-dumpable flag (no other process
//! of the same uid may ptrace it, read its memory through /proc/<pid>/mem or its files under
//! /proc/<pid>/, and it leaves no core dump holding guest memory).
#![allow(unsafe_code)]

use std::io;

/// Errors setting the process's limits.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading the open-file limit (RLIMIT_NOFILE)")]
    GetOpenFiles(#[source] io::Error),
    #[error("setting the open-file limit (RLIMIT_NOFILE) to {limit}")]
    SetOpenFiles {
        limit: u64,
        #[source]
        source: io::Error,
    },
    #[error("making the process non-dumpable (PR_SET_DUMPABLE 0)")]
    Dumpable(#[source] io::Error),
}

/// The most descriptors hako-vmm may hold. Its own take a few hundred at most (KVM's VM and
/// up to 32 vCPUs, each device's queue and interrupt eventfds and epoll set, the control
/// socket, vsock's host connections); the rest is virtio-fs, whose passthrough holds one
/// O_PATH descriptor for each inode the guest keeps in its cache and one per open file. This
/// bounds what one guest pins (and the kernel memory that costs) well below the host's
/// `fs.file-max`, while leaving a guest room for tens of thousands of cached files of its
/// share; past it, the guest's lookups and opens fail with EMFILE.
pub const MAX_OPEN_FILES: u64 = 65_536;

/// The open-file limit (soft, hard) to set, given the current one: both at `MAX_OPEN_FILES`,
/// or at the current hard limit where that is lower (raising a hard limit needs
/// CAP_SYS_RESOURCE, and a lower one is bound enough).
pub fn bounded_open_files(current_hard: u64) -> (u64, u64) {
    let limit = current_hard.min(MAX_OPEN_FILES);
    (limit, limit)
}

/// Sets the open-file limit: soft and hard both at [`bounded_open_files`]. Returns it.
pub fn limit_open_files() -> Result<u64, ProcessError> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) };
    if rc != 0 {
        return Err(ProcessError::GetOpenFiles(io::Error::last_os_error()));
    }
    let (soft, hard) = bounded_open_files(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit, alive for the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    if rc != 0 {
        return Err(ProcessError::SetOpenFiles {
            limit: hard,
            source: io::Error::last_os_error(),
        });
    }
    Ok(hard)
}

/// Makes the process non-dumpable. Call it after the jail's user namespace is mapped: its
/// helper is a fork of this process and would inherit the flag, and then only a writer with
/// CAP_SYS_PTRACE could open the helper's namespace. A process with the flag is still
/// reachable by root with CAP_SYS_PTRACE (the runtime opens /proc/<vmm>/ns/user), and it
/// reaches its own /proc/self.
pub fn forbid_dumping() -> Result<(), ProcessError> {
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(ProcessError::Dumpable(io::Error::last_os_error()));
    }
    Ok(())
}

/// Keeps every thread's allocations in glibc's main arena. A thread arena (an mmap'd heap)
/// reads /proc/sys/vm/overcommit_memory the first time one of its heaps shrinks, and a
/// confined thread may not open files: a vsock worker freeing a large buffer at the guest's
/// power-off was stopped by its seccomp filter for exactly that openat. Call it before any
/// thread exists.
pub fn one_malloc_arena() {
    // SAFETY: mallopt with integer arguments; it only sets a malloc parameter.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Whether the process is dumpable (`PR_GET_DUMPABLE`).
pub fn dumpable() -> bool {
    // SAFETY: prctl with integer arguments; PR_GET_DUMPABLE returns the flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_bounded_and_never_raised_past_the_hard_limit() {
        assert_eq!(
            bounded_open_files(1 << 20),
            (MAX_OPEN_FILES, MAX_OPEN_FILES)
        );
        assert_eq!(
            bounded_open_files(libc::RLIM_INFINITY),
            (MAX_OPEN_FILES, MAX_OPEN_FILES)
        );
        assert_eq!(bounded_open_files(4096), (4096, 4096));
    }
}
