//! Importing packages into the store: each package file becomes one commit on its own ref
//! (`pkg/<family>/<name>/<version>/<arch>`, escaped), holding the package's files as its
//! tree and its control data as commit metadata, so any later tree reuses it without
//! unpacking the package again.
//!
//! This module is family-neutral: the apk and deb readers walk their data archives and
//! feed [`Entry`] values into a [`TreeImport`].

use std::collections::HashMap;
use std::io::Read;

use treeline_store::builder::{CommitModifier, MutableTree, Node};
use treeline_store::object::{S_IFDIR, S_IFLNK, S_IFREG, Xattrs};
use treeline_store::{Checksum, ObjectType, Repo, Transaction};

use crate::model::Family;

/// Commit metadata keys written on package commits.
pub mod keys {
    /// `s`: `apk` or `deb`.
    pub const FAMILY: &str = "treeline.pkg.family";
    /// `s`: the package name.
    pub const NAME: &str = "treeline.pkg.name";
    /// `s`: the full version.
    pub const VERSION: &str = "treeline.pkg.version";
    /// `s`: the architecture.
    pub const ARCH: &str = "treeline.pkg.arch";
    /// `s`: what pins the package file (apk identity `Q1…`, deb SHA-256).
    pub const CHECKSUM: &str = "treeline.pkg.checksum";
    /// `ay`: the uncompressed control archive (apk: `.PKGINFO` and scripts; deb:
    /// control, md5sums, conffiles, maintainer scripts), byte for byte.
    pub const CONTROL: &str = "treeline.pkg.control";
    /// `as`: `path\tuname\tgname` for every entry whose owner names are not root, so a
    /// composer can re-resolve them against the target's passwd and group.
    pub const OWNERS: &str = "treeline.pkg.owners";
    /// `as` (apk only): `path\tQ1…` per-file checksums from the package, for the
    /// installed database.
    pub const FILE_CHECKSUMS: &str = "treeline.apk.checksums";
}

/// Errors while building a package's tree; each names the package and entry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entry cannot be placed in the tree.
    #[error("{package}: {path}: {message}")]
    Entry {
        /// The package file.
        package: String,
        /// The entry's path in the package.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error("{package}: {source}")]
    Store {
        /// The package file.
        package: String,
        /// The store's error.
        source: treeline_store::Error,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of filesystem object an [`Entry`] is.
pub enum EntryKind<'a> {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File {
        /// Content length in bytes.
        size: u64,
        /// The content (read exactly `size` bytes).
        content: &'a mut dyn Read,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points (stored verbatim; never followed).
        target: String,
    },
    /// A hard link to an earlier entry of the same package.
    Hardlink {
        /// The earlier entry's path.
        target: String,
    },
}

/// One entry of a package's data archive, already checked by the format reader
/// (relative path without `.`/`..`, no device nodes).
pub struct Entry<'a> {
    /// Relative path, `/`-separated, no leading `./` or `/`.
    pub path: &'a str,
    /// Type and payload.
    pub kind: EntryKind<'a>,
    /// Permission bits (including setuid/setgid/sticky), without the type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

/// Builds one package's tree in the store from its entries.
pub struct TreeImport<'t, 'r> {
    txn: &'t Transaction<'r>,
    package: String,
    root: MutableTree,
    default_meta: Checksum,
    files: HashMap<String, Checksum>,
    modifier: CommitModifier,
}

impl<'t, 'r> TreeImport<'t, 'r> {
    /// Starts an empty tree for `package` (named in errors).
    pub fn new(txn: &'t Transaction<'r>, package: &str) -> Result<Self> {
        let modifier = CommitModifier::default().for_repo(txn.repo());
        let store = |source| Error::Store {
            package: package.to_owned(),
            source,
        };
        let default_meta = txn
            .write_meta(
                ObjectType::DirMeta,
                &modifier
                    .dirmeta(0, 0, S_IFDIR | 0o755, Vec::new())
                    .to_bytes(),
            )
            .map_err(store)?;
        Ok(TreeImport {
            txn,
            package: package.to_owned(),
            root: MutableTree::new(default_meta),
            default_meta,
            files: HashMap::new(),
            modifier,
        })
    }

