//! apk v2 packages: the real Alpine 3.19 ISO packages verify against the minirootfs key
//! and match their index; damaged and hostile packages (made here from real ones or
//! built byte by byte) fail with errors that name the file and the problem.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha1::Digest as _;
use treeline_pkg::apk::{
    ApkIndex, ApkPackage, Checksum, EntryKind, Error, Keys, ScriptKind, SignatureAlgorithm,
};

fn keys(tmp: &Path) -> Keys {
    Keys::from_dir(&common::minirootfs_keys_dir(&tmp.join("rootfs-keys"))).unwrap()
}

fn iso_index() -> ApkIndex {
    ApkIndex::open(
        &common::alpine_repo().join("x86_64/APKINDEX.tar.gz"),
        "x86_64",
    )
    .unwrap()
}

fn apk(name: &str) -> PathBuf {
    common::alpine_repo().join("x86_64").join(name)
}

/// Opens, verifies and walks a package, reading every file fully.
fn check_all(path: &Path, keys: &Keys) -> Result<usize, Error> {
    let pkg = ApkPackage::open(path)?;
    pkg.verify(keys)?;
    walk_all(&pkg)
}

fn walk_all(pkg: &ApkPackage) -> Result<usize, Error> {
    let mut walk = pkg.data()?;
    let mut count = 0;
    while let Some(mut entry) = walk.next_entry()? {
        let mut sink = Vec::new();
        entry
            .read_to_end(&mut sink)
            .map_err(|e| Error::from_read_error(pkg.path(), e))?;
        count += 1;
    }
    Ok(count)
}

#[test]
fn every_iso_package_verifies_and_matches_its_index_record() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let index = iso_index();
    let by_name: HashMap<_, _> = index
        .packages()
        .iter()
        .map(|p| (format!("{}-{}.apk", p.name, p.version), p))
        .collect();
    let apks = common::alpine_repo_apks();
    assert_eq!(apks.len(), 100);
    let mut entries = 0;
    let mut hardlinks = 0;
    for path in &apks {
        let pkg = ApkPackage::open(path).unwrap();
        pkg.verify(&keys)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            pkg.verify_signature(&keys).unwrap(),
            "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
        );
        assert!(pkg.datahash().is_some());
        let file_name = path.file_name().unwrap().to_str().unwrap();
        let record = by_name
            .get(file_name)
            .unwrap_or_else(|| panic!("{file_name} not in the index"));
        assert_eq!(pkg.identity(), record.checksum, "{file_name}");
        pkg.check_identity(&record.checksum).unwrap();
        assert_eq!(pkg.file_size(), record.size, "{file_name}");
        assert_eq!(
            pkg.data_member().end,
            std::fs::metadata(path).unwrap().len()
        );

        // The index record is what apk derived from this file's .PKGINFO, except that
        // the index rewrites noarch to the repository arch.
        let meta = pkg.package_meta().unwrap();
        let mut from_file = meta.fields.clone();
        for (letter, value) in &mut from_file {
            if letter == "A" && value == "noarch" {
                *value = "x86_64".into();
            }
        }
        assert_eq!(from_file, record.fields, "{file_name}");
        assert_eq!(meta.depends, record.depends);
        assert_eq!(meta.provides, record.provides);

        let mut walk = pkg.data().unwrap();
        while let Some(mut entry) = walk.next_entry().unwrap() {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert_eq!(content.len() as u64, entry.size);
            if entry.kind == EntryKind::File {
                assert!(entry.checksum.is_some(), "{}: {}", file_name, entry.path);
            }
            hardlinks += usize::from(entry.kind == EntryKind::Hardlink);
            entries += 1;
        }
    }
    assert!(entries > 3000, "{entries} entries");
    assert!(
        hardlinks > 100,
        "{hardlinks} hard links (tzdata has hundreds)"
    );
}

