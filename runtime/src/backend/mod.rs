//! Where sandboxes run: today one backend, a hako-vmm process per sandbox (`vm.rs`).

pub mod vm;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the hako-vmm binary is: `explicit`, else $HAKO_VMM, else next to this executable,
/// else on $PATH.
pub fn find_vmm(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("HAKO_VMM") {
        return Ok(PathBuf::from(p));
    }
    find_program("hako-vmm")
        .context("hako-vmm was not found next to hako or on PATH (install it, or pass --vmm)")
}

/// A program shipped with Hako: next to this executable, else on $PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let sibling = dir.join(name);
        if sibling.is_file() {
            return Some(sibling);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
