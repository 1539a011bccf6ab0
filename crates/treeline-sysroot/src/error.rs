//! The sysroot's error type: every variant names the path, deployment or input at fault.

use std::path::PathBuf;

/// Errors from reading or changing a sysroot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named path failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The repository at `ostree/repo` failed.
    #[error("repository {repo}: {error}")]
    Store {
        /// The repository path.
        repo: PathBuf,
        /// The store's error.
        #[source]
        error: treeline_store::Error,
    },
    /// A file of the sysroot layout does not have the expected form.
    #[error("{path}: {reason}")]
    Layout {
        /// The offending file or link.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An origin file does not parse.
    #[error("origin file {path}: {reason}")]
    Origin {
        /// The `.origin` file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The named stateroot has not been created (`admin os-init`).
    #[error("stateroot {0:?} does not exist (create it with `admin os-init {0}`)")]
    NoStateroot(String),
    /// A stateroot name that cannot be a directory name.
    #[error("invalid stateroot name {0:?}")]
    InvalidStateroot(String),
    /// A deployment index out of range.
    #[error("no deployment with index {index} (there are {count})")]
    NoSuchDeployment {
        /// The index asked for.
        index: usize,
        /// How many deployments there are.
        count: usize,
    },
    /// The tree to deploy lacks something a deployment needs.
    #[error("commit {commit}: {reason}")]
    BadTree {
        /// The commit being deployed.
        commit: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// An operation would remove or displace the running system.
    #[error("deployment {deployment}: {reason}")]
    Refused {
        /// The deployment (`stateroot/checksum.serial`).
        deployment: String,
        /// Why the operation is refused.
        reason: String,
    },
    /// Nothing to roll back to.
    #[error("no rollback deployment for stateroot {0:?}")]
    NoRollback(String),
    /// A filesystem lacks the room a deploy needs; nothing was written.
    #[error(
        "not enough space on the filesystem of {filesystem} for {what}: {needed} needed, {available} available"
    )]
    NoSpace {
        /// A path on the full filesystem (the sysroot or its /boot).
        filesystem: PathBuf,
        /// What needs the room.
        what: String,
        /// How much is needed.
        needed: String,
        /// How much is free.
        available: String,
    },
    /// A program to install as a container's init cannot be one.
    #[error("{path}: {reason}")]
    BadInit {
        /// The program offered.
        path: PathBuf,
        /// Why it cannot be the init.
        reason: String,
    },
    /// A mutating operation was called without holding the sysroot lock.
    #[error("the sysroot {0} is not locked (open it with Sysroot::open_locked)")]
    NotLocked(PathBuf),
}

/// Result with the sysroot's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|error| Error::Io {
            path: path.into(),
            error,
        })
    }
}

impl<T> IoContext<T> for Result<T, rustix::io::Errno> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io {
            path: path.into(),
            error: e.into(),
        })
    }
}

/// Attach the repository path to a store error.
pub(crate) trait StoreContext<T> {
    fn in_repo(self, repo: &std::path::Path) -> Result<T>;
}

impl<T> StoreContext<T> for treeline_store::Result<T> {
    fn in_repo(self, repo: &std::path::Path) -> Result<T> {
        self.map_err(|error| Error::Store {
            repo: repo.to_path_buf(),
            error,
        })
    }
}
