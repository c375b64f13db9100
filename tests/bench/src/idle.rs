//! `hako-bench-idle [SECONDS] [SETTLE]` (defaults 60 and 20): what an idle sandbox costs. One
//! sandbox resumed from the run's template through the `hako` CLI (create + start, as the
//! faults suite does), its one container running `sleep`; after SETTLE seconds, over SECONDS:
//!
//! - host CPU (% of one core) of each hako-vmm thread (vCPUs apart from device workers) and
//!   of the runtime's processes for the sandbox (the monitor and its children), with how often
//!   each was scheduled (/proc/PID/task/TID/schedstat);
//! - hako-vmm's counters (vCPU exits to the VMM, device counters) from its control API;
//! - inside the guest, the wake-ups by source: interrupts (/proc/interrupts: the local timer,
//!   IPIs, each virtio device), softirqs, context switches, and each guest thread's context
//!   switches (the agent's threads, kernel threads, the container's processes).
//!
//! The guest's figures come from one `hako exec` in the container: it prints them, sleeps
//! SECONDS, prints them again; the host's window starts when the first print arrives. The
//! bench's container shares the guest's PID namespace (it has none of its own) so it sees the
//! agent. While the window runs, that exec's `sleep` and its pending long-polls (its exit,
//! its output) are the only difference from a sandbox with one sleeping container. Never asserts.
//!
//! Needs root, KVM, the guest kernel (guest-kernel-config/build.sh) and busybox-static.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_bench::sandbox_vm::metrics;
use hako_rootfs_builder::bundle;
use hako_tests::fixtures;
use hako_vmm_api::Metrics;

