//! Writing a delta: choose the objects, pack them into parts (bsdiff for files that
//! replace a similar old file), compress the parts while the next one is built, and put
//! the whole directory in place with one rename.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rayon::prelude::*;

use super::gv::encode_xattr_set;
use super::index::reindex;
use super::ops::Op;
use super::part::{Compression, DeltaPart, XzSettings, compress_part, compress_part_xz};
use super::superblock::{Endianness, Fallback, PartHeader, Superblock};
use super::{DeltaName, PART_VERSION};
use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::{Commit, FileHeader};
use crate::repo::Repo;
use crate::sys::{self, LockKind, RepoLock};
use crate::variant::{Metadata, Value};

/// How to build a delta. The defaults are ostree's.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Use bsdiff for files that replace a similar old file (same basename, size within
    /// 30%).
    pub bsdiff: bool,
    /// New files larger than this many bytes become fallbacks, fetched individually
    /// (0: never). ostree's default is 4 MB (4,000,000 bytes).
    pub min_fallback_size: u64,
    /// Skip bsdiff when the old and new file together exceed this many bytes (128 MB).
    pub max_bsdiff_size: u64,
    /// Start a new part once a part's payload would exceed this many bytes (32 MB).
    pub max_chunk_size: u64,
    /// User metadata, placed first in the superblock metadata.
    pub metadata: Metadata,
    /// Generation time; now when `None`.
    pub timestamp: Option<u64>,
    /// Part compression (ostree always writes xz).
    pub compression: Compression,
    /// The xz dictionary size of the parts: what a client must hold to decompress one
    /// (no more than the part's size is touched). 12 MiB by default, against ostree's
    /// 32 MiB, so applying a delta fits in a small machine's memory; the x86 filter
    /// (used for parts whose executables are mostly x86) more than makes up for the
    /// smaller window in delta size.
    pub xz_dict_size: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            bsdiff: true,
            min_fallback_size: 4_000_000,
            max_bsdiff_size: 128_000_000,
            max_chunk_size: 32_000_000,
            metadata: Metadata::new(),
            timestamp: None,
            compression: Compression::Xz,
            xz_dict_size: XzSettings::default().dict_size,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct GenerateReport {
    /// The delta.
    pub name: DeltaName,
    /// SHA-256 of the superblock file, as the delta index records it.
    pub superblock_checksum: Checksum,
    /// Length of the superblock file.
    pub superblock_size: u64,
    /// The part headers.
    pub parts: Vec<PartHeader>,
    /// Objects left to be fetched individually.
    pub fallbacks: Vec<Fallback>,
    /// Files written as bsdiff patches against an old file.
    pub bsdiff_objects: usize,
    /// Objects in the parts.
    pub part_objects: usize,
}

impl GenerateReport {
    /// Bytes a client downloads: superblock and parts (fallbacks not included).
    pub fn total_size(&self) -> u64 {
        self.superblock_size + self.parts.iter().map(|p| p.size).sum::<u64>()
    }
}

/// Generate the delta from `from` (`None`: from scratch) to `to` into the repository's
/// `deltas/`, replacing an existing one, then update the delta index of `to` (which sets
/// `core.indexed-deltas=true` in the config).
///
/// Memory stays bounded by about two parts (`max_chunk_size` each, or one object when
/// an object is larger: one being filled, one being compressed), 16 MB of file content
/// read ahead, and the bsdiff runs in flight (inputs of at most `max_bsdiff_size`
/// together, plus their suffix arrays).
pub fn generate(
    repo: &mut Repo,
    from: Option<Checksum>,
    to: Checksum,
    opts: &GenerateOptions,
) -> Result<GenerateReport> {
    let report = {
        // Shared, like a transaction: no prune may delete objects while we read them.
        let _lock = RepoLock::acquire(&repo.path().join(".lock"), LockKind::Shared)?;
        write_delta(repo, from, to, opts)?
    };
    reindex(repo, Some(to))?;
    Ok(report)
}

/// The objects of a commit's tree, in walk order, with the names files appear under.
struct Reachable {
    meta: Vec<ObjectName>,
    meta_set: HashSet<ObjectName>,
    files: Vec<Checksum>,
    names: HashMap<Checksum, Vec<String>>,
}

