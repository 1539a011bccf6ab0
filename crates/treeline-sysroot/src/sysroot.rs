//! The sysroot: its layout on disk, the deployment list read from the current boot
//! loader entries, and the one way that list changes (a new boot version, swapped in by
//! renaming the `/boot/loader` symlink).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use treeline_store::fault;
use treeline_store::keyfile::KeyFile;
use treeline_store::refs::RefSpec;
use treeline_store::{Checksum, Repo, RepoMode};

use crate::bls::{BootEntry, Kargs};
use crate::deployment::{Deployment, TRANSIENT_GROUP, parse_deploy_name, valid_stateroot};
use crate::error::{Error, IoContext, Result, StoreContext};
use crate::fsutil;
use crate::kernel;
use crate::lock::SysrootLock;
use crate::syslinux;

/// How the booted deployment is found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Booted {
    /// No deployment is booted (an image or a mounted disk).
    #[default]
    None,
    /// The kernel command line of the running system: its `ostree=` argument names the
    /// booted deployment's boot link, resolved inside the sysroot.
    Cmdline(String),
}

/// An OSTree-layout sysroot and its deployments.
#[derive(Debug)]
pub struct Sysroot {
    path: PathBuf,
    bootversion: u8,
    subbootversion: u8,
    deployments: Vec<Deployment>,
    booted: Option<usize>,
    booted_source: Booted,
    lock: Option<SysrootLock>,
    /// Kernels of deployments this process created, by deployment directory: hashed
    /// when the deployment was made, so installing them into /boot need not hash again.
    pub(crate) fresh_kernels: HashMap<PathBuf, kernel::KernelLayout>,
}

/// Where the names in the sysroot live.
const REPO: &str = "ostree/repo";
const DEPLOY: &str = "ostree/deploy";

/// Prefix of temporary deployment directories inside a stateroot.
pub(crate) const STAGING_PREFIX: &str = ".tl-staging-";

