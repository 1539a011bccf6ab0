//! Helpers shared by treeline-pkg's integration tests: where the test data is, and the
//! real tools used as oracles (the Alpine minirootfs `apk` in a chroot, dpkg, apt).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared test data directory: `$TREELINE_TEST_DATA`, or `../shared/data` beside the
/// checkout. Panics with a plain message when it is missing: tests never skip silently.
pub fn test_data() -> PathBuf {
    let dir = std::env::var_os("TREELINE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    assert!(
        dir.is_dir(),
        "test data not found at {} (set TREELINE_TEST_DATA to the shared data directory)",
        dir.display()
    );
    dir
}

/// A file under the test data directory, which must exist.
pub fn data_file(rel: &str) -> PathBuf {
    let path = test_data().join(rel);
    assert!(path.exists(), "test data file missing: {}", path.display());
    path
}

/// The Alpine 3.19 packages with their signed index (a local apk repository base).
pub fn alpine_repo() -> PathBuf {
    data_file("alpine/v3.19-standard-iso-apks")
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks an Alpine minirootfs (`"3.19.4"` or `"3.20.3"`) into `dest`, so its own `apk`
/// can run there under `chroot`.
pub fn unpack_minirootfs(version: &str, dest: &Path) {
    let tarball = data_file(&format!(
        "alpine/minirootfs/alpine-minirootfs-{version}-x86_64.tar.gz"
    ));
    std::fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(dest)
            .arg("--numeric-owner"),
    );
}

/// `chroot ROOT /sbin/apk --no-network ARGS...`: the real apk of an unpacked minirootfs.
pub fn chroot_apk(root: &Path) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).args(["/sbin/apk", "--no-network"]);
    cmd
}

/// Unpacks only `etc/apk/keys` of the Alpine 3.19.4 minirootfs into `dest` and returns
/// that keys directory (the keys the real apk in that release trusts).
pub fn minirootfs_keys_dir(dest: &Path) -> PathBuf {
    let tarball = data_file("alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz");
    std::fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(dest)
            .args(["--wildcards", "*etc/apk/keys/*"]),
    );
    let keys = dest.join("etc/apk/keys");
    assert!(keys.is_dir(), "no etc/apk/keys in the minirootfs");
    keys
}

/// Every `.apk` of the Alpine 3.19 ISO repository, sorted by file name.
pub fn alpine_repo_apks() -> Vec<PathBuf> {
    let dir = alpine_repo().join("x86_64");
    let mut apks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "apk"))
        .collect();
    apks.sort();
    apks
}
