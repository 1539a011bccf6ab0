//! `treeline admin` against the real `ostree admin`: each reads the sysroot the other
//! wrote, the /etc merge keeps local changes, and a deploy killed at any step leaves a
//! complete default deployment.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn ostree_admin(sysroot: &Path, args: &[&str]) -> String {
    let mut c = tool("ostree");
    c.arg("admin")
        .args(args)
        .arg(format!("--sysroot={}", sysroot.display()));
    run_ok(&mut c)
}

fn repo_of(sysroot: &Path) -> PathBuf {
    sysroot.join("ostree/repo")
}

/// A small OS tree: os-release, a kernel and initramfs in usr/lib/modules, a binary, and
/// the given /usr/etc files.
fn make_tree(dir: &Path, kernel: &str, etc: &[(&str, &str)]) {
    if dir.exists() {
        force_remove(dir);
    }
    write_file(
        dir,
        "usr/lib/os-release",
        b"NAME=TestOS\nID=testos\nPRETTY_NAME=\"TestOS 42\"\n",
        0o644,
    );
    write_file(
        dir,
        "usr/lib/modules/6.1.0/vmlinuz",
        kernel.as_bytes(),
        0o644,
    );
    write_file(
        dir,
        "usr/lib/modules/6.1.0/initramfs.img",
        b"an initramfs\n",
        0o644,
    );
    write_file(dir, "usr/bin/true", b"#!/bin/sh\n", 0o755);
    fs::create_dir_all(dir.join("usr/etc")).unwrap();
    for (rel, content) in etc {
        write_file(&dir.join("usr/etc"), rel, content.as_bytes(), 0o644);
    }
}

/// Commit `dir` to `branch` of the sysroot's repository with treeline (or ostree), with a
/// `version`; returns the commit checksum.
fn commit(sysroot: &Path, dir: &Path, branch: &str, version: &str, with_ostree: bool) -> String {
    let repo = repo_of(sysroot);
    let mut c = if with_ostree {
        ostree(&repo)
    } else {
        tl(&repo)
    };
    c.args(["commit", "-b", branch])
        .arg(format!("--add-metadata-string=version={version}"))
        .arg(format!("--subject=v{version}"))
        .arg(dir);
    run_ok(&mut c);
    run_ok(ostree(&repo).args(["rev-parse", branch]))
        .trim()
        .to_owned()
}

/// One deployment as a status shows it.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Shown {
    stateroot: String,
    name: String,
    refspec: Option<String>,
    pinned: bool,
}

/// Parse `ostree admin status` (not booted: no `*`).
fn ostree_status(sysroot: &Path) -> Vec<Shown> {
    let out = ostree_admin(sysroot, &["status"]);
    let mut v: Vec<Shown> = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            let mut parts = rest.split_whitespace();
            v.push(Shown {
                stateroot: parts.next().unwrap().to_owned(),
                name: parts.next().unwrap().to_owned(),
                refspec: None,
                pinned: false,
            });
        } else if let Some(r) = line.trim().strip_prefix("origin refspec: ") {
            v.last_mut().unwrap().refspec = Some(r.to_owned());
        } else if line.trim() == "Pinned: yes" {
            v.last_mut().unwrap().pinned = true;
        }
    }
    v
}

fn treeline_status_json(sysroot: &Path) -> serde_json::Value {
    let out = run_ok(admin(sysroot).args(["status", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}:\n{out}"))
}

fn treeline_status(sysroot: &Path) -> Vec<Shown> {
    treeline_status_json(sysroot)["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Shown {
            stateroot: d["stateroot"].as_str().unwrap().to_owned(),
            name: d["id"].as_str().unwrap().to_owned(),
            refspec: d["origin_refspec"].as_str().map(str::to_owned),
            pinned: d["pinned"].as_bool().unwrap(),
        })
        .collect()
}

fn names(v: &[Shown]) -> Vec<String> {
    v.iter().map(|s| s.name.clone()).collect()
}

/// A sysroot with stateroot `testos`, made by treeline or by ostree.
fn new_sysroot(scratch: &SysrootScratch, name: &str, with_ostree: bool) -> PathBuf {
    let s = scratch.path().join(name);
    fs::create_dir_all(&s).unwrap();
    if with_ostree {
        ostree_admin(&s, &["init-fs", &s.display().to_string()]);
        ostree_admin(&s, &["os-init", "testos"]);
    } else {
        run_ok(admin(&s).arg("init-fs").arg(&s));
        run_ok(admin(&s).args(["os-init", "testos"]));
    }
    s
}

fn deployment_dir(sysroot: &Path, name: &str) -> PathBuf {
    sysroot.join("ostree/deploy/testos/deploy").join(name)
}

#[test]
fn sysroot_made_by_treeline_is_read_by_ostree_admin_status() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args([
        "deploy",
        "--os=testos",
        "testos/stable",
        "--karg=root=LABEL=root",
        "--karg=quiet",
    ]));

    // The first deployment is byte-for-byte what ostree 2022.7 writes for it.
    let entry = fs::read_to_string(s.join("boot/loader/entries/ostree-1-testos.conf")).unwrap();
    let bootcsum = "7bd091ad6955c0e7ef41bab65adb016275664b55efc0d10a0c8cb263da3c1e4e";
    assert_eq!(
        entry,
        format!(
            "title TestOS 42 1.0 (ostree:0)\nversion 1\noptions root=LABEL=root quiet ostree=/ostree/boot.1/testos/{bootcsum}/0\nlinux /ostree/testos-{bootcsum}/vmlinuz-6.1.0\ninitrd /ostree/testos-{bootcsum}/initramfs-6.1.0.img\n"
        )
    );
    assert_eq!(
        fs::read_link(s.join("boot/loader")).unwrap(),
        Path::new("loader.1")
    );
    assert_eq!(
        run_ok(ostree(&repo_of(&s)).args(["rev-parse", "ostree/1/1/0"])).trim(),
        c1
    );
    assert_eq!(
        fs::read_to_string(s.join(format!("ostree/deploy/testos/deploy/{c1}.0.origin"))).unwrap(),
        "[origin]\nrefspec=testos/stable\n"
    );

    make_tree(&tree, "a second kernel\n", &[("motd", "v2\n")]);
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    run_ok(admin(&s).args(["deploy", "testos/stable"]));

    let ours = treeline_status(&s);
    assert_eq!(names(&ours), vec![format!("{c2}.0"), format!("{c1}.0")]);
    assert_eq!(ostree_status(&s), ours, "ostree admin status disagrees");
    assert_eq!(ours[0].refspec.as_deref(), Some("testos/stable"));
    // Kernel arguments carried over from the merge deployment.
    let json = treeline_status_json(&s);
    assert_eq!(json["deployments"][0]["kargs"], "root=LABEL=root quiet");
    assert_eq!(json["deployments"][0]["version"], "2.0");
    assert_eq!(json["booted"], serde_json::Value::Null);

    // ostree can in turn deploy on top of what treeline wrote, and treeline reads it.
    make_tree(&tree, "a third kernel\n", &[("motd", "v3\n")]);
    let c3 = commit(&s, &tree, "testos/stable", "3.0", true);
    ostree_admin(&s, &["deploy", "--os=testos", "testos/stable"]);
    let after = treeline_status(&s);
    assert_eq!(names(&after), vec![format!("{c3}.0"), format!("{c2}.0")]);
    assert_eq!(ostree_status(&s), after);
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
}

