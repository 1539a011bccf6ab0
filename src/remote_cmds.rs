//! Publishing and fetching: summary, signatures, remotes, pulls.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use treeline_store::Repo;
use treeline_store::sign::{PublicKeys, SigningKey};
use treeline_store::summary::{self, Summary};
use treeline_store::variant::{Metadata, Value};

/// `summary` flags.
#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Regenerate the summary from the local refs (and static deltas).
    #[arg(short = 'u', long)]
    update: bool,
    /// Print the summary.
    #[arg(long)]
    view: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Extra metadata KEY=VALUE (a string) for --update.
    #[arg(short = 'm', long = "add-metadata", value_name = "KEY=VALUE")]
    add_metadata: Vec<String>,
    /// Sign the summary with this base64 ed25519 secret key (repeatable).
    #[arg(long = "sign", value_name = "KEY")]
    sign: Vec<String>,
    /// Sign with every key in this file (one base64 secret key per line).
    #[arg(long, value_name = "FILE")]
    keys_file: Option<PathBuf>,
    /// Signature type; only ed25519 is supported.
    #[arg(long, default_value = "ed25519")]
    sign_type: String,
}

/// `sign` flags.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The commit to sign or verify.
    commit: Option<String>,
    /// Base64 keys: secret keys to sign with, or public keys with --verify.
    keys: Vec<String>,
    /// Read keys from this file (one base64 key per line).
    #[arg(long, value_name = "FILE")]
    keys_file: Option<PathBuf>,
    /// Verify the commit's signatures instead of signing.
    #[arg(long)]
    verify: bool,
    /// Signature type; only ed25519 is supported.
    #[arg(short = 's', long, default_value = "ed25519")]
    sign_type: String,
    /// Generate a new secret key into FILE and print its public key.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["commit", "verify"])]
    generate_key: Option<PathBuf>,
}

fn check_sign_type(t: &str) -> Result<()> {
    if t != "ed25519" {
        bail!("signature type {t:?} is not supported: use ed25519");
    }
    Ok(())
}

fn signing_keys(inline: &[String], file: &Option<PathBuf>) -> Result<Vec<SigningKey>> {
    let mut keys = inline
        .iter()
        .map(|k| SigningKey::from_base64(k))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(f) = file {
        keys.extend(SigningKey::from_file(f)?);
    }
    Ok(keys)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Regenerates the delta indexes and the summary (`summary -u`), signed with the given
/// keys (inline base64 or a keys file); `add_metadata` is `KEY=VALUE` strings.
pub fn update_summary(
    repo: &mut Repo,
    add_metadata: &[String],
    sign: &[String],
    keys_file: &Option<PathBuf>,
) -> Result<()> {
    // As ostree does: the delta indexes are regenerated with the summary.
    treeline_store::delta::reindex(repo, None).context("regenerating the delta indexes")?;
    let mut extra = Metadata::new();
    for kv in add_metadata {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--add-metadata {kv:?}: expected KEY=VALUE"))?;
        extra.insert(k, Value::string(v));
    }
    let keys = signing_keys(sign, keys_file)?;
    summary::update_summary(repo, &extra, now(), &keys).context("updating the summary")?;
    Ok(())
}

/// `summary`.
pub fn summary(repo: &mut Repo, args: SummaryArgs) -> Result<()> {
    check_sign_type(&args.sign_type)?;
    if args.update {
        update_summary(repo, &args.add_metadata, &args.sign, &args.keys_file)?;
    }
    if args.view || args.json || !args.update {
        let s = summary::read_summary(&repo.path().join("summary"))
            .context("reading the summary (run `summary -u` to create it)")?;
        print_summary(&s, args.json)?;
    }
    Ok(())
}

fn print_summary(s: &Summary, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let refs: Vec<serde_json::Value> = s
            .refs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "commit": r.checksum.to_hex(),
                    "commit_size": r.commit_size,
                    "metadata": r.metadata.0.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_text()))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let meta: serde_json::Map<String, serde_json::Value> = s
            .metadata
            .0
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_text())))
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"refs": refs, "metadata": meta})
        )?;
        return Ok(());
    }
    for r in &s.refs {
        writeln!(out, "* {}", r.name)?;
        writeln!(out, "    Latest Commit ({} bytes):", r.commit_size)?;
        writeln!(out, "      {}", r.checksum)?;
        for (k, v) in &r.metadata.0 {
            writeln!(out, "    {k}: {}", v.to_text())?;
        }
        writeln!(out)?;
    }
    for (name, c) in s.static_deltas() {
        writeln!(out, "Static Deltas: {name} ({c})")?;
    }
    for (k, v) in &s.metadata.0 {
        if k != "ostree.static-deltas" {
            writeln!(out, "{k}: {}", v.to_text())?;
        }
    }
    Ok(())
}

