//! Repository commands, named and flagged as ostree's so its users feel at home.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use crate::progress::Bar;
use clap::{Args, Subcommand};
use treeline_store::builder::{self, CommitModifier, CommitOptions, MutableTree};
use treeline_store::checkout::{CheckoutOptions, Overwrite};
use treeline_store::inspect;
use treeline_store::object::Commit;
use treeline_store::prune::PruneOptions;
use treeline_store::refs::RefSpec;
use treeline_store::variant::{Metadata, Value};
use treeline_store::{Checksum, ObjectName, Repo, RepoMode};

/// Repository commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository (an existing one is left unchanged).
    Init {
        /// bare, bare-user, bare-user-only or archive (archive-z2).
        #[arg(long, default_value = "bare")]
        mode: String,
    },
    /// Commit a directory, tar archive or existing commit as a new commit.
    Commit(CommitArgs),
    /// Show a commit's history.
    Log {
        /// Ref or commit.
        rev: String,
        /// Print raw commit variants' metadata too.
        #[arg(long)]
        raw: bool,
    },
    /// List a path in a commit.
    Ls {
        /// Ref or commit.
        rev: String,
        /// Paths inside the commit (default `/`).
        paths: Vec<String>,
        /// Recurse into directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Print checksums.
        #[arg(short = 'C', long)]
        checksum: bool,
        /// Print one JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Write a file of a commit to standard output.
    Cat {
        /// Ref or commit.
        rev: String,
        /// Paths inside the commit.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show a commit, or one metadata key of it.
    Show {
        /// Ref or commit.
        rev: String,
        /// Print the value of this metadata key.
        #[arg(long, value_name = "KEY")]
        print_metadata_key: Option<String>,
        /// Print the value of this detached metadata key.
        #[arg(long, value_name = "KEY")]
        print_detached_metadata_key: Option<String>,
        /// Print the commit as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the checksum a revision resolves to.
    RevParse {
        /// Ref, checksum, prefix, optionally followed by `^`.
        rev: String,
        /// Print only the parent... (ostree compatibility: use REV^ instead).
        #[arg(long, hide = true)]
        single: bool,
    },
    /// List, create or delete refs.
    Refs(RefsArgs),
    /// Show the files that differ between two commits, or a commit and a directory.
    Diff {
        /// The first commit (REV), or with one argument the parent of it.
        first: String,
        /// The second commit or a directory.
        second: Option<String>,
        /// Compare as a bare-user-only/canonical commit would (uid/gid 0, masked modes).
        #[arg(long)]
        owner_uid: Option<u32>,
        /// Force the group when hashing a directory.
        #[arg(long)]
        owner_gid: Option<u32>,
    },
    /// Check out a commit into a directory.
    Checkout(CheckoutArgs),
    /// Verify every object and ref.
    Fsck {
        /// Delete corrupted objects.
        #[arg(long)]
        delete: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Do not print progress.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Delete objects that nothing needs any more.
    Prune(PruneArgs),
    /// Regenerate or show the summary that clients fetch first.
    Summary(crate::remote_cmds::SummaryArgs),
    /// Sign a commit with ed25519, or verify its signatures.
    Sign(crate::remote_cmds::SignArgs),
    /// Manage remotes (stored in the repository config, as ostree does).
    #[command(subcommand)]
    Remote(crate::remote_cmds::RemoteCommand),
    /// Fetch refs and their objects from a remote (HTTP or file://).
    Pull(crate::remote_cmds::PullArgs),
    /// Copy refs and their objects from another repository on this machine.
    PullLocal(crate::remote_cmds::PullLocalArgs),
    /// Serve the repository over HTTP, as any static web server would.
    Serve(crate::serve::ServeArgs),
    /// Generate, inspect, apply and index static deltas (ostree's format).
    StaticDelta(crate::delta_cmds::DeltaArgs),
    /// Alpine and Debian packages: info, contents, verify, resolve, import.
    Pkg(crate::pkg_cmds::PkgArgs),
    /// Deployments on a target: init-fs, os-init, deploy, status, rollback, pin, cleanup.
    Admin(crate::admin_cmds::AdminArgs),
    /// Boot artifacts: initramfs from a tree's kernel modules, disk images.
    Image(crate::image_cmds::ImageArgs),
    /// Build OS commits from treefiles: `compose tree TREEFILE`.
    Compose(crate::compose_cmds::ComposeArgs),
    /// The packages of composed commits: `db list REV`, `db diff A B`.
    Db(crate::db_cmds::DbArgs),
}

/// `commit` flags.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Branch (ref) to commit to.
    #[arg(short = 'b', long)]
    branch: Option<String>,
    /// Subject line.
    #[arg(short = 's', long)]
    subject: Option<String>,
    /// Body text.
    #[arg(short = 'm', long)]
    body: Option<String>,
    /// Input trees, applied in order: dir=PATH, tar=FILE or ref=REV.
    #[arg(long = "tree", value_name = "dir=PATH|tar=FILE|ref=REV")]
    trees: Vec<String>,
    /// A directory to commit (same as --tree=dir=PATH).
    path: Option<PathBuf>,
    /// Parent commit (default: the branch's current commit); `none` for none.
    #[arg(long)]
    parent: Option<String>,
    /// Write the commit without moving any ref.
    #[arg(long)]
    orphan: bool,
    /// Commit time: @SECONDS, RFC 3339, or `YYYY-MM-DD HH:MM:SS [UTC]` (default: now, or
    /// $SOURCE_DATE_EPOCH when set).
    #[arg(long)]
    timestamp: Option<String>,
    /// Add metadata KEY=VALUE as a string (repeatable, kept in order).
    #[arg(long, value_name = "KEY=VALUE")]
    add_metadata_string: Vec<String>,
    /// Add detached metadata KEY=VALUE as a string.
    #[arg(long, value_name = "KEY=VALUE")]
    add_detached_metadata_string: Vec<String>,
    /// Force this owner uid on every file.
    #[arg(long)]
    owner_uid: Option<u32>,
    /// Force this owner gid on every file.
    #[arg(long)]
    owner_gid: Option<u32>,
    /// uid/gid 0, permissions masked to 0755, no xattrs (as bare-user-only repos).
    #[arg(long)]
    canonical_permissions: bool,
    /// Ignore xattrs of the input.
    #[arg(long)]
    no_xattrs: bool,
    /// Make no commit if the tree equals the parent's.
    #[arg(long)]
    skip_if_unchanged: bool,
    /// Reuse checksums of files hardlinked from this repository's objects.
    #[arg(long)]
    link_checkout_speedup: bool,
    /// Do not add the ostree.ref-binding metadata.
    #[arg(long)]
    no_bindings: bool,
    /// Add a ref to ostree.ref-binding (repeatable).
    #[arg(long)]
    bind_ref: Vec<String>,
}

/// `refs` flags.
#[derive(Args, Debug)]
pub struct RefsArgs {
    /// Only refs starting with this prefix.
    prefix: Option<String>,
    /// Create ref NAME pointing at the prefix argument's revision.
    #[arg(long, value_name = "NAME")]
    create: Option<String>,
    /// Delete the refs given (or matching the prefix).
    #[arg(long)]
    delete: bool,
    /// Include remote refs.
    #[arg(long)]
    remotes: bool,
    /// Print refs with their checksums as JSON.
    #[arg(long)]
    json: bool,
}

/// `checkout` flags.
#[derive(Args, Debug)]
pub struct CheckoutArgs {
    /// Ref or commit.
    rev: String,
    /// Destination directory (default: the rev's name).
    destination: Option<PathBuf>,
    /// User mode: don't set owners or xattrs.
    #[arg(short = 'U', long)]
    user_mode: bool,
    /// Overwrite existing files.
    #[arg(long)]
    union: bool,
    /// Keep existing files, add missing ones.
    #[arg(long)]
    union_add: bool,
    /// Accept existing files only when identical.
    #[arg(long)]
    union_identical: bool,
    /// Apply `.wh.NAME` whiteouts.
    #[arg(long)]
    whiteouts: bool,
    /// Check out only this path.
    #[arg(long)]
    subpath: Option<String>,
    /// Fail if files cannot be hardlinked.
    #[arg(long)]
    require_hardlinks: bool,
    /// Copy files even where hardlinks are possible.
    #[arg(long)]
    force_copy: bool,
}

/// `prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep only objects reachable from refs.
    #[arg(long)]
    refs_only: bool,
    /// History depth to keep behind each ref (-1: all).
    #[arg(long, allow_hyphen_values = true)]
    depth: Option<i64>,
    /// Also keep commits newer than this date (same forms as commit --timestamp).
    #[arg(long, value_name = "DATE")]
    keep_younger_than: Option<String>,
    /// Report only.
    #[arg(long)]
    no_prune: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn open_repo(path: &Option<PathBuf>) -> Result<Repo> {
    let path = path
        .as_ref()
        .ok_or_else(|| anyhow!("no repository given: use --repo=PATH or set OSTREE_REPO"))?;
    Repo::open(path).with_context(|| format!("opening repository {}", path.display()))
}

/// Run a repository command.
pub fn run(repo_path: Option<PathBuf>, command: Command) -> Result<ExitCode> {
    match command {
        Command::Init { mode } => {
            let path = repo_path.ok_or_else(|| anyhow!("init needs --repo=PATH"))?;
            let mode = RepoMode::parse(&mode).ok_or_else(|| {
                anyhow!("unknown mode {mode:?}: use bare, bare-user, bare-user-only or archive")
            })?;
            Repo::init(&path, mode)
                .with_context(|| format!("creating repository {}", path.display()))?;
        }
        Command::Commit(args) => commit(&open_repo(&repo_path)?, args)?,
        Command::Log { rev, raw } => log(&open_repo(&repo_path)?, &rev, raw)?,
        Command::Ls {
            rev,
            paths,
            recursive,
            checksum,
            json,
        } => {
            let repo = open_repo(&repo_path)?;
            let c = repo.resolve_rev(&rev)?;
            let paths = if paths.is_empty() {
                vec!["/".to_owned()]
            } else {
                paths
            };
            let mut out = std::io::stdout().lock();
            for p in paths {
                for e in inspect::ls(&repo, &c, &p, recursive)? {
                    if json {
                        let v = serde_json::json!({
                            "path": e.path, "mode": e.mode, "uid": e.uid, "gid": e.gid,
                            "size": e.size, "checksum": e.checksum.to_hex(),
                            "meta_checksum": e.meta_checksum.map(|m| m.to_hex()),
                            "symlink_target": e.symlink_target,
                        });
                        writeln!(out, "{v}")?;
                    } else {
                        writeln!(out, "{}", e.to_line(checksum))?;
                    }
                }
            }
        }
        Command::Cat { rev, paths } => {
            let repo = open_repo(&repo_path)?;
            let c = repo.resolve_rev(&rev)?;
            let mut out = std::io::stdout().lock();
            for p in paths {
                let entries = inspect::ls(&repo, &c, &p, false)?;
                let e = entries.first().ok_or_else(|| anyhow!("{p}: not found"))?;
                if e.meta_checksum.is_some() {
                    bail!("{p}: is a directory");
                }
                let (_, mut content, _) = repo.open_file(&e.checksum)?;
                std::io::copy(&mut content, &mut out)?;
            }
        }
        Command::Show {
            rev,
            print_metadata_key,
            print_detached_metadata_key,
            json,
        } => show(
            &open_repo(&repo_path)?,
            &rev,
            print_metadata_key,
            print_detached_metadata_key,
            json,
        )?,
        Command::RevParse { rev, .. } => {
            let repo = open_repo(&repo_path)?;
            println!("{}", repo.resolve_rev(&rev)?);
        }
        Command::Refs(args) => refs(&open_repo(&repo_path)?, args)?,
        Command::Diff {
            first,
            second,
            owner_uid,
            owner_gid,
        } => {
            let repo = open_repo(&repo_path)?;
            let (a, b) = match &second {
                Some(s) => (first.clone(), s.clone()),
                None => (format!("{first}^"), first.clone()),
            };
            let ca = repo.load_commit(&repo.resolve_rev(&a)?)?;
            let changes = if second.is_some() && Path::new(&b).is_dir() {
                let modifier = CommitModifier {
                    owner_uid,
                    owner_gid,
                    ..Default::default()
                }
                .for_repo(&repo);
                inspect::diff_tree_dir(
                    &repo,
                    (ca.root_tree, ca.root_meta),
                    Path::new(&b),
                    &modifier,
                )?
            } else {
                let cb = repo.load_commit(&repo.resolve_rev(&b)?)?;
                inspect::diff_trees(
                    &repo,
                    (ca.root_tree, ca.root_meta),
                    (cb.root_tree, cb.root_meta),
                )?
            };
            let mut out = std::io::stdout().lock();
            for (change, path) in changes {
                writeln!(out, "{}    {}", change.letter(), path)?;
            }
        }
        Command::Checkout(args) => {
            let repo = open_repo(&repo_path)?;
            let c = repo.resolve_rev(&args.rev)?;
            let dest = args
                .destination
                .clone()
                .unwrap_or_else(|| PathBuf::from(&args.rev));
            let overwrite = match (args.union, args.union_add, args.union_identical) {
                (false, false, false) => Overwrite::Never,
                (true, false, false) => Overwrite::Union,
                (false, true, false) => Overwrite::AddFiles,
                (false, false, true) => Overwrite::UnionIdentical,
                _ => bail!("--union, --union-add and --union-identical exclude each other"),
            };
            let opts = CheckoutOptions {
                user_mode: args.user_mode,
                overwrite,
                whiteouts: args.whiteouts,
                subpath: args.subpath,
                require_hardlinks: args.require_hardlinks,
                force_copy: args.force_copy,
                ..Default::default()
            };
            treeline_store::checkout::checkout(&repo, &c, &dest, &opts, &Bar::new("checking out"))
                .with_context(|| format!("checking out {} to {}", args.rev, dest.display()))?;
        }
        Command::Fsck {
            delete,
            json,
            quiet,
        } => return fsck(&open_repo(&repo_path)?, delete, json, quiet),
        Command::Prune(args) => prune(&open_repo(&repo_path)?, args)?,
        Command::Summary(args) => crate::remote_cmds::summary(&mut open_repo(&repo_path)?, args)?,
        Command::Sign(args) => {
            let repo = repo_path
                .as_ref()
                .map(|_| open_repo(&repo_path))
                .transpose()?;
            crate::remote_cmds::sign(repo.as_ref(), args)?
        }
        Command::Remote(cmd) => {
            let mut repo = open_repo(&repo_path)?;
            crate::remote_cmds::remote(&mut repo, cmd)?
        }
        Command::Pull(args) => crate::remote_cmds::pull(&open_repo(&repo_path)?, args)?,
        Command::PullLocal(args) => crate::remote_cmds::pull_local(&open_repo(&repo_path)?, args)?,
        Command::Serve(args) => crate::serve::run(open_repo(&repo_path)?.path(), &args)?,
        Command::StaticDelta(args) => return crate::delta_cmds::run(repo_path, args),
        Command::Pkg(args) => return crate::pkg_cmds::run(repo_path, args),
        Command::Admin(args) => return crate::admin_cmds::run(args),
        Command::Compose(args) => return crate::compose_cmds::run(repo_path, args),
        Command::Image(args) => return crate::image_cmds::run(repo_path, args),
        Command::Db(args) => return crate::db_cmds::run(repo_path, args),
    }
    Ok(ExitCode::SUCCESS)
}

/// Parse a timestamp as accepted by `--timestamp`.
pub fn parse_timestamp(s: &str) -> Result<u64> {
    if let Some(n) = s.strip_prefix('@') {
        return n
            .parse()
            .with_context(|| format!("invalid timestamp {s:?}"));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp()).map_err(|_| anyhow!("timestamp {s:?} is before 1970"));
    }
    let trimmed = s
        .trim_end_matches(" UTC")
        .trim_end_matches(" +0000")
        .trim_end_matches('Z');
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(trimmed, fmt) {
            return u64::try_from(t.and_utc().timestamp())
                .map_err(|_| anyhow!("timestamp {s:?} is before 1970"));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        let t = d
            .and_hms_opt(0, 0, 0)
            .ok_or_else(|| anyhow!("invalid date {s:?}"))?;
        return u64::try_from(t.and_utc().timestamp())
            .map_err(|_| anyhow!("timestamp {s:?} is before 1970"));
    }
    bail!("invalid timestamp {s:?}: use @SECONDS, RFC 3339 or \"YYYY-MM-DD HH:MM:SS UTC\"")
}

fn now_or_source_date_epoch() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .parse()
            .with_context(|| format!("invalid SOURCE_DATE_EPOCH {v:?}"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
}

fn split_kv(s: &str, flag: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{flag} {s:?}: empty key");
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn commit(repo: &Repo, args: CommitArgs) -> Result<()> {
    let branch = args.branch.as_deref().map(RefSpec::parse).transpose()?;
    if branch.is_none() && !args.orphan {
        bail!("a branch is required (-b BRANCH), or --orphan");
    }
    let mut trees = args.trees.clone();
    if let Some(p) = &args.path {
        trees.push(format!("dir={}", p.display()));
    }
    if trees.is_empty() {
        bail!("nothing to commit: give a directory or --tree=dir=|tar=|ref=");
    }
    let timestamp = match &args.timestamp {
        Some(t) => parse_timestamp(t)?,
        None => now_or_source_date_epoch()?,
    };
    let parent = match args.parent.as_deref() {
        Some("none") => None,
        Some(p) => Some(
            repo.resolve_rev(p)
                .with_context(|| format!("resolving --parent {p}"))?,
        ),
        None => match &branch {
            Some(b) if !args.orphan => repo.read_ref(b)?,
            _ => None,
        },
    };
    let mut metadata = Metadata::new();
    for kv in &args.add_metadata_string {
        let (k, v) = split_kv(kv, "--add-metadata-string")?;
        metadata.insert(&k, Value::string(&v));
    }
    if !args.no_bindings {
        let mut bindings: Vec<String> = args.bind_ref.clone();
        if let Some(b) = &branch
            && !args.orphan
        {
            bindings.push(b.name.clone());
        }
        bindings.sort();
        bindings.dedup();
        metadata.insert("ostree.ref-binding", Value::strv(&bindings));
    }
    let mut modifier = CommitModifier {
        owner_uid: args.owner_uid,
        owner_gid: args.owner_gid,
        canonical_permissions: args.canonical_permissions,
        skip_xattrs: args.no_xattrs,
        devino: None,
    }
    .for_repo(repo);
    if args.link_checkout_speedup {
        modifier.devino = Some(builder::scan_devino(repo)?);
    }

    let txn = repo.begin()?;
    let mut root: Option<MutableTree> = None;
    for spec in &trees {
        let (kind, value) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--tree {spec:?}: expected dir=PATH, tar=FILE or ref=REV"))?;
        let tree = match kind {
            "dir" => {
                builder::tree_from_dir(&txn, Path::new(value), &modifier, &Bar::new("committing"))
                    .with_context(|| format!("committing directory {value}"))?
            }
            "tar" => {
                let f = File::open(value).with_context(|| format!("opening tar {value}"))?;
                let reader = decompressing_reader(BufReader::new(f), value)?;
                builder::tree_from_tar(&txn, reader, value, &modifier)
                    .with_context(|| format!("committing tar {value}"))?
            }
            "ref" => {
                let c = repo.resolve_rev(value)?;
                builder::tree_from_commit(repo, &c)?
            }
            _ => bail!("--tree {spec:?}: unknown kind {kind:?} (dir, tar or ref)"),
        };
        match &mut root {
            None => root = Some(tree),
            Some(r) => r.overlay(repo, tree)?,
        }
    }
    let root = root.ok_or_else(|| anyhow!("no input tree"))?;
    let written = root.write(&txn)?;
    if args.skip_if_unchanged
        && let Some(p) = &parent
    {
        let pc = repo.load_commit(p)?;
        if (pc.root_tree, pc.root_meta) == written {
            txn.commit()?;
            println!("{p}");
            return Ok(());
        }
    }
    let opts = CommitOptions {
        subject: args.subject.clone().unwrap_or_default(),
        body: args.body.clone().unwrap_or_default(),
        metadata,
        parent,
        timestamp,
    };
    let checksum = builder::write_commit(&txn, written, &opts)?;
    txn.commit()?;
    if !args.add_detached_metadata_string.is_empty() {
        let mut detached = repo.read_commitmeta(&checksum)?.unwrap_or_default();
        for kv in &args.add_detached_metadata_string {
            let (k, v) = split_kv(kv, "--add-detached-metadata-string")?;
            detached.insert(&k, Value::string(&v));
        }
        repo.write_commitmeta(&checksum, &detached)?;
    }
    treeline_store::fault::point("commit-before-ref");
    if let Some(b) = &branch
        && !args.orphan
    {
        repo.set_ref(b, Some(&checksum))?;
    }
    println!("{checksum}");
    Ok(())
}

/// Wrap a tar file in the decompressor its magic bytes call for.
fn decompressing_reader(mut r: BufReader<File>, name: &str) -> Result<Box<dyn std::io::Read>> {
    use std::io::BufRead;
    let magic = r.fill_buf().with_context(|| format!("reading {name}"))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

fn format_date(ts: u64) -> String {
    chrono::DateTime::from_timestamp(ts as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S +0000").to_string())
        .unwrap_or_else(|| ts.to_string())
}

fn print_commit(out: &mut impl Write, c: &Checksum, commit: &Commit) -> Result<()> {
    writeln!(out, "commit {c}")?;
    if let Some(p) = &commit.parent {
        writeln!(out, "Parent:  {p}")?;
    }
    writeln!(out, "ContentChecksum:  {}", commit.content_checksum())?;
    writeln!(out, "Date:  {}", format_date(commit.timestamp))?;
    if let Some(v) = commit.version() {
        writeln!(out, "Version: {v}")?;
    }
    writeln!(out)?;
    if !commit.subject.is_empty() {
        writeln!(out, "    {}", commit.subject)?;
        writeln!(out)?;
    }
    if !commit.body.is_empty() {
        for line in commit.body.lines() {
            writeln!(out, "    {line}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn log(repo: &Repo, rev: &str, raw: bool) -> Result<()> {
    let mut cur = Some(repo.resolve_rev(rev)?);
    let mut out = std::io::stdout().lock();
    while let Some(c) = cur {
        if !repo.has_commit(&c) {
            writeln!(out, "<< History beyond this commit not fetched >>")?;
            break;
        }
        let commit = repo.load_commit(&c)?;
        print_commit(&mut out, &c, &commit)?;
        if raw {
            for (k, v) in &commit.metadata.0 {
                writeln!(out, "    {k}: {}", v.to_text())?;
            }
        }
        cur = commit.parent;
    }
    Ok(())
}

fn show(
    repo: &Repo,
    rev: &str,
    key: Option<String>,
    detached_key: Option<String>,
    json: bool,
) -> Result<()> {
    let c = repo.resolve_rev(rev)?;
    let commit = repo.load_commit(&c)?;
    if let Some(k) = key {
        let v = commit
            .metadata
            .get(&k)
            .ok_or_else(|| anyhow!("no such metadata key {k:?} in commit {c}"))?;
        println!("{}", v.to_text());
        return Ok(());
    }
    if let Some(k) = detached_key {
        let meta = repo.read_commitmeta(&c)?.unwrap_or_default();
        let v = meta
            .get(&k)
            .ok_or_else(|| anyhow!("no such detached metadata key {k:?} in commit {c}"))?;
        println!("{}", v.to_text());
        return Ok(());
    }
    if json {
        let metadata: serde_json::Map<String, serde_json::Value> = commit
            .metadata
            .0
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_text())))
            .collect();
        let v = serde_json::json!({
            "checksum": c.to_hex(),
            "parent": commit.parent.map(|p| p.to_hex()),
            "subject": commit.subject,
            "body": commit.body,
            "timestamp": commit.timestamp,
            "version": commit.version(),
            "root_tree": commit.root_tree.to_hex(),
            "root_meta": commit.root_meta.to_hex(),
            "content_checksum": commit.content_checksum().to_hex(),
            "metadata": metadata,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_commit(&mut std::io::stdout().lock(), &c, &commit)
}

fn refs(repo: &Repo, args: RefsArgs) -> Result<()> {
    if let Some(new) = &args.create {
        let rev = args
            .prefix
            .as_deref()
            .ok_or_else(|| anyhow!("--create=NAME needs the revision it points to as argument"))?;
        let target = repo.resolve_rev(rev)?;
        if !repo.has_commit(&target) {
            bail!("commit {target} is not in the repository");
        }
        let spec = RefSpec::parse(new)?;
        if repo.read_ref(&spec)?.is_some() {
            bail!("ref {new} already exists");
        }
        repo.set_ref(&spec, Some(&target))?;
        return Ok(());
    }
    let mut all = repo.list_refs()?;
    if args.remotes || args.delete {
        all.extend(repo.list_remote_refs()?);
    }
    let selected: Vec<(String, Checksum)> = all
        .into_iter()
        .filter(|(name, _)| match &args.prefix {
            Some(p) => {
                name == p
                    || name.starts_with(&format!("{p}/"))
                    || name.starts_with(&format!("{p}:"))
                    || (p.ends_with(':') && name.starts_with(p.as_str()))
            }
            None => true,
        })
        .collect();
    if args.delete {
        let Some(prefix) = args.prefix.as_deref() else {
            bail!("--delete needs a ref or prefix");
        };
        // An exact ref is deleted even when its file is damaged (and so not listed).
        if selected.is_empty()
            && let Ok(spec) = RefSpec::parse(prefix)
            && repo.set_ref(&spec, None).is_ok()
        {
            return Ok(());
        }
        if selected.is_empty() {
            bail!("no ref matches {:?}", args.prefix.unwrap_or_default());
        }
        for (name, _) in selected {
            repo.set_ref(&RefSpec::parse(&name)?, None)?;
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let m: serde_json::Map<String, serde_json::Value> = selected
            .into_iter()
            .map(|(n, c)| (n, serde_json::Value::String(c.to_hex())))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(m))?;
    } else {
        for (name, _) in selected {
            writeln!(out, "{name}")?;
        }
    }
    Ok(())
}

fn fsck(repo: &Repo, delete: bool, json: bool, quiet: bool) -> Result<ExitCode> {
    if !quiet && !json {
        eprintln!("Verifying objects in {}...", repo.path().display());
    }
    let report = treeline_store::fsck::fsck(repo, delete, &Bar::new("verifying"))?;
    if json {
        let v = serde_json::json!({
            "objects": report.objects,
            "commits": report.commits,
            "partial_commits": report.partial_commits,
            "problems": report.problems.iter().map(|p| serde_json::json!({
                "object": p.object.map(|o| o.to_string()),
                "message": p.message,
            })).collect::<Vec<_>>(),
            "deleted": report.deleted.iter().map(ObjectName::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &report.problems {
            eprintln!("error: {}", p.message);
        }
        for d in &report.deleted {
            eprintln!("deleted corrupted object {d}");
        }
        if !quiet {
            println!(
                "{} objects, {} commits checked ({} partial skipped): {}",
                report.objects,
                report.commits,
                report.partial_commits,
                if report.problems.is_empty() {
                    "no problems found".to_string()
                } else {
                    format!("{} problem(s)", report.problems.len())
                }
            );
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn prune(repo: &Repo, args: PruneArgs) -> Result<()> {
    let depth = match args.depth {
        None | Some(-1) => None,
        Some(d) if d >= 0 => Some(d as usize),
        Some(d) => bail!("--depth {d}: must be -1 or more"),
    };
    let opts = PruneOptions {
        refs_only: args.refs_only,
        depth,
        keep_younger_than: args
            .keep_younger_than
            .as_deref()
            .map(parse_timestamp)
            .transpose()?,
        no_prune: args.no_prune,
    };
    let report = treeline_store::prune::prune(repo, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"total": report.total, "deleted": report.deleted, "freed_bytes": report.freed_bytes})
        );
    } else {
        println!("Total objects: {}", report.total);
        if report.deleted == 0 {
            println!("No unreachable objects");
        } else {
            println!(
                "{} {} objects, {} bytes freed",
                if args.no_prune {
                    "Would delete"
                } else {
                    "Deleted"
                },
                report.deleted,
                report.freed_bytes
            );
        }
    }
    Ok(())
}
