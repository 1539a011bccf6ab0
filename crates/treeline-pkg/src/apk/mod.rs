//! Alpine's apk v2: packages, APKINDEX, versions and dependency atoms.

pub mod version;

/// Errors reading Alpine packages, indexes and keys; each names the file and what is wrong.
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
