//! Executing a delta: verify each part, run its operations, verify each object before
//! it is stored.
//!
//! Memory stays small whatever the part size: a part is decompressed as it is read
//! (hashing the compressed bytes on the way) into an unnamed temporary file, only its
//! tables and operations are read back into memory, and objects are copied from the
//! payload in that file, in chunks, straight into the repository. The xz decoder's
//! dictionary (at most what the part's encoder chose, and no more than the part's size
//! is ever touched) is the one buffer that grows with the part.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ops::{Op, decode_ops};
use super::part::{PART_DECOMPRESSED_LIMIT, PartLayout, PartTables, part_reader};
use super::superblock::{Fallback, Superblock, parse_superblock_file};
use super::{DeltaName, PART_VERSION};
use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::{Commit, DirMeta, DirTree, FileHeader};
use crate::repo::{ContentReader, Repo, Transaction};

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
/// `superblock` is the superblock file (signed or not). `part_source(i)` opens part
/// file `i` for reading (a file, or any reader: the part is streamed, never held in
/// memory whole); it is only called for parts whose objects are not all present
/// already, and never for inline parts. Every part must match the checksum in the
/// superblock, and every object must hash to the name the part gives it, before
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
pub fn apply<R: Read>(
    txn: &Transaction<'_>,
    superblock: &[u8],
    part_source: impl FnMut(usize) -> Result<R>,
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
        File::open(&p).map_err(|e| Error::Io {
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

/// The most a part's tables, and separately its operations, may take: they are read
/// into memory (a real part's are a small fraction of its payload).
const PART_TABLES_LIMIT: u64 = 64 << 20;

fn apply_superblock<R: Read>(
    txn: &Transaction<'_>,
    sb: &Superblock,
    mut part_source: impl FnMut(usize) -> Result<R>,
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
    let store = TxnStore { txn };
    let scratch_dir = store.scratch_dir();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
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
        // Payloads hold at most the objects' content plus patch framing; anything far
        // larger is hostile.
        let limit = header
            .usize
            .saturating_mul(4)
            .saturating_add(64 << 20)
            .min(PART_DECOMPRESSED_LIMIT);
        let mut variant = tempfile::tempfile_in(&scratch_dir).at(&scratch_dir)?;
        // Inline parts travel inside the (already trusted) superblock; ostree does not
        // checksum them either.
        let len = match sb.inline_part(i) {
            Some(bytes) => unpack_part(&mut &bytes[..], None, limit, &mut variant, &label)?,
            None => {
                let mut file = part_source(i)?;
                unpack_part(
                    &mut file,
                    Some(&header.checksum),
                    limit,
                    &mut variant,
                    &label,
                )?
            }
        };
        let (tables, ops, payload) = read_part_frame(&variant, len, &label)?;
        let payload = FilePayload {
            file: &variant,
            start: payload.start,
            len: payload.end - payload.start,
            label: &label,
        };
        report.objects_written += execute_part(
            &tables,
            &ops,
            &payload,
            &header.objects,
            &store,
            &label,
            threads,
        )?;
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

/// Chunk size for copying out of payloads, read sources and part files.
const CHUNK: usize = 128 << 10;

/// Decompress a part file from `input` into `out` (at most `limit` bytes), hashing the
/// part file as it goes and checking it against `expected`. Returns the length of the
/// part variant. A part whose bytes do not match is reported as such, even when it also
/// fails to decompress.
fn unpack_part(
    input: &mut dyn Read,
    expected: Option<&Checksum>,
    limit: u64,
    out: &mut File,
    label: &str,
) -> Result<u64> {
    let bad = |reason: String| Error::InvalidObject {
        object: label.to_owned(),
        reason,
    };
    let mut hashing = HashingReader {
        inner: input,
        hasher: Sha256::new(),
    };
    let mut len = 0u64;
    let decoded: std::result::Result<(), String> = (|| {
        let mut variant = part_reader(&mut hashing, expected.is_some())?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match variant.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("xz: {e}")),
            };
            len += n as u64;
            if len > limit {
                return Err(format!(
                    "part decompresses to more than the {limit}-byte limit"
                ));
            }
            out.write_all(&buf[..n])
                .map_err(|e| format!("writing it out: {e}"))?;
        }
    })();
    // Whatever the decoder left unread (trailing bytes) is part of the file too.
    std::io::copy(&mut hashing, &mut std::io::sink()).at(label)?;
    if let Some(expected) = expected {
        let actual = Checksum(hashing.hasher.finalize().into());
        if actual != *expected {
            return Err(bad(format!(
                "checksum mismatch: the superblock says {expected}, the part hashes to {actual}"
            )));
        }
    }
    decoded.map_err(bad)?;
    Ok(len)
}

/// Passes reads through, hashing every byte.
struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Read a part variant's tables and operations from `variant` (`len` bytes); returns
/// them with the payload's range.
fn read_part_frame(
    variant: &File,
    len: u64,
    label: &str,
) -> Result<(PartTables, Vec<u8>, std::ops::Range<u64>)> {
    let bad = |reason: String| Error::InvalidObject {
        object: label.to_owned(),
        reason,
    };
    let framing_len = PartLayout::framing_len(len);
    let framing_at = len
        .checked_sub(framing_len as u64)
        .ok_or_else(|| bad("part is too short for its framing offsets".into()))?;
    let mut framing = vec![0u8; framing_len];
    variant.read_exact_at(&mut framing, framing_at).at(label)?;
    let layout = PartLayout::from_framing(len, &framing).map_err(bad)?;
    let read = |r: &std::ops::Range<u64>, what: &str| -> Result<Vec<u8>> {
        let size = r.end - r.start;
        if size > PART_TABLES_LIMIT {
            return Err(bad(format!(
                "its {what} take {size} bytes, more than the {PART_TABLES_LIMIT}-byte limit"
            )));
        }
        let mut v = vec![0u8; size as usize];
        variant.read_exact_at(&mut v, r.start).at(label)?;
        Ok(v)
    };
    let tables = read(&(layout.modes.start..layout.xattrs.end), "tables")?;
    let split = (layout.modes.end - layout.modes.start) as usize;
    let tables = PartTables::decode(&tables[..split], &tables[split..]).map_err(bad)?;
    let ops = read(&layout.ops, "operations")?;
    Ok((tables, ops, layout.payload))
}

/// Random access to a part's payload.
pub(crate) trait Payload: Sync {
    /// Its length.
    fn len(&self) -> u64;
    /// Fill `buf` with the bytes at `offset` (the caller checked the range).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl Payload for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| Error::InvalidObject {
                object: "static delta payload".into(),
                reason: format!("read of {} bytes at {offset} is outside it", buf.len()),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A payload in a decompressed part file.
struct FilePayload<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    label: &'a str,
}

impl Payload for FilePayload<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, self.start + offset)
            .at(self.label)
    }
}

