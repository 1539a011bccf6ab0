//! Giving a fresh checkout the machine's user and group IDs ([`IdChanges`]).
//!
//! A deployment's files are hardlinks to the objects of the bare repository, and a bare
//! object's owner is part of its checksum: chowning a link would chown the object, break
//! `fsck` and change every other deployment sharing it. So an affected regular file or
//! symlink is replaced by a copy (same content, mode, xattrs and times) that gets the new
//! owner, and only those files stop sharing storage; directories are created by the
//! checkout, not linked, and are chowned in place. Committing re-owned objects instead
//! would add objects (and refs to keep them) to the repository for the same effect.
//! Files owned by system users are few, so the copies cost little.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::accounts::IdChanges;
use crate::error::{IoContext, Result};
use crate::fsutil;

/// Re-own every path under `root` whose UID or GID `changes` maps; returns how many
/// paths changed. `root` must be a tree being prepared (not yet immutable).
pub(crate) fn apply(root: &Path, changes: &IdChanges) -> Result<usize> {
    if changes.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    walk(root, changes, &mut n)?;
    Ok(n)
}

fn walk(dir: &Path, changes: &IdChanges, n: &mut usize) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(dir)?;
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let md = fs::symlink_metadata(&p).at(&p)?;
        let uid = changes.uids.get(&md.uid()).copied();
        let gid = changes.gids.get(&md.gid()).copied();
        if uid.is_some() || gid.is_some() {
            let (u, g) = (uid.unwrap_or(md.uid()), gid.unwrap_or(md.gid()));
            let ft = md.file_type();
            if ft.is_dir() {
                std::os::unix::fs::lchown(&p, Some(u), Some(g)).at(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() & 0o7777)).at(&p)?;
            } else if ft.is_file() || ft.is_symlink() {
                replace_with_owned_copy(&p, &md, u, g)?;
            }
            *n += 1;
        }
        if md.is_dir() {
            walk(&p, changes, n)?;
        }
    }
    Ok(())
}

/// Replace `path` by a copy owned by `uid:gid` (written beside it, then renamed over it).
fn replace_with_owned_copy(path: &Path, md: &fs::Metadata, uid: u32, gid: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tl-chown-{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    fsutil::remove_if_exists(&tmp)?;
    if md.file_type().is_symlink() {
        let target = fs::read_link(path).at(path)?;
        std::os::unix::fs::symlink(&target, &tmp).at(&tmp)?;
    } else {
        let mut from = File::open(path).at(path)?;
        let mut to = File::create_new(&tmp).at(&tmp)?;
        std::io::copy(&mut from, &mut to).at(&tmp)?;
        to.sync_all().at(&tmp)?;
    }
    fsutil::copy_metadata_as(path, md, &tmp, uid, gid)?;
    fs::rename(&tmp, path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn mapped_owners_change_on_copies_and_the_linked_original_keeps_its_owner() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("object");
        fs::write(&store, "data\n").unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o4750)).unwrap();
        std::os::unix::fs::chown(&store, Some(105), Some(105)).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o4750)).unwrap();
        let root = t.path().join("tree");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::hard_link(&store, root.join("d/f")).unwrap();
        std::os::unix::fs::symlink("f", root.join("d/l")).unwrap();
        std::os::unix::fs::lchown(root.join("d/l"), Some(7), Some(105)).unwrap();
        std::os::unix::fs::chown(root.join("d"), Some(105), Some(0)).unwrap();
        let changes = IdChanges {
            uids: BTreeMap::from([(105, 101)]),
            gids: BTreeMap::from([(105, 102)]),
        };
        assert_eq!(apply(&root, &changes).unwrap(), 3);
        let f = fs::metadata(root.join("d/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (101, 102, 0o4750));
        assert_eq!(f.nlink(), 1);
        assert_eq!(fs::read_to_string(root.join("d/f")).unwrap(), "data\n");
        let o = fs::metadata(&store).unwrap();
        assert_eq!(
            (o.uid(), o.gid()),
            (105, 105),
            "the linked original is untouched"
        );
        let l = fs::symlink_metadata(root.join("d/l")).unwrap();
        assert_eq!((l.uid(), l.gid()), (7, 102));
        let d = fs::metadata(root.join("d")).unwrap();
        assert_eq!((d.uid(), d.gid()), (101, 0));
    }
}
