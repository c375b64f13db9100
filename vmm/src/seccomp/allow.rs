//! Each thread's allow list: the calls its kind of thread makes, and nothing else. Read from
//! the code and checked against `strace -f` of real sandboxes (boot, container file work over
//! virtio-fs, vsock traffic, block I/O, a tap, snapshot and resume); anything else stops the
//! VMM with the call and the thread named. The base layer (`super::deny`) still applies
//! beneath: a clone here is a thread's clone, a socket a Unix one.

use super::Profile;

/// A syscall number and its name (for the violation message).
pub(super) type Call = (libc::c_long, &'static str);

macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((sys::$name, stringify!($name))),*]
    };
}

/// `libc::SYS_<name>` under the plain name, for the lists below.
mod sys {
    pub use libc::{
        SYS_accept as accept, SYS_accept4 as accept4, SYS_brk as brk, SYS_capget as capget,
        SYS_capset as capset, SYS_clock_gettime as clock_gettime,
        SYS_clock_nanosleep as clock_nanosleep, SYS_clone as clone, SYS_clone3 as clone3,
        SYS_close as close, SYS_connect as connect, SYS_copy_file_range as copy_file_range,
        SYS_dup as dup, SYS_dup3 as dup3, SYS_epoll_create1 as epoll_create1,
        SYS_epoll_ctl as epoll_ctl, SYS_epoll_pwait as epoll_pwait, SYS_epoll_wait as epoll_wait,
        SYS_eventfd2 as eventfd2, SYS_exit as exit, SYS_exit_group as exit_group,
        SYS_fallocate as fallocate, SYS_fchmod as fchmod, SYS_fchmodat as fchmodat,
        SYS_fchown as fchown, SYS_fchownat as fchownat, SYS_fcntl as fcntl,
        SYS_fdatasync as fdatasync, SYS_fgetxattr as fgetxattr, SYS_flistxattr as flistxattr,
        SYS_flock as flock, SYS_fremovexattr as fremovexattr, SYS_fsetxattr as fsetxattr,
        SYS_fstat as fstat, SYS_fstatfs as fstatfs, SYS_fsync as fsync, SYS_ftruncate as ftruncate,
        SYS_futex as futex, SYS_getdents64 as getdents64, SYS_getegid as getegid,
        SYS_geteuid as geteuid, SYS_getgid as getgid, SYS_getpid as getpid,
        SYS_getrandom as getrandom, SYS_getsockopt as getsockopt, SYS_gettid as gettid,
        SYS_getuid as getuid, SYS_getxattr as getxattr, SYS_lgetxattr as lgetxattr,
        SYS_linkat as linkat, SYS_listxattr as listxattr, SYS_llistxattr as llistxattr,
        SYS_lremovexattr as lremovexattr, SYS_lseek as lseek, SYS_lsetxattr as lsetxattr,
        SYS_madvise as madvise, SYS_mkdir as mkdir, SYS_mkdirat as mkdirat, SYS_mknodat as mknodat,
        SYS_mmap as mmap, SYS_mprotect as mprotect, SYS_mremap as mremap, SYS_munmap as munmap,
        SYS_name_to_handle_at as name_to_handle_at, SYS_nanosleep as nanosleep,
        SYS_newfstatat as newfstatat, SYS_open as open, SYS_openat as openat, SYS_poll as poll,
        SYS_ppoll as ppoll, SYS_prctl as prctl, SYS_pread64 as pread64, SYS_preadv as preadv,
        SYS_preadv2 as preadv2, SYS_pwrite64 as pwrite64, SYS_pwritev as pwritev,
        SYS_pwritev2 as pwritev2, SYS_read as read, SYS_readlinkat as readlinkat,
        SYS_readv as readv, SYS_recvfrom as recvfrom, SYS_recvmsg as recvmsg,
        SYS_removexattr as removexattr, SYS_rename as rename, SYS_renameat as renameat,
        SYS_renameat2 as renameat2, SYS_restart_syscall as restart_syscall, SYS_rmdir as rmdir,
        SYS_rseq as rseq, SYS_rt_sigprocmask as rt_sigprocmask, SYS_rt_sigreturn as rt_sigreturn,
        SYS_rt_sigtimedwait as rt_sigtimedwait, SYS_sched_getaffinity as sched_getaffinity,
        SYS_sched_yield as sched_yield, SYS_seccomp as seccomp, SYS_sendmsg as sendmsg,
        SYS_sendto as sendto, SYS_set_robust_list as set_robust_list, SYS_setresgid as setresgid,
        SYS_setresuid as setresuid, SYS_setsockopt as setsockopt, SYS_setxattr as setxattr,
        SYS_shutdown as shutdown, SYS_sigaltstack as sigaltstack, SYS_socket as socket,
        SYS_statfs as statfs, SYS_statx as statx, SYS_symlinkat as symlinkat,
        SYS_sync_file_range as sync_file_range, SYS_umask as umask, SYS_unlink as unlink,
        SYS_unlinkat as unlinkat, SYS_utimensat as utimensat, SYS_write as write,
        SYS_writev as writev,
    };
}

