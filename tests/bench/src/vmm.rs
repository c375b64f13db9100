//! `hako-bench-vmm [RUNS]`: hako-vmm against `qemu-system-x86_64 -M microvm` on the same
//! kernel and initramfs, in one run, and prints a table with the ratios. Never asserts.
//!
//! - start → first KVM_RUN: wall-clock time from spawning to the first `KVM_RUN`, as each VMM
//!   reports it with its own lightweight tracing: hako-vmm's `first KVM_RUN epoch_us=` debug
//!   line, QEMU's `kvm_vcpu_ioctl` trace event (type 0xae80) in its `-D` log. (strace would
//!   stop every ioctl and inflate both.)
//! - start → kernel banner: without strace, until "Linux version" is on the console
//!   (`loglevel=6`); where guest kernel mode is emulated this is dominated by the guest.
//! - VMM overhead: RSS of the VMM process at the banner, less the mappings as large as guest
//!   RAM (guest memory itself).
//!
//! Needs `target/hako-env` (scripts/setup.sh), /dev/kvm and QEMU.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hako_tests::{hako_vmm, qemu, repo_root};

const MEMORY_MIB: u32 = 256;
const BANNER: &str = "Linux version";
const CMDLINE: &str = "loglevel=6";
const DEADLINE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq)]
enum Vmm {
    Hako,
    Qemu,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Hako => "hako-vmm",
            Vmm::Qemu => "qemu microvm",
        }
    }
}

struct Inputs {
    hako: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    dir: tempfile::TempDir,
}

fn env_file() -> Result<(PathBuf, PathBuf)> {
    let path = repo_root().join("target/hako-env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run scripts/setup.sh)", path.display()))?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(PathBuf::from)
            .with_context(|| format!("{key} missing from {}", path.display()))
    };
    Ok((get("HAKO_KERNEL")?, get("HAKO_PROBE_IMAGE")?))
}

fn command(vmm: Vmm, inputs: &Inputs) -> Result<Command> {
    Ok(match vmm {
        Vmm::Hako => {
            let mut config =
                hako_vmm::probe_vm(inputs.dir.path(), &inputs.kernel, &inputs.initrd, CMDLINE);
            config.control_socket = None;
            let mut cmd = hako_vmm::command(&inputs.hako, inputs.dir.path(), &config)?;
            cmd.env("HAKO_LOG", "warn");
            cmd
        }
        Vmm::Qemu => qemu::command(
            &inputs.kernel,
            &inputs.initrd,
            MEMORY_MIB,
            &qemu::cmdline(CMDLINE),
        ),
    })
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When hako-vmm's first KVM_RUN happened (epoch seconds), from its debug log.
fn hako_first_run(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("first KVM_RUN"))?;
    let us = line.split("epoch_us=").nth(1)?.split_whitespace().next()?;
    Some(us.parse::<f64>().ok()? / 1e6)
}

/// When QEMU's first KVM_RUN happened, from `kvm_vcpu_ioctl` lines `PID@SECS.USECS:...`.
fn qemu_first_run(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("kvm_vcpu_ioctl") && l.contains("type 0xae80"))?;
    let stamp = line.split('@').nth(1)?.split(':').next()?;
    stamp.parse().ok()
}

