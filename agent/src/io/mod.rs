//! A process's standard streams: stdin as a pipe the agent writes, stdout and stderr as pipes
//! the agent drains into buffers right away, so a process that exits (or a host that reads
//! late) loses no output. ReadStdout/ReadStderr take from the buffers and wait for more.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// Bytes buffered per stream before the agent stops draining the pipe (the process then
/// blocks on a full pipe until the host reads).
const BUFFER_LIMIT: usize = 4 << 20;
/// The most one read of a process's stream takes.
const READ_CHUNK: usize = 64 * 1024;

/// One output stream's buffer.
#[derive(Default)]
pub struct Output {
    state: Mutex<(VecDeque<u8>, bool)>,
    changed: Notify,
}

impl Output {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<u8>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` bytes, waiting until there are some; empty at end of stream.
    pub async fn read(&self, max: usize) -> Vec<u8> {
        loop {
            let notified = self.changed.notified();
            {
                let mut s = self.lock();
                if !s.0.is_empty() {
                    let n = max.max(1).min(s.0.len());
                    let out: Vec<u8> = s.0.drain(..n).collect();
                    self.changed.notify_waiters();
                    return out;
                }
                if s.1 {
                    return Vec::new();
                }
            }
            notified.await;
        }
    }

    /// Drains a pipe into the buffer until EOF. `pipe` is the read end of a pipe the agent
    /// made, already non-blocking ([`nonblocking_read_end`]): tokio's checked conversion would
    /// stat it and read its flags again (three calls where one is enough).
    pub async fn fill_from(self: Arc<Self>, pipe: OwnedFd) {
        let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(pipe) else {
            self.finish();
            return;
        };
        // Read into spare capacity, never zeroed: only the pages data lands on are touched.
        // After the agent forks for a container (libcontainer's intermediate process) the
        // first write to any of its pages is a fault, ~7,000 emulated instructions in a guest
        // here; zeroing two 64 KiB buffers cost each container 32 of them.
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        loop {
            // Back-pressure: wait while the buffer is full.
            loop {
                let notified = self.changed.notified();
                if self.lock().0.len() < BUFFER_LIMIT {
                    break;
                }
                notified.await;
            }
            chunk.clear();
            match rx.read_buf(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.lock().0.extend(&chunk);
                    self.changed.notify_waiters();
                }
            }
        }
        self.finish();
    }

    /// Drains a terminal's master side on a thread of its own (a pty is not a pipe: tokio's
    /// pipe reader refuses it). Reading fails with EIO once the last process holding the
    /// terminal exits: that is the end of the stream.
    pub fn fill_from_blocking(self: Arc<Self>, mut from: std::fs::File) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("tty-reader".into())
            .spawn(move || {
                let mut chunk = vec![0u8; READ_CHUNK];
                loop {
                    while self.lock().0.len() >= BUFFER_LIMIT {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    match std::io::Read::read(&mut from, &mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            self.lock().0.extend(&chunk[..n]);
                            self.changed.notify_waiters();
                        }
                    }
                }
                self.finish();
            })
            .map(drop)
    }

    fn finish(&self) {
        self.lock().1 = true;
        self.changed.notify_waiters();
    }
}

/// The agent's ends of a process's streams.
pub struct ProcessIo {
    stdin: Mutex<Option<std::fs::File>>,
    pub stdout: Arc<Output>,
    pub stderr: Arc<Output>,
    /// The terminal's master side, for window size changes (terminal processes only).
    pub tty: Option<std::os::fd::OwnedFd>,
}

/// The read end of a pipe just made (its status flags only `O_RDONLY`), made non-blocking in
/// one call; the process's write end stays blocking.
fn nonblocking_read_end(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(fd)
}

/// The process's ends, handed to libcontainer.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl ProcessIo {
    /// Makes the three pipes and starts draining stdout and stderr.
    pub fn pipes() -> std::io::Result<(Arc<Self>, ChildStdio)> {
        let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stderr_r, stderr_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stdout_r, stderr_r) = (
            nonblocking_read_end(stdout_r)?,
            nonblocking_read_end(stderr_r)?,
        );
        let io = Arc::new(Self {
            stdin: Mutex::new(Some(std::fs::File::from(stdin_w))),
            stdout: Arc::default(),
            stderr: Arc::default(),
            tty: None,
        });
        tokio::spawn(io.stdout.clone().fill_from(stdout_r));
        tokio::spawn(io.stderr.clone().fill_from(stderr_r));
        Ok((
            io,
            ChildStdio {
                stdin: stdin_r,
                stdout: stdout_w,
                stderr: stderr_w,
            },
        ))
    }

    /// The streams of a process on a terminal: input and output both go through `master`;
    /// stderr is merged into stdout by the terminal, so the stderr stream is empty.
    pub fn terminal(master: std::os::fd::OwnedFd) -> std::io::Result<Arc<Self>> {
        let reader = std::fs::File::from(master.try_clone()?);
        let writer = std::fs::File::from(master.try_clone()?);
        let io = Arc::new(Self {
            stdin: Mutex::new(Some(writer)),
            stdout: Arc::default(),
            stderr: Arc::default(),
            tty: Some(master),
        });
        io.stderr.finish();
        io.stdout.clone().fill_from_blocking(reader)?;
        Ok(io)
    }

    /// Writes to stdin (blocking briefly if the pipe is full); errors once it is closed.
    pub fn write_stdin(&self, data: &[u8]) -> std::io::Result<usize> {
        let mut guard = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(f) => f.write_all(data).map(|()| data.len()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "stdin is closed",
            )),
        }
    }

    /// Closes stdin: the process reads EOF.
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's read ends never block its runtime; the process's write ends block as a
    /// process expects (a full pipe waits for the host instead of failing with EAGAIN).
    #[tokio::test(flavor = "current_thread")]
    async fn only_the_agent_ends_of_the_pipes_are_non_blocking() {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let nonblocking = |fd: i32| {
            OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap())
                .contains(OFlag::O_NONBLOCK)
        };
        let (stdout_r, stdout_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let stdout_r = nonblocking_read_end(stdout_r).unwrap();
        assert!(nonblocking(stdout_r.as_raw_fd()));
        assert!(!nonblocking(stdout_w.as_raw_fd()));
        let (_io, child) = ProcessIo::pipes().unwrap();
        for fd in [&child.stdin, &child.stdout, &child.stderr] {
            assert!(!nonblocking(fd.as_raw_fd()));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_written_before_exit_is_kept_until_read() {
        let (io, child) = ProcessIo::pipes().unwrap();
        let mut out = std::fs::File::from(child.stdout);
        out.write_all(b"hello ").unwrap();
        out.write_all(b"world").unwrap();
        drop(out);
        drop(child.stderr);
        let mut got = Vec::new();
        loop {
            let chunk = io.stdout.read(4).await;
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 4);
            got.extend(chunk);
        }
        assert_eq!(got, b"hello world");
        assert!(io.stderr.read(10).await.is_empty(), "EOF on stderr");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_reaches_the_child_and_closes() {
        let (io, child) = ProcessIo::pipes().unwrap();
        io.write_stdin(b"in").unwrap();
        io.close_stdin();
        assert!(io.write_stdin(b"more").is_err());
        let mut r = std::fs::File::from(child.stdin);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r, &mut s).unwrap();
        assert_eq!(s, "in");
    }
}
