//! The VMM's seccomp filters, in two layers.
//!
//! 1. The base (`deny`): what a VMM never does, refused for the whole process, installed
//!    first while hako-vmm has one thread: start programs or processes (execve, fork, clone
//!    without CLONE_THREAD), debug or read other processes, change mounts (mount and the new
//!    mount API: fsopen, fsmount, open_tree, move_mount, mount_setattr, ...), namespaces, root
//!    or the host's clock, load kernel code (modules, BPF, kexec), reboot, open files by
//!    handle, use keyrings, perf or userfaultfd, and make sockets other than Unix ones.
//! 2. Per thread (`allow`): each thread, as it starts and before it touches anything the guest
//!    drives, narrows itself to its kind's allow list ([`Profile`]): a vCPU cannot open a
//!    file, the virtio-fs worker cannot make a socket, the vsock worker cannot open a file.
//!    Filters stack and a new thread inherits its creator's, so device workers are started
//!    by one spawner thread whose list is the union of theirs (`crate::threads`), never by
//!    the vCPU that activates the device.
//!
//! A call either layer refuses sends SIGSYS; the handler writes the call and the thread's
//! kind to stderr (hako-vmm's log) and exits with `EXIT_SECCOMP_VIOLATION`. The exception is
//! a call a guest asks a worker for at will whose refusal the kernel would give anyway
//! ([`refused_with_errno`]: the virtio-fs worker making a device node): it answers an error,
//! so the guest gets EPERM and the VMM goes on.
#![allow(unsafe_code)]

mod allow;
mod deny;
mod ioctls;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use hako_vmm_api::control::EXIT_SECCOMP_VIOLATION;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

const ARCH: TargetArch = TargetArch::x86_64;

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

/// The kinds of thread hako-vmm runs, each with its own allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The main thread once the VM runs (event loop, snapshots, teardown).
    Vmm,
    /// A vCPU thread.
    Vcpu,
    /// The control socket's threads.
    Control,
    /// The stop-signal thread.
    Signals,
    /// The thread that starts device workers.
    Spawner,
    /// The virtio-fs worker.
    Fs,
    /// A virtio-blk worker.
    Block,
    /// A virtio-net worker.
    Net,
    /// The virtio-vsock worker.
    Vsock,
}

impl Profile {
    /// The device workers, which the spawner starts.
    pub const WORKERS: [Profile; 4] = [Profile::Fs, Profile::Block, Profile::Net, Profile::Vsock];

    /// The name the violation message gives.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Vmm => "vmm",
            Profile::Vcpu => "vcpu",
            Profile::Control => "control",
            Profile::Signals => "signals",
            Profile::Spawner => "spawner",
            Profile::Fs => "virtio-fs worker",
            Profile::Block => "virtio-blk worker",
            Profile::Net => "virtio-net worker",
            Profile::Vsock => "virtio-vsock worker",
        }
    }
}

/// Whether the base layer is installed (then every thread must confine itself).
static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's profile name, read by the SIGSYS handler (a plain TLS read).
    static CONFINED_AS: Cell<&'static str> = const { Cell::new("main") };
}

fn build_err(e: seccompiler::BackendError) -> SeccompError {
    SeccompError::Build(e)
}

fn arg_is(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(build_err)
}

fn arg_masked(arg: u8, mask: u64, value: u64) -> Result<SeccompCondition, SeccompError> {
    arg_is(arg, SeccompCmpOp::MaskedEq(mask), value)
}

/// One rule: argument `arg`'s low 32 bits equal `value` (ioctl requests, pids).
fn dword_is(arg: u8, value: u32) -> Result<SeccompRule, SeccompError> {
    let c = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        u64::from(value),
    )
    .map_err(build_err)?;
    SeccompRule::new(vec![c]).map_err(build_err)
}

/// ioctl with one of `requests` only.
fn ioctls(requests: &[ioctls::Request]) -> Result<(libc::c_long, Vec<SeccompRule>), SeccompError> {
    let rules = requests
        .iter()
        .map(|(r, _)| dword_is(1, *r))
        .collect::<Result<_, _>>()?;
    Ok((libc::SYS_ioctl, rules))
}

/// tgkill to this process's own threads only (kicking a vCPU, abort), not to another
/// process, whoever owns it.
fn own_tgkill() -> Result<(libc::c_long, Vec<SeccompRule>), SeccompError> {
    let pid = std::process::id();
    Ok((libc::SYS_tgkill, vec![dword_is(0, pid)?]))
}

