//! Debian's deb: packages, Packages and Release indexes, versions and relations.

pub mod release;
pub mod sources;
pub mod version;

/// Errors reading Debian packages and indexes; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}
