//! HOME for a container's process, from the image's /etc/passwd, read by the agent with one
//! hardened open instead of the lookup libcontainer's init makes through glibc's NSS (~10
//! system calls: nscd sockets, nsswitch.conf, passwd).
//!
//! libcontainer's init sets HOME, when the spec's environment has none (or an empty one), to
//! the home directory of the process's uid as the container's /etc/passwd gives it. The agent
//! does the same before libcontainer runs, and where the uid has no entry (or the image no
//! /etc/passwd) it sets HOME to `/`, as runc and crun do. It leaves the spec as it is (and the
//! lookup to libcontainer) whenever it could see a different file than the container will: a
//! spec mount on `/`, `/etc` or `/etc/passwd`, a symlink anywhere in the path (the image's
//! symlinks are never followed from the guest's root), or anything but a regular file there.
//! An image's /etc/passwd is hostile input: it is opened `O_PATH` first (a device node or FIFO
//! is never opened for reading), checked to be a regular file, read up to a bound, and parsed
//! as bytes.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The largest /etc/passwd the agent reads; a bigger one is left to libcontainer.
const MAX_PASSWD: u64 = 1 << 20;

/// Sets HOME in `spec`'s process environment from the image at `root`, if libcontainer would
/// look it up and the agent sees what the container will see. Returns whether it set it.
pub fn set_home(spec: &mut Spec, root: &Path) -> bool {
    let Some(process) = spec.process().as_ref() else {
        return false;
    };
    let env = process.env().clone().unwrap_or_default();
    if env
        .iter()
        .any(|e| e.strip_prefix("HOME=").is_some_and(|v| !v.is_empty()))
    {
        return false;
    }
    let covered = spec.mounts().iter().flatten().any(|m| {
        let d = m.destination();
        d == Path::new("/") || d == Path::new("/etc") || d == Path::new("/etc/passwd")
    });
    if covered {
        return false;
    }
    let uid = process.user().uid();
    let home = match read_passwd(root) {
        Ok(Some(passwd)) => match home_of(&passwd, uid) {
            Some(h) if h.is_empty() => return false,
            Some(h) => h,
            None => b"/".to_vec(),
        },
        Ok(None) => b"/".to_vec(),
        Err(()) => return false,
    };
    let Ok(home) = String::from_utf8(home) else {
        return false;
    };
    let mut env: Vec<String> = env.into_iter().filter(|e| e != "HOME=").collect();
    env.push(format!("HOME={home}"));
    let mut process = process.clone();
    process.set_env(Some(env));
    spec.set_process(Some(process));
    true
}

/// The image's /etc/passwd: `Ok(None)` when it does not exist (no symlink on the way),
/// `Err` when the agent cannot tell (a symlink, not a regular file, too big, an error).
fn read_passwd(root: &Path) -> Result<Option<Vec<u8>>, ()> {
    let path = root.join("etc/passwd");
    let fd = match rustix::fs::openat2(
        rustix::fs::CWD,
        &path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(_) => return Err(()),
    };
    let st = rustix::fs::fstat(&fd).map_err(|_| ())?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_size as u64 > MAX_PASSWD
    {
        return Err(());
    }
    // Reopened for reading through this descriptor: the same regular file, not the path again.
    let file = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| ())?;
    let mut buf = Vec::with_capacity(st.st_size as usize + 1);
    file.take(MAX_PASSWD + 1)
        .read_to_end(&mut buf)
        .map_err(|_| ())?;
    if buf.len() as u64 > MAX_PASSWD {
        return Err(());
    }
    Ok(Some(buf))
}