/// Every thread: memory, locks and channels, time, logging to stderr, its own end.
const COMMON: &[Call] = calls![
    read,
    write,
    close,
    futex,
    mmap,
    munmap,
    mremap,
    madvise,
    mprotect,
    brk,
    rt_sigreturn,
    rt_sigprocmask,
    sigaltstack,
    sched_yield,
    sched_getaffinity,
    clock_gettime,
    clock_nanosleep,
    nanosleep,
    gettid,
    getpid,
    getrandom,
    restart_syscall,
    exit,
    exit_group,
];

/// Starting a thread (what std's spawn and the new thread's start do); clone3 is listed so
/// that the base layer's ENOSYS, not this list's trap, answers it.
const THREAD_START: &[Call] = calls![clone, clone3, set_robust_list, rseq, prctl];

/// A thread confining itself: what its creator's filter must let it do.
const CONFINING: &[Call] = calls![seccomp, prctl];

/// The epoll loop device workers wait in, and their eventfds (cloned with F_DUPFD_CLOEXEC).
const EVENT_LOOP: &[Call] = calls![
    epoll_create1,
    epoll_ctl,
    epoll_wait,
    epoll_pwait,
    eventfd2,
    fcntl,
    dup
];

/// The main thread once the VM runs: the event loop, pausing and kicking vCPUs, snapshots
/// (a directory, the state and memory files), and the teardown (joins, socket files). Its
/// ioctls (KVM's, by request) and tgkill (its own threads) are in `super::narrowed`.
const VMM: &[Call] = calls![
    eventfd2, fcntl, dup, poll, ppoll, openat, mkdir, mkdirat, fstat, newfstatat, statx, lseek,
    pread64, pwrite64, readv, writev, ftruncate, fallocate, fsync, fdatasync, rename, renameat,
    renameat2, unlink, unlinkat, rmdir, shutdown,
];

/// A vCPU: KVM_RUN and the device registers it reaches (MMIO and port I/O write eventfds,
/// the console's file, the devices' activation, which asks the spawner for worker threads,
/// and their reset, which stops the worker and takes its backend back: the vsock muxer then
/// drops its connections from its epoll set and closes them), and parking its state for a
/// snapshot. Its ioctls (KVM's, by request) and tgkill are in `super::narrowed`.
const VCPU: &[Call] = calls![eventfd2, fcntl, dup, writev, shutdown];

/// The control socket's accept loop and its connection threads.
const CONTROL: &[Call] = calls![accept, accept4, recvfrom, sendto, shutdown, fcntl];

/// The thread that turns stop signals into events.
const SIGNALS: &[Call] = calls![rt_sigtimedwait];

