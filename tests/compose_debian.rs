//! `treeline compose tree` for Debian: a minimal bookworm with systemd and openssh-server,
//! from the mirror of the host's apt configuration, is a tree the real dpkg and apt accept
//! as their own (in a chroot of its checkout: `dpkg --audit` is empty, `dpkg -l` shows
//! every package `ii`, `apt-get check` passes), it holds the files an mmdebstrap of the
//! same package set holds apart from the documented differences below, and composing it
//! again gives the same commit.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const SUITE: &str = "bookworm";
const REQUESTED: [&str; 2] = ["systemd", "openssh-server"];
const SOURCE_DATE_EPOCH: &str = "1700000000";

/// Paths only an mmdebstrap tree has, each with why a composed commit does not.
const ONLY_IN_MMDEBSTRAP: &[(&str, &str)] = &[
    (
        "etc/ssh/ssh_host_",
        "host keys are per machine: made at first boot, never in a shared commit",
    ),
    (
        "var/lib/dpkg/status-old",
        "dpkg's backup of the previous status; removed so recomposing is reproducible",
    ),
    (
        "var/lib/dpkg/diversions-old",
        "dpkg's backup of the previous diversions; removed likewise",
    ),
    (
        "var/lib/dpkg/lock",
        "dpkg's lock files are made when dpkg runs",
    ),
    ("var/lib/dpkg/triggers/Lock", "likewise"),
    (
        "var/lib/apt/extended_states",
        "apt's automatic-install marks: apt did not install anything here",
    ),
    (
        "var/cache/apt/",
        "apt's package caches, built by `apt-get update`",
    ),
    (
        "var/lib/apt/lists/",
        "apt's downloaded indexes, per machine",
    ),
    (
        "dev/",
        "device nodes: /dev is a devtmpfs on a booted system",
    ),
    ("run/", "/run is a tmpfs on a booted system"),
    (
        "var/log/",
        "logs are per machine (/var is state made at first boot)",
    ),
    ("var/cache/ldconfig/aux-cache", "ldconfig's stat cache"),
    (
        "var/cache/debconf/config.dat-old",
        "debconf's backups; removed so recomposing is reproducible",
    ),
    ("var/cache/debconf/templates.dat-old", "likewise"),
    (
        "etc/fstab",
        "written by mmdebstrap itself, not by a package (an image builder's job)",
    ),
    (
        "etc/hostname",
        "copied by mmdebstrap from the build host; the treefile's `hostname` sets it",
    ),
    (
        "etc/resolv.conf",
        "copied by mmdebstrap from the build host: per machine",
    ),
];

/// Paths only the composed tree (as deployed) has, each with why.
const ONLY_IN_COMPOSE: &[(&str, &str)] = &[
    (
        "usr/etc",
        "the commit's /etc; deployments make /etc from it (layout step 6)",
    ),
    (
        "usr/lib/sysimage/dpkg",
        "the dpkg database, read-only with /usr; /var/lib/dpkg links to it (layout step 5)",
    ),
    (
        "usr/share/factory/var",
        "regular files of /var, copied at first boot by tmpfiles.d (layout step 7)",
    ),
    (
        "usr/lib/tmpfiles.d/treeline-var.conf",
        "describes /var for first boot (layout step 7)",
    ),
    ("usr/lib/sysimage", "the parent of the dpkg database"),
    ("usr/share/factory", "the parent of /var's files"),
    (
        "var/cache/apt/",
        "`apt-get check` in this test builds apt's caches (mmdebstrap's apt did too)",
    ),
    ("sysroot", "OSTree's mount point of the physical root"),
    (
        "run/media",
        "/media links to run/media, made at boot from tmpfiles.d (layout step 4)",
    ),
    ("ostree", "OSTree's link into /sysroot"),
    (
        "var/roothome",
        "state directories live in /var: /root, /home, /opt, /srv, /mnt, /usr/local link there",
    ),
    ("var/home", "likewise"),
    ("var/opt", "likewise"),
    ("var/srv", "likewise"),
    ("var/mnt", "likewise"),
    ("var/usrlocal", "likewise"),
];

