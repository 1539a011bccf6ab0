//! The treefile's generic settings applied to an assembled root, for every package
//! family: users and groups, timezone, services, post-process scripts.
//!
//! Everything is written the way the distribution's own tools would leave it
//! (`adduser`, `setup-timezone`, `rc-update add`, `systemctl enable`), without running
//! any host tool, and deterministically: the same treefile gives the same bytes.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::treefile::{Init, Treefile};
use crate::{Error, Result, io_err};

fn tree_err(what: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Tree {
        what: what.into(),
        message: message.into(),
    }
}

/// Replaces `path` with `data` (temp file, fsync, rename), keeping the old file's mode
/// and owner, or `mode` and root for a new file.
pub(crate) fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let (mode, uid, gid) = match std::fs::symlink_metadata(path) {
        Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
        Err(_) => (mode, 0, 0),
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.treeline-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| [l.as_str(), "\n"])
        .collect::<String>()
        .into_bytes()
}

/// An /etc/passwd or /etc/group style table.
struct Table {
    lines: Vec<String>,
}

impl Table {
    fn field(line: &str, i: usize) -> &str {
        line.split(':').nth(i).unwrap_or("")
    }
    fn find(&self, name: &str) -> Option<usize> {
        self.lines.iter().position(|l| Table::field(l, 0) == name)
    }
    fn id_owner(&self, id: u32) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| Table::field(l, 2) == id.to_string())
            .map(|l| Table::field(l, 0))
    }
    /// Replaces the line of `name` in place or appends it.
    fn put(&mut self, name: &str, line: String) {
        match self.find(name) {
            Some(i) => self.lines[i] = line,
            None => self.lines.push(line),
        }
    }
}

/// Adds the treefile's groups, then its users, to /etc/group, /etc/passwd and
/// /etc/shadow (existing entries of the same name are replaced in place, new ones
/// appended in treefile order), and creates missing home directories.
pub fn apply_users(root: &Path, tf: &Treefile) -> Result<()> {
    if tf.users.is_empty() && tf.groups.is_empty() {
        return Ok(());
    }
    let etc = root.join("etc");
    let mut group = Table {
        lines: read_lines(&etc.join("group"))?,
    };
    let mut passwd = Table {
        lines: read_lines(&etc.join("passwd"))?,
    };
    let mut shadow = Table {
        lines: read_lines(&etc.join("shadow"))?,
    };
    let add_group = |group: &mut Table, name: &str, gid: u32, members: &str| -> Result<()> {
        if let Some(other) = group.id_owner(gid)
            && other != name
        {
            return Err(tree_err(
                format!("group {name}"),
                format!("gid {gid} is already group {other}'s"),
            ));
        }
        group.put(name, format!("{name}:x:{gid}:{members}"));
        Ok(())
    };
    for g in &tf.groups {
        let members = group
            .find(&g.name)
            .map(|i| Table::field(&group.lines[i], 3).to_owned())
            .unwrap_or_default();
        add_group(&mut group, &g.name, g.gid, &members)?;
    }
    for u in &tf.users {
        let what = format!("user {}", u.name);
        if let Some(other) = passwd.id_owner(u.uid)
            && other != u.name
        {
            return Err(tree_err(
                what,
                format!("uid {} is already {other}'s", u.uid),
            ));
        }
        let gid = match u.gid {
            Some(g) => g,
            None => match group.find(&u.name) {
                Some(i) => Table::field(&group.lines[i], 2)
                    .parse()
                    .map_err(|_| tree_err(&what, format!("group {} has no numeric gid", u.name)))?,
                None => {
                    add_group(&mut group, &u.name, u.uid, "")?;
                    u.uid
                }
            },
        };
        let home = u
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", u.name));
        let shell = u.shell.as_deref().unwrap_or("/bin/sh");
        passwd.put(
            &u.name,
            format!("{}:x:{}:{gid}:{}:{home}:{shell}", u.name, u.uid, u.comment),
        );
        let password = u.password.as_deref().unwrap_or("!");
        // No last-change day: it would make the tree depend on the day it was built.
        shadow.put(&u.name, format!("{}:{password}:::::::", u.name));
        for g in &u.groups {
            let i = group.find(g).ok_or_else(|| {
                tree_err(
                    &what,
                    format!("group {g} is neither in the tree nor the treefile"),
                )
            })?;
            let line = &group.lines[i];
            let mut members: Vec<&str> = Table::field(line, 3)
                .split(',')
                .filter(|m| !m.is_empty())
                .collect();
            if !members.contains(&u.name.as_str()) {
                members.push(&u.name);
            }
            let head: Vec<&str> = line.split(':').take(3).collect();
            group.lines[i] = format!("{}:{}", head.join(":"), members.join(","));
        }
        let dir = root.join(home.trim_start_matches('/'));
        if home != "/" && std::fs::symlink_metadata(&dir).is_err() {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            std::os::unix::fs::chown(&dir, Some(u.uid), Some(gid)).map_err(io_err(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(&dir))?;
        }
    }
    replace_file(&etc.join("group"), &joined(&group.lines), 0o644)?;
    replace_file(&etc.join("passwd"), &joined(&passwd.lines), 0o644)?;
    replace_file(&etc.join("shadow"), &joined(&shadow.lines), 0o640)
}

/// `/etc/localtime` → `/usr/share/zoneinfo/ZONE` (which must be in the tree) and
/// `/etc/timezone`.
pub fn apply_timezone(root: &Path, zone: &str) -> Result<()> {
    let target = format!("/usr/share/zoneinfo/{zone}");
    let in_root = root.join(target.trim_start_matches('/'));
    // Not followed: a symlink in the tree may point anywhere on the host.
    if std::fs::symlink_metadata(&in_root).is_err() || in_root.is_dir() {
        return Err(tree_err(
            format!("timezone {zone}"),
            format!("{target} is not in the tree (is the tzdata package installed?)"),
        ));
    }
    let link = root.join("etc/localtime");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).map_err(io_err(&link))?;
    replace_file(
        &root.join("etc/timezone"),
        format!("{zone}\n").as_bytes(),
        0o644,
    )
}