#[test]
fn busybox_layout_scripts_and_identity() {
    let pkg = ApkPackage::open(&apk("busybox-1.36.1-r15.apk")).unwrap();
    assert_eq!(pkg.signature_member(), Some(0..662));
    assert_eq!(pkg.control_member(), 662..2300);
    assert_eq!(pkg.data_member(), 2300..506796);
    assert_eq!(pkg.identity(), "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=");
    assert_eq!(pkg.signatures().len(), 1);
    assert_eq!(pkg.signatures()[0].algorithm, SignatureAlgorithm::RsaSha1);
    assert_eq!(pkg.signatures()[0].bytes.len(), 512);
    let kinds: Vec<_> = pkg.scripts().iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            ScriptKind::PostInstall,
            ScriptKind::PostUpgrade,
            ScriptKind::Trigger
        ]
    );
    let real = common::run_ok(
        std::process::Command::new("tar")
            .arg("-xzOf")
            .arg(apk("busybox-1.36.1-r15.apk"))
            .arg(".trigger"),
    );
    assert_eq!(
        pkg.script(ScriptKind::Trigger).unwrap().bytes,
        real.as_bytes()
    );
    assert_eq!(
        pkg.pkginfo().get("triggers"),
        Some("/bin /usr/bin /sbin /usr/sbin /lib/modules/*")
    );
}

