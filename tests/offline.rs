//! `treeline admin upgrade --from PATH` for hosts without a network: the update comes
//! from a repository directory or a static delta on a disk; bad sources fail naming the
//! path and leave the current deployment and the ref untouched.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const BRANCH: &str = "testos/stable";
const REMOTE_REF: &str = "origin:testos/stable";

/// A small OS tree with a kernel and a /usr/etc/motd.
fn make_tree(dir: &Path, motd: &str) {
    if dir.exists() {
        force_remove(dir);
    }
    write_file(dir, "usr/lib/os-release", b"ID=testos\n", 0o644);
    write_file(
        dir,
        "usr/lib/modules/6.1.0/vmlinuz",
        format!("kernel {motd}").as_bytes(),
        0o644,
    );
    write_file(dir, "usr/bin/tool", motd.as_bytes(), 0o755);
    write_file(dir, "usr/etc/motd", motd.as_bytes(), 0o644);
}

/// Commit `motd`'s tree to `branch` of `repo` (made in archive mode if new); returns
/// the checksum.
fn commit(repo: &Path, scratch: &Path, branch: &str, motd: &str) -> String {
    if !repo.join("config").exists() {
        run_ok(ostree(repo).args(["init", "--mode=archive"]));
    }
    let tree = scratch.join("tree");
    make_tree(&tree, motd);
    run_ok(
        tl(repo)
            .args(["commit", "-b", branch])
            .arg(format!("--add-metadata-string=version={}", motd.trim()))
            .arg(&tree),
    );
    rev(repo, branch).unwrap()
}

