//! Host tier (root, no KVM): a containerd overlay snapshot mounted for a VMM that runs in a
//! user namespace (`runtime/src/sandbox/idmapped_rootfs.rs`), in a private mount namespace:
//! - the overlay, mounted over id-mapped layers, shows the layers' files with the VMM's ids
//!   (a root file as the range's first id, a uid 1000 file as first + 1000);
//! - it is writable, and what is written as the VMM's root and as its uid 1000 (the fsuids
//!   the VMM's passthrough uses for a guest's root and uid 1000) lands in the upper
//!   directory owned by 0 and 1000 (without the mounter's fsuid set to the VMM's root, the
//!   overlay could not make its work directory and would be read-only);
//! - the scratch directory of the layers' binds is gone, and unmounting leaves no mount;
//! - `rootfs::cannot_be_id_mapped` names the overlay and lets a plain directory pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use hako_runtime::sandbox::id_range::VmmUser;
use hako_runtime::sandbox::idmapped_rootfs::{self, SnapshotMount};
use hako_runtime::sandbox::rootfs;
use hako_tests::require;

/// The test's host ids (outside the runtime's ranges, which start at 0x70000000).
const FIRST: u32 = 0x6ffc_0000;

/// A user namespace mapping `0..65536` to `FIRST..`: made by `unshare --user`, mapped here.
fn user_namespace() -> Result<VmmUser, String> {
    let mut child = Command::new("unshare")
        .args(["--user", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let pid = child.id();
    let ns_path = format!("/proc/{pid}/ns/user");
    let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| e.to_string())?;
    // Until it has entered its namespace.
    let start = std::time::Instant::now();
    while std::fs::metadata(&ns_path).map(|m| m.ino()).ok() == Some(ours.ino()) {
        if start.elapsed().as_secs() > 10 {
            return Err("unshare --user did not make a namespace".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let made = (|| {
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), format!("0 {FIRST} 65536\n"))
                .map_err(|e| format!("{f}: {e}"))?;
        }
        std::fs::File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))
    })();
    let _ = child.kill();
    let _ = child.wait();
    Ok(VmmUser::new(made?.into(), FIRST, FIRST))
}

/// Writes `path` on a thread whose fsuid/fsgid are `id` (as the VMM's passthrough does).
fn write_as(path: &Path, id: u32) -> Result<(), String> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: integer arguments; raw calls change this thread's ids only.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, id);
            libc::syscall(libc::SYS_setfsuid, id);
        }
        std::fs::write(&path, b"x").map_err(|e| format!("writing {} as {id}: {e}", path.display()))
    })
    .join()
    .map_err(|_| "the writing thread panicked".to_string())?
}

fn owner(path: &Path) -> Result<(u32, u32), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.uid(), m.gid()))
}

fn expect(what: &str, got: (u32, u32), want: (u32, u32)) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is owned by {got:?}, not {want:?}"))
    }
}

fn overlay_over_id_mapped_layers(dir: &Path) -> Result<(), String> {
    let p = |s: &str| dir.join(s);
    for d in [
        "lower1",
        "lower2/open",
        "snap/fs",
        "snap/work",
        "rootfs",
        "sandbox",
    ] {
        std::fs::create_dir_all(p(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    std::fs::write(p("lower1/root-file"), b"r").map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        p("lower1/root-file"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(p("lower2/user-file"), b"u").map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(p("lower2/user-file"), Some(1000), Some(1000))
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(p("lower2/open"), std::fs::Permissions::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    let user = user_namespace()?;
    let snapshot = SnapshotMount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            "index=off".into(),
            format!("workdir={}", p("snap/work").display()),
            format!("upperdir={}", p("snap/fs").display()),
            format!(
                "lowerdir={}:{}",
                p("lower1").display(),
                p("lower2").display()
            ),
        ],
    };
    let scratch = p("sandbox/layers/c1");
    idmapped_rootfs::mount(&[snapshot], &p("rootfs"), &scratch, &user)
        .map_err(|e| format!("idmapped_rootfs::mount: {e:#}"))?;
    let checks = (|| {
        if scratch.exists() {
            return Err("the layers' scratch directory is left".to_string());
        }
        expect("root-file", owner(&p("rootfs/root-file"))?, (FIRST, FIRST))?;
        expect(
            "user-file",
            owner(&p("rootfs/user-file"))?,
            (FIRST + 1000, FIRST + 1000),
        )?;
        write_as(&p("rootfs/by-root"), FIRST)?;
        write_as(&p("rootfs/open/by-1000"), FIRST + 1000)?;
        expect(
            "by-root in the upper dir",
            owner(&p("snap/fs/by-root"))?,
            (0, 0),
        )?;
        expect(
            "open/by-1000 in the upper dir",
            owner(&p("snap/fs/open/by-1000"))?,
            (1000, 1000),
        )?;
        match rootfs::cannot_be_id_mapped(&p("rootfs")) {
            Some(why) if why.contains("overlayfs") => {}
            other => return Err(format!("an overlay was judged {other:?}")),
        }
        if let Some(why) = rootfs::cannot_be_id_mapped(&p("lower1")) {
            return Err(format!("a plain directory was judged: {why}"));
        }
        Ok(())
    })();
    rootfs::unbind(&p("rootfs"));
    checks?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&dir.display().to_string()) {
        return Err("a mount under the test directory is left".into());
    }
    Ok(())
}

fn in_private_mounts() -> Result<(), libtest_mimic::Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    hako_tests::mounts::in_private_mounts(|| overlay_over_id_mapped_layers(dir.path()))
        .map_err(Into::into)
}

fn main() {
    require::run_one(
        "idmapped_rootfs_overlay_over_id_mapped_layers",
        || {
            require::root()?;
            require::program("unshare")
        },
        in_private_mounts,
    )
}
