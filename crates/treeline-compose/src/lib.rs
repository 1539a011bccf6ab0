//! Compose: a [`Treefile`] becomes an OS commit in the store.
//!
//! The pipeline is a chain of stages, each with one job (see docs/treefile.md):
//!
//! 1. **resolve** the treefile's packages against its repositories ([`resolve`]);
//!    the [`Plan`] can be printed before anything is downloaded (`compose --dry-run`);
//! 2. **fetch** the packages into the package cache, verified against the index;
//! 3. **import** each package into the store as one commit (reused when present);
//! 4. **assemble** a root: per package in install order, its pre-install script, a
//!    copying checkout of its commit, owner names resolved in the target, its
//!    post-install script; then the triggers ([`apk`] and [`script`]);
//! 5. write the **package database** the real apk reads ([`apk::Database`]);
//! 6. **commit** the root on the treefile's ref, with the previous commit as parent, or
//!    no commit at all when tree and metadata are unchanged.
//!
//! ```no_run
//! use treeline_compose::{ComposeOptions, Outcome, compose_tree, treefile::Treefile};
//! let repo = treeline_store::Repo::open(std::path::Path::new("repo"))?;
//! let tf = Treefile::load(std::path::Path::new("examples/alpine-minimal.toml"))?;
//! match compose_tree(&repo, &tf, &ComposeOptions::default())? {
//!     Outcome::Committed { commit, .. } => println!("{commit}"),
//!     Outcome::Unchanged { commit } => println!("unchanged: {commit}"),
//!     Outcome::Planned(plan) => print!("{plan}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod apk;
pub mod script;
pub mod treefile;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use treeline_pkg::PackageMeta;
use treeline_pkg::cache::Cache;
use treeline_pkg::pipeline::{self, Resolved};
use treeline_pkg::solve::Request;
use treeline_pkg::source::{ApkSource, Source};
use treeline_store::progress::{NoProgress, Progress};
use treeline_store::{Checksum, Repo};

use treefile::Treefile;

/// Commit metadata keys a composed commit carries.
pub mod keys {
    /// `s`: the treefile's version (the OSTree convention).
    pub const VERSION: &str = "version";
    /// `as`: every installed package as `name-version`, sorted by name.
    pub const PACKAGES: &str = "treeline.packages";
    /// `as`: what the treefile requested (the world).
    pub const REQUESTED: &str = "treeline.requested";
    /// `s`: the distribution (`alpine`).
    pub const DISTRIBUTION: &str = "treeline.distribution";
}

/// Errors of a compose; each names the stage and the package, script or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The treefile is invalid.
    #[error(transparent)]
    Treefile(#[from] treefile::Error),
    /// Resolving, fetching or importing packages failed.
    #[error("{stage}: {error}")]
    Packages {
        /// `resolve`, `fetch` or `import`.
        stage: &'static str,
        /// The package layer's error.
        error: treeline_pkg::Error,
    },
    /// The store failed.
    #[error("{what}: {error}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        error: treeline_store::Error,
    },
    /// A file in the root being assembled.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A package commit lacks what the composer needs.
    #[error("package {package}: {message}")]
    Package {
        /// `name-version`.
        package: String,
        /// What is missing or wrong.
        message: String,
    },
    /// A maintainer script failed.
    #[error(transparent)]
    Script(#[from] script::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_owned(),
        error,
    }
}

fn store_err(what: impl Into<String>) -> impl FnOnce(treeline_store::Error) -> Error {
    let what = what.into();
    move |error| Error::Store { what, error }
}

/// How to compose.
#[derive(Default)]
pub struct ComposeOptions {
    /// Package cache (default: [`Cache::default_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Stop after resolving: return the [`Plan`].
    pub dry_run: bool,
    /// Commit even when nothing changed.
    pub force: bool,
    /// Downloads in flight at once (0 = 8).
    pub jobs: usize,
    /// Progress of downloads (default: nothing shown).
    pub progress: Option<Box<dyn Progress + Send>>,
}

/// One package of a [`Plan`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedPackage {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Size of the package file.
    pub size: u64,
    /// Whether the package file is in the cache already.
    pub cached: bool,
}

