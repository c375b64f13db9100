//! `hako-bench-guest-create [--whole] [RUNS] [BASELINE_REV]` (defaults 3 and e28d7ae): container
//! create + start inside a template-resumed guest, this workspace's sandbox against an earlier
//! revision's, side by side in one run. Never asserts.
//!
//! - The baseline comes from `tests/bench/baseline.sh [--whole] BASELINE_REV` (built and
//!   cached; the script says how). By default only the agent image differs (both run today's
//!   hako-vmm and guest kernel); with `--whole` the baseline is that revision's whole sandbox:
//!   its agent image, its hako-vmm (CPU profile) and its guest kernel. Where that agent mounts
//!   the shared directory is read from the revision's agent API crate.
//! - Each side boots cold once to the agent's first answer and is snapshotted: its template.
//! - RUNS times, alternating which side goes first, a VM is resumed from each template as the
//!   runtime's sandboxes are (console to a file, `quiet`), gets CreateSandbox (the share
//!   mounted), then two busybox `echo` containers in turn (the sandbox's first and second;
//!   the first also pays for the agent's code paths never run before the snapshot). Each
//!   CreateContainer and StartContainer is timed from the host (the RPC's round trip), and
//!   the output read to its end; hako-vmm's virtio-fs requests and vCPU exits are counted.
//! - The agent's own phase times (its `container created` / `container started` log lines
//!   on the guest console: storage, spec, rootfs, bundle, libcontainer, exec) are shown
//!   where the agent logs them (the baseline did not).
//!
//! Needs root, KVM, the guest kernel (guest-kernel-config/build.sh), busybox-static, and the
//! release binaries (scripts/setup.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::agent::{CreateSandboxRequest, ProcessRequest};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_bench::percentile;
use hako_bench::sandbox_vm::{SandboxVm, VmImage, metrics};
use hako_rootfs_builder::bundle;
use hako_tests::{agent, fixtures, repo_root};

const RPC: Duration = Duration::from_secs(600);
/// The sandbox's first and second container.
const CONTAINERS: [&str; 2] = ["c1", "c2"];
const ARGS: &[&str] = &["echo", "first-output"];
/// The agent's phase fields, in the order its log lines give them.
const PHASES: &[&str] = &[
    "total_ms",
    "storage_ms",
    "spec_ms",
    "rootfs_ms",
    "bundle_ms",
    "libcontainer_ms",
    "exec_ms",
];

/// One sandbox under test (VMM, kernel, agent image) and its template.
struct Subject {
    name: String,
    vmm: PathBuf,
    kernel: PathBuf,
    image: PathBuf,
    /// Where this agent wants the shared directory mounted.
    mount_point: String,
    snapshot: PathBuf,
}

/// One container's figures (seconds; phases in milliseconds as the agent logged them).
#[derive(Default)]
struct Sample {
    create: f64,
    start: f64,
    output: f64,
    phases: BTreeMap<String, f64>,
    /// hako-vmm's counters over create + start + output: virtio-fs requests, vCPU exits.
    fs_requests: u64,
    exits: u64,
}

/// hako-vmm's (virtio-fs requests, vCPU exits) so far.
fn vmm_counters(vm: &SandboxVm) -> Result<(u64, u64), String> {
    let m =
        metrics(&hako_tests::hako_vmm::control_socket(&vm.dir)).map_err(|e| format!("{e:#}"))?;
    let fs = m
        .devices
        .iter()
        .filter(|(name, _)| name.starts_with("fs"))
        .filter_map(|(_, c)| c.get("requests"))
        .sum();
    Ok((fs, m.vcpu_exits.values().sum()))
}

/// What `baseline.sh` printed: `image`, and with `--whole` `vmm` and `kernel`.
struct Baseline {
    image: PathBuf,
    vmm: Option<PathBuf>,
    kernel: Option<PathBuf>,
    mount_point: String,
}

/// Builds (or finds) the baseline and reads where that agent mounts the share.
fn baseline(rev: &str, whole: bool) -> Result<Baseline> {
    let script = repo_root().join("tests/bench/baseline.sh");
    let mut cmd = Command::new(&script);
    if whole {
        cmd.arg("--whole");
    }
    let out = cmd
        .arg(rev)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {rev} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(PathBuf::from)
    };
    let api = Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .arg("show")
        .arg(format!("{rev}:agent/api/src/lib.rs"))
        .output()
        .context("git show")?;
    let mount_point = String::from_utf8_lossy(&api.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const SHARED_FS_MOUNT_POINT: &str = \"")?
                .strip_suffix("\";")
                .map(str::to_owned)
        })
        .context("the baseline's SHARED_FS_MOUNT_POINT")?;
    Ok(Baseline {
        image: field("image").context("baseline.sh printed no image")?,
        vmm: field("vmm"),
        kernel: field("kernel"),
        mount_point,
    })
}

