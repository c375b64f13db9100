//! `hako features`: what this runtime supports, as the OCI features document.

pub fn features() -> anyhow::Result<u8> {
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
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
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}
