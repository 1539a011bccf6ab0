//! Updates for hosts without a network: a repository on a disk (any mode) or a static
//! delta made by `static-delta generate`, read from a path instead of a URL.
//!
//! The same guarantees as a pull: every object is verified against its name as it is
//! stored, signatures are checked before anything is copied when the caller's remote
//! requires them, and the caller moves the ref only once the commit is complete.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use treeline_store::delta::{self, Superblock, parse_superblock_file};
use treeline_store::object::Commit;
use treeline_store::progress::Progress;
use treeline_store::refs::RefSpec;
use treeline_store::sign::PublicKeys;
use treeline_store::{Checksum, ObjectName, ObjectType, Repo};

use crate::{Error, Result};

/// Where an offline update comes from.
pub enum OfflineSource {
    /// An OSTree repository directory.
    Repo {
        /// The path given.
        path: PathBuf,
        /// The repository, opened read-only.
        repo: Repo,
    },
    /// A static delta.
    Delta {
        /// The path given (the delta directory or its superblock file).
        path: PathBuf,
        /// Its decoded superblock (which carries the TO commit).
        superblock: Box<Superblock>,
    },
}

fn offline_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Offline {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl OfflineSource {
    /// Recognize `path`: a directory with `config` and `objects/` is a repository; a
    /// directory with a `superblock`, or any other file, is a static delta.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|e| offline_err(path, e.to_string()))?;
        if meta.is_dir() && path.join("objects").is_dir() {
            let repo = Repo::open(path)
                .map_err(|e| offline_err(path, format!("not a readable OSTree repository: {e}")))?;
            return Ok(Self::Repo {
                path: path.to_path_buf(),
                repo,
            });
        }
        let superblock_path = if meta.is_dir() {
            let sb = path.join("superblock");
            if !sb.is_file() {
                return Err(offline_err(
                    path,
                    "neither an OSTree repository (no objects/) nor a static delta \
                     directory (no superblock)",
                ));
            }
            sb
        } else {
            path.to_path_buf()
        };
        let bytes =
            fs::read(&superblock_path).map_err(|e| offline_err(&superblock_path, e.to_string()))?;
        let (superblock, _) = parse_superblock_file(&bytes).map_err(|e| {
            offline_err(
                &superblock_path,
                format!("not a static delta superblock: {e}"),
            )
        })?;
        if !superblock.fallbacks.is_empty() {
            return Err(offline_err(
                path,
                format!(
                    "static delta {} lists {} fallback object(s) that are not in it; \
                     generate it with --min-fallback-size=0",
                    superblock.name(),
                    superblock.fallbacks.len()
                ),
            ));
        }
        Ok(Self::Delta {
            path: path.to_path_buf(),
            superblock: Box::new(superblock),
        })
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        match self {
            Self::Repo { path, .. } | Self::Delta { path, .. } => path,
        }
    }

    /// The commit offered for the ref `name` (`remote:name` is tried too in a
    /// repository, as a pull mirror keeps it), or for `rev` (a checksum) when given. A
    /// delta offers its TO commit whatever the ref.
    pub fn target(&self, name: &str, remote: Option<&str>) -> Result<Checksum> {
        match self {
            Self::Repo { path, repo } => {
                let mut tried = vec![name.to_owned()];
                if let Some(r) = remote {
                    tried.push(format!("{r}:{name}"));
                }
                for rev in &tried {
                    if let Ok(c) = repo.resolve_rev(rev) {
                        return Ok(c);
                    }
                }
                let refs: Vec<String> = repo.list_refs()?.into_keys().collect();
                Err(offline_err(
                    path,
                    format!(
                        "the repository has no ref {} (it has: {})",
                        tried.join(" or "),
                        if refs.is_empty() {
                            "none".into()
                        } else {
                            refs.join(", ")
                        }
                    ),
                ))
            }
            Self::Delta { superblock, .. } => Ok(superblock.to),
        }
    }

    /// The commit object `target` as this source has it.
    pub fn commit(&self, target: &Checksum) -> Result<Commit> {
        match self {
            Self::Repo { repo, .. } => Ok(repo.load_commit(target)?),
            Self::Delta { path, superblock } => {
                if superblock.to != *target {
                    return Err(offline_err(
                        path,
                        format!("static delta leads to {}, not {target}", superblock.to),
                    ));
                }
                Ok(superblock.commit.clone())
            }
        }
    }

    /// Check `target`'s ed25519 signatures (in the repository's detached metadata, or
    /// carried by the delta) against `keys`, before anything is copied.
    pub fn verify_signature(&self, target: &Checksum, keys: &PublicKeys) -> Result<()> {
        let (bytes, detached) = match self {
            Self::Repo { repo, .. } => (
                repo.read_meta_bytes(&ObjectName::new(*target, ObjectType::Commit))?,
                repo.read_commitmeta(target)?,
            ),
            Self::Delta { superblock, .. } => {
                (superblock.commit.to_bytes(), superblock.detached_metadata())
            }
        };
        keys.verify_commit(target, &bytes, detached.as_ref())
            .map_err(|e| offline_err(self.path(), e.to_string()))
    }

    /// Whether `target` descends from `ancestor`, following parents through this source
    /// and `dest`. When the chain breaks on a commit neither has (a repository pulled
    /// with a depth, a delta across several versions), a delta made from `ancestor`, or
    /// a target no older than `ancestor`, is taken as descending from it.
    pub fn descends_from(
        &self,
        dest: &Repo,
        target: &Checksum,
        ancestor: &Checksum,
    ) -> Result<bool> {
        let load = |c: &Checksum| -> Result<Option<Commit>> {
            if let Self::Delta { superblock, .. } = self
                && superblock.to == *c
            {
                return Ok(Some(superblock.commit.clone()));
            }
            if let Self::Repo { repo, .. } = self
                && repo.has_commit(c)
            {
                return Ok(Some(repo.load_commit(c)?));
            }
            if dest.has_commit(c) {
                return Ok(Some(dest.load_commit(c)?));
            }
            Ok(None)
        };
        let mut cur = load(target)?;
        let start_time = cur.as_ref().map(|c| c.timestamp);
        while let Some(commit) = cur {
            match commit.parent {
                Some(p) if p == *ancestor => return Ok(true),
                Some(p) => cur = load(&p)?,
                // A root commit: the whole history is known and `ancestor` is not in it.
                None => return Ok(false),
            }
        }
        if let Self::Delta { superblock, .. } = self
            && superblock.from == Some(*ancestor)
        {
            return Ok(true);
        }
        let ancestor_time = dest.load_commit(ancestor).ok().map(|c| c.timestamp);
        Ok(matches!((start_time, ancestor_time), (Some(t), Some(a)) if t >= a))
    }

    /// Copy `target` and everything it needs into `dest`, verifying every object.
    /// Returns the number of objects written. No ref moves.
    pub fn fetch(&self, dest: &Repo, target: &Checksum, progress: &dyn Progress) -> Result<usize> {
        match self {
            Self::Repo { repo, path } => {
                let counting = Counting {
                    inner: progress,
                    items: AtomicUsize::new(0),
                };
                crate::local::pull_local(repo, dest, &[target.to_hex()], 0, None, &counting)
                    .map_err(|e| offline_err(path, e.to_string()))?;
                Ok(counting.items.into_inner())
            }
            Self::Delta { path, superblock } => {
                if superblock.to != *target {
                    return Err(offline_err(
                        path,
                        format!("static delta leads to {}, not {target}", superblock.to),
                    ));
                }
                let r = delta::apply_offline(dest, path)
                    .map_err(|e| offline_err(path, e.to_string()))?;
                Ok(r.objects_written)
            }
        }
    }

    /// Point `spec` at `target` in `dest`, once [`fetch`](Self::fetch) has completed it.
    pub fn set_ref(dest: &Repo, spec: &RefSpec, target: &Checksum) -> Result<()> {
        if !dest.has_commit(target) {
            return Err(Error::Store(treeline_store::Error::NotFound(
                ObjectName::new(*target, ObjectType::Commit),
            )));
        }
        dest.set_ref(spec, Some(target))?;
        Ok(())
    }
}

/// Counts the file objects `pull_local` writes, passing progress on.
struct Counting<'a> {
    inner: &'a dyn Progress,
    items: AtomicUsize,
}

impl Progress for Counting<'_> {
    fn set_total(&self, items: u64) {
        self.inner.set_total(items);
    }
    fn advance(&self, items: u64, bytes: u64) {
        self.items.fetch_add(
            usize::try_from(items).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        self.inner.advance(items, bytes);
    }
}
