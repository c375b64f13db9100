//! The OCI spec as the agent receives it: parsed from JSON, the container id checked, and the
//! root path resolved inside the guest (relative paths are under the container's directory
//! on the shared file system and may not climb out of it).

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

/// What is wrong with a create request's spec or id.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container id {0:?} must be 1 to 128 characters of letters, digits, '_', '-' and '.'")]
    Id(String),
    #[error("the OCI spec is not valid JSON for runtime-spec")]
    Parse(#[source] serde_json::Error),
    #[error("the OCI spec has no root")]
    NoRoot,
    #[error("the OCI spec has no process")]
    NoProcess,
    #[error("root.path {0:?} climbs out of the container's directory")]
    RootEscape(PathBuf),
    #[error("root.path {0} does not exist in the guest")]
    RootMissing(PathBuf),
    #[error("the pod's sandbox container {0:?} is not running in this sandbox")]
    NoSandbox(String),
}

pub fn check_id(id: &str) -> Result<(), SpecError> {
    let ok = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Id(id.to_owned()))
    }
}

pub fn parse(json: &[u8]) -> Result<Spec, SpecError> {
    let spec: Spec = serde_json::from_slice(json).map_err(SpecError::Parse)?;
    if spec.process().is_none() {
        return Err(SpecError::NoProcess);
    }
    Ok(spec)
}

/// The container's cgroup path: linux.cgroupsPath, or `/hako/<id>` written into the spec
/// when it has none (so the agent knows where its processes and statistics are).
pub fn cgroups_path(spec: &mut Spec, id: &str) -> PathBuf {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let path = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/hako/{id}")));
    linux.set_cgroups_path(Some(path.clone()));
    spec.set_linux(Some(linux));
    path
}

/// CRI annotations that say what a container is in its pod.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a container is in its pod, from the CRI annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// The pod's sandbox (pause) container: the other containers join its namespaces.
    Sandbox,
    /// A container of the pod whose sandbox container has this id.
    Member(String),
    /// No pod annotations: a container on its own.
    Alone,
}

pub fn pod_role(spec: &Spec) -> PodRole {
    let annotations = spec.annotations().clone().unwrap_or_default();
    match annotations.get(CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => PodRole::Sandbox,
        Some("container") => annotations
            .get(SANDBOX_ID)
            .map_or(PodRole::Alone, |id| PodRole::Member(id.clone())),
        _ => PodRole::Alone,
    }
}

/// Fits the spec's namespaces to the sandbox VM. Namespace paths in a spec the host wrote name
/// host namespaces, which do not exist in the guest: the pod's network is the VM's own, so a
/// network namespace with a path is dropped (the container shares the guest's); a pod member
/// joins its sandbox container's IPC, UTS and (when the spec asks to share one) PID
/// namespaces through `/proc/<sandbox init>/ns/`; any other path is dropped, giving the
/// container a private namespace of that type.
pub fn fit_namespaces(spec: &mut Spec, sandbox_init: Option<i32>) {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let Some(namespaces) = linux.namespaces().clone() else {
        return;
    };
    let mut joined_uts = false;
    let fitted: Vec<_> = namespaces
        .into_iter()
        .filter_map(|mut ns| {
            if ns.path().is_none() {
                return Some(ns);
            }
            match (ns.typ(), sandbox_init) {
                (T::Network, _) => None,
                (t @ (T::Ipc | T::Uts | T::Pid), Some(pid)) => {
                    let name = match t {
                        T::Ipc => "ipc",
                        T::Uts => "uts",
                        _ => "pid",
                    };
                    joined_uts |= t == T::Uts;
                    ns.set_path(Some(PathBuf::from(format!("/proc/{pid}/ns/{name}"))));
                    Some(ns)
                }
                _ => {
                    ns.set_path(None);
                    Some(ns)
                }
            }
        })
        .collect();
    linux.set_namespaces(Some(fitted));
    spec.set_linux(Some(linux));
    if joined_uts {
        // The sandbox's UTS namespace already has the pod's hostname.
        spec.set_hostname(None);
    }
}

