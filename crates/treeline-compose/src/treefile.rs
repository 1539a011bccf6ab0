//! The treefile: a short TOML description of an OS tree (see docs/treefile.md).
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, line and
//! column (from the TOML parser's spans), so a typo is reported where it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading a treefile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The treefile.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The TOML is malformed or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The treefile.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A required key is in neither the treefile nor its includes.
    #[error("{path}: `{key}` is required (in the treefile or a file it includes)")]
    Missing {
        /// The top treefile.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Keys that contradict each other once includes are merged.
    #[error("{path}: {message}")]
    Conflict {
        /// The top treefile.
        path: PathBuf,
        /// What contradicts what.
        message: String,
    },
    /// A treefile includes itself, directly or not.
    #[error("include cycle: {chain}")]
    IncludeCycle {
        /// The files, `a.toml -> b.toml -> a.toml`.
        chain: String,
    },
}

/// Which package family the tree is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Alpine Linux (apk).
    Alpine,
    /// Debian (dpkg/apt).
    Debian,
}

impl Distribution {
    /// The lowercase name (`alpine`, `debian`), as the treefile and commit metadata say it.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Alpine => "alpine",
            Distribution::Debian => "debian",
        }
    }
}

/// The `[debian]` table: where Debian packages come from and which ones a minimal
/// system gets besides the requested ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debian {
    /// Suite (`bookworm`).
    pub suite: String,
    /// Components (default `["main"]`).
    pub components: Vec<String>,
    /// Mirror URL; `None`: the host's apt configuration's mirror for the suite.
    pub mirror: Option<String>,
    /// Keyring the suite's Release file must be signed by.
    pub keyring: PathBuf,
    /// Whether Recommends are installed (default false, as for a minimal system).
    pub install_recommends: bool,
    /// Whether every `Priority: required` package is added to the request (default true:
    /// debootstrap's and mmdebstrap's `minbase`); `Essential: yes` ones always are.
    pub minbase: bool,
    /// The treefile author's own apt repositories (directories), unsigned, searched
    /// with the mirror for the same suite and components; not written to the tree's
    /// `sources.list`.
    pub local_repositories: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DebianLayer {
    suite: Option<String>,
    components: Option<Vec<String>>,
    mirror: Option<String>,
    keyring: Option<PathBuf>,
    install_recommends: Option<bool>,
    minbase: Option<bool>,
    local_repositories: Option<Vec<PathBuf>>,
}

/// A file copied from the host into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFile {
    /// Host path; relative paths are relative to the treefile's directory.
    pub src: PathBuf,
    /// Absolute path inside the tree.
    pub dest: String,
    /// Permission bits, as an octal string (`"0644"`); default: the source's.
    pub mode: Option<String>,
}

/// A user written to /etc/passwd, /etc/shadow and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id (default: the group named like the user, created with gid = uid
    /// when it does not exist).
    pub gid: Option<u32>,
    /// Home directory (default `/home/NAME`, created owned by the user, mode 0700).
    pub home: Option<String>,
    /// Login shell (default `/bin/sh`).
    pub shell: Option<String>,
    /// The GECOS field.
    #[serde(default)]
    pub comment: String,
    /// Supplementary groups, which must exist in the tree or the treefile.
    #[serde(default)]
    pub groups: Vec<String>,
    /// A crypt(3) hash for /etc/shadow (default `!`: locked).
    pub password: Option<String>,
}

/// A group written to /etc/group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
}

/// A service to enable: a name (OpenRC: in the `default` runlevel) or a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Service {
    /// `"sshd"`.
    Name(String),
    /// `{ name = "networking", runlevel = "boot" }`.
    Table {
        /// OpenRC service or systemd unit name.
        name: String,
        /// OpenRC runlevel (default `default`); not allowed for systemd.
        runlevel: Option<String>,
    },
}

impl Service {
    /// The service or unit name.
    pub fn name(&self) -> &str {
        match self {
            Service::Name(n) | Service::Table { name: n, .. } => n,
        }
    }

    /// The OpenRC runlevel asked for, if any.
    pub fn runlevel(&self) -> Option<&str> {
        match self {
            Service::Name(_) => None,
            Service::Table { runlevel, .. } => runlevel.as_deref(),
        }
    }
}

