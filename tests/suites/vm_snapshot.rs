//! Tier 3 (KVM): snapshot and restore in hako-vmm, as sandbox templates use them.
//!
//! One VM boots the agent image with a vsock device (CID 3) and an empty shared directory;
//! once the agent answers, the host closes its connection and asks the control API for a
//! snapshot; that VM is stopped. A second hako-vmm resumes the snapshot with its own
//! socket, CID 4, console and another shared directory holding a busybox root: the agent
//! answers there (vsock reconnects; the guest has taken its new CID), its uptime goes on from
//! the template's (the same kernel resumed, no second boot), the sandbox mounts the new share, a container from it prints its
//! output, and power-off ends the VMM with status 0. Without booting: a snapshot refuses a
//! VM of another size (naming it) and a state file of another format version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::agent::{CreateSandboxRequest, GuestDetailsRequest};
use hako_agent_api::health::CheckRequest;
use hako_rootfs_builder::bundle;
use hako_tests::agent::{self, Clients};
use hako_tests::boot::{self, Boot};
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, hako_vmm};
use hako_vmm_api::{ControlReply, ControlRequest, ExitReason, VmConfig};
use libtest_mimic::Failed;

const RPC: Duration = Duration::from_secs(300);
const CONTAINER: &str = "c1";

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn sandbox_vm(dir: &Path, kernel: &Path, image: &Path, cid: u32) -> Result<VmConfig, String> {
    hako_vmm::agent_vm(dir, kernel, image, cid).map_err(|e| e.to_string())
}

fn stop(control: &Path) {
    let _ = hako_vmm::control(control, &ControlRequest::Shutdown { grace_ms: 0 });
}

/// Waits for the agent, closes the connection, snapshots; the VM must stay paused.
async fn make_template(uds: PathBuf, control: PathBuf, snapshot: PathBuf) -> Result<(), String> {
    {
        let Clients { health, .. } =
            agent::connect_hybrid(&uds, AGENT_API_PORT, boot::vm_deadline()).await?;
        health
            .check(agent::ctx(RPC), &CheckRequest::new())
            .await
            .map_err(|e| format!("Check before the snapshot: {e}"))?;
    }
    // Let the guest see the connection close (a few emulated packets).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let reply = hako_vmm::control(&control, &ControlRequest::Snapshot { dir: snapshot })?;
    eprintln!(
        "snapshot reply after {:.0} ms: {reply:?}",
        started.elapsed().as_secs_f64() * 1e3
    );
    if reply != ControlReply::Done {
        return Err(format!("the snapshot request answered {reply:?}"));
    }
    match hako_vmm::control(&control, &ControlRequest::Status)? {
        ControlReply::Status {
            state: hako_vmm_api::VmState::Paused,
            ..
        } => Ok(()),
        other => Err(format!(
            "after the snapshot the VM is {other:?}, not paused"
        )),
    }
}

