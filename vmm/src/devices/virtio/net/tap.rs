//! A host tap interface opened by name: `/dev/net/tun` attached with TUNSETIFF (tap, no
//! packet info, virtio-net headers), the 12-byte header size, and the offloads the guest
//! accepts. The tap must exist already (the runtime makes it, in the sandbox's network
//! namespace): attaching by name would otherwise create a new, unconnected one.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::frame::VNET_HDR_LEN;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Offload flags (TUNSETOFFLOAD): what the tap may hand us unfinished.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;

/// Errors opening a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap interface name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    #[error(
        "there is no network interface {0} in hako-vmm's network namespace (create the tap first)"
    )]
    Missing(String),
    #[error("{what} for tap {name}")]
    Io {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(TapError::Name(name.to_owned()));
        }
        // Asked of this thread's network namespace (sysfs may show another one's).
        let cname = std::ffi::CString::new(name).map_err(|_| TapError::Name(name.to_owned()))?;
        // SAFETY: `cname` is a NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.to_owned()));
        }
        let io = |what| {
            let name = name.to_owned();
            move |source| TapError::Io { what, name, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(io("opening /dev/net/tun"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (same size
        // and layout: 16-byte name, then the union whose first member is the flags).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io("attaching (TUNSETIFF; is it a tap, and not in use?)")(
                std::io::Error::last_os_error(),
            ));
        }
        let hdr = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETVNETHDRSZ as _,
                &hdr as *const libc::c_int,
            )
        };
        if rc < 0 {
            return Err(io("setting the virtio-net header size")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// Lets the tap deliver frames with the given offloads pending (the guest finishes them).
    fn offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes the flags as its integer argument.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(TapError::Io {
                what: "setting offloads",
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What the device worker needs of a tap: whole frames in and out, and an fd to wait on. A
/// datagram socket pair stands in for it in unit tests.
pub trait FrameIo: Send {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    fn fd(&self) -> RawFd;
    /// Offloads (`TUN_F_*`) the guest accepts on received frames; nothing by default.
    fn set_offload(&self, _flags: u32) -> Result<(), TapError> {
        Ok(())
    }
}

impl FrameIo for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
    fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        self.offload(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_and_missing_names_are_refused_by_name() {
        assert!(matches!(Tap::open(""), Err(TapError::Name(_))));
        assert!(matches!(
            Tap::open("a-very-long-tap-name"),
            Err(TapError::Name(_))
        ));
        let e = Tap::open("hakonotap0").unwrap_err().to_string();
        assert!(
            e.contains("hakonotap0") && e.contains("no network interface"),
            "{e}"
        );
    }
}
