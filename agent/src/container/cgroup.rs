//! A container's cgroup as the agent reads and changes it (v2 in the VM, v1 when the agent
//! runs on this kind of host in tests): processes, statistics in the API's terms, resource
//! updates, and removal once the container has ended. Where the hierarchies are mounted is
//! read once when the agent starts (it does not change inside a guest).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use hako_agent_api::agent::{CpuStats, IoStats, MemoryStats, PidsStats, StatsContainerResponse};
use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt};
use libcgroups::stats::Stats;
use oci_spec::runtime::LinuxResources;

/// Errors reading or changing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("opening cgroup {0}")]
    Open(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{what} of cgroup {path}")]
    Op {
        what: &'static str,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("linux.resources is not valid JSON for runtime-spec")]
    Resources(#[source] serde_json::Error),
}

fn manager(path: &Path, id: &str) -> Result<AnyCgroupManager, CgroupError> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_owned(),
        systemd_cgroup: false,
        container_name: id.to_owned(),
    })
    .map_err(|e| CgroupError::Open(path.display().to_string(), Box::new(e)))
}

fn op<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(E) -> CgroupError {
    let path = path.display().to_string();
    move |e| CgroupError::Op {
        what,
        path,
        source: Box::new(e),
    }
}

/// The PIDs in the container's cgroup.
pub fn pids(path: &Path, id: &str) -> Result<Vec<i32>, CgroupError> {
    let m = manager(path, id)?;
    let pids = m
        .get_all_pids()
        .map_err(op("listing the processes", path))?;
    Ok(pids.into_iter().map(|p| p.as_raw()).collect())
}

/// The unified (v2) hierarchy's mount point.
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers libcgroups manages (it makes a container's directory in each of
/// these hierarchies, and only these).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Where the cgroup hierarchies are mounted, found once when the agent starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchies {
    /// cgroup v2 (the guest): one hierarchy at this mount point.
    V2(PathBuf),
    /// cgroup v1 (hosts like this one): the mount point of each hierarchy holding a
    /// controller libcgroups manages.
    V1(Vec<PathBuf>),
}

impl Hierarchies {
    /// Finds the hierarchies under `root` (v2 when `root` is a cgroup2 mount, else the v1
    /// mounts in `mountinfo`, the text of /proc/self/mountinfo).
    pub fn detect(root: &Path, mountinfo: impl FnOnce() -> std::io::Result<Vec<u8>>) -> Self {
        let v2 = nix::sys::statfs::statfs(root)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if v2 {
            return Self::V2(root.to_owned());
        }
        Self::V1(mountinfo().map(|m| v1_mounts(&m)).unwrap_or_default())
    }

    /// The directories of cgroup `path` (absolute, as in linux.cgroupsPath), or None when the
    /// path has anything but plain names (`..`, `.`): such a path is left to libcgroups.
    pub fn dirs(&self, path: &Path) -> Option<Vec<PathBuf>> {
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => rel.push(n),
                _ => return None,
            }
        }
        if rel.as_os_str().is_empty() {
            return None;
        }
        Some(match self {
            Self::V2(root) => vec![root.join(&rel)],
            Self::V1(mounts) => mounts.iter().map(|m| m.join(&rel)).collect(),
        })
    }

    /// The file holding the OOM-kill counter of cgroup `path` (memory.events on v2, the
    /// memory hierarchy's memory.oom_control on v1).
    pub fn oom_counter(&self, path: &Path) -> Option<PathBuf> {
        let dirs = self.dirs(path)?;
        match self {
            Self::V2(_) => dirs.into_iter().next().map(|d| d.join("memory.events")),
            Self::V1(mounts) => mounts
                .iter()
                .zip(dirs)
                .find(|(m, _)| m.file_name().is_some_and(|n| n == "memory"))
                .map(|(_, d)| d.join("memory.oom_control")),
        }
    }
}

/// The mount points of v1 hierarchies holding a controller libcgroups manages, from
/// mountinfo's bytes (`... mount_point ... - cgroup source super_options`).
fn v1_mounts(mountinfo: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for line in mountinfo.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(options)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
        else {
            continue;
        };
        let managed = options
            .split(|&b| b == b',')
            .any(|o| V1_CONTROLLERS.iter().any(|c| c.as_bytes() == o));
        // Mount points with spaces are escaped (\040): such a hierarchy is not one of the
        // standard ones, and libcgroups would not find it either.
        if *fstype == b"cgroup" && managed && !point.contains(&b'\\') {
            out.push(PathBuf::from(std::ffi::OsStr::from_bytes(point)));
        }
    }
    out
}

