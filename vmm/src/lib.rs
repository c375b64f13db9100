//! hako-vmm: the virtual machine monitor of one Hako sandbox. This foundation carries the
//! KVM probe that `hako check` runs; booting Linux guests arrives with the VMM issue.
#![deny(unsafe_code)]

pub mod arch;
pub mod probe;
