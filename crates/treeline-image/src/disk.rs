//! GPT disk images with a deployed sysroot (docs/image.md).
//!
//! The sysroot is staged in a directory with [`treeline_sysroot`] (init-fs, the commit
//! pulled into its repository, os-init, deploy), then split: `boot/` becomes the boot
//! partition, the rest the root partition. Both file systems are written straight into
//! the image file at their offsets with `mkfs -d`, without mounting. The boot loader is
//! extlinux on BIOS: its `syslinux.cfg` is written by the sysroot beside the BLS entries
//! in every boot version. Installing extlinux's boot sector is the one step that needs a
//! mounted file system (a loop mount, so root).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use treeline_store::Repo;
use treeline_store::progress::NoProgress;
use treeline_sysroot::{Booted, DeployOptions, Sysroot};

use crate::error::{Error, IoContext, Result};
use crate::layout::Layout;

const MIB: u64 = 1 << 20;

/// GPT partition types (the Discoverable Partitions Specification's).
const TYPE_XBOOTLDR: &str = "BC13C2FF-59E6-4262-A352-B57A7632C2E5";
const TYPE_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// The image file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// A plain disk image.
    #[default]
    Raw,
    /// qcow2, converted with `qemu-img`.
    Qcow2,
}

/// The boot loader to install.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bootloader {
    /// extlinux (BIOS), reading `syslinux.cfg` from the boot partition.
    #[default]
    Extlinux,
    /// None: for direct kernel boot (`qemu -kernel`) or a loader installed later.
    None,
}

/// A remote to configure in the image's repository, so the machine can upgrade from it.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    /// Its name; the deployment's origin becomes `NAME:REF`.
    pub name: String,
    /// Its URL (http://, https:// or file://).
    pub url: String,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// The repository holding the commit.
    pub repo: PathBuf,
    /// The ref (or commit) to deploy.
    pub rev: String,
    /// The image file to write (replaced atomically).
    pub out: PathBuf,
    /// Its format.
    pub format: Format,
    /// Partition sizes and labels.
    pub layout: Layout,
    /// The stateroot (OS name) to deploy into.
    pub stateroot: String,
    /// Kernel arguments besides `root=LABEL=<root label> rw`.
    pub kargs: Vec<String>,
    /// The remote to configure, if any.
    pub remote: Option<RemoteSpec>,
    /// The boot loader.
    pub bootloader: Bootloader,
}

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct ImageReport {
    /// The deployed commit.
    pub commit: String,
    /// The deployment's directory name (`<commit>.<serial>`).
    pub deployment: String,
    /// Bytes the staged root and boot trees take (hardlinks counted once).
    pub root_content: u64,
    /// Likewise for the boot partition's files.
    pub boot_content: u64,
    /// Partitions: (label, offset, size) in bytes.
    pub partitions: Vec<(String, u64, u64)>,
    /// The disk's virtual size.
    pub disk_size: u64,
    /// The image file's size as written.
    pub file_size: u64,
}

/// Build the image of `opts`.
pub fn build(opts: &ImageOptions) -> Result<ImageReport> {
    opts.layout.check("options")?;
    if opts.bootloader == Bootloader::Extlinux && !rustix::process::geteuid().is_root() {
        return Err(Error::Tool {
            tool: "extlinux".into(),
            reason: "installing it loop-mounts the boot partition, which needs root \
                     (or build with --bootloader none)"
                .into(),
        });
    }
    let out_dir = parent_dir(&opts.out);
    let staging = tempfile::Builder::new()
        .prefix(".treeline-image-")
        .tempdir_in(out_dir)
        .at(out_dir)?;
    let result = build_in(opts, staging.path());
    // Deployment roots are immutable: clear that before the temporary directory goes.
    let sysroot = staging.path().join("sysroot");
    if let Err(e) = treeline_sysroot::remove_sysroot(&sysroot) {
        tracing::warn!("removing the staging sysroot {}: {e}", sysroot.display());
    }
    result
}