#[test]
fn alpine_base_dot_entry_is_skipped_and_hardlinks_inherit_checksums() {
    let base = ApkPackage::open(&apk("alpine-base-3.19.1-r0.apk")).unwrap();
    assert_eq!(
        walk_all(&base).unwrap(),
        0,
        "only .dummy, which apk ignores"
    );

    let tzdata = ApkPackage::open(&apk("tzdata-2023d-r0.apk")).unwrap();
    let mut walk = tzdata.data().unwrap();
    let mut checksums: HashMap<String, Checksum> = HashMap::new();
    let mut checked = 0;
    while let Some(entry) = walk.next_entry().unwrap() {
        match entry.kind {
            EntryKind::File => {
                checksums.insert(entry.path.clone(), entry.checksum.unwrap());
            }
            EntryKind::Hardlink => {
                let target = entry.link_target.clone().unwrap();
                assert_eq!(entry.checksum, Some(checksums[&target]), "{}", entry.path);
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(checked > 100);
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x5a;
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_flipped_byte_in_any_member_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let original = std::fs::read(apk("busybox-1.36.1-r15.apk")).unwrap();
    // Member ranges: signature 0..662, control 662..2300, data 2300..506796.
    let positions = [
        ("signature", vec![12, 100, 300, 655]),
        ("control", vec![662 + 12, 1000, 1800, 2295]),
        ("data", vec![2300 + 12, 3000, 250_000, 506_790]),
    ];
    let mut cases = 0;
    for (member, offsets) in positions {
        for at in offsets {
            let mut bytes = original.clone();
            flip(&mut bytes, at);
            let path = write(tmp.path(), &format!("flip-{at}.apk"), &bytes);
            let err = check_all(&path, &keys).expect_err(&format!("{member} byte {at} flipped"));
            let text = err.to_string();
            assert!(text.contains(&*path.to_string_lossy()), "{text}");
            if member == "data" {
                // verify() hashes the compressed data before anything is unpacked.
                assert!(matches!(err, Error::DatahashMismatch { .. }), "{text}");
                // Walking without verifying still notices.
                let pkg = ApkPackage::open(&path).unwrap();
                let walk_err = walk_all(&pkg).expect_err("walk of damaged data");
                assert!(
                    walk_err.to_string().contains(&*path.to_string_lossy()),
                    "{walk_err}"
                );
            }
            if member == "control" {
                assert!(
                    matches!(
                        err,
                        Error::BadSignature { .. }
                            | Error::BadGzip { .. }
                            | Error::Format { .. }
                            | Error::Truncated { .. }
                    ),
                    "{text}"
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 12);
}

#[test]
fn truncated_packages_are_reported_as_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let original = std::fs::read(apk("busybox-1.36.1-r15.apk")).unwrap();
    for len in [0usize, 1, 10, 400, 662, 1200, 2300, 2400, 100_000, 506_700] {
        let path = write(tmp.path(), &format!("cut-{len}.apk"), &original[..len]);
        let err = check_all(&path, &keys).expect_err(&format!("cut at {len}"));
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        match len {
            0 => assert!(matches!(err, Error::NotApk { .. }), "{len}: {text}"),
            1..=2300 => assert!(matches!(err, Error::Truncated { .. }), "{len}: {text}"),
            _ => {
                assert!(
                    matches!(err, Error::DatahashMismatch { .. }),
                    "{len}: {text}"
                );
                let walk_err = walk_all(&ApkPackage::open(&path).unwrap()).unwrap_err();
                assert!(
                    matches!(walk_err, Error::Truncated { .. }),
                    "{len}: {walk_err}"
                );
            }
        }
    }
}

#[test]
fn bad_gzip_and_non_apk_files() {
    let tmp = tempfile::tempdir().unwrap();
    let original = std::fs::read(apk("busybox-1.36.1-r15.apk")).unwrap();
    // Compression method 8 (deflate) is the only one gzip defines.
    let mut bytes = original.clone();
    bytes[2] = 7;
    let path = write(tmp.path(), "method.apk", &bytes);
    let err = ApkPackage::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadGzip {
                member: "signature",
                ..
            }
        ),
        "{err}"
    );
    let mut bytes = original.clone();
    bytes[2300 + 2] = 7;
    let path = write(tmp.path(), "data-method.apk", &bytes);
    let pkg = ApkPackage::open(&path).unwrap();
    let err = walk_all(&pkg).unwrap_err();
    assert!(
        matches!(err, Error::BadGzip { member: "data", .. }),
        "{err}"
    );

    let text = write(tmp.path(), "text.apk", b"hello, I am not a package\n");
    let err = ApkPackage::open(&text).unwrap_err();
    assert!(matches!(err, Error::NotApk { .. }), "{err}");
    assert!(err.to_string().contains("text.apk"), "{err}");

    // A gzipped tar that is not a package: its first entry is a data path.
    let err = ApkPackage::open(&common::data_file(
        "alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz",
    ))
    .unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    // An index is no package either.
    let err = ApkPackage::open(&common::alpine_repo().join("x86_64/APKINDEX.tar.gz")).unwrap_err();
    assert!(err.to_string().contains("DESCRIPTION"), "{err}");
}

#[test]
fn untrusted_and_wrong_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let keys_dir = common::minirootfs_keys_dir(&tmp.path().join("r"));
    let busybox = apk("busybox-1.36.1-r15.apk");
    let pkg = ApkPackage::open(&busybox).unwrap();

    let err = pkg.verify(&Keys::new()).unwrap_err();
    assert!(matches!(err, Error::UntrustedKey { .. }), "{err}");
    assert!(err.to_string().contains("6165ee59"), "{err}");

    // The right key under another name is untrusted: apk looks keys up by file name.
    let renamed = tmp.path().join("renamed");
    std::fs::create_dir(&renamed).unwrap();
    std::fs::copy(
        keys_dir.join("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
        renamed.join("my-key.rsa.pub"),
    )
    .unwrap();
    let err = pkg.verify(&Keys::from_dir(&renamed).unwrap()).unwrap_err();
    assert!(matches!(err, Error::UntrustedKey { .. }), "{err}");

    // Another key under the expected name: the signature is bad.
    let wrong = tmp.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::copy(
        keys_dir.join("alpine-devel@lists.alpinelinux.org-61666e3f.rsa.pub"),
        wrong.join("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
    )
    .unwrap();
    let err = pkg.verify(&Keys::from_dir(&wrong).unwrap()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("busybox-1.36.1-r15.apk"), "{err}");

    // A real aarch64 package signed by a key the x86_64 rootfs does not ship.
    let foreign = ApkPackage::open(&common::data_file(
        "alpine/misc/alpine-baselayout-3.2.0-r23.aarch64.apk",
    ))
    .unwrap();
    let err = foreign
        .verify(&Keys::from_dir(&keys_dir).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, Error::UntrustedKey { ref keys, .. } if keys[0].contains("616ae350")),
        "{err}"
    );
    assert_eq!(foreign.arch(), "aarch64");
    foreign.verify_datahash().unwrap();
}

#[test]
fn unsigned_package_keeps_its_identity_and_fails_only_signature_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let original = std::fs::read(apk("busybox-1.36.1-r15.apk")).unwrap();
    let path = write(tmp.path(), "unsigned.apk", &original[662..]);
    let pkg = ApkPackage::open(&path).unwrap();
    assert_eq!(pkg.signature_member(), None);
    assert_eq!(pkg.identity(), "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=");
    let err = pkg.verify(&keys).unwrap_err();
    assert!(matches!(err, Error::Unsigned { .. }), "{err}");
    assert!(err.to_string().contains("unsigned.apk"), "{err}");
    // Without verification (apk --allow-untrusted) the package is usable.
    pkg.verify_datahash().unwrap();
    assert!(walk_all(&pkg).unwrap() > 20);
}

// ---- building packages byte by byte ----

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

fn header(name: &[u8], typeflag: u8, size: u64, mode: u32, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn content(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.0.extend_from_slice(&header(
            b"PaxHeaders/x",
            b'x',
            body.len() as u64,
            0o644,
            b"",
        ));
        self.content(&body);
    }
    fn entry(&mut self, name: &str, typeflag: u8, content: &[u8], mode: u32, link: &[u8]) {
        self.0.extend_from_slice(&header(
            name.as_bytes(),
            typeflag,
            content.len() as u64,
            mode,
            link,
        ));
        self.content(content);
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, b'5', b"", 0o755, b"");
    }
    fn file(&mut self, name: &str, content: &[u8]) {
        let sum = hex::encode(sha1::Sha1::digest(content));
        self.pax(&[("APK-TOOLS.checksum.SHA1", sum.as_bytes())]);
        self.entry(name, b'0', content, 0o644, b"");
    }
    fn symlink(&mut self, name: &str, target: &str) {
        let sum = hex::encode(sha1::Sha1::digest(target.as_bytes()));
        self.pax(&[("APK-TOOLS.checksum.SHA1", sum.as_bytes())]);
        self.entry(name, b'2', b"", 0o777, target.as_bytes());
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const PKGINFO: &str = "pkgname = hello\npkgver = 1.0-r0\npkgdesc = test\nurl = \nbuilddate = 1700000000\nsize = 100\narch = x86_64\nlicense = MIT\ndepend = so:libc.musl-x86_64.so.1\n";

/// An unsigned package: cut control tar with `.PKGINFO` (+ datahash) and `data_tar`.
fn build_apk(pkginfo: &str, data_tar: &[u8], cut_control: bool) -> Vec<u8> {
    let data = gzip(data_tar);
    let pkginfo = format!(
        "{pkginfo}datahash = {}\n",
        hex::encode(sha2::Sha256::digest(&data))
    );
    let mut control = Tar::default();
    control.pax(&[("atime", b"0")]);
    control.entry(".PKGINFO", b'0', pkginfo.as_bytes(), 0o644, b"");
    control.entry(".post-install", b'0', b"#!/bin/sh\necho hi\n", 0o755, b"");
    let control = if cut_control {
        control.0
    } else {
        control.finish()
    };
    let mut out = gzip(&control);
    out.extend_from_slice(&data);
    out
}

fn hostile_error(tmp: &Path, name: &str, data_tar: Vec<u8>) -> Error {
    let path = write(tmp, name, &build_apk(PKGINFO, &data_tar, true));
    let pkg = ApkPackage::open(&path).unwrap();
    pkg.verify_datahash().unwrap();
    let err = walk_all(&pkg).expect_err(name);
    assert!(err.to_string().contains(name), "{err}");
    err
}

#[test]
fn built_package_reads_like_apk_would() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = Tar::default();
    data.entry(".dummy", b'0', b"", 0o644, b"");
    data.dir("usr/");
    data.dir("usr/bin/");
    data.file("usr/bin/hello", b"#!/bin/sh\necho hello\n");
    // Legacy abuild: a binary APK2 digest in a regular file's linkname.
    let mut legacy = Tar::default();
    let content = b"legacy";
    let sum = hex::encode(sha1::Sha1::digest(content));
    legacy.pax(&[
        ("APK-TOOLS.checksum.SHA1", sum.as_bytes()),
        ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
    ]);
    legacy.entry(
        "usr/bin/legacy",
        b'0',
        content,
        0o4755,
        b"\0\0\0APK2\x40\x00\x14\x00abc",
    );
    data.0.extend_from_slice(&legacy.0);
    data.entry("usr/bin/hello2", b'1', b"", 0o644, b"usr/bin/hello");
    data.symlink("usr/bin/hi", "hello");
    data.file("usr/bin/.keep_bin", b"");
    let path = write(
        tmp.path(),
        "hello.apk",
        &build_apk(PKGINFO, &data.finish(), true),
    );
    let pkg = ApkPackage::open(&path).unwrap();
    pkg.verify_datahash().unwrap();
    assert_eq!(pkg.name(), "hello");
    assert_eq!(pkg.scripts()[0].kind, ScriptKind::PostInstall);
    let meta = pkg.package_meta().unwrap();
    assert_eq!(
        meta.depends[0].alternatives[0].name,
        "so:libc.musl-x86_64.so.1"
    );
    let mut walk = pkg.data().unwrap();
    let mut seen = Vec::new();
    while let Some(mut entry) = walk.next_entry().unwrap() {
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        seen.push((
            entry.path.clone(),
            entry.kind,
            entry.mode,
            entry.link_target.clone(),
            entry.checksum.map(|c| c.to_string()),
            entry.xattrs.clone(),
        ));
    }
    let hello_sum =
        treeline_pkg::apk::q1_encode(&sha1::Sha1::digest(b"#!/bin/sh\necho hello\n").into());
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[0].0, "usr");
    assert_eq!(seen[2].4.as_deref(), Some(hello_sum.as_str()));
    assert_eq!(
        (seen[3].0.as_str(), seen[3].2, seen[3].3.clone()),
        ("usr/bin/legacy", 0o4755, None)
    );
    assert_eq!(
        seen[3].5,
        vec![(
            "security.capability".to_string(),
            b"\x01\x00\x00\x02".to_vec()
        )]
    );
    assert_eq!(seen[4].1, EntryKind::Hardlink);
    assert_eq!(
        seen[4].4.as_deref(),
        Some(hello_sum.as_str()),
        "hard link inherits"
    );
    assert_eq!(seen[5].1, EntryKind::Symlink);
    assert_eq!(seen[5].3.as_deref(), Some("hello"));
}

#[test]
fn hostile_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = || {
        let mut t = Tar::default();
        t.dir("etc/");
        t
    };
    let mut cases: Vec<(&str, Tar, &str)> = Vec::new();
    let mut t = base();
    t.file("/etc/passwd", b"x");
    cases.push(("absolute.apk", t, "absolute"));
    let mut t = base();
    t.file("etc/../../x", b"x");
    cases.push(("dotdot.apk", t, "'..'"));
    let mut t = base();
    t.file("../x", b"x");
    cases.push(("leading-dotdot.apk", t, "'..'"));
    let mut t = base();
    t.file("etc/./x", b"x");
    cases.push(("dot.apk", t, "'.'"));
    let mut t = base();
    t.file("etc/a\nb", b"x");
    cases.push(("control.apk", t, "control character"));
    let mut t = base();
    t.symlink("etc/link", "/");
    t.file("etc/link/shadow", b"x");
    cases.push(("through-symlink.apk", t, "symlink earlier"));
    let mut t = base();
    t.entry("etc/null", b'3', b"", 0o644, b"");
    cases.push(("chardev.apk", t, "device node"));
    let mut t = base();
    t.entry("etc/sda", b'4', b"", 0o644, b"");
    cases.push(("blockdev.apk", t, "device node"));
    let mut t = base();
    t.entry("etc/fifo", b'6', b"", 0o644, b"");
    cases.push(("fifo.apk", t, "fifo"));
    let mut t = base();
    t.entry("etc/hl", b'1', b"", 0o644, b"etc/passwd");
    cases.push(("hardlink-missing.apk", t, "not an earlier file"));
    let mut t = base();
    t.entry("etc/hl", b'1', b"", 0o644, b"etc/later");
    t.file("etc/later", b"x");
    cases.push(("hardlink-later.apk", t, "not an earlier file"));
    let mut t = base();
    t.entry("etc/hl", b'1', b"", 0o644, b"etc");
    cases.push(("hardlink-dir.apk", t, "not an earlier file"));
    for (name, tar, reason) in cases {
        let err = hostile_error(tmp.path(), name, tar.finish());
        assert!(matches!(err, Error::HostileEntry { .. }), "{name}: {err}");
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }
}

