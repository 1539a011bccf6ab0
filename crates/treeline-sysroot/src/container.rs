//! Container mode (OpenVZ, LXC: no kernel, no boot loader). The deployments are the same
//! as on a VM, but the list of them, default first, is the file
//! `ostree/container-deployments` ([`treeline_boot::pointer`]) instead of boot loader
//! entries; the file's presence marks the sysroot as a container sysroot. A new list is
//! written whole (temporary file, fsync, rename), so the default is always the old one
//! or the new one. `treeline-boot`, the container's `/sbin/init`, reads the same file.
//! Format and layout: docs/container.md.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use treeline_boot::pointer::{self, Entry};
use treeline_store::Repo;
use treeline_store::fault;
use treeline_store::refs::RefSpec;

use crate::bls::Kargs;
use crate::deployment::{Deployment, parse_deploy_name};
use crate::error::{Error, IoContext, Result, StoreContext};
use crate::fsutil;
use crate::sysroot::Sysroot;

/// Refs under this prefix keep the listed deployments' commits from being pruned, one
/// per deployment: `ostree/container/<stateroot>/<checksum>.<serial>`.
const REF_PREFIX: &str = "ostree/container/";

/// Whether the sysroot at `path` is in container mode (has the deployment list).
pub(crate) fn is_container(path: &Path) -> bool {
    fs::symlink_metadata(path.join(pointer::PATH)).is_ok()
}

fn container_ref(d: &Deployment) -> RefSpec {
    RefSpec {
        remote: None,
        name: format!("{REF_PREFIX}{}/{}", d.stateroot, d.name()),
    }
}

impl Sysroot {
    /// Create a container sysroot: the layout of [`Sysroot::init_fs`] and an empty
    /// deployment list. A sysroot that already boots through a boot loader is refused.
    pub fn init_container_fs(path: &Path) -> Result<()> {
        let loader = path.join("boot/loader");
        if fs::symlink_metadata(&loader).is_ok() {
            return Err(Error::Layout {
                path: loader,
                reason: "this sysroot boots through boot loader entries; a container sysroot \
                         must start without them"
                    .into(),
            });
        }
        Self::init_fs(path)?;
        let list = path.join(pointer::PATH);
        if !is_container(path) {
            fsutil::write_atomic(&list, pointer::format(&[]).as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// Whether this is a container sysroot (deployment list instead of boot entries).
    pub fn is_container(&self) -> bool {
        is_container(self.path())
    }
}

/// Where the container's init goes, relative to the sysroot.
pub const INIT_PATH: &str = "sbin/init";

impl Sysroot {
    /// Install `program` (the statically linked `treeline-boot`) as the container's
    /// `/sbin/init`, replacing what is there in one rename. A dynamically linked program
    /// is refused: the container's root is the sysroot, which has no libraries.
    pub fn install_container_init(&self, program: &Path) -> Result<std::path::PathBuf> {
        self.require_lock()?;
        if !self.is_container() {
            return Err(Error::Layout {
                path: self.path().join(pointer::PATH),
                reason:
                    "missing: not a container sysroot (make one with `admin init-fs --container`)"
                        .into(),
            });
        }
        let bytes = fs::read(program).at(program)?;
        let bad = |reason: String| Error::BadInit {
            path: program.to_path_buf(),
            reason,
        };
        match elf_interpreter(&bytes).map_err(bad)? {
            None => {}
            Some(interp) => {
                return Err(bad(format!(
                    "dynamically linked (needs {interp}); the container's root has no libraries: \
                     build it static with `RUSTFLAGS='-C target-feature=+crt-static' cargo build \
                     -p treeline-boot --target x86_64-unknown-linux-gnu`"
                )));
            }
        }
        let dest = self.path().join(INIT_PATH);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        fsutil::write_atomic(&dest, &bytes, 0o755)?;
        Ok(dest)
    }
}

/// The program interpreter (`PT_INTERP`) a 64-bit little-endian ELF executable asks for:
/// `None` for a statically linked one.
pub fn elf_interpreter(b: &[u8]) -> std::result::Result<Option<String>, String> {
    if b.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF executable".into());
    }
    if b.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a 64-bit little-endian ELF executable".into());
    }
    let truncated = || "truncated ELF file".to_owned();
    let u16_at = |o: usize| -> std::result::Result<usize, String> {
        let s = b.get(o..o + 2).ok_or_else(truncated)?;
        Ok(usize::from(u16::from_le_bytes([s[0], s[1]])))
    };
    let u64_at = |o: usize| -> std::result::Result<usize, String> {
        let s: [u8; 8] = b
            .get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(truncated)?;
        usize::try_from(u64::from_le_bytes(s)).map_err(|_| truncated())
    };
    let (phoff, phentsize, phnum) = (u64_at(32)?, u16_at(54)?, u16_at(56)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_INTERP: usize = 3;
        // p_type is a u32: its low half is 3 and its high half 0.
        if u16_at(ph)? == PT_INTERP && u16_at(ph + 2)? == 0 {
            let (off, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
            let name = b.get(off..off + size).ok_or_else(truncated)?;
            let name = name.split(|&c| c == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(name).into_owned()));
        }
    }
    Ok(None)
}

/// Give a container deployment the mount point `treeline-boot` binds the physical root
/// on, `/sysroot`, when its tree lacks it (OSTree trees ship it; trees composed for
/// containers may not). Only the deployment directory changes, never a stored object.
pub(crate) fn add_mount_points(deployment: &Path) -> Result<()> {
    let p = deployment.join("sysroot");
    if fs::symlink_metadata(&p).is_err() {
        fs::create_dir(&p).at(&p)?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).at(&p)?;
    }
    Ok(())
}

