//! The target side of treeline: an OSTree-layout sysroot, its deployments, the `/etc`
//! three-way merge, boot loader entries, rollback, pinning and cleanup.
//!
//! What this crate writes is what `ostree admin` writes (ostree-format.md section 9), so
//! `ostree admin status` reads a sysroot made here and this crate reads and upgrades one
//! made by ostree. Every change holds the sysroot lock ([`SysrootLock`], the lock ostree
//! takes) and becomes visible by one atomic rename of the `boot/loader` symlink.
//!
//! ```no_run
//! use std::path::Path;
//! use treeline_sysroot::{Booted, DeployOptions, Sysroot};
//!
//! # fn main() -> treeline_sysroot::Result<()> {
//! let path = Path::new("/mnt/image");
//! Sysroot::init_fs(path)?;
//! let mut sysroot = Sysroot::open_locked(path, Booted::None)?;
//! sysroot.init_stateroot("debian")?;
//! let report = sysroot.deploy(&DeployOptions {
//!     stateroot: "debian".into(),
//!     revision: "debian/12/x86_64".into(),
//!     karg: vec!["root=LABEL=root".into()],
//!     ..Default::default()
//! })?;
//! println!("deployed {}", report.deployment.name());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
pub mod bls;
mod cleanup;
mod container;
pub use container::elf_interpreter;
mod deploy;
pub mod deployment;
pub mod error;
pub mod etc_merge;
mod fsutil;
mod kargs;
pub mod kernel;
pub mod lock;
mod owners;
pub mod space;
pub mod staged;
mod status;
pub mod syslinux;
mod sysroot;
pub mod tmpfiles;
pub mod var_seed;
mod verify;

pub use accounts::{AccountsReport, IdChanges};
pub use bls::{BootEntry, Kargs};
pub use cleanup::CleanupReport;
pub use deploy::{DeployOptions, DeployReport};
pub use deployment::Deployment;
pub use error::{Error, Result};
pub use fsutil::remove_sysroot;
pub use kargs::KargEdit;
pub use lock::SysrootLock;
pub use space::SpaceNeed;
pub use status::DeploymentStatus;
pub use sysroot::{Booted, Sysroot};