fn allowed(list: &[(&str, &str)], path: &str) -> bool {
    list.iter().any(|(prefix, _)| {
        path == prefix.trim_end_matches('/')
            || path.starts_with(prefix)
            || path.starts_with(&format!("{prefix}/"))
    })
}

/// The mirror of the host's apt configuration for the suite (never a built-in host).
fn host_mirror() -> String {
    let out = run_ok(tool("apt-get").args(["indextargets", "--format", "$(REPO_URI) $(RELEASE)"]));
    out.lines()
        .find_map(|l| {
            let (uri, release) = l.split_once(' ')?;
            (release == SUITE).then(|| uri.to_owned())
        })
        .unwrap_or_else(|| panic!("the host's apt configuration has no {SUITE} source:\n{out}"))
}

fn write_treefile(dir: &Path, packages: &[&str]) -> PathBuf {
    let list: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "ref = \"debian/{SUITE}/amd64/minimal\"\nversion = \"12.0\"\ndistribution = \"debian\"\n\
         packages = [{}]\n[debian]\nsuite = \"{SUITE}\"\n",
        list.join(", ")
    );
    let path = dir.join("tree.toml");
    fs::write(&path, text).unwrap();
    path
}

/// An unsigned apt repository in `dir` (`dists/SUITE/Release`, `main/binary-amd64/Packages`)
/// holding one package, `NAME` 1.0, whose `script` (`preinst`, `postinst`) exits 1.
fn local_repository_with_failing_script(dir: &Path, name: &str, script: &str) {
    let build = dir.join("build");
    fs::create_dir_all(build.join("DEBIAN")).unwrap();
    fs::create_dir_all(build.join("usr/share/doc").join(name)).unwrap();
    fs::write(
        build.join("usr/share/doc").join(name).join("README"),
        "fails to configure\n",
    )
    .unwrap();
    fs::write(
        build.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: treeline tests <t@example.org>\n\
             Priority: optional\nSection: misc\nDescription: a package whose postinst fails\n"
        ),
    )
    .unwrap();
    write_file(
        &build,
        &format!("DEBIAN/{script}"),
        format!("#!/bin/sh\necho '{script} fails on purpose' >&2\nexit 1\n").as_bytes(),
        0o755,
    );
    let pool = dir.join("pool");
    fs::create_dir_all(&pool).unwrap();
    let deb = pool.join(format!("{name}_1.0_all.deb"));
    run_ok(
        tool("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&build)
            .arg(&deb),
    );
    let sha256 = |p: &Path| {
        run_ok(tool("sha256sum").arg(p))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let control = run_ok(tool("dpkg-deb").arg("-f").arg(&deb));
    let packages = format!(
        "{}Filename: pool/{name}_1.0_all.deb\nSize: {}\nSHA256: {}\n\n",
        control,
        fs::metadata(&deb).unwrap().len(),
        sha256(&deb)
    );
    let index = dir.join("dists").join(SUITE).join("main/binary-amd64");
    fs::create_dir_all(&index).unwrap();
    fs::write(index.join("Packages"), &packages).unwrap();
    fs::write(
        dir.join("dists").join(SUITE).join("Release"),
        format!(
            "Suite: {SUITE}\nCodename: {SUITE}\nArchitectures: amd64 all\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n",
            sha256(&index.join("Packages")),
            packages.len()
        ),
    )
    .unwrap();
}

fn compose_json(repo: &Path, treefile: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        tl(repo)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(cache)
            .arg(treefile)
            .args(extra),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn in_root(root: &Path, args: &[&str]) -> String {
    run_ok(tool("chroot").arg(root).args(args))
}

/// `name version` of every package a dpkg status file lists.
fn status_packages(status: &str) -> BTreeSet<String> {
    status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            };
            Some(format!("{} {}", field("Package")?, field("Version")?))
        })
        .collect()
}

