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

use std::collections::BTreeSet;
use std::path::Path;

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

/// A configured root written into a transaction, to be committed with the compose's
/// own commit (one sync for both).
pub struct Pending {
    /// Its package identities.
    pub packages: BTreeSet<String>,
    /// Its (dirtree, dirmeta).
    pub root: (Checksum, Checksum),
}

/// Writes `root` (the configured root of `packages`) into `txn`.
pub fn write(txn: &Transaction<'_>, root: &Path, packages: BTreeSet<String>) -> Result<Pending> {
    use treeline_store::builder::{CommitModifier, tree_from_dir};
    let modifier = CommitModifier::default().for_repo(txn.repo());
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
