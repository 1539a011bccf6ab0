//! A repository on disk: modes, configuration, loose objects and transactions.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::keyfile::KeyFile;
use crate::object::{
    Commit, DirMeta, DirTree, FileHeader, S_IFLNK, S_IFMT, S_IFREG, commitmeta_from_bytes,
    header_prefix,
};
use crate::sys::{self, LockKind, RepoLock};
use crate::variant::Metadata;

/// The xattr in which bare-user repositories keep a file's real ownership and mode.
pub const BARE_USER_META_XATTR: &str = "user.ostreemeta";

/// How content objects are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoMode {
    /// Files as themselves, with real owner, mode and xattrs (needs root).
    Bare,
    /// Files owned by the writer; real owner, mode and xattrs in `user.ostreemeta`.
    BareUser,
    /// Files owned by the writer, canonical permissions, no xattrs.
    BareUserOnly,
    /// Compressed `.filez` objects, suitable for serving over HTTP.
    Archive,
}

impl RepoMode {
    /// Parse a mode name as ostree's `init --mode` and config accept it.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bare" => RepoMode::Bare,
            "bare-user" => RepoMode::BareUser,
            "bare-user-only" => RepoMode::BareUserOnly,
            "archive" | "archive-z2" => RepoMode::Archive,
            _ => return None,
        })
    }

    /// The name written to `core.mode`.
    pub fn config_name(self) -> &'static str {
        match self {
            RepoMode::Bare => "bare",
            RepoMode::BareUser => "bare-user",
            RepoMode::BareUserOnly => "bare-user-only",
            RepoMode::Archive => "archive-z2",
        }
    }

    fn file_ext(self) -> &'static str {
        match self {
            RepoMode::Archive => "filez",
            _ => "file",
        }
    }
}

/// An open OSTree repository.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    mode: RepoMode,
    config: KeyFile,
    zlib_level: u32,
    fsync: bool,
}

