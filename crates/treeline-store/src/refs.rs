//! Refs: names pointing at commits, under `refs/heads`, `refs/remotes` and `refs/mirrors`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::repo::{Repo, write_file_atomic};

fn valid_fragment(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Check a ref name as ostree does: `/`-separated fragments of word characters, `-`, `.`,
/// each starting with a word character.
pub fn validate_ref_name(name: &str) -> Result<()> {
    if !name.is_empty() && name.split('/').all(valid_fragment) {
        Ok(())
    } else {
        Err(Error::InvalidRef(name.to_owned()))
    }
}

/// Check a remote name (a single ref fragment).
pub fn validate_remote_name(name: &str) -> Result<()> {
    if valid_fragment(name) {
        Ok(())
    } else {
        Err(Error::InvalidRef(name.to_owned()))
    }
}

/// A parsed `[REMOTE:]REF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefSpec {
    /// The remote, for refs written by pulls.
    pub remote: Option<String>,
    /// The ref name.
    pub name: String,
}

impl RefSpec {
    /// Parse and validate.
    pub fn parse(s: &str) -> Result<Self> {
        let (remote, name) = match s.split_once(':') {
            Some((r, n)) => {
                validate_remote_name(r)?;
                (Some(r.to_owned()), n)
            }
            None => (None, s),
        };
        validate_ref_name(name)?;
        Ok(RefSpec {
            remote,
            name: name.to_owned(),
        })
    }

    fn relpath(&self) -> PathBuf {
        match &self.remote {
            Some(r) => Path::new("refs/remotes").join(r).join(&self.name),
            None => Path::new("refs/heads").join(&self.name),
        }
    }
}

impl std::fmt::Display for RefSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            Some(r) => write!(f, "{r}:{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

fn read_ref_file(path: &Path) -> Result<Option<Checksum>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim_end();
            text.parse().map(Some).map_err(|_| Error::InvalidObject {
                object: format!("ref {}", path.display()),
                reason: format!("does not contain a checksum: {text:?}"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(None),
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            error: e,
        }),
    }
}

/// Walk a refs directory. Unreadable ref files are collected in `broken` rather than
/// failing the walk, so one damaged ref hides no other and can still be deleted.
fn walk_refs(
    base: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, Checksum>,
    broken: &mut Vec<(String, Error)>,
) -> Result<()> {
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                path: base.to_path_buf(),
                error: e,
            });
        }
    };
    for entry in entries {
        let entry = entry.at(base)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(".tmp-") {
            continue;
        }
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            walk_refs(&path, &full, out, broken)?;
        } else {
            match read_ref_file(&path) {
                Ok(Some(c)) => {
                    out.insert(full, c);
                }
                Ok(None) => {}
                Err(e) => broken.push((full, e)),
            }
        }
    }
    Ok(())
}

impl Repo {
    /// Local refs (`refs/heads`) by name. Damaged ref files are skipped with a warning;
    /// [`Repo::broken_refs`] lists them.
    pub fn list_refs(&self) -> Result<BTreeMap<String, Checksum>> {
        let mut out = BTreeMap::new();
        let mut broken = Vec::new();
        walk_refs(&self.path().join("refs/heads"), "", &mut out, &mut broken)?;
        for (name, e) in broken {
            tracing::warn!("skipping ref {name}: {e}");
        }
        Ok(out)
    }

    /// Ref files (local, remote and mirror) that do not hold a checksum, with the error.
    pub fn broken_refs(&self) -> Result<Vec<(String, Error)>> {
        let mut broken = Vec::new();
        for dir in ["refs/heads", "refs/remotes", "refs/mirrors"] {
            walk_refs(
                &self.path().join(dir),
                "",
                &mut BTreeMap::new(),
                &mut broken,
            )?;
        }
        Ok(broken)
    }

