//! Boots a kernel and initramfs under `qemu-system-x86_64 -M microvm` (Debian's QEMU) and
//! captures the serial console with timestamps. Used until hako-vmm replaces QEMU in the VM
//! tests, and by the benchmark as the side-by-side reference.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kernel command line for booting the guest kernel on the microvm machine. It hides, with
/// `clearcpuid=`, the CPU features whose instructions a host that emulates guest kernel mode
/// lacks: QEMU's `-cpu` masks do not reach the guest there (harmless elsewhere). The list is
/// hako-vmm's conservative CPU profile.
pub fn cmdline(extra: &str) -> String {
    let hide = hako_vmm::arch::x86_64::cpuid::conservative_cmdline();
    format!("console=ttyS0 reboot=k panic=-1 quiet {hide} {extra}")
        .trim()
        .to_string()
}

/// The QEMU command that boots `kernel` with `initrd` on one vCPU.
pub fn command(kernel: &Path, initrd: &Path, memory_mib: u32, cmdline: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "microvm,acpi=off", "-enable-kvm"])
        // ARCH_CAPABILITIES cannot be set on this host's KVM; GenuineIntel avoids AMD-only
        // workarounds whose instructions the kernel-mode emulator lacks.
        .args([
            "-cpu",
            "host,vendor=GenuineIntel,-arch-capabilities",
            "-smp",
            "1",
        ])
        .args(["-m", &memory_mib.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        // Guest reboot goes through the i8042 (`reboot=k`): the kernel's triple-fault method
        // executes INT3, which the kernel-mode emulator lacks. microvm has no i8042 by default.
        .args(["-device", "i8042"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline]);
    cmd
}

/// What a boot printed and how it ended.
#[derive(Debug)]
pub struct Boot {
    /// Console lines with the time since QEMU started.
    pub lines: Vec<(Duration, String)>,
    /// QEMU's exit status; None if it had to be killed.
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

/// Kills the child on drop so a failing test leaves no QEMU behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `cmd` until QEMU exits or `deadline` passes (then it is killed).
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
