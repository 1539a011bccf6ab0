//! Reading a `.deb` as a stream: the `ar` container, the control archive (kept in memory:
//! it is small), then the data archive one entry at a time, in archive order, with each
//! file's content streamed.
//!
//! ```no_run
//! use std::io::Read;
//! use treeline_pkg::deb::{DebPackage, EntryKind};
//!
//! let package = DebPackage::open("hello_2.10-3_amd64.deb")?;
//! println!("{} {}", package.control().get("Package").unwrap_or("?"), package.control().get("Version").unwrap_or("?"));
//! let mut data = package.into_data()?;
//! for entry in data.entries()? {
//!     let mut entry = entry?;
//!     if entry.kind == EntryKind::File {
//!         let mut content = Vec::new();
//!         entry.read_to_end(&mut content)?; // checked against md5sums at the end
//!     }
//! }
//! data.finish()?; // the rest of the file is sound (compression trailer, no stray members)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Data entries that would be unsafe or impossible to import are refused with an error
//! naming the package and the entry: absolute paths, `..` components, paths through a
//! symlink or a non-directory earlier in the archive, hardlinks to anything but an earlier
//! regular file, duplicate non-directory paths, device nodes, fifos, and names that are not
//! UTF-8 (OSTree names are strings).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use md5::Digest;
use treeline_store::sys::read_full;

use super::Error;
use super::deb822::{self, Stanza};
use super::decompress::{Compression, Decoder};
use crate::model::PackageMeta;

/// The most a control archive may expand to: far above any real package (a few MB of
/// templates), low enough that a hostile one cannot exhaust memory.
const CONTROL_LIMIT: u64 = 256 << 20;

/// A `.deb` whose control archive has been read; the data archive follows on demand.
pub struct DebPackage<R: Read = BufReader<File>> {
    path: PathBuf,
    container: Container<R>,
    control: ControlArchive,
    file_size: Option<u64>,
}

/// The control archive of a package: `control`, `md5sums`, `conffiles`, maintainer scripts
/// and anything else it holds.
#[derive(Debug, Clone)]
pub struct ControlArchive {
    /// The `control` file's stanza, fields in order.
    pub fields: Stanza,
    /// `md5sums` as `(path, md5 hex)`, paths relative without `./`, in file order; empty
    /// when the package has no `md5sums`.
    pub md5sums: Vec<(String, String)>,
    /// `conffiles` lines, trimmed (absolute paths, possibly with a flag such as
    /// `remove-on-upgrade` before them).
    pub conffiles: Vec<String>,
    /// Every regular file of the control archive in archive order, `control` included.
    pub members: Vec<ControlMember>,
}

impl ControlArchive {
    /// A field of `control` (case-insensitive name).
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field)
    }

    /// A control-archive file by name (`postinst`, `templates`, ...).
    pub fn member(&self, name: &str) -> Option<&ControlMember> {
        self.members.iter().find(|member| member.name == name)
    }
}

/// One file of the control archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    /// Name without the leading `./` (`postinst`, `md5sums`).
    pub name: String,
    /// Permission bits (`0o755` for scripts).
    pub mode: u32,
    /// The content.
    pub data: Vec<u8>,
}

impl DebPackage<BufReader<File>> {
    /// Opens a `.deb` file and reads its control archive.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|error| Error::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let size = file.metadata().ok().map(|meta| meta.len());
        let mut package = DebPackage::from_reader(BufReader::with_capacity(64 << 10, file), path)?;
        package.file_size = size;
        Ok(package)
    }
}

impl<R: Read> DebPackage<R> {
    /// Reads a `.deb` from a stream up to the end of its control archive; `path` is what
    /// errors name.
    pub fn from_reader(reader: R, path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let mut container = Container::new(reader, path.clone())?;
        let first = container
            .next_member()?
            .ok_or_else(|| container.error("empty archive (no debian-binary member)"))?;
        if first.name != "debian-binary" {
            return Err(container.error(format!(
                "first member is {:?}, expected debian-binary",
                first.name
            )));
        }
        if first.size > 64 {
            return Err(container.error(format!(
                "debian-binary is {} bytes, expected \"2.0\\n\"",
                first.size
            )));
        }
        let mut version = Vec::new();
        container
            .read_to_end(&mut version)
            .map_err(|error| Error::from_io(&path, error))?;
        if version != b"2.0\n" {
            return Err(container.error(format!(
                "unsupported format version {:?} (expected \"2.0\\n\")",
                String::from_utf8_lossy(&version)
            )));
        }
        let header = container.next_significant_member("control.tar")?;
        let compression = member_compression(&container, &header, "control.tar")?;
        let control = read_control(&mut container, &header, compression)?;
        Ok(DebPackage {
            path,
            container,
            control,
            file_size: None,
        })
    }