/// The init system services are enabled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// OpenRC: runlevel symlinks.
    Openrc,
    /// systemd: `[Install]` symlinks.
    Systemd,
}

/// A post-process script: inline text or a file, run in the finished tree.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postprocess {
    /// Name used in messages (default: `postprocess N` or the file name).
    pub name: Option<String>,
    /// The script text (with a `#!` line, or run by `/bin/sh`).
    pub script: Option<String>,
    /// A script file on the host; relative to the treefile's directory.
    pub file: Option<PathBuf>,
}

impl Postprocess {
    /// The name messages use for the script with index `i`.
    pub fn label(&self, i: usize) -> String {
        match (&self.name, &self.file) {
            (Some(n), _) => n.clone(),
            (None, Some(f)) => f.display().to_string(),
            (None, None) => format!("postprocess {}", i + 1),
        }
    }
}

/// A parsed treefile, its includes merged. Relative paths in it are already resolved
/// against the directory of the file that named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Treefile {
    /// The ref the commit goes on (`alpine/3.19/x86_64/base`).
    pub ref_name: String,
    /// The version template for the commit's `version` metadata (see [`crate::version`]).
    pub version: Option<String>,
    /// The package family.
    pub distribution: Distribution,
    /// Target architecture (`x86_64`).
    pub arch: String,
    /// apk repository bases: directories or URLs, as lines of /etc/apk/repositories.
    pub repositories: Vec<String>,
    /// Directory of trusted apk keys (file name = key name).
    pub keys: Option<PathBuf>,
    /// Requested packages (apk world atoms: `openssh`, `busybox>=1.36`, `!vlan`); the
    /// kernel package is among them.
    pub packages: Vec<String>,
    /// Packages that must not be installed.
    pub exclude_packages: Vec<String>,
    /// A rootfs tarball unpacked before any package.
    pub base: Option<PathBuf>,
    /// Files copied into the tree after the packages and their scripts.
    pub files: Vec<AddFile>,
    /// Written to /etc/hostname.
    pub hostname: Option<String>,
    /// A zone under /usr/share/zoneinfo: /etc/localtime and /etc/timezone.
    pub timezone: Option<String>,
    /// Groups to add (before users).
    pub groups: Vec<Group>,
    /// Users to add.
    pub users: Vec<User>,
    /// Services to enable.
    pub services: Vec<Service>,
    /// The init system (default: detected from the tree).
    pub init: Option<Init>,
    /// The kernel package; its image and initramfs go to /usr/lib/modules/KVER/.
    pub kernel: Option<String>,
    /// With a kernel: build `/usr/lib/modules/KVER/initramfs.img` (treeline-boot as
    /// init) when the kernel package brings none (default true).
    pub initramfs: bool,
    /// Scripts run in the finished tree, in order.
    pub postprocess: Vec<Postprocess>,
    /// Extra string metadata on the commit.
    pub metadata: BTreeMap<String, String>,
    /// The `[debian]` table (present exactly when `distribution = "debian"`).
    pub debian: Option<Debian>,
}

/// One file as written: every key optional, so includes can be merged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Layer {
    #[serde(default)]
    include: Vec<PathBuf>,
    #[serde(rename = "ref")]
    ref_name: Option<String>,
    version: Option<String>,
    distribution: Option<Distribution>,
    arch: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
    keys: Option<PathBuf>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    exclude_packages: Vec<String>,
    base: Option<PathBuf>,
    #[serde(default)]
    files: Vec<AddFile>,
    hostname: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    services: Vec<Service>,
    init: Option<Init>,
    kernel: Option<String>,
    initramfs: Option<bool>,
    #[serde(default)]
    postprocess: Vec<Postprocess>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    debian: Option<DebianLayer>,
}

