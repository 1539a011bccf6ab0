//! `.deb` reading against dpkg-deb and tar: real packages from the host's mirror (via
//! `apt-get download`) and packages built here with `dpkg-deb --build` in every
//! compression.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use md5::Digest;
use treeline_pkg::deb::{DebPackage, EntryKind, Error};

use common::{apt_download, run_ok};

/// One line of `tar -tv` / `dpkg-deb -c`, or the same rendered from our walk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    kind: char,
    mode: u32,
    owner: String,
    size: u64,
    path: String,
    target: Option<String>,
}

/// Parses `tar -tv` output (dpkg-deb -c is the same): perms, owner, size, date, time, name.
fn parse_tar_listing(text: &str) -> Vec<Listed> {
    text.lines()
        .map(|line| {
            let mut rest = line;
            let mut tokens = Vec::new();
            for _ in 0..5 {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap();
                tokens.push(&rest[..end]);
                rest = &rest[end..];
            }
            let name = &rest[1..];
            let perms: Vec<char> = tokens[0].chars().collect();
            let kind = perms[0];
            let (name, target) = match kind {
                'l' => {
                    let (name, target) = name.split_once(" -> ").unwrap();
                    (name, Some(target.to_owned()))
                }
                'h' => {
                    let (name, target) = name.split_once(" link to ").unwrap();
                    (name, Some(normalize(target)))
                }
                _ => (name, None),
            };
            Listed {
                kind,
                mode: mode_of(&perms),
                owner: tokens[1].to_owned(),
                size: tokens[2].parse().unwrap(),
                path: normalize(name),
                target,
            }
        })
        .collect()
}

fn normalize(name: &str) -> String {
    let name = name.strip_prefix("./").unwrap_or(name);
    name.strip_suffix('/').unwrap_or(name).to_owned()
}

