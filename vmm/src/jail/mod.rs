//! hako-vmm's jail (`security.jail`): entered at the very start, while the process has one
//! thread (mount namespaces, user namespaces and capability sets are per thread; every later
//! thread inherits them), after it opened /dev/kvm and its taps (`crate::host_devices`). A
//! private mount namespace with a tmpfs root holding only what the config names, bound at
//! its own paths so the config stays valid; pivot_root into it; a /proc that shows processes
//! only, and of those only the ones the VMM could ptrace (`hidepid=ptraceable`: its own; the
//! passthrough file system reopens files through /proc/self/fd); network and IPC namespaces
//! of its own; with `security.jail.user`, a user namespace whose root is an unprivileged host
//! uid, every bind id-mapped to it (`user.rs`); the bounding, permitted and effective
//! capability sets cut to what the devices need; and no_new_privs.
//!
//! As the user namespace's root the VMM keeps its seven file capabilities (fuse-backend-rs's
//! passthrough switches each request to the guest's uid and back to 0 on the thread), but
//! they hold over the id-mapped binds only; to everything else on the host it is an
//! unprivileged uid, and its mount namespace belongs to the host's user namespace, so it
//! cannot mount or unmount there at all.
//!
//! Without a user namespace (`[vm] user_namespace = "off"`, a host that cannot make one, a
//! root file system that cannot be id-mapped) it stays uid 0, as every such VMM does. A
//! distinct host uid per VMM would not part them: the passthrough returns each thread to
//! uid 0 after every request (`setresuid(-1, 0, -1)`), which needs a real or saved uid 0 or
//! CAP_SETUID, and either lets a compromised VMM take any uid, another VMM's included. What
//! keeps such VMMs from each other and from the host instead, each shown by a test: seccomp
//! (no kill, tkill, ptrace, process_vm_*, pidfd_getfd, keyctl, and tgkill to its own
//! threads only: vmm/tests/seccomp.rs), PR_SET_DUMPABLE(0) (a process of the same uid and
//! capabilities cannot ptrace it or read its /proc files: jail.rs), a /proc that shows it
//! only itself, a mount namespace holding only its own files, and network and IPC
//! namespaces of its own (no host abstract socket or System V IPC object: jail.rs); with
//! CAP_SYS_ADMIN, CAP_SYS_PTRACE and the others gone it could not undo any of them.
#![allow(unsafe_code)]

mod mounts;
mod user;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use hako_vmm_api::{ConsoleConfig, JailConfig, JailUser, VmConfig};

use hako_mount::{BindAttrs, DetachedBind, MountError};

use self::mounts::{check, cstring, mount};

/// Errors entering the jail: each names the step.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: {0} must be an absolute path")]
    Relative(PathBuf),
    #[error("jail root {0} is not an existing directory")]
    Root(PathBuf),
    #[error("jail: the process already runs {0} threads; the jail must come first")]
    Threads(usize),
    #[error("jail: binding {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: MountError,
    },
    #[error("jail: {step}")]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let step = what.into();
    move |source| JailError::Step { step, source }
}

/// One host path the jail holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bind {
    pub path: PathBuf,
    pub read_only: bool,
    /// With the mounts below it (a share, whose containers are binds); other binds are of
    /// the path alone, so a directory holding the jail's own root does not show it again.
    pub recursive: bool,
    /// Id-mapped when the jail has a user namespace: all but the device nodes, which are
    /// open to everyone anyway.
    pub id_mapped: bool,
}

