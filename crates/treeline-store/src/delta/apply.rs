//! Executing a delta: verify each part, run its operations, verify each object before
//! it is stored.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::ops::{Op, decode_ops};
use super::part::{DeltaPart, PART_DECOMPRESSED_LIMIT, decompress_part};
use super::superblock::{Fallback, Superblock, parse_superblock_file};
use super::{DeltaName, PART_VERSION};
use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::{Commit, DirMeta, DirTree, FileHeader};
use crate::repo::{ContentHasher, Repo, Transaction};

/// What applying a delta did.
#[derive(Clone, Debug)]
pub struct ApplyReport {
    /// The delta.
    pub name: DeltaName,
    /// Parts executed.
    pub parts_applied: usize,
    /// Parts skipped because the repository already had all their objects.
    pub parts_skipped: usize,
    /// Objects written by the parts (objects already present are not rewritten).
    pub objects_written: usize,
    /// Whether the TO commit object was written (false when it was already there).
    pub commit_written: bool,
    /// Fallback objects the repository does not have: the caller must fetch them as
    /// loose objects before the commit is complete.
    pub missing_fallbacks: Vec<Fallback>,
}

/// Apply a delta inside a transaction.
///
/// `superblock` is the superblock file (signed or not). `part_source(i)` returns the
/// bytes of part file `i`; it is only called for parts whose objects are not all
/// present already, and never for inline parts. Every part must match the checksum in
/// the superblock, and every object must hash to the name the part gives it, before
/// anything is written; on error nothing becomes visible unless the caller commits the
/// transaction anyway, which it should not.
///
/// The TO commit (and its detached metadata, when the delta carries it) is written last.
/// Fallback objects are not part of the delta: they are reported in
/// [`ApplyReport::missing_fallbacks`] for the caller to fetch, in the same transaction,
/// before committing it.
///
/// Unlike ostree, which needs a bare-family target for `open`/`bspatch` operations,
/// this applies every delta to every repository mode.
pub fn apply(
    txn: &Transaction<'_>,
    superblock: &[u8],
    part_source: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<ApplyReport> {
    let (sb, _signed) = parse_superblock_file(superblock)?;
    apply_superblock(txn, &sb, part_source)
}

/// Apply a delta stored as a directory holding `superblock` and its parts (the layout
/// under `deltas/`, or what `generate` writes), or given as the path of its superblock
/// file, in a transaction of its own. Deltas with fallback objects are refused, as
/// ostree refuses them: those objects are not in the directory.
pub fn apply_offline(repo: &Repo, path: &Path) -> Result<ApplyReport> {
    let (dir, superblock_path) = if path.is_dir() {
        (path.to_path_buf(), path.join("superblock"))
    } else {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into());
        (dir, path.to_path_buf())
    };
    let bytes = fs::read(&superblock_path).at(&superblock_path)?;
    let (sb, _signed) = parse_superblock_file(&bytes)?;
    if !sb.fallbacks.is_empty() {
        return Err(Error::Unsupported(format!(
            "cannot apply static delta {} offline: it lists {} fallback object(s) to fetch \
             individually (generate it with --min-fallback-size=0)",
            sb.name(),
            sb.fallbacks.len()
        )));
    }
    let txn = repo.begin()?;
    let report = apply_superblock(&txn, &sb, |i| {
        let p = dir.join(i.to_string());
        fs::read(&p).map_err(|e| Error::Io {
            path: p,
            error: std::io::Error::new(e.kind(), format!("reading static delta part {i}: {e}")),
        })
    })?;
    txn.commit()?;
    Ok(report)
}

fn part_label(i: usize) -> String {
    format!("static delta part {i}")
}