/// How long removal waits for a cgroup's last processes to leave, in all.
const REMOVE_RETRIES: u32 = 4;
const REMOVE_BACKOFF_LIMIT: Duration = Duration::from_millis(100);

/// Removes those of a container's cgroup directories that go with one rmdir (no process left
/// in them; a missing one is already removed) and returns the others, for [`remove`].
pub fn remove_empty(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter(|dir| match std::fs::remove_dir(dir) {
            Ok(()) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        })
        .cloned()
        .collect()
}

/// Removes a container's cgroup directories (what libcgroups' remove does: every process
/// still in one is killed, then the directory is removed, retrying while they go). `dirs`
/// come from [`Hierarchies::dirs`]; a missing directory is already removed.
pub fn remove(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs {
        // Most often the container's processes are all gone and one rmdir is enough; a
        // populated cgroup refuses it (EBUSY) and nothing is lost: then its processes are
        // killed and the rmdir retried.
        match std::fs::remove_dir(dir) {
            Ok(()) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {}
        }
        // Opened without O_CREAT: a cgroup file system has no files to create.
        let killed = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.kill"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
        match killed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No cgroup.kill (v1, or a v2 kernel before 5.14), or no directory.
                let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
                    Ok(p) => p,
                    // No directory (rmdir below says so too).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(op("listing the processes", dir)(e)),
                };
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Err(e) => return Err(op("killing the processes", dir)(e)),
        }
        remove_dir_with_retry(dir)?;
    }
    Ok(())
}

/// rmdir, retrying with libcgroups' back-off while the last processes leave.
fn remove_dir_with_retry(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = Duration::from_millis(10);
    let mut last = None;
    for attempt in 1..=REMOVE_RETRIES {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(delay);
        delay = (delay * attempt).min(REMOVE_BACKOFF_LIMIT);
    }
    Err(op("removing the directory", dir)(last.unwrap_or_else(
        || std::io::Error::other("could not remove"),
    )))
}

/// The container's statistics in the API's terms. On cgroup v2 the agent reads the interface
/// files itself: libcgroups insists on pressure (PSI) files, which kernels without CONFIG_PSI
/// (Hako's guest: PSI costs scheduler time) do not have. On v1 (host tests) libcgroups reads them.
pub fn stats(path: &Path, id: &str) -> Result<StatsContainerResponse, CgroupError> {
    let root = Path::new(CGROUP2_ROOT);
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(path.strip_prefix("/").unwrap_or(path));
        if !dir.is_dir() {
            return Err(CgroupError::Open(
                dir.display().to_string(),
                "no such cgroup".into(),
            ));
        }
        return Ok(v2_stats(&dir));
    }
    let m = manager(path, id)?;
    let s = m.stats().map_err(op("reading the statistics", path))?;
    Ok(to_response(&s))
}

/// `key value` lines of a cgroup v2 file as a lookup (0 when missing).
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A single-value file ("max" and missing files read as 0: no limit, or no controller).
fn single(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Statistics from a cgroup v2 directory's interface files.
pub fn v2_stats(dir: &Path) -> StatsContainerResponse {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (cpu_stat, mem_stat, mem_events, io_stat) = (
        read("cpu.stat"),
        read("memory.stat"),
        read("memory.events"),
        read("io.stat"),
    );
    let mut cpu = CpuStats::new();
    cpu.usage_usec = keyed(&cpu_stat, "usage_usec");
    cpu.user_usec = keyed(&cpu_stat, "user_usec");
    cpu.system_usec = keyed(&cpu_stat, "system_usec");
    cpu.nr_periods = keyed(&cpu_stat, "nr_periods");
    cpu.nr_throttled = keyed(&cpu_stat, "nr_throttled");
    cpu.throttled_usec = keyed(&cpu_stat, "throttled_usec");
    let mut memory = MemoryStats::new();
    memory.usage_bytes = single(dir, "memory.current");
    memory.limit_bytes = single(dir, "memory.max");
    memory.anon_bytes = keyed(&mem_stat, "anon");
    memory.file_bytes = keyed(&mem_stat, "file");
    memory.oom_events = keyed(&mem_events, "oom");
    memory.oom_kill_events = keyed(&mem_events, "oom_kill");
    let mut pids = PidsStats::new();
    pids.current = single(dir, "pids.current");
    pids.limit = single(dir, "pids.max");
    let mut io = IoStats::new();
    for field in io_stat.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match k {
            "rbytes" => io.read_bytes += v,
            "wbytes" => io.write_bytes += v,
            "rios" => io.read_ios += v,
            "wios" => io.write_ios += v,
            _ => {}
        }
    }
    response(cpu, memory, pids, io)
}