fn rev(repo: &Path, r: &str) -> Option<String> {
    let out = tl(repo).args(["rev-parse", r]).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A sysroot whose repository has an `origin` remote the host cannot reach, with
/// `commit` (copied from `updates`) deployed through `origin:testos/stable`.
fn sysroot_at(scratch: &SysrootScratch, name: &str, updates: &Path, commit: &str) -> PathBuf {
    sysroot_with_remote(scratch, name, updates, commit, &["--no-gpg-verify"])
}

fn sysroot_with_remote(
    scratch: &SysrootScratch,
    name: &str,
    updates: &Path,
    commit: &str,
    remote_args: &[&str],
) -> PathBuf {
    let s = scratch.path().join(name);
    fs::create_dir_all(&s).unwrap();
    run_ok(admin(&s).arg("init-fs").arg(&s));
    run_ok(admin(&s).args(["os-init", "testos"]));
    let repo = s.join("ostree/repo");
    run_ok(
        tl(&repo)
            .args(["remote", "add"])
            .args(remote_args)
            .args(["origin", "http://updates.invalid/repo"]),
    );
    run_ok(
        tl(&repo)
            .args(["pull-local", "--remote=origin"])
            .arg(updates)
            .arg(BRANCH),
    );
    assert_eq!(rev(&repo, REMOTE_REF).as_deref(), Some(commit));
    run_ok(admin(&s).args(["deploy", "--os=testos", REMOTE_REF]));
    s
}

fn deployments(s: &Path) -> Vec<String> {
    let out = run_ok(admin(s).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn motd(s: &Path, id: &str) -> String {
    fs::read_to_string(
        s.join("ostree/deploy/testos/deploy")
            .join(id)
            .join("etc/motd"),
    )
    .unwrap()
}

fn upgrade_from(s: &Path, from: &Path) -> std::process::Output {
    admin(s)
        .args(["upgrade", "--from"])
        .arg(from)
        .output()
        .unwrap()
}

/// The upgrade failed (not "nothing new"), said why naming `needle`, and left the
/// deployments and the origin's ref as they were; the repository is sound.
fn assert_refused(s: &Path, out: &std::process::Output, needle: &str, c1: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: {out:?}");
    assert_ne!(out.status.code(), Some(77), "{what}: {err}");
    assert!(err.contains(needle), "{what}: {needle:?} not in: {err}");
    assert_eq!(deployments(s), [format!("{c1}.0")], "{what}");
    let repo = s.join("ostree/repo");
    assert_eq!(rev(&repo, REMOTE_REF).as_deref(), Some(c1), "{what}");
    run_ok(ostree(&repo).arg("fsck"));
}

#[test]
fn upgrade_from_a_repository_deploys_the_origin_ref_then_exits_77() {
    let scratch = SysrootScratch::new();
    let updates = scratch.path().join("updates");
    let c1 = commit(&updates, scratch.path(), BRANCH, "v1\n");
    let s = sysroot_at(&scratch, "sysroot", &updates, &c1);
    let s2 = sysroot_at(&scratch, "sysroot-2", &updates, &c1);

    // The update repository has nothing newer yet.
    let out = upgrade_from(&s, &updates);
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    let c2 = commit(&updates, scratch.path(), BRANCH, "v2\n");
    let check = run_ok(
        admin(&s)
            .args(["upgrade", "--check", "--json", "--from"])
            .arg(&updates),
    );
    let v: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(v["available"], c2.as_str(), "{v}");
    assert_eq!(v["update"], true, "{v}");
    assert_eq!(deployments(&s), [format!("{c1}.0")]);

    let out = run_ok(admin(&s).args(["upgrade", "--from"]).arg(&updates));
    assert!(out.contains("Update available"), "{out}");
    assert_eq!(deployments(&s), [format!("{c2}.0"), format!("{c1}.0")]);
    assert_eq!(motd(&s, &format!("{c2}.0")), "v2\n");
    let repo = s.join("ostree/repo");
    assert_eq!(rev(&repo, REMOTE_REF).as_deref(), Some(c2.as_str()));
    run_ok(ostree(&repo).arg("fsck"));
    // ostree reads the result the same way.
    let st = run_ok(
        tool("ostree")
            .args(["admin", "status"])
            .arg(format!("--sysroot={}", s.display())),
    );
    assert!(st.contains(&format!("testos {c2}.0")), "{st}");
    assert!(
        st.contains(&format!("origin refspec: {REMOTE_REF}")),
        "{st}"
    );

    let out = upgrade_from(&s, &updates);
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    // Any repository mode: a bare-user copy made by the real ostree serves as well.
    let bare_user = scratch.path().join("bare-user");
    run_ok(ostree(&bare_user).args(["init", "--mode=bare-user"]));
    run_ok(
        ostree(&bare_user)
            .arg("pull-local")
            .arg(&updates)
            .arg(BRANCH),
    );
    run_ok(admin(&s2).args(["upgrade", "--from"]).arg(&bare_user));
    assert_eq!(deployments(&s2), [format!("{c2}.0"), format!("{c1}.0")]);
    assert_eq!(motd(&s2, &format!("{c2}.0")), "v2\n");
    run_ok(ostree(&s2.join("ostree/repo")).arg("fsck"));
}

#[test]
fn upgrade_from_a_static_delta_directory_or_superblock_file() {
    let scratch = SysrootScratch::new();
    let updates = scratch.path().join("updates");
    let c1 = commit(&updates, scratch.path(), BRANCH, "v1\n");
    let by_dir = sysroot_at(&scratch, "by-dir", &updates, &c1);
    let by_file = sysroot_at(&scratch, "by-file", &updates, &c1);
    let from_scratch = sysroot_at(&scratch, "from-scratch", &updates, &c1);
    let c2 = commit(&updates, scratch.path(), BRANCH, "v2\n");
    run_ok(
        tl(&updates)
            .args(["static-delta", "generate", "--min-fallback-size=0"])
            .args(["--from", &c1, "--to", &c2]),
    );
    // Only the delta travels: copy it out of the repository.
    let superblock = find_superblock(&updates.join("deltas"));
    let delta = scratch.path().join("delta");
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(superblock.parent().unwrap())
            .arg(&delta),
    );

    for (s, from) in [
        (&by_dir, delta.clone()),
        (&by_file, delta.join("superblock")),
    ] {
        let out = run_ok(admin(s).args(["upgrade", "--from"]).arg(&from));
        assert!(out.contains("Update available"), "{out}");
        assert_eq!(deployments(s), [format!("{c2}.0"), format!("{c1}.0")]);
        assert_eq!(motd(s, &format!("{c2}.0")), "v2\n");
        let repo = s.join("ostree/repo");
        assert_eq!(rev(&repo, REMOTE_REF).as_deref(), Some(c2.as_str()));
        run_ok(ostree(&repo).arg("fsck"));
        let out = upgrade_from(s, &from);
        assert_eq!(out.status.code(), Some(77), "{out:?}");
    }

    // A from-scratch delta needs nothing from the machine; v2's parent is the deployed v1.
    run_ok(
        tl(&updates)
            .args([
                "static-delta",
                "generate",
                "--empty",
                "--min-fallback-size=0",
            ])
            .arg(&c2),
    );
    // Its directory is the one whose name has no FROM- part.
    let out = run_ok(
        tool("find")
            .arg(updates.join("deltas"))
            .args(["-name", "superblock"]),
    );
    let scratch_delta = out
        .lines()
        .map(|l| Path::new(l).parent().unwrap().to_path_buf())
        .find(|d| !d.file_name().unwrap().to_string_lossy().contains('-'))
        .unwrap_or_else(|| panic!("no from-scratch delta in {out}"));
    run_ok(
        admin(&from_scratch)
            .args(["upgrade", "--from"])
            .arg(&scratch_delta),
    );
    assert_eq!(
        deployments(&from_scratch),
        [format!("{c2}.0"), format!("{c1}.0")]
    );
    run_ok(ostree(&from_scratch.join("ostree/repo")).arg("fsck"));
}

fn find_superblock(dir: &Path) -> PathBuf {
    let out = run_ok(tool("find").arg(dir).args(["-name", "superblock"]));
    let found: Vec<&str> = out.lines().collect();
    assert_eq!(found.len(), 1, "{out}");
    PathBuf::from(found[0])
}

#[test]
fn upgrade_from_bad_sources_fails_naming_them_and_changes_nothing() {
    let scratch = SysrootScratch::new();
    let updates = scratch.path().join("updates");
    let c1 = commit(&updates, scratch.path(), BRANCH, "v1\n");
    let s = sysroot_at(&scratch, "sysroot", &updates, &c1);
    let c2 = commit(&updates, scratch.path(), BRANCH, "v2\n");

    // Missing, an empty directory, a file that is not a superblock.
    let missing = scratch.path().join("no-such-dir");
    let out = upgrade_from(&s, &missing);
    assert_refused(&s, &out, &missing.display().to_string(), &c1, "missing");
    let empty = scratch.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = upgrade_from(&s, &empty);
    assert_refused(&s, &out, &empty.display().to_string(), &c1, "empty dir");
    assert_refused(&s, &out, "neither an OSTree repository", &c1, "empty dir");
    let junk = scratch.path().join("junk");
    fs::write(&junk, b"not a delta at all").unwrap();
    let out = upgrade_from(&s, &junk);
    assert_refused(&s, &out, "not a static delta superblock", &c1, "junk file");
    assert_refused(&s, &out, &junk.display().to_string(), &c1, "junk file");

    // A repository without the origin's ref.
    let other = scratch.path().join("other");
    commit(&other, scratch.path(), "testos/other", "other\n");
    let out = upgrade_from(&s, &other);
    assert_refused(&s, &out, "no ref testos/stable", &c1, "wrong ref");
    assert_refused(&s, &out, "testos/other", &c1, "wrong ref");

    // A delta to a commit that does not descend from the deployed one.
    run_ok(
        tl(&other)
            .args([
                "static-delta",
                "generate",
                "--empty",
                "--min-fallback-size=0",
            ])
            .arg("testos/other"),
    );
    let unrelated = find_superblock(&other.join("deltas"));
    let out = upgrade_from(&s, unrelated.parent().unwrap());
    assert_refused(&s, &out, "not a descendant", &c1, "unrelated delta");

    // A corrupted delta part: refused by its checksum, nothing deployed.
    run_ok(
        tl(&updates)
            .args(["static-delta", "generate", "--min-fallback-size=0"])
            .args(["--from", &c1, "--to", &c2]),
    );
    let superblock = find_superblock(&updates.join("deltas"));
    let delta = scratch.path().join("delta");
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(superblock.parent().unwrap())
            .arg(&delta),
    );
    let part = delta.join("0");
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&part, &bytes).unwrap();
    let out = upgrade_from(&s, &delta);
    assert_refused(&s, &out, &delta.display().to_string(), &c1, "corrupt delta");
    assert_refused(&s, &out, "static delta part 0", &c1, "corrupt delta");
}

