//! The stages every consumer of repositories runs: load the repositories named by
//! [`Source`]s, solve a [`Request`] against them ([`resolve`]), and download the solution
//! into a [`Cache`] ([`fetch`]). `treeline pkg` and `treeline compose` share them.

use std::path::{Path, PathBuf};

use crate::apk::keys::Keys;
use crate::apk::package::ApkPackage;
use crate::cache::{Cache, Wanted, verify_sha256};
use crate::model::{Family, PackageMeta};
use crate::solve::{Request, Solution, Universe, solve};
use crate::source::Source;
use treeline_store::progress::Progress;

/// Errors setting up the stages (the stages themselves fail with [`crate::Error`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime or the HTTP client could not start.
    #[error("starting the downloader: {0}")]
    Setup(String),
}

/// Repositories loaded and a request solved against them.
pub struct Resolved {
    /// apk or deb.
    pub family: Family,
    /// The sources the universe was loaded from.
    pub sources: Vec<Source>,
    /// For every universe package, the base URL of the repository it came from.
    pub bases: Vec<String>,
    /// Every package of every repository.
    pub universe: Universe,
    /// The packages to install, in install order.
    pub solution: Solution,
}

impl Resolved {
    /// The solved packages, in install order.
    pub fn packages(&self) -> impl Iterator<Item = &PackageMeta> {
        self.solution.packages(&self.universe)
    }

    /// The apk keys every package must be signed by (none when the sources name no keys
    /// directory, i.e. untrusted packages are allowed).
    pub fn apk_keys(&self) -> crate::Result<Option<Keys>> {
        let dir = self.sources.iter().find_map(|s| match s {
            Source::Apk(a) => a.keys.clone(),
            Source::Deb(_) => None,
        });
        dir.as_deref().map(load_keys).transpose()
    }
}

/// Reads a keys directory; an empty one is an error (nothing could verify).
pub fn load_keys(dir: &Path) -> crate::Result<Keys> {
    let keys = Keys::from_dir(dir)?;
    if keys.is_empty() {
        return Err(crate::apk::Error::from_read_error(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no keys found"),
        )
        .into());
    }
    Ok(keys)
}

/// A runtime for the async loaders and downloads.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(e.to_string()))
}

/// The HTTP(S)/file fetcher with the retry policy package downloads use.
pub fn fetcher() -> Result<treeline_pull::fetch::Fetcher, Error> {
    treeline_pull::fetch::Fetcher::new(5, std::time::Duration::from_secs(60))
        .map_err(|e| Error::Setup(e.to_string()))
}

/// Loads every source's index (through `cache`) and solves `request` against the union.
/// All sources must be of the same family.
pub fn resolve(
    rt: &tokio::runtime::Runtime,
    fetcher: &treeline_pull::fetch::Fetcher,
    cache: &Cache,
    sources: Vec<Source>,
    request: &Request,
) -> crate::Result<Resolved> {
    let family = sources.first().map(Source::family).unwrap_or(Family::Apk);
    let repos = rt.block_on(crate::source::load_all(&sources, fetcher, cache))?;
    let mut bases = Vec::new();
    let mut packages = Vec::new();
    for repo in repos {
        bases.extend(std::iter::repeat_n(repo.base.clone(), repo.packages.len()));
        packages.extend(repo.packages);
    }
    let universe = Universe::new(family, packages);
    let solution = solve(&universe, request)?;
    Ok(Resolved {
        family,
        sources,
        bases,
        universe,
        solution,
    })
}

/// Downloads the solution's packages into the cache (each verified against its index
/// record); returns their paths in install order.
pub fn fetch(
    rt: &tokio::runtime::Runtime,
    fetcher: &treeline_pull::fetch::Fetcher,
    cache: &Cache,
    resolved: &Resolved,
    jobs: usize,
    progress: &(dyn Progress + Send),
) -> crate::Result<Vec<PathBuf>> {
    let wanted: Vec<Wanted<'_>> = resolved
        .solution
        .install_order
        .iter()
        .map(|&id| Wanted {
            base: resolved.bases[id].clone(),
            package: &resolved.universe.packages()[id],
        })
        .collect();
    let verify = match resolved.family {
        Family::Apk => verify_apk_identity,
        Family::Deb => verify_sha256,
    };
    Ok(rt.block_on(cache.fetch_all(fetcher, &wanted, jobs, verify, progress))?)
}

/// An .apk from an index is pinned by its identity (SHA-1 of the control member) and
/// the datahash the control member holds.
pub fn verify_apk_identity(meta: &PackageMeta, path: &Path) -> std::result::Result<(), String> {
    let pkg = ApkPackage::open(path).map_err(|e| e.to_string())?;
    pkg.check_identity(&meta.checksum)
        .map_err(|e| e.to_string())?;
    pkg.verify_datahash().map_err(|e| e.to_string())
}
