//! OOM events: each container's cgroup is watched for OOM kills (the `oom_kill` counter of
//! cgroup v2's memory.events, or of v1's memory.oom_control), and each new kill is queued for
//! GetOOMEvent, a long poll that answers with the next one.
//!
//! cgroup v2 (the guest's) notifies changes of memory.events: the kernel wakes pollers of an
//! open memory.events with EPOLLPRI, so a watched container costs nothing until its counters
//! move. An idle guest must not wake up (every wake-up is emulated kernel work where guest
//! kernel mode is emulated, and keeps a core from sleeping elsewhere). v1's
//! memory.oom_control has no such notification (only cgroup.event_control's eventfd), so
//! there, where the agent runs as a host process in tests, the counter is read every [`POLL`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, mpsc};

/// How often a counter without change notifications (cgroup v1's) is read.
const POLL: Duration = Duration::from_millis(500);

/// The file holding the OOM-kill counter of cgroup `path` (v2, else v1).
pub fn counter_file(cgroup_root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let v2 = cgroup_root.join(rel).join("memory.events");
    if v2.exists() {
        v2
    } else {
        cgroup_root
            .join("memory")
            .join(rel)
            .join("memory.oom_control")
    }
}

/// The `oom_kill` counter in a memory.events or memory.oom_control text.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The queue of OOM events.
pub struct OomEvents {
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Default for OomEvents {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// Reads the counter through `file` (from its start: reading a kernfs file through the
/// descriptor it polls also acknowledges the change notification).
fn read_kills(mut file: &File) -> std::io::Result<u64> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut text)?;
    Ok(oom_kills(&text))
}

/// `file` in the runtime's epoll set for EPOLLPRI.
#[allow(unsafe_code)]
fn register(file: File) -> std::io::Result<AsyncFd<File>> {
    // SAFETY: the AsyncFd takes ownership of the File, so the descriptor stays open and
    // refers to the same file until the AsyncFd is dropped, and File::as_raw_fd always
    // returns that descriptor.
    Ok(unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) }?)
}

/// How a counter file says it changed.
enum Changes {
    /// The kernel's notification (cgroup v2's memory.events: EPOLLPRI).
    Notified(AsyncFd<File>),
    /// None: read it every [`POLL`].
    Polled(File),
}

impl Changes {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        if path.file_name().is_some_and(|n| n == "memory.events") {
            // Regular files (a fake cgroupfs in tests) cannot be polled: epoll refuses them.
            if let Ok(fd) = register(file.try_clone()?) {
                return Ok(Self::Notified(fd));
            }
        }
        Ok(Self::Polled(file))
    }

    fn file(&self) -> &File {
        match self {
            Self::Notified(fd) => fd.get_ref(),
            Self::Polled(file) => file,
        }
    }

    /// Waits until the counter may have changed.
    async fn next(&self) -> std::io::Result<()> {
        match self {
            Self::Notified(fd) => fd
                .ready(Interest::PRIORITY)
                .await
                .map(|mut ready| ready.clear_ready()),
            Self::Polled(_) => {
                tokio::time::sleep(POLL).await;
                Ok(())
            }
        }
    }
}

impl OomEvents {
    /// Watches container `id`'s counter until the returned task is aborted or the cgroup
    /// goes.
    pub fn watch(&self, id: String, path: PathBuf) -> tokio::task::JoinHandle<()> {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // cgroup files answer at once: reading them inline never stalls the runtime.
            let Ok(changes) = Changes::open(&path) else {
                tracing::warn!(container_id = %id, path = %path.display(), "cannot watch OOM kills");
                return;
            };
            let mut seen = read_kills(changes.file()).unwrap_or(0);
            loop {
                if changes.next().await.is_err() {
                    return;
                }
                let Ok(now) = read_kills(changes.file()) else {
                    // The cgroup is gone: nothing more to watch.
                    return;
                };
                if now > seen {
                    tracing::info!(container_id = %id, kills = now - seen, "OOM kill");
                    seen = now;
                    if tx.send(id.clone()).is_err() {
                        return;
                    }
                }
            }
        })
    }

    /// The next OOM event's container id (waits for one).
    pub async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_v1_and_v2_texts() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"), 2);
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"),
            5
        );
        assert_eq!(oom_kills("garbage"), 0);
    }

    #[test]
    fn the_counter_file_is_v2_when_present() {
        let root = tempfile::tempdir().unwrap();
        let v1 = counter_file(root.path(), Path::new("/a/b"));
        assert_eq!(v1, root.path().join("memory/a/b/memory.oom_control"));
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/memory.events"), "oom_kill 0\n").unwrap();
        assert_eq!(
            counter_file(root.path(), Path::new("/a/b")),
            root.path().join("a/b/memory.events")
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rising_counter_becomes_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "oom_kill 0\n").unwrap();
        let events = OomEvents::default();
        let task = events.watch("c1".into(), file.clone());
        tokio::time::sleep(POLL * 2).await;
        std::fs::write(&file, "oom_kill 1\n").unwrap();
        let got = tokio::time::timeout(POLL * 4, events.next()).await.unwrap();
        assert_eq!(got.as_deref(), Some("c1"));
        task.abort();
    }
}
