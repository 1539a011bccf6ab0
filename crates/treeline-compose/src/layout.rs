//! The OSTree layout stage: an assembled root becomes a tree `ostree admin deploy` (and
//! `treeline admin deploy`) can deploy. Applied after the package database is written,
//! before the commit, for every package family (docs/treefile.md, "The OSTree layout"):
//!
//! 1. **usr merge**: `/bin`, `/sbin`, `/lib*` move into `/usr`, replaced by symlinks;
//!    identical duplicates are dropped, different ones are an error naming both paths;
//! 2. **kernel**: the kernel package's image and initramfs move from `/boot` to
//!    `/usr/lib/modules/KVER/{vmlinuz,initramfs.img}`; `/boot` is left empty;
//! 3. **os-release** at `/usr/lib/os-release`, with `/etc/os-release` a symlink to it;
//! 4. the toplevel state directories become symlinks into `/var` (`/home` → `var/home`,
//!    `/root` → `var/roothome`, …), their content moving there first;
//! 5. the **dpkg database** moves to `/usr/lib/sysimage/dpkg`;
//! 6. `/etc` becomes `/usr/etc`;
//! 7. `/var` is emptied: its content is described for first boot in
//!    `/usr/lib/tmpfiles.d/treeline-var.conf`, regular files kept under
//!    `/usr/share/factory/var`.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result, io_err};

/// The tmpfiles.d file describing `/var`, relative to the root.
pub const VAR_TMPFILES: &str = "usr/lib/tmpfiles.d/treeline-var.conf";
/// Where regular files of `/var` are kept, relative to the root.
pub const FACTORY_VAR: &str = "usr/share/factory/var";
/// Where the dpkg database lives in the commit, relative to the root.
pub const DPKG_DB: &str = "usr/lib/sysimage/dpkg";

/// Toplevel directories merged into `/usr`.
pub(crate) const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// State directories that are symlinks into `/var` on OSTree systems: (path, link
/// target, directory under `/var`, mode when created).
const STATE_LINKS: [(&str, &str, &str, u32); 6] = [
    ("home", "var/home", "home", 0o755),
    ("root", "var/roothome", "roothome", 0o700),
    ("opt", "var/opt", "opt", 0o755),
    ("srv", "var/srv", "srv", 0o755),
    ("mnt", "var/mnt", "mnt", 0o755),
    ("usr/local", "../var/usrlocal", "usrlocal", 0o755),
];

fn layout_err(message: impl Into<String>) -> Error {
    Error::Tree {
        what: "layout".to_owned(),
        message: message.into(),
    }
}

fn lstat(p: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(p).ok()
}

fn is_real_dir(p: &Path) -> bool {
    lstat(p).is_some_and(|m| m.is_dir())
}

fn mkdir_mode(p: &Path, mode: u32) -> Result<()> {
    if lstat(p).is_none() {
        std::fs::create_dir_all(p).map_err(io_err(p))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err(p))?;
    }
    Ok(())
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

/// What the layout changed that a package database may need to know.
#[derive(Debug, Default)]
pub struct Applied {
    /// Symlinks the usr merge replaced by the file they pointed at (`usr/lib/x ->
    /// ../../lib/x`, `bin/x -> /usr/bin/x`), as root-relative paths.
    pub collapsed_links: Vec<String>,
}

/// Applies the whole layout to `root`; `kernel` is the treefile's kernel package,
/// `fallback_os_release` the os-release written when no package ships one.
pub fn apply(root: &Path, kernel: Option<&str>, fallback_os_release: &str) -> Result<Applied> {
    let mut applied = Applied::default();
    usr_merge(root, &mut applied.collapsed_links)?;
    if let Some(k) = kernel {
        place_kernel(root, k)?;
    }
    os_release(root, fallback_os_release)?;
    state_links(root)?;
    let mut extra = String::new();
    let dpkg = root.join("var/lib/dpkg");
    if is_real_dir(&dpkg) {
        let to = root.join(DPKG_DB);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::rename(&dpkg, &to).map_err(io_err(&dpkg))?;
        let _ = writeln!(extra, "L /var/lib/dpkg - - - - /{DPKG_DB}");
    }
    etc_to_usr_etc(root)?;
    var_to_tmpfiles(root, &extra)?;
    toplevel(root)?;
    Ok(applied)
}

