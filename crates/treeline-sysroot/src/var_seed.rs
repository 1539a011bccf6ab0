//! Giving a stateroot's `/var` the content commits ship in `/var`.
//!
//! A deployment's own `var` is hidden by the stateroot's `/var` at boot, so what a
//! commit ships there has to be copied over to be seen. That happens once per stateroot:
//! the first deployment of a new stateroot copies its `var` into the stateroot's `/var`
//! (only paths missing there; symlinks in the stateroot's `/var` are never followed),
//! then the file [`SEEDED_MARKER`] in the stateroot directory records it, holding the
//! commit it came from. Later deploys never copy commit `/var` content again, so nothing
//! the machine changed in `/var` is rewritten; what later commits need in `/var` they
//! describe in tmpfiles.d ([`crate::tmpfiles`]), which creates only missing paths.
//!
//! A stateroot that already has deployments but no marker (made by ostree, or by an
//! older treeline) is not new: it gets the marker without a copy. A deploy killed before
//! the marker is written leaves no deployment, so the next one copies again, adding only
//! what is still missing.

use std::fs;
use std::path::{Path, PathBuf};

use treeline_store::checkout::{self, CheckoutOptions};
use treeline_store::progress::NoProgress;
use treeline_store::{Checksum, Repo};

use crate::deployment::parse_deploy_name;
use crate::error::{IoContext, Result, StoreContext};
use crate::fsutil;

/// The file in `ostree/deploy/<stateroot>/` recording that its `/var` was seeded.
pub const SEEDED_MARKER: &str = ".treeline-var-seeded";

/// Where, inside the stateroot's `/var` (so renames never cross a filesystem), the
/// commit's `/var` is written before what is missing is moved into place.
const STAGING_NAME: &str = ".tl-seed-staging";

/// What seeding did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Paths (relative to `/var`) copied from the commit; empty when the stateroot was
    /// seeded before or not new.
    pub copied: Vec<String>,
    /// The stateroot was seeded by this deploy (the marker was written now).
    pub seeded_now: bool,
}

/// The first half of a seed: the commit's `/var` written out under a temporary name,
/// not yet flushed nor visible. A deploy stages while it checks the tree out, then
/// [`StagedSeed::finish`]es.
pub(crate) struct StagedSeed {
    marker: PathBuf,
    dest: PathBuf,
    /// `None` when the stateroot was seeded before (nothing to do at all); `Some(false)`
    /// when only the marker is to be written (not a new stateroot, or no `/var` in the
    /// commit).
    staged: Option<bool>,
}

/// Write the `/var` of `commit` (a copy, never hardlinks: the machine may change it)
/// under a temporary name in the stateroot's `/var`, unless the stateroot was seeded
/// before (then nothing) or already has deployments (then only the marker will be
/// written).
pub(crate) fn stage(repo: &Repo, commit: &Checksum, stateroot_dir: &Path) -> Result<StagedSeed> {
    stage_with(stateroot_dir, |staging| {
        let c = repo.load_commit(commit).in_repo(repo.path())?;
        let root = repo.load_dirtree(&c.root_tree).in_repo(repo.path())?;
        if !root.dirs.iter().any(|(name, _, _)| name == "var") {
            return Ok(false);
        }
        let opts = CheckoutOptions {
            subpath: Some("var".into()),
            force_copy: true,
            early_writeback: true,
            ..Default::default()
        };
        checkout::checkout(repo, commit, staging, &opts, &NoProgress).in_repo(repo.path())?;
        Ok(true)
    })
}

/// [`stage`] with `fill` writing the commit's `/var` to the path it is given (returning
/// false, having written nothing, when there is none).
fn stage_with(
    stateroot_dir: &Path,
    fill: impl FnOnce(&Path) -> Result<bool>,
) -> Result<StagedSeed> {
    let marker = stateroot_dir.join(SEEDED_MARKER);
    let dest = stateroot_dir.join("var");
    if fs::symlink_metadata(&marker).is_ok() {
        return Ok(StagedSeed {
            marker,
            dest,
            staged: None,
        });
    }
    let staging = dest.join(STAGING_NAME);
    // A seed killed before its marker leaves its staging copy: start over.
    fsutil::remove_tree(&staging)?;
    let staged = !has_deployments(&stateroot_dir.join("deploy"))? && fill(&staging)?;
    Ok(StagedSeed {
        marker,
        dest,
        staged: Some(staged),
    })
}

impl StagedSeed {
    /// Remove the staged copy of a deploy that failed (best effort: the next seed
    /// removes a leftover too).
    pub(crate) fn abandon(self) {
        if self.staged == Some(true)
            && let Err(e) = fsutil::remove_tree(&self.dest.join(STAGING_NAME))
        {
            tracing::warn!("leaving the staged /var seed: {e}");
        }
    }

