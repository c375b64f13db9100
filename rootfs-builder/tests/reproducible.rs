//! The image builder's output is byte-for-byte identical across runs (the binary, twice).
#![allow(clippy::unwrap_used)] // a test: a failed call is a failed test

use std::path::Path;
use std::process::Command;

fn build(kind: &str, input_flag: &str, input: &Path, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_hako-rootfs-builder"))
        .arg(kind)
        .arg(input_flag)
        .arg(input)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "hako-rootfs-builder {kind} failed: {status}"
    );
}

#[test]
fn two_runs_give_identical_images() {
    // busybox-static is a static x86-64 binary, so it stands in for the agent and the program.
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "busybox-static is not installed: scripts/setup.sh installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    for (kind, flag) in [("agent", "--agent"), ("probe", "--program")] {
        let a = dir.path().join(format!("{kind}-a.cpio"));
        let b = dir.path().join(format!("{kind}-b.cpio"));
        build(kind, flag, busybox, &a);
        std::thread::sleep(std::time::Duration::from_millis(1100)); // a different second
        build(kind, flag, busybox, &b);
        let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(a.len() > busybox.metadata().unwrap().len() as usize);
        assert!(a == b, "{kind} image differs between runs");
    }
}

#[test]
fn dynamic_agent_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hako-rootfs-builder"))
        .args(["agent", "--agent", "/bin/ls", "--out"])
        .arg(dir.path().join("x.cpio"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dynamically linked") && err.contains("crt-static"),
        "{err}"
    );
    assert!(
        !dir.path().join("x.cpio").exists(),
        "no partial image is left behind"
    );
}
