mod common;

// Robustness: damaged objects, hostile inputs, bad refs and configs, interrupted writes
// and concurrent writers. Every repository is checked with `ostree fsck` as well.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_checkout_eq, force_remove, ostree, run_fail, run_ok, tl, tool, treeline};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `error: ...` lines of a stderr text.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

fn init(repo: &Path, mode: &str) {
    run_ok(tl(repo).arg("init").arg(format!("--mode={mode}")));
}

/// Commit a directory to a branch; returns the commit checksum.
fn commit_dir(repo: &Path, branch: &str, dir: &Path, ts: u64) -> String {
    let out = run_ok(
        tl(repo)
            .args(["commit", "-b", branch, "-s", "test"])
            .arg(format!("--timestamp=@{ts}"))
            .arg(dir),
    );
    let c = out.trim().to_owned();
    assert_eq!(c.len(), 64, "commit printed {out:?}, expected a checksum");
    c
}

/// `rev-parse REV`, or `None` when it fails.
fn rev_parse(repo: &Path, rev: &str) -> Option<String> {
    let out = tl(repo).args(["rev-parse", rev]).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Both `treeline fsck` and `ostree fsck` pass.
fn assert_fsck_clean(repo: &Path, what: &str) {
    let out = tl(repo).arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: treeline fsck failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    let out = ostree(repo).arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: ostree fsck failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
}

/// Every loose object: path relative to `objects/` → bytes.
fn read_objects(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let objects = repo.join("objects");
    for sub in fs::read_dir(&objects).unwrap() {
        let sub = sub.unwrap();
        if !sub.file_type().unwrap().is_dir() {
            continue;
        }
        for e in fs::read_dir(sub.path()).unwrap() {
            let e = e.unwrap();
            let rel = format!(
                "{}/{}",
                sub.file_name().to_string_lossy(),
                e.file_name().to_string_lossy()
            );
            let bytes = if e.file_type().unwrap().is_symlink() {
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
                    .into_bytes()
            } else {
                fs::read(e.path()).unwrap()
            };
            out.insert(rel, bytes);
        }
    }
    out
}

/// `objects/`-relative path of an object.
fn object_rel(checksum: &str, ext: &str) -> String {
    format!("{}/{}.{ext}", &checksum[..2], &checksum[2..])
}

/// One `ls --json` entry.
struct LsEntry {
    checksum: String,
    meta: Option<String>,
}

/// `ls -R --json REV`: path → entry.
fn ls_tree(repo: &Path, rev: &str) -> BTreeMap<String, LsEntry> {
    let out = run_ok(tl(repo).args(["ls", "-R", "--json", rev]));
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("ls --json printed {l:?}: {e}"));
            let path = v["path"].as_str().unwrap().to_owned();
            let entry = LsEntry {
                checksum: v["checksum"].as_str().unwrap().to_owned(),
                meta: v["meta_checksum"].as_str().map(str::to_owned),
            };
            (path, entry)
        })
        .collect()
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic text that compresses somewhat, `len` bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.extend_from_slice(format!("{x:08x}").as_bytes());
    }
    v.truncate(len);
    v
}

/// A small tree: a file, a 32 KiB file, a symlink and a 0700 subdirectory with a file
/// (so the subdirectory has its own dirtree and dirmeta).
fn make_small_tree(root: &Path) {
    mkdir(root, 0o755);
    write_file(&root.join("a"), b"hello\n", 0o644);
    write_file(&root.join("big"), &noise(32 * 1024, 7), 0o644);
    mkdir(&root.join("sub"), 0o700);
    write_file(&root.join("sub/b"), b"world\n", 0o644);
    std::os::unix::fs::symlink("a", root.join("link")).unwrap();
}

fn flip_byte(path: &Path, offset: usize) {
    let mut b = fs::read(path).unwrap();
    assert!(
        offset < b.len(),
        "{}: offset {offset} beyond end",
        path.display()
    );
    b[offset] ^= 0x5a;
    // Rewrites in place: the inode (and, in bare-user repos, its xattrs) is kept.
    fs::write(path, &b).unwrap();
}

// ---------------------------------------------------------------------------------------
// 1. Corrupted objects
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    /// A byte of a (non-root) dirtree.
    DirTree,
    /// A byte of a (non-root) dirmeta.
    DirMeta,
    /// A byte of the commit object.
    Commit,
    /// A byte of the content: inside the compressed payload of a `.filez`, or of the
    /// plain content of a bare-user `.file`.
    ContentByte,
    /// The content object cut to half its length.
    ContentTruncated,
    /// bare-user only: the mode inside `user.ostreemeta` changed (0644 → 0755).
    BareUserMetaXattr,
}

