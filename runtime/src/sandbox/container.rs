//! Containers and their processes (the init process and execs) as the host sees them: each
//! process's lifecycle state, its stdio and the copies serving it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::io::{Copies, Stdio};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped { code: u32, at: SystemTime },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("process {0:?} is {1}, not {2}")]
    Wrong(String, &'static str, &'static str),
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped { .. } => "stopped",
        }
    }
}

/// One process: a container's init (exec id "") or an exec.
pub struct Process {
    pub container_id: String,
    pub exec_id: String,
    pub stdio: Stdio,
    /// The OCI process (JSON) of an exec; empty for init.
    pub spec_json: Vec<u8>,
    status: watch::Sender<Status>,
    pub copies: tokio::sync::Mutex<Option<Copies>>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, stdio: Stdio, spec_json: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            stdio,
            spec_json,
            status: watch::Sender::new(Status::Created),
            copies: tokio::sync::Mutex::new(None),
        })
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Moves `from` → `to`; any other current state is an error naming both.
    pub fn transition(&self, from: Status, to: Status) -> Result<(), StateError> {
        let mut err = None;
        self.status.send_if_modified(|s| {
            if std::mem::discriminant(s) == std::mem::discriminant(&from) {
                *s = to;
                true
            } else {
                err = Some(StateError::Wrong(self.label(), s.name(), from.name()));
                false
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Records the exit once; returns false if it had already been recorded.
    pub fn exited(&self, code: u32) -> bool {
        self.status.send_if_modified(|s| {
            if matches!(s, Status::Stopped { .. }) {
                false
            } else {
                *s = Status::Stopped {
                    code,
                    at: SystemTime::now(),
                };
                true
            }
        })
    }

    /// Waits until the process has stopped; returns its status and time.
    pub async fn wait(&self) -> (u32, SystemTime) {
        let mut rx = self.status.subscribe();
        loop {
            if let Status::Stopped { code, at } = *rx.borrow_and_update() {
                return (code, at);
            }
            if rx.changed().await.is_err() {
                return (255, SystemTime::now());
            }
        }
    }

    fn label(&self) -> String {
        if self.exec_id.is_empty() {
            self.container_id.clone()
        } else {
            format!("{}/{}", self.container_id, self.exec_id)
        }
    }
}

/// A container in a sandbox.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// containerd's rootfs mounts were mounted on `<bundle>/rootfs` by us.
    pub rootfs_mounted: bool,
    /// Binds under the sandbox's shared directory (undone at delete).
    /// Its part of the sandbox's share (root file system and volumes), undone at removal.
    pub share: Mutex<Option<crate::host::share::ContainerShare>>,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    /// The config's `hooks` and `annotations`, taken at create (hooks run on the host:
    /// `crate::hooks`).
    pub hooks: serde_json::Value,
    pub annotations: serde_json::Value,
}

impl Container {
    /// The process `exec_id` names ("" = init).
    pub fn process(&self, exec_id: &str) -> Option<Arc<Process>> {
        if exec_id.is_empty() {
            return Some(self.init.clone());
        }
        self.execs.lock().ok()?.get(exec_id).cloned()
    }

    /// Every process, init first.
    pub fn processes(&self) -> Vec<Arc<Process>> {
        let mut all = vec![self.init.clone()];
        if let Ok(execs) = self.execs.lock() {
            all.extend(execs.values().cloned());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> Stdio {
        Stdio {
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            terminal: false,
            namespace: String::new(),
        }
    }

    #[test]
    fn transitions_are_checked() {
        let p = Process::new("c", "", stdio(), Vec::new());
        assert!(p.transition(Status::Created, Status::Running).is_ok());
        let e = p
            .transition(Status::Created, Status::Running)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is running, not created"), "{e}");
    }

    #[tokio::test]
    async fn the_first_exit_wins_and_wakes_waiters() {
        let p = Process::new("c", "e1", stdio(), Vec::new());
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.0 })
        };
        assert!(p.exited(3));
        assert!(!p.exited(137));
        assert_eq!(waiter.await.unwrap(), 3);
        assert_eq!(p.status().name(), "stopped");
    }
}
