//! Tier 4 (KVM): `hako run` (create + start + wait, through the per-container monitor) runs a
//! busybox bundle in its own sandbox VM: the container's stdout and stderr arrive, stdin
//! reaches it, the exit status is the container's, and the state directory and its mounts are
//! gone afterwards. A second run with the same id while the first is still there is refused.
//! While it runs, its hako-vmm sits in a host cgroup of its own (under this process's), limited
//! to the guest's memory plus the VMM's overhead; the cgroup is gone afterwards.

use std::io::Write;
use std::process::{Command, Stdio};

use hako_rootfs_builder::bundle;
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::Failed;

fn hako_run_runs_a_container_in_a_vm() -> Result<(), Failed> {
    let hako = fixtures::workspace_binary("hako-runtime", "hako")?;
    let vmm = fixtures::workspace_binary("hako-vmm", "hako-vmm")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::agent_image()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle_dir = dir.path().join("bundle");
    let script = "read line; echo \"out: $line\"; echo to-stderr >&2; exit 3";
    bundle::write_busybox_bundle(
        std::path::Path::new("/bin/busybox"),
        &bundle_dir,
        &["sh", "-c", script],
        "/hako/run-test",
    )?;
    let root = dir.path().join("run");
    let config = dir.path().join("hako.toml");
    std::fs::write(
        &config,
        format!("[vm]\nvmm = {vmm:?}\nkernel = {kernel:?}\nimage = {image:?}\n"),
    )
    .map_err(|e| e.to_string())?;
    let hako_run = || {
        let mut cmd = Command::new(&hako);
        cmd.arg("--root")
            .arg(&root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle_dir)
            .arg("run-test")
            .env("HAKO_CONFIG", &config);
        cmd
    };
    let mut child = hako_run()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting hako run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"through stdin\n")
            .map_err(|e| format!("writing stdin: {e}"))?;
    }
    // While it boots, the same id is taken.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let dup = hako_run()
        .output()
        .map_err(|e| format!("second hako run: {e}"))?;
    let cgroup = vmm_in_its_cgroup(&root.join("run-test/vm"), (256 + 128) << 20);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for hako run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- hako run stdout ---\n{stdout}--- stderr ---\n{stderr}---");
    if !String::from_utf8_lossy(&dup.stderr).contains("already exists") || dup.status.success() {
        return Err(format!(
            "a second run with the same id was not refused: {:?} {}",
            dup.status,
            String::from_utf8_lossy(&dup.stderr)
        )
        .into());
    }
    if stdout != "out: through stdin\n" {
        return Err(format!("the container's stdout was {stdout:?}").into());
    }
    if !stderr.contains("to-stderr") {
        return Err("the container's stderr did not arrive".into());
    }
    if out.status.code() != Some(3) {
        return Err(format!(
            "hako run exited {:?}, expected the container's 3",
            out.status
        )
        .into());
    }
    let cgroup = cgroup.map_err(|e| format!("the VMM's host cgroup: {e}"))?;
    eprintln!("hako-vmm ran in {cgroup}");
    let left = hako_runtime::sandbox::host_cgroup::left_by_root(&root);
    if !left.is_empty() {
        return Err(format!("host cgroups left behind: {left:?}").into());
    }
    if root.join("run-test").exists() {
        return Err("the sandbox's state directory was left behind".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&root.display().to_string()) {
        return Err("a mount under the sandbox's state directory was left behind".into());
    }
    Ok(())
}

/// Waits for the sandbox's VMM and checks it is in every directory of its recorded host
/// cgroup, whose memory limit is `memory_bytes`. Returns the directories.
fn vmm_in_its_cgroup(sandbox: &std::path::Path, memory_bytes: u64) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let state = loop {
        let text = std::fs::read_to_string(sandbox.join("state.json")).unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if state["vmm_pid"].as_u64().unwrap_or(0) > 0 {
            break state;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no VMM recorded in {}/state.json: {text}",
                sandbox.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let pid = state["vmm_pid"].to_string();
    let dirs: Vec<std::path::PathBuf> = state["host_cgroup"]["dirs"]
        .as_array()
        .ok_or_else(|| format!("no host cgroup recorded: {state}"))?
        .iter()
        .filter_map(|d| d.as_str().map(std::path::PathBuf::from))
        .collect();
    if dirs.is_empty() {
        return Err(format!("no host cgroup recorded: {state}"));
    }
    let mut limited = false;
    for dir in &dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if !procs.lines().any(|l| l == pid) {
            return Err(format!(
                "hako-vmm {pid} is not in {}: {procs:?}",
                dir.display()
            ));
        }
        for file in ["memory.limit_in_bytes", "memory.max"] {
            if let Ok(v) = std::fs::read_to_string(dir.join(file)) {
                if v.trim() != memory_bytes.to_string() {
                    return Err(format!(
                        "{}/{file} is {v:?}, not {memory_bytes}",
                        dir.display()
                    ));
                }
                limited = true;
            }
        }
    }
    if !limited {
        return Err(format!("no memory limit in {dirs:?}"));
    }
    Ok(format!("{dirs:?}"))
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    require::root()?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    require::run_one(
        "vm_hako_run_runs_a_container_and_cleans_up",
        prerequisites,
        hako_run_runs_a_container_in_a_vm,
    );
}
