//! Debian's deb: packages, Packages and Release indexes, versions and relations.
//!
//! - [`package`] opens a `.deb` as a stream: the control archive in memory (it is small),
//!   then the data archive entry by entry, refusing entries OSTree cannot store or that
//!   would escape the tree.
//! - [`index`] reads `Packages` indexes (plain, gzip, xz) into [`PackageMeta`](crate::PackageMeta).
//! - [`relation`] parses `Depends`-style fields for a target architecture.
//! - [`deb822`] is the control-file syntax under all of them, keeping every field as read.

pub mod deb822;
mod decompress;
pub mod index;
pub mod package;
pub mod relation;
pub mod release;
pub mod sources;
pub mod version;

pub use deb822::{Stanza, StanzaReader};
pub use index::{PackagesReader, open_packages, package_meta, packages_from_reader, read_packages};
pub use package::{
    ControlArchive, ControlMember, DataArchive, DataEntries, DataEntry, DebPackage, EntryKind,
};
pub use relation::{Target, parse_atoms, parse_dependencies, parse_provides};

use std::path::PathBuf;

/// Errors reading Debian packages and indexes; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The `ar` container of a `.deb` is malformed or in the wrong order.
    #[error("{path}: not a valid .deb: {problem}")]
    Container {
        /// The package file.
        path: PathBuf,
        /// What is wrong (bad magic, truncated member, unexpected member, ...).
        problem: String,
    },
    /// A member of a `.deb` (`control.tar.xz`, `data.tar.zst`, ...) cannot be decompressed
    /// or read as tar.
    #[error("{path}: member {member}: {problem}")]
    Member {
        /// The package file.
        path: PathBuf,
        /// The ar member name.
        member: String,
        /// What is wrong.
        problem: String,
    },
    /// The control archive or its `control` file is unusable (missing file, missing or
    /// invalid field).
    #[error("{path}: control: {problem}")]
    Control {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A data archive entry that must not be extracted (absolute path, `..`, path through
    /// a symlink, dangling hardlink, device node, fifo, non-UTF-8 name).
    #[error("{path}: data.tar entry {entry:?}: {problem}")]
    Entry {
        /// The package file.
        path: PathBuf,
        /// The entry's path as written in the archive.
        entry: String,
        /// What is wrong.
        problem: String,
    },
    /// A file's content does not match the package's `md5sums`.
    #[error("{path}: {entry}: md5 {actual} does not match md5sums ({expected})")]
    Md5Mismatch {
        /// The package file.
        path: PathBuf,
        /// The file's normalized path.
        entry: String,
        /// What `md5sums` says.
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A deb822 (control file syntax) error.
    #[error("{path}: line {line}: {problem}")]
    Syntax {
        /// The file (for a member of a `.deb`: `pkg.deb:control`).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A relation field (`Depends`, `Provides`, ...) that does not parse.
    #[error("{field}: {problem} in {text:?}")]
    Relation {
        /// The field name.
        field: String,
        /// The whole field value.
        text: String,
        /// What is wrong.
        problem: String,
    },
    /// A stanza of an index (or a package's control file) is unusable as a package.
    #[error("{path}: stanza at line {line} (package {package:?}): {error}")]
    Stanza {
        /// The index file.
        path: PathBuf,
        /// 1-based line where the stanza starts.
        line: usize,
        /// The `Package` field, if present.
        package: String,
        /// What is wrong.
        error: Box<Error>,
    },
    /// A required field is missing or invalid in a stanza.
    #[error("field {field}: {problem}")]
    Field {
        /// The field name.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// Wraps this error in an [`std::io::Error`] (kind `InvalidData`) for `Read` impls; the
    /// original is recoverable with [`Error::from_io`].
    pub(crate) fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }

    /// Recovers an [`Error`] that [`Error::into_io`] wrapped, or names the file for any
    /// other I/O error.
    pub fn from_io(path: &std::path::Path, error: std::io::Error) -> Error {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let kind = error.kind();
            if let Some(Ok(inner)) = error.into_inner().map(|inner| inner.downcast::<Error>()) {
                return *inner;
            }
            return Error::Io {
                path: path.to_path_buf(),
                error: std::io::Error::from(kind),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}
