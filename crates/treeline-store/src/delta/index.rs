//! The deltas of a repository: listing, inspecting, deleting, and the delta indexes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::ops::{OpCounts, decode_ops};
use super::part::{DeltaPart, PART_DECOMPRESSED_LIMIT, decompress_part};
use super::superblock::{PartHeader, Superblock, parse_superblock_file};
use super::{DeltaName, STATIC_DELTAS_KEY, checksum_from_modified_base64, index_relpath};
use crate::checksum::Checksum;
use crate::error::{Error, IoContext, Result};
use crate::repo::{Repo, write_file_atomic};
use crate::sys::{LockKind, RepoLock};
use crate::variant::{Metadata, Value};

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.at(dir)?;
                if let Some(n) = e.file_name().to_str() {
                    out.push((n.to_owned(), e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(dir),
    }
    out.sort();
    Ok(out)
}

/// Every delta in the repository's `deltas/` (directories holding a `superblock`).
pub fn list(repo: &Repo) -> Result<Vec<DeltaName>> {
    let mut out = Vec::new();
    for (first, path) in read_dir_sorted(&repo.path().join("deltas"))? {
        if !path.is_dir() {
            continue;
        }
        for (second, sub) in read_dir_sorted(&path)? {
            if !sub.join("superblock").is_file() {
                continue;
            }
            if let Some(name) = DeltaName::from_dir_names(&first, &second) {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the repository has this delta.
pub fn has_delta(repo: &Repo, name: &DeltaName) -> bool {
    repo.path()
        .join(name.relpath())
        .join("superblock")
        .is_file()
}

/// The superblock file of a delta in the repository.
pub fn read_superblock_file(repo: &Repo, name: &DeltaName) -> Result<Vec<u8>> {
    let p = repo.path().join(name.relpath()).join("superblock");
    match fs::read(&p) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Unsupported(format!(
            "static delta {name} not found in {}",
            repo.path().display()
        ))),
        Err(e) => Err(e).at(p),
    }
}

/// Delete a delta, then refresh the delta index of its target.
pub fn delete(repo: &mut Repo, name: &DeltaName) -> Result<()> {
    let dir = repo.path().join(name.relpath());
    if !dir.is_dir() {
        return Err(Error::Unsupported(format!(
            "can't find static delta {name}"
        )));
    }
    fs::remove_dir_all(&dir).at(&dir)?;
    if let Some(parent) = dir.parent() {
        // The two-character directory goes when its last delta does.
        let _ = fs::remove_dir(parent);
    }
    reindex(repo, Some(name.to))
}

/// Rewrite the delta indexes, of one target or (with `None`) of every target, deleting
/// indexes whose deltas are gone, as `ostree static-delta reindex` does. Sets
/// `core.indexed-deltas=true` so that clients look for indexes.
pub fn reindex(repo: &mut Repo, to: Option<Checksum>) -> Result<()> {
    let _lock = RepoLock::acquire(&repo.path().join(".lock"), LockKind::Shared)?;
    let indexed = repo
        .config()
        .boolean("core", "indexed-deltas")
        .map_err(|e| Error::Config {
            path: repo.path().join("config"),
            message: e.to_string(),
        })?;
    if indexed != Some(true) {
        let mut config = repo.config().clone();
        config.set_boolean("core", "indexed-deltas", true);
        repo.write_config(config)?;
    }
    // Target → sources (`None`: from scratch); an empty list deletes the index.
    let mut targets: BTreeMap<Checksum, Vec<Option<Checksum>>> = BTreeMap::new();
    match to {
        Some(t) => {
            targets.insert(t, Vec::new());
        }
        None => {
            for t in list_indexes(repo)? {
                targets.insert(t, Vec::new());
            }
        }
    }
    for name in list(repo)? {
        if to.is_some_and(|t| t != name.to) {
            continue;
        }
        targets.entry(name.to).or_default().push(name.from);
    }
    for (target, mut froms) in targets {
        let path = repo.path().join(index_relpath(&target));
        if froms.is_empty() {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path),
            }
            continue;
        }
        // Sorted, so the index is reproducible (ostree sorts the same way).
        froms.sort();
        let mut deltas = Metadata::new();
        for from in froms {
            let name = DeltaName::new(from, target);
            let digest = Checksum::of(&read_superblock_file(repo, &name)?);
            deltas.insert(&name.to_string(), Value::bytes(digest.as_bytes()));
        }
        let mut index = Metadata::new();
        index.insert(STATIC_DELTAS_KEY, Value::dict(&deltas));
        let bytes = index.to_bytes();
        if fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        write_file_atomic(&path, &bytes)?;
    }
    Ok(())
}

/// The targets that have a delta index.
fn list_indexes(repo: &Repo) -> Result<Vec<Checksum>> {
    let mut out = Vec::new();
    for (first, path) in read_dir_sorted(&repo.path().join("delta-indexes"))? {
        if first.len() != 2 || !path.is_dir() {
            continue;
        }
        for (second, _) in read_dir_sorted(&path)? {
            if let Some(rest) = second.strip_suffix(".index")
                && let Some(c) = checksum_from_modified_base64(&format!("{first}{rest}"))
            {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// A part as `show` describes it.
#[derive(Clone, Debug)]
pub struct PartInfo {
    /// The header from the superblock.
    pub header: PartHeader,
    /// Whether it is inline (in the superblock metadata).
    pub inline: bool,
    /// Entries of the mode table.
    pub modes: usize,
    /// Entries of the xattr table.
    pub xattrs: usize,
    /// Payload length.
    pub blob_size: u64,
    /// Bytecode length.
    pub ops_size: u64,
    /// Operations by kind.
    pub ops: OpCounts,
}

/// What `show` prints about a delta.
#[derive(Clone, Debug)]
pub struct DeltaInfo {
    /// The delta.
    pub name: DeltaName,
    /// Signature engines of a signed superblock (empty when unsigned).
    pub signed_by: Vec<String>,
    /// Whether the superblock is wrapped in a signed envelope.
    pub signed: bool,
    /// The superblock.
    pub superblock: Superblock,
    /// Length of the superblock file.
    pub superblock_size: u64,
    /// The parts, read and decoded.
    pub parts: Vec<PartInfo>,
}

/// Describe a delta: `what` is a delta name (`FROM-TO` or `TO`), or a path to a
/// superblock file (anything containing `/`), whose parts are read beside it.
pub fn show(repo: &Repo, what: &str) -> Result<DeltaInfo> {
    let (bytes, dir) = if what.contains('/') {
        let p = Path::new(what);
        let p = if p.is_dir() {
            p.join("superblock")
        } else {
            p.to_path_buf()
        };
        let dir = p
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into());
        (fs::read(&p).at(&p)?, dir)
    } else {
        let name: DeltaName = what.parse()?;
        (
            read_superblock_file(repo, &name)?,
            repo.path().join(name.relpath()),
        )
    };
    let (sb, signed) = parse_superblock_file(&bytes)?;
    let mut parts = Vec::with_capacity(sb.parts.len());
    for (i, header) in sb.parts.iter().enumerate() {
        let bad = |reason: String| Error::InvalidObject {
            object: format!("static delta part {i}"),
            reason,
        };
        let inline = sb.inline_part(i);
        let file = match &inline {
            Some(b) => b.clone(),
            None => {
                let p = dir.join(i.to_string());
                fs::read(&p).at(&p)?
            }
        };
        let variant = decompress_part(&file, PART_DECOMPRESSED_LIMIT).map_err(bad)?;
        let part = DeltaPart::from_bytes(&variant).map_err(bad)?;
        let ops = decode_ops(&part.ops, &header.objects).map_err(bad)?;
        parts.push(PartInfo {
            header: header.clone(),
            inline: inline.is_some(),
            modes: part.modes.len(),
            xattrs: part.xattrs.len(),
            blob_size: part.payload.len() as u64,
            ops_size: part.ops.len() as u64,
            ops: OpCounts::of(&ops),
        });
    }
    Ok(DeltaInfo {
        name: sb.name(),
        signed_by: signed.as_ref().map(|s| s.engines()).unwrap_or_default(),
        signed: signed.is_some(),
        superblock_size: bytes.len() as u64,
        superblock: sb,
        parts,
    })
}
