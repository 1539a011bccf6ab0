//! `treeline admin`: the target-side commands, named and flagged as `ostree admin`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use treeline_store::keyfile::KeyFile;
use treeline_sysroot::{Booted, DeployOptions, DeploymentStatus, KargEdit, Kargs, Sysroot};

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
        /// Make a container sysroot (OpenVZ, LXC: no kernel, no boot loader): the
        /// deployments are listed, default first, in ostree/container-deployments instead
        /// of boot loader entries (docs/container.md). Then `install-boot` puts
        /// treeline-boot in as the container's /sbin/init.
        #[arg(long)]
        container: bool,
    },
    /// Install treeline-boot as /sbin/init of a container sysroot (made with `init-fs
    /// --container`): started as the container's init, it enters the default deployment
    /// (/usr read-only, /etc, /var from the stateroot, the sysroot on /sysroot) and execs
    /// the deployment's /sbin/init. The program must be statically linked (the container
    /// root has no libraries); it replaces any /sbin/init in one rename.
    InstallBoot {
        /// The statically linked treeline-boot to install [default: treeline-boot next to
        /// this program].
        #[arg(long, value_name = "FILE", env = "TREELINE_BOOT")]
        from: Option<PathBuf>,
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
    /// Pull the default deployment's origin and deploy it if it changed (exit code 77
    /// when there is nothing new).
    Upgrade(UpgradeArgs),
    /// Make the staged deployment (`deploy --stage`, `upgrade --stage`) the default,
    /// keeping the /etc changes made since it was staged. Run at shutdown by
    /// dist/treeline-finalize-staged.service (systemd) or dist/openrc/ (OpenRC).
    FinalizeStaged,
    /// Show or edit the default deployment's kernel arguments (written as a new boot
    /// version). Deletions apply first, then replacements, then appends.
    Kargs {
        /// Append an argument (repeatable).
        #[arg(long, value_name = "KEY=VALUE", allow_hyphen_values = true)]
        append: Vec<String>,
        /// Delete every argument with this key, or with `KEY=VALUE` that one (repeatable).
        #[arg(long, value_name = "KEY[=VALUE]", allow_hyphen_values = true)]
        delete: Vec<String>,
        /// Replace the arguments with this key, or add it (repeatable).
        #[arg(long, value_name = "KEY=VALUE", allow_hyphen_values = true)]
        replace: Vec<String>,
        /// The deployment to edit (index as in `status`; default: the default one).
        #[arg(long, default_value = "0")]
        deployment: String,
    },
}

/// `admin upgrade` flags.
#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// Stateroot (default: the booted one, or the only one there is).
    #[arg(long = "os", value_name = "OSNAME")]
    os: Option<String>,
    /// Only report whether an update exists (fetches commit metadata, deploys nothing).
    #[arg(long)]
    check: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Prepare the new deployment but make it the default only at shutdown
    /// (`admin finalize-staged`); a reboot without it keeps the current default.
    #[arg(long)]
    stage: bool,
    /// Take the update from PATH instead of the network: an OSTree repository directory
    /// (any mode) holding the origin's ref, or a static delta (a directory with
    /// `superblock` and its parts, or the superblock file) made by `static-delta
    /// generate` whose target descends from the deployed commit. Objects are verified as
    /// they are copied, and signatures too when the origin's remote requires them.
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
}

/// The exit code of `upgrade` when the origin has nothing new (as rpm-ostree's).
const EXIT_NOTHING_NEW: u8 = 77;

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
    /// Prepare the deployment but make it the default only at shutdown
    /// (`admin finalize-staged`); a reboot without it keeps the current default.
    #[arg(long)]
    stage: bool,
}

pub(crate) fn booted_source(sysroot: &Path) -> Result<Booted> {
    let canonical =
        std::fs::canonicalize(sysroot).with_context(|| format!("sysroot {}", sysroot.display()))?;
    if canonical == Path::new("/") {
        let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
        Ok(Booted::Cmdline(cmdline))
    } else {
        Ok(Booted::None)
    }
}

