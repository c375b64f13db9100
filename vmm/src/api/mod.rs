//! The control socket: a Unix socket serving one JSON request per line (`ControlRequest`) with
//! one JSON reply per line (`ControlReply`). Its thread only frames and parses; the VMM thread
//! carries requests out. The socket file is removed when the server is dropped.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use hako_vmm_api::{ControlReply, ControlRequest};

use crate::vmm::VmmEvent;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Errors starting the control server.
#[derive(Debug, thiserror::Error)]
#[error("serving the control API on {path}")]
pub struct ApiError {
    pub path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The running control server.
pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0600) and serves requests, each sent to the VMM thread.
    pub fn start(path: &Path, events: Sender<VmmEvent>) -> Result<Self, ApiError> {
        let err = |source| ApiError {
            path: path.to_owned(),
            source,
        };
        let listener = hako_socket_path::bind(path).map_err(err)?;
        let mut server = Self {
            path: path.to_owned(),
            listener,
            thread: None,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let accepting = server.listener.try_clone().map_err(err)?;
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(accepting, events))
            .map_err(err)?;
        server.thread = Some(thread);
        Ok(server)
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // SAFETY: shutdown(2) on a socket fd this struct owns; it only wakes the accept loop
        // (accept then fails and the thread returns) and touches no memory.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the control socket");
        }
    }
}

fn accept_loop(listener: UnixListener, events: Sender<VmmEvent>) {
    // Its connection threads inherit this list.
    crate::seccomp::confine(crate::seccomp::Profile::Control);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let events = events.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve(stream, &events));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "no thread for a control connection");
                }
            }
            // Out of descriptors or memory (a guest can pin descriptors through virtio-fs up
            // to the VMM's limit): wait and try again rather than lose the control socket.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                ) =>
            {
                tracing::debug!(error = %e, "control socket: accept failed; retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                tracing::debug!(error = %e, "control socket closed");
                return;
            }
        }
    }
}

/// Answers requests on one connection until it closes or the VMM goes away.
fn serve(stream: UnixStream, events: &Sender<VmmEvent>) {
    crate::seccomp::confine(crate::seccomp::Profile::Control);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
            let _ = reply(
                &mut writer,
                &error(format!("request longer than {MAX_REQUEST} bytes")),
            );
            return;
        }
        let answer = match serde_json::from_str::<ControlRequest>(line.trim()) {
            Ok(request) => ask(events, request),
            Err(e) => error(format!("bad request: {e}")),
        };
        if reply(&mut writer, &answer).is_err() {
            return;
        }
    }
}

fn error(message: String) -> ControlReply {
    ControlReply::Error { message }
}

fn ask(events: &Sender<VmmEvent>, request: ControlRequest) -> ControlReply {
    let (tx, rx) = mpsc::channel();
    if events.send(VmmEvent::Control(request, tx)).is_err() {
        return error("the VM is stopping".into());
    }
    rx.recv()
        .unwrap_or_else(|_| error("the VM stopped before answering".into()))
}

fn reply(w: &mut UnixStream, answer: &ControlReply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(path: &Path, line: &str) -> ControlReply {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut out = String::new();
        r.read_line(&mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn requests_reach_the_vmm_thread_and_replies_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (tx, rx) = mpsc::channel();
        let server = ControlServer::start(&path, tx).unwrap();
        let vmm = std::thread::spawn(move || {
            while let Ok(VmmEvent::Control(req, reply)) = rx.recv() {
                let answer = match req {
                    ControlRequest::Pause => ControlReply::Done,
                    other => error(format!("{other:?}")),
                };
                reply.send(answer).unwrap();
            }
        });
        assert_eq!(
            roundtrip(&path, "{\"request\":\"pause\"}\n"),
            ControlReply::Done
        );
        match roundtrip(&path, "{\"request\":\"fly\"}\n") {
            ControlReply::Error { message } => {
                assert!(message.contains("bad request"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(server);
        assert!(!path.exists(), "socket removed on drop");
        vmm.join().unwrap();
    }

    #[test]
    fn an_existing_path_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"x").unwrap();
        let (tx, _rx) = mpsc::channel();
        assert!(ControlServer::start(&path, tx).is_err());
        assert!(path.exists(), "someone else's file stays");
    }
}
