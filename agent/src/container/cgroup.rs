//! A container's cgroup as the agent reads and changes it (v2 in the VM, v1 when the agent
//! runs on this kind of host in tests): processes, statistics in the API's terms, resource
//! updates.

use std::path::Path;

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

/// The container's statistics in the API's terms.
pub fn stats(path: &Path, id: &str) -> Result<StatsContainerResponse, CgroupError> {
    let m = manager(path, id)?;
    let s = m.stats().map_err(op("reading the statistics", path))?;
    Ok(to_response(&s))
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
    let mut r = StatsContainerResponse::new();
    r.cpu = Some(cpu).into();
    r.memory = Some(memory).into();
    r.pids = Some(pids).into();
    r.io = Some(io).into();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn malformed_resources_are_refused_before_touching_cgroups() {
        let e = update(Path::new("/nonexistent"), "x", b"{nope").unwrap_err();
        assert!(matches!(e, CgroupError::Resources(_)));
    }
}
