//! Checking a tree out into a directory: hardlinks from the object store where the mode
//! allows, copies otherwise, files written in parallel.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::object::{DirMeta, FileHeader};
use crate::progress::Progress;
use crate::repo::{Repo, RepoMode};
use crate::sys;

/// What to do when a checked-out path already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail (the default).
    #[default]
    Never,
    /// Replace existing files (`--union`).
    Union,
    /// Keep existing files (`--union-add`).
    AddFiles,
    /// Accept existing files only if identical (`--union-identical`).
    UnionIdentical,
}

/// Checkout settings.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Do not set owners or xattrs; mask setuid/setgid (`-U`).
    pub user_mode: bool,
    /// Behaviour on existing paths.
    pub overwrite: Overwrite,
    /// Process `.wh.NAME` files by deleting NAME (`--whiteouts`).
    pub whiteouts: bool,
    /// Check out only this path of the tree.
    pub subpath: Option<String>,
    /// Fail rather than copy when hardlinking is impossible.
    pub require_hardlinks: bool,
    /// Copy even where hardlinks are possible.
    pub force_copy: bool,
    /// Start writing each big copied file to disk as soon as it is written, for callers
    /// that flush the checkout right after (the flush then has less left to do).
    pub early_writeback: bool,
}

enum Item {
    Dir(PathBuf, Checksum),
    File(PathBuf, Checksum),
    Whiteout(PathBuf),
}

/// Check out the tree of `commit` (optionally a subpath) to `dest`.
pub fn checkout(
    repo: &Repo,
    commit: &Checksum,
    dest: &Path,
    opts: &CheckoutOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let c = repo.load_commit(commit)?;
    let mut items = Vec::new();
    match lookup_subpath(repo, c.root_tree, c.root_meta, opts.subpath.as_deref())? {
        Found::Dir(tree, meta) => collect(repo, tree, meta, dest.to_path_buf(), opts, &mut items)?,
        Found::File(name, csum) => {
            items.push(Item::Dir(dest.to_path_buf(), c.root_meta));
            items.push(Item::File(dest.join(name), csum));
        }
    }
    let can_link = !opts.force_copy
        && match repo.mode() {
            RepoMode::Bare | RepoMode::BareUserOnly => true,
            RepoMode::BareUser => opts.user_mode,
            RepoMode::Archive => false,
        };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    // A tree has few distinct directory metadata objects (a handful of owner/mode
    // combinations), so each is read once.
    let mut dirmetas: std::collections::HashMap<Checksum, DirMeta> =
        std::collections::HashMap::new();
    for item in items {
        match item {
            Item::Dir(path, meta) => {
                let m = match dirmetas.get(&meta) {
                    Some(m) => m.clone(),
                    None => {
                        let m = repo.load_dirmeta(&meta)?;
                        dirmetas.insert(meta, m.clone());
                        m
                    }
                };
                make_dir(&path, opts, dirs.is_empty())?;
                dirs.push((path, m));
            }
            Item::Whiteout(target) => remove_any(&target)?,
            Item::File(path, csum) => files.push((path, csum)),
        }
    }
    progress.set_total(files.len() as u64);
    files
        .par_iter()
        .map(|(path, csum)| {
            let r = place_file(repo, csum, path, can_link, opts);
            progress.advance(1, 0);
            r
        })
        .collect::<Result<Vec<()>>>()?;
    // Directory modes last, deepest first, so read-only directories can still be filled.
    for (path, meta) in dirs.iter().rev() {
        apply_dirmeta(path, meta, opts)?;
    }
    Ok(())
}

enum Found {
    Dir(Checksum, Checksum),
    File(String, Checksum),
}

fn lookup_subpath(
    repo: &Repo,
    tree: Checksum,
    meta: Checksum,
    subpath: Option<&str>,
) -> Result<Found> {
    let Some(subpath) = subpath else {
        return Ok(Found::Dir(tree, meta));
    };
    let comps: Vec<&str> = subpath.split('/').filter(|c| !c.is_empty()).collect();
    let (mut tree, mut meta) = (tree, meta);
    for (i, comp) in comps.iter().enumerate() {
        let t = repo.load_dirtree(&tree)?;
        if let Some((_, st, sm)) = t.dirs.iter().find(|d| d.0 == *comp) {
            (tree, meta) = (*st, *sm);
            continue;
        }
        if i + 1 == comps.len()
            && let Some((name, c)) = t.files.iter().find(|f| f.0 == *comp)
        {
            return Ok(Found::File(name.clone(), *c));
        }
        return Err(Error::Checkout {
            path: PathBuf::from(subpath),
            message: "no such file or directory in the commit".into(),
        });
    }
    Ok(Found::Dir(tree, meta))
}

