//! The part of systemd's `tmpfiles.d` (tmpfiles.d(5)) that gives `/var` its content:
//! directories (`d`, `D`, `v`, `q`, `Q`), files (`f`, `F`), symlinks (`L`) and copies
//! (`C`) are created when they are missing. Nothing that exists is changed, so running
//! it again is harmless: deploy runs it for every new deployment against the stateroot's
//! `/var`, and a container init without systemd-tmpfiles (Alpine) can run it at each
//! start through [`apply_var`].
//!
//! Other line types (cleaning, writing to existing files, attributes, device nodes) are
//! known but not applied; unknown types, unknown users and malformed lines are reported
//! as [`Problem`]s naming `file:line` and the rest of the configuration still applies, as
//! systemd-tmpfiles does.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::fsutil;

/// What a line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `d`, `D`, `v`, `q`, `Q`: a directory.
    Dir,
    /// `f`, `F`: a regular file with this content (the unescaped argument).
    File(String),
    /// `L`: a symlink to this target.
    Symlink(String),
    /// `C`: a recursive copy of this path of the tree.
    Copy(String),
}

/// One line that creates something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What to create.
    pub action: Action,
    /// The absolute path to create.
    pub path: String,
    /// Permission bits; `None` for the default (0755 directories, 0644 files).
    pub mode: Option<u32>,
    /// Owner, by name or number; `None` for root.
    pub user: Option<String>,
    /// Group, by name or number; `None` for root.
    pub group: Option<String>,
    /// `file:line` it came from.
    pub at: String,
}

/// A line that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` (or the file alone).
    pub at: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// What applying a configuration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TmpfilesReport {
    /// Paths created (absolute, as the configuration names them).
    pub created: Vec<String>,
    /// Lines not applied: malformed, unknown type or user, unsafe path.
    pub problems: Vec<Problem>,
}

/// Line types that are valid but create nothing persistent in `/var`.
const NOT_APPLIED: &str = "wexXrRzZtThHaApcb";

/// Split off the next whitespace-separated word, honouring quotes and backslash escapes.
fn next_word(s: &str) -> std::result::Result<Option<(String, &str)>, String> {
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => return Ok(Some((out, &s[i..]))),
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => match chars.next() {
                Some((_, n)) => out.push(n),
                None => return Err("line ends in a backslash".into()),
            },
            (_, c) => out.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    Ok(Some((out, "")))
}

/// C escapes of `f` arguments: `\n`, `\t`, `\\`, `\xHH`.
fn unescape(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('x') => {
                let h: String = chars.by_ref().take(2).collect();
                let b = u8::from_str_radix(&h, 16).map_err(|_| format!("bad escape \\x{h}"))?;
                out.push(char::from(b));
            }
            Some(o) => return Err(format!("unknown escape \\{o}")),
            None => return Err("argument ends in a backslash".into()),
        }
    }
    Ok(out)
}

/// Expand `%%`; other specifiers depend on the running system and are refused.
fn expand_specifiers(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(o) => return Err(format!("specifier %{o} is not supported")),
            None => return Err("path ends in %".into()),
        }
    }
    Ok(out)
}

fn field(s: Option<String>) -> Option<String> {
    s.filter(|v| v != "-" && !v.is_empty())
}

/// Parse one line. `Ok(None)` for comments, blank lines and valid types that create
/// nothing here.
fn parse_line(line: &str, at: &str) -> std::result::Result<Option<Entry>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut rest = trimmed;
    let mut words: Vec<Option<String>> = Vec::with_capacity(6);
    for _ in 0..6 {
        match next_word(rest)? {
            Some((w, r)) => {
                words.push(Some(w));
                rest = r;
            }
            None => words.push(None),
        }
    }
    let argument = Some(rest.trim_start().to_owned()).filter(|a| !a.is_empty());
    let [ty, path, mode, user, group, _age] =
        <[Option<String>; 6]>::try_from(words).map_err(|_| "internal: field count".to_owned())?;
    let ty = ty.ok_or("no type")?;
    let mut tc = ty.chars();
    let kind = tc.next().ok_or("no type")?;
    let modifiers: String = tc.collect();
    if let Some(m) = modifiers.chars().find(|c| !"+!-=~^$".contains(*c)) {
        return Err(format!("unknown modifier {m:?} in type {ty:?}"));
    }
    if modifiers.contains('~') || modifiers.contains('^') {
        return Err(format!(
            "type {ty:?}: base64 (~) and credential (^) arguments are not supported"
        ));
    }
    let path = path.ok_or("no path")?;
    let path = expand_specifiers(&path)?;
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    if Path::new(&path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!("path {path:?} contains .."));
    }
    let mode = match field(mode) {
        None => None,
        Some(m) => {
            let digits = m.trim_start_matches(['~', ':']);
            let v = u32::from_str_radix(digits, 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .ok_or_else(|| format!("invalid mode {m:?}"))?;
            Some(v)
        }
    };
    let factory = || format!("/usr/share/factory{path}");
    let action = match kind {
        'd' | 'D' | 'v' | 'q' | 'Q' => Action::Dir,
        'f' | 'F' => Action::File(match &argument {
            Some(a) => unescape(a)?,
            None => String::new(),
        }),
        'L' => Action::Symlink(argument.unwrap_or_else(factory)),
        'C' => Action::Copy(argument.unwrap_or_else(factory)),
        c if NOT_APPLIED.contains(c) => {
            tracing::trace!("{at}: type {c} creates nothing in /var; not applied");
            return Ok(None);
        }
        c => return Err(format!("unknown type {c:?}")),
    };
    Ok(Some(Entry {
        action,
        path,
        mode,
        user: field(user),
        group: field(group),
        at: at.to_owned(),
    }))
}

