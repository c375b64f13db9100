//! virtio-blk backed by a raw image file: read, write, flush and get-id requests, an optional
//! read-only mode. Requests are parsed apart from file I/O (`request.rs`) so malformed chains
//! are tested without a guest.

mod device;
pub(crate) mod request;

pub use device::{Block, BlockError, COUNTERS};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Feature bits.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
