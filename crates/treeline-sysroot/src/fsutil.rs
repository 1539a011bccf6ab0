//! File-system helpers: durable writes, atomic symlink swaps, metadata-preserving copies,
//! and removal of immutable deployment directories.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{IFlags, Timespec, Timestamps};
use treeline_store::sys;

use crate::error::{Error, IoContext, Result};

fn store_io(e: treeline_store::Error) -> Error {
    match e {
        treeline_store::Error::Io { path, error } => Error::Io { path, error },
        other => Error::Layout {
            path: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}

/// fsync a directory so the renames and creations inside it are durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    sys::fsync_dir(path).map_err(store_io)
}

/// Flush the whole file system holding `path`.
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    sys::syncfs(path).map_err(store_io)
}

/// Write a file durably: temporary file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(data).at(tmp.path())?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        error: e.error,
    })?;
    fsync_dir(dir)
}

/// Point the symlink `link` at `target` atomically: a temporary link renamed over it.
pub(crate) fn swap_symlink(target: &str, link: &Path) -> Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{name}.tmp"));
    remove_if_exists(&tmp)?;
    std::os::unix::fs::symlink(target, &tmp).at(&tmp)?;
    fsync_dir(dir)?;
    fs::rename(&tmp, link).at(link)?;
    fsync_dir(dir)
}

/// Read a symlink's target as UTF-8; `None` when it does not exist.
pub(crate) fn read_link_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(t) => t
            .into_os_string()
            .into_string()
            .map(Some)
            .map_err(|_| Error::Layout {
                path: path.to_path_buf(),
                reason: "symlink target is not UTF-8".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}

/// Remove a file, symlink or empty directory if it exists.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}

/// Set or clear the immutable attribute of a directory (`chattr +i`/`-i`), as ostree
/// does for deployment roots. File systems without the attribute are left alone.
pub(crate) fn set_immutable(path: &Path, on: bool) -> Result<()> {
    let dir = File::open(path).at(path)?;
    let flags = match rustix::fs::ioctl_getflags(&dir) {
        Ok(f) => f,
        Err(rustix::io::Errno::NOTTY) | Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e).at(path),
    };
    let wanted = if on {
        flags | IFlags::IMMUTABLE
    } else {
        flags - IFlags::IMMUTABLE
    };
    if wanted == flags {
        return Ok(());
    }
    match rustix::fs::ioctl_setflags(&dir, wanted) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTTY) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e).at(path),
    }
}

/// Remove a whole tree, first clearing the immutable attribute of its root.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            set_immutable(path, false)?;
            fs::remove_dir_all(path).at(path)
        }
        Ok(_) => fs::remove_file(path).at(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}

/// Delete a whole sysroot (a staging or test one): the immutable attribute of each
/// deployment root is cleared first, as nothing else could delete it.
pub fn remove_sysroot(path: &Path) -> Result<()> {
    let deploy = path.join("ostree/deploy");
    if let Ok(stateroots) = fs::read_dir(&deploy) {
        for os in stateroots {
            let dir = os.at(&deploy)?.path().join("deploy");
            let Ok(deployments) = fs::read_dir(&dir) else {
                continue;
            };
            for d in deployments {
                let d = d.at(&dir)?;
                if d.file_type().at(d.path())?.is_dir() {
                    set_immutable(&d.path(), false)?;
                }
            }
        }
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

/// Copy one path (recursively for directories) keeping type, content, mode, owner,
/// xattrs and modification time; `dest` must not exist. Sockets, fifos and device nodes
/// are skipped, as ostree's /etc merge does. Nothing is fsynced here (one per file costs
/// seconds for a whole /etc or /var): callers [`syncfs`] before the copy is relied on.
pub(crate) fn copy_preserving(src: &Path, dest: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).at(src)?;
    let ft = md.file_type();
    if ft.is_dir() {
        fs::create_dir(dest).at(dest)?;
        let mut names: Vec<_> = fs::read_dir(src)
            .at(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .at(src)?;
        names.sort();
        for name in names {
            copy_preserving(&src.join(&name), &dest.join(&name))?;
        }
        copy_metadata(src, &md, dest)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).at(src)?;
        std::os::unix::fs::symlink(&target, dest).at(dest)?;
        sys::lchown(dest, md.uid(), md.gid()).map_err(store_io)?;
        copy_xattrs(src, dest)?;
        set_times(dest, &md)?;
    } else if ft.is_file() {
        let mut from = File::open(src).at(src)?;
        let mut to = File::create_new(dest).at(dest)?;
        std::io::copy(&mut from, &mut to).at(dest)?;
        drop(to);
        copy_metadata(src, &md, dest)?;
    } else {
        tracing::debug!("not copying special file {}", src.display());
    }
    Ok(())
}

/// Give `dest` the owner, mode, xattrs and times of `src` (a directory or regular file).
pub(crate) fn copy_metadata(src: &Path, md: &fs::Metadata, dest: &Path) -> Result<()> {
    sys::lchown(dest, md.uid(), md.gid()).map_err(store_io)?;
    // chmod after chown: chown clears setuid/setgid.
    fs::set_permissions(dest, fs::Permissions::from_mode(md.mode() & 0o7777)).at(dest)?;
    copy_xattrs(src, dest)?;
    set_times(dest, md)
}

/// Give `dest` the mode, xattrs and times of `src` with the owner `uid:gid` (symlinks:
/// owner, xattrs and times).
pub(crate) fn copy_metadata_as(
    src: &Path,
    md: &fs::Metadata,
    dest: &Path,
    uid: u32,
    gid: u32,
) -> Result<()> {
    sys::lchown(dest, uid, gid).map_err(store_io)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(dest, fs::Permissions::from_mode(md.mode() & 0o7777)).at(dest)?;
    }
    copy_xattrs(src, dest)?;
    set_times(dest, md)
}

