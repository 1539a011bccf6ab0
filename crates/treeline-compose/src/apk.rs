//! The Alpine side of assembling a root: extracting package commits and writing the
//! database the real apk reads (`lib/apk/db/installed`, `scripts.tar`, `triggers`,
//! `etc/apk/world`, `arch`, `repositories`, `keys`), as docs/apk-format.md §4 describes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use treeline_pkg::PackageMeta;
use treeline_pkg::apk::package::{PkgInfo, ScriptKind};
use treeline_pkg::import::keys as pkg_keys;
use treeline_store::checkout::{CheckoutOptions, Overwrite, checkout};
use treeline_store::progress::NoProgress;
use treeline_store::{Checksum, Repo};

use crate::treefile::Treefile;
use crate::{Error, Result, io_err, store_err};

/// The index letters an installed-db record starts with, in apk's order (§3.2).
const HEADER_LETTERS: &[&str] = &[
    "C", "P", "V", "A", "S", "I", "T", "U", "L", "o", "m", "t", "c", "k", "D", "p", "i",
];

/// A package as the composer installs it: its index record, its commit, and what the
/// import recorded (control files, owner names, per-file checksums).
pub struct InstalledPackage {
    /// The index record (header lines of the installed db come from it).
    pub meta: PackageMeta,
    /// The package's commit in the store.
    pub commit: Checksum,
    /// `.PKGINFO`.
    pub pkginfo: PkgInfo,
    /// Maintainer scripts by action (`post-install`), as packaged.
    pub scripts: Vec<(String, Vec<u8>)>,
    owners: Vec<(String, String, String)>,
    checksums: HashMap<String, String>,
}

