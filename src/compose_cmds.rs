//! `treeline compose`: build OS commits from treefiles (docs/treefile.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use treeline_compose::{ComposeOptions, Outcome, compose_tree, treefile::Treefile};

/// Compose commands.
#[derive(Args, Debug)]
pub struct ComposeArgs {
    #[command(subcommand)]
    command: ComposeCommand,
}

#[derive(Subcommand, Debug)]
enum ComposeCommand {
    /// Build the tree a treefile describes and commit it on the treefile's ref: resolve,
    /// fetch, import, assemble, package database, scripts, users, services, post-process
    /// scripts, the OSTree layout (/usr merged, /usr/etc, /var from tmpfiles.d), commit.
    /// No commit is made when nothing changed. See docs/treefile.md.
    Tree {
        /// The treefile (TOML).
        treefile: PathBuf,
        /// Package cache directory (default: $TREELINE_CACHE_DIR, /var/cache/treeline as
        /// root, else ~/.cache/treeline).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Resolve and print the plan (packages in install order, cached or to fetch);
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Commit even when the tree and metadata equal the ref's commit.
        #[arg(long)]
        force: bool,
        /// Debian: assemble from scratch instead of starting from the configured root an
        /// earlier compose kept (treeline/stage/deb/… refs).
        #[arg(long)]
        fresh: bool,
        /// Downloads in flight at once.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// After a new commit, generate the static delta from its parent (as
        /// `static-delta generate`; from scratch when there is no parent).
        #[arg(long)]
        static_delta: bool,
        /// After a new commit (and its delta), regenerate the summary, as `summary -u`.
        #[arg(long)]
        update_summary: bool,
        /// Sign the summary with the ed25519 secret keys in this file (one base64 key a
        /// line); without it a previous summary.sig is removed, as `summary -u` does.
        #[arg(long, value_name = "FILE", requires = "update_summary")]
        summary_keys_file: Option<PathBuf>,
        /// The statically linked treeline-boot that becomes /init of the initramfs compose
        /// builds when the treefile's kernel brings none [default: treeline-boot next to
        /// this program].
        #[arg(long, value_name = "FILE", env = "TREELINE_BOOT")]
        boot_init: Option<PathBuf>,
        /// Also put this kernel module (a name or an alias) and what it needs in that
        /// initramfs (repeatable).
        #[arg(long = "initramfs-module", value_name = "NAME")]
        initramfs_modules: Vec<String>,
    },
}

pub fn run(repo: Option<PathBuf>, args: ComposeArgs) -> Result<ExitCode> {
    match args.command {
        ComposeCommand::Tree {
            treefile,
            cache_dir,
            dry_run,
            force,
            fresh,
            jobs,
            json,
            static_delta,
            update_summary,
            summary_keys_file,
            boot_init,
            initramfs_modules,
        } => {
            let tf = Treefile::load(&treefile)?;
            let repo_path = repo.ok_or_else(|| anyhow!("compose tree needs --repo=PATH"))?;
            let mut repo = treeline_store::Repo::open(&repo_path)
                .with_context(|| format!("opening repository {}", repo_path.display()))?;
            let opts = ComposeOptions {
                cache_dir,
                dry_run,
                force,
                fresh,
                jobs,
                progress: Some(Box::new(crate::progress::Bar::new("downloading"))),
                initramfs: treeline_compose::initramfs::InitramfsSettings {
                    init: Some(crate::image_cmds::treeline_boot_program(boot_init)?),
                    extra_modules: initramfs_modules,
                },
            };
            let outcome = compose_tree(&repo, &tf, &opts)
                .with_context(|| format!("composing {}", treefile.display()))?;
            drop(opts);
            if let Outcome::Committed { commit, parent, .. } = &outcome {
                if static_delta {
                    let name = treeline_store::delta::DeltaName::new(*parent, *commit);
                    eprintln!("generating static delta {name}");
                    treeline_store::delta::generate(
                        &mut repo,
                        *parent,
                        *commit,
                        &treeline_store::delta::GenerateOptions::default(),
                    )
                    .with_context(|| format!("generating static delta {name}"))?;
                }
                if update_summary {
                    crate::remote_cmds::update_summary(&mut repo, &[], &[], &summary_keys_file)?;
                }
            }
            print_outcome(&tf, &outcome, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(tf: &Treefile, outcome: &Outcome, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = match outcome {
            Outcome::Planned(plan) => serde_json::to_value(plan)?,
            Outcome::Unchanged { commit } => serde_json::json!({
                "ref": tf.ref_name, "commit": commit.to_hex(), "changed": false,
            }),
            Outcome::Committed {
                commit,
                parent,
                packages,
                changes,
            } => serde_json::json!({
                "ref": tf.ref_name,
                "commit": commit.to_hex(),
                "parent": parent.map(|p| p.to_hex()),
                "changed": true,
                "packages": packages,
                "changes": changes,
            }),
        };
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    match outcome {
        Outcome::Planned(plan) => write!(out, "{plan}")?,
        Outcome::Unchanged { commit } => {
            writeln!(out, "{}: unchanged, {}", tf.ref_name, commit.to_hex())?
        }
        Outcome::Committed {
            commit,
            packages,
            changes,
            ..
        } => {
            crate::db_cmds::print_changes(&mut out, changes)?;
            writeln!(
                out,
                "{}: {} ({} packages: {} added, {} removed, {} changed)",
                tf.ref_name,
                commit.to_hex(),
                packages.len(),
                changes.added.len(),
                changes.removed.len(),
                changes.changed.len()
            )?
        }
    }
    Ok(())
}