#[test]
fn content_that_differs_from_its_checksum_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tar::default();
    t.dir("etc/");
    t.pax(&[("APK-TOOLS.checksum.SHA1", hex::encode([0u8; 20]).as_bytes())]);
    t.entry("etc/motd", b'0', b"hello", 0o644, b"");
    let err = hostile_error(tmp.path(), "badsum.apk", t.finish());
    assert!(
        matches!(err, Error::ChecksumMismatch { ref entry, .. } if entry == "etc/motd"),
        "{err}"
    );

    // Skipping the content does not skip the check.
    let mut t = Tar::default();
    t.dir("etc/");
    t.pax(&[("APK-TOOLS.checksum.SHA1", hex::encode([0u8; 20]).as_bytes())]);
    t.entry("etc/motd", b'0', b"hello", 0o644, b"");
    t.file("etc/other", b"x");
    let path = write(
        tmp.path(),
        "badsum-skip.apk",
        &build_apk(PKGINFO, &t.finish(), true),
    );
    let pkg = ApkPackage::open(&path).unwrap();
    let mut walk = pkg.data().unwrap();
    let mut result = Ok(());
    loop {
        match walk.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    assert!(
        matches!(result, Err(Error::ChecksumMismatch { .. })),
        "{result:?}"
    );

    let mut t = Tar::default();
    t.dir("etc/");
    t.pax(&[("APK-TOOLS.checksum.SHA1", hex::encode([0u8; 20]).as_bytes())]);
    t.entry("etc/link", b'2', b"", 0o777, b"target");
    let err = hostile_error(tmp.path(), "badlink.apk", t.finish());
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}

