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
//! 6. **finish** the root: hostname, files, users and groups, timezone, services,
//!    post-process scripts ([`features`]), then the OSTree layout ([`layout`]);
//! 7. **commit** the root on the treefile's ref, with the previous commit as parent, or
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
pub mod dpkg;
pub mod features;
pub mod initramfs;
pub mod layout;
pub mod script;
pub mod stage;
pub mod treefile;
pub mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use treeline_pkg::PackageMeta;
use treeline_pkg::cache::Cache;
use treeline_pkg::pipeline::{self, Resolved};
use treeline_pkg::solve::Request;
use treeline_pkg::source::{ApkSource, DebSource, Source};
use treeline_store::progress::{NoProgress, Progress};
use treeline_store::{Checksum, Repo};

use treefile::{Distribution, Treefile};

/// Commit metadata keys a composed commit carries.
pub mod keys {
    /// `s`: the treefile's version (the OSTree convention).
    pub const VERSION: &str = "version";
    /// `a(ss)`: every installed package as (name, version), sorted by name. (Commits
    /// of earlier treeline versions hold `as` of apk `name-version` strings.)
    pub const PACKAGES: &str = "treeline.packages";
    /// `as`: what the treefile requested (the world).
    pub const REQUESTED: &str = "treeline.requested";
    /// `s`: the distribution (`alpine`, `debian`).
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
    /// A maintainer or post-process script failed.
    #[error(transparent)]
    Script(#[from] script::Error),
    /// A treefile setting or the OSTree layout cannot be applied to the tree.
    #[error("{what}: {message}")]
    Tree {
        /// The setting (`timezone Europe/Nowhere`, `service sshd`, `layout`).
        what: String,
        /// What is wrong.
        message: String,
    },
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
    /// Debian: assemble from scratch, not from a configured root of an earlier compose
    /// ([`stage`]).
    pub fresh: bool,
    /// Downloads in flight at once (0 = 8).
    pub jobs: usize,
    /// Progress of downloads (default: nothing shown).
    pub progress: Option<Box<dyn Progress + Send>>,
    /// How to build an initramfs for a treefile's kernel that brings none ([`initramfs`]).
    pub initramfs: initramfs::InitramfsSettings,
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
        /// The installed packages, sorted by name.
        packages: Vec<Package>,
        /// Package changes against the parent (everything is added without one).
        changes: PackageChanges,
    },
}

/// One installed package, as [`keys::PACKAGES`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version, in the family's own syntax (`1.36.1-r15`, `1:2.36-9+deb12u4`).
    pub version: String,
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// A package whose version differs between two lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changed {
    /// Name.
    pub name: String,
    /// Version in the old list.
    pub old: String,
    /// Version in the new list.
    pub new: String,
}

/// How two package lists differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackageChanges {
    /// Packages only in the new list.
    pub added: Vec<Package>,
    /// Packages only in the old list.
    pub removed: Vec<Package>,
    /// Packages in both with different versions.
    pub changed: Vec<Changed>,
}

impl PackageChanges {
    /// Compares two package lists, by name.
    pub fn between(old: &[Package], new: &[Package]) -> PackageChanges {
        let index = |l: &[Package]| -> BTreeMap<String, String> {
            l.iter()
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect()
        };
        let (old, new) = (index(old), index(new));
        let mut changes = PackageChanges::default();
        for (name, version) in &new {
            match old.get(name) {
                None => changes.added.push(Package {
                    name: name.clone(),
                    version: version.clone(),
                }),
                Some(o) if o != version => changes.changed.push(Changed {
                    name: name.clone(),
                    old: o.clone(),
                    new: version.clone(),
                }),
                Some(_) => {}
            }
        }
        for (name, version) in &old {
            if !new.contains_key(name) {
                changes.removed.push(Package {
                    name: name.clone(),
                    version: version.clone(),
                });
            }
        }
        changes
    }

