//! Building trees and commits: a mutable tree filled from directories, tar archives and
//! existing commits, written bottom-up as dirtree/dirmeta objects.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::{
    Commit, DirMeta, DirTree, FileHeader, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Xattrs,
    validate_filename,
};
use crate::progress::Progress;
use crate::repo::{Repo, RepoMode, Transaction};
use crate::sys;
use crate::variant::Metadata;

/// Adjustments applied to every file and directory as it is committed.
#[derive(Clone, Debug, Default)]
pub struct CommitModifier {
    /// Force this owner on everything.
    pub owner_uid: Option<u32>,
    /// Force this group on everything.
    pub owner_gid: Option<u32>,
    /// ostree's canonical permissions: uid/gid 0, modes masked to 0755, no xattrs.
    pub canonical_permissions: bool,
    /// Ignore xattrs on input.
    pub skip_xattrs: bool,
    /// Objects already in the repository by device and inode (`--link-checkout-speedup`).
    pub devino: Option<HashMap<(u64, u64), Checksum>>,
}

impl CommitModifier {
    /// The modifier a repository requires on top of the caller's (bare-user-only repos
    /// store canonical permissions only).
    pub fn for_repo(mut self, repo: &Repo) -> Self {
        if repo.mode() == RepoMode::BareUserOnly {
            self.canonical_permissions = true;
        }
        self
    }

    fn changes_metadata(&self) -> bool {
        self.owner_uid.is_some() || self.owner_gid.is_some() || self.canonical_permissions
    }

    fn reads_xattrs(&self) -> bool {
        !self.skip_xattrs && !self.canonical_permissions
    }

    fn apply(&self, uid: &mut u32, gid: &mut u32, mode: &mut u32, xattrs: &mut Xattrs) {
        if self.canonical_permissions {
            *uid = 0;
            *gid = 0;
            if *mode & S_IFMT != S_IFLNK {
                *mode &= S_IFMT | 0o755;
            }
            xattrs.clear();
        }
        if let Some(u) = self.owner_uid {
            *uid = u;
        }
        if let Some(g) = self.owner_gid {
            *gid = g;
        }
    }

    /// The dirmeta for a directory with this stat and xattrs.
    pub fn dirmeta(&self, uid: u32, gid: u32, mode: u32, xattrs: Xattrs) -> DirMeta {
        let (mut uid, mut gid, mut mode, mut xattrs) = (uid, gid, mode, xattrs);
        self.apply(&mut uid, &mut gid, &mut mode, &mut xattrs);
        DirMeta {
            uid,
            gid,
            mode,
            xattrs,
        }
    }

    /// The header for a file with this stat and xattrs.
    pub fn file_header(
        &self,
        uid: u32,
        gid: u32,
        mode: u32,
        target: String,
        xattrs: Xattrs,
    ) -> FileHeader {
        let (mut uid, mut gid, mut mode, mut xattrs) = (uid, gid, mode, xattrs);
        self.apply(&mut uid, &mut gid, &mut mode, &mut xattrs);
        FileHeader {
            uid,
            gid,
            mode,
            symlink_target: target,
            xattrs,
        }
    }
}

/// The dirmeta of a root-owned 0755 directory, used for parents an input does not describe.
pub fn default_dirmeta() -> DirMeta {
    DirMeta {
        uid: 0,
        gid: 0,
        mode: S_IFDIR | 0o755,
        xattrs: Vec::new(),
    }
}

/// An entry of a [`MutableTree`].
#[derive(Clone, Debug)]
pub enum Node {
    /// A content object.
    File(Checksum),
    /// A subdirectory.
    Dir(MutableTree),
}

#[derive(Clone, Debug)]
enum Contents {
    /// An unchanged stored dirtree, loaded only if something is added below it.
    Stored(Checksum),
    Loaded(BTreeMap<String, Node>),
}

/// A directory being assembled.
#[derive(Clone, Debug)]
pub struct MutableTree {
    /// Its dirmeta checksum.
    pub meta: Checksum,
    contents: Contents,
}