/// Boots `s` cold, snapshots it into `s.snapshot`; returns the seconds to its first answer.
fn make_template(s: &Subject, dir: &Path, cid: u32) -> Result<f64> {
    let from = VmImage {
        vmm: &s.vmm,
        kernel: &s.kernel,
        image: &s.image,
    };
    let started = Instant::now();
    // Console to a file, as the resumed VMs have it (a snapshot fits only the same devices).
    let vm = SandboxVm::spawn(&from, dir, cid, None, true)?;
    let secs = vm.until_ready(started)?;
    vm.snapshot(&s.snapshot)?;
    Ok(secs)
}

async fn run_containers(
    vm: &SandboxVm,
    mount_point: &str,
    samples: &mut [Sample; 2],
) -> Result<(), String> {
    let clients = agent::connect_hybrid_to(&vm.vsock(), AGENT_API_PORT, RPC, vm.child.id()).await?;
    let a: &AgentServiceClient = &clients.agent;
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "bench".into();
    req.hostname = "bench".into();
    let mut storage = hako_agent_api::shared_fs_storage();
    storage.mount_point = mount_point.into();
    req.storages.push(storage);
    a.create_sandbox(agent::ctx(RPC), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    for (id, sample) in CONTAINERS.iter().zip(samples.iter_mut()) {
        let before = vmm_counters(vm)?;
        let t = Instant::now();
        let mut create = hako_agent_api::agent::CreateContainerRequest::new();
        create.container_id = (*id).into();
        create.oci_spec_json =
            bundle::spec_json("rootfs", ARGS, &format!("/hako/{id}")).into_bytes();
        a.create_container(agent::ctx(RPC), &create)
            .await
            .map_err(|e| format!("CreateContainer {id}: {e}"))?;
        sample.create = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut start = hako_agent_api::agent::ContainerRequest::new();
        start.container_id = (*id).into();
        a.start_container(agent::ctx(RPC), &start)
            .await
            .map_err(|e| format!("StartContainer {id}: {e}"))?;
        sample.start = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = agent::read_to_end(a, id, "", false).await?;
        sample.output = t.elapsed().as_secs_f64();
        let after = vmm_counters(vm)?;
        sample.fs_requests = after.0 - before.0;
        sample.exits = after.1 - before.1;
        if out != "first-output\n" {
            return Err(format!("container {id} printed {out:?}"));
        }
        let mut w = ProcessRequest::new();
        w.container_id = (*id).into();
        a.wait_process(agent::ctx(RPC), &w)
            .await
            .map_err(|e| format!("WaitProcess {id}: {e}"))?;
    }
    Ok(())
}

/// The `*_ms` fields of the console's `container created`/`started` lines for `id`.
fn phases_from_console(console: &str, id: &str) -> BTreeMap<String, f64> {
    let mut phases = BTreeMap::new();
    // tracing writes a string field quoted.
    let tag = format!("container_id=\"{id}\"");
    for line in console.lines().filter(|l| {
        (l.contains("container created") || l.contains("container started")) && l.contains(&tag)
    }) {
        for field in line.split_whitespace() {
            if let Some((k, v)) = field.split_once('=')
                && k.ends_with("_ms")
                && let Ok(v) = v.parse::<f64>()
            {
                phases.insert(k.to_owned(), v);
            }
        }
    }
    phases
}

/// One resumed sandbox of `s`: its two containers' figures.
fn run_once(s: &Subject, dir: &Path, cid: u32) -> Result<[Sample; 2]> {
    for id in CONTAINERS {
        bundle::busybox_rootfs(&dir.join("shared").join(id).join("rootfs"))
            .map_err(anyhow::Error::msg)?;
    }
    let from = VmImage {
        vmm: &s.vmm,
        kernel: &s.kernel,
        image: &s.image,
    };
    let vm = SandboxVm::spawn(&from, dir, cid, Some(&s.snapshot), true)?;
    let mut samples = [Sample::default(), Sample::default()];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run_containers(&vm, &s.mount_point, &mut samples))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} in {}", s.name, dir.display()))?;
    drop(vm);
    let console = std::fs::read(dir.join("console.log")).unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    for (id, sample) in CONTAINERS.iter().zip(samples.iter_mut()) {
        sample.phases = phases_from_console(&console, id);
    }
    Ok(samples)
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    percentile(&v.collect::<Vec<_>>(), 0.5)
}

