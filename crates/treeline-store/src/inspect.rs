//! Reading trees: listings (`ls`), differences between trees (`diff`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::builder::CommitModifier;
use crate::checksum::Checksum;
use crate::error::{Error, Result};
use crate::object::{S_IFLNK, S_IFMT};
use crate::repo::Repo;

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsEntry {
    /// Absolute path inside the tree.
    pub path: String,
    /// Mode with type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Content size (0 for directories and symlinks).
    pub size: u64,
    /// File checksum, or (dirtree, dirmeta) for directories.
    pub checksum: Checksum,
    /// The dirmeta checksum, for directories.
    pub meta_checksum: Option<Checksum>,
    /// Symlink target.
    pub symlink_target: Option<String>,
}

impl LsEntry {
    /// The line `ostree ls` prints, with checksums when `with_checksums` (`-C`).
    pub fn to_line(&self, with_checksums: bool) -> String {
        let kind = match self.mode & S_IFMT {
            crate::object::S_IFDIR => 'd',
            S_IFLNK => 'l',
            _ => '-',
        };
        let mut s = format!(
            "{kind}{:05o} {} {} {:>6} ",
            self.mode & 0o7777,
            self.uid,
            self.gid,
            self.size
        );
        if with_checksums {
            s.push_str(&self.checksum.to_hex());
            s.push(' ');
            if let Some(m) = &self.meta_checksum {
                s.push_str(&m.to_hex());
                s.push(' ');
            }
        }
        s.push_str(&self.path);
        if let Some(t) = &self.symlink_target {
            s.push_str(" -> ");
            s.push_str(t);
        }
        s
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// List `path` in a commit: the entry itself, its children if a directory, and with
/// `recursive` everything below, in ostree's order (files, then each directory followed
/// by its contents).
pub fn ls(repo: &Repo, commit: &Checksum, path: &str, recursive: bool) -> Result<Vec<LsEntry>> {
    let c = repo.load_commit(commit)?;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (mut tree, mut meta) = (c.root_tree, c.root_meta);
    let mut cur = String::from("/");
    for (i, comp) in comps.iter().enumerate() {
        let t = repo.load_dirtree(&tree)?;
        if let Some((_, st, sm)) = t.dirs.iter().find(|d| d.0 == *comp) {
            (tree, meta) = (*st, *sm);
            cur = join(&cur, comp);
            continue;
        }
        if i + 1 == comps.len()
            && let Some((_, fc)) = t.files.iter().find(|f| f.0 == *comp)
        {
            return Ok(vec![file_entry(repo, fc, join(&cur, comp))?]);
        }
        return Err(Error::RevNotFound(format!("{path} in commit {commit}")));
    }
    let mut out = vec![dir_entry(repo, &tree, &meta, cur.clone())?];
    list_dir(repo, &tree, &cur, recursive, &mut out)?;
    Ok(out)
}

fn dir_entry(repo: &Repo, tree: &Checksum, meta: &Checksum, path: String) -> Result<LsEntry> {
    let m = repo.load_dirmeta(meta)?;
    Ok(LsEntry {
        path,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: 0,
        checksum: *tree,
        meta_checksum: Some(*meta),
        symlink_target: None,
    })
}

fn file_entry(repo: &Repo, c: &Checksum, path: String) -> Result<LsEntry> {
    let (h, _, size) = repo.open_file(c)?;
    Ok(LsEntry {
        path,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        size: if h.is_symlink() { 0 } else { size },
        checksum: *c,
        meta_checksum: None,
        symlink_target: h.is_symlink().then_some(h.symlink_target),
    })
}

fn list_dir(
    repo: &Repo,
    tree: &Checksum,
    path: &str,
    recursive: bool,
    out: &mut Vec<LsEntry>,
) -> Result<()> {
    let t = repo.load_dirtree(tree)?;
    for (name, c) in &t.files {
        out.push(file_entry(repo, c, join(path, name))?);
    }
    for (name, st, sm) in &t.dirs {
        let p = join(path, name);
        out.push(dir_entry(repo, st, sm, p.clone())?);
        if recursive {
            list_dir(repo, st, &p, true, out)?;
        }
    }
    Ok(())
}

/// How a path differs between two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the second.
    Added,
    /// In both, different.
    Modified,
    /// Only in the first.
    Deleted,
}

impl Change {
    /// The letter ostree prints.
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Modified => 'M',
            Change::Deleted => 'D',
        }
    }
}