pub(crate) fn open_locked(sysroot: &Path) -> Result<Sysroot> {
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
        AdminCommand::InitFs { path, container } => {
            if container {
                Sysroot::init_container_fs(&path)
            } else {
                Sysroot::init_fs(&path)
            }
            .with_context(|| format!("initializing sysroot {}", path.display()))?;
        }
        AdminCommand::InstallBoot { from } => {
            let from = crate::image_cmds::treeline_boot_program(from)?;
            let s = open_locked(root)?;
            let dest = s.install_container_init(&from).with_context(|| {
                format!("installing {} as the container's init", from.display())
            })?;
            println!("Installed {} as {}", from.display(), dest.display());
        }
        AdminCommand::OsInit { osname } => {
            let s = open_locked(root)?;
            s.init_stateroot(&osname)
                .with_context(|| format!("creating stateroot {osname}"))?;
            println!("ostree/deploy/{osname} initialized as OSTree root");
        }
        AdminCommand::Deploy(d) => deploy(root, d)?,
        AdminCommand::Upgrade(u) => return upgrade(root, u),
        AdminCommand::FinalizeStaged => {
            let mut s = open_locked(root)?;
            match s
                .finalize_staged()
                .context("finalizing the staged deployment")?
            {
                Some(d) => println!(
                    "Finalized {} (bootversion {}); it is the default",
                    d.display_id(),
                    s.bootversion()
                ),
                None => println!("No staged deployment"),
            }
        }
        AdminCommand::Kargs {
            append,
            delete,
            replace,
            deployment,
        } => {
            let edits: Vec<KargEdit> = delete
                .into_iter()
                .map(KargEdit::Delete)
                .chain(replace.into_iter().map(KargEdit::Replace))
                .chain(append.into_iter().map(KargEdit::Append))
                .collect();
            if edits.is_empty() {
                let s = Sysroot::open(root, booted_source(root)?)
                    .with_context(|| format!("reading sysroot {}", root.display()))?;
                let i = resolve_index(&s, &deployment)?;
                println!("{}", s.get(i)?.kargs);
            } else {
                let mut s = open_locked(root)?;
                let i = resolve_index(&s, &deployment)?;
                let k = s
                    .edit_kargs(i, &edits)
                    .with_context(|| format!("editing the kernel arguments of deployment {i}"))?;
                println!("{k}");
            }
        }
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

/// The stateroot an operation acts on: the one named, else the booted one, else the only
/// one there is.
pub(crate) fn pick_stateroot(s: &Sysroot, os: Option<String>) -> Result<String> {
    Ok(match os {
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
    })
}

fn deploy(root: &Path, a: DeployArgs) -> Result<()> {
    let mut s = open_locked(root)?;
    let stateroot = pick_stateroot(&s, a.os.clone())?;
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
    let r = if a.stage {
        s.stage(&opts)
    } else {
        s.deploy(&opts)
    }
    .with_context(|| format!("deploying {} to stateroot {stateroot}", a.revision))?;
    if r.merge_from.is_some() && !a.no_merge {
        println!(
            "Copying /etc changes: {} modified, {} removed, {} added",
            r.etc.modified.len(),
            r.etc.removed.len(),
            r.etc.added.len()
        );
        let acc = &r.etc.accounts;
        if !acc.users_added.is_empty() || !acc.groups_added.is_empty() {
            println!(
                "Accounts: users added {:?}, groups added {:?}",
                acc.users_added, acc.groups_added
            );
        }
        for (file, name, from, to) in &acc.renumbered {
            eprintln!(
                "warning: {file}: {name} has ID {from} in the new tree, taken here: given {to}"
            );
        }
        if acc.owners_changed > 0 {
            println!(
                "Owners changed to this machine's IDs: {} files",
                acc.owners_changed
            );
        }
    }
    println!("{}", deployed_line(&r.deployment, &s, a.stage));
    Ok(())
}

fn deployed_line(d: &treeline_sysroot::Deployment, s: &Sysroot, staged: bool) -> String {
    if staged {
        format!(
            "Staged {}; it becomes the default at shutdown (admin finalize-staged)",
            d.display_id()
        )
    } else {
        format!(
            "Deployed {} (bootversion {}); it is the default",
            d.display_id(),
            s.bootversion()
        )
    }
}

fn status(s: &Sysroot, json: bool) -> Result<()> {
    let mut st = s.status()?;
    if let Some(staged) = s.staged_status()? {
        st.insert(0, staged);
    }
    let mut out = std::io::stdout().lock();
    if json {
        let deployments: Vec<serde_json::Value> = st
            .iter()
            .map(|d| {
                let dep = &d.deployment;
                // The staged deployment is not in the boot order: no index.
                let index = (!d.staged).then_some(d.index);
                serde_json::json!({
                    "index": index,
                    "stateroot": dep.stateroot,
                    "checksum": dep.checksum.to_string(),
                    "serial": dep.serial,
                    "id": dep.name(),
                    "path": s.deployment_path(dep),
                    "default": index == Some(0),
                    "booted": d.booted,
                    "pending": d.pending,
                    "rollback": d.rollback,
                    "pinned": d.pinned,
                    "staged": d.staged,
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
            "container": s.is_container(),
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
        let state = if d.staged {
            " (staged)"
        } else if d.pending {
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

/// Where an origin's updates come from.
enum Source {
    /// `refspec=REMOTE:REF`: pulled from the remote configured in the sysroot's repo.
    Remote { remote: String, name: String },
    /// `refspec=REF` (or a local commit): read from the sysroot's repo as it is.
    Local(String),
}

/// `admin upgrade`: read the merge deployment's origin, fetch the new commit's metadata,
/// compare, then (unless `--check`) fetch the rest and deploy it with the same origin.
fn upgrade(root: &Path, a: UpgradeArgs) -> Result<ExitCode> {
    use treeline_sysroot::deployment::ORIGIN_GROUP;
    let mut s = open_locked(root)?;
    let stateroot = pick_stateroot(&s, a.os.clone())?;
    let merge = s.merge_deployment(&stateroot).cloned().ok_or_else(|| {
        anyhow!("stateroot {stateroot} has no deployment to upgrade (deploy one first)")
    })?;
    let origin = merge
        .origin
        .clone()
        .ok_or_else(|| anyhow!("deployment {} has no origin file", merge.display_id()))?;
    if let Some(msg) = origin.string(ORIGIN_GROUP, "unconfigured-state")? {
        bail!("deployment {}: {msg}", merge.display_id());
    }
    let refspec = merge.origin_refspec().ok_or_else(|| {
        anyhow!(
            "deployment {}: origin has no refspec (nothing to upgrade from)",
            merge.display_id()
        )
    })?;
    let override_commit = origin.string(ORIGIN_GROUP, "override-commit")?;
    let source = match refspec.split_once(':') {
        Some((remote, name)) => Source::Remote {
            remote: remote.to_owned(),
            name: name.to_owned(),
        },
        None => Source::Local(refspec.clone()),
    };
    let repo = s.repo()?;
    let current = merge.checksum;
    let offline = a
        .from
        .as_deref()
        .map(treeline_pull::OfflineSource::open)
        .transpose()?;

    // 1. Which commit the origin names now (commit objects only for a remote).
    let target = match (&source, &offline) {
        (_, Some(off)) => offline_target(
            &repo,
            off,
            &source,
            &refspec,
            override_commit.as_deref(),
            current,
        )?,
        (Source::Local(r), None) => {
            let rev = override_commit.clone().unwrap_or_else(|| r.clone());
            repo.resolve_rev(&rev)
                .with_context(|| format!("resolving {rev} in {}", repo.path().display()))?
        }
        (Source::Remote { remote, name }, None) => {
            let remote_cfg = treeline_pull::Remote::load(&repo, remote).with_context(|| {
                format!(
                    "origin {refspec}: remote {remote:?} of {}",
                    repo.path().display()
                )
            })?;
            let wanted = match &override_commit {
                Some(c) => c.clone(),
                None => name.clone(),
            };
            // `--check` must leave the local ref alone: remember it and put it back.
            let spec = treeline_store::refs::RefSpec::parse(&refspec)?;
            let before = repo.read_ref(&spec)?;
            let opts = treeline_pull::PullOptions {
                refs: vec![wanted.clone()],
                commit_metadata_only: true,
                ..Default::default()
            };
            let r = treeline_pull::pull(
                &repo,
                &remote_cfg,
                &opts,
                &treeline_store::progress::NoProgress,
            )
            .with_context(|| format!("fetching {wanted} from remote {remote}"))?;
            repo.set_ref(&spec, before.as_ref())?;
            match &override_commit {
                Some(c) => c
                    .parse::<treeline_store::Checksum>()
                    .map_err(|_| anyhow!("origin override-commit {c:?} is not a checksum"))?,
                None => r
                    .refs
                    .first()
                    .map(|(_, c)| *c)
                    .ok_or_else(|| anyhow!("remote {remote} did not return {name}"))?,
            }
        }
    };
    let version = repo.load_commit(&target).ok().and_then(|c| c.version());
    // A pending deployment of the target (deployed, not yet booted) is nothing new either.
    let newest = s
        .deployments()
        .iter()
        .find(|d| d.stateroot == stateroot)
        .map(|d| d.checksum);
    let staged = s.staged()?.filter(|d| d.stateroot == stateroot);
    let update =
        target != current && newest != Some(target) && staged.map(|d| d.checksum) != Some(target);
    let mut report = serde_json::json!({
        "stateroot": stateroot,
        "refspec": refspec,
        "current": current.to_string(),
        "available": target.to_string(),
        "version": version,
        "update": update,
        "deployed": serde_json::Value::Null,
    });
    let say = |line: String| {
        if !a.json {
            println!("{line}");
        }
    };
    if !update {
        say(format!(
            "No update available: {refspec} is {target}, already deployed"
        ));
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(ExitCode::from(EXIT_NOTHING_NEW));
    }
    say(format!(
        "Update available: {refspec} {current} -> {target}{}",
        version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default()
    ));
    if let (Source::Remote { remote, name }, None) = (&source, &offline) {
        let rev = override_commit
            .clone()
            .unwrap_or_else(|| format!("{name}@{target}"));
        let plan = crate::remote_cmds::plan_pull(&repo, remote, &rev)?;
        say(format!(
            "Will download {}",
            crate::remote_cmds::describe_plan(&plan)
        ));
        report["download"] = crate::remote_cmds::plan_json(&plan);
    }
    if a.check {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(ExitCode::SUCCESS);
    }

    // 2. The objects, then the deployment.
    if let Some(off) = &offline {
        say(format!("Copying {target} from {}", off.path().display()));
        let written = {
            let bar = crate::progress::Bar::new("copying");
            off.fetch(&repo, &target, &bar)?
        };
        if override_commit.is_none() {
            let spec = treeline_store::refs::RefSpec::parse(&refspec)?;
            treeline_pull::OfflineSource::set_ref(&repo, &spec, &target)?;
        }
        say(format!("Copied {written} objects"));
        report["objects_fetched"] = written.into();
    } else if let Source::Remote { remote, name } = &source {
        let remote_cfg = treeline_pull::Remote::load(&repo, remote)?;
        let wanted = override_commit.clone().unwrap_or_else(|| name.clone());
        say(format!("Fetching {target} from {}", remote_cfg.url));
        let opts = treeline_pull::PullOptions {
            refs: vec![wanted.clone()],
            ..Default::default()
        };
        let r = {
            let bar = crate::progress::Bar::new("pulling");
            treeline_pull::pull(&repo, &remote_cfg, &opts, &bar)
                .with_context(|| format!("pulling {wanted} from remote {remote}"))?
        };
        if override_commit.is_none() && r.refs.first().map(|(_, c)| *c) != Some(target) {
            bail!("remote {remote} moved {name} while upgrading; run upgrade again");
        }
        say(format!(
            "Fetched {} objects, {} bytes in {} requests",
            r.objects_fetched, r.bytes, r.requests
        ));
        report["objects_fetched"] = r.objects_fetched.into();
        report["bytes"] = r.bytes.into();
    }
    let opts = DeployOptions {
        stateroot: stateroot.clone(),
        revision: target.to_string(),
        origin: Some(origin),
        ..Default::default()
    };
    let r = if a.stage {
        s.stage(&opts)
    } else {
        s.deploy(&opts)
    }
    .with_context(|| format!("deploying {target} to stateroot {stateroot}"))?;
    say(deployed_line(&r.deployment, &s, a.stage));
    report["deployed"] = r.deployment.name().into();
    report["staged"] = a.stage.into();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The commit an offline source (`upgrade --from PATH`) offers for the origin, checked:
/// it must descend from the deployed commit and carry a valid signature when the
/// origin's remote requires one. Nothing is copied yet.
fn offline_target(
    repo: &treeline_store::Repo,
    off: &treeline_pull::OfflineSource,
    source: &Source,
    refspec: &str,
    override_commit: Option<&str>,
    current: treeline_store::Checksum,
) -> Result<treeline_store::Checksum> {
    let path = off.path().display();
    let (name, remote) = match source {
        Source::Remote { remote, name } => (name.as_str(), Some(remote.as_str())),
        Source::Local(r) => (r.as_str(), None),
    };
    let target = match override_commit {
        Some(c) => c
            .parse()
            .map_err(|_| anyhow!("origin override-commit {c:?} is not a checksum"))?,
        None => off.target(name, remote)?,
    };
    if target == current {
        return Ok(target);
    }
    if let Some(remote) = remote {
        let cfg = treeline_pull::Remote::load(repo, remote).with_context(|| {
            format!(
                "origin {refspec}: remote {remote:?} of {}",
                repo.path().display()
            )
        })?;
        if cfg.sign_verify {
            let keys = cfg
                .public_keys()
                .with_context(|| format!("remote {remote}"))?;
            off.verify_signature(&target, &keys)
                .with_context(|| format!("remote {remote} requires signed commits"))?;
        } else if cfg.gpg_verify {
            bail!(
                "remote {remote}: gpg-verify is enabled but GPG verification is not \
                 supported; use ed25519 (`--sign-verify`) or set gpg-verify=false"
            );
        }
    }
    if override_commit.is_none() && !off.descends_from(repo, &target, &current)? {
        bail!(
            "{path}: {target} is not a descendant of the deployed commit {current} of \
             {refspec}; refusing to deploy it"
        );
    }
    Ok(target)
}
