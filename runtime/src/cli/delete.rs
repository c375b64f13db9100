//! `hako delete [--force]`: removes a stopped (or, forced, any) container: the monitor stops
//! its sandbox and exits; whatever a dead monitor left is cleaned up; poststop hooks run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use containerd_shim::protos::api::{DeleteRequest, KillRequest, ShutdownRequest, WaitRequest};

use super::Global;
use super::client::{Container, OciStatus, long_ctx, rpc_ctx};

pub fn delete(g: &Global, id: &str, force: bool) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    let lock = c.lock()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(c.status());
    if matches!(
        status,
        OciStatus::Running | OciStatus::Paused | OciStatus::Creating
    ) && !force
    {
        bail!(
            "cannot delete container {id}: it is {} (stop it first, or --force)",
            status.as_str()
        );
    }
    if c.record.monitor_alive() {
        rt.block_on(stop_through_monitor(&c, status))
            .with_context(|| format!("deleting container {id}"))?;
        let start = Instant::now();
        while c.record.monitor_alive() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if c.record.monitor_alive() {
            let pid = nix::unistd::Pid::from_raw(c.record.monitor_pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let state = c.state_json(OciStatus::Stopped);
    super::client::remove_container_dir(&g.root, id);
    drop(lock);
    if let Err(e) = crate::hooks::run(&c.hooks(), "poststop", &state) {
        eprintln!("hako: {e:#}");
    }
    Ok(0)
}

async fn stop_through_monitor(c: &Container, status: OciStatus) -> anyhow::Result<()> {
    let client = c.client().await?;
    let id = c.record.id.clone();
    if matches!(status, OciStatus::Running | OciStatus::Paused) {
        let mut kill = KillRequest::new();
        kill.id = id.clone();
        kill.signal = 9;
        kill.all = true;
        let _ = client.kill(rpc_ctx(Duration::from_secs(60)), &kill).await;
        let mut wait = WaitRequest::new();
        wait.id = id.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(120), client.wait(long_ctx(), &wait)).await;
    }
    let mut del = DeleteRequest::new();
    del.id = id.clone();
    let _ = client.delete(long_ctx(), &del).await;
    let mut shutdown = ShutdownRequest::new();
    shutdown.id = id;
    shutdown.now = true;
    let _ = client
        .shutdown(rpc_ctx(Duration::from_secs(60)), &shutdown)
        .await;
    Ok(())
}
