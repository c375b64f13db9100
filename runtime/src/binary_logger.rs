//! containerd's `binary://` logging protocol (what nerdctl uses by default): the logger
//! binary named by the URI runs with the query's pairs as arguments, `CONTAINER_ID` and
//! `CONTAINER_NAMESPACE` in its environment, the container's stdout on fd 3, its stderr on
//! fd 4, and closes fd 5 once it is ready.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

/// How long a logger may take to say it is ready (containerd's value).
const READY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerUri {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// Parses `binary:///path?key=value&flag`; None if it is not a binary URI.
pub fn parse(uri: &str) -> Option<LoggerUri> {
    let rest = uri.strip_prefix("binary://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(decode(k));
        if !v.is_empty() {
            args.push(decode(v));
        }
    }
    Some(LoggerUri {
        path: PathBuf::from(decode(path)),
        args,
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A started logger: where to write the container's stdout and stderr.
pub struct Logger {
    pub stdout: File,
    pub stderr: File,
}

/// Starts the logger and waits until it is ready. A thread reaps it when it exits (it does
/// when both pipes are closed).
pub fn start(uri: &LoggerUri, container_id: &str, namespace: &str) -> std::io::Result<Logger> {
    // Close-on-exec everywhere: the logger must hold only its fds 3-5 (dup2 clears the flag
    // there), or it would never see the end of its input, nor we its readiness.
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = Command::new(&uri.path);
    cmd.args(&uri.args)
        .env("CONTAINER_ID", container_id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: out_r,
            child_fd: 3,
        },
        FdMapping {
            parent_fd: err_r,
            child_fd: 4,
        },
        FdMapping {
            parent_fd: ready_w,
            child_fd: 5,
        },
    ])
    .map_err(|_| std::io::Error::other("logger descriptor mapping collides"))?;
    let mut child = cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("starting logger {}: {e}", uri.path.display()),
        )
    })?;
    // Our copies of the child's ends close with `cmd`; wait for fd 5 to close.
    drop(cmd);
    let ready = wait_closed(&ready_r, READY);
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    if !ready {
        return Err(std::io::Error::other(format!(
            "logger {} did not get ready within {READY:?}",
            uri.path.display()
        )));
    }
    Ok(Logger {
        stdout: File::from(out_w),
        stderr: File::from(err_w),
    })
}

/// Waits until the other end of the pipe `fd` is closed (EOF), at most `limit`.
fn wait_closed(fd: &OwnedFd, limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(
        fd.as_fd(),
        PollFlags::POLLIN | PollFlags::POLLHUP,
    )];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_parsed() {
        let u = parse("binary:///usr/local/bin/logger?mode=a%20b&verbose").unwrap();
        assert_eq!(u.path, PathBuf::from("/usr/local/bin/logger"));
        assert_eq!(u.args, ["mode", "a b", "verbose"]);
        assert!(parse("/run/fifo").is_none());
    }

    #[test]
    fn a_logger_gets_both_streams_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("log");
        let script = dir.path().join("logger.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 5>&-\n{{ echo \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE arg=$1\"; cat <&3; cat <&4; }} > {}\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uri = parse(&format!("binary://{}?x", script.display())).unwrap();
        let Logger {
            mut stdout,
            mut stderr,
        } = start(&uri, "c1", "ns1").unwrap();
        use std::io::Write;
        stdout.write_all(b"to-out\n").unwrap();
        stderr.write_all(b"to-err\n").unwrap();
        drop(stdout);
        drop(stderr);
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("to-err") {
                assert_eq!(text, "id=c1 ns=ns1 arg=x\nto-out\nto-err\n");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
