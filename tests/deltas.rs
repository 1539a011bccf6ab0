//! Static deltas against the real `ostree`: each tool applies what the other generates,
//! the codecs re-encode ostree's bytes exactly, and corrupted parts are refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use treeline_store::delta::{
    Compression, DeltaName, DeltaPart, Superblock, compress_part, decompress_part,
};

/// Deterministic bytes with structure (so bsdiff and xz have something to find).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(format!("record {} = {:08x}\n", out.len(), x >> 8).as_bytes());
    }
    out.truncate(len);
    out
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run_ok(
        tool("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(path),
    );
}

fn unpack(tarball: &str, dest: &Path) {
    let t = test_data().join("alpine/minirootfs").join(tarball);
    assert!(t.is_file(), "missing test data file {}", t.display());
    fs::create_dir_all(dest).unwrap();
    run_ok(
        tool("tar")
            .arg("-xzf")
            .arg(&t)
            .arg("-C")
            .arg(dest)
            .arg("--numeric-owner"),
    );
}

/// FROM: Alpine 3.19.4 plus a few hard cases; TO: Alpine 3.20.3 with those cases changed
/// (modified, added, removed files, a changed symlink and changed xattrs). The update
/// replaces busybox, musl and other binaries with similar files, so bsdiff has work.
fn make_trees(work: &Path) -> (PathBuf, PathBuf) {
    let from = work.join("tree-from");
    let to = work.join("tree-to");
    unpack("alpine-minirootfs-3.19.4-x86_64.tar.gz", &from);
    unpack("alpine-minirootfs-3.20.3-x86_64.tar.gz", &to);
    // Without the two largest libraries (5 of the 8 MB) the tests stay fast; the
    // update still replaces busybox, musl and a dozen other binaries.
    for root in [&from, &to] {
        for lib in ["lib/libcrypto.so.3", "lib/libssl.so.3"] {
            fs::remove_file(root.join(lib)).unwrap();
        }
    }
    let data = pattern(300_000, 7);
    let mut changed = data.clone();
    changed[150_000..150_100].copy_from_slice(&[b'#'; 100]);
    changed.extend_from_slice(b"appended in the new version\n");
    for (root, blob) in [(&from, &data), (&to, &changed)] {
        write(root, "srv/keep.txt", b"unchanged\n", 0o644);
        write(root, "srv/data.bin", blob, 0o644);
        write(root, "srv/tool", b"#!/bin/sh\necho v1\n", 0o4755);
        fs::create_dir_all(root.join("srv/empty-dir")).unwrap();
    }
    write(&from, "srv/removed.txt", b"gone in TO\n", 0o600);
    write(&from, "srv/xattrs", b"with xattrs\n", 0o644);
    setfattr(&from.join("srv/xattrs"), "user.a", "old");
    std::os::unix::fs::symlink("keep.txt", from.join("srv/link")).unwrap();

    write(&to, "srv/added.txt", b"new in TO\n", 0o640);
    write(&to, "srv/empty", b"", 0o644);
    write(&to, "srv/xattrs", b"with xattrs\n", 0o644);
    setfattr(&to.join("srv/xattrs"), "user.a", "new");
    setfattr(&to.join("srv/xattrs"), "user.b", "BBB");
    std::os::unix::fs::symlink("data.bin", to.join("srv/link")).unwrap();
    std::os::unix::fs::chown(to.join("srv/added.txt"), Some(1000), Some(1000)).unwrap();
    (from, to)
}

/// Commit `tree` on `main` with either tool; the same arguments give the same checksum.
fn commit(cmd: Command, tree: &Path, timestamp: u64, subject: &str) -> String {
    commit_with(cmd, tree, timestamp, subject, &[])
}

fn commit_with(
    mut cmd: Command,
    tree: &Path,
    timestamp: u64,
    subject: &str,
    extra: &[&str],
) -> String {
    let out = run_ok(
        cmd.args(["commit", "-b", "main", "-s", subject])
            .arg(format!("--timestamp=@{timestamp}"))
            .args(extra)
            .arg(tree),
    );
    out.trim().to_owned()
}

