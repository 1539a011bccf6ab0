//! Package repositories: loading their indexes, verified, from a local directory or over
//! HTTP, through the download cache.
//!
//! - Alpine: `BASE/ARCH/APKINDEX.tar.gz`, signed by a key in an apk keys directory;
//!   packages at `BASE/ARCH/NAME-VERSION.apk`.
//! - Debian: `URI/dists/SUITE/InRelease` (or `Release` + `Release.gpg`), verified against
//!   a keyring, pins `COMPONENT/binary-ARCH/Packages{.xz,.gz,}` by size and SHA-256;
//!   packages at `URI/Filename`.

use std::path::{Path, PathBuf};

use treeline_pull::fetch::Fetcher;

use crate::cache::Cache;
use crate::model::{Family, PackageMeta};

/// Errors loading a repository; each names the URL or file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A download failed.
    #[error("{url}: {source}")]
    Fetch {
        /// What was requested.
        url: String,
        /// Why it failed.
        source: treeline_pull::Error,
    },
    /// Something fetched is not what the signed metadata says.
    #[error("{url}: {message}")]
    Invalid {
        /// Where it came from.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A local file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

/// An Alpine repository.
#[derive(Debug, Clone)]
pub struct ApkSource {
    /// Repository base (URL or directory), the line apk has in /etc/apk/repositories.
    pub base: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// Directory of trusted keys (as /etc/apk/keys); `None` accepts unsigned indexes.
    pub keys: Option<PathBuf>,
}

/// A Debian repository: one `deb URI SUITE COMPONENT...` line.
#[derive(Debug, Clone)]
pub struct DebSource {
    /// Repository base (URL or directory).
    pub uri: String,
    /// Suite (`bookworm`, `bookworm-updates`).
    pub suite: String,
    /// Components (`main`).
    pub components: Vec<String>,
    /// Architecture (`amd64`).
    pub arch: String,
    /// Keyring that must have signed the Release file; `None` trusts it unsigned (apt's
    /// `trusted=yes`).
    pub keyring: Option<PathBuf>,
}

/// Where packages come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An Alpine repository.
    Apk(ApkSource),
    /// A Debian repository.
    Deb(DebSource),
}

impl Source {
    /// The family its packages belong to.
    pub fn family(&self) -> Family {
        match self {
            Source::Apk(_) => Family::Apk,
            Source::Deb(_) => Family::Deb,
        }
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Apk(s) => format!("{} ({})", s.base, s.arch),
            Source::Deb(s) => format!("{} {} {}", s.uri, s.suite, s.components.join(" ")),
        }
    }
}

/// A repository's packages, with the base URL their `location`s are relative to.
#[derive(Debug, Clone)]
pub struct Repository {
    /// Base URL (`http(s)://` or `file://`).
    pub base: String,
    /// Every package its index lists.
    pub packages: Vec<PackageMeta>,
}

/// Turns a directory path into a `file://` URL; URLs pass through.
pub fn to_url(base: &str) -> String {
    if base.contains("://") {
        return base.trim_end_matches('/').to_owned();
    }
    let path = Path::new(base);
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    format!("file://{}", abs.display())
}

fn fetch_err(url: &str) -> impl FnOnce(treeline_pull::Error) -> Error + '_ {
    move |source| Error::Fetch {
        url: url.to_owned(),
        source,
    }
}

fn index_cache_path(cache: &Cache, url: &str, suffix: &str) -> PathBuf {
    use sha2::Digest;
    let key = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..12]);
    cache.root().join("indexes").join(format!("{key}-{suffix}"))
}

/// Loads one repository's index.
pub async fn load(source: &Source, fetcher: &Fetcher, cache: &Cache) -> crate::Result<Repository> {
    match source {
        Source::Apk(s) => load_apk(s, fetcher, cache).await,
        Source::Deb(s) => load_deb(s, fetcher, cache).await,
    }
}

/// Loads several repositories at once; their packages are returned per repository.
pub async fn load_all(
    sources: &[Source],
    fetcher: &Fetcher,
    cache: &Cache,
) -> crate::Result<Vec<Repository>> {
    let loads = sources.iter().map(|s| load(s, fetcher, cache));
    futures_util::future::join_all(loads)
        .await
        .into_iter()
        .collect()
}

