//! `treeline-boot`: enter a deployment of an OSTree-layout sysroot.
//!
//! As PID 1 (a container's `/sbin/init`, the container's root being the sysroot) it builds
//! the default deployment's root and execs the deployment's `/sbin/init` with the same
//! arguments. `treeline-boot prepare-root` builds the root for an initramfs instead.
//! Errors go to the console (stderr) and end with a nonzero exit, never silently.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use treeline_boot::setup::{self, RootSetup};

const USAGE: &str = "\
treeline-boot: enter a deployment of an OSTree-layout sysroot.

Usage:
  /sbin/init [ARGS...]        (as PID 1 of a container whose root is a container sysroot)
  /init [ARGS...]             (as PID 1 of an initramfs; or `treeline-boot initramfs`)
  treeline-boot prepare-root [--sysroot DIR] [--cmdline FILE] NEWROOT

As a container's init (PID 1; install it with `treeline admin install-boot`), it reads the
sysroot's ostree/container-deployments, binds the default deployment on itself, binds /usr
read-only, the stateroot's /var on /var and the physical root on /sysroot, carries the
/dev, /proc and /sys the container runtime mounted, chroots into the deployment and execs
its /sbin/init with ARGS.

As an initramfs's /init (PID 1), it mounts /proc, /sys and /dev (devtmpfs), loads the
modules listed in /usr/lib/modules/$(uname -r)/modules.load-order, waits for the root
device of root=LABEL=<ext label> or root=/dev/<name> (treeline.rootwait=SECONDS, default
30; on timeout it lists the block devices it saw), mounts it on /sysroot (rootfstype=,
default ext4; ro or rw), builds the deployment named by ostree= as prepare-root does,
moves /dev, /proc and /sys into it, frees the initramfs, switches root and execs the
deployment's /sbin/init with ARGS.

