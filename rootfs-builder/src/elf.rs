//! Just enough ELF reading to refuse binaries a guest image cannot run: not x86-64, or
//! dynamically linked (a PT_INTERP program header).

use std::path::Path;

use crate::ManifestError;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Checks that `data` is a 64-bit little-endian x86-64 ELF with no program interpreter.
pub fn check_static_x86_64(data: &[u8], path: &Path) -> Result<(), ManifestError> {
    let not_elf = |reason: &str| ManifestError::NotElf {
        path: path.into(),
        reason: reason.to_string(),
    };
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(not_elf("no ELF magic"));
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(not_elf("not 64-bit little-endian"));
    }
    if u16_at(data, 18) != Some(EM_X86_64) {
        return Err(not_elf("machine is not x86-64"));
    }
    // ET_EXEC or ET_DYN (static-pie); not a relocatable object or a core file.
    if !matches!(u16_at(data, 16), Some(2 | 3)) {
        return Err(not_elf(
            "not an executable (ELF type is neither EXEC nor DYN)",
        ));
    }
    if u64_at(data, 24).unwrap_or(0) == 0 {
        return Err(not_elf("no entry point"));
    }
    let truncated = || not_elf("truncated program headers");
    let phoff = u64_at(data, 32).ok_or_else(truncated)? as usize;
    let phentsize = usize::from(u16_at(data, 54).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(data, 56).ok_or_else(truncated)?);
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i.checked_mul(phentsize).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        if u32_at(data, ph).ok_or_else(truncated)? == PT_INTERP {
            let off = u64_at(data, ph + 8).ok_or_else(truncated)? as usize;
            let size = u64_at(data, ph + 32).ok_or_else(truncated)? as usize;
            let interp = data.get(off..off.saturating_add(size)).unwrap_or_default();
            let interpreter = String::from_utf8_lossy(interp)
                .trim_end_matches('\0')
                .to_string();
            return Err(ManifestError::Dynamic {
                path: path.into(),
                interpreter,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dynamic_binary_is_refused_with_its_interpreter() {
        // This test binary is linked dynamically against the host's libc.
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let err = check_static_x86_64(&data, &exe).unwrap_err();
        assert!(err.to_string().contains("ld-linux"), "{err}");
    }

    #[test]
    fn garbage_and_truncation_are_refused() {
        assert!(check_static_x86_64(b"#!/bin/sh\n", Path::new("x")).is_err());
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static_x86_64(&data[..70], Path::new("x")).is_err());
        // A relocatable object (ET_REL) is refused even with no program headers.
        let mut obj = data[..64].to_vec();
        obj[16] = 1;
        obj[56] = 0;
        obj[57] = 0;
        let err = check_static_x86_64(&obj, Path::new("x.o")).unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
    }
}