/// An mmdebstrap `minbase` tree with the requested packages, from the same mirror and
/// suite, kept under the test cache; made again when its packages are not `packages`
/// (the mirror moved on).
fn mmdebstrap_reference(scratch: &Path, packages: &BTreeSet<String>) -> PathBuf {
    let dir = test_cache().join("mmdebstrap");
    fs::create_dir_all(&dir).unwrap();
    let tarball = dir.join(format!("{SUITE}-minbase-{}.tar", REQUESTED.join("-")));
    let root = scratch.join("mmdebstrap");
    for attempt in 0..2 {
        if attempt == 1 || !tarball.is_file() {
            let tmp = dir.join(format!("tmp-{}.tar", std::process::id()));
            run_ok(
                tool("mmdebstrap")
                    .args(["--quiet", "--variant=minbase"])
                    .arg(format!("--include={}", REQUESTED.join(",")))
                    .arg(SUITE)
                    .arg(&tmp)
                    .arg(format!("deb {} {SUITE} main", host_mirror())),
            );
            fs::rename(&tmp, &tarball).unwrap();
        }
        force_remove(&root);
        fs::create_dir_all(&root).unwrap();
        run_ok(
            tool("tar")
                .args(["--numeric-owner", "-xf"])
                .arg(&tarball)
                .arg("-C")
                .arg(&root),
        );
        let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        if status_packages(&status) == *packages {
            return root;
        }
    }
    panic!("mmdebstrap installed other packages than the compose");
}