fn report(subjects: &[Subject], samples: &[Vec<[Sample; 2]>], runs: usize) {
    println!("\ncontainer create + start in a template-resumed guest (s, median of {runs})");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "create", "start", "c+s", "output", "c+s p95", "fs reqs", "exits"
    );
    let mut totals = Vec::new();
    for (pos, id) in CONTAINERS.iter().enumerate() {
        for (s, runs_of) in subjects.iter().zip(samples) {
            let col = |f: fn(&Sample) -> f64| median(runs_of.iter().map(|r| f(&r[pos])));
            let cs: Vec<f64> = runs_of
                .iter()
                .map(|r| r[pos].create + r[pos].start)
                .collect();
            let label = format!(
                "{} ({id}: the sandbox's {})",
                s.name,
                ["first", "second"][pos]
            );
            println!(
                "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>9.0}",
                label,
                col(|x| x.create),
                col(|x| x.start),
                percentile(&cs, 0.5),
                col(|x| x.output),
                percentile(&cs, 0.95),
                col(|x| x.fs_requests as f64),
                col(|x| x.exits as f64)
            );
            totals.push(percentile(&cs, 0.5));
        }
    }
    for (pos, id) in CONTAINERS.iter().enumerate() {
        let (this, base) = (totals[pos * 2], totals[pos * 2 + 1]);
        println!(
            "{:<44} {:>9.1}x",
            format!(
                "{} / {} ({id}, create + start)",
                subjects[1].name, subjects[0].name
            ),
            base / this
        );
    }
    println!("\nthe agent's phases in the guest (ms, median; from its log lines)");
    print!("{:<44}", "");
    for p in PHASES {
        print!(" {:>10}", p.trim_end_matches("_ms"));
    }
    println!();
    for (pos, id) in CONTAINERS.iter().enumerate() {
        for (s, runs_of) in subjects.iter().zip(samples) {
            print!("{:<44}", format!("{} ({id})", s.name));
            for p in PHASES {
                let v: Vec<f64> = runs_of
                    .iter()
                    .filter_map(|r| r[pos].phases.get(*p).copied())
                    .collect();
                if v.is_empty() {
                    print!(" {:>10}", "-");
                } else {
                    print!(" {:>10.0}", percentile(&v, 0.5));
                }
            }
            println!();
        }
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let whole = args.first().is_some_and(|a| a == "--whole");
    if whole {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let rev = args.next().unwrap_or_else(|| "e28d7ae".into());
    let vmm = fixtures::workspace_binary("hako-vmm").map_err(anyhow::Error::msg)?;
    let kernel = fixtures::kernel().map_err(|s| anyhow::anyhow!("{s}"))?;
    let image = fixtures::agent_image().map_err(anyhow::Error::msg)?;
    let base = baseline(&rev, whole)?;
    let work = tempfile::tempdir()?;
    if std::env::var_os("HAKO_BENCH_KEEP").is_some() {
        eprintln!("keeping {}", work.path().display());
    }
    let subjects = [
        Subject {
            name: if whole { "this sandbox" } else { "this agent" }.into(),
            vmm: vmm.clone(),
            kernel: kernel.clone(),
            image,
            mount_point: hako_agent_api::SHARED_FS_MOUNT_POINT.into(),
            snapshot: work.path().join("template-this"),
        },
        Subject {
            name: format!("baseline {rev}{}", if whole { " (whole)" } else { "" }),
            vmm: base.vmm.unwrap_or(vmm),
            kernel: base.kernel.unwrap_or(kernel),
            image: base.image,
            mount_point: base.mount_point,
            snapshot: work.path().join("template-baseline"),
        },
    ];
    for (i, s) in subjects.iter().enumerate() {
        eprintln!(
            "{}: {}, {}, {} (share at {})",
            s.name,
            s.vmm.display(),
            s.kernel.display(),
            s.image.display(),
            s.mount_point
        );
        let secs = make_template(s, &work.path().join(format!("cold-{i}")), 3 + i as u32)?;
        eprintln!(
            "{}: cold boot to the first answer {secs:.1} s, template made",
            s.name
        );
    }
    let mut samples: Vec<Vec<[Sample; 2]>> = vec![Vec::new(), Vec::new()];
    for run in 0..runs {
        // Alternate the order, so a drift in the host's load falls on both alike.
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = &subjects[i];
            let dir = work.path().join(format!("run{run}-{i}"));
            let got = run_once(s, &dir, 10 + (run * 2 + i) as u32)?;
            eprintln!(
                "run {run}, {}: create + start {:.2} s (first), {:.2} s (second)",
                s.name,
                got[0].create + got[0].start,
                got[1].create + got[1].start
            );
            samples[i].push(got);
        }
    }
    report(&subjects, &samples, runs);
    if std::env::var_os("HAKO_BENCH_KEEP").is_some() {
        let _ = work.keep();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_come_from_the_lines_of_that_container() {
        let console = "\
t  INFO hako_agent::container: container created container_id=\"c1\" pid=30 storage_ms=0.0 spec_ms=182.9 libcontainer_ms=8467.3 total_ms=9125.4
t  INFO hako_agent::container: container created container_id=\"c10\" pid=31 spec_ms=1.0
t  INFO hako_agent::container: container started container_id=\"c1\" exec_ms=323.2
[   12.3] unrelated kernel line spec_ms=5
";
        let p = phases_from_console(console, "c1");
        assert_eq!(p.get("spec_ms"), Some(&182.9));
        assert_eq!(p.get("libcontainer_ms"), Some(&8467.3));
        assert_eq!(p.get("exec_ms"), Some(&323.2));
        assert_eq!(p.len(), 5);
        assert!(phases_from_console(console, "c2").is_empty());
    }
}