fn copy_xattrs(src: &Path, dest: &Path) -> Result<()> {
    let xattrs = sys::read_xattrs(src).map_err(store_io)?;
    sys::set_xattrs(dest, &xattrs).map_err(store_io)
}

fn set_times(dest: &Path, md: &fs::Metadata) -> Result<()> {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at(dest)
}

/// Link `src` to `dest` (same file system) or copy it; `dest` is written under a
/// temporary name and renamed, so it is either absent or complete.
pub(crate) fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    remove_if_exists(&tmp)?;
    match fs::hard_link(src, &tmp) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EXDEV) | Some(nix::libc::EMLINK) | Some(nix::libc::EPERM)
            ) =>
        {
            let mut from = File::open(src).at(src)?;
            let mut to = File::create_new(&tmp).at(&tmp)?;
            std::io::copy(&mut from, &mut to).at(&tmp)?;
            to.set_permissions(fs::Permissions::from_mode(0o644))
                .at(&tmp)?;
            to.sync_all().at(&tmp)?;
        }
        Err(e) => return Err(e).at(&tmp),
    }
    fs::rename(&tmp, dest).at(dest)
}

/// Logs (at debug level) how long each phase of a long operation took, so a slow deploy
/// can be broken down with `RUST_LOG=treeline_sysroot=debug` instead of a profiler.
pub(crate) struct PhaseTimer {
    what: &'static str,
    last: std::cell::Cell<std::time::Instant>,
}

impl PhaseTimer {
    pub(crate) fn start(what: &'static str) -> Self {
        Self {
            what,
            last: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    pub(crate) fn mark(&self, phase: &str) {
        let now = std::time::Instant::now();
        let ms = now.duration_since(self.last.get()).as_secs_f64() * 1000.0;
        self.last.set(now);
        tracing::debug!("{}: {phase} took {ms:.1} ms", self.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_symlink_replaces_an_existing_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("loader");
        swap_symlink("loader.0", &link).unwrap();
        swap_symlink("loader.1", &link).unwrap();
        assert_eq!(read_link_opt(&link).unwrap().as_deref(), Some("loader.1"));
        assert!(!dir.path().join("loader.tmp").exists());
    }

    #[test]
    fn copy_preserving_keeps_modes_links_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "x").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        let dest = dir.path().join("dest");
        copy_preserving(&src, &dest).unwrap();
        let f = fs::metadata(dest.join("sub/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o600);
        assert_eq!(f.mtime(), fs::metadata(src.join("sub/f")).unwrap().mtime());
        assert_eq!(
            fs::metadata(dest.join("sub")).unwrap().mode() & 0o7777,
            0o750
        );
        assert_eq!(fs::read_link(dest.join("l")).unwrap(), Path::new("sub/f"));
    }
}