    /// The file errors name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control archive.
    pub fn control(&self) -> &ControlArchive {
        &self.control
    }

    /// The package as the solver and importer see it, relations evaluated for
    /// `target_arch`. `size` is the file's size when opened from a file; `location` and
    /// `checksum` are empty (they come from an index).
    pub fn meta(&self, target_arch: &str) -> Result<PackageMeta, Error> {
        let mut meta = super::index::package_meta(self.control.fields.fields.clone(), target_arch)
            .map_err(|error| Error::Control {
                path: self.path.clone(),
                problem: error.to_string(),
            })?;
        if let Some(size) = self.file_size {
            meta.size = size;
        }
        Ok(meta)
    }

    /// Moves on to the data archive; its entries are then read with
    /// [`DataArchive::entries`].
    pub fn into_data(mut self) -> Result<DataArchive<R>, Error> {
        let header = self.container.next_significant_member("data.tar")?;
        let compression = member_compression(&self.container, &header, "data.tar")?;
        let member = header.name.clone();
        let decoder = Decoder::new(compression, self.container).map_err(|error| Error::Member {
            path: self.path.clone(),
            member: member.clone(),
            problem: error.to_string(),
        })?;
        let md5sums = self.control.md5sums.iter().cloned().collect();
        Ok(DataArchive {
            path: self.path,
            member,
            archive: tar::Archive::new(decoder),
            md5sums,
            verify_md5: true,
        })
    }
}

/// The data archive of a package, read once, in order.
pub struct DataArchive<R: Read = BufReader<File>> {
    path: PathBuf,
    member: String,
    archive: tar::Archive<Decoder<Container<R>>>,
    md5sums: HashMap<String, String>,
    verify_md5: bool,
}

impl<R: Read> DataArchive<R> {
    /// Whether file contents read through [`DataEntry`] are checked against `md5sums`
    /// (on by default). Files `md5sums` does not list (conffiles, usually) are not checked.
    pub fn set_verify_md5(&mut self, verify: bool) {
        self.verify_md5 = verify;
    }

    /// The ar member holding the data (`data.tar.xz`, ...).
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Reads the rest of the package after the last entry: the data member to its end (so
    /// the decompressor checks its integrity trailer and truncation is noticed), then the
    /// container's end, where only dpkg's `_`-prefixed extension members may follow.
    /// Call it after iterating [`entries`](Self::entries) to know the whole file is sound.
    pub fn finish(self) -> Result<(), Error> {
        let path = self.path;
        let member = self.member;
        let mut decoder = self.archive.into_inner();
        io::copy(&mut decoder, &mut io::sink()).map_err(|error| {
            match Error::from_io(&path, error) {
                Error::Io { error, .. } => Error::Member {
                    path: path.clone(),
                    member: member.clone(),
                    problem: error.to_string(),
                },
                wrapped => wrapped,
            }
        })?;
        let mut container = decoder.into_inner();
        while let Some(header) = container.next_member()? {
            if !header.name.starts_with('_') {
                return Err(container.error(format!(
                    "unexpected member {:?} after {member}",
                    header.name
                )));
            }
        }
        Ok(())
    }

    /// The entries in archive order. Can be called once.
    pub fn entries(&mut self) -> Result<DataEntries<'_, R>, Error> {
        let inner = self.archive.entries().map_err(|error| Error::Member {
            path: self.path.clone(),
            member: self.member.clone(),
            problem: error.to_string(),
        })?;
        Ok(DataEntries {
            inner,
            path: &self.path,
            member: &self.member,
            md5sums: &self.md5sums,
            verify_md5: self.verify_md5,
            seen: HashMap::new(),
            failed: false,
        })
    }
}