/// Permission bits from an `ls`-style string (`-rwsr-xr-x`, `drwxrwxrwt`).
fn mode_of(p: &[char]) -> u32 {
    let mut mode = 0;
    let bits = [
        (1, 'r', 0o400),
        (2, 'w', 0o200),
        (4, 'r', 0o40),
        (5, 'w', 0o20),
        (7, 'r', 0o4),
        (8, 'w', 0o2),
    ];
    for (i, c, bit) in bits {
        if p[i] == c {
            mode |= bit;
        }
    }
    for (i, exec, special) in [(3, 0o100, 0o4000), (6, 0o10, 0o2000), (9, 0o1, 0o1000)] {
        match p[i] {
            'x' => mode |= exec,
            's' | 't' => mode |= exec | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    mode
}

/// What our walk saw: the named and numeric listings, and the md5 of every file read.
struct Walk {
    named: Vec<Listed>,
    numeric: Vec<Listed>,
    md5: HashMap<String, String>,
    checked_md5: usize,
}

fn walk(deb: &Path) -> Result<Walk, Error> {
    let package = DebPackage::open(deb)?;
    let mut data = package.into_data()?;
    let mut walk = Walk {
        named: Vec::new(),
        numeric: Vec::new(),
        md5: HashMap::new(),
        checked_md5: 0,
    };
    for entry in data.entries()? {
        let mut entry = entry?;
        let kind = match entry.kind {
            EntryKind::Dir => 'd',
            EntryKind::File => '-',
            EntryKind::Symlink => 'l',
            EntryKind::Hardlink => 'h',
        };
        if entry.kind == EntryKind::File {
            let mut content = Vec::new();
            entry
                .read_to_end(&mut content)
                .map_err(|e| Error::from_io(deb, e))?;
            assert_eq!(content.len() as u64, entry.size, "{}", entry.path);
            if entry.expected_md5.is_some() {
                walk.checked_md5 += 1;
            }
            walk.md5
                .insert(entry.path.clone(), hex::encode(md5::Md5::digest(&content)));
        }
        let owner_name = |name: &Option<String>, id: u64| name.clone().unwrap_or(id.to_string());
        let listed = Listed {
            kind,
            mode: entry.mode,
            owner: format!(
                "{}/{}",
                owner_name(&entry.uname, entry.uid),
                owner_name(&entry.gname, entry.gid)
            ),
            size: entry.size,
            path: entry.path.clone(),
            target: entry.link_target.clone(),
        };
        walk.numeric.push(Listed {
            owner: format!("{}/{}", entry.uid, entry.gid),
            ..listed.clone()
        });
        walk.named.push(listed);
    }
    data.finish()?;
    Ok(walk)
}

/// Renders control fields the way `dpkg-deb -f` prints them.
fn render_fields(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(name, value)| {
            if value.starts_with('\n') {
                format!("{name}:{value}\n")
            } else {
                format!("{name}: {value}\n")
            }
        })
        .collect()
}

/// Checks one package against dpkg-deb and tar; returns (entries, md5s checked).
fn check_against_dpkg(deb: &Path) -> (usize, usize) {
    let package = DebPackage::open(deb).unwrap();
    let control = package.control();

    // Control fields, in order, exactly as dpkg-deb prints them.
    let dpkg_fields = run_ok(Command::new("dpkg-deb").arg("-f").arg(deb));
    assert_eq!(
        render_fields(&control.fields.fields),
        dpkg_fields,
        "{}",
        deb.display()
    );

    // Every control member with its bytes and mode, as dpkg-deb -e extracts them.
    let extracted = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(extracted.path()),
    );
    let mut on_disk: Vec<_> = std::fs::read_dir(extracted.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.permissions().mode() & 0o7777,
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    on_disk.sort();
    let mut ours: Vec<_> = control
        .members
        .iter()
        .map(|m| (m.name.clone(), m.mode, m.data.clone()))
        .collect();
    ours.sort();
    assert_eq!(
        ours.iter().map(|m| (&m.0, m.1)).collect::<Vec<_>>(),
        on_disk.iter().map(|m| (&m.0, m.1)).collect::<Vec<_>>(),
        "{}",
        deb.display()
    );
    assert_eq!(ours, on_disk, "{}", deb.display());

    // The package meta: fields as dpkg-deb -f reads them one by one.
    let meta = package.meta("amd64").unwrap();
    let field = |name: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
            .trim_end()
            .to_owned()
    };
    assert_eq!(meta.name, field("Package"));
    assert_eq!(meta.version, field("Version"));
    assert_eq!(meta.arch, field("Architecture"));
    let installed_size = field("Installed-Size");
    let installed_kib: u64 = if installed_size.is_empty() {
        0
    } else {
        installed_size.parse().unwrap()
    };
    assert_eq!(meta.installed_size, installed_kib * 1024);
    assert_eq!(meta.size, std::fs::metadata(deb).unwrap().len());
    assert_eq!(meta.fields, control.fields.fields);

    // The data listing: names as dpkg-deb -c shows them, numbers as tar --numeric-owner.
    let walked = walk(deb).unwrap_or_else(|e| panic!("{e}"));
    let dpkg_listing = parse_tar_listing(&run_ok(Command::new("dpkg-deb").arg("-c").arg(deb)));
    assert_eq!(walked.named, dpkg_listing, "{}", deb.display());
    let numeric = run_ok(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -tv --numeric-owner",
        deb.display()
    )));
    assert_eq!(
        walked.numeric,
        parse_tar_listing(&numeric),
        "{}",
        deb.display()
    );

    // Every md5sums line matches what we read (and the walk verified the same ones).
    for (path, md5) in &control.md5sums {
        let actual = walked.md5.get(path).unwrap_or_else(|| {
            // dh_md5sums lists hardlinked files too; their content is the target's.
            let target = walked
                .named
                .iter()
                .find(|l| &l.path == path)
                .and_then(|l| l.target.clone())
                .unwrap_or_else(|| panic!("{}: md5sums lists {path}, not in data", deb.display()));
            walked.md5.get(&target).unwrap()
        });
        assert_eq!(actual, md5, "{}: {path}", deb.display());
    }
    (walked.named.len(), control.md5sums.len())
}

