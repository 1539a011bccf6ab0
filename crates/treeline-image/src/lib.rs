//! Boot artifacts for treeline trees: the initramfs built from a tree's own kernel
//! modules ([`initramfs`]), and GPT disk images holding a sysroot with a deployed commit
//! and a boot loader ([`disk`]), and container root archives with `treeline-boot` as init
//! ([`container`]).
//!
//! ```no_run
//! use std::path::PathBuf;
//! use treeline_image::initramfs::{self, Compression, InitramfsOptions};
//!
//! # fn main() -> treeline_image::Result<()> {
//! let report = initramfs::build(
//!     &InitramfsOptions {
//!         root: PathBuf::from("/srv/tree"),
//!         kver: None,
//!         init: PathBuf::from("/usr/lib/treeline/treeline-boot"),
//!         extra_modules: vec!["xfs".into()],
//!         no_default_modules: false,
//!         compression: Compression::Zstd,
//!         files: vec![],
//!     },
//!     &PathBuf::from("/srv/tree/usr/lib/modules/6.1.0-26-amd64/initramfs.img"),
//! )?;
//! println!("{} modules", report.closure.modules.len());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod container;
pub mod disk;
pub mod error;
pub mod initramfs;
pub mod layout;
pub mod modules;

pub use error::{Error, Result};