fn apply_superblock(
    txn: &Transaction<'_>,
    sb: &Superblock,
    mut part_source: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<ApplyReport> {
    let name = sb.name();
    let commit_name = ObjectName::new(sb.to, ObjectType::Commit);
    let commit_bytes = sb.commit.to_bytes();
    let actual = Checksum::of(&commit_bytes);
    if actual != sb.to {
        return Err(Error::Corrupted {
            object: commit_name,
            actual: actual.to_hex(),
        });
    }
    if let Some(from) = sb.from {
        let from_name = ObjectName::new(from, ObjectType::Commit);
        if !txn.has_object(&from_name) {
            return Err(Error::NotFound(from_name));
        }
    }
    let mut report = ApplyReport {
        name,
        parts_applied: 0,
        parts_skipped: 0,
        objects_written: 0,
        commit_written: false,
        missing_fallbacks: Vec::new(),
    };
    let mut store = TxnStore { txn };
    for (i, header) in sb.parts.iter().enumerate() {
        let label = part_label(i);
        let bad = |reason: String| Error::InvalidObject {
            object: label.clone(),
            reason,
        };
        if header.version > PART_VERSION {
            return Err(bad(format!(
                "part version {} is newer than {PART_VERSION}",
                header.version
            )));
        }
        if header.objects.iter().all(|o| txn.has_object(o)) {
            report.parts_skipped += 1;
            continue;
        }
        // Inline parts travel inside the (already trusted) superblock; ostree does not
        // checksum them either.
        let file = match sb.inline_part(i) {
            Some(bytes) => bytes,
            None => {
                let bytes = part_source(i)?;
                let actual = Checksum::of(&bytes);
                if actual != header.checksum {
                    return Err(bad(format!(
                        "checksum mismatch: the superblock says {}, the part hashes to {actual}",
                        header.checksum
                    )));
                }
                bytes
            }
        };
        // Payloads hold at most the objects' content plus patch framing; anything far
        // larger is hostile.
        let limit = header
            .usize
            .saturating_mul(4)
            .saturating_add(64 << 20)
            .min(PART_DECOMPRESSED_LIMIT);
        let variant = decompress_part(&file, limit).map_err(bad)?;
        drop(file);
        let part = DeltaPart::from_bytes(&variant).map_err(bad)?;
        drop(variant);
        report.objects_written += execute_part(&part, &header.objects, &mut store, &label)?;
        report.parts_applied += 1;
    }
    report.missing_fallbacks = sb
        .fallbacks
        .iter()
        .filter(|f| !txn.has_object(&f.object))
        .cloned()
        .collect();
    if !txn.has_object(&commit_name) {
        if let Some(detached) = sb.detached_metadata() {
            let meta_name = ObjectName::new(sb.to, ObjectType::CommitMeta);
            if !txn.has_object(&meta_name) {
                txn.write_meta_as(&meta_name, &detached.to_bytes())?;
            }
        }
        txn.write_meta_as(&commit_name, &commit_bytes)?;
        report.commit_written = true;
    }
    Ok(report)
}

/// Where executed parts put objects and find read sources.
pub(crate) trait ObjectStore {
    /// Whether the object is already stored (then it is not written again).
    fn has_object(&self, name: &ObjectName) -> bool;
    /// Store a metadata object already verified against its name.
    fn store_meta(&mut self, name: &ObjectName, data: &[u8]) -> Result<()>;
    /// Store a content object already verified against its name.
    fn store_file(
        &mut self,
        checksum: &Checksum,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()>;
    /// The content of an existing regular-file object, for `w` and `B`.
    fn read_source(&mut self, checksum: &Checksum) -> Result<Vec<u8>>;
}

struct TxnStore<'t, 'r> {
    txn: &'t Transaction<'r>,
}

impl ObjectStore for TxnStore<'_, '_> {
    fn has_object(&self, name: &ObjectName) -> bool {
        self.txn.has_object(name)
    }

    fn store_meta(&mut self, name: &ObjectName, data: &[u8]) -> Result<()> {
        self.txn.write_meta_as(name, data)
    }

    fn store_file(
        &mut self,
        checksum: &Checksum,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        let name = ObjectName::new(*checksum, ObjectType::File);
        let written = self
            .txn
            .write_content(header, size, content, &name.to_string())?;
        if written != *checksum {
            return Err(Error::Corrupted {
                object: name,
                actual: written.to_hex(),
            });
        }
        Ok(())
    }

    fn read_source(&mut self, checksum: &Checksum) -> Result<Vec<u8>> {
        let name = ObjectName::new(*checksum, ObjectType::File);
        let (header, mut content, size) = self.txn.repo().open_file(checksum)?;
        if header.is_symlink() {
            return Err(Error::InvalidObject {
                object: name.to_string(),
                reason: "a static delta reads from it, but it is a symlink".into(),
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
        content
            .read_to_end(&mut out)
            .at(self.txn.repo().object_path(&name))?;
        Ok(out)
    }
}

/// Check a metadata object's bytes against its name and type before it is stored.
fn verify_meta(name: &ObjectName, data: &[u8]) -> Result<()> {
    let actual = Checksum::of(data);
    if actual != name.checksum {
        return Err(Error::Corrupted {
            object: *name,
            actual: actual.to_hex(),
        });
    }
    let checked = match name.objtype {
        ObjectType::DirTree => DirTree::from_bytes(data).map(drop),
        ObjectType::DirMeta => DirMeta::from_bytes(data).map(drop),
        ObjectType::Commit => Commit::from_bytes(data).map(drop),
        other => Err(format!("static deltas cannot carry {other} objects")),
    };
    checked.map_err(|reason| Error::InvalidObject {
        object: name.to_string(),
        reason,
    })
}

/// A regular file being assembled by `o`, `w`, `B` and finished by `c`.
struct OpenFile {
    name: ObjectName,
    header: FileHeader,
    size: u64,
    /// Already stored: the operations are checked but nothing is written.
    present: bool,
    hasher: ContentHasher,
    content: tempfile::SpooledTempFile,
    written: u64,
}

impl OpenFile {
    fn append(&mut self, data: &[u8], label: &str) -> Result<()> {
        let total = self.written + data.len() as u64;
        if total > self.size {
            return Err(Error::InvalidObject {
                object: label.to_owned(),
                reason: format!(
                    "operations write {total} bytes into {}, which is {} bytes",
                    self.name, self.size
                ),
            });
        }
        self.hasher.update(data);
        self.content.write_all(data).at(label)?;
        self.written = total;
        Ok(())
    }

    fn finish(mut self, store: &mut dyn ObjectStore, label: &str) -> Result<()> {
        if self.written != self.size {
            return Err(Error::InvalidObject {
                object: label.to_owned(),
                reason: format!(
                    "{} is {} bytes but its operations wrote {}",
                    self.name, self.size, self.written
                ),
            });
        }
        let actual = self.hasher.finish();
        if actual != self.name.checksum {
            return Err(Error::Corrupted {
                object: self.name,
                actual: actual.to_hex(),
            });
        }
        self.content.rewind().at(label)?;
        store.store_file(
            &self.name.checksum,
            &self.header,
            self.size,
            &mut self.content,
        )
    }
}

/// Content of `o`-opened files stays in memory up to this size, then spills to disk.
const OPEN_FILE_MEMORY: usize = 64 << 20;

fn payload_slice(payload: &[u8], offset: u64, size: u64) -> Result<&[u8], String> {
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(o, s)| Some(o..o.checked_add(s)?));
    range.and_then(|r| payload.get(r)).ok_or_else(|| {
        format!(
            "offset/length {offset}/{size} is outside the {}-byte payload",
            payload.len()
        )
    })
}

/// Run one part's operations. Returns how many objects were written.
pub(crate) fn execute_part(
    part: &DeltaPart,
    objects: &[ObjectName],
    store: &mut dyn ObjectStore,
    label: &str,
) -> Result<usize> {
    let bad = |reason: String| Error::InvalidObject {
        object: label.to_owned(),
        reason,
    };
    let ops = decode_ops(&part.ops, objects).map_err(bad)?;
    let mut index = 0usize;
    let mut written = 0usize;
    let mut open: Option<OpenFile> = None;
    // The read source and, once an operation needed it, its content.
    let mut source: Option<(Checksum, Option<Vec<u8>>)> = None;
    let current = |index: usize| -> Result<ObjectName> {
        objects.get(index).copied().ok_or_else(|| {
            bad(format!(
                "operations write more objects than the {} listed",
                objects.len()
            ))
        })
    };
    for op in ops {
        match op {
            Op::SpliceMeta { size, offset } => {
                if open.is_some() {
                    return Err(bad("splice while a file is open".into()));
                }
                let name = current(index)?;
                let data = payload_slice(&part.payload, offset, size).map_err(bad)?;
                if !store.has_object(&name) {
                    verify_meta(&name, data)?;
                    store.store_meta(&name, data)?;
                    written += 1;
                }
                index += 1;
                source = None;
            }
            Op::SpliceContent {
                mode,
                xattr,
                size,
                offset,
            } => {
                if open.is_some() {
                    return Err(bad("splice while a file is open".into()));
                }
                let name = current(index)?;
                let mut header = part.file_header(mode, xattr).map_err(bad)?;
                let data = payload_slice(&part.payload, offset, size).map_err(bad)?;
                if !store.has_object(&name) {
                    let content: &[u8] = if header.is_symlink() {
                        header.symlink_target = std::str::from_utf8(data)
                            .ok()
                            .filter(|t| !t.contains('\0'))
                            .ok_or_else(|| Error::InvalidObject {
                                object: name.to_string(),
                                reason: "symlink target is not UTF-8 or contains NUL".into(),
                            })?
                            .to_owned();
                        &[]
                    } else {
                        data
                    };
                    header.validate().map_err(|reason| Error::InvalidObject {
                        object: name.to_string(),
                        reason,
                    })?;
                    let mut hasher = ContentHasher::new(&header);
                    hasher.update(content);
                    let actual = hasher.finish();
                    if actual != name.checksum {
                        return Err(Error::Corrupted {
                            object: name,
                            actual: actual.to_hex(),
                        });
                    }
                    store.store_file(
                        &name.checksum,
                        &header,
                        content.len() as u64,
                        &mut &content[..],
                    )?;
                    written += 1;
                }
                index += 1;
                source = None;
            }
            Op::Open { mode, xattr, size } => {
                if open.is_some() {
                    return Err(bad("open while another file is open".into()));
                }
                let name = current(index)?;
                if name.objtype != ObjectType::File {
                    return Err(bad(format!("open of {name}, which is not a file")));
                }
                let header = part.file_header(mode, xattr).map_err(bad)?;
                header.validate().map_err(|reason| Error::InvalidObject {
                    object: name.to_string(),
                    reason,
                })?;
                if header.is_symlink() {
                    return Err(bad(format!("open of {name}, which is a symlink")));
                }
                open = Some(OpenFile {
                    name,
                    hasher: ContentHasher::new(&header),
                    header,
                    size,
                    present: store.has_object(&name),
                    content: tempfile::spooled_tempfile(OPEN_FILE_MEMORY),
                    written: 0,
                });
            }
            Op::Write { size, offset } => {
                let file = open
                    .as_mut()
                    .ok_or_else(|| bad("write with no open file".into()))?;
                if file.present {
                    continue;
                }
                match &mut source {
                    Some((checksum, data)) => {
                        let data = match data {
                            Some(d) => d,
                            None => data.insert(store.read_source(checksum)?),
                        };
                        let slice = payload_slice(data, offset, size).map_err(|_| {
                            bad(format!(
                                "write of {size} bytes at {offset} is past the end of read \
                                 source {checksum} ({} bytes)",
                                data.len()
                            ))
                        })?;
                        file.append(slice, label)?;
                    }
                    None => {
                        let slice = payload_slice(&part.payload, offset, size).map_err(bad)?;
                        file.append(slice, label)?;
                    }
                }
            }
            Op::SetReadSource { offset } => {
                let bytes = payload_slice(&part.payload, offset, 32).map_err(bad)?;
                let c = Checksum::from_bytes(bytes)
                    .ok_or_else(|| bad("short read source checksum".into()))?;
                source = Some((c, None));
            }
            Op::UnsetReadSource => source = None,
            Op::Close => {
                let file = open
                    .take()
                    .ok_or_else(|| bad("close with no open file".into()))?;
                if !file.present {
                    file.finish(store, label)?;
                    written += 1;
                }
                index += 1;
                source = None;
            }
            Op::Bspatch { offset, size } => {
                let patch = payload_slice(&part.payload, offset, size).map_err(bad)?;
                let file = open
                    .as_mut()
                    .ok_or_else(|| bad("bspatch with no open file".into()))?;
                if file.present {
                    continue;
                }
                let (checksum, data) = source
                    .as_mut()
                    .ok_or_else(|| bad(format!("bspatch of {} with no read source", file.name)))?;
                let old = match data {
                    Some(d) => d,
                    None => data.insert(store.read_source(checksum)?),
                };
                // The output can be no longer than the patch (every byte comes from it).
                let mut new = Vec::with_capacity(usize::try_from(file.size.min(size)).unwrap_or(0));
                bsdiff::patch(old, &mut &patch[..], &mut new).map_err(|e| {
                    bad(format!(
                        "bspatch of {} from {checksum} failed: {e}",
                        file.name
                    ))
                })?;
                if new.len() as u64 != file.size {
                    return Err(bad(format!(
                        "bspatch of {} produced {} bytes, expected {}",
                        file.name,
                        new.len(),
                        file.size
                    )));
                }
                file.append(&new, label)?;
            }
        }
    }
    if let Some(file) = open {
        return Err(bad(format!("operations end with {} still open", file.name)));
    }
    if index != objects.len() {
        return Err(bad(format!(
            "the part lists {} objects but its operations write {index}",
            objects.len()
        )));
    }
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::delta::ops::encode_ops;
    use crate::object::{S_IFLNK, S_IFREG};

    /// Objects in memory, for running parts without a repository.
    #[derive(Default)]
    pub(crate) struct MemStore {
        pub(crate) meta: HashMap<ObjectName, Vec<u8>>,
        pub(crate) files: HashMap<Checksum, (FileHeader, Vec<u8>)>,
    }

    impl ObjectStore for MemStore {
        fn has_object(&self, name: &ObjectName) -> bool {
            match name.objtype {
                ObjectType::File => self.files.contains_key(&name.checksum),
                _ => self.meta.contains_key(name),
            }
        }
        fn store_meta(&mut self, name: &ObjectName, data: &[u8]) -> Result<()> {
            self.meta.insert(*name, data.to_vec());
            Ok(())
        }
        fn store_file(
            &mut self,
            checksum: &Checksum,
            header: &FileHeader,
            size: u64,
            content: &mut dyn Read,
        ) -> Result<()> {
            let mut v = Vec::new();
            content.read_to_end(&mut v).unwrap();
            assert_eq!(v.len() as u64, size);
            self.files.insert(*checksum, (header.clone(), v));
            Ok(())
        }
        fn read_source(&mut self, checksum: &Checksum) -> Result<Vec<u8>> {
            self.files
                .get(checksum)
                .map(|f| f.1.clone())
                .ok_or(Error::NotFound(ObjectName::new(
                    *checksum,
                    ObjectType::File,
                )))
        }
    }

    pub(crate) fn file_checksum(header: &FileHeader, content: &[u8]) -> Checksum {
        let mut h = ContentHasher::new(header);
        h.update(content);
        h.finish()
    }

    fn reg(mode: u32) -> FileHeader {
        FileHeader {
            uid: 0,
            gid: 0,
            mode: S_IFREG | mode,
            symlink_target: String::new(),
            xattrs: vec![],
        }
    }

    /// A part writing a dirtree, a symlink, a plain file and a bsdiff'ed file.
    fn sample(old: &[u8], new: &[u8]) -> (DeltaPart, Vec<ObjectName>) {
        let tree = DirTree::default().to_bytes();
        let link = FileHeader {
            mode: S_IFLNK | 0o777,
            symlink_target: "target".into(),
            ..reg(0)
        };
        let mut part = DeltaPart {
            modes: vec![(0, 0, S_IFREG | 0o644), (0, 0, S_IFLNK | 0o777)],
            xattrs: vec![vec![]],
            ..Default::default()
        };
        let old_c = file_checksum(&reg(0o644), old);
        let mut patch = Vec::new();
        bsdiff::diff(old, new, &mut patch).unwrap();
        let mut ops = Vec::new();
        let p = &mut part.payload;
        ops.push(Op::SpliceMeta {
            size: tree.len() as u64,
            offset: p.len() as u64,
        });
        p.extend_from_slice(&tree);
        ops.push(Op::SpliceContent {
            mode: 1,
            xattr: 0,
            size: 6,
            offset: p.len() as u64,
        });
        p.extend_from_slice(b"target");
        ops.push(Op::SetReadSource {
            offset: p.len() as u64,
        });
        p.extend_from_slice(old_c.as_bytes());
        ops.push(Op::Open {
            mode: 0,
            xattr: 0,
            size: new.len() as u64,
        });
        ops.push(Op::Bspatch {
            offset: p.len() as u64,
            size: patch.len() as u64,
        });
        p.extend_from_slice(&patch);
        ops.push(Op::Close);
        ops.push(Op::UnsetReadSource);
        // A rollsum-style file: half from the old object, half from the payload.
        ops.push(Op::SetReadSource {
            offset: (tree.len() + 6) as u64,
        });
        ops.push(Op::Open {
            mode: 0,
            xattr: 0,
            size: 8,
        });
        ops.push(Op::Write { size: 4, offset: 0 });
        ops.push(Op::UnsetReadSource);
        ops.push(Op::Write {
            size: 4,
            offset: p.len() as u64,
        });
        p.extend_from_slice(b"tail");
        ops.push(Op::Close);
        part.ops = encode_ops(&ops);
        let mut rolled = old[..4].to_vec();
        rolled.extend_from_slice(b"tail");
        let objects = vec![
            ObjectName::new(Checksum::of(&tree), ObjectType::DirTree),
            ObjectName::new(file_checksum(&link, b""), ObjectType::File),
            ObjectName::new(file_checksum(&reg(0o644), new), ObjectType::File),
            ObjectName::new(file_checksum(&reg(0o644), &rolled), ObjectType::File),
        ];
        (part, objects)
    }

    fn store_with(old: &[u8]) -> MemStore {
        let mut s = MemStore::default();
        s.files
            .insert(file_checksum(&reg(0o644), old), (reg(0o644), old.to_vec()));
        s
    }

    #[test]
    fn interpreter_writes_every_kind_of_object() {
        let old = b"the quick brown fox jumps over the lazy dog".repeat(20);
        let mut new = old.clone();
        new[100] = b'X';
        new.extend_from_slice(b"and more");
        let (part, objects) = sample(&old, &new);
        let mut store = store_with(&old);
        let n = execute_part(&part, &objects, &mut store, "part").unwrap();
        assert_eq!(n, 4);
        assert_eq!(store.files[&objects[2].checksum].1, new);
        assert_eq!(store.files[&objects[1].checksum].0.symlink_target, "target");
        assert!(store.meta.contains_key(&objects[0]));
        // Running it again writes nothing: everything is present.
        assert_eq!(
            execute_part(&part, &objects, &mut store, "part").unwrap(),
            0
        );
    }

    #[test]
    fn a_mismatching_object_is_refused_and_named() {
        let old = b"old content here".repeat(4);
        let new = b"new content here".repeat(4);
        let (part, mut objects) = sample(&old, &new);
        let wrong = Checksum([0xee; 32]);
        objects[2].checksum = wrong;
        let mut store = store_with(&old);
        let err = execute_part(&part, &objects, &mut store, "part").unwrap_err();
        assert!(err.to_string().contains(&wrong.to_hex()), "{err}");
        assert!(!store.files.contains_key(&wrong));
    }

    #[test]
    fn bad_parts_are_errors_not_panics() {
        let old = b"0123456789abcdef".repeat(8);
        let new = b"0123456789ABCDEF".repeat(8);
        let (part, objects) = sample(&old, &new);
        // Missing read source object.
        let mut empty = MemStore::default();
        assert!(execute_part(&part, &objects, &mut empty, "part").is_err());
        // Truncated operations and payload.
        for n in 0..part.ops.len() {
            let mut p = part.clone();
            p.ops.truncate(n);
            assert!(execute_part(&p, &objects, &mut store_with(&old), "part").is_err());
        }
        let mut p = part.clone();
        p.payload.truncate(p.payload.len() / 2);
        assert!(execute_part(&p, &objects, &mut store_with(&old), "part").is_err());
        // Every single-byte corruption of ops or payload fails cleanly or still verifies.
        for i in 0..part.ops.len() {
            let mut p = part.clone();
            p.ops[i] ^= 0x41;
            let _ = execute_part(&p, &objects, &mut store_with(&old), "part");
        }
        // A payload flip either fails, or (in bytes a patch never uses) changes nothing:
        // whatever is stored still hashes to its name.
        for i in 0..part.payload.len() {
            let mut p = part.clone();
            p.payload[i] ^= 0x41;
            let mut store = store_with(&old);
            if execute_part(&p, &objects, &mut store, "part").is_ok() {
                for (c, (h, content)) in &store.files {
                    assert_eq!(file_checksum(h, content), *c, "flip at {i}");
                }
            }
        }
    }
}