#[test]
fn sysroot_made_by_ostree_is_read_and_upgraded_by_treeline() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", true);
    let tree = scratch.path().join("tree");
    make_tree(
        &tree,
        "a kernel\n",
        &[("motd", "v1\n"), ("hosts", "127.0.0.1 localhost\n")],
    );
    let c1 = commit(&s, &tree, "testos/stable", "1.0", true);
    ostree_admin(
        &s,
        &[
            "deploy",
            "--os=testos",
            "testos/stable",
            "--karg=root=LABEL=root",
        ],
    );
    make_tree(
        &tree,
        "a second kernel\n",
        &[("motd", "v2\n"), ("hosts", "127.0.0.1 localhost\n")],
    );
    let c2 = commit(&s, &tree, "testos/stable", "2.0", true);
    ostree_admin(&s, &["deploy", "--os=testos", "testos/stable"]);
    assert_eq!(treeline_status(&s), ostree_status(&s));
    assert_eq!(
        names(&treeline_status(&s)),
        vec![format!("{c2}.0"), format!("{c1}.0")]
    );

    // A local change in the default deployment's /etc, then a treeline upgrade.
    let etc = deployment_dir(&s, &format!("{c2}.0")).join("etc");
    fs::write(etc.join("hosts"), "10.0.0.1 local\n").unwrap();
    make_tree(
        &tree,
        "a third kernel\n",
        &[("motd", "v3\n"), ("hosts", "127.0.0.1 localhost\n")],
    );
    let c3 = commit(&s, &tree, "testos/stable", "3.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));

    let st = ostree_status(&s);
    assert_eq!(names(&st), vec![format!("{c3}.0"), format!("{c2}.0")]);
    assert_eq!(st, treeline_status(&s));
    let new_etc = deployment_dir(&s, &format!("{c3}.0")).join("etc");
    assert_eq!(
        fs::read_to_string(new_etc.join("hosts")).unwrap(),
        "10.0.0.1 local\n"
    );
    assert_eq!(fs::read_to_string(new_etc.join("motd")).unwrap(), "v3\n");
    // The first deployment was dropped and cleaned up, its kernel too.
    assert!(!deployment_dir(&s, &format!("{c1}.0")).exists());
    let kernels: Vec<_> = fs::read_dir(s.join("boot/ostree")).unwrap().collect();
    assert_eq!(kernels.len(), 2);
    assert!(
        fs::read_to_string(s.join("boot/loader/entries/ostree-2-testos.conf"))
            .unwrap()
            .contains("options root=LABEL=root ostree=")
    );

    // ostree can still undeploy and clean up what treeline wrote.
    ostree_admin(&s, &["undeploy", "1"]);
    assert_eq!(names(&treeline_status(&s)), vec![format!("{c3}.0")]);
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
}

/// One line per path of a tree: kind, mode, uid, gid, content, user xattrs.
fn etc_snapshot(dir: &Path) -> std::collections::BTreeMap<String, Entry> {
    snapshot(dir, true, true)
}

#[test]
fn etc_merge_keeps_local_changes_and_takes_new_defaults() {
    let scratch = SysrootScratch::new();
    let files_v1: &[(&str, &str)] = &[
        ("edited", "default 1\n"),
        ("edited-both", "default 1\n"),
        ("upstream", "default 1\n"),
        ("deleted", "default 1\n"),
        ("chmodded", "secret\n"),
        ("dir/inner", "inner 1\n"),
    ];
    let files_v2: &[(&str, &str)] = &[
        ("edited", "default 1\n"),
        ("edited-both", "default 2\n"),
        ("upstream", "default 2\n"),
        ("deleted", "default 2\n"),
        ("chmodded", "secret\n"),
        ("dir/inner", "inner 2\n"),
        ("brand-new", "new in v2\n"),
    ];
    // The same scenario on a sysroot deployed by treeline and one deployed by ostree.
    let mut results = Vec::new();
    for with_ostree in [false, true] {
        let s = new_sysroot(
            &scratch,
            if with_ostree {
                "by-ostree"
            } else {
                "by-treeline"
            },
            with_ostree,
        );
        let tree = scratch.path().join("tree");
        make_tree(&tree, "a kernel\n", files_v1);
        let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
        let deploy = |rev: &str| {
            if with_ostree {
                ostree_admin(&s, &["deploy", "--os=testos", rev]);
            } else {
                run_ok(admin(&s).args(["deploy", "--os=testos", rev]));
            }
        };
        deploy("testos/stable");
        let etc = deployment_dir(&s, &format!("{c1}.0")).join("etc");
        fs::write(etc.join("edited"), "local\n").unwrap();
        fs::write(etc.join("edited-both"), "local\n").unwrap();
        fs::remove_file(etc.join("deleted")).unwrap();
        fs::set_permissions(etc.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(etc.join("chmodded"), Some(1234), Some(5678)).unwrap();
        fs::create_dir(etc.join("added-dir")).unwrap();
        fs::write(etc.join("added-dir/mine"), "mine\n").unwrap();
        run_ok(
            tool("setfattr")
                .args(["-n", "user.test", "-v", "kept"])
                .arg(etc.join("added-dir/mine")),
        );
        std::os::unix::fs::symlink("edited", etc.join("added-link")).unwrap();

        make_tree(&tree, "a kernel\n", files_v2);
        let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
        deploy("testos/stable");
        let new = deployment_dir(&s, &format!("{c2}.0")).join("etc");
        let read = |p: &str| fs::read_to_string(new.join(p)).unwrap();
        assert_eq!(read("edited"), "local\n", "locally changed file survives");
        assert_eq!(
            read("edited-both"),
            "local\n",
            "local change wins over a new default"
        );
        assert_eq!(
            read("upstream"),
            "default 2\n",
            "file changed only upstream is new"
        );
        assert_eq!(read("dir/inner"), "inner 2\n");
        assert_eq!(read("brand-new"), "new in v2\n");
        assert!(
            !new.join("deleted").exists(),
            "locally deleted file stays deleted"
        );
        let md = fs::metadata(new.join("chmodded")).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (0o600, 1234, 5678)
        );
        assert_eq!(read("added-dir/mine"), "mine\n");
        assert_eq!(
            fs::read_link(new.join("added-link")).unwrap(),
            Path::new("edited")
        );
        let x = run_ok(
            tool("getfattr")
                .args(["--only-values", "-n", "user.test"])
                .arg(new.join("added-dir/mine")),
        );
        assert_eq!(x, "kept");
        // /etc is a copy, never hardlinked to the repository or /usr/etc.
        assert_eq!(fs::metadata(new.join("upstream")).unwrap().nlink(), 1);
        results.push(etc_snapshot(&new));
    }
    // And the merged /etc is what ostree makes of the same changes.
    assert_same_tree(
        &results[0],
        &results[1],
        "/etc after treeline vs ostree deploy",
    );
}