/// Commit a small tree, damage one object, then check that fsck names exactly that
/// object, that ostree agrees it is broken, that nothing else was touched, and that
/// `fsck --delete` removes exactly the damaged object.
fn check_damage(mode: &str, damage: Damage) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, mode);
    let commit = commit_dir(&repo, "main", &src, 1_000_000);
    assert_fsck_clean(&repo, "freshly committed repo");
    let entries = ls_tree(&repo, "main");
    let file_ext = if mode == "archive" { "filez" } else { "file" };
    let (checksum, ext) = match damage {
        Damage::DirTree => (entries["/sub"].checksum.clone(), "dirtree"),
        Damage::DirMeta => (entries["/sub"].meta.clone().unwrap(), "dirmeta"),
        Damage::Commit => (commit.clone(), "commit"),
        Damage::ContentByte | Damage::ContentTruncated | Damage::BareUserMetaXattr => {
            (entries["/big"].checksum.clone(), file_ext)
        }
    };
    assert_ne!(
        entries["/sub"].meta, entries["/"].meta,
        "test setup: the subdirectory should have its own dirmeta"
    );
    let target = object_rel(&checksum, ext);
    let before = read_objects(&repo);
    assert!(
        before.contains_key(&target),
        "{target} not in the repository"
    );
    let path = repo.join("objects").join(&target);
    let len = before[&target].len();

    match damage {
        Damage::DirTree | Damage::DirMeta | Damage::Commit => flip_byte(&path, len / 2),
        Damage::ContentByte => {
            let offset = if mode == "archive" {
                // BE32 header length, 4 bytes padding, header, then raw deflate.
                let b = &before[&target];
                let hlen = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let payload = 8 + hlen;
                assert!(payload + 16 < len, "test setup: payload too small");
                payload + (len - payload) / 2
            } else {
                len / 2
            };
            flip_byte(&path, offset);
        }
        Damage::ContentTruncated => {
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len((len / 2) as u64).unwrap();
        }
        Damage::BareUserMetaXattr => {
            assert_eq!(mode, "bare-user");
            // (uuua(ayay)): uid 0, gid 0, mode 0100755, no xattrs.
            run_ok(
                tool("setfattr")
                    .args(["-n", "user.ostreemeta", "-v", "0x0000000000000000000081ed"])
                    .arg(&path),
            );
        }
    }
    let damaged = fs::read(&path).unwrap();
    let what = format!("{mode} repo, {damage:?} on {target}");

    // treeline fsck fails, and every problem it reports is about the damaged object.
    let out = run_fail(tl(&repo).arg("fsck"));
    let err = stderr_of(&out);
    let errors = error_lines(&err);
    assert!(
        errors.iter().any(|l| l.contains(&checksum)),
        "{what}: fsck does not name {checksum}:\n{err}"
    );
    for l in &errors {
        assert!(
            l.contains(&checksum),
            "{what}: fsck reports a problem that is not about the damaged object: {l}\n{err}"
        );
    }

    // ostree agrees (on a copy: ostree fsck marks commits partial when it finds damage).
    let copy = tmp.path().join("copy");
    run_ok(tool("cp").arg("-a").arg(&repo).arg(&copy));
    let out = run_fail(ostree(&copy).arg("fsck"));
    let oerr = stderr_of(&out);
    assert!(
        oerr.contains(&checksum),
        "{what}: ostree fsck fails but does not name {checksum}:\n{oerr}"
    );

    // fsck changed nothing: every other object is byte-identical, the damaged one stays.
    let after = read_objects(&repo);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{what}: fsck without --delete changed the set of objects"
    );
    for (k, v) in &before {
        if *k != target {
            assert!(after[k] == *v, "{what}: fsck modified valid object {k}");
        }
    }
    assert!(
        after[&target] == damaged,
        "{what}: fsck rewrote the damaged object"
    );

    // fsck --delete removes exactly the damaged object.
    let out = tl(&repo).args(["fsck", "--delete"]).output().unwrap();
    let mut expected = before.clone();
    expected.remove(&target);
    let after = read_objects(&repo);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: fsck --delete did not remove exactly {target}:\n{}",
        stderr_of(&out)
    );
    for (k, v) in &expected {
        assert!(
            after[k] == *v,
            "{what}: fsck --delete modified valid object {k}"
        );
    }
}

#[test]
fn fsck_names_and_deletes_only_a_corrupted_dirtree() {
    check_damage("archive", Damage::DirTree);
    check_damage("bare-user", Damage::DirTree);
}

#[test]
fn fsck_names_and_deletes_only_a_corrupted_dirmeta() {
    check_damage("archive", Damage::DirMeta);
    check_damage("bare-user", Damage::DirMeta);
}

