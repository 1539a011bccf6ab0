//! Compatibility with the real `ostree`: each tool reads what the other writes, and both
//! compute the same checksums for the same input.

mod common;

use std::path::Path;

use common::*;

const MODES: [&str; 4] = ["bare", "bare-user", "bare-user-only", "archive"];

/// What an ostree/treeline checkout of a commit made in `mode` must preserve.
fn expected_fidelity(mode: &str) -> (bool, bool) {
    match mode {
        "bare-user-only" => (false, false),
        _ => (true, true),
    }
}

/// The source as a bare-user-only repository stores it: canonical permissions.
fn canonicalize(snap: &mut std::collections::BTreeMap<String, Entry>) {
    for e in snap.values_mut() {
        if e.kind != 'l' {
            e.mode &= 0o755;
        }
    }
}

fn check_treeline_commit_read_by_ostree(src: &Path, work: &Path, mode: &str) {
    let repo = work.join(format!("tl-{mode}"));
    run_ok(tl(&repo).args(["init", "--mode", mode]));
    let commit = run_ok(
        tl(&repo)
            .args([
                "commit",
                "-b",
                "test/main",
                "--timestamp=@1577836800",
                "-s",
                "hard cases",
            ])
            .arg(src),
    );
    let commit = commit.trim();
    run_ok(ostree(&repo).arg("fsck"));
    assert_eq!(
        run_ok(ostree(&repo).args(["rev-parse", "test/main"])).trim(),
        commit
    );

    let ls_ostree = run_ok(ostree(&repo).args(["ls", "-R", "-C", "test/main"]));
    let ls_tl = run_ok(tl(&repo).args(["ls", "-R", "-C", "test/main"]));
    assert_eq!(ls_tl, ls_ostree, "ls -R -C differs for mode {mode}");

    let (owners, xattrs) = expected_fidelity(mode);
    let co = work.join(format!("co-ostree-{mode}"));
    run_ok(ostree(&repo).args(["checkout", "test/main"]).arg(&co));
    let mut want = snapshot(src, owners, xattrs);
    if mode == "bare-user-only" {
        canonicalize(&mut want);
    }
    assert_same_tree(
        &want,
        &snapshot(&co, owners, xattrs),
        &format!("ostree checkout of treeline {mode} commit"),
    );
    force_remove(&co);
}

fn check_ostree_commit_read_by_treeline(src: &Path, work: &Path, mode: &str) {
    let repo = work.join(format!("os-{mode}"));
    run_ok(ostree(&repo).args(["init", &format!("--mode={mode}")]));
    let mut commit = ostree(&repo);
    commit.args([
        "commit",
        "-b",
        "test/main",
        "--timestamp=@1577836800",
        "-s",
        "hard cases",
    ]);
    if mode == "bare-user-only" {
        commit.arg("--canonical-permissions");
    }
    let commit = run_ok(commit.arg(src));
    let fsck = run_ok(tl(&repo).arg("fsck"));
    assert!(fsck.contains("no problems found"), "{fsck}");
    assert_eq!(
        run_ok(tl(&repo).args(["rev-parse", "test/main"])).trim(),
        commit.trim()
    );

    let (owners, xattrs) = expected_fidelity(mode);
    let co = work.join(format!("co-tl-{mode}"));
    run_ok(tl(&repo).args(["checkout", "test/main"]).arg(&co));
    let mut want = snapshot(src, owners, xattrs);
    if mode == "bare-user-only" {
        canonicalize(&mut want);
    }
    assert_same_tree(
        &want,
        &snapshot(&co, owners, xattrs),
        &format!("treeline checkout of ostree {mode} commit"),
    );
    force_remove(&co);

    // User-mode checkouts keep contents, modes (less setuid/setgid) and symlinks.
    let co = work.join(format!("co-tl-user-{mode}"));
    run_ok(tl(&repo).args(["checkout", "-U", "test/main"]).arg(&co));
    let mut want = snapshot(src, false, false);
    if mode == "bare-user-only" {
        canonicalize(&mut want);
    }
    // User mode drops setuid/setgid from files; directories keep setgid, as in ostree.
    for e in want.values_mut().filter(|e| e.kind == 'f') {
        e.mode &= !0o6000;
    }
    let mut got = snapshot(&co, false, false);
    if mode == "bare-user" {
        // Hardlinked from bare-user objects: the disk mode is (mode & 0775) | 0400.
        for (k, e) in want.iter_mut() {
            if e.kind == 'f' {
                e.mode = (e.mode & 0o775) | 0o400;
            }
            let _ = k;
        }
        for e in got.values_mut().filter(|e| e.kind == 'l') {
            e.mode = 0o777;
        }
    }
    assert_same_tree(
        &want,
        &got,
        &format!("treeline -U checkout of ostree {mode} commit"),
    );
    force_remove(&co);
}

