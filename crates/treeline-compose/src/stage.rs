//! Configured Debian roots kept between composes, so a recompose does not unpack and
//! configure again what it configured before.
//!
//! After a Debian root is assembled and configured (before the treefile's settings and
//! the OSTree layout), it is committed on `treeline/stage/deb/v1/KEY`, KEY naming its
//! exact package set (name, version, architecture and SHA-256 of each `.deb`). A later
//! compose whose package set contains a stage's set starts from that stage: with the same
//! set nothing is unpacked or run; with more packages only the new ones are unpacked and
//! configured, on top, as `apt-get install NEW` would on the earlier system. A stage is
//! never used when a package was removed or changed version, or with a `base` tarball.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use treeline_pkg::PackageMeta;
use treeline_store::checkout::{CheckoutOptions, Overwrite, checkout};
use treeline_store::progress::NoProgress;
use treeline_store::{Checksum, Repo, Transaction};

use crate::{Result, io_err, store_err};

/// Where stages live; the version changes whenever what a stage holds changes.
pub const PREFIX: &str = "treeline/stage/deb/v1/";
/// `as`: the stage's package identities, sorted.
const PACKAGES_KEY: &str = "treeline.stage.packages";

/// What pins a package in a stage: `name version arch sha256`.
pub fn identity(p: &PackageMeta) -> String {
    format!("{} {} {} {}", p.name, p.version, p.arch, p.checksum)
}

/// A stage found for reuse.
pub struct Stage {
    /// Its commit.
    pub commit: Checksum,
    /// Its package identities.
    pub packages: BTreeSet<String>,
}

/// The largest stage whose package set is within `wanted`, if any.
pub fn find(repo: &Repo, wanted: &BTreeSet<String>) -> Option<Stage> {
    let refs = repo.list_refs().ok()?;
    let mut best: Option<Stage> = None;
    for (name, commit) in refs {
        if !name.starts_with(PREFIX) {
            continue;
        }
        let Ok(c) = repo.load_commit(&commit) else {
            continue;
        };
        let Some(list) = c.metadata.get(PACKAGES_KEY).and_then(|v| v.as_strv()) else {
            continue;
        };
        let packages: BTreeSet<String> = list.into_iter().collect();
        if !packages.is_subset(wanted)
            || best
                .as_ref()
                .is_some_and(|b| b.packages.len() >= packages.len())
            || !treeline_store::builder::commit_is_complete(repo, &commit).unwrap_or(false)
        {
            continue;
        }
        best = Some(Stage { commit, packages });
    }
    best
}

/// Copies the stage into `root` (copies: scripts modify files and must not modify store
/// objects).
pub fn restore(repo: &Repo, stage: &Stage, root: &Path) -> Result<()> {
    let opts = CheckoutOptions {
        overwrite: Overwrite::Union,
        force_copy: true,
        ..CheckoutOptions::default()
    };
    checkout(repo, &stage.commit, root, &opts, &NoProgress).map_err(store_err(format!(
        "restoring stage {}",
        stage.commit.to_hex()
    )))
}

/// A stage checked out with hardlinks as the read-only lower layer of an overlay mounted
/// on the root being assembled: whatever is written under the root (new packages, their
/// scripts, the treefile's settings, the layout) goes to a private upper directory, by
/// copy-up, so nothing can write through to a store object, and nothing is copied that
/// is not written. Files still in the lower layer are store objects, and the store's
/// device/inode map names their checksums without reading them again.
///
/// Unmounted on drop. A compose that is killed leaves the mount behind, under the
/// repository's `tmp`: [`unmount_stale`] removes it on the next compose.
pub struct Overlay {
    root: PathBuf,
    devino: HashMap<(u64, u64), Checksum>,
    mounted: bool,
}

/// The mount options an overlay needs to be committed through: directory renames (the
/// layout moves `/etc` and `/var/lib/dpkg`) kept in the upper layer, no metadata-only
/// copy-up (a file in the upper layer has its own data), inode numbers of the layers
/// as they are (the device/inode map). `volatile`: no sync of the upper layer (on
/// unmount it would sync the whole filesystem); the upper layer is thrown away, what
/// is kept is committed into the store, which syncs what it writes.
const OVERLAY_OPTIONS: &str = "redirect_dir=on,metacopy=off,index=off,xino=off,volatile";