impl Sysroot {
    /// Create the top-level layout ostree's `admin init-fs` makes: `boot dev home proc run
    /// sys root tmp`, `ostree/deploy` and a bare repository in `ostree/repo`. Existing
    /// directories are kept.
    pub fn init_fs(path: &Path) -> Result<()> {
        fs::create_dir_all(path).at(path)?;
        for (name, mode) in [
            ("boot", 0o755),
            ("dev", 0o755),
            ("home", 0o755),
            ("proc", 0o755),
            ("run", 0o755),
            ("sys", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("ostree", 0o755),
            (DEPLOY, 0o755),
        ] {
            let p = path.join(name);
            if fs::symlink_metadata(&p).is_err() {
                fs::create_dir(&p).at(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at(&p)?;
            }
        }
        let repo = path.join(REPO);
        Repo::init(&repo, RepoMode::Bare).in_repo(&repo)?;
        fsutil::fsync_dir(&path.join("ostree"))?;
        fsutil::fsync_dir(path)
    }

    /// Read a sysroot without locking it (for `status`).
    pub fn open(path: &Path, booted: Booted) -> Result<Sysroot> {
        let mut s = Sysroot {
            path: path.to_path_buf(),
            bootversion: 0,
            subbootversion: 0,
            deployments: Vec::new(),
            booted: None,
            booted_source: booted,
            lock: None,
            fresh_kernels: HashMap::new(),
        };
        s.load()?;
        Ok(s)
    }

    /// Take the sysroot lock (waiting for other holders), then read the sysroot. Every
    /// change needs a sysroot opened this way.
    pub fn open_locked(path: &Path, booted: Booted) -> Result<Sysroot> {
        if !path.join("ostree").is_dir() {
            return Err(Error::Layout {
                path: path.join("ostree"),
                reason: "not a sysroot (no ostree/ directory; run `admin init-fs`)".into(),
            });
        }
        let lock = SysrootLock::acquire(path)?;
        let mut s = Self::open(path, booted)?;
        s.lock = Some(lock);
        Ok(s)
    }

    /// The sysroot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current boot version (which `boot/loader.N` is live).
    pub fn bootversion(&self) -> u8 {
        self.bootversion
    }

    /// The current sub-boot version (which `ostree/boot.B.N` link farm is live).
    pub fn subbootversion(&self) -> u8 {
        self.subbootversion
    }

    /// The deployments, default first.
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// Index of the booted deployment.
    pub fn booted_index(&self) -> Option<usize> {
        self.booted
    }

    /// The booted deployment.
    pub fn booted(&self) -> Option<&Deployment> {
        self.booted.map(|i| &self.deployments[i])
    }

    /// Open the sysroot's repository.
    pub fn repo(&self) -> Result<Repo> {
        let p = self.path.join(REPO);
        Repo::open(&p).in_repo(&p)
    }

    /// A deployment's directory.
    pub fn deployment_path(&self, d: &Deployment) -> PathBuf {
        self.path.join(d.relpath())
    }

    /// The stateroots (directories under `ostree/deploy`), sorted.
    pub fn stateroots(&self) -> Result<Vec<String>> {
        let dir = self.path.join(DEPLOY);
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.at(&dir)?;
                    if e.file_type().at(e.path())?.is_dir()
                        && let Ok(n) = e.file_name().into_string()
                    {
                        out.push(n);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(dir),
        }
        out.sort();
        Ok(out)
    }

    /// The deployment whose `/etc` and kernel arguments a new deployment of `stateroot`
    /// inherits: the booted one if it is of that stateroot, else the first of it.
    pub fn merge_deployment(&self, stateroot: &str) -> Option<&Deployment> {
        match self.booted() {
            Some(b) if b.stateroot == stateroot => Some(b),
            _ => self.deployments.iter().find(|d| d.stateroot == stateroot),
        }
    }

    /// Pending and rollback deployments of a stateroot, as ostree computes them: the first
    /// deployment of the stateroot before the booted one is pending, the first after it the
    /// rollback. With nothing booted, the first of the stateroot is pending.
    pub fn pending_and_rollback(&self, stateroot: &str) -> (Option<usize>, Option<usize>) {
        let mut found_booted = false;
        let (mut pending, mut rollback) = (None, None);
        for (i, d) in self.deployments.iter().enumerate() {
            if d.stateroot != stateroot {
                continue;
            }
            if Some(i) == self.booted {
                found_booted = true;
                continue;
            }
            if !found_booted && pending.is_none() {
                pending = Some(i);
            }
            if found_booted && rollback.is_none() {
                rollback = Some(i);
            }
        }
        (pending, rollback)
    }

    pub(crate) fn require_lock(&self) -> Result<()> {
        if self.lock.is_some() {
            Ok(())
        } else {
            Err(Error::NotLocked(self.path.clone()))
        }
    }

    /// Re-read the sysroot from disk.
    pub fn load(&mut self) -> Result<()> {
        if let Some((deployments, booted)) = crate::container::load(self)? {
            self.bootversion = 0;
            self.subbootversion = 0;
            self.deployments = deployments;
            self.booted = booted;
            return Ok(());
        }
        let loader = self.path.join("boot/loader");
        let bootversion = match fsutil::read_link_opt(&loader)? {
            None => {
                if fs::symlink_metadata(&loader).is_ok() {
                    return Err(Error::Layout {
                        path: loader,
                        reason: "is not a symlink".into(),
                    });
                }
                self.bootversion = 0;
                self.subbootversion = self.read_subbootversion(0)?;
                self.deployments.clear();
                self.booted = None;
                return Ok(());
            }
            Some(t) => match t.as_str() {
                "loader.0" => 0,
                "loader.1" => 1,
                _ => {
                    return Err(Error::Layout {
                        path: loader,
                        reason: format!("points to {t:?}, expected loader.0 or loader.1"),
                    });
                }
            },
        };
        self.bootversion = bootversion;
        self.subbootversion = self.read_subbootversion(bootversion)?;
        let entries_dir = self.path.join(format!("boot/loader.{bootversion}/entries"));
        let mut entries = Vec::new();
        match fs::read_dir(&entries_dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.at(&entries_dir)?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("ostree-") && name.ends_with(".conf") {
                        let p = e.path();
                        let text = fs::read_to_string(&p).at(&p)?;
                        entries.push((p, BootEntry::parse(&text)));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(entries_dir),
        }
        // Highest version first: the default entry has the highest.
        entries.sort_by(|(pa, a), (pb, b)| {
            b.version_number()
                .cmp(&a.version_number())
                .then_with(|| pa.cmp(pb))
        });
        let mut deployments = Vec::with_capacity(entries.len());
        for (path, entry) in entries {
            deployments.push(self.deployment_from_entry(&path, &entry)?);
        }
        self.deployments = deployments;
        self.booted = self.find_booted()?;
        Ok(())
    }

    fn read_subbootversion(&self, bootversion: u8) -> Result<u8> {
        let link = self.path.join(format!("ostree/boot.{bootversion}"));
        match fsutil::read_link_opt(&link)? {
            None => Ok(0),
            Some(t) if t == format!("boot.{bootversion}.0") => Ok(0),
            Some(t) if t == format!("boot.{bootversion}.1") => Ok(1),
            Some(t) => Err(Error::Layout {
                path: link,
                reason: format!("points to {t:?}, expected boot.{bootversion}.0 or .1"),
            }),
        }
    }

    fn deployment_from_entry(&self, path: &Path, entry: &BootEntry) -> Result<Deployment> {
        let bad = |reason: String| Error::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let mut kargs = Kargs::parse(entry.get("options").unwrap_or(""));
        let ostree_arg = kargs
            .get("ostree")
            .ok_or_else(|| bad("no ostree= kernel argument".into()))?
            .to_owned();
        kargs.remove_key("ostree");
        let target = self.resolve_boot_link(&ostree_arg).map_err(|e| match e {
            Error::Layout { path: p, reason } => {
                bad(format!("ostree={ostree_arg}: {}: {reason}", p.display()))
            }
            other => other,
        })?;
        let (stateroot, name) = target;
        let (checksum, serial) = parse_deploy_name(&name)
            .ok_or_else(|| bad(format!("ostree={ostree_arg} leads to {name:?}")))?;
        let bootcsum = ostree_arg
            .trim_end_matches('/')
            .rsplit('/')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut d = Deployment {
            stateroot,
            checksum,
            serial,
            bootcsum,
            kargs,
            boot_files: entry
                .fields
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "title" | "version" | "options"))
                .cloned()
                .collect(),
            origin: None,
        };
        let dir = self.deployment_path(&d);
        if !dir.is_dir() {
            return Err(bad(format!(
                "deployment directory {} is missing",
                dir.display()
            )));
        }
        d.origin = self.read_origin(&d)?;
        Ok(d)
    }

    /// `/ostree/boot.B/<os>/<bootcsum>/<n>` → (stateroot, `<checksum>.<serial>`), following
    /// the two links as ostree does, but inside this sysroot.
    fn resolve_boot_link(&self, arg: &str) -> Result<(String, String)> {
        let comps: Vec<&str> = arg.split('/').filter(|c| !c.is_empty()).collect();
        let [ostree, bootb, os, bootcsum, n] = comps.as_slice() else {
            return Err(Error::Layout {
                path: PathBuf::from(arg),
                reason: "expected /ostree/boot.N/<stateroot>/<bootcsum>/<serial>".into(),
            });
        };
        if *ostree != "ostree" || !bootb.starts_with("boot.") {
            return Err(Error::Layout {
                path: PathBuf::from(arg),
                reason: "expected /ostree/boot.N/...".into(),
            });
        }
        let link = self.path.join("ostree").join(bootb);
        let farm = fsutil::read_link_opt(&link)?.ok_or_else(|| Error::Layout {
            path: link.clone(),
            reason: "missing".into(),
        })?;
        let dlink = self
            .path
            .join("ostree")
            .join(&farm)
            .join(os)
            .join(bootcsum)
            .join(n);
        let target = fsutil::read_link_opt(&dlink)?.ok_or_else(|| Error::Layout {
            path: dlink.clone(),
            reason: "missing".into(),
        })?;
        let tcomps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        match tcomps.as_slice() {
            [.., "deploy", stateroot, "deploy", name] => {
                Ok(((*stateroot).to_owned(), (*name).to_owned()))
            }
            _ => Err(Error::Layout {
                path: dlink,
                reason: format!("points to {target:?}, not a deployment"),
            }),
        }
    }

    fn find_booted(&self) -> Result<Option<usize>> {
        let Booted::Cmdline(cmdline) = &self.booted_source else {
            return Ok(None);
        };
        let kargs = Kargs::parse(cmdline);
        let Some(arg) = kargs.get("ostree") else {
            return Ok(None);
        };
        let target = self.path.join(arg.trim_start_matches('/'));
        let Ok(md) = fs::metadata(&target) else {
            return Ok(None);
        };
        for (i, d) in self.deployments.iter().enumerate() {
            if let Ok(dm) = fs::metadata(self.deployment_path(d))
                && dm.dev() == md.dev()
                && dm.ino() == md.ino()
            {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    pub(crate) fn read_origin(&self, d: &Deployment) -> Result<Option<KeyFile>> {
        let p = self.path.join(d.origin_relpath());
        match fs::read_to_string(&p) {
            Ok(text) => KeyFile::parse(&text).map(Some).map_err(|e| Error::Origin {
                path: p,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(p),
        }
    }

    pub(crate) fn write_origin(&self, d: &Deployment, origin: &KeyFile) -> Result<()> {
        let p = self.path.join(d.origin_relpath());
        fsutil::write_atomic(&p, origin.to_data().as_bytes(), 0o644)
    }

    /// Create a stateroot: `ostree/deploy/NAME/var` with the directories ostree 2022.7
    /// makes (`tmp`, `lib`, `log`, and `run`, `lock` links into `/run`).
    pub fn init_stateroot(&self, name: &str) -> Result<()> {
        self.require_lock()?;
        if !valid_stateroot(name) {
            return Err(Error::InvalidStateroot(name.to_owned()));
        }
        let root = self.path.join(DEPLOY).join(name);
        let var = root.join("var");
        fs::create_dir_all(&var).at(&var)?;
        for (sub, mode) in [("tmp", 0o1777), ("lib", 0o755), ("log", 0o755)] {
            let p = var.join(sub);
            if fs::symlink_metadata(&p).is_err() {
                fs::create_dir(&p).at(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at(&p)?;
            }
        }
        for (sub, target) in [("run", "../run"), ("lock", "../run/lock")] {
            let p = var.join(sub);
            if fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p).at(&p)?;
            }
        }
        fsutil::fsync_dir(&var)?;
        fsutil::fsync_dir(&root)?;
        fsutil::fsync_dir(&self.path.join(DEPLOY))
    }

    /// The list a new deployment makes, as ostree's `simple_write_deployment`: the new one
    /// first, then every deployment that is pinned, of another stateroot, booted, or the
    /// merge deployment; the others are dropped (and later cleaned up).
    pub fn list_with_new(&self, new: Deployment, merge: Option<&Deployment>) -> Vec<Deployment> {
        let mut out = vec![new];
        for (i, d) in self.deployments.iter().enumerate() {
            let keep = d.is_pinned()
                || d.stateroot != out[0].stateroot
                || Some(i) == self.booted
                || merge.is_some_and(|m| m.same(d));
            if keep {
                out.push(d.clone());
            }
        }
        out
    }

    /// Make `deployments` the deployment list: install kernels, build the new boot link
    /// farm and loader entries under the other boot version, point the deployment refs at
    /// the commits, then swap `boot/loader` with one rename. Until that rename the old list
    /// is the one that boots; after it, the new one.
    pub fn write_deployments(&mut self, deployments: Vec<Deployment>) -> Result<()> {
        self.require_lock()?;
        if let Some(b) = self.booted()
            && !deployments.iter().any(|d| d.same(b))
        {
            return Err(Error::Refused {
                deployment: b.display_id(),
                reason: "the booted deployment cannot be removed".into(),
            });
        }
        if self.is_container() {
            crate::container::write(self, &deployments)?;
            return self.load();
        }
        let repo = self.repo()?;
        let new_b = 1 - self.bootversion;
        let new_s = 1 - self.read_subbootversion(new_b)?;

        // 1. Kernels.
        for d in &deployments {
            self.install_kernel(d)?;
        }
        fault::point("write-after-kernels");

        // 2. The boot link farm ostree/boot.B'.S' and its ostree/boot.B' link.
        let mut bootserials: HashMap<&str, u32> = HashMap::new();
        let mut serials = Vec::with_capacity(deployments.len());
        for d in &deployments {
            let n = bootserials.entry(d.bootcsum.as_str()).or_insert(0);
            serials.push(*n);
            *n += 1;
        }
        let farm_name = format!("boot.{new_b}.{new_s}");
        let farm = self.path.join("ostree").join(&farm_name);
        fsutil::remove_tree(&farm)?;
        fs::create_dir(&farm).at(&farm)?;
        for (d, serial) in deployments.iter().zip(&serials) {
            let dir = farm.join(&d.stateroot).join(&d.bootcsum);
            fs::create_dir_all(&dir).at(&dir)?;
            let link = dir.join(serial.to_string());
            let target = format!("../../../deploy/{}/deploy/{}", d.stateroot, d.name());
            std::os::unix::fs::symlink(&target, &link).at(&link)?;
            fsutil::fsync_dir(&dir)?;
        }
        fsutil::fsync_dir(&farm)?;
        fsutil::swap_symlink(&farm_name, &self.path.join(format!("ostree/boot.{new_b}")))?;
        fault::point("write-after-bootlinks");

        // 3. Loader entries in boot/loader.B'.
        let loader_dir = self.path.join(format!("boot/loader.{new_b}"));
        fsutil::remove_tree(&loader_dir)?;
        let entries_dir = loader_dir.join("entries");
        fs::create_dir_all(&entries_dir).at(&entries_dir)?;
        let multiple_stateroots = deployments
            .iter()
            .any(|d| d.stateroot != deployments[0].stateroot);
        let n = deployments.len();
        let mut entries = Vec::with_capacity(n);
        for (i, (d, serial)) in deployments.iter().zip(&serials).enumerate() {
            let version = n - i;
            let entry =
                self.boot_entry(&repo, d, i, version, multiple_stateroots, new_b, *serial)?;
            let p = entries_dir.join(format!("ostree-{version}-{}.conf", d.stateroot));
            fsutil::write_atomic(&p, entry.to_text().as_bytes(), 0o644)?;
            entries.push(entry);
        }
        if fs::symlink_metadata(self.path.join(syslinux::SYSLINUX_LINK)).is_ok() {
            let p = loader_dir.join("syslinux.cfg");
            let cfg = syslinux::syslinux_config(&entries);
            fsutil::write_atomic(&p, cfg.as_bytes(), 0o644)?;
        }
        fsutil::fsync_dir(&entries_dir)?;
        fsutil::fsync_dir(&loader_dir)?;
        fault::point("write-after-entries");

        // 4. Refs that keep the deployed commits from being pruned (old ones stay until the
        // swap is done, so some ref always protects what may boot).
        for (i, d) in deployments.iter().enumerate() {
            let spec = deployment_ref(new_b, new_s, i);
            repo.set_ref(&spec, Some(&d.checksum))
                .in_repo(repo.path())?;
        }
        fault::point("write-after-refs");

        // 5. The swap.
        let boot = self.path.join("boot");
        if fsutil::read_link_opt(&boot.join("boot"))?.is_none() {
            let p = boot.join("boot");
            if fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(".", &p).at(&p)?;
            }
        }
        fsutil::syncfs(&self.path)?;
        fsutil::swap_symlink(&format!("loader.{new_b}"), &boot.join("loader"))?;
        fsutil::syncfs(&boot)?;
        fault::point("write-after-swap");

        // 6. Drop the refs of the old list and reread.
        remove_stale_deployment_refs(&repo, new_b, new_s, n)?;
        self.load()?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn boot_entry(
        &self,
        repo: &Repo,
        d: &Deployment,
        index: usize,
        version: usize,
        multiple_stateroots: bool,
        bootversion: u8,
        bootserial: u32,
    ) -> Result<BootEntry> {
        let dir = self.deployment_path(d);
        let mut title = os_release_title(&dir)?;
        if let Ok(c) = repo.load_commit(&d.checksum)
            && let Some(v) = c.version()
            && !title.contains(&v)
        {
            title.push(' ');
            title.push_str(&v);
        }
        if multiple_stateroots {
            title.push_str(&format!(" (ostree:{}:{index})", d.stateroot));
        } else {
            title.push_str(&format!(" (ostree:{index})"));
        }
        let mut kargs = d.kargs.clone();
        kargs.remove_key("ostree");
        kargs.append(&format!(
            "ostree=/ostree/boot.{bootversion}/{}/{}/{bootserial}",
            d.stateroot, d.bootcsum
        ));
        let mut e = BootEntry::default();
        e.set("title", title);
        e.set("version", version.to_string());
        e.set("options", kargs.to_string());
        e.fields.extend(d.boot_files.iter().cloned());
        Ok(e)
    }

    /// Copy (or hardlink) a deployment's kernel, initramfs and device trees into
    /// `boot/ostree/<stateroot>-<bootcsum>` unless they are there. A new directory is
    /// filled under a temporary name and renamed, so it is complete when it exists.
    fn install_kernel(&self, d: &Deployment) -> Result<()> {
        let name = format!("{}-{}", d.stateroot, d.bootcsum);
        let bootdir = self.path.join("boot/ostree").join(&name);
        let wanted: Vec<String> = d
            .boot_files
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "linux" | "initrd" | "devicetree"))
            .filter_map(|(_, v)| v.rsplit('/').next().map(str::to_owned))
            .collect();
        if bootdir.is_dir() && wanted.iter().all(|w| bootdir.join(w).exists()) {
            return Ok(());
        }
        let src = self.deployment_path(d);
        let layout = match self.fresh_kernels.get(&src) {
            Some(l) => l.clone(),
            None => kernel::find_kernel(&src)?.ok_or_else(|| Error::BadTree {
                commit: d.checksum.to_string(),
                reason: "no kernel (usr/lib/modules/<kver>/vmlinuz) to install".into(),
            })?,
        };
        if layout.bootcsum != d.bootcsum {
            return Err(Error::Layout {
                path: src,
                reason: format!(
                    "kernel files hash to {}, the boot entry says {}",
                    layout.bootcsum, d.bootcsum
                ),
            });
        }
        let parent = self.path.join("boot/ostree");
        fs::create_dir_all(&parent).at(&parent)?;
        let exists = bootdir.is_dir();
        let target = if exists {
            bootdir.clone()
        } else {
            let tmp = parent.join(format!(".tmp-{name}"));
            fsutil::remove_tree(&tmp)?;
            fs::create_dir(&tmp).at(&tmp)?;
            tmp
        };
        for (from, to) in &layout.files {
            let dest = target.join(to);
            if dest.exists() {
                continue;
            }
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).at(p)?;
            }
            fsutil::link_or_copy(from, &dest)?;
        }
        fsutil::fsync_dir(&target)?;
        if !exists {
            fs::rename(&target, &bootdir).at(&bootdir)?;
            fsutil::fsync_dir(&parent)?;
        }
        Ok(())
    }

    /// Pin or unpin a deployment (`[libostree-transient] pinned` in its origin): a pinned
    /// deployment is never dropped by new deployments or cleanup.
    pub fn set_pinned(&mut self, index: usize, pinned: bool) -> Result<()> {
        self.require_lock()?;
        let d = self.get(index)?.clone();
        let mut origin = d.origin.clone().unwrap_or_default();
        if pinned {
            origin.set_boolean(TRANSIENT_GROUP, "pinned", true);
        } else {
            origin.remove_key(TRANSIENT_GROUP, "pinned");
            if origin.keys(TRANSIENT_GROUP).next().is_none() {
                origin.remove_group(TRANSIENT_GROUP);
            }
        }
        self.write_origin(&d, &origin)?;
        self.deployments[index].origin = Some(origin);
        Ok(())
    }

    /// The deployment at `index`.
    pub fn get(&self, index: usize) -> Result<&Deployment> {
        self.deployments.get(index).ok_or(Error::NoSuchDeployment {
            index,
            count: self.deployments.len(),
        })
    }

    /// Remove the deployment at `index` from the list (not the booted one), then clean up.
    pub fn undeploy(&mut self, index: usize) -> Result<Deployment> {
        self.require_lock()?;
        let d = self.get(index)?.clone();
        if Some(index) == self.booted {
            return Err(Error::Refused {
                deployment: d.display_id(),
                reason: "it is the booted deployment".into(),
            });
        }
        let mut list = self.deployments.clone();
        list.remove(index);
        self.write_deployments(list)?;
        Ok(d)
    }

    /// Make the previous deployment the default. With a pending deployment (the default
    /// is newer than the booted one), the booted one becomes the default again; otherwise
    /// the rollback deployment does. With nothing booted, the second deployment of the
    /// default's stateroot becomes the default. Returns the new default.
    pub fn rollback(&mut self) -> Result<Deployment> {
        self.require_lock()?;
        let first = self
            .deployments
            .first()
            .ok_or_else(|| Error::NoRollback(String::new()))?
            .clone();
        let target = match self.booted {
            Some(b) => {
                let os = self.deployments[b].stateroot.clone();
                let (pending, rollback) = self.pending_and_rollback(&os);
                if b != 0 && pending.is_some() {
                    b
                } else {
                    rollback.ok_or(Error::NoRollback(os))?
                }
            }
            None => self
                .deployments
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, d)| d.stateroot == first.stateroot)
                .map(|(i, _)| i)
                .ok_or_else(|| Error::NoRollback(first.stateroot.clone()))?,
        };
        let mut list = self.deployments.clone();
        let d = list.remove(target);
        list.insert(0, d.clone());
        self.write_deployments(list)?;
        Ok(d)
    }
}