impl Repo {
    /// Create a repository, or open it unchanged if `objects/` already exists (as ostree).
    pub fn init(path: &Path, mode: RepoMode) -> Result<Repo> {
        if path.join("objects").is_dir() {
            return Repo::open(path);
        }
        fs::create_dir_all(path).at(path)?;
        for d in [
            "tmp",
            "extensions",
            "state",
            "refs",
            "refs/heads",
            "refs/mirrors",
            "refs/remotes",
        ] {
            let p = path.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        let mut config = KeyFile::new();
        config.set_raw_value("core", "repo_version", "1");
        config.set_raw_value("core", "mode", mode.config_name());
        write_file_atomic(&path.join("config"), config.to_data().as_bytes())?;
        // objects/ last: its presence is what marks a complete repository.
        let objects = path.join("objects");
        fs::create_dir_all(&objects).at(&objects)?;
        Repo::open(path)
    }

    /// Open an existing repository.
    pub fn open(path: &Path) -> Result<Repo> {
        let config_path = path.join("config");
        if !path.join("objects").is_dir() {
            return Err(Error::Config {
                path: config_path,
                message: format!(
                    "{} is not an OSTree repository (no objects/)",
                    path.display()
                ),
            });
        }
        let text = fs::read_to_string(&config_path).at(&config_path)?;
        let config = KeyFile::parse(&text).map_err(|e| Error::Config {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        let cfg_err = |message: String| Error::Config {
            path: config_path.clone(),
            message,
        };
        match config.raw_value("core", "repo_version") {
            Some("1") => {}
            other => return Err(cfg_err(format!("unsupported repo_version {other:?}"))),
        }
        if config
            .boolean("core", "archive")
            .map_err(|e| cfg_err(e.to_string()))?
            == Some(true)
        {
            return Err(cfg_err(
                "legacy archive repositories are no longer supported".into(),
            ));
        }
        let mode_name = config.raw_value("core", "mode").unwrap_or("bare");
        let mode = RepoMode::parse(mode_name)
            .ok_or_else(|| cfg_err(format!("unsupported repository mode {mode_name:?}")))?;
        let zlib_level = config
            .integer("archive", "zlib-level")
            .map_err(|e| cfg_err(e.to_string()))?
            .unwrap_or(6)
            .clamp(1, 9) as u32;
        let fsync = config
            .boolean("core", "fsync")
            .map_err(|e| cfg_err(e.to_string()))?
            .unwrap_or(true);
        Ok(Repo {
            path: path.to_path_buf(),
            mode,
            config,
            zlib_level,
            fsync,
        })
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage mode.
    pub fn mode(&self) -> RepoMode {
        self.mode
    }

    /// The parsed `config` file.
    pub fn config(&self) -> &KeyFile {
        &self.config
    }

    /// Replace the `config` file atomically.
    pub fn write_config(&mut self, config: KeyFile) -> Result<()> {
        write_file_atomic(&self.path.join("config"), config.to_data().as_bytes())?;
        self.config = config;
        Ok(())
    }

    /// Where a loose object lives.
    pub fn object_path(&self, name: &ObjectName) -> PathBuf {
        self.path
            .join("objects")
            .join(loose_relpath(self.mode, name))
    }

    /// Whether an object is stored (symlink objects count too).
    pub fn has_object(&self, name: &ObjectName) -> bool {
        fs::symlink_metadata(self.object_path(name)).is_ok()
    }

    /// The raw bytes of a metadata object.
    pub fn read_meta_bytes(&self, name: &ObjectName) -> Result<Vec<u8>> {
        let p = self.object_path(name);
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(*name)),
            Err(e) => Err(Error::Io { path: p, error: e }),
        }
    }

    /// Load and validate a commit.
    pub fn load_commit(&self, c: &Checksum) -> Result<Commit> {
        let name = ObjectName::new(*c, ObjectType::Commit);
        Commit::from_bytes(&self.read_meta_bytes(&name)?).map_err(|reason| invalid(&name, reason))
    }

    /// Load and validate a dirtree.
    pub fn load_dirtree(&self, c: &Checksum) -> Result<DirTree> {
        let name = ObjectName::new(*c, ObjectType::DirTree);
        DirTree::from_bytes(&self.read_meta_bytes(&name)?).map_err(|reason| invalid(&name, reason))
    }

    /// Load and validate a dirmeta.
    pub fn load_dirmeta(&self, c: &Checksum) -> Result<DirMeta> {
        let name = ObjectName::new(*c, ObjectType::DirMeta);
        DirMeta::from_bytes(&self.read_meta_bytes(&name)?).map_err(|reason| invalid(&name, reason))
    }

    /// Detached metadata of a commit, if any.
    pub fn read_commitmeta(&self, c: &Checksum) -> Result<Option<Metadata>> {
        let name = ObjectName::new(*c, ObjectType::CommitMeta);
        match self.read_meta_bytes(&name) {
            Ok(b) => commitmeta_from_bytes(&b)
                .map(Some)
                .map_err(|reason| invalid(&name, reason)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace a commit's detached metadata (written atomically; not content-addressed).
    pub fn write_commitmeta(&self, c: &Checksum, meta: &Metadata) -> Result<()> {
        let path = self.object_path(&ObjectName::new(*c, ObjectType::CommitMeta));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        write_file_atomic(&path, &meta.to_bytes())
    }

    /// Open a content object: its header and a reader over its content (empty for
    /// symlinks), plus the content size.
    pub fn open_file(&self, c: &Checksum) -> Result<(FileHeader, ContentReader, u64)> {
        let name = ObjectName::new(*c, ObjectType::File);
        let path = self.object_path(&name);
        let not_found = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(name)
            } else {
                Error::Io {
                    path: path.clone(),
                    error: e,
                }
            }
        };
        match self.mode {
            RepoMode::Archive => {
                if let Err(e) = fs::symlink_metadata(&path) {
                    return Err(not_found(e));
                }
                let (header, size, reader) = open_filez(&path, &name)?;
                Ok((header, reader, size))
            }
            RepoMode::Bare | RepoMode::BareUserOnly => {
                let md = fs::symlink_metadata(&path).map_err(not_found)?;
                let (uid, gid) = if self.mode == RepoMode::Bare {
                    (md.uid(), md.gid())
                } else {
                    (0, 0)
                };
                if md.file_type().is_symlink() {
                    let target = fs::read_link(&path).at(&path)?;
                    let xattrs = if self.mode == RepoMode::Bare {
                        sys::read_xattrs(&path)?
                    } else {
                        Vec::new()
                    };
                    let header = FileHeader {
                        uid,
                        gid,
                        mode: S_IFLNK | 0o777,
                        symlink_target: path_to_string(&target, &path)?,
                        xattrs,
                    };
                    return Ok((header, ContentReader::Empty, 0));
                }
                if !md.file_type().is_file() {
                    return Err(invalid(&name, "not a regular file or symlink".into()));
                }
                let xattrs = if self.mode == RepoMode::Bare {
                    sys::read_xattrs(&path)?
                } else {
                    Vec::new()
                };
                let header = FileHeader {
                    uid,
                    gid,
                    mode: S_IFREG | (md.mode() & 0o7777),
                    symlink_target: String::new(),
                    xattrs,
                };
                let file = File::open(&path).at(&path)?;
                Ok((header, ContentReader::Plain(file), md.len()))
            }
            RepoMode::BareUser => {
                let mut file = File::open(&path).map_err(not_found)?;
                let meta =
                    sys::fget_xattr(&file, &path, BARE_USER_META_XATTR)?.ok_or_else(|| {
                        invalid(&name, format!("missing {BARE_USER_META_XATTR} xattr"))
                    })?;
                let mut header =
                    FileHeader::from_bare_user_meta(&meta).map_err(|e| invalid(&name, e))?;
                let size = file.metadata().at(&path)?.len();
                if header.mode & S_IFMT == S_IFLNK {
                    let mut target = Vec::new();
                    file.read_to_end(&mut target).at(&path)?;
                    let target = target.strip_suffix(b"\0").unwrap_or(&target);
                    header.symlink_target = String::from_utf8(target.to_vec())
                        .map_err(|_| invalid(&name, "symlink target is not UTF-8".into()))?;
                    header.validate().map_err(|e| invalid(&name, e))?;
                    return Ok((header, ContentReader::Empty, 0));
                }
                header.validate().map_err(|e| invalid(&name, e))?;
                file.rewind().at(&path)?;
                Ok((header, ContentReader::Plain(file), size))
            }
        }
    }

    /// Begin adding objects. Holds the repository lock shared until the transaction ends.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        let lock = RepoLock::acquire(&self.path.join(".lock"), LockKind::Shared)?;
        let tmp = self.path.join("tmp");
        fs::create_dir_all(&tmp).at(&tmp)?;
        let (staging_handle, staging) = match self.sweep_staging(&tmp)? {
            Some(claimed) => claimed,
            None => {
                // Lock the directory before it is visible under a `staging-` name, or
                // another writer's sweep could take it for a dead one.
                let fresh = tempfile::Builder::new()
                    .prefix(".new-")
                    .tempdir_in(&tmp)
                    .at(&tmp)?
                    .keep();
                let handle = File::open(&fresh).at(&fresh)?;
                rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive).at(&fresh)?;
                let name = fresh
                    .file_name()
                    .map(|n| n.to_string_lossy().replacen(".new-", STAGING_PREFIX, 1))
                    .unwrap_or_else(|| STAGING_PREFIX.into());
                let staging = tmp.join(name);
                fs::rename(&fresh, &staging).at(&staging)?;
                (handle, staging)
            }
        };
        Ok(Transaction {
            repo: self,
            staging,
            made_dirs: Default::default(),
            staged: Default::default(),
            unnamed_ok: std::sync::atomic::AtomicBool::new(Path::new("/proc/self/fd").is_dir()),
            _staging_handle: staging_handle,
            _lock: lock,
        })
    }

    /// Go through the staging directories nobody holds: those of writers that died are
    /// flushed and their objects moved into `objects/` (every object in them is complete:
    /// objects are renamed into a staging directory only once whole and, for pulls,
    /// verified), so an interrupted commit or pull resumes without writing or fetching
    /// them again. One free directory (an idle one, left empty by a committed
    /// transaction, or a recovered one) is returned locked and renamed to a `staging-`
    /// name for this transaction to reuse; the others are deleted.
    ///
    /// Reuse is for speed, as in ostree: removing a directory frees its block, which on
    /// a filesystem mounted with `discard` and without a journal waits for the device to
    /// discard it (milliseconds each, and a staging directory has up to 256 prefix
    /// subdirectories).
    fn sweep_staging(&self, tmp: &Path) -> Result<Option<(File, PathBuf)>> {
        let mut claimed: Option<(File, PathBuf)> = None;
        for entry in fs::read_dir(tmp).at(tmp)? {
            let entry = entry.at(tmp)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(suffix) = name
                .strip_prefix(STAGING_PREFIX)
                .or_else(|| name.strip_prefix(IDLE_PREFIX))
            else {
                continue;
            };
            let path = entry.path();
            let Ok(handle) = File::open(&path) else {
                continue;
            };
            let free = rustix::fs::flock(
                &handle,
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            )
            .is_ok();
            // Locked, but the name may have been given to another directory meanwhile.
            if !free || !same_file(&handle, &path) {
                continue;
            }
            tracing::debug!("recovering staging directory {}", path.display());
            self.move_staged_objects(&path, true)?;
            if claimed.is_some() {
                fs::remove_dir_all(&path).at(&path)?;
                continue;
            }
            let staging = tmp.join(format!("{STAGING_PREFIX}{suffix}"));
            if staging != path {
                fs::rename(&path, &staging).at(&staging)?;
            }
            claimed = Some((handle, staging));
        }
        Ok(claimed)
    }

    /// Move every complete object of a staging directory into `objects/` (never
    /// replacing an existing object; detached metadata replaces) and delete its
    /// temporary files, leaving only its (empty) prefix subdirectories. With `recover`
    /// (a directory whose writer died) the filesystem is flushed first if there is
    /// anything to move, as a commit does.
    fn move_staged_objects(&self, staging: &Path, recover: bool) -> Result<usize> {
        let objects = self.path.join("objects");
        let mut staged = Vec::new();
        let mut moved_dirs = 0;
        // A dead writer's objects are flushed before any moves, as a commit does.
        let mut synced = !(recover && self.fsync);
        for sub in fs::read_dir(staging).at(staging)? {
            let sub = sub.at(staging)?;
            if !sub.file_type().at(sub.path())?.is_dir() {
                // Temporary files only: objects are staged in prefix subdirectories.
                let path = sub.path();
                fs::remove_file(&path).at(&path)?;
                continue;
            }
            let src_dir = sub.path();
            let first = staged.len();
            let mut holds_commit = false;
            for entry in fs::read_dir(&src_dir).at(&src_dir)? {
                let entry = entry.at(&src_dir)?;
                let fname = entry.file_name().to_string_lossy().into_owned();
                if fname.starts_with(".tmp-") {
                    let path = entry.path();
                    fs::remove_file(&path).at(&path)?;
                    continue;
                }
                let rank = match fname
                    .rsplit_once('.')
                    .and_then(|(_, ext)| ObjectType::from_name(ext))
                {
                    Some(ObjectType::File) => 0,
                    Some(ObjectType::DirMeta) => 1,
                    Some(ObjectType::DirTree) => 2,
                    Some(ObjectType::CommitMeta) => 3,
                    _ => 4,
                };
                holds_commit |= rank == 4;
                staged.push((rank, sub.file_name(), entry.path(), fname));
            }
            // A prefix objects/ lacks (a first pull into a new repository) moves in one
            // rename, if it holds no commit (those move last, below).
            if !holds_commit && staged.len() > first {
                let dest = objects.join(sub.file_name());
                if !synced {
                    sys::syncfs(staging)?;
                    synced = true;
                }
                if sys::rename_noreplace(&src_dir, &dest)? {
                    staged.truncate(first);
                    moved_dirs += 1;
                    crate::fault::point("commit-during-rename");
                }
            }
        }
        // Whatever references an object moves after it: content, then directories, then
        // commits (whole prefix directories moved above hold no commit). A kill part-way
        // leaves no commit in objects/ without its tree.
        staged.sort_by_key(|s| s.0);
        if !synced && !staged.is_empty() {
            sys::syncfs(staging)?;
        }
        let mut created = std::collections::HashSet::new();
        for (i, (_, prefix, src, fname)) in staged.iter().enumerate() {
            let dest_dir = objects.join(prefix);
            if created.insert(prefix.clone()) {
                fs::create_dir_all(&dest_dir).at(&dest_dir)?;
            }
            let dest = dest_dir.join(fname);
            if fname.ends_with(".commitmeta") {
                fs::rename(src, &dest).at(&dest)?;
            } else if !sys::rename_noreplace(src, &dest)? {
                fs::remove_file(src).at(src)?;
            }
            if i == 0 {
                crate::fault::point("commit-during-rename");
            }
        }
        Ok(staged.len() + moved_dirs)
    }

    /// Every loose object in the repository.
    pub fn list_objects(&self) -> Result<Vec<ObjectName>> {
        let objects = self.path.join("objects");
        let mut out = Vec::new();
        for sub in fs::read_dir(&objects).at(&objects)? {
            let sub = sub.at(&objects)?;
            let prefix = sub.file_name();
            let Some(prefix) = prefix.to_str() else {
                continue;
            };
            if prefix.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            let dir = sub.path();
            for entry in fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                let fname = entry.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                let Some((rest, ext)) = fname.split_once('.') else {
                    continue;
                };
                let Some(objtype) = ObjectType::from_name(ext) else {
                    continue;
                };
                if let Ok(c) = format!("{prefix}{rest}").parse::<Checksum>() {
                    out.push(ObjectName::new(c, objtype));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// True when a commit's tree may be incomplete (an interrupted pull).
    pub fn is_partial(&self, c: &Checksum) -> bool {
        self.path
            .join("state")
            .join(format!("{c}.commitpartial"))
            .exists()
    }

    /// Delete a loose object (used by prune and `fsck --delete`).
    pub fn delete_object(&self, name: &ObjectName) -> Result<()> {
        let p = self.object_path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path: p, error: e }),
        }
    }

    pub(crate) fn zlib_level(&self) -> u32 {
        self.zlib_level
    }
}

fn invalid(name: &ObjectName, reason: String) -> Error {
    Error::InvalidObject {
        object: name.to_string(),
        reason,
    }
}

fn path_to_string(p: &Path, at: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidName {
            name: p.to_string_lossy().into_owned(),
            context: at.display().to_string(),
            reason: "not valid UTF-8",
        })
}

