//! The repository summary: every ref with its commit, plus repository metadata, in one
//! file that clients fetch first.

use std::fs;
use std::path::Path;

use gvariant::aligned_bytes::copy_to_align;
use gvariant::{Marker, Structure, gv};

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::metadata_from_entries;
use crate::repo::{Repo, write_file_atomic};
use crate::sign::SigningKey;
use crate::variant::{Metadata, Value};

/// A metadata dictionary borrowed for encoding.
type MetaEntries<'a> = Vec<(&'a str, &'a Value)>;
/// A ref's `(taya{sv})` borrowed for encoding.
type RefEntry<'a> = (u64, &'a [u8], &'a MetaEntries<'a>);

/// One ref in a summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRef {
    /// Ref name.
    pub name: String,
    /// Size of the commit object in bytes (a client's download limit for it).
    pub commit_size: u64,
    /// The commit.
    pub checksum: Checksum,
    /// Per-ref metadata (`ostree.commit.timestamp`, `ostree.commit.version`).
    pub metadata: Metadata,
}

/// A decoded `summary`: `(a(s(taya{sv}))a{sv})`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Summary {
    /// Refs, sorted by name.
    pub refs: Vec<SummaryRef>,
    /// Repository metadata.
    pub metadata: Metadata,
}

impl Summary {
    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let metas: Vec<MetaEntries<'_>> = self
            .refs
            .iter()
            .map(|r| r.metadata.0.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .collect();
        // The commit size is native-endian (not pre-swapped) in ostree's summaries.
        let inner: Vec<RefEntry<'_>> = self
            .refs
            .iter()
            .zip(&metas)
            .map(|(r, m)| (r.commit_size, r.checksum.as_bytes().as_slice(), m))
            .collect();
        let refs: Vec<(&str, &RefEntry<'_>)> = self
            .refs
            .iter()
            .zip(&inner)
            .map(|(r, i)| (r.name.as_str(), i))
            .collect();
        let meta: MetaEntries<'_> = self
            .metadata
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let mut out = Vec::new();
        let _ = gv!("(a(s(taya{sv}))a{sv})").serialize(&(&refs, &meta), &mut out);
        out
    }

    /// Decode and validate (normal form, 32-byte checksums, sorted refs).
    pub fn from_bytes(data: &[u8]) -> Result<Self, String> {
        let buf = copy_to_align(data);
        let (refs, meta) = gv!("(a(s(taya{sv}))a{sv})").cast(buf.as_ref()).to_tuple();
        let mut out = Summary {
            refs: Vec::with_capacity(refs.len()),
            metadata: metadata_from_entries(meta.iter().map(|e| e.to_tuple()))?,
        };
        for r in refs.iter() {
            let (name, inner) = r.to_tuple();
            let (size, csum, rmeta) = inner.to_tuple();
            out.refs.push(SummaryRef {
                name: name.to_str().to_owned(),
                commit_size: *size,
                checksum: Checksum::from_bytes(csum)
                    .ok_or_else(|| format!("ref {}: checksum is not 32 bytes", name.to_str()))?,
                metadata: metadata_from_entries(rmeta.iter().map(|e| e.to_tuple()))?,
            });
        }
        if out.to_bytes() != data {
            return Err("summary is not in GVariant normal form".into());
        }
        Ok(out)
    }

    /// The static deltas the summary lists: name (`FROM-TO` or `TO`) → superblock checksum.
    pub fn static_deltas(&self) -> Vec<(String, Checksum)> {
        let Some(d) = self
            .metadata
            .get("ostree.static-deltas")
            .and_then(Value::as_dict)
        else {
            return Vec::new();
        };
        d.0.iter()
            .filter(|(_, v)| v.type_str == "ay")
            .filter_map(|(k, v)| Some((k.clone(), Checksum::from_bytes(&v.data)?)))
            .collect()
    }

    /// A metadata string.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

/// Every static delta in the repository: name → SHA-256 of its superblock file.
pub fn list_static_deltas(repo: &Repo) -> Result<Vec<(String, Checksum)>> {
    crate::delta::list(repo)?
        .into_iter()
        .map(|name| {
            let sb = crate::delta::read_superblock_file(repo, &name)?;
            Ok((name.to_string(), Checksum::of(&sb)))
        })
        .collect()
}

/// Build the summary of a repository's local refs, with `extra` metadata first.
pub fn build_summary(repo: &Repo, extra: &Metadata, now: u64) -> Result<Summary> {
    let mut refs = Vec::new();
    for (name, c) in repo.list_refs()? {
        let bytes = repo.read_meta_bytes(&ObjectName::new(c, ObjectType::Commit))?;
        let commit = repo.load_commit(&c)?;
        let mut m = Metadata::new();
        m.insert("ostree.commit.timestamp", Value::u64_be(commit.timestamp));
        if let Some(v) = commit.version() {
            m.insert("ostree.commit.version", Value::string(&v));
        }
        refs.push(SummaryRef {
            name,
            commit_size: bytes.len() as u64,
            checksum: c,
            metadata: m,
        });
    }
    refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut metadata = extra.clone();
    metadata.insert("ostree.summary.last-modified", Value::u64_be(now));
    metadata.insert(
        "ostree.summary.mode",
        Value::string(repo.mode().config_name()),
    );
    let tombstones = repo
        .config()
        .boolean("core", "tombstone-commits")
        .ok()
        .flatten()
        .unwrap_or(false);
    metadata.insert(
        "ostree.summary.tombstone-commits",
        Value::boolean(tombstones),
    );
    metadata.insert("ostree.summary.indexed-deltas", Value::boolean(true));
    let no_deltas = repo
        .config()
        .boolean("core", "no-deltas-in-summary")
        .ok()
        .flatten()
        .unwrap_or(false);
    let deltas = list_static_deltas(repo)?;
    if !deltas.is_empty() && !no_deltas {
        let mut d = Metadata::new();
        for (name, c) in deltas {
            d.insert(&name, Value::bytes(c.as_bytes()));
        }
        metadata.insert("ostree.static-deltas", Value::dict(&d));
    }
    Ok(Summary { refs, metadata })
}

/// Regenerate `summary` (and `summary.sig` when keys are given; a stale one is removed
/// otherwise). The signature is written first so a client never sees a new summary with
/// an old signature that verifies.
pub fn update_summary(
    repo: &Repo,
    extra: &Metadata,
    now: u64,
    keys: &[SigningKey],
) -> Result<Summary> {
    let summary = build_summary(repo, extra, now)?;
    let bytes = summary.to_bytes();
    let sig_path = repo.path().join("summary.sig");
    if keys.is_empty() {
        match fs::remove_file(&sig_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    path: sig_path,
                    error: e,
                });
            }
        }
    } else {
        let sigs: Vec<Vec<u8>> = keys.iter().map(|k| k.sign(&bytes).to_vec()).collect();
        let mut m = Metadata::new();
        m.insert(crate::sign::ED25519_KEY, Value::bytes_array(&sigs));
        write_file_atomic(&sig_path, &m.to_bytes())?;
    }
    write_file_atomic(&repo.path().join("summary"), &bytes)?;
    Ok(summary)
}

/// Read the repository's own summary file.
pub fn read_summary(path: &Path) -> Result<Summary> {
    let bytes = fs::read(path).at(path)?;
    Summary::from_bytes(&bytes).map_err(|reason| Error::InvalidObject {
        object: format!("summary {}", path.display()),
        reason,
    })
}
