//! `treeline image`: boot artifacts (docs/image.md): the initramfs from a tree's kernel
//! modules, disk images and container root archives.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use treeline_image::container::{ArchiveFormat, ContainerOptions};
use treeline_image::disk::{self, Bootloader, Format, ImageOptions, RemoteSpec};
use treeline_image::initramfs::{self, Compression, InitramfsOptions};
use treeline_image::layout::{Layout, parse_size};

/// Image commands.
#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Build a GPT disk image: a boot partition (ext3, kernels and boot entries, extlinux),
    /// optional swap, and an ext4 root partition holding a sysroot with REF deployed and
    /// its repository, all written without mounting except for the extlinux install.
    Build(BuildArgs),
    /// Build a container root archive (OpenVZ, LXC): a container sysroot (docs/container.md)
    /// with REF deployed, its repository, and the static treeline-boot as /sbin/init, as
    /// a tar archive or a squashfs image. Unpacked as the container's root, it starts the
    /// deployment; `admin upgrade` and a restart run the next one.
    Container(ContainerArgs),
    /// Build an initramfs from a tree's kernel modules (`modules.dep` and friends, as
    /// depmod writes them): the virtio, SCSI-disk and ext4 modules with everything they
    /// need, any --module, the init program as /init, and /dev, /proc, /sys, /sysroot.
    /// The modules to load are listed in order in
    /// /usr/lib/modules/KVER/modules.load-order.
    Initramfs {
        /// The tree (a checkout or compose root) with usr/lib/modules/KVER.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// The program to run as /init: the statically linked treeline-boot (a dynamically
        /// linked program is refused) [default: treeline-boot next to this program].
        #[arg(long, value_name = "FILE", env = "TREELINE_BOOT")]
        init: Option<PathBuf>,
        /// Where to write it (default: usr/lib/modules/KVER/initramfs.img in the tree, where
        /// deploy looks for it).
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The kernel version (default: the only one the tree has).
        #[arg(long, value_name = "KVER")]
        kver: Option<String>,
        /// Also include this module (a name or an alias) and what it needs (repeatable).
        #[arg(long = "module", value_name = "NAME")]
        modules: Vec<String>,
        /// Leave out the default virtio, SCSI-disk and ext4 modules.
        #[arg(long)]
        no_default_modules: bool,
        /// Also add this file (`SOURCE:PATH`, PATH in the archive; repeatable), e.g. a
        /// static busybox for a rescue shell.
        #[arg(long = "file", value_name = "SOURCE:PATH")]
        files: Vec<String>,
        /// The archive's compression.
        #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
        compression: CompressionArg,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
}

