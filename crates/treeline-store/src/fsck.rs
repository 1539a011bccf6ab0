//! Verifying a repository: every object re-hashed and decoded, every ref and every
//! complete commit checked for missing objects.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, Result};
use crate::object::{Commit, DirMeta, DirTree, commitmeta_from_bytes};
use crate::progress::Progress;
use crate::repo::{Repo, content_checksum};

/// One problem found by fsck.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The object at fault, if the problem is an object.
    pub object: Option<ObjectName>,
    /// What is wrong.
    pub message: String,
}

/// What fsck found.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    /// Objects examined.
    pub objects: usize,
    /// Commits whose trees were walked.
    pub commits: usize,
    /// Partial commits (interrupted pulls), skipped.
    pub partial_commits: usize,
    /// Problems.
    pub problems: Vec<Problem>,
    /// Objects deleted because `delete` was set.
    pub deleted: Vec<ObjectName>,
}

/// Verify one object's bytes against its name and type.
pub fn verify_object(repo: &Repo, name: &ObjectName) -> Result<()> {
    let corrupted = |actual: Checksum| Error::Corrupted {
        object: *name,
        actual: actual.to_hex(),
    };
    let invalid = |reason: String| Error::InvalidObject {
        object: name.to_string(),
        reason,
    };
    match name.objtype {
        ObjectType::File => {
            let (header, mut content, size) = repo.open_file(&name.checksum)?;
            let mut counted = CountingReader {
                inner: &mut content,
                n: 0,
            };
            let actual = content_checksum(&header, &mut counted)
                .map_err(|e| invalid(format!("cannot read content: {e}")))?;
            if !header.is_symlink() && counted.n != size {
                return Err(invalid(format!(
                    "content is {} bytes, header says {size}",
                    counted.n
                )));
            }
            if actual != name.checksum {
                return Err(corrupted(actual));
            }
        }
        ObjectType::CommitMeta | ObjectType::TombstoneCommit => {
            let bytes = repo.read_meta_bytes(name)?;
            commitmeta_from_bytes(&bytes).map_err(invalid)?;
        }
        t => {
            let bytes = repo.read_meta_bytes(name)?;
            let actual = Checksum::of(&bytes);
            if actual != name.checksum {
                return Err(corrupted(actual));
            }
            match t {
                ObjectType::Commit => Commit::from_bytes(&bytes).map(drop),
                ObjectType::DirTree => DirTree::from_bytes(&bytes).map(drop),
                ObjectType::DirMeta => DirMeta::from_bytes(&bytes).map(drop),
                _ => Ok(()),
            }
            .map_err(invalid)?;
        }
    }
    Ok(())
}

struct CountingReader<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Check the whole repository. With `delete`, corrupted objects are removed.
pub fn fsck(repo: &Repo, delete: bool, progress: &dyn Progress) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    let objects = repo.list_objects()?;
    report.objects = objects.len();
    progress.set_total(objects.len() as u64);
    let bad: Vec<(ObjectName, Error)> = objects
        .par_iter()
        .filter_map(|name| {
            let r = verify_object(repo, name).err().map(|e| (*name, e));
            progress.advance(1, 0);
            r
        })
        .collect();
    let bad_set: HashSet<ObjectName> = bad.iter().map(|(n, _)| *n).collect();
    for (name, err) in bad {
        report.problems.push(Problem {
            object: Some(name),
            message: err.to_string(),
        });
        if delete {
            repo.delete_object(&name)?;
            report.deleted.push(name);
        }
    }
    for (name, err) in repo.broken_refs()? {
        report.problems.push(Problem {
            object: None,
            message: format!("ref {name}: {err}"),
        });
    }
    let present: HashSet<ObjectName> = objects
        .iter()
        .copied()
        .filter(|n| !bad_set.contains(n))
        .collect();
    for (name, c) in repo
        .list_refs()?
        .into_iter()
        .chain(repo.list_remote_refs()?)
    {
        if !present.contains(&ObjectName::new(c, ObjectType::Commit)) {
            report.problems.push(Problem {
                object: Some(ObjectName::new(c, ObjectType::Commit)),
                message: format!("ref {name} points to a missing or invalid commit {c}"),
            });
        }
    }
    for name in objects
        .iter()
        .filter(|n| n.objtype == ObjectType::Commit && present.contains(n))
    {
        if repo.is_partial(&name.checksum) {
            report.partial_commits += 1;
            continue;
        }
        report.commits += 1;
        let commit = repo.load_commit(&name.checksum)?;
        let mut stack = vec![(commit.root_tree, commit.root_meta)];
        let mut seen = HashSet::new();
        while let Some((t, m)) = stack.pop() {
            if !seen.insert((t, m)) {
                continue;
            }
            let meta = ObjectName::new(m, ObjectType::DirMeta);
            if !present.contains(&meta) {
                report.problems.push(missing(name, meta));
            }
            let tree_name = ObjectName::new(t, ObjectType::DirTree);
            if !present.contains(&tree_name) {
                report.problems.push(missing(name, tree_name));
                continue;
            }
            let tree = repo.load_dirtree(&t)?;
            for (_, f) in &tree.files {
                let fname = ObjectName::new(*f, ObjectType::File);
                if !present.contains(&fname) {
                    report.problems.push(missing(name, fname));
                }
            }
            stack.extend(tree.dirs.iter().map(|(_, t, m)| (*t, *m)));
        }
    }
    Ok(report)
}

fn missing(commit: &ObjectName, object: ObjectName) -> Problem {
    Problem {
        object: Some(object),
        message: format!(
            "object {object} needed by commit {} is missing or corrupted",
            commit.checksum
        ),
    }
}
