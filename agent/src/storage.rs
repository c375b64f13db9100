//! Mounts the runtime asks for (`Storage`): the virtio-fs share, tmpfs, binds of guest paths.
//! Mount points must be absolute and free of `..`; every mount is recorded so teardown
//! unmounts in reverse order.

use std::path::{Path, PathBuf};

use hako_agent_api::agent::Storage;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Errors mounting a storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("mount point {0:?} must be an absolute path without `..`")]
    MountPoint(String),
    #[error("storage driver {0:?} is not one of virtiofs, tmpfs, bind")]
    Driver(String),
    #[error("storage {source_name:?} has an empty source")]
    EmptySource { source_name: String },
    #[error("creating mount point {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {source_name:?} ({driver}) on {target}")]
    Mount {
        source_name: String,
        driver: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A checked mount point: absolute, no `..`, no empty components.
pub fn mount_point(raw: &str) -> Result<PathBuf, StorageError> {
    // Checked on the raw text: Path::components() would quietly drop "." and "//".
    let ok = raw.len() > 1
        && raw.starts_with('/')
        && raw[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(Path::new(raw).to_owned())
    } else {
        Err(StorageError::MountPoint(raw.to_owned()))
    }
}

/// Flags and data from fstab-style options.
fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts one storage; returns where.
pub fn mount_storage(s: &Storage) -> Result<PathBuf, StorageError> {
    let target = mount_point(&s.mount_point)?;
    if s.source.is_empty() {
        return Err(StorageError::EmptySource {
            source_name: s.mount_point.clone(),
        });
    }
    let (mut flags, data) = flags_and_data(&s.options);
    let fstype = match s.driver.as_str() {
        "virtiofs" => "virtiofs",
        "tmpfs" => "tmpfs",
        "bind" => {
            flags |= MsFlags::MS_BIND;
            ""
        }
        other => return Err(StorageError::Driver(other.to_owned())),
    };
    std::fs::create_dir_all(&target).map_err(|source| StorageError::Create {
        path: target.clone(),
        source,
    })?;
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(s.source.as_str()),
        &target,
        Some(fstype).filter(|f| !f.is_empty()),
        flags,
        data,
    )
    .map_err(|source| StorageError::Mount {
        source_name: s.source.clone(),
        driver: s.driver.clone(),
        target: target.clone(),
        source,
    })?;
    tracing::info!(source = %s.source, target = %target.display(), driver = %s.driver, "mounted");
    Ok(target)
}

/// Unmounts in reverse order, detaching what is busy; logs what fails.
pub fn unmount_all(mounts: &mut Vec<PathBuf>) {
    while let Some(target) = mounts.pop() {
        if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
            tracing::warn!(target = %target.display(), error = %e, "unmounting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_must_be_absolute_and_plain() {
        assert!(mount_point("/run/hako/shared").is_ok());
        for bad in [
            "run/x",
            "/run/../etc",
            "/run/./x",
            "",
            "/a/b/..",
            "/",
            "/a//b",
            "/a/",
        ] {
            assert!(mount_point(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nosuid", "size=64m", "mode=1777"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = flags_and_data(&opts);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(data, "size=64m,mode=1777");
    }

    #[test]
    fn unknown_drivers_and_empty_sources_are_refused() {
        let mut s = Storage::new();
        s.mount_point = "/mnt/x".into();
        s.driver = "nfs".into();
        s.source = "server:/x".into();
        assert!(matches!(mount_storage(&s), Err(StorageError::Driver(_))));
        s.driver = "tmpfs".into();
        s.source = String::new();
        assert!(matches!(
            mount_storage(&s),
            Err(StorageError::EmptySource { .. })
        ));
    }
}
