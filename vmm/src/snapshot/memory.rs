//! Guest RAM in a snapshot: one file with the regions back to back, written sparse (pages of
//! zeros are holes), and mapped back MAP_PRIVATE so every VM restored from it shares the
//! file's page cache and copies a page only when it writes it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

const PAGE: usize = 4096;

/// Errors writing or mapping the memory file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the memory file {path} holds {have} bytes; the snapshot's RAM needs {want}")]
    Size { path: PathBuf, have: u64, want: u64 },
    #[error("mapping the memory file {path} at offset {offset}")]
    Map {
        path: PathBuf,
        offset: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("the snapshot's memory regions overlap or are out of order")]
    Regions,
}

/// Where one guest RAM region sits in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionLayout {
    pub guest_addr: u64,
    pub size: u64,
    pub file_offset: u64,
}

/// Writes every region of `memory` to a new file at `path`; returns the layout. Only pages
/// holding something are written: a freshly booted guest leaves most of its RAM untouched.
pub fn write(memory: &GuestMemoryMmap, path: &Path) -> Result<Vec<RegionLayout>, MemoryFileError> {
    let io = |what| {
        let path = path.to_owned();
        move |source| MemoryFileError::Io { what, path, source }
    };
    // Owner-only: whoever can write a template's memory controls every VM resumed from it.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating the memory file"))?;
    let mut layout = Vec::new();
    let mut offset = 0u64;
    for region in memory.iter() {
        let size = region.len();
        layout.push(RegionLayout {
            guest_addr: region.start_addr().0,
            size,
            file_offset: offset,
        });
        // SAFETY: the region is a live mapping of `size` bytes owned by `memory`; the vCPUs
        // are paused, so nothing writes it while it is read. Device workers may still touch
        // rings, which the snapshot protocol rules out (no connections, no requests in flight).
        #[allow(unsafe_code)]
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr(), size as usize) };
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                file.write_all_at(page, offset + (i * PAGE) as u64)
                    .map_err(io("writing the memory file"))?;
            }
        }
        offset += size;
    }
    file.set_len(offset).map_err(io("sizing the memory file"))?;
    file.sync_all().map_err(io("syncing the memory file"))?;
    Ok(layout)
}

/// Maps the memory file as guest RAM, copy-on-write.
pub fn map(path: &Path, layout: &[RegionLayout]) -> Result<GuestMemoryMmap, MemoryFileError> {
    let io = |what| {
        let path = path.to_owned();
        move |source| MemoryFileError::Io { what, path, source }
    };
    let file = File::open(path).map_err(io("opening the memory file"))?;
    let have = file
        .metadata()
        .map_err(io("reading the size of the memory file"))?
        .len();
    let want = layout
        .iter()
        .map(|r| r.file_offset.saturating_add(r.size))
        .max()
        .unwrap_or(0);
    if have < want {
        return Err(MemoryFileError::Size {
            path: path.to_owned(),
            have,
            want,
        });
    }
    let mut regions = Vec::new();
    for r in layout {
        let size = usize::try_from(r.size).map_err(|_| MemoryFileError::Regions)?;
        let file = file
            .try_clone()
            .map_err(io("duplicating the memory file"))?;
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::new(file, r.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_PRIVATE)
            .build()
            .map_err(|source| MemoryFileError::Map {
                path: path.to_owned(),
                offset: r.file_offset,
                source,
            })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .ok_or(MemoryFileError::Regions)?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| MemoryFileError::Regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn round_trip_is_sparse_and_copy_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(1 << 32), 1 << 20),
        ])
        .unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        mem.write_obj(7u8, GuestAddress((1 << 32) + 5)).unwrap();
        let layout = write(&mem, &path).unwrap();
        assert_eq!(layout.len(), 2);
        assert_eq!(layout[1].file_offset, 1 << 20);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 2 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            meta.blocks()
        );
        assert_eq!(
            meta.mode() & 0o777,
            0o600,
            "only the owner may read or change it"
        );

        let a = map(&path, &layout).unwrap();
        let b = map(&path, &layout).unwrap();
        assert_eq!(
            a.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert_eq!(a.read_obj::<u8>(GuestAddress((1 << 32) + 5)).unwrap(), 7);
        a.write_obj(1u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            b.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[0x1000..0x1004], &0xdead_beef_u32.to_le_bytes());
    }

    #[test]
    fn short_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let layout = [RegionLayout {
            guest_addr: 0,
            size: 1 << 20,
            file_offset: 0,
        }];
        let e = map(&path, &layout).unwrap_err().to_string();
        assert!(e.contains("4096") && e.contains("1048576"), "{e}");
    }
}