/// What the jail must hold for `config` (and a snapshot to resume): sorted, parents first,
/// without duplicates. Relative paths are refused.
pub fn binds(config: &VmConfig, snapshot_dir: Option<&Path>) -> Result<Vec<Bind>, JailError> {
    let mut out: Vec<Bind> = Vec::new();
    let mut add = |path: &Path, read_only: bool, recursive: bool| -> Result<(), JailError> {
        if !path.is_absolute() {
            return Err(JailError::Relative(path.to_owned()));
        }
        out.push(Bind {
            path: path.to_owned(),
            read_only,
            recursive,
            id_mapped: !path.starts_with("/dev"),
        });
        Ok(())
    };
    let parent = |p: &Path| {
        p.parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| p.to_owned())
    };
    add(&config.kernel.path, true, false)?;
    if let Some(initrd) = &config.kernel.initrd {
        add(initrd, true, false)?;
    }
    if let ConsoleConfig::File(f) = &config.console {
        add(&parent(f), false, false)?;
    }
    if let Some(c) = &config.control_socket {
        add(&parent(c), false, false)?;
    }
    if let Some(v) = &config.devices.vsock {
        add(&parent(&v.uds_path), false, false)?;
    }
    for fs in &config.devices.fs {
        add(&fs.shared_dir, fs.read_only, true)?;
    }
    for b in &config.devices.block {
        add(&b.path, b.read_only, false)?;
    }
    if let Some(dir) = snapshot_dir {
        add(dir, true, false)?;
    }
    // /dev/kvm and the taps were opened before the jail (`crate::host_devices`).
    add(Path::new("/dev/null"), false, false)?;
    add(Path::new("/dev/urandom"), true, false)?;
    // Parents before children (a bind below another must come after it); one bind per path
    // (a writable one wins).
    out.sort_by(|a, b| {
        a.path
            .components()
            .count()
            .cmp(&b.path.components().count())
            .then(a.path.cmp(&b.path))
            .then(a.read_only.cmp(&b.read_only))
    });
    out.dedup_by(|later, first| later.path == first.path);
    Ok(out)
}

/// The jail's /proc: process directories only (`subset=pid`: no /proc/sys, /proc/kcore,
/// ...), and only those of processes the VMM may ptrace (`hidepid=ptraceable`, Linux 5.8):
/// its own, whether it is an unprivileged uid or a root without CAP_SYS_PTRACE (the host's
/// other root processes hold capabilities it lacks, and other VMMs are non-dumpable), so it
/// sees no host process. Not `hidepid=invisible`: that one shows every process to the
/// members of the mount's `gid=` group, 0 by default, which a VMM that stays root is.
pub const PROC_OPTIONS: &str = "hidepid=ptraceable,subset=pid";

const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// The capabilities the jailed VMM keeps: the passthrough file system's (it acts as each
/// request's uid/gid on any file of the share) when it has virtio-fs, else none (its taps
/// are attached before the jail).
pub fn capabilities(config: &VmConfig) -> Vec<u32> {
    let mut keep = Vec::new();
    if !config.devices.fs.is_empty() {
        keep.extend([
            CAP_CHOWN,
            CAP_DAC_OVERRIDE,
            CAP_DAC_READ_SEARCH,
            CAP_FOWNER,
            CAP_FSETID,
            CAP_SETGID,
            CAP_SETUID,
        ]);
    }
    keep
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Who the VMM is once in the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailedAs {
    /// Root of a user namespace: the host's `uid`/`gid`.
    User { uid: u32, gid: u32 },
    /// The host's root, with the capabilities its devices need.
    Root,
}

/// Enters the jail for `config`. Must run before the VMM starts any thread.
pub fn enter(
    config: &VmConfig,
    snapshot_dir: Option<&Path>,
    jail: &JailConfig,
) -> Result<JailedAs, JailError> {
    let binds = binds(config, snapshot_dir)?;
    let keep = capabilities(config);
    let root = &jail.root;
    if !root.is_absolute() {
        return Err(JailError::Relative(root.clone()));
    }
    if !root.is_dir() {
        return Err(JailError::Root(root.clone()));
    }
    let n = threads();
    if n != 1 {
        return Err(JailError::Threads(n));
    }
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .map_err(step("reading /proc/sys/kernel/cap_last_cap"))?
        .trim()
        .parse()
        .map_err(|e| step("parsing cap_last_cap")(io::Error::other(e)))?;
    let mut userns = match &jail.user {
        Some(u) => fall_back_or_fail(u, user::create(u))?,
        None => None,
    };

    // A mount namespace of its own; a network namespace with no interface (its taps were
    // opened before, and a tap's descriptor keeps working from any namespace), which also
    // cuts it off from the host's abstract Unix sockets (they belong to a network namespace;
    // its own sockets are path sockets, reached through the jail's binds); and an IPC
    // namespace of its own (no host System V IPC or POSIX message queue). A VMM that stays
    // root reaches no host daemon that trusts peers of uid 0 that way.
    // SAFETY: unshare takes flags only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC) };
    check(
        rc.into(),
        "unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC)",
    )?;
    // Slaves, not private: mounts the host makes later below a share that is a shared mount
    // (the runtime binds each new container's root there) reach the jail, and their
    // unmounts too; nothing the jail mounts goes back.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
        "making every mount a slave",
    )?;
    mount(
        Some(Path::new("tmpfs")),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=0755,size=1m"),
        "mounting the jail's tmpfs",
    )?;
    // Every bind is made detached first: an id mapping fails on a file system that cannot
    // take one, and then nothing has been attached yet to undo.
    let trees = match (&userns, &jail.user) {
        (Some(ns), Some(u)) => match fall_back_or_fail(u, clone_binds(&binds, Some(ns)))? {
            Some(trees) => trees,
            None => {
                userns = None;
                clone_binds(&binds, None)?
            }
        },
        _ => clone_binds(&binds, None)?,
    };
    for (b, tree) in binds.iter().zip(trees) {
        let target = root.join(b.path.strip_prefix("/").unwrap_or(&b.path));
        make_target(&b.path, &target)?;
        tree.attach(&target).map_err(|source| JailError::Bind {
            path: b.path.clone(),
            source,
        })?;
    }
    let proc_dir = root.join("proc");
    std::fs::create_dir_all(&proc_dir).map_err(step("creating the jail's /proc"))?;
    mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(PROC_OPTIONS),
        "mounting /proc (its own processes only)",
    )?;
    let old = root.join(".old");
    std::fs::create_dir_all(&old).map_err(step("creating the old root's mount point"))?;
    let (new_c, old_c) = (cstring(root)?, cstring(&old)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) };
    check(rc, "pivot_root")?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    let old_c = cstring(Path::new("/.old"))?;
    // SAFETY: a NUL-terminated path.
    let rc = unsafe { libc::umount2(old_c.as_ptr(), libc::MNT_DETACH) };
    check(rc.into(), "detaching the old root")?;
    std::fs::remove_dir("/.old").map_err(step("removing the old root's mount point"))?;

    let jailed = match (&userns, &jail.user) {
        (Some(ns), Some(u)) => {
            user::become_root_of(ns)?;
            JailedAs::User {
                uid: u.uid,
                gid: u.gid,
            }
        }
        _ => JailedAs::Root,
    };
    drop(userns);
    drop_capabilities(&keep, last_cap)?;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc.into(), "setting no_new_privs")?;
    Ok(jailed)
}

