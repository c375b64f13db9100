//! Seeding the guest's RNG from the host. A VM resumed from a template starts with the
//! template's random state, like every other VM resumed from it; the host's bytes are added
//! (credited, RNDADDENTROPY) and the CRNG is reseeded at once (RNDRESEEDCRNG) so nothing
//! random drawn afterwards is shared between sandboxes.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// `_IOW('R', 0x03, int[2])`
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
/// Beyond this the kernel gains nothing (its pool is 256 bits); larger requests are cut.
const MAX_SEED: usize = 512;

/// `struct rand_pool_info` with its buffer inline.
#[repr(C)]
struct PoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; MAX_SEED],
}

/// Adds `seed` to the kernel's pool, credited at its full size, and reseeds the CRNG.
pub fn seed(seed: &[u8]) -> std::io::Result<()> {
    let n = seed.len().min(MAX_SEED);
    let mut info = PoolInfo {
        entropy_count: (n * 8) as libc::c_int,
        buf_size: n as libc::c_int,
        buf: [0; MAX_SEED],
    };
    info.buf[..n].copy_from_slice(&seed[..n]);
    let random = OpenOptions::new().write(true).open("/dev/random")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose buffer holds buf_size bytes; `info`
    // is one, alive for the call.
    let rc = unsafe {
        libc::ioctl(
            random.as_raw_fd(),
            RNDADDENTROPY as _,
            &info as *const PoolInfo,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
