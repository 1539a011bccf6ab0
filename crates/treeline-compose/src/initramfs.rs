//! The compose-time initramfs: when the treefile names a kernel and the tree brings no
//! initramfs for it (Debian's kernel without initramfs-tools, a kernel carried into an
//! Alpine tree), compose builds one from the tree's own modules with `treeline-boot` as
//! `/init` ([`treeline_image::initramfs`], the code of `treeline image initramfs`), at
//! `/usr/lib/modules/KVER/initramfs.img` where deploy looks for it.

use std::path::{Path, PathBuf};

use treeline_image::initramfs::{self, Compression, InitramfsOptions};

use crate::{Error, Result};

/// What compose needs to build an initramfs.
#[derive(Clone, Debug, Default)]
pub struct InitramfsSettings {
    /// The statically linked `treeline-boot` to install as `/init`; `None` when the
    /// caller has none (an error when a tree needs an initramfs).
    pub init: Option<PathBuf>,
    /// Modules wanted besides the default virtio, SCSI-disk and ext4 set.
    pub extra_modules: Vec<String>,
}

/// What [`ensure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// The tree already had `usr/lib/modules/KVER/initramfs.img`.
    Present(String),
    /// One was built, of this many bytes.
    Built(String, u64),
}

/// Builds `/usr/lib/modules/KVER/initramfs.img` of the kernel package `kernel` in `root`
/// (after the layout's kernel step) unless the tree already has one.
pub fn ensure(root: &Path, kernel: &str, settings: &InitramfsSettings) -> Result<Ensured> {
    let what = || format!("kernel {kernel}: initramfs");
    let tree_err = |message: String| Error::Tree {
        what: what(),
        message,
    };
    let (kver, moddir) =
        initramfs::find_modules_dir(root, None).map_err(|e| tree_err(e.to_string()))?;
    let out = moddir.join("initramfs.img");
    if out.is_file() {
        return Ok(Ensured::Present(kver));
    }
    let init = settings.init.clone().ok_or_else(|| {
        tree_err(
            "the tree has none and no treeline-boot was given to build one (compose \
             --boot-init FILE or $TREELINE_BOOT; or `initramfs = false` in the treefile)"
                .to_owned(),
        )
    })?;
    if !init.is_file() {
        return Err(tree_err(format!(
            "the tree has none, and treeline-boot {} (its /init) does not exist (compose \
             --boot-init FILE or $TREELINE_BOOT; or `initramfs = false` in the treefile)",
            init.display()
        )));
    }
    let opts = InitramfsOptions {
        root: root.to_path_buf(),
        kver: Some(kver.clone()),
        init,
        extra_modules: settings.extra_modules.clone(),
        no_default_modules: false,
        compression: Compression::Zstd,
        files: Vec::new(),
    };
    let report = initramfs::build(&opts, &out).map_err(|e| tree_err(e.to_string()))?;
    tracing::info!(
        kver = %report.kver,
        bytes = report.bytes,
        modules = report.closure.modules.len(),
        "built the initramfs"
    );
    Ok(Ensured::Built(kver, report.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with_kernel(root: &Path, with_initramfs: bool) {
        let m = root.join("usr/lib/modules/6.1.0-test");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("vmlinuz"), "kernel").unwrap();
        std::fs::write(m.join("modules.dep"), "").unwrap();
        if with_initramfs {
            std::fs::write(m.join("initramfs.img"), "theirs").unwrap();
        }
    }

    #[test]
    fn an_initramfs_the_tree_brings_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        tree_with_kernel(dir.path(), true);
        let r = ensure(dir.path(), "linux-test", &InitramfsSettings::default()).unwrap();
        assert_eq!(r, Ensured::Present("6.1.0-test".into()));
        let img = dir.path().join("usr/lib/modules/6.1.0-test/initramfs.img");
        assert_eq!(std::fs::read_to_string(img).unwrap(), "theirs");
    }

    #[test]
    fn a_missing_init_is_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        tree_with_kernel(dir.path(), false);
        let settings = InitramfsSettings {
            init: Some(dir.path().join("no-such-treeline-boot")),
            ..Default::default()
        };
        let e = ensure(dir.path(), "linux-test", &settings)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel linux-test: initramfs"), "{e}");
        assert!(e.contains("no-such-treeline-boot"), "{e}");
        let e = ensure(dir.path(), "linux-test", &InitramfsSettings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no treeline-boot was given"), "{e}");
        assert!(
            !dir.path()
                .join("usr/lib/modules/6.1.0-test/initramfs.img")
                .exists()
        );
    }

    #[test]
    fn a_dynamically_linked_init_is_refused() {
        // The host's own /bin/true is a dynamic ELF: the initramfs has no libraries.
        let dir = tempfile::tempdir().unwrap();
        tree_with_kernel(dir.path(), false);
        let settings = InitramfsSettings {
            init: Some(PathBuf::from("/bin/true")),
            ..Default::default()
        };
        let e = ensure(dir.path(), "linux-test", &settings)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamically linked"), "{e}");
    }
}
