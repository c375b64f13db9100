//! Tier 4 (KVM, root, podman): podman with `--runtime hako`, each container a sandbox VM; the
//! same checks run first with `--runtime runc`, so every assertion is known to hold for the
//! reference runtime. Two trials, one VM each under hako:
//! - `run --rm -it --read-only` (a terminal through a pty harness, `script`): the root is
//!   read-only and podman's tmpfs writable, the exit code propagates, the container is
//!   removed (from podman and from the runtime's root);
//! - `run -d` + `logs` + `exec` (output and exit code) + `stop` + `rm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hako_tests::fixtures;
use hako_tests::podman::{IMAGE, Podman};
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

fn show(o: &std::process::Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (name, podman) for runc and for hako.
fn both() -> Result<Vec<(&'static str, Podman)>, Failed> {
    let hako = fixtures::workspace_binary("hako")?;
    let hako_podman = Podman::new(hako.clone())?;
    let config = hako_podman.dir.path().join("hako.toml");
    // Sandboxes resume the shared template (booted once per test run).
    fixtures::templated_runtime_config(&hako, &config)?;
    let hako_podman = hako_podman.with_hako_config(&config)?;
    Ok(vec![
        ("runc", Podman::new(PathBuf::from("runc"))?),
        ("hako", hako_podman),
    ])
}

fn run_it_rm(name: &str, p: &Podman) -> Result<(), Failed> {
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "-it".into(),
        "--name".into(),
        "it".into(),
        // With the tmpfs mounts podman adds to a read-only container (/tmp, /run, ...).
        "--read-only".into(),
    ];
    args.extend(p.run_flags());
    args.extend([
        IMAGE.to_string(),
        "sh".into(),
        "-c".into(),
        "tty; touch /x 2>/dev/null && exit 1; touch /tmp/x || exit 2; exit 3".into(),
    ]);
    let cmd = p.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // `script` runs the line with a shell: each word quoted.
    let quote = |w: &std::ffi::OsStr| format!("'{}'", w.to_string_lossy().replace('\'', r"'\''"));
    let mut line = vec![quote(cmd.get_program())];
    line.extend(cmd.get_args().map(quote));
    let mut script = Command::new("script");
    script.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    // `script` must see a terminal user who is still there: when its stdin reaches end of file
    // it passes an end-of-file on, podman's attach then ends early and the container's output
    // is lost (measured here with runc: 5 of 15 runs printed nothing). So stdin stays an open,
    // silent pipe until the command has exited.
    let out = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let err = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(out.reopen().map_err(|e| format!("temp file: {e}"))?)
        .stderr(err.reopen().map_err(|e| format!("temp file: {e}"))?)
        .spawn()
        .map_err(|e| format!("script: {e}"))?;
    let held_stdin = child.stdin.take();
    let status = child.wait().map_err(|e| format!("script: {e}"))?;
    drop(held_stdin);
    let o = std::process::Output {
        status,
        stdout: std::fs::read(out.path()).map_err(|e| format!("script output: {e}"))?,
        stderr: std::fs::read(err.path()).map_err(|e| format!("script output: {e}"))?,
    };
    let text = String::from_utf8_lossy(&o.stdout);
    if !text.contains("/dev/pts/") || o.status.code() != Some(3) {
        return Err(format!("{name}: podman run --rm -it: {}", show(&o)).into());
    }
    let o = p.run(&["ps", "-a", "-q"])?;
    if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
        return Err(format!("{name}: --rm left a container: {}", show(&o)).into());
    }
    // Nor a record under the runtime's root (`hako list` would show it).
    if name == "hako" {
        let left: Vec<_> = std::fs::read_dir(&p.hako_root)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !left.is_empty() {
            return Err(format!("{name}: --rm left {left:?} under the runtime root").into());
        }
    }
    Ok(())
}

fn detached(name: &str, p: &Podman, limit: Duration) -> Result<(), Failed> {
    let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), "d1".into()];
    args.extend(p.run_flags());
    args.extend([
        IMAGE.to_string(),
        "sh".into(),
        "-c".into(),
        "echo started; trap 'exit 0' TERM; while true; do sleep 1; done".into(),
    ]);
    let o = p.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    if !o.status.success() {
        return Err(format!("{name}: podman run -d: {}", show(&o)).into());
    }
    let start = Instant::now();
    loop {
        let o = p.run(&["logs", "d1"])?;
        if String::from_utf8_lossy(&o.stdout).contains("started") {
            break;
        }
        if start.elapsed() > limit {
            return Err(
                format!("{name}: podman logs never showed the output: {}", show(&o)).into(),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = p.run(&["exec", "d1", "sh", "-c", "echo exec-out; exit 4"])?;
    if o.status.code() != Some(4) || String::from_utf8_lossy(&o.stdout) != "exec-out\n" {
        return Err(format!("{name}: podman exec: {}", show(&o)).into());
    }
    copy_in_and_top(name, p)?;
    let o = p.run(&["stop", "-t", "30", "d1"])?;
    if !o.status.success() {
        return Err(format!("{name}: podman stop: {}", show(&o)).into());
    }
    let o = p.run(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "d1",
    ])?;
    let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if !state.starts_with("exited") {
        return Err(format!("{name}: after stop the container is {state:?}").into());
    }
    let o = p.run(&["rm", "d1"])?;
    if !o.status.success() {
        return Err(format!("{name}: podman rm: {}", show(&o)).into());
    }
    Ok(())
}

/// `podman cp` into the running container reaches the container's files and never the
/// host's; `podman top` never lists host processes as the container's.
fn copy_in_and_top(name: &str, p: &Podman) -> Result<(), Failed> {
    let src = p.dir.path().join("copied-in");
    std::fs::write(&src, "copied in\n").map_err(|e| e.to_string())?;
    let target = format!("/hako-copied-{name}");
    let cp = p.run(&["cp", &src.display().to_string(), &format!("d1:{target}")])?;
    if Path::new(&target).exists() {
        let _ = std::fs::remove_file(&target);
        return Err(format!("{name}: podman cp wrote the host's {target}: {}", show(&cp)).into());
    }
    let o = p.run(&["exec", "d1", "cat", &target])?;
    let copied = String::from_utf8_lossy(&o.stdout) == "copied in\n";
    eprintln!(
        "{name}: podman cp into a running container: {} ({})",
        if copied { "copied" } else { "refused" },
        show(&cp)
    );
    if cp.status.success() != copied {
        return Err(format!(
            "{name}: podman cp said {} but the container reads {}",
            show(&cp),
            show(&o)
        )
        .into());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.file_name().and_then(|n| n.to_str()).unwrap_or("podman-");
    let top = p.run(&["top", "d1"])?;
    let listed = String::from_utf8_lossy(&top.stdout);
    eprintln!("{name}: podman top: {}", show(&top));
    if listed.contains(&me[..me.len().min(15)]) || listed.contains("conmon") {
        return Err(format!("{name}: podman top lists host processes: {}", show(&top)).into());
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::kvm()?;
    require::program("podman")?;
    require::program("conmon")?;
    require::program("runc")?;
    require::program("script")?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let limit = hako_tests::boot::vm_deadline();
    let trials = vec![
        require::trial("podman_run_it_rm_exit_code", prerequisites, || {
            for (name, p) in both()? {
                run_it_rm(name, &p)?;
            }
            Ok(())
        }),
        require::trial("podman_run_d_logs_exec_stop_rm", prerequisites, move || {
            for (name, p) in both()? {
                detached(name, &p, limit)?;
            }
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, trials).exit()
}
