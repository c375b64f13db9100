//! The host ids a sandbox's jailed hako-vmm runs as: a range of 65536 uids and gids of its
//! own (its user namespace's `0..65536`), one of [`SLOTS`] ranges from [`FIRST_ID`] up, so
//! no two sandboxes' VMMs share a uid (one could signal the other) and none is a uid the
//! host gives out (Debian's subordinate ids start at 100000 and grow by 65536 a user; these
//! start at 0x70000000).
//!
//! A range is taken with an exclusive `flock` on `<dir>/<slot>`; hako-vmm inherits that
//! descriptor and holds it as long as it lives, so a range is never a live VMM's but its
//! own, and a VMM that ends (stopped, crashed, killed with its runtime) frees its range with
//! its last descriptor: nothing to clean up, nothing that can leak. The lock files stay (at
//! most one per slot, empty); removing one could race with its next taker.

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

/// A taken range, held by its lock.
#[derive(Debug)]
pub struct IdRange {
    pub slot: u32,
    lock: File,
}

impl IdRange {
    /// Takes a free range, trying slots in order from a random one.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let start = random_u32() % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let path = dir.join(slot.to_string());
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening the id range lock {}", path.display()))?;
            match try_lock(&lock) {
                Ok(true) => return Ok(Self { slot, lock }),
                Ok(false) => continue,
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
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

    /// Makes `cmd`'s process inherit the lock (it holds the range for as long as it lives).
    #[allow(unsafe_code)]
    pub fn inherit_on_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.lock.as_raw_fd();
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
        }
        let slot = a.slot;
        drop(a);
        // Freed: its lock file can be locked again.
        let f = File::options()
            .write(true)
            .open(IdRange::lock_path(dir.path(), slot))
            .unwrap();
        assert!(try_lock(&f).unwrap());
        let user = IdRange {
            slot: 3,
            lock: tempfile::tempfile().unwrap(),
        }
        .jail_user(true);
        assert_eq!(
            (user.uid, user.gid, user.count),
            (0x7003_0000, 0x7003_0000, 65536)
        );
        assert!(user.fallback_to_root);
    }
}
