//! Dependency solving (placeholder until implemented).

/// A request that cannot be satisfied, explained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No consistent set exists.
    #[error("{0}")]
    Unsolvable(String),
}