#[test]
fn fsck_names_and_deletes_only_a_corrupted_commit() {
    check_damage("archive", Damage::Commit);
    check_damage("bare-user", Damage::Commit);
}

#[test]
fn fsck_names_and_deletes_only_a_content_object_with_a_flipped_byte() {
    check_damage("archive", Damage::ContentByte);
    check_damage("bare-user", Damage::ContentByte);
}

#[test]
fn fsck_names_and_deletes_only_a_truncated_content_object() {
    check_damage("archive", Damage::ContentTruncated);
    check_damage("bare-user", Damage::ContentTruncated);
}

#[test]
fn fsck_names_a_bare_user_object_whose_ostreemeta_xattr_changed() {
    check_damage("bare-user", Damage::BareUserMetaXattr);
}

#[test]
fn fsck_names_a_missing_content_object() {
    for mode in ["archive", "bare-user"] {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let src = tmp.path().join("src");
        make_small_tree(&src);
        init(&repo, mode);
        commit_dir(&repo, "main", &src, 1_000_000);
        let file = ls_tree(&repo, "main")["/sub/b"].checksum.clone();
        let ext = if mode == "archive" { "filez" } else { "file" };
        fs::remove_file(repo.join("objects").join(object_rel(&file, ext))).unwrap();
        let err = stderr_of(&run_fail(tl(&repo).arg("fsck")));
        assert!(
            error_lines(&err).iter().any(|l| l.contains(&file)),
            "{mode}: fsck does not name the missing object {file}:\n{err}"
        );
        let out = run_fail(ostree(&repo).arg("fsck"));
        assert!(
            stderr_of(&out).contains(&file),
            "{mode}: ostree fsck does not name {file}:\n{}",
            stderr_of(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. Wrong checksum
// ---------------------------------------------------------------------------------------

/// Another valid-looking checksum: the last hex digit changed.
fn other_checksum(c: &str) -> String {
    let last = c.chars().last().unwrap();
    let new = if last == '0' { '1' } else { '0' };
    format!("{}{new}", &c[..63])
}

#[test]
fn fsck_names_a_valid_object_stored_under_the_wrong_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, "archive");
    commit_dir(&repo, "main", &src, 1_000_000);
    let entries = ls_tree(&repo, "main");
    let before = read_objects(&repo);

    let mut fakes = Vec::new();
    for (real, ext) in [
        (entries["/sub"].checksum.clone(), "dirtree"),
        (entries["/a"].checksum.clone(), "filez"),
    ] {
        let fake = other_checksum(&real);
        let dest = repo.join("objects").join(object_rel(&fake, ext));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(repo.join("objects").join(object_rel(&real, ext)), &dest).unwrap();
        let rel = object_rel(&fake, ext);
        fakes.push((real, fake, rel));
    }

    let err = stderr_of(&run_fail(tl(&repo).arg("fsck")));
    let errors = error_lines(&err);
    for (real, fake, _) in &fakes {
        assert!(
            errors.iter().any(|l| l.contains(fake.as_str())),
            "fsck does not name the misnamed object {fake}:\n{err}"
        );
        assert!(
            errors
                .iter()
                .all(|l| !l.contains(real.as_str()) || l.contains(fake.as_str())),
            "fsck blames the correctly named original {real}:\n{err}"
        );
    }
    assert_eq!(
        errors.len(),
        fakes.len(),
        "one problem per misnamed object:\n{err}"
    );

    run_fail(tl(&repo).args(["fsck", "--delete"]));
    assert!(
        read_objects(&repo) == before,
        "fsck --delete should remove exactly the misnamed copies"
    );
    assert_fsck_clean(&repo, "after deleting the misnamed objects");
}

// ---------------------------------------------------------------------------------------
// 3. Hostile tar archives and unsupported file types
// ---------------------------------------------------------------------------------------

/// Writes a tar archive: `python3 -c MAKE_TAR OUT KIND`. Every archive starts with a
/// valid file, so the commit has made progress when it meets the hostile entry.
const MAKE_TAR: &str = r#"
import io, sys, tarfile
out, kind = sys.argv[1], sys.argv[2]
t = tarfile.open(out, 'w', format=tarfile.PAX_FORMAT if kind == 'pax-dotdot' else tarfile.GNU_FORMAT)
def reg(name, data=b'data\n'):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.mtime = 1
    t.addfile(ti, io.BytesIO(data))
def special(name, typ, **kw):
    ti = tarfile.TarInfo(name); ti.type = typ; ti.mode = 0o644; ti.mtime = 1
    for k, v in kw.items(): setattr(ti, k, v)
    t.addfile(ti)
reg('ok/file', b'fine\n')
if kind == 'dotdot': reg('../escape')
elif kind == 'middle-dotdot': reg('a/../../b')
elif kind == 'pax-dotdot': reg('deep/' * 30 + '../' * 40 + 'pax-escape')
elif kind == 'absolute':
    reg('/etc/x', b'absolute\n')
    special('/etc/y', tarfile.LNKTYPE, linkname='/etc/x')
elif kind == 'chardev': special('dev/null', tarfile.CHRTYPE, devmajor=1, devminor=3)
elif kind == 'blockdev': special('dev/loop0', tarfile.BLKTYPE, devmajor=7, devminor=0)
elif kind == 'fifo': special('run/initctl', tarfile.FIFOTYPE)
elif kind == 'hardlink-outside': special('dangling-hardlink', tarfile.LNKTYPE, linkname='not/in/archive')
elif kind == 'hardlink-dotdot': special('dotdot-hardlink', tarfile.LNKTYPE, linkname='../../etc/shadow')
else: raise SystemExit('unknown kind ' + kind)
t.close()
"#;

fn make_tar(out: &Path, kind: &str) {
    run_ok(tool("python3").args(["-c", MAKE_TAR]).arg(out).arg(kind));
}

#[test]
fn hostile_tar_entries_are_refused_naming_the_entry_and_leave_refs_and_repo_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, "archive");
    let good = commit_dir(&repo, "good", &src, 1_000_000);

    // (kind, text the error must contain: the entry, and its type where that is the point)
    let cases: &[(&str, &[&str])] = &[
        ("dotdot", &["../escape"]),
        ("middle-dotdot", &["a/../../b"]),
        ("pax-dotdot", &["pax-escape"]),
        ("chardev", &["dev/null", "character device"]),
        ("blockdev", &["dev/loop0", "block device"]),
        ("fifo", &["run/initctl", "fifo"]),
        ("hardlink-outside", &["dangling-hardlink", "not/in/archive"]),
        ("hardlink-dotdot", &["dotdot-hardlink"]),
    ];
    for (kind, needles) in cases {
        let tar = tmp.path().join(format!("{kind}.tar"));
        make_tar(&tar, kind);
        for branch in ["hostile", "good"] {
            let out = run_fail(
                tl(&repo)
                    .args(["commit", "-b", branch, "--timestamp=@2000000"])
                    .arg(format!("--tree=tar={}", tar.display())),
            );
            let err = stderr_of(&out);
            for n in *needles {
                assert!(
                    err.contains(n),
                    "{kind} → {branch}: error does not mention {n:?}:\n{err}"
                );
            }
        }
        assert_eq!(
            rev_parse(&repo, "hostile"),
            None,
            "{kind}: a failed commit created the branch"
        );
        assert!(!repo.join("refs/heads/hostile").exists());
        assert_eq!(
            rev_parse(&repo, "good").as_deref(),
            Some(good.as_str()),
            "{kind}: a failed commit moved the branch"
        );
        assert_fsck_clean(&repo, &format!("after the refused {kind} archive"));
    }
    // Nothing was ever extracted anywhere.
    for p in ["escape", "b", "pax-escape"] {
        assert!(!tmp.path().join(p).exists() && !repo.join(p).exists());
    }
    assert_checkout_eq(
        &repo,
        "good",
        &src,
        tmp.path(),
        "good branch after refusals",
    );
}

