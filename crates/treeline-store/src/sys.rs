//! Thin wrappers over the system calls the store needs beyond `std`: xattrs, timestamps,
//! durability and OSTree-compatible locking.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Timespec, Timestamps};

use crate::error::{IoContext, Result};
use crate::object::Xattrs;

/// Read a file's xattrs without following symlinks, sorted, skipping empty values as
/// ostree does. Filesystems without xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr_query(path).at(path)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e).at(path),
        }
    };
    let mut out = Xattrs::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let value = get_xattr(path, name)?;
        if let Some(v) = value
            && !v.is_empty()
        {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::lgetxattr_query(path, name).at(path)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e).at(path),
        }
    }
}

/// Read one xattr of an open file.
pub fn fget_xattr(file: &File, path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::fgetxattr(file, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::fgetxattr_query(file, name).at(path)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e).at(path),
        }
    }
}

/// Set xattrs on a path without following symlinks.
pub fn set_xattrs(path: &Path, xattrs: &Xattrs) -> Result<()> {
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(
            path,
            name.as_slice(),
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .at(path)?;
    }
    Ok(())
}

/// Set one xattr on an open file.
pub fn fset_xattr(file: &File, path: &Path, name: &str, value: &[u8]) -> Result<()> {
    rustix::fs::fsetxattr(file, name, value, rustix::fs::XattrFlags::empty()).at(path)
}

const EPOCH: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
    last_modification: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
};

/// Give a path (not following symlinks) mtime and atime 0, as ostree does for objects.
pub fn zero_times(path: &Path) -> Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &EPOCH,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at(path)
}

/// Set an open file's access and modification times to the epoch (no path lookup).
pub fn zero_times_fd(file: &std::fs::File, path: &Path) -> Result<()> {
    rustix::fs::futimens(file, &EPOCH).at(path)
}

/// Change a path's owner without following symlinks.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    // SAFETY-free: rustix validates ids; u32::MAX would mean "unchanged" and never occurs here.
    let uid = rustix::fs::Uid::from_raw(uid);
    let gid = rustix::fs::Gid::from_raw(gid);
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(uid),
        Some(gid),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at(path)
}

/// fsync a directory so renames inside it are durable.
pub fn fsync_dir(path: &Path) -> Result<()> {
    let d = File::open(path).at(path)?;
    d.sync_all().at(path)
}

/// Flush the whole filesystem holding `path`.
pub fn syncfs(path: &Path) -> Result<()> {
    let d = File::open(path).at(path)?;
    rustix::fs::syncfs(d.as_fd()).at(path)
}

/// Files at least this big written just before a flush get their writeback started as
/// soon as they are complete ([`start_writeback`]).
pub const EARLY_WRITEBACK_MIN: u64 = 64 << 10;

/// Begin writing a just-written file of `len` bytes to disk without waiting, when it is
/// big enough to matter, so that a flush that follows (syncfs at a commit) has less
/// left to do: the disk works while the next files are produced.
pub fn start_writeback(file: &File, len: u64) {
    if len >= EARLY_WRITEBACK_MIN {
        // On Linux, DONTNEED on dirty pages begins their writeback without waiting.
        // Only a hint: its failure changes nothing.
        let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// Give an unnamed file (`O_TMPFILE`) the name `dest`. Returns false if `dest` exists.
/// Linking the descriptor itself is cheapest but needs privileges on most kernels; the
/// `/proc/self/fd` path works for anyone, so it is the fallback, remembered once taken.
pub fn link_unnamed(file: &File, dest: &Path) -> Result<bool> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use rustix::io::Errno;
    use std::sync::atomic::{AtomicBool, Ordering};
    static BY_DESCRIPTOR: AtomicBool = AtomicBool::new(true);
    let refused = |r: &rustix::io::Result<()>| matches!(r, Err(Errno::NOENT | Errno::PERM));
    let by_descriptor = BY_DESCRIPTOR.load(Ordering::Relaxed);
    let mut result = Err(Errno::PERM);
    if by_descriptor {
        result = linkat(file.as_fd(), "", CWD, dest, AtFlags::EMPTY_PATH);
    }
    if refused(&result) {
        result = link_through_proc(file, dest);
        // ENOENT also means a missing directory: only a fallback that worked says the
        // descriptor was refused.
        if by_descriptor && result.is_ok() {
            BY_DESCRIPTOR.store(false, Ordering::Relaxed);
        }
    }
    match result {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(e).at(dest),
    }
}

/// Name an unnamed file through its `/proc/self/fd` entry, as any user may.
fn link_through_proc(file: &File, dest: &Path) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        fd_path.as_str(),
        rustix::fs::CWD,
        dest,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
}