/// What a compose would install, in install order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The ref the commit would go on.
    pub ref_name: String,
    /// Packages in install order.
    pub packages: Vec<PlannedPackage>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.packages {
            let state = if p.cached { "cached" } else { "fetch" };
            writeln!(f, "{} {} {} {state}", p.name, p.version, p.arch)?;
        }
        let fetch: u64 = self
            .packages
            .iter()
            .filter(|p| !p.cached)
            .map(|p| p.size)
            .sum();
        writeln!(
            f,
            "{} packages for {}, {:.1} MB to download",
            self.packages.len(),
            self.ref_name,
            fetch as f64 / 1e6
        )
    }
}

/// What a compose did.
#[derive(Debug)]
pub enum Outcome {
    /// `dry_run`: the plan, nothing done.
    Planned(Plan),
    /// The tree and metadata equal the ref's commit: no new commit.
    Unchanged {
        /// The ref's commit.
        commit: Checksum,
    },
    /// A new commit, now on the ref.
    Committed {
        /// The new commit.
        commit: Checksum,
        /// Its parent (the ref's previous commit).
        parent: Option<Checksum>,
        /// The installed packages, `name-version`.
        packages: Vec<String>,
        /// Package changes against the parent (everything is added without one).
        changes: PackageChanges,
    },
}

/// How two package lists (`name-version`, as [`keys::PACKAGES`] holds them) differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackageChanges {
    /// `name-version` of packages only in the new list.
    pub added: Vec<String>,
    /// `name-version` of packages only in the old list.
    pub removed: Vec<String>,
    /// `(name, old version, new version)`.
    pub changed: Vec<(String, String, String)>,
}

impl PackageChanges {
    /// Compares two lists of apk `name-version` strings (the version is the last two
    /// `-`-separated parts: `1.36.1-r15`).
    pub fn between(old: &[String], new: &[String]) -> PackageChanges {
        fn split(s: &str) -> (&str, &str) {
            let mut it = s.rmatch_indices('-');
            match (it.next(), it.next()) {
                (Some(_), Some((i, _))) => (&s[..i], &s[i + 1..]),
                _ => (s, ""),
            }
        }
        let old: BTreeMap<&str, &str> = old.iter().map(|s| split(s)).collect();
        let new: BTreeMap<&str, &str> = new.iter().map(|s| split(s)).collect();
        let mut changes = PackageChanges::default();
        for (name, version) in &new {
            match old.get(name) {
                None => changes.added.push(format!("{name}-{version}")),
                Some(o) if o != version => changes.changed.push((
                    (*name).to_owned(),
                    (*o).to_owned(),
                    (*version).to_owned(),
                )),
                Some(_) => {}
            }
        }
        for (name, version) in &old {
            if !new.contains_key(name) {
                changes.removed.push(format!("{name}-{version}"));
            }
        }
        changes
    }
}

/// Solves the treefile's packages against its repositories.
pub fn resolve(tf: &Treefile, cache: &Cache) -> Result<Resolved> {
    let packages_err = |error| Error::Packages {
        stage: "resolve",
        error,
    };
    let sources = tf
        .repositories
        .iter()
        .map(|base| {
            Source::Apk(ApkSource {
                base: base.clone(),
                arch: tf.arch.clone(),
                keys: tf.keys.clone(),
            })
        })
        .collect();
    let request = Request::from_apk_world(&tf.packages.join(" "))
        .map_err(|e| packages_err(treeline_pkg::Error::Solve(e)))?;
    let rt = pipeline::runtime().map_err(|e| packages_err(e.into()))?;
    let fetcher = pipeline::fetcher().map_err(|e| packages_err(e.into()))?;
    pipeline::resolve(&rt, &fetcher, cache, sources, &request).map_err(packages_err)
}

