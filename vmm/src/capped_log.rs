//! Log files with a size cap that keep their tail: the guest console's file and hako-vmm's
//! own log (its stderr, when that is a file). Both sit on the host's /run, and the guest
//! writes the one and can make the VMM write the other, so neither may grow without bound.
//!
//! The file is written in append mode. When the next write would take it past its cap, the
//! file is truncated to empty (ftruncate, the one call this adds to the writing threads'
//! seccomp lists) and starts again with a line saying so and the last [`KEPT`] bytes written,
//! held in memory; so it never passes its cap and always ends with the latest output.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};

/// The guest console file's cap.
pub const CONSOLE_CAP: u64 = 1 << 20;
/// hako-vmm's log's cap.
pub const VMM_LOG_CAP: u64 = 1 << 20;
/// How much of a capped log's tail survives a truncation.
pub const KEPT: usize = 64 << 10;

/// The file a capped log writes: its own, or stderr (never closed).
enum Target {
    Owned(File),
    Stderr(ManuallyDrop<File>),
}

impl Target {
    fn file(&mut self) -> &mut File {
        match self {
            Target::Owned(f) => f,
            Target::Stderr(f) => f,
        }
    }
}

/// A log file that stays under its cap and keeps its tail.
pub struct CappedLog {
    target: Target,
    /// The file's length as this writer knows it.
    len: u64,
    cap: u64,
    /// The last bytes written (at most `kept`).
    tail: VecDeque<u8>,
    kept: usize,
    /// The length of the line at the file's start saying what was dropped (0 before the
    /// first truncation).
    note_len: u64,
    /// Bytes dropped so far.
    dropped: u64,
}

impl CappedLog {
    /// A capped log over `file`, which must be open for appending (O_APPEND), keeping the
    /// last `kept` bytes past each truncation. What the file already holds counts toward the
    /// cap, and its tail is kept if the file is open for reading too.
    pub fn new(file: File, cap: u64, kept: usize) -> io::Result<Self> {
        Self::with_target(Target::Owned(file), cap, kept)
    }

    fn with_target(mut target: Target, cap: u64, kept: usize) -> io::Result<Self> {
        // The tail must fit under the cap with the line that says what was dropped.
        let kept = kept.min(usize::try_from(cap / 2).unwrap_or(usize::MAX));
        let file = target.file();
        let len = file.metadata()?.len();
        let mut tail = VecDeque::with_capacity(kept);
        // Best effort: a file open for writing only starts with no tail.
        if let Ok(bytes) = last_bytes(file, len, kept) {
            tail.extend(bytes);
        }
        Ok(Self {
            target,
            len,
            cap,
            tail,
            kept,
            note_len: 0,
            dropped: 0,
        })
    }

    /// hako-vmm's stderr as a capped log when it is a regular file (the runtime's vmm.log),
    /// switched to append mode; None when it is anything else (a terminal, a pipe), which
    /// is left as it is.
    pub fn stderr(cap: u64, kept: usize) -> io::Result<Option<Self>> {
        // SAFETY: descriptor 2 stays open for the life of the process; the File is never
        // dropped (ManuallyDrop), so it never closes it.
        let file = ManuallyDrop::new(unsafe { File::from_raw_fd(libc::STDERR_FILENO) });
        if !file.metadata()?.is_file() {
            return Ok(None);
        }
        let fd = file.as_raw_fd();
        // SAFETY: fcntl with integer arguments on an open descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; O_APPEND is one of the flags F_SETFL may change.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_APPEND) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Self::with_target(Target::Stderr(file), cap, kept).map(Some)
    }

    /// Bytes dropped so far (written before a truncation and not kept).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn remember(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.kept)..];
        self.tail.extend(bytes);
        let over = self.tail.len().saturating_sub(self.kept);
        self.tail.drain(..over);
    }

    /// Appends `bytes` (the log's content, kept in the tail, or the note, which is not).
    fn append(&mut self, bytes: &[u8], content: bool) -> io::Result<()> {
        self.target.file().write_all(bytes)?;
        self.len += bytes.len() as u64;
        if content {
            self.remember(bytes);
        }
        Ok(())
    }

    /// Empties the file and starts it again with a line about what was dropped and the
    /// kept tail.
    fn restart(&mut self) -> io::Result<()> {
        let tail: Vec<u8> = self.tail.drain(..).collect();
        let content = self.len.saturating_sub(self.note_len);
        self.dropped += content.saturating_sub(tail.len() as u64);
        self.target.file().set_len(0)?;
        self.len = 0;
        let note = format!(
            "[hako-vmm: this log reached its cap of {} bytes; {} earlier bytes were dropped]\n",
            self.cap, self.dropped
        );
        let most = usize::try_from(self.cap / 4).unwrap_or(usize::MAX);
        let note = &note.as_bytes()[..note.len().min(most)];
        self.append(note, false)?;
        self.note_len = self.len;
        self.append(&tail, true)
    }
}

/// The last `n` bytes of `file`, whose length is `len`.
fn last_bytes(file: &mut File, len: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if len > 0 && n > 0 {
        file.seek(SeekFrom::Start(len.saturating_sub(n as u64)))?;
        Read::take(&mut *file, n as u64).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.cap {
            self.restart()?;
        }
        // What does not fit even then: only its end is written.
        let room = usize::try_from(self.cap.saturating_sub(self.len)).unwrap_or(usize::MAX);
        let part = &buf[buf.len().saturating_sub(room)..];
        self.dropped += (buf.len() - part.len()) as u64;
        self.append(part, true)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.target.file().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn a_log_written_past_its_cap_stays_under_it_and_ends_with_the_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (cap, kept) = (4096, 1024);
        let mut log = CappedLog::new(open(&path), cap, kept).unwrap();
        let mut all = Vec::new();
        for i in 0..2000 {
            let line = format!("line {i}\n");
            log.write_all(line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= cap, "{len} bytes after line {i}");
        }
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() as u64 <= cap);
        // At least the kept tail, and exactly the end of what was written.
        assert!(file.len() >= kept);
        let text = String::from_utf8_lossy(&file);
        assert!(text.contains("reached its cap of 4096 bytes"), "{text}");
        let after_note = &file[file.iter().position(|b| *b == b'\n').unwrap() + 1..];
        assert!(all.ends_with(after_note));
        assert!(text.ends_with("line 1999\n"));
        assert_eq!(log.dropped() as usize, all.len() - after_note.len());
    }

    #[test]
    fn a_write_larger_than_the_cap_keeps_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = CappedLog::new(open(&path), 1000, 100).unwrap();
        let big: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(log.write(&big).unwrap(), big.len());
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() <= 1000, "{}", file.len());
        assert!(file.len() > 500);
        let end = &file[file.iter().position(|b| *b == b'\n').unwrap() + 1..];
        assert!(big.ends_with(end));
    }

    #[test]
    fn what_the_file_held_counts_and_its_tail_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, vec![b'x'; 900]).unwrap();
        let mut log = CappedLog::new(open(&path), 1000, 100).unwrap();
        log.write_all(&[b'y'; 200]).unwrap();
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() <= 1000);
        let end = &file[file.iter().position(|b| *b == b'\n').unwrap() + 1..];
        assert_eq!(end, [[b'x'; 100].as_slice(), &[b'y'; 200]].concat());
    }
}