/// Moves `/bin`, `/sbin`, `/lib*` into `/usr` and leaves symlinks.
pub(crate) fn usr_merge(root: &Path, collapsed: &mut Vec<String>) -> Result<()> {
    std::fs::create_dir_all(root.join("usr")).map_err(io_err(root))?;
    for d in MERGED {
        let top = root.join(d);
        if !is_real_dir(&top) {
            continue;
        }
        let usr = root.join("usr").join(d);
        merge_into(root, &top, &usr, collapsed)?;
        if lstat(&top).is_some() {
            std::fs::remove_dir(&top).map_err(io_err(&top))?;
        }
        symlink(&format!("usr/{d}"), &top)?;
    }
    Ok(())
}

fn rel(root: &Path, p: &Path) -> String {
    format!("/{}", p.strip_prefix(root).unwrap_or(p).display())
}

/// Whether two entries are the same file as far as the tree is concerned.
fn identical(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (ma, mb) = (std::fs::symlink_metadata(a)?, std::fs::symlink_metadata(b)?);
    if ma.file_type() != mb.file_type()
        || (ma.mode(), ma.uid(), ma.gid()) != (mb.mode(), mb.uid(), mb.gid())
    {
        return Ok(false);
    }
    if ma.file_type().is_symlink() {
        return Ok(std::fs::read_link(a)? == std::fs::read_link(b)?);
    }
    if ma.is_file() {
        return Ok(ma.len() == mb.len() && std::fs::read(a)? == std::fs::read(b)?);
    }
    Ok(false)
}

/// Where a symlink at `link` (inside `root`) points, as a host path inside the root,
/// with `..` resolved lexically (never above the root).
fn link_target(root: &Path, link: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let t = std::fs::read_link(link).ok()?;
    let mut parts: Vec<std::ffi::OsString> = if t.is_absolute() {
        Vec::new()
    } else {
        link.parent()?
            .strip_prefix(root)
            .ok()?
            .iter()
            .map(|c| c.to_owned())
            .collect()
    };
    for c in t.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn merge_into(root: &Path, from: &Path, to: &Path, collapsed: &mut Vec<String>) -> Result<()> {
    if lstat(to).is_none() {
        return std::fs::rename(from, to).map_err(io_err(from));
    }
    if !is_real_dir(to) {
        return Err(layout_err(format!(
            "usr merge: {} is a directory but {} is not",
            rel(root, from),
            rel(root, to)
        )));
    }
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(io_err(from))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io_err(from))?;
    entries.sort();
    for name in entries {
        let (a, b) = (from.join(&name), to.join(&name));
        match (lstat(&a), lstat(&b)) {
            (_, None) => std::fs::rename(&a, &b).map_err(io_err(&a))?,
            (Some(ma), Some(mb)) if ma.is_dir() && mb.is_dir() => {
                merge_into(root, &a, &b, collapsed)?;
                std::fs::remove_dir(&a).map_err(io_err(&a))?;
            }
            _ if identical(&a, &b).map_err(io_err(&a))? => {
                std::fs::remove_file(&a).map_err(io_err(&a))?;
            }
            // `/bin/x -> /usr/bin/x`: the /usr one is the file.
            _ if link_target(root, &a).is_some_and(|t| t == b) => {
                std::fs::remove_file(&a).map_err(io_err(&a))?;
                collapsed.push(rel(root, &a)[1..].to_owned());
            }
            // `/usr/bin/x -> /bin/x`: after the merge that would point at itself.
            _ if link_target(root, &b).is_some_and(|t| t == a) => {
                std::fs::remove_file(&b).map_err(io_err(&b))?;
                std::fs::rename(&a, &b).map_err(io_err(&a))?;
                collapsed.push(rel(root, &b)[1..].to_owned());
            }
            _ => {
                return Err(layout_err(format!(
                    "usr merge: {} and {} differ",
                    rel(root, &a),
                    rel(root, &b)
                )));
            }
        }
    }
    Ok(())
}