/// Prefix of a transaction's staging directory under `tmp/` (live, or left by a writer
/// that died).
const STAGING_PREFIX: &str = "staging-";
/// Prefix of an empty staging directory kept for reuse by a committed transaction.
const IDLE_PREFIX: &str = "idle-";

/// Whether `path` still names the file `handle` has open.
fn same_file(handle: &File, path: &Path) -> bool {
    match (handle.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn loose_relpath(mode: RepoMode, name: &ObjectName) -> PathBuf {
    let hex = name.checksum.to_hex();
    let ext = match name.objtype {
        ObjectType::File => mode.file_ext(),
        t => t.name(),
    };
    PathBuf::from(&hex[..2]).join(format!("{}.{ext}", &hex[2..]))
}

/// Write a whole file durably: temp file, fsync, rename, fsync the directory.
pub fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(data).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .at(path)?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        error: e.error,
    })?;
    sys::fsync_dir(dir)
}

/// A reader over a content object's bytes.
pub enum ContentReader {
    /// A symlink: no content.
    Empty,
    /// A bare object file.
    Plain(File),
    /// A decompressing `.filez` reader, bounded to the declared size.
    Deflate(Box<std::io::Take<DeflateDecoder<BufReader<File>>>>),
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ContentReader::Empty => Ok(0),
            ContentReader::Plain(f) => f.read(buf),
            ContentReader::Deflate(d) => d.read(buf),
        }
    }
}

