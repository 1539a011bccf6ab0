//! `treeline db`: the packages of composed commits (their `treeline.packages` metadata).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use treeline_compose::{Package, PackageChanges, commit_packages};
use treeline_store::{Checksum, Repo};

/// `db` arguments.
#[derive(Args, Debug)]
#[command(
    after_long_help = "A commit made by `compose tree` records its packages (name and version) \
    in its `treeline.packages` metadata; these commands read that, not the tree."
)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// List the packages of one commit: `NAME VERSION` lines, sorted by name.
    List {
        /// Commit checksum or ref.
        rev: String,
        /// Print a JSON array of {name, version}.
        #[arg(long)]
        json: bool,
    },
    /// Show the package changes from commit A to commit B: `+ NAME VERSION` added,
    /// `- NAME VERSION` removed, `~ NAME OLD -> NEW` changed.
    Diff {
        /// The old commit (checksum or ref).
        from: String,
        /// The new commit (checksum or ref).
        to: String,
        /// Print JSON: {added: [{name, version}], removed: [...], changed: [{name, old, new}]}.
        #[arg(long)]
        json: bool,
    },
}

fn packages(repo: &Repo, rev: &str) -> Result<Vec<Package>> {
    let commit: Checksum = repo
        .resolve_rev(rev)
        .with_context(|| format!("resolving {rev}"))?;
    Ok(commit_packages(repo, &commit)?)
}

/// The changes in the text form `compose tree` and `db diff` print.
pub fn print_changes(out: &mut impl Write, changes: &PackageChanges) -> std::io::Result<()> {
    for p in &changes.added {
        writeln!(out, "+ {p}")?;
    }
    for p in &changes.removed {
        writeln!(out, "- {p}")?;
    }
    for c in &changes.changed {
        writeln!(out, "~ {} {} -> {}", c.name, c.old, c.new)?;
    }
    Ok(())
}

/// Run a `db` command.
pub fn run(repo_path: Option<PathBuf>, args: DbArgs) -> Result<ExitCode> {
    let path = repo_path
        .ok_or_else(|| anyhow!("no repository given: use --repo=PATH or set OSTREE_REPO"))?;
    let repo =
        Repo::open(&path).with_context(|| format!("opening repository {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DbCommand::List { rev, json } => {
            let list = packages(&repo, &rev)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                for p in &list {
                    writeln!(out, "{p}")?;
                }
            }
        }
        DbCommand::Diff { from, to, json } => {
            let changes = PackageChanges::between(&packages(&repo, &from)?, &packages(&repo, &to)?);
            if json {
                serde_json::to_writer_pretty(&mut out, &changes)?;
                writeln!(out)?;
            } else {
                print_changes(&mut out, &changes)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