impl Layer {
    /// Merges `over` (the including file, or a later include) on top of `self`:
    /// scalars of `over` win, lists are concatenated (duplicates dropped for names),
    /// tables merge key by key.
    fn merge(&mut self, over: Layer) {
        fn extend_unique(a: &mut Vec<String>, b: Vec<String>) {
            for x in b {
                if !a.contains(&x) {
                    a.push(x);
                }
            }
        }
        macro_rules! scalar {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        scalar!(
            ref_name,
            version,
            distribution,
            arch,
            keys,
            base,
            hostname,
            timezone,
            init,
            kernel,
            initramfs
        );
        extend_unique(&mut self.repositories, over.repositories);
        extend_unique(&mut self.packages, over.packages);
        extend_unique(&mut self.exclude_packages, over.exclude_packages);
        self.files.extend(over.files);
        // A later definition of the same user or group replaces the earlier one.
        for g in over.groups {
            self.groups.retain(|x| x.name != g.name);
            self.groups.push(g);
        }
        for u in over.users {
            self.users.retain(|x| x.name != u.name);
            self.users.push(u);
        }
        for s in over.services {
            self.services.retain(|x| x.name() != s.name());
            self.services.push(s);
        }
        self.postprocess.extend(over.postprocess);
        self.metadata.extend(over.metadata);
        if let Some(o) = over.debian {
            let d = self.debian.get_or_insert_with(DebianLayer::default);
            macro_rules! key {
                ($($f:ident),*) => { $( if o.$f.is_some() { d.$f = o.$f; } )* };
            }
            key!(
                suite,
                components,
                mirror,
                keyring,
                install_recommends,
                minbase,
                local_repositories
            );
        }
    }
}

fn default_arch() -> String {
    "x86_64".to_owned()
}

/// Where in a file's text a key is, for errors about its value.
struct Text<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Text<'_> {
    fn error_at(&self, span: Option<std::ops::Range<usize>>, message: String) -> Error {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        Error::Invalid {
            path: self.origin.to_owned(),
            line,
            column,
            message,
        }
    }

    /// The first line starting with `key` (a key or a `[[table]]` header).
    fn span_of(&self, key: &str) -> Option<std::ops::Range<usize>> {
        let needle = format!("\n{key}");
        self.text
            .find(&needle)
            .map(|i| i + 1..i + 1 + key.len())
            .or_else(|| self.text.starts_with(key).then_some(0..key.len()))
    }

    fn error(&self, key: &str, message: String) -> Error {
        self.error_at(self.span_of(key), message)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !s.starts_with('-')
}

fn safe_relative(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('/') && s.split('/').all(|c| !c.is_empty() && c != "..")
}

impl Treefile {
    /// Reads and checks a treefile and the files it includes.
    pub fn load(path: &Path) -> Result<Treefile, Error> {
        let mut chain = Vec::new();
        let layer = load_layer(path, &mut chain)?;
        finish(layer, path)
    }

    /// Parses treefile text; `origin` names it in errors, `dir` anchors relative paths
    /// and includes.
    pub fn parse(text: &str, origin: &Path, dir: &Path) -> Result<Treefile, Error> {
        let mut chain = vec![origin.to_owned()];
        let layer = parse_layer(text, origin, dir, &mut chain)?;
        finish(layer, origin)
    }

    /// The request the solver gets: the packages, and a conflict (`!name`) per
    /// excluded package.
    pub fn request_atoms(&self) -> Vec<String> {
        let mut atoms = self.packages.clone();
        atoms.extend(self.exclude_packages.iter().map(|p| format!("!{p}")));
        atoms
    }
}

fn load_layer(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Layer, Error> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
        path: path.to_owned(),
        error,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if chain.contains(&key) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(key.display().to_string());
        return Err(Error::IncludeCycle {
            chain: names.join(" -> "),
        });
    }
    chain.push(key);
    let layer = parse_layer(&text, path, dir, chain)?;
    chain.pop();
    Ok(layer)
}

