//! The `start` action: containerd runs it in the bundle directory; it makes sure a shim
//! serves the container's sandbox and replies with that shim's socket address, in the form
//! the caller started it with ([`super::bootstrap`]). Containers of one pod (same
//! `io.kubernetes.cri.sandbox-id`) share one shim and one VM.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use containerd_shim::Flags;

use super::bootstrap::{MAX_INPUT, StartForm};

/// containerd's ttrpc address in the environment of `start` (before 2.3) and of the shim.
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";
/// How long a new shim may take to listen.
const SERVING_WITHIN: Duration = Duration::from_secs(30);

pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Which sandbox a container belongs to, from its OCI config's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// It makes a sandbox of its own (a pod's sandbox container, or a lone container).
    Sandbox,
    /// It joins the named sandbox.
    Member(String),
}

pub fn pod_role(spec: &serde_json::Value) -> PodRole {
    let annotation = |k: &str| {
        spec.pointer("/annotations")
            .and_then(|a| a.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (
        annotation(ANNOTATION_CONTAINER_TYPE).as_deref(),
        annotation(ANNOTATION_SANDBOX_ID),
    ) {
        (Some("container"), Some(sandbox)) if !sandbox.is_empty() => PodRole::Member(sandbox),
        _ => PodRole::Sandbox,
    }
}

/// The id shims are grouped by: the pod's sandbox id, else the container's own.
pub fn grouping(bundle: &Path, id: &str) -> String {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match spec.as_ref().map(pod_role) {
        Some(PodRole::Member(sandbox)) => sandbox,
        _ => id.to_owned(),
    }
}

/// Runs `start`: reads containerd's input, starts (or finds) the sandbox's shim, and returns
/// the reply for stdout. A shim it started is killed again if anything after fails.
pub async fn start(flags: &Flags) -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .context("reading start's input from stdin")?;
    let form = StartForm::of(&input, &flags.id, &flags.namespace);
    let params = match &form {
        StartForm::Bootstrap(p) => Some(p),
        StartForm::Legacy => None,
    };
    // containerd's ttrpc address (for events): the params', else the environment's.
    let ttrpc_address = params
        .map(|p| p.containerd_ttrpc_address.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| std::env::var(TTRPC_ADDRESS_ENV).ok())
        .context("containerd gave no ttrpc address (BootstrapParams or TTRPC_ADDRESS)")?;
    let group = grouping(Path::new("."), &flags.id);
    let address = socket_address(
        &flags.address,
        &flags.namespace,
        &group,
        params.and_then(|p| p.socket_dir.as_deref()),
    );
    let mut shim = spawn(flags, &address, &ttrpc_address)?;
    let started = wait_until_serving(&mut shim).await;
    let reply = started.and_then(|()| {
        std::fs::write("address", &address).context("writing the bundle's address file")?;
        Ok(form.reply(&address))
    });
    if reply.is_err() {
        let _ = shim.start_kill();
        let _ = shim.wait().await;
    }
    reply
}

/// The socket of a group's shim: containerd's usual name (a hash of containerd's address,
/// the namespace and the group) in the (absolute) directory containerd 2.3 chose, else in
/// `/run/containerd/s`.
fn socket_address(containerd: &str, namespace: &str, group: &str, dir: Option<&str>) -> String {
    let usual = containerd_shim::socket_address(containerd, namespace, group);
    match (dir, usual.rsplit_once('/')) {
        (Some(dir), Some((_, hash))) if dir.starts_with('/') => {
            format!("unix://{}/{hash}", dir.trim_end_matches('/'))
        }
        _ => usual,
    }
}

/// Starts the serving shim (this binary without an action), as containerd-shim does.
fn spawn(
    flags: &Flags,
    address: &str,
    ttrpc_address: &str,
) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding the shim binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Read only if it fails to start; afterwards its stdout goes here too, unread.
        .stderr(Stdio::piped())
        .env(TTRPC_ADDRESS_ENV, ttrpc_address)
        .args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", address]);
    if flags.debug {
        cmd.arg("-debug");
    }
    let child = cmd.spawn().context("starting the shim")?;
    if let Some(pid) = child.id()
        && let Err(e) = containerd_shim::cgroup::adjust_oom_score(pid)
    {
        tracing::warn!("setting the shim's OOM score: {e}");
    }
    Ok(child)
}

/// The serving shim closes its stdout once its socket accepts connections (or once it found
/// another shim of the group serving); it failed if it exited with an error.
async fn wait_until_serving(shim: &mut tokio::process::Child) -> anyhow::Result<()> {
    if let Some(mut out) = shim.stdout.take() {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            SERVING_WITHIN,
            tokio::io::AsyncReadExt::read_to_end(&mut out, &mut sink),
        )
        .await
        .context("the shim did not start serving in time")?;
    }
    // A shim that failed closed its stdout by ending: give it a moment to be reaped. One that
    // found its group's shim serving ends with success; one that serves goes on.
    let ended = tokio::time::timeout(Duration::from_millis(500), shim.wait()).await;
    match ended {
        Ok(Ok(status)) if !status.success() => {
            let mut err = String::new();
            if let Some(mut e) = shim.stderr.take() {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await;
            }
            bail!("the shim ended {status}: {}", err.trim())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_members_group_under_their_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(grouping(dir.path(), "lone"), "lone");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(dir.path(), "c1"), "pod1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox",
                "io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(dir.path(), "pod1"), "pod1");
    }
}