/// The home directory of `uid`'s first well-formed entry (`name:pw:uid:gid:gecos:dir:shell`),
/// as glibc's files backend reads it.
fn home_of(passwd: &[u8], uid: u32) -> Option<Vec<u8>> {
    passwd.split(|b| *b == b'\n').find_map(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        if fields.len() != 7 || fields[0].is_empty() || fields[0][0] == b'#' {
            return None;
        }
        let id = std::str::from_utf8(fields[2]).ok()?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        (id.parse::<u32>().ok()? == uid).then(|| fields[5].to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &str, mounts: &str, uid: u32) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"mounts":[{mounts}],
            "process":{{"args":["true"],"cwd":"/","env":[{env}],"user":{{"uid":{uid},"gid":0}}}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    fn home(s: &Spec) -> Vec<String> {
        let env = s
            .process()
            .as_ref()
            .unwrap()
            .env()
            .clone()
            .unwrap_or_default();
        env.into_iter().filter(|e| e.starts_with("HOME=")).collect()
    }

    fn image(passwd: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(d.path().join("etc/passwd"), p).unwrap();
        }
        d
    }

    const PASSWD: &str = "# comment\nroot:x:0:0:root:/root:/bin/sh\nbad line\n\
        app:x:1000:1000::/home/app:/bin/sh\ndup:x:1000:1000::/elsewhere:/bin/sh\n";

    #[test]
    fn home_is_the_uid_entry_of_the_image() {
        let d = image(Some(PASSWD));
        for (uid, want) in [(0, "HOME=/root"), (1000, "HOME=/home/app"), (7, "HOME=/")] {
            let mut s = spec(r#""PATH=/bin""#, "", uid);
            assert!(set_home(&mut s, d.path()));
            assert_eq!(home(&s), [want], "uid {uid}");
        }
    }

    #[test]
    fn no_passwd_gives_root_and_an_empty_home_is_replaced() {
        let d = image(None);
        let mut s = spec(r#""HOME=""#, "", 0);
        assert!(set_home(&mut s, d.path()));
        assert_eq!(home(&s), ["HOME=/"]);
    }

    #[test]
    fn a_home_in_the_spec_is_kept() {
        let d = image(Some(PASSWD));
        let mut s = spec(r#""HOME=/mine""#, "", 0);
        assert!(!set_home(&mut s, d.path()));
        assert_eq!(home(&s), ["HOME=/mine"]);
    }

    #[test]
    fn mounts_over_passwd_leave_the_lookup_to_libcontainer() {
        let d = image(Some(PASSWD));
        for dest in ["/etc", "/etc/passwd", "/"] {
            let m = format!(r#"{{"destination":"{dest}","type":"tmpfs","source":"tmpfs"}}"#);
            let mut s = spec("", &m, 0);
            assert!(!set_home(&mut s, d.path()), "{dest}");
            assert!(home(&s).is_empty());
        }
    }

    /// A hostile image: its /etc/passwd (or /etc) a symlink out of the root, or a FIFO that
    /// would block a reader. The agent reads neither; the lookup stays libcontainer's, made
    /// inside the container.
    #[test]
    fn symlinks_and_special_files_are_not_read() {
        let outside = image(Some("root:x:0:0:root:/outside:/bin/sh\n"));
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("etc/passwd"),
            d.path().join("etc/passwd"),
        )
        .unwrap();
        let mut s = spec("", "", 0);
        assert!(!set_home(&mut s, d.path()));
        assert!(home(&s).is_empty());

        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("etc"), d.path().join("etc")).unwrap();
        assert!(!set_home(&mut s, d.path()));
        assert!(home(&s).is_empty());

        let d = image(None);
        nix::unistd::mkfifo(&d.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(!set_home(&mut s, d.path()));
        assert!(home(&s).is_empty());
    }

    #[test]
    fn entries_are_parsed_as_glibc_files_does() {
        assert_eq!(
            home_of(PASSWD.as_bytes(), 1000),
            Some(b"/home/app".to_vec())
        );
        assert_eq!(
            home_of(b"a:x:+1:0::/h:/s\nb:x:1:0::/ok:/s", 1),
            Some(b"/ok".to_vec())
        );
        assert_eq!(home_of(b"a:x:1:0::/h", 1), None);
        assert_eq!(home_of(b"\xff:x:1:0::/\xfe:/s", 1), Some(b"/\xfe".to_vec()));
    }
}
