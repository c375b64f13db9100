//! Shared pieces of Hako's cross-binary suites: prerequisites that turn into skips
//! ([`require`]), fixtures built at test time ([`fixtures`]), a VMM process runner that
//! captures the console ([`boot`]), and the hako-vmm and QEMU commands.
#![forbid(unsafe_code)]

pub mod agent;
pub mod boot;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod docker;
pub mod fixtures;
pub mod hako_vmm;
pub mod leaks;
pub mod mounts;
pub mod netns;
pub mod podman;
pub mod qemu;
pub mod require;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Into::into)
        .unwrap_or_default()
}
