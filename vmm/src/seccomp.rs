//! The VMM's seccomp filters, installed on every thread (TSYNC) before the guest runs. What a
//! VMM never does is refused: start programs or processes (execve, fork, clone without
//! CLONE_THREAD), debug or read other processes, change mounts, namespaces, root or the
//! host's clock, load kernel code (modules, BPF, kexec), reboot, open files by handle, use
//! keyrings, perf or userfaultfd, and make sockets other than Unix ones (a guest that takes
//! over a device thread cannot reach a network). A refused call sends SIGSYS; the handler
//! writes which call to stderr (hako-vmm's log) and exits with `EXIT_SECCOMP_VIOLATION`.
//! `clone3`, whose flags a filter cannot read, answers ENOSYS so that thread creation falls
//! back to `clone`, whose flags it can.
//!
//! This is a deny list over the whole process, not yet Firecracker's per-thread allow lists:
//! those need every thread's calls enumerated (virtio-fs's alone are dozens) and device
//! threads started from a thread with a wide enough filter; see docs/ARCHITECTURE.md.
#![allow(unsafe_code)]

use std::collections::BTreeMap;

use hako_vmm_api::control::EXIT_SECCOMP_VIOLATION;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("compiling the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter")]
    Install(#[source] seccompiler::Error),
    #[error("installing the SIGSYS handler")]
    Handler(#[source] std::io::Error),
}

/// Refused unconditionally: (number, name).
const REFUSED: &[(libc::c_long, &str)] = &[
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

/// The name of a call the filter refuses (for the violation message).
fn name_of(nr: libc::c_long) -> &'static str {
    match nr {
        libc::SYS_clone => "clone (of a process)",
        libc::SYS_socket => "socket (not AF_UNIX)",
        _ => REFUSED
            .iter()
            .find(|(n, _)| *n == nr)
            .map_or("?", |(_, name)| name),
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SeccompError::Build)
}

/// The two programs: the refusals (SIGSYS) and clone3's ENOSYS.
fn programs() -> Result<[BpfProgram; 2], SeccompError> {
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let clone_thread = libc::CLONE_THREAD as u64;
    refused.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(clone_thread), 0)?])
                .map_err(SeccompError::Build)?,
        ],
    );
    refused.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])
                .map_err(SeccompError::Build)?,
        ],
    );
    let arch = TargetArch::x86_64;
    let refusals = SeccompFilter::new(refused, SeccompAction::Allow, SeccompAction::Trap, arch)
        .map_err(SeccompError::Build)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(SeccompError::Build)?;
    Ok([
        refusals.try_into().map_err(SeccompError::Compile)?,
        clone3.try_into().map_err(SeccompError::Compile)?,
    ])
}

/// Installs the SIGSYS handler and both filters on every thread of the process.
pub fn install() -> Result<(), SeccompError> {
    let programs = programs()?;
    install_handler().map_err(SeccompError::Handler)?;
    for p in &programs {
        seccompiler::apply_filter_all_threads(p).map_err(SeccompError::Install)?;
    }
    tracing::debug!(refused = REFUSED.len() + 2, "seccomp filters installed");
    Ok(())
}

fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting value; we set the handler (an
    // `extern "C"` function with the SA_SIGINFO signature) and flags, and sigaction only
    // reads it.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes "hako-vmm: seccomp: ..." and exits; only async-signal-safe calls (write, _exit).
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // For SIGSYS the siginfo union holds { void *call_addr; int syscall; unsigned arch; }
    // from byte 16 on x86-64: the call's number is the int at byte 24.
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let nr = unsafe {
        info.cast::<u8>()
            .add(24)
            .cast::<libc::c_int>()
            .read_unaligned()
    };
    let mut msg = [0u8; 160];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for b in bytes {
            if len < msg.len() {
                msg[len] = *b;
                len += 1;
            }
        }
    };
    put(b"hako-vmm: seccomp: a thread made a forbidden system call: ");
    put(name_of(libc::c_long::from(nr)).as_bytes());
    put(b" (");
    let mut digits = [0u8; 12];
    let mut n = nr.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b"); the VMM stops\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg[..len]` is initialised.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), len);
        libc::_exit(i32::from(EXIT_SECCOMP_VIOLATION));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_name_what_they_refuse() {
        let [refusals, clone3] = programs().unwrap();
        assert!(refusals.len() > REFUSED.len());
        assert!(!clone3.is_empty());
        assert_eq!(name_of(libc::SYS_execve), "execve");
        assert_eq!(name_of(libc::SYS_socket), "socket (not AF_UNIX)");
        assert_eq!(name_of(libc::SYS_read), "?");
    }
}