impl MutableTree {
    /// An empty directory with the given dirmeta.
    pub fn new(meta: Checksum) -> Self {
        MutableTree {
            meta,
            contents: Contents::Loaded(BTreeMap::new()),
        }
    }

    /// A stored directory, loaded lazily.
    pub fn from_stored(tree: Checksum, meta: Checksum) -> Self {
        MutableTree {
            meta,
            contents: Contents::Stored(tree),
        }
    }

    /// The entries, loading them from the repository first if needed.
    pub fn entries_mut(&mut self, repo: &Repo) -> Result<&mut BTreeMap<String, Node>> {
        if let Contents::Stored(c) = self.contents {
            let t = repo.load_dirtree(&c)?;
            let mut m = BTreeMap::new();
            for (name, c) in t.files {
                m.insert(name, Node::File(c));
            }
            for (name, tree, meta) in t.dirs {
                m.insert(name, Node::Dir(MutableTree::from_stored(tree, meta)));
            }
            self.contents = Contents::Loaded(m);
        }
        match &mut self.contents {
            Contents::Loaded(m) => Ok(m),
            Contents::Stored(_) => unreachable!("loaded above"),
        }
    }

    /// The directory at `path` (components), creating missing ones with `meta`.
    pub fn ensure_dir(
        &mut self,
        repo: &Repo,
        path: &[&str],
        meta: Checksum,
    ) -> Result<&mut MutableTree> {
        let mut cur = self;
        for comp in path {
            let entries = cur.entries_mut(repo)?;
            let slot = entries
                .entry((*comp).to_owned())
                .or_insert_with(|| Node::Dir(MutableTree::new(meta)));
            if let Node::File(_) = slot {
                *slot = Node::Dir(MutableTree::new(meta));
            }
            cur = match slot {
                Node::Dir(d) => d,
                Node::File(_) => unreachable!("replaced above"),
            };
        }
        Ok(cur)
    }

    /// Overlay `other` onto this tree: files replace, directories merge, and the
    /// overlaid directory's metadata wins.
    pub fn overlay(&mut self, repo: &Repo, other: MutableTree) -> Result<()> {
        self.meta = other.meta;
        if let Contents::Stored(_) = self.contents
            && let Contents::Stored(_) = other.contents
        {
            self.contents = other.contents;
            return Ok(());
        }
        let mut other = other;
        let incoming = std::mem::take(other.entries_mut(repo)?);
        let mine = self.entries_mut(repo)?;
        for (name, node) in incoming {
            match (mine.get_mut(&name), node) {
                (Some(Node::Dir(d)), Node::Dir(o)) => d.overlay(repo, o)?,
                (_, node) => {
                    mine.insert(name, node);
                }
            }
        }
        Ok(())
    }

    /// Write the dirtree objects below and including this one; returns (dirtree, dirmeta).
    pub fn write(&self, txn: &Transaction<'_>) -> Result<(Checksum, Checksum)> {
        let entries = match &self.contents {
            Contents::Stored(c) => return Ok((*c, self.meta)),
            Contents::Loaded(m) => m,
        };
        let mut tree = DirTree::default();
        for (name, node) in entries {
            match node {
                Node::File(c) => tree.files.push((name.clone(), *c)),
                Node::Dir(d) => {
                    let (t, m) = d.write(txn)?;
                    tree.dirs.push((name.clone(), t, m));
                }
            }
        }
        let c = txn.write_meta(ObjectType::DirTree, &tree.to_bytes())?;
        Ok((c, self.meta))
    }
}

/// What goes into a commit besides its tree.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// Subject line.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Metadata, in order.
    pub metadata: Metadata,
    /// Parent commit.
    pub parent: Option<Checksum>,
    /// Seconds since the epoch.
    pub timestamp: u64,
}

