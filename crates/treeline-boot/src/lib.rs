//! Entering a deployment of an OSTree-layout sysroot, for `treeline-boot`.
//!
//! Two callers share this: the container init (PID 1 whose root is the sysroot, the
//! deployment chosen by the container deployment list, [`pointer`]) and `prepare-root`
//! in an initramfs (the deployment named by the `ostree=` kernel argument). Both build
//! the same root: the deployment directory bound on the target, `/usr` bound read-only,
//! `/etc` the deployment's own writable copy, `/var` bound from the stateroot and the
//! physical root bound on `/sysroot`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod initramfs;
pub mod pointer;
pub mod setup;

pub use setup::{Error, RootSetup};