/// `sign`.
pub fn sign(repo: Option<&Repo>, args: SignArgs) -> Result<()> {
    check_sign_type(&args.sign_type)?;
    if let Some(path) = &args.generate_key {
        let key = SigningKey::generate()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating key file {}", path.display()))?;
        writeln!(f, "{}", key.to_base64())?;
        println!("{}", key.public_base64());
        return Ok(());
    }
    let repo = repo.ok_or_else(|| anyhow!("no repository given: use --repo=PATH"))?;
    let rev = args
        .commit
        .as_deref()
        .ok_or_else(|| anyhow!("which commit? `sign COMMIT KEY...`"))?;
    let commit = repo.resolve_rev(rev)?;
    if args.verify {
        let mut keys = PublicKeys::default();
        for k in &args.keys {
            keys.add_base64(k)?;
        }
        if let Some(f) = &args.keys_file {
            keys.add_file(f)?;
        }
        if keys.is_empty() {
            bail!("no public key given to verify with");
        }
        let bytes = repo.read_meta_bytes(&treeline_store::ObjectName::new(
            commit,
            treeline_store::ObjectType::Commit,
        ))?;
        let detached = repo.read_commitmeta(&commit)?;
        keys.verify_commit(&commit, &bytes, detached.as_ref())?;
        println!("commit {commit}: valid ed25519 signature");
        return Ok(());
    }
    let keys = signing_keys(&args.keys, &args.keys_file)?;
    if keys.is_empty() {
        bail!("no secret key given: `sign COMMIT KEY` or --keys-file");
    }
    for k in &keys {
        treeline_store::sign::sign_commit(repo, &commit, k)?;
    }
    Ok(())
}