/// `image build` flags.
#[derive(Args, Debug)]
struct BuildArgs {
    /// The ref (or commit) of --repo to deploy.
    #[arg(long = "ref", value_name = "REF")]
    rev: String,
    /// The image file to write (replaced atomically).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// The image format.
    #[arg(long, value_enum, default_value_t = FormatArg::Raw)]
    format: FormatArg,
    /// Partition sizes and labels (TOML; see docs/image.md). Default: boot 128 MiB, no
    /// swap, root sized to hold the tree twice.
    #[arg(long, value_name = "FILE")]
    layout: Option<PathBuf>,
    /// The disk size (e.g. 2G); the root partition takes what the others leave.
    #[arg(long, value_name = "SIZE")]
    size: Option<String>,
    /// The stateroot (OS name; default: the ref's first component).
    #[arg(long = "os", value_name = "OSNAME")]
    os: Option<String>,
    /// A kernel argument besides root=LABEL=ROOT rw (repeatable), e.g. console=ttyS0.
    #[arg(long = "karg", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    kargs: Vec<String>,
    /// Configure this remote URL in the image's repository; the deployment's origin
    /// becomes REMOTE:REF, so the machine upgrades from it.
    #[arg(long, value_name = "URL")]
    remote_url: Option<String>,
    /// The remote's name.
    #[arg(long, default_value = "origin", value_name = "NAME")]
    remote_name: String,
    /// The boot loader: extlinux (BIOS; installing it loop-mounts the boot partition, so
    /// needs root) or none (for qemu -kernel, or a loader installed later).
    #[arg(long, value_enum, default_value_t = BootloaderArg::Extlinux)]
    bootloader: BootloaderArg,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

/// `image container` flags.
#[derive(Args, Debug)]
struct ContainerArgs {
    /// The ref (or commit) of --repo to deploy.
    #[arg(long = "ref", value_name = "REF")]
    rev: String,
    /// The archive to write (replaced atomically).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// The archive format.
    #[arg(long, value_enum, default_value_t = ArchiveFormatArg::Tar)]
    format: ArchiveFormatArg,
    /// The stateroot (OS name; default: the ref's first component).
    #[arg(long = "os", value_name = "OSNAME")]
    os: Option<String>,
    /// The statically linked treeline-boot to install as /sbin/init [default:
    /// treeline-boot next to this program].
    #[arg(long, value_name = "FILE", env = "TREELINE_BOOT")]
    init: Option<PathBuf>,
    /// Configure this remote URL in the archive's repository; the deployment's origin
    /// becomes REMOTE:REF.
    #[arg(long, value_name = "URL")]
    remote_url: Option<String>,
    /// The remote's name.
    #[arg(long, default_value = "origin", value_name = "NAME")]
    remote_name: String,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArchiveFormatArg {
    Tar,
    Squashfs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BootloaderArg {
    Extlinux,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    Zstd,
    Gzip,
    None,
}

pub fn run(repo: Option<PathBuf>, args: ImageArgs) -> Result<ExitCode> {
    match args.command {
        ImageCommand::Build(b) => build(repo, b)?,
        ImageCommand::Container(c) => container(repo, c)?,
        ImageCommand::Initramfs {
            root,
            init,
            out,
            kver,
            modules,
            no_default_modules,
            compression,
            files,
            json,
        } => {
            let files = files
                .iter()
                .map(|f| {
                    f.split_once(':')
                        .map(|(src, dest)| (PathBuf::from(src), dest.to_owned()))
                        .ok_or_else(|| anyhow!("--file {f:?}: expected SOURCE:PATH"))
                })
                .collect::<Result<Vec<_>>>()?;
            let init = treeline_boot_program(init)?;
            let (kver, moddir) = initramfs::find_modules_dir(&root, kver.as_deref())?;
            let out = out.unwrap_or_else(|| moddir.join("initramfs.img"));
            let opts = InitramfsOptions {
                root: root.clone(),
                kver: Some(kver),
                init,
                extra_modules: modules,
                no_default_modules,
                compression: match compression {
                    CompressionArg::Zstd => Compression::Zstd,
                    CompressionArg::Gzip => Compression::Gzip,
                    CompressionArg::None => Compression::None,
                },
                files,
            };
            let r = initramfs::build(&opts, &out)
                .with_context(|| format!("building the initramfs {}", out.display()))?;
            let names: Vec<&str> = r.closure.modules.iter().map(|m| m.name.as_str()).collect();
            if json {
                let v = serde_json::json!({
                    "path": out,
                    "kver": r.kver,
                    "bytes": r.bytes,
                    "entries": r.entries,
                    "modules": names,
                    "builtin": r.closure.builtin,
                    "absent": r.closure.absent,
                });
                println!("{v:#}");
            } else {
                println!(
                    "Wrote {} ({} bytes): kernel {}, {} modules ({}); built in: {}",
                    out.display(),
                    r.bytes,
                    r.kver,
                    names.len(),
                    names.join(" "),
                    if r.closure.builtin.is_empty() {
                        "none".to_owned()
                    } else {
                        r.closure.builtin.join(" ")
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The treeline-boot to install: the one given, else `treeline-boot` next to this
/// program (where the build and the packages put it).
pub fn treeline_boot_program(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()
            .context("finding this program's directory")?
            .with_file_name("treeline-boot")),
    }
}

fn build(repo: Option<PathBuf>, b: BuildArgs) -> Result<()> {
    let repo = repo.ok_or_else(|| anyhow!("image build needs --repo=PATH"))?;
    let mut layout = match &b.layout {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading layout {}", p.display()))?;
            Layout::parse(&text, &p.display().to_string())?
        }
        None => Layout::default(),
    };
    if let Some(s) = &b.size {
        layout.disk_size =
            Some(parse_size(s).ok_or_else(|| anyhow!("--size {s:?}: expected e.g. 2G or 512M"))?);
    }
    let os = stateroot_of(b.os, &b.rev)?;
    let opts = ImageOptions {
        repo: repo.clone(),
        rev: b.rev.clone(),
        out: b.out.clone(),
        format: match b.format {
            FormatArg::Raw => Format::Raw,
            FormatArg::Qcow2 => Format::Qcow2,
        },
        layout,
        stateroot: os,
        kargs: b.kargs,
        remote: b.remote_url.map(|url| RemoteSpec {
            name: b.remote_name.clone(),
            url,
        }),
        bootloader: match b.bootloader {
            BootloaderArg::Extlinux => Bootloader::Extlinux,
            BootloaderArg::None => Bootloader::None,
        },
    };
    eprintln!(
        "Building {} from {} of {}",
        b.out.display(),
        b.rev,
        repo.display()
    );
    let r = disk::build(&opts).with_context(|| format!("building image {}", b.out.display()))?;
    if b.json {
        let parts: Vec<serde_json::Value> = r
            .partitions
            .iter()
            .map(|(label, offset, size)| {
                serde_json::json!({"label": label, "offset": offset, "size": size})
            })
            .collect();
        let v = serde_json::json!({
            "path": b.out,
            "commit": r.commit,
            "deployment": r.deployment,
            "disk_size": r.disk_size,
            "file_size": r.file_size,
            "root_content": r.root_content,
            "boot_content": r.boot_content,
            "partitions": parts,
        });
        println!("{v:#}");
    } else {
        println!(
            "Wrote {} ({} MiB disk, {} MiB file): deployment {}",
            b.out.display(),
            r.disk_size >> 20,
            r.file_size.div_ceil(1 << 20),
            r.deployment
        );
        for (label, offset, size) in &r.partitions {
            println!("  {label}: {} MiB at {} MiB", size >> 20, offset >> 20);
        }
    }
    Ok(())
}

/// The stateroot given, else the ref's first component.
fn stateroot_of(os: Option<String>, rev: &str) -> Result<String> {
    match os {
        Some(os) => Ok(os),
        None => Ok(rev
            .split(['/', ':'])
            .find(|c| !c.is_empty())
            .filter(|c| treeline_sysroot::deployment::valid_stateroot(c))
            .ok_or_else(|| anyhow!("--ref {rev:?} names no OS: give --os"))?
            .to_owned()),
    }
}

fn container(repo: Option<PathBuf>, c: ContainerArgs) -> Result<()> {
    let repo = repo.ok_or_else(|| anyhow!("image container needs --repo=PATH"))?;
    let opts = ContainerOptions {
        repo: repo.clone(),
        rev: c.rev.clone(),
        out: c.out.clone(),
        format: match c.format {
            ArchiveFormatArg::Tar => ArchiveFormat::Tar,
            ArchiveFormatArg::Squashfs => ArchiveFormat::Squashfs,
        },
        stateroot: stateroot_of(c.os, &c.rev)?,
        init: treeline_boot_program(c.init)?,
        remote: c.remote_url.map(|url| RemoteSpec {
            name: c.remote_name.clone(),
            url,
        }),
    };
    eprintln!(
        "Building {} from {} of {}",
        c.out.display(),
        c.rev,
        repo.display()
    );
    let r = treeline_image::container::build(&opts)
        .with_context(|| format!("building container archive {}", c.out.display()))?;
    if c.json {
        let v = serde_json::json!({
            "path": c.out,
            "commit": r.commit,
            "deployment": r.deployment,
            "root_content": r.root_content,
            "file_size": r.file_size,
        });
        println!("{v:#}");
    } else {
        println!(
            "Wrote {} ({} MiB; root {} MiB): deployment {}",
            c.out.display(),
            r.file_size.div_ceil(1 << 20),
            r.root_content.div_ceil(1 << 20),
            r.deployment
        );
    }
    Ok(())
}