    /// Whether the lists are the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The package list of a commit's metadata: `a(ss)`, or the `as` of `name-version`
/// strings earlier (Alpine-only) treeline versions wrote; `None` without the key.
pub fn packages_of(metadata: &treeline_store::variant::Metadata) -> Option<Vec<Package>> {
    let v = metadata.get(keys::PACKAGES)?;
    if let Some(pairs) = v.as_string_pairs() {
        return Some(
            pairs
                .into_iter()
                .map(|(name, version)| Package { name, version })
                .collect(),
        );
    }
    // apk `name-version`: the version is the last two `-`-separated parts (`1.36.1-r15`).
    let split = |s: String| {
        let mut it = s.rmatch_indices('-');
        match (it.next(), it.next()) {
            (Some(_), Some((i, _))) => Package {
                name: s[..i].to_owned(),
                version: s[i + 1..].to_owned(),
            },
            _ => Package {
                name: s,
                version: String::new(),
            },
        }
    };
    Some(v.as_strv()?.into_iter().map(split).collect())
}

/// The packages of a composed commit.
pub fn commit_packages(repo: &Repo, commit: &Checksum) -> Result<Vec<Package>> {
    let c = repo
        .load_commit(commit)
        .map_err(store_err(format!("loading {}", commit.to_hex())))?;
    packages_of(&c.metadata).ok_or_else(|| Error::Tree {
        what: format!("commit {}", commit.to_hex()),
        message: format!("no {} metadata: not a composed commit", keys::PACKAGES),
    })
}

/// Solves the treefile's packages against its repositories.
pub fn resolve(tf: &Treefile, cache: &Cache) -> Result<Resolved> {
    let packages_err = |error| Error::Packages {
        stage: "resolve",
        error,
    };
    let (sources, request) = match &tf.debian {
        None => {
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
            let request = Request::from_apk_world(&tf.request_atoms().join(" "))
                .map_err(|e| packages_err(treeline_pkg::Error::Solve(e)))?;
            (sources, request)
        }
        Some(d) => {
            let uri = match &d.mirror {
                Some(m) => m.clone(),
                None => host_mirror(&d.suite, &tf.arch)?,
            };
            let mut sources = vec![Source::Deb(DebSource {
                uri,
                suite: d.suite.clone(),
                components: d.components.clone(),
                arch: tf.arch.clone(),
                keyring: Some(d.keyring.clone()),
            })];
            for dir in &d.local_repositories {
                if !dir.is_dir() {
                    return Err(Error::Tree {
                        what: format!("[debian] local-repositories {}", dir.display()),
                        message: "not a directory".to_owned(),
                    });
                }
                sources.push(Source::Deb(DebSource {
                    uri: dir.display().to_string(),
                    suite: d.suite.clone(),
                    components: d.components.clone(),
                    arch: tf.arch.clone(),
                    keyring: None,
                }));
            }
            let mut request = Request::names(&tf.packages);
            request.forbid = Request::names(&tf.exclude_packages)
                .install
                .into_iter()
                .flat_map(|d| d.alternatives)
                .collect();
            request.install_recommends = d.install_recommends;
            request.add_essential = true;
            request.add_required = d.minbase;
            (sources, request)
        }
    };
    let rt = pipeline::runtime().map_err(|e| packages_err(e.into()))?;
    let fetcher = pipeline::fetcher().map_err(|e| packages_err(e.into()))?;
    pipeline::resolve_cached(&rt, &fetcher, cache, sources, &request).map_err(packages_err)
}

/// The mirror the host's apt configuration uses for `suite` (`/etc/apt/sources.list`
/// and `sources.list.d`); never a built-in host name.
pub fn host_mirror(suite: &str, arch: &str) -> Result<String> {
    let sources =
        treeline_pkg::source::host_deb_sources(Path::new("/"), arch).map_err(|error| {
            Error::Packages {
                stage: "resolve",
                error,
            }
        })?;
    sources
        .iter()
        .find(|s| s.suite == suite)
        .map(|s| s.uri.clone())
        .ok_or_else(|| Error::Tree {
            what: format!("[debian] suite {suite}"),
            message: format!(
                "no `mirror` in the treefile and the host's apt configuration has no {suite} \
                 source for {arch} to take it from"
            ),
        })
}

/// Runs the whole pipeline for `tf` into `repo`.
pub fn compose_tree(repo: &Repo, tf: &Treefile, opts: &ComposeOptions) -> Result<Outcome> {
    let cache = Cache::new(opts.cache_dir.clone().unwrap_or_else(Cache::default_dir));
    let started = std::time::Instant::now();
    let resolved = resolve(tf, &cache)?;
    tracing::info!(elapsed = ?started.elapsed(), "resolved");
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
    tracing::info!(elapsed = ?started.elapsed(), "fetched");

    let commits = {
        let packages: Vec<&PackageMeta> = resolved.packages().collect();
        import(repo, &resolved, &packages, &paths)?
    };
    tracing::info!(elapsed = ?started.elapsed(), "imported");
    let owned: Vec<PackageMeta> = resolved.packages().cloned().collect();
    let packages: Vec<&PackageMeta> = owned.iter().collect();
    let sources = resolved.sources.clone();
    // The universe (every package of every index: most of the memory) takes a second or
    // more to free; nothing below needs it.
    std::thread::spawn(move || drop(resolved));

    let tmp = repo.path().join("tmp");
    stage::unmount_stale(&tmp);
    remove_stale_trash(&tmp);
    let workdir = tempfile_in(&tmp)?;
    let root = workdir.join("root");
    std::fs::create_dir(&root).map_err(io_err(&root))?;
    let result = assemble_and_commit(repo, tf, opts, &sources, &packages, &commits, &root);
    remove_in_background(&workdir);
    tracing::info!(elapsed = ?started.elapsed(), "cleaned up");
    result
}

/// Removes `dir` (a compose's work directory: tens of thousands of links and files)
/// without waiting: it is renamed out of the way, then `rm -rf` runs on, detached.
/// Where that cannot be started, the removal happens here.
fn remove_in_background(dir: &Path) {
    let trash = dir.with_extension("removing");
    let target = if std::fs::rename(dir, &trash).is_ok() {
        trash
    } else {
        dir.to_owned()
    };
    let spawned = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = std::fs::remove_dir_all(&target);
    }
}