fn walk(repo: &Repo, commit: &Commit) -> Result<Reachable> {
    let mut r = Reachable {
        meta: Vec::new(),
        meta_set: HashSet::new(),
        files: Vec::new(),
        names: HashMap::new(),
    };
    let mut stack = vec![(commit.root_tree, commit.root_meta)];
    while let Some((t, m)) = stack.pop() {
        let meta = ObjectName::new(m, ObjectType::DirMeta);
        if r.meta_set.insert(meta) {
            r.meta.push(meta);
        }
        let tree_name = ObjectName::new(t, ObjectType::DirTree);
        if !r.meta_set.insert(tree_name) {
            continue;
        }
        r.meta.push(tree_name);
        let tree = repo.load_dirtree(&t)?;
        for (name, c) in &tree.files {
            let names = r.names.entry(*c).or_insert_with(|| {
                r.files.push(*c);
                Vec::new()
            });
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        // Reverse, so the walk visits subdirectories in name order.
        stack.extend(tree.dirs.iter().rev().map(|(_, t, m)| (*t, *m)));
    }
    Ok(r)
}

/// What the delta needs to know about a content object.
#[derive(Clone)]
struct FileInfo {
    header: FileHeader,
    size: u64,
}

fn file_info(repo: &Repo, c: &Checksum) -> Result<FileInfo> {
    let (header, _, size) = repo.open_file(c)?;
    Ok(FileInfo { header, size })
}

/// Names whose content is already compressed beyond what a binary diff can exploit
/// (ostree skips the same two; `.gz` may be `--rsyncable`).
fn is_compressed_name(name: &str) -> bool {
    name.ends_with(".xz") || name.ends_with(".bz2")
}

/// The part of a name before its first dot, for ostree's second, fuzzy matching pass
/// (`libfoo.so.1.2` and `libfoo.so.1.3`).
fn stem(name: &str) -> Option<&str> {
    match name.find('.') {
        Some(0) | None => None,
        Some(i) => Some(&name[..i]),
    }
}

/// For each new regular file, an old file it probably replaces: same basename (else
/// the same stem), size within 30%, world-readable (so any client can read it), and not
/// empty or already compressed. The closest size wins.
fn similar_files(
    repo: &Repo,
    old: &Reachable,
    new_regular: &[(Checksum, FileInfo)],
    new_names: &HashMap<Checksum, Vec<String>>,
) -> Result<HashMap<Checksum, (Checksum, u64)>> {
    let mut by_name: HashMap<&str, Vec<Checksum>> = HashMap::new();
    let mut by_stem: HashMap<&str, Vec<Checksum>> = HashMap::new();
    for c in &old.files {
        for n in &old.names[c] {
            by_name.entry(n.as_str()).or_default().push(*c);
            if let Some(s) = stem(n) {
                by_stem.entry(s).or_default().push(*c);
            }
        }
    }
    // Candidates worth a look, then their headers in parallel.
    let mut wanted: HashSet<Checksum> = HashSet::new();
    for (c, _) in new_regular {
        for n in &new_names[c] {
            wanted.extend(by_name.get(n.as_str()).into_iter().flatten());
            if let Some(s) = stem(n) {
                wanted.extend(by_stem.get(s).into_iter().flatten());
            }
        }
    }
    let wanted: Vec<Checksum> = wanted.into_iter().collect();
    let infos: HashMap<Checksum, FileInfo> = wanted
        .par_iter()
        .map(|c| Ok((*c, file_info(repo, c)?)))
        .collect::<Result<_>>()?;
    let usable = |c: &Checksum, size: u64| -> Option<u64> {
        let info = infos.get(c)?;
        let ok = !info.header.is_symlink()
            && info.size > 0
            && info.header.mode & 0o004 != 0
            && !old.names[c].iter().any(|n| is_compressed_name(n))
            && info.size * 10 >= size * 7
            && info.size * 10 <= size * 13;
        ok.then_some(info.size)
    };
    let mut out = HashMap::new();
    for (c, info) in new_regular {
        let names = &new_names[c];
        if info.size == 0 || names.iter().any(|n| is_compressed_name(n)) {
            continue;
        }
        let pick = |candidates: Vec<&Checksum>| -> Option<(Checksum, u64)> {
            candidates
                .into_iter()
                .filter_map(|o| usable(o, info.size).map(|s| (*o, s)))
                .min_by_key(|(o, s)| (s.abs_diff(info.size), *o))
        };
        let exact: Vec<&Checksum> = names
            .iter()
            .flat_map(|n| by_name.get(n.as_str()).into_iter().flatten())
            .collect();
        let found = pick(exact).or_else(|| {
            let fuzzy: Vec<&Checksum> = names
                .iter()
                .filter_map(|n| stem(n))
                .flat_map(|s| by_stem.get(s).into_iter().flatten())
                .collect();
            pick(fuzzy)
        });
        if let Some(f) = found {
            out.insert(*c, f);
        }
    }
    Ok(out)
}

/// A part being filled.
struct PartBuilder {
    part: DeltaPart,
    objects: Vec<ObjectName>,
    usize: u64,
    xattr_index: HashMap<Vec<u8>, usize>,
    /// Bytes of x86 executables, and of other executables, among the part's files.
    elf_x86: u64,
    elf_other: u64,
}

impl PartBuilder {
    fn new() -> Self {
        PartBuilder {
            part: DeltaPart::default(),
            objects: Vec::new(),
            usize: 0,
            xattr_index: HashMap::new(),
            elf_x86: 0,
            elf_other: 0,
        }
    }

    fn op(&mut self, op: Op) {
        op.encode(&mut self.part.ops);
    }

    fn tables(&mut self, header: &FileHeader) -> (u64, u64) {
        let mode = self.part.mode_index((header.uid, header.gid, header.mode));
        let mut set: Vec<(Vec<u8>, Vec<u8>)> = header
            .xattrs
            .iter()
            .map(|(n, v)| {
                let mut n = n.clone();
                n.push(0);
                (n, v.clone())
            })
            .collect();
        set.sort();
        let key = encode_xattr_set(&set);
        let next = self.part.xattrs.len();
        let xattr = *self.xattr_index.entry(key).or_insert(next);
        if xattr == next {
            self.part.xattrs.push(set);
        }
        (mode as u64, xattr as u64)
    }

    fn add_meta(&mut self, name: ObjectName, data: &[u8]) {
        let offset = self.part.payload.len() as u64;
        self.part.payload.extend_from_slice(data);
        self.op(Op::SpliceMeta {
            size: data.len() as u64,
            offset,
        });
        self.objects.push(name);
        self.usize += data.len() as u64;
    }

    fn add_file(&mut self, c: Checksum, header: &FileHeader, content: &[u8]) {
        let (mode, xattr) = self.tables(header);
        let data = if header.is_symlink() {
            header.symlink_target.as_bytes()
        } else {
            content
        };
        match elf_machine(data) {
            Some(EM_386 | EM_X86_64) => self.elf_x86 += data.len() as u64,
            Some(_) => self.elf_other += data.len() as u64,
            None => {}
        }
        let offset = self.part.payload.len() as u64;
        self.part.payload.extend_from_slice(data);
        self.op(Op::SpliceContent {
            mode,
            xattr,
            size: data.len() as u64,
            offset,
        });
        self.objects.push(ObjectName::new(c, ObjectType::File));
        self.usize += data.len() as u64;
    }

    /// ostree's sequence for a patched file: `r`, `o`, `B`, `c`, `R`.
    fn add_bsdiff(&mut self, p: &Patched) {
        let (mode, xattr) = self.tables(&p.header);
        let source = self.part.payload.len() as u64;
        self.part.payload.extend_from_slice(p.from.as_bytes());
        self.op(Op::SetReadSource { offset: source });
        self.op(Op::Open {
            mode,
            xattr,
            size: p.size,
        });
        let offset = self.part.payload.len() as u64;
        self.part.payload.extend_from_slice(&p.patch);
        self.op(Op::Bspatch {
            offset,
            size: p.patch.len() as u64,
        });
        self.op(Op::Close);
        self.op(Op::UnsetReadSource);
        self.objects.push(ObjectName::new(p.to, ObjectType::File));
        self.usize += p.size;
    }
}

const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// The machine an ELF file is for (`e_machine`), if it is one.
fn elf_machine(data: &[u8]) -> Option<u16> {
    if data.len() < 20 || &data[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [data[18], data[19]];
    match data[5] {
        1 => Some(u16::from_le_bytes(bytes)),
        2 => Some(u16::from_be_bytes(bytes)),
        _ => None,
    }
}

/// A new file as a patch against an old one.
struct Patched {
    to: Checksum,
    from: Checksum,
    header: FileHeader,
    size: u64,
    patch: Vec<u8>,
}

fn read_content(repo: &Repo, c: &Checksum, size: u64) -> Result<Vec<u8>> {
    let name = ObjectName::new(*c, ObjectType::File);
    let (_, mut reader, _) = repo.open_file(c)?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    reader.read_to_end(&mut out).at(repo.object_path(&name))?;
    if out.len() as u64 != size {
        return Err(Error::InvalidObject {
            object: name.to_string(),
            reason: format!("content is {} bytes, expected {size}", out.len()),
        });
    }
    Ok(out)
}

/// Sends full parts to the compressing thread, starting a new part when the next object
/// would overflow the current one.
struct Packer<'a> {
    current: PartBuilder,
    next_index: usize,
    max_chunk: u64,
    tx: &'a SyncSender<(usize, PartBuilder)>,
}

impl Packer<'_> {
    fn make_room(&mut self, len: u64) -> Result<()> {
        if !self.current.objects.is_empty()
            && self.current.part.payload.len() as u64 + len > self.max_chunk
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let full = std::mem::replace(&mut self.current, PartBuilder::new());
        self.tx
            .send((self.next_index, full))
            .map_err(|_| Error::Unsupported("static delta part writer stopped".into()))?;
        self.next_index += 1;
        Ok(())
    }
}