/// Spawn → first KVM_RUN, in milliseconds.
fn first_kvm_run(vmm: Vmm, inputs: &Inputs) -> Result<f64> {
    let mut cmd = command(vmm, inputs)?;
    let log = inputs.dir.path().join("vmm.log");
    let _ = std::fs::remove_file(&log);
    match vmm {
        Vmm::Hako => {
            cmd.env("HAKO_LOG", "hako_vmm::vcpu=debug");
            cmd.stderr(std::fs::File::create(&log)?);
        }
        Vmm::Qemu => {
            // `-msg timestamp=on` prefixes each trace line with `PID@SECS.USECS:`.
            cmd.args(["-msg", "timestamp=on", "-trace", "kvm_vcpu_ioctl", "-D"])
                .arg(&log);
            cmd.stderr(Stdio::null());
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let start = now_epoch();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", vmm.name()))?;
    let begun = Instant::now();
    let found = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let hit = match vmm {
            Vmm::Hako => hako_first_run(&text),
            Vmm::Qemu => qemu_first_run(&text),
        };
        if hit.is_some() || begun.elapsed() > Duration::from_secs(30) || child.try_wait()?.is_some()
        {
            break hit;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    match found {
        Some(t) => Ok((t - start) * 1e3),
        None => bail!("{} never reported its first KVM_RUN", vmm.name()),
    }
}

/// RSS of `pid` outside mappings at least as large as guest RAM, in KiB.
fn overhead_kib(pid: u32) -> Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let guest = u64::from(MEMORY_MIB) << 20;
    let mut total = 0;
    let mut in_guest_ram = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
        {
            in_guest_ram = hi.saturating_sub(lo) >= guest;
        } else if let Some(rest) = line.strip_prefix("Rss:")
            && !in_guest_ram
        {
            total += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Spawn → kernel banner on the console, and the VMM's overhead then.
fn banner(vmm: Vmm, inputs: &Inputs) -> Result<(f64, u64)> {
    let mut cmd = command(vmm, inputs)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", vmm.name()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(BANNER) {
                let _ = tx.send(start.elapsed());
                return;
            }
        }
    });
    let result = match rx.recv_timeout(DEADLINE) {
        Ok(t) => overhead_kib(pid).map(|kib| (t.as_secs_f64(), kib)),
        Err(_) => Err(anyhow::anyhow!("{} never printed the banner", vmm.name())),
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let (kernel, initrd) = env_file()?;
    let hako = repo_root().join("target/release/hako-vmm");
    if !hako.is_file() {
        bail!("{} is missing: run scripts/setup.sh", hako.display());
    }
    let inputs = Inputs {
        hako,
        kernel,
        initrd,
        dir: tempfile::tempdir()?,
    };
    let mut rows: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        vec![Default::default(), Default::default()];
    for run in 0..runs {
        for (i, vmm) in [Vmm::Hako, Vmm::Qemu].into_iter().enumerate() {
            let kvm = first_kvm_run(vmm, &inputs)?;
            let (secs, kib) = banner(vmm, &inputs)?;
            eprintln!(
                "run {}: {:12} first KVM_RUN {kvm:7.1} ms  banner {secs:6.2} s  overhead {:6.2} MiB",
                run + 1,
                vmm.name(),
                kib as f64 / 1024.0
            );
            rows[i].0.push(kvm);
            rows[i].1.push(secs);
            rows[i].2.push(kib as f64 / 1024.0);
        }
    }
    let (h, q) = (&rows[0], &rows[1]);
    let line = |name: &str, hv: f64, qv: f64, unit: &str| {
        println!(
            "| {name} | {hv:.2} {unit} | {qv:.2} {unit} | {:.2}x |",
            qv / hv
        );
    };
    println!(
        "\nhako-vmm vs qemu-system-x86_64 -M microvm, {runs} run(s) each, medians, same kernel/initramfs, 1 vCPU, {MEMORY_MIB} MiB\n"
    );
    println!("| metric | hako-vmm | qemu microvm | qemu / hako |");
    println!("|---|---|---|---|");
    line(
        "start → first KVM_RUN",
        median(h.0.clone()),
        median(q.0.clone()),
        "ms",
    );
    line(
        "start → kernel banner",
        median(h.1.clone()),
        median(q.1.clone()),
        "s",
    );
    line(
        "VMM RSS excluding guest RAM",
        median(h.2.clone()),
        median(q.2.clone()),
        "MiB",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_vmms_first_run_stamps() {
        let hako = "2026-11-23T17:27:43.701732Z DEBUG vcpu{index=0}: hako_vmm::vcpu: first KVM_RUN epoch_us=1795454863701732";
        assert_eq!(hako_first_run(hako), Some(1_795_454_863.701_732));
        let qemu = "123@1795454863.701732:kvm_vcpu_ioctl cpu_index 0, type 0xae9a, arg 0x0\n\
                    123@1795454863.801732:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)";
        assert_eq!(qemu_first_run(qemu), Some(1_795_454_863.801_732));
        assert_eq!(qemu_first_run("nothing"), None);
    }
}