/// The init system of the tree: configured, or found by its binary.
fn detect_init(root: &Path, configured: Option<Init>) -> Result<Init> {
    if let Some(i) = configured {
        return Ok(i);
    }
    let has = |paths: &[&str]| paths.iter().any(|p| root.join(p).exists());
    let openrc = has(&["sbin/openrc", "usr/sbin/openrc", "sbin/openrc-run"]);
    let systemd = has(&["usr/lib/systemd/systemd", "lib/systemd/systemd"]);
    match (openrc, systemd) {
        (true, false) => Ok(Init::Openrc),
        (false, true) => Ok(Init::Systemd),
        (true, true) => Err(tree_err(
            "services",
            "the tree has both OpenRC and systemd; set `init` in the treefile",
        )),
        (false, false) => Err(tree_err(
            "services",
            "the tree has neither OpenRC (/sbin/openrc) nor systemd (/usr/lib/systemd/systemd)",
        )),
    }
}

fn symlink_replacing(target: &str, link: &Path) -> Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.is_dir() => {
            return Err(tree_err(
                link.display().to_string(),
                "is a directory, not a symlink",
            ));
        }
        Ok(_) => std::fs::remove_file(link).map_err(io_err(link))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

/// Enables the treefile's services for the tree's init system.
pub fn enable_services(root: &Path, tf: &Treefile) -> Result<()> {
    if tf.services.is_empty() {
        return Ok(());
    }
    match detect_init(root, tf.init)? {
        Init::Openrc => {
            for s in &tf.services {
                let name = s.name();
                if !root.join("etc/init.d").join(name).is_file() {
                    return Err(tree_err(
                        format!("service {name}"),
                        format!("/etc/init.d/{name} is not in the tree"),
                    ));
                }
                let level = s.runlevel().unwrap_or("default");
                let dir = root.join("etc/runlevels").join(level);
                if !dir.is_dir() {
                    return Err(tree_err(
                        format!("service {name}"),
                        format!("runlevel {level} does not exist (no /etc/runlevels/{level})"),
                    ));
                }
                symlink_replacing(&format!("/etc/init.d/{name}"), &dir.join(name))?;
            }
        }
        Init::Systemd => {
            let mut done = BTreeSet::new();
            for s in &tf.services {
                if s.runlevel().is_some() {
                    return Err(tree_err(
                        format!("service {}", s.name()),
                        "runlevels are OpenRC's; this tree uses systemd",
                    ));
                }
                enable_unit(root, s.name(), &mut done)?;
            }
        }
    }
    Ok(())
}

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The unit file for `name` (or its template): its path inside the tree, as `/…`.
fn find_unit(root: &Path, name: &str) -> Option<String> {
    let template = name.split_once('@').and_then(|(prefix, rest)| {
        rest.rsplit_once('.')
            .map(|(_, ty)| format!("{prefix}@.{ty}"))
    });
    for candidate in std::iter::once(name.to_owned()).chain(template) {
        for dir in UNIT_DIRS {
            let rel = format!("{dir}/{candidate}");
            if std::fs::symlink_metadata(root.join(&rel)).is_ok() {
                return Some(format!("/{rel}"));
            }
        }
    }
    None
}