/// What a data entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; its content is read from the [`DataEntry`].
    File,
    /// A symbolic link to [`DataEntry::link_target`] (kept as written).
    Symlink,
    /// A hard link to the earlier regular file [`DataEntry::link_target`] (a normalized
    /// path in the package).
    Hardlink,
}

/// Iterator over the data archive's entries; stops after the first error.
pub struct DataEntries<'a, R: Read> {
    inner: tar::Entries<'a, Decoder<Container<R>>>,
    path: &'a Path,
    member: &'a str,
    md5sums: &'a HashMap<String, String>,
    verify_md5: bool,
    /// Every path so far with what it is, to refuse paths through symlinks and hardlinks
    /// to anything not already extracted.
    seen: HashMap<String, EntryKind>,
    failed: bool,
}

/// One entry of the data archive. For [`EntryKind::File`], reading it yields the content
/// (checked against `md5sums` when it reaches the end, if enabled).
pub struct DataEntry<'a, R: Read> {
    /// Normalized path relative to the root: no leading `./` or `/`, no trailing `/`, no
    /// `.` or empty components; `""` is the root directory itself.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Owner name, when the archive records one.
    pub uname: Option<String>,
    /// Group name, when the archive records one.
    pub gname: Option<String>,
    /// Content size in bytes (0 for anything but files).
    pub size: u64,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// Symlink target as written, or the normalized path of a hardlink's target.
    pub link_target: Option<String>,
    /// The md5 `md5sums` gives for this file, if any.
    pub expected_md5: Option<String>,
    inner: tar::Entry<'a, Decoder<Container<R>>>,
    hasher: Option<md5::Md5>,
    package: &'a Path,
}

impl<'a, R: Read> Iterator for DataEntries<'a, R> {
    type Item = Result<DataEntry<'a, R>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let entry = match self.inner.next()? {
                Ok(entry) => entry,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(self.member_error(error)));
                }
            };
            if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
                continue;
            }
            let result = self.check(entry);
            self.failed = result.is_err();
            return Some(result);
        }
    }
}

impl<'a, R: Read> DataEntries<'a, R> {
    fn member_error(&self, error: io::Error) -> Error {
        match Error::from_io(self.path, error) {
            Error::Io { error, .. } => Error::Member {
                path: self.path.to_path_buf(),
                member: self.member.to_owned(),
                problem: error.to_string(),
            },
            wrapped => wrapped,
        }
    }

