//! What every OCI command needs: the container's directory and record, its lock, its
//! status, and a Task API client of its monitor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use containerd_shim::protos::api::{StateRequest, Status as TaskStatus};
use containerd_shim::protos::shim_async::TaskClient;
use containerd_shim::protos::ttrpc;
use nix::fcntl::Flock;

use super::monitor::SOCKET;
use crate::state::ContainerRecord;
pub use crate::state::{lock_file, rfc3339};

/// A container's OCI lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl OciStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

/// One container under `--root`.
pub struct Container {
    pub dir: PathBuf,
    pub record: ContainerRecord,
}

impl Container {
    /// Finds `id`; the error says it does not exist (runc's wording).
    pub fn open(root: &Path, id: &str) -> anyhow::Result<Self> {
        crate::sandbox::check_id(id)?;
        let dir = root.join(id);
        if !dir.join(crate::state::RECORD_FILE).exists() {
            bail!("container {id} does not exist");
        }
        let record = ContainerRecord::load(&dir)?;
        Ok(Self { dir, record })
    }

    /// An exclusive lock on the container for the duration of one command.
    pub fn lock(&self) -> anyhow::Result<Flock<std::fs::File>> {
        lock_file(&self.dir.join(".lock"))
    }

    pub async fn client(&self) -> anyhow::Result<TaskClient> {
        // The path may pass a socket address's length (a long --root, 64-character ids).
        let socket = self.dir.join(SOCKET);
        let stream = hako_socket_path::connect(&socket)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(tokio::net::UnixStream::from_std)
            .with_context(|| format!("connecting to the monitor of {}", self.record.id))?;
        let c =
            ttrpc::asynchronous::Client::new(ttrpc::asynchronous::transport::Socket::from(stream));
        Ok(TaskClient::new(c))
    }

    /// The container's status: stopped once its init exited or its monitor or stand-in is
    /// gone, else what the monitor says.
    pub async fn status(&self) -> OciStatus {
        if self.record.exit_status.is_some() || !self.record.alive() {
            return OciStatus::Stopped;
        }
        if !self.record.created_in_guest {
            return OciStatus::Creating;
        }
        let Ok(client) = self.client().await else {
            return OciStatus::Stopped;
        };
        let mut req = StateRequest::new();
        req.id = self.record.id.clone();
        match client.state(rpc_ctx(Duration::from_secs(10)), &req).await {
            Ok(s) => match s.status.enum_value_or_default() {
                TaskStatus::CREATED => OciStatus::Created,
                TaskStatus::RUNNING => OciStatus::Running,
                TaskStatus::PAUSED | TaskStatus::PAUSING => OciStatus::Paused,
                _ => OciStatus::Stopped,
            },
            Err(_) => OciStatus::Stopped,
        }
    }

    /// The container's hooks: from its record, or (a record written before records kept
    /// them) from its bundle.
    pub fn hooks(&self) -> serde_json::Value {
        if !self.record.hooks.is_null() {
            return self.record.hooks.clone();
        }
        super::create::read_bundle(&self.record.bundle)
            .map(|spec| crate::hooks::of(&spec))
            .unwrap_or_default()
    }

    /// The OCI state document (`hako state`, and hooks' stdin).
    pub fn state_json(&self, status: OciStatus) -> serde_json::Value {
        let pid = if status == OciStatus::Stopped {
            0
        } else {
            self.record.state_pid()
        };
        // The hooks' state (the shim gives its hooks the same), and what runc's `state` adds.
        let annotations = serde_json::to_value(&self.record.annotations).unwrap_or_default();
        let mut state = crate::hooks::state(
            &self.record.id,
            status.as_str(),
            pid,
            &self.record.bundle,
            &annotations,
        );
        if let Some(obj) = state.as_object_mut() {
            obj.insert(
                "rootfs".into(),
                self.record
                    .bundle
                    .join("rootfs")
                    .display()
                    .to_string()
                    .into(),
            );
            obj.insert("created".into(), self.record.created.clone().into());
            obj.insert("owner".into(), self.record.owner.clone().into());
        }
        state
    }
}

/// Removes what a container left under `<root>/<id>/`: its sandbox (`<id>/vm/`: VMM,
/// mounts) first, then the directory.
pub fn remove_container_dir(root: &Path, id: &str) {
    let dir = root.join(id);
    crate::sandbox::clean_up_leftover(&dir, super::monitor::SANDBOX_DIR);
    crate::sandbox::remove_sandbox_dir(&dir);
}

pub fn rpc_ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos() as i64)
}

/// A ttrpc context without a deadline (Wait, Start of a slow guest).
pub fn long_ctx() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}