/// virtio-fs: fuse-backend-rs's passthrough (by name relative to its inode fds, through
/// /proc/self/fd, with the guest's uid/gid for the call and CAP_FSETID dropped around writes).
/// mknodat makes FIFOs, sockets and regular files; a device node answers EPERM
/// (`super::refused_with_errno`).
const FS: &[Call] = calls![
    openat,
    open,
    dup,
    dup3,
    fcntl,
    fstat,
    newfstatat,
    statx,
    fstatfs,
    statfs,
    lseek,
    getdents64,
    readv,
    writev,
    pread64,
    pwrite64,
    preadv,
    pwritev,
    preadv2,
    pwritev2,
    copy_file_range,
    ftruncate,
    fallocate,
    fsync,
    fdatasync,
    sync_file_range,
    flock,
    mkdirat,
    mknodat,
    symlinkat,
    readlinkat,
    linkat,
    unlinkat,
    renameat,
    renameat2,
    fchmod,
    fchmodat,
    fchown,
    fchownat,
    utimensat,
    umask,
    getuid,
    getgid,
    geteuid,
    getegid,
    setresuid,
    setresgid,
    capget,
    capset,
];

/// Calls no thread makes in Hako's configuration, named only so that the violation message
/// names them: the passthrough's xattr calls (its `xattr` is off: it answers ENOSYS without
/// a call) and name_to_handle_at (its `inode_file_handles` is off, and statx gives the mount
/// id its fallback would ask for).
const NOT_MADE: &[Call] = calls![
    setxattr,
    lsetxattr,
    fsetxattr,
    getxattr,
    lgetxattr,
    fgetxattr,
    listxattr,
    llistxattr,
    flistxattr,
    removexattr,
    lremovexattr,
    fremovexattr,
    name_to_handle_at,
];

/// virtio-blk: reads, writes, flushes and discards on its image file.
const BLOCK: &[Call] = calls![
    pread64, pwrite64, preadv, pwritev, readv, writev, lseek, fsync, fdatasync, fallocate, fstat,
];

/// virtio-net: frames to and from its tap (its ioctls happen at open and activation, on
/// other threads).
const NET: &[Call] = calls![readv, writev, fcntl];

/// virtio-vsock (hybrid): the host's Unix sockets, accepted and connected (and made
/// non-blocking: `ioctl`, narrowed to FIONBIO in `super::narrowed`).
const VSOCK: &[Call] = calls![
    accept, accept4, socket, connect, recvfrom, sendto, recvmsg, sendmsg, readv, writev, shutdown,
    getsockopt, setsockopt, fcntl, dup,
];

/// The parts of a profile's list (COMMON is in every one).
fn parts(profile: Profile) -> Vec<&'static [Call]> {
    match profile {
        Profile::Vmm => vec![VMM],
        Profile::Vcpu => vec![VCPU, EVENT_LOOP],
        Profile::Control => vec![CONTROL, THREAD_START, CONFINING],
        Profile::Signals => vec![SIGNALS],
        Profile::Fs => vec![FS, EVENT_LOOP],
        Profile::Block => vec![BLOCK, EVENT_LOOP],
        Profile::Net => vec![NET, EVENT_LOOP],
        Profile::Vsock => vec![VSOCK, EVENT_LOOP],
        // Its threads inherit its filter, so it allows all that they do.
        Profile::Spawner => {
            let mut all = vec![THREAD_START, EVENT_LOOP, CONFINING];
            for worker in Profile::WORKERS {
                all.extend(parts(worker));
            }
            all
        }
    }
}

/// The calls `profile` allows, each once, sorted.
pub(super) fn allowed(profile: Profile) -> Vec<Call> {
    let mut calls: Vec<Call> = parts(profile)
        .into_iter()
        .chain(std::iter::once(COMMON))
        .flatten()
        .copied()
        .collect();
    calls.sort_unstable();
    calls.dedup();
    calls
}

/// Every call any list names (for naming a forbidden call in the violation message).
pub(super) fn every_named() -> impl Iterator<Item = &'static Call> {
    [
        COMMON,
        THREAD_START,
        CONFINING,
        EVENT_LOOP,
        VMM,
        VCPU,
        CONTROL,
        SIGNALS,
        FS,
        BLOCK,
        NET,
        VSOCK,
        NOT_MADE,
    ]
    .into_iter()
    .flatten()
}
