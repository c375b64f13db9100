//! Long-running loops of a sandbox: each process's exit (WaitProcess, then its output drained,
//! then the exit reported), OOM events (GetOOMEvent), and the VMM itself (when it dies, every
//! process still running is reported exited).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hako_agent_api::agent::{GetOOMEventRequest, ProcessRequest};

use super::Sandbox;
use super::container::Process;
use crate::agent_client::no_deadline;

/// Exit status reported for processes whose sandbox died under them (as for SIGKILL).
pub const SANDBOX_DIED: u32 = 128 + 9;
/// How long output may stay open after its process exited (a daemon it left behind).
const DRAIN: Duration = Duration::from_secs(5);

/// Where a sandbox reports what happens to its processes.
pub trait EventSink: Send + Sync + 'static {
    fn exited(&self, container_id: &str, exec_id: &str, code: u32, at: SystemTime);
    fn oom(&self, container_id: &str);
}

/// Waits for `process` to exit, lets its output finish, records and reports the exit.
pub fn watch_exit(sandbox: Arc<Sandbox>, process: Arc<Process>) {
    tokio::spawn(async move {
        let mut req = ProcessRequest::new();
        req.container_id = process.container_id.clone();
        req.exec_id = process.exec_id.clone();
        let code = match sandbox.agent.wait_process(no_deadline(), &req).await {
            Ok(r) => u32::try_from(r.status).unwrap_or(255),
            Err(e) => {
                tracing::warn!(
                    container_id = %process.container_id, exec_id = %process.exec_id,
                    "lost the agent while waiting for the process: {e}"
                );
                SANDBOX_DIED
            }
        };
        if let Some(copies) = process.copies.lock().await.as_mut() {
            copies.drain(DRAIN).await;
        }
        report_exit(&sandbox, &process, code);
    });
}

fn report_exit(sandbox: &Sandbox, process: &Process, code: u32) {
    if process.exited(code)
        && let super::container::Status::Stopped { at, .. } = process.status()
    {
        sandbox
            .events
            .exited(&process.container_id, &process.exec_id, code, at);
    }
}

/// Relays the agent's OOM events until the connection ends.
pub fn watch_oom(sandbox: Arc<Sandbox>) {
    tokio::spawn(async move {
        loop {
            match sandbox
                .agent
                .get_oom_event(no_deadline(), &GetOOMEventRequest::new())
                .await
            {
                Ok(ev) => sandbox.events.oom(&ev.container_id),
                Err(e) => {
                    tracing::debug!(sandbox_id = %sandbox.id, "OOM events ended: {e}");
                    return;
                }
            }
        }
    });
}

/// Watches the VMM: when it ends while processes still run, they are reported exited.
pub fn watch_vmm(sandbox: Arc<Sandbox>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if sandbox.stopping() {
                return;
            }
            if let Some(status) = sandbox.vmm_exited() {
                // Its log says why when it stopped itself (a seccomp violation names the call).
                let words = sandbox
                    .vm
                    .lock()
                    .map(|vm| vm.last_words(5))
                    .unwrap_or_default();
                tracing::warn!(sandbox_id = %sandbox.id, "hako-vmm ended ({status}); {words}");
                for c in sandbox.containers() {
                    for p in c.processes() {
                        if let Some(copies) = p.copies.lock().await.as_mut() {
                            copies.close();
                        }
                        report_exit(&sandbox, &p, SANDBOX_DIED);
                    }
                }
                return;
            }
        }
    });
}
