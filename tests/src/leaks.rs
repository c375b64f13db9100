//! A leak checker for the runtime's failure paths: what a sandbox under a state root can leave
//! on the host (mounts below the root (a mount of the root itself is the test's), processes that name the root on their command line, the
//! root's entries, Hako's tap links in this namespace, host cgroups the runtime made for
//! sandboxes under the root). A test takes a [`Leaks::under`] after
//! the failure; any finding is a leak.

use std::path::Path;

/// What is left that names a state root.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leaks {
    pub mounts: Vec<String>,
    pub processes: Vec<String>,
    pub entries: Vec<String>,
    pub taps: Vec<String>,
    pub cgroups: Vec<String>,
}

impl Leaks {
    /// Everything left under (or naming) `root`, except this process and its ancestors.
    pub fn under(root: &Path) -> Self {
        let root_text = root.display().to_string();
        // As bytes: a mount point the guest renamed to a name that is not UTF-8 still counts.
        let mounts = match hako_runtime::host::mountinfo::read() {
            Ok(all) => hako_runtime::host::mountinfo::under(&all, root)
                .into_iter()
                .filter(|m| m.mount_point != root)
                .map(|m| m.mount_point.display().to_string())
                .collect(),
            Err(e) => vec![format!("mountinfo unreadable: {e}")],
        };
        let processes = processes_naming(&root_text)
            .into_iter()
            .map(|(pid, cmdline)| format!("{pid}: {cmdline}"))
            .collect();
        let entries = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().display().to_string())
            .collect();
        let taps = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with("_hako"))
            .collect();
        let cgroups = hako_runtime::sandbox::host_cgroup::left_by_root(root)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Self {
            mounts,
            processes,
            entries,
            taps,
            cgroups,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Waits up to `limit` for everything under `root` to go (processes exit asynchronously);
    /// returns what is still there.
    pub fn settle(root: &Path, limit: std::time::Duration) -> Self {
        let start = std::time::Instant::now();
        loop {
            let l = Self::under(root);
            if l.is_empty() || start.elapsed() > limit {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// The live processes (not zombies, not this one) whose command line contains `needle`: each
/// pid and its command line (arguments joined by spaces).
pub fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if cmdline.contains(needle) && !zombie {
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}

/// Detaches every mount at or below `dir`, deepest first (a fixture's teardown).
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = std::process::Command::new("umount")
            .args(["-l", &m])
            .status();
    }
}