/// Write a commit object for a written root.
pub fn write_commit(
    txn: &Transaction<'_>,
    root: (Checksum, Checksum),
    opts: &CommitOptions,
) -> Result<Checksum> {
    let commit = Commit {
        metadata: opts.metadata.clone(),
        parent: opts.parent,
        related: Vec::new(),
        subject: opts.subject.clone(),
        body: opts.body.clone(),
        timestamp: opts.timestamp,
        root_tree: root.0,
        root_meta: root.1,
    };
    txn.write_meta(ObjectType::Commit, &commit.to_bytes())
}

/// Every content object in the repository by (device, inode), for reusing the checksums
/// of files hardlinked out of it (`--link-checkout-speedup`).
pub fn scan_devino(repo: &Repo) -> Result<HashMap<(u64, u64), Checksum>> {
    let mut map = HashMap::new();
    if repo.mode() == RepoMode::Archive {
        return Ok(map);
    }
    for name in repo.list_objects()? {
        if name.objtype != ObjectType::File {
            continue;
        }
        let p = repo.object_path(&name);
        if let Ok(md) = fs::symlink_metadata(&p)
            && md.file_type().is_file()
        {
            map.insert((md.dev(), md.ino()), name.checksum);
        }
    }
    Ok(map)
}

/// A file found while scanning a directory, to be written in parallel.
struct PendingFile {
    path: PathBuf,
    md: fs::Metadata,
}

enum Scanned {
    File(usize),
    Dir(Checksum, Vec<(String, Scanned)>),
}

fn utf8_name(name: std::ffi::OsString, dir: &Path) -> Result<String> {
    let s = name.into_string().map_err(|n| Error::InvalidName {
        name: n.to_string_lossy().into_owned(),
        context: dir.display().to_string(),
        reason: "not valid UTF-8",
    })?;
    validate_filename(&s).map_err(|reason| Error::InvalidName {
        name: s.clone(),
        context: dir.display().to_string(),
        reason,
    })?;
    Ok(s)
}

fn file_kind(ft: &fs::FileType) -> &'static str {
    if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn dir_xattrs(path: &Path, modifier: &CommitModifier) -> Result<Xattrs> {
    if modifier.reads_xattrs() {
        sys::read_xattrs(path)
    } else {
        Ok(Vec::new())
    }
}

fn scan_dir(
    txn: &Transaction<'_>,
    path: &Path,
    md: &fs::Metadata,
    modifier: &CommitModifier,
    pending: &mut Vec<PendingFile>,
    seen: &mut HashMap<(u64, u64), usize>,
) -> Result<Scanned> {
    let meta = modifier.dirmeta(md.uid(), md.gid(), md.mode(), dir_xattrs(path, modifier)?);
    let meta_c = txn.write_meta(ObjectType::DirMeta, &meta.to_bytes())?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        let name = utf8_name(entry.file_name(), path)?;
        let child = entry.path();
        let cmd = fs::symlink_metadata(&child).at(&child)?;
        let ft = cmd.file_type();
        let node = if ft.is_dir() {
            scan_dir(txn, &child, &cmd, modifier, pending, seen)?
        } else if ft.is_file() || ft.is_symlink() {
            // Hardlinks within the input are hashed once.
            let key = (cmd.dev(), cmd.ino());
            let idx = if ft.is_file() && cmd.nlink() > 1 {
                *seen.entry(key).or_insert_with(|| {
                    pending.push(PendingFile {
                        path: child.clone(),
                        md: cmd.clone(),
                    });
                    pending.len() - 1
                })
            } else {
                pending.push(PendingFile {
                    path: child,
                    md: cmd,
                });
                pending.len() - 1
            };
            Scanned::File(idx)
        } else {
            return Err(Error::UnsupportedFileType {
                path: child,
                kind: file_kind(&ft),
            });
        };
        entries.push((name, node));
    }
    Ok(Scanned::Dir(meta_c, entries))
}