/// Detached metadata of the TO commit, which deltas carry in their superblock.
const DETACHED: &str = "--add-detached-metadata-string=note=carried by the delta";

/// Commit FROM then TO (with detached metadata) on `main`; returns (from, to).
fn commit_pair(cmd: impl Fn() -> Command, from: &Path, to: &Path) -> (String, String) {
    (
        commit(cmd(), from, 1_700_000_000, "from"),
        commit_with(cmd(), to, 1_700_000_100, "to", &[DETACHED]),
    )
}

/// The detached `note` of a commit, as either tool prints it.
fn note(mut cmd: Command, commit: &str) -> String {
    run_ok(cmd.args(["show", "--print-detached-metadata-key=note", commit]))
        .trim()
        .to_owned()
}

fn delta_dir(repo: &Path, from: Option<&str>, to: &str) -> PathBuf {
    let name = DeltaName::new(from.map(|f| f.parse().unwrap()), to.parse().unwrap());
    repo.join(name.relpath())
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn count_objects(repo: &Path) -> usize {
    let mut n = 0;
    for sub in fs::read_dir(repo.join("objects")).unwrap() {
        let sub = sub.unwrap().path();
        if sub.is_dir() {
            n += fs::read_dir(sub).unwrap().count();
        }
    }
    n
}

/// Check out `commit` with `checkout` and compare with `tree` (owners and xattrs too).
fn assert_checkout_equals(
    mut checkout: Command,
    commit: &str,
    tree: &Path,
    dest: &Path,
    what: &str,
) {
    run_ok(checkout.args(["checkout", commit]).arg(dest));
    assert_same_tree(
        &snapshot(tree, true, true),
        &snapshot(dest, true, true),
        what,
    );
    force_remove(dest);
}

fn show_json(repo: &Path, name: &str) -> serde_json::Value {
    let out = run_ok(tl(repo).args(["static-delta", "show", "--json", name]));
    serde_json::from_str(&out).unwrap()
}

fn op_total(show: &serde_json::Value, op: &str) -> u64 {
    show["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ops"][op].as_u64().unwrap())
        .sum()
}

