//! virtio-fs served in-process by fuse-backend-rs's passthrough file system over one shared
//! host directory. A request filter (`guard.rs`) runs before the passthrough: it refuses
//! lookups of `.` and `..` (the passthrough allows them for NFS export, which would let a
//! guest walk above the shared directory), the making of device nodes, and, for a read-only
//! share, every request that would change it. The passthrough itself opens each name with
//! O_NOFOLLOW relative to its parent's descriptor and opens only regular files and directories
//! (never a symlink or a device node); `tests/suites/fs_confinement.rs` plays a hostile guest
//! against all of it. The guard and the server read the same host copy of each request
//! (`request.rs`), never guest memory the guest could rewrite between the two.

mod device;
mod guard;
mod request;

pub use device::{COUNTERS, Fs, FsError};
