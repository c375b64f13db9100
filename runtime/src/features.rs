//! What this runtime supports, as the OCI features document (runtime-spec `features.md`):
//! printed by `hako features` and carried in the shim's `-info` answer to containerd 2.x.

use serde_json::{Value, json};

/// The features document.
pub fn document() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        // createContainer and startContainer hooks need the container's mount namespace,
        // which is in the guest (crate::hooks).
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private",
                         "rprivate", "relatime", "strictatime", "mode", "size"],
        "linux": {
            "namespaces": ["pid", "mount", "ipc", "uts", "network", "user", "cgroup"],
            "capabilities": [],
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "io.hako.sandbox": "each container runs in its own KVM sandbox VM",
            "org.opencontainers.runtime-spec.features.version": "1.1.0"
        }
    })
}
