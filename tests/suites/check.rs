//! Tier 2 (KVM): `hako check` on this host, through the real binaries (`hako` runs
//! `hako-vmm probe`). On a PVM host it must say in plain words that guest kernel mode is
//! emulated and that guests need Hako's patched kernel.

use std::path::PathBuf;
use std::process::Command;

use hako_tests::{repo_root, require};
use libtest_mimic::{Arguments, Failed};

/// The newest build of a workspace binary (setup.sh builds release; cargo test builds debug).
fn binary(name: &str) -> Result<PathBuf, require::Skip> {
    ["release", "debug"]
        .iter()
        .map(|p| repo_root().join("target").join(p).join(name))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| {
            require::Skip(format!(
                "{name} is not built: run scripts/setup.sh or cargo build"
            ))
        })
}

fn run_check(json: bool) -> Result<(i32, String), Failed> {
    let hako = binary("hako").map_err(|s| s.to_string())?;
    let vmm = binary("hako-vmm").map_err(|s| s.to_string())?;
    let mut cmd = Command::new(hako);
    cmd.arg("check").arg("--vmm").arg(vmm);
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running hako check: {e}"))?;
    let code = out
        .status
        .code()
        .ok_or("hako check was killed by a signal")?;
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\": "))? + key.len() + 4;
    json[at..].split([',', '\n']).next().map(str::trim)
}

fn check_reports_this_host() -> Result<(), Failed> {
    let (code, json) = run_check(true)?;
    let can_run = field(&json, "can_run").ok_or_else(|| format!("no can_run in {json}"))?;
    if (code == 0) != (can_run == "true") {
        return Err(format!("exit status {code} disagrees with can_run={can_run}").into());
    }
    let (text_code, text) = run_check(false)?;
    eprintln!("{text}");
    if text_code != code {
        return Err(format!("--json exited {code} but the text form {text_code}").into());
    }
    if !text.lines().any(|l| l.starts_with("Hako sandboxes can")) {
        return Err("no verdict line".into());
    }
    if json.contains("\"kvm_pvm\"") {
        // This development host: KVM on PVM.
        for (key, want) in [
            ("can_run", "true"),
            ("kernel_mode", "\"emulated\""),
            ("syscall_enters_kernel", "false"),
            ("needs_patched_guest_kernel", "true"),
            ("cpu_profile", "\"conservative\""),
        ] {
            if field(&json, key) != Some(want) {
                return Err(format!(
                    "on a kvm_pvm host expected {key} = {want}, got {:?}",
                    field(&json, key)
                )
                .into());
            }
        }
        for phrase in [
            "guest kernel mode is emulated",
            "does not enter guest kernel mode",
            "compatibility patches",
        ] {
            if !text.contains(phrase) {
                return Err(format!("the verdict does not say {phrase:?}").into());
            }
        }
    }
    Ok(())
}

fn missing_device_fails_with_reason() -> Result<(), Failed> {
    let hako = binary("hako").map_err(|s| s.to_string())?;
    let vmm = binary("hako-vmm").map_err(|s| s.to_string())?;
    let out = Command::new(hako)
        .args(["check", "--device", "/nonexistent/kvm", "--vmm"])
        .arg(vmm)
        .output()
        .map_err(|e| format!("running hako check: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() != Some(1) || !text.contains("/nonexistent/kvm does not exist") {
        return Err(format!(
            "expected exit 1 naming the missing device, got {:?}:\n{text}",
            out.status.code()
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let built = || {
        binary("hako")?;
        binary("hako-vmm").map(drop)
    };
    let trials = vec![
        require::trial(
            "check_reports_this_host",
            || {
                require::kvm()?;
                built()
            },
            check_reports_this_host,
        ),
        require::trial(
            "check_names_a_missing_kvm_device",
            built,
            missing_device_fails_with_reason,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