#[test]
fn real_packages_match_dpkg_deb() {
    let names = [
        "base-files",
        "coreutils",
        "libc6",
        "openssh-server",
        "tzdata",
        "sudo",
        "passwd",
        "e2fsprogs",
    ];
    let (mut entries, mut md5s) = (0, 0);
    for name in names {
        let deb = apt_download(name);
        let (e, m) = check_against_dpkg(&deb);
        entries += e;
        md5s += m;
    }
    eprintln!(
        "{} real packages: {entries} data entries and {md5s} md5sums lines agree with dpkg-deb/tar",
        names.len()
    );
    // What these packages are known for, so the checks above covered it.
    let coreutils = DebPackage::open(apt_download("coreutils")).unwrap();
    let meta = coreutils.meta("amd64").unwrap();
    assert!(meta.essential);
    assert!(
        meta.pre_depends
            .iter()
            .any(|d| d.alternatives[0].name == "libc6")
    );
    let ssh = DebPackage::open(apt_download("openssh-server")).unwrap();
    assert!(
        ssh.control()
            .conffiles
            .iter()
            .any(|c| c == "/etc/default/ssh")
    );
    assert!(
        ssh.control()
            .member("postinst")
            .is_some_and(|m| m.mode == 0o755)
    );
    let sudo = walk(&apt_download("sudo")).unwrap();
    assert!(
        sudo.named
            .iter()
            .any(|l| l.path == "usr/bin/sudo" && l.mode == 0o4755)
    );
    let tzdata = walk(&apt_download("tzdata")).unwrap();
    assert!(tzdata.named.iter().filter(|l| l.kind == 'l').count() > 100);
}

