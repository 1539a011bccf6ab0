//! Container mode: a container sysroot (deployment list instead of boot entries) started
//! with the static `treeline-boot` as `/sbin/init` in a PID and mount namespace runs the
//! default deployment's init; upgrade and rollback change which one a restart runs; the
//! list swap survives a kill at every step. Also `treeline-boot prepare-root` in a mount
//! namespace, and that the binary CI builds is static.

mod common;

use std::fs;
use std::path::Path;

use common::container::*;
use common::*;

fn status_json(s: &Path) -> serde_json::Value {
    let out = run_ok(admin(s).args(["status", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}:\n{out}"))
}

/// The deployment ids in list order, as `status --json` gives them.
fn ids(st: &serde_json::Value) -> Vec<String> {
    st["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The deployment list file, parsed by hand: `STATEROOT/NAME` lines, default first.
fn list_file(s: &Path) -> Vec<String> {
    fs::read_to_string(s.join("ostree/container-deployments"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.strip_prefix("alpine/")
                .unwrap_or_else(|| panic!("{l}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn container_runs_the_default_deployment_then_the_upgrade_then_the_rollback() {
    let scratch = SysrootScratch::new();
    let s = container_sysroot(&scratch);
    let work = scratch.path().join("work");
    let c1 = compose(&s, &work, "v1");
    run_ok(admin(&s).args(["deploy", REF]));
    let d1 = format!("{c1}.0");
    assert_eq!(boot(&s, Root::Chroot), expected_report(&s, &d1, "v1"));
    // /var is the stateroot's; /etc the deployment's own.
    let var = s.join("ostree/deploy/alpine/var/tl-probe");
    assert_eq!(fs::read_to_string(&var).unwrap(), "v1\n");
    assert_eq!(
        fs::read_to_string(deployment_dir(&s, &d1).join("etc/tl-probe")).unwrap(),
        "v1\n"
    );
    assert!(!deployment_dir(&s, &d1).join("usr/tl-probe").exists());

    // v2 on the same ref; `upgrade` deploys it; a restart runs it.
    let c2 = compose(&s, &work, "v2");
    assert_ne!(c1, c2);
    run_ok(admin(&s).arg("upgrade"));
    let d2 = format!("{c2}.0");
    let st = status_json(&s);
    assert_eq!(st["container"], true);
    assert_eq!(ids(&st), vec![d2.clone(), d1.clone()]);
    assert_eq!(list_file(&s), vec![d2.clone(), d1.clone()]);
    assert_eq!(st["deployments"][0]["version"], "v2");
    assert_eq!(st["deployments"][0]["origin_refspec"], REF);
    // The local /etc change of v1 was merged into v2.
    assert_eq!(
        fs::read_to_string(deployment_dir(&s, &d2).join("etc/tl-probe")).unwrap(),
        "v1\n"
    );
    assert_eq!(boot(&s, Root::Chroot), expected_report(&s, &d2, "v2"));
    assert_eq!(fs::read_to_string(&var).unwrap(), "v2\n");

    // Rollback: v1 is the default again, and a restart runs it.
    run_ok(admin(&s).arg("rollback"));
    assert_eq!(ids(&status_json(&s)), vec![d1.clone(), d2.clone()]);
    assert_eq!(boot(&s, Root::Chroot), expected_report(&s, &d1, "v1"));
    // And back once more, as a user undoing the rollback would.
    run_ok(admin(&s).arg("rollback"));
    assert_eq!(boot(&s, Root::MountPoint), expected_report(&s, &d2, "v2"));

    // No boot loader was involved: no entries, no kernels.
    assert!(fs::symlink_metadata(s.join("boot/loader")).is_err());
    assert!(!s.join("boot/ostree").exists());
}

/// A tiny container tree without a kernel: /usr/bin/true, /usr/etc/motd, an init.
fn make_tree(dir: &Path, motd: &str) {
    if dir.exists() {
        force_remove(dir);
    }
    write_file(dir, "usr/bin/true", b"#!/bin/sh\n", 0o755);
    write_file(dir, "sbin/init", b"#!/bin/sh\n", 0o755);
    write_file(dir, "usr/etc/motd", motd.as_bytes(), 0o644);
    fs::create_dir_all(dir.join("var")).unwrap();
}

fn commit(s: &Path, dir: &Path, branch: &str, version: &str) -> String {
    let repo = s.join("ostree/repo");
    run_ok(
        tl(&repo)
            .args(["commit", "-b", branch])
            .arg(format!("--add-metadata-string=version={version}"))
            .arg(dir),
    );
    run_ok(ostree(&repo).args(["rev-parse", branch]))
        .trim()
        .to_owned()
}

/// The default deployment is complete and the list names only existing deployments;
/// returns the default's id.
fn assert_default_complete(s: &Path, step: &str) -> String {
    let list = list_file(s);
    for id in &list {
        assert!(
            deployment_dir(s, id).is_dir(),
            "{step}: {id} listed, missing"
        );
    }
    let id = list
        .first()
        .unwrap_or_else(|| panic!("{step}: empty list"))
        .clone();
    let dir = deployment_dir(s, &id);
    assert!(
        dir.join("usr/bin/true").is_file(),
        "{step}: /usr incomplete"
    );
    assert!(dir.join("etc/motd").is_file(), "{step}: /etc incomplete");
    assert!(
        dir.with_file_name(format!("{id}.origin")).is_file(),
        "{step}: origin missing"
    );
    assert_eq!(ids(&status_json(s))[0], id, "{step}: status disagrees");
    id
}

/// Steps of the boot-loader write that a container sysroot does not have.
const BOOT_LOADER_ONLY: &[&str] = &[
    "write-after-kernels",
    "write-after-bootlinks",
    "write-after-entries",
];

#[test]
fn container_list_swap_killed_at_any_step_leaves_old_or_new_default_complete() {
    let scratch = SysrootScratch::new();
    let out = run_ok(treeline().arg("--list-fault-steps"));
    let steps: Vec<&str> = out
        .lines()
        .filter(|s| {
            ["deploy-", "write-", "cleanup-"]
                .iter()
                .any(|p| s.starts_with(p))
        })
        .collect();
    assert!(steps.len() >= 8, "sysroot fault steps missing: {out}");
    let tree = scratch.path().join("tree");
    for (n, step) in steps.iter().enumerate() {
        let s = scratch.path().join(format!("s{n}"));
        run_ok(admin(&s).args(["init-fs", "--container"]).arg(&s));
        run_ok(admin(&s).args(["os-init", STATEROOT]));
        make_tree(&tree, "v1\n");
        let c1 = commit(&s, &tree, "stable", "1");
        run_ok(admin(&s).args(["deploy", "stable"]));
        make_tree(&tree, "v2\n");
        let c2 = commit(&s, &tree, "stable", "2");
        make_tree(&tree, "v0\n");
        let c0 = commit(&s, &tree, "old", "0");
        run_ok(admin(&s).args(["deploy", "old"]));
        run_ok(admin(&s).args(["deploy", "stable"]));
        assert_eq!(list_file(&s), vec![format!("{c2}.0"), format!("{c0}.0")]);
        // Deploying c1 again drops c0 and cleans it up.
        let out = admin(&s)
            .args(["deploy", &c1])
            .env("TREELINE_FAULT", step)
            .output()
            .unwrap();
        if BOOT_LOADER_ONLY.contains(step) {
            assert!(out.status.success(), "{step}: {out:?}");
            assert!(list_file(&s)[0].starts_with(&c1), "{step}");
        } else {
            assert!(
                !out.status.success(),
                "{step}: the fault did not fire:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let default = assert_default_complete(&s, step);
            assert!(
                default == format!("{c2}.0") || default.starts_with(&format!("{c1}.")),
                "{step}: default is {default}"
            );
        }
        // The next run repairs whatever the kill left behind; the prune keeps every
        // listed commit.
        run_ok(admin(&s).args(["cleanup", "--no-prune"]));
        run_ok(admin(&s).args(["deploy", "stable"]));
        assert_default_complete(&s, step);
        run_ok(admin(&s).arg("cleanup"));
        run_ok(ostree(&s.join("ostree/repo")).arg("fsck"));
        let refs = run_ok(ostree(&s.join("ostree/repo")).arg("refs"));
        for id in list_file(&s) {
            assert!(
                refs.lines()
                    .any(|r| r == format!("ostree/container/alpine/{id}")),
                "{step}: no ref keeps {id}: {refs}"
            );
        }
        clear_deployment_immutable(&s);
        force_remove(&s);
    }
}

#[test]
fn container_status_pin_undeploy_and_cleanup() {
    let scratch = SysrootScratch::new();
    let s = scratch.path().join("s");
    run_ok(admin(&s).args(["init-fs", "--container"]).arg(&s));
    run_ok(admin(&s).args(["os-init", STATEROOT]));
    let tree = scratch.path().join("tree");
    let mut ids_made = Vec::new();
    for v in ["1", "2", "3"] {
        make_tree(&tree, &format!("v{v}\n"));
        ids_made.push(format!("{}.0", commit(&s, &tree, "stable", v)));
        if v == "1" {
            run_ok(admin(&s).args(["deploy", "stable"]));
            run_ok(admin(&s).args(["pin", "0"]));
        } else {
            run_ok(admin(&s).arg("upgrade"));
        }
    }
    // v3 new, v2 the merge deployment, v1 kept by its pin.
    let st = status_json(&s);
    assert_eq!(st["container"], true);
    assert_eq!(st["booted"], serde_json::Value::Null);
    assert_eq!(
        ids(&st),
        vec![
            ids_made[2].clone(),
            ids_made[1].clone(),
            ids_made[0].clone()
        ]
    );
    assert_eq!(st["deployments"][2]["pinned"], true);
    assert_eq!(st["deployments"][0]["version"], "3");
    assert_eq!(st["deployments"][0]["bootcsum"], "");
    let human = run_ok(admin(&s).arg("status"));
    assert!(human.contains("Pinned: yes"), "{human}");
    // Kernel arguments do not exist here.
    let out = run_fail(admin(&s).args(["kargs", "--append", "quiet"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no kernel arguments"),
        "{out:?}"
    );
    // Undeploy the middle one: gone from the list and from disk.
    run_ok(admin(&s).args(["undeploy", "1"]));
    assert_eq!(
        list_file(&s),
        vec![ids_made[2].clone(), ids_made[0].clone()]
    );
    assert!(!deployment_dir(&s, &ids_made[1]).exists());
    // Unpin v1, upgrade to v4: v1 is dropped, v3 (merge) kept.
    run_ok(admin(&s).args(["pin", "--unpin", "1"]));
    make_tree(&tree, "v4\n");
    let c4 = commit(&s, &tree, "stable", "4");
    run_ok(admin(&s).arg("upgrade"));
    assert_eq!(list_file(&s), vec![format!("{c4}.0"), ids_made[2].clone()]);
    assert!(!deployment_dir(&s, &ids_made[0]).exists());
    run_ok(admin(&s).arg("cleanup"));
    run_ok(ostree(&s.join("ostree/repo")).arg("fsck"));
    assert_default_complete(&s, "after cleanup");
}

#[test]
fn treeline_boot_is_static_and_install_boot_refuses_a_dynamic_one() {
    let boot = static_boot();
    let file = run_ok(tool("file").arg("-L").arg(&boot));
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    // ldd exits nonzero for a static program; its words are what count.
    let ldd = tool("ldd").arg(&boot).output().unwrap();
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "{said}"
    );

    let scratch = SysrootScratch::new();
    let s = scratch.path().join("s");
    run_ok(admin(&s).args(["init-fs", "--container"]).arg(&s));
    let out = run_fail(
        admin(&s)
            .arg("install-boot")
            .arg("--from")
            .arg(env!("CARGO_BIN_EXE_treeline")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dynamically linked"), "{err}");
    assert!(!s.join("sbin/init").exists());
    // A boot-loader sysroot has no use for it.
    let vm = scratch.path().join("vm");
    run_ok(admin(&vm).arg("init-fs").arg(&vm));
    let out = run_fail(admin(&vm).arg("install-boot").arg("--from").arg(&boot));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a container sysroot"), "{err}");
}

#[test]
fn prepare_root_builds_the_ostree_karg_deployment_on_a_new_root() {
    let scratch = SysrootScratch::new();
    let s = scratch.path().join("s");
    run_ok(admin(&s).arg("init-fs").arg(&s));
    run_ok(admin(&s).args(["os-init", STATEROOT]));
    let tree = scratch.path().join("tree");
    make_tree(&tree, "v1\n");
    write_file(&tree, "usr/lib/modules/6.1.0/vmlinuz", b"kernel\n", 0o644);
    fs::create_dir_all(tree.join("sysroot")).unwrap();
    let c1 = commit(&s, &tree, "stable", "1");
    run_ok(admin(&s).args(["deploy", "stable"]));
    // The ostree= argument the boot entry gives the kernel.
    let entries = s.join("boot/loader/entries");
    let entry = fs::read_dir(&entries)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let options = fs::read_to_string(&entry).unwrap();
    let ostree_arg = options
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .and_then(|o| o.split_whitespace().find(|w| w.starts_with("ostree=")))
        .unwrap_or_else(|| panic!("{options}"))
        .to_owned();
    let cmdline = scratch.path().join("cmdline");
    fs::write(&cmdline, format!("BOOT_IMAGE=x quiet {ostree_arg} rw\n")).unwrap();
    let newroot = scratch.path().join("newroot");
    fs::create_dir(&newroot).unwrap();
    // In a private mount namespace: prepare the root, then look at it as switch_root's
    // caller would.
    let script = r#"set -e
"$BOOT" prepare-root --sysroot "$S" --cmdline "$CMDLINE" "$NEW"
test -x "$NEW/usr/bin/true" && echo usr-content=ok
if touch "$NEW/usr/probe" 2>/dev/null; then echo usr=writable; else echo usr=readonly; fi
echo local > "$NEW/etc/probe" && echo etc=writable
echo state > "$NEW/var/probe" && echo var=ok
test -d "$NEW/sysroot/ostree/repo" && echo sysroot=ok
"#;
    let out = run_ok(
        tool("unshare")
            .args(["--mount", "sh", "-c", script])
            .env("BOOT", static_boot())
            .env("S", &s)
            .env("CMDLINE", &cmdline)
            .env("NEW", &newroot),
    );
    let d1 = format!("{c1}.0");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            format!(
                "treeline-boot: deployment alpine/{d1} is ready on {} for switch_root",
                newroot.display()
            )
            .as_str(),
            "usr-content=ok",
            "usr=readonly",
            "etc=writable",
            "var=ok",
            "sysroot=ok",
        ]
    );
    assert_eq!(
        fs::read_to_string(deployment_dir(&s, &d1).join("etc/probe")).unwrap(),
        "local\n"
    );
    assert_eq!(
        fs::read_to_string(s.join("ostree/deploy/alpine/var/probe")).unwrap(),
        "state\n"
    );
    // Nothing leaked out of the namespace.
    assert!(fs::read_dir(&newroot).unwrap().next().is_none());

    // A command line without ostree= is refused with the file named.
    fs::write(&cmdline, "quiet rw\n").unwrap();
    let out = run_fail(
        tool(static_boot().to_str().unwrap())
            .arg("prepare-root")
            .arg("--sysroot")
            .arg(&s)
            .arg("--cmdline")
            .arg(&cmdline)
            .arg(&newroot),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: no ostree= argument", cmdline.display())),
        "{err}"
    );
}

#[test]
fn container_init_prints_why_it_cannot_start_and_exits_nonzero() {
    let scratch = SysrootScratch::new();
    let s = container_sysroot(&scratch);
    let failure = |want: &str| {
        let out = start(&s, Root::Chroot);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("treeline-boot: error: "), "{stderr}");
        assert!(stderr.contains(want), "wanted {want:?}: {stderr}");
    };
    // Nothing deployed yet.
    failure("ostree/container-deployments: no deployment (deploy one");
    // A deployment without an init.
    let tree = scratch.path().join("tree");
    make_tree(&tree, "v1\n");
    fs::remove_file(tree.join("sbin/init")).unwrap();
    let c = commit(&s, &tree, "noinit", "1");
    run_ok(admin(&s).args(["deploy", "noinit"]));
    failure(&format!(
        "deploy/{c}.0/sbin/init is missing (the deployment's init)"
    ));
    // A damaged list names its line.
    fs::write(
        s.join("ostree/container-deployments"),
        "# x\nalpine/nonsense\n",
    )
    .unwrap();
    failure("ostree/container-deployments: line 2: invalid deployment name");
}