#[test]
fn hard_cases_roundtrip_both_ways_in_every_mode() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_hard_tree(&src);
    for mode in MODES {
        check_treeline_commit_read_by_ostree(&src, work.path(), mode);
        check_ostree_commit_read_by_treeline(&src, work.path(), mode);
    }
}

#[test]
fn alpine_minirootfs_roundtrips_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("rootfs");
    unpack_minirootfs(&src);
    for mode in ["archive", "bare-user"] {
        check_treeline_commit_read_by_ostree(&src, work.path(), mode);
        check_ostree_commit_read_by_treeline(&src, work.path(), mode);
    }
}

#[test]
fn same_input_gives_same_checksums_as_ostree() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_hard_tree(&src);
    for mode in ["archive", "bare-user"] {
        let a = work.path().join(format!("a-{mode}"));
        let b = work.path().join(format!("b-{mode}"));
        run_ok(ostree(&a).args(["init", &format!("--mode={mode}")]));
        run_ok(tl(&b).args(["init", "--mode", mode]));
        let args = [
            "commit",
            "-b",
            "os/x86_64/main",
            "--timestamp=2021-06-01 12:00:00 UTC",
            "-s",
            "first",
            "-m",
            "body text",
            "--add-metadata-string=version=1.0",
            "--add-metadata-string=treeline.test=yes",
        ];
        let ca = run_ok(ostree(&a).args(args).arg(&src));
        let cb = run_ok(tl(&b).args(args).arg(&src));
        assert_eq!(
            ca.trim(),
            cb.trim(),
            "first commit checksum differs ({mode})"
        );
        // A child commit (implicit parent from the branch) with a changed tree.
        std::fs::write(src.join("hello.txt"), "changed\n").unwrap();
        let args2 = [
            "commit",
            "-b",
            "os/x86_64/main",
            "--timestamp=@1622548800",
            "-s",
            "second",
            "--add-metadata-string=version=1.1",
        ];
        let ca2 = run_ok(ostree(&a).args(args2).arg(&src));
        let cb2 = run_ok(tl(&b).args(args2).arg(&src));
        assert_eq!(
            ca2.trim(),
            cb2.trim(),
            "child commit checksum differs ({mode})"
        );
        std::fs::write(src.join("hello.txt"), "hello\n").unwrap();
        // Dirtree and dirmeta checksums agree too (ls -C prints both for directories).
        assert_eq!(
            run_ok(tl(&b).args(["ls", "-R", "-C", "os/x86_64/main"])),
            run_ok(ostree(&a).args(["ls", "-R", "-C", "os/x86_64/main"]))
        );
        // The log agrees on parent, content checksum, date and version.
        assert_eq!(
            run_ok(tl(&b).args(["log", "os/x86_64/main"])),
            run_ok(ostree(&a).args(["log", "os/x86_64/main"])),
        );
    }
}

#[test]
fn tar_input_gives_same_commit_as_ostree() {
    let work = tempfile::tempdir().unwrap();
    let tarball = alpine_minirootfs_tarball();
    let a = work.path().join("a");
    let b = work.path().join("b");
    run_ok(ostree(&a).args(["init", "--mode=archive"]));
    run_ok(tl(&b).args(["init", "--mode", "archive"]));
    let tree = format!("--tree=tar={}", tarball.display());
    let args = [
        "commit",
        "-b",
        "alpine",
        "--timestamp=@1700000000",
        tree.as_str(),
    ];
    let ca = run_ok(ostree(&a).args(args));
    let cb = run_ok(tl(&b).args(args));
    assert_eq!(ca.trim(), cb.trim());
    run_ok(ostree(&b).arg("fsck"));
}

