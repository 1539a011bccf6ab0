//! APKINDEX.tar.gz: the real ISO, v3.19 main/community and v3.16 main indexes parse
//! into as many packages as `grep -c '^P:'` counts in their text, every record's fields
//! reproduce the text line for line, and the signatures verify with the minirootfs keys.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use treeline_pkg::apk::{ApkIndex, Error, Keys};

fn index_text(path: &Path) -> String {
    common::run_ok(Command::new("tar").arg("-xzOf").arg(path).arg("APKINDEX"))
}

fn grep_count(path: &Path) -> usize {
    let out = Command::new("sh")
        .arg("-c")
        .arg("tar -xzOf \"$1\" APKINDEX | grep -c '^P:'")
        .arg("sh")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn real_indexes_parse_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::from_dir(&common::minirootfs_keys_dir(tmp.path())).unwrap();
    let cases = [
        (
            common::alpine_repo().join("x86_64/APKINDEX.tar.gz"),
            100,
            "3.19.1",
        ),
        (
            common::data_file("alpine/indexes/v3.19-main-x86_64-APKINDEX.tar.gz"),
            5443,
            "v3.19.1-643-gec825d20535",
        ),
        (
            common::data_file("alpine/indexes/v3.19-community-x86_64-APKINDEX.tar.gz"),
            17587,
            "v3.19.1-642-g9e5b575ce97",
        ),
        (
            common::data_file("alpine/indexes/v3.16-main-x86_64-APKINDEX.tar.gz"),
            4929,
            "v3.16.3-13-g4d933a1fa3",
        ),
    ];
    for (path, expected, description) in cases {
        let index = ApkIndex::open(&path, "x86_64").unwrap();
        assert_eq!(grep_count(&path), expected, "{}", path.display());
        assert_eq!(index.packages().len(), expected, "{}", path.display());
        assert_eq!(index.description(), description);
        assert_eq!(
            index.verify(&keys).unwrap(),
            "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
        );
        // `fields` keeps every line: joined back they are the index text.
        let rebuilt: String = index
            .packages()
            .iter()
            .map(|p| {
                let mut record: String =
                    p.fields.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
                record.push('\n');
                record
            })
            .collect();
        assert!(
            rebuilt == index_text(&path),
            "{}: fields do not round-trip",
            path.display()
        );
        for p in index.packages() {
            assert_eq!(p.location, format!("x86_64/{}-{}.apk", p.name, p.version));
            assert!(p.checksum.starts_with("Q1") && p.checksum.len() == 30);
        }
    }
}

#[test]
fn index_relations_match_the_text() {
    let path = common::data_file("alpine/indexes/v3.19-main-x86_64-APKINDEX.tar.gz");
    let index = ApkIndex::open(&path, "x86_64").unwrap();
    let ifupdown = index
        .packages()
        .iter()
        .find(|p| p.name == "ifupdown-ng")
        .unwrap();
    assert!(ifupdown.conflicts.iter().any(|a| a.name == "vlan"));
    let binsh = index
        .packages()
        .iter()
        .find(|p| p.name == "busybox-binsh")
        .unwrap();
    assert!(
        binsh
            .provides
            .iter()
            .any(|p| p.name == "/bin/sh" && p.version.is_none())
    );
    assert_eq!(binsh.provider_priority, Some(100));
    // Every D: atom is either a requirement or a conflict, in order.
    let text = index_text(&path);
    let atoms: usize = text
        .lines()
        .filter_map(|l| l.strip_prefix("D:"))
        .map(|d| d.split(' ').filter(|a| !a.is_empty()).count())
        .sum();
    let parsed: usize = index
        .packages()
        .iter()
        .map(|p| p.depends.len() + p.conflicts.len())
        .sum();
    assert_eq!(parsed, atoms);
    let install_if: usize = text
        .lines()
        .filter_map(|l| l.strip_prefix("i:"))
        .filter(|l| !l.contains('!'))
        .map(|d| d.split(' ').filter(|a| !a.is_empty()).count())
        .sum();
    assert_eq!(
        index
            .packages()
            .iter()
            .map(|p| p.install_if.len())
            .sum::<usize>(),
        install_if
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An unsigned index holding `text` as APKINDEX, made with the host's tar.
fn make_index(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let work = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("DESCRIPTION"), "test\n").unwrap();
    std::fs::write(work.join("APKINDEX"), text).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&work)
        .args(["--format=gnu", "-cf", "-", "DESCRIPTION", "APKINDEX"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let path = dir.join(name);
    std::fs::write(&path, gzip(&tar.stdout)).unwrap();
    path
}

#[test]
fn malformed_and_tampered_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::from_dir(&common::minirootfs_keys_dir(tmp.path())).unwrap();
    let good = "C:Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=\nP:a\nV:1.0-r0\nA:x86_64\nS:1\nI:1\n\n";

    let path = make_index(tmp.path(), "ok.tar.gz", good);
    let index = ApkIndex::open(&path, "x86_64").unwrap();
    assert_eq!(index.packages().len(), 1);
    let err = index.verify(&keys).unwrap_err();
    assert!(matches!(err, Error::Unsigned { .. }), "{err}");

    let path = make_index(
        tmp.path(),
        "bad-line.tar.gz",
        &format!("{good}P:b\nV:1\nbroken line\n\n"),
    );
    let err = ApkIndex::open(&path, "x86_64").unwrap_err();
    assert!(matches!(err, Error::IndexLine { line: 10, .. }), "{err}");
    assert!(err.to_string().contains("bad-line.tar.gz"), "{err}");

    let path = make_index(
        tmp.path(),
        "bad-size.tar.gz",
        &format!("{good}P:b\nV:1\nS:x\n\n"),
    );
    let err = ApkIndex::open(&path, "x86_64").unwrap_err();
    assert!(matches!(err, Error::IndexLine { line: 10, .. }), "{err}");

    // An unknown upper-case letter makes that one package uninstallable.
    let path = make_index(
        tmp.path(),
        "future.tar.gz",
        &format!("{good}P:b\nV:1\nQ:new\n\n"),
    );
    let index = ApkIndex::open(&path, "x86_64").unwrap();
    assert_eq!(index.packages().len(), 1);
    let path = make_index(
        tmp.path(),
        "lower.tar.gz",
        &format!("{good}P:b\nV:1\nz:new\n\n"),
    );
    assert_eq!(ApkIndex::open(&path, "x86_64").unwrap().packages().len(), 2);

    // Damage in the signed member breaks the signature (or the gzip stream).
    let real = std::fs::read(common::alpine_repo().join("x86_64/APKINDEX.tar.gz")).unwrap();
    let index = ApkIndex::open(
        &common::alpine_repo().join("x86_64/APKINDEX.tar.gz"),
        "x86_64",
    )
    .unwrap();
    let start = index.index_member().start as usize;
    for at in [start + 20, start + 1000, real.len() - 3] {
        let mut bytes = real.clone();
        bytes[at] ^= 0x20;
        let path = tmp.path().join(format!("flip-{at}.tar.gz"));
        std::fs::write(&path, &bytes).unwrap();
        let err = match ApkIndex::open(&path, "x86_64") {
            Ok(index) => index.verify(&keys).unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains(&format!("flip-{at}")), "{err}");
    }
    let path = tmp.path().join("cut.tar.gz");
    std::fs::write(&path, &real[..real.len() / 2]).unwrap();
    let err = ApkIndex::open(&path, "x86_64").unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}
