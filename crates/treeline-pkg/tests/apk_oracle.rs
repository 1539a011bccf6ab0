//! The data walk against the real apk: install the ISO packages with the 3.19.4
//! minirootfs `apk` in a chroot, then compare every installed package's directories,
//! files, per-file checksums (`Z:`) and file modes (`a:`) in `lib/apk/db/installed`
//! with what our walk reads from the same `.apk`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use treeline_pkg::apk::{ApkIndex, ApkPackage, EntryKind, Keys};

#[derive(Default, Debug)]
struct DbPackage {
    name: String,
    version: String,
    dirs: Vec<String>,
    /// path -> (checksum, mode)
    files: BTreeMap<String, (Option<String>, u32)>,
    broken: bool,
}

fn parse_installed(text: &str) -> Vec<DbPackage> {
    let mut out = Vec::new();
    let mut pkg = DbPackage::default();
    let mut dir = String::new();
    let mut file: Option<String> = None;
    for line in text.split('\n') {
        if line.len() < 2 {
            if !pkg.name.is_empty() {
                out.push(std::mem::take(&mut pkg));
            }
            continue;
        }
        let (letter, value) = line.split_at(2);
        match letter {
            "P:" => pkg.name = value.into(),
            "V:" => pkg.version = value.into(),
            "f:" => pkg.broken = true,
            "F:" => {
                dir = value.into();
                pkg.dirs.push(dir.clone());
            }
            "R:" => {
                let path = if dir.is_empty() {
                    value.to_string()
                } else {
                    format!("{dir}/{value}")
                };
                pkg.files.insert(path.clone(), (None, 0o644));
                file = Some(path);
            }
            "Z:" => {
                if let Some(f) = &file {
                    pkg.files.get_mut(f).unwrap().0 = Some(value.into());
                }
            }
            "a:" => {
                if let Some(f) = &file {
                    let mode = value.split(':').nth(2).unwrap();
                    pkg.files.get_mut(f).unwrap().1 = u32::from_str_radix(mode, 8).unwrap();
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn data_walk_matches_what_real_apk_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::unpack_minirootfs("3.19.4", &root);
    std::fs::write(root.join("etc/apk/repositories"), "").unwrap();
    common::run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(common::alpine_repo())
            .arg(root.join("repo")),
    );
    let index = ApkIndex::open(
        &common::alpine_repo().join("x86_64/APKINDEX.tar.gz"),
        "x86_64",
    )
    .unwrap();
    // vlan conflicts with ifupdown-ng, and network-extras pulls vlan in.
    let names: Vec<&str> = index
        .packages()
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| *n != "vlan" && *n != "network-extras")
        .collect();
    common::run_ok(
        common::chroot_apk(&root)
            .args(["--repository", "/repo", "add"])
            .args(&names),
    );

    let keys = Keys::from_root(&root).unwrap();
    let installed = std::fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
    let mut compared = 0;
    let mut files_compared = 0;
    let mut hardlinks = 0;
    for db in parse_installed(&installed) {
        let apk = common::alpine_repo()
            .join("x86_64")
            .join(format!("{}-{}.apk", db.name, db.version));
        if !apk.exists() {
            // Kept at the minirootfs's newer version: no .apk to compare with.
            continue;
        }
        assert!(!db.broken, "apk flagged {} broken", db.name);
        let pkg = ApkPackage::open(&apk).unwrap();
        pkg.verify(&keys).unwrap();
        let mut dirs: Vec<String> = Vec::new();
        let mut files = BTreeMap::new();
        let mut walk = pkg.data().unwrap();
        while let Some(mut entry) = walk.next_entry().unwrap() {
            std::io::copy(&mut entry, &mut std::io::sink()).unwrap();
            match entry.kind {
                EntryKind::Dir => {
                    if !dirs.contains(&entry.path) {
                        dirs.push(entry.path.clone());
                    }
                }
                kind => {
                    hardlinks += usize::from(kind == EntryKind::Hardlink);
                    let mode = if kind == EntryKind::Symlink {
                        0o777
                    } else {
                        entry.mode
                    };
                    files.insert(
                        entry.path.clone(),
                        (entry.checksum.map(|c| c.to_string()), mode),
                    );
                }
            }
        }
        assert_eq!(dirs, db.dirs, "{}: directories", db.name);
        assert_eq!(files, db.files, "{}: files, checksums and modes", db.name);
        files_compared += files.len();
        compared += 1;
    }
    eprintln!("compared {compared} packages, {files_compared} files, {hardlinks} hard links");
    assert!(compared >= 80, "only {compared} packages compared");
    assert!(hardlinks > 100, "tzdata's hard links were compared");
    assert!(files_compared > 2000);
}