/// Hashes a content stream: prefix, header, then the content bytes.
pub struct ContentHasher(Sha256);

impl ContentHasher {
    /// Start with a header.
    pub fn new(header: &FileHeader) -> Self {
        let hb = header.to_checksum_bytes();
        let mut h = Sha256::new();
        h.update(header_prefix(hb.len()));
        h.update(&hb);
        ContentHasher(h)
    }
    /// Feed content.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The object checksum.
    pub fn finish(self) -> Checksum {
        Checksum(self.0.finalize().into())
    }
}

/// Checksum of a content object from its header and full content.
pub fn content_checksum(header: &FileHeader, content: &mut dyn Read) -> std::io::Result<Checksum> {
    let mut h = ContentHasher::new(header);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// A set of object writes that become visible together.
///
/// Objects are written into a private staging directory under `tmp/`; `commit` flushes
/// them to disk, then renames them into `objects/`. A process killed at any point leaves
/// only complete objects in `objects/` and a stale staging directory that the next
/// transaction deletes.
pub struct Transaction<'r> {
    repo: &'r Repo,
    staging: PathBuf,
    /// Staging subdirectories made so far (one `mkdir` each, not one per object).
    made_dirs: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Objects staged by this transaction so far (saves a failed `statx` per lookup).
    staged: std::sync::Mutex<std::collections::HashSet<ObjectName>>,
    /// Unnamed temporary files work here (cleared at the first failure to make one).
    unnamed_ok: std::sync::atomic::AtomicBool,
    _staging_handle: File,
    _lock: RepoLock,
}