/// Every path under `root` (not following symlinks), relative, with its kind
/// (`d`, `f`, `l`, `o`).
fn paths(root: &Path) -> BTreeMap<String, char> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, char>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, kind);
            if kind == 'd' {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Whether `rel` reaches something in `root` through the tree's own symlinks, resolved
/// as in a chroot of it (`home/x` when `home -> var/home`).
fn reachable(root: &Path, rel: &str) -> bool {
    let mut here = PathBuf::new();
    let mut hops = 0;
    let mut parts: Vec<String> = rel.split('/').rev().map(str::to_owned).collect();
    while let Some(part) = parts.pop() {
        let next = here.join(&part);
        let Ok(md) = fs::symlink_metadata(root.join(&next)) else {
            return false;
        };
        if md.file_type().is_symlink() && !parts.is_empty() {
            hops += 1;
            let target = fs::read_link(root.join(&next)).unwrap();
            if hops > 16 {
                return false;
            }
            if target.is_absolute() {
                here = PathBuf::new();
            }
            for c in target.to_string_lossy().split('/').rev() {
                if !c.is_empty() {
                    parts.push(c.to_owned());
                }
            }
            continue;
        }
        if part == ".." {
            here.pop();
        } else if part != "." {
            here = next;
        }
    }
    true
}

#[test]
fn compose_debian_minimal_gives_a_tree_dpkg_and_apt_accept() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    run_ok(ostree(&repo).args(["init", "--mode=bare"]));
    // Downloads are shared between runs (and with the benchmark's first run).
    let cache = test_cache().join("compose-debian");
    let treefile = write_treefile(scratch.path(), &REQUESTED);

    let first = compose_json(&repo, &treefile, &cache, &[]);
    assert_eq!(first["changed"], true, "{first}");
    let commit = first["commit"].as_str().unwrap().to_owned();
    let composed: BTreeSet<String> = first["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    for p in [
        "systemd ",
        "openssh-server ",
        "apt ",
        "dpkg ",
        "base-files ",
    ] {
        assert!(
            composed.iter().any(|c| c.starts_with(p)),
            "{p}: {composed:?}"
        );
    }
    run_ok(ostree(&repo).arg("fsck"));
    let meta = run_ok(ostree(&repo).args([
        "show",
        "--print-metadata-key=treeline.distribution",
        &commit,
    ]));
    assert_eq!(meta.trim(), "'debian'");

    // The real dpkg and apt, in the tree as a deployment has it.
    let root = scratch.path().join("checkout");
    deployment_root(&repo, &commit, &root);
    assert_eq!(in_root(&root, &["dpkg", "--audit"]), "", "dpkg --audit");
    let listed = in_root(
        &root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev}${Package} ${Version}\\n",
        ],
    );
    let mut installed = BTreeSet::new();
    for line in listed.lines() {
        let (state, pkg) = line.split_at(3);
        assert_eq!(state, "ii ", "dpkg -l: {line}");
        installed.insert(pkg.to_owned());
    }
    assert_eq!(installed, composed, "dpkg's packages are the composed ones");
    in_root(&root, &["apt-get", "check"]);
    // Every packaged file is as dpkg's md5sums say, conffiles included.
    let verify = in_root(&root, &["dpkg", "--verify"]);
    assert_eq!(verify, "", "dpkg --verify");
    // Scripts ran: dash's preinst diverted /bin/sh, openssh-server's postinst made its
    // privilege-separation user and enabled its unit; no service was started and the
    // stubs that prevented it are gone.
    let diversions = fs::read_to_string(root.join("usr/lib/sysimage/dpkg/diversions")).unwrap();
    assert!(
        diversions.contains("/bin/sh\n/bin/sh.distrib\ndash\n"),
        "{diversions}"
    );
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("sshd:")), "{passwd}");
    assert!(
        fs::symlink_metadata(root.join("etc/systemd/system/multi-user.target.wants/ssh.service"))
            .is_ok()
    );
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    let ssd = fs::read(root.join("usr/sbin/start-stop-daemon")).unwrap();
    assert!(
        !ssd.starts_with(b"#!"),
        "start-stop-daemon is still the stub"
    );
    // Per-machine state is not in the commit.
    assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
    assert!(
        !fs::read_dir(root.join("etc/ssh")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("ssh_host_")),
        "ssh host keys in the commit"
    );

    // The same files as mmdebstrap's tree of the same package set, apart from the
    // documented differences.
    let reference = mmdebstrap_reference(scratch.path(), &composed);
    let ours = paths(&root);
    let theirs = paths(&reference);
    let mut problems = Vec::new();
    for (p, kind) in &theirs {
        if allowed(ONLY_IN_MMDEBSTRAP, p) {
            continue;
        }
        match ours.get(p) {
            Some(k) if k == kind => {}
            // A directory of theirs is a symlink into /var in ours (`home -> var/home`).
            Some('l') if *kind == 'd' && reachable(&root, p) => {}
            Some(k) => problems.push(format!("{p}: {kind} in mmdebstrap, {k} in ours")),
            None if reachable(&root, p) => {}
            None => problems.push(format!("only in mmdebstrap: {p}")),
        }
    }
    for p in ours.keys() {
        if !theirs.contains_key(p) && !allowed(ONLY_IN_COMPOSE, p) && !reachable(&reference, p) {
            problems.push(format!("only in ours: {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences from mmdebstrap:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The dpkg database: the same status, and each package's .list names the same paths.
    let db = root.join("usr/lib/sysimage/dpkg");
    assert_eq!(
        fs::read_to_string(db.join("status")).unwrap(),
        fs::read_to_string(reference.join("var/lib/dpkg/status")).unwrap(),
        "dpkg status differs from mmdebstrap's"
    );
    let info = |dir: &Path| -> BTreeMap<String, BTreeSet<String>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "list"))
            .map(|p| {
                let lines = fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect();
                (p.file_name().unwrap().to_string_lossy().into_owned(), lines)
            })
            .collect()
    };
    let (our_lists, their_lists) = (
        info(&db.join("info")),
        info(&reference.join("var/lib/dpkg/info")),
    );
    assert_eq!(
        our_lists.keys().collect::<Vec<_>>(),
        their_lists.keys().collect::<Vec<_>>()
    );
    for (name, list) in &our_lists {
        assert_eq!(list, &their_lists[name], "info/{name}");
    }

    // Composing again changes nothing: no new commit (this compose starts from the
    // configured root the first one kept).
    let again = compose_json(&repo, &treefile, &cache, &[]);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["commit"], commit.as_str());
    // Reproducible from scratch: a fresh repository gives the same commit.
    let repo2 = scratch.path().join("repo2");
    run_ok(ostree(&repo2).args(["init", "--mode=bare"]));
    let other = compose_json(&repo2, &treefile, &cache, &[]);
    assert_eq!(other["commit"], commit.as_str(), "a fresh compose differs");

    // Adding a package makes a child commit that differs by exactly that package, with
    // the package configured on top (its postinst made it the pager alternative).
    let plus = write_treefile(scratch.path(), &["systemd", "openssh-server", "less"]);
    let child = compose_json(&repo, &plus, &cache, &[]);
    assert_eq!(child["changed"], true, "{child}");
    assert_eq!(child["parent"], commit.as_str());
    let added = child["changes"]["added"].as_array().unwrap();
    assert_eq!(added.len(), 1, "{child}");
    assert_eq!(added[0]["name"], "less");
    assert!(child["changes"]["removed"].as_array().unwrap().is_empty());
    assert!(child["changes"]["changed"].as_array().unwrap().is_empty());
    let diff = run_ok(tl(&repo).args(["db", "diff", &commit, child["commit"].as_str().unwrap()]));
    assert_eq!(diff.lines().count(), 1, "{diff}");
    assert!(diff.starts_with("+ less "), "{diff}");
    let root2 = scratch.path().join("checkout2");
    deployment_root(&repo, child["commit"].as_str().unwrap(), &root2);
    assert_eq!(in_root(&root2, &["dpkg", "--audit"]), "", "dpkg --audit");
    assert!(
        in_root(&root2, &["dpkg", "-l", "less"])
            .lines()
            .any(|l| l.starts_with("ii  less "))
    );
    assert_eq!(in_root(&root2, &["dpkg", "--verify"]), "", "dpkg --verify");
    assert_eq!(
        fs::read_link(root2.join("etc/alternatives/pager")).unwrap(),
        Path::new("/usr/bin/less")
    );

    // A maintainer script that fails fails the compose, naming the package and the
    // script; the ref stays where it was and the repository stays sound.
    for script in ["postinst", "preinst"] {
        let name = format!("treeline-fails-{script}");
        let local = scratch.path().join(format!("local-repo-{script}"));
        local_repository_with_failing_script(&local, &name, script);
        let failing = scratch.path().join(format!("failing-{script}.toml"));
        fs::write(
            &failing,
            fs::read_to_string(&plus)
                .unwrap()
                .replace("\"less\"]", &format!("\"less\", \"{name}\"]"))
                + &format!("local-repositories = [{:?}]\n", local.display().to_string()),
        )
        .unwrap();
        let out = run_fail(
            tl(&repo)
                .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
                .args(["compose", "tree", "--cache-dir"])
                .arg(&cache)
                .arg(&failing),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{script} of {name}"))
                && stderr.contains(&format!("{script} fails on purpose")),
            "the error names neither the package nor the script: {stderr}"
        );
        let head = run_ok(ostree(&repo).args(["rev-parse", "debian/bookworm/amd64/minimal"]));
        assert_eq!(
            head.trim(),
            child["commit"].as_str().unwrap(),
            "the ref moved"
        );
    }
    run_ok(ostree(&repo).arg("fsck"));
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmp = fs::canonicalize(&repo).unwrap().join("tmp");
    assert!(
        !mounts.contains(&*tmp.to_string_lossy()),
        "a mount is left under {}:\n{mounts}",
        tmp.display()
    );
}