#[test]
fn treeline_deltas_are_applied_by_ostree() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (from_tree, to_tree) = make_trees(w);
    let src = w.join("src");
    run_ok(tl(&src).args(["init", "--mode", "archive"]));
    let (c1, c2) = commit_pair(|| tl(&src), &from_tree, &to_tree);

    // From scratch, with fallbacks disabled (as ostree's --min-fallback-size=0).
    run_ok(tl(&src).args([
        "static-delta",
        "generate",
        "--empty",
        "--to=main",
        "--min-fallback-size=0",
    ]));
    // FROM -> TO with the defaults (FROM is TO's parent).
    let gen_out = run_ok(tl(&src).args(["static-delta", "generate", "--to=main"]));
    assert!(gen_out.contains(&format!("From: {c1}")), "{gen_out}");
    let again = run_ok(tl(&src).args(["static-delta", "generate", "--to=main", "-n"]));
    assert!(again.contains("already exists"), "{again}");

    // Both tools list the same deltas.
    let mut want = vec![c2.clone(), format!("{c1}-{c2}")];
    want.sort();
    let mut listed: Vec<String> = run_ok(ostree(&src).args(["static-delta", "list"]))
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, want);
    let mut ours: Vec<String> = run_ok(tl(&src).args(["static-delta", "list"]))
        .lines()
        .map(str::to_owned)
        .collect();
    ours.sort();
    assert_eq!(ours, want);

    // ostree parses them; the FROM -> TO delta patches files with bsdiff.
    let delta_name = format!("{c1}-{c2}");
    let shown = run_ok(ostree(&src).args(["static-delta", "show", &delta_name]));
    assert!(shown.contains("Endianness: little"), "{shown}");
    assert!(shown.contains("Number of fallback entries: 0"), "{shown}");
    run_ok(ostree(&src).args(["static-delta", "show", &c2]));
    let info = show_json(&src, &delta_name);
    assert!(op_total(&info, "bspatch") >= 3, "{info:#}");
    assert_eq!(op_total(&info, "bspatch"), op_total(&info, "open"));
    let ours_text = run_ok(tl(&src).args(["static-delta", "show", &delta_name]));
    for line in shown.lines().filter(|l| !l.starts_with("Timestamp")) {
        assert!(
            ours_text.contains(line),
            "ostree prints {line:?}, we print:\n{ours_text}"
        );
    }

    // The index ostree's pull reads, and the config flag that says it exists.
    let config = fs::read_to_string(src.join("config")).unwrap();
    assert!(config.contains("indexed-deltas=true"), "{config}");
    let b64 = DeltaName::new(None, c2.parse().unwrap())
        .to
        .to_modified_base64();
    let index = src.join(format!("delta-indexes/{}/{}.index", &b64[..2], &b64[2..]));
    assert!(index.is_file());
    let before = fs::read(&index).unwrap();
    run_ok(ostree(&src).args(["static-delta", "reindex"]));
    assert_eq!(
        fs::read(&index).unwrap().len(),
        before.len(),
        "ostree's reindex writes the same index (up to entry order)"
    );

    // Apply from scratch into an empty bare-user repository.
    let scratch = w.join("ostree-scratch");
    run_ok(ostree(&scratch).args(["init", "--mode=bare-user"]));
    run_ok(
        ostree(&scratch)
            .args(["static-delta", "apply-offline"])
            .arg(delta_dir(&src, None, &c2)),
    );
    run_ok(ostree(&scratch).arg("fsck"));
    assert_eq!(note(ostree(&scratch), &c2), "'carried by the delta'");
    assert_checkout_equals(
        ostree(&scratch),
        &c2,
        &to_tree,
        &w.join("co1"),
        "ostree checkout after treeline --empty delta",
    );

    // Apply FROM -> TO into a bare-user repository that has FROM.
    let target = w.join("ostree-target");
    run_ok(ostree(&target).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&target).arg("pull-local").arg(&src).arg(&c1));
    run_ok(
        ostree(&target)
            .args(["static-delta", "apply-offline"])
            .arg(delta_dir(&src, Some(&c1), &c2)),
    );
    run_ok(ostree(&target).arg("fsck"));
    assert_eq!(note(ostree(&target), &c2), "'carried by the delta'");
    assert_checkout_equals(
        ostree(&target),
        &c2,
        &to_tree,
        &w.join("co2"),
        "ostree checkout after treeline FROM-TO delta",
    );

    // A delta with fallbacks cannot be applied offline, by either tool.
    let extra = w.join("tree-extra");
    copy_dir(&to_tree, &extra);
    write(&extra, "srv/big.bin", &pattern(2_500_000, 99), 0o644);
    let c3 = commit(tl(&src), &extra, 1_700_000_200, "big");
    run_ok(tl(&src).args([
        "static-delta",
        "generate",
        "--to=main",
        "--min-fallback-size=1",
    ]));
    // Generating it again replaces it in place.
    run_ok(tl(&src).args([
        "static-delta",
        "generate",
        "--to=main",
        "--min-fallback-size=1",
    ]));
    // With one delta per target the index is byte-identical to ostree's.
    let b64 = DeltaName::new(None, c3.parse().unwrap())
        .to
        .to_modified_base64();
    let index3 = src.join(format!("delta-indexes/{}/{}.index", &b64[..2], &b64[2..]));
    let ours = fs::read(&index3).unwrap();
    fs::remove_file(&index3).unwrap();
    run_ok(ostree(&src).args(["static-delta", "reindex", &format!("--to={c3}")]));
    assert_eq!(fs::read(&index3).unwrap(), ours);
    let info = show_json(&src, &format!("{c2}-{c3}"));
    assert_eq!(info["fallbacks"].as_array().unwrap().len(), 1, "{info:#}");
    let fb_dir = delta_dir(&src, Some(&c2), &c3);
    let err = run_fail(
        ostree(&target)
            .args(["static-delta", "apply-offline"])
            .arg(&fb_dir),
    );
    assert!(String::from_utf8_lossy(&err.stderr).contains("fallback"));
    let tl_target = w.join("tl-target");
    run_ok(tl(&tl_target).args(["init", "--mode", "bare-user"]));
    let err = run_fail(
        tl(&tl_target)
            .args(["static-delta", "apply-offline"])
            .arg(&fb_dir),
    );
    assert!(String::from_utf8_lossy(&err.stderr).contains("fallback"));

    // delete removes the delta and its index entry.
    run_ok(tl(&src).args(["static-delta", "delete", &format!("{c2}-{c3}")]));
    assert!(!fb_dir.exists());
    let listed = run_ok(tl(&src).args(["static-delta", "list"]));
    assert!(!listed.contains(&c3), "{listed}");

    // Same pair, generated by ostree in the same repository: compare sizes.
    for (label, from, extra_args) in [
        ("FROM->TO, defaults", Some(c1.as_str()), &[][..]),
        (
            "from scratch, --min-fallback-size=0",
            None,
            &["--min-fallback-size=0"][..],
        ),
    ] {
        let ours = dir_size(&delta_dir(&src, from, &c2));
        let out = w.join(format!("ostree-out-{}", from.is_some()));
        fs::create_dir_all(&out).unwrap();
        let mut cmd = ostree(&src);
        cmd.args(["static-delta", "generate", &format!("--to={c2}")]);
        match from {
            Some(f) => cmd.arg(format!("--from={f}")),
            None => cmd.arg("--empty"),
        };
        cmd.args(extra_args)
            .arg(format!("--filename={}", out.join("superblock").display()));
        run_ok(&mut cmd);
        let theirs = dir_size(&out);
        eprintln!(
            "delta size, {label}: treeline {ours} bytes, ostree {theirs} bytes ({:+.1}%)",
            (ours as f64 / theirs as f64 - 1.0) * 100.0
        );
        assert!(
            ours * 100 <= theirs * 110,
            "{label}: treeline's delta ({ours}) is more than 10% larger than ostree's ({theirs})"
        );
    }
}

