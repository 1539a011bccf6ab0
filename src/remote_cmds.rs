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

/// `summary`.
pub fn summary(repo: &Repo, args: SummaryArgs) -> Result<()> {
    check_sign_type(&args.sign_type)?;
    if args.update {
        let mut extra = Metadata::new();
        for kv in &args.add_metadata {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--add-metadata {kv:?}: expected KEY=VALUE"))?;
            extra.insert(k, Value::string(v));
        }
        let keys = signing_keys(&args.sign, &args.keys_file)?;
        summary::update_summary(repo, &extra, now(), &keys).context("updating the summary")?;
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
