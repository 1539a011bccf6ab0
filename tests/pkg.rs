//! `treeline pkg`: real Alpine and Debian packages imported into the store, checked
//! against what GNU tar and dpkg-deb extract from the same files, and against the real
//! ostree's fsck.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn alpine_packages() -> Vec<PathBuf> {
    let dir = test_data().join("alpine/v3.19-standard-iso-apks/x86_64");
    let mut v: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "apk"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 100,
        "expected the 100 ISO packages in {}",
        dir.display()
    );
    v
}

fn apk(name_prefix: &str) -> PathBuf {
    alpine_packages()
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {name_prefix}* package in the test data"))
}

/// What the real tools extract from an .apk: GNU tar reads the three gzip members as one
/// tar stream; apk leaves out the control entries (top-level dot files).
fn extract_apk_with_tar(file: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    run_ok(
        tool("tar")
            .arg("-xzf")
            .arg(file)
            .arg("-C")
            .arg(dest)
            .arg("--numeric-owner")
            .arg("--warning=no-unknown-keyword"),
    );
    for e in fs::read_dir(dest).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with('.') {
            fs::remove_file(&p).unwrap();
        }
    }
}

#[test]
fn every_alpine_package_imports_once_and_matches_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = alpine_keys(&tmp.path().join("root"));
    let repo = tmp.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode=bare"]));
    let mut import = tl(&repo);
    import
        .args(["pkg", "import", "--json", "--keys-dir"])
        .arg(&keys)
        .args(alpine_packages());
    let out: serde_json::Value = serde_json::from_str(&run_ok(&mut import)).unwrap();
    let list = out.as_array().unwrap();
    assert_eq!(list.len(), alpine_packages().len());
    assert!(list.iter().all(|p| p["reused"] == false));
    run_ok(ostree(&repo).arg("fsck"));

    // A second import reuses every commit and unpacks nothing.
    let out: serde_json::Value = serde_json::from_str(&run_ok(&mut import)).unwrap();
    assert!(out.as_array().unwrap().iter().all(|p| p["reused"] == true));

    // Checkouts equal what tar extracts (owners, modes, symlinks, content).
    for name in [
        "busybox-1.36.1",
        "alpine-baselayout-3",
        "ca-certificates-bundle",
        "tzdata",
    ] {
        let file = apk(name);
        let entry = list
            .iter()
            .find(|p| {
                file.file_name().unwrap().to_string_lossy()
                    == format!(
                        "{}-{}.apk",
                        p["name"].as_str().unwrap(),
                        p["version"].as_str().unwrap()
                    )
            })
            .unwrap_or_else(|| panic!("{} not in the import report", file.display()));
        let expected = tmp.path().join(format!("tar-{name}"));
        extract_apk_with_tar(&file, &expected);
        let checkout = tmp.path().join(format!("co-{name}"));
        run_ok(
            ostree(&repo)
                .arg("checkout")
                .arg(entry["ref_name"].as_str().unwrap())
                .arg(&checkout),
        );
        assert_same_tree(
            &snapshot(&expected, true, false),
            &snapshot(&checkout, true, false),
            name,
        );
    }
}

#[test]
fn debian_packages_import_and_match_dpkg_deb() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode=bare"]));
    let debs: Vec<PathBuf> = ["hello", "tzdata", "base-files", "openssh-server"]
        .iter()
        .map(|n| debian_package(n))
        .collect();
    let out = run_ok(tl(&repo).args(["pkg", "import", "--json"]).args(&debs));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    run_ok(ostree(&repo).arg("fsck"));
    for (deb, entry) in debs.iter().zip(list.as_array().unwrap()) {
        let expected = tmp
            .path()
            .join(format!("x-{}", entry["name"].as_str().unwrap()));
        run_ok(tool("dpkg-deb").arg("-x").arg(deb).arg(&expected));
        let checkout = tmp
            .path()
            .join(format!("co-{}", entry["name"].as_str().unwrap()));
        run_ok(
            ostree(&repo)
                .arg("checkout")
                .arg(entry["ref_name"].as_str().unwrap())
                .arg(&checkout),
        );
        assert_same_tree(
            &snapshot(&expected, true, false),
            &snapshot(&checkout, true, false),
            &deb.display().to_string(),
        );
        // The control files travel with the commit.
        let shown = run_ok(
            tl(&repo)
                .args(["show", "--json"])
                .arg(entry["commit"].as_str().unwrap()),
        );
        assert!(shown.contains("treeline.pkg.control"), "{shown}");
    }
}

#[test]
fn corrupted_package_is_refused_and_nothing_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = alpine_keys(&tmp.path().join("root"));
    let repo = tmp.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode=archive"]));
    let good = apk("busybox-1.36.1");
    let mut bytes = fs::read(&good).unwrap();
    // A byte deep inside the data member (the last of the three gzip members).
    let pos = bytes.len() - 1000;
    bytes[pos] ^= 0x40;
    let bad = tmp.path().join("busybox-1.36.1-r15.apk");
    fs::write(&bad, &bytes).unwrap();

    let out = run_fail(
        tl(&repo)
            .args(["pkg", "verify", "--keys-dir"])
            .arg(&keys)
            .arg(&bad),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("busybox-1.36.1-r15.apk") && err.contains("FAILED"),
        "{err}"
    );

    let out = run_fail(
        tl(&repo)
            .args(["pkg", "import", "--keys-dir"])
            .arg(&keys)
            .arg(&bad),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busybox-1.36.1-r15.apk"), "{err}");
    assert_eq!(
        run_ok(tl(&repo).arg("refs")).trim(),
        "",
        "no ref for a refused package"
    );
    run_ok(ostree(&repo).arg("fsck"));

    // The intact package still imports into the same repository afterwards.
    run_ok(
        tl(&repo)
            .args(["pkg", "import", "--keys-dir"])
            .arg(&keys)
            .arg(&good),
    );
    run_ok(ostree(&repo).arg("fsck"));
}

