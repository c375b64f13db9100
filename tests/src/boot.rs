//! Runs a VMM process (hako-vmm or QEMU) until it exits or a deadline passes, capturing its
//! console and logs line by line with the time each line appeared.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a VM test may take: a boot is about a minute where guest kernel mode is emulated;
/// allow for a loaded machine. `HAKO_VM_TIMEOUT` (seconds) overrides it.
pub fn vm_deadline() -> Duration {
    let secs = std::env::var("HAKO_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// What a boot printed and how it ended.
#[derive(Debug)]
pub struct Boot {
    /// Console lines with the time since QEMU started.
    pub lines: Vec<(Duration, String)>,
    /// The VMM's exit status; None if it had to be killed.
    pub exit: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl Boot {
    pub fn console(&self) -> String {
        self.lines
            .iter()
            .map(|(t, l)| format!("[{:7.1}s] {l}\n", t.as_secs_f64()))
            .collect()
    }
    /// When the first line containing `needle` appeared.
    pub fn time_of(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
}

/// Kills the child on drop so a failing test leaves no VMM behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `cmd` until the VMM exits or `deadline` passes (then it is killed).
pub fn boot(mut cmd: Command, deadline: Duration) -> std::io::Result<Boot> {
    let start = Instant::now();
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = [
        child
            .0
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .0
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send((start.elapsed(), text)).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let mut lines = Vec::new();
    let exit = loop {
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        if let Some(status) = child.0.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in readers {
        let _ = r.join();
    }
    lines.extend(rx.try_iter());
    Ok(Boot {
        lines,
        exit,
        elapsed: start.elapsed(),
    })
}
