//! `treeline-boot` as an initramfs's `/init`: the API file systems, the modules the
//! archive lists in `modules.load-order`, the root device named by `root=` (waited for),
//! the deployment named by `ostree=` built on a new root with [`crate::setup`], and the
//! switch into it (docs/image.md).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags, mount, mount_move, unmount};

use crate::setup::Error;

/// Where the physical root is mounted.
pub const SYSROOT: &str = "/sysroot";
/// Where the deployment's root is built before it becomes `/`.
pub const NEWROOT: &str = "/newroot";

/// How the kernel command line names the root device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=LABEL=<label>`: the ext2/3/4 file system with this volume label.
    Label(String),
    /// `root=/dev/<name>`: a device node path.
    Path(PathBuf),
}

/// What the initramfs takes from the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// `root=`.
    pub root: RootSpec,
    /// `ro` (the last of `ro`/`rw` wins; the default is read-write, as the image's kernel
    /// arguments say `rw`).
    pub read_only: bool,
    /// `rootfstype=` (default ext4, which also mounts ext2 and ext3).
    pub fstype: String,
    /// `treeline.rootwait=SECONDS`: how long to wait for the root device (default 30).
    pub wait: Duration,
}

/// Parse the command line; `source_file` names it in errors.
pub fn parse_cmdline(cmdline: &str, source_file: &Path) -> Result<BootArgs, Error> {
    let bad = |reason: String| Error::Cmdline {
        source_file: source_file.to_path_buf(),
        reason,
    };
    let mut root = None;
    let mut read_only = false;
    let mut fstype = "ext4".to_owned();
    let mut wait = Duration::from_secs(30);
    for w in cmdline.split_whitespace() {
        match w.split_once('=') {
            Some(("root", v)) => root = Some(v.to_owned()),
            Some(("rootfstype", v)) if !v.is_empty() => fstype = v.to_owned(),
            Some(("treeline.rootwait", v)) => {
                let s: u64 = v.parse().map_err(|_| {
                    bad(format!(
                        "treeline.rootwait={v}: expected a number of seconds"
                    ))
                })?;
                wait = Duration::from_secs(s);
            }
            None if w == "ro" => read_only = true,
            None if w == "rw" => read_only = false,
            _ => {}
        }
    }
    let root = root.ok_or_else(|| bad("no root= argument".into()))?;
    let root = if let Some(label) = root.strip_prefix("LABEL=") {
        if label.is_empty() {
            return Err(bad("root=LABEL= names no label".into()));
        }
        RootSpec::Label(label.to_owned())
    } else if root.starts_with("/dev/") {
        RootSpec::Path(PathBuf::from(root))
    } else {
        return Err(bad(format!(
            "root={root}: expected root=LABEL=<label> or root=/dev/<device>"
        )));
    };
    Ok(BootArgs {
        root,
        read_only,
        fstype,
        wait,
    })
}

/// The volume label of the ext2/3/4 file system at the start of `r`, `None` when it is
/// not one (the superblock is at byte 1024: magic 0xEF53 at 56, the label at 120).
pub fn ext_label(r: &mut impl Read) -> io::Result<Option<String>> {
    let mut buf = [0u8; 1024 + 136];
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    let sb = &buf[1024..];
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return Ok(None);
    }
    let name = &sb[120..136];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Some(String::from_utf8_lossy(&name[..end]).into_owned()))
}

/// One block device the kernel has: its name in `/sys/class/block` and what its start
/// holds.
#[derive(Clone, Debug)]
pub struct SeenDevice {
    /// `/dev/<name>`.
    pub node: PathBuf,
    /// The ext label, or why there is none.
    pub what: String,
}

/// The block devices of `sys_block` (`/sys/class/block`) with their nodes under `dev`,
/// sorted by name.
pub fn scan_block_devices(sys_block: &Path, dev: &Path) -> Vec<(SeenDevice, Option<String>)> {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let node = dev.join(&name);
            let (what, label) = match fs::File::open(&node).and_then(|mut f| ext_label(&mut f)) {
                Ok(Some(l)) => (format!("ext label {l:?}"), Some(l)),
                Ok(None) => ("no ext file system".to_owned(), None),
                Err(e) => (format!("unreadable: {e}"), None),
            };
            (SeenDevice { node, what }, label)
        })
        .collect()
}

