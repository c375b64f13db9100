//! The contract between the runtime and the in-guest agent. The protobuf/ttrpc definitions
//! arrive with the agent issue; the constants both sides need live here already.
#![forbid(unsafe_code)]

/// vsock port the agent's ttrpc API listens on.
pub const AGENT_API_PORT: u32 = 1024;
/// vsock port the agent sends its logs to.
pub const AGENT_LOG_PORT: u32 = 1025;
/// virtio-fs tag of the sandbox's shared directory.
pub const SHARED_FS_TAG: &str = "hako-shared";
/// Where the agent mounts the shared directory in the guest.
pub const SHARED_FS_MOUNT_POINT: &str = "/run/hako/shared";
/// Directories the guest image must hold for the agent (relative to `/`).
pub const GUEST_IMAGE_DIRS: &[&str] = &["dev", "etc", "proc", "run", "sys", "tmp"];
