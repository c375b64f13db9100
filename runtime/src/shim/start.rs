//! The `start` action: containerd runs it in the bundle directory; it makes sure a shim
//! serves the container's sandbox and prints that shim's socket address. Containers of one
//! pod (same `io.kubernetes.cri.sandbox-id`) share one shim and one VM.

use std::path::Path;

use containerd_shim::StartOpts;
use containerd_shim::asynchronous::spawn;
use containerd_shim::util::write_str_to_file;

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

pub async fn start(opts: StartOpts) -> containerd_shim::Result<String> {
    let group = grouping(Path::new("."), &opts.id);
    let address = spawn(opts, &group, Vec::new()).await?;
    write_str_to_file("address", &address).await?;
    Ok(address)
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