async fn use_restored(uds: PathBuf) -> Result<(), String> {
    let started = Instant::now();
    let Clients { health, agent } =
        agent::connect_hybrid(&uds, AGENT_API_PORT, boot::vm_deadline()).await?;
    let ctx = || agent::ctx(RPC);
    health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check after the restore: {e}"))?;
    eprintln!(
        "the restored agent answered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let d = agent
        .guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .map_err(|e| format!("GuestDetails: {e}"))?;
    if !d.init {
        return Err(format!("GuestDetails answered {d:?}"));
    }
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "from-a-template".into();
    req.hostname = "restored".into();
    req.storages.push(hako_agent_api::shared_fs_storage());
    agent
        .create_sandbox(ctx(), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    // The guest's uptime goes on from the template's (it booted ~a minute before the
    // snapshot), not from zero: the same kernel resumed.
    let script = "cat /marker; cut -d. -f1 /proc/uptime; exit 6";
    agent::create_container(&agent, CONTAINER, script, RPC).await?;
    let (out, status) = agent::start_and_wait(&agent, CONTAINER, RPC).await?;
    let uptime = out
        .strip_prefix("written after the snapshot\n")
        .and_then(|rest| rest.trim().parse::<u64>().ok());
    if uptime.is_none_or(|u| u < 20) || status != 6 {
        return Err(format!("the container printed {out:?} and exited {status}"));
    }
    agent::destroy_and_power_off(&agent, RPC).await
}

/// Runs `cmd` while `drive` talks to it; stops the VM early if `drive` fails.
fn run_vm<F>(cmd: std::process::Command, control: PathBuf, drive: F) -> Result<Boot, Failed>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let ctl = control.clone();
    let driver = std::thread::spawn(move || {
        let result = runtime().and_then(|rt| rt.block_on(drive));
        if result.is_err() {
            stop(&ctl);
        }
        result
    });
    let boot =
        boot::boot(cmd, boot::vm_deadline()).map_err(|e| format!("starting hako-vmm: {e}"))?;
    eprintln!(
        "--- console and VMM log ---\n{}--- end ({:.1}s) ---",
        boot.console(),
        boot.elapsed.as_secs_f64()
    );
    driver.join().map_err(|_| "the driver thread panicked")??;
    Ok(boot)
}

fn snapshot_round_trip() -> Result<(), Failed> {
    let vmm = fixtures::workspace_binary("hako-vmm")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::agent_image()?;
    let top = tempfile::tempdir().map_err(|e| e.to_string())?;
    let snapshot = top.path().join("template");

    // The template VM.
    let a = top.path().join("a");
    std::fs::create_dir(&a).map_err(|e| e.to_string())?;
    let config_a = sandbox_vm(&a, &kernel, &image, 3)?;
    let cmd = hako_vmm::command(&vmm, &a, &config_a).map_err(|e| e.to_string())?;
    let control_a = hako_vmm::control_socket(&a);
    let uds_a = a.join("vsock.sock");
    let (ctl, snap) = (control_a.clone(), snapshot.clone());
    let boot_a = run_vm(cmd, control_a.clone(), async move {
        let r = make_template(uds_a, ctl.clone(), snap).await;
        stop(&ctl);
        r
    })?;
    let _ = boot_a;
    for f in ["state.json", "memory"] {
        if !snapshot.join(f).is_file() {
            return Err(format!("the snapshot lacks {f}").into());
        }
    }
    let mem = std::fs::metadata(snapshot.join("memory")).map_err(|e| e.to_string())?;
    use std::os::unix::fs::MetadataExt;
    eprintln!(
        "memory file: {} MiB apparent, {} MiB on disk",
        mem.len() >> 20,
        (mem.blocks() * 512) >> 20
    );

    // A wrong-sized VM is refused before anything runs.
    let bad = top.path().join("bad");
    std::fs::create_dir(&bad).map_err(|e| e.to_string())?;
    let mut config_bad = sandbox_vm(&bad, &kernel, &image, 5)?;
    config_bad.machine.memory_mib *= 2;
    let out = hako_vmm::restore_command(&vmm, &bad, &config_bad, &snapshot)
        .map_err(|e| e.to_string())?
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("MiB of memory") {
        return Err(format!("a restore into a bigger VM: {:?}, {err}", out.status).into());
    }
    if bad.join("vsock.sock").exists() {
        return Err("the refused restore left its vsock socket".into());
    }

    // The restored VM: its own socket, CID and shared directory.
    let b = top.path().join("b");
    std::fs::create_dir(&b).map_err(|e| e.to_string())?;
    let config_b = sandbox_vm(&b, &kernel, &image, 4)?;
    let root = b.join("shared").join(CONTAINER).join("rootfs");
    bundle::busybox_rootfs(&root)?;
    std::fs::write(root.join("marker"), "written after the snapshot\n")
        .map_err(|e| e.to_string())?;
    let cmd =
        hako_vmm::restore_command(&vmm, &b, &config_b, &snapshot).map_err(|e| e.to_string())?;
    let boot_b = run_vm(
        cmd,
        hako_vmm::control_socket(&b),
        use_restored(b.join("vsock.sock")),
    )?;
    if boot_b.time_of("restored from a snapshot").is_none() {
        return Err("the VMM log does not say it restored".into());
    }
    if boot_b.time_of("Linux version").is_some() {
        return Err("the restored VM booted its kernel again".into());
    }
    let want = i32::from(ExitReason::GuestPoweroff.exit_code());
    match boot_b.exit.and_then(|s| s.code()) {
        Some(code) if code == want => {}
        other => {
            return Err(format!("the restored VMM ended with {other:?}, expected {want}").into());
        }
    }

    // Another format version is refused, naming it.
    let state = snapshot.join("state.json");
    let text = std::fs::read_to_string(&state).map_err(|e| e.to_string())?;
    let tampered = text.replacen("\"format_version\":1", "\"format_version\":77", 1);
    if tampered == text {
        return Err("the state file has no format_version 1".into());
    }
    std::fs::write(&state, tampered).map_err(|e| e.to_string())?;
    let c = top.path().join("c");
    std::fs::create_dir(&c).map_err(|e| e.to_string())?;
    let config_c = sandbox_vm(&c, &kernel, &image, 6)?;
    let out = hako_vmm::restore_command(&vmm, &c, &config_c, &snapshot)
        .map_err(|e| e.to_string())?
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("format version 77") {
        return Err(format!("a restore of another format: {:?}, {err}", out.status).into());
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    fixtures::kernel().map(drop)
}

fn main() {
    require::run_one(
        "vm_snapshot_restores_a_booted_agent",
        prerequisites,
        snapshot_round_trip,
    );
}
