//! `treeline admin`: the target-side commands, named and flagged as `ostree admin`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use treeline_store::keyfile::KeyFile;
use treeline_sysroot::{Booted, DeployOptions, DeploymentStatus, Kargs, Sysroot};

/// `admin` flags and subcommand.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The sysroot to operate on: `/` for the running system, or an image or mounted disk.
    #[arg(long, global = true, default_value = "/", value_name = "PATH")]
    sysroot: PathBuf,

    #[command(subcommand)]
    command: AdminCommand,
}

/// Deployment management commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create the sysroot layout (boot, ostree/deploy, a bare ostree/repo, ...) in PATH.
    InitFs {
        /// The directory to initialize.
        path: PathBuf,
    },
    /// Create a stateroot (ostree/deploy/OSNAME with its shared /var).
    #[command(alias = "stateroot-init")]
    OsInit {
        /// The stateroot's name.
        osname: String,
    },
    /// Deploy a ref or commit of the sysroot's repository as the new default.
    Deploy(DeployArgs),
    /// Show the deployments: booted, pending, rollback, pinned, versions, origins.
    Status {
        /// Print JSON (schema: docs/status-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Make the previous deployment the default again.
    Rollback,
    /// Pin a deployment so nothing garbage-collects it.
    Pin {
        /// Index (as in `status`), or `booted`, `pending`, `rollback`.
        index: String,
        /// Unpin instead.
        #[arg(short, long)]
        unpin: bool,
    },
    /// Unpin a deployment.
    Unpin {
        /// Index (as in `status`), or `booted`, `pending`, `rollback`.
        index: String,
    },
    /// Remove a deployment from the boot list and delete it.
    Undeploy {
        /// Index (as in `status`).
        index: String,
    },
    /// Delete unreferenced deployments, kernels and boot versions, then prune the repo.
    Cleanup {
        /// Keep the repository's objects (skip the prune).
        #[arg(long)]
        no_prune: bool,
    },
}

/// `admin deploy` flags.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Ref or commit to deploy.
    revision: String,
    /// Stateroot (default: the booted one, or the only one there is).
    #[arg(long = "os", value_name = "OSNAME")]
    os: Option<String>,
    /// Set a kernel argument, replacing any with the same key (repeatable).
    #[arg(long = "karg", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    karg: Vec<String>,
    /// Append a kernel argument (repeatable).
    #[arg(
        long = "karg-append",
        value_name = "KEY=VALUE",
        allow_hyphen_values = true
    )]
    karg_append: Vec<String>,
    /// Start from the running kernel's arguments instead of the merge deployment's.
    #[arg(long)]
    karg_proc_cmdline: bool,
    /// Take this origin file instead of `refspec=REVISION`.
    #[arg(long, value_name = "FILE")]
    origin_file: Option<PathBuf>,
    /// Do not carry the current /etc changes over.
    #[arg(long)]
    no_merge: bool,
    /// Keep every existing deployment.
    #[arg(long)]
    retain: bool,
}

fn booted_source(sysroot: &Path) -> Result<Booted> {
    let canonical =
        std::fs::canonicalize(sysroot).with_context(|| format!("sysroot {}", sysroot.display()))?;
    if canonical == Path::new("/") {
        let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
        Ok(Booted::Cmdline(cmdline))
    } else {
        Ok(Booted::None)
    }
}

fn open_locked(sysroot: &Path) -> Result<Sysroot> {
    Sysroot::open_locked(sysroot, booted_source(sysroot)?)
        .with_context(|| format!("opening sysroot {}", sysroot.display()))
}

fn resolve_index(s: &Sysroot, what: &str) -> Result<usize> {
    let by_state = |pick: &dyn Fn(&DeploymentStatus) -> bool| -> Result<usize> {
        s.status()?
            .iter()
            .find(|d| pick(d))
            .map(|d| d.index)
            .ok_or_else(|| anyhow!("no {what} deployment"))
    };
    match what {
        "booted" => by_state(&|d| d.booted),
        "pending" => by_state(&|d| d.pending),
        "rollback" => by_state(&|d| d.rollback),
        n => n
            .parse()
            .map_err(|_| anyhow!("{n:?} is not a deployment index (or booted/pending/rollback)")),
    }
}

