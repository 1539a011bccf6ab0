//! Garbage collection of a sysroot: what the current boot version no longer references.

use std::collections::HashSet;
use std::fs;

use treeline_store::fault;
use treeline_store::prune::{self, PruneOptions};

use crate::deployment::parse_deploy_name;
use crate::error::{IoContext, Result, StoreContext};
use crate::fsutil;
use crate::sysroot::{STAGING_PREFIX, Sysroot, remove_stale_deployment_refs};

/// What cleanup removed.
#[derive(Clone, Debug, Default)]
pub struct CleanupReport {
    /// Deployment directories removed (`<stateroot>/<checksum>.<serial>`).
    pub deployments: Vec<String>,
    /// Kernel directories removed from `boot/ostree`.
    pub boot_dirs: Vec<String>,
    /// Objects the repository prune deleted, and the bytes freed.
    pub pruned: Option<(usize, u64)>,
}

impl Sysroot {
    /// Remove the other boot version's loader and link farms, deployment directories and
    /// kernel directories no deployment uses, staging leftovers, and stale deployment refs;
    /// with `prune_repo`, then delete the repository objects no ref reaches (as ostree,
    /// keeping only the commits refs point at, not their history).
    pub fn cleanup(&mut self, prune_repo: bool) -> Result<CleanupReport> {
        self.require_lock()?;
        let mut report = CleanupReport::default();
        let root = self.path().to_path_buf();
        let b = self.bootversion();
        let s = self.subbootversion();
        let other = 1 - b;
        for rel in [
            format!("boot/loader.{other}"),
            format!("ostree/boot.{other}"),
            format!("ostree/boot.{other}.0"),
            format!("ostree/boot.{other}.1"),
            format!("ostree/boot.{b}.{}", 1 - s),
            "boot/loader.tmp".to_owned(),
        ] {
            fsutil::remove_tree(&root.join(rel))?;
        }
        fault::point("cleanup-after-boot-versions");

        // A staged deployment is not in the boot list yet but is kept.
        let staged = self.sync_staged_ref()?;
        let live: HashSet<(String, String)> = self
            .deployments()
            .iter()
            .chain(staged.iter())
            .map(|d| (d.stateroot.clone(), d.name()))
            .collect();
        let mut first = true;
        for os in self.stateroots()? {
            let os_dir = root.join("ostree/deploy").join(&os);
            for e in fs::read_dir(&os_dir).at(&os_dir)? {
                let e = e.at(&os_dir)?;
                if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                    fsutil::remove_tree(&e.path())?;
                }
            }
            let dir = os_dir.join("deploy");
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(dir),
            };
            let mut names: Vec<String> = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()
                .at(&dir)?;
            names.sort();
            for name in names {
                let base = name.strip_suffix(".origin").unwrap_or(&name);
                if parse_deploy_name(base).is_none()
                    || live.contains(&(os.clone(), base.to_owned()))
                {
                    continue;
                }
                let p = dir.join(&name);
                if name.ends_with(".origin") {
                    // Removed together with its directory below, origin first as ostree.
                    if !dir.join(base).exists() {
                        fsutil::remove_tree(&p)?;
                    }
                    continue;
                }
                fsutil::remove_tree(&dir.join(format!("{name}.origin")))?;
                fsutil::remove_tree(&p)?;
                report.deployments.push(format!("{os}/{name}"));
                if first {
                    first = false;
                    fault::point("cleanup-during-deployments");
                }
            }
            fsutil::fsync_dir(&dir)?;
        }

        let boot_live: HashSet<String> = self
            .deployments()
            .iter()
            .map(|d| format!("{}-{}", d.stateroot, d.bootcsum))
            .collect();
        let bootdir = root.join("boot/ostree");
        if let Ok(rd) = fs::read_dir(&bootdir) {
            let mut names: Vec<String> = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()
                .at(&bootdir)?;
            names.sort();
            for name in names {
                let is_kernel_dir = name.rsplit_once('-').is_some_and(|(_, c)| {
                    c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit())
                });
                let stale_tmp = name.starts_with(".tmp-");
                if (is_kernel_dir && !boot_live.contains(&name)) || stale_tmp {
                    fsutil::remove_tree(&bootdir.join(&name))?;
                    if !stale_tmp {
                        report.boot_dirs.push(name);
                    }
                }
            }
            fsutil::fsync_dir(&bootdir)?;
        }

        let repo = self.repo()?;
        if self.is_container() {
            crate::container::remove_stale_refs(&repo, self.deployments())?;
        } else {
            remove_stale_deployment_refs(&repo, b, s, self.deployments().len())?;
        }
        fault::point("cleanup-before-prune");
        if prune_repo {
            let r = prune::prune(
                &repo,
                &PruneOptions {
                    refs_only: true,
                    depth: Some(0),
                    keep_younger_than: None,
                    no_prune: false,
                },
            )
            .in_repo(repo.path())?;
            report.pruned = Some((r.deleted, r.freed_bytes));
        }
        Ok(report)
    }
}