fn write_pending(
    txn: &Transaction<'_>,
    p: &PendingFile,
    modifier: &CommitModifier,
) -> Result<Checksum> {
    let md = &p.md;
    if !modifier.changes_metadata()
        && let Some(devino) = &modifier.devino
        && let Some(c) = devino.get(&(md.dev(), md.ino()))
    {
        return Ok(*c);
    }
    let source = p.path.display().to_string();
    let xattrs = if modifier.reads_xattrs() {
        sys::read_xattrs(&p.path)?
    } else {
        Vec::new()
    };
    if md.file_type().is_symlink() {
        let target = fs::read_link(&p.path).at(&p.path)?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|t| Error::InvalidName {
                name: t.to_string_lossy().into_owned(),
                context: source.clone(),
                reason: "symlink target is not valid UTF-8",
            })?;
        let h = modifier.file_header(md.uid(), md.gid(), S_IFLNK | 0o777, target, xattrs);
        return txn.write_content(&h, 0, &mut std::io::empty(), &source);
    }
    let mut f = File::open(&p.path).at(&p.path)?;
    let h = modifier.file_header(
        md.uid(),
        md.gid(),
        S_IFREG | (md.mode() & 0o7777),
        String::new(),
        xattrs,
    );
    txn.write_content(&h, md.len(), &mut f, &source)
}

fn build(scanned: Scanned, sums: &[Checksum]) -> Node {
    match scanned {
        Scanned::File(i) => Node::File(sums[i]),
        Scanned::Dir(meta, entries) => Node::Dir(MutableTree {
            meta,
            contents: Contents::Loaded(
                entries
                    .into_iter()
                    .map(|(n, s)| (n, build(s, sums)))
                    .collect(),
            ),
        }),
    }
}

/// Read a directory into a tree, writing every file object (in parallel) on the way.
pub fn tree_from_dir(
    txn: &Transaction<'_>,
    dir: &Path,
    modifier: &CommitModifier,
    progress: &dyn Progress,
) -> Result<MutableTree> {
    let md = fs::metadata(dir).at(dir)?;
    if !md.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut pending = Vec::new();
    let mut seen = HashMap::new();
    let scanned = scan_dir(txn, dir, &md, modifier, &mut pending, &mut seen)?;
    progress.set_total(pending.len() as u64);
    let sums = pending
        .par_iter()
        .map(|p| {
            let c = write_pending(txn, p, modifier);
            progress.advance(1, p.md.len());
            c
        })
        .collect::<Result<Vec<_>>>()?;
    match build(scanned, &sums) {
        Node::Dir(t) => Ok(t),
        Node::File(_) => unreachable!("scan of a directory yields a directory"),
    }
}

/// The tree of an existing commit.
pub fn tree_from_commit(repo: &Repo, commit: &Checksum) -> Result<MutableTree> {
    let c = repo.load_commit(commit)?;
    Ok(MutableTree::from_stored(c.root_tree, c.root_meta))
}

