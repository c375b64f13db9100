//! The host cgroup of a sandbox's hako-vmm: the whole VM process (guest RAM, vCPUs, device
//! threads) limited to the VM's size plus an overhead, so a guest cannot take more of the
//! host than its sandbox was given, and a VMM cannot multiply its threads.
//!
//! The cgroup is a child of the cgroup the runtime itself runs in (the shim's, or the `hako`
//! CLI's), never a new top-level one: whatever limits the host put on the runtime still hold
//! over its VMs. Its name is the sandbox directory's path (`/run/hako/pod1` gives
//! `hako_run_hako_pod1`), so sandboxes of the same id under two roots never share one, an
//! administrator sees whose it is, and a leak checker can find what a root left
//! ([`left_by_root`]). hako-vmm joins it between fork and exec (the spawn's pre-exec writes
//! "0" to each `cgroup.procs`), so none of its memory is charged elsewhere.
//!
//! Both hierarchies: cgroup v2 (`memory.max`, `cpu.max`, `pids.max`, when the parent can
//! delegate the controllers) and v1 (`memory.limit_in_bytes`, `cpu.cfs_quota_us`,
//! `pids.max`, one directory per controller, as on hosts whose controllers are all v1).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;
/// hako-vmm's CPU beyond its vCPUs (device threads), in percent of one CPU.
const CPU_OVERHEAD_PERCENT: u64 = 50;

/// What a sandbox's VMM may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: u64,
    pub pids: u32,
}

impl Limits {
    /// A VM of `vcpus` and `memory_mib`, plus the VMM's own overhead.
    pub fn for_vm(vcpus: u8, memory_mib: u32, overhead_mib: u32) -> Self {
        Self {
            memory_bytes: (u64::from(memory_mib) + u64::from(overhead_mib)) << 20,
            cpu_quota_us: u64::from(vcpus) * CPU_PERIOD_US
                + CPU_PERIOD_US * CPU_OVERHEAD_PERCENT / 100,
            // vCPUs, device workers, control connections, with room to spare.
            pids: 64 + 2 * u32::from(vcpus),
        }
    }
}

/// A sandbox's host cgroup: one directory (v2) or one per controller (v1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostCgroup {
    pub dirs: Vec<PathBuf>,
}

