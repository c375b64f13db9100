//! Making a persistent tap interface in the calling thread's network namespace (TUNSETIFF,
//! then TUNSETPERSIST so it outlives this descriptor): hako-vmm attaches to it by name later,
//! and the tap goes when its link is deleted. There is no netlink request that makes a tap.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use anyhow::{Context, bail};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the tap `name` (it must not exist: an existing one would be attached, not made).
pub fn create(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("tap name {name:?} is empty or longer than 15 bytes");
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (is the tun module loaded?)")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (same size and
    // layout: the 16-byte name, then the union whose first member is the flags).
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating tap {name}"));
    }
    // SAFETY: TUNSETPERSIST takes its flag as the integer argument.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("making tap {name} persistent"));
    }
    Ok(())
}
