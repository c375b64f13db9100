//! The e820 map and the Linux zero page (boot_params) for the 64-bit boot protocol.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{EBDA_START, FIRST_ADDR_PAST_4GIB, HIMEM_START, MMIO32_START, ZERO_PAGE_START};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Errors building the zero page.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    #[error("the e820 map has {0} entries; the zero page holds at most 128")]
    TooManyE820Entries(usize),
    #[error("{size} bytes of guest memory leave no RAM above 1 MiB for the kernel")]
    TooLittleMemory { size: u64 },
    #[error("writing the zero page at {ZERO_PAGE_START:#x}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// One e820 entry: a guest-physical range and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map for `mem_size` bytes of RAM laid out as `memory_regions` does.
pub fn e820_map(mem_size: u64) -> Result<Vec<E820Entry>, BootParamsError> {
    if mem_size <= HIMEM_START {
        return Err(BootParamsError::TooLittleMemory { size: mem_size });
    }
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let below = mem_size.min(MMIO32_START);
    map.push(E820Entry {
        addr: HIMEM_START,
        size: below - HIMEM_START,
        kind: E820_RAM,
    });
    if mem_size > below {
        map.push(E820Entry {
            addr: FIRST_ADDR_PAST_4GIB,
            size: mem_size - below,
            kind: E820_RAM,
        });
    }
    Ok(map)
}

/// Where the kernel's command line and initrd are, for the zero page.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootInputs {
    pub cmdline_addr: u64,
    /// Length without the terminating NUL.
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    /// A bzImage's own setup header, kept as the base of the zero page's header.
    pub setup_header: Option<setup_header>,
}

/// Builds the zero page and writes it at [`ZERO_PAGE_START`].
pub fn write_zero_page(
    mem: &impl GuestMemory,
    map: &[E820Entry],
    inputs: BootInputs,
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(hdr) = inputs.setup_header {
        params.hdr = hdr;
    }
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    params.hdr.cmd_line_ptr = inputs.cmdline_addr as u32;
    params.hdr.cmdline_size = inputs.cmdline_len as u32 + 1;
    if let Some((addr, size)) = inputs.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (slot, e) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(BootParamsError::Write)?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn e820_covers_low_ram_reserves_ebda_and_splits_at_the_gap() {
        let map = e820_map(256 << 20).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[2].addr + map[2].size, 256 << 20);
        let big = e820_map(5 << 30).unwrap();
        assert_eq!(big[2].addr + big[2].size, MMIO32_START);
        assert_eq!(big[3].addr, FIRST_ADDR_PAST_4GIB);
        assert_eq!(big[2].size + big[3].size + HIMEM_START, 5 << 30);
        assert!(matches!(
            e820_map(1 << 20),
            Err(BootParamsError::TooLittleMemory { .. })
        ));
    }

    #[test]
    fn zero_page_holds_map_cmdline_and_initrd() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let map = e820_map(256 << 20).unwrap();
        let inputs = BootInputs {
            cmdline_addr: 0x20000,
            cmdline_len: 12,
            initrd: Some((0x800_0000, 4096)),
            setup_header: None,
        };
        write_zero_page(&mem, &map, inputs).unwrap();
        let back: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(back.e820_entries, 3);
        assert_eq!({ back.e820_table[2].addr }, HIMEM_START);
        assert_eq!({ back.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ back.hdr.cmdline_size }, 13);
        assert_eq!({ back.hdr.ramdisk_image }, 0x800_0000);
        assert_eq!({ back.hdr.header }, KERNEL_HDR_MAGIC);
    }

    #[test]
    fn zero_page_outside_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let result = write_zero_page(&mem, &e820_map(256 << 20).unwrap(), BootInputs::default());
        assert!(matches!(result, Err(BootParamsError::Write(_))));
    }
}