/// Decode and re-encode every file of an ostree-generated delta: the superblock and the
/// part variants come back byte for byte, and so does the xz compression.
fn assert_codecs_roundtrip(dir: &Path) {
    let bytes = fs::read(dir.join("superblock")).unwrap();
    let sb = Superblock::from_bytes(&bytes).unwrap();
    assert_eq!(sb.to_bytes(), bytes, "superblock of {}", dir.display());
    assert!(!sb.endianness_guessed);
    for (i, header) in sb.parts.iter().enumerate() {
        let file = fs::read(dir.join(i.to_string())).unwrap();
        assert_eq!(file.len() as u64, header.size);
        let variant = decompress_part(&file, 1 << 30).unwrap();
        let part = DeltaPart::from_bytes(&variant).unwrap();
        assert_eq!(part.to_bytes(), variant, "part {i} of {}", dir.display());
        assert_eq!(
            compress_part(&variant, Compression::Xz).unwrap(),
            file,
            "xz of part {i} of {}",
            dir.display()
        );
    }
}

#[test]
fn ostree_deltas_are_applied_by_treeline() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (from_tree, to_tree) = make_trees(w);
    let src = w.join("ostree-src");
    run_ok(ostree(&src).args(["init", "--mode=archive"]));
    let (c1, c2) = commit_pair(|| ostree(&src), &from_tree, &to_tree);

    let generate = |label: &str, args: &[&str]| -> PathBuf {
        let out = w.join(label);
        fs::create_dir_all(&out).unwrap();
        run_ok(
            ostree(&src)
                .args(["static-delta", "generate"])
                .args(args)
                .arg(format!("--filename={}", out.join("superblock").display())),
        );
        assert_codecs_roundtrip(&out);
        out
    };
    let scratch = generate(
        "scratch",
        &["--empty", &format!("--to={c1}"), "--min-fallback-size=0"],
    );
    let defaults = generate(
        "defaults",
        &[&format!("--from={c1}"), &format!("--to={c2}")],
    );
    // Without bsdiff, ostree sends modified files whole or rebuilds them from rolling
    // checksum matches (`o`, `w` from the old file, `c`).
    let no_bsdiff = generate(
        "no-bsdiff",
        &[
            &format!("--from={c1}"),
            &format!("--to={c2}"),
            "--min-fallback-size=0",
            "--disable-bsdiff",
        ],
    );
    // ostree's show output for the delta, read by us from the directory.
    let info = run_ok(
        tl(&src)
            .args(["static-delta", "show", "--json"])
            .arg(format!("{}/", defaults.display())),
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["fallbacks"].as_array().unwrap().len(), 0, "{info:#}");

    for mode in ["bare-user", "archive"] {
        for (label, delta) in [("defaults", &defaults), ("no-bsdiff", &no_bsdiff)] {
            let repo = w.join(format!("tl-{mode}-{label}"));
            run_ok(tl(&repo).args(["init", "--mode", mode]));
            run_ok(
                tl(&repo)
                    .args(["static-delta", "apply-offline"])
                    .arg(&scratch),
            );
            run_ok(tl(&repo).args(["static-delta", "apply-offline"]).arg(delta));
            let fsck = run_ok(tl(&repo).arg("fsck"));
            assert!(fsck.contains("no problems found"), "{fsck}");
            assert_eq!(note(tl(&repo), &c2), "'carried by the delta'");
            assert_checkout_equals(
                tl(&repo),
                &c2,
                &to_tree,
                &w.join(format!("co-{mode}-{label}")),
                &format!("treeline {mode} checkout after ostree delta ({label})"),
            );
            // ostree agrees the repository is sound.
            run_ok(ostree(&repo).arg("fsck"));
        }
    }
}