pub(crate) fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn build_in(opts: &ImageOptions, staging: &Path) -> Result<ImageReport> {
    let sysroot_dir = staging.join("sysroot");
    tracing::info!("staging the sysroot with {} deployed", opts.rev);
    let (commit, deployment) = stage_sysroot(opts, &sysroot_dir)?;

    // The boot partition's files are the sysroot's boot/; root keeps an empty boot/ to
    // mount it on.
    let boot_dir = staging.join("boot");
    let sys_boot = sysroot_dir.join("boot");
    fs::rename(&sys_boot, &boot_dir).at(&sys_boot)?;
    fs::create_dir(&sys_boot).at(&sys_boot)?;
    let root_content = tree_bytes(&sysroot_dir)?;
    let boot_content = tree_bytes(&boot_dir)?;

    // Sizes: an automatic root holds the tree twice over (an upgrade's new objects and
    // deployment) plus room for the journal and metadata.
    let boot_size = opts.layout.boot.size.unwrap_or(128 * MIB);
    if boot_content + 8 * MIB > boot_size {
        return Err(Error::Layout {
            origin: "boot".into(),
            reason: format!(
                "{} MiB is too small for {} MiB of kernels and entries (plus 8 MiB)",
                boot_size / MIB,
                boot_content.div_ceil(MIB)
            ),
        });
    }
    let swap_size = opts.layout.swap.as_ref().and_then(|s| s.size).unwrap_or(0);
    let fixed = MIB + boot_size + swap_size + MIB;
    let root_size = match (opts.layout.root.size, opts.layout.disk_size) {
        (Some(r), _) => r,
        (None, Some(d)) if d > fixed => d - fixed,
        (None, Some(d)) => {
            return Err(Error::Layout {
                origin: "disk".into(),
                reason: format!("{} MiB leaves no room for the root partition", d / MIB),
            });
        }
        (None, None) => (2 * root_content + 64 * MIB).div_ceil(MIB) * MIB,
    };
    if root_content + 16 * MIB > root_size {
        return Err(Error::Layout {
            origin: "root".into(),
            reason: format!(
                "{} MiB is too small for the {} MiB sysroot (plus 16 MiB)",
                root_size / MIB,
                root_content.div_ceil(MIB)
            ),
        });
    }
    let disk_size = opts
        .layout
        .disk_size
        .unwrap_or(fixed + root_size)
        .max(fixed + root_size);

    // Partitions in disk order: boot, swap, root (last, so it can grow).
    let mut parts: Vec<(&str, String, u64, &str)> = vec![(
        "boot",
        opts.layout.boot.label.clone(),
        boot_size,
        TYPE_XBOOTLDR,
    )];
    if let Some(s) = &opts.layout.swap {
        parts.push(("swap", s.label.clone(), swap_size, TYPE_SWAP));
    }
    parts.push((
        "root",
        opts.layout.root.label.clone(),
        root_size,
        TYPE_ROOT_X86_64,
    ));
    let mut script = String::from("label: gpt\nunit: sectors\nfirst-lba: 2048\n");
    let mut offset = MIB;
    let mut placed = Vec::new();
    for (role, label, size, ty) in &parts {
        let attrs = if *role == "boot" && opts.bootloader == Bootloader::Extlinux {
            ", attrs=\"LegacyBIOSBootable\""
        } else {
            ""
        };
        script.push_str(&format!(
            "start={}, size={}, type={ty}, name=\"{label}\"{attrs}\n",
            offset / 512,
            size / 512
        ));
        placed.push((*role, label.clone(), offset, *size));
        offset += size;
    }

    let out_dir = parent_dir(&opts.out);
    let raw = tempfile::Builder::new()
        .prefix(".treeline-image-")
        .suffix(".raw")
        .tempfile_in(out_dir)
        .at(out_dir)?;
    raw.as_file().set_len(disk_size).at(raw.path())?;
    let img = raw.path();
    tracing::info!("partitioning {} ({} MiB)", img.display(), disk_size / MIB);
    run(
        Command::new("sfdisk").arg("--quiet").arg(img),
        Some(&script),
    )?;
    for (role, label, off, size) in &placed {
        tracing::info!(
            "writing the {role} partition {label:?} ({} MiB)",
            size / MIB
        );
        match *role {
            "boot" => mkfs(img, "ext3", label, *off, *size, &boot_dir)?,
            "root" => mkfs(img, "ext4", label, *off, *size, &sysroot_dir)?,
            _ => mkswap(img, label, *off, *size, staging)?,
        }
    }
    if opts.bootloader == Bootloader::Extlinux {
        let (_, _, off, size) = &placed[0];
        tracing::info!("installing extlinux");
        install_extlinux(img, *off, *size, staging)?;
    }
    raw.as_file().sync_all().at(img)?;

    match opts.format {
        Format::Raw => {
            raw.persist(&opts.out).map_err(|e| e.error).at(&opts.out)?;
        }
        Format::Qcow2 => {
            let tmp = out_dir.join(format!(".treeline-image-{}.qcow2", std::process::id()));
            let converted = run(
                Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(img)
                    .arg(&tmp),
                None,
            )
            .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp))
            .and_then(|()| fs::rename(&tmp, &opts.out).at(&opts.out));
            if converted.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            converted?;
        }
    }
    File::open(out_dir).and_then(|d| d.sync_all()).at(out_dir)?;
    let file_size = fs::metadata(&opts.out).at(&opts.out)?.len();
    Ok(ImageReport {
        commit,
        deployment,
        root_content,
        boot_content,
        partitions: placed.into_iter().map(|(_, l, o, s)| (l, o, s)).collect(),
        disk_size,
        file_size,
    })
}

