//! `hako run`: creates a sandbox VM for one container from an OCI bundle, runs the container
//! in it attached to this terminal's stdio (no TTY yet), and exits with the container's
//! status. Everything it made (VM, mounts, state directory) is gone when it returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::agent::{
    ContainerRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest,
    ProcessRequest, WriteStreamRequest,
};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_vmm_api::CpuProfile;
use tokio::io::AsyncReadExt;

use crate::agent_client::{self, ctx};
use crate::backend::find_vmm;
use crate::backend::vm::{Vm, VmPaths, VmSpec};
use crate::sandbox::{StateDir, rootfs};

/// Deadline for the agent to answer after the VM starts: generous, since guests take about a
/// minute to boot where kernel mode is emulated (DESIGN.md); milliseconds on real KVM.
const AGENT_DEADLINE: Duration = Duration::from_secs(600);
const RPC: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The container id (also the sandbox's name under --root).
    pub id: String,
    /// The OCI bundle (config.json and its root file system).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// State directory root.
    #[arg(long, default_value = "/run/hako")]
    pub root: PathBuf,
    /// Guest kernel (default: $HAKO_KERNEL).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest image with the agent (default: $HAKO_AGENT_IMAGE).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// hako-vmm binary (default: $HAKO_VMM, next to hako, or on PATH).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u32,
    /// CPU features the guest sees: `conservative` works on every host (it hides what hosts
    /// that emulate guest kernel mode cannot run); `host` passes through what KVM supports.
    #[arg(long, default_value = "conservative", value_parser = parse_profile)]
    pub cpu_profile: CpuProfile,
}

fn parse_profile(s: &str) -> Result<CpuProfile, String> {
    match s {
        "host" => Ok(CpuProfile::Host),
        "conservative" => Ok(CpuProfile::Conservative),
        other => Err(format!("{other:?} is not host or conservative")),
    }
}

fn from_env(flag: Option<&PathBuf>, var: &str, what: &str) -> anyhow::Result<PathBuf> {
    match flag {
        Some(p) => Ok(p.clone()),
        None => std::env::var_os(var).map(PathBuf::from).with_context(|| {
            format!("no {what}: pass it or set ${var} (scripts/setup.sh writes target/hako-env)")
        }),
    }
}

/// The bundle's config.json with root.path set to "rootfs" (where the agent finds the bound
/// root file system), and the host path of that root file system.
fn load_spec(bundle: &Path) -> anyhow::Result<(Vec<u8>, PathBuf)> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let root = spec
        .pointer("/root/path")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{} has no root.path", path.display()))?;
    let rootfs = if Path::new(root).is_absolute() {
        PathBuf::from(root)
    } else {
        bundle.join(root)
    };
    if !rootfs.is_dir() {
        bail!("root.path {} is not a directory", rootfs.display());
    }
    if spec.pointer("/process/terminal").and_then(|v| v.as_bool()) == Some(true) {
        bail!("process.terminal: a TTY is not supported by `hako run` yet");
    }
    if let Some(r) = spec.pointer_mut("/root/path") {
        *r = serde_json::Value::String("rootfs".into());
    }
    Ok((serde_json::to_vec(&spec)?, rootfs))
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let (spec_json, rootfs) = load_spec(&args.bundle)?;
    let spec = VmSpec {
        vmm: find_vmm(args.vmm.as_deref())?,
        kernel: from_env(args.kernel.as_ref(), "HAKO_KERNEL", "guest kernel")?,
        image: from_env(args.image.as_ref(), "HAKO_AGENT_IMAGE", "agent image")?,
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        cpu_profile: args.cpu_profile,
        cmdline: "quiet".into(),
    };
    let mut state = StateDir::create(&args.root, &args.id)?;
    let paths = VmPaths::under(&state.dir);
    std::fs::create_dir(&paths.shared)
        .with_context(|| format!("creating {}", paths.shared.display()))?;
    let target = rootfs::bind(&rootfs, &paths.shared, &args.id)?;
    state.mounted(target);
    let mut vm = Vm::start(&spec, paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(drive(&mut vm, &args.id, spec_json));
    match &result {
        Ok(_) => {
            if let Err(e) = vm.wait(Duration::from_secs(60)) {
                eprintln!("hako: {e:#}");
            }
        }
        Err(_) => eprintln!(
            "hako: guest console ({}), last lines:\n{}",
            vm.paths.console.display(),
            vm.console_tail(20)
        ),
    }
    drop(vm);
    drop(state);
    result
}

