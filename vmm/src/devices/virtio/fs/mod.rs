//! virtio-fs served in-process by fuse-backend-rs's passthrough file system over one shared
//! host directory. A request filter (`guard.rs`) runs before the passthrough: it refuses
//! lookups of `.` and `..` (the passthrough allows them for NFS export, which would let a
//! guest walk above the shared directory) and, for a read-only share, every request that
//! would change it.

mod device;
mod guard;

pub use device::{COUNTERS, Fs, FsError};
