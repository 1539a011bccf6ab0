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

/// The download cache for tests that fetch Debian data: `$TREELINE_TEST_CACHE`, or
/// `/var/tmp/treeline-test-cache`. Created on first use.
pub fn test_cache() -> PathBuf {
    let dir = std::env::var_os("TREELINE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeline-test-cache"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create test cache {}: {e}", dir.display()));
    dir
}

/// The cached `.deb` of `package` (apt's candidate version), fetched with
/// `apt-get download` on first use. Downloads go to a private directory first so
/// concurrent tests never see a partial file.
pub fn apt_download(package: &str) -> PathBuf {
    let dir = test_cache().join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    let find = |dir: &Path| {
        std::fs::read_dir(dir).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
        })
    };
    if let Some(found) = find(&dir) {
        return found;
    }
    let staging = tempfile::tempdir_in(&dir).unwrap();
    run_ok(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(staging.path()),
    );
    let fetched = find(staging.path())
        .unwrap_or_else(|| panic!("apt-get download {package} produced no .deb"));
    let dest = dir.join(fetched.file_name().unwrap());
    std::fs::rename(&fetched, &dest).unwrap();
    dest
}

/// apt's list file for bookworm main amd64 `Packages` (any compression apt chose), running
/// `apt-get update` once if there is none.
pub fn apt_list_bookworm_main_amd64() -> PathBuf {
    let find = || {
        std::fs::read_dir("/var/lib/apt/lists")
            .ok()
            .and_then(|entries| {
                entries.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("_bookworm_main_binary-amd64_Packages"))
                })
            })
    };
    if let Some(found) = find() {
        return found;
    }
    run_ok(Command::new("apt-get").args(["update", "-q"]));
    find().expect("no bookworm main amd64 Packages list even after apt-get update")
}

/// The bookworm main amd64 `Packages` index, decompressed by apt itself
/// (`apt-helper cat-file`) into the test cache; regenerated when apt's list changes.
pub fn bookworm_packages_plain() -> PathBuf {
    let list = apt_list_bookworm_main_amd64();
    let name = list.file_name().unwrap().to_string_lossy().into_owned();
    let dest = test_cache().join(format!("{name}.plain"));
    let list_mtime = std::fs::metadata(&list).unwrap().modified().unwrap();
    let fresh = std::fs::metadata(&dest)
        .and_then(|m| m.modified())
        .is_ok_and(|cached| cached >= list_mtime);
    if !fresh {
        let out = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&list)
            .output()
            .expect("cannot run apt-helper");
        assert!(
            out.status.success(),
            "apt-helper cat-file {} failed",
            list.display()
        );
        let tmp = tempfile::NamedTempFile::new_in(test_cache()).unwrap();
        std::fs::write(tmp.path(), &out.stdout).unwrap();
        tmp.persist(&dest).unwrap();
    }
    dest
}

/// A cached copy of `plain` compressed by the real `tool` (`gzip`, `xz`) with `args`,
/// named `plain` + `suffix`.
pub fn compressed_copy(plain: &Path, tool: &str, args: &[&str], suffix: &str) -> PathBuf {
    let dest = PathBuf::from(format!("{}{suffix}", plain.display()));
    let plain_mtime = std::fs::metadata(plain).unwrap().modified().unwrap();
    if std::fs::metadata(&dest)
        .and_then(|m| m.modified())
        .is_ok_and(|cached| cached >= plain_mtime)
    {
        return dest;
    }
    let tmp = tempfile::NamedTempFile::new_in(test_cache()).unwrap();
    let out = Command::new(tool)
        .args(args)
        .arg("-c")
        .arg(plain)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(out.status.success(), "{tool} failed");
    std::fs::write(tmp.path(), &out.stdout).unwrap();
    tmp.persist(&dest).unwrap();
    dest
}

/// An `ar` archive in the common format dpkg writes, from `(name, content)` members in
/// order: for building deliberately malformed `.deb`s.
pub fn ar_archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, content) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            "100644",
            content.len()
        );
        assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        if content.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// Downloads `url` once into the test cache under `name` (through apt's own downloader,
