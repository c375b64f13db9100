//! Tier 3 (KVM): the agent image boots in hako-vmm with the agent as PID 1; the host reaches
//! the agent through hybrid vsock (`CONNECT 1024`), checks its health and guest details,
//! creates the sandbox with the virtio-fs share mounted where the API says, runs a busybox
//! container whose root file system the host put in the share (its cgroup v2 statistics and
//! processes, its output, its cgroup v2 path, its exit code), and destroys the sandbox with power-off, which ends hako-vmm with
//! status 0 (guest powered off). The agent's log also reaches the host over vsock.

use std::time::Duration;

use hako_agent_api::agent::{ContainerRequest, CreateSandboxRequest, GuestDetailsRequest};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_agent_api::health::CheckRequest;
use hako_agent_api::{AGENT_API_PORT, AGENT_LOG_PORT, SHARED_FS_TAG};
use hako_rootfs_builder::bundle;
use hako_tests::agent::{self, Clients};
use hako_tests::boot::{self, Boot};
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, hako_vmm};
use hako_vmm_api::{ExitReason, FsConfig, VsockConfig};
use libtest_mimic::Failed;

const RPC: Duration = Duration::from_secs(120);
const CONTAINER: &str = "c1";

async fn drive(uds: std::path::PathBuf) -> Result<(), String> {
    let Clients { health, agent } =
        agent::connect_hybrid(&uds, AGENT_API_PORT, boot::vm_deadline()).await?;
    let ctx = || agent::ctx(RPC);
    health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check: {e}"))?;
    let d = agent
        .guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .map_err(|e| format!("GuestDetails: {e}"))?;
    if !d.init || !d.kernel_release.starts_with("6.1") {
        return Err(format!("GuestDetails answered {d:?}"));
    }
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "vm-agent-test".into();
    req.hostname = "hako-test".into();
    req.storages.push(hako_agent_api::shared_fs_storage());
    agent
        .create_sandbox(ctx(), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    run_container(&agent).await?;
    agent::destroy_and_power_off(&agent, RPC).await
}

/// A busybox container from the share: output, cgroup v2 path, exit code.
async fn run_container(agent: &AgentServiceClient) -> Result<(), String> {
    let ctx = || agent::ctx(RPC);
    let script = "echo hello from a container; cat /proc/self/cgroup; exit 7";
    agent::create_container(agent, CONTAINER, script, RPC).await?;
    let mut start = ContainerRequest::new();
    start.container_id = CONTAINER.into();
    // cgroup v2 in the guest: the created container's init is in its cgroup.
    let stats = agent
        .stats_container(ctx(), &start)
        .await
        .map_err(|e| format!("StatsContainer: {e}"))?;
    let pids = agent
        .list_processes(ctx(), &start)
        .await
        .map_err(|e| format!("ListProcesses: {e}"))?
        .pids;
    if stats.pids.current == 0 || pids.is_empty() {
        return Err(format!("cgroup v2 stats {stats:?}, processes {pids:?}"));
    }
    let (out, status) = agent::start_and_wait(agent, CONTAINER, RPC).await?;
    if !out.starts_with("hello from a container\n") || !out.contains("0::/hako/c1") || status != 7 {
        return Err(format!("the container printed {out:?} and exited {status}"));
    }
    Ok(())
}

fn agent_boots_serves_and_powers_off() -> Result<(), Failed> {
    let vmm = fixtures::workspace_binary("hako-vmm")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::agent_image()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).map_err(|e| e.to_string())?;
    bundle::busybox_rootfs(&shared.join(CONTAINER).join("rootfs"))?;
    let uds = dir.path().join("vsock.sock");
    // The agent's logs also come to the host over vsock, at `<uds>_<AGENT_LOG_PORT>`.
    let log_listener =
        std::os::unix::net::UnixListener::bind(format!("{}_{AGENT_LOG_PORT}", uds.display()))
            .map_err(|e| format!("binding the log socket: {e}"))?;
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        if let Ok((mut s, _)) = log_listener.accept() {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let cmdline = format!("quiet agent.log_port={AGENT_LOG_PORT}");
    let mut config = hako_vmm::probe_vm(dir.path(), &kernel, &image, &cmdline);
    config.devices.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    config.devices.fs.push(FsConfig {
        tag: SHARED_FS_TAG.into(),
        shared_dir: shared,
        read_only: false,
    });
    let cmd = hako_vmm::command(&vmm, dir.path(), &config).map_err(|e| e.to_string())?;
    let control = config.control_socket.clone();
    let driver = std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(drive(uds));
        if result.is_err() {
            // Fail fast: stop the VM instead of waiting for the boot deadline.
            if let Some(path) = control
                && let Ok(mut s) = std::os::unix::net::UnixStream::connect(path)
            {
                let _ = std::io::Write::write_all(&mut s, b"{\"request\":\"shutdown\"}\n");
            }
        }
        result
    });
    let boot: Boot =
        boot::boot(cmd, boot::vm_deadline()).map_err(|e| format!("starting hako-vmm: {e}"))?;
    eprintln!(
        "--- console and VMM log ---\n{}--- end ({:.1}s) ---",
        boot.console(),
        boot.elapsed.as_secs_f64()
    );
    driver.join().map_err(|_| "the driver thread panicked")??;
    // The VMM is gone, so the stream has ended; give the reader a moment.
    for _ in 0..40 {
        if logs.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !logs.is_finished() {
        return Err("the agent never opened its log stream to the host".into());
    }
    let logs = logs.join().map_err(|_| "the log thread panicked")?;
    if !logs.contains("agent API serving") || !logs.contains("container started") {
        return Err(format!("the host's copy of the agent log lacks lines: {logs:?}").into());
    }
    for needle in [
        "hako-agent",
        "agent API serving",
        "sandbox created",
        "mounted",
        "container started",
        "container removed",
        "powering off",
    ] {
        if boot.time_of(needle).is_none() {
            return Err(format!("the console never showed {needle:?}").into());
        }
    }
    let want = i32::from(ExitReason::GuestPoweroff.exit_code());
    match boot.exit.and_then(|s| s.code()) {
        Some(code) if code == want => Ok(()),
        other => Err(
            format!("hako-vmm ended with {other:?}, expected {want} (guest powered off)").into(),
        ),
    }
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    fixtures::kernel().map(drop)
}

fn main() {
    require::run_one(
        "vm_agent_answers_over_vsock_and_powers_off",
        prerequisites,
        agent_boots_serves_and_powers_off,
    );
}
