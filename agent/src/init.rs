//! PID 1 duties in the VM: mount the basic file systems, bring up loopback, reap orphaned
//! processes, and power the machine off at the end (also after a fatal error, so the VM never
//! hangs).
#![allow(unsafe_code)]

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// (source, target, fstype, flags, data) mounted at start, in order.
const BASE_MOUNTS: &[(&str, &str, &str, MsFlags, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    ("dev", "/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620",
    ),
    (
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "run",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
    (
        "tmp",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
];

/// Errors setting up the guest.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting {fstype} on {target}")]
    Mount {
        target: &'static str,
        fstype: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("creating {target}")]
    Create {
        target: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where the agent's new root is mounted before it is moved onto `/`.
const NEW_ROOT: &str = "/.hako-root";

/// Leaves the initramfs: containers are set up with pivot_root(2), which refuses to move
/// the kernel's initial root file system. So PID 1 mounts a tmpfs, makes the image's top
/// directories in it, moves it onto `/` and chroots into it (what switch_root does, without
/// copying: the running agent needs no file from the old root). Skipped when `/` is already
/// a real mount (a virtio-fs or block root).
pub fn leave_initramfs() -> Result<(), InitError> {
    use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
    // The initramfs is ramfs or tmpfs; nix names only the latter.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let on_initramfs = statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    });
    if !on_initramfs {
        return Ok(());
    }
    let step = |what: &'static str| {
        move |source: nix::Error| InitError::Mount {
            target: NEW_ROOT,
            fstype: what,
            source,
        }
    };
    std::fs::create_dir_all(NEW_ROOT).map_err(|source| InitError::Create {
        target: NEW_ROOT,
        source,
    })?;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(step("tmpfs"))?;
    for dir in hako_agent_api::GUEST_IMAGE_DIRS {
        let path = format!("{NEW_ROOT}/{dir}");
        std::fs::create_dir_all(&path).map_err(|source| InitError::Create {
            target: NEW_ROOT,
            source,
        })?;
    }
    nix::unistd::chdir(NEW_ROOT).map_err(step("chdir"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(step("move"))?;
    nix::unistd::chroot(".").map_err(step("chroot"))?;
    nix::unistd::chdir("/").map_err(step("chdir"))?;
    Ok(())
}

/// Mounts /proc, /sys, /dev (+pts, shm), /run, /tmp and the cgroup2 hierarchy.
pub fn mount_basics() -> Result<(), InitError> {
    for &(source, target, fstype, flags, data) in BASE_MOUNTS {
        std::fs::create_dir_all(target).map_err(|source| InitError::Create { target, source })?;
        let data = (!data.is_empty()).then_some(data);
        mount(Some(source), target, Some(fstype), flags, data).map_err(|source| {
            InitError::Mount {
                target,
                fstype,
                source,
            }
        })?;
    }
    Ok(())
}

/// Brings the loopback interface up (SIOCSIFFLAGS on "lo").
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is owned by `sock` right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        std::mem::zeroed()
    };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own, through a valid socket fd.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCSIFFLAGS,
            &req,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps every exited child that nobody else waits for; returns how many.
pub fn reap_orphans() -> usize {
    let mut n = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return n,
            Ok(status) => {
                tracing::debug!(?status, "reaped");
                n += 1;
            }
        }
    }
}

/// Flushes file systems and powers the VM off. Never returns; if power-off itself fails the
/// agent exits, and the kernel's panic on PID 1's exit resets the VM.
pub fn power_off() -> ! {
    nix::unistd::sync();
    tracing::info!("powering off");
    let Err(e) = reboot(RebootMode::RB_POWER_OFF);
    tracing::error!(error = %e, "power-off failed");
    std::process::exit(1)
}

/// Whether this process is the VM's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// The kernel command line (empty when unreadable).
pub fn kernel_cmdline() -> String {
    std::fs::read_to_string(Path::new("/proc/cmdline")).unwrap_or_default()
}
