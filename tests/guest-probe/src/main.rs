//! Runs inside the probe guest (built static, placed in the probe image by
//! hako-rootfs-builder). Each check prints one `HAKO-GUEST-PROBE:` line; the last is `ok` or
//! `FAIL`. Checks are few because each syscall is costly where guest kernel mode is emulated.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn check(name: &str, result: Result<String, String>, failed: &mut bool) {
    match result {
        Ok(detail) => println!("HAKO-GUEST-PROBE: {name}: {detail}"),
        Err(e) => {
            println!("HAKO-GUEST-PROBE: FAIL {name}: {e}");
            *failed = true;
        }
    }
}

fn kernel_release() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string())
}

fn file_round_trip() -> Result<String, String> {
    let path = "/tmp/hako-guest-probe";
    let data = b"written in the guest\n";
    std::fs::write(path, data).map_err(|e| format!("write {path}: {e}"))?;
    let back = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
    std::fs::remove_file(path).map_err(|e| format!("remove {path}: {e}"))?;
    if back == data {
        Ok(format!("{} bytes", back.len()))
    } else {
        Err("read back different bytes".into())
    }
}

fn spawn_child() -> Result<String, String> {
    let out = std::process::Command::new("/bin/busybox")
        .args(["echo", "child"])
        .output()
        .map_err(|e| format!("spawning busybox: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && text == "child" {
        Ok(text)
    } else {
        Err(format!("{:?} printed {text:?}", out.status))
    }
}

/// CPU features the host hides where kernel mode is emulated (informational).
fn visible_cpu_features() -> Result<String, String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").map_err(|e| e.to_string())?;
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().skip(2).collect())
        .unwrap_or_default();
    let shown: Vec<&str> = ["popcnt", "xsave", "smap", "cx16", "avx"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    Ok(format!(
        "{} flags; of popcnt/xsave/smap/cx16/avx visible: [{}]",
        flags.len(),
        shown.join(" ")
    ))
}

fn main() -> ExitCode {
    println!("HAKO-GUEST-PROBE: start pid={}", std::process::id());
    let mut failed = false;
    check("kernel", kernel_release(), &mut failed);
    check("file", file_round_trip(), &mut failed);
    check("spawn", spawn_child(), &mut failed);
    check("cpu", visible_cpu_features(), &mut failed);
    if failed {
        println!("HAKO-GUEST-PROBE: FAIL");
        ExitCode::FAILURE
    } else {
        println!("HAKO-GUEST-PROBE: ok");
        ExitCode::SUCCESS
    }
}