#[test]
fn tar_absolute_paths_are_committed_relative_to_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let tar = tmp.path().join("abs.tar");
    make_tar(&tar, "absolute");
    init(&repo, "archive");
    run_ok(
        tl(&repo)
            .args(["commit", "-b", "abs", "--timestamp=@1000000"])
            .arg(format!("--tree=tar={}", tar.display())),
    );
    let paths: Vec<String> = ls_tree(&repo, "abs").into_keys().collect();
    assert_eq!(
        paths,
        ["/", "/etc", "/etc/x", "/etc/y", "/ok", "/ok/file"],
        "leading `/` must be dropped"
    );
    assert_eq!(
        run_ok(tl(&repo).args(["cat", "abs", "/etc/x"])),
        "absolute\n"
    );
    assert_eq!(
        run_ok(tl(&repo).args(["cat", "abs", "/etc/y"])),
        "absolute\n"
    );
    let ols = run_ok(ostree(&repo).args(["ls", "-R", "abs"]));
    assert!(ols.contains("/etc/x") && ols.contains("/etc/y"), "{ols}");
    let dest = tmp.path().join("co");
    run_ok(tl(&repo).args(["checkout", "-U", "abs"]).arg(&dest));
    assert_eq!(fs::read(dest.join("etc/x")).unwrap(), b"absolute\n");
    assert_eq!(fs::read(dest.join("etc/y")).unwrap(), b"absolute\n");
    assert_fsck_clean(&repo, "absolute-path tar");
}

