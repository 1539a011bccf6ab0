//! `treeline pkg`: inspect, verify, resolve and import Alpine and Debian packages.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use treeline_pkg::Family;
use treeline_pkg::apk::keys::Keys;
use treeline_pkg::apk::package::{ApkPackage, EntryKind as ApkKind};
use treeline_pkg::deb::package::{DebPackage, EntryKind as DebKind};

/// Package commands.
#[derive(Args, Debug)]
pub struct PkgArgs {
    #[command(subcommand)]
    command: PkgCommand,
}

#[derive(Subcommand, Debug)]
enum PkgCommand {
    /// Show a package file's metadata (name, version, relations, identity).
    Info {
        /// An .apk or .deb file.
        file: PathBuf,
        /// Architecture to evaluate Debian relation restrictions for.
        #[arg(long, default_value = "amd64")]
        arch: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the files a package installs.
    Contents {
        /// An .apk or .deb file.
        file: PathBuf,
        /// Print one JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Verify package files: signatures (apk), and every member and file checksum.
    Verify {
        /// .apk or .deb files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory of trusted apk keys (file name = key name, as /etc/apk/keys).
        #[arg(long, value_name = "DIR")]
        keys_dir: Option<PathBuf>,
        /// Accept apk packages without a trusted signature (checksums are still checked).
        #[arg(long)]
        allow_untrusted: bool,
    },
    /// Import packages into the repository, one commit per package (reused when already
    /// imported): package files, or with repository options, everything the requests
    /// resolve to (downloaded, verified and cached first).
    Import {
        /// .apk or .deb files; with repository options, package requests instead.
        #[arg(required = true)]
        items: Vec<String>,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve requests against repositories and print the complete package set, in
    /// install order.
    Resolve {
        /// Requests: names with optional constraints (apk `openssh`, `busybox>=1.36`,
        /// `!vlan`; deb `openssh-server`, `libc6 (>= 2.36)`).
        requests: Vec<String>,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve requests and download every package of the result into the cache.
    Fetch {
        /// Requests, as for `resolve`.
        #[arg(required = true)]
        requests: Vec<String>,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where packages come from. Alpine when `--apk-repo` is given; otherwise Debian, from
/// `--deb` lines or, by default, the host's apt sources.
#[derive(Args, Debug, Default)]
struct SourceArgs {
    /// Alpine repository base, URL or directory (as a line of /etc/apk/repositories);
    /// repeatable.
    #[arg(long, value_name = "BASE")]
    apk_repo: Vec<String>,
    /// Debian repository, as an apt line without `deb`: "URI SUITE COMPONENT..."; repeatable.
    /// Without any, the host's apt sources are used.
    #[arg(long, value_name = "\"URI SUITE COMPONENT...\"")]
    deb: Vec<String>,
    /// Architecture (default: x86_64 for Alpine, the host's dpkg architecture for Debian).
    #[arg(long)]
    arch: Option<String>,
    /// Trusted apk keys directory (file name = key name); default /etc/apk/keys.
    #[arg(long, value_name = "DIR")]
    keys_dir: Option<PathBuf>,
    /// Keyring for Debian Release files (default: each source's Signed-By, else
    /// /usr/share/keyrings/debian-archive-keyring.gpg).
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// Accept unsigned indexes and packages (checksums are still checked).
    #[arg(long)]
    allow_untrusted: bool,
    /// Package cache directory (default: $TREELINE_CACHE_DIR, /var/cache/treeline as
    /// root, else ~/.cache/treeline).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Downloads in flight at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

impl SourceArgs {
    fn given(&self) -> bool {
        !self.apk_repo.is_empty() || !self.deb.is_empty()
    }
}

/// How to resolve.
#[derive(Args, Debug, Default)]
struct PolicyArgs {
    /// Debian: do not follow Recommends (apt's --no-install-recommends).
    #[arg(long)]
    no_install_recommends: bool,
    /// Debian: add every Priority: required package (a minimal system, as debootstrap's
    /// minbase).
    #[arg(long)]
    required: bool,
    /// Debian: add every Essential: yes package.
    #[arg(long)]
    essential: bool,
}

/// Which format a file is, from its first bytes.
fn detect_family(path: &Path) -> Result<Family> {
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Family::Apk),
        b"!<arch>\n" => Ok(Family::Deb),
        [b'A', b'D', b'B', ..] => bail!(
            "{}: an apk v3 (ADB) package; only v2 packages are supported",
            path.display()
        ),
        _ => bail!(
            "{}: neither an Alpine (.apk, gzip) nor a Debian (.deb, ar) package",
            path.display()
        ),
    }
}

fn load_keys(dir: &Path) -> Result<Keys> {
    let keys = Keys::from_dir(dir)?;
    if keys.is_empty() {
        bail!("{}: no keys found", dir.display());
    }
    Ok(keys)
}

pub fn run(repo: Option<PathBuf>, args: PkgArgs) -> Result<ExitCode> {
    match args.command {
        PkgCommand::Info { file, arch, json } => info(&file, &arch, json)?,
        PkgCommand::Contents { file, json } => contents(&file, json)?,
        PkgCommand::Verify {
            files,
            keys_dir,
            allow_untrusted,
        } => return verify(&files, keys_dir.as_deref(), allow_untrusted),
        PkgCommand::Import {
            items,
            sources,
            policy,
            json,
        } => {
            let repo_path = repo.ok_or_else(|| anyhow!("import needs --repo=PATH"))?;
            let repo = treeline_store::Repo::open(&repo_path)
                .with_context(|| format!("opening repository {}", repo_path.display()))?;
            if sources.given() {
                let resolved = resolve(&sources, &policy, &items)?;
                let paths = fetch(&sources, &resolved)?;
                let keys = resolved.apk_keys()?;
                let wanted: Vec<_> = resolved
                    .solution
                    .install_order
                    .iter()
                    .zip(&paths)
                    .map(|(&id, path)| (path.clone(), Some(&resolved.universe.packages()[id])))
                    .collect();
                import(&repo, &wanted, keys.as_ref(), json)?;
            } else {
                let keys = sources.keys_dir.as_deref().map(load_keys).transpose()?;
                let wanted: Vec<_> = items.iter().map(|f| (PathBuf::from(f), None)).collect();
                import(&repo, &wanted, keys.as_ref(), json)?;
            }
        }
        PkgCommand::Resolve {
            requests,
            sources,
            policy,
            json,
        } => {
            let resolved = resolve(&sources, &policy, &requests)?;
            print_resolved(&resolved, json)?;
        }
        PkgCommand::Fetch {
            requests,
            sources,
            policy,
            json,
        } => {
            let resolved = resolve(&sources, &policy, &requests)?;
            let paths = fetch(&sources, &resolved)?;
            let mut out = std::io::stdout().lock();
            if json {
                let v: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                for p in paths {
                    writeln!(out, "{}", p.display())?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn info(file: &Path, arch: &str, json: bool) -> Result<()> {
    let meta = match detect_family(file)? {
        Family::Apk => ApkPackage::open(file)?.package_meta()?,
        Family::Deb => DebPackage::open(file)?.meta(arch)?,
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &meta)?;
        writeln!(out)?;
        return Ok(());
    }
    for (k, v) in &meta.fields {
        writeln!(out, "{k}: {v}")?;
    }
    Ok(())
}

struct Listed {
    kind: char,
    mode: u32,
    owner: String,
    size: u64,
    path: String,
    link: Option<String>,
}

fn contents(file: &Path, json: bool) -> Result<()> {
    let mut listed = Vec::new();
    match detect_family(file)? {
        Family::Apk => {
            let pkg = ApkPackage::open(file)?;
            let mut walk = pkg.data()?;
            while let Some(mut e) = walk.next_entry()? {
                // Reading the content checks it against the package's per-file checksum.
                std::io::copy(&mut e, &mut std::io::sink())
                    .with_context(|| format!("{}: {}", file.display(), e.path))?;
                listed.push(Listed {
                    kind: match e.kind {
                        ApkKind::Dir => 'd',
                        ApkKind::File => '-',
                        ApkKind::Symlink => 'l',
                        ApkKind::Hardlink => 'h',
                    },
                    mode: e.mode,
                    owner: format!("{}/{}", e.uname, e.gname),
                    size: e.size,
                    path: e.path.clone(),
                    link: e.link_target.clone(),
                });
            }
        }
        Family::Deb => {
            let mut data = DebPackage::open(file)?.into_data()?;
            for e in data.entries()? {
                let mut e = e?;
                std::io::copy(&mut e, &mut std::io::sink())
                    .with_context(|| format!("{}: {}", file.display(), e.path))?;
                listed.push(Listed {
                    kind: match e.kind {
                        DebKind::Dir => 'd',
                        DebKind::File => '-',
                        DebKind::Symlink => 'l',
                        DebKind::Hardlink => 'h',
                    },
                    mode: e.mode,
                    owner: match (&e.uname, &e.gname) {
                        (Some(u), Some(g)) => format!("{u}/{g}"),
                        _ => format!("{}/{}", e.uid, e.gid),
                    },
                    size: e.size,
                    path: e.path.clone(),
                    link: e.link_target.clone(),
                });
            }
            data.finish()?;
        }
    }
    let mut out = std::io::stdout().lock();
    for l in listed {
        if json {
            let v = serde_json::json!({
                "type": match l.kind { 'd' => "dir", '-' => "file", 'l' => "symlink", _ => "hardlink" },
                "mode": format!("{:04o}", l.mode),
                "owner": l.owner,
                "size": l.size,
                "path": l.path,
                "target": l.link,
            });
            writeln!(out, "{v}")?;
        } else {
            let link = match (l.kind, &l.link) {
                ('l', Some(t)) => format!(" -> {t}"),
                ('h', Some(t)) => format!(" link to {t}"),
                _ => String::new(),
            };
            writeln!(
                out,
                "{}{:04o} {:<16} {:>10} {}{link}",
                l.kind, l.mode, l.owner, l.size, l.path
            )?;
        }
    }
    Ok(())
}

fn verify_one(file: &Path, keys: Option<&Keys>) -> Result<String> {
    match detect_family(file)? {
        Family::Apk => {
            let pkg = ApkPackage::open(file)?;
            let signer = match keys {
                Some(k) => {
                    pkg.verify(k)?;
                    format!("signed by {}", pkg.verify_signature(k)?)
                }
                None => {
                    pkg.verify_datahash()?;
                    "signature not checked".to_owned()
                }
            };
            let mut walk = pkg.data()?;
            let mut files = 0u64;
            while let Some(mut e) = walk.next_entry()? {
                std::io::copy(&mut e, &mut std::io::sink())
                    .with_context(|| format!("{}: {}", file.display(), e.path))?;
                files += 1;
            }
            Ok(format!(
                "{}-{} {}: {signer}, {files} entries checked",
                pkg.name(),
                pkg.version(),
                pkg.identity()
            ))
        }
        Family::Deb => {
            let deb = DebPackage::open(file)?;
            let name = format!(
                "{}_{}",
                deb.control().get("Package").unwrap_or_default(),
                deb.control().get("Version").unwrap_or_default()
            );
            let mut data = deb.into_data()?;
            let mut files = 0u64;
            for e in data.entries()? {
                let mut e = e?;
                std::io::copy(&mut e, &mut std::io::sink())
                    .with_context(|| format!("{}: {}", file.display(), e.path))?;
                files += 1;
            }
            data.finish()?;
            Ok(format!("{name}: {files} entries checked against md5sums"))
        }
    }
}

fn verify(files: &[PathBuf], keys_dir: Option<&Path>, allow_untrusted: bool) -> Result<ExitCode> {
    let keys = match keys_dir {
        Some(d) => Some(load_keys(d)?),
        None => {
            let default = Path::new("/etc/apk/keys");
            (!allow_untrusted && default.is_dir())
                .then(|| load_keys(default))
                .transpose()?
        }
    };
    let mut failed = 0;
    for file in files {
        let needs_keys = matches!(detect_family(file), Ok(Family::Apk));
        if needs_keys && keys.is_none() && !allow_untrusted {
            eprintln!(
                "{}: no trusted keys: pass --keys-dir DIR (or --allow-untrusted)",
                file.display()
            );
            failed += 1;
            continue;
        }
        match verify_one(file, keys.as_ref()) {
            Ok(msg) => println!("{}: OK: {msg}", file.display()),
            Err(e) => {
                eprintln!("{}: FAILED: {e:#}", file.display());
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn import(
    repo: &treeline_store::Repo,
    wanted: &[(PathBuf, Option<&treeline_pkg::PackageMeta>)],
    keys: Option<&Keys>,
    json: bool,
) -> Result<()> {
    use rayon::prelude::*;
    use treeline_store::progress::Progress;

    let bar = crate::progress::Bar::new("importing");
    bar.set_total(wanted.len() as u64);
    let importer = treeline_pkg::import::Importer::new(repo)?;
    let results = wanted
        .par_iter()
        .map(|(file, meta)| {
            // A package from an index is pinned by the index's checksum.
            let expected = meta.map(|m| m.checksum.as_str());
            let imported = match detect_family(file)? {
                Family::Apk => importer.import_apk(file, expected, keys),
                Family::Deb => importer.import_deb(file, expected),
            }
            .with_context(|| format!("importing {}", file.display()))?;
            bar.advance(1, 0);
            Ok(imported)
        })
        .collect::<Result<Vec<_>>>()?;
    importer.finish()?;
    drop(bar);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &results)?;
        writeln!(out)?;
    } else {
        for r in &results {
            let how = if r.reused {
                "already imported"
            } else {
                "imported"
            };
            writeln!(
                out,
                "{} {}: {how} {} {}",
                r.name, r.version, r.ref_name, r.commit
            )?;
        }
    }
    Ok(())
}

use treeline_pkg::pipeline::Resolved;

fn host_arch() -> String {
    std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "amd64".to_owned())
}

fn build_sources(args: &SourceArgs) -> Result<(Family, Vec<treeline_pkg::source::Source>)> {
    use treeline_pkg::source::{ApkSource, DebSource, Source};
    if !args.apk_repo.is_empty() && !args.deb.is_empty() {
        bail!("--apk-repo and --deb cannot be mixed: a tree is either Alpine or Debian");
    }
    if !args.apk_repo.is_empty() {
        let keys = if args.allow_untrusted {
            None
        } else {
            let dir = args
                .keys_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/apk/keys"));
            if !dir.is_dir() {
                bail!(
                    "no apk keys at {}: pass --keys-dir DIR (or --allow-untrusted)",
                    dir.display()
                );
            }
            Some(dir)
        };
        let arch = args.arch.clone().unwrap_or_else(|| "x86_64".to_owned());
        let sources = args
            .apk_repo
            .iter()
            .map(|base| {
                Source::Apk(ApkSource {
                    base: base.clone(),
                    arch: arch.clone(),
                    keys: keys.clone(),
                })
            })
            .collect();
        return Ok((Family::Apk, sources));
    }
    let arch = args.arch.clone().unwrap_or_else(host_arch);
    let keyring = |default: Option<PathBuf>| {
        if args.allow_untrusted {
            None
        } else {
            args.keyring
                .clone()
                .or(default)
                .or_else(|| Some(PathBuf::from(treeline_pkg::source::DEBIAN_KEYRING)))
        }
    };
    let mut sources = Vec::new();
    if args.deb.is_empty() {
        for mut s in treeline_pkg::source::host_deb_sources(Path::new("/"), &arch)? {
            s.keyring = keyring(s.keyring.clone());
            sources.push(Source::Deb(s));
        }
        if sources.is_empty() {
            bail!("the host's apt configuration has no sources for {arch}; pass --deb");
        }
    } else {
        for line in &args.deb {
            let mut words = line.split_whitespace();
            let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
                bail!("--deb {line:?}: expected \"URI SUITE COMPONENT...\"");
            };
            sources.push(Source::Deb(DebSource {
                uri: uri.to_owned(),
                suite: suite.to_owned(),
                components: words.map(str::to_owned).collect(),
                arch: arch.clone(),
                keyring: keyring(None),
            }));
        }
    }
    Ok((Family::Deb, sources))
}

fn cache(args: &SourceArgs) -> treeline_pkg::cache::Cache {
    treeline_pkg::cache::Cache::new(
        args.cache_dir
            .clone()
            .unwrap_or_else(treeline_pkg::cache::Cache::default_dir),
    )
}

fn resolve(
    sources_args: &SourceArgs,
    policy: &PolicyArgs,
    requests: &[String],
) -> Result<Resolved> {
    use treeline_pkg::solve::Request;
    if requests.is_empty() && !policy.required && !policy.essential {
        bail!("nothing to resolve: name packages (or pass --required / --essential)");
    }
    let (family, sources) = build_sources(sources_args)?;
    let mut request = match family {
        Family::Apk => Request::from_apk_world(&requests.join(" "))?,
        Family::Deb => {
            let mut request = Request::default();
            let target = treeline_pkg::deb::relation::Target::arch(
                sources
                    .first()
                    .map(|s| match s {
                        treeline_pkg::source::Source::Deb(d) => d.arch.as_str(),
                        treeline_pkg::source::Source::Apk(a) => a.arch.as_str(),
                    })
                    .unwrap_or("amd64"),
            );
            for r in requests {
                request.install.extend(
                    treeline_pkg::deb::relation::parse_dependencies("request", r, target)
                        .with_context(|| format!("request {r:?}"))?,
                );
            }
            request
        }
    };
    request.install_recommends = !policy.no_install_recommends;
    request.add_required = policy.required;
    request.add_essential = policy.essential;
    let rt = treeline_pkg::pipeline::runtime()?;
    let fetcher = treeline_pkg::pipeline::fetcher()?;
    Ok(treeline_pkg::pipeline::resolve(
        &rt,
        &fetcher,
        &cache(sources_args),
        sources,
        &request,
    )?)
}

fn print_resolved(resolved: &Resolved, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let packages: Vec<_> = resolved.solution.packages(&resolved.universe).collect();
    if json {
        let v: Vec<_> = resolved
            .solution
            .install_order
            .iter()
            .filter_map(|&id| {
                let p = resolved.universe.package(id)?;
                Some(serde_json::json!({
                    "name": p.name,
                    "version": p.version,
                    "arch": p.arch,
                    "size": p.size,
                    "installed_size": p.installed_size,
                    "checksum": p.checksum,
                    "url": format!("{}/{}", resolved.bases.get(id).map(String::as_str).unwrap_or(""), p.location),
                }))
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    for p in &packages {
        writeln!(out, "{} {} {}", p.name, p.version, p.arch)?;
    }
    let size: u64 = packages.iter().map(|p| p.size).sum();
    let installed: u64 = packages.iter().map(|p| p.installed_size).sum();
    eprintln!(
        "{} {} packages, {:.1} MB to download, {:.1} MB installed",
        packages.len(),
        resolved.family,
        size as f64 / 1e6,
        installed as f64 / 1e6
    );
    Ok(())
}

/// Downloads the solution's packages into the cache; returns their paths in install
/// order.
fn fetch(args: &SourceArgs, resolved: &Resolved) -> Result<Vec<PathBuf>> {
    let bar = crate::progress::Bar::new("downloading");
    let rt = treeline_pkg::pipeline::runtime()?;
    let fetcher = treeline_pkg::pipeline::fetcher()?;
    Ok(treeline_pkg::pipeline::fetch(
        &rt,
        &fetcher,
        &cache(args),
        resolved,
        args.jobs,
        &bar,
    )?)
}
