//! A process's standard streams on the host (containerd's FIFOs, or `file://` URIs) wired to
//! the agent's ReadStdout/ReadStderr/WriteStdin/CloseStdin.
//!
//! Output copies end when the agent reports the end of the stream (every writer in the guest
//! closed it), so whoever waits for them knows that no output is left behind.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hako_agent_api::agent::{ProcessRequest, ReadStreamRequest, WriteStreamRequest};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent_client::{ctx, no_deadline};

const CHUNK: u32 = 64 * 1024;
const RPC: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("stdio {uri:?}: {what}")]
    Unsupported { uri: String, what: &'static str },
}

/// Where one stream goes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Not connected.
    None,
    /// A FIFO (containerd's default) or any file opened for writing as it is.
    Fifo(PathBuf),
    /// A regular file, appended to (`file:///path`).
    File(PathBuf),
    /// A logger binary (`binary:///path?args`) taking both output streams.
    Binary(crate::binary_logger::LoggerUri),
}

impl Endpoint {
    /// Parses containerd's stdio strings: "", a path, `fifo://path`, `file://path`.
    pub fn parse(uri: &str) -> Result<Self, IoError> {
        if uri.is_empty() {
            return Ok(Self::None);
        }
        if let Some(p) = uri.strip_prefix("file://") {
            return Ok(Self::File(PathBuf::from(p)));
        }
        if let Some(p) = uri.strip_prefix("fifo://") {
            return Ok(Self::Fifo(PathBuf::from(p)));
        }
        if let Some(logger) = crate::binary_logger::parse(uri) {
            return Ok(Self::Binary(logger));
        }
        if uri.contains("://") {
            return Err(IoError::Unsupported {
                uri: uri.into(),
                what: "unknown scheme (Hako takes FIFO paths, file:// and binary:// URIs)",
            });
        }
        Ok(Self::Fifo(PathBuf::from(uri)))
    }

    /// Another process's descriptor (`/proc/<pid>/fd/<n>`, the `hako` CLI's stdio): opened
    /// at once, while that process is sure to be there; opening a pipe or terminal this way
    /// does not block.
    fn is_proc_fd(&self) -> bool {
        matches!(self, Self::Fifo(p) if p.starts_with("/proc/"))
    }

    fn open_writer(&self) -> std::io::Result<Option<std::fs::File>> {
        match self {
            Self::None => Ok(None),
            Self::Binary(_) => Err(std::io::Error::other("a logger is started, not opened")),
            // Blocks until containerd's reader is there (it opens it before Create). Append:
            // a regular file reopened through /proc must not be written from offset 0.
            Self::Fifo(p) => std::fs::OpenOptions::new().append(true).open(p).map(Some),
            Self::File(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map(Some)
            }
        }
    }
}

/// The host ends of one process's streams.
#[derive(Debug, Clone)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// containerd namespace (a binary logger's CONTAINER_NAMESPACE).
    pub namespace: String,
}

impl Stdio {
    /// Checks every URI before anything is started.
    pub fn check(&self) -> Result<(), IoError> {
        Endpoint::parse(&self.stdin)?;
        Endpoint::parse(&self.stdout)?;
        Endpoint::parse(&self.stderr)?;
        Ok(())
    }
}

/// The copy tasks of one process.
pub struct Copies {
    outputs: Vec<JoinHandle<()>>,
    stdin: Option<JoinHandle<()>>,
    /// Chunks the output copies have moved (what `drain` watches for progress).
    moved: Arc<AtomicU64>,
}

/// The longest `drain` waits for output that keeps coming after its process exited (a
/// daemon the process left behind).
const DRAIN_CAP: std::time::Duration = std::time::Duration::from_secs(60);