#[test]
fn pkginfo_missing_fields_and_layout_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = Tar::default();
    data.dir("etc/");
    let data = data.finish();
    for field in ["pkgname", "pkgver", "arch"] {
        let pkginfo: String = PKGINFO
            .lines()
            .filter(|l| !l.starts_with(&format!("{field} =")))
            .map(|l| format!("{l}\n"))
            .collect();
        let path = write(
            tmp.path(),
            &format!("no-{field}.apk"),
            &build_apk(&pkginfo, &data, true),
        );
        let err = ApkPackage::open(&path).unwrap_err();
        assert!(
            matches!(err, Error::MissingField { field: f, .. } if f == field),
            "{field}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("no-{field}.apk")),
            "{err}"
        );
    }

    // A control tar with end-of-archive blocks is refused, as apk does (BAD archive).
    let path = write(tmp.path(), "uncut.apk", &build_apk(PKGINFO, &data, false));
    let err = ApkPackage::open(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("cut"), "{err}");

    // Control and data in one gzip member.
    let mut one = Tar::default();
    one.entry(".PKGINFO", b'0', PKGINFO.as_bytes(), 0o644, b"");
    one.dir("etc/");
    let path = write(tmp.path(), "one-member.apk", &gzip(&one.finish()));
    let err = ApkPackage::open(&path).unwrap_err();
    assert!(err.to_string().contains("separate gzip members"), "{err}");

    // Control only, no data member.
    let full = build_apk(PKGINFO, &data, true);
    let control_len = full.len() - gzip(&data).len();
    let path = write(tmp.path(), "no-data.apk", &full[..control_len]);
    let err = ApkPackage::open(&path).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");

    // A datahash that does not match.
    let other = gzip(b"other");
    let mut bytes = full[..control_len].to_vec();
    bytes.extend_from_slice(&other);
    let path = write(tmp.path(), "wrong-data.apk", &bytes);
    let err = ApkPackage::open(&path)
        .unwrap()
        .verify_datahash()
        .unwrap_err();
    assert!(matches!(err, Error::DatahashMismatch { .. }), "{err}");
}

