//! Hako's runtime library: the `hako` CLI's commands (today `check`) and, with later issues,
//! the containerd shim, sandbox management and the VM backend.
#![deny(unsafe_code)]

pub mod cli;
