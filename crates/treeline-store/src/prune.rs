//! Deleting objects no ref (or, optionally, no commit) needs.

use std::collections::HashSet;

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::sys::{LockKind, RepoLock};

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Keep only what refs reach (otherwise every commit is a root).
    pub refs_only: bool,
    /// History depth kept behind each ref: `None` for all of it.
    pub depth: Option<usize>,
    /// Also keep commits newer than this timestamp, and what they reach.
    pub keep_younger_than: Option<u64>,
    /// Report only; delete nothing.
    pub no_prune: bool,
}

/// What prune did.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Objects before pruning.
    pub total: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// Every object reachable from a commit (its tree, not its parents).
pub fn reachable_from_commit(
    repo: &Repo,
    commit: &Checksum,
    out: &mut HashSet<ObjectName>,
) -> Result<()> {
    out.insert(ObjectName::new(*commit, ObjectType::Commit));
    out.insert(ObjectName::new(*commit, ObjectType::CommitMeta));
    if repo.is_partial(commit) {
        return Ok(());
    }
    let c = repo.load_commit(commit)?;
    let mut stack = vec![(c.root_tree, c.root_meta)];
    while let Some((t, m)) = stack.pop() {
        out.insert(ObjectName::new(m, ObjectType::DirMeta));
        if !out.insert(ObjectName::new(t, ObjectType::DirTree)) {
            continue;
        }
        let tree = match repo.load_dirtree(&t) {
            Ok(t) => t,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for (_, f) in &tree.files {
            out.insert(ObjectName::new(*f, ObjectType::File));
        }
        stack.extend(tree.dirs.iter().map(|(_, t, m)| (*t, *m)));
    }
    Ok(())
}

/// Delete unreachable objects. Holds the repository lock exclusively, so no transaction
/// adds objects meanwhile.
pub fn prune(repo: &Repo, opts: &PruneOptions) -> Result<PruneReport> {
    let _lock = RepoLock::acquire(&repo.path().join(".lock"), LockKind::Exclusive)?;
    let objects = repo.list_objects()?;
    let mut keep = HashSet::new();
    let mut roots: Vec<(Checksum, Option<usize>)> = repo
        .all_ref_targets()?
        .into_iter()
        .map(|c| (c, opts.depth))
        .collect();
    for name in objects.iter().filter(|n| n.objtype == ObjectType::Commit) {
        let young = match opts.keep_younger_than {
            Some(t) => repo
                .load_commit(&name.checksum)
                .map(|c| c.timestamp >= t)
                .unwrap_or(false),
            None => false,
        };
        if !opts.refs_only || young {
            roots.push((name.checksum, Some(0)));
        }
    }
    for (root, depth) in roots {
        let mut cur = Some(root);
        let mut remaining = depth;
        while let Some(c) = cur {
            if !repo.has_commit(&c) {
                break;
            }
            reachable_from_commit(repo, &c, &mut keep)?;
            if remaining == Some(0) {
                break;
            }
            remaining = remaining.map(|d| d - 1);
            cur = repo.load_commit(&c)?.parent;
        }
    }
    let mut report = PruneReport {
        total: objects.len(),
        ..Default::default()
    };
    // Commits go first: an interrupted prune must not leave a commit whose tree is gone.
    let mut objects = objects;
    objects.sort_by_key(|n| n.objtype != ObjectType::Commit);
    for name in objects {
        if keep.contains(&name) {
            continue;
        }
        // Detached metadata goes with its commit.
        if name.objtype == ObjectType::CommitMeta
            && keep.contains(&ObjectName::new(name.checksum, ObjectType::Commit))
        {
            continue;
        }
        let size = std::fs::symlink_metadata(repo.object_path(&name))
            .map(|m| m.len())
            .unwrap_or(0);
        if !opts.no_prune {
            if name.objtype == ObjectType::Commit {
                let _ = std::fs::remove_file(
                    repo.path()
                        .join("state")
                        .join(format!("{}.commitpartial", name.checksum)),
                );
            }
            repo.delete_object(&name)?;
            crate::fault::point("prune-during-delete");
        }
        report.deleted += 1;
        report.freed_bytes += size;
    }
    Ok(report)
}