/// Reads a range of a payload (checked by the caller) in order.
struct PayloadReader<'a> {
    payload: &'a dyn Payload,
    pos: u64,
    end: u64,
}

impl Read for PayloadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.payload
            .read_at(self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An existing regular-file object that `w` and `B` operations read from.
pub(crate) struct Source {
    content: Box<dyn ReadSeek>,
    size: u64,
}

pub(crate) trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

impl Source {
    pub(crate) fn new(content: Box<dyn ReadSeek>, size: u64) -> Self {
        Source { content, size }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.content.seek(SeekFrom::Start(offset))?;
        self.content.read_exact(buf)
    }
}

/// Where executed parts put objects and find read sources.
pub(crate) trait ObjectStore: Sync {
    /// Whether the object is already stored (then it is not written again).
    fn has_object(&self, name: &ObjectName) -> bool;
    /// Store a metadata object already verified against its name.
    fn store_meta(&self, name: &ObjectName, data: &[u8]) -> Result<()>;
    /// Store a content object, checking as it is copied that it hashes to `checksum`:
    /// nothing is stored otherwise, and the error names the object.
    fn store_file(
        &self,
        checksum: &Checksum,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()>;
    /// The content of an existing regular-file object, for `w` and `B`.
    fn read_source(&self, checksum: &Checksum) -> Result<Source>;
    /// Where files being assembled spill to once they outgrow memory.
    fn scratch_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
}

struct TxnStore<'t, 'r> {
    txn: &'t Transaction<'r>,
}

impl ObjectStore for TxnStore<'_, '_> {
    fn has_object(&self, name: &ObjectName) -> bool {
        self.txn.has_object(name)
    }

    fn store_meta(&self, name: &ObjectName, data: &[u8]) -> Result<()> {
        self.txn.write_meta_as(name, data)
    }

    fn store_file(
        &self,
        checksum: &Checksum,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        self.txn
            .write_content_expecting(header, size, content, checksum)
    }

    fn read_source(&self, checksum: &Checksum) -> Result<Source> {
        let name = ObjectName::new(*checksum, ObjectType::File);
        let (header, content, size) = self.txn.repo().open_file(checksum)?;
        match content {
            ContentReader::Plain(file) if !header.is_symlink() => {
                Ok(Source::new(Box::new(file), size))
            }
            // Compressed (archive) objects cannot seek: decompress to scratch space.
            ContentReader::Deflate(mut reader) if !header.is_symlink() => {
                let mut spool = tempfile::spooled_tempfile_in(OPEN_FILE_MEMORY, self.scratch_dir());
                std::io::copy(&mut reader, &mut spool).at(self.txn.repo().object_path(&name))?;
                Ok(Source::new(Box::new(spool), size))
            }
            _ => Err(Error::InvalidObject {
                object: name.to_string(),
                reason: "a static delta reads from it, but it is a symlink".into(),
            }),
        }
    }

    fn scratch_dir(&self) -> PathBuf {
        self.txn.repo().path().join("tmp")
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
    content: tempfile::SpooledTempFile,
    written: u64,
}

impl OpenFile {
    /// Refuse, before copying anything, a write of `len` more bytes than the file holds.
    fn check_room(&self, len: u64, label: &str) -> Result<()> {
        let total = self.written.saturating_add(len);
        if total > self.size {
            return Err(Error::InvalidObject {
                object: label.to_owned(),
                reason: format!(
                    "operations write {total} bytes into {}, which is {} bytes",
                    self.name, self.size
                ),
            });
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8], label: &str) -> Result<()> {
        self.check_room(data.len() as u64, label)?;
        self.content.write_all(data).at(label)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn finish(mut self, store: &dyn ObjectStore, label: &str) -> Result<()> {
        if self.written != self.size {
            return Err(Error::InvalidObject {
                object: label.to_owned(),
                reason: format!(
                    "{} is {} bytes but its operations wrote {}",
                    self.name, self.size, self.written
                ),
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
const OPEN_FILE_MEMORY: usize = 1 << 20;

/// Check that `size` bytes at `offset` lie inside the payload.
fn payload_range(payload: &dyn Payload, offset: u64, size: u64) -> Result<(), String> {
    match offset.checked_add(size) {
        Some(end) if end <= payload.len() => Ok(()),
        _ => Err(format!(
            "offset/length {offset}/{size} is outside the {}-byte payload",
            payload.len()
        )),
    }
}

/// Bytes of the payload, read into memory (for metadata and other small things).
fn payload_bytes(payload: &dyn Payload, offset: u64, size: u64) -> Result<Vec<u8>> {
    let mut v = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    payload.read_at(offset, &mut v)?;
    Ok(v)
}

/// Run one part's operations over its payload, on up to `threads` threads. Returns how
/// many objects were written.
///
/// The operations fall into runs that each make one object (a splice, or an open up to
/// its close) and share nothing but the payload, so the runs are spread over the
/// threads, unless a run reads an object that the part itself writes. Whatever the
/// threads, the error reported is the one the first failing run gives, as when the runs
/// are executed in order.
pub(crate) fn execute_part(
    tables: &PartTables,
    ops: &[u8],
    payload: &dyn Payload,
    objects: &[ObjectName],
    store: &dyn ObjectStore,
    label: &str,
    threads: usize,
) -> Result<usize> {
    let bad = |reason: String| Error::InvalidObject {
        object: label.to_owned(),
        reason,
    };
    let ops = decode_ops(ops, objects).map_err(bad)?;
    let ends_object = |op: &Op| {
        matches!(
            op,
            Op::SpliceMeta { .. } | Op::SpliceContent { .. } | Op::Close
        )
    };
    let runs: Vec<&[Op]> = ops.split_inclusive(ends_object).collect();
    let finished = runs
        .iter()
        .filter(|r| r.last().is_some_and(ends_object))
        .count();
    let threads = if threads > 1 && runs.len() > 1 && !reads_own_objects(&ops, payload, objects) {
        threads.min(runs.len())
    } else {
        1
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let written = std::sync::atomic::AtomicUsize::new(0);
    let failures: std::sync::Mutex<Vec<(usize, Error)>> = std::sync::Mutex::new(Vec::new());
    let work = || {
        use std::sync::atomic::Ordering::Relaxed;
        let mut buf = vec![0u8; CHUNK];
        // Every run below one that failed was taken before it, so it still finishes
        // and the lowest failure is the one a run in order would have met first.
        while failures.lock().map(|f| f.is_empty()).unwrap_or(false) {
            let k = next.fetch_add(1, Relaxed);
            let Some(run) = runs.get(k) else { break };
            match execute_run(tables, run, k, payload, objects, store, label, &mut buf) {
                Ok(n) => {
                    written.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    if let Ok(mut f) = failures.lock() {
                        f.push((k, e));
                    }
                }
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    let failures = failures
        .into_inner()
        .map_err(|_| bad("a thread applying it panicked".into()))?;
    if let Some((_, e)) = failures.into_iter().min_by_key(|(k, _)| *k) {
        return Err(e);
    }
    if finished != objects.len() {
        return Err(bad(format!(
            "the part lists {} objects but its operations write {finished}",
            objects.len()
        )));
    }
    Ok(written.into_inner())
}

/// Whether a read source of the part is an object the part writes itself (then its
/// runs must go in order: a later run reads what an earlier one stored).
fn reads_own_objects(ops: &[Op], payload: &dyn Payload, objects: &[ObjectName]) -> bool {
    let own: std::collections::HashSet<&Checksum> = objects
        .iter()
        .filter(|o| o.objtype == ObjectType::File)
        .map(|o| &o.checksum)
        .collect();
    ops.iter().any(|op| match op {
        Op::SetReadSource { offset } => {
            let mut c = [0u8; 32];
            // An unreadable checksum fails in its run; in order is the safe answer.
            payload_range(payload, *offset, 32).is_err()
                || payload.read_at(*offset, &mut c).is_err()
                || own.contains(&Checksum(c))
        }
        _ => false,
    })
}

/// Run the operations that make object number `index` of the part (see
/// [`execute_part`]). Returns how many objects were written (0 when it was present).
#[allow(clippy::too_many_arguments)]
fn execute_run(
    tables: &PartTables,
    ops: &[Op],
    index: usize,
    payload: &dyn Payload,
    objects: &[ObjectName],
    store: &dyn ObjectStore,
    label: &str,
    buf: &mut [u8],
) -> Result<usize> {
    let bad = |reason: String| Error::InvalidObject {
        object: label.to_owned(),
        reason,
    };
    let mut written = 0usize;
    let mut open: Option<OpenFile> = None;
    // The read source and, once an operation needed it, its content.
    let mut source: Option<(Checksum, Option<Source>)> = None;
    let current = |index: usize| -> Result<ObjectName> {
        objects.get(index).copied().ok_or_else(|| {
            bad(format!(
                "operations write more objects than the {} listed",
                objects.len()
            ))
        })
    };
    for op in ops.iter().copied() {
        match op {
            Op::SpliceMeta { size, offset } => {
                if open.is_some() {
                    return Err(bad("splice while a file is open".into()));
                }
                let name = current(index)?;
                payload_range(payload, offset, size).map_err(bad)?;
                if !store.has_object(&name) {
                    let data = payload_bytes(payload, offset, size)?;
                    verify_meta(&name, &data)?;
                    store.store_meta(&name, &data)?;
                    written += 1;
                }
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
                let mut header = tables.file_header(mode, xattr).map_err(bad)?;
                payload_range(payload, offset, size).map_err(bad)?;
                if !store.has_object(&name) {
                    let invalid = |reason: String| Error::InvalidObject {
                        object: name.to_string(),
                        reason,
                    };
                    if header.is_symlink() {
                        let target = payload_bytes(payload, offset, size)?;
                        header.symlink_target = String::from_utf8(target)
                            .ok()
                            .filter(|t| !t.contains('\0'))
                            .ok_or_else(|| {
                                invalid("symlink target is not UTF-8 or contains NUL".into())
                            })?;
                        header.validate().map_err(invalid)?;
                        store.store_file(&name.checksum, &header, 0, &mut std::io::empty())?;
                    } else {
                        header.validate().map_err(invalid)?;
                        let mut content = PayloadReader {
                            payload,
                            pos: offset,
                            end: offset + size,
                        };
                        store.store_file(&name.checksum, &header, size, &mut content)?;
                    }
                    written += 1;
                }
            }
            Op::Open { mode, xattr, size } => {
                if open.is_some() {
                    return Err(bad("open while another file is open".into()));
                }
                let name = current(index)?;
                if name.objtype != ObjectType::File {
                    return Err(bad(format!("open of {name}, which is not a file")));
                }
                let header = tables.file_header(mode, xattr).map_err(bad)?;
                header.validate().map_err(|reason| Error::InvalidObject {
                    object: name.to_string(),
                    reason,
                })?;
                if header.is_symlink() {
                    return Err(bad(format!("open of {name}, which is a symlink")));
                }
                open = Some(OpenFile {
                    name,
                    header,
                    size,
                    present: store.has_object(&name),
                    content: tempfile::spooled_tempfile_in(OPEN_FILE_MEMORY, store.scratch_dir()),
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
                    Some((checksum, src)) => {
                        let src = match src {
                            Some(s) => s,
                            None => src.insert(store.read_source(checksum)?),
                        };
                        if offset.checked_add(size).is_none_or(|end| end > src.size) {
                            return Err(bad(format!(
                                "write of {size} bytes at {offset} is past the end of read \
                                 source {checksum} ({} bytes)",
                                src.size
                            )));
                        }
                        file.check_room(size, label)?;
                        let mut pos = offset;
                        while pos < offset + size {
                            let n = (offset + size - pos).min(CHUNK as u64) as usize;
                            src.read_at(pos, &mut buf[..n])
                                .map_err(|e| bad(format!("reading read source {checksum}: {e}")))?;
                            file.append(&buf[..n], label)?;
                            pos += n as u64;
                        }
                    }
                    None => {
                        payload_range(payload, offset, size).map_err(bad)?;
                        file.check_room(size, label)?;
                        let mut pos = offset;
                        while pos < offset + size {
                            let n = (offset + size - pos).min(CHUNK as u64) as usize;
                            payload.read_at(pos, &mut buf[..n])?;
                            file.append(&buf[..n], label)?;
                            pos += n as u64;
                        }
                    }
                }
            }
            Op::SetReadSource { offset } => {
                payload_range(payload, offset, 32).map_err(bad)?;
                let bytes = payload_bytes(payload, offset, 32)?;
                let c = Checksum::from_bytes(&bytes)
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
            }
            Op::Bspatch { offset, size } => {
                payload_range(payload, offset, size).map_err(bad)?;
                let file = open
                    .as_mut()
                    .ok_or_else(|| bad("bspatch with no open file".into()))?;
                if file.present {
                    continue;
                }
                let (checksum, src) = source
                    .as_mut()
                    .ok_or_else(|| bad(format!("bspatch of {} with no read source", file.name)))?;
                let old = match src {
                    Some(s) => s,
                    None => src.insert(store.read_source(checksum)?),
                };
                let before = file.written;
                let mut patch = PayloadReader {
                    payload,
                    pos: offset,
                    end: offset + size,
                };
                let name = file.name;
                let checksum = *checksum;
                bspatch(old, &mut patch, file, label, |e| {
                    bad(format!("bspatch of {name} from {checksum} failed: {e}"))
                })?;
                if file.written - before != file.size {
                    return Err(bad(format!(
                        "bspatch of {} produced {} bytes, expected {}",
                        file.name,
                        file.written - before,
                        file.size
                    )));
                }
            }
        }
    }
    if let Some(file) = open {
        return Err(bad(format!("operations end with {} still open", file.name)));
    }
    Ok(written)
}

/// Apply a bsdiff patch (the `bsdiff` crate's format: control triples of mix length,
/// copy length and sign-magnitude seek, each followed by its mix and copy bytes) from
/// `patch` to `old`, appending the output to `out` chunk by chunk, so neither file is
/// ever in memory whole.
fn bspatch(
    old: &mut Source,
    patch: &mut dyn Read,
    out: &mut OpenFile,
    label: &str,
    fail: impl Fn(String) -> Error,
) -> Result<()> {
    let mut patch = BufReader::with_capacity(CHUNK, patch);
    let mut buf = vec![0u8; CHUNK];
    let mut old_buf = vec![0u8; CHUNK];
    let mut old_pos = 0u64;
    let truncated = |e: std::io::Error| fail(format!("reading the patch: {e}"));
    loop {
        let mut control = [0u8; 24];
        let mut got = 0;
        while got < 24 {
            match patch.read(&mut control[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(truncated(e)),
            }
        }
        match got {
            0 => return Ok(()),
            24 => {}
            _ => return Err(fail("the patch ends inside a control block".into())),
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&control[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let (mix, copy, seek) = (word(0), word(1), word(2));
        let seek = if seek & (1 << 63) == 0 {
            seek as i64
        } else {
            -((seek & !(1 << 63)) as i64)
        };
        if old_pos.checked_add(mix).is_none_or(|end| end > old.size) {
            return Err(fail(format!(
                "it reads {mix} bytes at {old_pos} of a {}-byte file",
                old.size
            )));
        }
        out.check_room(mix.saturating_add(copy), label)?;
        let mut left = mix;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            patch.read_exact(&mut buf[..n]).map_err(truncated)?;
            old.read_at(old_pos, &mut old_buf[..n])
                .map_err(|e| fail(format!("reading the old file: {e}")))?;
            for (b, o) in buf[..n].iter_mut().zip(&old_buf[..n]) {
                *b = b.wrapping_add(*o);
            }
            out.append(&buf[..n], label)?;
            old_pos += n as u64;
            left -= n as u64;
        }
        let mut left = copy;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            patch.read_exact(&mut buf[..n]).map_err(truncated)?;
            out.append(&buf[..n], label)?;
            left -= n as u64;
        }
        old_pos = i64::try_from(old_pos)
            .ok()
            .and_then(|p| p.checked_add(seek))
            .and_then(|p| u64::try_from(p).ok())
            .ok_or_else(|| fail(format!("it seeks by {seek} from {old_pos}")))?;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::delta::DeltaPart;
    use crate::delta::ops::encode_ops;
    use crate::object::{S_IFLNK, S_IFREG};
    use crate::repo::ContentHasher;

    /// Objects in memory, for running parts without a repository.
    #[derive(Default)]
    pub(crate) struct MemStore {
        pub(crate) meta: Mutex<HashMap<ObjectName, Vec<u8>>>,
        pub(crate) files: Mutex<HashMap<Checksum, (FileHeader, Vec<u8>)>>,
    }

    impl MemStore {
        fn file(&self, c: &Checksum) -> Option<(FileHeader, Vec<u8>)> {
            self.files.lock().unwrap().get(c).cloned()
        }
    }

    impl ObjectStore for MemStore {
        fn has_object(&self, name: &ObjectName) -> bool {
            match name.objtype {
                ObjectType::File => self.files.lock().unwrap().contains_key(&name.checksum),
                _ => self.meta.lock().unwrap().contains_key(name),
            }
        }
        fn store_meta(&self, name: &ObjectName, data: &[u8]) -> Result<()> {
            self.meta.lock().unwrap().insert(*name, data.to_vec());
            Ok(())
        }
        fn store_file(
            &self,
            checksum: &Checksum,
            header: &FileHeader,
            size: u64,
            content: &mut dyn Read,
        ) -> Result<()> {
            let mut v = Vec::new();
            content.read_to_end(&mut v).unwrap();
            assert_eq!(v.len() as u64, size);
            let actual = file_checksum(header, &v);
            if actual != *checksum {
                return Err(Error::Corrupted {
                    object: ObjectName::new(*checksum, ObjectType::File),
                    actual: actual.to_hex(),
                });
            }
            self.files
                .lock()
                .unwrap()
                .insert(*checksum, (header.clone(), v));
            Ok(())
        }
        fn read_source(&self, checksum: &Checksum) -> Result<Source> {
            let content =
                self.file(checksum)
                    .map(|f| f.1)
                    .ok_or(Error::NotFound(ObjectName::new(
                        *checksum,
                        ObjectType::File,
                    )))?;
            let size = content.len() as u64;
            Ok(Source::new(Box::new(std::io::Cursor::new(content)), size))
        }
    }

    /// Run a part held in memory.
    fn execute_part(
        part: &DeltaPart,
        objects: &[ObjectName],
        store: &dyn ObjectStore,
        label: &str,
    ) -> Result<usize> {
        execute_part_on(part, objects, store, label, 1)
    }

    fn execute_part_on(
        part: &DeltaPart,
        objects: &[ObjectName],
        store: &dyn ObjectStore,
        label: &str,
        threads: usize,
    ) -> Result<usize> {
        let tables = PartTables {
            modes: part.modes.clone(),
            xattrs: part.xattrs.clone(),
        };
        super::execute_part(
            &tables,
            &part.ops,
            &part.payload,
            objects,
            store,
            label,
            threads,
        )
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
        let s = MemStore::default();
        s.files
            .lock()
            .unwrap()
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
        let store = store_with(&old);
        let n = execute_part(&part, &objects, &store, "part").unwrap();
        assert_eq!(n, 4);
        assert_eq!(store.file(&objects[2].checksum).unwrap().1, new);
        assert_eq!(
            store.file(&objects[1].checksum).unwrap().0.symlink_target,
            "target"
        );
        assert!(store.meta.lock().unwrap().contains_key(&objects[0]));
        // Running it again writes nothing: everything is present.
        assert_eq!(execute_part(&part, &objects, &store, "part").unwrap(), 0);
    }

    #[test]
    fn a_mismatching_object_is_refused_and_named() {
        let old = b"old content here".repeat(4);
        let new = b"new content here".repeat(4);
        let (part, mut objects) = sample(&old, &new);
        let wrong = Checksum([0xee; 32]);
        objects[2].checksum = wrong;
        let store = store_with(&old);
        let err = execute_part(&part, &objects, &store, "part").unwrap_err();
        assert!(err.to_string().contains(&wrong.to_hex()), "{err}");
        assert!(store.file(&wrong).is_none());
    }

    #[test]
    fn bad_parts_are_errors_not_panics() {
        let old = b"0123456789abcdef".repeat(8);
        let new = b"0123456789ABCDEF".repeat(8);
        let (part, objects) = sample(&old, &new);
        // Missing read source object.
        let empty = MemStore::default();
        assert!(execute_part(&part, &objects, &empty, "part").is_err());
        // Truncated operations and payload.
        for n in 0..part.ops.len() {
            let mut p = part.clone();
            p.ops.truncate(n);
            assert!(execute_part(&p, &objects, &store_with(&old), "part").is_err());
        }
        let mut p = part.clone();
        p.payload.truncate(p.payload.len() / 2);
        assert!(execute_part(&p, &objects, &store_with(&old), "part").is_err());
        // Every single-byte corruption of ops or payload fails cleanly or still verifies.
        for i in 0..part.ops.len() {
            let mut p = part.clone();
            p.ops[i] ^= 0x41;
            let _ = execute_part(&p, &objects, &store_with(&old), "part");
        }
        // A payload flip either fails, or (in bytes a patch never uses) changes nothing:
        // whatever is stored still hashes to its name.
        for i in 0..part.payload.len() {
            let mut p = part.clone();
            p.payload[i] ^= 0x41;
            let store = store_with(&old);
            if execute_part(&p, &objects, &store, "part").is_ok() {
                for (c, (h, content)) in store.files.lock().unwrap().iter() {
                    assert_eq!(file_checksum(h, content), *c, "flip at {i}");
                }
            }
        }
    }

    /// The sample's objects, then `n` plain files spliced from the payload.
    fn many_files(n: usize, old: &[u8], new: &[u8]) -> (DeltaPart, Vec<ObjectName>) {
        let (mut part, mut objects) = sample(old, new);
        let mut ops = crate::delta::ops::decode_ops(&part.ops, &objects).unwrap();
        for i in 0..n {
            let content = format!("file number {i}\n").repeat(i + 1).into_bytes();
            ops.push(Op::SpliceContent {
                mode: 0,
                xattr: 0,
                size: content.len() as u64,
                offset: part.payload.len() as u64,
            });
            part.payload.extend_from_slice(&content);
            objects.push(ObjectName::new(
                file_checksum(&reg(0o644), &content),
                ObjectType::File,
            ));
        }
        part.ops = encode_ops(&ops);
        (part, objects)
    }

    #[test]
    fn threads_write_what_one_thread_writes() {
        let old = b"0123456789abcdef".repeat(8);
        let new = b"0123456789ABCDEF".repeat(8);
        let (part, objects) = many_files(40, &old, &new);
        let one = store_with(&old);
        assert_eq!(
            execute_part_on(&part, &objects, &one, "part", 1).unwrap(),
            44
        );
        let four = store_with(&old);
        assert_eq!(
            execute_part_on(&part, &objects, &four, "part", 4).unwrap(),
            44
        );
        assert_eq!(*one.files.lock().unwrap(), *four.files.lock().unwrap());
        assert_eq!(*one.meta.lock().unwrap(), *four.meta.lock().unwrap());
    }

    #[test]
    fn with_threads_the_first_failing_object_is_the_one_named() {
        let old = b"0123456789abcdef".repeat(8);
        let new = b"0123456789ABCDEF".repeat(8);
        let (part, mut objects) = many_files(40, &old, &new);
        let (first, later) = (Checksum([0xe1; 32]), Checksum([0xe2; 32]));
        objects[10].checksum = first;
        objects[35].checksum = later;
        for _ in 0..20 {
            let err = execute_part_on(&part, &objects, &store_with(&old), "part", 4)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&first.to_hex()), "{err}");
        }
    }

    #[test]
    fn a_part_reading_an_object_it_writes_runs_in_order() {
        let mut part = DeltaPart {
            modes: vec![(0, 0, S_IFREG | 0o644)],
            xattrs: vec![vec![]],
            ..Default::default()
        };
        let mut ops = Vec::new();
        let mut objects = Vec::new();
        // A big source, so that in parallel the runs reading it would start before it
        // is stored.
        let source = b"source bytes ".repeat(100_000);
        ops.push(Op::SpliceContent {
            mode: 0,
            xattr: 0,
            size: source.len() as u64,
            offset: 0,
        });
        part.payload.extend_from_slice(&source);
        objects.push(ObjectName::new(
            file_checksum(&reg(0o644), &source),
            ObjectType::File,
        ));
        for i in 0..30u64 {
            ops.push(Op::SetReadSource {
                offset: part.payload.len() as u64,
            });
            part.payload
                .extend_from_slice(objects[0].checksum.as_bytes());
            ops.push(Op::Open {
                mode: 0,
                xattr: 0,
                size: 6 + i,
            });
            ops.push(Op::Write {
                size: 6 + i,
                offset: 0,
            });
            ops.push(Op::Close);
            let idx = usize::try_from(6 + i).unwrap();
            objects.push(ObjectName::new(
                file_checksum(&reg(0o644), &source[..idx]),
                ObjectType::File,
            ));
        }
        part.ops = encode_ops(&ops);
        for _ in 0..10 {
            let store = MemStore::default();
            assert_eq!(
                execute_part_on(&part, &objects, &store, "part", 4).unwrap(),
                31
            );
        }
    }
}