/// `remote` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add a remote.
    Add {
        /// Remote name.
        name: String,
        /// Its URL (http://, https:// or file://).
        url: String,
        /// Branches to pull by default.
        branches: Vec<String>,
        /// Do not require GPG signatures (GPG is not supported; use ed25519).
        #[arg(long)]
        no_gpg_verify: bool,
        /// Require ed25519 signatures: `ed25519=inline:BASE64KEY` or `ed25519=file:PATH`.
        #[arg(long, value_name = "ed25519=inline:KEY|ed25519=file:PATH")]
        sign_verify: Vec<String>,
        /// Set any option KEY=VALUE in the remote's config group.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Do nothing if the remote exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List remotes.
    List {
        /// Show URLs too.
        #[arg(short = 'u', long)]
        show_urls: bool,
    },
    /// Delete a remote and its refs.
    Delete {
        /// Remote name.
        name: String,
        /// Do nothing if it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Print a remote's URL.
    ShowUrl {
        /// Remote name.
        name: String,
    },
}

/// `remote`.
pub fn remote(repo: &mut Repo, cmd: RemoteCommand) -> Result<()> {
    use treeline_pull::remote;
    match cmd {
        RemoteCommand::Add {
            name,
            url,
            branches,
            no_gpg_verify,
            sign_verify,
            set,
            if_not_exists,
        } => {
            let mut options: Vec<(String, String)> = Vec::new();
            if no_gpg_verify || !sign_verify.is_empty() {
                options.push(("gpg-verify".into(), "false".into()));
            }
            for sv in &sign_verify {
                let spec = sv
                    .strip_prefix("ed25519=")
                    .ok_or_else(|| anyhow!("--sign-verify {sv:?}: only ed25519=inline:KEY or ed25519=file:PATH are supported"))?;
                if let Some(k) = spec.strip_prefix("inline:") {
                    PublicKeys::default()
                        .add_base64(k)
                        .with_context(|| format!("--sign-verify {sv:?}"))?;
                    options.push(("verification-ed25519-key".into(), k.into()));
                } else if let Some(p) = spec.strip_prefix("file:") {
                    PublicKeys::default()
                        .add_file(std::path::Path::new(p))
                        .with_context(|| format!("--sign-verify {sv:?}"))?;
                    options.push(("verification-ed25519-file".into(), p.into()));
                } else {
                    bail!("--sign-verify {sv:?}: expected ed25519=inline:KEY or ed25519=file:PATH");
                }
                options.push(("sign-verify".into(), "true".into()));
            }
            for kv in &set {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--set {kv:?}: expected KEY=VALUE"))?;
                options.push((k.into(), v.into()));
            }
            remote::add(repo, &name, &url, &branches, &options, if_not_exists)?;
        }
        RemoteCommand::List { show_urls } => {
            for name in remote::list(repo) {
                if show_urls {
                    let r = treeline_pull::Remote::load(repo, &name)?;
                    println!("{name}  {}", r.url);
                } else {
                    println!("{name}");
                }
            }
        }
        RemoteCommand::Delete { name, if_exists } => remote::delete(repo, &name, if_exists)?,
        RemoteCommand::ShowUrl { name } => {
            println!("{}", treeline_pull::Remote::load(repo, &name)?.url)
        }
    }
    Ok(())
}

/// `pull` flags.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// The remote (or REMOTE:REF).
    remote: String,
    /// Refs to pull (REF, REF@COMMIT or a commit checksum); default: the remote's branches.
    refs: Vec<String>,
    /// Parent commits to fetch too (-1: all).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    depth: i64,
    /// Fetch commit objects only.
    #[arg(long)]
    commit_metadata_only: bool,
    /// Write local refs (refs/heads) instead of REMOTE:REF; with no ref, every ref.
    #[arg(long)]
    mirror: bool,
    /// Do not check the commits' ostree.ref-binding.
    #[arg(long)]
    disable_verify_bindings: bool,
    /// Never use static deltas; fetch loose objects.
    #[arg(long)]
    disable_static_deltas: bool,
    /// Use static deltas even into archive repositories, and fail if none applies.
    #[arg(long, conflicts_with = "disable_static_deltas")]
    require_static_deltas: bool,
    /// Retries of a failed request.
    #[arg(long, default_value_t = 5)]
    network_retries: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    max_parallel: usize,
    /// Seconds without data before a request times out.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Only say what the pull would download: fetch the summary, the commits and (without
    /// a static delta) their dirtrees and dirmetas, which are kept for the real pull, but
    /// no content object; refs are not changed.
    #[arg(long, conflicts_with_all = ["commit_metadata_only", "mirror"])]
    dry_run: bool,
}

/// One line saying what pulling a target would download, e.g. "3.2 MB (static delta
/// a1b2c3d4→c3d4e5f6, 2 parts, 9.1 MB unpacked)".
pub fn describe_plan(t: &treeline_pull::TargetPlan) -> String {
    use treeline_store::delta::format_size;
    let short = |c: &treeline_store::Checksum| c.to_hex()[..8].to_owned();
    if t.complete {
        return "nothing (the commit is stored already)".into();
    }
    match (&t.delta, t.download_bytes) {
        (Some(d), Some(n)) => {
            let from = d
                .from
                .as_ref()
                .map(|f| format!("{}→", short(f)))
                .unwrap_or_default();
            let mut s = format!(
                "{} (static delta {from}{}, {} part(s), {} unpacked",
                format_size(n),
                short(&t.commit),
                d.parts,
                format_size(d.unpacked_bytes)
            );
            if d.fallback_objects > 0 {
                s.push_str(&format!(", {} object(s) fetched whole", d.fallback_objects));
            }
            s.push(')');
            s
        }
        (_, Some(n)) => format!("{} ({} object(s))", format_size(n), t.objects),
        (_, None) => format!(
            "{} object(s), size unknown (no static delta; the remote lists no object sizes)",
            t.objects
        ),
    }
}

/// A target's plan as JSON (for `pull --dry-run --json` and `admin upgrade --json`).
pub fn plan_json(t: &treeline_pull::TargetPlan) -> serde_json::Value {
    serde_json::json!({
        "ref": t.ref_name,
        "commit": t.commit.to_hex(),
        "complete": t.complete,
        "objects": t.objects,
        "download_bytes": t.download_bytes,
        "delta": t.delta.as_ref().map(|d| serde_json::json!({
            "name": d.name,
            "from": d.from.map(|f| f.to_hex()),
            "superblock_bytes": d.superblock_bytes,
            "parts": d.parts,
            "part_bytes": d.part_bytes,
            "unpacked_bytes": d.unpacked_bytes,
            "fallback_objects": d.fallback_objects,
            "fallback_bytes": d.fallback_bytes,
        })),
    })
}