impl Copies {
    /// Starts copying: stdout and stderr (unless a terminal merges them) from the agent to
    /// the host endpoints, and the host's stdin to the agent.
    pub fn start(agent: &AgentServiceClient, cid: &str, eid: &str, stdio: &Stdio) -> Self {
        let mut outputs = Vec::new();
        let moved = Arc::new(AtomicU64::new(0));
        let out = Endpoint::parse(&stdio.stdout).unwrap_or(Endpoint::None);
        let err = if stdio.terminal {
            Endpoint::None
        } else {
            Endpoint::parse(&stdio.stderr).unwrap_or(Endpoint::None)
        };
        // One logger takes both streams (containerd gives both the same binary:// URI).
        let logger = [&out, &err].into_iter().find_map(|e| match e {
            Endpoint::Binary(uri) => Some(uri.clone()),
            _ => None,
        });
        let mut logger = logger.map(|uri| {
            crate::binary_logger::start(&uri, cid, &stdio.namespace).map_err(|e| {
                tracing::warn!(container_id = %cid, "{e}");
                e
            })
        });
        for (is_err, ep) in [(false, out), (true, err)] {
            let early = match (&ep, logger.as_mut()) {
                (Endpoint::None, _) => continue,
                (Endpoint::Binary(_), Some(Ok(l))) => {
                    let f = if is_err { &l.stderr } else { &l.stdout };
                    Some(f.try_clone().map(Some))
                }
                (Endpoint::Binary(_), _) => Some(Ok(None)),
                (ep, _) if ep.is_proc_fd() => Some(ep.open_writer()),
                _ => None,
            };
            let out = Output {
                stderr: is_err,
                to: ep,
                early,
                moved: moved.clone(),
            };
            outputs.push(copy_output(agent.clone(), cid, eid, out));
        }
        let stdin = match Endpoint::parse(&stdio.stdin) {
            Ok(Endpoint::Fifo(p)) | Ok(Endpoint::File(p)) => {
                Some(copy_input(agent.clone(), cid, eid, p))
            }
            _ => None,
        };
        Self {
            outputs,
            stdin,
            moved,
        }
    }

    /// Waits until every output stream has ended: while output still moves (a slow reader
    /// of a burst), up to [`DRAIN_CAP`]; once none has moved for `limit` (a daemon the
    /// process left behind holds a stream open), no longer. Then the copies are ended,
    /// closing the host's ends: a caller reading them to their end (containerd's
    /// `task.Delete` waits for its FIFOs' EOF) would wait for ever.
    pub async fn drain(&mut self, limit: std::time::Duration) {
        let handles = std::mem::take(&mut self.outputs);
        let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
        let mut all = std::pin::pin!(futures_join(handles));
        let started = std::time::Instant::now();
        let mut seen = self.moved.load(Ordering::Relaxed);
        loop {
            if tokio::time::timeout(limit, &mut all).await.is_ok() {
                return;
            }
            let now = self.moved.load(Ordering::Relaxed);
            if now == seen || started.elapsed() >= DRAIN_CAP {
                break;
            }
            seen = now;
        }
        tracing::warn!(
            "output still open {:?} after the process exited; closing it",
            started.elapsed()
        );
        for a in aborts {
            a.abort();
        }
    }

    /// Waits (at most `limit`) until stdin's host end is closed and all of it forwarded.
    pub async fn stdin_done(&mut self, limit: std::time::Duration) {
        if let Some(h) = self.stdin.as_mut() {
            let _ = tokio::time::timeout(limit, h).await;
        }
    }