/// `ostree/B/S/I`: the ref ostree keeps for the deployment at index I.
fn deployment_ref(bootversion: u8, subbootversion: u8, index: usize) -> RefSpec {
    RefSpec {
        remote: None,
        name: format!("ostree/{bootversion}/{subbootversion}/{index}"),
    }
}

/// Delete `ostree/...` refs other than `ostree/B/S/0..n`.
pub(crate) fn remove_stale_deployment_refs(
    repo: &Repo,
    bootversion: u8,
    subbootversion: u8,
    n: usize,
) -> Result<()> {
    let keep: Vec<String> = (0..n)
        .map(|i| deployment_ref(bootversion, subbootversion, i).name)
        .collect();
    remove_ostree_refs_except(repo, &keep)
}

/// Delete every `ostree/...` ref (the refs that keep deployed commits from being pruned)
/// whose name is not in `keep`.
pub(crate) fn remove_ostree_refs_except(repo: &Repo, keep: &[String]) -> Result<()> {
    let refs: BTreeMap<String, Checksum> = repo.list_refs().in_repo(repo.path())?;
    for name in refs.keys() {
        if name.starts_with("ostree/") && !keep.contains(name) {
            let spec = RefSpec {
                remote: None,
                name: name.clone(),
            };
            repo.set_ref(&spec, None).in_repo(repo.path())?;
        }
    }
    Ok(())
}

