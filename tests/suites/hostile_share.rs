//! Tier 2 (root): the runtime's own share code against a share rewritten the way a guest
//! (through a hole in the read-only skeleton) or a compromised hako-vmm could rewrite it.
//! The guest's side of the skeleton is read-only (`fs_confinement` shows it through the real
//! virtio-fs device); here the attacker writes through the runtime's staging side, the worst
//! case, and the runtime's real lifecycle code then undoes binds (`ContainerShare::remove`,
//! what container removal and sandbox stop call), removes the sandbox directory
//! (`share::remove_dir`, behind `StateDir`'s drop and `hako delete`) and cleans up after a
//! dead shim (`sandbox::clean_up_leftover`, the shim's `delete` action). Each case asserts
//! that no host path outside the sandbox changed: sentinel mounts (checked by their mount
//! ids), sentinel files and volume contents, and that no mount is left below the sandbox.
//! Then the floor they stand on (`host::fs`, `share::unmount_verified`): removal never
//! crosses a mount point, an unmount by descriptor takes that mount only, and an unmount that
//! took a mount stacked since its check is an error. And the host ids a VMM runs as: a range
//! with a live process in it is not taken again. Everything runs on a thread with a
//! private mount namespace.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hako_runtime::host::share::{ContainerShare, Share, remove_dir, unmount_verified};
use hako_runtime::host::{fs, mountinfo};
use hako_tests::mounts::in_private_mounts;
use hako_tests::require;
use libtest_mimic::{Arguments, Failed};
use nix::mount::{MsFlags, mount};

/// A scratch tree: a sentinel mount and file outside the sandbox, an image and volumes to
/// share, and the sandbox directory `sb` with its share.
struct Scene {
    top: tempfile::TempDir,
    share: Arc<Share>,
    /// The sentinel mount's id.
    sentinel: u64,
}

impl Drop for Scene {
    /// The sentinel mount goes first, or removing the scratch tree stops at it and leaves the
    /// tree in /tmp after every run.
    fn drop(&mut self) {
        drop(Detach(self.path("sentinel")));
    }
}

/// Lazily unmounts a path when dropped: a mount a test made in its scratch directory, which
/// must go before the directory can.
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Scene {
    fn new() -> Result<Self, String> {
        let top = tempfile::tempdir().map_err(io("a temporary directory"))?;
        let p = |r: &str| top.path().join(r);
        for d in [
            "sentinel-src",
            "sentinel",
            "image",
            "volume",
            "outside",
            "sb",
        ] {
            std::fs::create_dir(p(d)).map_err(io(d))?;
        }
        std::fs::write(p("sentinel-src/keep"), "sentinel\n").map_err(io("sentinel"))?;
        std::fs::write(p("victim"), "victim\n").map_err(io("victim"))?;
        std::fs::write(p("hosts"), "127.0.0.1 localhost\n").map_err(io("hosts"))?;
        std::fs::write(p("image/hello"), "inside\n").map_err(io("image"))?;
        std::fs::write(p("volume/precious"), "precious\n").map_err(io("volume"))?;
        mount(
            Some(&p("sentinel-src")),
            &p("sentinel"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("the sentinel mount: {e}"))?;
        let sentinel = mount_at(&p("sentinel"))?.ok_or("the sentinel is not mounted")?;
        let share = Share::create(&p("sb")).map_err(|e| format!("Share::create: {e}"))?;
        Ok(Self {
            top,
            share,
            sentinel,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.top.path().join(rel)
    }

    /// Container `cid` with the image as its root, the volume at mounts/0 and the hosts
    /// file at mounts/1.
    fn container(&self, cid: &str) -> Result<ContainerShare, String> {
        let mut part = self
            .share
            .container(cid)
            .map_err(|e| format!("Share::container: {e}"))?;
        part.bind_rootfs(&self.path("image"), None)
            .map_err(|e| format!("bind_rootfs: {e}"))?;
        part.bind_mount(0, &self.path("volume"), (false, false), None)
            .map_err(|e| format!("bind_mount 0: {e}"))?;
        part.bind_mount(1, &self.path("hosts"), (false, false), None)
            .map_err(|e| format!("bind_mount 1: {e}"))?;
        Ok(part)
    }

    /// Nothing outside the sandbox changed, and no mount is left below it.
    fn host_untouched(&self) -> Result<(), String> {
        if mount_at(&self.path("sentinel"))? != Some(self.sentinel) {
            return Err("the sentinel mount outside the sandbox was unmounted".into());
        }
        for (file, want) in [
            ("sentinel/keep", "sentinel\n"),
            ("victim", "victim\n"),
            ("hosts", "127.0.0.1 localhost\n"),
            ("volume/precious", "precious\n"),
            ("image/hello", "inside\n"),
        ] {
            let got = std::fs::read_to_string(self.path(file)).unwrap_or_default();
            if got != want {
                return Err(format!("{file} outside the sandbox changed: {got:?}"));
            }
        }
        let outside: Vec<_> = std::fs::read_dir(self.path("outside"))
            .map_err(io("outside"))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if !outside.is_empty() {
            return Err(format!("entries appeared outside the sandbox: {outside:?}"));
        }
        Ok(())
    }

    fn nothing_mounted_below(&self, dir: &str) -> Result<(), String> {
        let mounts = mountinfo::read().map_err(io("mountinfo"))?;
        let left = mountinfo::under(&mounts, &self.path(dir));
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("mounts left below {dir}: {left:?}"))
        }
    }
}

/// The id of the mount whose mount point is `path`, if one is.
fn mount_at(path: &Path) -> Result<Option<u64>, String> {
    let mounts = mountinfo::read().map_err(io("mountinfo"))?;
    Ok(mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == path)
        .map(|m| m.id))
}

