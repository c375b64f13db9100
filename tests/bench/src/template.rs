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

use std::time::Instant;

use anyhow::Result;
use hako_bench::percentile;
use hako_bench::sandbox_vm::{SandboxVm, VmImage};
use hako_tests::fixtures;

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
    let from = VmImage {
        vmm: &vmm,
        kernel: &kernel,
        image: &image,
    };

    eprintln!("cold boot...");
    let started = Instant::now();
    let cold = SandboxVm::spawn(&from, &work.path().join("cold"), 3, None, false)?;
    let cold_secs = cold.until_ready(started)?;
    let (cold_pss, cold_rss) = memory_kib(cold.child.id())?;
    cold.snapshot(&snapshot)?;
    drop(cold);

    let mut resumed = Vec::new();
    for i in 0..restores {
        let started = Instant::now();
        let vm = SandboxVm::spawn(
            &from,
            &work.path().join(format!("r{i}")),
            10 + i as u32,
            Some(&snapshot),
            false,
        )?;
        resumed.push(vm.until_ready(started)?);
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
            vms.push(SandboxVm::spawn(
                &from,
                &dir,
                100 + i as u32,
                Some(&snapshot),
                false,
            )?);
        }
        for vm in &vms {
            vm.until_ready(Instant::now())?;
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
