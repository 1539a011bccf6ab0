//! Building the deployment's root: finding the deployment, checking it is complete, the
//! bind mounts, and entering it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, mount_bind, mount_bind_recursive, mount_remount};

use crate::pointer::{self, Entry};

/// Why the root could not be built; every variant names the path or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path failed.
    #[error("{path}: {error}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// The sysroot has no container deployment list.
    #[error(
        "{0}: missing: not a container sysroot (make one with `treeline admin init-fs --container`)"
    )]
    NotContainer(PathBuf),
    /// The container deployment list does not parse.
    #[error("{path}: {source}")]
    BadList {
        /// The list file.
        path: PathBuf,
        /// The offending line.
        source: pointer::ParseError,
    },
    /// The list names no deployment.
    #[error("{0}: no deployment (deploy one with `treeline admin deploy`)")]
    NoDeployment(PathBuf),
    /// The kernel command line has no `ostree=` argument, or it leads nowhere valid.
    #[error("kernel command line {source_file}: {reason}")]
    Cmdline {
        /// Where the command line was read.
        source_file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something the deployment needs is not there.
    #[error("deployment {deployment}: {path} is missing ({what})")]
    Incomplete {
        /// `stateroot/checksum.serial`.
        deployment: String,
        /// The missing path.
        path: PathBuf,
        /// What it is for.
        what: &'static str,
    },
    /// A mount failed.
    #[error("mounting {source_path} on {target}: {error}")]
    Mount {
        /// What was mounted.
        source_path: PathBuf,
        /// Where.
        target: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The deployment the container deployment list of `sysroot` makes the default.
pub fn selected_from_list(sysroot: &Path) -> Result<Entry> {
    let path = sysroot.join(pointer::PATH);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotContainer(path)),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let list = pointer::parse(&text).map_err(|source| Error::BadList {
        path: path.clone(),
        source,
    })?;
    list.into_iter().next().ok_or(Error::NoDeployment(path))
}

/// The deployment the `ostree=` argument of `cmdline` (read from `source_file`) names:
/// `/ostree/boot.B/<stateroot>/<bootcsum>/<n>`, followed through the boot links inside
/// `sysroot` (as ostree-prepare-root does).
pub fn selected_from_cmdline(sysroot: &Path, cmdline: &str, source_file: &Path) -> Result<Entry> {
    let bad = |reason: String| Error::Cmdline {
        source_file: source_file.to_path_buf(),
        reason,
    };
    let arg = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ostree="))
        .next_back()
        .ok_or_else(|| bad("no ostree= argument".into()))?;
    let rel = arg.trim_start_matches('/');
    if rel.is_empty()
        || Path::new(rel)
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(bad(format!(
            "ostree={arg} is not a path inside the sysroot"
        )));
    }
    let root = fs::canonicalize(sysroot).map_err(io_at(sysroot))?;
    let link = root.join(rel);
    let target = fs::canonicalize(&link)
        .map_err(|e| bad(format!("ostree={arg}: {}: {e}", link.display())))?;
    let inside = target.strip_prefix(&root).map_err(|_| {
        bad(format!(
            "ostree={arg} leads to {}, outside the sysroot",
            target.display()
        ))
    })?;
    let comps: Vec<&str> = inside.iter().filter_map(|c| c.to_str()).collect();
    match comps.as_slice() {
        ["ostree", "deploy", stateroot, "deploy", name] => Entry::new(stateroot, name)
            .map_err(|e| bad(format!("ostree={arg} leads to {}: {e}", inside.display()))),
        _ => Err(bad(format!(
            "ostree={arg} leads to {}, not ostree/deploy/STATEROOT/deploy/CHECKSUM.SERIAL",
            inside.display()
        ))),
    }
}

/// One root to build.
#[derive(Clone, Debug)]
pub struct RootSetup {
    /// The physical root (the sysroot) as this process sees it.
    pub sysroot: PathBuf,
    /// The deployment.
    pub entry: Entry,
    /// Where the root is built: the deployment directory itself (container init), or an
    /// empty mount point (`prepare-root`).
    pub target: PathBuf,
}

impl RootSetup {
    /// The deployment directory.
    pub fn deployment_dir(&self) -> PathBuf {
        self.sysroot.join(self.entry.relpath())
    }

    /// The stateroot's `/var`.
    pub fn var_dir(&self) -> PathBuf {
        self.sysroot.join(self.entry.var_relpath())
    }