/// A directory holding good files plus one special file at `sub/<name>`, made by `make`.
fn commit_dir_with_special(
    name: &str,
    kind_word: &str,
    make: impl FnOnce(&Path),
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, "bare-user");
    let good = commit_dir(&repo, "main", &src, 1_000_000);
    let special = src.join("sub").join(name);
    make(&special);
    for branch in ["main", "other"] {
        let out = run_fail(
            tl(&repo)
                .args(["commit", "-b", branch, "--timestamp=@2000000"])
                .arg(&src),
        );
        let err = stderr_of(&out);
        assert!(
            err.contains(&special.display().to_string()),
            "the error does not name {}:\n{err}",
            special.display()
        );
        assert!(
            err.contains(kind_word),
            "the error does not say the file is a {kind_word}:\n{err}"
        );
    }
    assert_eq!(rev_parse(&repo, "main").as_deref(), Some(good.as_str()));
    assert_eq!(rev_parse(&repo, "other"), None);
    assert_fsck_clean(&repo, &format!("after refusing a {kind_word}"));
    (tmp, special)
}

#[test]
fn committing_a_directory_with_a_fifo_fails_naming_it() {
    commit_dir_with_special("fifo", "fifo", |p| {
        run_ok(tool("mkfifo").arg(p));
    });
}

#[test]
fn committing_a_directory_with_a_unix_socket_fails_naming_it() {
    commit_dir_with_special("sock", "socket", |p| {
        // The socket file stays after the listener is dropped.
        drop(std::os::unix::net::UnixListener::bind(p).unwrap());
    });
}

// ---------------------------------------------------------------------------------------
// 8. Device nodes in a directory input (tests run as root)
// ---------------------------------------------------------------------------------------

#[test]
fn committing_a_directory_with_a_device_node_fails_naming_file_and_type() {
    commit_dir_with_special("null", "character device", |p| {
        run_ok(tool("mknod").arg(p).args(["c", "1", "3"]));
    });
    commit_dir_with_special("loop0", "block device", |p| {
        run_ok(tool("mknod").arg(p).args(["b", "7", "0"]));
    });
}

// ---------------------------------------------------------------------------------------
// 4. Bad refs
// ---------------------------------------------------------------------------------------

fn repo_with_main(tmp: &Path) -> (PathBuf, String) {
    let repo = tmp.join("repo");
    let src = tmp.join("src");
    make_small_tree(&src);
    init(&repo, "archive");
    let c = commit_dir(&repo, "main", &src, 1_000_000);
    (repo, c)
}

#[test]
fn invalid_ref_names_are_refused_naming_the_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, main) = repo_with_main(tmp.path());
    for bad in ["-a", "a//b", "a/", "a b", "../x", "/abs", "a/../b"] {
        let out = run_fail(
            tl(&repo)
                .args(["refs", &format!("--create={bad}")])
                .arg(&main),
        );
        let err = stderr_of(&out);
        assert!(
            err.contains(bad),
            "refs --create={bad}: error does not name the ref:\n{err}"
        );
        // The reference tool refuses the same names.
        run_fail(
            ostree(&repo)
                .args(["refs", &format!("--create={bad}")])
                .arg(&main),
        );
    }
    assert_eq!(run_ok(tl(&repo).arg("refs")), "main\n");
    assert!(!tmp.path().join("x").exists() && !repo.join("refs/x").exists());
    assert_fsck_clean(&repo, "after refused refs");
}

#[test]
fn rev_parse_of_an_unknown_ref_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_main(tmp.path());
    for rev in ["no-such-ref", "deep/no-such-ref", "no-such-ref^"] {
        let out = run_fail(tl(&repo).args(["rev-parse", rev]));
        let err = stderr_of(&out);
        assert!(
            err.contains(rev.trim_end_matches('^')),
            "rev-parse {rev}: error does not name it:\n{err}"
        );
        assert!(out.stdout.is_empty(), "rev-parse {rev} printed something");
    }
}

