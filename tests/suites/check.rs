//! Tier 2 (KVM): `hako check` on this host, through the real binaries (`hako` runs
//! `hako-vmm probe`). On a PVM host it must say in plain words that guest kernel mode is
//! emulated and that guests need Hako's patched kernel.

use std::path::PathBuf;
use std::process::Command;

use hako_tests::{fixtures, require};
use libtest_mimic::{Arguments, Failed};

fn binary(name: &str) -> Result<PathBuf, Failed> {
    fixtures::workspace_binary(name).map_err(Failed::from)
}

fn run_check(json: bool) -> Result<(i32, String), Failed> {
    let hako = binary("hako")?;
    let vmm = binary("hako-vmm")?;
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

fn check_reports_this_host() -> Result<(), Failed> {
    let (code, json) = run_check(true)?;
    let verdict: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| format!("hako check --json printed no JSON ({e}):\n{json}"))?;
    let can_run = verdict["can_run"]
        .as_bool()
        .ok_or_else(|| format!("no can_run in {json}"))?;
    if (code == 0) != can_run {
        return Err(format!("exit status {code} disagrees with can_run={can_run}").into());
    }
    let (text_code, text) = run_check(false)?;
    eprintln!("{text}");
    if text_code != code {
        return Err(format!("--json exited {code} but the text form {text_code}").into());
    }
    if !text.lines().any(|l| {
        l.starts_with("Hako sandboxes can run") || l.starts_with("Hako sandboxes cannot run")
    }) {
        return Err("no verdict line".into());
    }
    let modules: Vec<&str> = verdict["probe"]["kvm_modules"]
        .as_array()
        .map(|m| m.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let pvm = modules.contains(&"kvm_pvm");
    if (modules.contains(&"kvm_intel") || modules.contains(&"kvm_amd")) && !pvm && !can_run {
        return Err(format!(
            "a plain kvm_intel/kvm_amd host must be able to run sandboxes:\n{text}"
        )
        .into());
    }
    if pvm {
        // This development host: KVM on PVM.
        for (key, want) in [
            ("can_run", serde_json::json!(true)),
            ("kernel_mode", serde_json::json!("emulated")),
            ("syscall_enters_kernel", serde_json::json!(false)),
            ("needs_patched_guest_kernel", serde_json::json!(true)),
            ("cpu_profile", serde_json::json!("conservative")),
        ] {
            if verdict[key] != want {
                return Err(format!(
                    "on a kvm_pvm host expected {key} = {want}, got {}",
                    verdict[key]
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
    let hako = binary("hako")?;
    let vmm = binary("hako-vmm")?;
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
    let trials = vec![
        require::trial(
            "check_reports_this_host",
            require::kvm,
            check_reports_this_host,
        ),
        require::trial(
            "check_names_a_missing_kvm_device",
            || Ok(()),
            missing_device_fails_with_reason,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