fn parse_layer(
    text: &str,
    origin: &Path,
    dir: &Path,
    chain: &mut Vec<PathBuf>,
) -> Result<Layer, Error> {
    let t = Text { text, origin };
    let mut layer: Layer =
        toml::from_str(text).map_err(|e| t.error_at(e.span(), e.message().to_owned()))?;
    check_layer(&layer, &t)?;

    let anchor = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    if let Some(k) = layer.keys.as_mut() {
        anchor(k);
    }
    if let Some(k) = layer.debian.as_mut().and_then(|d| d.keyring.as_mut()) {
        anchor(k);
    }
    for r in layer
        .debian
        .as_mut()
        .and_then(|d| d.local_repositories.as_mut())
        .into_iter()
        .flatten()
    {
        anchor(r);
    }
    if let Some(b) = layer.base.as_mut() {
        anchor(b);
    }
    for f in &mut layer.files {
        anchor(&mut f.src);
    }
    for p in &mut layer.postprocess {
        if let Some(f) = p.file.as_mut() {
            anchor(f);
        }
    }
    for r in &mut layer.repositories {
        if !r.contains("://") && !r.starts_with('/') {
            *r = dir.join(&*r).display().to_string();
        }
    }

    // Includes first, in order, then this file on top.
    let mut merged = Layer::default();
    for inc in std::mem::take(&mut layer.include) {
        let path = if inc.is_relative() {
            dir.join(&inc)
        } else {
            inc.clone()
        };
        let via: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        let included = load_layer(&path, chain).map_err(|e| match e {
            Error::Io { path, error } => t.error(
                "include",
                format!(
                    "include {} (from {}): {error}",
                    path.display(),
                    via.join(" -> ")
                ),
            ),
            other => other,
        })?;
        merged.merge(included);
    }
    merged.merge(layer);
    Ok(merged)
}

/// Checks of one file's values, reported at the key's line in that file.
fn check_layer(l: &Layer, t: &Text) -> Result<(), Error> {
    if let Some(r) = &l.ref_name
        && (r.is_empty() || r.starts_with('/') || r.contains(".."))
    {
        return Err(t.error("ref", format!("ref {r:?} is not a valid ref name")));
    }
    if let Some(v) = &l.version {
        crate::version::Template::parse(v)
            .map_err(|m| t.error("version", format!("version {v:?}: {m}")))?;
    }
    for f in &l.files {
        if !f.dest.starts_with('/') || f.dest.split('/').any(|c| c == "..") {
            return Err(t.error(
                "[[files]]",
                format!(
                    "files: dest {:?} must be an absolute path without ..",
                    f.dest
                ),
            ));
        }
        if let Some(m) = &f.mode
            && u32::from_str_radix(m, 8).map_or(true, |m| m > 0o7777)
        {
            return Err(t.error(
                "[[files]]",
                format!("files: mode {m:?} is not an octal permission (\"0644\")"),
            ));
        }
    }
    if let Some(tz) = &l.timezone
        && !safe_relative(tz)
    {
        return Err(t.error(
            "timezone",
            format!("timezone {tz:?} is not a zone name such as \"Europe/Berlin\""),
        ));
    }
    for g in &l.groups {
        if !valid_name(&g.name) {
            return Err(t.error(
                "[[groups]]",
                format!("group name {:?} is not valid", g.name),
            ));
        }
    }
    for u in &l.users {
        if !valid_name(&u.name) {
            return Err(t.error("[[users]]", format!("user name {:?} is not valid", u.name)));
        }
        let fields = [&u.comment]
            .into_iter()
            .chain(u.home.as_ref())
            .chain(u.shell.as_ref())
            .chain(u.password.as_ref());
        for f in fields {
            if f.contains([':', '\n']) {
                return Err(t.error(
                    "[[users]]",
                    format!("user {}: {f:?} may not contain ':' or a newline", u.name),
                ));
            }
        }
        for h in u.home.iter().chain(u.shell.iter()) {
            if !h.starts_with('/') {
                return Err(t.error(
                    "[[users]]",
                    format!("user {}: {h:?} must be an absolute path", u.name),
                ));
            }
        }
    }
    for s in &l.services {
        if !valid_name(s.name()) && !s.name().contains('@') {
            return Err(t.error(
                "services",
                format!("service {:?} is not a valid name", s.name()),
            ));
        }
        if let Some(r) = s.runlevel()
            && !valid_name(r)
        {
            return Err(t.error("services", format!("runlevel {r:?} is not valid")));
        }
    }
    if let Some(d) = &l.debian {
        if let Some(s) = &d.suite
            && !valid_name(s)
        {
            return Err(t.error("suite", format!("[debian] suite {s:?} is not a suite name")));
        }
        if let Some(c) = d.components.iter().flatten().find(|c| !valid_name(c)) {
            return Err(t.error(
                "components",
                format!("[debian] component {c:?} is not a component name"),
            ));
        }
        if d.components.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(t.error(
                "components",
                "[debian] components may not be empty".to_owned(),
            ));
        }
        if let Some(m) = &d.mirror
            && !(m.contains("://") || m.starts_with('/'))
        {
            return Err(t.error(
                "mirror",
                format!("[debian] mirror {m:?} is neither a URL nor an absolute directory"),
            ));
        }
    }
    if l.distribution == Some(Distribution::Debian) {
        if let Some(p) = l
            .packages
            .iter()
            .find(|p| !valid_name(p) || p.contains('_'))
        {
            return Err(t.error(
                "packages",
                format!("package {p:?} is not a Debian package name"),
            ));
        }
        if !l.repositories.is_empty() {
            return Err(t.error(
                "repositories",
                "`repositories` is Alpine's; Debian packages come from [debian] mirror".to_owned(),
            ));
        }
    }
    for (i, p) in l.postprocess.iter().enumerate() {
        if p.script.is_some() == p.file.is_some() {
            return Err(t.error(
                "[[postprocess]]",
                format!("{}: give exactly one of `script` and `file`", p.label(i)),
            ));
        }
    }
    Ok(())
}

