//! A container's root file system from containerd's snapshot mounts, made for a sandbox whose
//! hako-vmm runs in a user namespace: the files must show their owners shifted into the
//! VMM's id range, as its id-mapped binds do.
//!
//! An overlay mount cannot be id-mapped (overlayfs does not take `MOUNT_ATTR_IDMAP`), but its
//! layers can: each lower directory, and the directory holding the upper and work
//! directories, is bound detached and id-mapped to the VMM's namespace (`hako_mount`), and
//! the overlay is mounted over those binds. Overlayfs does its own work in the upper layer
//! (work directories, copy-ups) with its mounter's credentials, and a file made through an
//! id-mapped mount is owned by the maker's fsuid mapped back: the host's root (uid 0) has no
//! mapping there, so the overlay is mounted by a thread whose fsuid/fsgid are the VMM's root
//! (the range's first id, which maps back to 0) and which keeps root's capabilities. Files
//! the guest makes land with the ids it gives them, as through the other binds.
//!
//! A bind snapshot (one read-only layer, the native snapshotter) is simply an id-mapped bind.
//! The layer binds live under a scratch directory only while the overlay is mounted: the
//! overlay holds private copies of its layers.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::id_range::VmmUser;
use super::rootfs;

/// One of containerd's rootfs mounts (its `Mount` message, without the proto types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// An overlay's options, split into its layers and the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Overlay {
    lower: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    read_only: bool,
    /// Other overlay options, passed on (`index=off`, `userxattr`, ...).
    rest: Vec<String>,
}

fn parse_overlay(options: &[String]) -> anyhow::Result<Overlay> {
    let mut o = Overlay::default();
    for opt in options {
        if let Some(v) = opt.strip_prefix("lowerdir=") {
            // `:` separates layers; `\:` is a colon in a path.
            let mut layer = String::new();
            let mut chars = v.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&':') => {
                        layer.push(':');
                        chars.next();
                    }
                    ':' => o.lower.push(PathBuf::from(std::mem::take(&mut layer))),
                    c => layer.push(c),
                }
            }
            o.lower.push(PathBuf::from(layer));
        } else if let Some(v) = opt.strip_prefix("upperdir=") {
            o.upper = Some(PathBuf::from(v));
        } else if let Some(v) = opt.strip_prefix("workdir=") {
            o.work = Some(PathBuf::from(v));
        } else if opt == "ro" {
            o.read_only = true;
        } else if opt == "rw" {
            o.read_only = false;
        } else if opt.contains('/') {
            bail!("overlay option {opt:?} names a path this runtime does not know how to id-map");
        } else {
            o.rest.push(opt.clone());
        }
    }
    if o.lower.is_empty() || o.lower.iter().any(|l| !l.is_absolute()) {
        bail!("overlay options {options:?} give no absolute lowerdir");
    }
    if o.upper.is_some() != o.work.is_some() {
        bail!("overlay options {options:?} give an upperdir without a workdir or the reverse");
    }
    Ok(o)
}

/// Mounts `mounts` (containerd's, for one container) on `target` for the sandbox whose VMM is
/// `user`, using `scratch` (made and removed here) for the layers' binds.
pub fn mount(
    mounts: &[SnapshotMount],
    target: &Path,
    scratch: &Path,
    user: &VmmUser,
) -> anyhow::Result<()> {
    let [m] = mounts else {
        bail!(
            "{} rootfs mounts: a sandbox whose VMM runs in a user namespace takes one (an overlay or a bind)",
            mounts.len()
        );
    };
    let is_bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        let read_only = m.options.iter().any(|o| o == "ro");
        return rootfs::bind_at(Path::new(&m.source), target, read_only, Some(user.ns()));
    }
    if m.kind != "overlay" {
        bail!(
            "a {} rootfs cannot be id-mapped for the sandbox VMM's user namespace (set [vm] user_namespace = \"off\")",
            m.kind
        );
    }
    let overlay = parse_overlay(&m.options)?;
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = mount_overlay(&overlay, target, scratch, user);
    // The overlay keeps private copies of its layers: the binds can go (an entry that is no
    // mount, left by a failed bind, answers EINVAL).
    if let Ok(entries) = std::fs::read_dir(scratch) {
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(scratch) {
        tracing::warn!("removing {}: {e}", scratch.display());
    }
    result
}

