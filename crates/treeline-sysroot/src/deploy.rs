//! Creating a deployment: hardlinked checkout, `/etc` from `/usr/etc` plus the local
//! changes of the merge deployment, origin file, and kernel lookup.

use std::fs;
use std::path::Path;

use treeline_store::checkout::{self, CheckoutOptions};
use treeline_store::fault;
use treeline_store::keyfile::KeyFile;
use treeline_store::progress::NoProgress;

use crate::accounts;
use crate::bls::Kargs;
use crate::deployment::{Deployment, TRANSIENT_GROUP, origin_for_refspec, valid_stateroot};
use crate::error::{Error, IoContext, Result, StoreContext};
use crate::etc_merge::{self, EtcMergeReport};
use crate::fsutil::{self, PhaseTimer};
use crate::kernel;
use crate::owners;
use crate::sysroot::{STAGING_PREFIX, Sysroot, next_serial};
use crate::tmpfiles;
use crate::var_seed;
use crate::verify;

/// What to deploy and how.
#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    /// The stateroot to deploy into (must exist).
    pub stateroot: String,
    /// A ref or commit of the sysroot's repository.
    pub revision: String,
    /// The origin to write; default: the merge deployment's origin if the revision is a
    /// commit checksum and there is one, else `refspec=<revision>`.
    pub origin: Option<KeyFile>,
    /// `--karg`: set these arguments, replacing any with the same key.
    pub karg: Vec<String>,
    /// `--karg-append`: append these arguments.
    pub karg_append: Vec<String>,
    /// Replace the inherited arguments entirely (`--karg-proc-cmdline` or an explicit
    /// set); `None` inherits the merge deployment's.
    pub kargs_base: Option<Kargs>,
    /// Do not carry the merge deployment's /etc changes over.
    pub no_merge: bool,
    /// Keep every existing deployment (ostree's `--retain`).
    pub retain: bool,
}

/// What a deploy did.
#[derive(Clone, Debug)]
pub struct DeployReport {
    /// The new deployment (now the default).
    pub deployment: Deployment,
    /// The /etc merge (empty when there was no merge deployment).
    pub etc: EtcMergeReport,
    /// The deployment whose /etc and kargs were inherited.
    pub merge_from: Option<Deployment>,
}

impl Sysroot {
    /// Deploy `opts.revision` as the new default: [`Sysroot::deploy_tree`], the list from
    /// [`Sysroot::list_with_new`] (or every deployment with `retain`), then
    /// [`Sysroot::write_deployments`] and a cleanup without repository prune.
    pub fn deploy(&mut self, opts: &DeployOptions) -> Result<DeployReport> {
        let (deployment, etc) = self.deploy_tree(opts)?;
        let phase = PhaseTimer::start("deploy");
        // The merge deployment stays in the list even with `no_merge`, as in ostree.
        let merge_from = self.merge_deployment(&opts.stateroot).cloned();
        let list = if opts.retain {
            let mut l = vec![deployment.clone()];
            l.extend(self.deployments().iter().cloned());
            l
        } else {
            self.list_with_new(deployment.clone(), merge_from.as_ref())
        };
        self.write_deployments(list)?;
        phase.mark("boot entries");
        // The new default replaces an upgrade staged before.
        self.discard_staged()?;
        self.cleanup(false)?;
        phase.mark("cleanup");
        Ok(DeployReport {
            deployment,
            etc,
            merge_from,
        })
    }