#[test]
fn a_ref_file_holding_garbage_fails_rev_parse_naming_the_ref_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, main) = repo_with_main(tmp.path());
    for (name, content) in [
        ("garbage", "garbage\n"),
        ("short", "abc123\n"),
        ("upper", &format!("{}\n", main.to_uppercase())),
        ("empty", ""),
    ] {
        fs::write(repo.join("refs/heads").join(name), content).unwrap();
        let out = run_fail(tl(&repo).args(["rev-parse", name]));
        let err = stderr_of(&out);
        let path = format!("refs/heads/{name}");
        assert!(
            err.contains(&path),
            "rev-parse of a ref holding {content:?}: error does not name {path}:\n{err}"
        );
        fs::remove_file(repo.join("refs/heads").join(name)).unwrap();
    }
    fs::write(repo.join("refs/heads/garbage"), "garbage\n").unwrap();
    // Other refs still resolve.
    assert_eq!(rev_parse(&repo, "main").as_deref(), Some(main.as_str()));
    // A commit onto the broken branch does not silently overwrite it.
    let out = run_fail(
        tl(&repo)
            .args(["commit", "-b", "garbage"])
            .arg(tmp.path().join("src")),
    );
    assert!(stderr_of(&out).contains("refs/heads/garbage"));
    assert_eq!(
        fs::read_to_string(repo.join("refs/heads/garbage")).unwrap(),
        "garbage\n"
    );
}

#[test]
fn a_ref_file_holding_garbage_can_be_deleted_and_does_not_hide_other_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_main(tmp.path());
    fs::write(repo.join("refs/heads/broken"), "garbage\n").unwrap();
    // ostree 2022.7 lists both and deletes the broken one.
    let copy = tmp.path().join("copy");
    run_ok(tool("cp").arg("-a").arg(&repo).arg(&copy));
    run_ok(ostree(&copy).args(["refs", "--delete", "broken"]));
    assert!(!copy.join("refs/heads/broken").exists());

    let listed = run_ok(tl(&repo).arg("refs"));
    assert!(listed.lines().any(|l| l == "main"), "refs: {listed}");
    run_ok(tl(&repo).args(["refs", "--delete", "broken"]));
    assert!(!repo.join("refs/heads/broken").exists());
    assert_eq!(run_ok(tl(&repo).arg("refs")), "main\n");
    assert_fsck_clean(&repo, "after deleting the broken ref");
}

// ---------------------------------------------------------------------------------------
// 5. Kill half-way
// ---------------------------------------------------------------------------------------

fn fault_steps() -> Vec<String> {
    let out = run_ok(treeline().arg("--list-fault-steps"));
    let steps: Vec<String> = out.lines().map(str::to_owned).collect();
    assert!(
        steps.iter().any(|s| s.starts_with("commit-")),
        "no commit-* fault steps listed: {out:?}"
    );
    assert!(
        steps.iter().any(|s| s == "prune-during-delete"),
        "prune-during-delete not listed: {out:?}"
    );
    steps
}

/// Run a command that must be aborted by the fault at `step`.
fn run_faulted(cmd: &mut Command, step: &str) {
    cmd.env("TREELINE_FAULT", step);
    let out = cmd.output().unwrap();
    assert!(
        out.status.signal().is_some(),
        "{cmd:?} with TREELINE_FAULT={step} should have been killed, but exited with {}:\n{}",
        out.status,
        stderr_of(&out)
    );
}

fn faulted_commit(repo: &Path, branch: &str, dir: &Path, ts: u64, step: &str) {
    run_faulted(
        tl(repo)
            .args(["commit", "-b", branch])
            .arg(format!("--timestamp=@{ts}"))
            .arg(dir),
        step,
    );
}

/// The first commit of a branch is interrupted: the branch must not exist afterwards.
fn interrupted_first_commit(mode: &str, step: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, mode);
    faulted_commit(&repo, "main", &src, 1_000_000, step);
    let what = format!("{mode}, first commit killed at {step}");
    assert_fsck_clean(&repo, &what);
    assert_eq!(rev_parse(&repo, "main"), None, "{what}: branch exists");
    assert!(
        !repo.join("refs/heads/main").exists(),
        "{what}: ref file exists"
    );
    let c = commit_dir(&repo, "main", &src, 1_000_000);
    assert_fsck_clean(&repo, &format!("{what}, then committed again"));
    assert_eq!(rev_parse(&repo, "main").as_deref(), Some(c.as_str()));
    assert_checkout_eq(&repo, "main", &src, tmp.path(), &what);
}

/// A second commit is interrupted. Its tree differs from the first only by the root
/// directory's mode, so it stages just a dirmeta and the commit: whichever of them is
/// moved first, the repository must stay valid. `trial` varies the commit checksum and so
/// the order in which the staged objects are met.
fn interrupted_second_commit(mode: &str, step: &str, trial: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    init(&repo, mode);
    let first = commit_dir(&repo, "main", &src, 1_000_000);
    let src2 = tmp.path().join("src2");
    make_small_tree(&src2);
    fs::set_permissions(&src2, fs::Permissions::from_mode(0o750)).unwrap();
    let ts = 2_000_000 + trial;
    faulted_commit(&repo, "main", &src2, ts, step);
    let what = format!("{mode}, second commit (trial {trial}) killed at {step}");
    assert_fsck_clean(&repo, &what);
    assert_eq!(
        rev_parse(&repo, "main").as_deref(),
        Some(first.as_str()),
        "{what}: the branch moved"
    );
    assert_checkout_eq(&repo, "main", &src, tmp.path(), &what);
    let second = commit_dir(&repo, "main", &src2, ts);
    let what = format!("{what}, then committed again");
    assert_fsck_clean(&repo, &what);
    assert_eq!(rev_parse(&repo, "main").as_deref(), Some(second.as_str()));
    assert_eq!(
        rev_parse(&repo, "main^").as_deref(),
        Some(first.as_str()),
        "{what}: wrong parent"
    );
    assert_checkout_eq(&repo, "main", &src2, tmp.path(), &what);
}

