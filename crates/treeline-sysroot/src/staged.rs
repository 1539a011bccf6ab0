//! Staged deployments: prepared now, made the default at shutdown.
//!
//! [`Sysroot::stage`] does all of a deploy except the boot list: checkout, `/etc` merge
//! from the merge deployment, origin, `/var`. It records the deployment in
//! [`STAGED_RECORD`] under the sysroot's `run/` (on a running system `/run`, a tmpfs) and
//! points the ref [`STAGED_REF`] at its commit so a prune keeps it. At shutdown
//! `admin finalize-staged` ([`Sysroot::finalize_staged`]) merges `/etc` again from the
//! merge deployment as it is then (changes made since staging are kept), writes the new
//! boot list with one atomic swap and drops the record.
//!
//! A reboot without finalizing loses the record with `/run`: the old default boots and
//! the next cleanup deletes the unreferenced deployment directory and the ref. A crash
//! during finalizing leaves the record: before the swap the old default stays and
//! finalizing again completes; after it the staged deployment is already in the boot
//! list and finalizing again only drops the record. A plain deploy replaces a staged one.
//! The record is a key file (`[staged]` with `stateroot`, `checksum`, `serial`,
//! `bootcsum`, `kargs`, `retain`, `no-merge`, `[boot-files]`, and `[id-changes]`: the
//! tree→machine IDs its files were given); ostree's own `/run/ostree/staged-deployment`
//! (a GVariant) is not written. Finalizing refuses (keeping the old default) when the
//! machine's accounts changed since staging so that the files would need other IDs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use treeline_store::Checksum;
use treeline_store::fault;
use treeline_store::keyfile::KeyFile;
use treeline_store::refs::RefSpec;

use crate::accounts::{self, IdChanges};
use crate::bls::Kargs;
use crate::deploy::{DeployOptions, DeployReport};
use crate::deployment::Deployment;
use crate::error::{Error, IoContext, Result, StoreContext};
use crate::etc_merge;
use crate::fsutil;
use crate::sysroot::Sysroot;

/// The record of the staged deployment, relative to the sysroot.
pub const STAGED_RECORD: &str = "run/treeline/staged-deployment";
/// The ref that keeps the staged commit from being pruned.
pub const STAGED_REF: &str = "treeline/staged-deployment";

const GROUP: &str = "staged";
const BOOT_FILES: &str = "boot-files";
const ID_CHANGES: &str = "id-changes";

/// A staged deployment and how it is to be finalized.
struct Staged {
    deployment: Deployment,
    retain: bool,
    no_merge: bool,
    /// The tree→machine IDs its files were given when staged.
    id_changes: IdChanges,
}

/// `a:b` pairs, as the record stores an ID map.
fn ids_to_list(m: &BTreeMap<u32, u32>) -> Vec<String> {
    m.iter().map(|(a, b)| format!("{a}:{b}")).collect()
}

fn ids_from_list(k: &KeyFile, key: &str) -> std::result::Result<BTreeMap<u32, u32>, String> {
    let list = k
        .string_list(ID_CHANGES, key)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    list.iter()
        .map(|p| {
            p.split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| format!("{ID_CHANGES}: bad pair {p:?}"))
        })
        .collect()
}

impl Sysroot {
    fn record_path(&self) -> PathBuf {
        self.path().join(STAGED_RECORD)
    }

