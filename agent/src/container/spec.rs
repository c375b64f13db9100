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