/// Makes `root.path` absolute: a relative path is taken under `container_dir`.
pub fn resolve_root(spec: &mut Spec, container_dir: &Path) -> Result<PathBuf, SpecError> {
    let mut root = spec.root().clone().ok_or(SpecError::NoRoot)?;
    let path = root.path().clone();
    let resolved = if path.is_absolute() {
        path
    } else {
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(SpecError::RootEscape(path));
        }
        container_dir.join(path)
    };
    if !resolved.is_dir() {
        return Err(SpecError::RootMissing(resolved));
    }
    root.set_path(resolved.clone());
    spec.set_root(Some(root));
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1_2.x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_roots_resolve_under_the_container_dir_and_may_not_escape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut spec = parse(MINIMAL.as_bytes()).unwrap();
        let root = resolve_root(&mut spec, dir.path()).unwrap();
        assert_eq!(root, dir.path().join("rootfs"));
        assert_eq!(spec.root().as_ref().unwrap().path(), &root);

        let escape = MINIMAL.replace("\"rootfs\"", "\"../../etc\"");
        let mut spec = parse(escape.as_bytes()).unwrap();
        assert!(matches!(
            resolve_root(&mut spec, dir.path()),
            Err(SpecError::RootEscape(_))
        ));
        let missing = MINIMAL.replace("\"rootfs\"", "\"nothere\"");
        let mut spec = parse(missing.as_bytes()).unwrap();
        assert!(matches!(
            resolve_root(&mut spec, dir.path()),
            Err(SpecError::RootMissing(_))
        ));
    }

    #[test]
    fn a_missing_cgroup_path_gets_a_default_under_hako() {
        let mut spec = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(cgroups_path(&mut spec, "c9"), PathBuf::from("/hako/c9"));
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/hako/c9"))
        );
    }

    #[test]
    fn pod_members_join_the_sandbox_and_host_paths_are_dropped() {
        let json = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"hostname":"app",
            "process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},
            "annotations":{"io.kubernetes.cri.container-type":"container",
                           "io.kubernetes.cri.sandbox-id":"pod1"},
            "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},
                {"type":"network","path":"/var/run/netns/cni-1"},
                {"type":"ipc","path":"/proc/99/ns/ipc"},
                {"type":"uts","path":"/proc/99/ns/uts"},
                {"type":"cgroup","path":"/proc/99/ns/cgroup"}]}}"#;
        let mut spec = parse(json.as_bytes()).unwrap();
        assert_eq!(pod_role(&spec), PodRole::Member("pod1".into()));
        fit_namespaces(&mut spec, Some(42));
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let paths: Vec<String> = ns
            .iter()
            .map(|n| format!("{}={:?}", n.typ(), n.path()))
            .collect();
        assert_eq!(
            paths,
            [
                "pid=None",
                "mnt=None",
                "ipc=Some(\"/proc/42/ns/ipc\")",
                "uts=Some(\"/proc/42/ns/uts\")",
                "cgroup=None"
            ]
        );
        assert_eq!(spec.hostname(), &None, "the sandbox's hostname is kept");
    }

    #[test]
    fn roles_come_from_cri_annotations() {
        let mut spec = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(pod_role(&spec), PodRole::Alone);
        let mut a = std::collections::HashMap::new();
        a.insert(CONTAINER_TYPE.to_owned(), "sandbox".to_owned());
        spec.set_annotations(Some(a));
        assert_eq!(pod_role(&spec), PodRole::Sandbox);
    }

    #[test]
    fn malformed_specs_are_named() {
        assert!(matches!(parse(b"{not json"), Err(SpecError::Parse(_))));
        assert!(matches!(
            parse(br#"{"ociVersion":"1.0.2"}"#),
            Err(SpecError::NoProcess)
        ));
        let e = parse(br#"{"ociVersion":"1.0.2","process":{"args":"true"}}"#).unwrap_err();
        assert!(matches!(e, SpecError::Parse(_)));
    }
}