    fn read_record(&self) -> Result<Option<Staged>> {
        let p = self.record_path();
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(p),
        };
        let bad = |reason: String| Error::Layout {
            path: p.clone(),
            reason,
        };
        let k = KeyFile::parse(&text).map_err(|e| bad(e.to_string()))?;
        let get = |key: &str| -> Result<String> {
            k.string(GROUP, key)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad(format!("no {key}")))
        };
        let checksum =
            Checksum::from_str(&get("checksum")?).map_err(|e| bad(format!("checksum: {e}")))?;
        let serial = get("serial")?
            .parse()
            .map_err(|_| bad("serial is not a number".into()))?;
        let flag = |key: &str| k.boolean(GROUP, key).ok().flatten().unwrap_or(false);
        let mut d = Deployment {
            stateroot: get("stateroot")?,
            checksum,
            serial,
            bootcsum: get("bootcsum")?,
            kargs: Kargs::parse(&get("kargs").unwrap_or_default()),
            boot_files: k
                .keys(BOOT_FILES)
                .filter_map(|key| Some((key.to_owned(), k.string(BOOT_FILES, key).ok()??)))
                .collect(),
            origin: None,
        };
        if !self.deployment_path(&d).is_dir() {
            tracing::warn!(
                "{}: staged deployment {} has no directory; ignored",
                p.display(),
                d.display_id()
            );
            return Ok(None);
        }
        d.origin = self.read_origin(&d)?;
        let id_changes = IdChanges {
            uids: ids_from_list(&k, "uids").map_err(bad)?,
            gids: ids_from_list(&k, "gids").map_err(bad)?,
        };
        Ok(Some(Staged {
            deployment: d,
            retain: flag("retain"),
            no_merge: flag("no-merge"),
            id_changes,
        }))
    }

    /// The staged deployment waiting for [`Sysroot::finalize_staged`], if any.
    pub fn staged(&self) -> Result<Option<Deployment>> {
        Ok(self.read_record()?.map(|s| s.deployment))
    }

    /// Prepare `opts.revision` as [`Sysroot::deploy`] does, but leave the boot list
    /// alone: the deployment is recorded as staged (replacing any staged before).
    pub fn stage(&mut self, opts: &DeployOptions) -> Result<DeployReport> {
        let (deployment, etc) = self.deploy_tree(opts)?;
        let merge_from = self.merge_deployment(&opts.stateroot).cloned();
        let repo = self.repo()?;
        repo.set_ref(&staged_ref(), Some(&deployment.checksum))
            .in_repo(repo.path())?;
        let mut k = KeyFile::new();
        let d = &deployment;
        k.set_string(GROUP, "stateroot", &d.stateroot);
        k.set_string(GROUP, "checksum", &d.checksum.to_string());
        k.set_string(GROUP, "serial", &d.serial.to_string());
        k.set_string(GROUP, "bootcsum", &d.bootcsum);
        k.set_string(GROUP, "kargs", &d.kargs.to_string());
        k.set_boolean(GROUP, "retain", opts.retain);
        k.set_boolean(GROUP, "no-merge", opts.no_merge);
        for (key, value) in &d.boot_files {
            k.set_string(BOOT_FILES, key, value);
        }
        // The same map deploy_tree applied (nothing changed in between: the lock is held).
        if let Some(m) = merge_from.as_ref().filter(|_| !opts.no_merge) {
            let changes = accounts::id_changes(
                &self.deployment_path(m).join("etc"),
                &self.deployment_path(d).join("usr/etc"),
            )?;
            k.set_string_list(ID_CHANGES, "uids", &ids_to_list(&changes.uids));
            k.set_string_list(ID_CHANGES, "gids", &ids_to_list(&changes.gids));
        }
        let p = self.record_path();
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        fsutil::write_atomic(&p, k.to_data().as_bytes(), 0o644)?;
        // An earlier staged deployment is now garbage.
        self.cleanup(false)?;
        Ok(DeployReport {
            deployment,
            etc,
            merge_from,
        })
    }

    /// Forget the staged deployment (its directory goes with the next cleanup).
    pub(crate) fn discard_staged(&self) -> Result<()> {
        // An unreadable record goes too: it is replaced, not needed.
        match self.read_record() {
            Ok(Some(s)) => tracing::warn!(
                "discarding the staged deployment {}",
                s.deployment.display_id()
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("discarding an unreadable staged record: {e}"),
        }
        self.remove_record()
    }

    /// Make the staged deployment the default: merge `/etc` again from the merge
    /// deployment as it is now, then write the boot list (one atomic swap) and drop the
    /// record. Returns the deployment, or `None` when nothing is staged.
    pub fn finalize_staged(&mut self) -> Result<Option<Deployment>> {
        self.require_lock()?;
        let Some(staged) = self.read_record()? else {
            return Ok(None);
        };
        let d = staged.deployment.clone();
        // Finalized before a crash that kept the record.
        if !self.deployments().iter().any(|x| x.same(&d)) {
            let merge = self.merge_deployment(&d.stateroot).cloned();
            if let Some(m) = merge.as_ref().filter(|_| !staged.no_merge) {
                let dir = self.deployment_path(&d);
                let now = accounts::id_changes(
                    &self.deployment_path(m).join("etc"),
                    &dir.join("usr/etc"),
                )?;
                tracing::debug!(
                    "ID changes at staging {:?}, now {:?}",
                    staged.id_changes,
                    now
                );
                if now != staged.id_changes {
                    return Err(Error::Refused {
                        deployment: d.display_id(),
                        reason: "users or groups added since it was staged change the IDs \
                                 its files must have; stage it again"
                            .into(),
                    });
                }
                remerge_etc(&dir, &self.deployment_path(m))?;
            }
            fault::point("finalize-after-etc");
            let list = if staged.retain {
                let mut l = vec![d.clone()];
                l.extend(self.deployments().iter().cloned());
                l
            } else {
                self.list_with_new(d.clone(), merge.as_ref())
            };
            self.write_deployments(list)?;
        }
        self.remove_record()?;
        self.cleanup(false)?;
        Ok(Some(d))
    }

    fn remove_record(&self) -> Result<()> {
        let p = self.record_path();
        fsutil::remove_if_exists(&p)?;
        if let Some(dir) = p.parent().filter(|d| d.is_dir()) {
            fsutil::fsync_dir(dir)?;
        }
        Ok(())
    }

    /// Point [`STAGED_REF`] at the staged commit, or delete it when nothing is staged.
    pub(crate) fn sync_staged_ref(&self) -> Result<Option<Deployment>> {
        let staged = self.staged()?;
        let repo = self.repo()?;
        let want = staged.as_ref().map(|d| d.checksum);
        if repo.read_ref(&staged_ref()).in_repo(repo.path())? != want {
            repo.set_ref(&staged_ref(), want.as_ref())
                .in_repo(repo.path())?;
        }
        Ok(staged)
    }
}