fn mount_overlay(o: &Overlay, target: &Path, scratch: &Path, user: &VmmUser) -> anyhow::Result<()> {
    // Short relative names keep the options within a page however many layers there are.
    let mut data = Vec::new();
    let mut lowers = Vec::new();
    for (i, layer) in o.lower.iter().enumerate() {
        let name = i.to_string();
        rootfs::bind_at(layer, &scratch.join(&name), true, Some(user.ns()))
            .with_context(|| format!("id-mapping overlay layer {}", layer.display()))?;
        lowers.push(name);
    }
    data.push(format!("lowerdir={}", lowers.join(":")));
    if let (Some(upper), Some(work)) = (&o.upper, &o.work) {
        // Overlayfs wants both on one mount: bind their common parent once.
        let parent = upper
            .parent()
            .filter(|p| work.parent() == Some(*p))
            .with_context(|| {
                format!(
                    "upperdir {} and workdir {} are not in one directory",
                    upper.display(),
                    work.display()
                )
            })?;
        rootfs::bind_at(parent, &scratch.join("u"), false, Some(user.ns())).with_context(|| {
            format!("id-mapping the overlay's upper layer {}", parent.display())
        })?;
        let name = |p: &Path| {
            p.file_name()
                .map(|n| format!("u/{}", n.to_string_lossy()))
                .unwrap_or_default()
        };
        data.push(format!("upperdir={}", name(upper)));
        data.push(format!("workdir={}", name(work)));
    }
    data.extend(o.rest.iter().cloned());
    let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
    if o.read_only {
        flags |= libc::MS_RDONLY;
    }
    let (target, scratch, data) = (target.to_owned(), scratch.to_owned(), data.join(","));
    let (uid, gid) = (user.uid, user.gid);
    std::thread::spawn(move || mount_as(&target, &scratch, &data, flags, uid, gid))
        .join()
        .map_err(|_| anyhow::anyhow!("the overlay's mounting thread panicked"))?
}

/// On this thread only: the working directory `cwd` (its own), fsuid/fsgid `uid`/`gid` with
/// root's capabilities kept, then the overlay on `target`. The thread's credentials become
/// the overlay's for its own work in the layers.
fn mount_as(
    target: &Path,
    cwd: &Path,
    data: &str,
    flags: libc::c_ulong,
    uid: u32,
    gid: u32,
) -> anyhow::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("a NUL byte in a path");
    let (target_c, cwd_c) = (c(target)?, c(cwd)?);
    let data_c = CString::new(data).context("a NUL byte in the overlay's options")?;
    let last = || std::io::Error::last_os_error();
    // SAFETY: unshare with a flag: this thread gets its own cwd, the process's is untouched.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(last()).context("unshare(CLONE_FS) for the overlay's mount");
    }
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::chdir(cwd_c.as_ptr()) } != 0 {
        return Err(last()).with_context(|| format!("chdir {}", cwd.display()));
    }
    // Raw system calls: these change this thread's credentials only.
    // SAFETY: integer arguments. (setfsuid answers the previous id, not an error.)
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    // A non-zero fsuid drops the file capabilities from the effective set; the overlay needs
    // them (a copy-up gives the copy its owner): raise the effective set to the permitted.
    keep_capabilities()?;
    let fstype = c"overlay";
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_c.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(last()).with_context(|| {
            format!(
                "mounting the overlay on {} over id-mapped layers ({data})",
                target.display()
            )
        });
    }
    Ok(())
}

/// This thread's effective capabilities set to its permitted ones.
fn keep_capabilities() -> anyhow::Result<()> {
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
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two v3 data structs, which `data` holds; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const Header,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    // SAFETY: capset reads one header and two v3 data structs, all alive here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containerd_overlay_options_are_split_into_layers() {
        let o = parse_overlay(&opts(&[
            "index=off",
            "workdir=/s/12/work",
            "upperdir=/s/12/fs",
            "lowerdir=/s/11/fs:/s/10/fs:/odd\\:name",
        ]))
        .unwrap();
        assert_eq!(
            o.lower,
            [
                PathBuf::from("/s/11/fs"),
                PathBuf::from("/s/10/fs"),
                PathBuf::from("/odd:name")
            ]
        );
        assert_eq!(o.upper.as_deref(), Some(Path::new("/s/12/fs")));
        assert_eq!(o.work.as_deref(), Some(Path::new("/s/12/work")));
        assert_eq!(o.rest, ["index=off"]);
        assert!(!o.read_only);
        let ro = parse_overlay(&opts(&["ro", "lowerdir=/a:/b"])).unwrap();
        assert!(ro.read_only && ro.upper.is_none());
    }

    #[test]
    fn overlays_this_cannot_remap_are_refused() {
        for bad in [
            &["upperdir=/u", "lowerdir=/l"][..],
            &["lowerdir=relative"],
            &["index=off"],
            &["lowerdir=/l", "metacopy=on", "redirect_dir=/x"],
        ] {
            assert!(parse_overlay(&opts(bad)).is_err(), "{bad:?}");
        }
    }
}
