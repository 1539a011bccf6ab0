//! The Debian side of assembling a root: the dpkg database the real dpkg reads, and the
//! maintainer scripts run the way dpkg runs them.
//!
//! What mmdebstrap does, without unpacking any package twice: every package's commit is
//! extracted into the root (a copying union checkout), then the database is written
//! with every package `unpacked` (`status`, `info/PKG.{list,md5sums,conffiles,…}` and
//! the trigger interests under `triggers/`), each `preinst install` is run in
//! install order, and finally the tree's own `dpkg --configure --pending` configures
//! everything in dependency order inside the sandbox (postinst scripts, triggers), and
//! rewrites the status as `install ok installed`. While it runs, `policy-rc.d` refuses
//! every service start and `start-stop-daemon` is a no-op, so nothing starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use treeline_pkg::PackageMeta;
use treeline_pkg::deb::deb822::{Stanza, parse_single};
use treeline_pkg::import::keys as pkg_keys;
use treeline_store::checkout::{CheckoutOptions, Overwrite, checkout};
use treeline_store::progress::NoProgress;
use treeline_store::{Checksum, Repo};

use crate::script::{self, Sandbox};
use crate::{Error, Result, io_err, store_err};

/// Where the database is while the root is assembled (the layout moves it to
/// [`crate::layout::DPKG_DB`] afterwards).
pub const ADMINDIR: &str = "var/lib/dpkg";

/// Control-archive members dpkg runs: kept executable in `info/`.
const SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

/// Status fields in the order dpkg writes them; other fields follow in control order.
const FIELD_ORDER: [&str; 26] = [
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
];

/// A Debian package as the composer installs it: its index record, its commit, and the
/// control archive the import kept.
pub struct DebPackage {
    /// The index record.
    pub meta: PackageMeta,
    /// The package's commit in the store.
    pub commit: Checksum,
    /// The `control` file.
    pub control: Stanza,
    /// Every control-archive member but `control` (`md5sums`, `postinst`, …).
    pub members: BTreeMap<String, Vec<u8>>,
    owners: Vec<(String, String, String)>,
}

impl DebPackage {
    /// Reads what the import stored on the package's commit.
    pub fn load(repo: &Repo, meta: &PackageMeta, commit: &Checksum) -> Result<DebPackage> {
        let label = format!("{}_{}", meta.name, meta.version);
        let missing = |what: &str| Error::Package {
            package: label.clone(),
            message: format!("its commit {} has no {what}", commit.to_hex()),
        };
        let c = repo
            .load_commit(commit)
            .map_err(store_err(format!("loading the commit of {label}")))?;
        let dict = c
            .metadata
            .get(pkg_keys::CONTROL)
            .and_then(|v| v.as_dict())
            .ok_or_else(|| missing(pkg_keys::CONTROL))?;
        let mut members = BTreeMap::new();
        let mut control = None;
        for (name, value) in &dict.0 {
            if value.type_str != "ay" {
                continue;
            }
            if name == "control" {
                // Checked with the strict parser; the values dpkg keeps (a first line's
                // trailing blanks included) come from the raw text.
                parse_single(&value.data, format!("{label}/control")).map_err(|e| {
                    Error::Package {
                        package: label.clone(),
                        message: e.to_string(),
                    }
                })?;
                control = Some(raw_stanza(&String::from_utf8_lossy(&value.data)));
            } else {
                members.insert(name.clone(), value.data.clone());
            }
        }
        let control = control.ok_or_else(|| missing("control file"))?;
        let owners = c
            .metadata
            .get(pkg_keys::OWNERS)
            .and_then(|v| v.as_strv())
            .unwrap_or_default()
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
        Ok(DebPackage {
            meta: meta.clone(),
            commit: *commit,
            control,
            members,
            owners,
        })
    }

    /// `name_version`, for messages.
    pub fn label(&self) -> String {
        format!("{}_{}", self.meta.name, self.meta.version)
    }

    /// The architecture of the `control` file.
    pub fn arch(&self) -> &str {
        self.control.get("Architecture").unwrap_or("all").trim()
    }

