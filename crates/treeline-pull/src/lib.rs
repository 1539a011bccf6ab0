//! Remotes and pulls.
