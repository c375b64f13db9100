//! A sandbox's persisted state, `<root>/<sandbox-id>/state.json`: enough for a later process
//! (the shim's `delete` action after a crash, or a restarted shim) to find and clean up what
//! the sandbox left: its hako-vmm process, network and cgroup (its mounts are found in
//! mountinfo, checked by identity: `host::share`).

use std::path::{Path, PathBuf};

use std::time::SystemTime;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxState {
    pub version: u32,
    pub sandbox_id: String,
    /// The hako-vmm process (0 before it starts).
    pub vmm_pid: u32,
    /// Containers created in the sandbox, the sandbox's own first.
    pub containers: Vec<String>,
    /// The taps wired into the pod's network namespace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::Wiring>,
    /// hako-vmm's host cgroup, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cgroup: Option<crate::sandbox::host_cgroup::HostCgroup>,
}

impl SandboxState {
    pub fn new(sandbox_id: &str) -> Self {
        Self {
            version: STATE_VERSION,
            sandbox_id: sandbox_id.into(),
            vmm_pid: 0,
            containers: Vec::new(),
            network: None,
            host_cgroup: None,
        }
    }

    /// Writes `<dir>/state.json` atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_json(dir, STATE_FILE, self)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let state: Self = load_json(dir, STATE_FILE, "Hako sandbox state")?;
        let path = dir.join(STATE_FILE);
        if state.version != STATE_VERSION {
            anyhow::bail!(
                "{} has state version {}; this Hako reads version {STATE_VERSION}",
                path.display(),
                state.version
            );
        }
        Ok(state)
    }
}

/// What the `hako` CLI keeps about a container beside its sandbox: `<root>/<id>/container.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    pub bundle: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// The monitor: the host process that owns the sandbox VM (it outlives the init by the
    /// VM's teardown).
    pub monitor_pid: u32,
    /// The monitor's start time (/proc/<pid>/stat field 22), so a reused pid is not taken
    /// for it.
    pub monitor_start: u64,
    /// The stand-in: the host process callers know as the init (`state`'s pid); it ends
    /// when the init does. 0 until it runs.
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub pid_start: u64,
    /// The container is created in the guest (the monitor serves it).
    pub created_in_guest: bool,
    /// The init's exit status, once it exited.
    pub exit_status: Option<i32>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub owner: String,
    /// The config's `hooks`, taken at create (`start` and `delete` run them from here).
    #[serde(default)]
    pub hooks: serde_json::Value,
}

pub const RECORD_FILE: &str = "container.json";

impl ContainerRecord {
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_json(dir, RECORD_FILE, self)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        load_json(dir, RECORD_FILE, "Hako container record")
    }

    /// Loads the record in `dir`, changes it and saves it, one writer at a time in this
    /// process (the monitor's tasks).
    pub fn update(dir: &Path, change: impl FnOnce(&mut Self)) -> anyhow::Result<Self> {
        static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = WRITER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut r = Self::load(dir)?;
        change(&mut r);
        r.save(dir)?;
        Ok(r)
    }

    /// The monitor still runs (same pid and start time).
    pub fn monitor_alive(&self) -> bool {
        self.monitor_pid != 0 && process_start(self.monitor_pid) == Some(self.monitor_start)
    }

    /// The pid callers know as the container's init: its stand-in's, else (a record of an
    /// older release, or before the stand-in runs) the monitor's.
    pub fn state_pid(&self) -> u32 {
        if self.pid != 0 {
            self.pid
        } else {
            self.monitor_pid
        }
    }

    /// The container's host processes still run: its monitor, and its stand-in once it ran.
    pub fn alive(&self) -> bool {
        self.monitor_alive() && (self.pid == 0 || process_start(self.pid) == Some(self.pid_start))
    }
}

/// Writes `<dir>/<name>` atomically (a temporary file renamed over it).
fn save_json(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("saving {name} in {}", dir.display()))
}

fn load_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    what: &str,
) -> anyhow::Result<T> {
    let path = dir.join(name);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a {what}", path.display()))
}

/// A process's start time in clock ticks since boot (/proc/<pid>/stat field 22).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // A zombie has ended: only its exit status is left to reap.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// An exclusive flock on `path` (created if missing), held until the guard drops.
pub fn lock_file(path: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// RFC 3339 (UTC, nanoseconds) without a date library: days since the epoch to the civil
/// date (Howard Hinnant's algorithm).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
    }

    #[test]
    fn state_round_trips_and_versions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SandboxState::new("pod1");
        s.vmm_pid = 42;
        s.containers.push("pod1".into());
        s.save(dir.path()).unwrap();
        assert_eq!(SandboxState::load(dir.path()).unwrap(), s);
        s.version = 99;
        s.save(dir.path()).unwrap();
        let e = SandboxState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        assert!(SandboxState::load(dir.path()).is_err());
    }

    #[test]
    fn our_own_start_time_is_read() {
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let mut r = ContainerRecord {
            version: 1,
            id: "c".into(),
            bundle: "/b".into(),
            created: String::new(),
            monitor_pid: me,
            monitor_start: start,
            pid: 0,
            pid_start: 0,
            created_in_guest: false,
            exit_status: None,
            annotations: Default::default(),
            owner: "root".into(),
            hooks: serde_json::json!({"poststop": [{"path": "/bin/true"}]}),
        };
        assert!(r.monitor_alive());
        r.monitor_start += 1;
        assert!(!r.monitor_alive());
        let dir = tempfile::tempdir().unwrap();
        r.save(dir.path()).unwrap();
        assert_eq!(ContainerRecord::load(dir.path()).unwrap(), r);
        // A record written before hooks were kept in it loads, with none.
        let mut old: serde_json::Value = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("hooks");
        std::fs::write(dir.path().join(RECORD_FILE), old.to_string()).unwrap();
        assert!(ContainerRecord::load(dir.path()).unwrap().hooks.is_null());
    }
}