/// The kernel release directory under `/usr/lib/modules` (exactly one).
fn kernel_release(root: &Path, package: &str) -> Result<String> {
    let modules = root.join("usr/lib/modules");
    let mut releases: Vec<String> = match std::fs::read_dir(&modules) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(layout_err(format!(
            "kernel {package}: no /usr/lib/modules/KVER in the tree"
        ))),
        many => Err(layout_err(format!(
            "kernel {package}: several kernel releases in /usr/lib/modules: {}",
            many.join(", ")
        ))),
    }
}

/// Moves the kernel image (and initramfs, config, System.map) from `/boot` to
/// `/usr/lib/modules/KVER/`, where OSTree looks for them; empties `/boot`.
fn place_kernel(root: &Path, package: &str) -> Result<()> {
    let kver = kernel_release(root, package)?;
    // Alpine names files by flavor (`vmlinuz-virt` for 6.6.14-0-virt), Debian by release.
    let flavor = kver.rsplit('-').next().unwrap_or(&kver).to_owned();
    let boot = root.join("boot");
    let dest = root.join("usr/lib/modules").join(&kver);
    let pick = |names: &[String]| names.iter().map(|n| boot.join(n)).find(|p| p.is_file());
    let suffixes = [kver.clone(), flavor.clone()];
    let image = pick(
        &suffixes
            .iter()
            .map(|s| format!("vmlinuz-{s}"))
            .chain(["vmlinuz".to_owned()])
            .collect::<Vec<_>>(),
    )
    .ok_or_else(|| {
        layout_err(format!(
            "kernel {package}: no /boot/vmlinuz-{kver} or /boot/vmlinuz-{flavor} in the tree"
        ))
    })?;
    let initramfs = pick(&[
        format!("initramfs-{kver}.img"),
        format!("initrd.img-{kver}"),
        format!("initramfs-{flavor}"),
        "initramfs.img".to_owned(),
    ]);
    let mut moves = vec![(image, "vmlinuz")];
    moves.extend(initramfs.map(|p| (p, "initramfs.img")));
    for s in &suffixes {
        for (prefix, name) in [("config-", "config"), ("System.map-", "System.map")] {
            let p = boot.join(format!("{prefix}{s}"));
            if p.is_file() && !moves.iter().any(|(_, n)| *n == name) {
                moves.push((p, name));
            }
        }
    }
    for (from, name) in moves {
        let to = dest.join(name);
        std::fs::rename(&from, &to).map_err(io_err(&from))?;
    }
    // What is left in /boot (bootloader files, symlinks) has no place in a commit.
    if let Ok(rd) = std::fs::read_dir(&boot) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            tracing::warn!("kernel {package}: removing {} from /boot", rel(root, &p));
            let r = if is_real_dir(&p) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// `/usr/lib/os-release`, with `/etc/os-release` pointing at it.
fn os_release(root: &Path, fallback: &str) -> Result<()> {
    let usr = root.join("usr/lib/os-release");
    let etc = root.join("etc/os-release");
    let etc_is_file = lstat(&etc).is_some_and(|m| m.is_file());
    if lstat(&usr).is_none() {
        if etc_is_file {
            std::fs::rename(&etc, &usr).map_err(io_err(&etc))?;
        } else {
            tracing::warn!("no package ships an os-release; writing a minimal one");
            crate::features::replace_file(&usr, fallback.as_bytes(), 0o644)?;
        }
    } else if etc_is_file {
        std::fs::remove_file(&etc).map_err(io_err(&etc))?;
    }
    if lstat(&etc).is_none() {
        std::fs::create_dir_all(root.join("etc")).map_err(io_err(root))?;
        symlink("../usr/lib/os-release", &etc)?;
    }
    Ok(())
}

/// Moves the content of `/home`, `/root`, … into `/var` and makes them symlinks.
fn state_links(root: &Path) -> Result<()> {
    for (path, _, var_dir, mode) in STATE_LINKS {
        let top = root.join(path);
        let in_var = root.join("var").join(var_dir);
        match lstat(&top) {
            Some(m) if m.is_dir() => {
                std::fs::create_dir_all(root.join("var")).map_err(io_err(root))?;
                if lstat(&in_var).is_some() {
                    merge_into(root, &top, &in_var, &mut Vec::new())?;
                    std::fs::remove_dir(&top).map_err(io_err(&top))?;
                } else {
                    std::fs::rename(&top, &in_var).map_err(io_err(&top))?;
                }
            }
            Some(_) => std::fs::remove_file(&top).map_err(io_err(&top))?,
            None => {}
        }
        mkdir_mode(&in_var, mode)?;
    }
    Ok(())
}

/// `/etc` becomes `/usr/etc` (OSTree makes `/etc` from it at deploy time).
fn etc_to_usr_etc(root: &Path) -> Result<()> {
    let etc = root.join("etc");
    let usr_etc = root.join("usr/etc");
    if lstat(&usr_etc).is_some() {
        return Err(layout_err(
            "the tree has both /etc and /usr/etc; packages must not ship /usr/etc",
        ));
    }
    if is_real_dir(&etc) {
        std::fs::rename(&etc, &usr_etc).map_err(io_err(&etc))?;
    } else {
        mkdir_mode(&usr_etc, 0o755)?;
    }
    Ok(())
}

/// A path as tmpfiles.d takes it: no whitespace, quotes or backslashes to escape.
fn tmpfiles_path(root: &Path, p: &Path) -> Result<String> {
    let s = rel(root, p);
    if s.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'\\".contains(c)) {
        return Err(layout_err(format!(
            "{s:?}: /var paths with whitespace, quotes or backslashes are not supported"
        )));
    }
    Ok(s)
}

