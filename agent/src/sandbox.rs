//! The sandbox as the agent sees it: created once (hostname, DNS, shared mounts), destroyed
//! once (unmount, then power off in a VM). Holds what teardown must undo.

use std::path::PathBuf;

use hako_agent_api::agent::{CreateSandboxRequest, DestroySandboxRequest, GuestDetailsResponse};
use tokio::sync::{Mutex, watch};

use crate::storage::{self, StorageError};

/// Errors of sandbox requests.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox {0:?} already exists")]
    AlreadyCreated(String),
    #[error("{0} is only done when the agent is the VM's init")]
    NotInVm(&'static str),
    #[error("hostname {0:?} must be 1 to 64 characters of letters, digits, '-' and '.'")]
    Hostname(String),
    #[error("date {0} is out of range")]
    DateTime(i64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How the agent's service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// DestroySandbox asked to power the VM off.
    PowerOff,
    /// DestroySandbox without power-off, or a termination signal: just exit.
    Exit,
}

#[derive(Default)]
struct State {
    id: Option<String>,
    mounts: Vec<PathBuf>,
}

pub struct Sandbox {
    init: bool,
    state: Mutex<State>,
    shutdown: watch::Sender<Option<Shutdown>>,
}

fn valid_hostname(h: &str) -> bool {
    (1..=64).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl Sandbox {
    /// `init`: the agent is PID 1 of a VM (it may set the hostname, clock, and power off).
    pub fn new(init: bool) -> Self {
        Self {
            init,
            state: Mutex::new(State::default()),
            shutdown: watch::channel(None).0,
        }
    }

    /// True when the agent is the VM's init (false for a host process in tests).
    pub fn in_vm(&self) -> bool {
        self.init
    }

    pub async fn create(&self, req: CreateSandboxRequest) -> Result<(), SandboxError> {
        let mut state = self.state.lock().await;
        if let Some(id) = &state.id {
            return Err(SandboxError::AlreadyCreated(id.clone()));
        }
        if !req.hostname.is_empty() && !valid_hostname(&req.hostname) {
            return Err(SandboxError::Hostname(req.hostname));
        }
        if self.init {
            if !req.hostname.is_empty() {
                nix::unistd::sethostname(&req.hostname).map_err(|e| SandboxError::Io {
                    what: "setting the hostname",
                    source: e.into(),
                })?;
            }
            if !req.dns.is_empty() {
                let mut text = req.dns.join("\n");
                text.push('\n');
                std::fs::write("/etc/resolv.conf", text).map_err(|source| SandboxError::Io {
                    what: "writing /etc/resolv.conf",
                    source,
                })?;
            }
            if !req.entropy.is_empty() {
                crate::entropy::seed(&req.entropy).map_err(|source| SandboxError::Io {
                    what: "seeding the RNG with the host's entropy",
                    source,
                })?;
                tracing::debug!(bytes = req.entropy.len(), "RNG seeded and reseeded");
            }
        } else if !req.hostname.is_empty() || !req.dns.is_empty() {
            tracing::info!("not a VM: leaving the host's hostname and resolv.conf alone");
        }
        let mut mounted = Vec::new();
        for s in &req.storages {
            match storage::mount_storage(s) {
                Ok(target) => mounted.push(target),
                Err(e) => {
                    storage::unmount_all(&mut mounted);
                    return Err(e.into());
                }
            }
        }
        state.mounts = mounted;
        state.id = Some(req.sandbox_id);
        tracing::info!(sandbox_id = ?state.id, "sandbox created");
        Ok(())
    }

    pub async fn destroy(&self, req: DestroySandboxRequest) -> Result<(), SandboxError> {
        let mut state = self.state.lock().await;
        storage::unmount_all(&mut state.mounts);
        let how = if req.power_off && self.init {
            Shutdown::PowerOff
        } else {
            Shutdown::Exit
        };
        tracing::info!(sandbox_id = ?state.id, ?how, "sandbox destroyed");
        state.id = None;
        self.shutdown.send_replace(Some(how));
        Ok(())
    }

    /// Ends the service (a termination signal).
    pub fn stop(&self) {
        self.shutdown.send_replace(Some(Shutdown::Exit));
    }

    pub async fn wait_for_shutdown(&self) -> Shutdown {
        let mut rx = self.shutdown.subscribe();
        loop {
            if let Some(how) = *rx.borrow_and_update() {
                return how;
            }
            if rx.changed().await.is_err() {
                return Shutdown::Exit;
            }
        }
    }

    pub fn guest_details(&self) -> GuestDetailsResponse {
        let mut r = GuestDetailsResponse::new();
        r.kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        r.cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        r.memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        r.agent_version = crate::VERSION.to_owned();
        r.init = self.init;
        r
    }

    pub fn set_date_time(&self, sec: i64, usec: i64) -> Result<(), SandboxError> {
        if !self.init {
            return Err(SandboxError::NotInVm("setting the clock"));
        }
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return Err(SandboxError::DateTime(sec));
        }
        let ts = nix::sys::time::TimeSpec::new(sec, usec * 1000);
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(|e| {
            SandboxError::Io {
                what: "setting the clock",
                source: e.into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("pod-1.example"));
        for bad in ["", "a b", "x/y", &"a".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn create_twice_is_refused_and_destroy_ends_the_service() {
        let s = Sandbox::new(false);
        let mut req = CreateSandboxRequest::new();
        req.sandbox_id = "sb".into();
        req.hostname = "ignored-on-a-host".into();
        s.create(req.clone()).await.unwrap();
        assert!(matches!(
            s.create(req).await,
            Err(SandboxError::AlreadyCreated(_))
        ));
        let mut d = DestroySandboxRequest::new();
        d.power_off = true;
        s.destroy(d).await.unwrap();
        assert_eq!(
            s.wait_for_shutdown().await,
            Shutdown::Exit,
            "no power-off outside a VM"
        );
    }

    #[test]
    fn the_clock_is_not_touched_outside_a_vm() {
        let s = Sandbox::new(false);
        assert!(matches!(
            s.set_date_time(1, 0),
            Err(SandboxError::NotInVm(_))
        ));
    }
}
