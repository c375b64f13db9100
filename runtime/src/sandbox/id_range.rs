//! The host ids a sandbox's jailed hako-vmm runs as: a range of 65536 uids and gids of its
//! own (its user namespace's `0..65536`), one of [`SLOTS`] ranges from [`FIRST_ID`] up, so
//! no two sandboxes' VMMs share a uid (one could signal the other) and none is a uid the
//! host gives out (Debian's subordinate ids start at 100000 and grow by 65536 a user; these
//! start at 0x70000000).
//!
//! A range is taken with an exclusive `flock` on `<dir>/<slot>`, held by the sandbox's runtime
//! process (the shim or the OCI CLI's monitor) for as long as it lives, and only where no
//! live process has a uid or gid inside the range (`/proc/<pid>/status`): a VMM that
//! outlived its runtime (a crashed shim) keeps its range, because its ids are its user
//! namespace's mapping, which not even a compromised VMM can leave. Nothing is handed to
//! the VMM (an inherited lock could be unlocked, and in the root fallback reopened for
//! writing through /proc/self/fd), nothing to clean up, nothing that can leak. The lock
//! files stay (at most one per slot, empty); removing one could race with its next taker.

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
    /// The runtime's lock: held, never read, never handed on.
    #[allow(dead_code)]
    lock: File,
}

impl IdRange {
    /// Takes a free range, trying slots in order from a random one.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        Self::take_from(dir, random_u32() % SLOTS)
    }

    /// Takes the first free range from slot `start` on (wrapping).
    pub fn take_from(dir: &Path, start: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let in_use = slots_of_live_processes();
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            if in_use.contains(&slot) {
                continue;
            }
            let path = Self::lock_path(dir, slot);
            if let Some(lock) = lock_file(&path)? {
                return Ok(Self { slot, lock });
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
}

/// Opens the lock file at `path` (made if missing) and locks it: the file, or
/// None if another holds it.
fn lock_file(path: &Path) -> anyhow::Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the id range lock {}", path.display()))?;
    match try_lock(&file) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// The slots whose ranges hold a uid or gid of a live process (any of its real, effective,
/// saved and file-system ids). A process' name comes first in its status and the kernel
/// escapes it, and the last `Uid:`/`Gid:` lines are read, so a name cannot forge them; the
/// file is read as bytes (a name need not be UTF-8).
pub fn slots_of_live_processes() -> std::collections::HashSet<u32> {
    let mut slots = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return slots;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read(entry.path().join("status")) else {
            continue;
        };
        slots.extend(ids_in_status(&status).filter_map(slot_of));
    }
    slots
}

/// The ids on the last `Uid:` and `Gid:` lines of a /proc status file.
fn ids_in_status(status: &[u8]) -> impl Iterator<Item = u32> + '_ {
    [b"Uid:".as_slice(), b"Gid:".as_slice()]
        .into_iter()
        .filter_map(|key| status.split(|b| *b == b'\n').rfind(|l| l.starts_with(key)))
        .flat_map(|line| {
            line[4..]
                .split(|b| b.is_ascii_whitespace())
                .filter_map(|w| std::str::from_utf8(w).ok()?.parse::<u32>().ok())
        })
}

/// The slot whose range holds host id `id`.
fn slot_of(id: u32) -> Option<u32> {
    let slot = id.checked_sub(FIRST_ID)? / RANGE;
    (slot < SLOTS).then_some(slot)
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
        let f = File::open(IdRange::lock_path(dir.path(), slot)).unwrap();
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

    #[test]
    fn a_process_status_gives_the_kernels_ids_and_their_slots() {
        let status = b"Name:\tUid:\t1879048192 x\nUmask:\t0022\nUid:\t0\t1879179264\t0\t0\nGid:\t0\t0\t0\t0\n";
        let ids: Vec<u32> = ids_in_status(status).collect();
        assert_eq!(ids, [0, 0x7002_0000, 0, 0, 0, 0, 0, 0]);
        assert_eq!(slot_of(0x7002_0000), Some(2));
        assert_eq!(slot_of(0x7002_ffff), Some(2));
        assert_eq!(slot_of(0x6fff_ffff), None);
        assert_eq!(slot_of(u32::MAX), None);
    }
}