    /// The name dpkg files the package under: `name:arch` for `Multi-Arch: same`
    /// (`libc6:amd64`), else `name`.
    pub fn db_name(&self) -> String {
        let same = self
            .control
            .get("Multi-Arch")
            .is_some_and(|m| m.trim() == "same");
        if same {
            format!("{}:{}", self.meta.name, self.arch())
        } else {
            self.meta.name.clone()
        }
    }

    /// The script for `action` (`postinst`), if the package has one.
    pub fn script(&self, action: &str) -> Option<&[u8]> {
        self.members.get(action).map(Vec::as_slice)
    }

    /// The conffiles: absolute paths, with their flag (`remove-on-upgrade`) if any.
    fn conffiles(&self) -> Vec<(String, Option<String>)> {
        let text = self
            .members
            .get("conffiles")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let first = words.next()?;
                match words.next() {
                    Some(path) => Some((path.to_owned(), Some(first.to_owned()))),
                    None => Some((first.to_owned(), None)),
                }
            })
            .collect()
    }

    /// Every path of the package as dpkg's `.list` has it: `/.`, then each directory
    /// before its entries, names in order.
    pub fn list(&self, repo: &Repo) -> Result<Vec<String>> {
        let c = repo
            .load_commit(&self.commit)
            .map_err(store_err(format!("loading the commit of {}", self.label())))?;
        let mut out = vec!["/.".to_owned()];
        self.walk(repo, &c.root_tree, "", &mut out, &mut Vec::new())?;
        Ok(out)
    }

    /// Like [`DebPackage::list`], also collecting regular files (for md5sums).
    fn walk(
        &self,
        repo: &Repo,
        tree: &Checksum,
        rel: &str,
        out: &mut Vec<String>,
        files: &mut Vec<String>,
    ) -> Result<()> {
        let t = repo
            .load_dirtree(tree)
            .map_err(store_err(format!("reading the tree of {}", self.label())))?;
        let mut entries: Vec<(&str, Option<&Checksum>)> = t
            .files
            .iter()
            .map(|(n, _)| (n.as_str(), None))
            .chain(t.dirs.iter().map(|(n, sub, _)| (n.as_str(), Some(sub))))
            .collect();
        entries.sort_by_key(|(n, _)| *n);
        for (name, sub) in entries {
            let path = format!("{rel}/{name}");
            out.push(path.clone());
            match sub {
                Some(sub) => self.walk(repo, sub, &path, out, files)?,
                None => files.push(path),
            }
        }
        Ok(())
    }

    /// The status stanza, with `status` (`install ok unpacked`) and the conffiles'
    /// hashes as the files are in `root`.
    fn status(&self, status: &str, root: &Path) -> Result<String> {
        let mut conffiles = String::new();
        for (path, flag) in self.conffiles() {
            let hash = md5_file(&root.join(path.trim_start_matches('/')))
                .map_err(io_err(&root.join(path.trim_start_matches('/'))))?;
            let _ = write!(conffiles, "\n {path} {hash}");
            if let Some(f) = flag {
                let _ = write!(conffiles, " {f}");
            }
        }
        let value = |name: &str| -> Option<String> {
            match name {
                "Status" => Some(status.to_owned()),
                "Conffiles" => (!conffiles.is_empty()).then(|| conffiles.clone()),
                _ => self.control.get(name).map(str::to_owned),
            }
        };
        let mut out = String::new();
        let mut push = |name: &str, v: &str| {
            if v.starts_with('\n') {
                let _ = writeln!(out, "{name}:{v}");
            } else {
                let _ = writeln!(out, "{name}: {v}");
            }
        };
        for name in FIELD_ORDER {
            if let Some(v) = value(name) {
                push(name, &v);
            }
        }
        for (name, v) in &self.control.fields {
            if !FIELD_ORDER.iter().any(|f| f.eq_ignore_ascii_case(name)) {
                push(name, v);
            }
        }
        out.push('\n');
        Ok(out)
    }

    /// The owner names the package's archive gives entries, by path.
    pub fn owners(&self) -> &[(String, String, String)] {
        &self.owners
    }
}

/// One stanza's fields with values as dpkg keeps them: leading blanks of the first line
/// dropped, trailing ones kept, continuation lines verbatim after `\n`.
fn raw_stanza(text: &str) -> Stanza {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((
                name.to_owned(),
                value.trim_start_matches([' ', '\t']).to_owned(),
            ));
        }
    }
    Stanza { line: 1, fields }
}