/// Applies new resource limits (OCI linux.resources as JSON).
pub fn update(path: &Path, id: &str, resources_json: &[u8]) -> Result<(), CgroupError> {
    let resources: LinuxResources =
        serde_json::from_slice(resources_json).map_err(CgroupError::Resources)?;
    let m = manager(path, id)?;
    m.apply(&ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(op("updating the resources", path))
}

fn response(
    cpu: CpuStats,
    memory: MemoryStats,
    pids: PidsStats,
    io: IoStats,
) -> StatsContainerResponse {
    let mut r = StatsContainerResponse::new();
    r.cpu = Some(cpu).into();
    r.memory = Some(memory).into();
    r.pids = Some(pids).into();
    r.io = Some(io).into();
    r
}

/// libcgroups' statistics (CPU times in nanoseconds) as the API's message (microseconds).
pub fn to_response(s: &Stats) -> StatsContainerResponse {
    let mut cpu = CpuStats::new();
    cpu.usage_usec = s.cpu.usage.usage_total / 1000;
    cpu.user_usec = s.cpu.usage.usage_user / 1000;
    cpu.system_usec = s.cpu.usage.usage_kernel / 1000;
    cpu.nr_periods = s.cpu.throttling.periods;
    cpu.nr_throttled = s.cpu.throttling.throttled_periods;
    cpu.throttled_usec = s.cpu.throttling.throttled_time / 1000;
    let mut memory = MemoryStats::new();
    memory.usage_bytes = s.memory.memory.usage;
    // "No limit" reads as a huge number on v1 and max on v2: report 0.
    memory.limit_bytes = if s.memory.memory.limit >= i64::MAX as u64 / 2 {
        0
    } else {
        s.memory.memory.limit
    };
    let stat = |k: &str| s.memory.stats.get(k).copied().unwrap_or(0);
    memory.anon_bytes = stat("anon").max(stat("rss"));
    memory.file_bytes = stat("file").max(stat("cache"));
    memory.oom_events = s.memory.memory.fail_count;
    memory.oom_kill_events = stat("oom_kill");
    let mut pids = PidsStats::new();
    pids.current = s.pids.current;
    pids.limit = s.pids.limit;
    let mut io = IoStats::new();
    for d in &s.blkio.service_bytes {
        match d.op_type.as_deref() {
            Some("Read" | "read" | "rbytes") => io.read_bytes += d.value,
            Some("Write" | "write" | "wbytes") => io.write_bytes += d.value,
            _ => {}
        }
    }
    for d in &s.blkio.serviced {
        match d.op_type.as_deref() {
            Some("Read" | "read" | "rios") => io.read_ios += d.value,
            Some("Write" | "write" | "wios") => io.write_ios += d.value,
            _ => {}
        }
    }
    response(cpu, memory, pids, io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_that_go_with_one_rmdir_go_and_the_others_are_left_for_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (empty, busy, gone) = (
            dir.path().join("empty"),
            dir.path().join("busy"),
            dir.path().join("gone"),
        );
        std::fs::create_dir(&empty).unwrap();
        std::fs::create_dir_all(busy.join("child")).unwrap();
        let left = remove_empty(&[empty.clone(), busy.clone(), gone]);
        assert_eq!(left, [busy]);
        assert!(!empty.exists());
    }

    #[test]
    fn statistics_convert_units_and_no_limit() {
        let mut s = Stats::default();
        s.cpu.usage.usage_total = 5_000_000;
        s.cpu.usage.usage_user = 3_000_000;
        s.memory.memory.usage = 4096;
        s.memory.memory.limit = u64::MAX;
        s.memory.stats.insert("anon".into(), 1024);
        s.memory.stats.insert("oom_kill".into(), 2);
        s.pids.current = 3;
        s.pids.limit = 10;
        let r = to_response(&s);
        assert_eq!(r.cpu.usage_usec, 5000);
        assert_eq!(r.cpu.user_usec, 3000);
        assert_eq!(r.memory.limit_bytes, 0, "no limit");
        assert_eq!((r.memory.anon_bytes, r.memory.oom_kill_events), (1024, 2));
        assert_eq!((r.pids.current, r.pids.limit), (3, 10));
    }

    #[test]
    fn v2_interface_files_become_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(dir.path().join(f), t).unwrap();
        w(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        );
        w("memory.current", "8192\n");
        w("memory.max", "max\n");
        w("memory.stat", "anon 4096\nfile 2048\nanon_thp 0\n");
        w("memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n");
        w("pids.current", "2\n");
        w("pids.max", "50\n");
        w(
            "io.stat",
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=0 rios=1 wios=0\n",
        );
        let r = v2_stats(dir.path());
        assert_eq!(
            (r.cpu.usage_usec, r.cpu.user_usec, r.cpu.system_usec),
            (1500, 1000, 500)
        );
        assert_eq!((r.memory.usage_bytes, r.memory.limit_bytes), (8192, 0));
        assert_eq!(
            (
                r.memory.anon_bytes,
                r.memory.file_bytes,
                r.memory.oom_kill_events
            ),
            (4096, 2048, 1)
        );
        assert_eq!((r.pids.current, r.pids.limit), (2, 50));
        assert_eq!(
            (
                r.io.read_bytes,
                r.io.write_bytes,
                r.io.read_ios,
                r.io.write_ios
            ),
            (101, 200, 2, 2)
        );
        assert_eq!(keyed("anon_thp 5\nanon 7\n", "anon"), 7, "whole keys only");
    }

    const MOUNTINFO: &[u8] = b"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/odd\\040name rw - cgroup cgroup rw,pids
";

    #[test]
    fn v1_hierarchies_are_the_managed_controllers_mounts() {
        assert_eq!(
            v1_mounts(MOUNTINFO),
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                PathBuf::from("/sys/fs/cgroup/memory")
            ]
        );
        let not_cgroup2 = tempfile::tempdir().unwrap();
        let h = Hierarchies::detect(not_cgroup2.path(), || Ok(MOUNTINFO.to_vec()));
        assert_eq!(h, Hierarchies::V1(v1_mounts(MOUNTINFO)));
    }

    #[test]
    fn cgroup_dirs_are_plain_paths_under_each_hierarchy() {
        let v1 = Hierarchies::V1(v1_mounts(MOUNTINFO));
        assert_eq!(
            v1.dirs(Path::new("/hako/c1")).unwrap(),
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/hako/c1"),
                PathBuf::from("/sys/fs/cgroup/memory/hako/c1")
            ]
        );
        assert_eq!(
            v1.oom_counter(Path::new("/hako/c1")),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/hako/c1/memory.oom_control"
            ))
        );
        let v2 = Hierarchies::V2(PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            v2.oom_counter(Path::new("hako/c1")),
            Some(PathBuf::from("/sys/fs/cgroup/hako/c1/memory.events"))
        );
        for odd in ["/hako/../etc", "/", "", "../x"] {
            assert_eq!(
                v2.dirs(Path::new(odd)),
                None,
                "{odd:?} is left to libcgroups"
            );
        }
    }

    #[test]
    fn removal_takes_empty_directories_and_skips_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        remove(&[gone, empty.clone()]).unwrap();
        assert!(!empty.exists());
        // A directory that cannot be removed is an error, after the retries.
        let busy = dir.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("cgroup.procs"), "").unwrap();
        assert!(matches!(remove(&[busy]), Err(CgroupError::Op { .. })));
    }

    /// One rmdir first; where it is refused (a populated cgroup), what is left is killed
    /// before the retries, as before.
    #[test]
    fn a_directory_the_first_rmdir_leaves_gets_its_processes_killed() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("cgroup.kill"), "").unwrap();
        assert!(matches!(
            remove(std::slice::from_ref(&busy)),
            Err(CgroupError::Op { .. })
        ));
        assert_eq!(std::fs::read(busy.join("cgroup.kill")).unwrap(), b"1");
    }

    #[test]
    fn malformed_resources_are_refused_before_touching_cgroups() {
        let e = update(Path::new("/nonexistent"), "x", b"{nope").unwrap_err();
        assert!(matches!(e, CgroupError::Resources(_)));
    }
}
