//! The image crate's error type: every variant names the file, module or setting at fault.

use std::path::PathBuf;

/// Errors from building an initramfs or a disk image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named path failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A kernel module index file (`modules.dep`, ...) has a line that does not parse.
    #[error("{path}:{line}: {reason}")]
    ModuleIndex {
        /// The index file.
        path: PathBuf,
        /// Its 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A requested module is neither a module file, built in, nor an alias of one.
    #[error("kernel {kver}: no module, built-in or alias named {name:?}")]
    NoSuchModule {
        /// The kernel version searched.
        kver: String,
        /// The name asked for.
        name: String,
    },
    /// The tree has no kernel modules directory (or not the one named).
    #[error("{root}: {reason}")]
    NoKernel {
        /// The tree searched.
        root: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// The image layout file or option is invalid.
    #[error("layout {origin}: {reason}")]
    Layout {
        /// The layout file, or `--size`/defaults.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// An external tool (mkfs.ext4, sfdisk, extlinux, qemu-img...) failed or is missing.
    #[error("{tool}: {reason}")]
    Tool {
        /// The command line, shortened to the program and its main argument.
        tool: String,
        /// Its exit status and standard error, or why it could not start.
        reason: String,
    },
    /// Copying the commit into the image's repository, or configuring its remote, failed.
    #[error("repository {repo}: {reason}")]
    Pull {
        /// The repository involved.
        repo: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The init program cannot run in an initramfs (it has no libraries).
    #[error("init {path}: {reason}")]
    BadInit {
        /// The program.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The deployed tree has a kernel but no initramfs, which an OSTree boot needs.
    #[error(
        "{rev}: the tree has kernel {kver} but no usr/lib/modules/{kver}/initramfs.img; an \
         OSTree deployment boots only through an initramfs that prepares its root: build it \
         into the tree before committing (`treeline image initramfs --root TREE`, with \
         treeline-boot as its init)"
    )]
    NoInitramfs {
        /// The ref or commit deployed.
        rev: String,
        /// The kernel version.
        kver: String,
    },
    /// The sysroot being staged for the image failed.
    #[error("staging sysroot: {0}")]
    Sysroot(#[from] treeline_sysroot::Error),
    /// The source repository failed.
    #[error("repository {repo}: {error}")]
    Store {
        /// The repository path.
        repo: PathBuf,
        /// The store's error.
        #[source]
        error: treeline_store::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|error| Error::Io {
            path: path.into(),
            error,
        })
    }
}