/// Parse a configuration file's text; `file` names it in the `at` of entries and
/// problems.
pub fn parse(text: &str, file: &str) -> (Vec<Entry>, Vec<Problem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        match parse_line(line, &at) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(reason) => problems.push(Problem { at, reason }),
        }
    }
    (entries, problems)
}

/// Directories searched, highest priority first (a file name in an earlier one hides the
/// same name in later ones).
const CONFIG_DIRS: &[&str] = &[
    "etc/tmpfiles.d",
    "run/tmpfiles.d",
    "usr/local/lib/tmpfiles.d",
    "usr/lib/tmpfiles.d",
];

/// Read every `*.conf` of the tree at `root` in systemd's order: by file name, the first
/// directory of [`CONFIG_DIRS`] holding a name wins, and a link to `/dev/null` masks it.
pub fn read_config(root: &Path) -> Result<(Vec<Entry>, Vec<Problem>)> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in CONFIG_DIRS {
        let d = root.join(dir);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(d),
        };
        for e in rd {
            let e = e.at(&d)?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.ends_with(".conf") {
                files.entry(name).or_insert_with(|| e.path());
            }
        }
    }
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for path in files.values() {
        let shown = format!(
            "/{}",
            path.strip_prefix(root).unwrap_or(path.as_path()).display()
        );
        // Links resolve inside the tree, never on the host.
        let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
        let link = if is_link {
            fsutil::read_link_opt(path)?
        } else {
            None
        };
        let real = match link {
            Some(t) if t == "/dev/null" => continue,
            Some(t) if t.starts_with('/') => root.join(t.trim_start_matches('/')),
            Some(t) => path.parent().unwrap_or(root).join(t),
            None => path.clone(),
        };
        if !inside(root, &real) {
            problems.push(Problem {
                at: shown,
                reason: "links out of the tree; not read".into(),
            });
            continue;
        }
        let text = match fs::read(&real) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                problems.push(Problem {
                    at: shown,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let (e, p) = parse(&text, &shown);
        entries.extend(e);
        problems.extend(p);
    }
    Ok((entries, problems))
}

/// Whether `path` (following links, which a tree may hold absolute) stays under `root`.
fn inside(root: &Path, path: &Path) -> bool {
    match (fs::canonicalize(root), fs::canonicalize(path)) {
        (Ok(r), Ok(p)) => p.starts_with(r),
        _ => false,
    }
}

/// The numeric ID of `name` in a passwd or group file of the tree (a number is itself).
fn lookup_id(root: &Path, file: &str, name: &str) -> Result<Option<u32>> {
    if let Ok(n) = name.parse() {
        return Ok(Some(n));
    }
    for dir in ["etc", "usr/etc", "usr/lib"] {
        let p = root.join(dir).join(file);
        let text = match fs::read(&p) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(p),
        };
        for line in text.lines() {
            let mut f = line.split(':');
            if f.next() == Some(name) {
                return Ok(f.nth(1).and_then(|id| id.parse().ok()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// Apply the entries of the tree at `root` whose path is under `/var`, with `/var` being
/// the directory `var` (a stateroot's `/var`, or `/var` itself in a running system).
/// Only missing paths are created; missing parents get 0755 root-owned directories; a
/// path whose parent is a symlink is skipped (so nothing is written outside `var`).
/// Owners are looked up in the tree's own `/etc/passwd` and `/etc/group`.
pub fn apply_var(root: &Path, var: &Path) -> Result<TmpfilesReport> {
    let (entries, problems) = read_config(root)?;
    let mut report = TmpfilesReport {
        created: Vec::new(),
        problems,
    };
    for e in &entries {
        let Some(rel) = e
            .path
            .strip_prefix("/var")
            .filter(|r| r.is_empty() || r.starts_with('/'))
        else {
            continue;
        };
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let problem = |reason: String| Problem {
            at: e.at.clone(),
            reason,
        };
        let uid = match &e.user {
            None => Some(0),
            Some(u) => lookup_id(root, "passwd", u)?,
        };
        let gid = match &e.group {
            None => Some(0),
            Some(g) => lookup_id(root, "group", g)?,
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            report.problems.push(problem(format!(
                "unknown user or group {:?}:{:?} in the tree's /etc",
                e.user.as_deref().unwrap_or("root"),
                e.group.as_deref().unwrap_or("root")
            )));
            continue;
        };
        let Some(parent) = make_parents(var, rel)? else {
            report.problems.push(problem(format!(
                "{}: a parent is a symlink or not a directory; skipped",
                e.path
            )));
            continue;
        };
        let dest = var.join(rel);
        if fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        match &e.action {
            Action::Dir => {
                fs::create_dir(&dest).at(&dest)?;
                set_owner_mode(&dest, uid, gid, e.mode.unwrap_or(0o755))?;
            }
            Action::File(content) => {
                write_new_file(&dest, content.as_bytes(), uid, gid, e.mode.unwrap_or(0o644))?;
            }
            Action::Symlink(target) => {
                std::os::unix::fs::symlink(target, &dest).at(&dest)?;
            }
            Action::Copy(source) => {
                let src = root.join(source.trim_start_matches('/'));
                if fs::symlink_metadata(&src).is_err() || !inside(root, &src) {
                    report
                        .problems
                        .push(problem(format!("copy source {source} is not in the tree")));
                    continue;
                }
                let tmp = parent.join(format!(
                    ".tl-tmpfiles-{}",
                    dest.file_name().unwrap_or_default().to_string_lossy()
                ));
                fsutil::remove_tree(&tmp)?;
                fsutil::copy_preserving(&src, &tmp)?;
                if e.user.is_some() || e.group.is_some() || e.mode.is_some() {
                    let mode = match e.mode {
                        Some(m) => m,
                        None => fs::symlink_metadata(&tmp).at(&tmp)?.permissions().mode() & 0o7777,
                    };
                    set_owner_mode(&tmp, uid, gid, mode)?;
                }
                fsutil::syncfs(&tmp)?;
                fs::rename(&tmp, &dest).at(&dest)?;
            }
        }
        fsutil::fsync_dir(&parent)?;
        report.created.push(e.path.clone());
    }
    if !report.created.is_empty() {
        fsutil::syncfs(var)?;
    }
    Ok(report)
}

/// Create the missing parents of `var/rel` (0755, root); `None` when one of them is a
/// symlink or not a directory.
fn make_parents(var: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let mut dir = var.to_path_buf();
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).at(&dir)?;
                set_owner_mode(&dir, 0, 0, 0o755)?;
            }
            Err(e) => return Err(e).at(dir),
        }
    }
    Ok(Some(dir))
}

fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).at(path)?;
    // After chown, which clears setuid/setgid.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)
}

