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

use crate::deployment::parse_deploy_name;
use crate::error::{IoContext, Result};
use crate::fsutil;

/// The file in `ostree/deploy/<stateroot>/` recording that its `/var` was seeded.
pub const SEEDED_MARKER: &str = ".treeline-var-seeded";

/// What seeding did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Paths (relative to `/var`) copied from the commit; empty when the stateroot was
    /// seeded before or not new.
    pub copied: Vec<String>,
    /// The stateroot was seeded by this deploy (the marker was written now).
    pub seeded_now: bool,
}

/// Seed `stateroot_dir/var` from the checkout `root` (its `var`) unless the stateroot
/// was seeded before or already has deployments; `commit` is written into the marker.
#[cfg(test)]
pub(crate) fn seed_once(root: &Path, stateroot_dir: &Path, commit: &str) -> Result<SeedReport> {
    stage(root, stateroot_dir)?.finish(commit)
}

/// The first half of a seed: what is missing copied under temporary names, not yet
/// flushed nor visible. A deploy stages while it does other work, then
/// [`StagedSeed::finish`]es.
pub(crate) struct StagedSeed {
    marker: PathBuf,
    dest: PathBuf,
    /// `None` when the stateroot was seeded before (nothing to do at all).
    copies: Option<Vec<StagedCopy>>,
}

/// Copy what the stateroot's `/var` lacks of `root/var` under temporary names, unless the
/// stateroot was seeded before (then nothing) or already has deployments (then only the
/// marker will be written).
pub(crate) fn stage(root: &Path, stateroot_dir: &Path) -> Result<StagedSeed> {
    let marker = stateroot_dir.join(SEEDED_MARKER);
    let dest = stateroot_dir.join("var");
    if fs::symlink_metadata(&marker).is_ok() {
        return Ok(StagedSeed {
            marker,
            dest,
            copies: None,
        });
    }
    let mut staged = Vec::new();
    if !has_deployments(&stateroot_dir.join("deploy"))? {
        let src = root.join("var");
        if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
            copy_missing(&src, &dest, Path::new(""), &mut staged)?;
        }
    }
    Ok(StagedSeed {
        marker,
        dest,
        copies: Some(staged),
    })
}

impl StagedSeed {
    /// Flush the copies, rename them into place and write the marker (holding `commit`).
    pub(crate) fn finish(self, commit: &str) -> Result<SeedReport> {
        let Some(staged) = self.copies else {
            return Ok(SeedReport::default());
        };
        // One flush for all the copies, then the renames that make them visible: a kill
        // before a rename leaves a temporary copy the next seed replaces.
        if !staged.is_empty() {
            fsutil::syncfs(&self.dest)?;
        }
        let mut parents: Vec<&Path> = Vec::new();
        for copy in &staged {
            fs::rename(&copy.tmp, &copy.dest).at(&copy.dest)?;
            let parent = copy.dest.parent().unwrap_or(&self.dest);
            if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        for parent in parents {
            fsutil::fsync_dir(parent)?;
        }
        fsutil::write_atomic(&self.marker, format!("{commit}\n").as_bytes(), 0o644)?;
        Ok(SeedReport {
            copied: staged.into_iter().map(|c| c.rel).collect(),
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

/// A path copied under a temporary name, renamed into place once all copies are flushed.
struct StagedCopy {
    tmp: PathBuf,
    dest: PathBuf,
    /// The path relative to `/var`, for the report.
    rel: String,
}

/// Copy what `src` has and `dest` lacks, each missing path under a temporary name beside
/// its destination (listed in `staged`); directories present on both sides are merged,
/// anything else present in `dest` (including a symlink) is left alone.
fn copy_missing(src: &Path, dest: &Path, rel: &Path, staged: &mut Vec<StagedCopy>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)
        .at(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(src)?;
    names.sort();
    for name in names {
        let (s, d) = (src.join(&name), dest.join(&name));
        match fs::symlink_metadata(&d) {
            Ok(dm) => {
                let sm = fs::symlink_metadata(&s).at(&s)?;
                if dm.is_dir() && sm.is_dir() {
                    copy_missing(&s, &d, &rel.join(&name), staged)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = dest.join(format!(".tl-seed-{}", name.to_string_lossy()));
                fsutil::remove_tree(&tmp)?;
                fsutil::copy_preserving(&s, &tmp)?;
                staged.push(StagedCopy {
                    tmp,
                    dest: d,
                    rel: rel.join(&name).display().to_string(),
                });
            }
            Err(e) => return Err(e).at(d),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