/// The guest's side, as one busybox shell script (`{window}` is replaced). Each snapshot is
/// the threads' switches, then the counters with the uptime: the counters at the window's
/// start are read last in one `cat`, those at its end first by a `cat` forked before the
/// window that waits on a FIFO; the shell waits with its builtin `read -t`. So nothing forks
/// or execs inside the window, where each would be seconds of emulated kernel work.
const SCRIPT: &str = "set -e
threads() { busybox grep -E '^(Name|voluntary_ctxt_switches|nonvoluntary_ctxt_switches):' /proc/[0-9]*/task/*/status; }
busybox mkfifo /dev/hb-wait /dev/hb-go
cat /dev/hb-go /proc/uptime /proc/interrupts /proc/softirqs /proc/stat > /dev/hb-end &
echo ==snap
threads
cat /proc/interrupts /proc/softirqs /proc/stat /proc/uptime
echo ==end
read -t {window} x <> /dev/hb-wait || true
: > /dev/hb-go
wait
echo ==snap
cat /dev/hb-end
threads
echo ==end
{extra}
";

/// A state root, a bundle and a config; the container is deleted on drop.
struct Case {
    hako: PathBuf,
    work: tempfile::TempDir,
}

impl Case {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.hako);
        c.env("HAKO_CONFIG", self.work.path().join("hako.toml"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn root(&self) -> PathBuf {
        self.work.path().join("r")
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        // stderr to a file: `create` leaves a monitor holding it.
        let err = self.work.path().join("cmd.err");
        let o = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?)
            .status()
            .with_context(|| format!("running hako {args:?}"))?;
        if !o.success() {
            bail!(
                "hako {args:?}: {o}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = self.cmd(&["delete", "--force", "c"]).output();
    }
}

/// One thread's CPU time (ns) and how many times it was scheduled in.
#[derive(Clone, Copy, Default)]
struct Sched {
    ns: u64,
    runs: u64,
}

/// Host threads of the sandbox: (process label, thread name, tid) → schedstat.
type HostThreads = BTreeMap<(String, String, u32), Sched>;

fn read_sched(pid: u32, tid: u32) -> Option<Sched> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    let ns = f.next()?;
    let _wait = f.next();
    Some(Sched {
        ns,
        runs: f.next()?,
    })
}

fn comm(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `pid` and its descendants (parents from /proc/PID/stat).
fn tree(pid: u32) -> Vec<u32> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        if let Some(pp) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parent.insert(p, pp);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let me = out[i];
        out.extend(parent.iter().filter(|(_, pp)| **pp == me).map(|(p, _)| *p));
        i += 1;
    }
    out
}

fn host_threads(vmm: u32, monitor: u32) -> HostThreads {
    let mut out = HostThreads::new();
    for pid in tree(monitor).into_iter().chain([vmm]) {
        let label = if pid == vmm {
            "hako-vmm".to_owned()
        } else {
            comm(pid, pid)
        };
        for e in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(s) = read_sched(pid, tid) {
                out.insert((label.clone(), comm(pid, tid), tid), s);
            }
        }
    }
    out
}

/// What one guest snapshot says: uptime, counters by name, each thread's switches.
#[derive(Default)]
struct Guest {
    uptime: f64,
    /// `irq:<label> <description>`, `softirq:<name>`, `stat:<name>` → count (summed over CPUs).
    counters: BTreeMap<String, u64>,
    /// (pid, tid, name) → voluntary and involuntary context switches.
    threads: BTreeMap<(u32, u32, String), (u64, u64)>,
}

/// The softirqs' names (/proc/softirqs); /proc/interrupts has other labels.
const SOFTIRQS: &[&str] = &[
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

fn parse_guest(lines: &[String]) -> Guest {
    let mut g = Guest::default();
    let mut threads: BTreeMap<(u32, u32), (String, u64, u64)> = BTreeMap::new();
    for line in lines {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if let Some(rest) = t.strip_prefix("/proc/") {
            // PID/task/TID/status:Field:\tvalue
            let Some((path, field)) = rest.split_once("/status:") else {
                continue;
            };
            let ids: Vec<u32> = path
                .split("/task/")
                .filter_map(|s| s.parse().ok())
                .collect();
            let (Some((field, value)), [pid, tid]) = (field.split_once(':'), &ids[..]) else {
                continue;
            };
            let e = threads.entry((*pid, *tid)).or_default();
            let n = || value.trim().parse::<u64>().unwrap_or(0);
            match field {
                "Name" => e.0 = value.trim().to_owned(),
                "voluntary_ctxt_switches" => e.1 = n(),
                _ => e.2 = n(),
            }
        } else if words.len() == 2 && words.iter().all(|w| w.contains('.')) {
            g.uptime = words[0].parse().unwrap_or(0.0);
        } else if let Some(label) = words.first().and_then(|w| w.strip_suffix(':')) {
            let sum: u64 = words[1..].iter().map_while(|w| w.parse::<u64>().ok()).sum();
            let what: Vec<&str> = words[1..]
                .iter()
                .skip_while(|w| w.parse::<u64>().is_ok())
                .copied()
                .collect();
            let key = if SOFTIRQS.contains(&label) {
                format!("softirq:{label}")
            } else if what.is_empty() {
                format!("irq:{label}")
            } else {
                format!("irq:{label} {}", what.join(" "))
            };
            g.counters.insert(key, sum);
        } else if let Some((name, values)) = words.split_first() {
            let values: Vec<u64> = values.iter().filter_map(|v| v.parse().ok()).collect();
            match *name {
                "cpu" => {
                    let kinds = ["user", "nice", "system", "idle", "iowait", "irq", "softirq"];
                    for (k, v) in kinds.iter().zip(&values) {
                        g.counters.insert(format!("cpu:{k}"), *v);
                    }
                }
                "ctxt" | "processes" => {
                    let v = values.first().copied().unwrap_or(0);
                    g.counters.insert(format!("stat:{name}"), v);
                }
                _ => {}
            }
        }
    }
    for ((pid, tid), (name, vol, invol)) in threads {
        g.threads.insert((pid, tid, name), (vol, invol));
    }
    g
}

fn per_min(n: u64, secs: f64) -> f64 {
    n as f64 * 60.0 / secs
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let window: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let settle: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let hako = fixtures::workspace_binary("hako").map_err(anyhow::Error::msg)?;
    // Short: the VMM's socket paths live under the root (108-byte limit).
    let work = tempfile::Builder::new().prefix("hi").tempdir_in("/tmp")?;
    fixtures::templated_runtime_config(&hako, &work.path().join("hako.toml"))
        .map_err(anyhow::Error::msg)?;
    let bundle_dir = work.path().join("b");
    bundle::write_busybox_bundle(
        Path::new("/bin/busybox"),
        &bundle_dir,
        &["sleep", "100000"],
        "/hako-idle-bench",
    )
    .map_err(anyhow::Error::msg)?;
    // No PID namespace of its own: the exec sees the agent and the kernel's threads.
    let spec_path = bundle_dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec_path)?)?;
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "pid");
    }
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let case = Case { hako, work };

    let started = Instant::now();
    let bundle_arg = bundle_dir.display().to_string();
    case.run(&["create", "--bundle", &bundle_arg, "c"])?;
    case.run(&["start", "c"])?;
    eprintln!(
        "sandbox created and started in {:.1} s; settling {settle} s",
        started.elapsed().as_secs_f64()
    );
    let sandbox = case.root().join("c");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.join("container.json"))?)?;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.join("vm/state.json"))?)?;
    let monitor = record["monitor_pid"].as_u64().context("monitor_pid")? as u32;
    let vmm = state["vmm_pid"].as_u64().context("vmm_pid")? as u32;
    let control = sandbox.join("vm/vmm/control.sock");
    std::thread::sleep(Duration::from_secs(settle));

    eprintln!("exec'ing the guest's snapshot; the window starts when its first print arrives");
    // HAKO_IDLE_TIMER_LIST=1: the guest's /proc/timer_list at the end, on stderr.
    let extra = match std::env::var_os("HAKO_IDLE_TIMER_LIST") {
        Some(_) => "cat /proc/timer_list",
        None => "",
    };
    let script = SCRIPT
        .replace("{window}", &window.to_string())
        .replace("{extra}", extra);
    let mut exec = case
        .cmd(&["exec", "c", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("hako exec")?;
    let exec_started = Instant::now();
    let mut lines = BufReader::new(exec.stdout.take().context("exec stdout")?).lines();
    let mut read_snapshot = || -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in lines.by_ref() {
            let line = line?;
            match line.as_str() {
                "==snap" => inside = true,
                "==end" => return Ok(out),
                _ if inside => out.push(line),
                _ => {}
            }
        }
        bail!("the exec ended before its snapshot")
    };
    let first = read_snapshot()?;
    let t0 = Instant::now();
    eprintln!(
        "first guest snapshot after {:.1} s; measuring {window} s",
        exec_started.elapsed().as_secs_f64()
    );
    let (h0, m0) = (host_threads(vmm, monitor), metrics(&control)?);
    std::thread::sleep(Duration::from_secs(window).saturating_sub(t0.elapsed()));
    let (h1, m1) = (host_threads(vmm, monitor), metrics(&control)?);
    let secs = t0.elapsed().as_secs_f64();
    let second = read_snapshot()?;
    for line in lines.map_while(Result::ok) {
        eprintln!("guest: {line}");
    }
    let _ = exec.wait();
    let (g0, g1) = (parse_guest(&first), parse_guest(&second));
    report(secs, &h0, &h1, &m0, &m1, &g0, &g1);
    Ok(())
}

fn report(
    secs: f64,
    h0: &HostThreads,
    h1: &HostThreads,
    m0: &Metrics,
    m1: &Metrics,
    g0: &Guest,
    g1: &Guest,
) {
    println!("idle sandbox (one sleeping container), host window {secs:.1} s");
    println!("\nhost CPU (% of one core) and times scheduled in, per minute");
    println!(
        "{:<22} {:<18} {:>8} {:>10}",
        "process", "thread", "% core", "runs/min"
    );
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (key, b) in h1 {
        let a = h0.get(key).copied().unwrap_or_default();
        let (ns, runs) = (b.ns - a.ns.min(b.ns), b.runs - a.runs.min(b.runs));
        let group = match (key.0.as_str(), key.1.starts_with("vcpu")) {
            ("hako-vmm", true) => "hako-vmm vCPUs",
            ("hako-vmm", false) => "hako-vmm other threads",
            _ => "runtime (monitor tree)",
        };
        let t = totals.entry(group).or_default();
        t.0 += ns;
        t.1 += runs;
        if ns > 0 || runs > 0 {
            println!(
                "{:<22} {:<18} {:>8.3} {:>10.1}",
                key.0,
                key.1,
                ns as f64 / 1e9 / secs * 100.0,
                per_min(runs, secs)
            );
        }
    }
    println!();
    let mut all = 0;
    for (group, (ns, runs)) in &totals {
        all += ns;
        println!(
            "{:<41} {:>8.3} {:>10.1}",
            group,
            *ns as f64 / 1e9 / secs * 100.0,
            per_min(*runs, secs)
        );
    }
    println!("{:<41} {:>8.3}", "total", all as f64 / 1e9 / secs * 100.0);

    println!("\nhako-vmm counters, per minute (nonzero)");
    for (k, v) in &m1.vcpu_exits {
        let d = v - m0.vcpu_exits.get(k).copied().unwrap_or(0).min(*v);
        if d > 0 {
            println!("  vcpu exit {:<28} {:>10.1}", k, per_min(d, secs));
        }
    }
    for (dev, c) in &m1.devices {
        for (k, v) in c {
            let before = m0.devices.get(dev).and_then(|c| c.get(k)).copied();
            let d = v - before.unwrap_or(0).min(*v);
            if d > 0 {
                println!("  {:<38} {:>10.1}", format!("{dev} {k}"), per_min(d, secs));
            }
        }
    }

    let gsecs = g1.uptime - g0.uptime;
    println!("\nguest wake-ups by source, per minute (guest window {gsecs:.1} s)");
    for (k, v) in &g1.counters {
        let d = v - g0.counters.get(k).copied().unwrap_or(0).min(*v);
        if d > 0 && !k.starts_with("cpu:") {
            println!("  {:<44} {:>10.1}", k, per_min(d, gsecs));
        }
    }
    let ticks: Vec<(String, u64)> = g1
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("cpu:"))
        .map(|(k, v)| {
            (
                k.clone(),
                v - g0.counters.get(k).copied().unwrap_or(0).min(*v),
            )
        })
        .collect();
    let all_ticks: u64 = ticks.iter().map(|(_, v)| v).sum::<u64>().max(1);
    let split: Vec<String> = ticks
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{} {:.1}%", &k[4..], *v as f64 * 100.0 / all_ticks as f64))
        .collect();
    println!("  guest CPU time: {}", split.join(", "));

    println!("\nguest threads' context switches, per minute (threads alive in both snapshots)");
    println!(
        "  {:<34} {:>8} {:>10} {:>11}",
        "thread", "threads", "voluntary", "involuntary"
    );
    let mut by_name: BTreeMap<String, (u64, u64, u32)> = BTreeMap::new();
    for ((pid, tid, name), (vol, invol)) in &g1.threads {
        let Some((vol0, invol0)) = g0.threads.get(&(*pid, *tid, name.clone())) else {
            continue;
        };
        // Pid 1 is the agent.
        let label = if *pid == 1 {
            format!("hako-agent:{name}")
        } else {
            name.clone()
        };
        let e = by_name.entry(label).or_default();
        e.0 += vol - vol0.min(vol);
        e.1 += invol - invol0.min(invol);
        e.2 += 1;
    }
    let mut rows: Vec<_> = by_name
        .into_iter()
        .filter(|(_, (v, i, _))| v + i > 0)
        .collect();
    rows.sort_by_key(|(_, (v, i, _))| std::cmp::Reverse(v + i));
    for (name, (vol, invol, n)) in rows {
        println!(
            "  {:<34} {:>8} {:>10.1} {:>11.1}",
            name,
            n,
            per_min(vol, gsecs),
            per_min(invol, gsecs)
        );
    }
}
