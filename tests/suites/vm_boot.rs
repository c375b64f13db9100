//! Tier 3 (KVM): the guest kernel boots under `qemu-system-x86_64 -M microvm` with the probe
//! image, reaches userspace and prints the probe's markers. Slow where guest kernel mode is
//! emulated (about a minute); skip locally with `--skip vm_`.

use std::time::Duration;

use hako_rootfs_builder::images::{PROBE_DONE_MARKER, PROBE_INIT_MARKER};
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, qemu};
use libtest_mimic::{Arguments, Failed};

/// Boots take ~1 minute here; allow for a loaded machine.
fn deadline() -> Duration {
    let secs = std::env::var("HAKO_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

fn boot_probe_image() -> Result<(), Failed> {
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::probe_image()?;
    let cmd = qemu::command(&kernel, &image, 256, &qemu::cmdline(""));
    let boot = qemu::boot(cmd, deadline()).map_err(|e| format!("starting qemu: {e}"))?;
    let _ = std::fs::remove_file(&image);
    let console = boot.console();
    eprintln!(
        "--- guest console ---\n{console}--- end ({:.1}s) ---",
        boot.elapsed.as_secs_f64()
    );
    let expect = |needle: &str| -> Result<(), Failed> {
        if boot.time_of(needle).is_some() {
            Ok(())
        } else {
            Err(format!("the console never showed {needle:?}").into())
        }
    };
    expect(PROBE_INIT_MARKER)?;
    expect("HAKO-GUEST-PROBE: kernel: 6.1")?;
    expect("HAKO-GUEST-PROBE: file: 21 bytes")?;
    expect("HAKO-GUEST-PROBE: spawn: child")?;
    // clearcpuid= reached the guest: none of the features the emulator lacks is visible.
    expect("of popcnt/xsave/smap/cx16/avx visible: []")?;
    expect("HAKO-GUEST-PROBE: ok")?;
    expect(&format!("{PROBE_DONE_MARKER}0"))?;
    match boot.exit {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(format!("qemu exited with {status} after the guest rebooted").into());
        }
        None => {
            return Err(
                "the guest did not reboot by itself (qemu was killed at the deadline)".into(),
            );
        }
    }
    if let Some(t) = boot.time_of(PROBE_INIT_MARKER) {
        eprintln!(
            "boot: userspace /init after {:.1}s, whole run {:.1}s",
            t.as_secs_f64(),
            boot.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    require::program("qemu-system-x86_64")?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![require::trial(
        "vm_boot_probe_image_under_qemu_microvm",
        prerequisites,
        boot_probe_image,
    )];
    libtest_mimic::run(&args, trials).exit();
}