impl<'r> Transaction<'r> {
    /// The repository.
    pub fn repo(&self) -> &'r Repo {
        self.repo
    }

    /// A path for a temporary file inside this transaction's staging directory; it is
    /// removed with the directory if the caller leaves it behind.
    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!(".tmp-{name}"))
    }

    /// The bytes of a metadata object, stored or staged in this transaction.
    pub fn read_meta_bytes(&self, name: &ObjectName) -> Result<Vec<u8>> {
        match self.repo.read_meta_bytes(name) {
            Err(Error::NotFound(_)) => {
                let p = self.staging.join(loose_relpath(self.repo.mode, name));
                match fs::read(&p) {
                    Ok(b) => Ok(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(Error::NotFound(*name))
                    }
                    Err(e) => Err(Error::Io { path: p, error: e }),
                }
            }
            other => other,
        }
    }

    /// Whether the object is stored or staged.
    pub fn has_object(&self, name: &ObjectName) -> bool {
        self.staged.lock().is_ok_and(|s| s.contains(name)) || self.repo.has_object(name)
    }

    /// Record an object renamed into the staging directory (which starts empty: see
    /// `Repo::sweep_staging`).
    fn mark_staged(&self, name: &ObjectName) {
        if let Ok(mut s) = self.staged.lock() {
            s.insert(*name);
        }
    }

    fn staged_path(&self, name: &ObjectName) -> Result<PathBuf> {
        let p = self.staging.join(loose_relpath(self.repo.mode, name));
        if let Some(dir) = p.parent() {
            let known = self.made_dirs.lock().is_ok_and(|d| d.contains(dir));
            if !known {
                fs::create_dir_all(dir).at(dir)?;
                if let Ok(mut d) = self.made_dirs.lock() {
                    d.insert(dir.to_path_buf());
                }
            }
        }
        Ok(p)
    }

    /// Store a metadata object; returns its checksum.
    pub fn write_meta(&self, objtype: ObjectType, data: &[u8]) -> Result<Checksum> {
        let c = Checksum::of(data);
        self.write_meta_as(&ObjectName::new(c, objtype), data)?;
        Ok(c)
    }

    /// Store a metadata object under a given name (for objects verified elsewhere).
    pub fn write_meta_as(&self, name: &ObjectName, data: &[u8]) -> Result<()> {
        if self.has_object(name) {
            return Ok(());
        }
        let dest = self.staged_path(name)?;
        let mut tmp = self.object_tempfile()?;
        let tmp_path = tmp.path(&self.staging);
        tmp.file_mut().write_all(data).at(&tmp_path)?;
        tmp.file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .at(&tmp_path)?;
        tmp.persist(&dest)?;
        self.mark_staged(name);
        Ok(())
    }

    fn tempfile(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.staging)
            .at(&self.staging)
    }

    /// A new file for an object being written: unnamed (`O_TMPFILE`) where the system
    /// allows naming it later (`sys::link_unnamed`), so it costs no directory entry
    /// until it is complete; a named temporary file otherwise.
    fn object_tempfile(&self) -> Result<ObjectTemp> {
        if self.unnamed_ok.load(std::sync::atomic::Ordering::Relaxed) {
            match rustix::fs::open(
                &self.staging,
                rustix::fs::OFlags::TMPFILE
                    | rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok(ObjectTemp::Unnamed(File::from(fd))),
                Err(_) => self
                    .unnamed_ok
                    .store(false, std::sync::atomic::Ordering::Relaxed),
            }
        }
        self.tempfile().map(ObjectTemp::Named)
    }

    /// Store a content object whose content comes from `content` (exactly `size` bytes
    /// for a regular file, nothing for a symlink). `source` names the input in errors.
    pub fn write_content(
        &self,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        source: &str,
    ) -> Result<Checksum> {
        self.write_content_checked(header, size, content, source, None)
    }

    /// Like [`Transaction::write_content`], but stores nothing unless the content hashes
    /// to `expected` (for objects that arrive from elsewhere under a given name).
    pub fn write_content_expecting(
        &self,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        expected: &Checksum,
    ) -> Result<()> {
        self.write_content_checked(
            header,
            size,
            content,
            &format!("{expected}.file"),
            Some(expected),
        )
        .map(drop)
    }

    fn write_content_checked(
        &self,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        source: &str,
        expected: Option<&Checksum>,
    ) -> Result<Checksum> {
        header.validate().map_err(|reason| Error::InvalidObject {
            object: source.to_owned(),
            reason,
        })?;
        if header.is_symlink() {
            let c = ContentHasher::new(header).finish();
            check_expected(&c, expected)?;
            return self.write_symlink(header);
        }
        let mut hasher = ContentHasher::new(header);
        // Bare objects get their xattrs by path.
        let mut tmp = if self.repo.mode == RepoMode::Bare {
            ObjectTemp::Named(self.tempfile()?)
        } else {
            self.object_tempfile()?
        };
        let tmp_path = tmp.path(&self.staging);
        // Most objects are small: a buffer just larger than the content saves zeroing
        // 128 KiB per object (one byte more, so reading past the end is still seen).
        let buf_len =
            usize::try_from(size.saturating_add(1)).map_or(128 * 1024, |n| n.min(128 * 1024));
        let mut buf = vec![0u8; buf_len];
        let mut copied = 0u64;
        let short = |copied: u64| Error::InvalidObject {
            object: source.to_owned(),
            reason: format!("content is {copied} bytes, expected {size}"),
        };
        let mut pump = |out: &mut dyn Write| -> Result<()> {
            loop {
                // Whole buffers: a write that ends inside a filesystem block makes the
                // kernel zero the rest of it first.
                let n = sys::read_full(content, &mut buf).at(source)?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                if copied > size {
                    return Err(short(copied));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).at(&tmp_path)?;
            }
            Ok(())
        };
        match self.repo.mode {
            RepoMode::Archive => {
                let hb = header.to_archive_bytes(size);
                let file = tmp.file_mut();
                file.write_all(&header_prefix(hb.len())).at(&tmp_path)?;
                file.write_all(&hb).at(&tmp_path)?;
                let mut enc = DeflateEncoder::new(
                    std::io::BufWriter::with_capacity(128 * 1024, &mut *file),
                    Compression::new(self.repo.zlib_level()),
                );
                pump(&mut enc)?;
                enc.finish().and_then(|mut w| w.flush()).at(&tmp_path)?;
                file.set_permissions(fs::Permissions::from_mode(0o644))
                    .at(&tmp_path)?;
            }
            mode => {
                pump(tmp.file_mut())?;
                let file = tmp.file();
                match mode {
                    RepoMode::Bare => {
                        rustix::fs::fchown(
                            file,
                            Some(rustix::fs::Uid::from_raw(header.uid)),
                            Some(rustix::fs::Gid::from_raw(header.gid)),
                        )
                        .at(&tmp_path)?;
                        file.set_permissions(fs::Permissions::from_mode(header.mode & 0o7777))
                            .at(&tmp_path)?;
                        sys::set_xattrs(&tmp_path, &header.xattrs)?;
                    }
                    RepoMode::BareUser => {
                        let disk_mode = (header.mode & 0o775) | 0o400;
                        file.set_permissions(fs::Permissions::from_mode(disk_mode))
                            .at(&tmp_path)?;
                        sys::fset_xattr(
                            file,
                            &tmp_path,
                            BARE_USER_META_XATTR,
                            &header.to_bare_user_meta(),
                        )?;
                    }
                    _ => {
                        file.set_permissions(fs::Permissions::from_mode(header.mode & 0o775))
                            .at(&tmp_path)?;
                    }
                }
                sys::zero_times_fd(file, &tmp_path)?;
            }
        }
        if self.repo.fsync {
            // The commit flushes every staged object: start the big ones now.
            sys::start_writeback(tmp.file(), copied);
        }
        if copied != size {
            return Err(short(copied));
        }
        let c = hasher.finish();
        check_expected(&c, expected)?;
        let name = ObjectName::new(c, ObjectType::File);
        if !self.has_object(&name) {
            tmp.persist(&self.staged_path(&name)?)?;
            self.mark_staged(&name);
        }
        Ok(c)
    }

    /// Store a content object received in archive (`.filez`) form in the file `path`
    /// (inside the repository's `tmp/`). It is decompressed and hashed first; only if it
    /// is exactly `expected` is it kept: moved in as it is for archive repositories,
    /// unpacked for the others. The file is consumed either way.
    pub fn write_archived_content(&self, path: &Path, expected: &Checksum) -> Result<()> {
        let result = self.write_archived_content_keep(path, expected).map(drop);
        let _ = fs::remove_file(path);
        result
    }

    /// [`Self::write_archived_content`], but a file whose content was unpacked (into a
    /// repository that is not in archive mode) or refused is left where it is, for the
    /// caller to reuse or delete: rewriting a file costs no inode, and creating files
    /// right after deleting others is slow on some filesystems (ext4 without a journal
    /// skips recently freed inodes one by one). Returns whether `path` still exists.
    pub fn write_archived_content_keep(&self, path: &Path, expected: &Checksum) -> Result<bool> {
        let name = ObjectName::new(*expected, ObjectType::File);
        {
            let (header, size, mut reader) = open_filez(path, &name)?;
            if self.repo.mode == RepoMode::Archive {
                let mut hasher = ContentHasher::new(&header);
                let mut buf = vec![0u8; 128 * 1024];
                let mut total = 0u64;
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| invalid(&name, format!("bad compressed content: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    hasher.update(&buf[..n]);
                }
                if !header.is_symlink() && total != size {
                    return Err(invalid(
                        &name,
                        format!("content is {total} bytes, header says {size}"),
                    ));
                }
                check_expected(&hasher.finish(), Some(expected))?;
                if !self.has_object(&name) {
                    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).at(path)?;
                    fs::rename(path, self.staged_path(&name)?).at(path)?;
                    self.mark_staged(&name);
                    return Ok(false);
                }
                Ok(true)
            } else {
                self.write_content_expecting(&header, size, &mut reader, expected)
                    .map(|()| true)
            }
        }
    }

    /// Store a content object from a whole `.filez` held in memory (a small download),
    /// verified against `expected` as [`Self::write_archived_content`] does. Archive
    /// repositories keep the `.filez` itself, so there it goes through a file.
    pub fn write_archived_content_bytes(&self, filez: &[u8], expected: &Checksum) -> Result<()> {
        let name = ObjectName::new(*expected, ObjectType::File);
        if self.repo.mode == RepoMode::Archive {
            let tmp = self.tempfile()?;
            let (mut file, path) = tmp.keep().map_err(|e| Error::Io {
                path: self.staging.clone(),
                error: e.error,
            })?;
            file.write_all(filez).at(&path)?;
            drop(file);
            return self.write_archived_content(&path, expected);
        }
        let mut rest = filez;
        let (header, size) = read_filez_header(&mut rest, &name)?;
        if header.is_symlink() {
            return self.write_content_expecting(&header, size, &mut std::io::empty(), expected);
        }
        let mut content = DeflateDecoder::new(rest).take(size);
        self.write_content_expecting(&header, size, &mut content, expected)
    }

    fn write_symlink(&self, header: &FileHeader) -> Result<Checksum> {
        let c = ContentHasher::new(header).finish();
        let name = ObjectName::new(c, ObjectType::File);
        if self.has_object(&name) {
            return Ok(c);
        }
        let dest = self.staged_path(&name)?;
        match self.repo.mode {
            RepoMode::Archive | RepoMode::BareUser => {
                let mut tmp = self.object_tempfile()?;
                let tmp_path = tmp.path(&self.staging);
                let file = tmp.file_mut();
                if self.repo.mode == RepoMode::Archive {
                    let hb = header.to_archive_bytes(0);
                    let mut bytes = header_prefix(hb.len()).to_vec();
                    bytes.extend_from_slice(&hb);
                    file.write_all(&bytes).at(&tmp_path)?;
                } else {
                    let mut bytes = header.symlink_target.as_bytes().to_vec();
                    bytes.push(0);
                    file.write_all(&bytes).at(&tmp_path)?;
                    sys::fset_xattr(
                        file,
                        &tmp_path,
                        BARE_USER_META_XATTR,
                        &header.to_bare_user_meta(),
                    )?;
                }
                file.set_permissions(fs::Permissions::from_mode(0o644))
                    .at(&tmp_path)?;
                if self.repo.mode == RepoMode::BareUser {
                    sys::zero_times_fd(file, &tmp_path)?;
                }
                tmp.persist(&dest)?;
            }
            RepoMode::Bare | RepoMode::BareUserOnly => {
                // A fresh name each time: other threads may be writing the same
                // symlink object at once (many identical links in one tree).
                let tmp = tempfile::Builder::new()
                    .prefix(".tmp-link-")
                    .make_in(&self.staging, |p| {
                        std::os::unix::fs::symlink(&header.symlink_target, p)
                    })
                    .at(&self.staging)?;
                if self.repo.mode == RepoMode::Bare {
                    sys::lchown(tmp.path(), header.uid, header.gid)?;
                    sys::set_xattrs(tmp.path(), &header.xattrs)?;
                }
                tmp.into_temp_path().persist(&dest).map_err(|e| Error::Io {
                    path: dest.clone(),
                    error: e.error,
                })?;
            }
        }
        self.mark_staged(&name);
        Ok(c)
    }

    /// Make every staged object durable and visible in `objects/`.
    pub fn commit(self) -> Result<()> {
        crate::fault::point("commit-before-sync");
        if self.repo.fsync {
            sys::syncfs(&self.staging)?;
            tracing::debug!("commit: staged objects flushed");
        }
        let moved = self.repo.move_staged_objects(&self.staging, false)?;
        tracing::debug!("commit: {moved} objects moved into objects/");
        if self.repo.fsync {
            sys::syncfs(&self.repo.path.join("objects"))?;
            tracing::debug!("commit: renames flushed");
        }
        // Left empty for the next transaction to reuse (see `Repo::sweep_staging`),
        // under a name that says it holds nothing; the lock goes with the handle.
        let idle = self.staging.with_file_name(
            self.staging
                .file_name()
                .map(|n| n.to_string_lossy().replacen(STAGING_PREFIX, IDLE_PREFIX, 1))
                .unwrap_or_else(|| IDLE_PREFIX.into()),
        );
        fs::rename(&self.staging, &idle).at(&idle)?;
        Ok(())
    }
}