/// A package tree with the odd cases: special modes, symlinks (relative, absolute,
/// dangling, long target), a hardlink, long names, spaces, an empty and a larger file, a
/// file owned by ids without names.
fn build_tree(root: &Path) {
    let write = |rel: &str, content: &[u8], mode: u32| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "DEBIAN/control",
        b"Package: tl-odd\nVersion: 1:2.0~rc1-1\nArchitecture: all\nMaintainer: T <t@example.org>\n\
Pre-Depends: dpkg (>= 1.19)\nDepends: a | b (>= 1), c:any\nProvides: virt (= 2)\n\
Description: odd cases\n for the reader\n .\n   verbatim line\n",
        0o644,
    );
    write("DEBIAN/conffiles", b"/etc/tl-odd.conf\n", 0o644);
    write("DEBIAN/postinst", b"#!/bin/sh\nexit 0\n", 0o755);
    write(
        "DEBIAN/templates",
        b"Template: tl-odd/q\nType: boolean\n",
        0o644,
    );
    write("etc/tl-odd.conf", b"key=value\n", 0o644);
    write("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    write("usr/bin/suid", b"suid", 0o4755);
    write("usr/share/tl-odd/empty", b"", 0o644);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write("usr/share/tl-odd/big.bin", &big, 0o600);
    write("usr/share/tl-odd/with space.txt", b"spaces", 0o644);
    let long_dir = format!("usr/share/tl-odd/{}", "d".repeat(60));
    let long_file = format!("{long_dir}/{}", "f".repeat(90));
    write(&long_file, b"long", 0o644);
    write("usr/share/tl-odd/owned", b"ids", 0o640);
    std::os::unix::fs::chown(
        root.join("usr/share/tl-odd/owned"),
        Some(54321),
        Some(54322),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/tmp-sticky")).unwrap();
    std::fs::set_permissions(
        root.join("var/tmp-sticky"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/setgid")).unwrap();
    std::fs::set_permissions(
        root.join("var/setgid"),
        std::fs::Permissions::from_mode(0o2775),
    )
    .unwrap();
    let link =
        |target: &str, rel: &str| std::os::unix::fs::symlink(target, root.join(rel)).unwrap();
    link("tool", "usr/bin/rel");
    link("/usr/bin/tool", "usr/bin/abs");
    link("../nowhere/at/all", "usr/bin/dangling");
    link(
        &format!("../share/tl-odd/{}", "t".repeat(120)),
        "usr/bin/long-target",
    );
    std::fs::hard_link(
        root.join("usr/bin/tool"),
        root.join("usr/bin/tool-hardlink"),
    )
    .unwrap();
    // md5sums from the real md5sum, conffiles excluded as dh_md5sums does.
    let sums = run_ok(
        Command::new("sh")
            .current_dir(root)
            .arg("-c")
            .arg("find usr -type f -print0 | sort -z | xargs -0 md5sum"),
    );
    write("DEBIAN/md5sums", sums.as_bytes(), 0o644);
}

fn dpkg_build(tree: &Path, out: &Path, compression: &str, root_owner: bool) {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg(format!("-Z{compression}"));
    if root_owner {
        cmd.arg("--root-owner-group");
    }
    cmd.arg("--build").arg(tree).arg(out);
    run_ok(&mut cmd);
}

#[test]
fn built_packages_in_every_compression_match_dpkg_deb() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    build_tree(&tree);
    for (compression, suffix) in [
        ("gzip", ".gz"),
        ("xz", ".xz"),
        ("zstd", ".zst"),
        ("none", ""),
    ] {
        for root_owner in [true, false] {
            let deb = dir
                .path()
                .join(format!("tl-odd-{compression}-{root_owner}.deb"));
            dpkg_build(&tree, &deb, compression, root_owner);
            let members = run_ok(Command::new("ar").arg("t").arg(&deb));
            assert!(
                members.lines().any(|m| m == format!("data.tar{suffix}")),
                "{members}"
            );
            let (entries, md5s) = check_against_dpkg(&deb);
            assert!(entries >= 20 && md5s == 8, "{entries} entries, {md5s} md5s");
            let walked = walk(&deb).unwrap();
            assert_eq!(walked.checked_md5, 7, "hardlink content is not re-read");
            let hardlink = walked
                .named
                .iter()
                .find(|l| l.kind == 'h')
                .expect("dpkg-deb keeps the hardlink");
            assert_eq!(hardlink.target.as_deref(), Some("usr/bin/tool"));
            let owned = walked
                .numeric
                .iter()
                .find(|l| l.path == "usr/share/tl-odd/owned")
                .unwrap();
            let expected_owner = if root_owner { "0/0" } else { "54321/54322" };
            assert_eq!(owned.owner, expected_owner);
            let package = DebPackage::open(&deb).unwrap();
            let meta = package.meta("amd64").unwrap();
            assert_eq!(meta.version, "1:2.0~rc1-1");
            assert_eq!(meta.depends.len(), 2);
            assert_eq!(meta.provides[0].version.as_deref(), Some("2"));
            assert_eq!(
                package.control().get("Description"),
                Some("odd cases\n for the reader\n .\n   verbatim line")
            );
        }
    }
}

#[test]
fn md5_mismatch_names_package_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    build_tree(&tree);
    let sums = std::fs::read_to_string(tree.join("DEBIAN/md5sums")).unwrap();
    let line = sums.lines().find(|l| l.ends_with("usr/bin/suid")).unwrap();
    let bad = sums.replace(line, &format!("{}  usr/bin/suid", "0".repeat(32)));
    std::fs::write(tree.join("DEBIAN/md5sums"), bad).unwrap();
    let deb = dir.path().join("bad-md5.deb");
    dpkg_build(&tree, &deb, "xz", true);
    let err = walk(&deb)
        .err()
        .expect("md5 mismatch must fail")
        .to_string();
    assert!(
        err.starts_with(&deb.display().to_string())
            && err.contains("usr/bin/suid: md5 ")
            && err.contains(&format!("does not match md5sums ({})", "0".repeat(32))),
        "{err}"
    );
    // With verification off the same package reads.
    let package = DebPackage::open(&deb).unwrap();
    let mut data = package.into_data().unwrap();
    data.set_verify_md5(false);
    for entry in data.entries().unwrap() {
        let mut entry = entry.unwrap();
        std::io::copy(&mut entry, &mut std::io::sink()).unwrap();
    }
    data.finish().unwrap();
}
