//! `treeline compose tree`: an Alpine tree composed from the 3.19 packages is one the real
//! apk (from the 3.19.4 minirootfs) accepts as its own, the real ostree's fsck passes, and
//! recomposing is reproducible and makes no new commit.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn alpine_repo() -> PathBuf {
    let dir = test_data().join("alpine/v3.19-standard-iso-apks");
    assert!(
        dir.join("x86_64/APKINDEX.tar.gz").is_file(),
        "missing test data {}",
        dir.display()
    );
    dir
}

fn init_repo(path: &Path) {
    run_ok(ostree(path).args(["init", "--mode=bare"]));
}

fn write_treefile(dir: &Path, packages: &[&str]) -> PathBuf {
    let keys = alpine_keys(&dir.join("keysroot"));
    let list: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "ref = \"alpine/3.19/x86_64/base\"\nversion = \"3.19.0\"\ndistribution = \"alpine\"\n\
         arch = \"x86_64\"\nrepositories = [{:?}]\nkeys = {:?}\npackages = [{}]\n\
         [metadata]\n\"org.example.variant\" = \"test\"\n",
        alpine_repo().display().to_string(),
        keys.display().to_string(),
        list.join(", ")
    );
    let path = dir.join("tree.toml");
    fs::write(&path, text).unwrap();
    path
}

fn compose_json(repo: &Path, treefile: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        tl(repo)
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(cache)
            .arg(treefile)
            .args(extra),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn apk_in(root: &Path, args: &[&str]) -> String {
    run_ok(
        tool("chroot")
            .arg(root)
            .args(["/sbin/apk", "--no-network"])
            .args(args),
    )
}

#[test]
fn compose_alpine_base_openssh_gives_a_tree_apk_accepts() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let cache = scratch.path().join("cache");
    init_repo(&repo);
    let treefile = write_treefile(scratch.path(), &["alpine-base", "openssh"]);

    // The plan: packages in install order, nothing downloaded yet, no commit.
    let plan = compose_json(&repo, &treefile, &cache, &["--dry-run"]);
    let planned: BTreeSet<String> = plan["packages"]
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
    assert!(planned.contains("busybox-1.36.1-r15"), "{planned:?}");
    assert!(planned.iter().any(|p| p.starts_with("openssh-server-")));
    let refs = run_ok(ostree(&repo).arg("refs"));
    assert!(
        !refs.contains("alpine/3.19"),
        "a dry run made a ref: {refs}"
    );

    let first = compose_json(&repo, &treefile, &cache, &[]);
    assert_eq!(first["changed"], true);
    let commit = first["commit"].as_str().unwrap().to_owned();
    let committed: BTreeSet<String> = first["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(committed, planned);
    run_ok(ostree(&repo).arg("fsck"));
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "alpine/3.19/x86_64/base"])).trim(),
        commit
    );
    let meta = run_ok(ostree(&repo).args(["show", "--print-metadata-key=version", &commit]));
    assert_eq!(meta.trim(), "'3.19.0'");
    let meta =
        run_ok(ostree(&repo).args(["show", "--print-metadata-key=treeline.packages", &commit]));
    assert!(meta.contains("'busybox-1.36.1-r15'"), "{meta}");

    // The real apk, inside a copy of the checkout, sees exactly the solved packages.
    let root = scratch.path().join("checkout");
    run_ok(
        ostree(&repo)
            .args(["checkout", "--force-copy", &commit])
            .arg(&root),
    );
    let listed: BTreeSet<String> = apk_in(&root, &["info", "-v"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, planned);
    // Every package file is as the database says.
    let audit = apk_in(&root, &["audit", "--system"]);
    assert_eq!(audit, "", "apk audit --system found differences");
    // In /etc only the configuration apk itself never owns shows up, as on the real
    // minirootfs: arch, world, repositories, keys.
    let audit = apk_in(&root, &["audit"]);
    for line in audit.lines() {
        assert!(line.starts_with("A etc/apk/"), "apk audit: {line}\n{audit}");
    }
    assert_eq!(
        fs::read_to_string(root.join("etc/apk/world")).unwrap(),
        "alpine-base\nopenssh\n"
    );
    // Busybox applets come from its post-install and trigger, not from any package.
    for applet in ["bin/ls", "bin/sh", "usr/bin/env", "sbin/ifconfig"] {
        let link = fs::read_link(root.join(applet)).unwrap_or_else(|e| panic!("{applet}: {e}"));
        assert_eq!(link, Path::new("/bin/busybox"), "{applet}");
    }
    // openssh's pre-install made its user, in the target's passwd.
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("sshd:")), "{passwd}");
    assert!(!root.join("lib/apk/exec").read_dir().unwrap().any(|_| true));

    // apk adds a further package from a local repository on top, purging nothing.
    let local = root.join("localrepo");
    run_ok(tool("cp").arg("-a").arg(alpine_repo()).arg(&local));
    let added = apk_in(&root, &["--repository", "/localrepo", "add", "chrony"]);
    assert!(!added.contains("Purging"), "{added}");
    let after = apk_in(&root, &["info", "-v"]);
    assert!(after.lines().any(|l| l == "chrony-4.5-r0"), "{after}");
    for p in &planned {
        assert!(after.lines().any(|l| l == p), "{p} gone after apk add");
    }

    // Nothing changed: no new commit.
    let again = compose_json(&repo, &treefile, &cache, &[]);
    assert_eq!(again["changed"], false);
    assert_eq!(again["commit"], commit.as_str());
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "alpine/3.19/x86_64/base"])).trim(),
        commit
    );

    // The same inputs in a fresh repository give the same commit.
    let repo2 = scratch.path().join("repo2");
    init_repo(&repo2);
    let other = compose_json(&repo2, &treefile, &cache, &[]);
    assert_eq!(other["commit"], commit.as_str());

    // --force commits anyway, on top of the previous commit.
    let forced = compose_json(&repo, &treefile, &cache, &["--force"]);
    assert_eq!(forced["changed"], true);
    assert_eq!(forced["parent"], commit.as_str());
    let no_changes = serde_json::json!({"added": [], "removed": [], "changed": []});
    assert_eq!(forced["changes"], no_changes);

    // One more package: a child commit whose changes name exactly it.
    let treefile = write_treefile(scratch.path(), &["alpine-base", "openssh", "tzdata"]);
    let grown = compose_json(&repo, &treefile, &cache, &[]);
    assert_eq!(grown["parent"], forced["commit"]);
    assert_eq!(
        grown["changes"],
        serde_json::json!({"added": ["tzdata-2023d-r0"], "removed": [], "changed": []})
    );
    run_ok(ostree(&repo).arg("fsck"));
}

