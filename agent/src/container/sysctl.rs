//! A pod's network sysctls. A container that shares the pod's network namespace (CRI's
//! sandbox and its members: the spec names the pod's namespace by a host path, which
//! `spec::fit_namespaces` drops) runs in the guest's own network namespace: the VM is the pod's
//! network. libcontainer refuses `net.*` sysctls for a container in its runtime's network
//! namespace, so the agent takes them out of the spec and writes them itself, into the VM's
//! namespace, as runc would have written them into the pod's. containerd 2.x asks for two on
//! every pod by default (`net.ipv4.ip_unprivileged_port_start`, `net.ipv4.ping_group_range`);
//! Kubernetes' "safe" sysctls are more of the kind.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {0:?} is not a network sysctl name (net.<word>.<word>...)")]
    Name(String),
    #[error("sysctl {key}: writing {path}")]
    Write {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pod's network sysctls {0:?} would change this host's network namespace (the agent runs as a host process, not in a VM)"
    )]
    NotInVm(Vec<String>),
}

/// Takes the `net.*` sysctls out of `spec` when the container has no network namespace of
/// its own (after `fit_namespaces`); the others stay for libcontainer.
pub fn take_pod_net_sysctls(spec: &mut Spec) -> Vec<(String, String)> {
    let Some(mut linux) = spec.linux().clone() else {
        return Vec::new();
    };
    let own_netns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::Network);
    let Some(mut sysctls) = linux.sysctl().clone() else {
        return Vec::new();
    };
    if own_netns {
        return Vec::new();
    }
    let mut taken: Vec<(String, String)> = sysctls
        .iter()
        .filter(|(k, _)| k.starts_with("net."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if taken.is_empty() {
        return taken;
    }
    taken.sort();
    sysctls.retain(|k, _| !k.starts_with("net."));
    linux.set_sysctl(Some(sysctls));
    spec.set_linux(Some(linux));
    taken
}

/// The file of sysctl `key` under `proc_sys` (`/proc/sys` in the VM). Only `net.` names of
/// plain words: a name comes from the host's config, but never names a path outside. As in
/// sysctl(8) and runc, a `/` in a word stands for a dot in that file name (an interface
/// `eth0.100` is `net.ipv4.conf.eth0/100.rp_filter`, as Kubernetes writes it).
fn file_of(proc_sys: &Path, key: &str) -> Result<PathBuf, SysctlError> {
    let words: Vec<String> = key.split('.').map(|w| w.replace('/', ".")).collect();
    let plain = |w: &String| {
        !w.is_empty()
            && w != "."
            && w != ".."
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    };
    if words.len() < 3 || words[0] != "net" || !words.iter().all(plain) {
        return Err(SysctlError::Name(key.to_owned()));
    }
    Ok(words.iter().fold(proc_sys.to_path_buf(), |p, w| p.join(w)))
}

/// Writes each sysctl under `proc_sys`; the first failure stops it, naming the sysctl.
pub fn write_all(proc_sys: &Path, sysctls: &[(String, String)]) -> Result<(), SysctlError> {
    for (key, value) in sysctls {
        let path = file_of(proc_sys, key)?;
        let write = || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            f.write_all(value.as_bytes())
        };
        write().map_err(|source| SysctlError::Write {
            key: key.clone(),
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn net_sysctls_are_taken_only_without_a_network_namespace() {
        let sysctls = serde_json::json!({
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": "0 2147483647",
            "kernel.shm_rmid_forced": "1"
        });
        let mut pod = spec(serde_json::json!({"ociVersion": "1.0.2", "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}],
            "sysctl": sysctls
        }}));
        let taken = take_pod_net_sysctls(&mut pod);
        assert_eq!(
            taken,
            [
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("net.ipv4.ping_group_range".into(), "0 2147483647".into())
            ]
        );
        let left = pod.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["kernel.shm_rmid_forced"]);
        let mut own = spec(serde_json::json!({"ociVersion": "1.0.2", "linux": {
            "namespaces": [{"type": "network"}], "sysctl": sysctls
        }}));
        assert!(take_pod_net_sysctls(&mut own).is_empty());
        assert_eq!(
            own.linux()
                .as_ref()
                .unwrap()
                .sysctl()
                .as_ref()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn sysctls_are_written_under_proc_sys_and_bad_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ipv4 = dir.path().join("net/ipv4");
        std::fs::create_dir_all(&ipv4).unwrap();
        std::fs::write(ipv4.join("ping_group_range"), "1 0").unwrap();
        write_all(
            dir.path(),
            &[("net.ipv4.ping_group_range".into(), "0 2147483647".into())],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(ipv4.join("ping_group_range")).unwrap(),
            "0 2147483647"
        );
        // A dotted interface name, written with a slash.
        let conf = dir.path().join("net/ipv4/conf/eth0.100");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("rp_filter"), "1").unwrap();
        write_all(
            dir.path(),
            &[("net.ipv4.conf.eth0/100.rp_filter".into(), "2".into())],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("rp_filter")).unwrap(),
            "2"
        );
        for bad in [
            "net..x",
            "kernel.x.y",
            "net.ipv4",
            "net.ipv4/../../x.y",
            "net.a.b c",
            "net.ipv4.//.x",
            "net.ipv4./.x",
        ] {
            assert!(
                matches!(
                    write_all(dir.path(), &[(bad.into(), "1".into())]),
                    Err(SysctlError::Name(_))
                ),
                "{bad}"
            );
        }
        let missing = write_all(dir.path(), &[("net.ipv4.nope".into(), "1".into())]);
        assert!(
            matches!(missing, Err(SysctlError::Write { ref key, .. }) if key == "net.ipv4.nope")
        );
        // A symlink there is not followed.
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), ipv4.join("link")).unwrap();
        assert!(write_all(dir.path(), &[("net.ipv4.link".into(), "1".into())]).is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }
}