#[test]
fn pin_rollback_undeploy_and_cleanup_agree_with_ostree() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    let mut c = Vec::new();
    for v in 1..=3 {
        make_tree(
            &tree,
            &format!("kernel {v}\n"),
            &[("motd", &format!("v{v}\n"))],
        );
        c.push(commit(&s, &tree, "testos/stable", &format!("{v}.0"), false));
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        if v == 1 {
            run_ok(admin(&s).args(["pin", "0"]));
        }
    }
    let d = |i: usize| format!("{}.0", c[i]);
    // New default first, then the merge deployment, then the pinned one; v2's
    // predecessor (v1) survived only because it is pinned.
    let st = treeline_status(&s);
    assert_eq!(names(&st), vec![d(2), d(1), d(0)]);
    assert!(st[2].pinned && !st[0].pinned);
    assert_eq!(ostree_status(&s), st);

    run_ok(admin(&s).arg("rollback"));
    let st = treeline_status(&s);
    assert_eq!(names(&st), vec![d(1), d(2), d(0)]);
    assert_eq!(ostree_status(&s), st);

    run_ok(admin(&s).args(["unpin", "2"]));
    assert!(!treeline_status(&s)[2].pinned);
    run_ok(admin(&s).args(["undeploy", "2"]));
    assert_eq!(names(&treeline_status(&s)), vec![d(1), d(2)]);
    assert!(!deployment_dir(&s, &d(0)).exists());
    assert_eq!(ostree_status(&s), treeline_status(&s));

    // Cleanup prunes the repository down to what deployments and refs need.
    run_ok(tl(&repo_of(&s)).args(["refs", "--delete", "testos/stable"]));
    run_ok(admin(&s).arg("cleanup"));
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
    let commits = run_ok(
        tool("find")
            .arg(repo_of(&s).join("objects"))
            .args(["-name", "*.commit"]),
    );
    assert_eq!(
        commits.lines().count(),
        2,
        "only the two deployed commits remain:\n{commits}"
    );
    let boot_dirs: BTreeSet<String> = fs::read_dir(s.join("boot/ostree"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(boot_dirs.len(), 2);
    // Only one boot version is left, and ostree agrees on the list.
    assert!(!s.join("boot/loader.0").exists() || !s.join("boot/loader.1").exists());
    assert_eq!(ostree_status(&s), treeline_status(&s));

    // Bad input fails clearly and changes nothing.
    let out = run_fail(admin(&s).args(["undeploy", "7"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no deployment with index 7"));
    let out = run_fail(admin(&s).args(["deploy", "--os=testos", "no/such/ref"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/ref"));
    let out = run_fail(admin(&s).args(["deploy", "--os=nope", &c[1]]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("os-init"));
    assert_eq!(names(&treeline_status(&s)), vec![d(1), d(2)]);
}

fn sysroot_fault_steps() -> Vec<String> {
    let out = run_ok(treeline().arg("--list-fault-steps"));
    let steps: Vec<String> = out
        .lines()
        .filter(|s| {
            ["deploy-", "write-", "cleanup-"]
                .iter()
                .any(|p| s.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    assert!(steps.len() >= 8, "sysroot fault steps missing: {out}");
    steps
}

/// The default deployment must be complete: its directory, /etc, /usr, kernel and origin.
fn assert_default_complete(s: &Path, step: &str) -> String {
    let st = treeline_status_json(s);
    let first = st["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["default"] == true)
        .unwrap_or_else(|| panic!("{step}: no default deployment"));
    let name = first["id"].as_str().unwrap().to_owned();
    let dir = deployment_dir(s, &name);
    assert!(
        dir.join("usr/bin/true").is_file(),
        "{step}: /usr incomplete"
    );
    assert!(dir.join("etc/motd").is_file(), "{step}: /etc incomplete");
    assert!(
        dir.with_file_name(format!("{name}.origin")).is_file(),
        "{step}: origin missing"
    );
    let bootdir = s.join(format!(
        "boot/ostree/testos-{}",
        first["bootcsum"].as_str().unwrap()
    ));
    assert!(
        bootdir.join("vmlinuz-6.1.0").is_file(),
        "{step}: kernel missing"
    );
    assert!(
        bootdir.join("initramfs-6.1.0.img").is_file(),
        "{step}: initramfs missing"
    );
    assert_eq!(
        ostree_status(s)[0].name,
        name,
        "{step}: ostree sees another default"
    );
    name
}

#[test]
fn deploy_killed_at_any_step_leaves_old_or_new_default_complete() {
    let scratch = SysrootScratch::new();
    for step in sysroot_fault_steps() {
        let s = new_sysroot(&scratch, &format!("s-{step}"), false);
        let tree = scratch.path().join("tree");
        make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
        let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
        let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
        // An older deployment for cleanup to remove, so the cleanup steps are reached.
        make_tree(&tree, "kernel 0\n", &[("motd", "v0\n")]);
        let c0 = commit(&s, &tree, "testos/old", "0.5", false);
        run_ok(admin(&s).args(["deploy", "testos/old"]));
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        // Now [c2, c0]; deploying c1 (whose first deployment is gone) drops c0 and
        // cleans it up.
        assert_eq!(
            names(&treeline_status(&s)),
            vec![format!("{c2}.0"), format!("{c0}.0")]
        );
        let out = admin(&s)
            .args(["deploy", &c1])
            .env("TREELINE_FAULT", &step)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{step}: the fault did not fire:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let default = assert_default_complete(&s, &step);
        assert!(
            default == format!("{c2}.0") || default.starts_with(&format!("{c1}.")),
            "{step}: default is {default}"
        );
        // The next run repairs whatever the kill left behind.
        run_ok(admin(&s).args(["cleanup", "--no-prune"]));
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        assert_default_complete(&s, &step);
        run_ok(admin(&s).arg("cleanup"));
        run_ok(ostree(&repo_of(&s)).arg("fsck"));
        let leftovers = run_ok(tool("find").arg(s.join("ostree/deploy/testos")).args([
            "-maxdepth",
            "1",
            "-name",
            ".tl-staging-*",
        ]));
        assert!(leftovers.is_empty(), "{step}: staging left: {leftovers}");
        clear_deployment_immutable(&s);
        force_remove(&s);
    }
}

#[test]
fn sysroot_lock_excludes_ostree_admin() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let lock = treeline_sysroot::SysrootLock::acquire(&s).unwrap();
    // ostree waits for the lock we hold ("Waiting for sysroot lock..."), so it cannot
    // finish within the timeout. (`os-init` takes no lock in ostree; `cleanup` does.)
    let out = tool("timeout")
        .args(["3", "ostree", "admin", "cleanup"])
        .arg(format!("--sysroot={}", s.display()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "ostree did not wait for our lock: {out:?}"
    );
    drop(lock);
    ostree_admin(&s, &["cleanup"]);
    // And treeline waits for a lock ostree (or another treeline) holds.
    let held = treeline_sysroot::SysrootLock::acquire(&s).unwrap();
    let out = tool("timeout")
        .args(["3"])
        .arg(env!("CARGO_BIN_EXE_treeline"))
        .args(["admin", "cleanup"])
        .arg(format!("--sysroot={}", s.display()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "treeline did not wait: {out:?}"
    );
    drop(held);
    run_ok(admin(&s).arg("cleanup"));
}

#[test]
fn booted_deployment_is_found_from_the_ostree_karg_and_always_kept() {
    use treeline_sysroot::{Booted, DeployOptions, Sysroot};
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    let mut c = Vec::new();
    for v in 1..=2 {
        make_tree(&tree, &format!("kernel {v}\n"), &[("motd", "m\n")]);
        c.push(commit(&s, &tree, "testos/stable", &format!("{v}.0"), false));
        run_ok(admin(&s).args(["deploy", "testos/stable", "--karg=console=ttyS0"]));
    }
    // Pretend the machine booted the older deployment (index 1).
    let entry = fs::read_to_string(s.join("boot/loader/entries/ostree-1-testos.conf")).unwrap();
    let opts = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .to_owned();
    let cmdline = format!("BOOT_IMAGE=/vmlinuz {opts} rw\n");
    let sr = Sysroot::open(&s, Booted::Cmdline(cmdline.clone())).unwrap();
    assert_eq!(sr.booted_index(), Some(1));
    let st = sr.status().unwrap();
    assert!(
        st[0].pending && !st[0].booted,
        "the newer default is pending"
    );
    assert!(st[1].booted && !st[1].rollback);
    drop(sr);

    // A new deployment keeps the booted one (merge source) and drops the pending one.
    let mut sr = Sysroot::open_locked(&s, Booted::Cmdline(cmdline.clone())).unwrap();
    make_tree(&tree, "kernel 3\n", &[("motd", "m\n")]);
    let c3 = commit(&s, &tree, "testos/stable", "3.0", false);
    let r = sr
        .deploy(&DeployOptions {
            stateroot: "testos".into(),
            revision: "testos/stable".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.merge_from.unwrap().checksum.to_string(), c[0]);
    let got: Vec<String> = sr.deployments().iter().map(|d| d.name()).collect();
    assert_eq!(got, vec![format!("{c3}.0"), format!("{}.0", c[0])]);
    assert_eq!(sr.booted_index(), Some(1));
    // The booted deployment can be neither undeployed nor dropped.
    assert!(matches!(
        sr.undeploy(1),
        Err(treeline_sysroot::Error::Refused { .. })
    ));
    // Rollback with a pending deployment makes the booted one the default again.
    let d = sr.rollback().unwrap();
    assert_eq!(d.checksum.to_string(), c[0]);
    assert_eq!(sr.booted_index(), Some(0));
    drop(sr);
    assert_eq!(ostree_status(&s), treeline_status(&s));
}

#[test]
fn cleanup_killed_at_any_step_keeps_the_default_and_a_valid_repo() {
    let scratch = SysrootScratch::new();
    let steps = [
        "cleanup-after-boot-versions",
        "cleanup-during-deployments",
        "cleanup-before-prune",
        "prune-during-delete",
    ];
    for step in steps {
        let s = new_sysroot(&scratch, &format!("s-{step}"), false);
        let tree = scratch.path().join("tree");
        make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
        commit(&s, &tree, "testos/stable", "1.0", false);
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        // Garbage for cleanup: a deployment directory no boot entry references (a deploy
        // killed after creating it) and an unreferenced commit.
        make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
        commit(&s, &tree, "testos/next", "2.0", false);
        let out = admin(&s)
            .args(["deploy", "testos/next"])
            .env("TREELINE_FAULT", "deploy-after-deployment-dir")
            .output()
            .unwrap();
        assert!(!out.status.success());
        run_ok(tl(&repo_of(&s)).args(["refs", "--delete", "testos/next"]));
        let before = assert_default_complete(&s, step);

        let out = admin(&s)
            .arg("cleanup")
            .env("TREELINE_FAULT", step)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{step}: the fault did not fire");
        assert_eq!(assert_default_complete(&s, step), before, "{step}");
        run_ok(admin(&s).arg("cleanup"));
        assert_eq!(assert_default_complete(&s, step), before, "{step}");
        run_ok(ostree(&repo_of(&s)).arg("fsck"));
        let dirs = fs::read_dir(s.join("ostree/deploy/testos/deploy"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(
            dirs, 1,
            "{step}: the unreferenced deployment was not removed"
        );
        clear_deployment_immutable(&s);
        force_remove(&s);
    }
}

/// Commit `dir` to `branch` of a server repository (archive mode) with a `version`, and
/// update its summary; returns the commit checksum.
fn commit_to_server(server: &Path, dir: &Path, branch: &str, version: &str) -> String {
    run_ok(
        tl(server)
            .args(["commit", "-b", branch])
            .arg(format!("--add-metadata-string=version={version}"))
            .arg(dir),
    );
    run_ok(ostree(server).args(["summary", "-u"]));
    run_ok(ostree(server).args(["rev-parse", branch]))
        .trim()
        .to_owned()
}

#[test]
fn upgrade_pulls_the_origin_deploys_it_and_exits_77_when_nothing_is_new() {
    let scratch = SysrootScratch::new();
    let server = scratch.path().join("server");
    run_ok(ostree(&server).args(["init", "--mode=archive"]));
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    let c1 = commit_to_server(&server, &tree, "testos/stable", "1.0");
    let nginx = Nginx::start(&server, &scratch.path().join("nginx"));

    // A sysroot deployed at v1 through the remote ref, as an installer would.
    let s = new_sysroot(&scratch, "sysroot", false);
    let repo = repo_of(&s);
    run_ok(ostree(&repo).args(["remote", "add", "--no-gpg-verify", "origin", &nginx.url]));
    run_ok(tl(&repo).args(["pull", "origin", "testos/stable"]));
    run_ok(admin(&s).args([
        "deploy",
        "--os=testos",
        "origin:testos/stable",
        "--karg=root=LABEL=root",
    ]));
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);

    // Nothing new yet.
    let out = admin(&s).arg("upgrade").output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    make_tree(&tree, "a second kernel\n", &[("motd", "v2\n")]);
    let c2 = commit_to_server(&server, &tree, "testos/stable", "2.0");

    // --check reports the update and changes nothing, not even the local ref.
    let out = run_ok(admin(&s).args(["upgrade", "--check", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["update"], true);
    assert_eq!(v["current"], c1.as_str());
    assert_eq!(v["available"], c2.as_str());
    assert_eq!(v["version"], "2.0");
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "origin:testos/stable"])).trim(),
        c1
    );

    // The upgrade makes v2 the default, keeps v1 as rollback and the origin.
    let out = run_ok(admin(&s).arg("upgrade"));
    assert!(out.contains("Update available"), "{out}");
    assert!(out.contains("Fetched "), "{out}");
    let st = ostree_status(&s);
    assert_eq!(names(&st), vec![format!("{c2}.0"), format!("{c1}.0")]);
    assert_eq!(st[0].refspec.as_deref(), Some("origin:testos/stable"));
    assert_eq!(st, treeline_status(&s));
    assert_eq!(
        fs::read_to_string(deployment_dir(&s, &format!("{c2}.0")).join("etc/motd")).unwrap(),
        "v2\n"
    );
    assert!(
        fs::read_to_string(s.join("boot/loader/entries/ostree-2-testos.conf"))
            .unwrap()
            .contains("root=LABEL=root")
    );
    run_ok(ostree(&repo).arg("fsck"));

    // And again: nothing new.
    let out = admin(&s).arg("upgrade").output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert_eq!(
        names(&ostree_status(&s)),
        vec![format!("{c2}.0"), format!("{c1}.0")]
    );
}

#[test]
fn upgrade_with_an_unknown_remote_fails_clearly_and_changes_nothing() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    let origin = scratch.path().join("origin");
    fs::write(&origin, "[origin]\nrefspec=nosuch:testos/stable\n").unwrap();
    run_ok(
        admin(&s)
            .args(["deploy", "--os=testos", "testos/stable"])
            .arg(format!("--origin-file={}", origin.display())),
    );
    let out = run_fail(admin(&s).arg("upgrade"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch"), "{err}");
    assert_ne!(out.status.code(), Some(77));
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);
}

#[test]
fn deploy_merges_passwd_and_group_keeping_existing_ids() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(
        &tree,
        "a kernel\n",
        &[
            (
                "passwd",
                "root:x:0:0:root:/root:/bin/sh\nsvc:x:101:101::/:/sbin/nologin\n",
            ),
            ("group", "root:x:0:\nsvc:x:101:\nwheel:x:10:\n"),
        ],
    );
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    // A user added on the machine.
    let etc1 = deployment_dir(&s, &format!("{c1}.0")).join("etc");
    fs::write(
        etc1.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsvc:x:101:101::/:/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        etc1.join("group"),
        "root:x:0:\nsvc:x:101:\nwheel:x:10:alice\nalice:x:1000:\n",
    )
    .unwrap();

    // The new build numbered svc differently and adds a user whose IDs are alice's.
    make_tree(
        &tree,
        "a kernel\n",
        &[
            (
                "passwd",
                "root:x:0:0:root:/root:/bin/sh\nsvc:x:105:105::/:/sbin/nologin\nmsg:x:1000:1000::/:/bin/false\n",
            ),
            (
                "group",
                "root:x:0:\nsvc:x:105:\nwheel:x:10:msg\nmsg:x:1000:\n",
            ),
        ],
    );
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    let out = run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    assert!(out.contains("users added [\"msg\"]"), "{out}");
    let etc2 = deployment_dir(&s, &format!("{c2}.0")).join("etc");
    assert_eq!(
        fs::read_to_string(etc2.join("passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\nsvc:x:101:101::/:/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/sh\nmsg:x:1001:1001::/:/bin/false\n"
    );
    assert_eq!(
        fs::read_to_string(etc2.join("group")).unwrap(),
        "root:x:0:\nsvc:x:101:\nwheel:x:10:alice,msg\nalice:x:1000:\nmsg:x:1001:\n"
    );
    // The files keep the new tree's mode.
    let mode = fs::metadata(etc2.join("passwd"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o644);
}

/// `len` bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn deploy_refuses_when_boot_is_too_small_and_writes_nothing() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    write_file(
        &tree,
        "usr/lib/modules/6.1.0/vmlinuz",
        &noise(3 << 20),
        0o644,
    );
    commit(&s, &tree, "testos/stable", "1.0", false);
    // A 2 MiB /boot cannot take a 3 MiB kernel.
    let _boot = LoopMount::new(&scratch.path().join("boot.img"), 2, &s.join("boot"));
    let out = run_fail(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough space")
            && err.contains(&s.join("boot").display().to_string())
            && err.contains("kernel and initramfs")
            && err.contains("needed"),
        "{err}"
    );
    assert!(names(&ostree_status(&s)).is_empty());
    let deploy_dir = s.join("ostree/deploy/testos/deploy");
    let left: Vec<_> = fs::read_dir(&deploy_dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let boot_left: Vec<_> = fs::read_dir(s.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "lost+found")
        .collect();
    assert!(boot_left.is_empty(), "{boot_left:?}");
}

#[test]
fn kargs_edits_the_default_entry_through_a_new_boot_version() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args([
        "deploy",
        "--os=testos",
        "testos/stable",
        "--karg=root=LABEL=root",
        "--karg-append=quiet",
        "--karg-append=console=tty0",
    ]));
    make_tree(&tree, "a kernel\n", &[("motd", "v2\n")]);
    commit(&s, &tree, "testos/stable", "2.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    let before = ostree_status(&s);
    let loader_before = fs::read_link(s.join("boot/loader")).unwrap();
    let options = |n: &str| -> String {
        fs::read_to_string(s.join(format!("boot/loader/entries/ostree-{n}-testos.conf")))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("options ").map(str::to_owned))
            .unwrap()
    };
    let rollback_options = options("1");

    let out = run_ok(admin(&s).args([
        "kargs",
        "--delete=quiet",
        "--replace=root=LABEL=sys",
        "--append=console=ttyS0",
    ]));
    assert_eq!(out.trim(), "root=LABEL=sys console=tty0 console=ttyS0");
    assert_ne!(fs::read_link(s.join("boot/loader")).unwrap(), loader_before);
    let new = options("2");
    assert!(
        new.starts_with("root=LABEL=sys console=tty0 console=ttyS0 ostree=/ostree/boot."),
        "{new}"
    );
    // The rollback entry keeps its arguments; ostree reads the same deployments.
    assert_eq!(
        options("1").split(" ostree=").next(),
        rollback_options.split(" ostree=").next()
    );
    assert_eq!(ostree_status(&s), before);
    assert_eq!(
        run_ok(admin(&s).arg("kargs")).trim(),
        "root=LABEL=sys console=tty0 console=ttyS0"
    );
}

#[test]
fn upgrade_killed_at_any_step_leaves_a_complete_default_and_the_next_upgrade_finishes() {
    let scratch = SysrootScratch::new();
    let server = scratch.path().join("server");
    run_ok(ostree(&server).args(["init", "--mode=archive"]));
    let tree = scratch.path().join("tree");
    make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
    let c1 = commit_to_server(&server, &tree, "testos/stable", "1.0");
    make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
    let c2 = commit_to_server(&server, &tree, "testos/stable", "2.0");
    let nginx = Nginx::start(&server, &scratch.path().join("nginx"));
    let mut steps = vec!["pull-before-commit".to_owned()];
    steps.extend(
        sysroot_fault_steps()
            .into_iter()
            .filter(|s| !s.starts_with("cleanup-")),
    );
    for step in steps {
        let s = new_sysroot(&scratch, &format!("s-{step}"), false);
        let repo = repo_of(&s);
        run_ok(ostree(&repo).args(["remote", "add", "--no-gpg-verify", "origin", &nginx.url]));
        run_ok(tl(&repo).args(["pull", "origin", &format!("testos/stable@{c1}")]));
        run_ok(admin(&s).args(["deploy", "--os=testos", "origin:testos/stable"]));
        assert_eq!(assert_default_complete(&s, &step), format!("{c1}.0"));

        let out = admin(&s)
            .arg("upgrade")
            .env("TREELINE_FAULT", &step)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.status.code() != Some(77),
            "{step}: the fault did not fire:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let default = assert_default_complete(&s, &step);
        assert!(
            default == format!("{c1}.0") || default.starts_with(&format!("{c2}.")),
            "{step}: default is {default}"
        );
        let out = admin(&s).arg("upgrade").output().unwrap();
        let code = out.status.code();
        assert!(
            code == Some(0) || (code == Some(77) && default.starts_with(&c2)),
            "{step}: the second upgrade: {out:?}"
        );
        // A deployment directory left by a kill is not reused: the new one may be `.1`.
        assert!(assert_default_complete(&s, &step).starts_with(&format!("{c2}.")));
        run_ok(admin(&s).arg("cleanup"));
        run_ok(ostree(&repo).arg("fsck"));
        clear_deployment_immutable(&s);
        force_remove(&s);
    }
}

#[test]
fn deploy_refuses_when_the_sysroot_is_full_and_keeps_the_current_default() {
    let scratch = SysrootScratch::new();
    // The whole sysroot (repo, deployments, /boot) on one 24 MiB filesystem.
    let s = scratch.path().join("sysroot");
    let _fs = LoopMount::new(&scratch.path().join("sysroot.img"), 24, &s);
    run_ok(admin(&s).arg("init-fs").arg(&s));
    run_ok(admin(&s).args(["os-init", "testos"]));
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    // v2 ships 4 MiB in /etc, copied (not hardlinked) into the deployment.
    make_tree(&tree, "a kernel\n", &[("motd", "v2\n")]);
    write_file(&tree, "usr/etc/big", &noise(4 << 20), 0o644);
    commit(&s, &tree, "testos/stable", "2.0", false);
    // Leave about 2 MiB free.
    let free = {
        let out = run_ok(tool("df").args(["-B1", "--output=avail"]).arg(&s));
        out.lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    let filler = fs::File::create(s.join("filler")).unwrap();
    filler.set_len(0).unwrap();
    run_ok(
        tool("fallocate")
            .args(["-l", &(free - (2 << 20)).to_string()])
            .arg(s.join("filler")),
    );
    let out = run_fail(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough space")
            && err.contains(&s.display().to_string())
            && err.contains("KiB needed"),
        "{err}"
    );
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);
    assert_default_complete(&s, "full sysroot");
    clear_deployment_immutable(&s);
}

/// A commit object of the sysroot's repository.
fn commit_object(sysroot: &Path, checksum: &str) -> PathBuf {
    repo_of(sysroot)
        .join("objects")
        .join(&checksum[..2])
        .join(format!("{}.commit", &checksum[2..]))
}

#[test]
fn deploy_seeds_var_once_and_creates_missing_tmpfiles_paths() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    let accounts: &[(&str, &str)] = &[
        ("motd", "v1\n"),
        (
            "passwd",
            "root:x:0:0::/root:/bin/sh\nsvc:x:105:105::/:/bin/false\n",
        ),
        ("group", "root:x:0:\nsvc:x:105:\n"),
    ];
    make_tree(&tree, "a kernel\n", accounts);
    write_file(&tree, "var/lib/app/shipped", b"v1\n", 0o644);
    write_file(
        &tree,
        "usr/share/factory/var/lib/factory/seed",
        b"factory\n",
        0o644,
    );
    write_file(
        &tree,
        "usr/lib/tmpfiles.d/app.conf",
        b"d /var/lib/svc 0750 svc svc -\nL /var/lib/link - - - - /usr/share/x\nC /var/lib/factory\nd relative\n",
        0o644,
    );
    commit(&s, &tree, "testos/stable", "1.0", false);
    let out = admin(&s)
        .args(["deploy", "--os=testos", "testos/stable"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/usr/lib/tmpfiles.d/app.conf:4") && err.contains("not absolute"),
        "the malformed line is named: {err}"
    );
    let var = s.join("ostree/deploy/testos/var");
    assert_eq!(
        fs::read_to_string(var.join("lib/app/shipped")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        fs::metadata(var.join("lib/app/shipped")).unwrap().nlink(),
        1,
        "seeded /var files are copies, never links to store objects"
    );
    assert!(
        !var.join(".tl-seed-staging").exists(),
        "no staging copy is left"
    );
    let md = fs::metadata(var.join("lib/svc")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 105, 105));
    assert_eq!(
        fs::read_link(var.join("lib/link")).unwrap(),
        Path::new("/usr/share/x")
    );
    assert_eq!(
        fs::read_to_string(var.join("lib/factory/seed")).unwrap(),
        "factory\n"
    );
    // What init-fs made is kept.
    assert!(fs::symlink_metadata(var.join("run")).unwrap().is_symlink());

    // The machine changes /var; the next commit ships other /var content and a new line.
    fs::write(var.join("lib/app/shipped"), "local\n").unwrap();
    fs::remove_file(var.join("lib/link")).unwrap();
    make_tree(&tree, "a kernel\n", accounts);
    write_file(&tree, "var/lib/app/shipped", b"v2\n", 0o644);
    write_file(&tree, "var/lib/app/new-in-v2", b"v2\n", 0o644);
    write_file(
        &tree,
        "usr/lib/tmpfiles.d/app.conf",
        b"d /var/lib/svc 0700 root root -\nL /var/lib/link - - - - /usr/share/x\nd /var/lib/v2\n",
        0o644,
    );
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    assert_eq!(
        fs::read_to_string(var.join("lib/app/shipped")).unwrap(),
        "local\n",
        "commit /var content reaches the stateroot once"
    );
    assert!(!var.join("lib/app/new-in-v2").exists());
    // tmpfiles.d creates what is missing and changes nothing that exists.
    assert!(var.join("lib/v2").is_dir());
    assert!(
        fs::symlink_metadata(var.join("lib/link"))
            .unwrap()
            .is_symlink()
    );
    let md = fs::metadata(var.join("lib/svc")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o750, 105));
    // The deployment itself still has the commit's /var, hidden at boot by the stateroot's.
    assert_eq!(
        fs::read_to_string(deployment_dir(&s, &format!("{c2}.0")).join("var/lib/app/shipped"))
            .unwrap(),
        "v2\n"
    );
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
}

#[test]
fn files_of_renumbered_users_get_the_machine_ids_without_touching_the_repo() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(
        &tree,
        "a kernel\n",
        &[
            ("motd", "v1\n"),
            (
                "passwd",
                "root:x:0:0::/root:/bin/sh\nsvc:x:101:101::/:/bin/false\n",
            ),
            ("group", "root:x:0:\nsvc:x:101:\n"),
        ],
    );
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    // The machine adds alice (1000) and a file owned by 105, a number it has not given out.
    let etc1 = deployment_dir(&s, &format!("{c1}.0")).join("etc");
    fs::write(
        etc1.join("passwd"),
        "root:x:0:0::/root:/bin/sh\nsvc:x:101:101::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(etc1.join("group"), "root:x:0:\nsvc:x:101:\nalice:x:1000:\n").unwrap();
    fs::write(etc1.join("local-105"), "mine\n").unwrap();
    std::os::unix::fs::chown(etc1.join("local-105"), Some(105), Some(105)).unwrap();

    // The new build gave svc 105 and a new user msg alice's 1000.
    make_tree(
        &tree,
        "a kernel\n",
        &[
            ("motd", "v2\n"),
            (
                "passwd",
                "root:x:0:0::/root:/bin/sh\nsvc:x:105:105::/:/bin/false\nmsg:x:1000:1000::/:/bin/false\n",
            ),
            ("group", "root:x:0:\nsvc:x:105:\nmsg:x:1000:\n"),
            ("svc.conf", "svc\n"),
        ],
    );
    let chown = |rel: &str, id: u32| {
        std::os::unix::fs::lchown(tree.join(rel), Some(id), Some(id)).unwrap();
    };
    write_file(&tree, "usr/lib/svc/data", b"svc data\n", 0o4750);
    write_file(&tree, "usr/lib/msg/data", b"msg data\n", 0o640);
    std::os::unix::fs::symlink("data", tree.join("usr/lib/svc/link")).unwrap();
    chown("usr/lib/svc/data", 105);
    chown("usr/lib/svc/link", 105);
    chown("usr/lib/svc", 105);
    chown("usr/lib/msg/data", 1000);
    chown("usr/etc/svc.conf", 105);
    fs::set_permissions(
        tree.join("usr/lib/svc/data"),
        fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    let out = run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    assert!(
        out.contains("Owners changed to this machine's IDs: 5 files"),
        "{out}"
    );

    let d2 = deployment_dir(&s, &format!("{c2}.0"));
    let owner = |rel: &str| {
        let md = fs::symlink_metadata(d2.join(rel)).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(owner("usr/lib/svc/data"), (101, 101));
    assert_eq!(owner("usr/lib/svc/link"), (101, 101));
    assert_eq!(owner("usr/lib/svc"), (101, 101));
    assert_eq!(owner("usr/lib/msg/data"), (1001, 1001));
    assert_eq!(owner("usr/etc/svc.conf"), (101, 101));
    assert_eq!(owner("etc/svc.conf"), (101, 101));
    // Local files already carry the machine's numbers and keep them.
    assert_eq!(owner("etc/local-105"), (105, 105));
    let md = fs::metadata(d2.join("usr/lib/svc/data")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4750, "setuid survives the chown");
    assert_eq!(md.nlink(), 1, "the re-owned file is a copy, not the object");
    assert_eq!(
        fs::read_to_string(d2.join("usr/lib/svc/data")).unwrap(),
        "svc data\n"
    );
    // Unaffected files are still hardlinks to the repository.
    assert!(fs::metadata(d2.join("usr/bin/true")).unwrap().nlink() > 1);
    // The repository's objects keep the tree's owners: ostree's fsck re-hashes them.
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
    assert_eq!(ostree_status(&s), treeline_status(&s));
}

#[test]
fn staged_deployment_becomes_the_default_only_when_finalized() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    let loader = fs::read_link(s.join("boot/loader")).unwrap();

    make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    let out = run_ok(admin(&s).args(["deploy", "--stage", "--os=testos", "testos/stable"]));
    assert!(out.contains("Staged testos/"), "{out}");
    // The boot list is unchanged: ostree sees only v1, our status adds the staged one.
    assert_eq!(fs::read_link(s.join("boot/loader")).unwrap(), loader);
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);
    let st = treeline_status_json(&s);
    let deps = st["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[0]["id"], format!("{c2}.0"));
    assert_eq!(deps[0]["staged"], true);
    assert_eq!(deps[0]["index"], serde_json::Value::Null);
    assert_eq!(deps[0]["default"], false);
    assert_eq!(deps[0]["version"], "2.0");
    assert_eq!(deps[1]["id"], format!("{c1}.0"));
    assert_eq!(
        (deps[1]["default"].clone(), deps[1]["staged"].clone()),
        (true.into(), false.into())
    );
    let human = run_ok(admin(&s).arg("status"));
    assert!(
        human.contains(&format!("testos {c2}.0 (staged)")),
        "{human}"
    );
    // Cleanup keeps it.
    run_ok(admin(&s).arg("cleanup"));
    assert!(
        deployment_dir(&s, &format!("{c2}.0"))
            .join("usr/bin/true")
            .is_file()
    );

    // /etc changes made after staging reach the new deployment when it is finalized.
    let etc1 = deployment_dir(&s, &format!("{c1}.0")).join("etc");
    fs::write(etc1.join("after-staging"), "kept\n").unwrap();
    fs::write(etc1.join("motd"), "local motd\n").unwrap();
    let out = run_ok(admin(&s).arg("finalize-staged"));
    assert!(out.contains(&format!("Finalized testos/{c2}.0")), "{out}");
    let st = ostree_status(&s);
    assert_eq!(names(&st), vec![format!("{c2}.0"), format!("{c1}.0")]);
    assert_eq!(st, treeline_status(&s));
    let etc2 = deployment_dir(&s, &format!("{c2}.0")).join("etc");
    assert_eq!(
        fs::read_to_string(etc2.join("after-staging")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        fs::read_to_string(etc2.join("motd")).unwrap(),
        "local motd\n"
    );
    assert!(!s.join("run/treeline/staged-deployment").exists());
    assert_eq!(
        run_ok(admin(&s).arg("finalize-staged")).trim(),
        "No staged deployment"
    );

    // `upgrade --stage` of a local origin; a staged target is nothing new.
    make_tree(&tree, "kernel 3\n", &[("motd", "v3\n")]);
    let c3 = commit(&s, &tree, "testos/stable", "3.0", false);
    run_ok(admin(&s).args(["upgrade", "--stage"]));
    let out = admin(&s).args(["upgrade", "--stage"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert_eq!(
        treeline_status_json(&s)["deployments"][0]["id"],
        format!("{c3}.0")
    );
    assert_eq!(
        run_ok(ostree(&repo_of(&s)).args(["rev-parse", "treeline/staged-deployment"])).trim(),
        c3
    );
    // A reboot without finalizing (a fresh /run) forgets it; cleanup removes it.
    fs::remove_dir_all(s.join("run/treeline")).unwrap();
    let st = treeline_status(&s);
    assert_eq!(names(&st), vec![format!("{c2}.0"), format!("{c1}.0")]);
    run_ok(admin(&s).arg("cleanup"));
    assert!(!deployment_dir(&s, &format!("{c3}.0")).exists());
    let refs = run_ok(ostree(&repo_of(&s)).arg("refs"));
    assert!(!refs.contains("treeline/staged-deployment"), "{refs}");
    run_ok(ostree(&repo_of(&s)).arg("fsck"));
}

#[test]
fn finalize_killed_at_any_step_leaves_a_complete_default_and_can_be_rerun() {
    let scratch = SysrootScratch::new();
    let mut steps = vec!["finalize-after-etc".to_owned()];
    steps.extend(
        sysroot_fault_steps()
            .into_iter()
            .filter(|s| s.starts_with("write-") || s.starts_with("cleanup-after")),
    );
    for step in steps {
        let s = new_sysroot(&scratch, &format!("s-{step}"), false);
        let tree = scratch.path().join("tree");
        make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
        let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
        run_ok(admin(&s).args(["deploy", "testos/stable"]));
        make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
        let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
        run_ok(admin(&s).args(["deploy", "--stage", "testos/stable"]));
        let etc1 = deployment_dir(&s, &format!("{c1}.0")).join("etc");
        fs::write(etc1.join("after-staging"), "kept\n").unwrap();

        let out = admin(&s)
            .arg("finalize-staged")
            .env("TREELINE_FAULT", &step)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{step}: the fault did not fire:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let default = assert_default_complete(&s, &step);
        assert!(
            default == format!("{c1}.0") || default == format!("{c2}.0"),
            "{step}: default is {default}"
        );
        // Finalizing again completes it, with the change made after staging.
        run_ok(admin(&s).arg("finalize-staged"));
        assert_eq!(assert_default_complete(&s, &step), format!("{c2}.0"));
        let etc2 = deployment_dir(&s, &format!("{c2}.0")).join("etc");
        assert_eq!(
            fs::read_to_string(etc2.join("after-staging")).unwrap(),
            "kept\n",
            "{step}"
        );
        assert!(!etc2.with_file_name(".tl-finalize-etc").exists(), "{step}");
        assert_eq!(ostree_status(&s), treeline_status(&s), "{step}");
        run_ok(ostree(&repo_of(&s)).arg("fsck"));
        clear_deployment_immutable(&s);
        force_remove(&s);
    }
}

#[test]
fn corrupted_or_missing_commit_fails_deploy_and_upgrade_naming_it() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    make_tree(&tree, "kernel 1\n", &[("motd", "v1\n")]);
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    let before = fs::read_link(s.join("boot/loader")).unwrap();
    let unchanged = |what: &str| {
        assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")], "{what}");
        assert_eq!(
            fs::read_link(s.join("boot/loader")).unwrap(),
            before,
            "{what}"
        );
        let dirs = fs::read_dir(s.join("ostree/deploy/testos/deploy"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(dirs, 1, "{what}: a deployment directory was left");
        assert_default_complete(&s, what);
    };

    // A commit whose object has a flipped byte.
    make_tree(&tree, "kernel 2\n", &[("motd", "v2\n")]);
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    let obj = commit_object(&s, &c2);
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&obj, &bytes).unwrap();
    for args in [
        &["deploy", "--os=testos", "testos/stable"][..],
        &["upgrade"][..],
    ] {
        let out = run_fail(admin(&s).args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&c2) && err.contains("corrupted"),
            "{args:?}: {err}"
        );
        assert_ne!(out.status.code(), Some(77));
        unchanged(&format!("{args:?} of a corrupted commit"));
    }

    // A ref to a commit whose object is gone, and a checksum the repository never had.
    fs::remove_file(&obj).unwrap();
    for args in [
        &["deploy", "--os=testos", "testos/stable"][..],
        &["upgrade"][..],
    ] {
        let out = run_fail(admin(&s).args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&c2) && err.contains("not found"),
            "{args:?}: {err}"
        );
        unchanged(&format!("{args:?} of a missing commit"));
    }
    let unknown = "0123456789abcdef".repeat(4);
    let out = run_fail(admin(&s).args(["deploy", "--os=testos", &unknown]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&unknown), "{err}");
    unchanged("deploy of an unknown checksum");
}

#[test]
fn finalize_units_are_valid_and_watch_the_staged_record() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let record = format!("/{}", treeline_sysroot::staged::STAGED_RECORD);
    let scratch = tempfile::tempdir().unwrap();
    for unit in [
        "treeline-finalize-staged.service",
        "treeline-finalize-staged.path",
    ] {
        let text = fs::read_to_string(dist.join(unit)).unwrap();
        assert!(text.contains(&record), "{unit} does not name {record}");
        // systemd-analyze checks that ExecStop's binary exists: point it at ours.
        let text = text.replace("/usr/bin/treeline", env!("CARGO_BIN_EXE_treeline"));
        fs::write(scratch.path().join(unit), text).unwrap();
    }
    let service = fs::read_to_string(dist.join("treeline-finalize-staged.service")).unwrap();
    assert!(service.contains("ExecStop=/usr/bin/treeline admin finalize-staged"));
    run_ok(
        tool("systemd-analyze")
            .args([
                "verify",
                "./treeline-finalize-staged.service",
                "./treeline-finalize-staged.path",
            ])
            .current_dir(scratch.path()),
    );
    let openrc = dist.join("openrc/treeline-finalize-staged");
    let text = fs::read_to_string(&openrc).unwrap();
    assert!(text.contains(&record) && text.contains("treeline admin finalize-staged"));
    assert!(fs::metadata(&openrc).unwrap().mode() & 0o111 != 0);
    run_ok(tool("sh").arg("-n").arg(&openrc));
}

#[test]
fn finalize_refuses_when_users_added_since_staging_change_the_tree_ids() {
    let scratch = SysrootScratch::new();
    let s = new_sysroot(&scratch, "sysroot", false);
    let tree = scratch.path().join("tree");
    let base = "root:x:0:0::/root:/bin/sh\n";
    make_tree(
        &tree,
        "a kernel\n",
        &[("motd", "v1\n"), ("passwd", base), ("group", "root:x:0:\n")],
    );
    let c1 = commit(&s, &tree, "testos/stable", "1.0", false);
    run_ok(admin(&s).args(["deploy", "--os=testos", "testos/stable"]));
    make_tree(
        &tree,
        "a kernel\n",
        &[
            ("motd", "v2\n"),
            ("passwd", &format!("{base}msg:x:1000:1000::/:/bin/false\n")),
            ("group", "root:x:0:\nmsg:x:1000:\n"),
        ],
    );
    write_file(&tree, "usr/lib/msg/data", b"msg\n", 0o644);
    std::os::unix::fs::chown(tree.join("usr/lib/msg/data"), Some(1000), Some(1000)).unwrap();
    let c2 = commit(&s, &tree, "testos/stable", "2.0", false);
    run_ok(admin(&s).args(["deploy", "--stage", "testos/stable"]));

    // After staging, the machine gives 1000 to alice: msg would need another number.
    let etc1 = deployment_dir(&s, &format!("{c1}.0")).join("etc");
    fs::write(
        etc1.join("passwd"),
        format!("{base}alice:x:1000:1000::/home/alice:/bin/sh\n"),
    )
    .unwrap();
    fs::write(etc1.join("group"), "root:x:0:\nalice:x:1000:\n").unwrap();
    let out = run_fail(admin(&s).arg("finalize-staged"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{c2}.0")) && err.contains("stage it again"),
        "{err}"
    );
    assert_eq!(names(&ostree_status(&s)), vec![format!("{c1}.0")]);
    assert_default_complete(&s, "refused finalize");

    // Staged again, it finalizes with msg's files on the new number.
    run_ok(admin(&s).args(["deploy", "--stage", "testos/stable"]));
    run_ok(admin(&s).arg("finalize-staged"));
    let st = names(&ostree_status(&s));
    assert_eq!(st, vec![format!("{c2}.1"), format!("{c1}.0")]);
    let md = fs::metadata(deployment_dir(&s, &format!("{c2}.1")).join("usr/lib/msg/data")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1001, 1001));
    assert!(!deployment_dir(&s, &format!("{c2}.0")).exists());
}

#[test]
fn syslinux_config_follows_the_boot_entries_when_its_link_exists() {
    let scratch = SysrootScratch::new();
    let plain = new_sysroot(&scratch, "plain", false);
    let s = new_sysroot(&scratch, "sysroot", false);
    // The link image builds make (ostree's syslinux layout) turns the config on.
    fs::create_dir_all(s.join("boot/syslinux")).unwrap();
    std::os::unix::fs::symlink(
        "../loader/syslinux.cfg",
        s.join("boot/syslinux/syslinux.cfg"),
    )
    .unwrap();
    let tree = scratch.path().join("tree");
    for (kernel, version) in [("kernel 1\n", "1.0"), ("kernel 2\n", "2.0")] {
        make_tree(&tree, kernel, &[]);
        for root in [&plain, &s] {
            commit(root, &tree, "testos/stable", version, false);
            run_ok(admin(root).args(["deploy", "--os=testos", "testos/stable", "--karg=rw"]));
        }
    }
    assert!(!plain.join("boot/loader/syslinux.cfg").exists());
    // Read through the link, as extlinux does: one label per entry, newest the default.
    let cfg = fs::read_to_string(s.join("boot/syslinux/syslinux.cfg")).unwrap();
    assert!(cfg.contains("DEFAULT ostree-0\n"), "{cfg}");
    for (i, version) in [(0, 2), (1, 1)] {
        let entry =
            fs::read_to_string(s.join(format!("boot/loader/entries/ostree-{version}-testos.conf")))
                .unwrap();
        let field = |k: &str| {
            entry
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} ")))
                .unwrap()
                .to_owned()
        };
        let label = format!(
            "LABEL ostree-{i}\n\tMENU LABEL {}\n\tKERNEL {}\n\tINITRD {}\n\tAPPEND {}\n",
            field("title"),
            field("linux"),
            field("initrd"),
            field("options")
        );
        assert!(cfg.contains(&label), "{label} not in\n{cfg}");
    }
}

#[test]
fn upgrade_check_says_what_the_upgrade_will_download() {
    let scratch = SysrootScratch::new();
    let server = scratch.path().join("server");
    run_ok(ostree(&server).args(["init", "--mode=archive"]));
    let tree = scratch.path().join("tree");
    make_tree(&tree, "a kernel\n", &[("motd", "v1\n")]);
    commit_to_server(&server, &tree, "testos/stable", "1.0");
    let nginx = Nginx::start(&server, &scratch.path().join("nginx"));
    let s = new_sysroot(&scratch, "sysroot", false);
    let repo = repo_of(&s);
    run_ok(ostree(&repo).args(["remote", "add", "--no-gpg-verify", "origin", &nginx.url]));
    run_ok(tl(&repo).args(["pull", "origin", "testos/stable"]));
    run_ok(admin(&s).args(["deploy", "--os=testos", "origin:testos/stable"]));
    let check = |s: &Path| -> serde_json::Value {
        serde_json::from_str(&run_ok(admin(s).args(["upgrade", "--check", "--json"]))).unwrap()
    };
    let file_objects = |repo: &Path| {
        run_ok(
            tool("find")
                .arg(repo.join("objects"))
                .args(["-name", "*.file"]),
        )
        .lines()
        .count()
    };

    // No static delta: the count of content objects, and the upgrade fetches exactly those.
    make_tree(
        &tree,
        "a second kernel\n",
        &[("motd", "v2\n"), ("issue", "new\n")],
    );
    let c2 = commit_to_server(&server, &tree, "testos/stable", "2.0");
    let files = file_objects(&repo);
    let v = check(&s);
    let dl = &v["download"];
    assert_eq!(dl["commit"], c2.as_str(), "{v}");
    assert!(dl["delta"].is_null(), "{v}");
    let n = dl["objects"].as_u64().unwrap();
    assert!(n >= 3, "{v}");
    assert_eq!(
        file_objects(&repo),
        files,
        "--check fetched content objects"
    );
    let out = run_ok(admin(&s).args(["upgrade", "--check"]));
    assert!(
        out.contains(&format!("Will download {n} object(s)")),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(admin(&s).args(["upgrade", "--json"]))).unwrap();
    assert_eq!(v["objects_fetched"].as_u64(), Some(n), "{v}");

    // With ostree's static delta from the deployed commit: its exact size.
    make_tree(&tree, "a third kernel\n", &[("motd", "v3\n")]);
    let c3 = commit_to_server(&server, &tree, "testos/stable", "3.0");
    run_ok(ostree(&server).args([
        "static-delta",
        "generate",
        &format!("--from={c2}"),
        &format!("--to={c3}"),
    ]));
    run_ok(ostree(&server).args(["summary", "-u"]));
    let delta_files: u64 = run_ok(
        tool("find")
            .arg(server.join("deltas"))
            .args(["-type", "f", "-printf", "%s\n"]),
    )
    .lines()
    .map(|l| l.parse::<u64>().unwrap())
    .sum();
    let v = check(&s);
    let dl = &v["download"];
    assert_eq!(dl["delta"]["name"], format!("{c2}-{c3}"), "{v}");
    assert_eq!(
        dl["download_bytes"].as_u64(),
        Some(delta_files + dl["delta"]["fallback_bytes"].as_u64().unwrap()),
        "{v}"
    );
    let out = run_ok(admin(&s).args(["upgrade", "--check"]));
    assert!(
        out.contains("Will download") && out.contains("static delta"),
        "{out}"
    );
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "origin:testos/stable"])).trim(),
        c2
    );
    clear_deployment_immutable(&s);
}