/// Compress and write parts as they arrive; returns their headers in order.
fn part_writer(
    rx: Receiver<(usize, PartBuilder)>,
    dir: &Path,
    compression: Compression,
    xz_dict_size: u32,
) -> Result<Vec<PartHeader>> {
    let mut headers = Vec::new();
    for (index, builder) in rx {
        let PartBuilder {
            part,
            objects,
            usize,
            elf_x86,
            elf_other,
            ..
        } = builder;
        let variant = part.to_bytes();
        drop(part);
        let path = dir.join(index.to_string());
        let file = match compression {
            Compression::Xz => compress_part_xz(
                &variant,
                XzSettings {
                    dict_size: xz_dict_size,
                    x86: elf_x86 > elf_other,
                },
            ),
            Compression::None => compress_part(&variant, compression),
        }
        .at(&path)?;
        drop(variant);
        write_new_file(&path, &file)?;
        headers.push(PartHeader {
            version: PART_VERSION,
            checksum: Checksum::of(&file),
            size: file.len() as u64,
            usize,
            objects,
        });
    }
    Ok(headers)
}

fn write_new_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).at(path)?;
    f.write_all(data).at(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .at(path)?;
    f.sync_all().at(path)
}

/// Bytes of file content read ahead in parallel while packing plain files.
const READ_AHEAD: u64 = 16 << 20;