/// MD5 of a file, hex.
fn md5_file(path: &Path) -> std::io::Result<String> {
    use md5::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Copies the package's files into `root` (never hardlinks: scripts may modify them and
/// must not touch store objects).
pub fn extract(repo: &Repo, pkg: &DebPackage, root: &Path) -> Result<()> {
    let opts = CheckoutOptions {
        overwrite: Overwrite::Union,
        force_copy: true,
        ..CheckoutOptions::default()
    };
    checkout(repo, &pkg.commit, root, &opts, &NoProgress)
        .map_err(store_err(format!("extracting {}", pkg.label())))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    std::fs::write(path, data).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn mkdirs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// Writes the dpkg database into `root` with every package `unpacked`: `status`,
/// `info/` (`.list`, `.md5sums` — computed when the package has none —, `.conffiles`,
/// scripts and every other control member, `format`), the trigger interests
/// (`triggers/File`, one file per explicit trigger name, empty `Unincorp`), and empty
/// `available`, `diversions`, `statoverride`, and `arch` (the native architecture).
///
/// With `append`, the database is already there (a stage): the packages are added to it.
pub fn write_unpacked(
    repo: &Repo,
    root: &Path,
    arch: &str,
    packages: &[DebPackage],
    append: bool,
) -> Result<()> {
    let admin = root.join(ADMINDIR);
    let info = admin.join("info");
    let triggers = admin.join("triggers");
    for d in [
        &info,
        &triggers,
        &admin.join("updates"),
        &admin.join("alternatives"),
        &admin.join("parts"),
    ] {
        mkdirs(d)?;
    }
    if !append {
        write(&admin.join("arch"), format!("{arch}\n").as_bytes(), 0o644)?;
    }
    let existing = |p: &Path| -> Result<String> {
        if append && p.exists() {
            std::fs::read_to_string(p).map_err(io_err(p))
        } else {
            Ok(String::new())
        }
    };
    let mut sorted: Vec<&DebPackage> = packages.iter().collect();
    sorted.sort_by(|a, b| a.meta.name.cmp(&b.meta.name).then(a.arch().cmp(b.arch())));
    let mut status = existing(&admin.join("status"))?;
    let mut file_interests = Vec::new();
    let mut named_interests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in sorted {
        status.push_str(&pkg.status("install ok unpacked", root)?);
        let db = pkg.db_name();
        let mut files = Vec::new();
        let mut list = vec!["/.".to_owned()];
        let c = repo
            .load_commit(&pkg.commit)
            .map_err(store_err(format!("loading the commit of {}", pkg.label())))?;
        pkg.walk(repo, &c.root_tree, "", &mut list, &mut files)?;
        let mut text = list.join("\n");
        text.push('\n');
        write(&info.join(format!("{db}.list")), text.as_bytes(), 0o644)?;
        if !pkg.members.contains_key("md5sums") {
            let conffiles: Vec<String> = pkg.conffiles().into_iter().map(|(p, _)| p).collect();
            let mut sums = String::new();
            for f in files.iter().filter(|f| !conffiles.contains(f)) {
                let path = root.join(f.trim_start_matches('/'));
                let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
                if md.file_type().is_file() {
                    let hash = md5_file(&path).map_err(io_err(&path))?;
                    let _ = writeln!(sums, "{hash}  {}", f.trim_start_matches('/'));
                }
            }
            if !sums.is_empty() {
                write(&info.join(format!("{db}.md5sums")), sums.as_bytes(), 0o644)?;
            }
        }
        for (name, data) in &pkg.members {
            let mode = if SCRIPTS.contains(&name.as_str()) {
                0o755
            } else {
                0o644
            };
            write(&info.join(format!("{db}.{name}")), data, mode)?;
        }
        if let Some(t) = pkg.members.get("triggers") {
            for line in String::from_utf8_lossy(t).lines() {
                let line = line.split('#').next().unwrap_or_default();
                let mut words = line.split_whitespace();
                let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                    continue;
                };
                let who = match kind {
                    "interest" | "interest-await" => db.clone(),
                    "interest-noawait" => format!("{db}/noawait"),
                    _ => continue,
                };
                if name.starts_with('/') {
                    file_interests.push(format!("{name} {who}"));
                } else {
                    named_interests
                        .entry(name.to_owned())
                        .or_default()
                        .push(who);
                }
            }
        }
    }
    write(&admin.join("status"), status.as_bytes(), 0o644)?;
    for empty in ["available", "diversions", "statoverride"] {
        let p = admin.join(empty);
        if !p.exists() {
            write(&p, b"", 0o644)?;
        }
    }
    write(&info.join("format"), b"1\n", 0o644)?;
    let mut file = existing(&triggers.join("File"))?;
    for line in file_interests {
        file.push_str(&line);
        file.push('\n');
    }
    write(&triggers.join("File"), file.as_bytes(), 0o644)?;
    if !triggers.join("Unincorp").exists() {
        write(&triggers.join("Unincorp"), b"", 0o644)?;
    }
    for (name, who) in named_interests {
        let mut text = existing(&triggers.join(&name))?;
        for w in who {
            text.push_str(&w);
            text.push('\n');
        }
        write(&triggers.join(&name), text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Gives entries whose archive owner names are not root the ids those names have in the
/// target's passwd and group (as dpkg does), once the packages' preinst scripts made
/// them.
pub fn resolve_owners(root: &Path, packages: &[DebPackage]) -> Result<()> {
    let users = crate::apk::id_map(&root.join("etc/passwd"));
    let groups = crate::apk::id_map(&root.join("etc/group"));
    for pkg in packages {
        for (rel, uname, gname) in pkg.owners() {
            let path = root.join(rel.trim_end_matches('/'));
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            let uid = users.get(uname.as_str()).copied().unwrap_or(md.uid());
            let gid = groups.get(gname.as_str()).copied().unwrap_or(md.gid());
            if (uid, gid) == (md.uid(), md.gid()) {
                continue;
            }
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_err(&path))?;
            if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(md.mode() & 0o7777),
                )
                .map_err(io_err(&path))?;
            }
        }
    }
    Ok(())
}

/// The environment dpkg gives maintainer scripts, plus what keeps them quiet and
/// reproducible.
fn script_env<'a>(
    pkg: Option<(&'a str, &'a str, &'a str)>,
    dpkg_version: &'a str,
    epoch: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
        ("LC_ALL", "C.UTF-8"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/root"),
        ("SOURCE_DATE_EPOCH", epoch),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
        ("DPKG_RUNNING_VERSION", dpkg_version),
    ];
    if let Some((name, arch, script)) = pkg {
        env.push(("DPKG_MAINTSCRIPT_PACKAGE", name));
        env.push(("DPKG_MAINTSCRIPT_ARCH", arch));
        env.push(("DPKG_MAINTSCRIPT_NAME", script));
        env.push(("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"));
    }
    env
}

/// What stops services from starting while scripts run: `policy-rc.d` refusing every
/// action, and `start-stop-daemon` replaced by a no-op (the real one is put back by
/// [`Quiet::restore`]); and what keeps scripts from making per-machine secrets that
/// [`clean`] would remove anyway: empty placeholders at the ssh host key paths, so
/// openssh-server's postinst, which makes only the keys that are missing, generates
/// none (an RSA key takes up to seconds); removed afterwards.
struct Quiet<'a> {
    root: &'a Path,
    ssd: Option<std::path::PathBuf>,
    placeholders: Vec<std::path::PathBuf>,
}

