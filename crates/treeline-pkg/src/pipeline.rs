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
    let (bases, packages) = union_of(repos);
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

/// Every repository's packages in one list, with the base URL of each.
fn union_of(repos: Vec<crate::source::Repository>) -> (Vec<String>, Vec<PackageMeta>) {
    let mut bases = Vec::new();
    let mut packages = Vec::new();
    for repo in repos {
        bases.extend(std::iter::repeat_n(repo.base.clone(), repo.packages.len()));
        packages.extend(repo.packages);
    }
    (bases, packages)
}

/// Where solutions are kept, under the cache root; the version changes whenever what a
/// solution file holds changes.
const SOLUTIONS_DIR: &str = "solutions/v1";

/// A solution as kept in the cache: the solved packages in install order with the base
/// URL each came from.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedSolution {
    searched: bool,
    packages: Vec<(String, PackageMeta)>,
}

/// Like [`resolve`], but a solution is kept in the cache, keyed by the SHA-256 of
/// everything it follows from: the `Packages` files (as the signed Release files name
/// them, fetched and verified every time), the sources' pins and architectures, the
/// request, and the running program (another build may solve differently). With the
/// same key, the indexes are not read at all: the returned [`Resolved`]'s universe holds
/// the solved packages only. Only Debian sources (an apk index is small) and requests
/// without installed packages (universe ids) are kept; others are solved each time.
pub fn resolve_cached(
    rt: &tokio::runtime::Runtime,
    fetcher: &treeline_pull::fetch::Fetcher,
    cache: &Cache,
    sources: Vec<Source>,
    request: &Request,
) -> crate::Result<Resolved> {
    let debs: Vec<&crate::source::DebSource> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Deb(d) => Some(d),
            Source::Apk(_) => None,
        })
        .collect();
    if debs.is_empty() || debs.len() != sources.len() || !request.installed.is_empty() {
        return resolve(rt, fetcher, cache, sources, request);
    }
    let prepared = rt.block_on(async {
        let loads = debs
            .iter()
            .map(|d| crate::source::prepare_deb(d, fetcher, cache));
        futures_util::future::join_all(loads)
            .await
            .into_iter()
            .collect::<crate::Result<Vec<_>>>()
    })?;
    let path = cache
        .root()
        .join(SOLUTIONS_DIR)
        .join(format!("{}.json", solution_key(&prepared, request)));
    if let Some(cached) = read_solution(&path) {
        tracing::debug!(path = %path.display(), "solution read from the cache");
        let (bases, packages): (Vec<String>, Vec<PackageMeta>) =
            cached.packages.into_iter().unzip();
        let solution = Solution {
            install_order: (0..packages.len()).collect(),
            searched: cached.searched,
        };
        return Ok(Resolved {
            family: Family::Deb,
            sources,
            bases,
            universe: Universe::new(Family::Deb, packages),
            solution,
        });
    }
    let repos = prepared
        .into_iter()
        .map(crate::source::PreparedDeb::parse)
        .collect::<crate::Result<Vec<_>>>()?;
    let (bases, packages) = union_of(repos);
    let universe = Universe::new(Family::Deb, packages);
    let solution = solve(&universe, request)?;
    let cached = CachedSolution {
        searched: solution.searched,
        packages: solution
            .install_order
            .iter()
            .map(|&id| (bases[id].clone(), universe.packages()[id].clone()))
            .collect(),
    };
    // Only an optimisation: a solution that cannot be kept is computed again next time.
    match serde_json::to_vec(&cached) {
        Ok(bytes) => match crate::cache::write_atomic(&path, &bytes) {
            Ok(()) => prune_solutions(&path),
            Err(e) => tracing::warn!("not keeping the solution: {e}"),
        },
        Err(e) => tracing::warn!("not keeping the solution: {e}"),
    }
    Ok(Resolved {
        family: Family::Deb,
        sources,
        bases,
        universe,
        solution,
    })
}

/// The cache key of a solution: SHA-256 (hex) of its inputs.
fn solution_key(prepared: &[crate::source::PreparedDeb], request: &Request) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    let mut text = format!("{SOLUTIONS_DIR}\n{}\n", program_identity());
    for p in prepared {
        let _ = writeln!(text, "repository {}", p.base);
        for i in &p.indexes {
            let _ = writeln!(text, "index {} {} {}", i.sha256, i.arch, i.pin);
        }
    }
    // Debug shows every field of the request, so any change to it changes the key.
    let _ = writeln!(text, "request {request:?}");
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// What tells this build of the program from another: its version and the size and
/// modification time of its executable (a rebuild may solve differently).
fn program_identity() -> String {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{} {}.{}", m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    format!("{} {exe}", env!("CARGO_PKG_VERSION"))
}

/// How many solutions are kept: each new index, request or build makes another.
const KEPT_SOLUTIONS: usize = 16;

