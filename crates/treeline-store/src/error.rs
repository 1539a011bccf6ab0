//! The store's error type: every variant names the object, path or input at fault.

use std::path::PathBuf;

use crate::checksum::ObjectName;

/// Errors from reading or writing an OSTree repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named path failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained as a source).
        error: std::io::Error,
    },
    /// An object's bytes do not decode as its type, or are not in normal form.
    #[error("invalid {object}: {reason}")]
    InvalidObject {
        /// Which object (type and checksum, or a path for objects not yet stored).
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object's content does not hash to its name.
    #[error("corrupted object {object}: content hashes to {actual}")]
    Corrupted {
        /// The object as named in the repository.
        object: ObjectName,
        /// The checksum its content actually has.
        actual: String,
    },
    /// A required object is not in the repository.
    #[error("object {0} not found")]
    NotFound(ObjectName),
    /// A text that should be a SHA-256 checksum is not one.
    #[error("invalid checksum {0:?}: expected 64 lowercase hex characters")]
    InvalidChecksum(String),
    /// A ref name that ostree would reject.
    #[error("invalid ref name {0:?}")]
    InvalidRef(String),
    /// A revision (ref, checksum or prefix) that resolves to nothing.
    #[error("revision {0:?} not found")]
    RevNotFound(String),
    /// A checksum prefix that matches more than one commit.
    #[error("revision {0:?} is ambiguous")]
    AmbiguousRev(String),
    /// A file name that may not appear in a tree.
    #[error("invalid file name {name:?} in {context}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Where it was found.
        context: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A file type OSTree cannot store (device, fifo, socket).
    #[error(
        "{path}: unsupported file type ({kind}); only regular files, symlinks and directories can be committed"
    )]
    UnsupportedFileType {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The repository configuration is missing or invalid.
    #[error("repository config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The operation cannot be done in this repository mode, or with these options.
    #[error("{0}")]
    Unsupported(String),
    /// A conflict during a checkout (existing file, non-identical union, ...).
    #[error("{path}: {message}")]
    Checkout {
        /// The destination path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A signature is missing or does not verify.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// A tar archive given as tree input is malformed or hostile.
    #[error("tar {source_name}: {message}")]
    Tar {
        /// The archive.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// Result alias for the store.
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

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io {
            path: path.into(),
            error: e.into(),
        })
    }
}