/// Describes `/var` in tmpfiles.d lines, keeps its files in the factory, empties it.
fn var_to_tmpfiles(root: &Path, extra: &str) -> Result<()> {
    let var = root.join("var");
    mkdir_mode(&var, 0o755)?;
    let mut lines =
        String::from("# /var of this tree, created at boot (written by treeline compose).\n");
    describe(root, &var, &mut lines)?;
    lines.push_str(extra);
    lines.push_str("d /run/media 0755 0 0 -\n");
    let mut entries: Vec<_> = std::fs::read_dir(&var)
        .map_err(io_err(&var))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let r = if is_real_dir(&p) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io_err(&p))?;
    }
    let conf = root.join(VAR_TMPFILES);
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    crate::features::replace_file(&conf, lines.as_bytes(), 0o644)
}

fn describe(root: &Path, dir: &Path, lines: &mut String) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io_err(dir))?;
    entries.sort();
    for p in entries {
        let m = std::fs::symlink_metadata(&p).map_err(io_err(&p))?;
        let path = tmpfiles_path(root, &p)?;
        let ft = m.file_type();
        if ft.is_dir() {
            let _ = writeln!(
                lines,
                "d {path} {:04o} {} {} -",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            describe(root, &p, lines)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p).map_err(io_err(&p))?;
            let target = target.to_string_lossy();
            if target.contains(char::is_whitespace) {
                return Err(layout_err(format!(
                    "{path}: symlink target {target:?} has whitespace"
                )));
            }
            let _ = writeln!(lines, "L {path} - - - - {target}");
        } else if ft.is_file() {
            let factory = root
                .join(FACTORY_VAR)
                .join(p.strip_prefix(root.join("var")).unwrap_or(&p));
            if let Some(parent) = factory.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::fs::rename(&p, &factory).map_err(io_err(&p))?;
            let _ = writeln!(lines, "C {path} - - - - {}", rel(root, &factory));
        } else {
            return Err(layout_err(format!(
                "{path}: special files (devices, fifos, sockets) under /var are not supported"
            )));
        }
    }
    Ok(())
}