    /// Flush the staged copy, move what the stateroot's `/var` lacks into place (symlinks
    /// there are never followed; directories on both sides are merged), drop the rest and
    /// write the marker (holding `commit`).
    pub(crate) fn finish(self, commit: &str) -> Result<SeedReport> {
        let Some(staged) = self.staged else {
            return Ok(SeedReport::default());
        };
        let mut copied = Vec::new();
        if staged {
            let staging = self.dest.join(STAGING_NAME);
            // One flush for all the copies, then the renames that make them visible: a
            // kill before a rename leaves the staging copy the next seed replaces.
            fsutil::syncfs(&self.dest)?;
            let mut parents = Vec::new();
            move_missing(
                &staging,
                &self.dest,
                Path::new(""),
                &mut copied,
                &mut parents,
            )?;
            fsutil::remove_tree(&staging)?;
            parents.push(self.dest.clone());
            parents.sort();
            parents.dedup();
            for parent in &parents {
                fsutil::fsync_dir(parent)?;
            }
        }
        fsutil::write_atomic(&self.marker, format!("{commit}\n").as_bytes(), 0o644)?;
        Ok(SeedReport {
            copied,
            seeded_now: true,
        })
    }
}

fn has_deployments(deploy_dir: &Path) -> Result<bool> {
    let rd = match fs::read_dir(deploy_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).at(deploy_dir),
    };
    for e in rd {
        let e = e.at(deploy_dir)?;
        if parse_deploy_name(&e.file_name().to_string_lossy()).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rename what `src` has and `dest` lacks into `dest` (listed in `moved`, relative to
/// `/var`, with the directories that changed in `parents`); directories present on both
/// sides are merged, anything else present in `dest` (including a symlink) is left alone.
fn move_missing(
    src: &Path,
    dest: &Path,
    rel: &Path,
    moved: &mut Vec<String>,
    parents: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)
        .at(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(src)?;
    names.sort();
    for name in names {
        let (s, d) = (src.join(&name), dest.join(&name));
        if rel.as_os_str().is_empty() && name == STAGING_NAME {
            continue;
        }
        match fs::symlink_metadata(&d) {
            Ok(dm) => {
                let sm = fs::symlink_metadata(&s).at(&s)?;
                if dm.is_dir() && sm.is_dir() {
                    move_missing(&s, &d, &rel.join(&name), moved, parents)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::rename(&s, &d).at(&d)?;
                moved.push(rel.join(&name).display().to_string());
                parents.push(dest.to_path_buf());
            }
            Err(e) => return Err(e).at(d),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed from a directory standing for the commit's tree.
    fn seed_once(root: &Path, stateroot_dir: &Path, commit: &str) -> Result<SeedReport> {
        let src = root.join("var");
        stage_with(stateroot_dir, |staging| {
            if !src.is_dir() {
                return Ok(false);
            }
            fsutil::copy_preserving(&src, staging)?;
            Ok(true)
        })?
        .finish(commit)
    }

    #[test]
    fn first_deploy_copies_missing_paths_and_later_ones_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("checkout");
        let sr = t.path().join("stateroot");
        fs::create_dir_all(root.join("var/lib/app")).unwrap();
        fs::write(root.join("var/lib/app/db"), "shipped\n").unwrap();
        fs::create_dir_all(root.join("var/log")).unwrap();
        fs::write(root.join("var/log/old"), "x").unwrap();
        fs::create_dir_all(root.join("var/lock")).unwrap();
        fs::write(root.join("var/lock/inside"), "x").unwrap();
        fs::create_dir_all(sr.join("var/log")).unwrap();
        fs::write(sr.join("var/log/old"), "machine\n").unwrap();
        std::os::unix::fs::symlink("../run/lock", sr.join("var/lock")).unwrap();

        let r = seed_once(&root, &sr, "c1").unwrap();
        assert!(r.seeded_now);
        assert_eq!(r.copied, ["lib"]);
        assert_eq!(
            fs::read_to_string(sr.join("var/lib/app/db")).unwrap(),
            "shipped\n"
        );
        assert_eq!(
            fs::read_to_string(sr.join("var/log/old")).unwrap(),
            "machine\n"
        );
        assert!(
            fs::symlink_metadata(sr.join("var/lock"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(sr.join(SEEDED_MARKER)).unwrap(), "c1\n");

        // Never again, even for paths that went missing.
        fs::remove_file(sr.join("var/lib/app/db")).unwrap();
        let r = seed_once(&root, &sr, "c2").unwrap();
        assert_eq!(r, SeedReport::default());
        assert!(!sr.join("var/lib/app/db").exists());
    }

    #[test]
    fn a_stateroot_with_deployments_is_marked_without_a_copy() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("checkout");
        let sr = t.path().join("stateroot");
        fs::create_dir_all(root.join("var/lib")).unwrap();
        fs::write(root.join("var/lib/f"), "x").unwrap();
        fs::create_dir_all(sr.join("var")).unwrap();
        fs::create_dir_all(sr.join("deploy").join(format!("{}.0", "ab".repeat(32)))).unwrap();
        let r = seed_once(&root, &sr, "c").unwrap();
        assert!(r.seeded_now && r.copied.is_empty());
        assert!(!sr.join("var/lib").exists());
    }
}