/// Reads a file of the tree, following symlinks inside the tree.
fn read_in_root(root: &Path, path: &str) -> std::io::Result<String> {
    let mut path = PathBuf::from(path);
    for _ in 0..16 {
        let host = root.join(path.strip_prefix("/").unwrap_or(&path));
        match std::fs::read_link(&host) {
            Ok(t) if t.is_absolute() => path = t,
            Ok(t) => path = path.parent().unwrap_or(Path::new("/")).join(t),
            Err(_) => return std::fs::read_to_string(host),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// The `[Install]` keys of a unit file (an empty assignment resets a key).
#[derive(Default, Debug, PartialEq, Eq)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
    also: Vec<String>,
    default_instance: Option<String>,
}

fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install || line.starts_with(['#', ';']) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let list = match k.trim() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                install.default_instance = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
                continue;
            }
            _ => continue,
        };
        if v.trim().is_empty() {
            list.clear();
        }
        list.extend(v.split_whitespace().map(str::to_owned));
    }
    install
}

/// What `systemctl enable NAME` links, from the unit's `[Install]` section.
fn enable_unit(root: &Path, name: &str, done: &mut BTreeSet<String>) -> Result<()> {
    if !done.insert(name.to_owned()) {
        return Ok(());
    }
    let what = format!("service {name}");
    let path = find_unit(root, name).ok_or_else(|| {
        tree_err(
            &what,
            "no such unit in /etc/systemd/system or /usr/lib/systemd/system",
        )
    })?;
    let text = read_in_root(root, &path).map_err(|e| tree_err(&what, format!("{path}: {e}")))?;
    let install = parse_install(&text);
    if install.wanted_by.is_empty()
        && install.required_by.is_empty()
        && install.alias.is_empty()
        && install.also.is_empty()
    {
        return Err(tree_err(
            &what,
            format!("{path} has no [Install] section to enable it by"),
        ));
    }
    // A template enabled as itself gets its default instance.
    let link_name = match name.split_once("@.") {
        Some((prefix, ty)) if !install.wanted_by.is_empty() || !install.required_by.is_empty() => {
            let inst = install.default_instance.as_deref().ok_or_else(|| {
                tree_err(
                    &what,
                    "a template without DefaultInstance needs an instance (name@instance.service)",
                )
            })?;
            format!("{prefix}@{inst}.{ty}")
        }
        _ => name.to_owned(),
    };
    let etc = root.join("etc/systemd/system");
    for (targets, suffix) in [
        (&install.wanted_by, "wants"),
        (&install.required_by, "requires"),
    ] {
        for t in targets {
            symlink_replacing(&path, &etc.join(format!("{t}.{suffix}")).join(&link_name))?;
        }
    }
    for a in &install.alias {
        symlink_replacing(&path, &etc.join(a))?;
    }
    for also in &install.also {
        enable_unit(root, also, done)?;
    }
    Ok(())
}