impl InstalledPackage {
    /// Reads what the import stored on the package's commit.
    pub fn load(repo: &Repo, meta: &PackageMeta, commit: &Checksum) -> Result<InstalledPackage> {
        let label = format!("{}-{}", meta.name, meta.version);
        let missing = |what: &str| Error::Package {
            package: label.clone(),
            message: format!("its commit {} has no {what}", commit.to_hex()),
        };
        let c = repo
            .load_commit(commit)
            .map_err(store_err(format!("loading the commit of {label}")))?;
        let control = c
            .metadata
            .get(pkg_keys::CONTROL)
            .and_then(|v| v.as_dict())
            .ok_or_else(|| missing(pkg_keys::CONTROL))?;
        let mut pkginfo = None;
        let mut scripts = Vec::new();
        for (name, value) in &control.0 {
            if value.type_str != "ay" {
                continue;
            }
            match name.strip_prefix('.') {
                Some("PKGINFO") => {
                    pkginfo = Some(PkgInfo::parse(&String::from_utf8_lossy(&value.data)))
                }
                Some(action) => scripts.push((action.to_owned(), value.data.clone())),
                None => {}
            }
        }
        let pkginfo = pkginfo.ok_or_else(|| missing(".PKGINFO"))?;
        // apk keeps scripts by kind and writes them in that order (scripts.tar).
        scripts.sort_by_key(|(action, _)| {
            ScriptKind::ALL
                .iter()
                .position(|k| k.action() == action)
                .unwrap_or(usize::MAX)
        });
        let strv = |key: &str| {
            c.metadata
                .get(key)
                .and_then(|v| v.as_strv())
                .unwrap_or_default()
        };
        let owners = strv(pkg_keys::OWNERS)
            .into_iter()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                Some((
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                ))
            })
            .collect();
        let checksums = strv(pkg_keys::FILE_CHECKSUMS)
            .into_iter()
            .filter_map(|l| {
                let (p, q) = l.split_once('\t')?;
                Some((p.trim_end_matches('/').to_owned(), q.to_owned()))
            })
            .collect();
        Ok(InstalledPackage {
            meta: meta.clone(),
            commit: *commit,
            pkginfo,
            scripts,
            owners,
            checksums,
        })
    }

    /// `name-version`.
    pub fn label(&self) -> String {
        format!("{}-{}", self.meta.name, self.meta.version)
    }

    /// The identity (`Q1…`), as the index's `C:` holds it.
    pub fn identity(&self) -> &str {
        &self.meta.checksum
    }

    /// The script for `action`, if the package has one.
    pub fn script(&self, action: &str) -> Option<&[u8]> {
        self.scripts
            .iter()
            .find(|(a, _)| a == action)
            .map(|(_, b)| b.as_slice())
    }

    /// The directory globs of `.PKGINFO`'s `triggers`.
    pub fn trigger_globs(&self) -> Vec<String> {
        self.pkginfo
            .joined("triggers")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn builddate(&self) -> u64 {
        self.pkginfo
            .get("builddate")
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The package's installed-db record (§4.1): header lines from the index record,
    /// `r:`/`q:` from `.PKGINFO`, then `F/M/R/a/Z` from its commit's tree, with modes and
    /// owners as extracted into `root`.
    pub fn record(&self, repo: &Repo, root: &Path) -> Result<Record> {
        let mut header = String::new();
        for letter in HEADER_LETTERS {
            if let Some((_, v)) = self.meta.fields.iter().find(|(k, _)| k == letter) {
                let _ = writeln!(header, "{letter}:{v}");
            }
        }
        let replaces = self.pkginfo.joined("replaces");
        if !replaces.is_empty() {
            let _ = writeln!(header, "r:{replaces}");
        }
        if let Some(q) = self.pkginfo.get("replaces_priority")
            && q.trim().parse::<i64>().is_ok_and(|q| q != 0)
        {
            let _ = writeln!(header, "q:{}", q.trim());
        }
        let c = repo
            .load_commit(&self.commit)
            .map_err(store_err(format!("loading the commit of {}", self.label())))?;
        let mut record = Record {
            header,
            dirs: Vec::new(),
        };
        self.walk(
            repo,
            (&c.root_tree, &c.root_meta),
            "",
            root,
            &mut record.dirs,
        )?;
        Ok(record)
    }

    fn walk(
        &self,
        repo: &Repo,
        (tree, meta): (&Checksum, &Checksum),
        rel: &str,
        root: &Path,
        out: &mut Vec<DirRecord>,
    ) -> Result<()> {
        let what = || format!("reading the tree of {}", self.label());
        let t = repo.load_dirtree(tree).map_err(store_err(what()))?;
        // Files directly in / cannot be expressed in the db (no `F:` for the root); apk
        // packages have none.
        if !rel.is_empty() {
            let path = root.join(rel);
            let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let mode = md.mode() & 0o7777;
            let xattrs = repo.load_dirmeta(meta).map_err(store_err(what()))?.xattrs;
            let mut dir = DirRecord {
                path: rel.to_owned(),
                meta: ((md.uid(), md.gid(), mode) != (0, 0, 0o755) || !xattrs.is_empty()).then(
                    || {
                        format!(
                            "M:{}:{}:{mode:o}{}\n",
                            md.uid(),
                            md.gid(),
                            xattr_field(&xattrs)
                        )
                    },
                ),
                files: Vec::new(),
            };
            for (name, file) in &t.files {
                let rel_file = format!("{rel}/{name}");
                let path = root.join(&rel_file);
                let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
                let xattrs = repo.open_file(file).map_err(store_err(what()))?.0.xattrs;
                let mut lines = format!("R:{name}\n");
                let mode = md.mode() & 0o7777;
                if (md.uid(), md.gid(), mode) != (0, 0, 0o644) || !xattrs.is_empty() {
                    let _ = writeln!(
                        lines,
                        "a:{}:{}:{mode:o}{}",
                        md.uid(),
                        md.gid(),
                        xattr_field(&xattrs)
                    );
                }
                if let Some(z) = self.checksums.get(&rel_file) {
                    let _ = writeln!(lines, "Z:{z}");
                }
                dir.files.push((name.clone(), lines));
            }
            out.push(dir);
        }
        for (name, sub, sub_meta) in &t.dirs {
            let rel_dir = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            self.walk(repo, (sub, sub_meta), &rel_dir, root, out)?;
        }
        Ok(())
    }
}

/// The 4th field of `M:`/`a:` lines (with its `:`), empty without xattrs: `Q1` + base64
/// of SHA-1 over the xattrs sorted by name, each as (u32 BE name length, name, u32 BE
/// value length, value), as apk-format.md §4.1 describes.
fn xattr_field(xattrs: &treeline_store::object::Xattrs) -> String {
    use sha1::Digest;
    if xattrs.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<_> = xattrs.iter().collect();
    sorted.sort();
    let mut h = sha1::Sha1::new();
    for (name, value) in sorted {
        h.update((name.len() as u32).to_be_bytes());
        h.update(name);
        h.update((value.len() as u32).to_be_bytes());
        h.update(value);
    }
    let digest: [u8; 20] = h.finalize().into();
    format!(":{}", treeline_pkg::apk::q1_encode(&digest))
}

/// One package's installed-db record, kept in parts so a later package that overwrites
/// a file takes it over (apk moves ownership the same way).
pub struct Record {
    /// Header and package-level lines (`C:` … `i:`, `r:`, `q:`).
    header: String,
    /// Directories in tree order, each with its files.
    dirs: Vec<DirRecord>,
}

struct DirRecord {
    path: String,
    /// The `M:` line, when not 0:0:755.
    meta: Option<String>,
    /// Basename and its `R:`/`a:`/`Z:` lines.
    files: Vec<(String, String)>,
}

impl Record {
    fn file_paths(&self) -> impl Iterator<Item = String> + '_ {
        self.dirs
            .iter()
            .flat_map(|d| d.files.iter().map(move |(n, _)| format!("{}/{n}", d.path)))
    }

    fn disown(&mut self, path: &str) {
        let Some((dir, name)) = path.rsplit_once('/') else {
            return;
        };
        for d in self.dirs.iter_mut().filter(|d| d.path == dir) {
            d.files.retain(|(n, _)| n != name);
        }
    }

    /// The record's text, ending with its empty line.
    pub fn text(&self) -> String {
        let mut out = self.header.clone();
        for d in &self.dirs {
            let _ = writeln!(out, "F:{}", d.path);
            if let Some(m) = &d.meta {
                out.push_str(m);
            }
            for (_, lines) in &d.files {
                out.push_str(lines);
            }
        }
        out.push('\n');
        out
    }
}

