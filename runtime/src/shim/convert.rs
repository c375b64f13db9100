//! The agent's container statistics as containerd's cgroup v2 metrics (the guest runs cgroup
//! v2 only), wrapped in the Any containerd decodes by type URL.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use hako_agent_api::agent::StatsContainerResponse;

/// The type URL containerd registers for cgroup v2 metrics.
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

pub fn metrics(s: &StatsContainerResponse) -> Metrics {
    let mut m = Metrics::new();
    if let Some(c) = s.cpu.as_ref() {
        let mut cpu = CPUStat::new();
        cpu.usage_usec = c.usage_usec;
        cpu.user_usec = c.user_usec;
        cpu.system_usec = c.system_usec;
        cpu.nr_periods = c.nr_periods;
        cpu.nr_throttled = c.nr_throttled;
        cpu.throttled_usec = c.throttled_usec;
        m.cpu = Some(cpu).into();
    }
    if let Some(mem) = s.memory.as_ref() {
        let mut out = MemoryStat::new();
        out.usage = mem.usage_bytes;
        out.usage_limit = mem.limit_bytes;
        out.anon = mem.anon_bytes;
        out.file = mem.file_bytes;
        m.memory = Some(out).into();
        let mut ev = MemoryEvents::new();
        ev.oom = mem.oom_events;
        ev.oom_kill = mem.oom_kill_events;
        m.memory_events = Some(ev).into();
    }
    if let Some(p) = s.pids.as_ref() {
        let mut pids = PidsStat::new();
        pids.current = p.current;
        pids.limit = p.limit;
        m.pids = Some(pids).into();
    }
    if let Some(io) = s.io.as_ref() {
        let mut e = IOEntry::new();
        e.rbytes = io.read_bytes;
        e.wbytes = io.write_bytes;
        e.rios = io.read_ios;
        e.wios = io.write_ios;
        let mut stat = IOStat::new();
        stat.usage.push(e);
        m.io = Some(stat).into();
    }
    m
}

pub fn metrics_any(s: &StatsContainerResponse) -> Any {
    let mut a = Any::new();
    a.type_url = METRICS_V2_TYPE_URL.into();
    a.value = metrics(s).write_to_bytes().unwrap_or_default();
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_agent_api::agent::{CpuStats, MemoryStats};

    #[test]
    fn agent_stats_become_v2_metrics() {
        let mut s = StatsContainerResponse::new();
        let mut cpu = CpuStats::new();
        cpu.usage_usec = 1500;
        s.cpu = Some(cpu).into();
        let mut mem = MemoryStats::new();
        mem.usage_bytes = 4096;
        mem.limit_bytes = 1 << 20;
        mem.oom_kill_events = 2;
        s.memory = Some(mem).into();
        let a = metrics_any(&s);
        assert_eq!(a.type_url, METRICS_V2_TYPE_URL);
        let m = Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 1 << 20);
        assert_eq!(m.memory_events.oom_kill, 2);
        assert!(m.pids.is_none());
    }
}