    fn entry_err(&self, path: &str, message: impl Into<String>) -> Error {
        Error::Entry {
            package: self.package.clone(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn store_err(&self) -> impl Fn(treeline_store::Error) -> Error + use<> {
        let package = self.package.clone();
        move |source| Error::Store {
            package: package.clone(),
            source,
        }
    }

    /// Adds one entry. Parents that have no entry of their own get root-owned 0755.
    pub fn add(&mut self, entry: Entry<'_>) -> Result<()> {
        let components: Vec<&str> = entry
            .path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if components.contains(&"..") {
            return Err(self.entry_err(entry.path, "path contains `..`"));
        }
        let repo = self.txn.repo();
        let store_err = self.store_err();
        let mode = entry.mode & 0o7777;
        if let EntryKind::Dir = entry.kind {
            let meta = self
                .modifier
                .dirmeta(entry.uid, entry.gid, S_IFDIR | mode, entry.xattrs);
            let meta = self
                .txn
                .write_meta(ObjectType::DirMeta, &meta.to_bytes())
                .map_err(&store_err)?;
            let default_meta = self.default_meta;
            let dir = self
                .root
                .ensure_dir(repo, &components, default_meta)
                .map_err(&store_err)?;
            dir.meta = meta;
            return Ok(());
        }
        let Some((name, parent)) = components.split_last() else {
            return Err(self.entry_err(entry.path, "a non-directory entry for the root"));
        };
        let what = format!("{}:{}", self.package, entry.path);
        let checksum = match entry.kind {
            EntryKind::Dir => unreachable!("handled above"),
            EntryKind::File { size, content } => {
                let header = self.modifier.file_header(
                    entry.uid,
                    entry.gid,
                    S_IFREG | mode,
                    String::new(),
                    entry.xattrs,
                );
                self.txn
                    .write_content(&header, size, content, &what)
                    .map_err(&store_err)?
            }
            EntryKind::Symlink { target } => {
                let header = self.modifier.file_header(
                    entry.uid,
                    entry.gid,
                    S_IFLNK | 0o777,
                    target,
                    entry.xattrs,
                );
                self.txn
                    .write_content(&header, 0, &mut std::io::empty(), &what)
                    .map_err(&store_err)?
            }
            EntryKind::Hardlink { target } => {
                let key = target.trim_start_matches("./").trim_start_matches('/');
                match self.files.get(key) {
                    Some(c) => *c,
                    None => {
                        return Err(self.entry_err(
                            entry.path,
                            format!("hard link to {target:?}, which is not an earlier file"),
                        ));
                    }
                }
            }
        };
        let default_meta = self.default_meta;
        let dir = self
            .root
            .ensure_dir(repo, parent, default_meta)
            .map_err(&store_err)?;
        let entries = dir.entries_mut(repo).map_err(&store_err)?;
        if let Some(Node::Dir(_)) = entries.get(*name) {
            return Err(self.entry_err(entry.path, "replaces a directory of the same name"));
        }
        entries.insert((*name).to_owned(), Node::File(checksum));
        self.files.insert(components.join("/"), checksum);
        Ok(())
    }

    /// Writes the tree's directories; returns (dirtree, dirmeta) of the root.
    pub fn finish(self) -> Result<(Checksum, Checksum)> {
        self.root.write(self.txn).map_err(|e| Error::Store {
            package: self.package.clone(),
            source: e,
        })
    }
}

/// The ref a package's commit lives on: `pkg/<family>/<name>/<version>/<arch>`, each part
/// escaped so any name or version is a valid ref fragment: characters other than ASCII
/// letters, digits, `_`, `.` and `-` become `_XX` (hex), and so does a leading `.` or `-`.
/// A literal `_XX` in a name could meet an escape; that only costs a re-import, since a
/// ref's commit is used only when its recorded checksum is the package's.
pub fn package_ref(family: Family, name: &str, version: &str, arch: &str) -> String {
    format!(
        "pkg/{family}/{}/{}/{}",
        escape_ref_fragment(name),
        escape_ref_fragment(version),
        escape_ref_fragment(arch)
    )
}

fn escape_ref_fragment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("_00");
    }
    out
}

/// The commit a package ref points at, if the package was imported before with the
/// same checksum (so it is not unpacked again).
pub fn find_imported(repo: &Repo, ref_name: &str, checksum: &str) -> Option<Checksum> {
    let spec = treeline_store::refs::RefSpec::parse(ref_name).ok()?;
    let commit = repo.read_ref(&spec).ok()??;
    let stored = repo.load_commit(&commit).ok()?;
    let same = stored
        .metadata
        .get(keys::CHECKSUM)
        .and_then(|v| v.as_str())
        .is_some_and(|c| c == checksum);
    (same && treeline_store::builder::commit_is_complete(repo, &commit).unwrap_or(false))
        .then_some(commit)
}

/// A package imported into the store (or found there already).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// `name`.
    pub name: String,
    /// Full version.
    pub version: String,
    /// The ref it lives on.
    pub ref_name: String,
    /// Its commit.
    pub commit: String,
    /// True when an earlier import was reused and nothing was unpacked.
    pub reused: bool,
}

