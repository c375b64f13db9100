//! Writes a manifest as a directory tree (for a virtio-fs root). Device nodes need root
//! (mknod); without it they are skipped and reported, since the agent mounts devtmpfs anyway.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::{Entry, Manifest};

/// Errors writing the tree.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path} already exists and is not empty")]
    NotEmpty { path: PathBuf },
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.into(),
        source,
    }
}

/// Writes the tree under `root` (created; must be absent or empty). Returns the paths of
/// device nodes that could not be created.
pub fn write(manifest: &Manifest, root: &Path) -> Result<Vec<String>, DirError> {
    if root.exists() && std::fs::read_dir(root).map_err(io(root))?.next().is_some() {
        return Err(DirError::NotEmpty { path: root.into() });
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let mut skipped = Vec::new();
    for (rel, entry) in manifest.entries() {
        let path = root.join(rel);
        match entry {
            // Modes are set after the contents (below), so a read-only directory can be filled.
            Entry::Dir { .. } => std::fs::create_dir_all(&path).map_err(io(&path))?,
            Entry::File { mode, data } => {
                std::fs::write(&path, data).map_err(io(&path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                    .map_err(io(&path))?;
            }
            Entry::Symlink { target } => symlink(target, &path).map_err(io(&path))?,
            Entry::CharDev { mode, major, minor } => {
                // mknod(1) keeps this crate free of unsafe code.
                let made = Command::new("mknod")
                    .args(["-m", &format!("{mode:o}")])
                    .arg(&path)
                    .args(["c", &major.to_string(), &minor.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !made {
                    skipped.push(format!("/{rel}"));
                }
            }
        }
    }
    // Deepest first, so a directory is still writable while its children get their modes.
    let mut dirs: Vec<(&str, u32)> = manifest
        .entries()
        .filter_map(|(rel, e)| match e {
            Entry::Dir { mode } => Some((rel, *mode)),
            _ => None,
        })
        .collect();
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.matches('/').count()));
    for (rel, mode) in dirs {
        let path = root.join(rel);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(&path))?;
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_links_and_modes() {
        let mut m = Manifest::new();
        m.file("/bin/tool", 0o750, b"x".to_vec()).unwrap();
        m.symlink("/bin/alias", "tool").unwrap();
        m.dir("/ro", 0o555).unwrap();
        m.file("/ro/inside", 0o444, b"y".to_vec()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        write(&m, &root).unwrap();
        let meta = std::fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
        assert_eq!(
            std::fs::read_link(root.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(std::fs::read(root.join("ro/inside")).unwrap(), b"y");
        let ro = std::fs::metadata(root.join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
        // A second write into the now non-empty directory is refused.
        assert!(matches!(write(&m, &root), Err(DirError::NotEmpty { .. })));
    }
}