/// Run an `admin` command.
pub fn run(args: AdminArgs) -> Result<ExitCode> {
    let root = &args.sysroot;
    match args.command {
        AdminCommand::InitFs { path } => {
            Sysroot::init_fs(&path)
                .with_context(|| format!("initializing sysroot {}", path.display()))?;
        }
        AdminCommand::OsInit { osname } => {
            let s = open_locked(root)?;
            s.init_stateroot(&osname)
                .with_context(|| format!("creating stateroot {osname}"))?;
            println!("ostree/deploy/{osname} initialized as OSTree root");
        }
        AdminCommand::Deploy(d) => deploy(root, d)?,
        AdminCommand::Status { json } => {
            let s = Sysroot::open(root, booted_source(root)?)
                .with_context(|| format!("reading sysroot {}", root.display()))?;
            status(&s, json)?;
        }
        AdminCommand::Rollback => {
            let mut s = open_locked(root)?;
            let d = s.rollback().context("rollback")?;
            println!("Default deployment is now {}", d.display_id());
        }
        AdminCommand::Pin { index, unpin } => pin(root, &index, !unpin)?,
        AdminCommand::Unpin { index } => pin(root, &index, false)?,
        AdminCommand::Undeploy { index } => {
            let mut s = open_locked(root)?;
            let i = resolve_index(&s, &index)?;
            let d = s.undeploy(i).with_context(|| format!("undeploying {i}"))?;
            s.cleanup(false).context("cleaning up")?;
            println!("Deleted deployment {}", d.display_id());
        }
        AdminCommand::Cleanup { no_prune } => {
            let mut s = open_locked(root)?;
            let r = s.cleanup(!no_prune).context("cleaning up")?;
            for d in &r.deployments {
                println!("Deleted deployment {d}");
            }
            for b in &r.boot_dirs {
                println!("Deleted boot directory {b}");
            }
            if let Some((objects, bytes)) = r.pruned {
                println!("Pruned {objects} objects, {bytes} bytes freed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pin(root: &Path, index: &str, on: bool) -> Result<()> {
    let mut s = open_locked(root)?;
    let i = resolve_index(&s, index)?;
    s.set_pinned(i, on).with_context(|| {
        format!(
            "{} deployment {i}",
            if on { "pinning" } else { "unpinning" }
        )
    })?;
    let id = s.get(i)?.display_id();
    println!(
        "Deployment {i} ({id}) is now {}",
        if on { "pinned" } else { "unpinned" }
    );
    Ok(())
}

fn deploy(root: &Path, a: DeployArgs) -> Result<()> {
    let mut s = open_locked(root)?;
    let stateroot = match a.os {
        Some(os) => os,
        None => match s.booted() {
            Some(b) => b.stateroot.clone(),
            None => {
                let all = s.stateroots()?;
                match all.as_slice() {
                    [one] => one.clone(),
                    [] => bail!("no stateroot: create one with `admin os-init OSNAME`"),
                    _ => bail!(
                        "several stateroots ({}): choose one with --os",
                        all.join(", ")
                    ),
                }
            }
        },
    };
    let origin = match &a.origin_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading origin file {}", p.display()))?;
            Some(KeyFile::parse(&text).with_context(|| format!("origin file {}", p.display()))?)
        }
        None => None,
    };
    let kargs_base = if a.karg_proc_cmdline {
        let c = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
        let mut k = Kargs::parse(&c);
        k.remove_key("ostree");
        Some(k)
    } else {
        None
    };
    let opts = DeployOptions {
        stateroot: stateroot.clone(),
        revision: a.revision.clone(),
        origin,
        karg: a.karg,
        karg_append: a.karg_append,
        kargs_base,
        no_merge: a.no_merge,
        retain: a.retain,
    };
    let r = s
        .deploy(&opts)
        .with_context(|| format!("deploying {} to stateroot {stateroot}", a.revision))?;
    if r.merge_from.is_some() && !a.no_merge {
        println!(
            "Copying /etc changes: {} modified, {} removed, {} added",
            r.etc.modified.len(),
            r.etc.removed.len(),
            r.etc.added.len()
        );
    }
    println!(
        "Deployed {} (bootversion {}); it is the default",
        r.deployment.display_id(),
        s.bootversion()
    );
    Ok(())
}

fn status(s: &Sysroot, json: bool) -> Result<()> {
    let st = s.status()?;
    let mut out = std::io::stdout().lock();
    if json {
        let deployments: Vec<serde_json::Value> = st
            .iter()
            .map(|d| {
                let dep = &d.deployment;
                serde_json::json!({
                    "index": d.index,
                    "stateroot": dep.stateroot,
                    "checksum": dep.checksum.to_string(),
                    "serial": dep.serial,
                    "id": dep.name(),
                    "path": s.deployment_path(dep),
                    "default": d.index == 0,
                    "booted": d.booted,
                    "pending": d.pending,
                    "rollback": d.rollback,
                    "pinned": d.pinned,
                    "staged": false,
                    "version": d.version,
                    "timestamp": d.timestamp,
                    "origin_refspec": dep.origin_refspec(),
                    "origin": dep.origin.as_ref().map(|o| o.to_data()),
                    "bootcsum": dep.bootcsum,
                    "kargs": dep.kargs.to_string(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "sysroot": s.path(),
            "bootversion": s.bootversion(),
            "subbootversion": s.subbootversion(),
            "booted": s.booted_index(),
            "deployments": deployments,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if st.is_empty() {
        writeln!(out, "No deployments.")?;
        return Ok(());
    }
    for d in &st {
        let dep = &d.deployment;
        let mark = if d.booted { "* " } else { "  " };
        let state = if d.pending {
            " (pending)"
        } else if d.rollback {
            " (rollback)"
        } else {
            ""
        };
        writeln!(out, "{mark}{} {}{state}", dep.stateroot, dep.name())?;
        if let Some(v) = &d.version {
            writeln!(out, "    Version: {v}")?;
        }
        match dep.origin_refspec() {
            Some(r) => writeln!(out, "    origin refspec: {r}")?,
            None if dep.origin.is_none() => writeln!(out, "    origin: none")?,
            None => writeln!(out, "    origin: <unknown origin type>")?,
        }
        if d.pinned {
            writeln!(out, "    Pinned: yes")?;
        }
    }
    Ok(())
}
