//! virtio-net over a host tap device: frames (with their virtio-net header, which the tap
//! reads and writes as is) move between the guest's RX/TX queues and the tap, with checksum
//! and TSO offloads passed through when the guest accepts them.

pub mod device;
pub mod frame;
pub mod rate;
pub mod tap;

pub use device::{COUNTERS, Net};
pub use frame::MAX_FRAME;
pub use tap::{Tap, TapError};

/// Feature bits (virtio 1.2, 5.1.3).
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;

/// `VIRTIO_NET_S_LINK_UP` in the status field.
pub const LINK_UP: u16 = 1;