/// Copies the package's files into `root` (never hardlinks: scripts may modify them and
/// must not touch store objects), then gives entries owned by names other than root the
/// ids those names have in the target's passwd and group, as apk does.
pub fn extract(repo: &Repo, pkg: &InstalledPackage, root: &Path) -> Result<()> {
    let opts = CheckoutOptions {
        overwrite: Overwrite::Union,
        force_copy: true,
        ..CheckoutOptions::default()
    };
    checkout(repo, &pkg.commit, root, &opts, &NoProgress)
        .map_err(store_err(format!("extracting {}", pkg.label())))?;
    if pkg.owners.is_empty() {
        return Ok(());
    }
    let users = id_map(&root.join("etc/passwd"));
    let groups = id_map(&root.join("etc/group"));
    for (rel, uname, gname) in &pkg.owners {
        let path = root.join(rel.trim_end_matches('/'));
        let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let uid = users.get(uname.as_str()).copied().unwrap_or(md.uid());
        let gid = groups.get(gname.as_str()).copied().unwrap_or(md.gid());
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_err(&path))?;
        // chown clears setuid/setgid: put the packaged mode back.
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// `name -> id` from a passwd or group file (missing file: empty).
pub(crate) fn id_map(path: &Path) -> HashMap<String, u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

/// The installed packages and their records, in install order.
#[derive(Default)]
pub struct Database {
    installed: Vec<(InstalledPackage, Record)>,
    /// Which package (index into `installed`) owns each file path.
    owners: HashMap<String, usize>,
}

impl Database {
    /// Adds an installed package with its record. Files it shares with packages
    /// installed earlier are now its own (it overwrote them).
    pub fn push(&mut self, pkg: InstalledPackage, record: Record) {
        let index = self.installed.len();
        for path in record.file_paths() {
            if let Some(previous) = self.owners.insert(path.clone(), index) {
                self.installed[previous].1.disown(&path);
            }
        }
        self.installed.push((pkg, record));
    }

    /// The package added last.
    ///
    /// # Panics
    /// When nothing was added.
    pub fn last(&self) -> &InstalledPackage {
        &self.installed.last().expect("a package was pushed").0
    }

    /// Each package with a trigger script and the directories of `root` its globs match
    /// (absolute paths). Everything was installed in this one transaction, so every
    /// existing matching directory counts as changed.
    pub fn triggers_to_run(&self, root: &Path) -> Result<Vec<(&InstalledPackage, Vec<String>)>> {
        let mut out = Vec::new();
        for (pkg, _) in &self.installed {
            if pkg.script("trigger").is_none() {
                continue;
            }
            let mut dirs = Vec::new();
            for glob in pkg.trigger_globs() {
                expand_dir_glob(root, glob.trim_start_matches('+'), &mut dirs);
            }
            if !dirs.is_empty() {
                out.push((pkg, dirs));
            }
        }
        Ok(out)
    }

    /// Writes the database and the apk configuration into `root`.
    pub fn write(&self, root: &Path, tf: &Treefile) -> Result<()> {
        let db = root.join("lib/apk/db");
        mkdirs(&db)?;
        let mut sorted: Vec<&(InstalledPackage, Record)> = self.installed.iter().collect();
        sorted.sort_by(|(a, _), (b, _)| {
            a.meta
                .name
                .to_lowercase()
                .cmp(&b.meta.name.to_lowercase())
                .then_with(|| a.meta.name.cmp(&b.meta.name))
                .then_with(|| treeline_pkg::apk::version::compare(&a.meta.version, &b.meta.version))
        });
        let installed: String = sorted.iter().map(|(_, r)| r.text()).collect();
        write(&db.join("installed"), installed.as_bytes())?;
        write(&db.join("scripts.tar"), &self.scripts_tar(&db)?)?;
        let mut triggers = String::new();
        for (pkg, _) in &self.installed {
            let globs = pkg.trigger_globs();
            if !globs.is_empty() {
                let _ = writeln!(triggers, "{} {}", pkg.identity(), globs.join(" "));
            }
        }
        write(&db.join("triggers"), triggers.as_bytes())?;
        let lock = db.join("lock");
        write(&lock, b"")?;
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&lock))?;

        let etc = root.join("etc/apk");
        mkdirs(&etc)?;
        let mut world: Vec<&str> = tf.packages.iter().map(String::as_str).collect();
        world.sort_unstable();
        world.dedup();
        write(
            &etc.join("world"),
            format!("{}\n", world.join("\n")).as_bytes(),
        )?;
        write(&etc.join("arch"), format!("{}\n", tf.arch).as_bytes())?;
        let repos: String = tf.repositories.iter().map(|r| format!("{r}\n")).collect();
        write(&etc.join("repositories"), repos.as_bytes())?;
        if let Some(keys) = &tf.keys {
            let dest = etc.join("keys");
            mkdirs(&dest)?;
            for entry in std::fs::read_dir(keys).map_err(io_err(keys))? {
                let entry = entry.map_err(io_err(keys))?;
                let from = entry.path();
                if from.is_file() {
                    let to = dest.join(entry.file_name());
                    std::fs::copy(&from, &to).map_err(io_err(&from))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                        .map_err(io_err(&to))?;
                }
            }
        }
        Ok(())
    }

    /// `scripts.tar` (§4.2): every script of every package, in install order.
    fn scripts_tar(&self, db: &Path) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (pkg, _) in &self.installed {
            for (action, bytes) in &pkg.scripts {
                let name = format!("{}.{}.{action}", pkg.label(), pkg.identity());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(pkg.builddate());
                h.set_size(bytes.len() as u64);
                let _ = h.set_username("root");
                let _ = h.set_groupname("root");
                tar.append_data(&mut h, &name, bytes.as_slice())
                    .map_err(io_err(&db.join("scripts.tar")))?;
            }
        }
        tar.into_inner().map_err(io_err(&db.join("scripts.tar")))
    }
}

