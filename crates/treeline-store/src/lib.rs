//! An OSTree-compatible content-addressed repository.
//!
//! Objects, checksums and repository layout are those of OSTree, so the real `ostree`
//! reads what this crate writes and the other way round.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod error;
pub mod object;
pub mod variant;

pub use checksum::{Checksum, ObjectName, ObjectType};
pub use error::{Error, Result};
pub mod fault;
pub mod keyfile;
pub mod repo;
pub mod sys;

pub use repo::{Repo, RepoMode, Transaction};
pub mod builder;
pub mod checkout;
pub mod delta;
pub mod fsck;
pub mod inspect;
pub mod progress;
pub mod prune;
pub mod refs;
pub mod sign;
pub mod summary;