/// The name of call `nr` (for the violation message).
fn name_of(nr: libc::c_long) -> &'static str {
    match nr {
        libc::SYS_clone => "clone",
        libc::SYS_socket => "socket",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_tgkill => "tgkill",
        _ => deny::REFUSED
            .iter()
            .chain(allow::every_named())
            .find(|(n, _)| *n == nr)
            .map_or("?", |(_, name)| name),
    }
}

/// Calls `profile` may make only with certain arguments: (number, the rules, one of which
/// must match). A spawner allows what each of its workers does.
fn narrowed(profile: Profile) -> Result<Vec<(libc::c_long, Vec<SeccompRule>)>, SeccompError> {
    Ok(match profile {
        // Rust's set_nonblocking on the host's Unix sockets.
        Profile::Vsock => vec![(
            libc::SYS_ioctl,
            vec![
                SeccompRule::new(vec![arg_is(1, SeccompCmpOp::Eq, libc::FIONBIO)?])
                    .map_err(build_err)?,
            ],
        )],
        // KVM's vCPU requests (and the tap's offloads at a net device's activation); the
        // console log's truncation.
        Profile::Vcpu => vec![
            ioctls(ioctls::VCPU)?,
            own_tgkill()?,
            (libc::SYS_ftruncate, vec![truncating_to_empty()?]),
        ],
        // KVM's VM requests a snapshot makes; kicks of its own vCPUs.
        Profile::Vmm => vec![ioctls(ioctls::VMM)?, own_tgkill()?],
        Profile::Spawner => {
            let mut all = Vec::new();
            for w in Profile::WORKERS {
                all.extend(narrowed(w)?);
            }
            all
        }
        _ => Vec::new(),
    })
}

/// ftruncate to length 0 of stderr, on every thread: hako-vmm's log keeps its tail when it
/// passes its cap (`crate::capped_log`), on whichever thread logs.
fn truncating_the_log() -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(vec![
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::STDERR_FILENO as u64,
        )
        .map_err(build_err)?,
        arg_is(1, SeccompCmpOp::Eq, 0)?,
    ])
    .map_err(build_err)
}

/// ftruncate to length 0 of any descriptor the thread holds: a vCPU's console write keeps
/// the console log's tail when it passes its cap (`crate::capped_log`). Its file's number
/// is not known when the filter is built; the vCPU holds no other file a truncation could
/// harm more than the writes it may already make.
fn truncating_to_empty() -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(vec![arg_is(1, SeccompCmpOp::Eq, 0)?]).map_err(build_err)
}

/// Calls `profile` may make that answer `errno` with certain arguments instead of running:
/// (number, errno, the rules, one of which must match). A guest asks the worker for them at
/// will, and the kernel would refuse most of them anyway, so they must not stop the VMM.
fn refused_with_errno(
    profile: Profile,
) -> Result<Vec<(libc::c_long, u32, Vec<SeccompRule>)>, SeccompError> {
    Ok(match profile {
        // mknodat of a character or block device (overlayfs whiteouts, char 0:0, too): the
        // share's binds are nodev, the jail holds no CAP_MKNOD, and without a jail a node
        // made in a container's root would open through the host's own mounts of it.
        Profile::Fs => {
            let node = |kind: libc::mode_t| -> Result<SeccompRule, SeccompError> {
                SeccompRule::new(vec![
                    SeccompCondition::new(
                        2,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                        u64::from(kind),
                    )
                    .map_err(build_err)?,
                ])
                .map_err(build_err)
            };
            vec![(
                libc::SYS_mknodat,
                libc::EPERM as u32,
                vec![node(libc::S_IFCHR)?, node(libc::S_IFBLK)?],
            )]
        }
        _ => Vec::new(),
    })
}

/// The programs that make [`refused_with_errno`]'s calls answer their errno (anything else
/// passes to the allow list). Stacked filters give the strictest action, and an error is
/// stricter than allowing, so the allow list may allow the call outright.
fn errno_programs(profile: Profile) -> Result<Vec<BpfProgram>, SeccompError> {
    refused_with_errno(profile)?
        .into_iter()
        .map(|(nr, errno, rules)| {
            SeccompFilter::new(
                BTreeMap::from([(nr, rules)]),
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                ARCH,
            )
            .map_err(build_err)?
            .try_into()
            .map_err(SeccompError::Compile)
        })
        .collect()
}

