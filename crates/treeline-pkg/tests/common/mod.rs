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

/// Where tests keep downloads between runs: `$TREELINE_TEST_CACHE`, or
/// `/var/tmp/treeline-test-cache`.
pub fn test_cache_dir() -> PathBuf {
    let dir = std::env::var_os("TREELINE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeline-test-cache"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create test cache {}: {e}", dir.display()));
    dir
}

/// Downloads `url` once into the test cache under `name` (through apt's own downloader,
/// `apt-helper download-file`), and returns the cached path.
pub fn download_cached(url: &str, name: &str) -> PathBuf {
    let path = test_cache_dir().join(name);
    if !path.exists() {
        let partial = path.with_extension("partial");
        run_ok(
            Command::new("/usr/lib/apt/apt-helper")
                .arg("download-file")
                .arg(url)
                .arg(&partial),
        );
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// The host's apt list files for the bookworm main index of the native architecture
/// (`…_dists_bookworm_main_binary-ARCH_Packages[.xz|.lz4|…]` under /var/lib/apt/lists),
/// running `apt-get update` first if there is none.
pub fn bookworm_packages_lists() -> Vec<PathBuf> {
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    let suffix = format!("_dists_bookworm_main_binary-{}_Packages", arch.trim());
    let find = || -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/var/lib/apt/lists")
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| name.contains(&suffix))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    let mut lists = find();
    if lists.is_empty() {
        run_ok(Command::new("apt-get").arg("update"));
        lists = find();
    }
    assert!(
        !lists.is_empty(),
        "no bookworm main Packages list under /var/lib/apt/lists even after apt-get update"
    );
    lists
}

/// The content of an apt list file, decompressed by apt itself (`apt-helper cat-file`).
pub fn apt_cat_file(path: &Path) -> Vec<u8> {
    let out = Command::new("/usr/lib/apt/apt-helper")
        .arg("cat-file")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run apt-helper cat-file: {e}"));
    assert!(
        out.status.success(),
        "apt-helper cat-file {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
