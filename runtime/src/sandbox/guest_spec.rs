//! OCI config adjustments for a container that runs inside a sandbox VM rather than on the
//! host, beyond the paths (`volumes.rs`): the VM is the pod's "host".

use serde_json::Value;

/// A container that shares the host's UTS namespace (Kubernetes hostNetwork pods) cannot set
/// a hostname of its own; in a sandbox the guest is that host and already carries the pod's
/// hostname (CreateSandbox), so the container's `hostname` is dropped.
pub fn fit(spec: &mut Value) {
    let has_uts = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.get("type").and_then(Value::as_str) == Some("uts"))
        });
    if !has_uts && let Some(obj) = spec.as_object_mut() {
        obj.remove("hostname");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_needs_a_uts_namespace() {
        let mut host_uts =
            serde_json::json!({"hostname": "pod1", "linux": {"namespaces": [{"type": "pid"}]}});
        fit(&mut host_uts);
        assert!(host_uts.get("hostname").is_none());
        let mut own_uts =
            serde_json::json!({"hostname": "c", "linux": {"namespaces": [{"type": "uts"}]}});
        fit(&mut own_uts);
        assert_eq!(own_uts["hostname"], "c");
    }
}