/// Sandbox, container, output, status, teardown through the agent.
async fn drive(vm: &mut Vm, id: &str, spec_json: Vec<u8>) -> anyhow::Result<u8> {
    let uds = vm.paths.vsock.clone();
    let client = agent_client::connect_hybrid(&uds, AGENT_API_PORT, AGENT_DEADLINE, || {
        matches!(vm.exited(), Ok(None))
    })
    .await
    .map_err(anyhow::Error::msg)?;
    let agent = client.agent;
    let mut sandbox = CreateSandboxRequest::new();
    sandbox.sandbox_id = id.into();
    sandbox.storages.push(hako_agent_api::shared_fs_storage());
    agent
        .create_sandbox(ctx(RPC), &sandbox)
        .await
        .context("CreateSandbox")?;
    let mut create = CreateContainerRequest::new();
    create.container_id = id.into();
    create.oci_spec_json = spec_json;
    agent
        .create_container(ctx(RPC), &create)
        .await
        .context("CreateContainer")?;
    let mut start = ContainerRequest::new();
    start.container_id = id.into();
    agent
        .start_container(ctx(RPC), &start)
        .await
        .context("StartContainer")?;

    let stdin = tokio::spawn(forward_stdin(agent.clone(), id.to_owned()));
    let (out, err) = tokio::join!(
        agent_client::copy_stream(&agent, id, "", false, std::io::stdout()),
        agent_client::copy_stream(&agent, id, "", true, std::io::stderr()),
    );
    out?;
    err?;
    let mut wait = ProcessRequest::new();
    wait.container_id = id.into();
    let status = agent
        .wait_process(agent_client::no_deadline(), &wait)
        .await
        .context("WaitProcess")?
        .status;
    stdin.abort();
    let mut destroy = DestroySandboxRequest::new();
    destroy.power_off = true;
    agent
        .destroy_sandbox(ctx(RPC), &destroy)
        .await
        .context("DestroySandbox")?;
    Ok(u8::try_from(status).unwrap_or(255))
}

/// Sends this process's stdin to the container's, then closes it.
async fn forward_stdin(agent: AgentServiceClient, id: String) {
    let mut input = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut w = WriteStreamRequest::new();
                w.container_id = id.clone();
                w.data = buf[..n].to_vec();
                if agent.write_stdin(ctx(RPC), &w).await.is_err() {
                    return;
                }
            }
        }
    }
    let mut close = ProcessRequest::new();
    close.container_id = id;
    let _ = agent.close_stdin(ctx(RPC), &close).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_root_is_pointed_at_the_bound_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("myroot")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"myroot"},"process":{"args":["true"]}}"#,
        )
        .unwrap();
        let (json, rootfs) = load_spec(dir.path()).unwrap();
        assert_eq!(rootfs, dir.path().join("myroot"));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v.pointer("/root/path").unwrap(), "rootfs");
    }

    #[test]
    fn bad_bundles_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_spec(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"root":{"path":"nope"}}"#,
        )
        .unwrap();
        assert!(
            load_spec(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        std::fs::create_dir(dir.path().join("r")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"root":{"path":"r"},"process":{"terminal":true}}"#,
        )
        .unwrap();
        assert!(
            load_spec(dir.path())
                .unwrap_err()
                .to_string()
                .contains("TTY")
        );
    }
}
