//! Tier 2 (root): a hostile guest against the virtio-fs share. The test plays a guest kernel
//! that ignores the FUSE rules: it writes raw FUSE requests into guest memory and hands the
//! descriptor chains to hako-vmm's virtio-fs device (`Fs::handle`, the worker's own path)
//! over a share laid out by the runtime itself (`hako_runtime::host::share`: a container's
//! root file system bound in, a read-only volume beside it). The share's skeleton is
//! read-only to it: no rename of a container's directory, no symlink, file or FIFO planted
//! where the runtime resolves paths. Nothing
//! outside the shared directory may be read, written, linked or opened: `..` and names with
//! `/`, absolute symlinks (to files and to directories), a file swapped for a symlink after
//! its lookup, hard links to node IDs the guest never got, forged node IDs (the FUSE form of
//! opening by handle), device nodes (made by the guest, or shipped in an image), and setuid
//! files (the binds are nosuid and nodev, submounts included). Everything runs in a thread
//! with a private mount namespace, so no mount reaches the host's.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hako_runtime::host::share::{ContainerShare, Share};
use hako_tests::mounts::in_private_mounts;
use hako_tests::require;
use hako_vmm::devices::virtio::fs::{COUNTERS, Fs};
use hako_vmm::metrics::Counters;
use libtest_mimic::Failed;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::statvfs::{FsFlags, statvfs};
use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const LOOKUP: u32 = 1;
const GETATTR: u32 = 3;
const READLINK: u32 = 5;
const SYMLINK: u32 = 6;
const MKNOD: u32 = 8;
const MKDIR: u32 = 9;
const RENAME: u32 = 12;
const LINK: u32 = 13;
const OPEN: u32 = 14;
const READ: u32 = 15;
const INIT: u32 = 26;
const CREATE: u32 = 35;
const ROOT: u64 = 1;

const REQUEST_AT: u64 = 0x1_0000;
const REPLY_AT: u64 = 0x2_0000;
const REPLY_LEN: u32 = 0x1_0000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// A guest that speaks raw FUSE to the device.
struct Guest {
    fs: Fs,
    mem: GuestMemoryMmap,
    unique: u64,
}

/// What the device answered: the payload, or the errno.
type Reply = Result<Vec<u8>, i32>;

