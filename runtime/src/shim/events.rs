//! Events to containerd (TaskCreate/Start/Exit/OOM/ExecAdded/ExecStarted/Delete/Paused/
//! Resumed), published in the shim's containerd namespace through containerd-shim's queue.
//!
//! Exit and OOM events, which the sandbox's watchers raise, go through one bounded queue
//! ([`QUEUE`] events) and one publishing task, never a task per event: an OOM event that
//! finds the queue full is dropped and counted (a guest can raise as many as it likes;
//! the watchers admit at most one per container per second), an exit never is (there is
//! one per process the runtime started).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

use crate::sandbox::watchers::{EventSink, LOG_INTERVAL, RateLimit};

/// How many exit and OOM events may wait to be published.
pub const QUEUE: usize = 256;

/// An event waiting in the queue.
struct Queued {
    topic: &'static str,
    event: Box<dyn MessageDyn>,
}

pub struct Publisher {
    /// containerd's event service; None where no containerd listens (the `hako` CLI's
    /// monitor serves the same Task API to the CLI).
    remote: Option<RemotePublisher>,
    namespace: String,
    /// The pid containerd knows the tasks by (the sandbox's hako-vmm).
    pub task_pid: std::sync::atomic::AtomicU32,
    queue: mpsc::Sender<Queued>,
    /// The queue's other end, until the first queued event starts the publishing task
    /// (in the runtime that raised it).
    unstarted: Mutex<Option<mpsc::Receiver<Queued>>>,
    dropped: AtomicU64,
    published: AtomicU64,
    /// For the warnings a flood of events could repeat (queue full, containerd failing).
    warn: RateLimit,
}

impl Publisher {
    pub fn new(remote: Option<RemotePublisher>, namespace: &str) -> Self {
        let (queue, unstarted) = mpsc::channel(QUEUE);
        Self {
            remote,
            namespace: namespace.into(),
            task_pid: std::sync::atomic::AtomicU32::new(0),
            queue,
            unstarted: Mutex::new(Some(unstarted)),
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
            warn: RateLimit::new(LOG_INTERVAL),
        }
    }

    pub async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.try_publish(topic, event).await {
            tracing::warn!("publishing {topic}: {e}");
        }
    }

    async fn try_publish(
        &self,
        topic: &str,
        event: Box<dyn MessageDyn>,
    ) -> containerd_shim::Result<()> {
        let Some(remote) = self.remote.as_ref() else {
            tracing::debug!("event {topic}");
            return Ok(());
        };
        remote
            .publish(Default::default(), topic, &self.namespace, event)
            .await
    }

    /// How many OOM events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many queued events were published (or, without containerd, logged).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Queues an event for the publishing task. A `lossless` one (an exit) that finds the
    /// queue full waits for room in a task of its own; any other is dropped and counted.
    fn enqueue(self: &Arc<Self>, topic: &'static str, event: Box<dyn MessageDyn>, lossless: bool) {
        self.start_publishing();
        match self.queue.try_send(Queued { topic, event }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) if lossless => {
                let queue = self.queue.clone();
                tokio::spawn(async move { queue.send(queued).await });
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(held_back) = self.warn.allow() {
                    tracing::warn!(
                        dropped,
                        held_back,
                        "containerd's event queue is full ({QUEUE} events); dropped {topic}"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("the event queue is closed; dropped {topic}");
            }
        }
    }

    /// Starts the one task that publishes queued events, if not yet started. It holds the
    /// publisher weakly: it ends with the publisher (whose queue then closes).
    fn start_publishing(self: &Arc<Self>) {
        let Some(mut queued) = self.unstarted.lock().ok().and_then(|mut q| q.take()) else {
            return;
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(Queued { topic, event }) = queued.recv().await {
                let Some(me) = Weak::upgrade(&me) else {
                    return;
                };
                let result = me.try_publish(topic, event).await;
                me.published.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result
                    && let Some(held_back) = me.warn.allow()
                {
                    tracing::warn!(held_back, "publishing {topic}: {e}");
                }
            }
        });
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn pid(&self) -> u32 {
        self.task_pid.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A protobuf timestamp.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    t.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    t
}

impl EventSink for Arc<Publisher> {
    fn exited(&self, container_id: &str, exec_id: &str, code: u32, at: SystemTime) {
        let mut ev = TaskExit::new();
        ev.container_id = container_id.into();
        ev.id = if exec_id.is_empty() {
            container_id.into()
        } else {
            exec_id.into()
        };
        ev.pid = self.pid();
        ev.exit_status = code;
        ev.exited_at = Some(timestamp(at)).into();
        self.enqueue(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev), true);
    }

    fn oom(&self, container_id: &str) {
        let mut ev = TaskOOM::new();
        ev.container_id = container_id.into();
        self.enqueue(topics::TASK_OOM_EVENT_TOPIC, Box::new(ev), false);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sandbox::watchers::OomGate;

    /// Lets the publishing task run until it has published `n` events (or a while passed).
    async fn drained(p: &Publisher, n: u64) {
        let start = Instant::now();
        while p.published() < n && start.elapsed() < Duration::from_secs(10) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_oom_flood_leaves_the_queue_bounded() {
        let tasks = tokio::runtime::Handle::current().metrics();
        let p = Arc::new(Publisher::new(None, "k8s.io"));
        // The publishing task does not run until this test yields: containerd is slow.
        for i in 0..100_000 {
            p.oom(&format!("c{}", i % 7));
        }
        assert!(
            tasks.num_alive_tasks() <= 1,
            "{} tasks for 100k events",
            tasks.num_alive_tasks()
        );
        assert_eq!(p.dropped(), 100_000 - QUEUE as u64);
        drained(&p, QUEUE as u64).await;
        assert_eq!(p.published(), QUEUE as u64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_oom_flood_through_the_gate_publishes_at_most_the_rate() {
        let p = Arc::new(Publisher::new(None, "k8s.io"));
        let mut gate = OomGate::new();
        let start = Instant::now();
        for i in 0..100_000 {
            let id = if i % 2 == 0 { "mine" } else { "another-pods" };
            if gate.admit(id, id == "mine", Instant::now()) {
                p.oom(id);
            }
        }
        let seconds = start.elapsed().as_secs() + 1;
        drained(&p, 1).await;
        tokio::task::yield_now().await;
        assert!(
            (1..=seconds).contains(&p.published()),
            "{} published in {seconds} s",
            p.published()
        );
        assert_eq!(p.dropped(), 0);
        assert_eq!(gate.dropped_unknown, 50_000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn exits_are_never_dropped() {
        let p = Arc::new(Publisher::new(None, "k8s.io"));
        for i in 0..QUEUE * 2 {
            p.oom(&format!("c{i}"));
        }
        for i in 0..100 {
            p.exited(&format!("c{i}"), "", 0, SystemTime::now());
        }
        let expected = (QUEUE + 100) as u64;
        drained(&p, expected).await;
        assert_eq!(p.published(), expected);
        assert_eq!(p.dropped(), QUEUE as u64);
    }
}