/// Read the deployment list of a container sysroot: `None` when the sysroot is not one;
/// else the deployments, default first, and the booted one's index. Inside a running
/// container the booted deployment is the one whose directory is `/` (same device and
/// inode), as ostree finds it; from outside none is.
pub(crate) fn load(s: &Sysroot) -> Result<Option<(Vec<Deployment>, Option<usize>)>> {
    let path = s.path().join(pointer::PATH);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    let entries = pointer::parse(&text).map_err(|e| Error::Layout {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut deployments = Vec::with_capacity(entries.len());
    for Entry { stateroot, name } in entries {
        let (checksum, serial) = parse_deploy_name(&name).ok_or_else(|| Error::Layout {
            path: path.clone(),
            reason: format!("{name:?} is not CHECKSUM.SERIAL"),
        })?;
        let mut d = Deployment {
            stateroot,
            checksum,
            serial,
            bootcsum: String::new(),
            kargs: Kargs::default(),
            boot_files: Vec::new(),
            origin: None,
        };
        let dir = s.deployment_path(&d);
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: path.clone(),
                reason: format!(
                    "lists {}, whose directory {} is missing",
                    d.display_id(),
                    dir.display()
                ),
            });
        }
        d.origin = s.read_origin(&d)?;
        deployments.push(d);
    }
    let booted = running_deployment(s, &deployments, Path::new("/"))?;
    Ok(Some((deployments, booted)))
}

/// The index of the deployment whose directory is `root` (same device and inode).
fn running_deployment(
    s: &Sysroot,
    deployments: &[Deployment],
    root: &Path,
) -> Result<Option<usize>> {
    let root = fs::metadata(root).at(root)?;
    Ok(deployments.iter().position(|d| {
        fs::metadata(s.deployment_path(d))
            .is_ok_and(|m| m.dev() == root.dev() && m.ino() == root.ino())
    }))
}

/// Make `list` the container sysroot's deployment list: refs for its commits first (the
/// old refs stay, so every commit that may start keeps one), everything synced, then the
/// list file replaced in one rename, then the refs of deployments no longer listed go.
pub(crate) fn write(s: &Sysroot, list: &[Deployment]) -> Result<()> {
    let repo = s.repo()?;
    for d in list {
        repo.set_ref(&container_ref(d), Some(&d.checksum))
            .in_repo(repo.path())?;
    }
    fault::point("write-after-refs");
    let entries: Vec<Entry> = list
        .iter()
        .map(|d| Entry {
            stateroot: d.stateroot.clone(),
            name: d.name(),
        })
        .collect();
    fsutil::syncfs(s.path())?;
    fsutil::write_atomic(
        &s.path().join(pointer::PATH),
        pointer::format(&entries).as_bytes(),
        0o644,
    )?;
    fault::point("write-after-swap");
    remove_stale_refs(&repo, list)
}