#[test]
fn info_and_contents_describe_the_package() {
    let file = apk("busybox-1.36.1");
    let out = run_ok(treeline().args(["pkg", "info", "--json"]).arg(&file));
    let meta: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(meta["name"], "busybox");
    assert_eq!(meta["version"], "1.36.1-r15");
    assert_eq!(meta["checksum"], "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=");
    let listing = run_ok(treeline().args(["pkg", "contents"]).arg(&file));
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" bin/busybox") && l.starts_with("-0755")),
        "{listing}"
    );

    let deb = debian_package("hello");
    let out = run_ok(treeline().args(["pkg", "info", "--json"]).arg(&deb));
    let meta: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(meta["name"], "hello");
    let ours: Vec<String> = run_ok(treeline().args(["pkg", "contents"]).arg(&deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    let theirs: Vec<String> = run_ok(tool("dpkg-deb").arg("-c").arg(&deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches("./").trim_end_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(ours, theirs);
}

/// The set `apk add --simulate` installs into an empty root from the ISO repository, as
/// `name-version` lines, sorted.
fn apk_simulated_set(scratch: &Path, requests: &[&str]) -> Vec<String> {
    let root = scratch.join("apk-root");
    if !root.join("sbin/apk").exists() {
        fs::create_dir_all(&root).unwrap();
        run_ok(
            tool("tar")
                .arg("-xzf")
                .arg(test_data().join("alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz"))
                .arg("-C")
                .arg(&root)
                .arg("--numeric-owner"),
        );
        run_ok(
            tool("cp")
                .arg("-a")
                .arg(test_data().join("alpine/v3.19-standard-iso-apks"))
                .arg(root.join("repo")),
        );
    }
    // An empty apk root: the database files, the arch and the trusted keys.
    let target = root.join("target");
    let _ = fs::remove_dir_all(&target);
    for dir in ["lib/apk/db", "etc/apk", "var/cache/apk"] {
        fs::create_dir_all(target.join(dir)).unwrap();
    }
    for file in [
        "lib/apk/db/installed",
        "lib/apk/db/triggers",
        "etc/apk/world",
    ] {
        fs::write(target.join(file), b"").unwrap();
    }
    fs::write(target.join("etc/apk/arch"), b"x86_64\n").unwrap();
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(root.join("etc/apk/keys"))
            .arg(target.join("etc/apk/keys")),
    );
    let out = run_ok(
        tool("chroot")
            .arg(&root)
            .args([
                "/sbin/apk",
                "--no-network",
                "--root",
                "/target",
                "--initdb",
                "--repository",
                "/repo",
                "--keys-dir",
                "/etc/apk/keys",
                "add",
                "--simulate",
            ])
            .args(requests),
    );
    // "(3/18) Installing musl (1.2.4_git20230717-r4)"
    let mut set: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" Installing ")?.1;
            let (name, version) = rest.split_once(" (")?;
            Some(format!("{name}-{}", version.trim_end_matches(')')))
        })
        .collect();
    set.sort();
    assert!(!set.is_empty(), "apk installed nothing: {out}");
    set
}

#[test]
fn resolve_fetch_and_import_from_an_alpine_repository_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = alpine_keys(&tmp.path().join("root"));
    let served = test_data().join("alpine/v3.19-standard-iso-apks");
    let nginx = Nginx::start(&served, &tmp.path().join("nginx"));
    let cache = tmp.path().join("cache");
    let requests = ["alpine-base", "openssh", "chrony"];
    let source = |cmd: &mut std::process::Command| {
        cmd.arg("--apk-repo")
            .arg(&nginx.url)
            .arg("--keys-dir")
            .arg(&keys)
            .arg("--cache-dir")
            .arg(&cache);
    };

    let mut resolve = treeline();
    resolve.args(["pkg", "resolve", "--json"]);
    source(&mut resolve);
    resolve.args(requests);
    let solved: serde_json::Value = serde_json::from_str(&run_ok(&mut resolve)).unwrap();
    let mut ours: Vec<String> = solved
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    ours.sort();
    assert_eq!(ours, apk_simulated_set(tmp.path(), &requests));

    let repo = tmp.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode=bare-user"]));
    let mut import = tl(&repo);
    import.args(["pkg", "import", "--json"]);
    source(&mut import);
    import.args(requests);
    let imported: serde_json::Value = serde_json::from_str(&run_ok(&mut import)).unwrap();
    assert_eq!(imported.as_array().unwrap().len(), ours.len());
    run_ok(ostree(&repo).arg("fsck"));
    let after_first = nginx.requests();

    // Again: the cache holds every package, the store every commit; only the index is
    // fetched.
    let imported: serde_json::Value = serde_json::from_str(&run_ok(&mut import)).unwrap();
    assert!(
        imported
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["reused"] == true)
    );
    assert_eq!(
        nginx.requests(),
        after_first + 1,
        "only the index is fetched again"
    );

    // A conflict is explained, naming both sides.
    let mut conflict = treeline();
    conflict.args(["pkg", "resolve"]);
    source(&mut conflict);
    conflict.args(["ifupdown-ng", "vlan"]);
    let out = run_fail(&mut conflict);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vlan") && err.contains("ifupdown-ng"), "{err}");
}
