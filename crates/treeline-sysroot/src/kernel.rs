//! Finding a deployment's kernel, initramfs and device trees, and its "bootcsum": the
//! SHA-256 that names its directory in `/boot/ostree`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// The boot files of one tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// The kernel version (`usr/lib/modules/<kver>`), or the legacy name's middle part.
    pub kver: String,
    /// SHA-256 hex of the kernel, initramfs and device tree contents (ostree's bootcsum).
    pub bootcsum: String,
    /// Files to install: (source in the tree, name in `/boot/ostree/<os>-<bootcsum>`).
    pub files: Vec<(PathBuf, String)>,
    /// Name of the kernel in the boot directory.
    pub kernel_name: String,
    /// Name of the initramfs in the boot directory, if any.
    pub initramfs_name: Option<String>,
    /// Name of a single device tree in the boot directory, if any.
    pub devicetree_name: Option<String>,
    /// A `dtb` directory installed whole (BLS `fdtdir`), if any.
    pub fdtdir_name: Option<String>,
}

/// Find the kernel of the tree at `root`: `usr/lib/modules/<kver>/vmlinuz` first, else
/// the legacy `usr/lib/ostree-boot/` or `boot/` with `vmlinuz-<kver>-<bootcsum>` names.
/// `None` when the tree has no kernel.
pub fn find_kernel(root: &Path) -> Result<Option<KernelLayout>> {
    let modules = find_modules_kernel(root)?;
    if let Some(m) = &modules
        && m.initramfs_name.is_some()
    {
        return Ok(modules);
    }
    let legacy = find_legacy_kernel(root)?;
    match (modules, legacy) {
        (Some(_), Some(l)) if l.initramfs_name.is_some() => Ok(Some(l)),
        (Some(m), _) => Ok(Some(m)),
        (None, l) => Ok(l),
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.at(dir)?;
                if let Ok(n) = e.file_name().into_string() {
                    names.push(n);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(dir),
    }
    names.sort();
    Ok(names)
}

fn is_file(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

fn find_modules_kernel(root: &Path) -> Result<Option<KernelLayout>> {
    let modules = root.join("usr/lib/modules");
    for kver in sorted_names(&modules)? {
        let dir = modules.join(&kver);
        let vmlinuz = dir.join("vmlinuz");
        if !is_file(&vmlinuz) {
            continue;
        }
        let mut hasher = Sha256::new();
        hash_file(&mut hasher, &vmlinuz)?;
        let kernel_name = format!("vmlinuz-{kver}");
        let mut files = vec![(vmlinuz, kernel_name.clone())];
        let mut initramfs_name = None;
        for cand in ["initramfs.img", "initramfs"] {
            let p = dir.join(cand);
            if is_file(&p) {
                hash_file(&mut hasher, &p)?;
                let name = format!("initramfs-{kver}.img");
                files.push((p, name.clone()));
                initramfs_name = Some(name);
                break;
            }
        }
        let mut devicetree_name = None;
        let mut fdtdir_name = None;
        let dt = dir.join("devicetree");
        let dtb = dir.join("dtb");
        if is_file(&dt) {
            hash_file(&mut hasher, &dt)?;
            let name = format!("devicetree-{kver}");
            files.push((dt, name.clone()));
            devicetree_name = Some(name);
        } else if dtb.is_dir() {
            let mut found = Vec::new();
            collect_files(&dtb, "", &mut found)?;
            for (rel, path) in found {
                hash_file(&mut hasher, &path)?;
                files.push((path, format!("dtb-{kver}/{rel}")));
            }
            fdtdir_name = Some(format!("dtb-{kver}"));
        }
        let hmac = dir.join(".vmlinuz.hmac");
        if is_file(&hmac) {
            files.push((hmac, format!(".vmlinuz-{kver}.hmac")));
        }
        let aboot = dir.join("aboot.img");
        if is_file(&aboot) {
            files.push((aboot, format!("aboot-{kver}.img")));
        }
        return Ok(Some(KernelLayout {
            kver,
            bootcsum: hex::encode(hasher.finalize()),
            files,
            kernel_name,
            initramfs_name,
            devicetree_name,
            fdtdir_name,
        }));
    }
    Ok(None)
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for name in sorted_names(dir)? {
        let p = dir.join(&name);
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let md = fs::symlink_metadata(&p).at(&p)?;
        if md.is_dir() {
            collect_files(&p, &rel, out)?;
        } else if md.is_file() {
            out.push((rel, p));
        }
    }
    Ok(())
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<()> {
    let mut f = File::open(path).at(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).at(path),
        }
    }
}

/// `vmlinuz-<kver>-<64 hex>` → (`<kver>`, `<hex>`).
fn split_legacy(name: &str, prefix: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix(prefix)?;
    let (kver, csum) = rest.rsplit_once('-')?;
    (csum.len() == 64 && csum.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (kver.to_owned(), csum.to_ascii_lowercase()))
}

fn find_legacy_kernel(root: &Path) -> Result<Option<KernelLayout>> {
    for sub in ["usr/lib/ostree-boot", "boot"] {
        let dir = root.join(sub);
        let names = sorted_names(&dir)?;
        let Some((kname, kver, bootcsum)) = names.iter().find_map(|n| {
            split_legacy(n, "vmlinuz-")
                .filter(|_| is_file(&dir.join(n)))
                .map(|(k, c)| (n.clone(), k, c))
        }) else {
            continue;
        };
        let kernel_name = format!("vmlinuz-{kver}");
        let mut files = vec![(dir.join(&kname), kernel_name.clone())];
        let mut initramfs_name = None;
        let mut devicetree_name = None;
        for n in &names {
            if let Some((k, c)) = split_legacy(n, "initramfs-")
                && c == bootcsum
            {
                let name = format!("initramfs-{k}");
                files.push((dir.join(n), name.clone()));
                initramfs_name = Some(name);
            } else if let Some((k, c)) = split_legacy(n, "devicetree-")
                && c == bootcsum
            {
                let name = format!("devicetree-{k}");
                files.push((dir.join(n), name.clone()));
                devicetree_name = Some(name);
            }
        }
        return Ok(Some(KernelLayout {
            kver,
            bootcsum,
            files,
            kernel_name,
            initramfs_name,
            devicetree_name,
            fdtdir_name: None,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootcsum_is_sha256_of_kernel_then_initramfs() {
        // The value ostree's own test suite and ostree-format.md 9.3 give for these files.
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("usr/lib/modules/6.1.0");
        fs::create_dir_all(&m).unwrap();
        fs::write(m.join("vmlinuz"), "a kernel\n").unwrap();
        fs::write(m.join("initramfs.img"), "an initramfs\n").unwrap();
        let k = find_kernel(dir.path()).unwrap().unwrap();
        assert_eq!(
            k.bootcsum,
            "7bd091ad6955c0e7ef41bab65adb016275664b55efc0d10a0c8cb263da3c1e4e"
        );
        assert_eq!(k.kernel_name, "vmlinuz-6.1.0");
        assert_eq!(k.initramfs_name.as_deref(), Some("initramfs-6.1.0.img"));
    }

    #[test]
    fn legacy_layout_takes_bootcsum_from_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("boot");
        fs::create_dir_all(&b).unwrap();
        let c = "ab".repeat(32);
        fs::write(b.join(format!("vmlinuz-5.0-{c}")), "k").unwrap();
        fs::write(b.join(format!("initramfs-5.0.img-{c}")), "i").unwrap();
        let k = find_kernel(dir.path()).unwrap().unwrap();
        assert_eq!(k.bootcsum, c);
        assert_eq!(k.initramfs_name.as_deref(), Some("initramfs-5.0.img"));
    }

    #[test]
    fn tree_without_kernel_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_kernel(dir.path()).unwrap().is_none());
    }
}