/// `PRETTY_NAME` (or `ID`) of a tree's os-release, as ostree titles boot entries.
fn os_release_title(root: &Path) -> Result<String> {
    for rel in ["usr/lib/os-release", "etc/os-release"] {
        let p = root.join(rel);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(e) => return Err(e).at(p),
        };
        let mut vars: HashMap<&str, String> = HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.trim().split_once('=') {
                vars.insert(k.trim(), unquote(v.trim()));
            }
        }
        if let Some(t) = vars.get("PRETTY_NAME").or_else(|| vars.get("ID")) {
            return Ok(t.clone());
        }
    }
    Ok("(Untitled)".to_owned())
}

fn unquote(v: &str) -> String {
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The next free serial for `checksum` in a stateroot: one more than any deployment
/// directory, origin file or staging directory of that commit (ostree's rule, which also
/// never reuses the name of a half-written leftover).
pub(crate) fn next_serial(stateroot_dir: &Path, checksum: &Checksum) -> Result<u32> {
    let mut next = 0;
    for dir in [stateroot_dir.join("deploy"), stateroot_dir.to_path_buf()] {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(dir),
        };
        for e in rd {
            let name = e.at(&dir)?.file_name().to_string_lossy().into_owned();
            let name = name.strip_prefix(STAGING_PREFIX).unwrap_or(&name);
            let name = name.strip_suffix(".origin").unwrap_or(name);
            if let Some((c, s)) = parse_deploy_name(name)
                && c == *checksum
            {
                next = next.max(s + 1);
            }
        }
    }
    Ok(next)
}