/// Drops file entries (`usr/lib/libssl.so.3`) from the installed database at `root`.
///
/// The usr merge collapses an Alpine 3.19 compatibility symlink such as
/// `usr/lib/libssl.so.3 -> ../../lib/libssl.so.3` into the file it pointed at; the
/// database keeps the file under `lib/`, which now reaches the same place, and forgets
/// the symlink, so `apk audit` finds the tree as recorded.
pub fn forget_files(root: &Path, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let db = root.join("lib/apk/db/installed");
    let text = std::fs::read_to_string(&db).map_err(io_err(&db))?;
    let mut out = String::with_capacity(text.len());
    let mut dir = "";
    let mut skipping = false;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("F:") {
            dir = d;
            skipping = false;
        } else if let Some(name) = line.strip_prefix("R:") {
            skipping = paths.iter().any(|p| *p == format!("{dir}/{name}"));
        } else if !(line.starts_with("a:") || line.starts_with("Z:")) {
            skipping = false;
        }
        if line.is_empty() {
            dir = "";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    crate::features::replace_file(&db, out.as_bytes(), 0o644)
}

fn mkdirs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(io_err(path))
}

/// Appends to `out` the directories under `root` that the absolute glob `pattern`
/// (`/lib/modules/*`) matches, as absolute paths in sorted order.
fn expand_dir_glob(root: &Path, pattern: &str, out: &mut Vec<String>) {
    fn go(root: &Path, prefix: String, rest: &[&str], out: &mut Vec<String>) {
        let Some((first, rest)) = rest.split_first() else {
            if !out.contains(&prefix) {
                out.push(prefix);
            }
            return;
        };
        let here = root.join(prefix.trim_start_matches('/'));
        let is_dir = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_dir());
        if !first.contains(['*', '?']) {
            if is_dir(&here.join(first)) {
                go(root, format!("{prefix}/{first}"), rest, out);
            }
            return;
        }
        let Ok(entries) = std::fs::read_dir(&here) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| is_dir(&e.path()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| wildcard_match(first.as_bytes(), n.as_bytes()))
            .collect();
        names.sort();
        for n in names {
            go(root, format!("{prefix}/{n}"), rest, out);
        }
    }
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    go(root, String::new(), &parts, out);
}

