//! hako-vmm's jail (`security.jail`): entered at the very start, while the process has one
//! thread (mount namespaces and capability sets are per thread; every later thread inherits
//! them). A private mount namespace with a tmpfs root holding only what the config names,
//! bound at its own paths so the config stays valid; pivot_root into it; a /proc that shows
//! processes only (the passthrough file system reopens files through /proc/self/fd); the
//! bounding, permitted and effective capability sets cut to what the devices need; and
//! no_new_privs.
//!
//! The VMM stays uid 0 in the jail: fuse-backend-rs's passthrough switches each request to
//! the guest's uid and back to 0 on the thread, so it cannot run as another uid (the way to an
//! unprivileged uid is a user namespace with an idmapped share; see docs/ARCHITECTURE.md).
//! Without CAP_SYS_ADMIN, CAP_SYS_PTRACE and the others it cannot mount, leave the namespace,
//! or reach other processes' files through /proc, and seccomp forbids those calls anyway.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hako_vmm_api::{ConsoleConfig, JailConfig, VmConfig};

/// Errors entering the jail: each names the step.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: {0} must be an absolute path")]
    Relative(PathBuf),
    #[error("jail root {0} is not an existing directory")]
    Root(PathBuf),
    #[error("jail: the process already runs {0} threads; the jail must come first")]
    Threads(usize),
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
    add(Path::new("/dev/kvm"), false, false)?;
    add(Path::new("/dev/null"), false, false)?;
    add(Path::new("/dev/urandom"), true, false)?;
    if !config.devices.net.is_empty() {
        add(Path::new("/dev/net/tun"), false, false)?;
    }
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

const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_NET_ADMIN: u32 = 12;

/// The capabilities the jailed VMM keeps: the passthrough file system's (it acts as each
/// request's uid/gid on any file of the share) when it has virtio-fs, CAP_NET_ADMIN to attach
/// its taps when it has network devices, else none.
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
    if !config.devices.net.is_empty() {
        keep.push(CAP_NET_ADMIN);
    }
    keep
}

fn cstring(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| JailError::Relative(p.to_owned()))
}

fn check(rc: libc::c_int, what: impl Into<String>) -> Result<(), JailError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(step(what)(io::Error::last_os_error()))
    }
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
    what: &str,
) -> Result<(), JailError> {
    let source = source.map(cstring).transpose()?;
    let target_c = cstring(target)?;
    let fstype = fstype.map(|f| CString::new(f).expect("no NUL in a file system name"));
    let data = data.map(|d| CString::new(d).expect("no NUL in mount options"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    check(rc, format!("{what} ({})", target.display()))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Enters the jail for `config`. Must run before the VMM starts any thread.
pub fn enter(
    config: &VmConfig,
    snapshot_dir: Option<&Path>,
    jail: &JailConfig,
) -> Result<(), JailError> {
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

    // SAFETY: unshare takes flags only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(rc, "unshare(CLONE_NEWNS)")?;
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
    for b in &binds {
        let target = root.join(b.path.strip_prefix("/").unwrap_or(&b.path));
        let is_dir = std::fs::metadata(&b.path)
            .map_err(step(format!("{} (for the jail)", b.path.display())))?
            .is_dir();
        if is_dir {
            std::fs::create_dir_all(&target)
                .map_err(step(format!("creating {}", target.display())))?;
        } else {
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(step(format!("creating {}", p.display())))?;
            }
            if !target.exists() {
                std::fs::File::create(&target)
                    .map_err(step(format!("creating {}", target.display())))?;
            }
        }
        let recursive = if b.recursive { libc::MS_REC } else { 0 };
        mount(
            Some(&b.path),
            &target,
            None,
            libc::MS_BIND | recursive,
            None,
            &format!("binding {}", b.path.display()),
        )?;
        if b.read_only {
            mount(
                None,
                &target,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                None,
                "making a bind read-only",
            )?;
        }
    }
    let proc_dir = root.join("proc");
    std::fs::create_dir_all(&proc_dir).map_err(step("creating the jail's /proc"))?;
    mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("subset=pid"),
        "mounting /proc (processes only)",
    )?;
    let old = root.join(".old");
    std::fs::create_dir_all(&old).map_err(step("creating the old root's mount point"))?;
    let (new_c, old_c) = (cstring(root)?, cstring(&old)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) };
    check(rc as i32, "pivot_root")?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    let old_c = cstring(Path::new("/.old"))?;
    // SAFETY: a NUL-terminated path.
    let rc = unsafe { libc::umount2(old_c.as_ptr(), libc::MNT_DETACH) };
    check(rc, "detaching the old root")?;
    std::fs::remove_dir("/.old").map_err(step("removing the old root's mount point"))?;

    drop_capabilities(&keep, last_cap)?;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "setting no_new_privs")?;
    Ok(())
}

/// Cuts the bounding set to `keep`, then permitted and effective to `keep` (inheritable and
/// ambient empty).
fn drop_capabilities(keep: &[u32], last_cap: u32) -> Result<(), JailError> {
    for cap in 0..=last_cap {
        if !keep.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            check(
                rc,
                format!("dropping capability {cap} from the bounding set"),
            )?;
        }
    }
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0) };
    check(rc, "clearing the ambient capabilities")?;
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
    check(rc as i32, "setting the capability sets")
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
        let paths: Vec<(&str, bool)> = b
            .iter()
            .map(|b| (b.path.to_str().unwrap(), b.read_only))
            .collect();
        assert_eq!(
            paths,
            [
                ("/dev/kvm", false),
                ("/dev/null", false),
                ("/dev/urandom", true),
                ("/images/disk.raw", true),
                ("/s/agent.cpio", true),
                ("/s/vmlinux", true),
                ("/run/hako/sb", false),
                ("/run/hako/sb/shared", false),
                ("/var/lib/hako/templates/k", true),
            ]
        );
        assert!(capabilities(&c).contains(&CAP_DAC_OVERRIDE));
        assert!(!capabilities(&c).contains(&CAP_NET_ADMIN));
    }

    #[test]
    fn without_devices_nothing_is_kept_and_taps_need_tun() {
        let mut c = config();
        assert!(capabilities(&c).is_empty());
        c.devices.net.push(NetConfig {
            id: "eth0".into(),
            tap: "tap0".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: None,
            rate_limit: None,
        });
        assert_eq!(capabilities(&c), [CAP_NET_ADMIN]);
        assert!(
            binds(&c, None)
                .unwrap()
                .iter()
                .any(|b| b.path == Path::new("/dev/net/tun"))
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        let mut c = config();
        c.kernel.path = "vmlinux".into();
        assert!(matches!(binds(&c, None), Err(JailError::Relative(_))));
    }
}