impl Guest {
    fn new(shared: &Path) -> Result<Self, String> {
        let fs = Fs::new("hako-shared", shared, false, Counters::new(COUNTERS))
            .map_err(|e| format!("the virtio-fs device: {e}"))?;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)])
            .map_err(|e| format!("guest memory: {e}"))?;
        let mut g = Self { fs, mem, unique: 0 };
        // FUSE_INIT 7.31, no flags.
        let mut init = Vec::new();
        for v in [7u32, 31, 0, 0] {
            init.extend_from_slice(&v.to_le_bytes());
        }
        g.call(INIT, 0, &init)
            .map_err(|e| format!("FUSE_INIT: errno {e}"))?;
        Ok(g)
    }

    /// One request as uid/gid 0 (a guest's root): header, then `args`.
    fn call(&mut self, opcode: u32, nodeid: u64, args: &[u8]) -> Reply {
        self.unique += 1;
        let len = 40 + args.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_le_bytes());
        req.extend_from_slice(&opcode.to_le_bytes());
        req.extend_from_slice(&self.unique.to_le_bytes());
        req.extend_from_slice(&nodeid.to_le_bytes());
        req.extend_from_slice(&[0; 16]); // uid, gid, pid, extlen + padding
        req.extend_from_slice(args);
        self.mem
            .write_slice(&req, GuestAddress(REQUEST_AT))
            .expect("the request fits in guest memory");
        self.mem
            .write_slice(&[0u8; 16], GuestAddress(REPLY_AT))
            .expect("the reply header fits in guest memory");
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len as u32, NEXT, 0)),
            RawDescriptor::from(SplitDescriptor::new(REPLY_AT, REPLY_LEN, WRITE, 0)),
        ];
        let vq = MockSplitQueue::new(&self.mem, 16);
        vq.build_desc_chain(&descs).expect("a two-descriptor chain");
        let mut q: Queue = vq.create_queue().expect("a mock queue");
        let chain = q
            .iter(&self.mem)
            .expect("the queue iterates")
            .next()
            .expect("one chain");
        let used = self.fs.handle(&self.mem, chain);
        let mut out = vec![0u8; used.clamp(16, REPLY_LEN) as usize];
        self.mem
            .read_slice(&mut out, GuestAddress(REPLY_AT))
            .expect("the reply lies in guest memory");
        let error = i32::from_le_bytes([out[4], out[5], out[6], out[7]]);
        let unique = u64::from_le_bytes(out[8..16].try_into().expect("8 bytes"));
        if used < 16 || unique != self.unique {
            // No answer at all: report it as EIO, which no check below expects.
            return Err(libc::EIO);
        }
        if error != 0 {
            return Err(-error);
        }
        Ok(out[16..].to_vec())
    }

    /// LOOKUP: the node ID and the file type (S_IFMT bits).
    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<(u64, u32), i32> {
        let out = self.call(LOOKUP, parent, &cstr(name))?;
        Ok(entry(&out))
    }

    /// OPEN read-only, then READ up to 4 KiB from offset 0.
    fn read(&mut self, node: u64) -> Reply {
        let open = self.call(OPEN, node, &[0u8; 8])?;
        let fh = u64::from_le_bytes(open[..8].try_into().expect("fuse_open_out"));
        let mut read = Vec::new();
        read.extend_from_slice(&fh.to_le_bytes());
        read.extend_from_slice(&0u64.to_le_bytes());
        read.extend_from_slice(&4096u32.to_le_bytes());
        read.extend_from_slice(&[0u8; 20]);
        self.call(READ, node, &read)
    }

    fn symlink(&mut self, parent: u64, name: &[u8], target: &[u8]) -> Result<(u64, u32), i32> {
        let mut args = cstr(name);
        args.extend_from_slice(&cstr(target));
        Ok(entry(&self.call(SYMLINK, parent, &args)?))
    }

    fn mknod(&mut self, parent: u64, name: &[u8], mode: u32, rdev: u32) -> Reply {
        let mut args = Vec::new();
        for v in [mode, rdev, 0, 0] {
            args.extend_from_slice(&v.to_le_bytes());
        }
        args.extend_from_slice(&cstr(name));
        self.call(MKNOD, parent, &args)
    }

    fn link(&mut self, old: u64, new_parent: u64, name: &[u8]) -> Reply {
        let mut args = old.to_le_bytes().to_vec();
        args.extend_from_slice(&cstr(name));
        self.call(LINK, new_parent, &args)
    }

    fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8]) -> Reply {
        let mut args = new_parent.to_le_bytes().to_vec();
        args.extend_from_slice(&cstr(name));
        args.extend_from_slice(&cstr(new_name));
        self.call(RENAME, parent, &args)
    }

    fn mkdir(&mut self, parent: u64, name: &[u8]) -> Reply {
        let mut args = Vec::new();
        for v in [0o755u32, 0] {
            args.extend_from_slice(&v.to_le_bytes());
        }
        args.extend_from_slice(&cstr(name));
        self.call(MKDIR, parent, &args)
    }

    /// CREATE `name` with `mode`, opened write-only.
    fn create(&mut self, parent: u64, name: &[u8], mode: u32) -> Reply {
        let mut args = Vec::new();
        for v in [libc::O_WRONLY as u32 | libc::O_CREAT as u32, mode, 0, 0] {
            args.extend_from_slice(&v.to_le_bytes());
        }
        args.extend_from_slice(&cstr(name));
        self.call(CREATE, parent, &args)
    }
}

fn cstr(name: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(0);
    v
}

/// (node ID, file type) from a fuse_entry_out.
fn entry(out: &[u8]) -> (u64, u32) {
    let node = u64::from_le_bytes(out[..8].try_into().expect("fuse_entry_out"));
    let mode = u32::from_le_bytes(out[100..104].try_into().expect("fuse_attr.mode"));
    (node, mode & libc::S_IFMT)
}

