//! Network namespaces a test makes (`ip netns add`), deleted with everything in them when
//! dropped, and what tests do in them: `ip`/`tc` commands, TCP sockets made from a thread
//! that entered the namespace (a socket stays in the namespace it was made in).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;

/// A network namespace (`/run/netns/<name>`) with its loopback up.
pub struct Netns(pub String);

impl Netns {
    /// `<prefix>-<pid>`.
    pub fn create(prefix: &str) -> Result<Self, String> {
        let name = format!("{prefix}-{}", std::process::id());
        // One left by an earlier, killed run of this test goes first.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    /// `ip -n <ns> <args>`; its output.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `tc -n <ns> <args>`; its output.
    pub fn tc(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        run("tc", &all)
    }

    /// Runs `f` on a thread that entered the namespace.
    pub fn within<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send,
    ) -> Result<T, String> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns =
                    std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering {}: {e}", path.display()))?;
                f()
            })
            .join()
            .map_err(|_| "a thread in the namespace panicked".to_string())?
        })
    }

    /// A TCP listener bound inside the namespace.
    pub fn listen(&self, addr: &str) -> Result<TcpListener, String> {
        self.within(|| TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}")))
    }

    /// A server for one connection, bound at `addr` inside the namespace: it reads a line,
    /// answers `reply` and tells (joined) who said what.
    pub fn answer_once(
        &self,
        addr: &str,
        reply: &'static [u8],
    ) -> Result<std::thread::JoinHandle<Result<String, String>>, String> {
        let listener = self.listen(addr)?;
        Ok(std::thread::spawn(move || {
            let (s, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(&s)
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            (&s).write_all(reply).map_err(|e| format!("write: {e}"))?;
            Ok(format!("{peer} said {line:?}"))
        }))
    }

    /// A TCP connection made from inside the namespace.
    pub fn connect(&self, addr: &str) -> Result<TcpStream, String> {
        self.within(|| TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}")))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {args:?}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}