/// Parse a checksum that names a deployment directory.
pub(crate) fn checksum_of(s: &str) -> Option<Checksum> {
    Checksum::from_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_title_prefers_pretty_name_and_unquotes() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        fs::write(
            t.path().join("usr/lib/os-release"),
            "ID=x\nPRETTY_NAME=\"Test \\\"OS\\\" 42\"\n",
        )
        .unwrap();
        assert_eq!(os_release_title(t.path()).unwrap(), "Test \"OS\" 42");
        assert_eq!(
            os_release_title(&t.path().join("none")).unwrap(),
            "(Untitled)"
        );
    }

    #[test]
    fn next_serial_skips_every_existing_name_of_the_commit() {
        let t = tempfile::tempdir().unwrap();
        let c = "cd".repeat(32);
        fs::create_dir_all(t.path().join("deploy").join(format!("{c}.0"))).unwrap();
        fs::write(t.path().join("deploy").join(format!("{c}.1.origin")), "").unwrap();
        fs::create_dir_all(t.path().join(format!("{STAGING_PREFIX}{c}.4"))).unwrap();
        let cs = checksum_of(&c).unwrap();
        assert_eq!(next_serial(t.path(), &cs).unwrap(), 5);
        let other = checksum_of(&"ef".repeat(32)).unwrap();
        assert_eq!(next_serial(t.path(), &other).unwrap(), 0);
    }

    #[test]
    fn empty_directory_is_a_sysroot_without_deployments() {
        let t = tempfile::tempdir().unwrap();
        Sysroot::init_fs(t.path()).unwrap();
        let s = Sysroot::open(t.path(), Booted::None).unwrap();
        assert!(s.deployments().is_empty());
        assert_eq!(s.bootversion(), 0);
        assert!(matches!(s.rollback_check(), Err(Error::NotLocked(_))));
    }

    impl Sysroot {
        fn rollback_check(&self) -> Result<()> {
            self.require_lock()
        }
    }
}