/// Work directories an earlier compose set aside for removal whose `rm` did not finish
/// (killed, or the machine went down) are removed again, in the background too.
fn remove_stale_trash(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("compose-") && name.ends_with(".removing") {
            remove_in_background(&entry.path());
        }
    }
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
        // A .deb imported before is known by the SHA-256 its index record gives (the
        // import recorded the file's, checked against the same record): its file need
        // not be read again.
        if resolved.family == treeline_pkg::Family::Deb {
            let ref_name = treeline_pkg::import::package_ref(
                treeline_pkg::Family::Deb,
                &meta.name,
                &meta.version,
                &meta.arch,
            );
            let sha256 = meta.checksum.to_ascii_lowercase();
            if let Some(commit) = treeline_pkg::import::find_imported(repo, &ref_name, &sha256) {
                commits.push(commit);
                continue;
            }
        }
        let imported = match resolved.family {
            treeline_pkg::Family::Apk => {
                importer.import_apk(path, Some(&meta.checksum), keys.as_ref())
            }
            treeline_pkg::Family::Deb => importer.import_deb(path, Some(&meta.checksum)),
        }
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
    sources: &[Source],
    packages: &[&PackageMeta],
    commits: &[Checksum],
    root: &Path,
) -> Result<Outcome> {
    if let Some(base) = &tf.base {
        unpack_base(base, root)?;
    }
    // One transaction for a kept configured root and the commit: one sync for both.
    let txn = repo.begin().map_err(store_err("starting a transaction"))?;
    let (pending, overlay) = match tf.distribution {
        Distribution::Alpine => {
            assemble_apk(repo, tf, packages, commits, root)?;
            (None, None)
        }
        Distribution::Debian => {
            let reuse = !opts.fresh && tf.base.is_none();
            assemble_deb(
                repo,
                &tf.arch,
                sources,
                packages,
                commits,
                root,
                reuse,
                tf.base.is_none(),
                &txn,
            )?
        }
    };
    finish_root(root, tf)?;
    let id = tf.distribution.name();
    let fallback_os_release = format!("ID={id}\nPRETTY_NAME=\"{}\"\n", tf.ref_name);
    let applied = layout::apply(root, tf.kernel.as_deref(), &fallback_os_release)?;
    if let Some(k) = &tf.kernel
        && tf.initramfs
    {
        initramfs::ensure(root, k, &opts.initramfs)?;
    }
    if tf.distribution == Distribution::Alpine {
        apk::forget_files(root, &applied.collapsed_links)?;
    }

    let mut installed: Vec<Package> = packages
        .iter()
        .map(|p| Package {
            name: p.name.clone(),
            version: p.version.clone(),
        })
        .collect();
    installed.sort();
    let devino = overlay.as_ref().map(stage::Overlay::devino);
    let outcome = commit_root(
        repo, txn, pending, tf, opts, root, devino, packages, installed,
    );
    // Unmounted before the caller removes the directories under it.
    if let Some(o) = overlay {
        o.unmount()?;
        tracing::debug!("overlay unmounted");
    }
    outcome
}