/// init-fs, pull the commit, remote, os-init and deploy; returns (commit, deployment name).
fn stage_sysroot(opts: &ImageOptions, dir: &Path) -> Result<(String, String)> {
    Sysroot::init_fs(dir)?;
    let src = Repo::open(&opts.repo).map_err(|error| Error::Store {
        repo: opts.repo.clone(),
        error,
    })?;
    let dest_path = dir.join("ostree/repo");
    let mut dest = Repo::open(&dest_path).map_err(|error| Error::Store {
        repo: dest_path.clone(),
        error,
    })?;
    let remote = opts.remote.as_ref().map(|r| r.name.as_str());
    treeline_pull::local::pull_local(
        &src,
        &dest,
        std::slice::from_ref(&opts.rev),
        0,
        remote,
        &NoProgress,
    )
    .map_err(|e| Error::Pull {
        repo: opts.repo.clone(),
        reason: e.to_string(),
    })?;
    let revision = match &opts.remote {
        Some(r) => {
            treeline_pull::remote::add(
                &mut dest,
                &r.name,
                &r.url,
                &[],
                &[("gpg-verify".into(), "false".into())],
                false,
            )
            .map_err(|e| Error::Pull {
                repo: dest_path.clone(),
                reason: e.to_string(),
            })?;
            format!("{}:{}", r.name, opts.rev)
        }
        None => opts.rev.clone(),
    };
    if opts.bootloader == Bootloader::Extlinux {
        // The link that makes every boot version carry a syslinux.cfg (ostree's layout).
        let d = dir.join("boot/syslinux");
        fs::create_dir_all(&d).at(&d)?;
        let link = d.join("syslinux.cfg");
        std::os::unix::fs::symlink("../loader/syslinux.cfg", &link).at(&link)?;
    }
    let mut sysroot = Sysroot::open_locked(dir, Booted::None)?;
    sysroot.init_stateroot(&opts.stateroot)?;
    let mut karg = vec![
        format!("root=LABEL={}", opts.layout.root.label),
        "rw".to_owned(),
    ];
    karg.extend(opts.kargs.iter().cloned());
    let report = sysroot.deploy(&DeployOptions {
        stateroot: opts.stateroot.clone(),
        revision,
        karg,
        ..Default::default()
    })?;
    let d = report.deployment;
    if !d.boot_files.iter().any(|(k, _)| k == "initrd") {
        let kernel = treeline_sysroot::kernel::find_kernel(&sysroot.deployment_path(&d))?;
        return Err(Error::NoInitramfs {
            rev: opts.rev.clone(),
            kver: kernel.map(|k| k.kver).unwrap_or_default(),
        });
    }
    Ok((d.checksum.to_string(), d.name()))
}

