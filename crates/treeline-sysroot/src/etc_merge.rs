//! The three-way `/etc` merge: the changes a machine made to its `/etc` (relative to the
//! defaults its deployment shipped in `/usr/etc`) are applied onto the new deployment's
//! `/etc`, which starts as a copy of the new `/usr/etc`.
//!
//! Rules (those of ostree, ostree-format.md 9.7):
//! - a path is *modified* when its type, content (or symlink target), mode, owner or group
//!   differ from the old default; xattrs are not compared (as in ostree) but are copied;
//! - *modified* and *added* paths are copied from the old `/etc` over the new one (local
//!   wins); a directory whose own metadata changed gets that metadata, and its children are
//!   merged one by one; an added directory is copied whole;
//! - *removed* paths (in the old defaults, gone locally) are removed from the new `/etc`;
//! - everything else takes the new defaults.
//!
//! Sockets, fifos and device nodes in `/etc` are ignored.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::fsutil;

/// What the merge found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcMergeReport {
    /// Paths (relative to /etc) changed locally and carried over.
    pub modified: Vec<String>,
    /// Paths added locally and carried over.
    pub added: Vec<String>,
    /// Paths deleted locally and so deleted in the new /etc.
    pub removed: Vec<String>,
    /// The passwd/group merge that follows ([`crate::accounts`]).
    pub accounts: crate::accounts::AccountsReport,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

fn kind(md: &fs::Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

/// One local change to /etc, relative to the defaults it was deployed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcChange {
    /// Added locally (a directory is added whole).
    Added(String),
    /// A file or symlink changed locally, or a path changed type.
    Modified(String),
    /// A directory whose own mode or owner changed locally (its children are listed
    /// separately).
    DirMeta(String),
    /// Deleted locally.
    Removed(String),
}

/// List the local changes: `defaults` (a deployment's `usr/etc`) against `local` (its
/// `etc`), parents before children.
pub fn diff(defaults: &Path, local: &Path) -> Result<Vec<EtcChange>> {
    let mut out = Vec::new();
    diff_dir(defaults, local, "", &mut out)?;
    Ok(out)
}

/// Merge: `old_defaults` (old `usr/etc`) and `old_local` (old `etc`) give the local
/// changes; they are applied to `new_etc` (already a copy of the new `usr/etc`).
pub fn merge(old_defaults: &Path, old_local: &Path, new_etc: &Path) -> Result<EtcMergeReport> {
    let mut report = EtcMergeReport::default();
    for change in diff(old_defaults, old_local)? {
        match change {
            EtcChange::Removed(r) => {
                fsutil::remove_tree(&new_etc.join(&r))?;
                report.removed.push(r);
            }
            EtcChange::Added(r) => {
                replace_with_copy(&old_local.join(&r), &new_etc.join(&r))?;
                report.added.push(r);
            }
            EtcChange::Modified(r) => {
                replace_with_copy(&old_local.join(&r), &new_etc.join(&r))?;
                report.modified.push(r);
            }
            EtcChange::DirMeta(r) => {
                let (src, dest) = (old_local.join(&r), new_etc.join(&r));
                let smd = fs::symlink_metadata(&src).at(&src)?;
                match lstat_opt(&dest)? {
                    Some(m) if m.is_dir() => {}
                    other => {
                        ensure_parents(&src, &dest)?;
                        if other.is_some() {
                            fsutil::remove_tree(&dest)?;
                        }
                        fs::create_dir(&dest).at(&dest)?;
                    }
                }
                fsutil::copy_metadata(&src, &smd, &dest)?;
                report.modified.push(r);
            }
        }
    }
    Ok(report)
}

fn list(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>> {
    let mut out = BTreeSet::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                out.insert(e.at(dir)?.file_name());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(dir),
    }
    Ok(out)
}

fn lstat_opt(p: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(p),
    }
}