/// Alpine: per package, pre-install, extract, record, post-install; then triggers and
/// the apk database.
fn assemble_apk(
    repo: &Repo,
    tf: &Treefile,
    packages: &[&PackageMeta],
    commits: &[Checksum],
    root: &Path,
) -> Result<()> {
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
    db.write(root, tf)
}

/// Debian: extract every package, merge /usr (as a merged-/usr debootstrap has it
/// before the first package), write the dpkg database with everything unpacked, run
/// the preinst scripts and `dpkg --configure`, then drop per-machine and per-run state.
/// With `reuse`, start from the largest configured root of an earlier compose whose
/// packages are all wanted ([`stage`]) and do this for the other packages only.
/// Otherwise, into a `root_empty` root (no base tarball), the packages are hardlinked
/// into the lower layer of an overlay on the root ([`stage::Overlay::mount_packages`]),
/// as a recompose does with a stage; where that is impossible, copied.
#[allow(clippy::too_many_arguments)]
fn assemble_deb(
    repo: &Repo,
    arch: &str,
    sources: &[Source],
    packages: &[&PackageMeta],
    commits: &[Checksum],
    root: &Path,
    reuse: bool,
    root_empty: bool,
    txn: &treeline_store::Transaction<'_>,
) -> Result<(Option<stage::Pending>, Option<stage::Overlay>)> {
    let started = std::time::Instant::now();
    let mut pending = None;
    let mut overlay = None;
    let ids: BTreeSet<String> = packages.iter().map(|p| stage::identity(p)).collect();
    let reused = if reuse { stage::find(repo, &ids) } else { None };
    let mut debs = Vec::with_capacity(packages.len());
    match &reused {
        Some(s) => {
            overlay = stage::Overlay::mount(repo, s, root)?;
            // New packages are unpacked beside the root and moved in; on an overlay,
            // inside it, as renames between layers fail.
            let fresh = match &overlay {
                Some(_) => root.join(".treeline-new"),
                None => {
                    stage::restore(repo, s, root)?;
                    root.with_file_name("fresh")
                }
            };
            std::fs::create_dir_all(&fresh).map_err(io_err(&fresh))?;
            for (meta, commit) in packages.iter().zip(commits) {
                if !s.packages.contains(&stage::identity(meta)) {
                    let pkg = dpkg::DebPackage::load(repo, meta, commit)?;
                    dpkg::extract(repo, &pkg, &fresh)?;
                    debs.push(pkg);
                }
            }
            layout::usr_merge(&fresh, &mut Vec::new())?;
            for d in layout::MERGED {
                let link = fresh.join(d);
                if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::remove_file(&link).map_err(io_err(&link))?;
                }
            }
            stage::move_into(&fresh, root)?;
            std::fs::remove_dir_all(&fresh).map_err(io_err(&fresh))?;
            tracing::info!(
                stage = %s.commit.to_hex(),
                overlay = overlay.is_some(),
                new = debs.len(),
                elapsed = ?started.elapsed(),
                "restored a configured root"
            );
        }
        None => {
            for (meta, commit) in packages.iter().zip(commits) {
                debs.push(dpkg::DebPackage::load(repo, meta, commit)?);
            }
            // Into an empty root, the packages are hardlinked into the lower layer of an
            // overlay (nothing copied that no script writes, nothing hashed again at
            // commit); else, or where no overlay can be mounted, copied.
            if root_empty {
                let labelled: Vec<(String, Checksum)> =
                    debs.iter().map(|d| (d.label(), d.commit)).collect();
                overlay = stage::Overlay::mount_packages(repo, &labelled, root)?;
            }
            if overlay.is_none() {
                for pkg in &debs {
                    dpkg::extract(repo, pkg, root)?;
                }
                layout::usr_merge(root, &mut Vec::new())?;
            }
            tracing::info!(
                packages = debs.len(),
                overlay = overlay.is_some(),
                elapsed = ?started.elapsed(),
                "extracted"
            );
        }
    }
    if !debs.is_empty() {
        dpkg::write_unpacked(repo, root, arch, &debs, reused.is_some())?;
        tracing::info!(elapsed = ?started.elapsed(), "dpkg database written");
        let sandbox = script::Sandbox::detect();
        if reused.is_some() {
            dpkg::activate_triggers(&sandbox, repo, root, &debs)?;
        }
        let dpkg_version = packages
            .iter()
            .find(|p| p.name == "dpkg")
            .map(|p| p.version.as_str())
            .unwrap_or_default();
        dpkg::configure(&sandbox, root, &debs, dpkg_version)?;
        tracing::info!(elapsed = ?started.elapsed(), "configured");
        dpkg::clean(root)?;
        // Only an optimisation: a root that cannot be kept is assembled again next time.
        let devino = overlay.as_ref().map(stage::Overlay::devino);
        match stage::write(txn, root, ids, devino) {
            Ok(p) => pending = Some(p),
            Err(e) => tracing::warn!("not keeping the configured root for later composes: {e}"),
        }
        tracing::info!(elapsed = ?started.elapsed(), "stage written");
    }
    // apt's sources: the mirror the packages came from, as a one-line entry (the
    // treefile's local repositories are directories of the build host).
    let list: String = sources
        .iter()
        .take(1)
        .filter_map(|s| match s {
            Source::Deb(d) => Some(format!(
                "deb {} {} {}\n",
                d.uri,
                d.suite,
                d.components.join(" ")
            )),
            Source::Apk(_) => None,
        })
        .collect();
    let apt = root.join("etc/apt");
    std::fs::create_dir_all(&apt).map_err(io_err(&apt))?;
    features::replace_file(&apt.join("sources.list"), list.as_bytes(), 0o644)?;
    Ok((pending, overlay))
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