/// What pulling `rev` (REF, REF@COMMIT or a commit) from remote `remote_name` into `repo`
/// would download, with the default pull options.
pub fn plan_pull(repo: &Repo, remote_name: &str, rev: &str) -> Result<treeline_pull::TargetPlan> {
    let remote = treeline_pull::Remote::load(repo, remote_name)?;
    let opts = treeline_pull::PullOptions {
        refs: vec![rev.to_owned()],
        ..Default::default()
    };
    treeline_pull::plan(repo, &remote, &opts)
        .with_context(|| {
            format!("working out what pulling {rev} from {remote_name} would download")
        })?
        .targets
        .pop()
        .ok_or_else(|| anyhow!("remote {remote_name} gave no commit for {rev}"))
}

/// `pull`.
pub fn pull(repo: &Repo, args: PullArgs) -> Result<()> {
    let (remote_name, mut refs) = match args.remote.split_once(':') {
        Some((r, name)) => (r.to_owned(), vec![name.to_owned()]),
        None => (args.remote.clone(), Vec::new()),
    };
    refs.extend(args.refs.iter().cloned());
    let remote = treeline_pull::Remote::load(repo, &remote_name)?;
    let opts = treeline_pull::PullOptions {
        refs,
        depth: args.depth,
        commit_metadata_only: args.commit_metadata_only,
        mirror: args.mirror,
        max_parallel: args.max_parallel.max(1),
        retries: args.network_retries,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        disable_verify_bindings: args.disable_verify_bindings,
        disable_static_deltas: args.disable_static_deltas,
        require_static_deltas: args.require_static_deltas,
    };
    let started = std::time::Instant::now();
    if args.dry_run {
        let plan = treeline_pull::plan(repo, &remote, &opts)
            .with_context(|| format!("planning a pull from {remote_name}"))?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "targets": plan.targets.iter().map(plan_json).collect::<Vec<_>>(),
                    "requests": plan.requests,
                    "bytes": plan.bytes,
                })
            );
        } else {
            for t in &plan.targets {
                let what = t.ref_name.clone().unwrap_or_else(|| t.commit.to_hex());
                println!("{what} ({}): would download {}", t.commit, describe_plan(t));
            }
        }
        return Ok(());
    }
    let report = {
        let bar = crate::progress::Bar::new("pulling");
        treeline_pull::pull(repo, &remote, &opts, &bar)
            .with_context(|| format!("pulling from {remote_name}"))?
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "refs": report.refs.iter().map(|(r, c)| serde_json::json!({"ref": r, "commit": c.to_hex()})).collect::<Vec<_>>(),
                "objects_fetched": report.objects_fetched,
                "requests": report.requests,
                "bytes": report.bytes,
                "deltas": report.deltas,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        for (r, c) in &report.refs {
            println!("{r} -> {c}");
        }
        for d in &report.deltas {
            eprintln!("applied static delta {d}");
        }
        eprintln!(
            "{} objects fetched, {} requests, {} bytes in {:.1}s",
            report.objects_fetched,
            report.requests,
            report.bytes,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `pull-local` flags.
#[derive(Args, Debug)]
pub struct PullLocalArgs {
    /// The source repository.
    source: PathBuf,
    /// Refs or commits to copy (default: every ref).
    refs: Vec<String>,
    /// Write the refs as REMOTE:REF.
    #[arg(long)]
    remote: Option<String>,
    /// Parent commits to copy too (-1: all).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    depth: i64,
}

/// `pull-local`.
pub fn pull_local(repo: &Repo, args: PullLocalArgs) -> Result<()> {
    let src = Repo::open(&args.source)
        .with_context(|| format!("opening source repository {}", args.source.display()))?;
    let bar = crate::progress::Bar::new("copying");
    let refs = treeline_pull::local::pull_local(
        &src,
        repo,
        &args.refs,
        args.depth,
        args.remote.as_deref(),
        &bar,
    )?;
    drop(bar);
    for (r, c) in refs {
        println!("{r} -> {c}");
    }
    Ok(())
}
