//! The sysroot lock: the same lock `ostree admin` takes, so treeline and ostree never
//! change one sysroot at the same time.
//!
//! ostree (2022.7, observed with strace) opens `ostree/lock` in the sysroot and takes an
//! open-file-description write lock on the whole file (`fcntl(F_OFD_SETLK, F_WRLCK)`).
//! OFD locks and `flock` locks do not see each other, so this uses the same kind.

use std::path::{Path, PathBuf};

use treeline_store::sys::{LockKind, RepoLock};

use crate::error::{Error, Result};

/// The lock file, relative to the sysroot.
pub const LOCK_FILE: &str = "ostree/lock";

/// Mode of a lock file this creates (ostree's too).
const LOCK_FILE_MODE: u32 = 0o600;

/// An exclusive hold on a sysroot; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SysrootLock {
    _lock: RepoLock,
    path: PathBuf,
}

/// The store names the lock file in its errors; keep it an I/O error on that file.
fn lock_error(path: &Path, error: treeline_store::Error) -> Error {
    match error {
        treeline_store::Error::Io { path, error } => Error::Io { path, error },
        other => Error::Store {
            repo: path.to_owned(),
            error: other,
        },
    }
}

impl SysrootLock {
    /// Take the lock of the sysroot at `sysroot`, waiting for another holder to finish.
    /// A message is logged when the lock is busy, so a waiting command does not look hung.
    pub fn acquire(sysroot: &Path) -> Result<Self> {
        if let Some(lock) = Self::try_acquire(sysroot)? {
            return Ok(lock);
        }
        let path = sysroot.join(LOCK_FILE);
        tracing::warn!("waiting for the sysroot lock {}", path.display());
        let lock = RepoLock::acquire_created_with(&path, LockKind::Exclusive, LOCK_FILE_MODE)
            .map_err(|e| lock_error(&path, e))?;
        Ok(SysrootLock { _lock: lock, path })
    }

    /// Try to take the lock without waiting: `None` when someone else holds it.
    pub fn try_acquire(sysroot: &Path) -> Result<Option<Self>> {
        let path = sysroot.join(LOCK_FILE);
        let lock = RepoLock::try_acquire_created_with(&path, LockKind::Exclusive, LOCK_FILE_MODE)
            .map_err(|e| lock_error(&path, e))?;
        Ok(lock.map(|lock| SysrootLock { _lock: lock, path }))
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
