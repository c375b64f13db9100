//! Loading the guest kernel (ELF vmlinux, or bzImage) and the initrd into guest memory, and
//! choosing the boot protocol: PVH when the ELF carries the PVH note, else the 64-bit Linux
//! boot protocol with a zero page.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::layout::{HIMEM_START, MMIO32_START};

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Highest address (exclusive) the initrd may end at when the kernel does not say
/// (`initrd_addr_max` of boot protocol 2.03+ kernels is at least this).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x3800_0000;
const PAGE_SIZE: u64 = 4096;

/// Errors loading the kernel or the initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is neither an x86-64 ELF vmlinux nor a bzImage (ELF: {elf}; bzImage: {bzimage})"
    )]
    UnknownFormat {
        path: PathBuf,
        elf: linux_loader::loader::Error,
        bzimage: linux_loader::loader::Error,
    },
    #[error(
        "initrd {path} is {size} bytes; it does not fit in guest memory below {limit:#x} above the kernel (ends at {kernel_end:#x})"
    )]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        kernel_end: u64,
    },
    #[error("reading initrd {path} into guest memory")]
    ReadInitrd {
        path: PathBuf,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode, paging off, `%ebx` = start info.
    Pvh(GuestAddress),
    /// 64-bit Linux boot protocol: long mode, identity-mapped, `%rsi` = zero page.
    Linux64(GuestAddress),
}

/// A loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// First byte past the kernel image.
    pub end: u64,
    /// The bzImage's setup header, which the zero page must carry.
    pub setup_header: Option<setup_header>,
}

/// Loads `path` at 1 MiB (or where its ELF headers say). `allow_pvh: false` enters an ELF
/// kernel through the 64-bit boot protocol even when it has a PVH note.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    allow_pvh: bool,
) -> Result<LoadedKernel, LoaderError> {
    let open = || {
        File::open(path).map_err(|source| LoaderError::Open {
            path: path.to_owned(),
            source,
        })
    };
    let mut file = open()?;
    let himem = Some(GuestAddress(HIMEM_START));
    let elf_err = match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => {
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) if allow_pvh => EntryPoint::Pvh(addr),
                _ => EntryPoint::Linux64(r.kernel_load),
            };
            return Ok(LoadedKernel {
                entry,
                end: r.kernel_end,
                setup_header: None,
            });
        }
        Err(e) => e,
    };
    let mut file = open()?;
    match BzImage::load(mem, None, &mut file, himem) {
        Ok(r) => Ok(LoadedKernel {
            entry: EntryPoint::Linux64(GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET)),
            end: r.kernel_end,
            setup_header: r.setup_header,
        }),
        Err(bz_err) => Err(LoaderError::UnknownFormat {
            path: path.to_owned(),
            elf: elf_err,
            bzimage: bz_err,
        }),
    }
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible below both the
/// 32-bit MMIO gap (and the end of RAM) and the kernel's `initrd_addr_max`, above the kernel.
pub fn initrd_address(
    mem_size: u64,
    size: u64,
    kernel_end: u64,
    addr_max: Option<u32>,
) -> Option<u64> {
    let limit = mem_size
        .min(MMIO32_START)
        .min(addr_max.map_or(DEFAULT_INITRD_ADDR_MAX, |m| u64::from(m) + 1));
    let start = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= kernel_end.next_multiple_of(PAGE_SIZE)).then_some(start)
}

/// Reads the initrd into guest memory; returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<(u64, u64), LoaderError> {
    let mut file = File::open(path).map_err(|source| LoaderError::Open {
        path: path.to_owned(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| LoaderError::Open {
            path: path.to_owned(),
            source,
        })?
        .len();
    let addr_max = kernel.setup_header.map(|h| h.initrd_addr_max);
    let mem_size = mem.last_addr().0 + 1;
    let addr = initrd_address(mem_size, size, kernel.end, addr_max).ok_or_else(|| {
        LoaderError::InitrdTooLarge {
            path: path.to_owned(),
            size,
            limit: mem_size.min(MMIO32_START),
            kernel_end: kernel.end,
        }
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| LoaderError::ReadInitrd {
            path: path.to_owned(),
            source,
        })?;
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let addr = initrd_address(256 << 20, 3 << 20 | 17, 20 << 20, None).unwrap();
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + (3 << 20 | 17) <= 256 << 20);
        assert!(addr > (250 << 20));
    }

    #[test]
    fn initrd_respects_the_kernels_limit_and_the_mmio_gap() {
        let addr = initrd_address(8 << 30, 1 << 20, 20 << 20, Some(0x7fff_ffff)).unwrap();
        assert_eq!(addr + (1 << 20), 0x8000_0000);
        let addr = initrd_address(8 << 30, 1 << 20, 20 << 20, Some(u32::MAX)).unwrap();
        assert_eq!(addr + (1 << 20), MMIO32_START);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_refused() {
        assert_eq!(initrd_address(64 << 20, 50 << 20, 20 << 20, None), None);
        assert_eq!(initrd_address(64 << 20, 65 << 20, 0, None), None);
    }

    #[test]
    fn garbage_is_neither_elf_nor_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let err = load_kernel(&mem, &path, true).unwrap_err();
        assert!(matches!(err, LoaderError::UnknownFormat { .. }), "{err}");
        assert!(err.to_string().contains("kernel"), "{err}");
    }
}
