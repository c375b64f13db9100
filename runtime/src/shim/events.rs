//! Events to containerd (TaskCreate/Start/Exit/OOM/ExecAdded/ExecStarted/Delete/Paused/
//! Resumed), published in the shim's containerd namespace through containerd-shim's queue.

use std::time::SystemTime;

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;

use crate::sandbox::watchers::EventSink;

pub struct Publisher {
    /// containerd's event service; None where no containerd listens (the `hako` CLI's
    /// monitor serves the same Task API to the CLI).
    remote: Option<RemotePublisher>,
    namespace: String,
    /// The pid containerd knows the tasks by (the sandbox's hako-vmm).
    pub task_pid: std::sync::atomic::AtomicU32,
}

impl Publisher {
    pub fn new(remote: Option<RemotePublisher>, namespace: &str) -> Self {
        Self {
            remote,
            namespace: namespace.into(),
            task_pid: std::sync::atomic::AtomicU32::new(0),
        }
    }

    pub async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let Some(remote) = self.remote.as_ref() else {
            tracing::debug!("event {topic}");
            return;
        };
        if let Err(e) = remote
            .publish(Default::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!("publishing {topic}: {e}");
        }
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

impl EventSink for std::sync::Arc<Publisher> {
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
        let me = self.clone();
        tokio::spawn(async move {
            me.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev))
                .await
        });
    }

    fn oom(&self, container_id: &str) {
        let mut ev = TaskOOM::new();
        ev.container_id = container_id.into();
        let me = self.clone();
        tokio::spawn(async move { me.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(ev)).await });
    }
}