/// Check that every object a commit needs is present. Used before moving a ref.
pub fn commit_is_complete(repo: &Repo, commit: &Checksum) -> Result<bool> {
    let c = repo.load_commit(commit)?;
    let mut stack = vec![(c.root_tree, c.root_meta)];
    while let Some((t, m)) = stack.pop() {
        if !repo.has_object(&ObjectName::new(m, ObjectType::DirMeta)) {
            return Ok(false);
        }
        let tree = match repo.load_dirtree(&t) {
            Ok(t) => t,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        for (_, f) in &tree.files {
            if !repo.has_object(&ObjectName::new(*f, ObjectType::File)) {
                return Ok(false);
            }
        }
        stack.extend(tree.dirs.iter().map(|(_, t, m)| (*t, *m)));
    }
    Ok(true)
}

/// Read a tar stream into a tree. Paths are taken relative to the root (a leading `/` or
/// `./` is dropped); `..` components, device nodes and links to paths outside the archive
/// are refused with an error naming the entry.
pub fn tree_from_tar(
    txn: &Transaction<'_>,
    reader: impl Read,
    source_name: &str,
    modifier: &CommitModifier,
) -> Result<MutableTree> {
    let repo = txn.repo();
    let default_meta = txn.write_meta(
        ObjectType::DirMeta,
        &modifier
            .dirmeta(0, 0, S_IFDIR | 0o755, Vec::new())
            .to_bytes(),
    )?;
    let mut root = MutableTree::new(default_meta);
    let mut by_path: HashMap<String, Checksum> = HashMap::new();
    let mut archive = tar::Archive::new(reader);
    let tar_err = |message: String| Error::Tar {
        source_name: source_name.to_owned(),
        message,
    };
    let entries = archive.entries().map_err(|e| tar_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(e.to_string()))?;
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let components =
            tar_components(&raw_path).map_err(|m| tar_err(format!("{display}: {m}")))?;
        let header = entry.header().clone();
        let uid = header
            .uid()
            .map_err(|e| tar_err(format!("{display}: {e}")))? as u32;
        let gid = header
            .gid()
            .map_err(|e| tar_err(format!("{display}: {e}")))? as u32;
        let mode = header
            .mode()
            .map_err(|e| tar_err(format!("{display}: {e}")))?
            & 0o7777;
        let mut xattrs = Xattrs::new();
        if modifier.reads_xattrs()
            && let Ok(Some(exts)) = entry.pax_extensions()
        {
            for ext in exts.flatten() {
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")
                    && !ext.value_bytes().is_empty()
                {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
            xattrs.sort();
        }
        let (parent, name) = match components.split_last() {
            Some((n, p)) => (p, Some(*n)),
            None => (&[][..], None),
        };
        let kind = header.entry_type();
        if kind.is_dir() {
            let meta = modifier.dirmeta(uid, gid, S_IFDIR | mode, xattrs);
            let meta_c = txn.write_meta(ObjectType::DirMeta, &meta.to_bytes())?;
            let dir = root.ensure_dir(repo, &components, default_meta)?;
            dir.meta = meta_c;
            continue;
        }
        let Some(name) = name else {
            return Err(tar_err(format!(
                "{display}: a non-directory entry for the root"
            )));
        };
        let checksum = if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            let h = modifier.file_header(uid, gid, S_IFREG | mode, String::new(), xattrs);
            txn.write_content(&h, size, &mut entry, &format!("{source_name}:{display}"))?
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| tar_err(format!("{display}: symlink without a target")))?;
            let target = String::from_utf8(target.into_owned())
                .map_err(|_| tar_err(format!("{display}: symlink target is not UTF-8")))?;
            let h = modifier.file_header(uid, gid, S_IFLNK | 0o777, target, xattrs);
            txn.write_content(&h, 0, &mut std::io::empty(), &display)?
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| tar_err(format!("{display}: hardlink without a target")))?;
            let key = tar_components(&target)
                .map_err(|m| tar_err(format!("{display}: hardlink target: {m}")))?
                .join("/");
            *by_path.get(&key).ok_or_else(|| {
                tar_err(format!(
                    "{display}: hardlink to {key:?}, which is not an earlier file in the archive"
                ))
            })?
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(Error::UnsupportedFileType {
                path: PathBuf::from(format!("{source_name}:{display}")),
                kind: match kind {
                    tar::EntryType::Char => "character device",
                    tar::EntryType::Block => "block device",
                    tar::EntryType::Fifo => "fifo",
                    _ => "unknown tar entry type",
                },
            });
        };
        let dir = root.ensure_dir(repo, parent, default_meta)?;
        dir.entries_mut(repo)?
            .insert(name.to_owned(), Node::File(checksum));
        by_path.insert(components.join("/"), checksum);
    }
    Ok(root)
}

/// Split a tar path into validated components.
fn tar_components(raw: &[u8]) -> std::result::Result<Vec<&str>, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8".to_string())?;
    let mut out = Vec::new();
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("path contains `..`".into()),
            c => {
                validate_filename(c).map_err(|r| format!("invalid name {c:?}: {r}"))?;
                out.push(c);
            }
        }
    }
    Ok(out)
}