/// Runs the whole pipeline for `tf` into `repo`.
pub fn compose_tree(repo: &Repo, tf: &Treefile, opts: &ComposeOptions) -> Result<Outcome> {
    let cache = Cache::new(opts.cache_dir.clone().unwrap_or_else(Cache::default_dir));
    let resolved = resolve(tf, &cache)?;
    if opts.dry_run {
        let packages = resolved
            .packages()
            .map(|p| PlannedPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                size: p.size,
                cached: cache.package_path(p).is_ok_and(|path| path.is_file()),
            })
            .collect();
        return Ok(Outcome::Planned(Plan {
            ref_name: tf.ref_name.clone(),
            packages,
        }));
    }

    let fetch_err = |error| Error::Packages {
        stage: "fetch",
        error,
    };
    let rt = pipeline::runtime().map_err(|e| fetch_err(e.into()))?;
    let fetcher = pipeline::fetcher().map_err(|e| fetch_err(e.into()))?;
    let progress: &(dyn Progress + Send) = match &opts.progress {
        Some(p) => p.as_ref(),
        None => &NoProgress,
    };
    let jobs = if opts.jobs == 0 { 8 } else { opts.jobs };
    let paths =
        pipeline::fetch(&rt, &fetcher, &cache, &resolved, jobs, progress).map_err(fetch_err)?;
    drop(rt);

    let packages: Vec<&PackageMeta> = resolved.packages().collect();
    let commits = import(repo, &resolved, &packages, &paths)?;

    let tmp = repo.path().join("tmp");
    let workdir = tempfile_in(&tmp)?;
    let root = workdir.join("root");
    std::fs::create_dir(&root).map_err(io_err(&root))?;
    let result = assemble_and_commit(repo, tf, opts, &packages, &commits, &root);
    let _ = std::fs::remove_dir_all(&workdir);
    result
}

/// A fresh private directory under `parent` (the repository's tmp, so checkouts copy
/// within one filesystem).
fn tempfile_in(parent: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    for n in 0..1000u32 {
        let dir = parent.join(format!(
            "compose-{}-{}-{n}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    Err(io_err(parent)(std::io::Error::other(
        "no free temporary directory name",
    )))
}

/// Imports every package (reusing earlier imports); returns their commits in order.
fn import(
    repo: &Repo,
    resolved: &Resolved,
    packages: &[&PackageMeta],
    paths: &[PathBuf],
) -> Result<Vec<Checksum>> {
    let import_err = |error| Error::Packages {
        stage: "import",
        error,
    };
    let keys = resolved.apk_keys().map_err(import_err)?;
    let importer = treeline_pkg::import::Importer::new(repo).map_err(import_err)?;
    let mut commits = Vec::with_capacity(packages.len());
    for (meta, path) in packages.iter().zip(paths) {
        let imported = importer
            .import_apk(path, Some(&meta.checksum), keys.as_ref())
            .map_err(import_err)?;
        let commit: Checksum = imported.commit.parse().map_err(|_| Error::Package {
            package: format!("{}-{}", meta.name, meta.version),
            message: format!("import returned a bad commit {:?}", imported.commit),
        })?;
        commits.push(commit);
    }
    importer.finish().map_err(import_err)?;
    Ok(commits)
}

fn assemble_and_commit(
    repo: &Repo,
    tf: &Treefile,
    opts: &ComposeOptions,
    packages: &[&PackageMeta],
    commits: &[Checksum],
    root: &Path,
) -> Result<Outcome> {
    if let Some(base) = &tf.base {
        unpack_base(base, root)?;
    }
    let mut db = apk::Database::default();
    let sandbox = script::Sandbox::detect();
    for (meta, commit) in packages.iter().zip(commits) {
        let pkg = apk::InstalledPackage::load(repo, meta, commit)?;
        sandbox.run_install_script(root, &pkg, "pre-install")?;
        apk::extract(repo, &pkg, root)?;
        let record = pkg.record(repo, root)?;
        db.push(pkg, record);
        sandbox.run_install_script(root, db.last(), "post-install")?;
    }
    for (pkg, dirs) in db.triggers_to_run(root)? {
        sandbox.run_trigger(root, pkg, &dirs)?;
    }
    db.write(root, tf)?;
    finish_root(root, tf)?;

    let mut installed: Vec<String> = packages
        .iter()
        .map(|p| format!("{}-{}", p.name, p.version))
        .collect();
    installed.sort();
    commit_root(repo, tf, opts, root, packages, installed)
}

fn unpack_base(base: &Path, root: &Path) -> Result<()> {
    let file = std::fs::File::open(base).map_err(io_err(base))?;
    let reader: Box<dyn std::io::Read> =
        if base.extension().is_some_and(|e| e == "gz" || e == "tgz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    archive.unpack(root).map_err(io_err(base))
}

/// Hostname and the treefile's extra files.
fn finish_root(root: &Path, tf: &Treefile) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(h) = &tf.hostname {
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc).map_err(io_err(&etc))?;
        let p = etc.join("hostname");
        std::fs::write(&p, format!("{h}\n")).map_err(io_err(&p))?;
    }
    for f in &tf.files {
        let dest = root.join(f.dest.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&f.src, &dest).map_err(io_err(&f.src))?;
        if let Some(mode) = f
            .mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
        {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&dest))?;
        }
    }
    Ok(())
}

