//! `hako-qemu-boot KERNEL INITRD [CMDLINE-EXTRA]`: boots a guest under QEMU's microvm with the
//! same command line the VM tests use, then prints its console with timestamps. Used by the
//! README's main job until hako-vmm replaces QEMU.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hako_tests::qemu;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kernel), Some(initrd)) = (args.first(), args.get(1)) else {
        eprintln!("usage: hako-qemu-boot KERNEL INITRD [CMDLINE-EXTRA]");
        return ExitCode::from(2);
    };
    let extra = args.get(2).map(String::as_str).unwrap_or("");
    let cmd = qemu::command(
        &PathBuf::from(kernel),
        &PathBuf::from(initrd),
        256,
        &qemu::cmdline(extra),
    );
    match qemu::boot(cmd, Duration::from_secs(600)) {
        Ok(boot) => {
            print!("{}", boot.console());
            match boot.exit {
                Some(status) if status.success() => {
                    println!(
                        "guest ran and rebooted after {:.1}s",
                        boot.elapsed.as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Some(status) => {
                    eprintln!("hako-qemu-boot: qemu exited with {status}");
                    ExitCode::FAILURE
                }
                None => {
                    eprintln!(
                        "hako-qemu-boot: the guest did not finish within 600 s; qemu was killed"
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("hako-qemu-boot: starting qemu-system-x86_64: {e}");
            ExitCode::FAILURE
        }
    }
}