fn collect(
    repo: &Repo,
    tree: Checksum,
    meta: Checksum,
    dest: PathBuf,
    opts: &CheckoutOptions,
    out: &mut Vec<Item>,
) -> Result<()> {
    let t = repo.load_dirtree(&tree)?;
    out.push(Item::Dir(dest.clone(), meta));
    for (name, csum) in &t.files {
        if opts.whiteouts
            && let Some(target) = name.strip_prefix(".wh.")
        {
            if !target.is_empty() && !target.starts_with(".wh.") {
                out.push(Item::Whiteout(dest.join(target)));
            }
            continue;
        }
        out.push(Item::File(dest.join(name), *csum));
    }
    for (name, st, sm) in &t.dirs {
        collect(repo, *st, *sm, dest.join(name), opts, out)?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

fn make_dir(path: &Path, opts: &CheckoutOptions, is_root: bool) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let is_dir = fs::symlink_metadata(path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if !is_dir {
                return Err(Error::Checkout {
                    path: path.to_path_buf(),
                    message: "exists and is not a directory".into(),
                });
            }
            if opts.overwrite == Overwrite::Never && !is_root {
                return Err(Error::Checkout {
                    path: path.to_path_buf(),
                    message: "already exists (use --union or --union-add)".into(),
                });
            }
            if opts.overwrite == Overwrite::Never
                && is_root
                && fs::read_dir(path).at(path)?.next().is_some()
            {
                return Err(Error::Checkout {
                    path: path.to_path_buf(),
                    message: "destination exists and is not empty (use --union or --union-add)"
                        .into(),
                });
            }
            Ok(())
        }
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            error: e,
        }),
    }
}

fn apply_dirmeta(path: &Path, meta: &DirMeta, opts: &CheckoutOptions) -> Result<()> {
    if !opts.user_mode {
        sys::lchown(path, meta.uid, meta.gid)?;
        sys::set_xattrs(path, &meta.xattrs)?;
    }
    // Unlike files, directories keep setgid in user mode, as in ostree (it only decides
    // the group of new files).
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777)).at(path)
}

fn place_file(
    repo: &Repo,
    csum: &Checksum,
    dest: &Path,
    can_link: bool,
    opts: &CheckoutOptions,
) -> Result<()> {
    // A fresh checkout (nothing may be replaced) links first and learns from EEXIST that
    // a path exists, saving a stat per file.
    let link_first = opts.overwrite == Overwrite::Never && can_link;
    let exists = !link_first && fs::symlink_metadata(dest).is_ok();
    if exists {
        match opts.overwrite {
            Overwrite::Never => {
                return Err(Error::Checkout {
                    path: dest.to_path_buf(),
                    message: "already exists (use --union or --union-add)".into(),
                });
            }
            Overwrite::AddFiles => return Ok(()),
            Overwrite::UnionIdentical => return check_identical(repo, csum, dest),
            Overwrite::Union => {}
        }
    }
    if can_link && hardlinkable(repo, csum, opts)? {
        let obj = repo.object_path(&ObjectName::new(*csum, ObjectType::File));
        match link_into_place(&obj, dest, exists) {
            Ok(()) => return Ok(()),
            Err(e) if link_first && e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Checkout {
                    path: dest.to_path_buf(),
                    message: "already exists (use --union or --union-add)".into(),
                });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EMLINK)) => {
                if opts.require_hardlinks {
                    return Err(Error::Checkout {
                        path: dest.to_path_buf(),
                        message: format!("cannot hardlink from the repository: {e}"),
                    });
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && fs::symlink_metadata(&obj).is_err() =>
            {
                return Err(Error::NotFound(ObjectName::new(*csum, ObjectType::File)));
            }
            Err(e) => {
                return Err(Error::Io {
                    path: dest.to_path_buf(),
                    error: e,
                });
            }
        }
    } else if opts.require_hardlinks {
        return Err(Error::Checkout {
            path: dest.to_path_buf(),
            message: format!(
                "{} repositories cannot be checked out with hardlinks{}",
                repo.mode().config_name(),
                if repo.mode() == RepoMode::BareUser {
                    " except in user mode (-U)"
                } else {
                    ""
                }
            ),
        });
    }
    if link_first && fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Checkout {
            path: dest.to_path_buf(),
            message: "already exists (use --union or --union-add)".into(),
        });
    }
    copy_out(repo, csum, dest, exists, opts)
}