fn openssl(args: &[&str]) {
    common::run_ok(std::process::Command::new("openssl").args(args));
}

#[test]
fn own_key_signatures_with_sha1_sha256_and_sha512_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("key.pem");
    let key = key.to_str().unwrap();
    openssl(&["genrsa", "-out", key, "2048"]);
    let keys_dir = dir.join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    let pubkey = keys_dir.join("test@example.org.rsa.pub");
    openssl(&[
        "rsa",
        "-in",
        key,
        "-pubout",
        "-out",
        pubkey.to_str().unwrap(),
    ]);
    let keys = Keys::from_dir(&keys_dir).unwrap();

    let mut data = Tar::default();
    data.dir("etc/");
    data.file("etc/motd", b"welcome\n");
    let unsigned = build_apk(PKGINFO, &data.finish(), true);
    let control_len = unsigned.len() - {
        let pkg = ApkPackage::open(&write(dir, "u.apk", &unsigned)).unwrap();
        (pkg.data_member().end - pkg.data_member().start) as usize
    };
    let control = write(dir, "control.gz", &unsigned[..control_len]);
    for (alg, digest) in [
        ("RSA", "-sha1"),
        ("RSA256", "-sha256"),
        ("RSA512", "-sha512"),
    ] {
        let sig = dir.join(format!("sig-{alg}"));
        openssl(&[
            "dgst",
            digest,
            "-sign",
            key,
            "-out",
            sig.to_str().unwrap(),
            control.to_str().unwrap(),
        ]);
        let sig = std::fs::read(&sig).unwrap();
        let mut sign_tar = Tar::default();
        sign_tar.entry(
            &format!(".SIGN.{alg}.test@example.org.rsa.pub"),
            b'0',
            &sig,
            0o644,
            b"",
        );
        let mut signed = gzip(&sign_tar.0);
        signed.extend_from_slice(&unsigned);
        let path = write(dir, &format!("signed-{alg}.apk"), &signed);
        let pkg = ApkPackage::open(&path).unwrap();
        pkg.verify(&keys).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(walk_all(&pkg).unwrap(), 2);
        // Same identity signed or not: the signature member is not part of it.
        assert_eq!(
            pkg.identity(),
            ApkPackage::open(&dir.join("u.apk")).unwrap().identity()
        );
        // The signature must cover this control member and no other.
        let mut tampered = signed.clone();
        let at = signed.len() - unsigned.len() + 20;
        flip(&mut tampered, at);
        let path = write(dir, &format!("tampered-{alg}.apk"), &tampered);
        if let Ok(pkg) = ApkPackage::open(&path) {
            let err = pkg.verify(&keys).unwrap_err();
            assert!(matches!(err, Error::BadSignature { .. }), "{alg}: {err}");
        }
    }
}