#[derive(Clone)]
enum Side {
    File(Checksum),
    Dir(Checksum, Checksum),
}

fn entries_of(repo: &Repo, tree: &Checksum) -> Result<BTreeMap<String, Side>> {
    let t = repo.load_dirtree(tree)?;
    let mut m = BTreeMap::new();
    for (n, c) in t.files {
        m.insert(n, Side::File(c));
    }
    for (n, tr, me) in t.dirs {
        m.insert(n, Side::Dir(tr, me));
    }
    Ok(m)
}

/// Differences between two stored trees (root dirtree and dirmeta each), as ostree's
/// `diff` reports them: a changed directory's metadata is `M`, an added or deleted
/// directory is reported once, not per file.
pub fn diff_trees(
    repo: &Repo,
    a: (Checksum, Checksum),
    b: (Checksum, Checksum),
) -> Result<Vec<(Change, String)>> {
    let mut out = Vec::new();
    diff_two_repos(repo, repo, a, b, "/", &mut out)?;
    Ok(out)
}

/// Differences between a stored tree and a directory on disk. The directory is hashed
/// (not stored) with the same rules a commit would apply.
pub fn diff_tree_dir(
    repo: &Repo,
    a: (Checksum, Checksum),
    dir: &Path,
    modifier: &CommitModifier,
) -> Result<Vec<(Change, String)>> {
    // Hash the directory into a throwaway transaction whose objects are discarded.
    let scratch = tempfile::Builder::new()
        .prefix("treeline-diff-")
        .tempdir()
        .map_err(|e| Error::Io {
            path: std::env::temp_dir(),
            error: e,
        })?;
    let scratch_repo = Repo::init(scratch.path(), repo.mode())?;
    let txn = scratch_repo.begin()?;
    let tree = crate::builder::tree_from_dir(&txn, dir, modifier, &crate::progress::NoProgress)?;
    let root = tree.write(&txn)?;
    txn.commit()?;
    // Compare: metadata for the left side comes from `repo`, for the right from scratch.
    let mut out = Vec::new();
    diff_two_repos(repo, &scratch_repo, a, root, "/", &mut out)?;
    Ok(out)
}

fn diff_two_repos(
    ra: &Repo,
    rb: &Repo,
    a: (Checksum, Checksum),
    b: (Checksum, Checksum),
    path: &str,
    out: &mut Vec<(Change, String)>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    if a.1 != b.1 {
        out.push((Change::Modified, path.to_owned()));
    }
    if a.0 == b.0 {
        return Ok(());
    }
    let ea = entries_of(ra, &a.0)?;
    let eb = entries_of(rb, &b.0)?;
    for (name, sa) in &ea {
        let p = join(path, name);
        match (sa, eb.get(name)) {
            (_, None) => out.push((Change::Deleted, p)),
            (Side::File(x), Some(Side::File(y))) => {
                if x != y {
                    out.push((Change::Modified, p));
                }
            }
            (Side::Dir(t1, m1), Some(Side::Dir(t2, m2))) => {
                diff_two_repos(ra, rb, (*t1, *m1), (*t2, *m2), &p, out)?
            }
            (_, Some(_)) => {
                out.push((Change::Deleted, p.clone()));
                out.push((Change::Added, p));
            }
        }
    }
    for name in eb.keys() {
        if !ea.contains_key(name) {
            out.push((Change::Added, join(path, name)));
        }
    }
    Ok(())
}
