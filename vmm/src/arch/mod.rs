//! Architecture facade: guest memory regions and the boot structures of the target arch.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