/// The treefile's settings, in order: hostname, extra files, groups and users,
/// timezone, services, post-process scripts.
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
    features::apply_users(root, tf)?;
    if let Some(zone) = &tf.timezone {
        features::apply_timezone(root, zone)?;
    }
    features::enable_services(root, tf)?;
    features::run_postprocess(root, tf, &tf.ref_name)
}

/// The commit timestamp: `SOURCE_DATE_EPOCH` when set, else the newest package build
/// time (apk), so the same inputs give the same commit; Debian indexes carry no build
/// time, so without `SOURCE_DATE_EPOCH` a Debian commit has the current time.
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
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

#[allow(clippy::too_many_arguments)]
fn commit_root(
    repo: &Repo,
    txn: treeline_store::Transaction<'_>,
    pending: Option<stage::Pending>,
    tf: &Treefile,
    opts: &ComposeOptions,
    root: &Path,
    devino: Option<std::collections::HashMap<(u64, u64), Checksum>>,
    packages: &[&PackageMeta],
    installed: Vec<Package>,
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
    let parent_commit = match &parent {
        Some(p) => Some(
            repo.load_commit(p)
                .map_err(store_err(format!("loading {}", p.to_hex())))?,
        ),
        None => None,
    };
    let parent_version = parent_commit
        .as_ref()
        .and_then(|c| c.metadata.get(keys::VERSION))
        .and_then(|v| v.as_str());
    let template = tf
        .version
        .as_deref()
        .map(version::Template::parse)
        .transpose()
        .map_err(|message| Error::Tree {
            what: "version".to_owned(),
            message,
        })?;
    let version = template
        .as_ref()
        .map(|t| t.expand(version::build_epoch(), parent_version.as_deref()));
    if let Some(v) = &version {
        values.insert(keys::VERSION.to_owned(), Value::string(v));
    }
    let pairs: Vec<(&str, &str)> = installed
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    values.insert(keys::PACKAGES.to_owned(), Value::string_pairs(&pairs));
    let mut requested = tf.packages.clone();
    requested.sort();
    values.insert(keys::REQUESTED.to_owned(), Value::strv(&requested));
    values.insert(
        keys::DISTRIBUTION.to_owned(),
        Value::string(tf.distribution.name()),
    );
    let mut metadata = Metadata::new();
    for (k, v) in values {
        metadata.insert(&k, v);
    }

    let started = std::time::Instant::now();
    let on_overlay = devino.is_some();
    let modifier = CommitModifier {
        devino,
        ..CommitModifier::default()
    }
    .for_repo(repo);
    let tree = tree_from_dir(&txn, root, &modifier, &NoProgress)
        .map_err(store_err("reading the composed root"))?;
    let written = tree
        .write(&txn)
        .map_err(store_err("writing the composed tree"))?;
    // The root is in the store now; removed before the sync, its data is never written
    // back to the disk. (An overlay is unmounted and removed by the caller: removing
    // through it would only write whiteouts.)
    if !on_overlay {
        let _ = std::fs::remove_dir_all(root);
    }
    tracing::info!(elapsed = ?started.elapsed(), "tree written");

    if let (Some(p), Some(prev)) = (&parent, &parent_commit)
        && !opts.force
    {
        // A templated version changes with the day or counter, not with the tree: it
        // does not count as a change.
        let comparable = |m: &Metadata| {
            let mut m = m.clone();
            if template.as_ref().is_some_and(|t| t.is_dynamic()) {
                m.remove(keys::VERSION);
            }
            m
        };
        if (prev.root_tree, prev.root_meta) == written
            && comparable(&prev.metadata) == comparable(&metadata)
        {
            // Dropping the transaction discards what it staged.
            return Ok(Outcome::Unchanged { commit: *p });
        }
    }
    let subject = match &version {
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
    let previous = parent_commit
        .as_ref()
        .and_then(|c| packages_of(&c.metadata))
        .unwrap_or_default();
    let changes = PackageChanges::between(&previous, &installed);
    let commit = write_commit(&txn, written, &options).map_err(store_err("writing the commit"))?;
    let stage_ref = pending.map(|p| p.commit(&txn)).transpose()?;
    txn.commit().map_err(store_err("syncing the commit"))?;
    repo.set_ref(&spec, Some(&commit))
        .map_err(store_err(format!("moving ref {}", tf.ref_name)))?;
    if let Some((stage_spec, stage_commit)) = stage_ref
        && let Err(e) = repo.set_ref(&stage_spec, Some(&stage_commit))
    {
        tracing::warn!("not keeping the configured root for later composes: {e}");
    }
    tracing::info!(elapsed = ?started.elapsed(), "committed");
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

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }

    #[test]
    fn package_changes_name_added_removed_and_upgraded_packages() {
        let old = [
            pkg("busybox", "1.36.1-r15"),
            pkg("openssh-server", "9.6_p1-r0"),
            pkg("zlib", "1.3-r0"),
        ];
        let new = [
            pkg("busybox", "1.36.1-r16"),
            pkg("chrony", "4.5-r0"),
            pkg("zlib", "1.3-r0"),
        ];
        let c = PackageChanges::between(&old, &new);
        assert_eq!(c.added, [pkg("chrony", "4.5-r0")]);
        assert_eq!(c.removed, [pkg("openssh-server", "9.6_p1-r0")]);
        assert_eq!(
            c.changed,
            [Changed {
                name: "busybox".to_owned(),
                old: "1.36.1-r15".to_owned(),
                new: "1.36.1-r16".to_owned(),
            }]
        );
    }

    #[test]
    fn package_lists_read_both_metadata_forms() {
        use treeline_store::variant::{Metadata, Value};
        let mut m = Metadata::new();
        m.insert(
            keys::PACKAGES,
            Value::string_pairs(&[("libc6", "2.36-9+deb12u4"), ("x-y", "1-2")]),
        );
        assert_eq!(
            packages_of(&m).unwrap(),
            [pkg("libc6", "2.36-9+deb12u4"), pkg("x-y", "1-2")]
        );
        let mut legacy = Metadata::new();
        legacy.insert(keys::PACKAGES, Value::strv(&["openssh-server-9.6_p1-r0"]));
        assert_eq!(
            packages_of(&legacy).unwrap(),
            [pkg("openssh-server", "9.6_p1-r0")]
        );
        assert!(packages_of(&Metadata::new()).is_none());
    }
}