#[test]
fn pull_local_works_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_hard_tree(&src);
    // ostree pulls from a treeline repository...
    let tl_repo = work.path().join("tl");
    run_ok(tl(&tl_repo).args(["init", "--mode", "archive"]));
    let c1 = run_ok(
        tl(&tl_repo)
            .args(["commit", "-b", "main", "-s", "one"])
            .arg(&src),
    );
    std::fs::write(src.join("empty"), "now with content").unwrap();
    let c2 = run_ok(
        tl(&tl_repo)
            .args(["commit", "-b", "main", "-s", "two"])
            .arg(&src),
    );
    let os_repo = work.path().join("os");
    run_ok(ostree(&os_repo).args(["init", "--mode=bare-user"]));
    run_ok(
        ostree(&os_repo)
            .args(["pull-local", "--depth=1"])
            .arg(&tl_repo)
            .arg("main"),
    );
    run_ok(ostree(&os_repo).arg("fsck"));
    assert_eq!(
        run_ok(ostree(&os_repo).args(["rev-parse", "main"])).trim(),
        c2.trim()
    );
    assert_eq!(
        run_ok(ostree(&os_repo).args(["rev-parse", "main^"])).trim(),
        c1.trim()
    );
    // ...and treeline reads a repository ostree filled by pull-local.
    let fsck = run_ok(tl(&os_repo).arg("fsck"));
    assert!(fsck.contains("no problems found"), "{fsck}");
    let co = work.path().join("co");
    run_ok(tl(&os_repo).args(["checkout", "main"]).arg(&co));
    assert_same_tree(
        &snapshot(&src, true, true),
        &snapshot(&co, true, true),
        "checkout after pull-local",
    );
    assert_eq!(
        run_ok(tl(&os_repo).args(["diff", "main^", "main"])),
        run_ok(ostree(&os_repo).args(["diff", "main^", "main"]))
    );
}

#[test]
fn checkout_union_modes_behave_like_ostree() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode", "bare-user"]));
    let a = work.path().join("a");
    std::fs::create_dir_all(a.join("etc")).unwrap();
    std::fs::write(a.join("etc/conf"), "base\n").unwrap();
    std::fs::write(a.join("keep"), "keep\n").unwrap();
    run_ok(tl(&repo).args(["commit", "-b", "a"]).arg(&a));
    let b = work.path().join("b");
    std::fs::create_dir_all(b.join("etc")).unwrap();
    std::fs::write(b.join("etc/conf"), "layer\n").unwrap();
    std::fs::write(b.join(".wh.keep"), "").unwrap();
    run_ok(tl(&repo).args(["commit", "-b", "b"]).arg(&b));

    let dest = work.path().join("dest");
    run_ok(tl(&repo).args(["checkout", "-U", "a"]).arg(&dest));
    run_fail(tl(&repo).args(["checkout", "-U", "b"]).arg(&dest));
    run_ok(
        tl(&repo)
            .args(["checkout", "-U", "--union-add", "b"])
            .arg(&dest),
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/conf")).unwrap(),
        "base\n"
    );
    // Without --whiteouts a whiteout is an ordinary file.
    assert!(dest.join(".wh.keep").exists() && dest.join("keep").exists());
    run_fail(
        tl(&repo)
            .args(["checkout", "-U", "--union-identical", "b"])
            .arg(&dest),
    );
    run_ok(
        tl(&repo)
            .args(["checkout", "-U", "--union", "--whiteouts", "b"])
            .arg(&dest),
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/conf")).unwrap(),
        "layer\n"
    );
    assert!(!dest.join("keep").exists(), "whiteout did not remove keep");
    run_ok(
        tl(&repo)
            .args(["checkout", "-U", "--union-identical", "a", "--subpath=/etc"])
            .arg(work.path().join("sub")),
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("sub/conf")).unwrap(),
        "base\n"
    );
}

