//! Checking a commit's metadata before it is deployed: the commit object and every
//! dirtree and dirmeta it reaches are re-hashed, so a corrupted or incomplete commit is
//! refused, naming the commit and the bad object, before anything is written. File
//! contents are not re-read (they are hardlinked, as ostree does; `fsck` checks them).

use std::collections::HashSet;

use treeline_store::checksum::{ObjectName, ObjectType};
use treeline_store::{Checksum, Repo, fsck};

use crate::error::{Error, Result};

/// Verify `commit` and the directory objects of its tree.
pub(crate) fn commit_metadata(repo: &Repo, commit: &Checksum) -> Result<()> {
    let bad = |e: treeline_store::Error| Error::BadTree {
        commit: commit.to_string(),
        reason: format!("repository {}: {e}", repo.path().display()),
    };
    fsck::verify_object(repo, &ObjectName::new(*commit, ObjectType::Commit)).map_err(bad)?;
    let c = repo.load_commit(commit).map_err(bad)?;
    let mut seen = HashSet::new();
    let mut todo = vec![(c.root_tree, c.root_meta)];
    while let Some((tree, meta)) = todo.pop() {
        if seen.insert(meta) {
            fsck::verify_object(repo, &ObjectName::new(meta, ObjectType::DirMeta)).map_err(bad)?;
        }
        if !seen.insert(tree) {
            continue;
        }
        fsck::verify_object(repo, &ObjectName::new(tree, ObjectType::DirTree)).map_err(bad)?;
        let t = repo.load_dirtree(&tree).map_err(bad)?;
        todo.extend(t.dirs.iter().map(|(_, st, sm)| (*st, *sm)));
    }
    Ok(())
}
