//! Talking to a hako-agent from tests: the runtime's own agent client (hybrid vsock or a Unix
//! socket), re-exported so suites and the runtime share one implementation.

use std::path::Path;
use std::time::Duration;

pub use hako_runtime::agent_client::{AgentClient as Clients, connect_unix, ctx};

/// Connects through hako-vmm's hybrid vsock socket, retrying until `deadline`.
pub async fn connect_hybrid(uds: &Path, port: u32, deadline: Duration) -> Result<Clients, String> {
    hako_runtime::agent_client::connect_hybrid(uds, port, deadline, || true).await
}

/// [`connect_hybrid`] that gives up as soon as hako-vmm (`pid`, a child of this process) has
/// ended, instead of at the deadline.
pub async fn connect_hybrid_to(
    uds: &Path,
    port: u32,
    deadline: Duration,
    pid: u32,
) -> Result<Clients, String> {
    let alive = || {
        // A child that ended and is not reaped yet is a zombie: state `Z` after the name.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    hako_runtime::agent_client::connect_hybrid(uds, port, deadline, alive).await
}

/// A process's whole stdout (or stderr) as text.
pub async fn read_to_end(
    agent: &hako_agent_api::agent_ttrpc::AgentServiceClient,
    container_id: &str,
    exec_id: &str,
    stderr: bool,
) -> Result<String, String> {
    let mut out = Vec::new();
    hako_runtime::agent_client::copy_stream(agent, container_id, exec_id, stderr, &mut out)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// CreateContainer `id` running `sh -c script` from the share's `<id>/rootfs`, in cgroup
/// `/hako/<id>`.
pub async fn create_container(
    agent: &hako_agent_api::agent_ttrpc::AgentServiceClient,
    id: &str,
    script: &str,
    rpc: Duration,
) -> Result<(), String> {
    let mut create = hako_agent_api::agent::CreateContainerRequest::new();
    create.container_id = id.into();
    create.oci_spec_json = hako_rootfs_builder::bundle::spec_json(
        "rootfs",
        &["sh", "-c", script],
        &format!("/hako/{id}"),
    )
    .into_bytes();
    agent
        .create_container(ctx(rpc), &create)
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?;
    Ok(())
}

/// StartContainer `id`, then its whole stdout and its exit status.
pub async fn start_and_wait(
    agent: &hako_agent_api::agent_ttrpc::AgentServiceClient,
    id: &str,
    rpc: Duration,
) -> Result<(String, i32), String> {
    let mut start = hako_agent_api::agent::ContainerRequest::new();
    start.container_id = id.into();
    agent
        .start_container(ctx(rpc), &start)
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
    let out = read_to_end(agent, id, "", false).await?;
    let mut w = hako_agent_api::agent::ProcessRequest::new();
    w.container_id = id.into();
    let status = agent
        .wait_process(ctx(rpc), &w)
        .await
        .map_err(|e| format!("WaitProcess: {e}"))?
        .status;
    eprintln!("container {id} printed {out:?} and exited {status}");
    Ok((out, status))
}

/// DestroySandbox with power-off (the VM ends with status 0).
pub async fn destroy_and_power_off(
    agent: &hako_agent_api::agent_ttrpc::AgentServiceClient,
    rpc: Duration,
) -> Result<(), String> {
    let mut destroy = hako_agent_api::agent::DestroySandboxRequest::new();
    destroy.power_off = true;
    agent
        .destroy_sandbox(ctx(rpc), &destroy)
        .await
        .map_err(|e| format!("DestroySandbox: {e}"))?;
    Ok(())
}