/// Read until `buf` is full or the input ends; returns how much was read. (Decoders
/// return short reads; callers comparing or writing whole blocks want full ones.)
pub fn read_full(
    reader: &mut (impl std::io::Read + ?Sized),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Rename without replacing an existing destination. Returns false when it exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<bool> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e).at(to),
    }
}

/// The kind of repository lock, as ostree uses them: shared for writing objects,
/// exclusive for deleting them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Held while a transaction adds objects.
    Shared,
    /// Held while objects are deleted (prune).
    Exclusive,
}

/// An open-file-description lock on the repository's `.lock`, compatible with the one
/// ostree takes (flock-based locks would not exclude ostree). Released on drop.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Block until the lock is held.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<Self> {
        Self::acquire_created_with(path, kind, 0o666)
    }

    /// As [`acquire`](Self::acquire), creating a missing lock file with `mode`.
    pub fn acquire_created_with(path: &Path, kind: LockKind, mode: u32) -> Result<Self> {
        let file = open_lock_file(path, mode)?;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLKW(&ofd_lock(kind)))
            .map_err(std::io::Error::from)
            .at(path)?;
        Ok(RepoLock { _file: file })
    }

    /// Take the lock if nobody holds a conflicting one; `None` otherwise. A missing lock
    /// file is created with `mode`.
    pub fn try_acquire_created_with(
        path: &Path,
        kind: LockKind,
        mode: u32,
    ) -> Result<Option<Self>> {
        let file = open_lock_file(path, mode)?;
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&ofd_lock(kind))) {
            Ok(_) => Ok(Some(RepoLock { _file: file })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(std::io::Error::from(e)).at(path),
        }
    }
}

fn open_lock_file(path: &Path, mode: u32) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .at(path)
}

/// A whole-file OFD lock request of `kind`.
fn ofd_lock(kind: LockKind) -> libc::flock {
    libc::flock {
        l_type: match kind {
            LockKind::Shared => libc::F_RDLCK as i16,
            LockKind::Exclusive => libc::F_WRLCK as i16,
        },
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn unnamed_file_is_linked_once_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let unnamed = |content: &[u8]| {
            let fd = rustix::fs::open(
                dir.path(),
                rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .unwrap();
            let mut f = File::from(fd);
            f.write_all(content).unwrap();
            f
        };
        let dest = dir.path().join("object");
        assert!(link_unnamed(&unnamed(b"first"), &dest).unwrap());
        // Taken already: the first stays.
        assert!(!link_unnamed(&unnamed(b"second"), &dest).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        // A missing directory is an error naming the destination.
        let bad = dir.path().join("missing/object");
        let err = link_unnamed(&unnamed(b"x"), &bad).unwrap_err().to_string();
        assert!(err.contains("missing/object"), "{err}");
        // The fallback for unprivileged users names the file as well.
        let via_proc = dir.path().join("via-proc");
        link_through_proc(&unnamed(b"fallback"), &via_proc).unwrap();
        assert_eq!(std::fs::read(&via_proc).unwrap(), b"fallback");
        let mut f = unnamed(b"third");
        assert!(link_unnamed(&f, &dir.path().join("other")).unwrap());
        f.rewind().unwrap();
        let mut back = String::new();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, "third");
    }
}
