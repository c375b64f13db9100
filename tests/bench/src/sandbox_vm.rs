//! A sandbox VM as the benchmarks run it: hako-vmm with an agent image, hybrid vsock and the
//! shared directory (as the runtime's sandboxes), booted cold or resumed from a snapshot, and
//! killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::health::CheckRequest;
use hako_tests::{agent, hako_vmm};
use hako_vmm_api::{ConsoleConfig, ControlReply, ControlRequest, Metrics};

/// How long a cold boot or a first answer may take here (guest kernel work is emulated).
const BOOT_DEADLINE: Duration = Duration::from_secs(600);

/// A running hako-vmm; killed and reaped on drop.
pub struct SandboxVm {
    pub child: Child,
    /// The VM's directory: `vsock.sock`, `shared/`, the control socket, `console.log`.
    pub dir: PathBuf,
}

impl Drop for SandboxVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`SandboxVm`] is started from.
pub struct VmImage<'a> {
    pub vmm: &'a Path,
    pub kernel: &'a Path,
    pub image: &'a Path,
}

impl SandboxVm {
    /// Starts hako-vmm in `dir` (created): cold, or resumed from `snapshot`. `console_log`
    /// keeps the guest console in `dir/console.log` (else it is dropped).
    pub fn spawn(
        from: &VmImage<'_>,
        dir: &Path,
        cid: u32,
        snapshot: Option<&Path>,
        console_log: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut config = hako_vmm::agent_vm(dir, from.kernel, from.image, cid)?;
        config.console = if console_log {
            ConsoleConfig::File(dir.join("console.log"))
        } else {
            ConsoleConfig::Off
        };
        let mut cmd = match snapshot {
            Some(s) => hako_vmm::restore_command(from.vmm, dir, &config, s)?,
            None => hako_vmm::command(from.vmm, dir, &config)?,
        };
        let child = cmd
            .env("HAKO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting hako-vmm")?;
        Ok(Self {
            child,
            dir: dir.to_owned(),
        })
    }

    /// The hybrid vsock socket the host connects to.
    pub fn vsock(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }

    /// Seconds from `since` until the agent answers a health check.
    pub fn until_ready(&self, since: Instant) -> Result<f64> {
        let uds = self.vsock();
        let pid = self.child.id();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let c = agent::connect_hybrid_to(&uds, AGENT_API_PORT, BOOT_DEADLINE, pid)
                    .await
                    .map_err(anyhow::Error::msg)?;
                c.health
                    .check(agent::ctx(Duration::from_secs(120)), &CheckRequest::new())
                    .await
                    .context("health check")?;
                anyhow::Ok(())
            })?;
        Ok(since.elapsed().as_secs_f64())
    }

    /// Writes a snapshot of the running VM into `dir` (a template to resume from).
    pub fn snapshot(&self, dir: &Path) -> Result<()> {
        let control = hako_vmm::control_socket(&self.dir);
        match hako_vmm::control(
            &control,
            &ControlRequest::Snapshot {
                dir: dir.to_owned(),
            },
        )
        .map_err(anyhow::Error::msg)?
        {
            ControlReply::Done => Ok(()),
            other => bail!("snapshot: {other:?}"),
        }
    }
}

/// hako-vmm's counters (vCPU exits by kind, each device's counters) through its control socket.
pub fn metrics(control: &Path) -> Result<Metrics> {
    match hako_vmm::control(control, &ControlRequest::Metrics).map_err(anyhow::Error::msg)? {
        ControlReply::Metrics(m) => Ok(m),
        other => bail!("metrics: {other:?}"),
    }
}
