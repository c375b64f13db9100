//! `hako-bench-template [RESTORES] [N,N,...]` (defaults 5 and 1,5,10): a sandbox VM started
//! cold against the same VM resumed from a template, side by side in one run, and the memory
//! resumed VMs share. Never asserts.
//!
//! - Start: hako-vmm spawned to the agent's first health answer over hybrid vsock, once
//!   cold (kernel boot) and RESTORES times from a snapshot of that same VM (p50, p95).
//!   Container creation after that costs the same either way, so it is left out.
//! - Memory: N VMs resumed at once from the template; once each agent answers, the PSS and
//!   RSS of every hako-vmm (/proc/PID/smaps_rollup), per sandbox, against the cold VM's.
//!   Resumed VMs map the template's memory file copy-on-write, so PSS falls as N grows.
//!
//! Needs root, KVM, the guest kernel (guest-kernel-config/build.sh) and busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::health::CheckRequest;
use hako_bench::percentile;
use hako_tests::{agent, fixtures, hako_vmm};
use hako_vmm_api::{ControlReply, ControlRequest};

struct Vmm {
    child: Child,
    dir: PathBuf,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    vmm: &Path,
    dir: &Path,
    kernel: &Path,
    image: &Path,
    cid: u32,
    snapshot: Option<&Path>,
) -> Result<Vmm> {
    std::fs::create_dir_all(dir)?;
    let mut config = hako_vmm::agent_vm(dir, kernel, image, cid)?;
    config.console = hako_vmm_api::ConsoleConfig::Off;
    let mut cmd = match snapshot {
        Some(s) => hako_vmm::restore_command(vmm, dir, &config, s)?,
        None => hako_vmm::command(vmm, dir, &config)?,
    };
    let child = cmd
        .env("HAKO_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hako-vmm")?;
    Ok(Vmm {
        child,
        dir: dir.to_owned(),
    })
}

/// Seconds from `since` until the agent in `vm` answers a health check.
fn until_ready(vm: &Vmm, since: Instant) -> Result<f64> {
    let uds = vm.dir.join("vsock.sock");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let c = agent::connect_hybrid(&uds, AGENT_API_PORT, Duration::from_secs(600))
                .await
                .map_err(anyhow::Error::msg)?;
            c.health
                .check(agent::ctx(Duration::from_secs(120)), &CheckRequest::new())
                .await
                .context("health check")?;
            anyhow::Ok(())
        })?;
    Ok(since.elapsed().as_secs_f64())
}

/// (PSS, RSS) in KiB of a process.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("Pss:"), field("Rss:")))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let restores: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let counts: Vec<usize> = match args.next() {
        Some(s) => s.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 5, 10],
    };
    let vmm = fixtures::workspace_binary("hako-vmm").map_err(anyhow::Error::msg)?;
    let kernel = fixtures::kernel().map_err(|s| anyhow::anyhow!("{s}"))?;
    let image = fixtures::agent_image().map_err(anyhow::Error::msg)?;
    let work = tempfile::tempdir()?;
    let snapshot = work.path().join("template");

    eprintln!("cold boot...");
    let started = Instant::now();
    let cold = spawn(&vmm, &work.path().join("cold"), &kernel, &image, 3, None)?;
    let cold_secs = until_ready(&cold, started)?;
    let (cold_pss, cold_rss) = memory_kib(cold.child.id())?;
    let control = hako_vmm::control_socket(&cold.dir);
    match hako_vmm::control(
        &control,
        &ControlRequest::Snapshot {
            dir: snapshot.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?
    {
        ControlReply::Done => {}
        other => bail!("snapshot: {other:?}"),
    }
    drop(cold);

    let mut resumed = Vec::new();
    for i in 0..restores {
        let started = Instant::now();
        let vm = spawn(
            &vmm,
            &work.path().join(format!("r{i}")),
            &kernel,
            &image,
            10 + i as u32,
            Some(&snapshot),
        )?;
        resumed.push(until_ready(&vm, started)?);
        eprintln!("restore {i}: {:.1} ms", resumed[i] * 1e3);
    }
    println!("sandbox VM start to the agent's first answer (ms)");
    println!("{:<22} {:>10} {:>10}", "", "p50", "p95");
    println!(
        "{:<22} {:>10.0} {:>10}",
        "cold boot (1 run)",
        cold_secs * 1e3,
        "-"
    );
    println!(
        "{:<22} {:>10.1} {:>10.1}",
        format!("template ({restores} runs)"),
        percentile(&resumed, 0.5) * 1e3,
        percentile(&resumed, 0.95) * 1e3
    );
    println!(
        "{:<22} {:>9.0}x",
        "cold / template",
        cold_secs / percentile(&resumed, 0.5)
    );

    println!(
        "\nmemory per sandbox VMM (MiB; cold: PSS {:.1}, RSS {:.1})",
        cold_pss as f64 / 1024.0,
        cold_rss as f64 / 1024.0
    );
    println!("{:<6} {:>12} {:>12}", "N", "PSS", "RSS");
    for n in counts {
        let mut vms = Vec::new();
        for i in 0..n {
            let dir = work.path().join(format!("n{n}-{i}"));
            vms.push(spawn(
                &vmm,
                &dir,
                &kernel,
                &image,
                100 + i as u32,
                Some(&snapshot),
            )?);
        }
        for vm in &vms {
            until_ready(vm, Instant::now())?;
        }
        let (mut pss, mut rss) = (0u64, 0u64);
        for vm in &vms {
            let (p, r) = memory_kib(vm.child.id())?;
            pss += p;
            rss += r;
        }
        println!(
            "{:<6} {:>12.1} {:>12.1}",
            n,
            pss as f64 / 1024.0 / n as f64,
            rss as f64 / 1024.0 / n as f64
        );
    }
    Ok(())
}
