//! Free-space checks before a deploy writes anything.
//!
//! A deployment is a hardlink farm of the repository, so what it costs in the sysroot is
//! its directories, the copy of `/usr/etc` that becomes `/etc`, and their inodes; in
//! `/boot` it costs the kernel, initramfs and devicetree unless that kernel is installed
//! already. [`estimate`] reads those sizes from the commit in the repository (directory
//! objects and the `usr/etc` and kernel files only), and [`Sysroot::check_space`] compares
//! them with what `statvfs` reports before the checkout starts.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use treeline_store::{Checksum, Repo};

use crate::error::{Error, IoContext, Result, StoreContext};
use crate::sysroot::Sysroot;

/// What a deployment of one commit needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceNeed {
    /// Bytes in the sysroot's filesystem: directories and the `/etc` copy, in blocks.
    pub sysroot_bytes: u64,
    /// Inodes in the sysroot's filesystem.
    pub sysroot_inodes: u64,
    /// Bytes in `/boot` when the kernel is not installed yet.
    pub boot_bytes: u64,
    /// The kernel files (`usr/lib/modules/<kver>/...`), in bootcsum order, for deciding
    /// whether the kernel is installed already.
    kernel_files: Vec<Checksum>,
}

/// Block size assumed for rounding (ext4, xfs and btrfs default).
const BLOCK: u64 = 4096;
/// Room for the origin file, boot entries and links, whatever the tree.
const SLACK: u64 = 1 << 20;

fn blocks(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// What deploying `commit` of `repo` needs (see the module docs).
pub fn estimate(repo: &Repo, commit: &Checksum) -> Result<SpaceNeed> {
    let c = repo.load_commit(commit).in_repo(repo.path())?;
    let mut need = SpaceNeed {
        sysroot_bytes: SLACK,
        ..Default::default()
    };
    walk(repo, &c.root_tree, "", &mut need)?;
    Ok(need)
}

fn file_size(repo: &Repo, c: &Checksum) -> Result<u64> {
    let (_, _, size) = repo.open_file(c).in_repo(repo.path())?;
    Ok(size)
}

fn walk(repo: &Repo, tree: &Checksum, path: &str, need: &mut SpaceNeed) -> Result<()> {
    let t = repo.load_dirtree(tree).in_repo(repo.path())?;
    need.sysroot_bytes += BLOCK;
    need.sysroot_inodes += 1;
    let in_etc = path == "/usr/etc" || path.starts_with("/usr/etc/");
    if in_etc {
        for (_, c) in &t.files {
            need.sysroot_bytes += blocks(file_size(repo, c)?);
            need.sysroot_inodes += 1;
        }
    }
    if path == "/usr/lib/modules" {
        // The first kernel version with a vmlinuz, as kernel::find_kernel picks it.
        for (_, sub, _) in &t.dirs {
            let st = repo.load_dirtree(sub).in_repo(repo.path())?;
            let get = |n: &str| st.files.iter().find(|(f, _)| f == n).map(|(_, c)| *c);
            let Some(vmlinuz) = get("vmlinuz") else {
                continue;
            };
            need.kernel_files.push(vmlinuz);
            if let Some(i) = get("initramfs.img").or_else(|| get("initramfs")) {
                need.kernel_files.push(i);
            }
            if let Some(d) = get("devicetree") {
                need.kernel_files.push(d);
            }
            for c in need.kernel_files.clone() {
                need.boot_bytes += blocks(file_size(repo, &c)?);
            }
            break;
        }
    }
    // Only the directories under /usr/etc and /usr/lib/modules matter beyond counting.
    for (name, sub, _) in &t.dirs {
        walk(repo, sub, &format!("{path}/{name}"), need)?;
    }
    Ok(())
}

/// Free bytes and inodes (for unprivileged users) and the device of a filesystem.
fn free(path: &Path) -> Result<(u64, u64, u64)> {
    let v = rustix::fs::statvfs(path).at(path)?;
    Ok((v.f_bavail * v.f_frsize, v.f_favail, v.f_fsid))
}

fn human(n: u64) -> String {
    if n >= 10 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n.div_ceil(1024))
    }
}

impl Sysroot {
    /// Refuse (with [`Error::NoSpace`], naming the filesystem and the sizes) when the
    /// sysroot or `/boot` lacks the room [`estimate`] computed for deploying `commit`.
    pub fn check_space(&self, stateroot: &str, commit: &Checksum) -> Result<SpaceNeed> {
        let repo = self.repo()?;
        let need = estimate(&repo, commit)?;
        let boot = self.path().join("boot");
        let (sys_free, sys_inodes, sys_fs) = free(self.path())?;
        let (boot_free, _, boot_fs) = free(&boot)?;
        let mut boot_need = need.boot_bytes;
        if boot_need > 0
            && boot_need > boot_free.saturating_sub(same_fs_share(&need, sys_fs, boot_fs))
        {
            // Short of room: a kernel already installed costs nothing.
            if let Some(bootcsum) = bootcsum_in_repo(&repo, &need.kernel_files)?
                && boot
                    .join("ostree")
                    .join(format!("{stateroot}-{bootcsum}"))
                    .is_dir()
            {
                boot_need = 0;
            }
        }
        let no_space = |fs: PathBuf, what: &str, needed: u64, available: u64| Error::NoSpace {
            filesystem: fs,
            what: what.to_owned(),
            needed: human(needed),
            available: human(available),
        };
        if sys_fs == boot_fs {
            let total = need.sysroot_bytes + boot_need;
            if total > sys_free {
                return Err(no_space(
                    self.path().to_path_buf(),
                    "the deployment and its kernel",
                    total,
                    sys_free,
                ));
            }
        } else {
            if need.sysroot_bytes > sys_free {
                return Err(no_space(
                    self.path().to_path_buf(),
                    "the deployment",
                    need.sysroot_bytes,
                    sys_free,
                ));
            }
            if boot_need > boot_free {
                return Err(no_space(
                    boot,
                    "the kernel and initramfs",
                    boot_need,
                    boot_free,
                ));
            }
        }
        // Filesystems without an inode limit (btrfs) report 0 free inodes.
        if sys_inodes > 0 && need.sysroot_inodes > sys_inodes {
            return Err(Error::NoSpace {
                filesystem: self.path().to_path_buf(),
                what: "the deployment's directories and /etc (inodes)".into(),
                needed: format!("{} inodes", need.sysroot_inodes),
                available: format!("{sys_inodes} inodes"),
            });
        }
        Ok(need)
    }
}

fn same_fs_share(need: &SpaceNeed, sys_fs: u64, boot_fs: u64) -> u64 {
    if sys_fs == boot_fs {
        need.sysroot_bytes
    } else {
        0
    }
}

/// The bootcsum of the kernel files (SHA-256 over their contents in order), or `None`
/// when there is no kernel.
fn bootcsum_in_repo(repo: &Repo, files: &[Checksum]) -> Result<Option<String>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut h = Sha256::new();
    for c in files {
        let (_, mut reader, _) = repo.open_file(c).in_repo(repo.path())?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).at(repo.path())?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(Some(hex::encode(h.finalize())))
}