/// Runs the treefile's post-process scripts in the tree, in order, in the sandbox
/// (no network); the first failure stops the compose naming the script.
pub fn run_postprocess(root: &Path, tf: &Treefile, origin: &str) -> Result<()> {
    if tf.postprocess.is_empty() {
        return Ok(());
    }
    let sandbox = crate::script::Sandbox::detect();
    for (i, p) in tf.postprocess.iter().enumerate() {
        let label = p.label(i);
        let mut script = match (&p.script, &p.file) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(file)) => std::fs::read(file).map_err(io_err(file))?,
            (None, None) => continue,
        };
        if !script.starts_with(b"#!") {
            script.splice(0..0, b"#!/bin/sh\n".iter().copied());
        }
        sandbox.run_script(
            root,
            origin,
            &format!("postprocess script {label:?}"),
            &format!("/tmp/.treeline-postprocess-{i}"),
            &script,
            &[],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn treefile(extra: &str) -> Treefile {
        Treefile::parse(
            &format!("ref = \"r\"\ndistribution = \"alpine\"\nrepositories = [\"/r\"]\npackages = [\"x\"]\n{extra}"),
            Path::new("t.toml"),
            Path::new("/"),
        )
        .unwrap()
    }

    #[test]
    fn users_replace_entries_of_their_name_and_refuse_taken_ids() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/old:/bin/false\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:root\nwheel:x:10:root\n").unwrap();
        let tf = treefile(
            "[[users]]\nname = \"bob\"\nuid = 1000\nhome = \"/srv/bob\"\ngroups = [\"wheel\"]\n",
        );
        apply_users(r, &tf).unwrap();
        apply_users(r, &tf).unwrap();
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(
            read("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/srv/bob:/bin/sh\n"
        );
        assert_eq!(
            read("etc/group"),
            "root:x:0:root\nwheel:x:10:root,bob\nbob:x:1000:\n"
        );
        assert_eq!(read("etc/shadow"), "bob:!:::::::\n");
        assert_eq!(
            std::fs::metadata(r.join("srv/bob")).unwrap().mode() & 0o777,
            0o700
        );
        let taken = treefile("[[users]]\nname = \"eve\"\nuid = 0\n");
        let err = apply_users(r, &taken).unwrap_err().to_string();
        assert_eq!(err, "user eve: uid 0 is already root's");
        let missing = treefile("[[users]]\nname = \"eve\"\nuid = 7\ngroups = [\"nope\"]\n");
        let err = apply_users(r, &missing).unwrap_err().to_string();
        assert!(err.contains("group nope is neither"), "{err}");
    }

    #[test]
    fn install_section_keys_accumulate_and_reset() {
        let unit = "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=multi-user.target\n\
                    WantedBy=a.target b.target\nRequiredBy=\nAlias=sshd.service\n\
                    # WantedBy=c.target\nAlso=ssh.socket\n";
        let i = parse_install(unit);
        assert_eq!(i.wanted_by, ["multi-user.target", "a.target", "b.target"]);
        assert!(i.required_by.is_empty());
        assert_eq!(i.alias, ["sshd.service"]);
        assert_eq!(i.also, ["ssh.socket"]);
        let reset = parse_install("[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\n");
        assert_eq!(reset.wanted_by, ["b.target"]);
    }

    #[test]
    fn systemd_enable_links_what_install_names() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let dir = r.join("usr/lib/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ssh.service"),
            "[Service]\nExecStart=/usr/sbin/sshd\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("getty@.service"),
            "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("static.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let mut done = BTreeSet::new();
        enable_unit(r, "ssh.service", &mut done).unwrap();
        enable_unit(r, "getty@.service", &mut done).unwrap();
        enable_unit(r, "getty@tty2.service", &mut done).unwrap();
        let etc = r.join("etc/systemd/system");
        let link = |p: &str| std::fs::read_link(etc.join(p)).unwrap();
        assert_eq!(
            link("multi-user.target.wants/ssh.service"),
            Path::new("/usr/lib/systemd/system/ssh.service")
        );
        assert_eq!(
            link("sshd.service"),
            Path::new("/usr/lib/systemd/system/ssh.service")
        );
        assert_eq!(
            link("getty.target.wants/getty@tty1.service"),
            Path::new("/usr/lib/systemd/system/getty@.service")
        );
        assert_eq!(
            link("getty.target.wants/getty@tty2.service"),
            Path::new("/usr/lib/systemd/system/getty@.service")
        );
        let err = enable_unit(r, "static.service", &mut done)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [Install]"), "{err}");
        let err = enable_unit(r, "nosuch.service", &mut done)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch.service"), "{err}");
    }
}
