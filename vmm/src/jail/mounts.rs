//! The jail's classic mount calls: `mount(2)` for the slave propagation, the tmpfs root and
//! /proc. Its binds are made detached, with `hako_mount`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{JailError, step};

pub(super) fn cstring(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| JailError::Relative(p.to_owned()))
}

pub(super) fn check(rc: libc::c_long, what: impl Into<String>) -> Result<(), JailError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(step(what)(io::Error::last_os_error()))
    }
}

/// `mount(2)` with optional source, type and data.
pub(super) fn mount(
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
    check(rc.into(), format!("{what} ({})", target.display()))
}
