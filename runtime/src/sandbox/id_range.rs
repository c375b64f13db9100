//! The host ids a sandbox's jailed hako-vmm runs as: a range of 65536 uids and gids of its
//! own (its user namespace's `0..65536`), one of [`SLOTS`] ranges from [`FIRST_ID`] up, so
//! no two sandboxes' VMMs share a uid (one could signal the other) and none is a uid the
//! host gives out (Debian's subordinate ids start at 100000 and grow by 65536 a user; these
//! start at 0x70000000).
//!
//! A range is taken with exclusive `flock`s on two files, `<dir>/<slot>` (the runtime's, held
//! by the sandbox's runtime process) and `<dir>/<slot>.vmm` (hako-vmm inherits that
//! descriptor and holds it as long as it lives), so a range is never a live VMM's but its
//! own, and one whose VMM and runtime both ended (stopped, crashed, killed) is free again
//! with their last descriptors: nothing to clean up, nothing that can leak. Two files, each
//! opened read-only, because a compromised VMM holds its descriptor: it can neither write
//! the file (a lock file on /run is no place to grow) nor, by unlocking its own lock (a lock
//! belongs to the open file description it was taken through), free the range while its
//! runtime lives. The lock files stay (two per slot used, empty); removing one could race
//! with its next taker.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hako_vmm_api::JailUser;

/// The first host id of the first range.
pub const FIRST_ID: u32 = 0x7000_0000;
/// Ids per range.
pub const RANGE: u32 = JailUser::DEFAULT_COUNT;
/// How many ranges there are: the last ends at 0x7fffffff, below the ids some tools read
/// as negative.
pub const SLOTS: u32 = (0x8000_0000 - FIRST_ID) / RANGE;
/// Where the lock files live (host-wide: ranges must not collide across state roots).
pub const LOCK_DIR: &str = "/run/hako-ids";

/// A taken range, held by its two locks.
#[derive(Debug)]
pub struct IdRange {
    pub slot: u32,
    /// The runtime's lock, never handed on: held, never read.
    #[allow(dead_code)]
    lock: File,
    /// The VMM's lock: hako-vmm inherits this descriptor.
    vmm_lock: File,
}

impl IdRange {
    /// Takes a free range, trying slots in order from a random one.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let start = random_u32() % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let path = Self::lock_path(dir, slot);
            let Some(lock) = lock_file(&path)? else {
                continue;
            };
            // Free unless a VMM that outlived its runtime still holds it.
            let Some(vmm_lock) = lock_file(&path.with_extension("vmm"))? else {
                continue;
            };
            return Ok(Self {
                slot,
                lock,
                vmm_lock,
            });
        }
        bail!(
            "all {SLOTS} host id ranges for sandbox VMMs are in use (locks in {})",
            dir.display()
        )
    }

    /// The range's first host uid (and gid).
    pub fn first(&self) -> u32 {
        FIRST_ID + self.slot * RANGE
    }

    /// hako-vmm's jail user for this range.
    pub fn jail_user(&self, fallback_to_root: bool) -> JailUser {
        JailUser {
            uid: self.first(),
            gid: self.first(),
            count: RANGE,
            fallback_to_root,
        }
    }

    /// Where the lock is (for messages).
    pub fn lock_path(dir: &Path, slot: u32) -> PathBuf {
        dir.join(slot.to_string())
    }

    /// Makes `cmd`'s process inherit the VMM's lock (it holds the range for as long as it
    /// lives).
    #[allow(unsafe_code)]
    pub fn inherit_on_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.vmm_lock.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are allowed: fcntl on a
        // descriptor number copied before the fork, nothing allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

/// Opens the lock file at `path` read-only (made first if missing) and locks it: the file, or
/// None if another holds it.
fn lock_file(path: &Path) -> anyhow::Result<Option<File>> {
    if !path.exists() {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("making the id range lock {}", path.display()))?;
    }
    let file = File::open(path)
        .with_context(|| format!("opening the id range lock {}", path.display()))?;
    match try_lock(&file) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// An exclusive flock on `file`, without waiting: whether it was free. The lock belongs to
/// the open file description, so it holds while any copy of the descriptor is open.
#[allow(unsafe_code)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor `file` keeps open, with flags.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A running hako-vmm's user namespace and the host ids its root is: what the runtime maps
/// the files it shares with that VMM to.
#[derive(Debug)]
pub struct VmmUser {
    ns: std::os::fd::OwnedFd,
    pub uid: u32,
    pub gid: u32,
}

impl VmmUser {
    pub fn new(ns: std::os::fd::OwnedFd, uid: u32, gid: u32) -> Self {
        Self { ns, uid, gid }
    }

    pub fn ns(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.ns)
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    match File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)) {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => std::process::id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranges_fit_below_2_to_the_31() {
        assert_eq!(SLOTS, 4096);
        let last = FIRST_ID + (SLOTS - 1) * RANGE + (RANGE - 1);
        assert_eq!(last, 0x7fff_ffff);
    }

    #[test]
    fn a_range_is_never_taken_twice_while_held_and_frees_with_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = IdRange::take(dir.path()).unwrap();
        let mut held = vec![a.slot];
        // Every other taker gets another slot while `a` holds its own.
        for _ in 0..20 {
            let r = IdRange::take(dir.path()).unwrap();
            assert!(!held.contains(&r.slot), "slot {} taken twice", r.slot);
            held.push(r.slot);
            std::mem::forget(r.lock);
            std::mem::forget(r.vmm_lock);
        }
        let slot = a.slot;
        drop(a);
        // Freed: its lock file can be locked again.
        let f = File::open(IdRange::lock_path(dir.path(), slot)).unwrap();
        assert!(try_lock(&f).unwrap());
        let user = IdRange {
            slot: 3,
            lock: tempfile::tempfile().unwrap(),
            vmm_lock: tempfile::tempfile().unwrap(),
        }
        .jail_user(true);
        assert_eq!(
            (user.uid, user.gid, user.count),
            (0x7003_0000, 0x7003_0000, 65536)
        );
        assert!(user.fallback_to_root);
    }

    /// What a compromised VMM can do with the descriptor it inherits.
    #[test]
    #[allow(unsafe_code)]
    fn the_vmms_descriptor_can_neither_free_the_range_nor_grow_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = IdRange::take(dir.path()).unwrap();
        // The VMM's copy: the same open file description.
        let vmm = a.vmm_lock.try_clone().unwrap();
        assert!(std::io::Write::write_all(&mut &vmm, b"grow").is_err());
        // SAFETY: flock on an open descriptor.
        assert_eq!(unsafe { libc::flock(vmm.as_raw_fd(), libc::LOCK_UN) }, 0);
        // Its slot cannot be taken: the runtime's lock holds it.
        let path = IdRange::lock_path(dir.path(), a.slot);
        assert!(lock_file(&path).unwrap().is_none());
        assert!(lock_file(&path.with_extension("vmm")).unwrap().is_some());
        drop(a);
        drop(vmm);
        // A VMM that outlives its runtime keeps the range: only the runtime's lock goes.
        let b = IdRange::take(dir.path()).unwrap();
        let path = IdRange::lock_path(dir.path(), b.slot);
        let IdRange { lock, vmm_lock, .. } = b;
        drop(lock);
        assert!(lock_file(&path.with_extension("vmm")).unwrap().is_none());
        drop(vmm_lock);
        assert!(lock_file(&path.with_extension("vmm")).unwrap().is_some());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