impl Overlay {
    /// Checks `stage` out with hardlinks next to `root` and mounts the overlay on `root`.
    /// `None` when that is impossible here (no privilege to mount, a repository mode
    /// whose objects are not the files themselves, a path overlayfs cannot take): the
    /// caller copies the stage instead.
    pub fn mount(repo: &Repo, stage: &Stage, root: &Path) -> Result<Option<Overlay>> {
        Self::mount_with(repo, root, |lower| {
            let opts = CheckoutOptions {
                require_hardlinks: true,
                ..CheckoutOptions::default()
            };
            checkout(repo, &stage.commit, lower, &opts, &NoProgress).map_err(store_err(format!(
                "checking out stage {}",
                stage.commit.to_hex()
            )))
        })
    }

    /// A fresh Debian root: the package commits checked out with hardlinks, one over the
    /// other in order (a later package's file replaces an earlier one's, as unpacking
    /// does), `/usr` merged (renames and symlinks only: no file is written), as the
    /// lower layer of an overlay mounted on the empty `root`. `None` as for
    /// [`Overlay::mount`]: the caller copies the packages instead.
    pub fn mount_packages(
        repo: &Repo,
        packages: &[(String, Checksum)],
        root: &Path,
    ) -> Result<Option<Overlay>> {
        Self::mount_with(repo, root, |lower| {
            // Hardlinks where possible; where not (a filesystem boundary, an object at
            // its link limit), a copy, which is as good in a lower layer.
            let opts = CheckoutOptions {
                overwrite: Overwrite::Union,
                ..CheckoutOptions::default()
            };
            for (label, commit) in packages {
                checkout(repo, commit, lower, &opts, &NoProgress)
                    .map_err(store_err(format!("extracting {label}")))?;
            }
            crate::layout::usr_merge(lower, &mut Vec::new())
        })
    }

    /// Fills the lower layer next to `root` with `fill`, then mounts the overlay.
    fn mount_with(
        repo: &Repo,
        root: &Path,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Option<Overlay>> {
        if repo.mode() != treeline_store::RepoMode::Bare {
            return Ok(None);
        }
        let parent = root.parent().unwrap_or(Path::new("/"));
        let (lower, upper, work) = (
            parent.join("lower"),
            parent.join("upper"),
            parent.join("overlay-work"),
        );
        let printable = |p: &Path| {
            p.to_str()
                .is_some_and(|s| !s.contains([',', ':', '\\', '"', '\'']))
        };
        if ![&lower, &upper, &work, root].iter().all(|p| printable(p)) {
            return Ok(None);
        }
        let devino = match treeline_store::builder::scan_devino(repo) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("no device/inode map, not mounting an overlay: {e}");
                return Ok(None);
            }
        };
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(io_err(d))?;
        }
        fill(&lower)?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={},{OVERLAY_OPTIONS}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let output = Command::new("mount")
            .args(["-t", "overlay", "treeline-compose", "-o", &options])
            .arg(root)
            .output();
        match output {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                tracing::debug!(
                    "mounting an overlay failed, copying the stage instead: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return Ok(None);
            }
            Err(e) => {
                tracing::debug!("cannot run mount, copying the stage instead: {e}");
                return Ok(None);
            }
        }
        let mut overlay = Overlay {
            root: root.to_owned(),
            devino: HashMap::new(),
            mounted: true,
        };
        // Through the overlay a file of the lower layer has the overlay's device and its
        // own inode number; files copied up have inodes of their own.
        let dev = std::fs::metadata(root).map_err(io_err(root))?.dev();
        overlay.devino = devino
            .into_iter()
            .flat_map(|((d, ino), c)| [((d, ino), c), ((dev, ino), c)])
            .collect();
        Ok(Some(overlay))
    }

    /// The device/inode map of the files still in the lower layer, for
    /// [`CommitModifier::devino`](treeline_store::builder::CommitModifier).
    pub fn devino(&self) -> HashMap<(u64, u64), Checksum> {
        self.devino.clone()
    }

    /// Unmounts; the directories stay for the caller to remove.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.root)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = unmount(&self.root)
        {
            tracing::warn!("{e}");
        }
    }
}

fn unmount(root: &Path) -> Result<()> {
    let status = Command::new("umount").arg(root).status();
    if status.as_ref().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    // Busy (a script left a process behind): detach it, it goes when that exits.
    match Command::new("umount").arg("-l").arg(root).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(io_err(root)(std::io::Error::other(format!(
            "umount -l failed: {s}"
        )))),
        Err(e) => Err(io_err(root)(e)),
    }
}

