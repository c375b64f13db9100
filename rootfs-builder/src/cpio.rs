//! newc ("070701") cpio writer: what the kernel unpacks as an initramfs. Uncompressed on
//! purpose: decompression is the slowest boot step where guest kernel mode is emulated.

use std::io::{self, Write};

use crate::manifest::{Entry, Manifest};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &'a str,
    data: &'a [u8],
}

fn pad4(w: &mut impl Write, written: usize) -> io::Result<usize> {
    let pad = (4 - written % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    Ok(pad)
}

fn write_entry(w: &mut impl Write, h: &Header<'_>) -> io::Result<usize> {
    let namesize = h.name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        0, // mtime
        h.data.len() as u32,
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        namesize as u32,
        0, // check
    ];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(h.name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = header.len() + namesize;
    n += pad4(w, n)?;
    w.write_all(h.data)?;
    n += h.data.len();
    n += pad4(w, n)?;
    Ok(n)
}

/// Writes the manifest as a newc archive; returns the number of bytes written. Owners are
/// root, mtimes zero and inode numbers follow path order, so equal manifests give equal bytes.
pub fn write(manifest: &Manifest, w: &mut impl Write) -> io::Result<usize> {
    let mut total = 0;
    for (index, (path, entry)) in manifest.entries().enumerate() {
        let ino = u32::try_from(index + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "more than 2^32 entries"))?;
        let (mode, nlink, rdev, data): (u32, u32, (u32, u32), &[u8]) = match entry {
            Entry::Dir { mode } => (S_IFDIR | mode, 2, (0, 0), &[]),
            Entry::File { mode, data } => (S_IFREG | mode, 1, (0, 0), data),
            Entry::Symlink { target } => (S_IFLNK | 0o777, 1, (0, 0), target.as_bytes()),
            Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, (*major, *minor), &[]),
        };
        if u32::try_from(data.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is larger than 4 GiB"),
            ));
        }
        total += write_entry(
            w,
            &Header {
                ino,
                mode,
                nlink,
                rdev,
                name: path,
                data,
            },
        )?;
    }
    total += write_entry(
        w,
        &Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            name: TRAILER,
            data: &[],
        },
    )?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Manifest {
        let mut m = Manifest::new();
        m.file("/init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        m.symlink("/bin/sh", "busybox").unwrap();
        m.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        m.file("/etc/odd", 0o644, b"12345".to_vec()).unwrap();
        m
    }

    #[test]
    fn archive_is_aligned_and_ends_with_trailer() {
        let mut out = Vec::new();
        let n = write(&sample(), &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let tail = String::from_utf8_lossy(&out[out.len() - 16..]).to_string();
        assert!(tail.contains(TRAILER), "{tail:?}");
    }

    #[test]
    fn same_manifest_gives_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&sample(), &mut a).unwrap();
        write(&sample(), &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        let have_cpio = Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        assert!(
            have_cpio,
            "GNU cpio is not installed: scripts/setup.sh installs it"
        );
        let mut out = Vec::new();
        write(&sample(), &mut out).unwrap();
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listing = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 7, "{listing}"); // bin, bin/sh, dev, dev/console, etc, etc/odd, init
        assert!(lines.iter().any(|l| l.starts_with("crw-------")
            && l.contains("5,")
            && l.ends_with("dev/console")));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh -> busybox"))
        );
        assert!(
            lines.iter().any(|l| l.starts_with("-rwxr-xr-x")
                && l.contains(" root ")
                && l.ends_with("init"))
        );
        // And the file contents survive extraction.
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.path().join("etc/odd")).unwrap(), b"12345");
    }
}