#[test]
fn compose_treefile_typo_is_reported_with_its_line() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let treefile = scratch.path().join("bad.toml");
    fs::write(
        &treefile,
        "ref = \"x\"\ndistribution = \"alpine\"\nrepositories = [\"/r\"]\npackages = [\"a\"]\npackges = [\"b\"]\n",
    )
    .unwrap();
    let out = run_fail(tl(&repo).args(["compose", "tree"]).arg(&treefile));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("packges"), "{err}");
}

/// The records of an installed db without `r:` lines: apk 2.14 writes a file-less
/// package's `r:` into the next record (apk-format.md §4.1), which we do not copy.
fn records_without_replaces(db: &str) -> String {
    db.lines()
        .filter(|l| !l.starts_with("r:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn compose_database_matches_what_the_real_apk_writes() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let cache = scratch.path().join("cache");
    init_repo(&repo);
    let treefile = write_treefile(scratch.path(), &["alpine-base", "openssh"]);
    let composed = compose_json(&repo, &treefile, &cache, &[]);
    let ours = scratch.path().join("ours");
    run_ok(
        ostree(&repo)
            .args([
                "checkout",
                "--force-copy",
                composed["commit"].as_str().unwrap(),
            ])
            .arg(&ours),
    );

    // The oracle: the 3.19.4 minirootfs's apk installs the same request into a new root.
    let oracle = scratch.path().join("oracle");
    fs::create_dir_all(&oracle).unwrap();
    run_ok(
        tool("tar")
            .arg("-xzf")
            .arg(test_data().join("alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz"))
            .arg("-C")
            .arg(&oracle),
    );
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(alpine_repo())
            .arg(oracle.join("localrepo")),
    );
    fs::create_dir_all(oracle.join("newroot/etc/apk")).unwrap();
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(oracle.join("etc/apk/keys"))
            .arg(oracle.join("newroot/etc/apk/keys")),
    );
    apk_in(
        &oracle,
        &[
            "--root",
            "/newroot",
            "--initdb",
            "--repository",
            "/localrepo",
            "add",
            "alpine-base",
            "openssh",
        ],
    );
    let theirs = oracle.join("newroot");

    let read = |root: &Path, rel: &str| fs::read_to_string(root.join(rel)).unwrap();
    let our_db = read(&ours, "lib/apk/db/installed");
    assert_eq!(
        records_without_replaces(&our_db),
        records_without_replaces(&read(&theirs, "lib/apk/db/installed")),
        "installed databases differ"
    );
    // Our r: stays in the record of the package that declares it.
    assert!(
        our_db.contains("P:alpine-base\n") && our_db.contains("r:alpine-baselayout\n\n"),
        "alpine-base lost its replaces"
    );
    for rel in ["lib/apk/db/triggers", "etc/apk/world"] {
        assert_eq!(read(&ours, rel), read(&theirs, rel), "{rel} differs");
    }
    let listing = |root: &Path| {
        run_ok(
            tool("tar")
                .arg("-tvf")
                .arg(root.join("lib/apk/db/scripts.tar")),
        )
    };
    assert_eq!(listing(&ours), listing(&theirs), "scripts.tar differs");
}