/// Unmounts overlays that composes killed before they could unmount left under `tmp`
/// (the repository's temporary directory) and removes their directories.
pub fn unmount_stale(tmp: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(tmp) = std::fs::canonicalize(tmp) else {
        return;
    };
    for line in mountinfo.lines() {
        // Field 5 is the mount point (octal escapes only for whitespace and backslash,
        // which compose directory names never contain).
        let Some(point) = line.split(' ').nth(4).map(PathBuf::from) else {
            continue;
        };
        let Some(dir) = point.parent() else { continue };
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let pid_alive = name
            .strip_prefix("compose-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if dir.parent() != Some(tmp.as_path()) || !name.starts_with("compose-") || pid_alive {
            continue;
        }
        match unmount(&point) {
            Ok(()) => {
                tracing::info!("removed the overlay of a killed compose: {}", dir.display());
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

/// A configured root written into a transaction, to be committed with the compose's
/// own commit (one sync for both).
pub struct Pending {
    /// Its package identities.
    pub packages: BTreeSet<String>,
    /// Its (dirtree, dirmeta).
    pub root: (Checksum, Checksum),
}

/// Writes `root` (the configured root of `packages`) into `txn`.
/// `devino`: an [`Overlay`]'s map, when `root` is one.
pub fn write(
    txn: &Transaction<'_>,
    root: &Path,
    packages: BTreeSet<String>,
    devino: Option<HashMap<(u64, u64), Checksum>>,
) -> Result<Pending> {
    use treeline_store::builder::{CommitModifier, tree_from_dir};
    let modifier = CommitModifier {
        devino,
        ..CommitModifier::default()
    }
    .for_repo(txn.repo());
    let tree = tree_from_dir(txn, root, &modifier, &NoProgress)
        .map_err(store_err("reading the configured root"))?;
    let root = tree
        .write(txn)
        .map_err(store_err("writing the configured root"))?;
    Ok(Pending { packages, root })
}

impl Pending {
    /// Writes the stage's commit into `txn`; returns the ref to point at it once `txn`
    /// is committed.
    pub fn commit(
        &self,
        txn: &Transaction<'_>,
    ) -> Result<(treeline_store::refs::RefSpec, Checksum)> {
        use treeline_store::builder::{CommitOptions, write_commit};
        use treeline_store::variant::{Metadata, Value};
        let list: Vec<String> = self.packages.iter().cloned().collect();
        let key = Checksum::of(list.join("\n").as_bytes()).to_hex();
        let spec = treeline_store::refs::RefSpec::parse(&format!("{PREFIX}{key}"))
            .map_err(store_err("stage ref"))?;
        let mut metadata = Metadata::new();
        metadata.insert(PACKAGES_KEY, Value::strv(&list));
        let options = CommitOptions {
            subject: format!("configured root of {} packages", list.len()),
            body: String::new(),
            metadata,
            parent: None,
            timestamp: 0,
        };
        let commit =
            write_commit(txn, self.root, &options).map_err(store_err("writing the stage"))?;
        Ok((spec, commit))
    }
}

/// Moves everything under `from` into `to`: directories merge (the existing one keeps
/// its metadata), anything else replaces what is there.
pub fn move_into(from: &Path, to: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(io_err(from))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io_err(from))?;
    entries.sort();
    for name in entries {
        let (a, b) = (from.join(&name), to.join(&name));
        let ma = std::fs::symlink_metadata(&a).map_err(io_err(&a))?;
        // Following symlinks: a package's `bin/` goes through the root's `bin -> usr/bin`.
        match std::fs::metadata(&b) {
            Ok(mb) if ma.is_dir() && mb.is_dir() => move_into(&a, &b)?,
            Ok(mb) if mb.is_dir() => {
                return Err(crate::Error::Tree {
                    what: "stage".to_owned(),
                    message: format!("{} would replace a directory", b.display()),
                });
            }
            _ => {
                if std::fs::symlink_metadata(&b).is_ok() {
                    std::fs::remove_file(&b).map_err(io_err(&b))?;
                }
                std::fs::rename(&a, &b).map_err(io_err(&a))?;
            }
        }
    }
    Ok(())
}
