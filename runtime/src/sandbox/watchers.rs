//! Long-running loops of a sandbox: each process's exit (WaitProcess, then its output drained,
//! then the exit reported), OOM events (GetOOMEvent), and the VMM itself (when it dies, every
//! process still running is reported exited).
//!
//! What the agent says is hostile input: an OOM event goes on only for a container the
//! runtime created in the sandbox, at most one per container per [`OOM_INTERVAL`]; an exit
//! is reported only for a process the runtime started (its own record, never an id the
//! guest names); every log line the guest can trigger is bounded and rate-limited
//! ([`RateLimit`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hako_agent_api::agent::{GetOOMEventRequest, ProcessRequest};

use super::Sandbox;
use super::container::Process;
use crate::agent_client::no_deadline;
use crate::host::vmm_dir::printable;

/// Exit status reported for processes whose sandbox died under them (as for SIGKILL).
pub const SANDBOX_DIED: u32 = 128 + 9;
/// How long output may stay open after its process exited (a daemon it left behind).
const DRAIN: Duration = Duration::from_secs(5);
/// At most one OOM event per container per this long goes on to containerd.
pub const OOM_INTERVAL: Duration = Duration::from_secs(1);
/// How often a log line the guest can trigger may repeat (the rest are counted).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How much of a guest's text (an agent error) a log line quotes.
const GUEST_TEXT: usize = 300;

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
                    "lost the agent while waiting for the process: {}",
                    printable(&e.to_string(), GUEST_TEXT)
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

/// Relays the agent's OOM events until the connection ends, through an [`OomGate`].
pub fn watch_oom(sandbox: Arc<Sandbox>) {
    use tracing::Instrument;
    let span = tracing::info_span!("watch_oom", sandbox_id = %sandbox.id);
    let watch = async move {
        let mut gate = OomGate::new();
        loop {
            match sandbox
                .agent
                .get_oom_event(no_deadline(), &GetOOMEventRequest::new())
                .await
            {
                Ok(ev) => {
                    let known = sandbox.container(&ev.container_id).is_some();
                    if gate.admit(&ev.container_id, known, Instant::now()) {
                        sandbox.events.oom(&ev.container_id);
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        dropped_unknown = gate.dropped_unknown,
                        dropped_too_often = gate.dropped_too_often,
                        "OOM events ended: {}",
                        printable(&e.to_string(), GUEST_TEXT)
                    );
                    return;
                }
            }
        }
    };
    tokio::spawn(watch.instrument(span));
}

/// Which of a guest's OOM events go on to containerd: only those naming a container the
/// runtime created in the sandbox (a guest could name any other: containerd would report
/// another pod's container OOM-killed), at most one per container per [`OOM_INTERVAL`]. The
/// rest are dropped and counted, with a rate-limited warning.
pub struct OomGate {
    /// When each container's last event went on (entries older than the interval are
    /// pruned, and only known containers get one, so it stays as small as the sandbox).
    last: HashMap<String, Instant>,
    pub dropped_unknown: u64,
    pub dropped_too_often: u64,
    warn: RateLimit,
}

impl Default for OomGate {
    fn default() -> Self {
        Self::new()
    }
}

impl OomGate {
    pub fn new() -> Self {
        Self {
            last: HashMap::new(),
            dropped_unknown: 0,
            dropped_too_often: 0,
            warn: RateLimit::new(LOG_INTERVAL),
        }
    }

    /// Whether an event for `container_id` (`known`: the runtime created it in this
    /// sandbox) that came at `now` goes on.
    pub fn admit(&mut self, container_id: &str, known: bool, now: Instant) -> bool {
        if !known {
            self.dropped_unknown += 1;
            if let Some(held_back) = self.warn.allow_at(now) {
                tracing::warn!(
                    container_id = %printable(container_id, 80),
                    dropped = self.dropped_unknown,
                    held_back,
                    "the guest reported an OOM kill of a container this sandbox does not have; dropped"
                );
            }
            return false;
        }
        match self.last.get(container_id) {
            Some(at) if now.saturating_duration_since(*at) < OOM_INTERVAL => {
                self.dropped_too_often += 1;
                false
            }
            _ => {
                if self.last.len() >= 64 {
                    self.last
                        .retain(|_, at| now.saturating_duration_since(*at) < OOM_INTERVAL);
                }
                self.last.insert(container_id.to_owned(), now);
                true
            }
        }
    }
}

/// Lets a log line (or anything else) through at most once per interval and counts what it
/// held back, for lines a guest can trigger as often as it likes.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    /// When a line last went through, and how many were held back since.
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` if a line may go now, else `None` (counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.every => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

/// Watches the VMM: when it ends while processes still run, they are reported exited. A
/// thread of its own waits for the exit (`waitid` with `WNOWAIT`, which leaves the status
/// for the backend to collect), so nothing wakes while the VMM runs: an idle sandbox must
/// cost nothing. Reading the status every [`VMM_POLL`] is only the fallback where that
/// wait cannot tell (the thread did not start, or the status was collected elsewhere).
pub fn watch_vmm(sandbox: Arc<Sandbox>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pid = sandbox.vmm_pid;
    let waiter = std::thread::Builder::new()
        .name("vmm-exit".into())
        .spawn(move || {
            wait_exit(pid);
            let _ = tx.send(());
        });
    if let Err(e) = &waiter {
        tracing::warn!(sandbox_id = %sandbox.id, "no thread to wait for hako-vmm ({e}); polling it");
    }
    tokio::spawn(async move {
        if waiter.is_ok() {
            let _ = rx.await;
        }
        loop {
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
            tokio::time::sleep(VMM_POLL).await;
        }
    });
}

/// How often the VMM's status is read where its exit cannot be waited for.
const VMM_POLL: Duration = Duration::from_millis(500);

/// Blocks until child `pid` has ended (or is not this process's child), without
/// collecting its status.
fn wait_exit(pid: u32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_the_vmm_to_end_leaves_its_status_to_the_backend() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.2; exit 3"])
            .spawn()
            .unwrap();
        wait_exit(child.id());
        let status = child.try_wait().unwrap().expect("ended, status kept");
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn oom_events_for_containers_the_runtime_did_not_create_are_dropped() {
        let mut gate = OomGate::new();
        let now = Instant::now();
        for i in 0..1000 {
            let id = format!("another-pods-container-{i}");
            assert!(!gate.admit(&id, false, now + Duration::from_secs(i)));
        }
        assert_eq!(gate.dropped_unknown, 1000);
        assert!(gate.last.is_empty(), "unknown ids must not grow the gate");
        assert!(gate.admit("mine", true, now));
    }

    #[test]
    fn an_oom_flood_passes_one_event_per_container_per_interval() {
        let mut gate = OomGate::new();
        let start = Instant::now();
        let mut passed = HashMap::<&str, u32>::new();
        // 100k events over 2.5 s for two known containers.
        for i in 0..100_000u32 {
            let id = if i % 2 == 0 { "a" } else { "b" };
            let now = start + Duration::from_micros(u64::from(i) * 25);
            if gate.admit(id, true, now) {
                *passed.entry(id).or_default() += 1;
            }
        }
        assert_eq!(passed.get("a"), Some(&3), "{passed:?}");
        assert_eq!(passed.get("b"), Some(&3), "{passed:?}");
        assert_eq!(gate.dropped_too_often, 100_000 - 6);
    }

    #[test]
    fn a_rate_limit_counts_what_it_held_back() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(limit.allow_at(t), Some(0));
        for s in 1..10 {
            assert_eq!(limit.allow_at(t + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.allow_at(t + Duration::from_secs(10)), Some(9));
    }
}
