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
        .map(|p| {
            format!(
                "{}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
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
    assert!(meta.contains("('busybox', '1.36.1-r15')"), "{meta}");

    // The real apk, inside the tree as a deployment sees it, sees exactly the solved
    // packages.
    let root = scratch.path().join("checkout");
    deployment_root(&repo, &commit, &root);
    let listed: BTreeSet<String> = apk_in(&root, &["info", "-v"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, planned);
    // Every package file is as the database says.
    let audit = apk_in(&root, &["audit", "--system"]);
    assert_eq!(audit, "", "apk audit --system found differences");
    // In /etc only the configuration apk itself never owns shows up, as on the real
    // minirootfs (arch, world, repositories, keys), and /etc/os-release, which the OSTree
    // layout makes a symlink to /usr/lib/os-release.
    let audit = apk_in(&root, &["audit"]);
    for line in audit.lines() {
        assert!(
            line.starts_with("A etc/apk/") || line == "U etc/os-release",
            "apk audit: {line}\n{audit}"
        );
    }
    assert_eq!(
        fs::read_link(root.join("etc/os-release")).unwrap(),
        Path::new("../usr/lib/os-release")
    );
    // The OSTree layout: /usr merged, /var made at boot from tmpfiles.d.
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        assert_eq!(fs::read_link(root.join(link)).unwrap(), Path::new(target));
    }
    assert_eq!(
        fs::read_link(root.join("home")).unwrap(),
        Path::new("var/home")
    );
    assert!(root.join("var/cache/apk").is_dir());
    assert_eq!(
        fs::read_link(root.join("var/run")).unwrap(),
        Path::new("/run")
    );
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
        serde_json::json!({"added": [{"name": "tzdata", "version": "2023d-r0"}], "removed": [], "changed": []})
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

/// An installed db without the file entries (`R:` and its `a:`/`Z:` lines) of `paths`.
fn without_files(db: &str, paths: &[&str]) -> String {
    let mut out = String::new();
    let (mut dir, mut skipping) = (String::new(), false);
    for line in db.lines() {
        if let Some(d) = line.strip_prefix("F:") {
            dir = d.to_owned();
            skipping = false;
        } else if let Some(name) = line.strip_prefix("R:") {
            skipping = paths.contains(&format!("{dir}/{name}").as_str());
        } else if !line.starts_with("a:") && !line.starts_with("Z:") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_ne!(
        out.len(),
        db.len() + usize::from(!db.ends_with('\n')),
        "none of {paths:?} in the db"
    );
    out
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
    deployment_root(&repo, composed["commit"].as_str().unwrap(), &ours);

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
    // The usr merge turns libssl3's and libcrypto3's compatibility symlinks
    // `usr/lib/X -> ../../lib/X` into the files themselves (reached as lib/X too), so
    // our database no longer lists the symlinks (docs/treefile.md, "The OSTree layout").
    let collapsed = ["usr/lib/libssl.so.3", "usr/lib/libcrypto.so.3"];
    assert_eq!(
        records_without_replaces(&our_db),
        records_without_replaces(&without_files(
            &read(&theirs, "lib/apk/db/installed"),
            &collapsed
        )),
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

/// Writes an unsigned apk repository at `argv[1]` with the packages of the JSON list
/// `argv[2]`: `{name, version, depends, files: [[path, text, mode]], scripts: {".pre-install": text}}`.
const MAKE_LOCAL_REPO: &str = r##"
import gzip, hashlib, io, sys, tarfile, base64, os, json
out = sys.argv[1]
os.makedirs(f"{out}/x86_64", exist_ok=True)
def tar_bytes(entries, cut):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode, pax in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000; ti.mode = mode; ti.pax_headers = pax
            if data is None:
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    b = buf.getvalue()
    if cut:
        b = b.rstrip(b"\0")
        b += b"\0" * ((-len(b)) % 512)
    return b
def gz(b):
    return gzip.compress(b, mtime=0)
index = b""
for p in json.loads(sys.argv[2]):
    entries, dirs = [], set()
    for path, text, mode in p.get("files", []):
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d); entries.append((d, None, 0o755, {}))
        data = text.encode()
        entries.append((path, data, mode, {"APK-TOOLS.checksum.SHA1": hashlib.sha1(data).hexdigest()}))
    data = gz(tar_bytes(entries, False))
    deps = " ".join(p.get("depends", []))
    pkginfo = (f"pkgname = {p['name']}\npkgver = {p['version']}\narch = x86_64\nsize = 0\npkgdesc = test\n"
               f"builddate = 1700000000\n" + (f"depend = {deps}\n" if deps else "") +
               f"datahash = {hashlib.sha256(data).hexdigest()}\n").encode()
    control = [(".PKGINFO", pkginfo, 0o644, {})]
    control += [(k, v.encode(), 0o755, {}) for k, v in p.get("scripts", {}).items()]
    control = gz(tar_bytes(control, True))
    apk = control + data
    open(f"{out}/x86_64/{p['name']}-{p['version']}.apk", "wb").write(apk)
    ident = "Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode()
    index += (f"C:{ident}\nP:{p['name']}\nV:{p['version']}\nA:x86_64\nS:{len(apk)}\nI:0\nT:test\nU:\nL:\n"
              f"t:1700000000\n" + (f"D:{deps}\n" if deps else "") + "\n").encode()
open(f"{out}/x86_64/APKINDEX.tar.gz", "wb").write(gz(tar_bytes([("APKINDEX", index, 0o644, {})], False)))
"##;

fn make_local_repo(scratch: &Path, packages: serde_json::Value) -> PathBuf {
    let local = scratch.join("local");
    let maker = scratch.join("mk.py");
    fs::write(&maker, MAKE_LOCAL_REPO).unwrap();
    run_ok(
        tool("python3")
            .arg(&maker)
            .arg(&local)
            .arg(packages.to_string()),
    );
    local
}

#[test]
fn compose_failing_script_names_it_and_makes_no_ref() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let local = make_local_repo(
        scratch.path(),
        serde_json::json!([{
            "name": "failpkg", "version": "1.0-r0", "depends": ["busybox"],
            "scripts": {".pre-install": "#!/bin/sh\necho broken on purpose >&2\nexit 3\n"},
        }]),
    );
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

/// A treefile split in two: a base with users, groups, timezone, services and a
/// post-process script, and a variant that includes it with a templated version.
fn write_feature_treefiles(dir: &Path, extra_packages: &[&str]) -> PathBuf {
    let keys = alpine_keys(&dir.join("keysroot"));
    fs::write(
        dir.join("base.toml"),
        format!(
            "ref = \"alpine/test/features\"\ndistribution = \"alpine\"\nrepositories = [{:?}]\n\
             keys = {:?}\npackages = [\"alpine-baselayout\", \"busybox\", \"openrc\", \"tzdata\"]\n\
             exclude-packages = [\"busybox-suid\"]\ntimezone = \"Europe/Berlin\"\n\
             services = [\"networking\", {{ name = \"hostname\", runlevel = \"boot\" }}]\n\
             [[groups]]\nname = \"ops\"\ngid = 2000\n\
             [[users]]\nname = \"alice\"\nuid = 1500\ncomment = \"Alice\"\ngroups = [\"ops\", \"wheel\"]\n\
             [[postprocess]]\nname = \"stamp\"\nscript = \"echo \\\"$(id -u) $(ls /etc/runlevels/boot)\\\" > /usr/share/stamp\"\n",
            alpine_repo().display().to_string(),
            keys.display().to_string(),
        ),
    )
    .unwrap();
    let list: Vec<String> = extra_packages.iter().map(|p| format!("{p:?}")).collect();
    let path = dir.join("variant.toml");
    fs::write(
        &path,
        format!(
            "include = [\"base.toml\"]\nversion = \"1.{{date}}.{{n}}\"\npackages = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    path
}

fn compose_at_epoch(
    repo: &Path,
    treefile: &Path,
    cache: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let out = run_ok(
        tl(repo)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(cache)
            .arg(treefile)
            .args(extra),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

#[test]
fn compose_treefile_features_and_db_diff_of_an_added_package() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let cache = scratch.path().join("cache");
    init_repo(&repo);
    let treefile = write_feature_treefiles(scratch.path(), &[]);
    let flags = ["--static-delta", "--update-summary"];
    let first = compose_at_epoch(&repo, &treefile, &cache, &flags);
    let commit = first["commit"].as_str().unwrap().to_owned();
    let version = run_ok(ostree(&repo).args(["show", "--print-metadata-key=version", &commit]));
    assert_eq!(version.trim(), "'1.20231114.0'");
    // exclude-packages kept busybox-suid (which alpine-baselayout does not need) out.
    let list = run_ok(tl(&repo).args(["db", "list", &commit]));
    assert!(list.lines().any(|l| l == "busybox 1.36.1-r15"), "{list}");
    assert!(!list.contains("busybox-suid"), "{list}");

    let root = scratch.path().join("root");
    deployment_root(&repo, &commit, &root);
    let read = |rel: &str| fs::read_to_string(root.join(rel)).unwrap();
    assert!(
        read("etc/passwd")
            .lines()
            .any(|l| l == "alice:x:1500:1500:Alice:/home/alice:/bin/sh"),
        "{}",
        read("etc/passwd")
    );
    let group = read("etc/group");
    assert!(group.lines().any(|l| l == "alice:x:1500:"), "{group}");
    assert!(group.lines().any(|l| l == "ops:x:2000:alice"), "{group}");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("wheel:x:10:") && l.ends_with("alice")),
        "{group}"
    );
    assert!(read("etc/shadow").lines().any(|l| l == "alice:!:::::::"));
    // The home directory is state: it comes back at boot from tmpfiles.d, owned by alice.
    let home = fs::metadata(root.join("home/alice")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1500, 1500, 0o700)
    );
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(read("etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        fs::read_link(root.join("etc/runlevels/default/networking")).unwrap(),
        Path::new("/etc/init.d/networking")
    );
    assert_eq!(
        fs::read_link(root.join("etc/runlevels/boot/hostname")).unwrap(),
        Path::new("/etc/init.d/hostname")
    );
    // The post-process script ran as root in the tree, after the services were enabled.
    assert_eq!(read("usr/share/stamp"), "0 hostname\n");

    // The delta from scratch and the summary, as the real ostree sees them.
    let deltas = run_ok(ostree(&repo).args(["static-delta", "list"]));
    assert_eq!(deltas.trim(), commit, "{deltas}");
    let summary = run_ok(ostree(&repo).args(["summary", "--view"]));
    assert!(
        summary.contains("alpine/test/features") && summary.contains(&commit),
        "{summary}"
    );

    // Unchanged: no commit, although the counter would have moved.
    let again = compose_at_epoch(&repo, &treefile, &cache, &[]);
    assert_eq!(
        (again["changed"].as_bool(), again["commit"].as_str()),
        (Some(false), Some(commit.as_str()))
    );

    // The same inputs in a fresh repository give the same commit.
    let repo2 = scratch.path().join("repo2");
    init_repo(&repo2);
    assert_eq!(
        compose_at_epoch(&repo2, &treefile, &cache, &[])["commit"],
        commit.as_str()
    );

    // One package more: a child whose db diff names exactly it; the counter goes up.
    let treefile = write_feature_treefiles(scratch.path(), &["zlib"]);
    let grown = compose_at_epoch(&repo, &treefile, &cache, &flags);
    let child = grown["commit"].as_str().unwrap().to_owned();
    assert_eq!(grown["parent"], commit.as_str());
    let version = run_ok(ostree(&repo).args(["show", "--print-metadata-key=version", &child]));
    assert_eq!(version.trim(), "'1.20231114.1'");
    let diff = run_ok(tl(&repo).args(["db", "diff", "--json", &commit, "alpine/test/features"]));
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    assert_eq!(
        diff,
        serde_json::json!({"added": [{"name": "zlib", "version": "1.3.1-r0"}], "removed": [], "changed": []})
    );
    let text = run_ok(tl(&repo).args(["db", "diff", &child, &commit]));
    assert_eq!(text, "- zlib 1.3.1-r0\n");
    let deltas = run_ok(ostree(&repo).args(["static-delta", "list"]));
    assert!(
        deltas
            .lines()
            .any(|l| l.trim() == format!("{commit}-{child}")),
        "{deltas}"
    );
    let summary = run_ok(ostree(&repo).args(["summary", "--view"]));
    assert!(summary.contains(&child), "{summary}");
    run_ok(ostree(&repo).arg("fsck"));
}

#[test]
fn compose_failing_postprocess_or_missing_zone_names_it_and_makes_no_ref() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let cache = scratch.path().join("cache");
    init_repo(&repo);
    let head = format!(
        "ref = \"fail/pp\"\ndistribution = \"alpine\"\nrepositories = [{:?}]\npackages = [\"busybox\"]\n",
        alpine_repo().display().to_string()
    );
    let cases = [
        (
            "[[postprocess]]\nname = \"break-it\"\nscript = \"echo no good >&2; exit 4\"\n",
            vec![
                "postprocess script \"break-it\"",
                "exit status: 4",
                "no good",
            ],
        ),
        (
            "timezone = \"Mars/Olympus\"\n",
            vec!["timezone Mars/Olympus: /usr/share/zoneinfo/Mars/Olympus is not in the tree"],
        ),
        (
            "services = [\"sshd\"]\ninit = \"openrc\"\n",
            vec!["service sshd: /etc/init.d/sshd is not in the tree"],
        ),
    ];
    for (tail, expected) in cases {
        let treefile = scratch.path().join("fail.toml");
        fs::write(&treefile, format!("{head}{tail}")).unwrap();
        let out = run_fail(
            tl(&repo)
                .args(["compose", "tree", "--cache-dir"])
                .arg(&cache)
                .arg(&treefile),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        for e in expected {
            assert!(err.contains(e), "{e:?} not in {err}");
        }
        let refs = run_ok(ostree(&repo).arg("refs"));
        assert!(!refs.contains("fail/pp"), "{refs}");
    }
}

#[test]
fn compose_kernel_package_lands_in_usr_lib_modules() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let kver = "6.6.14-0-virt";
    let local = make_local_repo(
        scratch.path(),
        serde_json::json!([{
            "name": "linux-test", "version": "6.6.14-r0", "depends": ["busybox"],
            "files": [
                ["boot/vmlinuz-virt", "a kernel\n", 0o644],
                ["boot/config-virt", "CONFIG_X=y\n", 0o644],
                ["boot/System.map-virt", "map\n", 0o644],
                [format!("lib/modules/{kver}/modules.dep"), "", 0o644],
            ],
        }]),
    );
    let treefile = scratch.path().join("kernel.toml");
    fs::write(
        &treefile,
        format!(
            "ref = \"kernel/test\"\ndistribution = \"alpine\"\nrepositories = [{:?}, {:?}]\n\
             packages = [\"busybox\"]\nkernel = \"linux-test\"\n",
            alpine_repo().display().to_string(),
            local.display().to_string()
        ),
    )
    .unwrap();
    // The kernel brings no initramfs: without a treeline-boot to be its /init, the
    // compose fails naming the kernel and the ref is not made.
    let missing = scratch.path().join("no-treeline-boot");
    let fail = run_fail(
        tl(&repo)
            .args(["compose", "tree", "--cache-dir"])
            .arg(scratch.path().join("cache"))
            .arg(&treefile)
            .arg("--boot-init")
            .arg(&missing),
    );
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(
        err.contains("kernel linux-test: initramfs") && err.contains("no-treeline-boot"),
        "{err}"
    );
    assert!(!run_ok(tl(&repo).arg("refs")).contains("kernel/test"));

    let boot = static_boot();
    let out = compose_json(
        &repo,
        &treefile,
        &scratch.path().join("cache"),
        &["--boot-init", boot.to_str().unwrap()],
    );
    let commit = out["commit"].as_str().unwrap();
    let cat = |path: &str| run_ok(ostree(&repo).args(["cat", commit, path]));
    assert_eq!(
        cat(&format!("/usr/lib/modules/{kver}/vmlinuz")),
        "a kernel\n"
    );
    // Compose built the initramfs from the tree's (empty) module index: a zstd archive
    // whose /init is treeline-boot.
    let cpio = run_ok(
        tool("sh")
            .arg("-c")
            .arg("ostree --repo=\"$1\" cat \"$2\" \"$3\" | zstd -dc | cpio -it --quiet")
            .arg("sh")
            .arg(&repo)
            .arg(commit)
            .arg(format!("/usr/lib/modules/{kver}/initramfs.img")),
    );
    assert!(cpio.lines().any(|l| l == "init"), "{cpio}");
    assert!(
        cpio.lines()
            .any(|l| l == format!("usr/lib/modules/{kver}/modules.load-order")),
        "{cpio}"
    );
    assert_eq!(
        cat(&format!("/usr/lib/modules/{kver}/config")),
        "CONFIG_X=y\n"
    );
    assert_eq!(cat(&format!("/usr/lib/modules/{kver}/System.map")), "map\n");
    let boot = run_ok(ostree(&repo).args(["ls", commit, "/boot"]));
    assert_eq!(boot.lines().count(), 1, "/boot is not empty:\n{boot}");

    // The real ostree deploys the composed tree: it finds the kernel, makes /etc from
    // /usr/etc.
    let sysroot = scratch.path().join("sysroot");
    fs::create_dir_all(&sysroot).unwrap();
    let admin = |args: &[&str]| {
        run_ok(
            tool("ostree")
                .arg("admin")
                .args(args)
                .arg(format!("--sysroot={}", sysroot.display())),
        )
    };
    admin(&["init-fs", &sysroot.display().to_string()]);
    admin(&["os-init", "testos"]);
    run_ok(
        ostree(&sysroot.join("ostree/repo"))
            .arg("pull-local")
            .arg(&repo)
            .arg(commit),
    );
    let deployed = std::panic::catch_unwind(|| {
        admin(&["deploy", "--os=testos", commit]);
        let dep = sysroot.join(format!("ostree/deploy/testos/deploy/{commit}.0"));
        assert_eq!(
            fs::read_link(dep.join("etc/os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert!(dep.join("etc/apk/world").is_file());
        let mut boot: Vec<String> = fs::read_dir(sysroot.join("boot/ostree"))
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        boot.sort();
        // The kernel, and the initramfs compose built for it.
        assert_eq!(
            boot,
            [format!("initramfs-{kver}.img"), format!("vmlinuz-{kver}")]
        );
    });
    clear_deployment_immutable(&sysroot);
    if let Err(e) = deployed {
        std::panic::resume_unwind(e);
    }
}