    fn check(
        &mut self,
        mut entry: tar::Entry<'a, Decoder<Container<R>>>,
    ) -> Result<DataEntry<'a, R>, Error> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |problem: String| Error::Entry {
            path: self.path.to_path_buf(),
            entry: raw.clone(),
            problem,
        };
        let path_bytes = entry.path_bytes();
        let Ok(name) = std::str::from_utf8(&path_bytes) else {
            return Err(refuse("name is not valid UTF-8".into()));
        };
        let path = normalize(name).map_err(|problem| refuse(problem.into()))?;
        drop(path_bytes);
        let entry_type = entry.header().entry_type();
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                EntryKind::File
            }
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refuse(
                    "device node: OSTree cannot store device nodes".into(),
                ));
            }
            tar::EntryType::Fifo => {
                return Err(refuse("fifo: OSTree cannot store fifos".into()));
            }
            other => {
                return Err(refuse(format!(
                    "unsupported tar entry type {:?}",
                    other.as_byte() as char
                )));
            }
        };
        if path.is_empty() && kind != EntryKind::Dir {
            return Err(refuse("the root must be a directory".into()));
        }
        // Every ancestor seen so far must be a directory: extracting through a symlink
        // would write outside the tree.
        for (end, _) in path.match_indices('/') {
            let ancestor = &path[..end];
            match self.seen.get(ancestor) {
                Some(EntryKind::Symlink) => {
                    return Err(refuse(format!(
                        "path goes through {ancestor:?}, a symlink earlier in the archive"
                    )));
                }
                Some(EntryKind::File | EntryKind::Hardlink) => {
                    return Err(refuse(format!(
                        "path goes through {ancestor:?}, a file earlier in the archive"
                    )));
                }
                Some(EntryKind::Dir) | None => {}
            }
        }
        match self.seen.get(path.as_str()) {
            Some(EntryKind::Dir) if kind == EntryKind::Dir => {}
            Some(earlier) => {
                return Err(refuse(format!(
                    "path appears twice (earlier as {earlier:?})"
                )));
            }
            None => {}
        }
        let link_bytes = entry.link_name_bytes().map(|bytes| bytes.into_owned());
        let link_target = match kind {
            EntryKind::Symlink | EntryKind::Hardlink => {
                let Some(bytes) = link_bytes else {
                    return Err(refuse("link without a target".into()));
                };
                let Ok(target) = String::from_utf8(bytes) else {
                    return Err(refuse("link target is not valid UTF-8".into()));
                };
                if target.is_empty() {
                    return Err(refuse("link with an empty target".into()));
                }
                if kind == EntryKind::Hardlink {
                    let normalized = normalize(&target).map_err(|problem| {
                        refuse(format!("hardlink target {target:?}: {problem}"))
                    })?;
                    match self.seen.get(normalized.as_str()) {
                        Some(EntryKind::File | EntryKind::Hardlink) => {}
                        _ => {
                            return Err(refuse(format!(
                                "hardlink to {target:?}, which is not a regular file earlier in the archive"
                            )));
                        }
                    }
                    Some(normalized)
                } else {
                    Some(target)
                }
            }
            EntryKind::Dir | EntryKind::File => None,
        };
        let header = entry.header();
        let bad_header = |what: &str, error: io::Error| refuse(format!("invalid {what}: {error}"));
        let mode = header.mode().map_err(|e| bad_header("mode", e))? & 0o7777;
        let mut uid = header.uid().map_err(|e| bad_header("uid", e))?;
        let mut gid = header.gid().map_err(|e| bad_header("gid", e))?;
        let mtime = header.mtime().map_err(|e| bad_header("mtime", e))?;
        let name_of = |bytes: Option<&[u8]>| {
            bytes
                .filter(|bytes| !bytes.is_empty())
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        };
        let mut uname = name_of(header.username_bytes());
        let mut gname = name_of(header.groupname_bytes());
        // pax records override the ustar fields (large ids, long or non-ASCII names).
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                let Ok(value) = extension.value() else {
                    continue;
                };
                match extension.key() {
                    Ok("uid") => {
                        uid = value
                            .parse()
                            .map_err(|_| refuse(format!("invalid pax uid {value:?}")))?
                    }
                    Ok("gid") => {
                        gid = value
                            .parse()
                            .map_err(|_| refuse(format!("invalid pax gid {value:?}")))?
                    }
                    Ok("uname") => uname = Some(value.to_owned()),
                    Ok("gname") => gname = Some(value.to_owned()),
                    _ => {}
                }
            }
        }
        let size = if kind == EntryKind::File {
            entry.size()
        } else {
            0
        };
        let expected_md5 = match kind {
            EntryKind::File | EntryKind::Hardlink => self.md5sums.get(path.as_str()).cloned(),
            _ => None,
        };
        let hasher = (self.verify_md5 && kind == EntryKind::File && expected_md5.is_some())
            .then(md5::Md5::new);
        self.seen.insert(path.clone(), kind);
        Ok(DataEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            uname,
            gname,
            size,
            mtime,
            link_target,
            expected_md5,
            inner: entry,
            hasher,
            package: self.path,
        })
    }
}

impl<R: Read> Read for DataEntry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let (Some(hasher), Some(chunk)) = (self.hasher.as_mut(), buf.get(..read)) {
            hasher.update(chunk);
        }
        // The end of the content: compare once with md5sums.
        if read == 0
            && !buf.is_empty()
            && let Some(hasher) = self.hasher.take()
        {
            let actual = hex::encode(hasher.finalize());
            let expected = self.expected_md5.as_deref().unwrap_or_default();
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(Error::Md5Mismatch {
                    path: self.package.to_path_buf(),
                    entry: self.path.clone(),
                    expected: expected.to_owned(),
                    actual,
                }
                .into_io());
            }
        }
        Ok(read)
    }
}

impl<R: Read> std::fmt::Debug for DataEntry<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataEntry")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("size", &self.size)
            .field("link_target", &self.link_target)
            .finish_non_exhaustive()
    }
}

