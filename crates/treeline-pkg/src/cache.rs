//! The package download cache: package files fetched from repositories (local
//! directories or HTTP), verified against their index entry, and kept under a name that
//! includes their checksum, so a file is downloaded once and never trusted unverified.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use treeline_pull::fetch::Fetcher;
use treeline_store::progress::Progress;

use crate::model::{Family, PackageMeta};

/// Errors from the download cache; each names the package or file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cache file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The download failed.
    #[error("downloading {package}: {source}")]
    Fetch {
        /// `name-version`.
        package: String,
        /// Why.
        source: treeline_pull::Error,
    },
    /// The downloaded file does not match its index entry.
    #[error("{package} from {url}: {message}")]
    Mismatch {
        /// `name-version`.
        package: String,
        /// Where it came from.
        url: String,
        /// What differs.
        message: String,
    },
    /// The index entry cannot name a cache file (no checksum, odd characters).
    #[error("{package}: {message}")]
    BadEntry {
        /// `name-version`.
        package: String,
        /// What is wrong.
        message: String,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_owned(),
        error,
    }
}

/// Verifies a package file against what the index says about it.
pub type Verifier = fn(&PackageMeta, &Path) -> std::result::Result<(), String>;

/// A directory of verified package files.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// One package to fetch: the repository base it comes from and its index entry.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// Repository base: an `http(s)://` or `file://` URL. The package is at
    /// `base/location`.
    pub base: String,
    /// The index entry.
    pub package: &'a PackageMeta,
}

impl Cache {
    /// A cache rooted at `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The default cache directory: `$TREELINE_CACHE_DIR`, else `/var/cache/treeline` for
    /// root, else `$XDG_CACHE_HOME/treeline` (or `~/.cache/treeline`).
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TREELINE_CACHE_DIR") {
            return dir.into();
        }
        if rustix::process::geteuid().is_root() {
            return "/var/cache/treeline".into();
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Path::new(&dir).join("treeline");
        }
        match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".cache/treeline"),
            None => std::env::temp_dir().join("treeline-cache"),
        }
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a package's file lives in the cache: its family, name, version, arch and
    /// checksum are all in the file name, so two different files never share one.
    pub fn package_path(&self, pkg: &PackageMeta) -> Result<PathBuf> {
        let bad = |message: &str| Error::BadEntry {
            package: format!("{}-{}", pkg.name, pkg.version),
            message: message.to_owned(),
        };
        let family = pkg.family.ok_or_else(|| bad("no package family"))?;
        if pkg.checksum.is_empty() {
            return Err(bad("the index gives no checksum"));
        }
        let digest = hex::encode(&Sha256::digest(pkg.checksum.as_bytes())[..8]);
        let stem = format!("{}_{}_{}", pkg.name, pkg.version, pkg.arch);
        if stem.contains('/') || stem.starts_with('.') || stem.chars().any(|c| c.is_control()) {
            return Err(bad(
                "name, version or arch holds characters a file name cannot",
            ));
        }
        let ext = match family {
            Family::Apk => "apk",
            Family::Deb => "deb",
        };
        Ok(self
            .root
            .join("packages")
            .join(family.to_string())
            .join(format!("{stem}.{digest}.{ext}")))
    }

    /// Fetches every wanted package that is not already cached (and valid), at most
    /// `jobs` at once, verifying each with `verify`. Returns the cached paths in the order
    /// of `wanted`. Files are written to a temporary name, synced and renamed, so the
    /// cache never holds a partial file under a final name.
    pub async fn fetch_all(
        &self,
        fetcher: &Fetcher,
        wanted: &[Wanted<'_>],
        jobs: usize,
        verify: Verifier,
        progress: &(dyn Progress + Send),
    ) -> Result<Vec<PathBuf>> {
        progress.set_total(wanted.len() as u64);
        let paths = wanted
            .iter()
            .map(|w| self.package_path(w.package))
            .collect::<Result<Vec<_>>>()?;
        let results = futures_util::stream::iter(wanted.iter().zip(&paths))
            .map(|(w, path)| async move {
                let bytes = self.fetch_one(fetcher, w, path, verify).await?;
                progress.advance(1, bytes);
                Ok::<_, Error>(())
            })
            .buffer_unordered(jobs.max(1))
            .collect::<Vec<_>>()
            .await;
        for result in results {
            result?;
        }
        Ok(paths)
    }

    async fn fetch_one(
        &self,
        fetcher: &Fetcher,
        wanted: &Wanted<'_>,
        path: &Path,
        verify: Verifier,
    ) -> Result<u64> {
        let pkg = wanted.package;
        let package = format!("{}-{}", pkg.name, pkg.version);
        let url = format!("{}/{}", wanted.base.trim_end_matches('/'), pkg.location);
        if path.is_file() {
            let cached = path.to_owned();
            let meta = pkg.clone();
            let ok = tokio::task::spawn_blocking(move || check_file(&meta, &cached, verify))
                .await
                .map_err(|e| Error::Io {
                    path: path.to_owned(),
                    error: std::io::Error::other(e),
                })?;
            if ok.is_ok() {
                return Ok(0);
            }
            tracing::warn!("{}: cached file is invalid, fetching again", path.display());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let got = fetcher
            .get_to_file(&wanted.base, &pkg.location, &tmp, false)
            .await
            .map_err(|source| Error::Fetch {
                package: package.clone(),
                source,
            })?
            .unwrap_or(0);
        let meta = pkg.clone();
        let tmp2 = tmp.clone();
        let checked = tokio::task::spawn_blocking(move || check_file(&meta, &tmp2, verify))
            .await
            .map_err(|e| Error::Io {
                path: tmp.clone(),
                error: std::io::Error::other(e),
            })?;
        if let Err(message) = checked {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Mismatch {
                package,
                url,
                message,
            });
        }
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok(got)
    }
}

/// Size check plus the family's own verification.
fn check_file(pkg: &PackageMeta, path: &Path, verify: Verifier) -> std::result::Result<(), String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if pkg.size != 0 && len != pkg.size {
        return Err(format!("size is {len} bytes, the index says {}", pkg.size));
    }
    verify(pkg, path)
}

/// Verifies a file whose index checksum is its SHA-256 in hex (deb).
pub fn verify_sha256(pkg: &PackageMeta, path: &Path) -> std::result::Result<(), String> {
    let actual = sha256_file(path).map_err(|e| e.to_string())?;
    if actual.eq_ignore_ascii_case(&pkg.checksum) {
        Ok(())
    } else {
        Err(format!(
            "SHA-256 is {actual}, the index says {}",
            pkg.checksum
        ))
    }
}

/// The SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `data` to `path` crash-safely (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(data).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        error: e.error,
    })?;
    Ok(())
}