    /// Create a deployment directory for `opts.revision` (not yet in the boot list): check
    /// it out with hardlinks under a staging name, build `/etc`, write the origin, rename
    /// it to `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>` and make it immutable.
    pub fn deploy_tree(&mut self, opts: &DeployOptions) -> Result<(Deployment, EtcMergeReport)> {
        self.require_lock()?;
        if !valid_stateroot(&opts.stateroot) {
            return Err(Error::InvalidStateroot(opts.stateroot.clone()));
        }
        let stateroot_dir = self.path().join("ostree/deploy").join(&opts.stateroot);
        if !stateroot_dir.join("var").is_dir() {
            return Err(Error::NoStateroot(opts.stateroot.clone()));
        }
        let repo = self.repo()?;
        let checksum = repo.resolve_rev(&opts.revision).in_repo(repo.path())?;
        verify::commit_metadata(&repo, &checksum)?;
        let merge = if opts.no_merge {
            None
        } else {
            self.merge_deployment(&opts.stateroot).cloned()
        };
        // Before anything is written.
        let phase = PhaseTimer::start("deploy");
        self.check_space(&opts.stateroot, &checksum)?;
        phase.mark("space check");
        let serial = next_serial(&stateroot_dir, &checksum)?;
        let name = format!("{checksum}.{serial}");
        let staging = stateroot_dir.join(format!("{STAGING_PREFIX}{name}"));
        fsutil::remove_tree(&staging)?;

        let commit = checksum.to_string();
        let is_container = self.is_container();
        let merge_dir = merge.as_ref().map(|m| self.deployment_path(m));
        let (built, seed) = std::thread::scope(|s| {
            // The commit's /var is copied out for the stateroot while the tree is checked
            // out, and its writeback starts early: the flush before the deployment
            // appears is most of the cost of a /var seed.
            let seed = s.spawn(|| var_seed::stage(&repo, &checksum, &stateroot_dir));
            let built = (|| {
                checkout::checkout(
                    &repo,
                    &checksum,
                    &staging,
                    &CheckoutOptions::default(),
                    &NoProgress,
                )
                .in_repo(repo.path())?;
                phase.mark("checkout");
                fault::point("deploy-after-checkout");

                // The tree's files get the machine's IDs before /etc is built from usr/etc,
                // so the local files the merge brings in (already the machine's) are not
                // remapped.
                let owners_changed = match &merge {
                    Some(m) => {
                        let defaults = if staging.join("usr/etc").is_dir() {
                            staging.join("usr/etc")
                        } else {
                            staging.join("etc")
                        };
                        let changes =
                            accounts::id_changes(&self.deployment_path(m).join("etc"), &defaults)?;
                        owners::apply(&staging, &changes)?
                    }
                    None => 0,
                };
                // /etc and the kernel's bootcsum (a hash of tens of MB) side by side.
                let kernel = s.spawn(|| {
                    if is_container {
                        Ok(None)
                    } else {
                        kernel_layout(&staging, &commit).map(Some)
                    }
                });
                let etc = prepare_etc(&staging, &commit, merge_dir);
                let kernel = join_thread(kernel);
                Ok::<_, Error>((etc?, kernel?, owners_changed))
            })();
            (built, join_thread(seed))
        });
        let seed = seed?;
        let (mut etc_report, kernel, owners_changed) = match built {
            Ok(b) => b,
            Err(e) => {
                seed.abandon();
                return Err(e);
            }
        };
        etc_report.accounts.owners_changed = owners_changed;
        phase.mark("/etc and kernel hash (and the /var copy)");
        fault::point("deploy-after-etc-merge");

        let (bootcsum, boot_files) = match &kernel {
            Some(layout) => (layout.bootcsum.clone(), boot_files(layout, &opts.stateroot)),
            None => {
                // A container boots no kernel (docs/container.md).
                crate::container::add_mount_points(&staging)?;
                (String::new(), Vec::new())
            }
        };

        let mut kargs = match &opts.kargs_base {
            Some(k) => k.clone(),
            None => merge.as_ref().map(|m| m.kargs.clone()).unwrap_or_default(),
        };
        for k in &opts.karg {
            kargs.replace(k);
        }
        for k in &opts.karg_append {
            kargs.append(k);
        }

        let origin = match &opts.origin {
            Some(o) => o.clone(),
            None => match (&merge, crate::sysroot::checksum_of(&opts.revision)) {
                (Some(m), Some(_)) if m.origin.is_some() => m.origin.clone().unwrap_or_default(),
                _ => origin_for_refspec(&opts.revision),
            },
        };
        let mut origin = origin;
        origin.remove_group(TRANSIENT_GROUP);

        let deployment = Deployment {
            stateroot: opts.stateroot.clone(),
            checksum,
            serial,
            bootcsum,
            kargs,
            boot_files,
            origin: Some(origin.clone()),
        };

        // /var: the commit's content once per stateroot, then tmpfiles.d (missing only).
        let seed = seed.finish(&commit)?;
        if seed.seeded_now && !seed.copied.is_empty() {
            tracing::info!(
                "seeded /var of {} from {commit}: {:?}",
                opts.stateroot,
                seed.copied
            );
        }
        let tmp = tmpfiles::apply_var(&staging, &stateroot_dir.join("var"))?;
        for p in &tmp.problems {
            tracing::warn!("tmpfiles.d of {commit}: {p}");
        }
        if !tmp.created.is_empty() {
            tracing::info!("tmpfiles.d created in /var: {:?}", tmp.created);
        }

        phase.mark("/var");
        // Everything on disk before the name appears.
        fsutil::syncfs(&staging)?;
        phase.mark("syncfs");
        let deploy_dir = stateroot_dir.join("deploy");
        fs::create_dir_all(&deploy_dir).at(&deploy_dir)?;
        self.write_origin(&deployment, &origin)?;
        let final_path = self.deployment_path(&deployment);
        fs::rename(&staging, &final_path).at(&final_path)?;
        if let Some(mut layout) = kernel {
            for (src, _) in &mut layout.files {
                if let Ok(rel) = src.strip_prefix(&staging) {
                    *src = final_path.join(rel);
                }
            }
            self.fresh_kernels.insert(final_path.clone(), layout);
        }
        fsutil::fsync_dir(&deploy_dir)?;
        fsutil::set_immutable(&final_path, true)?;
        fault::point("deploy-after-deployment-dir");
        Ok((deployment, etc_report))
    }
}