fn staged_ref() -> RefSpec {
    RefSpec {
        remote: None,
        name: STAGED_REF.to_owned(),
    }
}

/// Rebuild `dir/etc` from `dir/usr/etc` and the merge deployment's local changes, in a
/// new directory exchanged with the old one in one rename: a kill leaves either the old
/// or the new `/etc`, plus a leftover the next run removes.
fn remerge_etc(dir: &Path, merge_dir: &Path) -> Result<()> {
    let etc = dir.join("etc");
    let usr_etc = dir.join("usr/etc");
    let new = dir.join(".tl-finalize-etc");
    fsutil::set_immutable(dir, false)?;
    fsutil::remove_tree(&new)?;
    fsutil::copy_preserving(&usr_etc, &new)?;
    let (old_defaults, old_local) = (merge_dir.join("usr/etc"), merge_dir.join("etc"));
    if old_local.is_dir() {
        etc_merge::merge(&old_defaults, &old_local, &new)?;
        accounts::merge(&old_local, &usr_etc, &new)?;
    }
    fsutil::syncfs(&new)?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &new,
        rustix::fs::CWD,
        &etc,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .at(&etc)?;
    fsutil::fsync_dir(dir)?;
    fsutil::remove_tree(&new)?;
    fsutil::fsync_dir(dir)?;
    fsutil::set_immutable(dir, true)
}
