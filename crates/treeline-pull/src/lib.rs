//! Remotes and pulls: fetching commits and their objects from another OSTree repository,
//! over HTTP (any static server, or `treeline serve`) or from a local path, verified
//! object by object, resumable, with bounded parallelism.
#![forbid(unsafe_code)]

pub mod fetch;
pub mod local;
pub mod offline;
pub mod pull;
pub mod remote;

pub use offline::OfflineSource;
pub use pull::{DeltaPlan, PullOptions, PullPlan, PullReport, TargetPlan, plan, pull};
pub use remote::Remote;

/// Errors from remotes and pulls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local repository failed.
    #[error(transparent)]
    Store(#[from] treeline_store::Error),
    /// A remote is missing or misconfigured.
    #[error("remote {remote}: {message}")]
    Remote {
        /// The remote's name.
        remote: String,
        /// What is wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Http {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The request failed (connection, timeout, truncated body) after all retries.
    #[error("{url}: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An offline update source (`upgrade --from PATH`) is unusable.
    #[error("{}: {message}", path.display())]
    Offline {
        /// The path given.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Something the server sent is not acceptable (bad checksum, too large, bad format).
    #[error("{url}: {message}")]
    BadReply {
        /// Where it came from.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