fn check_expected(actual: &Checksum, expected: Option<&Checksum>) -> Result<()> {
    match expected {
        Some(e) if e != actual => Err(Error::Corrupted {
            object: ObjectName::new(*e, ObjectType::File),
            actual: actual.to_hex(),
        }),
        _ => Ok(()),
    }
}

/// Open a `.filez` file: its header, content size and a decompressing reader.
fn open_filez(path: &Path, name: &ObjectName) -> Result<(FileHeader, u64, ContentReader)> {
    let file = File::open(path).at(path)?;
    let mut r = BufReader::new(file);
    let (header, size) = read_filez_header(&mut r, name)?;
    let reader = if header.is_symlink() {
        ContentReader::Empty
    } else {
        ContentReader::Deflate(Box::new(DeflateDecoder::new(r).take(size)))
    };
    Ok((header, size, reader))
}

/// A `.filez` object's header and content size, read from its start.
fn read_filez_header(r: &mut impl Read, name: &ObjectName) -> Result<(FileHeader, u64)> {
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix)
        .map_err(|_| invalid(name, "truncated header".into()))?;
    let hlen = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if hlen > 1 << 20 {
        return Err(invalid(name, format!("header length {hlen} is too large")));
    }
    let mut hbytes = vec![0u8; hlen];
    r.read_exact(&mut hbytes)
        .map_err(|_| invalid(name, "truncated header".into()))?;
    FileHeader::from_archive_bytes(&hbytes).map_err(|e| invalid(name, e))
}

