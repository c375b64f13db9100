//! Where the agent's logs go: a close-on-exec copy of stderr (the console in a VM), and, when
//! `agent.log_port=` names one (normally hako_agent_api::AGENT_LOG_PORT), a vsock stream to
//! the host, which hako-vmm hands to the Unix socket `<uds>_<port>`. The host side is best
//! effort: if nothing listens, or the stream breaks or would block, the console alone keeps
//! the logs and the agent never waits on the host.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Mutex;

/// Writes each log record to the console and, while it works, to the host.
pub struct LogSink {
    console: std::fs::File,
    host: Option<vsock::VsockStream>,
}

impl LogSink {
    /// `host_port`: connect to the host's vsock port (CID 2) for a copy of the logs.
    pub fn open(host_port: Option<u32>) -> std::io::Result<Self> {
        // A close-on-exec copy of stderr: a container process forked from the agent replaces
        // fd 2 with the container's stderr before it execs, and whatever libcontainer logs in
        // between must not land in the container's output.
        let console = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
        let host = host_port.and_then(|port| {
            vsock::VsockStream::connect_with_cid_port(vsock::VMADDR_CID_HOST, port)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .inspect_err(|e| {
                    let _ = writeln!(
                        &console,
                        "hako-agent: no log stream to host port {port}: {e}"
                    );
                })
                .ok()
        });
        Ok(Self { console, host })
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(host) = &mut self.host
            && host.write_all(buf).is_err()
        {
            // A broken or full stream is dropped, never waited on.
            self.host = None;
        }
        self.console.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.console.flush()
    }
}

/// Installs the tracing subscriber writing to `sink`.
pub fn init(level: &str, sink: LogSink) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(Mutex::new(sink))
        .with_ansi(false)
        .init();
}