/// Package identity for errors: the file name.
fn package_label(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn owner_name_is_root(name: &str) -> bool {
    name.is_empty() || name == "root"
}

/// A package commit has no parent and a timestamp from the package, so the same package
/// always gives the same commit.
fn package_commit_options(
    metadata: treeline_store::variant::Metadata,
    subject: String,
    timestamp: u64,
) -> treeline_store::builder::CommitOptions {
    treeline_store::builder::CommitOptions {
        subject,
        body: String::new(),
        metadata,
        parent: None,
        timestamp,
    }
}

/// Imports packages into one store transaction: objects of all packages are synced once,
/// and refs are written only after every object is durable. Packages may be imported from
/// several threads at once.
pub struct Importer<'r> {
    repo: &'r Repo,
    txn: Transaction<'r>,
    pending_refs: std::sync::Mutex<Vec<(String, Checksum)>>,
}

impl<'r> Importer<'r> {
    /// Starts a transaction on `repo`.
    pub fn new(repo: &'r Repo) -> crate::Result<Self> {
        Ok(Importer {
            repo,
            txn: repo.begin()?,
            pending_refs: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Makes every imported package durable, then points its ref at it.
    pub fn finish(self) -> crate::Result<()> {
        self.txn.commit()?;
        let refs = self
            .pending_refs
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (name, commit) in refs {
            let spec = treeline_store::refs::RefSpec::parse(&name)?;
            self.repo.set_ref(&spec, Some(&commit))?;
        }
        Ok(())
    }

    fn commit_package(
        &self,
        root: (Checksum, Checksum),
        opts: &treeline_store::builder::CommitOptions,
        ref_name: &str,
        package: &str,
    ) -> crate::Result<Checksum> {
        let commit =
            treeline_store::builder::write_commit(&self.txn, root, opts).map_err(|source| {
                Error::Store {
                    package: package.to_owned(),
                    source,
                }
            })?;
        self.pending_refs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((ref_name.to_owned(), commit));
        Ok(commit)
    }

    /// Imports an Alpine package file. `expected_identity` (the index's `C:`) pins the
    /// control member; the datahash then pins the data; `keys`, when given, must sign it.
    /// Owners: `root` is 0; other names keep the tar's numbers and are recorded under
    /// [`keys::OWNERS`] for the composer to resolve in the target, as apk does.
    pub fn import_apk(
        &self,
        path: &std::path::Path,
        expected_identity: Option<&str>,
        signing_keys: Option<&crate::apk::keys::Keys>,
    ) -> crate::Result<Imported> {
        use crate::apk::package::{ApkPackage, EntryKind as ApkKind};
        use treeline_store::variant::{Metadata, Value};

        let package = package_label(path);
        let pkg = ApkPackage::open(path)?;
        if let Some(expected) = expected_identity {
            pkg.check_identity(expected)?;
        }
        match signing_keys {
            Some(k) => pkg.verify(k)?,
            None => pkg.verify_datahash()?,
        }
        let ref_name = package_ref(Family::Apk, pkg.name(), pkg.version(), pkg.arch());
        let imported = |commit: Checksum, reused| Imported {
            name: pkg.name().to_owned(),
            version: pkg.version().to_owned(),
            ref_name: ref_name.clone(),
            commit: commit.to_hex(),
            reused,
        };
        if let Some(commit) = find_imported(self.repo, &ref_name, pkg.identity()) {
            return Ok(imported(commit, true));
        }

        let mut tree = TreeImport::new(&self.txn, &package)?;
        let mut owners = Vec::new();
        let mut checksums = Vec::new();
        let mut walk = pkg.data()?;
        while let Some(mut entry) = walk.next_entry()? {
            if !owner_name_is_root(&entry.uname) || !owner_name_is_root(&entry.gname) {
                owners.push(format!("{}\t{}\t{}", entry.path, entry.uname, entry.gname));
            }
            if let Some(c) = &entry.checksum {
                checksums.push(format!("{}\t{c}", entry.path));
            }
            let uid = if entry.uname == "root" {
                0
            } else {
                entry.uid as u32
            };
            let gid = if entry.gname == "root" {
                0
            } else {
                entry.gid as u32
            };
            let xattrs = entry
                .xattrs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect();
            let path = entry.path.clone();
            let link = entry.link_target.clone().unwrap_or_default();
            let (mode, size) = (entry.mode, entry.size);
            let kind = match entry.kind {
                ApkKind::Dir => EntryKind::Dir,
                ApkKind::File => EntryKind::File {
                    size,
                    content: &mut entry,
                },
                ApkKind::Symlink => EntryKind::Symlink { target: link },
                ApkKind::Hardlink => EntryKind::Hardlink { target: link },
            };
            tree.add(Entry {
                path: &path,
                kind,
                mode,
                uid,
                gid,
                xattrs,
            })?;
        }
        let root = tree.finish()?;

        let mut control = Metadata::new();
        let pkginfo: String = pkg
            .pkginfo()
            .fields
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        control.insert(".PKGINFO", Value::bytes(pkginfo.as_bytes()));
        for script in pkg.scripts() {
            control.insert(
                &format!(".{}", script.kind.action()),
                Value::bytes(&script.bytes),
            );
        }
        let mut meta = Metadata::new();
        meta.insert(keys::FAMILY, Value::string("apk"));
        meta.insert(keys::NAME, Value::string(pkg.name()));
        meta.insert(keys::VERSION, Value::string(pkg.version()));
        meta.insert(keys::ARCH, Value::string(pkg.arch()));
        meta.insert(keys::CHECKSUM, Value::string(pkg.identity()));
        meta.insert(keys::CONTROL, Value::dict(&control));
        meta.insert(keys::OWNERS, Value::strv(&owners));
        meta.insert(keys::FILE_CHECKSUMS, Value::strv(&checksums));
        let timestamp = pkg
            .pkginfo()
            .get("builddate")
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or(0);
        let subject = format!("{}-{} ({})", pkg.name(), pkg.version(), pkg.arch());
        let opts = package_commit_options(meta, subject, timestamp);
        let commit = self.commit_package(root, &opts, &ref_name, &package)?;
        Ok(imported(commit, false))
    }

    /// Imports a Debian package file. `expected_sha256` (the index's `SHA256`) pins the
    /// whole file; the data is also checked against the package's own md5sums. Owners are
    /// the tar's numeric ids (dpkg does the same); names other than root are recorded under
    /// [`keys::OWNERS`].
    pub fn import_deb(
        &self,
        path: &std::path::Path,
        expected_sha256: Option<&str>,
    ) -> crate::Result<Imported> {
        use crate::deb::package::{DebPackage, EntryKind as DebKind};
        use treeline_store::variant::{Metadata, Value};

        let package = package_label(path);
        let sha256 = crate::cache::sha256_file(path).map_err(|error| crate::cache::Error::Io {
            path: path.to_owned(),
            error,
        })?;
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(Error::Entry {
                package,
                path: String::new(),
                message: format!("SHA-256 is {sha256}, expected {expected}"),
            }
            .into());
        }
        let deb = DebPackage::open(path)?;
        let fields = &deb.control().fields;
        let field = |name: &str| fields.get(name).unwrap_or_default().trim().to_owned();
        let (name, version, arch) = (field("Package"), field("Version"), field("Architecture"));
        let ref_name = package_ref(Family::Deb, &name, &version, &arch);
        let imported = |commit: Checksum, reused| Imported {
            name: name.clone(),
            version: version.clone(),
            ref_name: ref_name.clone(),
            commit: commit.to_hex(),
            reused,
        };
        if let Some(commit) = find_imported(self.repo, &ref_name, &sha256) {
            return Ok(imported(commit, true));
        }
        let mut control = Metadata::new();
        for member in &deb.control().members {
            control.insert(&member.name, Value::bytes(&member.data));
        }

        let mut tree = TreeImport::new(&self.txn, &package)?;
        let mut owners = Vec::new();
        let mut data = deb.into_data()?;
        for entry in data.entries()? {
            let mut entry = entry?;
            if entry.path.is_empty() {
                continue;
            }
            let uname = entry.uname.clone().unwrap_or_default();
            let gname = entry.gname.clone().unwrap_or_default();
            if !owner_name_is_root(&uname) || !owner_name_is_root(&gname) {
                owners.push(format!("{}\t{uname}\t{gname}", entry.path));
            }
            let path = entry.path.clone();
            let link = entry.link_target.clone().unwrap_or_default();
            let (mode, size, uid, gid) = (entry.mode, entry.size, entry.uid, entry.gid);
            let kind = match entry.kind {
                DebKind::Dir => EntryKind::Dir,
                DebKind::File => EntryKind::File {
                    size,
                    content: &mut entry,
                },
                DebKind::Symlink => EntryKind::Symlink { target: link },
                DebKind::Hardlink => EntryKind::Hardlink { target: link },
            };
            tree.add(Entry {
                path: &path,
                kind,
                mode,
                uid: uid as u32,
                gid: gid as u32,
                xattrs: Vec::new(),
            })?;
        }
        // The rest of the data member and the container must be sound too.
        data.finish()?;
        let root = tree.finish()?;
        let mut meta = Metadata::new();
        meta.insert(keys::FAMILY, Value::string("deb"));
        meta.insert(keys::NAME, Value::string(&name));
        meta.insert(keys::VERSION, Value::string(&version));
        meta.insert(keys::ARCH, Value::string(&arch));
        meta.insert(keys::CHECKSUM, Value::string(&sha256));
        meta.insert(keys::CONTROL, Value::dict(&control));
        meta.insert(keys::OWNERS, Value::strv(&owners));
        let subject = format!("{name}_{version}_{arch}");
        let opts = package_commit_options(meta, subject, 0);
        let commit = self.commit_package(root, &opts, &ref_name, &package)?;
        Ok(imported(commit, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_escape_everything_ostree_rejects() {
        let r = package_ref(Family::Deb, "libstdc++6", "1:12.2.0-14+deb12u1", "amd64");
        assert_eq!(r, "pkg/deb/libstdc_2B_2B6/1_3A12.2.0-14_2Bdeb12u1/amd64");
        treeline_store::refs::validate_ref_name(&r).unwrap();
        let r = package_ref(Family::Apk, "py3-foo_bar", "1.0_rc1-r0", "x86_64");
        treeline_store::refs::validate_ref_name(&r).unwrap();
        assert_eq!(
            package_ref(Family::Deb, ".x", "~1", "all"),
            "pkg/deb/_2Ex/_7E1/all"
        );
        assert_eq!(
            package_ref(Family::Apk, "busybox", "1.36.1-r15", "x86_64"),
            "pkg/apk/busybox/1.36.1-r15/x86_64"
        );
    }
}
