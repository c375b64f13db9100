//! The contract between the runtime and the in-guest agent: the ttrpc services and protobuf
//! messages generated at build time from `protos/` (never committed), the API version, and the
//! constants both sides need.
#![forbid(unsafe_code)]

/// Generated from `protos/agent.proto`.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// Generated ttrpc client and server for `AgentService`.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// Generated from `protos/health.proto`.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/health.rs"));
}

/// Generated ttrpc client and server for `Health`.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod health_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/health_ttrpc.rs"));
}

#[cfg(feature = "netlink")]
pub mod netlink;
pub mod policy;

/// The API version (`Health.Version`): a runtime refuses an agent of another major.
pub const API_MAJOR: u32 = 1;
pub const API_MINOR: u32 = 0;

/// vsock port the agent's ttrpc API listens on.
pub const AGENT_API_PORT: u32 = 1024;
/// vsock port the agent sends its logs to.
pub const AGENT_LOG_PORT: u32 = 1025;
/// virtio-fs tag of the sandbox's shared directory.
pub const SHARED_FS_TAG: &str = "hako-shared";
/// Where the agent mounts the shared directory in the guest. One component: libcontainer
/// resolves a container's root (`<this>/<id>/rootfs`) with realpath(3) eight times per
/// container, one `readlink` per component each time.
pub const SHARED_FS_MOUNT_POINT: &str = "/hako-shared";
/// The storage that mounts the sandbox's shared directory (virtio-fs, tag
/// [`SHARED_FS_TAG`]) at [`SHARED_FS_MOUNT_POINT`]: what every CreateSandbox carries.
pub fn shared_fs_storage() -> agent::Storage {
    let mut s = agent::Storage::new();
    s.driver = "virtiofs".into();
    s.source = SHARED_FS_TAG.into();
    s.fstype = "virtiofs".into();
    s.mount_point = SHARED_FS_MOUNT_POINT.into();
    s
}

/// Directories the guest image must hold for the agent (relative to `/`).
pub const GUEST_IMAGE_DIRS: &[&str] = &["dev", "etc", "proc", "run", "sys", "tmp"];

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[test]
    fn messages_round_trip_through_the_wire_format() {
        let mut req = agent::CreateContainerRequest::new();
        req.container_id = "c1".into();
        req.oci_spec_json = br#"{"ociVersion":"1.0.2"}"#.to_vec();
        let mut storage = agent::Storage::new();
        storage.driver = "virtiofs".into();
        storage.mount_point = SHARED_FS_MOUNT_POINT.into();
        req.storages.push(storage);
        let bytes = req.write_to_bytes().unwrap();
        let back = agent::CreateContainerRequest::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let mut req = agent::ExecProcessRequest::new();
        req.container_id = "c".repeat(100);
        let bytes = req.write_to_bytes().unwrap();
        for cut in [1, 10, bytes.len() - 1] {
            assert!(agent::ExecProcessRequest::parse_from_bytes(&bytes[..cut]).is_err());
        }
    }
}