/// The v1 controllers limited, each a hierarchy at `/sys/fs/cgroup/<name>`.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl HostCgroup {
    /// Creates the cgroup of the sandbox in `sandbox_dir` (`<root>/<id>`) and writes its
    /// limits. An error names the file that could not be written; nothing is left then.
    pub fn create(sandbox_dir: &Path, limits: Limits) -> anyhow::Result<Self> {
        let name = cgroup_name(sandbox_dir);
        let layout = Layout::of_this_process()?;
        let mut made = HostCgroup { dirs: Vec::new() };
        let result = (|| {
            match &layout {
                Layout::V2 { own } => {
                    let parent = Path::new(CGROUP_ROOT).join(own);
                    enable_v2_controllers(&parent)?;
                    let dir = parent.join(&name);
                    make_dir(&dir)?;
                    made.dirs.push(dir.clone());
                    write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
                    write(&dir, "memory.swap.max", "0").ok();
                    write(
                        &dir,
                        "cpu.max",
                        &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
                    )?;
                    write(&dir, "pids.max", &limits.pids.to_string())?;
                }
                Layout::V1 { own } => {
                    for (controller, path) in own {
                        let dir = Path::new(CGROUP_ROOT)
                            .join(controller)
                            .join(path)
                            .join(&name);
                        make_dir(&dir)?;
                        made.dirs.push(dir.clone());
                        match *controller {
                            "memory" => {
                                write(
                                    &dir,
                                    "memory.limit_in_bytes",
                                    &limits.memory_bytes.to_string(),
                                )?;
                            }
                            "cpu" => {
                                write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                                write(&dir, "cpu.cfs_quota_us", &limits.cpu_quota_us.to_string())?;
                            }
                            "pids" => write(&dir, "pids.max", &limits.pids.to_string())?,
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(made),
            Err(e) => {
                made.remove();
                Err(e)
            }
        }
    }

    /// The `cgroup.procs` files a new process writes "0" to, to join (for the pre-exec).
    pub fn procs_files(&self) -> anyhow::Result<Vec<CString>> {
        self.dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_bytes())
                    .with_context(|| format!("{} has a NUL byte", d.display()))
            })
            .collect()
    }

    /// Removes the directories (their processes must have ended; waits a little for the
    /// kernel to let go of a VMM just killed). Logs what it cannot remove.
    pub fn remove(&self) {
        for dir in self.dirs.iter().rev() {
            remove_dir(dir);
        }
    }
}

/// What a sandbox under `root` may have left: cgroups named for that root, in the runtime's
/// own cgroup (for leak checkers).
pub fn left_by_root(root: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}_", escaped(root));
    let Ok(layout) = Layout::of_this_process() else {
        return Vec::new();
    };
    let parents: Vec<PathBuf> = match layout {
        Layout::V2 { own } => vec![Path::new(CGROUP_ROOT).join(own)],
        Layout::V1 { own } => own
            .iter()
            .map(|(c, p)| Path::new(CGROUP_ROOT).join(c).join(p))
            .collect(),
    };
    parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// The longest name made from a path; longer paths get a hash.
const MAX_NAME: usize = 200;

/// `hako` and the sandbox directory's path with `/` as `_`; for a very long path, `hako-`
/// and an FNV-1a hash of it (stable across builds and versions).
fn cgroup_name(sandbox_dir: &Path) -> String {
    let name = escaped(sandbox_dir);
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sandbox_dir.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("hako-{h:016x}")
}

fn escaped(path: &Path) -> String {
    format!("hako{}", path.to_string_lossy().replace('/', "_"))
}

/// Where this process's cgroups are.
enum Layout {
    /// The unified hierarchy with the controllers: our cgroup's path below its root.
    V2 { own: PathBuf },
    /// v1: for each controller we limit that is mounted, our cgroup's path in it.
    V1 { own: Vec<(&'static str, PathBuf)> },
}

impl Layout {
    fn of_this_process() -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let relative = |p: &str| PathBuf::from(p.trim_start_matches('/'));
        let v2_memory = Path::new(CGROUP_ROOT).join("cgroup.controllers");
        if std::fs::read_to_string(&v2_memory)
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            let own = text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(relative)
                .context("/proc/self/cgroup has no cgroup v2 line")?;
            return Ok(Layout::V2 { own });
        }
        let mut own = Vec::new();
        for controller in V1_CONTROLLERS {
            let path = text.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
                list.split(',')
                    .any(|c| c == controller)
                    .then(|| relative(path))
            });
            match path {
                Some(p) if Path::new(CGROUP_ROOT).join(controller).is_dir() => {
                    own.push((controller, p))
                }
                _ => tracing::debug!(controller, "no cgroup v1 hierarchy for this controller"),
            }
        }
        if own.is_empty() {
            anyhow::bail!(
                "this host has neither cgroup v2 with the memory controller nor v1 memory/cpu/pids hierarchies under {CGROUP_ROOT}"
            );
        }
        Ok(Layout::V1 { own })
    }
}

/// v2: the parent must hand memory, cpu and pids down to its children.
fn enable_v2_controllers(parent: &Path) -> anyhow::Result<()> {
    let enabled =
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let line: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    write(parent, "cgroup.subtree_control", &line.join(" ")).context(
        "enabling the controllers for the sandbox cgroups (a cgroup v2 parent that holds processes itself cannot; run the runtime in a cgroup of its own or set [vm] host_cgroup = false)",
    )
}

fn make_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        // A leftover of a sandbox of the same name (its VMM gone): reuse it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the sandbox cgroup {}", dir.display())),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn remove_dir(dir: &Path) {
    for attempt in 0..40 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            // EBUSY: a process still in it (a VMM being killed): give it a moment.
            Err(e) if attempt < 39 && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("removing the sandbox cgroup {}: {e}", dir.display());
                return;
            }
        }
    }
}

/// Makes `cmd`'s process join `procs` (each a `cgroup.procs`) before it execs.
#[allow(unsafe_code)]
pub fn join_on_exec(cmd: &mut std::process::Command, procs: Vec<CString>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: the closure
    // allocates nothing (the paths are built before) and makes only open, write and close
    // system calls through nix's thin wrappers on borrowed C strings.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = nix::fcntl::open(
                    p.as_c_str(),
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                let written = nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0");
                let _ = nix::unistd::close(fd);
                written?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_the_vm_plus_overhead() {
        let l = Limits::for_vm(2, 256, 128);
        assert_eq!(l.memory_bytes, 384 << 20);
        assert_eq!(l.cpu_quota_us, 250_000);
        assert_eq!(l.pids, 68);
    }

    #[test]
    fn names_are_the_sandbox_path() {
        let a = cgroup_name(Path::new("/run/hako/pod1"));
        assert_eq!(a, "hako_run_hako_pod1");
        assert_ne!(a, cgroup_name(Path::new("/tmp/other/pod1")));
        assert!(a.starts_with(&format!("{}_", escaped(Path::new("/run/hako")))));
        let long = cgroup_name(&Path::new("/r").join("x".repeat(500)));
        assert!(long.starts_with("hako-") && long.len() == 21, "{long}");
    }
}