#[test]
fn corrupted_part_is_rejected_and_stores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (from_tree, to_tree) = make_trees(w);
    let src = w.join("src");
    run_ok(tl(&src).args(["init", "--mode", "archive"]));
    let (c1, c2) = commit_pair(|| tl(&src), &from_tree, &to_tree);
    run_ok(tl(&src).args(["static-delta", "generate", "--to=main"]));

    let target = w.join("target");
    run_ok(tl(&target).args(["init", "--mode", "bare-user"]));
    // The same commit of the same tree gives FROM the same checksum in the target.
    assert_eq!(commit(tl(&target), &from_tree, 1_700_000_000, "from"), c1);
    let before = count_objects(&target);

    let bad = w.join("bad-delta");
    copy_dir(&delta_dir(&src, Some(&c1), &c2), &bad);
    let part = bad.join("0");
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&part, &bytes).unwrap();

    let out = run_fail(
        tl(&target)
            .args(["static-delta", "apply-offline"])
            .arg(&bad),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("part 0"),
        "error does not name the part: {stderr}"
    );
    assert!(stderr.contains("checksum"), "{stderr}");
    assert_eq!(
        count_objects(&target),
        before,
        "objects were stored from a bad part"
    );
    let fsck = run_ok(tl(&target).arg("fsck"));
    assert!(fsck.contains("no problems found"), "{fsck}");
    // ostree refuses it as well.
    run_fail(
        ostree(&target)
            .args(["static-delta", "apply-offline"])
            .arg(&bad),
    );

    // The intact delta still applies afterwards.
    run_ok(
        tl(&target)
            .args(["static-delta", "apply-offline"])
            .arg(delta_dir(&src, Some(&c1), &c2)),
    );
    assert_checkout_equals(
        tl(&target),
        &c2,
        &to_tree,
        &w.join("co"),
        "checkout after the intact delta",
    );
}