/// Bytes a tree takes on disk, each hardlinked inode once.
pub(crate) fn tree_bytes(root: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let md = e.metadata().at(e.path())?;
            if md.is_dir() {
                stack.push(e.path());
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            total += md.blocks() * 512;
        }
    }
    Ok(total)
}

/// Run a tool, feeding `stdin`; its standard error becomes the error.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<()> {
    let name = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .next()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let tool_err = |reason: String| Error::Tool {
        tool: name.trim().to_owned(),
        reason,
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| tool_err(format!("cannot run it: {e}")))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .map_err(|e| tool_err(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| tool_err(e.to_string()))?;
    if !out.status.success() {
        return Err(tool_err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Make a file system of `size` bytes at `offset` in `img`, filled from `dir`.
fn mkfs(img: &Path, fstype: &str, label: &str, offset: u64, size: u64, dir: &Path) -> Result<()> {
    run(
        Command::new(format!("mkfs.{fstype}"))
            .args(["-q", "-F", "-L", label, "-E"])
            .arg(format!("offset={offset},nodiscard"))
            .arg("-d")
            .arg(dir)
            .arg(img)
            .arg(format!("{}k", size / 1024)),
        None,
    )
}

/// Make the swap area in a file of its own and copy it in (mkswap writes the first
/// pages only).
fn mkswap(img: &Path, label: &str, offset: u64, size: u64, staging: &Path) -> Result<()> {
    let swap = staging.join("swap");
    File::create(&swap)
        .and_then(|f| f.set_len(size))
        .at(&swap)?;
    run(Command::new("mkswap").arg("-L").arg(label).arg(&swap), None)?;
    let head = {
        let mut data = fs::read(&swap).at(&swap)?;
        data.truncate(MIB as usize);
        data
    };
    let f = fs::OpenOptions::new().write(true).open(img).at(img)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &head, offset).at(img)
}

/// The first place in `dirs` that has `file`.
fn find_in(dirs: &[&str], file: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| Path::new(d).join(file))
        .find(|p| p.is_file())
}

/// `extlinux --install` on the loop-mounted boot partition, and syslinux's GPT MBR code.
fn install_extlinux(img: &Path, offset: u64, size: u64, staging: &Path) -> Result<()> {
    let mbr = find_in(
        &[
            "/usr/lib/EXTLINUX",
            "/usr/share/syslinux",
            "/usr/lib/syslinux/mbr",
        ],
        "gptmbr.bin",
    )
    .ok_or_else(|| Error::Tool {
        tool: "extlinux".into(),
        reason: "no gptmbr.bin (install extlinux / syslinux)".into(),
    })?;
    let mnt = staging.join("mnt");
    fs::create_dir_all(&mnt).at(&mnt)?;
    run(
        Command::new("mount")
            .arg("-o")
            .arg(format!("loop,offset={offset},sizelimit={size}"))
            .arg(img)
            .arg(&mnt),
        None,
    )?;
    let installed = run(
        Command::new("extlinux")
            .arg("--install")
            .arg(mnt.join("syslinux")),
        None,
    );
    let unmounted = run(Command::new("umount").arg(&mnt), None);
    installed?;
    unmounted?;
    let code = fs::read(&mbr).at(&mbr)?;
    let code = code.get(..440).ok_or_else(|| Error::Tool {
        tool: "extlinux".into(),
        reason: format!("{} is shorter than 440 bytes", mbr.display()),
    })?;
    let f = fs::OpenOptions::new().write(true).open(img).at(img)?;
    std::os::unix::fs::FileExt::write_all_at(&f, code, 0).at(img)
}