/// The toplevel of an OSTree tree: state symlinks, `/sysroot`, `/ostree`, `/media`,
/// an empty `/tmp`, an empty `/boot`.
fn toplevel(root: &Path) -> Result<()> {
    for (path, target, _, _) in STATE_LINKS {
        let link = root.join(path);
        if lstat(&link).is_none() {
            symlink(target, &link)?;
        }
    }
    for (path, target) in [("media", "run/media"), ("ostree", "sysroot/ostree")] {
        let p = root.join(path);
        match lstat(&p) {
            // Packages may own mount points under /media (alpine-baselayout's cdrom,
            // usb): a read-only directory of mount points serves as well.
            Some(m) if m.is_dir() && std::fs::remove_dir(&p).is_err() => continue,
            Some(m) if m.is_dir() => {}
            Some(_) => std::fs::remove_file(&p).map_err(io_err(&p))?,
            None => {}
        }
        symlink(target, &p)?;
    }
    for (dir, mode) in [
        ("sysroot", 0o755),
        ("tmp", 0o1777),
        ("boot", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
    ] {
        mkdir_mode(&root.join(dir), mode)?;
    }
    // Left-overs of scripts in /tmp are not part of an OS; a script may also have made
    // /tmp with the wrong mode.
    let tmp = root.join("tmp");
    if is_real_dir(&tmp) {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
            .map_err(io_err(&tmp))?;
    }
    if is_real_dir(&tmp) {
        for e in std::fs::read_dir(&tmp)
            .map_err(io_err(&tmp))?
            .filter_map(|e| e.ok())
        {
            let p = e.path();
            let r = if is_real_dir(&p) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io_err(&p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    #[test]
    fn unmerged_tree_gets_the_ostree_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "bin/busybox", "bb");
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        write(r, "lib/libc.so", "libc");
        write(r, "usr/lib/libc.so", "libc");
        write(r, "usr/bin/env", "env");
        write(r, "lib/libz.so.1", "z");
        std::os::unix::fs::symlink("../../lib/libz.so.1", r.join("usr/lib/libz.so.1")).unwrap();
        write(r, "etc/os-release", "ID=alpine\n");
        write(r, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        write(r, "root/.profile", "p");
        fs::set_permissions(r.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
        write(r, "var/lib/misc/state", "s");
        fs::create_dir_all(r.join("var/empty")).unwrap();
        fs::set_permissions(r.join("var/empty"), fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("../run", r.join("var/run")).unwrap();
        write(r, "var/lib/dpkg/status", "Package: x\n");
        let applied = apply(r, None, "ID=test\n").unwrap();
        assert_eq!(applied.collapsed_links, ["usr/lib/libz.so.1"]);

        assert_eq!(fs::read_link(r.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(fs::read_link(r.join("lib")).unwrap(), Path::new("usr/lib"));
        assert_eq!(fs::read_to_string(r.join("usr/bin/busybox")).unwrap(), "bb");
        // `/usr/lib/x -> ../../lib/x` (Alpine's) is replaced by the file it points at.
        assert_eq!(
            fs::read_to_string(r.join("usr/lib/libz.so.1")).unwrap(),
            "z"
        );
        assert!(
            !fs::symlink_metadata(r.join("usr/lib/libz.so.1"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            fs::read_link(r.join("usr/bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(!r.join("etc").exists());
        assert_eq!(
            fs::read_to_string(r.join("usr/etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/lib/os-release")).unwrap(),
            "ID=alpine\n"
        );
        assert_eq!(
            fs::read_link(r.join("usr/etc/os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert_eq!(
            fs::read_link(r.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            fs::read_link(r.join("home")).unwrap(),
            Path::new("var/home")
        );
        assert_eq!(
            fs::read_link(r.join("usr/local")).unwrap(),
            Path::new("../var/usrlocal")
        );
        assert_eq!(
            fs::read_dir(r.join("var")).unwrap().count(),
            0,
            "/var is empty"
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/share/factory/var/lib/misc/state")).unwrap(),
            "s"
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/share/factory/var/roothome/.profile")).unwrap(),
            "p"
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/lib/sysimage/dpkg/status")).unwrap(),
            "Package: x\n"
        );
        let conf = fs::read_to_string(r.join(VAR_TMPFILES)).unwrap();
        let uid = fs::metadata(r).unwrap().uid();
        for line in [
            format!("d /var/empty 0555 {uid} {uid} -"),
            "L /var/run - - - - ../run".to_owned(),
            "C /var/lib/misc/state - - - - /usr/share/factory/var/lib/misc/state".to_owned(),
            "L /var/lib/dpkg - - - - /usr/lib/sysimage/dpkg".to_owned(),
            format!("d /var/roothome 0700 {uid} {uid} -"),
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        // Parents come before children.
        let pos = |p: &str| conf.find(p).unwrap();
        assert!(pos("d /var/lib ") < pos("C /var/lib/misc/state"));
    }

    #[test]
    fn merged_debian_style_tree_keeps_its_links_and_moves_the_dpkg_database() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "usr/bin/dpkg", "dpkg");
        write(r, "usr/lib/os-release", "ID=debian\n");
        fs::create_dir_all(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", r.join("etc/os-release")).unwrap();
        for d in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{d}"), r.join(d)).unwrap();
        }
        write(r, "var/lib/dpkg/status", "Package: dpkg\n");
        write(r, "usr/local/share/man/.keep", "");
        let applied = apply(r, None, "ID=fallback\n").unwrap();
        assert!(applied.collapsed_links.is_empty());
        assert_eq!(fs::read_link(r.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(
            fs::read_to_string(r.join("usr/lib/os-release")).unwrap(),
            "ID=debian\n"
        );
        assert_eq!(
            fs::read_link(r.join("usr/etc/os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/lib/sysimage/dpkg/status")).unwrap(),
            "Package: dpkg\n"
        );
        let conf = fs::read_to_string(r.join(VAR_TMPFILES)).unwrap();
        assert!(
            conf.contains("\nL /var/lib/dpkg - - - - /usr/lib/sysimage/dpkg\n"),
            "{conf}"
        );
        assert!(conf.contains("\nC /var/usrlocal/share/man/.keep - - - - /usr/share/factory/var/usrlocal/share/man/.keep\n"), "{conf}");
        // /var/lib is described before the link into it.
        assert!(conf.find("d /var/lib ").unwrap() < conf.find("L /var/lib/dpkg").unwrap());
    }

    #[test]
    fn conflicting_usr_merge_names_both_paths() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "sbin/init", "one");
        write(r, "usr/sbin/init", "two");
        write(r, "etc/os-release", "ID=x\n");
        let err = apply(r, None, "ID=test\n").unwrap_err().to_string();
        assert!(
            err.contains("/sbin/init") && err.contains("/usr/sbin/init"),
            "{err}"
        );
    }

    #[test]
    fn kernel_moves_to_its_modules_directory() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "boot/vmlinuz-virt", "kernel");
        write(r, "boot/initramfs-virt", "initramfs");
        write(r, "boot/config-virt", "cfg");
        write(r, "lib/modules/6.6.14-0-virt/modules.dep", "");
        write(r, "etc/os-release", "ID=x\n");
        apply(r, Some("linux-virt"), "ID=test\n").unwrap();
        let m = r.join("usr/lib/modules/6.6.14-0-virt");
        assert_eq!(fs::read_to_string(m.join("vmlinuz")).unwrap(), "kernel");
        assert_eq!(
            fs::read_to_string(m.join("initramfs.img")).unwrap(),
            "initramfs"
        );
        assert_eq!(fs::read_to_string(m.join("config")).unwrap(), "cfg");
        assert_eq!(fs::read_dir(r.join("boot")).unwrap().count(), 0);
    }
}
