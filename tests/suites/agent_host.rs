//! Tier 2 (root): hako-agent as a host process in a private mount namespace, driven over a
//! Unix socket by the generated ttrpc clients: health and version, guest details, sandbox
//! create (a tmpfs storage) and destroy, bad requests answered with clear statuses, garbage
//! on the socket survived, and a clean exit with the socket removed.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hako_agent_api::agent::{
    CreateSandboxRequest, DestroySandboxRequest, GuestDetailsRequest, SetGuestDateTimeRequest,
    Storage,
};
use hako_agent_api::health::CheckRequest;
use hako_agent_api::health::health_check_response::ServingStatus;
use hako_agent_api::{API_MAJOR, agent::ContainerRequest};
use hako_tests::agent::{self, Clients};
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

const RPC: Duration = Duration::from_secs(10);

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_agent() -> Result<Agent, Failed> {
    let bin = fixtures::workspace_binary("hako-agent", "hako-agent")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("agent.sock");
    // A private mount namespace: the agent's mounts never reach the host's.
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&bin)
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(["--log", "debug"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    Ok(Agent { child, dir })
}

fn code_of(e: &ttrpc::Error) -> Option<ttrpc::Code> {
    match e {
        ttrpc::Error::RpcStatus(s) => Some(s.code()),
        _ => None,
    }
}

fn mounted_in(pid: u32, path: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&path.display().to_string()))
}

async fn exercise(a: &mut Agent) -> Result<(), String> {
    let socket = a.dir.path().join("agent.sock");
    let Clients { health, agent } = agent::connect_unix(&socket, Duration::from_secs(30)).await?;
    let ctx = || agent::ctx(RPC);

    let r = health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check: {e}"))?;
    if r.status.enum_value() != Ok(ServingStatus::SERVING) {
        return Err(format!("Check answered {r:?}"));
    }
    let v = health
        .version(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Version: {e}"))?;
    if v.api_major != API_MAJOR || v.agent_version.is_empty() {
        return Err(format!("Version answered {v:?}"));
    }
    let d = agent
        .guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .map_err(|e| format!("GuestDetails: {e}"))?;
    if d.init || d.kernel_release.is_empty() || d.memory_bytes == 0 || d.cpus == 0 {
        return Err(format!("GuestDetails answered {d:?}"));
    }
    let e = agent
        .set_guest_date_time(ctx(), &SetGuestDateTimeRequest::new())
        .await
        .err()
        .ok_or("SetGuestDateTime changed a host's clock")?;
    if code_of(&e) != Some(ttrpc::Code::FAILED_PRECONDITION) {
        return Err(format!("SetGuestDateTime outside a VM: {e}"));
    }

    // Garbage on a second connection must not take the agent down.
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    raw.write_all(&[0xff; 64]).map_err(|e| e.to_string())?;
    drop(raw);

    let mnt = a.dir.path().join("mnt");
    let storage = |mount_point: String| {
        let mut s = Storage::new();
        s.driver = "tmpfs".into();
        s.source = "tmpfs".into();
        s.fstype = "tmpfs".into();
        s.options = vec!["size=1m".into()];
        s.mount_point = mount_point;
        s
    };
    let mut bad = CreateSandboxRequest::new();
    bad.sandbox_id = "sb".into();
    bad.storages
        .push(storage(format!("{}/../escape", mnt.display())));
    let e = agent
        .create_sandbox(ctx(), &bad)
        .await
        .err()
        .ok_or("a `..` mount point was accepted")?;
    if code_of(&e) != Some(ttrpc::Code::INVALID_ARGUMENT) || !e.to_string().contains("..") {
        return Err(format!("a `..` mount point: {e}"));
    }
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "sb".into();
    req.hostname = "pod".into();
    req.storages.push(storage(mnt.display().to_string()));
    agent
        .create_sandbox(ctx(), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    let pid = a.child.id();
    if !mounted_in(pid, &mnt) {
        return Err("the tmpfs storage is not mounted in the agent's namespace".into());
    }
    if mounted_in(std::process::id(), &mnt) {
        return Err("the agent's mount leaked into the host's namespace".into());
    }
    let e = agent
        .create_sandbox(ctx(), &req)
        .await
        .err()
        .ok_or("a second CreateSandbox succeeded")?;
    if code_of(&e) != Some(ttrpc::Code::ALREADY_EXISTS) {
        return Err(format!("a second CreateSandbox: {e}"));
    }
    let mut c = ContainerRequest::new();
    c.container_id = "none".into();
    if agent.start_container(ctx(), &c).await.is_ok() {
        return Err("StartContainer of an unknown container succeeded".into());
    }
    health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check after garbage: {e}"))?;

    let mut destroy = DestroySandboxRequest::new();
    destroy.power_off = true;
    agent
        .destroy_sandbox(ctx(), &destroy)
        .await
        .map_err(|e| format!("DestroySandbox: {e}"))?;
    Ok(())
}

fn agent_serves_and_cleans_up() -> Result<(), Failed> {
    let mut a = start_agent()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(exercise(&mut a))?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = a.child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the agent did not exit after DestroySandbox".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("the agent exited with {status}").into());
    }
    if a.dir.path().join("agent.sock").exists() {
        return Err("the agent left its socket behind".into());
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::program("unshare")
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![require::trial(
        "agent_host_serves_health_sandbox_and_cleans_up",
        prerequisites,
        agent_serves_and_cleans_up,
    )];
    libtest_mimic::run(&args, trials).exit();
}