#[test]
fn compose_unknown_package_names_it_and_leaves_the_ref() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let cache = scratch.path().join("cache");
    init_repo(&repo);
    let good = write_treefile(scratch.path(), &["busybox"]);
    let commit = compose_json(&repo, &good, &cache, &[])["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = write_treefile(scratch.path(), &["busybox", "no-such-package"]);
    let out = run_fail(
        tl(&repo)
            .args(["compose", "tree", "--cache-dir"])
            .arg(&cache)
            .arg(&bad),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-package"), "{err}");
    assert_eq!(err.matches("no-such-package").count(), 1, "repeated: {err}");
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "alpine/3.19/x86_64/base"])).trim(),
        commit
    );
}

/// Writes an unsigned apk repository at `dir` with one package, `failpkg`, whose
/// pre-install script fails (exit 3) after printing a message.
const MAKE_FAILING_REPO: &str = r##"
import gzip, hashlib, io, sys, tarfile, base64, os
out = sys.argv[1]
os.makedirs(f"{out}/x86_64", exist_ok=True)
def tar_bytes(entries, cut):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data); ti.mode = mode; ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    b = buf.getvalue()
    if cut:
        b = b.rstrip(b"\0")
        b += b"\0" * ((-len(b)) % 512)
    return b
def gz(b):
    return gzip.compress(b, mtime=0)
data = gz(tar_bytes([], False))
pkginfo = ("pkgname = failpkg\npkgver = 1.0-r0\narch = x86_64\nsize = 0\npkgdesc = fails\n"
           "builddate = 1700000000\ndepend = busybox\ndatahash = %s\n" % hashlib.sha256(data).hexdigest()).encode()
control = gz(tar_bytes([(".PKGINFO", pkginfo, 0o644), (".pre-install", b"#!/bin/sh\necho broken on purpose >&2\nexit 3\n", 0o755)], True))
apk = control + data
open(f"{out}/x86_64/failpkg-1.0-r0.apk", "wb").write(apk)
ident = "Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode()
index = (f"C:{ident}\nP:failpkg\nV:1.0-r0\nA:x86_64\nS:{len(apk)}\nI:0\nT:fails\nU:\nL:\nt:1700000000\nD:busybox\n\n").encode()
open(f"{out}/x86_64/APKINDEX.tar.gz", "wb").write(gz(tar_bytes([("APKINDEX", index, 0o644)], False)))
"##;

#[test]
fn compose_failing_script_names_it_and_makes_no_ref() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let local = scratch.path().join("local");
    let maker = scratch.path().join("mk.py");
    fs::write(&maker, MAKE_FAILING_REPO).unwrap();
    run_ok(tool("python3").arg(&maker).arg(&local));
    let treefile = scratch.path().join("fail.toml");
    fs::write(
        &treefile,
        format!(
            "ref = \"fail/test\"\ndistribution = \"alpine\"\nrepositories = [{:?}, {:?}]\n\
             packages = [\"busybox\", \"failpkg\"]\n",
            alpine_repo().display().to_string(),
            local.display().to_string()
        ),
    )
    .unwrap();
    let out = run_fail(
        tl(&repo)
            .args(["compose", "tree", "--cache-dir"])
            .arg(scratch.path().join("cache"))
            .arg(&treefile),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pre-install of failpkg-1.0-r0 failed"),
        "{err}"
    );
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("broken on purpose"), "{err}");
    let refs = run_ok(ostree(&repo).arg("refs"));
    assert!(!refs.contains("fail/test"), "{refs}");
    run_ok(ostree(&repo).arg("fsck"));
}