fn write_delta(
    repo: &Repo,
    from: Option<Checksum>,
    to: Checksum,
    opts: &GenerateOptions,
) -> Result<GenerateReport> {
    let name = DeltaName::new(from, to);
    let to_commit = repo.load_commit(&to)?;
    let new = walk(repo, &to_commit)?;
    let old = match &from {
        Some(f) => Some(walk(repo, &repo.load_commit(f)?)?),
        None => None,
    };
    let is_old_meta = |n: &ObjectName| old.as_ref().is_some_and(|o| o.meta_set.contains(n));
    let is_old_file = |c: &Checksum| old.as_ref().is_some_and(|o| o.names.contains_key(c));

    // Metadata first: dirmetas (few, tiny) then dirtrees, each in walk order.
    let mut meta: Vec<ObjectName> = new
        .meta
        .iter()
        .filter(|n| !is_old_meta(n))
        .copied()
        .collect();
    meta.sort_by_key(|n| n.objtype != ObjectType::DirMeta);

    let new_files: Vec<Checksum> = new
        .files
        .iter()
        .filter(|c| !is_old_file(c))
        .copied()
        .collect();
    let infos: Vec<(Checksum, FileInfo)> = new_files
        .par_iter()
        .map(|c| Ok((*c, file_info(repo, c)?)))
        .collect::<Result<_>>()?;
    let (symlinks, regular): (Vec<_>, Vec<_>) =
        infos.into_iter().partition(|(_, i)| i.header.is_symlink());

    let similar = match (&old, opts.bsdiff) {
        (Some(old), true) => similar_files(repo, old, &regular, &new.names)?,
        _ => HashMap::new(),
    };
    let mut to_patch = Vec::new();
    let mut plain = Vec::new();
    let mut fallbacks = Vec::new();
    for (c, info) in regular {
        match similar.get(&c) {
            Some((from_c, from_size)) if info.size + from_size <= opts.max_bsdiff_size => {
                to_patch.push((c, *from_c, *from_size, info));
            }
            _ if opts.min_fallback_size > 0 && info.size > opts.min_fallback_size => {
                let object = ObjectName::new(c, ObjectType::File);
                let stored = fs::symlink_metadata(repo.object_path(&object))
                    .map(|m| m.len())
                    .at(repo.object_path(&object))?;
                fallbacks.push(Fallback {
                    object,
                    size: stored,
                    usize: info.size,
                });
            }
            _ => plain.push((c, info)),
        }
    }
    // Like files next to each other compress better: group by extension, then name.
    let sort_key = |c: &Checksum| {
        let n = new.names[c].first().map(String::as_str).unwrap_or("");
        let ext = n.rfind('.').map(|i| &n[i..]).unwrap_or("");
        (ext.to_owned(), n.to_owned())
    };
    plain.sort_by_cached_key(|(c, _)| sort_key(c));
    to_patch.sort_by_cached_key(|(c, ..)| sort_key(c));

    let tmp_root = repo.path().join("tmp");
    fs::create_dir_all(&tmp_root).at(&tmp_root)?;
    let staging = tempfile::Builder::new()
        .prefix("delta-")
        .tempdir_in(&tmp_root)
        .at(&tmp_root)?;
    let dir = staging.path().to_path_buf();

    // A rendezvous channel: one part being compressed while the next is filled.
    let (tx, rx) = sync_channel::<(usize, PartBuilder)>(0);
    let (compression, xz_dict_size) = (opts.compression, opts.xz_dict_size);
    let (headers, packed) = std::thread::scope(|s| {
        let writer = s.spawn(|| part_writer(rx, &dir, compression, xz_dict_size));
        let packed = pack(repo, opts, &tx, &meta, &to_patch, &plain, &symlinks);
        drop(tx);
        let headers = writer.join().unwrap_or_else(|_| {
            Err(Error::Unsupported(
                "static delta part writer panicked".into(),
            ))
        });
        (headers, packed)
    });
    let headers = headers?;
    let bsdiff_objects = packed?;

    let mut metadata = Superblock::metadata_for(&opts.metadata, Endianness::Little);
    if let Some(detached) = repo.read_commitmeta(&to)? {
        metadata.insert(&name.commitmeta_key(), Value::dict(&detached));
    }
    let timestamp = opts.timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let part_objects = headers.iter().map(|h| h.objects.len()).sum();
    let sb = Superblock {
        metadata,
        timestamp,
        from,
        to,
        commit: to_commit,
        recurse: Vec::new(),
        parts: headers,
        fallbacks,
        endianness: Endianness::Little,
        endianness_guessed: false,
    };
    let sb_bytes = sb.to_bytes();
    write_new_file(&dir.join("superblock"), &sb_bytes)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).at(&dir)?;
    sys::fsync_dir(&dir)?;
    install(repo, &name, staging.keep())?;
    Ok(GenerateReport {
        name,
        superblock_checksum: Checksum::of(&sb_bytes),
        superblock_size: sb_bytes.len() as u64,
        parts: sb.parts,
        fallbacks: sb.fallbacks,
        bsdiff_objects,
        part_objects,
    })
}