fn run(case: fn() -> Result<(), String>) -> Result<(), Failed> {
    in_private_mounts(case).map_err(Failed::from)
}

/// Finding 1: the attacker moves c1 aside (its binds move with it) and plants symlinks
/// where the runtime recorded its binds: absolute to a host mount point, relative up and
/// out, dangling, and a whole `c1` that is a symlink (a middle component). Undoing the binds
/// must unmount the runtime's own binds (found by mount id) and nothing else.
fn rewritten_share_does_not_steer_unmounting() -> Result<(), String> {
    let s = Scene::new()?;
    for variant in ["symlinks-inside", "c1-is-a-symlink"] {
        let part = s.container("c1")?;
        let staging = s.path("sb/staging");
        std::fs::rename(staging.join("c1"), staging.join("aside")).map_err(io("rename"))?;
        if variant == "symlinks-inside" {
            std::fs::create_dir_all(staging.join("c1/mounts")).map_err(io("c1/mounts"))?;
            symlink(s.path("sentinel"), staging.join("c1/rootfs")).map_err(io("symlink"))?;
            symlink("../../../../sentinel", staging.join("c1/mounts/0")).map_err(io("symlink"))?;
            symlink("/nonexistent/hako", staging.join("c1/mounts/1")).map_err(io("symlink"))?;
        } else {
            symlink(s.top.path(), staging.join("c1")).map_err(io("symlink"))?;
            symlink(s.path("sentinel"), s.path("rootfs")).map_err(io("symlink"))?;
        }
        part.remove().ok();
        let _ = std::fs::remove_file(s.path("rootfs"));
        s.host_untouched()
            .map_err(|e| format!("{variant}, after the binds were undone: {e}"))?;
        s.nothing_mounted_below("sb/staging/aside")
            .map_err(|e| format!("{variant}: the runtime's moved binds were not undone: {e}"))?;
        let staging_fd = hako_runtime::host::fs::open_dir(&staging).map_err(io("staging"))?;
        hako_runtime::host::fs::remove_tree_at(staging_fd.as_fd(), std::ffi::OsStr::new("aside"))
            .map_err(io("removing aside"))?;
        let _ = std::fs::remove_file(staging.join("c1"));
        let _ = std::fs::remove_dir_all(staging.join("c1"));
    }
    // The whole sandbox directory, with a container whose directory was moved aside again.
    s.container("c2").map(std::mem::forget)?;
    let staging = s.path("sb/staging");
    std::fs::rename(staging.join("c2"), staging.join("aside")).map_err(io("rename"))?;
    symlink(s.path("sentinel"), staging.join("c2")).map_err(io("symlink"))?;
    remove_dir(&s.path("sb")).map_err(|e| format!("remove_dir: {e}"))?;
    s.host_untouched()
        .map_err(|e| format!("after the sandbox directory was removed: {e}"))?;
    s.nothing_mounted_below("sb")?;
    if s.path("sb").exists() {
        return Err("the sandbox directory is still there".into());
    }
    Ok(())
}