#[test]
fn upgrade_from_checks_signatures_when_the_remote_requires_them() {
    let scratch = SysrootScratch::new();
    let key = scratch.path().join("key");
    let public = run_ok(treeline().args(["sign", "--generate-key"]).arg(&key))
        .trim()
        .to_owned();
    let secret = fs::read_to_string(&key).unwrap().trim().to_owned();
    let updates = scratch.path().join("updates");
    let c1 = commit(&updates, scratch.path(), BRANCH, "v1\n");
    run_ok(tl(&updates).args(["sign", &c1, &secret]));
    let verify = format!("--sign-verify=ed25519=inline:{public}");
    let s = sysroot_with_remote(&scratch, "sysroot", &updates, &c1, &[verify.as_str()]);

    // Unsigned: refused, from the repository and from a delta.
    let c2 = commit(&updates, scratch.path(), BRANCH, "v2\n");
    let out = upgrade_from(&s, &updates);
    assert_refused(&s, &out, "no ed25519 signature", &c1, "unsigned commit");
    run_ok(
        tl(&updates)
            .args(["static-delta", "generate", "--min-fallback-size=0"])
            .args(["--from", &c1, "--to", &c2]),
    );
    let unsigned_delta = find_superblock(&updates.join("deltas"));
    let out = upgrade_from(&s, unsigned_delta.parent().unwrap());
    assert_refused(&s, &out, "no ed25519 signature", &c1, "unsigned delta");

    // Signed by another key: refused.
    let other = scratch.path().join("other-key");
    run_ok(treeline().args(["sign", "--generate-key"]).arg(&other));
    let other_secret = fs::read_to_string(&other).unwrap().trim().to_owned();
    run_ok(tl(&updates).args(["sign", &c2, &other_secret]));
    let out = upgrade_from(&s, &updates);
    assert_refused(&s, &out, "trusted key", &c1, "wrong key");

    // Signed with the trusted key too: deployed.
    run_ok(tl(&updates).args(["sign", &c2, &secret]));
    run_ok(admin(&s).args(["upgrade", "--from"]).arg(&updates));
    assert_eq!(deployments(&s), [format!("{c2}.0"), format!("{c1}.0")]);
}
