//! The `qemu-system-x86_64 -M microvm` command (Debian's QEMU) that boots the same kernel and
//! initramfs as hako-vmm: the benchmark's side-by-side reference.

use std::path::Path;
use std::process::Command;

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