async fn load_apk(s: &ApkSource, fetcher: &Fetcher, cache: &Cache) -> crate::Result<Repository> {
    let base = to_url(&s.base);
    let rel = format!("{}/APKINDEX.tar.gz", s.arch);
    let url = format!("{base}/{rel}");
    let dest = index_cache_path(cache, &url, "APKINDEX.tar.gz");
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|error| Error::Io {
        path: parent.to_owned(),
        error,
    })?;
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    fetcher
        .get_to_file(&base, &rel, &tmp, false)
        .await
        .map_err(fetch_err(&url))?;
    std::fs::rename(&tmp, &dest).map_err(|error| Error::Io {
        path: dest.clone(),
        error,
    })?;
    let arch = s.arch.clone();
    let keys = s.keys.clone();
    let dest2 = dest.clone();
    let packages = tokio::task::spawn_blocking(move || -> crate::Result<Vec<PackageMeta>> {
        let index = crate::apk::index::ApkIndex::open(&dest2, &arch)?;
        if let Some(dir) = keys {
            let keys = crate::apk::keys::Keys::from_dir(&dir)?;
            index.verify(&keys)?;
        }
        Ok(index.into_packages())
    })
    .await
    .map_err(|e| Error::Invalid {
        url: url.clone(),
        message: e.to_string(),
    })??;
    Ok(Repository { base, packages })
}

async fn load_deb(s: &DebSource, fetcher: &Fetcher, cache: &Cache) -> crate::Result<Repository> {
    let prepared = prepare_deb(s, fetcher, cache).await?;
    let url = prepared.base.clone();
    tokio::task::spawn_blocking(move || prepared.parse())
        .await
        .map_err(|e| Error::Invalid {
            url,
            message: e.to_string(),
        })?
}

/// A Debian repository whose `Packages` files are in the cache, verified against its
/// signed Release file, not yet read.
#[derive(Debug, Clone)]
pub struct PreparedDeb {
    /// Base URL.
    pub base: String,
    /// One per component.
    pub indexes: Vec<DebIndex>,
}

/// One verified `Packages` file in the cache.
#[derive(Debug, Clone)]
pub struct DebIndex {
    /// The cached file (`.xz`, `.gz` or plain).
    pub path: PathBuf,
    /// Its SHA-256 (hex), as the signed Release file lists it.
    pub sha256: String,
    /// The architecture read from it.
    pub arch: String,
    /// apt's pin priority of the repository.
    pub pin: i32,
    /// Where it came from, for messages.
    pub url: String,
}

impl PreparedDeb {
    /// Reads every `Packages` file (blocking: seconds for a full Debian index).
    pub fn parse(self) -> crate::Result<Repository> {
        let mut packages = Vec::new();
        for index in self.indexes {
            let parsed = crate::deb::index::read_packages(&index.path, &index.arch)?;
            packages.extend(parsed.into_iter().map(|mut meta| {
                meta.pin_priority = Some(index.pin);
                meta
            }));
        }
        Ok(Repository {
            base: self.base,
            packages,
        })
    }
}

