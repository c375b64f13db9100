//! The base layer: what no thread of a VMM ever does, refused for the whole process. It is
//! installed first, while hako-vmm has one thread, so every thread inherits it; each thread
//! then narrows itself further with its allow list (`super::allow`).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule};

use super::{ARCH, SeccompError, arg_is, arg_masked, build_err, dword_is};

/// open_tree_attr (Linux 6.15, x86-64), which libc 0.2.191 does not name yet.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// Refused unconditionally: (number, name).
pub(super) const REFUSED: &[(libc::c_long, &str)] = &[
    (libc::SYS_execve, "execve"),
    (libc::SYS_execveat, "execveat"),
    (libc::SYS_fork, "fork"),
    (libc::SYS_vfork, "vfork"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    // The new mount API: the jail made its binds with these before this layer went on;
    // after it nothing mounts.
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_open_tree, "open_tree"),
    (SYS_OPEN_TREE_ATTR, "open_tree_attr"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_pidfd_getfd, "pidfd_getfd"),
];

/// fcntl commands that make the kernel signal a process of the caller's choosing, or
/// notify it (answered with EPERM, not a trap: the passthrough copies a guest's open flags
/// into F_SETFL, so a guest could otherwise stop its own VMM): F_SETOWN/F_SETOWN_EX name the process a descriptor's I/O signals go to, and
/// the kernel checks only the caller's euid when they are sent (0 in the root fallback:
/// any host process), F_SETSIG picks the signal (SIGKILL too), F_NOTIFY and F_SETLEASE
/// signal on a directory's or file's changes. Also F_SETFL with O_ASYNC, which turns those
/// signals on. The VMM uses none of them.
const FCNTL_SIGNALLING: &[libc::c_int] = &[
    libc::F_SETOWN,
    F_SETOWN_EX,
    F_SETSIG,
    libc::F_NOTIFY,
    libc::F_SETLEASE,
];
/// <asm-generic/fcntl.h> values that libc 0.2 does not name on x86-64 Linux.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;

fn fcntl_refusals() -> Result<Vec<SeccompRule>, SeccompError> {
    let mut rules = FCNTL_SIGNALLING
        .iter()
        .map(|cmd| dword_is(1, *cmd as u32))
        .collect::<Result<Vec<_>, _>>()?;
    let set_flags = seccompiler::SeccompCondition::new(
        1,
        seccompiler::SeccompCmpArgLen::Dword,
        seccompiler::SeccompCmpOp::Eq,
        libc::F_SETFL as u64,
    )
    .map_err(build_err)?;
    let async_flag = libc::O_ASYNC as u64;
    rules.push(
        SeccompRule::new(vec![set_flags, arg_masked(2, async_flag, async_flag)?])
            .map_err(build_err)?,
    );
    Ok(rules)
}

/// The base's three programs: the refusals (SIGSYS), clone3 answering ENOSYS (a filter
/// cannot read clone3's flags, so thread creation falls back to clone, whose flags it can),
/// and EPERM for the signalling fcntl commands and for prctl(PR_SET_DUMPABLE).
pub(super) fn programs() -> Result<[BpfProgram; 3], SeccompError> {
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    // A clone without CLONE_THREAD makes a process; a socket not AF_UNIX reaches a network.
    refused.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![arg_masked(0, libc::CLONE_THREAD as u64, 0)?])
                .map_err(build_err)?,
        ],
    );
    refused.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![arg_is(
                0,
                seccompiler::SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])
            .map_err(build_err)?,
        ],
    );
    let refusals = SeccompFilter::new(refused, SeccompAction::Allow, SeccompAction::Trap, ARCH)
        .map_err(build_err)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .map_err(build_err)?;
    // PR_SET_DUMPABLE: the process made itself non-dumpable before this layer went on; a
    // compromised VMM must not undo it (then a crash would hand its memory to the host's
    // core_pattern helper, and processes of its uid could ptrace it).
    let set_dumpable = SeccompRule::new(vec![arg_is(
        0,
        seccompiler::SeccompCmpOp::Eq,
        libc::PR_SET_DUMPABLE as u64,
    )?])
    .map_err(build_err)?;
    let fcntl = SeccompFilter::new(
        BTreeMap::from([
            (libc::SYS_fcntl, fcntl_refusals()?),
            (libc::SYS_prctl, vec![set_dumpable]),
        ]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(build_err)?;
    Ok([
        refusals.try_into().map_err(SeccompError::Compile)?,
        clone3.try_into().map_err(SeccompError::Compile)?,
        fcntl.try_into().map_err(SeccompError::Compile)?,
    ])
}