/// Give a fresh checkout its `/etc`: a copy of `usr/etc` (a tree with only `etc` has it
/// moved to `usr/etc` first), then the merge deployment's local changes.
fn prepare_etc(
    root: &Path,
    commit: &str,
    merge_dir: Option<std::path::PathBuf>,
) -> Result<EtcMergeReport> {
    let usr_etc = root.join("usr/etc");
    let etc = root.join("etc");
    let has_usr_etc = usr_etc.is_dir();
    let has_etc = fs::symlink_metadata(&etc).is_ok();
    match (has_usr_etc, has_etc) {
        (true, true) => {
            return Err(Error::BadTree {
                commit: commit.to_owned(),
                reason: "has both /etc and /usr/etc".into(),
            });
        }
        (false, true) => {
            fs::rename(&etc, &usr_etc).at(&usr_etc)?;
        }
        (false, false) => {
            return Err(Error::BadTree {
                commit: commit.to_owned(),
                reason: "has no /usr/etc (nor /etc)".into(),
            });
        }
        (true, false) => {}
    }
    fsutil::copy_preserving(&usr_etc, &etc)?;
    let Some(m) = merge_dir else {
        return Ok(EtcMergeReport::default());
    };
    let old_defaults = m.join("usr/etc");
    let old_local = m.join("etc");
    if !old_local.is_dir() {
        return Ok(EtcMergeReport::default());
    }
    let mut report = etc_merge::merge(&old_defaults, &old_local, &etc)?;
    report.accounts = accounts::merge(&old_local, &usr_etc, &etc)?;
    Ok(report)
}

/// The kernel of a checkout (`usr/lib/modules/<kver>`), which a bootable tree must have.
fn kernel_layout(staging: &Path, commit: &str) -> Result<kernel::KernelLayout> {
    kernel::find_kernel(staging)?.ok_or_else(|| Error::BadTree {
        commit: commit.to_owned(),
        reason: "no kernel: expected usr/lib/modules/<kver>/vmlinuz".into(),
    })
}

/// The BLS boot-file lines of a kernel.
fn boot_files(layout: &kernel::KernelLayout, stateroot: &str) -> Vec<(String, String)> {
    let prefix = format!("/ostree/{stateroot}-{}", layout.bootcsum);
    let mut boot_files = vec![(
        "linux".to_owned(),
        format!("{prefix}/{}", layout.kernel_name),
    )];
    if let Some(i) = &layout.initramfs_name {
        boot_files.push(("initrd".to_owned(), format!("{prefix}/{i}")));
    }
    if let Some(dt) = &layout.devicetree_name {
        boot_files.push(("devicetree".to_owned(), format!("{prefix}/{dt}")));
    }
    if let Some(fdt) = &layout.fdtdir_name {
        boot_files.push(("fdtdir".to_owned(), format!("{prefix}/{fdt}")));
    }
    boot_files
}

/// The result of a scoped thread; a panic in it goes on in the caller.
fn join_thread<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}