    /// Check that what the root needs exists, before anything is mounted.
    pub fn check(&self) -> Result<()> {
        let d = self.deployment_dir();
        let missing = |path: PathBuf, what: &'static str| Error::Incomplete {
            deployment: self.entry.to_string(),
            path,
            what,
        };
        for (p, what) in [
            (d.clone(), "the deployment directory"),
            (d.join("usr"), "its /usr"),
            (d.join("etc"), "its writable /etc"),
            (d.join("var"), "its /var mount point"),
            (self.var_dir(), "the stateroot's /var"),
            (self.target.clone(), "the target mount point"),
        ] {
            if !p.is_dir() {
                return Err(missing(p, what));
            }
        }
        if fs::symlink_metadata(d.join("sbin/init")).is_err() {
            return Err(missing(d.join("sbin/init"), "the deployment's init"));
        }
        Ok(())
    }

    /// Bind the deployment on the target, then `/usr` read-only, the stateroot's `/var`,
    /// and the physical root on `/sysroot`. Returns notes about optional parts left out
    /// (a tree without a `/sysroot` directory).
    pub fn mount(&self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let d = self.deployment_dir();
        bind(&d, &self.target, false)?;
        let usr = self.target.join("usr");
        bind(&usr, &usr, false)?;
        mount_remount(&usr, MountFlags::BIND | MountFlags::RDONLY, "").map_err(|e| {
            Error::Mount {
                source_path: usr.clone(),
                target: usr.clone(),
                error: io::Error::from(e),
            }
        })?;
        bind(&self.var_dir(), &self.target.join("var"), false)?;
        let sysroot_mp = self.target.join("sysroot");
        if sysroot_mp.is_dir() {
            bind(&self.sysroot, &sysroot_mp, false)?;
        } else {
            notes.push(format!(
                "deployment {} has no /sysroot directory: the physical root is not mounted inside",
                self.entry
            ));
        }
        Ok(notes)
    }

    /// Carry the API filesystems a container runtime mounted on the physical root
    /// (`/dev`, `/proc`, `/sys`, with what is mounted below them) into the target, so the
    /// deployment's init finds them where the runtime put them. Returns what was carried.
    pub fn carry_api_mounts(&self) -> Result<Vec<String>> {
        let root_dev = fs::metadata(&self.sysroot)
            .map_err(io_at(&self.sysroot))?
            .dev();
        let mut carried = Vec::new();
        for name in ["dev", "proc", "sys"] {
            let from = self.sysroot.join(name);
            let to = self.target.join(name);
            let mounted = fs::metadata(&from).is_ok_and(|m| m.is_dir() && m.dev() != root_dev);
            if mounted && to.is_dir() {
                bind(&from, &to, true)?;
                carried.push(format!("/{name}"));
            }
        }
        Ok(carried)
    }
}

fn bind(from: &Path, to: &Path, recursive: bool) -> Result<()> {
    let r = if recursive {
        mount_bind_recursive(from, to)
    } else {
        mount_bind(from, to)
    };
    r.map_err(|e| Error::Mount {
        source_path: from.to_path_buf(),
        target: to.to_path_buf(),
        error: io::Error::from(e),
    })
}

/// Stop the binds made here from propagating to other mount namespaces (a runtime may
/// hand over a shared root): make everything under `/` private. A root that is not a
/// mount point (a plain `chroot`) has nothing to change, which the kernel reports as
/// EINVAL.
pub fn make_root_private() -> Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_change};
    match mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    ) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(Error::Mount {
            source_path: PathBuf::from("/"),
            target: PathBuf::from("/"),
            error: io::Error::from(e),
        }),
    }
}

/// Make `root` this process's root directory and working directory.
pub fn enter(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).map_err(io_at(root))?;
    rustix::process::chroot(".").map_err(|e| io_at(root)(io::Error::from(e)))?;
    std::env::set_current_dir("/").map_err(io_at(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysroot_with_boot_link(t: &Path, name: &str) {
        let dep = t.join("ostree/deploy/alpine/deploy").join(name);
        fs::create_dir_all(&dep).unwrap();
        fs::create_dir_all(t.join("ostree/boot.1.0/alpine/bc")).unwrap();
        std::os::unix::fs::symlink("boot.1.0", t.join("ostree/boot.1")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../deploy/alpine/deploy/{name}"),
            t.join("ostree/boot.1.0/alpine/bc/0"),
        )
        .unwrap();
    }

    #[test]
    fn cmdline_ostree_argument_is_followed_inside_the_sysroot() {
        let t = tempfile::tempdir().unwrap();
        let name = format!("{}.0", "ab".repeat(32));
        sysroot_with_boot_link(t.path(), &name);
        let src = Path::new("/proc/cmdline");
        let e = selected_from_cmdline(t.path(), "quiet ostree=/ostree/boot.1/alpine/bc/0 rw", src)
            .unwrap();
        assert_eq!(e.stateroot, "alpine");
        assert_eq!(e.name, name);
        for bad in [
            "quiet",
            "ostree=/ostree/boot.1/alpine/bc/7",
            "ostree=/ostree/boot.1/../../etc",
            "ostree=/ostree/boot.1.0",
        ] {
            let err = selected_from_cmdline(t.path(), bad, src).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("kernel command line /proc/cmdline:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn missing_list_and_empty_list_say_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let e = selected_from_list(t.path()).unwrap_err();
        assert!(e.to_string().contains("init-fs --container"), "{e}");
        fs::create_dir_all(t.path().join("ostree")).unwrap();
        fs::write(t.path().join(pointer::PATH), pointer::format(&[])).unwrap();
        let e = selected_from_list(t.path()).unwrap_err();
        assert!(e.to_string().contains("no deployment"), "{e}");
    }

    #[test]
    fn check_names_the_missing_part() {
        let t = tempfile::tempdir().unwrap();
        let name = format!("{}.0", "ab".repeat(32));
        let entry = Entry {
            stateroot: "alpine".into(),
            name: name.clone(),
        };
        let dep = t.path().join(entry.relpath());
        for d in ["usr", "etc", "var"] {
            fs::create_dir_all(dep.join(d)).unwrap();
        }
        fs::create_dir_all(t.path().join(entry.var_relpath())).unwrap();
        let s = RootSetup {
            sysroot: t.path().to_path_buf(),
            entry,
            target: dep.clone(),
        };
        let e = s.check().unwrap_err();
        assert!(e.to_string().contains("sbin/init is missing"), "{e}");
        fs::create_dir_all(dep.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dep.join("sbin/init")).unwrap();
        s.check().unwrap();
    }
}