fn diff_dir(defaults: &Path, local: &Path, rel: &str, out: &mut Vec<EtcChange>) -> Result<()> {
    let d_names = list(defaults)?;
    let l_names = list(local)?;
    for name in d_names.union(&l_names) {
        let Some(name_str) = name.to_str() else {
            tracing::warn!("skipping non-UTF-8 name in {}", local.display());
            continue;
        };
        let d = defaults.join(name);
        let l = local.join(name);
        let r = if rel.is_empty() {
            name_str.to_owned()
        } else {
            format!("{rel}/{name_str}")
        };
        match (lstat_opt(&d)?, lstat_opt(&l)?) {
            (Some(_), None) => out.push(EtcChange::Removed(r)),
            (None, Some(lm)) if kind(&lm) != Kind::Other => out.push(EtcChange::Added(r)),
            (Some(dm), Some(lm)) => {
                let (dk, lk) = (kind(&dm), kind(&lm));
                if lk == Kind::Other {
                    continue;
                }
                if dk == Kind::Dir && lk == Kind::Dir {
                    if !same_meta(&dm, &lm) {
                        out.push(EtcChange::DirMeta(r.clone()));
                    }
                    diff_dir(&d, &l, &r, out)?;
                } else if dk != lk || !same_meta(&dm, &lm) || !same_content(&d, &l, lk)? {
                    out.push(EtcChange::Modified(r));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn same_meta(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid()
}

fn same_content(a: &Path, b: &Path, k: Kind) -> Result<bool> {
    match k {
        Kind::Symlink => Ok(fs::read_link(a).at(a)? == fs::read_link(b).at(b)?),
        Kind::File => {
            let (ma, mb) = (fs::metadata(a).at(a)?, fs::metadata(b).at(b)?);
            if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
                return Ok(true);
            }
            if ma.len() != mb.len() {
                return Ok(false);
            }
            let mut fa = File::open(a).at(a)?;
            let mut fb = File::open(b).at(b)?;
            let mut ba = vec![0u8; 64 * 1024];
            let mut bb = vec![0u8; 64 * 1024];
            loop {
                let n = treeline_store::sys::read_full(&mut fa, &mut ba).at(a)?;
                let m = treeline_store::sys::read_full(&mut fb, &mut bb).at(b)?;
                if n != m || ba[..n] != bb[..m] {
                    return Ok(false);
                }
                if n == 0 {
                    return Ok(true);
                }
            }
        }
        Kind::Dir | Kind::Other => Ok(true),
    }
}

/// Replace whatever is at `dest` by a copy of `src`, creating missing parents with the
/// ownership and mode of the source's parents.
fn replace_with_copy(src: &Path, dest: &Path) -> Result<()> {
    ensure_parents(src, dest)?;
    fsutil::remove_tree(dest)?;
    fsutil::copy_preserving(src, dest)
}

fn ensure_parents(src: &Path, dest: &Path) -> Result<()> {
    let (Some(sp), Some(dp)) = (src.parent(), dest.parent()) else {
        return Ok(());
    };
    match lstat_opt(dp)? {
        Some(m) if m.is_dir() => Ok(()),
        other => {
            ensure_parents(sp, dp)?;
            if other.is_some() {
                fsutil::remove_tree(dp)?;
            }
            fs::create_dir(dp).at(dp)?;
            let smd = fs::symlink_metadata(sp).at(sp)?;
            fsutil::copy_metadata(sp, &smd, dp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("old-usr-etc");
        let l = t.path().join("old-etc");
        let n = t.path().join("new-etc");
        for p in [&d, &l, &n] {
            fs::create_dir_all(p).unwrap();
        }
        (t, d, l, n)
    }

    #[test]
    fn local_edits_win_new_defaults_flow_in_deletions_stick() {
        let (_t, d, l, n) = setup();
        // unchanged locally, changed in the new tree
        fs::write(d.join("a"), "old a").unwrap();
        fs::write(l.join("a"), "old a").unwrap();
        fs::write(n.join("a"), "new a").unwrap();
        // changed locally and in the new tree
        fs::write(d.join("b"), "old b").unwrap();
        fs::write(l.join("b"), "local b").unwrap();
        fs::write(n.join("b"), "new b").unwrap();
        // deleted locally
        fs::write(d.join("c"), "c").unwrap();
        fs::write(n.join("c"), "c").unwrap();
        // added locally, in a new directory
        fs::create_dir(l.join("sub")).unwrap();
        fs::write(l.join("sub/x"), "x").unwrap();
        // mode changed locally
        fs::write(d.join("m"), "m").unwrap();
        fs::write(l.join("m"), "m").unwrap();
        fs::set_permissions(l.join("m"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(n.join("m"), "m2").unwrap();
        let r = merge(&d, &l, &n).unwrap();
        assert_eq!(fs::read_to_string(n.join("a")).unwrap(), "new a");
        assert_eq!(fs::read_to_string(n.join("b")).unwrap(), "local b");
        assert!(!n.join("c").exists());
        assert_eq!(fs::read_to_string(n.join("sub/x")).unwrap(), "x");
        assert_eq!(fs::read_to_string(n.join("m")).unwrap(), "m");
        assert_eq!(fs::metadata(n.join("m")).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(r.removed, vec!["c".to_owned()]);
        assert_eq!(r.added, vec!["sub".to_owned()]);
        assert_eq!(r.modified, vec!["b".to_owned(), "m".to_owned()]);
    }

    #[test]
    fn symlink_retargeted_locally_is_kept_and_type_change_replaces() {
        let (_t, d, l, n) = setup();
        std::os::unix::fs::symlink("x", d.join("s")).unwrap();
        std::os::unix::fs::symlink("y", l.join("s")).unwrap();
        std::os::unix::fs::symlink("x2", n.join("s")).unwrap();
        fs::create_dir(d.join("t")).unwrap();
        fs::write(l.join("t"), "now a file").unwrap();
        fs::create_dir(n.join("t")).unwrap();
        fs::write(n.join("t/inner"), "i").unwrap();
        merge(&d, &l, &n).unwrap();
        assert_eq!(fs::read_link(n.join("s")).unwrap(), Path::new("y"));
        assert_eq!(fs::read_to_string(n.join("t")).unwrap(), "now a file");
    }

    #[test]
    fn local_file_inside_a_directory_the_new_tree_dropped_survives() {
        let (_t, d, l, n) = setup();
        fs::create_dir(d.join("dir")).unwrap();
        fs::create_dir(l.join("dir")).unwrap();
        fs::write(l.join("dir/mine"), "mine").unwrap();
        merge(&d, &l, &n).unwrap();
        assert_eq!(fs::read_to_string(n.join("dir/mine")).unwrap(), "mine");
    }

    #[test]
    fn diff_lists_parents_before_children() {
        let (_t, d, l, _n) = setup();
        fs::write(d.join("gone"), "").unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        fs::create_dir(l.join("dir")).unwrap();
        fs::set_permissions(l.join("dir"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(l.join("dir/new"), "").unwrap();
        assert_eq!(
            diff(&d, &l).unwrap(),
            vec![
                EtcChange::DirMeta("dir".into()),
                EtcChange::Added("dir/new".into()),
                EtcChange::Removed("gone".into()),
            ]
        );
    }
}