/// An object's file while it is written (see `Transaction::object_tempfile`).
enum ObjectTemp {
    /// `O_TMPFILE`: no name until [`ObjectTemp::persist`] links it.
    Unnamed(File),
    /// A named temporary file in the staging directory.
    Named(tempfile::NamedTempFile),
}

impl ObjectTemp {
    fn file(&self) -> &File {
        match self {
            ObjectTemp::Unnamed(f) => f,
            ObjectTemp::Named(t) => t.as_file(),
        }
    }

    fn file_mut(&mut self) -> &mut File {
        match self {
            ObjectTemp::Unnamed(f) => f,
            ObjectTemp::Named(t) => t.as_file_mut(),
        }
    }

    /// The path to name in errors (the staging directory for an unnamed file).
    fn path(&self, staging: &Path) -> PathBuf {
        match self {
            ObjectTemp::Unnamed(_) => staging.to_path_buf(),
            ObjectTemp::Named(t) => t.path().to_path_buf(),
        }
    }

    /// Give the complete file the name `dest`. An object already there is the same
    /// object (staged meanwhile by another thread), so that is not an error.
    fn persist(self, dest: &Path) -> Result<()> {
        match self {
            ObjectTemp::Named(t) => persist(t, dest),
            ObjectTemp::Unnamed(f) => sys::link_unnamed(&f, dest).map(drop),
        }
    }
}

fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    tmp.persist(dest).map_err(|e| Error::Io {
        path: dest.to_path_buf(),
        error: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.filez` for `content`, as an archive repository stores it, and its checksum.
    fn filez(dir: &Path, content: &[u8]) -> (Vec<u8>, Checksum) {
        let repo = Repo::init(&dir.join("archive-src"), RepoMode::Archive).unwrap();
        let header = FileHeader {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            symlink_target: String::new(),
            xattrs: Vec::new(),
        };
        let txn = repo.begin().unwrap();
        let c = txn
            .write_content(&header, content.len() as u64, &mut &content[..], "test")
            .unwrap();
        txn.commit().unwrap();
        let path = repo.object_path(&ObjectName::new(c, ObjectType::File));
        (fs::read(path).unwrap(), c)
    }

    /// The entries of the repository's `tmp/` and every file below them.
    fn tmp_state(repo: &Repo) -> (Vec<String>, Vec<PathBuf>) {
        let tmp = repo.path().join("tmp");
        let mut names: Vec<String> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut files = Vec::new();
        let mut stack = vec![tmp];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    files.push(e.path());
                }
            }
        }
        (names, files)
    }

    #[test]
    fn committed_staging_dir_is_left_empty_and_reused_by_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), RepoMode::BareUser).unwrap();
        let txn = repo.begin().unwrap();
        let a = txn.write_meta(ObjectType::Commit, b"first").unwrap();
        fs::write(txn.temp_path("leftover"), vec![1u8; 10_000]).unwrap();
        let staging_ino = fs::metadata(&txn.staging).unwrap().ino();
        txn.commit().unwrap();
        assert!(repo.has_object(&ObjectName::new(a, ObjectType::Commit)));
        let (names, files) = tmp_state(&repo);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(IDLE_PREFIX), "{names:?}");
        assert!(files.is_empty(), "{files:?}");

        let txn = repo.begin().unwrap();
        assert_eq!(fs::metadata(&txn.staging).unwrap().ino(), staging_ino);
        let name = txn
            .staging
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(STAGING_PREFIX), "{name}");
        assert!(txn.has_object(&ObjectName::new(a, ObjectType::Commit)));
        let b = txn.write_meta(ObjectType::Commit, b"second").unwrap();
        assert!(txn.has_object(&ObjectName::new(b, ObjectType::Commit)));
        txn.commit().unwrap();
        assert!(repo.has_object(&ObjectName::new(b, ObjectType::Commit)));
        assert_eq!(tmp_state(&repo).0.len(), 1);
    }

    #[test]
    fn prefixes_new_to_the_repository_move_whole_but_commits_move_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), RepoMode::BareUser).unwrap();
        let txn = repo.begin().unwrap();
        let meta = ObjectName::new(
            txn.write_meta(ObjectType::DirMeta, b"meta").unwrap(),
            ObjectType::DirMeta,
        );
        let mut commit_data = b"commit".to_vec();
        // A commit in a prefix of its own.
        let commit = loop {
            let c = Checksum::of(&commit_data);
            if c.to_hex()[..2] != meta.checksum.to_hex()[..2] {
                break ObjectName::new(
                    txn.write_meta(ObjectType::Commit, &commit_data).unwrap(),
                    ObjectType::Commit,
                );
            }
            commit_data.push(b'.');
        };
        let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
        let prefix = |n: &ObjectName| n.checksum.to_hex()[..2].to_owned();
        let meta_dir_ino = ino(txn.staging.join(prefix(&meta)));
        let commit_dir_ino = ino(txn.staging.join(prefix(&commit)));
        txn.commit().unwrap();
        let objects = repo.path().join("objects");
        assert_eq!(ino(objects.join(prefix(&meta))), meta_dir_ino);
        assert_ne!(ino(objects.join(prefix(&commit))), commit_dir_ino);
        assert!(repo.has_object(&meta) && repo.has_object(&commit));

        // The reused staging dir lacks the moved prefix; the next object there still
        // lands beside the first.
        let txn = repo.begin().unwrap();
        let mut data = b"meta2".to_vec();
        let other = loop {
            if Checksum::of(&data).to_hex()[..2] == prefix(&meta) {
                break ObjectName::new(
                    txn.write_meta(ObjectType::DirMeta, &data).unwrap(),
                    ObjectType::DirMeta,
                );
            }
            data.push(b'.');
        };
        txn.commit().unwrap();
        assert!(repo.has_object(&other) && repo.has_object(&meta));
    }

    #[test]
    fn objects_of_a_dead_transaction_are_recovered_and_its_dir_reused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), RepoMode::Archive).unwrap();
        // Two writers die (their locks go with their handles) with objects staged.
        let dead1 = repo.begin().unwrap();
        let dead2 = repo.begin().unwrap();
        let a = dead1.write_meta(ObjectType::DirMeta, b"one").unwrap();
        let b = dead2.write_meta(ObjectType::DirMeta, b"two").unwrap();
        fs::write(dead1.temp_path("partial"), b"half an object").unwrap();
        drop((dead1, dead2));
        let (names, _) = tmp_state(&repo);
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!repo.has_object(&ObjectName::new(a, ObjectType::DirMeta)));

        let txn = repo.begin().unwrap();
        for c in [a, b] {
            assert!(repo.has_object(&ObjectName::new(c, ObjectType::DirMeta)));
        }
        // One dir is reused, empty; the other is gone.
        let (names, files) = tmp_state(&repo);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(files.is_empty(), "{files:?}");
        txn.commit().unwrap();
    }

    #[test]
    fn archived_content_kept_for_reuse_only_when_unpacked_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let content = vec![7u8; 300_000];
        let (bytes, c) = filez(dir.path(), &content);
        let name = ObjectName::new(c, ObjectType::File);

        let user = Repo::init(&dir.path().join("user"), RepoMode::BareUser).unwrap();
        let txn = user.begin().unwrap();
        let path = txn.temp_path("download");
        // Refused: wrong checksum, nothing stored, the file is left for the caller.
        fs::write(&path, &bytes).unwrap();
        let wrong = Checksum::of(b"something else");
        assert!(txn.write_archived_content_keep(&path, &wrong).is_err());
        assert!(path.exists());
        assert!(!txn.has_object(&ObjectName::new(wrong, ObjectType::File)));
        // Unpacked: stored, and the same file is still there to be overwritten.
        assert!(txn.write_archived_content_keep(&path, &c).unwrap());
        assert!(path.exists());
        txn.commit().unwrap();
        let (_, mut reader, size) = user.open_file(&c).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!((size, out), (content.len() as u64, content));

        // Archive repositories take the file itself.
        let archive = Repo::init(&dir.path().join("archive"), RepoMode::Archive).unwrap();
        let txn = archive.begin().unwrap();
        let path = txn.temp_path("download");
        fs::write(&path, &bytes).unwrap();
        assert!(!txn.write_archived_content_keep(&path, &c).unwrap());
        assert!(!path.exists());
        txn.commit().unwrap();
        assert!(archive.has_object(&name));
    }

    #[test]
    fn same_symlink_written_by_many_threads_at_once_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [RepoMode::Bare, RepoMode::BareUserOnly] {
            let repo = Repo::init(&dir.path().join(format!("{mode:?}")), mode).unwrap();
            let header = FileHeader {
                uid: 0,
                gid: 0,
                mode: 0o120777,
                symlink_target: "/bin/busybox".into(),
                xattrs: Vec::new(),
            };
            let txn = repo.begin().unwrap();
            let sums: Vec<Checksum> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            (0..200)
                                .map(|_| {
                                    txn.write_content(&header, 0, &mut std::io::empty(), "test")
                                        .unwrap()
                                })
                                .last()
                                .unwrap()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
            txn.commit().unwrap();
            let path = repo.object_path(&ObjectName::new(sums[0], ObjectType::File));
            assert_eq!(fs::read_link(path).unwrap(), Path::new("/bin/busybox"));
        }
    }
}
