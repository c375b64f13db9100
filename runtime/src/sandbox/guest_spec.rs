//! OCI config adjustments for a container that runs inside a sandbox VM rather than on the
//! host, beyond the paths (`volumes.rs`): the VM is the pod's "host".

use serde_json::Value;

/// Fits a container's config to the guest:
/// - its `hooks` are dropped: they name host binaries and run on the host (`crate::hooks`);
///   in the guest, libcontainer would look for those paths there and fail the container;
/// - a container that shares the host's UTS namespace (Kubernetes hostNetwork pods) cannot
///   set a hostname of its own; in a sandbox the guest is that host and already carries the
///   pod's hostname (CreateSandbox), so the container's `hostname` is dropped.
pub fn fit(spec: &mut Value) {
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("hooks");
    }
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

/// The lines of the pod's resolv.conf (the file the spec bind-mounts at /etc/resolv.conf, as
/// CRI does), for the guest's own resolver (CreateSandbox's `dns`); none when the spec has no
/// such mount or the file cannot be read.
pub fn resolv_conf(spec: &Value) -> Vec<String> {
    spec.pointer("/mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| m.get("destination").and_then(Value::as_str) == Some("/etc/resolv.conf"))
        .and_then(|m| m.get("source").and_then(Value::as_str))
        .and_then(read_small_file)
        .map(|text| {
            text.lines()
                .map(str::trim)
                // A line that was not UTF-8 (now with U+FFFD in it) would mean nothing to
                // the guest's resolver.
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('\u{fffd}'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The most of a resolv.conf that is read.
const RESOLV_CONF_BYTES: u64 = 64 * 1024;

/// The first [`RESOLV_CONF_BYTES`] of a regular file, bytes that are not UTF-8 replaced. A
/// spec may name a FIFO or a device: the file is opened `O_NONBLOCK` (opening a FIFO
/// otherwise waits for a writer) and what was opened must be a regular file, so the runtime
/// never waits on one nor reads without end. Symlinks are followed: the source is the
/// caller's (systemd-resolved's resolv.conf is one), not a path a guest can write.
fn read_small_file(path: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(RESOLV_CONF_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolv_conf_that_is_not_a_regular_file_is_not_read() {
        for source in ["/dev/zero", "/proc/self", "/nonexistent"] {
            let spec = serde_json::json!({"mounts": [
                {"destination": "/etc/resolv.conf", "source": source}
            ]});
            assert!(resolv_conf(&spec).is_empty(), "{source}");
        }
    }

    #[test]
    fn a_resolv_conf_that_is_a_fifo_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("resolv.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Through a symlink too (the caller's resolv.conf may be one).
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for source in [fifo, link] {
            let spec = serde_json::json!({"mounts": [
                {"destination": "/etc/resolv.conf", "source": source}
            ]});
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(resolv_conf(&spec));
            });
            let lines = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("reading a FIFO resolv.conf hung");
            assert!(lines.is_empty(), "{lines:?}");
        }
    }

    #[test]
    fn a_resolv_conf_is_read_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resolv.conf");
        let mut text = b"nameserver 10.0.0.1\n\xff\n".to_vec();
        text.extend(std::iter::repeat_n(b'#', 1 << 20));
        text.extend_from_slice(b"\nnameserver 10.0.0.2\n");
        std::fs::write(&file, text).unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let spec = serde_json::json!({"mounts": [
            {"destination": "/etc/resolv.conf", "source": link}
        ]});
        assert_eq!(resolv_conf(&spec), ["nameserver 10.0.0.1"]);
    }

    #[test]
    fn the_pods_resolv_conf_is_read_from_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resolv.conf");
        std::fs::write(
            &file,
            "# made by CRI\nsearch default.svc\n\nnameserver 10.96.0.10\n",
        )
        .unwrap();
        let spec = serde_json::json!({"mounts": [
            {"destination": "/proc", "source": "proc"},
            {"destination": "/etc/resolv.conf", "source": file, "options": ["rbind", "ro"]}
        ]});
        assert_eq!(
            resolv_conf(&spec),
            ["search default.svc", "nameserver 10.96.0.10"]
        );
        assert!(resolv_conf(&serde_json::json!({"mounts": []})).is_empty());
        let missing = serde_json::json!({"mounts": [
            {"destination": "/etc/resolv.conf", "source": "/nonexistent/resolv.conf"}
        ]});
        assert!(resolv_conf(&missing).is_empty());
    }

    #[test]
    fn hooks_never_reach_the_guest() {
        let mut spec = serde_json::json!({"hooks": {"prestart": [{"path": "/usr/bin/dockerd"}]}});
        fit(&mut spec);
        assert!(spec.get("hooks").is_none(), "{spec}");
    }

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