prepare-root (in an initramfs, after mounting the physical root) reads the ostree=
argument of the kernel command line (--cmdline FILE, default /proc/cmdline), follows it
inside the sysroot (--sysroot DIR, default /sysroot), and builds the deployment's root on
the empty directory NEWROOT: the deployment bound there, /usr read-only, its /etc
writable, /var from the stateroot, the physical root on NEWROOT/sysroot. Then run
`switch_root NEWROOT /sbin/init`.
";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let rest = args.get(1..).unwrap_or_default();
    let argv0 = args.first().map(PathBuf::from).unwrap_or_default();
    let r = if rustix::process::getpid().is_init() {
        // The kernel starts an initramfs's init as /init; a container's is /sbin/init.
        if argv0 == Path::new("/init") {
            initramfs_init(rest)
        } else if rest.first().is_some_and(|a| a == "initramfs") {
            initramfs_init(&rest[1..])
        } else {
            container_init(rest)
        }
    } else {
        match rest.first().and_then(|a| a.to_str()) {
            Some("prepare-root") => prepare_root(&rest[1..]),
            Some("-h" | "--help") => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--version") => {
                println!("treeline-boot {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            _ => Err(
                "not PID 1 and no command: run it as a container's /sbin/init, or \
                 `treeline-boot prepare-root` (see --help)"
                    .to_owned(),
            ),
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("treeline-boot: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// PID 1 of a container: build the default deployment's root, enter it, exec its init.
fn container_init(args: &[OsString]) -> Result<(), String> {
    let sysroot = Path::new("/");
    let entry = setup::selected_from_list(sysroot).map_err(|e| e.to_string())?;
    let s = RootSetup {
        sysroot: sysroot.to_path_buf(),
        target: sysroot.join(entry.relpath()),
        entry,
    };
    s.check().map_err(|e| e.to_string())?;
    setup::make_root_private().map_err(|e| e.to_string())?;
    for note in s.mount().map_err(|e| e.to_string())? {
        eprintln!("treeline-boot: note: {note}");
    }
    s.carry_api_mounts().map_err(|e| e.to_string())?;
    setup::enter(&s.target).map_err(|e| e.to_string())?;
    eprintln!("treeline-boot: starting deployment {}", s.entry);
    let e = std::process::Command::new("/sbin/init").args(args).exec();
    Err(format!("deployment {}: exec /sbin/init: {e}", s.entry))
}

/// PID 1 of an initramfs: modules, root device, deployment, switch root, its init.
fn initramfs_init(args: &[OsString]) -> Result<(), String> {
    use treeline_boot::initramfs as ird;
    let err = |e: treeline_boot::Error| e.to_string();
    ird::mount_api_filesystems().map_err(err)?;
    let kver = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let moddir = Path::new("/usr/lib/modules").join(&kver);
    let (loaded, failures) = ird::load_modules(&moddir).map_err(err)?;
    eprintln!("treeline-boot: loaded {loaded} modules for kernel {kver}");
    for f in failures {
        eprintln!("treeline-boot: note: module {f}");
    }
    let cmdline_path = Path::new("/proc/cmdline");
    let text = std::fs::read_to_string(cmdline_path)
        .map_err(|e| format!("reading {}: {e}", cmdline_path.display()))?;
    let boot = ird::parse_cmdline(&text, cmdline_path).map_err(err)?;
    let device = ird::wait_for_root(&boot)?;
    let sysroot = Path::new(ird::SYSROOT);
    let mut flags = rustix::mount::MountFlags::empty();
    if boot.read_only {
        flags |= rustix::mount::MountFlags::RDONLY;
    }
    ird::mount_fs(&device.to_string_lossy(), sysroot, &boot.fstype, flags).map_err(err)?;
    eprintln!(
        "treeline-boot: mounted {} ({}) on {}",
        device.display(),
        boot.fstype,
        sysroot.display()
    );
    let entry = setup::selected_from_cmdline(sysroot, &text, cmdline_path).map_err(err)?;
    let newroot = PathBuf::from(ird::NEWROOT);
    std::fs::create_dir_all(&newroot).map_err(|e| format!("{}: {e}", newroot.display()))?;
    let s = RootSetup {
        sysroot: sysroot.to_path_buf(),
        entry,
        target: newroot.clone(),
    };
    s.check().map_err(err)?;
    for note in s.mount().map_err(err)? {
        eprintln!("treeline-boot: note: {note}");
    }
    // The deployment holds the physical root through its binds (and on /sysroot inside).
    let _ = rustix::mount::unmount(sysroot, rustix::mount::UnmountFlags::DETACH);
    ird::switch_root(&newroot).map_err(err)?;
    eprintln!("treeline-boot: starting deployment {}", s.entry);
    let e = std::process::Command::new("/sbin/init").args(args).exec();
    Err(format!("deployment {}: exec /sbin/init: {e}", s.entry))
}

/// `prepare-root [--sysroot DIR] [--cmdline FILE] NEWROOT`.
fn prepare_root(args: &[OsString]) -> Result<(), String> {
    let mut sysroot = PathBuf::from("/sysroot");
    let mut cmdline = PathBuf::from("/proc/cmdline");
    let mut newroot = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("prepare-root: {flag} needs a value"))
        };
        match a.to_str() {
            Some("--sysroot") => sysroot = value("--sysroot")?,
            Some("--cmdline") => cmdline = value("--cmdline")?,
            Some(f) if f.starts_with('-') => {
                return Err(format!("prepare-root: unknown option {f:?} (see --help)"));
            }
            _ if newroot.is_none() => newroot = Some(PathBuf::from(a)),
            _ => return Err(format!("prepare-root: unexpected argument {a:?}")),
        }
    }
    let newroot = newroot.ok_or("prepare-root: NEWROOT is required (see --help)")?;
    let text = std::fs::read_to_string(&cmdline)
        .map_err(|e| format!("reading {}: {e}", cmdline.display()))?;
    let entry =
        setup::selected_from_cmdline(&sysroot, &text, &cmdline).map_err(|e| e.to_string())?;
    let s = RootSetup {
        sysroot,
        entry,
        target: newroot,
    };
    s.check().map_err(|e| e.to_string())?;
    for note in s.mount().map_err(|e| e.to_string())? {
        eprintln!("treeline-boot: note: {note}");
    }
    println!(
        "treeline-boot: deployment {} is ready on {} for switch_root",
        s.entry,
        s.target.display()
    );
    Ok(())
}