/// Write a new file durably under a temporary name, then rename it into place.
fn write_new_file(dest: &Path, data: &[u8], uid: u32, gid: u32, mode: u32) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tl-tmpfiles-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(data).at(tmp.path())?;
    set_owner_mode(tmp.path(), uid, gid, mode)?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist_noclobber(dest).map_err(|e| crate::Error::Io {
        path: dest.to_path_buf(),
        error: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lines_parse_with_defaults_quotes_and_escapes() {
        let text = "# comment\n\
            d /var/lib/app 0750 app app - -\n\
            D! /var/cache/x - - - 1d\n\
            f+ \"/var/lib/with space\" 0600 - - - hello\\nworld\n\
            L /var/lib/link - - - - ../target\n\
            C /var/lib/seed\n\
            z /var/lib/app 0700\n\
            \n";
        let (e, p) = parse(text, "/usr/lib/tmpfiles.d/a.conf");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].action, Action::Dir);
        assert_eq!(e[0].mode, Some(0o750));
        assert_eq!(e[0].user.as_deref(), Some("app"));
        assert_eq!(e[0].at, "/usr/lib/tmpfiles.d/a.conf:2");
        assert_eq!((e[1].mode, e[1].user.as_deref()), (None, None));
        assert_eq!(e[2].path, "/var/lib/with space");
        assert_eq!(e[2].action, Action::File("hello\nworld".into()));
        assert_eq!(e[3].action, Action::Symlink("../target".into()));
        assert_eq!(
            e[4].action,
            Action::Copy("/usr/share/factory/var/lib/seed".into())
        );
    }

    #[test]
    fn malformed_and_unknown_lines_are_problems_with_file_and_line() {
        let text = "d /var/ok\n\
            Y /var/what\n\
            d relative/path\n\
            d /var/x 99z\n\
            d \"/var/unterminated\n\
            d /var/%h/x\n\
            d /var/../etc\n";
        let (e, p) = parse(text, "t.conf");
        assert_eq!(e.len(), 1);
        let at: Vec<&str> = p.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "t.conf:2", "t.conf:3", "t.conf:4", "t.conf:5", "t.conf:6", "t.conf:7"
            ]
        );
        assert!(p[0].to_string().contains("unknown type 'Y'"), "{}", p[0]);
        assert!(p[2].reason.contains("invalid mode \"99z\""));
    }

    #[test]
    fn apply_creates_only_what_is_missing_under_var() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let var = t.path().join("var");
        fs::create_dir_all(root.join("usr/lib/tmpfiles.d")).unwrap();
        fs::create_dir_all(root.join("etc/tmpfiles.d")).unwrap();
        fs::create_dir_all(root.join("usr/share/factory/var/lib/seed")).unwrap();
        fs::write(root.join("usr/share/factory/var/lib/seed/a"), "factory\n").unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:42:43::/:/bin/false\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\napp:x:43:\n").unwrap();
        fs::write(
            root.join("usr/lib/tmpfiles.d/app.conf"),
            "d /var/lib/app 0750 app app -\n\
             f /var/lib/app/state 0640 app app - fresh\n\
             f /var/lib/existing - - - - new\n\
             L /var/lib/link - - - - /usr/share/x\n\
             C /var/lib/seed\n\
             d /run/not-var\n\
             d /var/escape/inside\n\
             d /var/lib/ghost 0755 nobody\n\
             C /var/lib/outside - - - - /usr/share/out/passwd\n",
        )
        .unwrap();
        // Masked by /etc: never applied.
        fs::write(
            root.join("usr/lib/tmpfiles.d/masked.conf"),
            "d /var/masked\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("etc/tmpfiles.d/masked.conf")).unwrap();
        // An absolute link in the tree points at the host's /etc: not followed out.
        std::os::unix::fs::symlink("/etc", root.join("usr/share/out")).unwrap();
        fs::create_dir_all(var.join("lib")).unwrap();
        fs::write(var.join("lib/existing"), "mine\n").unwrap();
        std::os::unix::fs::symlink("/", var.join("escape")).unwrap();

        let r = apply_var(&root, &var).unwrap();
        assert_eq!(
            r.created,
            [
                "/var/lib/app",
                "/var/lib/app/state",
                "/var/lib/link",
                "/var/lib/seed"
            ]
        );
        let md = fs::metadata(var.join("lib/app")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 42, 43));
        let md = fs::metadata(var.join("lib/app/state")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 42, 43));
        assert_eq!(
            fs::read_to_string(var.join("lib/app/state")).unwrap(),
            "fresh"
        );
        assert_eq!(
            fs::read_to_string(var.join("lib/existing")).unwrap(),
            "mine\n"
        );
        assert_eq!(
            fs::read_link(var.join("lib/link")).unwrap(),
            Path::new("/usr/share/x")
        );
        assert_eq!(
            fs::read_to_string(var.join("lib/seed/a")).unwrap(),
            "factory\n"
        );
        assert!(!var.join("masked").exists());
        let reasons: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[2].contains("app.conf:9") && reasons[2].contains("not in the tree"));
        assert!(!var.join("lib/outside").exists());
        assert!(reasons[0].contains("app.conf:7") && reasons[0].contains("symlink"));
        assert!(reasons[1].contains("app.conf:8") && reasons[1].contains("nobody"));

        // Again: nothing to do, nothing rewritten.
        fs::write(var.join("lib/app/state"), "changed\n").unwrap();
        let r = apply_var(&root, &var).unwrap();
        assert!(r.created.is_empty());
        assert_eq!(
            fs::read_to_string(var.join("lib/app/state")).unwrap(),
            "changed\n"
        );
    }
}