    /// Remote refs as `remote:name`, and mirror refs as `(collection, name)`.
    pub fn list_remote_refs(&self) -> Result<BTreeMap<String, Checksum>> {
        let mut raw = BTreeMap::new();
        walk_refs(
            &self.path().join("refs/remotes"),
            "",
            &mut raw,
            &mut Vec::new(),
        )?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| {
                let (remote, name) = k.split_once('/')?;
                Some((format!("{remote}:{name}"), v))
            })
            .collect())
    }

    /// Every ref the repository holds, local and remote: the roots for prune.
    pub fn all_ref_targets(&self) -> Result<Vec<Checksum>> {
        let mut v: Vec<Checksum> = self.list_refs()?.into_values().collect();
        v.extend(self.list_remote_refs()?.into_values());
        let mut mirrors = BTreeMap::new();
        walk_refs(
            &self.path().join("refs/mirrors"),
            "",
            &mut mirrors,
            &mut Vec::new(),
        )?;
        v.extend(mirrors.into_values());
        Ok(v)
    }

    /// Read a ref; `None` when it does not exist.
    pub fn read_ref(&self, spec: &RefSpec) -> Result<Option<Checksum>> {
        read_ref_file(&self.path().join(spec.relpath()))
    }

    /// Point a ref at a commit, atomically and durably; `None` deletes it.
    pub fn set_ref(&self, spec: &RefSpec, target: Option<&Checksum>) -> Result<()> {
        let path = self.path().join(spec.relpath());
        match target {
            Some(c) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).at(dir)?;
                }
                write_file_atomic(&path, format!("{c}\n").as_bytes())
            }
            None => match fs::remove_file(&path) {
                Ok(()) => {
                    // Drop now-empty parent directories, but never the refs/ roots.
                    let root = self.path().join(if spec.remote.is_some() {
                        "refs/remotes"
                    } else {
                        "refs/heads"
                    });
                    let mut dir = path.parent().map(Path::to_path_buf);
                    while let Some(d) = dir {
                        if d == root || fs::remove_dir(&d).is_err() {
                            break;
                        }
                        dir = d.parent().map(Path::to_path_buf);
                    }
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::RevNotFound(spec.to_string()))
                }
                Err(e) => Err(Error::Io { path, error: e }),
            },
        }
    }

    /// Resolve a revision: a full checksum, a unique checksum prefix of a commit, a
    /// `[remote:]ref` (falling back to remote refs for a bare name), each optionally
    /// followed by `^` (parent), repeatable.
    pub fn resolve_rev(&self, rev: &str) -> Result<Checksum> {
        let base = rev.trim_end_matches('^');
        let parents = rev.len() - base.len();
        let mut c = self.resolve_base(base)?;
        for _ in 0..parents {
            c = self
                .load_commit(&c)?
                .parent
                .ok_or_else(|| Error::RevNotFound(rev.to_owned()))?;
        }
        Ok(c)
    }

    fn resolve_base(&self, rev: &str) -> Result<Checksum> {
        if let Ok(c) = rev.parse::<Checksum>() {
            return Ok(c);
        }
        if let Ok(spec) = RefSpec::parse(rev) {
            if let Some(c) = self.read_ref(&spec)? {
                return Ok(c);
            }
            if spec.remote.is_none() {
                // `remote/ref` names a remote ref directly; then each remote's `ref`.
                if let Some(c) = read_ref_file(&self.path().join("refs/remotes").join(rev))? {
                    return Ok(c);
                }
                for (k, v) in self.list_remote_refs()? {
                    if k.split_once(':').map(|(_, n)| n) == Some(rev) {
                        return Ok(v);
                    }
                }
            }
        }
        if rev.len() >= 4 && rev.len() < 64 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lower = rev.to_ascii_lowercase();
            let dir = self.path().join("objects").join(&lower[..2]);
            let mut found: Option<Checksum> = None;
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let fname = entry.file_name();
                    let Some(fname) = fname.to_str() else {
                        continue;
                    };
                    let Some(rest) = fname.strip_suffix(".commit") else {
                        continue;
                    };
                    let full = format!("{}{rest}", &lower[..2]);
                    if full.starts_with(&lower) {
                        if found.is_some() {
                            return Err(Error::AmbiguousRev(rev.to_owned()));
                        }
                        found = full.parse().ok();
                    }
                }
            }
            if let Some(c) = found {
                return Ok(c);
            }
        }
        if RefSpec::parse(rev).is_err() && rev.parse::<Checksum>().is_err() {
            return Err(Error::InvalidRef(rev.to_owned()));
        }
        Err(Error::RevNotFound(rev.to_owned()))
    }

    /// Whether a commit object is present.
    pub fn has_commit(&self, c: &Checksum) -> bool {
        self.has_object(&ObjectName::new(*c, ObjectType::Commit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_ostree_rules() {
        for ok in [
            "main",
            "a/b/c",
            "é/ü",
            "ä",
            "a..b",
            "_x",
            "a-",
            "os/x86_64/1.0",
        ] {
            assert!(validate_ref_name(ok).is_ok(), "{ok} rejected");
        }
        for bad in ["-a", "a b", "a//b", "a/", "", "/a", "../x", "a/../b", ".a"] {
            assert!(validate_ref_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn refspec_splits_remote() {
        let r = RefSpec::parse("origin:os/main").unwrap();
        assert_eq!(r.remote.as_deref(), Some("origin"));
        assert_eq!(r.name, "os/main");
        assert!(RefSpec::parse("bad remote:x").is_err());
    }
}
