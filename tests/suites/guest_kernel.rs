//! The cached guest kernel matches its inputs: every option the fragments request is in its
//! `.config`, it carries the compatibility patches, and vmlinux has the PVH entry note.

use std::path::{Path, PathBuf};
use std::process::Command;

use hako_tests::{fixtures, repo_root, require};
use libtest_mimic::{Arguments, Failed};

fn kernel_dir() -> Result<PathBuf, Failed> {
    let vmlinux = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    Ok(vmlinux.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn fragments() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("guest-kernel-config/fragments"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "config"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn config_has_every_requested_option() -> Result<(), Failed> {
    let dir = kernel_dir()?;
    let fragments = fragments();
    if fragments.len() < 10 {
        return Err(format!("expected the fragment set, found {}", fragments.len()).into());
    }
    let n = kconfig_verify(&dir.join("config"), &fragments)?;
    eprintln!("{n} requested options present");
    Ok(())
}

fn kconfig_verify(config: &Path, fragments: &[PathBuf]) -> Result<usize, Failed> {
    hako_kconfig::verify_files(config, fragments).map_err(|e| Failed::from(e.to_string()))
}

fn vmlinux_has_pvh_note_and_patches() -> Result<(), Failed> {
    let dir = kernel_dir()?;
    let out = Command::new("readelf")
        .arg("-n")
        .arg(dir.join("vmlinux"))
        .output()
        .map_err(|e| format!("readelf: {e}"))?;
    let notes = String::from_utf8_lossy(&out.stdout);
    // XEN_ELFNOTE_PHYS32_ENTRY (0x12) is the PVH entry point.
    if !notes
        .lines()
        .any(|l| l.contains("Xen") && l.contains("0x00000012"))
    {
        return Err(format!("no PVH entry note (Xen, type 0x12) in vmlinux:\n{notes}").into());
    }
    let map =
        std::fs::read_to_string(dir.join("System.map")).map_err(|e| format!("System.map: {e}"))?;
    if map.lines().any(|l| l.ends_with(" int3_selftest")) {
        return Err("int3_selftest is still in the kernel: patch 0001 was not applied".into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let have_kernel = || fixtures::kernel().map(drop);
    let trials = vec![
        require::trial(
            "guest_kernel_config_has_every_requested_option",
            have_kernel,
            config_has_every_requested_option,
        ),
        require::trial(
            "guest_kernel_has_pvh_note_and_patches",
            || {
                require::program("readelf")?;
                have_kernel()
            },
            vmlinux_has_pvh_note_and_patches,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
