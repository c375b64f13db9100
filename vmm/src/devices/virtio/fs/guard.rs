//! Decides, from a FUSE request's header and first argument bytes, whether the passthrough
//! may see it. Pure logic over bytes, so a hostile guest's requests are tested directly.

/// FUSE opcodes the guard looks at.
pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_CREATE: u32 = 35;
pub const FUSE_MKNOD: u32 = 8;
/// Opcodes that change the file system.
const MUTATING: &[u32] = &[
    4, // SETATTR
    6, // SYMLINK
    FUSE_MKNOD,
    9,  // MKDIR
    10, // UNLINK
    11, // RMDIR
    12, // RENAME
    13, // LINK
    16, // WRITE
    21, // SETXATTR
    24, // REMOVEXATTR
    FUSE_CREATE,
    39, // IOCTL
    43, // FALLOCATE
    45, // RENAME2
    47, // COPY_FILE_RANGE
    51, // TMPFILE
];

/// Size of `fuse_in_header`.
pub const IN_HEADER_SIZE: usize = 40;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    /// Answer with this errno without reaching the passthrough.
    Refuse(i32),
}

/// `request` is the readable part of the chain: the 40-byte header, then the arguments.
pub fn decide(request: &[u8], read_only: bool) -> Decision {
    let Some(opcode) = le_u32(request, 4) else {
        // Too short to be a request: the server rejects it itself.
        return Decision::Pass;
    };
    let args = request.get(IN_HEADER_SIZE..).unwrap_or_default();
    if opcode == FUSE_LOOKUP {
        let name = args.split(|b| *b == 0).next().unwrap_or_default();
        if name == b"." || name == b".." {
            return Decision::Refuse(libc::EPERM);
        }
    }
    if opcode == FUSE_MKNOD {
        // fuse_mknod_in starts with the mode. A device node made on the host's disk is a door
        // to the host's devices for whoever reaches the file outside the share: refuse it
        // (pipes, sockets and regular files are fine).
        let mode = le_u32(args, 0).unwrap_or(0);
        if matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) {
            return Decision::Refuse(libc::EPERM);
        }
    }
    if !read_only {
        return Decision::Pass;
    }
    if MUTATING.contains(&opcode) {
        return Decision::Refuse(libc::EROFS);
    }
    if opcode == FUSE_OPEN {
        let flags = le_u32(args, 0).unwrap_or(0) as i32;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Decision::Refuse(libc::EROFS);
        }
    }
    Decision::Pass
}

/// The little-endian u32 at `at`, if the bytes are there.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The 16-byte `fuse_out_header` of an error reply to request `unique`.
pub fn error_reply(unique: u64, errno: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_le_bytes());
    out[4..8].copy_from_slice(&(-errno).to_le_bytes());
    out[8..].copy_from_slice(&unique.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, args: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER_SIZE];
        r[..4].copy_from_slice(&((IN_HEADER_SIZE + args.len()) as u32).to_le_bytes());
        r[4..8].copy_from_slice(&opcode.to_le_bytes());
        r[8..16].copy_from_slice(&7u64.to_le_bytes());
        r[16..24].copy_from_slice(&1u64.to_le_bytes());
        r.extend_from_slice(args);
        r
    }

    #[test]
    fn dot_and_dotdot_lookups_are_refused_everywhere() {
        for name in [&b"..\0"[..], b".\0"] {
            assert_eq!(
                decide(&request(FUSE_LOOKUP, name), false),
                Decision::Refuse(libc::EPERM)
            );
        }
        assert_eq!(
            decide(&request(FUSE_LOOKUP, b"..x\0"), false),
            Decision::Pass
        );
        assert_eq!(
            decide(&request(FUSE_LOOKUP, b"etc\0"), true),
            Decision::Pass
        );
    }

    #[test]
    fn read_only_refuses_changes_and_write_opens() {
        assert_eq!(
            decide(&request(16, &[0; 40]), true),
            Decision::Refuse(libc::EROFS)
        );
        assert_eq!(decide(&request(16, &[0; 40]), false), Decision::Pass);
        assert_eq!(
            decide(&request(FUSE_CREATE, b"x\0"), true),
            Decision::Refuse(libc::EROFS)
        );
        let open = |flags: i32| {
            let mut a = (flags as u32).to_le_bytes().to_vec();
            a.extend_from_slice(&[0; 4]);
            decide(&request(FUSE_OPEN, &a), true)
        };
        assert_eq!(open(libc::O_RDONLY), Decision::Pass);
        assert_eq!(open(libc::O_WRONLY), Decision::Refuse(libc::EROFS));
        assert_eq!(open(libc::O_RDWR), Decision::Refuse(libc::EROFS));
        assert_eq!(
            open(libc::O_RDONLY | libc::O_TRUNC),
            Decision::Refuse(libc::EROFS)
        );
        assert_eq!(decide(&request(3, &[]), true), Decision::Pass, "GETATTR");
    }

    #[test]
    fn device_nodes_are_never_made() {
        let mknod = |mode: u32| {
            let mut a = mode.to_le_bytes().to_vec();
            a.extend_from_slice(&[0; 12]);
            a.extend_from_slice(b"n\0");
            decide(&request(FUSE_MKNOD, &a), false)
        };
        assert_eq!(mknod(libc::S_IFCHR | 0o600), Decision::Refuse(libc::EPERM));
        assert_eq!(mknod(libc::S_IFBLK | 0o600), Decision::Refuse(libc::EPERM));
        assert_eq!(mknod(libc::S_IFIFO | 0o600), Decision::Pass);
        assert_eq!(mknod(libc::S_IFSOCK | 0o600), Decision::Pass);
        assert_eq!(mknod(libc::S_IFREG | 0o600), Decision::Pass);
    }

    #[test]
    fn truncated_requests_pass_to_the_servers_own_checks() {
        assert_eq!(decide(&[1, 2], true), Decision::Pass);
        assert_eq!(
            decide(&request(FUSE_LOOKUP, &[])[..IN_HEADER_SIZE], false),
            Decision::Pass
        );
    }

    #[test]
    fn error_reply_is_a_negative_errno() {
        let r = error_reply(9, libc::EROFS);
        assert_eq!(u32::from_le_bytes(r[..4].try_into().unwrap()), 16);
        assert_eq!(
            i32::from_le_bytes(r[4..8].try_into().unwrap()),
            -libc::EROFS
        );
        assert_eq!(u64::from_le_bytes(r[8..].try_into().unwrap()), 9);
    }
}
