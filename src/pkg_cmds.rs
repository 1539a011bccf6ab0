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
    /// Import package files into the repository, one commit per package (reused when
    /// already imported).
    Import {
        /// .apk or .deb files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory of trusted apk keys; without it apk signatures are not required.
        #[arg(long, value_name = "DIR")]
        keys_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
            files,
            keys_dir,
            json,
        } => {
            let repo_path = repo.ok_or_else(|| anyhow!("import needs --repo=PATH"))?;
            let repo = treeline_store::Repo::open(&repo_path)
                .with_context(|| format!("opening repository {}", repo_path.display()))?;
            let keys = keys_dir.as_deref().map(load_keys).transpose()?;
            import_files(&repo, &files, keys.as_ref(), json)?;
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

fn import_files(
    repo: &treeline_store::Repo,
    files: &[PathBuf],
    keys: Option<&Keys>,
    json: bool,
) -> Result<()> {
    use rayon::prelude::*;
    use treeline_store::progress::Progress;

    let bar = crate::progress::Bar::new("importing");
    bar.set_total(files.len() as u64);
    let importer = treeline_pkg::import::Importer::new(repo)?;
    let results = files
        .par_iter()
        .map(|file| {
            let imported = match detect_family(file)? {
                Family::Apk => importer.import_apk(file, None, keys),
                Family::Deb => importer.import_deb(file, None),
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