/// Delete `ostree/...` refs other than the container refs of `list`.
pub(crate) fn remove_stale_refs(repo: &Repo, list: &[Deployment]) -> Result<()> {
    let keep: Vec<String> = list.iter().map(|d| container_ref(d).name).collect();
    crate::sysroot::remove_ostree_refs_except(repo, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::Booted;

    #[test]
    fn container_sysroot_starts_empty_and_refuses_a_boot_loader_sysroot() {
        let t = tempfile::tempdir().unwrap();
        Sysroot::init_container_fs(t.path()).unwrap();
        let s = Sysroot::open(t.path(), Booted::None).unwrap();
        assert!(s.is_container());
        assert!(s.deployments().is_empty());

        let u = tempfile::tempdir().unwrap();
        Sysroot::init_fs(u.path()).unwrap();
        std::os::unix::fs::symlink("loader.0", u.path().join("boot/loader")).unwrap();
        let e = Sysroot::init_container_fs(u.path()).unwrap_err();
        assert!(e.to_string().contains("boot/loader"), "{e}");
    }

    #[test]
    fn dynamic_programs_are_refused_as_container_init() {
        let t = tempfile::tempdir().unwrap();
        Sysroot::init_container_fs(t.path()).unwrap();
        let s = Sysroot::open_locked(t.path(), Booted::None).unwrap();
        // Any program of the host is dynamically linked.
        let sh = Path::new("/bin/sh");
        let e = s.install_container_init(sh).unwrap_err();
        assert!(
            e.to_string().contains("dynamically linked (needs /lib"),
            "{e}"
        );
        let text = t.path().join("text");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        let e = s.install_container_init(&text).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{e}");
        assert!(!t.path().join(INIT_PATH).exists());
    }

    #[test]
    fn the_running_deployment_is_the_one_whose_directory_is_the_root() {
        let t = tempfile::tempdir().unwrap();
        Sysroot::init_container_fs(t.path()).unwrap();
        let names: Vec<String> = ["ab", "cd"]
            .iter()
            .map(|c| format!("{}.0", c.repeat(32)))
            .collect();
        let entries: Vec<Entry> = names
            .iter()
            .map(|n| Entry {
                stateroot: "alpine".into(),
                name: n.clone(),
            })
            .collect();
        for e in &entries {
            fs::create_dir_all(t.path().join(e.relpath())).unwrap();
        }
        fs::write(t.path().join(pointer::PATH), pointer::format(&entries)).unwrap();
        let s = Sysroot::open(t.path(), Booted::None).unwrap();
        // Seen from outside (this test's root), none runs.
        assert_eq!(s.booted_index(), None);
        let second = t.path().join(entries[1].relpath());
        assert_eq!(
            running_deployment(&s, s.deployments(), &second).unwrap(),
            Some(1)
        );
        assert_eq!(
            running_deployment(&s, s.deployments(), t.path()).unwrap(),
            None
        );
    }

    #[test]
    fn a_list_naming_a_missing_deployment_is_an_error_naming_the_list() {
        let t = tempfile::tempdir().unwrap();
        Sysroot::init_container_fs(t.path()).unwrap();
        let e = Entry {
            stateroot: "alpine".into(),
            name: format!("{}.0", "ab".repeat(32)),
        };
        fs::write(t.path().join(pointer::PATH), pointer::format(&[e])).unwrap();
        let err = Sysroot::open(t.path(), Booted::None).unwrap_err();
        assert!(err.to_string().contains("container-deployments"), "{err}");
        assert!(err.to_string().contains("is missing"), "{err}");
    }
}