/// The commit timestamp: `SOURCE_DATE_EPOCH` when set, else the newest package build
/// time, so the same inputs give the same commit.
fn commit_timestamp(packages: &[&PackageMeta]) -> u64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return t;
    }
    packages
        .iter()
        .filter_map(|p| {
            p.fields
                .iter()
                .find(|(k, _)| k == "t")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0)
}

fn commit_root(
    repo: &Repo,
    tf: &Treefile,
    opts: &ComposeOptions,
    root: &Path,
    packages: &[&PackageMeta],
    installed: Vec<String>,
) -> Result<Outcome> {
    use treeline_store::builder::{CommitModifier, CommitOptions, tree_from_dir, write_commit};
    use treeline_store::variant::{Metadata, Value};

    let spec = treeline_store::refs::RefSpec::parse(&tf.ref_name)
        .map_err(store_err(format!("ref {}", tf.ref_name)))?;
    let parent = repo
        .read_ref(&spec)
        .map_err(store_err(format!("reading ref {}", tf.ref_name)))?;

    let mut values: BTreeMap<String, Value> = tf
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::string(v)))
        .collect();
    if let Some(v) = &tf.version {
        values.insert(keys::VERSION.to_owned(), Value::string(v));
    }
    values.insert(keys::PACKAGES.to_owned(), Value::strv(&installed));
    let mut requested = tf.packages.clone();
    requested.sort();
    values.insert(keys::REQUESTED.to_owned(), Value::strv(&requested));
    values.insert(keys::DISTRIBUTION.to_owned(), Value::string("alpine"));
    let mut metadata = Metadata::new();
    for (k, v) in values {
        metadata.insert(&k, v);
    }

    let txn = repo.begin().map_err(store_err("starting a transaction"))?;
    let modifier = CommitModifier::default().for_repo(repo);
    let tree = tree_from_dir(&txn, root, &modifier, &NoProgress)
        .map_err(store_err("reading the composed root"))?;
    let written = tree
        .write(&txn)
        .map_err(store_err("writing the composed tree"))?;

    if let Some(p) = &parent
        && !opts.force
    {
        let prev = repo
            .load_commit(p)
            .map_err(store_err(format!("loading {}", p.to_hex())))?;
        if (prev.root_tree, prev.root_meta) == written && prev.metadata == metadata {
            // Dropping the transaction discards what it staged.
            return Ok(Outcome::Unchanged { commit: *p });
        }
    }
    let subject = match &tf.version {
        Some(v) => format!("{} {v}", tf.ref_name),
        None => tf.ref_name.clone(),
    };
    let options = CommitOptions {
        subject,
        body: String::new(),
        metadata,
        parent,
        timestamp: commit_timestamp(packages),
    };
    let previous = match &parent {
        Some(p) => repo
            .load_commit(p)
            .map_err(store_err(format!("loading {}", p.to_hex())))?
            .metadata
            .get(keys::PACKAGES)
            .and_then(|v| v.as_strv())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let changes = PackageChanges::between(&previous, &installed);
    let commit = write_commit(&txn, written, &options).map_err(store_err("writing the commit"))?;
    txn.commit().map_err(store_err("syncing the commit"))?;
    repo.set_ref(&spec, Some(&commit))
        .map_err(store_err(format!("moving ref {}", tf.ref_name)))?;
    Ok(Outcome::Committed {
        commit,
        parent,
        packages: installed,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_changes_name_added_removed_and_upgraded_packages() {
        let old = [
            "busybox-1.36.1-r15",
            "openssh-server-9.6_p1-r0",
            "zlib-1.3-r0",
        ]
        .map(String::from);
        let new = ["busybox-1.36.1-r16", "chrony-4.5-r0", "zlib-1.3-r0"].map(String::from);
        let c = PackageChanges::between(&old, &new);
        assert_eq!(c.added, ["chrony-4.5-r0"]);
        assert_eq!(c.removed, ["openssh-server-9.6_p1-r0"]);
        assert_eq!(
            c.changed,
            [(
                "busybox".to_owned(),
                "1.36.1-r15".to_owned(),
                "1.36.1-r16".to_owned()
            )]
        );
    }
}