/// Whether this object may be hardlinked into the checkout: bare-user stores symlinks
/// as regular files, and user mode must not hand out setuid/setgid files, so those are
/// written out instead (as ostree does).
fn hardlinkable(repo: &Repo, csum: &Checksum, opts: &CheckoutOptions) -> Result<bool> {
    // Bare objects are the files themselves, symlinks included: all linkable outside user
    // mode (a missing object shows when the link fails).
    if repo.mode() == RepoMode::Bare && !opts.user_mode {
        return Ok(true);
    }
    let obj = repo.object_path(&ObjectName::new(*csum, ObjectType::File));
    let mode =
        if repo.mode() == RepoMode::BareUser {
            let file = File::open(&obj).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::NotFound(ObjectName::new(*csum, ObjectType::File))
                }
                _ => Error::Io {
                    path: obj.clone(),
                    error: e,
                },
            })?;
            let meta = sys::fget_xattr(&file, &obj, crate::repo::BARE_USER_META_XATTR)?
                .ok_or_else(|| Error::InvalidObject {
                    object: ObjectName::new(*csum, ObjectType::File).to_string(),
                    reason: "missing user.ostreemeta xattr".into(),
                })?;
            FileHeader::from_bare_user_meta(&meta)
                .map_err(|reason| Error::InvalidObject {
                    object: ObjectName::new(*csum, ObjectType::File).to_string(),
                    reason,
                })?
                .mode
        } else {
            match fs::symlink_metadata(&obj) {
                Ok(md) => md.mode(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(ObjectName::new(*csum, ObjectType::File)));
                }
                Err(e) => {
                    return Err(Error::Io {
                        path: obj,
                        error: e,
                    });
                }
            }
        };
    if mode & crate::object::S_IFMT == crate::object::S_IFLNK {
        return Ok(repo.mode() != RepoMode::BareUser);
    }
    Ok(!(opts.user_mode && mode & 0o6000 != 0))
}

fn link_into_place(obj: &Path, dest: &Path, replace: bool) -> std::io::Result<()> {
    if !replace {
        return fs::hard_link(obj, dest);
    }
    let tmp = tmp_sibling(dest);
    fs::hard_link(obj, &tmp)?;
    fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn tmp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tl-{}", std::process::id()))
}

fn copy_out(
    repo: &Repo,
    csum: &Checksum,
    dest: &Path,
    replace: bool,
    opts: &CheckoutOptions,
) -> Result<()> {
    let (header, mut content, _) = repo.open_file(csum)?;
    let target = if replace {
        tmp_sibling(dest)
    } else {
        dest.to_path_buf()
    };
    if header.is_symlink() {
        std::os::unix::fs::symlink(&header.symlink_target, &target).at(&target)?;
    } else {
        let mut f = File::create_new(&target).at(&target)?;
        let n = std::io::copy(&mut content, &mut f).at(&target)?;
        f.flush().at(&target)?;
        if opts.early_writeback {
            crate::sys::start_writeback(&f, n);
        }
        let mut mode = header.mode & 0o7777;
        if opts.user_mode {
            mode &= !0o6000;
        }
        if !opts.user_mode {
            rustix::fs::fchown(
                &f,
                Some(rustix::fs::Uid::from_raw(header.uid)),
                Some(rustix::fs::Gid::from_raw(header.gid)),
            )
            .at(&target)?;
        }
        // chmod after chown: chown clears setuid bits.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .at(&target)?;
    }
    if !opts.user_mode {
        if header.is_symlink() {
            sys::lchown(&target, header.uid, header.gid)?;
        }
        sys::set_xattrs(&target, &header.xattrs)?;
    }
    sys::zero_times(&target)?;
    if replace {
        fs::rename(&target, dest).at(dest)?;
    }
    Ok(())
}

fn check_identical(repo: &Repo, csum: &Checksum, dest: &Path) -> Result<()> {
    let obj = repo.object_path(&ObjectName::new(*csum, ObjectType::File));
    if let (Ok(a), Ok(b)) = (fs::symlink_metadata(&obj), fs::symlink_metadata(dest))
        && a.dev() == b.dev()
        && a.ino() == b.ino()
    {
        return Ok(());
    }
    let (header, mut content, _) = repo.open_file(csum)?;
    let existing = file_checksum_on_disk(dest, &header)?;
    let wanted = crate::repo::content_checksum(&header, &mut content).at(&obj)?;
    if existing == wanted {
        Ok(())
    } else {
        Err(Error::Checkout {
            path: dest.to_path_buf(),
            message: "exists with different content (--union-identical)".into(),
        })
    }
}

/// Checksum of a file on disk as it would be committed with `like`'s ownership and xattrs
/// (content and mode come from the disk).
fn file_checksum_on_disk(path: &Path, like: &FileHeader) -> Result<Checksum> {
    let md = fs::symlink_metadata(path).at(path)?;
    let mut h = like.clone();
    if md.file_type().is_symlink() {
        h.mode = crate::object::S_IFLNK | 0o777;
        h.symlink_target = fs::read_link(path).at(path)?.to_string_lossy().into_owned();
        return Ok(crate::repo::ContentHasher::new(&h).finish());
    }
    h.mode = crate::object::S_IFREG | (md.mode() & 0o7777);
    h.symlink_target.clear();
    let mut f = File::open(path).at(path)?;
    crate::repo::content_checksum(&h, &mut f).at(path)
}