/// `apt-helper download-file`), and returns the cached path.
pub fn download_cached(url: &str, name: &str) -> PathBuf {
    let path = test_cache().join(name);
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

/// The `Packages` indexes apt uses on this host (every `*_Packages*` list, for every
/// configured suite), decompressed by apt itself (`apt-helper cat-file`) into `dir`, each
/// with the pin priority apt gives its suite (from the suite's Release file beside it).
/// Runs `apt-get update` only when there are none.
pub fn apt_packages_lists_plain(dir: &Path) -> Vec<(PathBuf, i32)> {
    let find = || {
        let mut lists: Vec<PathBuf> = std::fs::read_dir("/var/lib/apt/lists")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.contains("_Packages"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        lists.sort();
        lists
    };
    let mut lists = find();
    if lists.is_empty() {
        run_ok(Command::new("apt-get").args(["update", "-q"]));
        lists = find();
    }
    assert!(
        !lists.is_empty(),
        "no Packages lists even after apt-get update"
    );
    std::fs::create_dir_all(dir).unwrap();
    lists
        .iter()
        .map(|list| {
            let out = Command::new("/usr/lib/apt/apt-helper")
                .arg("cat-file")
                .arg(list)
                .output()
                .expect("cannot run apt-helper");
            assert!(
                out.status.success(),
                "apt-helper cat-file {} failed",
                list.display()
            );
            let dest = dir.join(list.file_name().unwrap());
            std::fs::write(&dest, &out.stdout).unwrap();
            (dest, apt_list_pin(list))
        })
        .collect()
}

/// The default pin priority of the suite an apt list file belongs to: its Release file is
/// the `*_InRelease` (or `*_Release`) in the same directory whose name, less that suffix,
/// is the longest prefix of the list's name. apt checked the signature when it stored it.
fn apt_list_pin(list: &Path) -> i32 {
    let list_name = list.file_name().unwrap().to_string_lossy().into_owned();
    let dir = list.parent().unwrap();
    let release = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let prefix = name
                .strip_suffix("InRelease")
                .or_else(|| name.strip_suffix("Release"))?
                .to_owned();
            list_name
                .starts_with(&prefix)
                .then_some((prefix.len(), entry.path()))
        })
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("no Release file for {list_name} in {}", dir.display()));
    let text = std::fs::read_to_string(&release).unwrap();
    // The signed part of a clearsigned InRelease: after the armor header's blank line,
    // before the signature.
    let body = match text.split_once("-----BEGIN PGP SIGNED MESSAGE-----") {
        Some((_, signed)) => signed
            .split_once("\n\n")
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .split("\n-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap_or_default(),
        None => text.as_str(),
    };
    treeline_pkg::deb::release::Release::parse(body, &release.display().to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", release.display()))
        .default_pin()
}

/// `apt-get install --simulate NAMES` as if nothing were installed (an empty dpkg status
/// file in `scratch`; no lock, nothing on the host changes). Returns the `(name, version)`
/// pairs apt would install, or apt's output when it refuses.
pub fn apt_simulate_install(
    scratch: &Path,
    names: &[&str],
    recommends: bool,
) -> Result<std::collections::BTreeSet<(String, String)>, String> {
    std::fs::create_dir_all(scratch).unwrap();
    let status = scratch.join("status");
    std::fs::write(&status, b"").unwrap();
    let out = Command::new("apt-get")
        .args(["install", "--simulate", "-q"])
        .arg(format!("-oDir::State::status={}", status.display()))
        .arg(format!(
            "-oDir::State::extended_states={}",
            scratch.join("extended_states").display()
        ))
        .arg("-oDebug::NoLocking=1")
        .arg(format!("-oAPT::Install-Recommends={recommends}"))
        .args(names)
        .env("LC_ALL", "C")
        .output()
        .expect("cannot run apt-get");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    // "Inst NAME (VERSION SUITE [ARCH])"
    Ok(stdout
        .lines()
        .filter_map(|line| line.strip_prefix("Inst "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(" (")?;
            let version = rest.split(' ').next()?;
            Some((name.to_owned(), version.to_owned()))
        })
        .collect())
}

/// An Alpine 3.19.4 minirootfs in `dest` whose apk can solve against `indexes`: each is
/// copied in as a local repository `/repoN/x86_64/APKINDEX.tar.gz`, and `/target` holds
/// an empty apk database (with the minirootfs's keys), so `apk add --simulate --root
/// /target` resolves from nothing.
pub fn apk_solver_root(dest: &Path, indexes: &[PathBuf]) {
    unpack_minirootfs("3.19.4", dest);
    for (n, index) in indexes.iter().enumerate() {
        let repo = dest.join(format!("repo{n}/x86_64"));
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::copy(index, repo.join("APKINDEX.tar.gz")).unwrap();
    }
    let target = dest.join("target");
    for dir in ["lib/apk/db", "etc/apk/keys", "var/cache/apk"] {
        std::fs::create_dir_all(target.join(dir)).unwrap();
    }
    for file in [
        "lib/apk/db/installed",
        "lib/apk/db/triggers",
        "etc/apk/world",
    ] {
        std::fs::write(target.join(file), b"").unwrap();
    }
    std::fs::write(target.join("etc/apk/arch"), b"x86_64\n").unwrap();
    for key in std::fs::read_dir(dest.join("etc/apk/keys")).unwrap() {
        let key = key.unwrap().path();
        std::fs::copy(
            &key,
            target.join("etc/apk/keys").join(key.file_name().unwrap()),
        )
        .unwrap();
    }
}

/// `apk add --simulate ATOMS` in a root made by [`apk_solver_root`] with `repos`
/// repositories: the `(name, version)` pairs apk would install, or apk's output when it
/// refuses.
pub fn apk_simulate_add(
    root: &Path,
    repos: usize,
    atoms: &[&str],
) -> Result<std::collections::BTreeSet<(String, String)>, String> {
    let mut cmd = chroot_apk(root);
    cmd.args(["add", "--simulate", "--root", "/target"]);
    for n in 0..repos {
        cmd.args(["--repository", &format!("/repo{n}")]);
    }
    let out = cmd
        .args(atoms)
        .output()
        .expect("cannot run apk in the chroot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    // "(3/25) Installing NAME (VERSION)"
    Ok(stdout
        .lines()
        .filter_map(|line| line.split_once(") Installing ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let (name, version) = rest.split_once(" (")?;
            Some((name.to_owned(), version.strip_suffix(')')?.to_owned()))
        })
        .collect())
}