/// Interrupt commits at every `commit-*` step but those in `except`.
fn every_commit_fault_step(mode: &str, except: &[&str]) {
    let steps: Vec<String> = fault_steps()
        .into_iter()
        .filter(|s| s.starts_with("commit-") && !except.contains(&s.as_str()))
        .collect();
    assert!(!steps.is_empty());
    for step in &steps {
        interrupted_first_commit(mode, step);
        for trial in 0..6 {
            interrupted_second_commit(mode, step, trial);
        }
    }
}

#[test]
fn a_commit_killed_at_any_step_leaves_a_valid_repo_archive() {
    every_commit_fault_step("archive", &[]);
}

#[test]
fn a_commit_killed_at_any_step_leaves_a_valid_repo_bare_user() {
    every_commit_fault_step("bare-user", &[]);
}

#[test]
fn a_prune_killed_while_deleting_leaves_a_valid_repo() {
    assert!(fault_steps().iter().any(|s| s == "prune-during-delete"));
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init(&repo, "archive");
    let src = tmp.path().join("src");
    make_small_tree(&src);
    let mut commits = Vec::new();
    for i in 1..=3u32 {
        write_file(&src.join("version"), format!("{i}\n").as_bytes(), 0o644);
        write_file(&src.join(format!("only-in-{i}")), &noise(2000, i), 0o644);
        commits.push(commit_dir(&repo, "main", &src, 1_000_000 + u64::from(i)));
        if i < 3 {
            fs::remove_file(src.join(format!("only-in-{i}"))).unwrap();
        }
    }
    // Unreachable: an orphan commit, and a branch that is deleted.
    let orphan_src = tmp.path().join("orphan");
    make_small_tree(&orphan_src);
    write_file(&orphan_src.join("orphan"), b"orphan\n", 0o644);
    let orphan = run_ok(
        tl(&repo)
            .args(["commit", "--orphan", "--timestamp=@1000010"])
            .arg(&orphan_src),
    )
    .trim()
    .to_owned();
    write_file(&orphan_src.join("deleted"), b"deleted branch\n", 0o644);
    let deleted = commit_dir(&repo, "tmp", &orphan_src, 1_000_020);
    run_ok(tl(&repo).args(["refs", "--delete", "tmp"]));
    assert_fsck_clean(&repo, "before prune");

    let before = read_objects(&repo);
    run_faulted(
        tl(&repo).args(["prune", "--refs-only", "--depth=0"]),
        "prune-during-delete",
    );
    let after = read_objects(&repo);
    assert!(
        after.len() < before.len(),
        "the fault should strike after at least one deletion"
    );
    assert_fsck_clean(&repo, "prune killed while deleting");
    assert_eq!(
        rev_parse(&repo, "main").as_deref(),
        Some(commits[2].as_str())
    );
    assert_checkout_eq(&repo, "main", &src, tmp.path(), "main after a killed prune");

    // Finishing the prune afterwards works and keeps main whole.
    run_ok(tl(&repo).args(["prune", "--refs-only", "--depth=0"]));
    assert_fsck_clean(&repo, "prune finished after a killed one");
    assert_checkout_eq(&repo, "main", &src, tmp.path(), "main after prune");
    for gone in [&orphan, &deleted, &commits[0], &commits[1]] {
        assert!(
            !repo
                .join("objects")
                .join(object_rel(gone, "commit"))
                .exists(),
            "unreachable commit {gone} survived prune"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. Concurrent writers
// ---------------------------------------------------------------------------------------

/// Tree `i` of 4: a shared part identical in every tree, plus content of its own.
fn make_concurrent_tree(root: &Path, i: u32) {
    mkdir(root, 0o755);
    for j in 0..40u32 {
        write_file(
            &root.join(format!("shared/f{j}")),
            &noise(3000, 100 + j),
            0o644,
        );
    }
    write_file(&root.join("shared/deep/common"), b"common\n", 0o644);
    write_file(&root.join("own"), format!("tree {i}\n").as_bytes(), 0o644);
    write_file(
        &root.join(format!("only-{i}/data")),
        &noise(5000, 1000 + i),
        0o644,
    );
    std::os::unix::fs::symlink(format!("only-{i}/data"), root.join("link")).unwrap();
}

#[test]
fn concurrent_commits_to_one_repo_all_succeed_and_stay_separate() {
    let tmp = tempfile::tempdir().unwrap();
    let trees: Vec<PathBuf> = (0..4u32)
        .map(|i| {
            let p = tmp.path().join(format!("tree{i}"));
            make_concurrent_tree(&p, i);
            p
        })
        .collect();
    // Several rounds, as races between the writers are timing-dependent. Half of them
    // without fsync (`core.fsync=false`): faster commits make the writers overlap more.
    for round in 0..16u32 {
        let mode = if round % 2 == 0 {
            "archive"
        } else {
            "bare-user"
        };
        let fsync = round % 4 >= 2;
        let repo = tmp.path().join(format!("repo{round}"));
        init(&repo, mode);
        if !fsync {
            let config = fs::read_to_string(repo.join("config")).unwrap();
            assert!(
                config.starts_with("[core]\n"),
                "unexpected config {config:?}"
            );
            fs::write(
                repo.join("config"),
                config.replacen("[core]\n", "[core]\nfsync=false\n", 1),
            )
            .unwrap();
        }
        // Each writer waits behind `read` on its stdin, so all four are released together.
        let mut children: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tool("sh")
                    .args(["-c", "read go && exec \"$0\" \"$@\""])
                    .arg(env!("CARGO_BIN_EXE_treeline"))
                    .arg(format!("--repo={}", repo.display()))
                    .args(["commit", "-b", &format!("branch{i}")])
                    .arg(format!("--timestamp=@{}", 1_000_000 + i))
                    .arg(t)
                    .env_remove("TREELINE_FAULT")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for child in &mut children {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"go\n").unwrap();
        }
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round} ({mode}, fsync {fsync}): concurrent commit {i} failed ({}):\n{}",
                out.status,
                stderr_of(&out)
            );
        }
        let what = format!("round {round} ({mode}, fsync {fsync}), 4 concurrent commits");
        assert_fsck_clean(&repo, &what);
        for (i, t) in trees.iter().enumerate() {
            assert_checkout_eq(&repo, &format!("branch{i}"), t, tmp.path(), &what);
        }
        force_remove(&repo);
    }
}