/// The host keys openssh-server's postinst makes when they are missing.
const SSH_HOST_KEYS: [&str; 3] = [
    "ssh_host_rsa_key",
    "ssh_host_ecdsa_key",
    "ssh_host_ed25519_key",
];

const SSD_ASIDE: &str = "start-stop-daemon.treeline-real";

impl<'a> Quiet<'a> {
    fn install(root: &'a Path) -> Result<Quiet<'a>> {
        let sbin = root.join("usr/sbin");
        mkdirs(&sbin)?;
        write(
            &sbin.join("policy-rc.d"),
            b"#!/bin/sh\n# treeline compose: no service starts while the tree is built\nexit 101\n",
            0o755,
        )?;
        let ssd = sbin.join("start-stop-daemon");
        let mut quiet = Quiet {
            root,
            ssd: None,
            placeholders: Vec::new(),
        };
        let ssh = root.join("etc/ssh");
        if ssh.is_dir() {
            for key in SSH_HOST_KEYS {
                let p = ssh.join(key);
                if std::fs::symlink_metadata(&p).is_err() {
                    write(&p, b"", 0o600)?;
                    quiet.placeholders.push(p);
                }
            }
        }
        if ssd.is_file() {
            let aside = sbin.join(SSD_ASIDE);
            std::fs::rename(&ssd, &aside).map_err(io_err(&ssd))?;
            quiet.ssd = Some(ssd.clone());
            write(
                &ssd,
                b"#!/bin/sh\necho \"start-stop-daemon $*: not run while composing\" >&2\nexit 0\n",
                0o755,
            )?;
        }
        Ok(quiet)
    }

    fn restore(mut self) -> Result<()> {
        self.undo()
    }

    fn undo(&mut self) -> Result<()> {
        let sbin = self.root.join("usr/sbin");
        let policy = sbin.join("policy-rc.d");
        if policy.exists() {
            std::fs::remove_file(&policy).map_err(io_err(&policy))?;
        }
        if let Some(ssd) = self.ssd.take() {
            let aside = sbin.join(SSD_ASIDE);
            std::fs::rename(&aside, &ssd).map_err(io_err(&aside))?;
        }
        // A placeholder a script replaced with a real key is left to `clean`.
        for p in std::mem::take(&mut self.placeholders) {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() == 0) {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

/// Runs every package's `preinst install` in install order, then `dpkg --configure
/// --pending` of the tree itself, in the sandbox with no service starting. A failing
/// script is an error naming the package and the script.
/// `dpkg_version` is the version of the tree's dpkg.
pub fn configure(
    sandbox: &Sandbox,
    root: &Path,
    packages: &[DebPackage],
    dpkg_version: &str,
) -> Result<()> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| "0".to_owned());
    let quiet = Quiet::install(root)?;
    run_preinsts(sandbox, root, packages, dpkg_version, &epoch)?;
    tracing::info!("preinst scripts run");
    resolve_owners(root, packages)?;
    let env = script_env(None, dpkg_version, &epoch);
    let args: Vec<String> = [
        "--force-confdef",
        "--force-confold",
        "--configure",
        "--pending",
    ]
    .map(str::to_owned)
    .to_vec();
    sandbox
        .exec(root, "dpkg", "--configure", "/usr/bin/dpkg", &args, &env)
        .map_err(name_failed_script)?;
    quiet.restore()
}

/// Where the driver running every `preinst` is written, and where it notes which failed.
const PREINST_DRIVER: &str = "/tmp/treeline-preinst";
const PREINST_FAILED: &str = "/tmp/treeline-preinst-failed";

/// Runs `preinst install` of every package that has one, in install order, in one
/// sandbox: a driver script runs them one after the other, each with the environment
/// dpkg gives it, and stops at the first that fails, noting which it was.
fn run_preinsts(
    sandbox: &Sandbox,
    root: &Path,
    packages: &[DebPackage],
    dpkg_version: &str,
    epoch: &str,
) -> Result<()> {
    let with: Vec<&DebPackage> = packages
        .iter()
        .filter(|p| p.script("preinst").is_some())
        .collect();
    if with.is_empty() {
        return Ok(());
    }
    // Names, architectures and versions never hold a quote; dropped all the same.
    let quote = |s: &str| format!("'{}'", s.replace('\'', ""));
    let mut driver = format!(
        "#!/bin/sh\n# treeline compose: `preinst install` of every package, in install order\n\
         failed() {{ echo \"$1\" >{PREINST_FAILED}; exit \"$2\"; }}\n"
    );
    for (i, pkg) in with.iter().enumerate() {
        let _ = writeln!(
            driver,
            "DPKG_MAINTSCRIPT_PACKAGE={} DPKG_MAINTSCRIPT_ARCH={} DPKG_MAINTSCRIPT_NAME=preinst \
             DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 {} install || failed {i} $?",
            quote(&pkg.meta.name),
            quote(pkg.arch()),
            quote(&format!("/{ADMINDIR}/info/{}.preinst", pkg.db_name())),
        );
    }
    let host_driver = root.join(PREINST_DRIVER.trim_start_matches('/'));
    let host_failed = root.join(PREINST_FAILED.trim_start_matches('/'));
    if let Some(dir) = host_driver.parent() {
        mkdirs(dir)?;
    }
    let _ = std::fs::remove_file(&host_failed);
    write(&host_driver, driver.as_bytes(), 0o755)?;
    let env = script_env(None, dpkg_version, epoch);
    let result = sandbox.exec(
        root,
        "preinst scripts",
        "preinst",
        PREINST_DRIVER,
        &[],
        &env,
    );
    let failed = std::fs::read_to_string(&host_failed).ok();
    let _ = std::fs::remove_file(&host_driver);
    let _ = std::fs::remove_file(&host_failed);
    match result {
        Ok(()) => Ok(()),
        Err(script::Error::Failed { status, output, .. }) => {
            let package = failed
                .and_then(|f| f.trim().parse::<usize>().ok())
                .and_then(|i| with.get(i))
                .map_or_else(|| "a package".to_owned(), |p| p.label());
            Err(Error::Script(script::Error::Failed {
                package,
                script: "preinst".to_owned(),
                status,
                output,
            }))
        }
        Err(e) => Err(Error::Script(e)),
    }
}

/// Activates, for packages unpacked on top of a configured tree, the triggers dpkg's
/// unpacking would have: the file triggers whose interest path holds one of their
/// paths, and the explicit triggers their `activate` directives name (when some package
/// is interested). They are processed by the following `dpkg --configure --pending`.
pub fn activate_triggers(
    sandbox: &Sandbox,
    repo: &Repo,
    root: &Path,
    packages: &[DebPackage],
) -> Result<()> {
    let triggers = root.join(ADMINDIR).join("triggers");
    let file = std::fs::read_to_string(triggers.join("File")).unwrap_or_default();
    let interests: Vec<&str> = file.lines().filter_map(|l| l.split(' ').next()).collect();
    let mut names = BTreeSet::new();
    for pkg in packages {
        let list = pkg.list(repo)?;
        for i in &interests {
            let under = format!("{}/", i.trim_end_matches('/'));
            if list.iter().any(|p| p == i || p.starts_with(&under)) {
                names.insert((*i).to_owned());
            }
        }
        if let Some(t) = pkg.members.get("triggers") {
            for line in String::from_utf8_lossy(t).lines() {
                let mut words = line.split_whitespace();
                if let (Some("activate" | "activate-await" | "activate-noawait"), Some(n)) =
                    (words.next(), words.next())
                    && triggers.join(n).is_file()
                {
                    names.insert(n.to_owned());
                }
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let mut script = String::from("#!/bin/sh\nset -e\n");
    for n in &names {
        let _ = writeln!(script, "dpkg-trigger --no-await '{}'", n.replace('\'', ""));
    }
    sandbox.run_script(
        root,
        "dpkg",
        "dpkg-trigger",
        "/tmp/treeline-activate-triggers",
        script.as_bytes(),
        &[],
    )?;
    Ok(())
}

/// A failed `dpkg --configure` names the package and script dpkg reported.
fn name_failed_script(e: script::Error) -> Error {
    if let script::Error::Failed { status, output, .. } = &e {
        let failed = output.lines().find_map(|l| {
            let rest = l.split("error processing package ").nth(1)?;
            let package = rest.split_whitespace().next()?.to_owned();
            Some(package)
        });
        if let Some(package) = failed {
            let script = output
                .lines()
                .find_map(|l| {
                    ["post-installation", "pre-installation", "triggers"]
                        .into_iter()
                        .find(|s| l.contains(s))
                })
                .map(|s| match s {
                    "post-installation" => "postinst",
                    "pre-installation" => "preinst",
                    _ => "trigger processing",
                })
                .unwrap_or("configuration");
            return Error::Script(script::Error::Failed {
                package,
                script: script.to_owned(),
                status: *status,
                output: output.clone(),
            });
        }
    }
    Error::Script(e)
}

/// Paths scripts leave that make trees differ from run to run or that must be made per
/// machine: removed after configuration (host keys are generated at first boot, logs
/// and caches are state, `*-old` are dpkg's backups, `/run` and `/tmp` are tmpfs), and
/// `/etc/machine-id` emptied so systemd makes one at first boot.
pub fn clean(root: &Path) -> Result<()> {
    let globbed = [
        ("etc/ssh", "ssh_host_"),
        ("var/lib/dpkg", "-old"),
        ("var/cache/debconf", "-old"),
        ("var/log", ".log"),
        ("var/log/apt", ".log"),
    ];
    for (dir, pattern) in globbed {
        let d = root.join(dir);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(io_err(&d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(pattern) || name.ends_with(pattern) {
                let p = e.path();
                if p.is_file() {
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                }
            }
        }
    }
    for rel in [
        "var/cache/ldconfig/aux-cache",
        "var/lib/dbus/machine-id",
        "var/lib/dpkg/lock",
        "var/lib/dpkg/lock-frontend",
        "var/lib/dpkg/triggers/Lock",
    ] {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    // /run and /tmp are tmpfs on a booted system: what scripts left there goes.
    for dir in ["run", "tmp"] {
        let d = root.join(dir);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.map_err(io_err(&d))?.path();
            let removed = if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(io_err(&p))?;
        }
    }
    let machine_id = root.join("etc/machine-id");
    if machine_id.exists() {
        write(&machine_id, b"", 0o444)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(control: &str, members: &[(&str, &str)]) -> DebPackage {
        DebPackage {
            meta: PackageMeta {
                name: parse_single(control.as_bytes(), "c")
                    .unwrap()
                    .get("Package")
                    .unwrap()
                    .to_owned(),
                ..PackageMeta::default()
            },
            commit: Checksum::of(b""),
            control: raw_stanza(control),
            members: members
                .iter()
                .map(|(n, d)| ((*n).to_owned(), d.as_bytes().to_vec()))
                .collect(),
            owners: Vec::new(),
        }
    }

    #[test]
    fn raw_values_keep_trailing_blanks_of_the_first_line() {
        let s = raw_stanza("Package: x\nDescription: short \n long\n .\nConffiles:\n /etc/a 1\n");
        assert_eq!(s.get("Description"), Some("short \n long\n ."));
        assert_eq!(s.get("Conffiles"), Some("\n /etc/a 1"));
    }

    #[test]
    fn a_failed_configure_names_the_package_and_script() {
        use std::os::unix::process::ExitStatusExt;
        let output = "Setting up openssh-server (1:9.2p1-2) ...\n\
            dpkg: error processing package openssh-server (--configure):\n \
            installed openssh-server package post-installation script subprocess returned \
            error exit status 1\nErrors were encountered while processing:\n openssh-server";
        let e = name_failed_script(script::Error::Failed {
            package: "dpkg".to_owned(),
            script: "--configure".to_owned(),
            status: std::process::ExitStatus::from_raw(256),
            output: output.to_owned(),
        });
        let text = e.to_string();
        assert!(
            text.starts_with("postinst of openssh-server failed (exit status: 1)"),
            "{text}"
        );
        assert!(
            text.contains("post-installation script subprocess"),
            "{text}"
        );
    }

    #[test]
    fn multi_arch_same_packages_are_filed_with_their_architecture() {
        let same = pkg(
            "Package: libc6\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36\n",
            &[],
        );
        assert_eq!(same.db_name(), "libc6:amd64");
        let foreign = pkg(
            "Package: bash\nArchitecture: amd64\nMulti-Arch: foreign\n",
            &[],
        );
        assert_eq!(foreign.db_name(), "bash");
    }

    #[test]
    fn status_stanza_has_dpkg_field_order_and_conffile_hashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/x.conf"), b"a\n").unwrap();
        let p = pkg(
            "Package: x\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: M <m@e>\n\
             Installed-Size: 12\nDepends: libc6\nSection: admin\nPriority: optional\n\
             Homepage: https://e\nDescription: short\n long line\n .\n more\n",
            &[("conffiles", "/etc/x.conf\n")],
        );
        let s = p.status("install ok unpacked", dir.path()).unwrap();
        assert_eq!(
            s,
            "Package: x\nStatus: install ok unpacked\nPriority: optional\nSection: admin\n\
             Installed-Size: 12\nMaintainer: M <m@e>\nArchitecture: amd64\nVersion: 1.0-1\n\
             Depends: libc6\nConffiles:\n /etc/x.conf 60b725f10c9c85c70d97880dfe8191b3\n\
             Description: short\n long line\n .\n more\nHomepage: https://e\n\n"
        );
    }
}