#[test]
fn commit_options_match_ostree_semantics() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_hard_tree(&src);
    let a = work.path().join("a");
    let b = work.path().join("b");
    run_ok(ostree(&a).args(["init", "--mode=archive"]));
    run_ok(tl(&b).args(["init", "--mode", "archive"]));
    // Owner override, canonical permissions, several trees in order, orphan commits.
    for args in [
        vec!["--owner-uid=42", "--owner-gid=43"],
        vec!["--canonical-permissions"],
    ] {
        let mut base = vec![
            "commit",
            "-b",
            "x",
            "--timestamp=@1600000000",
            "--parent=none",
        ];
        base.extend(args.iter().copied());
        let ca = run_ok(ostree(&a).args(&base).arg(&src));
        let cb = run_ok(tl(&b).args(&base).arg(&src));
        assert_eq!(ca.trim(), cb.trim(), "{args:?}");
    }
    let layer = work.path().join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::write(layer.join("bin/tool"), "replaced\n").unwrap();
    let trees = [
        format!("--tree=dir={}", src.display()),
        format!("--tree=dir={}", layer.display()),
    ];
    let base = ["commit", "-b", "layered", "--timestamp=@1600000000"];
    let ca = run_ok(ostree(&a).args(base).args(&trees));
    let cb = run_ok(tl(&b).args(base).args(&trees));
    assert_eq!(ca.trim(), cb.trim(), "layered trees");
    let cb_ref = run_ok(tl(&b).args([
        "commit",
        "-b",
        "from-ref",
        "--timestamp=@1600000000",
        "--tree=ref=layered",
        "--no-bindings",
    ]));
    let ca_ref = run_ok(ostree(&a).args([
        "commit",
        "-b",
        "from-ref",
        "--timestamp=@1600000000",
        "--tree=ref=layered",
        "--no-bindings",
    ]));
    assert_eq!(ca_ref.trim(), cb_ref.trim(), "--tree=ref=");
    let orphan = run_ok(
        tl(&b)
            .args(["commit", "--orphan", "--timestamp=@1600000000"])
            .arg(&layer),
    );
    let orphan_os = run_ok(
        ostree(&a)
            .args(["commit", "--orphan", "--timestamp=@1600000000"])
            .arg(&layer),
    );
    assert_eq!(orphan.trim(), orphan_os.trim(), "--orphan");
    // Unchanged tree: no new commit.
    let before = run_ok(tl(&b).args(["rev-parse", "layered"]));
    let again = run_ok(
        tl(&b)
            .args(["commit", "-b", "layered", "--skip-if-unchanged"])
            .args(&trees),
    );
    assert_eq!(before.trim(), again.trim());
    assert_eq!(run_ok(tl(&b).args(["rev-parse", "layered"])), before);
    // Detached metadata is readable by ostree.
    let c = run_ok(
        tl(&b)
            .args([
                "commit",
                "-b",
                "det",
                "--add-detached-metadata-string=note=hi",
            ])
            .arg(&layer),
    );
    let shown = run_ok(ostree(&b).args(["show", "--print-detached-metadata-key=note", c.trim()]));
    assert_eq!(shown.trim(), "'hi'");
    run_ok(ostree(&b).arg("fsck"));
}

#[test]
fn prune_keeps_what_refs_need_like_ostree() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = work.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode", "archive"]));
    let mut commits = Vec::new();
    for i in 0..4 {
        std::fs::write(src.join("version"), format!("{i}\n")).unwrap();
        std::fs::write(src.join(format!("file{i}")), format!("only in {i}\n")).unwrap();
        commits.push(
            run_ok(tl(&repo).args(["commit", "-b", "main"]).arg(&src))
                .trim()
                .to_owned(),
        );
    }
    run_ok(tl(&repo).args(["commit", "-b", "gone"]).arg(&src));
    run_ok(tl(&repo).args(["refs", "--delete", "gone"]));
    run_ok(tl(&repo).args(["prune", "--refs-only", "--depth=1"]));
    run_ok(ostree(&repo).arg("fsck"));
    let log = run_ok(ostree(&repo).args(["log", "main"]));
    assert!(log.contains(&commits[3]) && log.contains(&commits[2]));
    assert!(!log.contains(&format!("commit {}", commits[1])), "{log}");
    assert!(
        log.contains("History beyond this commit not fetched"),
        "{log}"
    );
    let fsck = run_ok(tl(&repo).arg("fsck"));
    assert!(fsck.contains("no problems found"), "{fsck}");
    // The same operation on ostree's side deletes nothing more.
    let out = run_ok(ostree(&repo).args(["prune", "--refs-only", "--depth=1"]));
    assert!(out.contains("Total objects"), "{out}");
    assert!(
        out.contains("No unreachable objects") || out.contains("Deleted 0 objects"),
        "ostree found more to prune: {out}"
    );
}

#[test]
fn link_checkout_speedup_recommits_a_bare_user_checkout_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("rootfs");
    unpack_minirootfs(&src);
    let repo = work.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode", "bare-user"]));
    let first = run_ok(
        tl(&repo)
            .args(["commit", "-b", "main", "--timestamp=@1"])
            .arg(&src),
    );
    let co = work.path().join("co");
    run_ok(tl(&repo).args(["checkout", "-U", "main"]).arg(&co));
    // Files of a hardlinked checkout are the repository's objects: replace, never edit.
    std::fs::remove_file(co.join("etc/hostname")).unwrap();
    std::fs::write(co.join("etc/hostname"), "changed\n").unwrap();
    // The hardlinked files carry user.ostreemeta; the speedup reuses the objects' real
    // metadata, so only the replaced file differs.
    let second = run_ok(
        tl(&repo)
            .args([
                "commit",
                "-b",
                "main",
                "--timestamp=@1",
                "--link-checkout-speedup",
            ])
            .arg(&co),
    );
    let diff = run_ok(tl(&repo).args(["diff", first.trim(), second.trim()]));
    assert_eq!(diff, "M    /etc/hostname\n");
    run_ok(ostree(&repo).arg("fsck"));
}