/// Host ids the probe maps (outside the runtime's ranges, which start at 0x70000000).
const PROBE_ID: u32 = 0x6ffd_0000;

/// Whether this host lets the jail run as an unprivileged uid with `path` bound in: a user
/// namespace made and mapped, and an id-mapped detached bind of `path` (never attached).
/// Needs one thread.
pub fn can_run_unprivileged(path: &Path) -> Result<(), JailError> {
    let n = threads();
    if n != 1 {
        return Err(JailError::Threads(n));
    }
    let user = JailUser {
        uid: PROBE_ID,
        gid: PROBE_ID,
        count: JailUser::DEFAULT_COUNT,
        fallback_to_root: false,
    };
    let ns = user::create(&user)?;
    let attrs = BindAttrs {
        idmap: Some(ns.as_fd()),
        ..Default::default()
    };
    hako_mount::detached_bind(path, &attrs)
        .map(drop)
        .map_err(|source| JailError::Bind {
            path: path.to_owned(),
            source,
        })
}

/// A user-namespace step's result, or None (and a warning) where `user` lets the VMM stay
/// root when the host cannot do it.
fn fall_back_or_fail<T>(
    user: &JailUser,
    result: Result<T, JailError>,
) -> Result<Option<T>, JailError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if user.fallback_to_root => {
            tracing::warn!(
                "the jail stays uid 0: this host cannot run it as uid {}: {}",
                user.uid,
                crate::error_chain(&e)
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every bind as a detached tree, id-mapped to `userns` if given. A share (recursive) keeps
/// its propagation: a slave of the host's share point, it receives the containers bound
/// there later; every other bind is private.
fn clone_binds(binds: &[Bind], userns: Option<&OwnedFd>) -> Result<Vec<DetachedBind>, JailError> {
    binds
        .iter()
        .map(|b| {
            let attrs = BindAttrs {
                recursive: b.recursive,
                read_only: b.read_only,
                private: !b.recursive,
                idmap: userns.filter(|_| b.id_mapped).map(AsFd::as_fd),
                ..Default::default()
            };
            hako_mount::detached_bind(&b.path, &attrs).map_err(|source| JailError::Bind {
                path: b.path.clone(),
                source,
            })
        })
        .collect()
}

/// Makes the mount point for a bind of `source` at `target`: a directory or an empty file.
fn make_target(source: &Path, target: &Path) -> Result<(), JailError> {
    let is_dir = std::fs::metadata(source)
        .map_err(step(format!("{} (for the jail)", source.display())))?
        .is_dir();
    if is_dir {
        std::fs::create_dir_all(target).map_err(step(format!("creating {}", target.display())))
    } else {
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(step(format!("creating {}", p.display())))?;
        }
        if !target.exists() {
            std::fs::File::create(target)
                .map_err(step(format!("creating {}", target.display())))?;
        }
        Ok(())
    }
}

/// Cuts the bounding set to `keep`, then permitted and effective to `keep` (inheritable and
/// ambient empty).
fn drop_capabilities(keep: &[u32], last_cap: u32) -> Result<(), JailError> {
    for cap in 0..=last_cap {
        if !keep.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            check(
                rc.into(),
                format!("dropping capability {cap} from the bounding set"),
            )?;
        }
    }
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0) };
    check(rc.into(), "clearing the ambient capabilities")?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut data = [Data::default(); 2];
    for cap in keep {
        let (word, bit) = ((cap / 32) as usize, cap % 32);
        data[word].effective |= 1 << bit;
        data[word].permitted |= 1 << bit;
    }
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads one header and two data structs of the v3 layout, all alive here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    check(rc, "setting the capability sets")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_vmm_api::{BlockConfig, FsConfig, KernelConfig, NetConfig, VsockConfig};

    fn config() -> VmConfig {
        VmConfig {
            machine: Default::default(),
            kernel: KernelConfig {
                path: "/s/vmlinux".into(),
                initrd: Some("/s/agent.cpio".into()),
                cmdline: String::new(),
                boot_protocol: Default::default(),
            },
            console: ConsoleConfig::File("/run/hako/sb/console.log".into()),
            control_socket: Some("/run/hako/sb/control.sock".into()),
            devices: Default::default(),
            security: Default::default(),
        }
    }

    #[test]
    fn the_jail_holds_what_the_config_names() {
        let mut c = config();
        c.devices.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: "/run/hako/sb/vsock.sock".into(),
        });
        c.devices.fs.push(FsConfig {
            tag: "t".into(),
            shared_dir: "/run/hako/sb/shared".into(),
            read_only: false,
        });
        c.devices.block.push(BlockConfig {
            id: "d".into(),
            path: "/images/disk.raw".into(),
            read_only: true,
        });
        let b = binds(&c, Some(Path::new("/var/lib/hako/templates/k"))).unwrap();
        let paths: Vec<(&str, bool, bool, bool)> = b
            .iter()
            .map(|b| {
                (
                    b.path.to_str().unwrap(),
                    b.read_only,
                    b.recursive,
                    b.id_mapped,
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("/dev/null", false, false, false),
                ("/dev/urandom", true, false, false),
                ("/images/disk.raw", true, false, true),
                ("/s/agent.cpio", true, false, true),
                ("/s/vmlinux", true, false, true),
                ("/run/hako/sb", false, false, true),
                ("/run/hako/sb/shared", false, true, true),
                ("/var/lib/hako/templates/k", true, false, true),
            ]
        );
        assert!(capabilities(&c).contains(&CAP_DAC_OVERRIDE));
    }

    #[test]
    fn without_virtio_fs_nothing_is_kept_and_no_device_node_but_null_and_urandom() {
        let mut c = config();
        assert!(capabilities(&c).is_empty());
        c.devices.net.push(NetConfig {
            id: "eth0".into(),
            tap: "tap0".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: None,
            rate_limit: None,
        });
        // Taps are opened before the jail: no CAP_NET_ADMIN, no /dev/net/tun.
        assert!(capabilities(&c).is_empty());
        let devices: Vec<PathBuf> = binds(&c, None)
            .unwrap()
            .into_iter()
            .map(|b| b.path)
            .filter(|p| p.starts_with("/dev"))
            .collect();
        assert_eq!(devices, [Path::new("/dev/null"), Path::new("/dev/urandom")]);
    }

    #[test]
    fn relative_paths_are_refused() {
        let mut c = config();
        c.kernel.path = "vmlinux".into();
        assert!(matches!(binds(&c, None), Err(JailError::Relative(_))));
    }
}