/// Required keys and defaults, once every include is merged.
fn finish(l: Layer, origin: &Path) -> Result<Treefile, Error> {
    let missing = |key: &str| Error::Missing {
        path: origin.to_owned(),
        key: key.to_owned(),
    };
    let ref_name = l.ref_name.ok_or_else(|| missing("ref"))?;
    let distribution = l.distribution.ok_or_else(|| missing("distribution"))?;
    let debian = match (distribution, l.debian) {
        (Distribution::Alpine, None) => None,
        (Distribution::Alpine, Some(_)) => {
            return Err(Error::Conflict {
                path: origin.to_owned(),
                message: "a [debian] table in an Alpine treefile".to_owned(),
            });
        }
        (Distribution::Debian, d) => {
            let d = d.unwrap_or_default();
            Some(Debian {
                suite: d.suite.ok_or_else(|| missing("[debian] suite"))?,
                components: d.components.unwrap_or_else(|| vec!["main".to_owned()]),
                mirror: d.mirror,
                keyring: d
                    .keyring
                    .unwrap_or_else(|| PathBuf::from(treeline_pkg::source::DEBIAN_KEYRING)),
                install_recommends: d.install_recommends.unwrap_or(false),
                minbase: d.minbase.unwrap_or(true),
                local_repositories: d.local_repositories.unwrap_or_default(),
            })
        }
    };
    if distribution == Distribution::Alpine && l.repositories.is_empty() {
        return Err(missing("repositories"));
    }
    let mut packages = l.packages;
    if let Some(k) = &l.kernel
        && !packages.contains(k)
    {
        packages.push(k.clone());
    }
    if packages.is_empty() {
        return Err(missing("packages"));
    }
    if let Some(p) = packages
        .iter()
        .find(|p| l.exclude_packages.iter().any(|x| x == *p))
    {
        return Err(Error::Conflict {
            path: origin.to_owned(),
            message: format!("package {p} is both requested and excluded"),
        });
    }
    if l.init == Some(Init::Systemd)
        && let Some(s) = l.services.iter().find(|s| s.runlevel().is_some())
    {
        return Err(Error::Conflict {
            path: origin.to_owned(),
            message: format!(
                "service {}: runlevels are OpenRC's; systemd units say where they go in [Install]",
                s.name()
            ),
        });
    }
    Ok(Treefile {
        ref_name,
        version: l.version,
        distribution,
        arch: match (distribution, l.arch) {
            (_, Some(a)) => a,
            (Distribution::Alpine, None) => default_arch(),
            (Distribution::Debian, None) => "amd64".to_owned(),
        },
        repositories: l.repositories,
        keys: l.keys,
        packages,
        exclude_packages: l.exclude_packages,
        base: l.base,
        files: l.files,
        hostname: l.hostname,
        timezone: l.timezone,
        groups: l.groups,
        users: l.users,
        services: l.services,
        init: l.init,
        kernel: l.kernel,
        initramfs: l.initramfs.unwrap_or(true),
        postprocess: l.postprocess,
        metadata: l.metadata,
        debian,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Treefile, Error> {
        Treefile::parse(text, Path::new("t.toml"), Path::new("/tf"))
    }

    #[test]
    fn minimal_treefile_parses_and_anchors_relative_paths() {
        let tf = parse(
            "ref = \"a/b\"\ndistribution = \"alpine\"\nrepositories = [\"repo\", \"https://x/y\"]\n\
             keys = \"keys\"\npackages = [\"alpine-base\"]\n[[files]]\nsrc = \"motd\"\ndest = \"/etc/motd\"\n",
        )
        .unwrap();
        assert_eq!(tf.ref_name, "a/b");
        assert_eq!(tf.arch, "x86_64");
        assert_eq!(tf.repositories, ["/tf/repo", "https://x/y"]);
        assert_eq!(tf.keys.as_deref(), Some(Path::new("/tf/keys")));
        assert_eq!(tf.files[0].src, Path::new("/tf/motd"));
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = parse(
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = [\"x\"]\npackags = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml:5:"), "{err}");
        assert!(err.contains("packags"), "{err}");
    }

    #[test]
    fn unknown_distribution_names_its_line() {
        let err = parse("ref = \"a\"\ndistribution = \"gentoo\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:2:"), "{err}");
    }

    #[test]
    fn empty_package_list_is_refused() {
        let err = parse(
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml: `packages` is required"), "{err}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn includes_merge_scalars_lists_and_tables() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "base.toml",
            "ref = \"base\"\ndistribution = \"alpine\"\nrepositories = [\"repo\"]\n\
             packages = [\"alpine-base\", \"openssh\"]\nhostname = \"base\"\ntimezone = \"UTC\"\n\
             [[users]]\nname = \"admin\"\nuid = 1000\n[metadata]\na = \"1\"\nb = \"1\"\n",
        );
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let top = write(
            &d.path().join("sub"),
            "server.toml",
            "include = [\"../base.toml\"]\nref = \"server\"\npackages = [\"openssh\", \"chrony\"]\n\
             exclude-packages = [\"vlan\"]\nservices = [\"sshd\", { name = \"chronyd\", runlevel = \"boot\" }]\n\
             [[users]]\nname = \"admin\"\nuid = 1001\ngroups = [\"wheel\"]\n[metadata]\nb = \"2\"\n",
        );
        let tf = Treefile::load(&top).unwrap();
        assert_eq!(tf.ref_name, "server");
        assert_eq!(tf.hostname.as_deref(), Some("base"));
        assert_eq!(tf.packages, ["alpine-base", "openssh", "chrony"]);
        assert_eq!(tf.request_atoms().last().unwrap(), "!vlan");
        // Relative paths are relative to the file that names them.
        assert_eq!(tf.repositories.len(), 1);
        assert_eq!(
            Path::new(&tf.repositories[0])
                .parent()
                .unwrap()
                .canonicalize()
                .unwrap(),
            d.path().canonicalize().unwrap()
        );
        assert_eq!(tf.users.len(), 1);
        assert_eq!(tf.users[0].uid, 1001);
        assert_eq!(tf.metadata["a"], "1");
        assert_eq!(tf.metadata["b"], "2");
        assert_eq!(tf.services[1].runlevel(), Some("boot"));
    }

    #[test]
    fn include_cycles_and_missing_includes_name_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.toml", "include = [\"b.toml\"]\nref = \"a\"\n");
        write(d.path(), "b.toml", "include = [\"a.toml\"]\n");
        let err = Treefile::load(&a).unwrap_err().to_string();
        assert!(err.starts_with("include cycle: "), "{err}");
        assert!(
            err.contains("a.toml -> ") && err.contains("b.toml -> ") && err.ends_with("a.toml"),
            "{err}"
        );

        let top = write(
            d.path(),
            "top.toml",
            "ref = \"x\"\ninclude = [\"mid.toml\"]\n",
        );
        write(d.path(), "mid.toml", "\ninclude = [\"gone.toml\"]\n");
        let err = Treefile::load(&top).unwrap_err().to_string();
        assert!(err.contains("mid.toml:2:1: include "), "{err}");
        assert!(
            err.contains("gone.toml (from ") && err.contains("top.toml -> "),
            "{err}"
        );
    }

    #[test]
    fn new_keys_are_checked_where_they_are() {
        let head =
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = [\"x\"]\n";
        let err = |tail: &str| parse(&format!("{head}{tail}")).unwrap_err().to_string();
        assert!(err("version = \"1.{hour}\"\n").starts_with("t.toml:5:"));
        assert!(err("timezone = \"../etc/passwd\"\n").starts_with("t.toml:5:"));
        let e = err("[[users]]\nname = \"bob\"\nuid = 1\nshell = \"sh\"\n");
        assert!(e.starts_with("t.toml:5:") && e.contains("absolute"), "{e}");
        let e = err("[[postprocess]]\nname = \"p\"\n");
        assert!(
            e.starts_with("t.toml:5:") && e.contains("exactly one"),
            "{e}"
        );
        let e = err("exclude-packages = [\"x\"]\n");
        assert!(e.contains("both requested and excluded"), "{e}");
        let e = err("[[users]]\nname = \"bob\"\nuid = 1\nhome_dir = \"/h\"\n");
        assert!(e.starts_with("t.toml:8:") && e.contains("home_dir"), "{e}");
        let tf = parse(&format!("{head}kernel = \"linux-virt\"\n")).unwrap();
        assert_eq!(tf.packages, ["x", "linux-virt"]);
    }

    #[test]
    fn debian_treefile_has_minimal_defaults() {
        let tf = parse(
            "ref = \"d\"\ndistribution = \"debian\"\npackages = [\"systemd\"]\n\
             [debian]\nsuite = \"bookworm\"\n",
        )
        .unwrap();
        assert_eq!(tf.arch, "amd64");
        let d = tf.debian.unwrap();
        assert_eq!(d.suite, "bookworm");
        assert_eq!(d.components, ["main"]);
        assert_eq!(d.mirror, None);
        assert_eq!(
            d.keyring,
            Path::new("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert!(!d.install_recommends);
        assert!(d.minbase);
    }

    #[test]
    fn debian_treefile_errors_name_their_line() {
        let head = "ref = \"d\"\ndistribution = \"debian\"\npackages = [\"systemd\"]\n";
        let err = |tail: &str| parse(&format!("{head}{tail}")).unwrap_err().to_string();
        let e = err("[debian]\nsuite = \"bookworm\"\nmirorr = \"http://m\"\n");
        assert!(e.starts_with("t.toml:6:") && e.contains("mirorr"), "{e}");
        let e = err("[debian]\nsuite = \"book worm\"\n");
        assert!(e.starts_with("t.toml:5:") && e.contains("suite"), "{e}");
        let e = err("[debian]\nsuite = \"bookworm\"\nmirror = \"deb.example.org\"\n");
        assert!(e.starts_with("t.toml:6:") && e.contains("mirror"), "{e}");
        let e = err("repositories = [\"r\"]\n[debian]\nsuite = \"bookworm\"\n");
        assert!(
            e.starts_with("t.toml:4:") && e.contains("repositories"),
            "{e}"
        );
        let e = err("[debian]\ncomponents = [\"main\"]\n");
        assert!(e.contains("[debian] suite"), "{e}");
        let e = parse(
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = [\"x\"]\n\
             [debian]\nsuite = \"bookworm\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[debian] table in an Alpine treefile"), "{e}");
    }

    #[test]
    fn example_treefile_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let tf = Treefile::load(&dir.join("alpine-minimal.toml")).unwrap();
        assert_eq!(tf.packages, ["alpine-base", "openssh"]);
        assert_eq!(tf.files[0].src, dir.join("motd"));
        assert!(tf.files[0].src.is_file());
        assert_eq!(tf.metadata["org.example.variant"], "minimal");

        let server = Treefile::load(&dir.join("alpine-server.toml")).unwrap();
        assert_eq!(server.ref_name, "alpine/3.19/x86_64/server");
        assert_eq!(
            server.packages,
            ["alpine-base", "openssh", "chrony", "tzdata"]
        );
        assert_eq!(server.hostname.as_deref(), Some("alpine"));
        assert_eq!(server.files, tf.files);
        assert_eq!(server.users[0].groups, ["ops", "wheel"]);
        assert_eq!(server.metadata["org.example.variant"], "server");

        let debian = Treefile::load(&dir.join("debian-minimal.toml")).unwrap();
        assert_eq!(debian.distribution, Distribution::Debian);
        assert_eq!(debian.packages, ["systemd", "openssh-server"]);
        assert_eq!(debian.debian.unwrap().suite, "bookworm");
    }
}