/// The allow-list program of `profile`: its calls allowed (some only with the arguments
/// [`narrowed`] gives), anything else trapped.
fn allow_program(profile: Profile) -> Result<BpfProgram, SeccompError> {
    let mut rules = allow::allowed(profile)
        .into_iter()
        .map(|(nr, _)| (nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let everywhere = (libc::SYS_ftruncate, vec![truncating_the_log()?]);
    for (nr, more) in narrowed(profile)?.into_iter().chain([everywhere]) {
        match rules.get_mut(&nr) {
            // Allowed outright already.
            Some(existing) if existing.is_empty() => {}
            Some(existing) => existing.extend(more),
            None => {
                rules.insert(nr, more);
            }
        }
    }
    SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, ARCH)
        .map_err(build_err)?
        .try_into()
        .map_err(SeccompError::Compile)
}

/// Installs the SIGSYS handler and the base layer on every thread of the process; from then
/// on each thread must [`confine`] itself. Call it while the process has one thread.
pub fn install() -> Result<(), SeccompError> {
    let programs = deny::programs()?;
    install_handler().map_err(SeccompError::Handler)?;
    for p in &programs {
        seccompiler::apply_filter_all_threads(p).map_err(SeccompError::Install)?;
    }
    ENABLED.store(true, Ordering::SeqCst);
    tracing::debug!(
        refused = deny::REFUSED.len() + 3,
        "seccomp base filters installed"
    );
    Ok(())
}

/// Narrows the calling thread to `profile`'s allow list when the filters are on (a no-op
/// otherwise). A thread that cannot be confined must not go on: the VMM stops, saying so.
pub fn confine(profile: Profile) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let installed = errno_programs(profile).and_then(|mut programs| {
        programs.push(allow_program(profile)?);
        programs
            .iter()
            .try_for_each(|p| seccompiler::apply_filter(p).map_err(SeccompError::Install))
    });
    match installed {
        Ok(()) => CONFINED_AS.with(|c| c.set(profile.name())),
        Err(e) => {
            tracing::error!(thread = profile.name(), error = %e, "cannot confine a thread; the VMM stops");
            std::process::exit(i32::from(EXIT_SECCOMP_VIOLATION));
        }
    }
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

/// Writes "hako-vmm: seccomp: ..." (with an ioctl's request, from the trapped thread's
/// registers) and exits; only async-signal-safe calls (write, _exit).
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
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
    put(b"hako-vmm: seccomp: the ");
    put(CONFINED_AS.with(Cell::get).as_bytes());
    put(b" thread made a forbidden system call: ");
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
    put(b")");
    if libc::c_long::from(nr) == libc::SYS_ioctl && !context.is_null() {
        // SAFETY: for an SA_SIGINFO handler the third argument is the trapped thread's
        // ucontext_t; its saved RSI holds the call's second argument (the request).
        let request = unsafe {
            (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RSI as usize]
        };
        put(b" request 0x");
        let mut hex = [0u8; 8];
        for (k, h) in hex.iter_mut().enumerate() {
            let nibble = (request as u64 >> (28 - 4 * k)) & 0xf;
            *h = b"0123456789abcdef"[nibble as usize];
        }
        put(&hex);
    }
    put(b"; the VMM stops\n");
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
        let [refusals, clone3, fcntl] = deny::programs().unwrap();
        assert!(refusals.len() > deny::REFUSED.len());
        assert!(!clone3.is_empty());
        assert!(!fcntl.is_empty());
        assert_eq!(name_of(libc::SYS_execve), "execve");
        assert_eq!(name_of(libc::SYS_socket), "socket");
        assert_eq!(name_of(libc::SYS_openat), "openat");
        assert_eq!(name_of(libc::SYS_kcmp), "?");
    }

    fn allows(p: Profile, nr: libc::c_long) -> bool {
        allow::allowed(p).iter().any(|(n, _)| *n == nr)
    }

    #[test]
    fn each_kind_of_thread_gets_only_its_calls() {
        for p in [
            Profile::Vmm,
            Profile::Vcpu,
            Profile::Control,
            Profile::Signals,
            Profile::Spawner,
            Profile::Fs,
            Profile::Block,
            Profile::Net,
            Profile::Vsock,
        ] {
            assert!(!allow_program(p).unwrap().is_empty(), "{p:?}");
            // Nothing the base refuses is on an allow list (besides clone/socket, narrowed
            // by the base).
            for (nr, name) in deny::REFUSED {
                assert!(!allows(p, *nr), "{p:?} allows {name}");
            }
            assert!(allows(p, libc::SYS_futex) && allows(p, libc::SYS_exit));
        }
        assert!(!allows(Profile::Vcpu, libc::SYS_openat));
        assert!(!allows(Profile::Vcpu, libc::SYS_clone));
        assert!(!allows(Profile::Fs, libc::SYS_socket));
        assert!(!allows(Profile::Fs, libc::SYS_connect));
        assert!(!allows(Profile::Vsock, libc::SYS_openat));
        assert!(!allows(Profile::Net, libc::SYS_openat));
        assert!(!allows(Profile::Signals, libc::SYS_ioctl));
        assert!(allows(Profile::Fs, libc::SYS_setresuid));
        assert!(!allows(Profile::Fs, libc::SYS_ioctl));
        assert!(!allows(Profile::Block, libc::SYS_ioctl));
        assert!(!allows(Profile::Net, libc::SYS_ioctl));
        // The vsock worker's ioctl is narrowed, not listed outright.
        assert!(!allows(Profile::Vsock, libc::SYS_ioctl));
        assert_eq!(narrowed(Profile::Vsock).unwrap().len(), 1);
        assert_eq!(narrowed(Profile::Spawner).unwrap().len(), 1);
        // Truncating stderr (the capped log) is the one ftruncate most threads may make.
        for p in [
            Profile::Control,
            Profile::Signals,
            Profile::Vsock,
            Profile::Net,
        ] {
            assert!(!allows(p, libc::SYS_ftruncate), "{p:?}");
        }
        // The vCPU's and main thread's ioctls are KVM's, by request; their tgkill is to
        // their own process.
        for p in [Profile::Vcpu, Profile::Vmm] {
            assert!(!allows(p, libc::SYS_ioctl), "{p:?}");
            assert!(!allows(p, libc::SYS_tgkill), "{p:?}");
            let narrow: Vec<_> = narrowed(p).unwrap().into_iter().map(|(nr, _)| nr).collect();
            let vcpu: &[libc::c_long] = &[libc::SYS_ioctl, libc::SYS_tgkill, libc::SYS_ftruncate];
            let expected = if p == Profile::Vcpu { vcpu } else { &vcpu[..2] };
            assert_eq!(narrow, expected, "{p:?}");
        }
        assert_eq!(name_of(libc::SYS_ioctl), "ioctl");
        // A guest's device reset at power-off runs the vsock muxer's reset on the vCPU.
        assert!(allows(Profile::Vcpu, libc::SYS_epoll_ctl));
        // The spawner's threads inherit its filter: it must allow all that each does.
        for w in Profile::WORKERS {
            for (nr, name) in allow::allowed(w) {
                assert!(
                    allows(Profile::Spawner, nr),
                    "the spawner lacks {name} for {w:?}"
                );
            }
        }
        assert!(allows(Profile::Spawner, libc::SYS_clone));
    }

    #[test]
    fn the_virtio_fs_list_lacks_what_the_passthrough_does_not_call_here() {
        // Its xattr support and inode file handles are off (devices/virtio/fs/device.rs).
        for nr in [
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_getxattr,
            libc::SYS_lgetxattr,
            libc::SYS_fgetxattr,
            libc::SYS_listxattr,
            libc::SYS_llistxattr,
            libc::SYS_flistxattr,
            libc::SYS_removexattr,
            libc::SYS_lremovexattr,
            libc::SYS_fremovexattr,
            libc::SYS_name_to_handle_at,
        ] {
            assert!(!allows(Profile::Fs, nr), "{}", name_of(nr));
            assert!(!allows(Profile::Spawner, nr), "{}", name_of(nr));
            assert_ne!(name_of(nr), "?");
        }
        // What file work needs stays.
        for nr in [
            libc::SYS_openat,
            libc::SYS_mkdirat,
            libc::SYS_mknodat,
            libc::SYS_symlinkat,
            libc::SYS_linkat,
            libc::SYS_renameat2,
            libc::SYS_unlinkat,
            libc::SYS_fchmodat,
            libc::SYS_ftruncate,
            libc::SYS_pwrite64,
        ] {
            assert!(allows(Profile::Fs, nr), "{}", name_of(nr));
        }
        // Device nodes answer EPERM on the worker only.
        let refused = refused_with_errno(Profile::Fs).unwrap();
        assert_eq!(refused.len(), 1);
        let (nr, errno, rules) = &refused[0];
        assert_eq!(
            (*nr, *errno, rules.len()),
            (libc::SYS_mknodat, libc::EPERM as u32, 2)
        );
        assert_eq!(errno_programs(Profile::Fs).unwrap().len(), 1);
        for p in [
            Profile::Vmm,
            Profile::Vcpu,
            Profile::Spawner,
            Profile::Vsock,
        ] {
            assert!(errno_programs(p).unwrap().is_empty(), "{p:?}");
        }
    }

    #[test]
    fn the_base_refuses_the_new_mount_api() {
        for nr in [
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_mount_setattr,
            467,
        ] {
            assert!(
                deny::REFUSED.iter().any(|(n, _)| *n == nr),
                "{}",
                name_of(nr)
            );
        }
        assert_eq!(name_of(467), "open_tree_attr");
    }
}
