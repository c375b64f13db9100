//! `/proc/self/mountinfo` read as bytes. Mount points are paths the guest may have named (a
//! directory it renamed to a name that is not UTF-8 still holds our binds), so nothing here
//! decodes text: a line that does not parse is skipped, never the whole listing.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One mount of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Its mount id (what `statx` reports as `stx_mnt_id`).
    pub id: u64,
    pub parent: u64,
    /// Where it is mounted, as this process sees it (octal escapes undone).
    pub mount_point: PathBuf,
}

/// Parses a mountinfo listing; lines without an id, a parent id and a mount point are
/// skipped.
pub fn parse(listing: &[u8]) -> Vec<Mount> {
    listing
        .split(|&b| b == b'\n')
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let mut fields = line.split(|&b| b == b' ');
    let id = number(fields.next()?)?;
    let parent = number(fields.next()?)?;
    let _major_minor = fields.next()?;
    let _root = fields.next()?;
    let point = fields.next()?;
    if point.first() != Some(&b'/') {
        return None;
    }
    Some(Mount {
        id,
        parent,
        mount_point: PathBuf::from(OsString::from_vec(unescape(point))),
    })
}

fn number(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`; anything else after a
/// backslash is kept as it is.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && let Some(code) = s.get(i + 1..i + 4)
            && code.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let value = code
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The mounts of this thread's mount namespace (the process's, unless a thread unshared
/// its own). An unreadable listing is an error, never an empty one: a caller that saw no
/// mounts would go on to remove directories still mounted.
pub fn read() -> io::Result<Vec<Mount>> {
    let listing = std::fs::read("/proc/thread-self/mountinfo")?;
    Ok(parse(&listing))
}

/// The mounts at `dir` or below it, deepest first.
pub fn under(mounts: &[Mount], dir: &Path) -> Vec<Mount> {
    let mut found: Vec<Mount> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .cloned()
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().as_bytes().len()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_as_bytes() {
        let listing = b"22 1 0:21 / /run rw,nosuid - tmpfs tmpfs rw\n\
            40 22 0:5 / /run/hako/x/shared/bad\xff\\040name rw - tmpfs t rw\n\
            garbage line\n\
            41 22 0:5 / relative rw - tmpfs t rw\n\
            \n";
        let m = parse(listing);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].id, 22);
        assert_eq!(m[1].parent, 22);
        assert_eq!(
            m[1].mount_point.as_os_str().as_bytes(),
            b"/run/hako/x/shared/bad\xff name"
        );
    }

    #[test]
    fn escapes_are_undone_and_odd_ones_kept() {
        assert_eq!(unescape(br"/a\040b\011c\012d\134e"), b"/a b\tc\nd\\e");
        assert_eq!(unescape(br"/x\9"), br"/x\9");
        assert_eq!(unescape(br"/x\777"), br"/x\777");
        assert_eq!(unescape(b"/x\\"), b"/x\\");
    }

    #[test]
    fn under_is_deepest_first_and_needs_the_component() {
        let m = parse(
            b"1 0 0:1 / /run/hako/a rw - t t rw\n\
              2 1 0:1 / /run/hako/a/shared/c/rootfs rw - t t rw\n\
              3 1 0:1 / /run/hako/ab rw - t t rw\n\
              4 1 0:1 / /run/hako/a/shared rw - t t rw\n",
        );
        let ids: Vec<u64> = under(&m, Path::new("/run/hako/a"))
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [2, 4, 1]);
    }

    #[test]
    fn this_process_has_its_root_and_proc() {
        let m = read().unwrap();
        assert!(
            m.iter().any(|m| m.mount_point == Path::new("/proc")),
            "{m:?}"
        );
    }
}
