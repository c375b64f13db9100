//! virtio-vsock with Firecracker-compatible hybrid vsock on the host: a host client connects
//! to the device's Unix socket and writes `CONNECT <port>\n`, then reads `OK <host-port>\n`
//! and talks to guest port `<port>`; a guest connection to host port P is passed to the Unix
//! socket `<uds_path>_P`. Stream sockets only, with credit-based flow control.

mod connection;
pub(crate) mod device;
pub(crate) mod hybrid;
pub(crate) mod muxer;
pub(crate) mod packet;

pub use device::{COUNTERS, Vsock, VsockError};

/// The host's context id.
pub const HOST_CID: u64 = 2;
