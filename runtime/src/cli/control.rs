//! Commands that ask a running container's monitor: `start`, `kill`, `pause`, `resume`,
//! `ps`, `update`, `events`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use containerd_shim::protos::api::{
    KillRequest, PauseRequest, PidsRequest, ResumeRequest, StartRequest, StatsRequest,
    UpdateTaskRequest,
};
use containerd_shim::protos::cgroups_v2::metrics::Metrics;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;

use super::Global;
use super::client::{Container, OciStatus, long_ctx, rpc_ctx};

const RPC: Duration = Duration::from_secs(120);

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

pub fn start(g: &Global, id: &str) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    let _lock = c.lock()?;
    block_on(async {
        match c.status().await {
            OciStatus::Created => {}
            other => bail!("cannot start container {id}: it is {}", other.as_str()),
        }
        let mut req = StartRequest::new();
        req.id = id.into();
        c.client()
            .await?
            .start(long_ctx(), &req)
            .await
            .with_context(|| format!("starting container {id}"))?;
        Ok(())
    })?;
    // From the record: the bundle may have changed since create. The status is runc's
    // (it hands poststart hooks the state it read before the start).
    let state = c.state_json(OciStatus::Created);
    if let Err(e) = crate::hooks::run(&c.hooks(), "poststart", &state) {
        tracing::warn!("{e:#}");
        eprintln!("hako: {e:#}");
    }
    Ok(0)
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal {n} is out of range");
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(g: &Global, id: &str, signal: &str, all: bool) -> anyhow::Result<u8> {
    let signal = parse_signal(signal)?;
    let c = Container::open(&g.root, id)?;
    block_on(async {
        match c.status().await {
            OciStatus::Created | OciStatus::Running | OciStatus::Paused => {}
            other => bail!("container {id} is {}, not running", other.as_str()),
        }
        let mut req = KillRequest::new();
        req.id = id.into();
        req.signal = signal;
        req.all = all;
        c.client()
            .await?
            .kill(rpc_ctx(RPC), &req)
            .await
            .with_context(|| format!("signalling container {id}"))?;
        Ok(0)
    })
}

pub fn pause(g: &Global, id: &str, resume: bool) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    let _lock = c.lock()?;
    block_on(async {
        let client = c.client().await?;
        if resume {
            let mut req = ResumeRequest::new();
            req.id = id.into();
            client.resume(rpc_ctx(RPC), &req).await
        } else {
            let mut req = PauseRequest::new();
            req.id = id.into();
            client.pause(rpc_ctx(RPC), &req).await
        }
        .with_context(|| {
            format!(
                "{} container {id}",
                if resume { "resuming" } else { "pausing" }
            )
        })?;
        Ok(0)
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn ps(g: &Global, id: &str, format: Format) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    let pids = block_on(async {
        let mut req = PidsRequest::new();
        req.id = id.into();
        let r = c
            .client()
            .await?
            .pids(rpc_ctx(RPC), &req)
            .await
            .with_context(|| format!("listing the processes of {id}"))?;
        Ok(r.processes.iter().map(|p| p.pid).collect::<Vec<u32>>())
    })?;
    match format {
        // runc's JSON lists host pids, which callers (Docker's `top`) look up among the host's
        // processes; the container's processes are in the VM, none of them on the host.
        Format::Json => println!("[]"),
        Format::Table => {
            println!("PID (in the sandbox)");
            for p in pids {
                println!("{p}");
            }
        }
    }
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// A JSON file with the new linux.resources ("-" for stdin).
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

pub fn update(g: &Global, a: &UpdateArgs) -> anyhow::Result<u8> {
    let mut resources: serde_json::Value = match &a.resources {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            serde_json::from_str(&s).context("the resources on stdin are not JSON")?
        }
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not JSON", p.display()))?,
        None => serde_json::json!({}),
    };
    let set = |r: &mut serde_json::Value, path: &[&str], v: serde_json::Value| {
        let mut cur = r;
        for k in &path[..path.len() - 1] {
            cur = &mut cur[*k];
        }
        cur[path[path.len() - 1]] = v;
    };
    if let Some(m) = a.memory {
        set(&mut resources, &["memory", "limit"], m.into());
    }
    if let Some(q) = a.cpu_quota {
        set(&mut resources, &["cpu", "quota"], q.into());
    }
    if let Some(p) = a.cpu_period {
        set(&mut resources, &["cpu", "period"], p.into());
    }
    if let Some(s) = a.cpu_shares {
        set(&mut resources, &["cpu", "shares"], s.into());
    }
    if let Some(p) = a.pids_limit {
        set(&mut resources, &["pids", "limit"], p.into());
    }
    let c = Container::open(&g.root, &a.id)?;
    block_on(async {
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        any.value = serde_json::to_vec(&resources)?;
        let mut req = UpdateTaskRequest::new();
        req.id = a.id.clone();
        req.resources = Some(any).into();
        c.client()
            .await?
            .update(rpc_ctx(RPC), &req)
            .await
            .with_context(|| format!("updating container {}", a.id))?;
        Ok(0)
    })
}

/// `events --stats` prints one stats event; plain `events` prints one every `interval`
/// until the container stops.
pub fn events(g: &Global, id: &str, stats_once: bool, interval: Duration) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    block_on(async {
        loop {
            if c.status().await == OciStatus::Stopped {
                if stats_once {
                    bail!("container {id} is stopped");
                }
                return Ok(0);
            }
            let mut req = StatsRequest::new();
            req.id = id.into();
            let r = c
                .client()
                .await?
                .stats(rpc_ctx(RPC), &req)
                .await
                .with_context(|| format!("reading the statistics of {id}"))?;
            let m = r
                .stats
                .as_ref()
                .map(|a| Metrics::parse_from_bytes(&a.value))
                .transpose()
                .context("decoding the statistics")?
                .unwrap_or_default();
            println!("{}", serde_json::to_string(&stats_event(id, &m))?);
            if stats_once {
                return Ok(0);
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// runc's stats event layout.
fn stats_event(id: &str, m: &Metrics) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {
                "total": m.cpu.usage_usec * 1000,
                "user": m.cpu.user_usec * 1000,
                "kernel": m.cpu.system_usec * 1000,
            }, "throttling": {
                "periods": m.cpu.nr_periods,
                "throttledPeriods": m.cpu.nr_throttled,
                "throttledTime": m.cpu.throttled_usec * 1000,
            }},
            "memory": {"usage": {"usage": m.memory.usage, "limit": m.memory.usage_limit},
                       "raw": {"anon": m.memory.anon, "file": m.memory.file}},
            "pids": {"current": m.pids.current, "limit": m.pids.limit},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
    }
}