/// Wait until the root device appears (polling `/sys/class/block`); on timeout the
/// error lists every device seen and what it holds.
pub fn wait_for_root(args: &BootArgs) -> Result<PathBuf, String> {
    let deadline = Instant::now() + args.wait;
    let mut announced = false;
    loop {
        let seen = scan_block_devices(Path::new("/sys/class/block"), Path::new("/dev"));
        let found = match &args.root {
            RootSpec::Label(want) => seen
                .iter()
                .find(|(_, l)| l.as_deref() == Some(want.as_str()))
                .map(|(d, _)| d.node.clone()),
            RootSpec::Path(p) => p.exists().then(|| p.clone()),
        };
        if let Some(p) = found {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = seen
                .iter()
                .map(|(d, _)| format!("  {}: {}", d.node.display(), d.what))
                .collect();
            return Err(format!(
                "root device {} did not appear within {} s; block devices seen:\n{}",
                describe(&args.root),
                args.wait.as_secs(),
                if list.is_empty() {
                    "  (none: is the disk driver in the initramfs?)".to_owned()
                } else {
                    list.join("\n")
                }
            ));
        }
        if !announced {
            eprintln!(
                "treeline-boot: waiting up to {} s for the root device {}",
                args.wait.as_secs(),
                describe(&args.root)
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe(root: &RootSpec) -> String {
    match root {
        RootSpec::Label(l) => format!("LABEL={l}"),
        RootSpec::Path(p) => p.display().to_string(),
    }
}

/// Mount `fstype` from `source` on `target`, the error naming both.
pub fn mount_fs(source: &str, target: &Path, fstype: &str, flags: MountFlags) -> Result<(), Error> {
    if let Err(e) = fs::create_dir_all(target) {
        return Err(Error::Io {
            path: target.to_path_buf(),
            error: e,
        });
    }
    mount(source, target, fstype, flags, None).map_err(|e| Error::Mount {
        source_path: PathBuf::from(source),
        target: target.to_path_buf(),
        error: io::Error::from(e),
    })
}

/// Mount `/proc`, `/sys` and `/dev` (devtmpfs), which module loading and the device
/// scan need.
pub fn mount_api_filesystems() -> Result<(), Error> {
    let nosuid = MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV;
    mount_fs("proc", Path::new("/proc"), "proc", nosuid)?;
    mount_fs("sysfs", Path::new("/sys"), "sysfs", nosuid)?;
    mount_fs(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        MountFlags::NOSUID,
    )
}

/// Load the modules `modules.load-order` lists (paths relative to its directory), in
/// order. A module already loaded is fine; any other failure is reported and loading
/// goes on (e.g. a CPU-specific crc32c driver on a CPU without the instructions).
/// Returns (loaded, failures).
pub fn load_modules(moddir: &Path) -> Result<(usize, Vec<String>), Error> {
    let order = moddir.join("modules.load-order");
    let text = match fs::read_to_string(&order) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(e) => {
            return Err(Error::Io {
                path: order,
                error: e,
            });
        }
    };
    let mut loaded = 0;
    let mut failures = Vec::new();
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = moddir.join(rel);
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{rel}: {e}"));
                continue;
            }
        };
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => failures.push(format!("{rel}: {}", e.desc())),
        }
    }
    Ok((loaded, failures))
}

/// Remove the initramfs's files (on the root's device only, as switch_root does) so
/// their memory is freed; only when `/` is a ramfs or tmpfs. Errors are ignored: this
/// only frees memory.
pub fn free_initramfs() {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let is_ram = rustix::fs::statfs("/").is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    });
    let Ok(root_dev) = fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    if is_ram {
        remove_on_device(Path::new("/"), root_dev);
    }
}

fn remove_on_device(dir: &Path, dev: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            remove_on_device(&p, dev);
            // Mount points (e.g. /newroot) are on another device and were skipped; an
            // empty directory on ours goes.
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Make `newroot` the root: the API file systems moved into it, the initramfs's files
/// freed, `newroot` moved onto `/`, and the process chrooted into it.
pub fn switch_root(newroot: &Path) -> Result<(), Error> {
    for api in ["dev", "proc", "sys"] {
        let from = Path::new("/").join(api);
        let to = newroot.join(api);
        if to.is_dir() {
            mount_move(&from, &to).map_err(|e| Error::Mount {
                source_path: from.clone(),
                target: to.clone(),
                error: io::Error::from(e),
            })?;
        } else {
            let _ = unmount(&from, UnmountFlags::DETACH);
        }
    }
    std::env::set_current_dir(newroot).map_err(|error| Error::Io {
        path: newroot.to_path_buf(),
        error,
    })?;
    free_initramfs();
    mount_move(".", "/").map_err(|e| Error::Mount {
        source_path: newroot.to_path_buf(),
        target: PathBuf::from("/"),
        error: io::Error::from(e),
    })?;
    crate::setup::enter(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_root_forms() {
        let src = Path::new("/proc/cmdline");
        let a = parse_cmdline("BOOT_IMAGE=x root=LABEL=root rw console=ttyS0", src).unwrap();
        assert_eq!(a.root, RootSpec::Label("root".into()));
        assert!(!a.read_only);
        assert_eq!(a.fstype, "ext4");
        let a =
            parse_cmdline("root=/dev/vda3 ro rootfstype=ext2 treeline.rootwait=5", src).unwrap();
        assert_eq!(a.root, RootSpec::Path("/dev/vda3".into()));
        assert!(a.read_only);
        assert_eq!(a.fstype, "ext2");
        assert_eq!(a.wait, Duration::from_secs(5));
        for bad in [
            "quiet",
            "root=UUID=1234",
            "root=LABEL=",
            "root=LABEL=x treeline.rootwait=soon",
        ] {
            let e = parse_cmdline(bad, src).unwrap_err().to_string();
            assert!(e.starts_with("kernel command line /proc/cmdline:"), "{e}");
        }
    }

    #[test]
    fn ext_label_is_read_from_the_superblock() {
        let mut img = vec![0u8; 4096];
        img[1024 + 56] = 0x53;
        img[1024 + 57] = 0xEF;
        img[1024 + 120..1024 + 124].copy_from_slice(b"root");
        assert_eq!(
            ext_label(&mut img.as_slice()).unwrap().as_deref(),
            Some("root")
        );
        img[1024 + 56] = 0;
        assert_eq!(ext_label(&mut img.as_slice()).unwrap(), None);
        assert_eq!(ext_label(&mut &img[..100]).unwrap(), None);
    }

    #[test]
    fn ext_label_of_a_real_ext4() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("fs.img");
        fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
        let st = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "tl-root"])
            .arg(&img)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        assert!(st.success());
        let mut f = fs::File::open(&img).unwrap();
        assert_eq!(ext_label(&mut f).unwrap().as_deref(), Some("tl-root"));
    }
}
