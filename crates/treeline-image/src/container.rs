//! Container root archives (docs/image.md): a container sysroot (docs/container.md) with
//! a commit deployed and the static `treeline-boot` as `/sbin/init`, packed as a tar
//! archive or a squashfs image for OpenVZ or LXC.
//!
//! The sysroot is staged in a temporary directory beside the output with
//! [`treeline_sysroot`] (init-fs in container mode, the commit pulled into its
//! repository, os-init, deploy, install-boot), then packed by GNU tar or mksquashfs
//! keeping owners, modes, hardlinks and extended attributes; the archive is fsynced and
//! renamed over the output, so a reader never sees half of one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use treeline_store::Repo;
use treeline_store::progress::NoProgress;
use treeline_sysroot::{Booted, DeployOptions, Sysroot};

use crate::disk::{RemoteSpec, parent_dir, run, tree_bytes};
use crate::error::{Error, IoContext, Result};

/// The archive format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An uncompressed POSIX tar archive (GNU tar, with xattrs and numeric owners).
    #[default]
    Tar,
    /// A squashfs image (mksquashfs, xz), mountable or unpacked by `unsquashfs`.
    Squashfs,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ContainerOptions {
    /// The repository holding the commit.
    pub repo: PathBuf,
    /// The ref (or commit) to deploy.
    pub rev: String,
    /// The archive to write (replaced atomically).
    pub out: PathBuf,
    /// Its format.
    pub format: ArchiveFormat,
    /// The stateroot (OS name) to deploy into.
    pub stateroot: String,
    /// The statically linked treeline-boot to install as `/sbin/init`.
    pub init: PathBuf,
    /// The remote to configure, if any (the origin becomes `NAME:REF`).
    pub remote: Option<RemoteSpec>,
}

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct ContainerReport {
    /// The deployed commit.
    pub commit: String,
    /// The deployment's directory name (`<commit>.<serial>`).
    pub deployment: String,
    /// Bytes the staged container root takes (hardlinks counted once).
    pub root_content: u64,
    /// The archive's size.
    pub file_size: u64,
}

/// Build the container archive of `opts`.
pub fn build(opts: &ContainerOptions) -> Result<ContainerReport> {
    let out_dir = parent_dir(&opts.out);
    let staging = tempfile::Builder::new()
        .prefix(".treeline-container-")
        .tempdir_in(out_dir)
        .at(out_dir)?;
    let result = build_in(opts, staging.path());
    // Deployment roots are immutable: clear that before the temporary directory goes.
    let sysroot = staging.path().join("root");
    if let Err(e) = treeline_sysroot::remove_sysroot(&sysroot) {
        tracing::warn!("removing the staging sysroot {}: {e}", sysroot.display());
    }
    result
}

fn build_in(opts: &ContainerOptions, staging: &Path) -> Result<ContainerReport> {
    let root = staging.join("root");
    tracing::info!("staging the container sysroot with {} deployed", opts.rev);
    let (commit, deployment) = stage(opts, &root)?;
    let root_content = tree_bytes(&root)?;
    let tmp = staging.join("archive");
    match opts.format {
        ArchiveFormat::Tar => run(
            Command::new("tar")
                .args([
                    "--create",
                    "--format=posix",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--sort=name",
                    "--file",
                ])
                .arg(&tmp)
                .arg("--directory")
                .arg(&root)
                .arg("."),
            None,
        )?,
        ArchiveFormat::Squashfs => run(
            Command::new("mksquashfs").arg(&root).arg(&tmp).args([
                "-noappend",
                "-no-progress",
                "-quiet",
                "-comp",
                "xz",
            ]),
            None,
        )?,
    }
    let f = File::open(&tmp).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    let file_size = f.metadata().at(&tmp)?.len();
    drop(f);
    fs::rename(&tmp, &opts.out).at(&opts.out)?;
    File::open(parent_dir(&opts.out))
        .and_then(|d| d.sync_all())
        .at(parent_dir(&opts.out))?;
    Ok(ContainerReport {
        commit,
        deployment,
        root_content,
        file_size,
    })
}

/// init-fs --container, pull the commit, remote, os-init, deploy, install-boot; returns
/// (commit, deployment name).
fn stage(opts: &ContainerOptions, dir: &Path) -> Result<(String, String)> {
    Sysroot::init_container_fs(dir)?;
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
    let mut sysroot = Sysroot::open_locked(dir, Booted::None)?;
    sysroot.init_stateroot(&opts.stateroot)?;
    let report = sysroot.deploy(&DeployOptions {
        stateroot: opts.stateroot.clone(),
        revision,
        ..Default::default()
    })?;
    sysroot.install_container_init(&opts.init)?;
    let d = report.deployment;
    Ok((d.checksum.to_string(), d.name()))
}
