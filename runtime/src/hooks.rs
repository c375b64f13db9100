//! OCI hooks (prestart, createRuntime, poststart, poststop) run on the host with the
//! container's state on stdin, in the order the config lists them, each within its timeout.
//! They are taken from the config once, at create, and kept with the container (as runc
//! does): a bundle edited or removed after `create` changes nothing.
//!
//! The guest never sees them: their paths are host paths (Docker's libnetwork hook is
//! dockerd's own binary). `createContainer` and `startContainer` hooks, which the OCI spec
//! runs in the container's mount namespace, cannot run there: the container is in the
//! guest and the hook's binary on the host. They are not run, and `create` says so.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The hook kinds that need the container's mount namespace, which is in the guest.
pub const IN_CONTAINER: [&str; 2] = ["createContainer", "startContainer"];

/// The config's `hooks` object (empty when it has none: a null in a container record means
/// one written before records kept them).
pub fn of(spec: &Value) -> Value {
    spec.get("hooks")
        .filter(|h| h.is_object())
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The hook kinds in `hooks` that cannot be run (see [`IN_CONTAINER`]).
pub fn unsupported(hooks: &Value) -> Vec<&'static str> {
    IN_CONTAINER
        .into_iter()
        .filter(|k| {
            hooks
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        })
        .collect()
}

/// The OCI state a hook gets on stdin (runc's fields).
pub fn state(id: &str, status: &str, pid: u32, bundle: &Path, annotations: &Value) -> Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    })
}

/// [`run`] for each of `kinds` in turn, off the async runtime (a hook may take its time).
pub async fn run_async(hooks: &Value, kinds: &[&'static str], state: Value) -> anyhow::Result<()> {
    if kinds.iter().all(|k| hooks.get(*k).is_none()) {
        return Ok(());
    }
    let hooks = hooks.clone();
    let kinds = kinds.to_vec();
    tokio::task::spawn_blocking(move || kinds.iter().try_for_each(|k| run(&hooks, k, &state)))
        .await
        .context("the hook runner panicked")?
}

/// Runs the hooks of `kind` from `hooks` (a config's `hooks` object), stopping at the first
/// failure.
pub fn run(hooks: &Value, kind: &str, state: &Value) -> anyhow::Result<()> {
    let Some(hooks) = hooks.get(kind).and_then(Value::as_array) else {
        return Ok(());
    };
    let input = serde_json::to_vec(state)?;
    for (n, hook) in hooks.iter().enumerate() {
        let path = hook
            .get("path")
            .and_then(Value::as_str)
            .with_context(|| format!("{kind} hook {n} has no path"))?;
        let args: Vec<String> = hook
            .get("args")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut cmd = Command::new(path);
        if let Some((argv0, rest)) = args.split_first() {
            use std::os::unix::process::CommandExt;
            cmd.arg0(argv0).args(rest);
        }
        if let Some(env) = hook.get("env").and_then(Value::as_array) {
            cmd.env_clear();
            for kv in env.iter().filter_map(Value::as_str) {
                if let Some((k, v)) = kv.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        let timeout = hook
            .get("timeout")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {kind} hook {path}"))?;
        // Its stdin and stderr are served by threads of their own: a hook that reads no
        // stdin, or writes more stderr than a pipe holds, must not stop this one before its
        // deadline.
        if let Some(mut stdin) = child.stdin.take() {
            let input = input.clone();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                let _ = err_tx.send(tail(stderr, STDERR_TAIL));
            });
        }
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if timeout.is_some_and(|t| start.elapsed() > t) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{kind} hook {path} timed out after {:?}",
                    timeout.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            // A child the hook left may hold its stderr open: what came within a second.
            let err = err_rx
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            bail!("{kind} hook {path} failed ({status}): {}", err.trim());
        }
    }
    Ok(())
}

/// How much of a failed hook's stderr its error keeps (the end).
const STDERR_TAIL: usize = 4096;

/// Reads `from` to its end, keeping the last `keep` bytes (as text).
fn tail(mut from: impl std::io::Read, keep: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    let start = kept.len().saturating_sub(keep);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_get_the_state_and_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state");
        let spec = serde_json::json!({"poststart": [
            {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]},
            {"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}
        ]});
        let state = serde_json::json!({"id": "c1", "status": "running"});
        let e = run(&spec, "poststart", &state).unwrap_err().to_string();
        assert!(
            e.contains("poststart hook /bin/sh failed") && e.contains("nope"),
            "{e}"
        );
        let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, state);
        assert!(run(&spec, "prestart", &state).is_ok());
        let slow = serde_json::json!({"prestart": [
            {"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]});
        assert!(
            run(&slow, "prestart", &state)
                .unwrap_err()
                .to_string()
                .contains("timed out")
        );
    }

    #[test]
    fn a_hook_that_reads_nothing_and_floods_stderr_is_still_timed() {
        let state = serde_json::json!({"id": "c1", "annotations": {"a": "x".repeat(1 << 20)}});
        let flood = serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c",
            "head -c 1000000 /dev/zero | tr '\\0' e >&2; sleep 30"], "timeout": 2}]});
        let started = Instant::now();
        let e = run(&flood, "prestart", &state).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let fails = serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c",
            "head -c 100000 /dev/zero | tr '\\0' e >&2; echo the-end >&2; exit 1"]}]});
        let e = run(&fails, "prestart", &state).unwrap_err().to_string();
        assert!(e.ends_with("the-end") && e.len() < 5000, "{}", e.len());
    }

    #[test]
    fn hooks_that_need_the_containers_mount_namespace_are_named() {
        let spec = serde_json::json!({"hooks": {
            "prestart": [{"path": "/bin/true"}],
            "createContainer": [{"path": "/bin/true"}],
            "startContainer": []
        }});
        assert_eq!(unsupported(&of(&spec)), ["createContainer"]);
        assert!(unsupported(&of(&serde_json::json!({}))).is_empty());
        assert!(run(&Value::Null, "prestart", &Value::Null).is_ok());
    }
}