/// Runs `f` on a thread with a private mount namespace (nothing propagates to the host's).
fn expect_err(what: &str, got: Result<impl std::fmt::Debug, i32>) -> Result<i32, String> {
    match got {
        Err(errno) => Ok(errno),
        Ok(v) => Err(format!("{what} was served: {v:?}")),
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

struct Layout {
    top: tempfile::TempDir,
}

impl Layout {
    fn path(&self, rel: &str) -> PathBuf {
        self.top.path().join(rel)
    }
}

/// top/secret (outside), top/outside-dir/, top/image (an image: a file, a device node, a
/// setuid file and a tmpfs submount), top/volume, and a sandbox's share made by the runtime
/// in top/sb (`hako_runtime::host::share`), with the image bound at sb/shared/c1/rootfs and
/// the volume read-only at sb/shared/c1/mounts/0.
fn lay_out() -> Result<(Layout, ContainerShare), String> {
    let top = tempfile::tempdir().map_err(io("a temporary directory"))?;
    let l = Layout { top };
    std::fs::write(l.path("secret"), "SECRET\n").map_err(io("secret"))?;
    std::fs::create_dir_all(l.path("outside-dir")).map_err(io("outside-dir"))?;
    std::fs::write(l.path("outside-dir/secret"), "SECRET\n").map_err(io("outside-dir"))?;
    std::fs::create_dir_all(l.path("image/sub")).map_err(io("image"))?;
    std::fs::write(l.path("image/hello"), "inside\n").map_err(io("image/hello"))?;
    // /dev/zero's numbers: opened, it would read zeros instead of failing.
    mknod(
        &l.path("image/zero"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 5),
    )
    .map_err(|e| format!("mknod image/zero: {e}"))?;
    std::fs::write(l.path("image/suid"), "#!/bin/sh\nid -u\n").map_err(io("image/suid"))?;
    std::fs::set_permissions(
        l.path("image/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .map_err(io("chmod image/suid"))?;
    mount(
        Some("tmpfs"),
        &l.path("image/sub"),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .map_err(|e| format!("a tmpfs submount in the image: {e}"))?;
    std::fs::create_dir_all(l.path("volume")).map_err(io("volume"))?;
    std::fs::create_dir_all(l.path("sb")).map_err(io("sb"))?;
    let share = Share::create(&l.path("sb")).map_err(|e| format!("Share::create: {e}"))?;
    let mut part = share
        .container("c1")
        .map_err(|e| format!("Share::container: {e}"))?;
    part.bind_rootfs(&l.path("image"), None)
        .map_err(|e| format!("bind_rootfs: {e}"))?;
    part.bind_mount(0, &l.path("volume"), (true, false), None)
        .map_err(|e| format!("bind_mount (ro): {e}"))?;
    Ok((l, part))
}

/// The binds: nodev and nosuid (submount too), the volume read-only; a device node does not
/// open through them although it opens where the image lies.
fn host_side(l: &Layout) -> Result<(), String> {
    for (path, want) in [
        (
            "sb/shared/c1/rootfs",
            FsFlags::ST_NODEV | FsFlags::ST_NOSUID,
        ),
        (
            "sb/shared/c1/rootfs/sub",
            FsFlags::ST_NODEV | FsFlags::ST_NOSUID,
        ),
        (
            "sb/shared/c1/mounts/0",
            FsFlags::ST_NODEV | FsFlags::ST_NOSUID | FsFlags::ST_RDONLY,
        ),
    ] {
        let flags = statvfs(&l.path(path))
            .map_err(|e| format!("statvfs {path}: {e}"))?
            .flags();
        if !flags.contains(want) {
            return Err(format!("{path} is mounted {flags:?}, expected {want:?}"));
        }
    }
    std::fs::File::open(l.path("image/zero"))
        .map_err(io("the device node where the image lies (sanity)"))?;
    match std::fs::File::open(l.path("sb/shared/c1/rootfs/zero")) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
        other => Err(format!(
            "the device node through the bind opened: {other:?} (expected EACCES, nodev)"
        )),
    }
}

fn hostile_guest(l: &Layout) -> Result<(), String> {
    let mut g = Guest::new(&l.path("sb/shared"))?;
    let secret = l.path("secret");
    let (c1, _) = g
        .lookup(ROOT, b"c1")
        .map_err(|e| format!("LOOKUP c1: {e}"))?;
    let (rootfs, _) = g
        .lookup(c1, b"rootfs")
        .map_err(|e| format!("LOOKUP rootfs: {e}"))?;
    let (hello, _) = g
        .lookup(rootfs, b"hello")
        .map_err(|e| format!("LOOKUP hello: {e}"))?;
    if g.read(hello) != Ok(b"inside\n".to_vec()) {
        return Err("a file inside the share does not read back (sanity)".into());
    }

    // `..` and names that are paths.
    for (parent, name) in [
        (ROOT, &b".."[..]),
        (ROOT, b"."),
        (rootfs, b".."),
        (ROOT, b"../secret"),
        (rootfs, b"../../../secret"),
        (ROOT, b"c1/rootfs/hello"),
        (ROOT, secret.as_os_str().as_bytes()),
    ] {
        expect_err(
            &format!("LOOKUP {:?} under {parent}", String::from_utf8_lossy(name)),
            g.lookup(parent, name),
        )?;
    }

    // An absolute symlink to a file outside: it is only text; neither OPEN nor a lookup
    // through it reaches the target.
    let (abs, kind) = g
        .symlink(rootfs, b"abs", secret.as_os_str().as_bytes())
        .map_err(|e| format!("SYMLINK abs: {e}"))?;
    if kind != libc::S_IFLNK {
        return Err(format!("SYMLINK made type {kind:o}"));
    }
    let text = g
        .call(READLINK, abs, &[])
        .map_err(|e| format!("READLINK: {e}"))?;
    if text != secret.as_os_str().as_bytes() {
        return Err(format!("READLINK answered {text:?}"));
    }
    expect_err("OPEN of an absolute symlink", g.read(abs))?;
    let (absdir, _) = g
        .symlink(
            rootfs,
            b"absdir",
            l.path("outside-dir").as_os_str().as_bytes(),
        )
        .map_err(|e| format!("SYMLINK absdir: {e}"))?;
    expect_err(
        "LOOKUP through a symlink to an outside directory",
        g.lookup(absdir, b"secret"),
    )?;
    // One the host made (an image's absolute symlink) is no different.
    std::os::unix::fs::symlink(&secret, l.path("image/host-abs")).map_err(io("symlink"))?;
    let (host_abs, _) = g
        .lookup(rootfs, b"host-abs")
        .map_err(|e| format!("LOOKUP host-abs: {e}"))?;
    expect_err("OPEN of the image's absolute symlink", g.read(host_abs))?;

    // A race: the file the guest looked up is swapped for a symlink to the secret. The node ID
    // still names the file it was (held open by the server), never the symlink's target.
    std::fs::write(l.path("image/race"), "before\n").map_err(io("race"))?;
    let (race, _) = g
        .lookup(rootfs, b"race")
        .map_err(|e| format!("LOOKUP race: {e}"))?;
    std::os::unix::fs::symlink(&secret, l.path("image/race.new")).map_err(io("race.new"))?;
    std::fs::rename(l.path("image/race.new"), l.path("image/race")).map_err(io("swap"))?;
    match g.read(race) {
        Ok(data) if data == b"before\n" => {}
        other => return Err(format!("the swapped file read {other:?}")),
    }
    let (race2, _) = g
        .lookup(rootfs, b"race")
        .map_err(|e| format!("LOOKUP race again: {e}"))?;
    expect_err("OPEN of the swapped-in symlink", g.read(race2))?;

    // Node IDs the guest never got (the FUSE form of opening by handle, and the only way a
    // hard link could name an outside file).
    for forged in [0u64, 2, 0x4242, u64::MAX] {
        if forged == hello || forged == rootfs || forged == c1 {
            continue;
        }
        expect_err(
            &format!("GETATTR of node {forged:#x}"),
            g.call(GETATTR, forged, &[]),
        )?;
        expect_err(&format!("OPEN of node {forged:#x}"), g.read(forged))?;
        expect_err(
            &format!("LINK of node {forged:#x}"),
            g.link(forged, rootfs, b"hl"),
        )?;
    }
    if l.path("image/hl").symlink_metadata().is_ok() {
        return Err("a LINK of a forged node made a file".into());
    }
    g.link(hello, rootfs, b"hello-link")
        .map_err(|e| format!("LINK inside the share (sanity): {e}"))?;
    let secret_links = std::fs::metadata(&secret).map_err(io("secret"))?.nlink();
    if secret_links != 1 {
        return Err(format!("the secret has {secret_links} links"));
    }

    // Device nodes: the guest may not make them; the image's does not open.
    let errno = expect_err(
        "MKNOD of a character device",
        g.mknod(rootfs, b"kmem", libc::S_IFCHR | 0o666, (1 << 8) | 2),
    )?;
    expect_err(
        "MKNOD of a block device",
        g.mknod(rootfs, b"sda", libc::S_IFBLK | 0o666, 8 << 8),
    )?;
    if errno != libc::EPERM || l.path("image/kmem").symlink_metadata().is_ok() {
        return Err(format!(
            "MKNOD of a device: errno {errno}, or the node exists"
        ));
    }
    g.mknod(rootfs, b"fifo", libc::S_IFIFO | 0o600, 0)
        .map_err(|e| format!("MKNOD of a fifo (sanity): {e}"))?;
    let (zero, kind) = g
        .lookup(rootfs, b"zero")
        .map_err(|e| format!("LOOKUP zero: {e}"))?;
    if kind != libc::S_IFCHR {
        return Err(format!("the image's zero has type {kind:o}"));
    }
    expect_err("OPEN of the image's device node", g.read(zero))?;

    // A setuid-root file made by the guest is only that on the host's side of a nosuid bind
    // (checked in host_side); a read-only volume takes no file at all.
    g.create(rootfs, b"guest-suid", 0o104_755)
        .map_err(|e| format!("CREATE in the rootfs (sanity): {e}"))?;
    let (mounts, _) = g
        .lookup(c1, b"mounts")
        .map_err(|e| format!("LOOKUP mounts: {e}"))?;
    let (volume_dir, _) = g
        .lookup(mounts, b"0")
        .map_err(|e| format!("LOOKUP mounts/0: {e}"))?;
    let errno = expect_err(
        "CREATE in a read-only volume",
        g.create(volume_dir, b"x", 0o100_644),
    )?;
    if errno != libc::EROFS || l.path("volume/x").exists() {
        return Err(format!("CREATE in the read-only volume: errno {errno}"));
    }
    if std::fs::read(&secret).map_err(io("secret"))? != b"SECRET\n" {
        return Err("the secret changed".into());
    }
    Ok(())
}

/// The share's skeleton (its root, c1/, c1/mounts/) is read-only to the guest: no rename of
/// a container's directory (which would move its binds), no symlink, file, directory or
/// FIFO planted where the runtime resolves paths; the guest still writes inside the
/// container's root file system.
fn skeleton(l: &Layout) -> Result<(), String> {
    let mut g = Guest::new(&l.path("sb/shared"))?;
    let (c1, _) = g
        .lookup(ROOT, b"c1")
        .map_err(|e| format!("LOOKUP c1: {e}"))?;
    let (mounts, _) = g
        .lookup(c1, b"mounts")
        .map_err(|e| format!("LOOKUP mounts: {e}"))?;
    let (rootfs, _) = g
        .lookup(c1, b"rootfs")
        .map_err(|e| format!("LOOKUP rootfs: {e}"))?;
    let target = l.path("outside-dir");
    let target = target.as_os_str().as_bytes();
    let attempts: [(&str, Reply); 7] = [
        ("RENAME c1 -> aside", g.rename(ROOT, b"c1", ROOT, b"aside")),
        (
            "RENAME c1/mounts -> c1/m2",
            g.rename(c1, b"mounts", c1, b"m2"),
        ),
        (
            "SYMLINK at the share's root",
            g.symlink(ROOT, b"c2", target).map(|_| Vec::new()),
        ),
        (
            "SYMLINK c1/mounts/1",
            g.symlink(mounts, b"1", target).map(|_| Vec::new()),
        ),
        ("CREATE c1/x", g.create(c1, b"x", 0o100_644)),
        ("MKDIR c2", g.mkdir(ROOT, b"c2")),
        (
            "MKNOD of a FIFO in c1/mounts",
            g.mknod(mounts, b"2", libc::S_IFIFO | 0o600, 0),
        ),
    ];
    for (what, got) in attempts {
        let errno = expect_err(what, got)?;
        if errno != libc::EROFS {
            return Err(format!("{what}: errno {errno}, expected EROFS"));
        }
    }
    for (path, what) in [("sb/staging/aside", "renamed c1"), ("sb/staging/c2", "c2")] {
        if l.path(path).symlink_metadata().is_ok() {
            return Err(format!("the guest made {what} in the share's skeleton"));
        }
    }
    g.create(rootfs, b"written-by-the-guest", 0o100_644)
        .map_err(|e| format!("CREATE in the rootfs: errno {e}"))?;
    if !l.path("image/written-by-the-guest").exists() {
        return Err("the guest's file is not in the image".into());
    }
    Ok(())
}

fn confinement() -> Result<(), Failed> {
    in_private_mounts(|| {
        let (l, part) = lay_out()?;
        let result = host_side(&l)
            .and_then(|()| hostile_guest(&l))
            .and_then(|()| skeleton(&l));
        let removed = part
            .remove()
            .map_err(|e| format!("removing c1's share: {e}"));
        let sb = hako_runtime::host::share::remove_dir(&l.path("sb"))
            .map_err(|e| format!("removing the sandbox directory: {e}"));
        let _ = nix::mount::umount2(&l.path("image/sub"), nix::mount::MntFlags::MNT_DETACH);
        result.and(removed).and(sb)?;
        let mounts = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
        let top = l.top.path().display().to_string();
        if let Some(left) = mounts.lines().find(|m| m.contains(&top)) {
            return Err(format!("a mount is left: {left}"));
        }
        Ok(())
    })
    .map_err(Failed::from)
}

fn main() {
    require::run_one(
        "fs_confinement_hostile_guest_stays_in_the_share",
        require::root,
        confinement,
    )
}
