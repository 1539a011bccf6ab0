//! The sysroot lock: the same lock `ostree admin` takes, so treeline and ostree never
//! change one sysroot at the same time.
//!
//! ostree (2022.7, observed with strace) opens `ostree/lock` in the sysroot and takes an
//! open-file-description write lock on the whole file (`fcntl(F_OFD_SETLK, F_WRLCK)`).
//! OFD locks and `flock` locks do not see each other, so this uses the same kind.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use crate::error::{IoContext, Result};

/// The lock file, relative to the sysroot.
pub const LOCK_FILE: &str = "ostree/lock";

/// An exclusive hold on a sysroot; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SysrootLock {
    _file: File,
    path: PathBuf,
}

impl SysrootLock {
    /// Take the lock of the sysroot at `sysroot`, waiting for another holder to finish.
    /// A message is logged when the lock is busy, so a waiting command does not look hung.
    pub fn acquire(sysroot: &Path) -> Result<Self> {
        let path = sysroot.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .at(&path)?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EACCES) => {
                tracing::warn!("waiting for the sysroot lock {}", path.display());
                fcntl(&file, FcntlArg::F_OFD_SETLKW(&lock))
                    .map_err(std::io::Error::from)
                    .at(&path)?;
            }
            Err(e) => return Err(std::io::Error::from(e)).at(&path),
        }
        Ok(SysrootLock { _file: file, path })
    }

    /// Try to take the lock without waiting: `None` when someone else holds it.
    pub fn try_acquire(sysroot: &Path) -> Result<Option<Self>> {
        let path = sysroot.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .at(&path)?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(Some(SysrootLock { _file: file, path })),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(std::io::Error::from(e)).at(&path),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ostree")).unwrap();
        let first = SysrootLock::acquire(dir.path()).unwrap();
        // OFD locks conflict between open file descriptions even within one process.
        assert!(SysrootLock::try_acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(SysrootLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