// ---------------------------------------------------------------------------------------
// 7. Malformed config
// ---------------------------------------------------------------------------------------

#[test]
fn every_command_fails_naming_the_config_when_it_is_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_main(tmp.path());
    let src = tmp.path().join("src");
    let dest = tmp.path().join("checkout");
    let config = repo.join("config");
    let config_name = config.display().to_string();
    let variants: &[(&str, &[u8])] = &[
        (
            "repo_version=2",
            b"[core]\nrepo_version=2\nmode=archive-z2\n",
        ),
        ("mode=nonsense", b"[core]\nrepo_version=1\nmode=nonsense\n"),
        ("no group", b"repo_version=1\nmode=archive-z2\n"),
        ("unterminated group", b"[core\nrepo_version=1\n"),
        ("binary", b"\x00\xff\xfe[core]\x00\n\x01"),
        ("empty", b""),
    ];
    let commands: Vec<Vec<String>> = [
        vec!["init", "--mode=archive"],
        vec!["commit", "-b", "new"],
        vec!["log", "main"],
        vec!["ls", "main"],
        vec!["cat", "main", "/a"],
        vec!["show", "main"],
        vec!["rev-parse", "main"],
        vec!["refs"],
        vec!["refs", "--create=other", "main"],
        vec!["refs", "--delete", "main"],
        vec!["diff", "main", "main"],
        vec!["checkout", "-U", "main"],
        vec!["fsck"],
        vec!["prune", "--refs-only"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    for (what, text) in variants {
        fs::write(&config, text).unwrap();
        for cmd in &commands {
            let mut c = tl(&repo);
            c.args(cmd);
            match cmd[0].as_str() {
                "commit" => {
                    c.arg(&src);
                }
                "checkout" => {
                    c.arg(&dest);
                }
                _ => {}
            }
            let out = run_fail(&mut c);
            let err = stderr_of(&out);
            assert!(
                err.contains(&config_name),
                "config {what}: `{}` does not name {config_name}:\n{err}",
                cmd.join(" ")
            );
        }
        assert!(!dest.exists(), "config {what}: checkout wrote files");
        assert_eq!(
            fs::read(&config).unwrap(),
            *text,
            "config {what}: a command rewrote the config"
        );
        // The reference tool refuses it too.
        run_fail(ostree(&repo).arg("refs"));
    }
}
