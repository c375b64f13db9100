//! What goes into a guest image: directories, files (bytes), symlinks and device nodes,
//! keyed by absolute path so the order is always the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors building a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image path {0:?} must be absolute, normalized and not the root")]
    BadPath(String),
    #[error("image path {path} needs {parent} to be a directory, but it is already something else")]
    ParentNotDir { path: String, parent: String },
    #[error("image path {0} is added twice")]
    Duplicate(String),
    #[error(
        "{path} is dynamically linked (interpreter {interpreter}); guest images need static binaries (build with -C target-feature=+crt-static)"
    )]
    Dynamic { path: PathBuf, interpreter: String },
    #[error("{path} is not an x86-64 ELF executable: {reason}")]
    NotElf { path: PathBuf, reason: String },
}

/// One image entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An image's entries by path (without the leading `/`), sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, Entry>,
}

impl Manifest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry at an absolute image path; parents are added as 0755 directories.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<&mut Self, ManifestError> {
        let rel = normalize(path)?;
        let parents: Vec<String> = Path::new(&rel)
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // Check everything first, so a refused entry changes nothing.
        for parent in &parents {
            if matches!(self.entries.get(parent), Some(e) if !matches!(e, Entry::Dir { .. })) {
                return Err(ManifestError::ParentNotDir {
                    path: path.to_string(),
                    parent: format!("/{parent}"),
                });
            }
        }
        match self.entries.get(&rel) {
            // A directory that only exists as an implied parent may be given explicitly.
            Some(Entry::Dir { .. }) if matches!(entry, Entry::Dir { .. }) => {}
            Some(_) => return Err(ManifestError::Duplicate(path.to_string())),
            None => {}
        }
        for parent in parents {
            self.entries
                .entry(parent)
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(rel, entry);
        Ok(self)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, ManifestError> {
        self.add(path, Entry::Dir { mode })
    }

    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        data: Vec<u8>,
    ) -> Result<&mut Self, ManifestError> {
        self.add(path, Entry::File { mode, data })
    }

    /// Adds a host file, keeping only its bytes (never its owner or times).
    pub fn host_file(
        &mut self,
        path: &str,
        mode: u32,
        source: &Path,
    ) -> Result<&mut Self, ManifestError> {
        let data = std::fs::read(source).map_err(|e| ManifestError::Read {
            path: source.into(),
            source: e,
        })?;
        self.file(path, mode, data)
    }

    /// Adds a host executable after checking it is a static x86-64 ELF binary.
    pub fn static_binary(&mut self, path: &str, source: &Path) -> Result<&mut Self, ManifestError> {
        let data = std::fs::read(source).map_err(|e| ManifestError::Read {
            path: source.into(),
            source: e,
        })?;
        crate::elf::check_static_x86_64(&data, source)?;
        self.file(path, 0o755, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, ManifestError> {
        self.add(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, ManifestError> {
        self.add(path, Entry::CharDev { mode, major, minor })
    }

    /// Entries in path order (parents before children).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn normalize(path: &str) -> Result<String, ManifestError> {
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| ManifestError::BadPath(path.to_string()))?;
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(rel.to_string())
    } else {
        Err(ManifestError::BadPath(path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implied_and_order_is_sorted() {
        let mut m = Manifest::new();
        m.file("/usr/bin/x", 0o755, vec![1]).unwrap();
        m.dir("/a", 0o700).unwrap();
        let paths: Vec<_> = m.entries().map(|(p, _)| p).collect();
        assert_eq!(paths, ["a", "usr", "usr/bin", "usr/bin/x"]);
    }

    #[test]
    fn bad_and_duplicate_paths_are_refused() {
        let mut m = Manifest::new();
        for bad in ["relative", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(
                matches!(m.dir(bad, 0o755), Err(ManifestError::BadPath(_))),
                "{bad}"
            );
        }
        m.file("/f", 0o644, vec![]).unwrap();
        assert!(matches!(
            m.file("/f", 0o644, vec![]),
            Err(ManifestError::Duplicate(_))
        ));
        // A file cannot be a parent, and the refused entry leaves nothing behind.
        assert!(matches!(
            m.file("/f/g", 0o644, vec![]),
            Err(ManifestError::ParentNotDir { .. })
        ));
        assert!(m.file("/new/f", 0o644, vec![]).is_ok());
        assert!(matches!(
            m.file("/f/h/i", 0o644, vec![]),
            Err(ManifestError::ParentNotDir { .. })
        ));
        assert!(m.entries().all(|(p, _)| p != "f/h"));
        // An implied parent directory may be declared afterwards.
        m.file("/d/f", 0o644, vec![]).unwrap();
        m.dir("/d", 0o700).unwrap();
    }
}