/// Fetches and verifies the Release file of `s` (every time: it says what is current)
/// and makes sure the `Packages` files it lists are in the cache, downloading those that
/// are not.
pub async fn prepare_deb(
    s: &DebSource,
    fetcher: &Fetcher,
    cache: &Cache,
) -> crate::Result<PreparedDeb> {
    use crate::deb::release::{Keyring, Release, verify_detached, verify_inrelease};

    let base = to_url(&s.uri);
    let dists = format!("dists/{}", s.suite);
    let inrelease_url = format!("{base}/{dists}/InRelease");
    const MAX_RELEASE: u64 = 64 << 20;
    let keyring = match &s.keyring {
        Some(path) => Some(Keyring::from_file(path)?),
        None => None,
    };
    let signed = fetcher
        .get(&base, &format!("{dists}/InRelease"), true, MAX_RELEASE)
        .await
        .map_err(fetch_err(&inrelease_url))?;
    let (text, release_url) = match signed {
        Some(bytes) => {
            let text = match &keyring {
                Some(k) => verify_inrelease(&bytes, k, &inrelease_url)?.text,
                None => clearsigned_text(&bytes, &inrelease_url)?,
            };
            (text, inrelease_url)
        }
        None => {
            let url = format!("{base}/{dists}/Release");
            let release = fetcher
                .get(&base, &format!("{dists}/Release"), false, MAX_RELEASE)
                .await
                .map_err(fetch_err(&url))?
                .unwrap_or_default();
            let text = match &keyring {
                Some(k) => {
                    let sig = fetcher
                        .get(&base, &format!("{dists}/Release.gpg"), false, MAX_RELEASE)
                        .await
                        .map_err(fetch_err(&url))?
                        .unwrap_or_default();
                    verify_detached(&release, &sig, k, &url)?.text
                }
                None => String::from_utf8(release).map_err(|_| Error::Invalid {
                    url: url.clone(),
                    message: "not UTF-8 text".into(),
                })?,
            };
            (text, url)
        }
    };
    let release = Release::parse(&text, &release_url)?;
    release.check_valid_until(std::time::SystemTime::now())?;

    let mut indexes = Vec::new();
    for component in &s.components {
        let dir = format!("{component}/binary-{}", s.arch);
        let (name, file) = ["Packages.xz", "Packages.gz", "Packages"]
            .iter()
            .find_map(|n| {
                release
                    .index_file(&format!("{dir}/{n}"))
                    .filter(|f| f.sha256.is_some())
                    .map(|f| (*n, *f))
            })
            .ok_or_else(|| Error::Invalid {
                url: release_url.clone(),
                message: format!("lists no SHA-256 for {dir}/Packages (.xz, .gz or plain)"),
            })?;
        let sha256 = hex::encode(file.sha256.unwrap_or_default());
        let rel = format!("{dists}/{dir}/{name}");
        let url = format!("{base}/{rel}");
        let dest = cache
            .root()
            .join("indexes")
            .join(format!("{sha256}-{name}"));
        let cached_ok = crate::cache::sha256_file(&dest).is_ok_and(|c| c == sha256);
        if !cached_ok {
            let parent = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|error| Error::Io {
                path: parent.to_owned(),
                error,
            })?;
            let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
            fetcher
                .get_to_file(&base, &rel, &tmp, false)
                .await
                .map_err(fetch_err(&url))?;
            let actual = crate::cache::sha256_file(&tmp).map_err(|error| Error::Io {
                path: tmp.clone(),
                error,
            })?;
            if actual != sha256 {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Invalid {
                    url,
                    message: format!("SHA-256 is {actual}, the Release file says {sha256}"),
                }
                .into());
            }
            std::fs::rename(&tmp, &dest).map_err(|error| Error::Io {
                path: dest.clone(),
                error,
            })?;
        }
        indexes.push(DebIndex {
            path: dest,
            sha256,
            arch: s.arch.clone(),
            pin: release.default_pin(),
            url,
        });
    }
    Ok(PreparedDeb { base, indexes })
}

/// The text of a clearsigned file without checking its signature (for sources the user
/// marked as trusted).
fn clearsigned_text(bytes: &[u8], url: &str) -> Result<String, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Invalid {
        url: url.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    let Some(start) = text.find("-----BEGIN PGP SIGNED MESSAGE-----") else {
        return Ok(text.to_owned());
    };
    let body = text[start..]
        .split_once("\n\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let body = body
        .split("\n-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or_default();
    Ok(body
        .lines()
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The Debian sources of the host's apt configuration (`/etc/apt/sources.list{,.d}`), one
/// per suite, for `arch`; each keeps its `Signed-By` keyring when that is a file, else
/// the Debian archive keyring.
pub fn host_deb_sources(root: &Path, arch: &str) -> crate::Result<Vec<DebSource>> {
    let configured = crate::deb::sources::read_sources(root)?;
    let mut out = Vec::new();
    for s in configured {
        if !s.architectures.is_empty() && !s.architectures.iter().any(|a| a == arch) {
            continue;
        }
        let keyring = s
            .signed_by
            .as_deref()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_file())
            .unwrap_or_else(|| PathBuf::from(DEBIAN_KEYRING));
        for suite in &s.suites {
            out.push(DebSource {
                uri: s.uri.clone(),
                suite: suite.clone(),
                components: s.components.clone(),
                arch: arch.to_owned(),
                keyring: Some(keyring.clone()),
            });
        }
    }
    Ok(out)
}

/// Debian's archive keyring as the debian-archive-keyring package installs it.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