/// Fill the parts: metadata, patched files, plain files, symlinks. Returns the number of
/// patched files.
fn pack(
    repo: &Repo,
    opts: &GenerateOptions,
    tx: &SyncSender<(usize, PartBuilder)>,
    meta: &[ObjectName],
    to_patch: &[(Checksum, Checksum, u64, FileInfo)],
    plain: &[(Checksum, FileInfo)],
    symlinks: &[(Checksum, FileInfo)],
) -> Result<usize> {
    let mut packer = Packer {
        current: PartBuilder::new(),
        next_index: 0,
        max_chunk: opts.max_chunk_size,
        tx,
    };
    for name in meta {
        let data = repo.read_meta_bytes(name)?;
        packer.make_room(data.len() as u64)?;
        packer.current.add_meta(*name, &data);
    }
    // bsdiff in parallel, in batches whose inputs fit the bsdiff size budget together.
    for batch in batches(to_patch, opts.max_bsdiff_size, |(_, _, from_size, info)| {
        from_size + info.size
    }) {
        let patched: Vec<Patched> = batch
            .par_iter()
            .map(|(to, from, from_size, info)| {
                let old = read_content(repo, from, *from_size)?;
                let new = read_content(repo, to, info.size)?;
                let mut patch = Vec::new();
                bsdiff::diff(&old, &new, &mut patch)
                    .at(repo.object_path(&ObjectName::new(*to, ObjectType::File)))?;
                Ok(Patched {
                    to: *to,
                    from: *from,
                    header: info.header.clone(),
                    size: info.size,
                    patch,
                })
            })
            .collect::<Result<_>>()?;
        for p in &patched {
            packer.make_room(p.patch.len() as u64 + 32)?;
            packer.current.add_bsdiff(p);
        }
    }
    for batch in batches(plain, READ_AHEAD, |(_, info)| info.size) {
        let contents: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|(c, info)| read_content(repo, c, info.size))
            .collect::<Result<_>>()?;
        for ((c, info), content) in batch.iter().zip(contents) {
            packer.make_room(info.size)?;
            packer.current.add_file(*c, &info.header, &content);
        }
    }
    for (c, info) in symlinks {
        packer.make_room(info.header.symlink_target.len() as u64)?;
        packer.current.add_file(*c, &info.header, &[]);
    }
    // Always at least one part, as ostree writes (even an empty one).
    if !packer.current.objects.is_empty() || packer.next_index == 0 {
        packer.flush()?;
    }
    Ok(to_patch.len())
}

