//! `hako-bench-shim [RUNS]` (default 20): `ctr run --rm` of a busybox `echo` through Hako's
//! shim (a sandbox VM each time) against the same through `io.containerd.runc.v2`, side by
//! side in one private containerd; prints p50/p95 of each and their ratios. Never asserts.
//! Needs root, KVM, containerd, runc and busybox-static. Where guest kernel mode is emulated
//! each Hako run takes minutes: pass a small RUNS there.

use std::time::Instant;

use anyhow::{Result, bail};
use hako_bench::percentile;
use hako_tests::containerd::{BUSYBOX, Containerd};

fn run_once(ctd: &Containerd, runtime: &str, id: &str) -> Result<f64> {
    let start = Instant::now();
    let o = ctd
        .ctr(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            BUSYBOX,
            id,
            "echo",
            "bench",
        ])
        .map_err(anyhow::Error::msg)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() || String::from_utf8_lossy(&o.stdout) != "bench\n" {
        bail!(
            "{runtime}: ctr run ended {:?}: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(ms)
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let ctd = Containerd::start().map_err(anyhow::Error::msg)?;
    let (mut hako, mut runc) = (Vec::new(), Vec::new());
    for n in 0..runs {
        runc.push(run_once(
            &ctd,
            "io.containerd.runc.v2",
            &format!("runc-{n}"),
        )?);
        hako.push(run_once(
            &ctd,
            "io.containerd.hako.v2",
            &format!("hako-{n}"),
        )?);
        eprintln!("run {n}: runc {:.0} ms, hako {:.0} ms", runc[n], hako[n]);
    }
    println!("ctr run --rm busybox echo, {runs} runs each (ms)");
    println!("{:<24} {:>10} {:>10}", "runtime", "p50", "p95");
    for (name, v) in [
        ("io.containerd.runc.v2", &runc),
        ("io.containerd.hako.v2", &hako),
    ] {
        println!(
            "{:<24} {:>10.0} {:>10.0}",
            name,
            percentile(v, 0.5),
            percentile(v, 0.95)
        );
    }
    println!(
        "{:<24} {:>9.1}x {:>9.1}x",
        "hako / runc",
        percentile(&hako, 0.5) / percentile(&runc, 0.5),
        percentile(&hako, 0.95) / percentile(&runc, 0.95)
    );
    Ok(())
}