/// Removes the least recently written solutions beyond [`KEPT_SOLUTIONS`] from the
/// directory of `newest` (never `newest`).
fn prune_solutions(newest: &Path) {
    let Some(dir) = newest.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json") && e.path() != newest)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() < KEPT_SOLUTIONS {
        return;
    }
    files.sort();
    for (_, p) in &files[..files.len() + 1 - KEPT_SOLUTIONS] {
        let _ = std::fs::remove_file(p);
    }
}

/// A kept solution, if there is one and it reads back whole.
fn read_solution(path: &Path) -> Option<CachedSolution> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CachedSolution>(&bytes) {
        Ok(s) if !s.packages.is_empty() => Some(s),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("ignoring the unreadable solution {}: {e}", path.display());
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DebSource;

    /// An unsigned apt repository in `dir` whose one index lists `stanzas`.
    fn write_repository(dir: &Path, stanzas: &str) {
        use sha2::Digest;
        let index = dir.join("dists/stable/main/binary-amd64");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("Packages"), stanzas).unwrap();
        let sha = hex::encode(sha2::Sha256::digest(stanzas.as_bytes()));
        std::fs::write(
            dir.join("dists/stable/Release"),
            format!(
                "Suite: stable\nCodename: stable\nArchitectures: amd64\nComponents: main\n\
                 SHA256:\n {sha} {} main/binary-amd64/Packages\n",
                stanzas.len()
            ),
        )
        .unwrap();
    }

    fn stanza(name: &str, version: &str, depends: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nDepends: {depends}\n\
             Filename: pool/{name}_{version}_amd64.deb\nSize: 1\nSHA256: {}\n\n",
            "0".repeat(64)
        )
        .replace("Depends: \n", "")
    }

    fn solved(dir: &Path, cache: &Cache, request: &Request) -> Vec<String> {
        let rt = runtime().unwrap();
        let fetcher = fetcher().unwrap();
        let sources = vec![Source::Deb(DebSource {
            uri: dir.display().to_string(),
            suite: "stable".into(),
            components: vec!["main".into()],
            arch: "amd64".into(),
            keyring: None,
        })];
        let resolved = resolve_cached(&rt, &fetcher, cache, sources, request).unwrap();
        resolved
            .packages()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    fn solution_files(cache: &Cache) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(cache.root().join(SOLUTIONS_DIR))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    #[test]
    fn solutions_are_kept_and_follow_the_index_and_the_request() {
        let scratch = tempfile::tempdir().unwrap();
        let (repo, cache) = (scratch.path().join("repo"), scratch.path().join("cache"));
        let cache = Cache::new(cache);
        write_repository(
            &repo,
            &[
                stanza("a", "1.0", "b"),
                stanza("b", "1.0", ""),
                stanza("c", "1.0", ""),
            ]
            .concat(),
        );
        let mut request = Request::names(["a"]);
        request.install_recommends = false;

        assert_eq!(solved(&repo, &cache, &request), ["b 1.0", "a 1.0"]);
        let files = solution_files(&cache);
        assert_eq!(files.len(), 1, "{files:?}");

        // The kept solution is what the next resolve returns: edited, the edit shows.
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let edited = text.replace("\"version\":\"1.0\"", "\"version\":\"1.0-kept\"");
        assert_ne!(text, edited);
        std::fs::write(&files[0], edited).unwrap();
        assert_eq!(
            solved(&repo, &cache, &request),
            ["b 1.0-kept", "a 1.0-kept"]
        );

        // An unreadable one is solved again (and replaced).
        std::fs::write(&files[0], b"{ not json").unwrap();
        assert_eq!(solved(&repo, &cache, &request), ["b 1.0", "a 1.0"]);
        assert_eq!(solution_files(&cache), files);

        // Another request is another solution.
        let mut other = Request::names(["a", "c"]);
        other.install_recommends = false;
        assert_eq!(solved(&repo, &cache, &other), ["b 1.0", "a 1.0", "c 1.0"]);
        assert_eq!(solution_files(&cache).len(), 2);

        // A changed index is read again.
        write_repository(
            &repo,
            &[stanza("a", "1.0", "b"), stanza("b", "2.0", "")].concat(),
        );
        assert_eq!(solved(&repo, &cache, &request), ["b 2.0", "a 1.0"]);
        assert_eq!(solution_files(&cache).len(), 3);

        // Only the most recent solutions are kept.
        for n in 0..KEPT_SOLUTIONS + 3 {
            let mut r = Request::names(["a"]);
            r.install_recommends = false;
            r.forbid = Request::names([format!("z{n}")]).install[0]
                .alternatives
                .clone();
            solved(&repo, &cache, &r);
        }
        let kept = solution_files(&cache);
        assert_eq!(kept.len(), KEPT_SOLUTIONS, "{kept:?}");
    }
}