/// `*` and `?` matching of one path component (fnmatch without brackets).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard_match(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_globs_match_existing_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bin", "usr/bin", "lib/modules/6.1", "lib/modules/6.6"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("lib/modules/file"), b"").unwrap();
        let mut out = Vec::new();
        for g in ["/bin", "/usr/bin", "/sbin", "/lib/modules/*"] {
            expand_dir_glob(dir.path(), g, &mut out);
        }
        assert_eq!(
            out,
            ["/bin", "/usr/bin", "/lib/modules/6.1", "/lib/modules/6.6"]
        );
    }

    fn record(files: &[(&str, &[&str])]) -> Record {
        Record {
            header: "P:x\n".to_owned(),
            dirs: files
                .iter()
                .map(|(dir, names)| DirRecord {
                    path: (*dir).to_owned(),
                    meta: None,
                    files: names
                        .iter()
                        .map(|n| ((*n).to_owned(), format!("R:{n}\n")))
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_later_package_takes_over_the_files_it_overwrites() {
        let pkg = |name: &str| InstalledPackage {
            meta: PackageMeta {
                name: name.to_owned(),
                ..PackageMeta::default()
            },
            commit: Checksum::of(b""),
            pkginfo: PkgInfo::default(),
            scripts: Vec::new(),
            owners: Vec::new(),
            checksums: HashMap::new(),
        };
        let mut db = Database::default();
        db.push(pkg("a"), record(&[("bin", &["ls", "sh"])]));
        db.push(pkg("b"), record(&[("bin", &["sh"])]));
        assert_eq!(db.installed[0].1.text(), "P:x\nF:bin\nR:ls\n\n");
        assert_eq!(db.installed[1].1.text(), "P:x\nF:bin\nR:sh\n\n");
    }

    #[test]
    fn xattr_field_hashes_sorted_length_prefixed_pairs() {
        assert_eq!(xattr_field(&Vec::new()), "");
        // Computed independently with Python's hashlib over the pairs sorted by name.
        let xattrs = vec![
            (b"user.second".to_vec(), b"2".to_vec()),
            (b"user.first".to_vec(), b"1".to_vec()),
        ];
        assert_eq!(xattr_field(&xattrs), ":Q1w3+sF9yqw5ZhLQKR6DkKD/dzDYU=");
    }

    #[test]
    fn wildcards_match_like_fnmatch() {
        assert!(wildcard_match(b"*", b"abc"));
        assert!(wildcard_match(b"a*c", b"abbc"));
        assert!(wildcard_match(b"a?c", b"abc"));
        assert!(!wildcard_match(b"a?c", b"ac"));
        assert!(!wildcard_match(b"ab", b"abc"));
    }
}