/// Finding 2: symlinks and FIFOs planted where the runtime makes mount points (absolute to
/// a host file, to a host directory, dangling) and a container directory swapped for a
/// symlink after it was made. Binding must fail or land inside the share, never truncate,
/// create or mount over anything outside.
fn planted_symlinks_are_not_followed_when_binding() -> Result<(), String> {
    let s = Scene::new()?;
    let mut part = s
        .share
        .container("c1")
        .map_err(|e| format!("Share::container: {e}"))?;
    let mounts = s.path("sb/staging/c1/mounts");
    symlink(s.path("victim"), mounts.join("0")).map_err(io("symlink 0"))?;
    symlink(s.path("outside"), mounts.join("1")).map_err(io("symlink 1"))?;
    symlink(s.path("outside/new"), mounts.join("2")).map_err(io("symlink 2"))?;
    nix::unistd::mkfifo(
        &mounts.join("3"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| format!("mkfifo: {e}"))?;
    for (n, source) in [
        (0, s.path("hosts")),
        (1, s.path("volume")),
        (2, s.path("hosts")),
        (3, s.path("hosts")),
    ] {
        if part.bind_mount(n, &source, (false, false), None).is_ok() {
            return Err(format!("bind_mount {n} went through a planted entry"));
        }
    }
    if mount_at(&s.path("outside"))?.is_some() || mount_at(&s.path("victim"))?.is_some() {
        return Err("a bind was attached outside the share".into());
    }
    // c1 swapped for a symlink after it was made: the bind lands in the directory the
    // runtime made (held open), wherever it is now.
    let staging = s.path("sb/staging");
    std::fs::rename(staging.join("c1"), staging.join("aside")).map_err(io("rename"))?;
    symlink(s.path("outside"), staging.join("c1")).map_err(io("symlink c1"))?;
    part.bind_rootfs(&s.path("image"), None)
        .map_err(|e| format!("bind_rootfs: {e}"))?;
    if mount_at(&staging.join("aside/rootfs"))?.is_none() {
        return Err("the rootfs was not bound in the runtime's own directory".into());
    }
    s.host_untouched()?;
    std::fs::remove_file(staging.join("c1")).map_err(io("unlink c1"))?;
    drop(part);
    remove_dir(&s.path("sb")).map_err(|e| format!("remove_dir: {e}"))?;
    s.nothing_mounted_below("sb")?;
    s.host_untouched()
}

/// Finding 4: a container directory renamed to a name that is not UTF-8 (with its binds in
/// it) must not blind the cleanup after a dead shim: every bind is unmounted, and removing
/// the directory never deletes a volume's contents through a bind still mounted.
fn non_utf8_names_do_not_blind_cleanup() -> Result<(), String> {
    let s = Scene::new()?;
    let part = s.container("c1")?;
    std::mem::forget(part); // the shim died: nothing undoes its binds in this process
    let staging = s.path("sb/staging");
    let odd = std::ffi::OsStr::from_bytes(b"c1\xff\xfe\x01 name");
    std::fs::rename(staging.join("c1"), staging.join(odd)).map_err(io("rename"))?;
    if !hako_runtime::sandbox::clean_up_leftover(s.top.path(), "sb") {
        return Err("clean_up_leftover found no sandbox".into());
    }
    s.host_untouched()?;
    s.nothing_mounted_below("sb")?;
    if s.path("sb").exists() {
        return Err("the sandbox directory is still there".into());
    }
    Ok(())
}

/// Reviewer's finding: a volume the spec mounts `rslave` (Kubernetes' HostToContainer) must
/// get the mounts the host makes below its source later, in the guest's view too, where
/// they are mount points (a guest's rmdir of a directory that is a mount point only on the
/// host would detach the host's mount); a default (private) volume does not.
fn a_slave_volume_gets_the_hosts_later_mounts() -> Result<(), String> {
    let s = Scene::new()?;
    let vol = s.path("volume");
    std::fs::create_dir(vol.join("sub")).map_err(io("volume/sub"))?;
    // The volume's source on a shared mount, as kubelet's pod directories are.
    mount(
        Some(&vol),
        &vol,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding the volume onto itself: {e}"))?;
    mount(
        None::<&str>,
        &vol,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| format!("making it shared: {e}"))?;
    let mut part = s
        .share
        .container("c1")
        .map_err(|e| format!("Share::container: {e}"))?;
    part.bind_mount(0, &vol, (false, true), None)
        .map_err(|e| format!("bind_mount rslave: {e}"))?;
    part.bind_mount(1, &vol, (false, false), None)
        .map_err(|e| format!("bind_mount rprivate: {e}"))?;
    // Read-only and rslave: a later mount would arrive with its own flags, writable.
    part.bind_mount(2, &vol, (true, true), None)
        .map_err(|e| format!("bind_mount ro rslave: {e}"))?;
    mount(
        Some("later"),
        &vol.join("sub"),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .map_err(|e| format!("the host's later mount: {e}"))?;
    let slave = mount_at(&s.path("sb/shared/c1/mounts/0/sub"))?;
    let private = mount_at(&s.path("sb/shared/c1/mounts/1/sub"))?;
    let read_only = mount_at(&s.path("sb/shared/c1/mounts/2/sub"))?;
    let written = std::fs::write(s.path("sb/staging/c1/mounts/2/sub/by-guest"), "x").is_ok();
    drop(part);
    let _ = nix::mount::umount2(&vol.join("sub"), nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::mount::umount2(&vol, nix::mount::MntFlags::MNT_DETACH);
    remove_dir(&s.path("sb")).map_err(|e| format!("remove_dir: {e}"))?;
    if slave.is_none() {
        return Err("the rslave volume's guest view did not get the host's later mount".into());
    }
    if private.is_some() {
        return Err("a private volume got the host's later mount".into());
    }
    if read_only.is_some() || written {
        return Err(format!(
            "a read-only rslave volume got the host's later mount (written through it: {written})"
        ));
    }
    s.nothing_mounted_below("sb")
}

/// Reviewer's finding: mount ids are reused (lowest free first). A bind detached behind the
/// runtime's back must not let a later container's bind take its id, or undoing the first
/// would unmount the second. The record pins its mount.
fn a_vanished_binds_id_is_not_reused() -> Result<(), String> {
    let s = Scene::new()?;
    let c1 = s.container("c1")?;
    let rootfs = s.path("sb/staging/c1/rootfs");
    let c1_id = mount_at(&rootfs)?.ok_or("c1's rootfs is not mounted")?;
    nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching c1's rootfs: {e}"))?;
    let c2 = s.container("c2")?;
    let c2_rootfs = s.path("sb/staging/c2/rootfs");
    // c2's rootfs twice: the runtime's and the guest's (its read-only view's) copy.
    let guest_rootfs = s.path("sb/shared/c2/rootfs");
    let before = (mount_at(&c2_rootfs)?, mount_at(&guest_rootfs)?);
    drop(c1);
    let after = (mount_at(&c2_rootfs)?, mount_at(&guest_rootfs)?);
    drop(c2);
    remove_dir(&s.path("sb")).map_err(|e| format!("remove_dir: {e}"))?;
    if before.0.is_none() || before.1.is_none() || after != before {
        return Err(format!(
            "removing c1 (its rootfs was mount {c1_id}) unmounted c2's rootfs: \
             (staging, shared) mounts {before:?} before, {after:?} after"
        ));
    }
    s.host_untouched()
}

/// Reviewer's finding: the state root usually sits on a shared mount (/run), so without the
/// sandbox directory made private first, the share's mounts (the skeleton's read-only view
/// as a writable copy, every container's bind) are copied into every namespace that was a
/// peer or slave of it before the sandbox started. Such a namespace must see none of them.
fn share_mounts_stay_out_of_other_namespaces() -> Result<(), String> {
    let top = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let t = top.path();
    mount(Some(t), t, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("binding the scratch root onto itself: {e}"))?;
    // Dropped before `top`: the bind (and every mount below it) goes first.
    let _bound = Detach(t.to_owned());
    mount(
        None::<&str>,
        t,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| format!("making it shared: {e}"))?;
    for d in ["sb", "image"] {
        std::fs::create_dir(t.join(d)).map_err(io(d))?;
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let sb = t.join("sb");
    let sb_other = sb.clone();
    std::thread::scope(|scope| {
        // A namespace made before the sandbox, a slave of the scratch root (as a service's
        // private /run is of the host's).
        let other = scope.spawn(move || -> Result<Vec<mountinfo::Mount>, String> {
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS,
            )
            .map_err(|e| format!("unshare: {e}"))?;
            mount(
                None::<&str>,
                t,
                None::<&str>,
                MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(|e| format!("making the copy a slave: {e}"))?;
            let _ = ready_tx.send(());
            let _ = go_rx.recv();
            let mounts = mountinfo::read().map_err(io("mountinfo"))?;
            Ok(mountinfo::under(&mounts, &sb_other.join("staging"))
                .into_iter()
                .chain(mountinfo::under(&mounts, &sb_other.join("shared")))
                .collect())
        });
        let made = ready_rx
            .recv()
            .map_err(|_| "the other namespace did not start".to_string())
            .and_then(|()| Share::create(&sb).map_err(|e| format!("Share::create: {e}")))
            .and_then(|share| {
                let mut part = share.container("c1").map_err(|e| format!("{e}"))?;
                part.bind_rootfs(&t.join("image"), None)
                    .map_err(|e| format!("bind_rootfs: {e}"))?;
                Ok((share, part))
            });
        let _ = go_tx.send(());
        let seen = other
            .join()
            .map_err(|_| "the other namespace's thread panicked".to_string())?;
        let (_share, part) = made?;
        drop(part);
        remove_dir(&sb).map_err(|e| format!("remove_dir: {e}"))?;
        let seen = seen?;
        if !seen.is_empty() {
            return Err(format!(
                "another namespace got copies of the share's mounts: {seen:?}"
            ));
        }
        Ok(())
    })
}

/// The floor under every case above (`host::fs`): removing a tree refuses to enter a mount
/// point (the bound volume's contents stay; the rest of the tree goes), and goes on once the
/// mount is gone.
fn removal_never_crosses_a_mount_point() -> Result<(), String> {
    let t = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let volume = t.path().join("volume");
    let tree = t.path().join("tree");
    std::fs::create_dir(&volume).map_err(io("volume"))?;
    std::fs::write(volume.join("data"), "precious").map_err(io("data"))?;
    std::fs::create_dir_all(tree.join("m")).map_err(io("tree"))?;
    std::fs::write(tree.join("other"), "x").map_err(io("other"))?;
    let none = None::<&str>;
    mount(Some(&volume), &tree.join("m"), none, MsFlags::MS_BIND, none)
        .map_err(|e| format!("bind: {e}"))?;
    let dir = fs::open_dir(t.path()).map_err(io("open"))?;
    match fs::remove_tree_at(dir.as_fd(), OsStr::new("tree")) {
        Err(e) if e.to_string().contains("mount point") => {}
        other => return Err(format!("removal across a mount point gave {other:?}")),
    }
    if std::fs::read_to_string(volume.join("data")).unwrap_or_default() != "precious" {
        return Err("the removal deleted a file through the bind".into());
    }
    if tree.join("other").exists() {
        return Err("the removal stopped before the rest of the tree".into());
    }
    nix::mount::umount2(&tree.join("m"), nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("umount: {e}"))?;
    fs::remove_tree_at(dir.as_fd(), OsStr::new("tree")).map_err(io("removal after the unmount"))
}

/// `host::fs::unmount` through a descriptor takes that mount only (a second bind of the
/// same source stays), and a path ending on a mount point is refused when no mount may be
/// crossed.
fn unmounting_by_descriptor_takes_that_mount_only() -> Result<(), String> {
    let t = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let (src, a, b) = (t.path().join("src"), t.path().join("a"), t.path().join("b"));
    let none = None::<&str>;
    for d in [&src, &a, &b] {
        std::fs::create_dir(d).map_err(io("mkdir"))?;
    }
    for to in [&a, &b] {
        mount(Some(&src), to, none, MsFlags::MS_BIND, none).map_err(|e| format!("bind: {e}"))?;
    }
    let dir = fs::open_dir(t.path()).map_err(io("open"))?;
    let beneath = |name: &str, no_xdev: bool| {
        fs::open_beneath(dir.as_fd(), Path::new(name), libc::O_PATH, no_xdev)
    };
    if beneath("a", true).is_ok() {
        return Err("a path ending on a mount point was opened with no crossing allowed".into());
    }
    let fd = beneath("a", false).map_err(io("a"))?;
    let id = fs::mount_of(fd.as_fd()).map_err(io("statx a"))?;
    let parent = fs::mount_of(dir.as_fd()).map_err(io("statx parent"))?;
    if !id.root || id.id == parent.id {
        return Err(format!(
            "a is not seen as a mount root: {id:?} under {parent:?}"
        ));
    }
    fs::unmount(fd).map_err(io("unmount a"))?;
    let after = beneath("a", false).map_err(io("a again"))?;
    if fs::mount_of(after.as_fd()).map_err(io("statx"))?.id != parent.id {
        return Err("a is still a mount point after its unmount".into());
    }
    let other = beneath("b", false).map_err(io("b"))?;
    if !fs::mount_of(other.as_fd()).map_err(io("statx b"))?.root {
        return Err("unmounting a took b too".into());
    }
    fs::unmount(other).map_err(io("unmount b"))
}

/// A mount stacked at a bind's place after its identity was checked is what an unmount
/// through the descriptor takes (the kernel resolves the place to the top of its stack):
/// `share::unmount_verified` sees the recorded mount still there and says so.
fn an_unmount_that_took_a_stacked_mount_is_an_error() -> Result<(), String> {
    let t = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let m = t.path().join("m");
    std::fs::create_dir(&m).map_err(io("m"))?;
    let none = None::<&str>;
    mount(Some("tmpfs"), &m, Some("tmpfs"), MsFlags::empty(), none)
        .map_err(|e| format!("tmpfs: {e}"))?;
    let fd = fs::open_dir(&m).map_err(io("open m"))?;
    let id = fs::mount_of(fd.as_fd()).map_err(io("statx"))?.id;
    mount(Some("tmpfs"), &m, Some("tmpfs"), MsFlags::empty(), none)
        .map_err(|e| format!("stacked tmpfs: {e}"))?;
    let result = unmount_verified(fd, id, &m);
    let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    match result {
        Err(e) if e.to_string().contains("stacked") => Ok(()),
        other => Err(format!(
            "an unmount that took the stacked mount gave {other:?}"
        )),
    }
}

/// The host ids a sandbox's VMM runs as: a range is not taken while a live process (a VMM
/// that outlived its runtime, which holds nothing the runtime can see but its ids) has an
/// id inside it, whatever lock files say.
fn a_live_process_keeps_its_id_range() -> Result<(), String> {
    use hako_runtime::sandbox::id_range::{FIRST_ID, IdRange, RANGE};
    let locks = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let id = (FIRST_ID + 5 * RANGE + 7).to_string();
    let mut vmm = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
        ])
        .args(["sleep", "30"])
        .spawn()
        .map_err(io("setpriv"))?;
    let seen = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        hako_runtime::sandbox::id_range::slots_of_live_processes().contains(&5)
    });
    let taken = IdRange::take_from(locks.path(), 5).map(|r| r.slot);
    let _ = vmm.kill();
    let _ = vmm.wait();
    if !seen {
        return Err("the process in slot 5's range was not seen".into());
    }
    match taken {
        Ok(6) => Ok(()),
        other => Err(format!(
            "the first range from slot 5 on, with a live process in it: {other:?}"
        )),
    }
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial(
            "hostile_share_rewritten_share_does_not_steer_unmounting",
            require::root,
            || run(rewritten_share_does_not_steer_unmounting),
        ),
        require::trial(
            "hostile_share_planted_symlinks_are_not_followed_when_binding",
            require::root,
            || run(planted_symlinks_are_not_followed_when_binding),
        ),
        require::trial(
            "hostile_share_non_utf8_names_do_not_blind_cleanup",
            require::root,
            || run(non_utf8_names_do_not_blind_cleanup),
        ),
        require::trial(
            "hostile_share_a_slave_volume_gets_the_hosts_later_mounts",
            require::root,
            || run(a_slave_volume_gets_the_hosts_later_mounts),
        ),
        require::trial(
            "hostile_share_a_vanished_binds_id_is_not_reused",
            require::root,
            || run(a_vanished_binds_id_is_not_reused),
        ),
        require::trial(
            "hostile_share_mounts_stay_out_of_other_namespaces",
            require::root,
            || run(share_mounts_stay_out_of_other_namespaces),
        ),
        require::trial(
            "hostile_share_removal_never_crosses_a_mount_point",
            require::root,
            || run(removal_never_crosses_a_mount_point),
        ),
        require::trial(
            "hostile_share_unmounting_by_descriptor_takes_that_mount_only",
            require::root,
            || run(unmounting_by_descriptor_takes_that_mount_only),
        ),
        require::trial(
            "hostile_share_an_unmount_that_took_a_stacked_mount_is_an_error",
            require::root,
            || run(an_unmount_that_took_a_stacked_mount_is_an_error),
        ),
        require::trial(
            "hostile_share_a_live_process_keeps_its_id_range",
            require::root,
            || run(a_live_process_keeps_its_id_range),
        ),
    ];
    libtest_mimic::run(&args, trials).exit()
}