    /// Stops forwarding stdin (the process is gone).
    pub fn close(&mut self) {
        if let Some(h) = self.stdin.take() {
            h.abort();
        }
        for h in self.outputs.drain(..) {
            h.abort();
        }
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        self.close();
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Where one output stream goes.
struct Output {
    stderr: bool,
    to: Endpoint,
    /// The host end, opened before the copy started (a logger's pipe, a /proc fd).
    early: Option<std::io::Result<Option<std::fs::File>>>,
    moved: Arc<AtomicU64>,
}

fn copy_output(agent: AgentServiceClient, cid: &str, eid: &str, out: Output) -> JoinHandle<()> {
    let Output {
        stderr,
        to,
        early,
        moved,
    } = out;
    let (cid2, eid2) = (cid.to_owned(), eid.to_owned());
    let (cid, eid) = (cid.to_owned(), eid.to_owned());
    // The host side is written by a blocking thread (FIFO opens block), fed by this task.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = match early.unwrap_or_else(|| to.open_writer()) {
            Ok(Some(f)) => Some(f),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(container_id = %cid, exec_id = %eid, "opening {to:?}: {e}");
                None
            }
        };
        while let Some(chunk) = rx.blocking_recv() {
            if let Some(f) = file.as_mut()
                && let Err(e) = f.write_all(&chunk)
            {
                tracing::warn!("writing output to {to:?}: {e}; discarding the rest");
                file = None;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let mut r = ReadStreamRequest::new();
            r.container_id = cid2.clone();
            r.exec_id = eid2.clone();
            r.len = CHUNK;
            let got = if stderr {
                agent.read_stderr(no_deadline(), &r).await
            } else {
                agent.read_stdout(no_deadline(), &r).await
            };
            match got {
                Ok(chunk) if !chunk.data.is_empty() => {
                    if tx.send(chunk.data).await.is_err() {
                        break;
                    }
                    moved.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(container_id = %cid2, exec_id = %eid2, "output stream ended: {e}");
                    break;
                }
            }
        }
        drop(tx);
        let _ = writer.await;
    })
}

fn copy_input(agent: AgentServiceClient, cid: &str, eid: &str, from: PathBuf) -> JoinHandle<()> {
    let (cid, eid) = (cid.to_owned(), eid.to_owned());
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    // Opening a FIFO for reading blocks until containerd opens its end: a thread does it
    // (descriptors of another process are opened now, while it is there).
    let early = Endpoint::Fifo(from.clone())
        .is_proc_fd()
        .then(|| open_reader(&from));
    std::thread::spawn(move || read_input(&from, early.unwrap_or_else(|| open_reader(&from)), tx));
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            let mut w = WriteStreamRequest::new();
            w.container_id = cid.clone();
            w.exec_id = eid.clone();
            w.data = data;
            if let Err(e) = agent.write_stdin(ctx(RPC), &w).await {
                tracing::debug!(container_id = %cid, exec_id = %eid, "stdin: {e}");
                return;
            }
        }
        let mut close = ProcessRequest::new();
        close.container_id = cid;
        close.exec_id = eid;
        let _ = agent.close_stdin(ctx(RPC), &close).await;
    })
}

fn open_reader(from: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(from)
}

fn read_input(from: &Path, opened: std::io::Result<std::fs::File>, tx: mpsc::Sender<Vec<u8>>) {
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("opening stdin {}: {e}", from.display());
            return;
        }
    };
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("reading stdin {}: {e}", from.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_strings_are_parsed() {
        assert_eq!(Endpoint::parse("").unwrap(), Endpoint::None);
        assert_eq!(
            Endpoint::parse("/run/containerd/fifo/1/x-stdout").unwrap(),
            Endpoint::Fifo("/run/containerd/fifo/1/x-stdout".into())
        );
        assert_eq!(
            Endpoint::parse("file:///var/log/x.log").unwrap(),
            Endpoint::File("/var/log/x.log".into())
        );
        assert!(matches!(
            Endpoint::parse("binary:///usr/bin/logger?a=b").unwrap(),
            Endpoint::Binary(ref l) if l.args == ["a", "b"]
        ));
        let e = Endpoint::parse("tcp://x").unwrap_err().to_string();
        assert!(e.contains("tcp://x"), "{e}");
    }

    #[test]
    fn file_endpoints_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/out.log");
        for line in ["a\n", "b\n"] {
            let mut f = Endpoint::File(p.clone()).open_writer().unwrap().unwrap();
            f.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
    }
}