/// Normalizes an archive path: strips `./` and `/`-runs, refuses absolute paths and `..`.
fn normalize(name: &str) -> Result<String, &'static str> {
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut out = String::with_capacity(name.len());
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("path has a '..' component"),
            component => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(component);
            }
        }
    }
    Ok(out)
}

/// The compression of a `control.tar*` / `data.tar*` member, or an error naming it.
fn member_compression<R: Read>(
    container: &Container<R>,
    header: &MemberHeader,
    stem: &str,
) -> Result<Compression, Error> {
    let Some(suffix) = header.name.strip_prefix(stem) else {
        return Err(container.error(format!(
            "unexpected member {:?} (expected {stem}, {stem}.gz, {stem}.xz or {stem}.zst)",
            header.name
        )));
    };
    Compression::from_suffix(suffix).ok_or_else(|| Error::Member {
        path: container.path.clone(),
        member: header.name.clone(),
        problem: "unsupported compression".into(),
    })
}

/// Reads the whole control archive into memory and parses `control`, `md5sums`,
/// `conffiles`.
fn read_control<R: Read>(
    container: &mut Container<R>,
    header: &MemberHeader,
    compression: Compression,
) -> Result<ControlArchive, Error> {
    let path = container.path.clone();
    let member_error = |error: io::Error| match Error::from_io(&path, error) {
        Error::Io { error, .. } => Error::Member {
            path: path.clone(),
            member: header.name.clone(),
            problem: error.to_string(),
        },
        wrapped => wrapped,
    };
    let decoder = Decoder::new(compression, &mut *container).map_err(member_error)?;
    let mut archive = tar::Archive::new(decoder.take(CONTROL_LIMIT));
    let mut members = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(member_error)? {
        let mut entry = entry.map_err(member_error)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type.is_dir() || entry_type == tar::EntryType::XGlobalHeader {
            continue;
        }
        let normalized = normalize(&name).map_err(|problem| Error::Control {
            path: path.clone(),
            problem: format!("member {name:?}: {problem}"),
        })?;
        if !entry_type.is_file() || normalized.is_empty() {
            return Err(Error::Control {
                path: path.clone(),
                problem: format!("member {name:?} is not a regular file"),
            });
        }
        let mode = entry.header().mode().map_err(member_error)? & 0o7777;
        total = total.saturating_add(entry.size());
        if total >= CONTROL_LIMIT {
            return Err(Error::Control {
                path: path.clone(),
                problem: format!("control archive larger than {CONTROL_LIMIT} bytes"),
            });
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(member_error)?;
        members.push(ControlMember {
            name: normalized,
            mode,
            data,
        });
    }
    drop(archive);

    let control_path = || PathBuf::from(format!("{}:control", path.display()));
    let control = members
        .iter()
        .find(|member| member.name == "control")
        .ok_or_else(|| Error::Control {
            path: path.clone(),
            problem: "no control file in the control archive".into(),
        })?;
    let fields = deb822::parse_single(&control.data, control_path())?;
    for required in ["Package", "Version", "Architecture"] {
        if fields.get(required).is_none_or(str::is_empty) {
            return Err(Error::Control {
                path: path.clone(),
                problem: format!("missing required field {required}"),
            });
        }
    }
    let mut md5sums = Vec::new();
    if let Some(member) = members.iter().find(|member| member.name == "md5sums") {
        let text = std::str::from_utf8(&member.data).map_err(|_| Error::Control {
            path: path.clone(),
            problem: "md5sums is not valid UTF-8".into(),
        })?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(md5, file)| {
                    let file = file.trim_start();
                    let file = file.strip_prefix('*').unwrap_or(file);
                    let valid = md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit());
                    (valid && !file.is_empty()).then_some((file, md5))
                });
            let Some((file, md5)) = parsed else {
                return Err(Error::Control {
                    path: path.clone(),
                    problem: format!(
                        "md5sums line {}: expected \"<md5>  <path>\", got {line:?}",
                        index + 1
                    ),
                });
            };
            let file =
                normalize(file.trim_start_matches('/')).map_err(|problem| Error::Control {
                    path: path.clone(),
                    problem: format!("md5sums line {}: {problem}", index + 1),
                })?;
            md5sums.push((file, md5.to_ascii_lowercase()));
        }
    }
    let conffiles = members
        .iter()
        .find(|member| member.name == "conffiles")
        .map(|member| {
            String::from_utf8_lossy(&member.data)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(ControlArchive {
        fields,
        md5sums,
        conffiles,
        members,
    })
}

/// The header of one `ar` member.
#[derive(Debug)]
struct MemberHeader {
    name: String,
    size: u64,
}

/// A minimal streaming reader of the `ar` container (dpkg's subset: common format, names
/// up to 16 bytes, optional trailing `/`). Reading it yields the current member's content;
/// running out before the member's declared size is a truncation error naming the package
/// and the member.
struct Container<R> {
    reader: R,
    path: PathBuf,
    /// Bytes consumed so far, for error messages.
    offset: u64,
    /// The current member's name.
    member: String,
    /// Bytes of the current member's content not yet read.
    remaining: u64,
    /// The padding byte after an odd-sized member, not yet read.
    padding: u64,
}

impl<R: Read> Container<R> {
    fn new(mut reader: R, path: PathBuf) -> Result<Self, Error> {
        let mut magic = [0u8; 8];
        let read =
            read_full(&mut reader, &mut magic).map_err(|error| Error::from_io(&path, error))?;
        if read < magic.len() || &magic != b"!<arch>\n" {
            return Err(Error::Container {
                path,
                problem: "bad ar magic (not an ar archive)".into(),
            });
        }
        Ok(Container {
            reader,
            path,
            offset: 8,
            member: String::new(),
            remaining: 0,
            padding: 0,
        })
    }

    fn error(&self, problem: impl Into<String>) -> Error {
        Error::Container {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }

    /// Reads the next member header, skipping what is left of the previous member.
    fn next_member(&mut self) -> Result<Option<MemberHeader>, Error> {
        let leftover = self.remaining + self.padding;
        if leftover > 0 {
            let skipped = io::copy(&mut (&mut self.reader).take(leftover), &mut io::sink())
                .map_err(|error| Error::from_io(&self.path, error))?;
            self.offset += skipped;
            if skipped < leftover {
                return Err(Error::Member {
                    path: self.path.clone(),
                    member: self.member.clone(),
                    problem: format!("truncated: {} bytes missing", leftover - skipped),
                });
            }
            self.remaining = 0;
            self.padding = 0;
        }
        let mut raw = [0u8; 60];
        let read = read_full(&mut self.reader, &mut raw)
            .map_err(|error| Error::from_io(&self.path, error))?;
        if read == 0 {
            return Ok(None);
        }
        let at = self.offset;
        if read < raw.len() {
            return Err(self.error(format!("truncated member header at byte {at}")));
        }
        self.offset += 60;
        let field = |range: std::ops::Range<usize>| raw.get(range).unwrap_or_default();
        if field(58..60) != b"`\n" {
            return Err(self.error(format!("bad member header at byte {at}")));
        }
        let name = String::from_utf8_lossy(field(0..16));
        let name = name.trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_owned();
        let size = std::str::from_utf8(field(48..58))
            .ok()
            .and_then(|size| size.trim_end_matches(' ').parse::<u64>().ok())
            .ok_or_else(|| self.error(format!("bad size in member header at byte {at}")))?;
        self.member = name.clone();
        self.remaining = size;
        self.padding = size & 1;
        Ok(Some(MemberHeader { name, size }))
    }

    /// The next member that is not dpkg's `_`-prefixed extension (signatures), which must
    /// exist: `what` names what was expected.
    fn next_significant_member(&mut self, what: &str) -> Result<MemberHeader, Error> {
        loop {
            match self.next_member()? {
                None => {
                    return Err(self.error(format!("missing {what} member (archive ends early)")));
                }
                Some(header) if header.name.starts_with('_') => continue,
                Some(header) => return Ok(header),
            }
        }
    }
}

impl<R: Read> Read for Container<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let Some(window) = buf.get_mut(..want) else {
            return Ok(0);
        };
        let read = self.reader.read(window)?;
        if read == 0 {
            return Err(Error::Member {
                path: self.path.clone(),
                member: self.member.clone(),
                problem: format!("truncated: {} bytes missing", self.remaining),
            }
            .into_io());
        }
        self.remaining -= read as u64;
        self.offset += read as u64;
        Ok(read)
    }
}