/// Consecutive runs of items whose weights add up to at most `budget` (an item heavier
/// than the budget gets a run of its own).
fn batches<T>(items: &[T], budget: u64, weight: impl Fn(&T) -> u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut total = 0u64;
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if i > start && total + w > budget {
            out.push(&items[start..i]);
            start = i;
            total = 0;
        }
        total += w;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Move a finished delta directory into place, replacing an existing delta atomically
/// (by exchanging the two directories) where the filesystem allows it.
fn install(repo: &Repo, name: &DeltaName, staged: PathBuf) -> Result<()> {
    let dest = repo.path().join(name.relpath());
    let parent = dest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo.path().to_path_buf());
    let result = replace_dir(&staged, &dest, &parent);
    if result.is_err() {
        let _ = fs::remove_dir_all(&staged);
    }
    result?;
    sys::fsync_dir(&parent)
}

fn replace_dir(staged: &Path, dest: &Path, parent: &Path) -> Result<()> {
    fs::create_dir_all(parent).at(parent)?;
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        staged,
        rustix::fs::CWD,
        dest,
        rustix::fs::RenameFlags::EXCHANGE,
    ) {
        // `staged` now holds the old delta.
        Ok(()) => return fs::remove_dir_all(staged).at(staged),
        Err(rustix::io::Errno::NOENT) => {}
        // No RENAME_EXCHANGE here: move the old delta aside first.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP) => {
            if dest.exists() {
                let old = staged.with_extension("old");
                fs::rename(dest, &old).at(dest)?;
                fs::rename(staged, dest).at(dest)?;
                return fs::remove_dir_all(&old).at(&old);
            }
        }
        Err(e) => return Err(std::io::Error::from(e)).at(dest),
    }
    fs::rename(staged, dest).at(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_budget() {
        let items = [5u64, 5, 5, 20, 1, 1];
        let b = batches(&items, 10, |x| *x);
        assert_eq!(
            b,
            vec![&items[0..2], &items[2..3], &items[3..4], &items[4..6]]
        );
        assert!(batches(&[] as &[u64], 10, |x| *x).is_empty());
    }

    #[test]
    fn stems_and_compressed_names() {
        assert_eq!(stem("libfoo.so.1.2"), Some("libfoo"));
        assert_eq!(stem(".hidden"), None);
        assert_eq!(stem("plain"), None);
        assert!(is_compressed_name("a.tar.xz"));
        assert!(!is_compressed_name("a.gz"));
    }
}
