//! The Intel MultiProcessor (MP 1.4) table: vCPUs, the ISA bus, the IOAPIC and the IRQ
//! routing, so a guest without ACPI finds its CPUs and interrupt controller. It sits at the
//! start of the EBDA, where the kernel searches for it.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{EBDA_START, IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR};

/// The table must fit in the EBDA's first KiB.
const MPTABLE_MAX_SIZE: usize = 1024;
/// vCPUs the table can describe within that KiB.
pub const MAX_VCPUS: u8 = 32;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const CPU_SIGNATURE: u32 = 0x600; // family 6
const CPU_FEATURES: u32 = 0x201; // FPU, APIC
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Errors building or writing the table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit in the MP table (1 to {MAX_VCPUS})")]
    VcpuCount(u8),
    #[error("writing the MP table at {EBDA_START:#x}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The table's bytes for `vcpus` vCPUs, placed at `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MptableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 takes the PIC's ExtINT, LINT1 the NMI, on every local APIC (0xff).
    entries.extend_from_slice(&[4, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + 16;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    header.extend_from_slice(&[4, 0]); // spec revision, checksum (below)
    header.extend_from_slice(b"HAKO    ");
    header.extend_from_slice(b"HAKO-VMM    ");
    header.extend_from_slice(&[0; 6]); // OEM table pointer and size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 16 bytes, rev 1.4, features
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&table);
    debug_assert!(floating.len() <= MPTABLE_MAX_SIZE);
    Ok(floating)
}

/// Builds the table and writes it at the start of the EBDA.
pub fn write(mem: &impl GuestMemory, vcpus: u8) -> Result<(), MptableError> {
    let bytes = build(vcpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_pointers_are_consistent() {
        let t = build(4, EBDA_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64,
            EBDA_START + 16
        );
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0, "config table checksum");
        let entries = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(entries, 4 + 1 + 1 + u16::from(IOAPIC_PINS) + 2);
    }

    #[test]
    fn only_cpu0_is_the_bootstrap_processor() {
        let t = build(2, EBDA_START).unwrap();
        let cpus = &t[16 + 44..];
        assert_eq!(cpus[3], CPU_ENABLED | CPU_BOOTSTRAP);
        assert_eq!(cpus[20 + 1], 1, "second lapic id");
        assert_eq!(cpus[20 + 3], CPU_ENABLED);
    }

    #[test]
    fn vcpu_count_is_bounded_and_the_largest_table_fits() {
        assert!(matches!(
            build(0, EBDA_START),
            Err(MptableError::VcpuCount(0))
        ));
        assert!(matches!(
            build(MAX_VCPUS + 1, EBDA_START),
            Err(MptableError::VcpuCount(_))
        ));
        assert!(build(MAX_VCPUS, EBDA_START).unwrap().len() <= MPTABLE_MAX_SIZE);
    }

    #[test]
    fn writes_into_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 1).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
