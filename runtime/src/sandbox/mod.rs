//! A sandbox on the host: its state directory under the runtime root, the container root file
//! systems bound into the shared directory, and teardown in reverse order on every path.

pub mod rootfs;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// `<root>/<id>/` and what is in it; removed (after unmounting) when dropped.
pub struct StateDir {
    pub dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl StateDir {
    /// Creates `<root>/<id>`; refuses an id already in use.
    pub fn create(root: &Path, id: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let dir = root.join(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(Self {
                dir,
                mounts: Vec::new(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "container {id:?} already exists ({} is in use)",
                    dir.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }

    /// Records a mount to undo at teardown.
    pub fn mounted(&mut self, target: PathBuf) {
        self.mounts.push(target);
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            rootfs::unbind(&m);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("hako: removing {}: {e}", self.dir.display());
        }
    }
}
