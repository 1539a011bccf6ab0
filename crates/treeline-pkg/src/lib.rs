//! Alpine (apk v2) and Debian (deb) packages: reading and verifying package files and
//! repository indexes, comparing versions, solving dependencies, and importing packages
//! into the store as one commit each.
//!
//! [`model`] is the family-neutral view of a package (name, version, relations) that the
//! format modules produce and the solver consumes.
#![forbid(unsafe_code)]

pub mod apk;
pub mod cache;
pub mod deb;
pub mod import;
pub mod model;
pub mod pipeline;
pub mod solve;
pub mod source;
pub mod version;

pub use model::{Atom, Dependency, Family, PackageMeta, Provide, VersionOp, VersionReq};

/// Errors from this crate: each module has its own, named after what it reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An Alpine package, index or key.
    #[error(transparent)]
    Apk(#[from] apk::Error),
    /// A Debian package, index or release file.
    #[error(transparent)]
    Deb(#[from] deb::Error),
    /// A Debian Release file or its signature.
    #[error(transparent)]
    Release(#[from] deb::release::Error),
    /// The host's apt sources.
    #[error(transparent)]
    AptSources(#[from] deb::sources::Error),
    /// A dependency problem without a solution.
    #[error(transparent)]
    Solve(#[from] solve::Error),
    /// Fetching or caching a package file.
    #[error(transparent)]
    Cache(#[from] cache::Error),
    /// Loading a repository's index.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// Building a package's tree.
    #[error(transparent)]
    Import(#[from] import::Error),
    /// Starting the downloader.
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    /// The store refused an import.
    #[error(transparent)]
    Store(#[from] treeline_store::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
