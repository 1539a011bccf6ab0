//! Helpers shared by the integration tests: running treeline and the reference tools,
//! finding test data, generating trees with the hard cases, and comparing trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod container;

/// The treeline binary under test.
pub fn treeline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_treeline"))
}

/// treeline on a repository; the fault-injection and repository variables of the
/// environment are cleared so a test sees only what it sets.
pub fn tl(repo: &Path) -> Command {
    let mut c = treeline();
    c.arg(format!("--repo={}", repo.display()));
    c.env_remove("TREELINE_FAULT").env_remove("OSTREE_REPO");
    c
}

/// `treeline admin --sysroot=S ...`, with the test-controlled variables cleared.
pub fn admin(sysroot: &Path) -> Command {
    let mut c = treeline();
    c.env_remove("TREELINE_FAULT").env_remove("OSTREE_REPO");
    c.arg("admin")
        .arg(format!("--sysroot={}", sysroot.display()));
    c
}

/// The real ostree on a repository.
pub fn ostree(repo: &Path) -> Command {
    let mut c = tool("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

/// A reference tool; fails the test with a clear message if it is not installed
/// (`.ci/run` installs every one of them).
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{name}` is not installed; run .ci/run or install it"
    );
    Command::new(name)
}

/// Run a command, fail the test with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command that must fail; returns its output.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The shared test data directory: `$TREELINE_TEST_DATA`, else `../shared/data` beside
/// the repository. Fails loudly when missing: tests are never skipped silently.
pub fn test_data() -> PathBuf {
    let dir = std::env::var_os("TREELINE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.is_dir(),
        "test data not found at {} (set TREELINE_TEST_DATA to the shared data directory)",
        dir.display()
    );
    dir
}

/// The Alpine minirootfs tarball (3.20.3).
pub fn alpine_minirootfs_tarball() -> PathBuf {
    let p = test_data().join("alpine/minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz");
    assert!(p.is_file(), "missing test data file {}", p.display());
    p
}

/// Unpack the Alpine minirootfs into `dest` with the system tar (keeps owners as root).
pub fn unpack_minirootfs(dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    run_ok(
        tool("tar")
            .arg("-xzf")
            .arg(alpine_minirootfs_tarball())
            .arg("-C")
            .arg(dest)
            .arg("--numeric-owner"),
    );
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    run_ok(
        tool("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(path),
    );
}

/// A directory holding the hard cases: empty files and directories, relative, absolute
/// and dangling symlinks, setuid/setgid/sticky modes, a 255-byte name, deep nesting,
/// xattrs on files and directories, hardlinks, odd owners and a large file.
pub fn make_hard_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let w = |p: &str, data: &[u8], mode: u32| write_file(root, p, data, mode);
    w("empty", b"", 0o644);
    w("hello.txt", b"hello\n", 0o644);
    w("bin/tool", b"#!/bin/sh\necho hi\n", 0o755);
    w("bin/suid", b"suid\n", 0o4755);
    w("bin/sgid", b"sgid\n", 0o2711);
    w("private/secret", b"secret\n", 0o600);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("var-mail")).unwrap();
    fs::set_permissions(root.join("var-mail"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(root.join("restricted")).unwrap();
    w("restricted/inside", b"x", 0o644);
    fs::set_permissions(root.join("restricted"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("../hello.txt", root.join("bin/link-up")).unwrap();
    let long = "n".repeat(255);
    w(&format!("long/{long}"), b"long name\n", 0o644);
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    w(&format!("{deep}leaf"), b"deep\n", 0o644);
    w("unicode/été ü 日本", b"unicode\n", 0o644);
    w("xattrs/file", b"with xattrs\n", 0o644);
    set_xattr(&root.join("xattrs/file"), "user.a", "A");
    set_xattr(&root.join("xattrs/file"), "user.b", "BBB");
    set_xattr(&root.join("xattrs"), "user.dir", "on a directory");
    w("hardlinks/a", b"shared inode\n", 0o644);
    fs::hard_link(root.join("hardlinks/a"), root.join("hardlinks/b")).unwrap();
    w("owned/by-nobody", b"nobody\n", 0o640);
    std::os::unix::fs::chown(root.join("owned/by-nobody"), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::lchown(root.join("link-rel"), Some(1000), Some(1000)).unwrap();
    // 24 MiB with structure, so compression has something to do but is not trivial.
    let mut big = Vec::with_capacity(24 << 20);
    let mut x: u32 = 12345;
    while big.len() < 24 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.extend_from_slice(format!("line {} value {}\n", big.len(), x >> 16).as_bytes());
    }
    w("large/blob", &big, 0o644);
}

/// What a tree entry looks like, for comparing trees.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Entry {
    /// `d`, `f` or `l`.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// File content (hashed for large files) or symlink target.
    pub content: String,
    /// user.* xattrs.
    pub xattrs: Vec<(String, String)>,
}

fn user_xattrs(path: &Path) -> Vec<(String, String)> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "^user\\.", "--absolute-names"])
        .arg(path)
        .output()
        .expect("getfattr (package attr) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter(|l| !l.starts_with("user.ostreemeta"))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    v.sort();
    v
}

/// Snapshot of a tree: relative path → entry. `with_owner` and `with_xattrs` select what
/// the comparison covers (user-mode checkouts keep neither).
pub fn snapshot(root: &Path, with_owner: bool, with_xattrs: bool) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, with_owner, with_xattrs, &mut out);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    with_owner: bool,
    with_xattrs: bool,
    out: &mut BTreeMap<String, Entry>,
) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            ('d', String::new())
        } else if ft.is_symlink() {
            (
                'l',
                fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
            )
        } else {
            let data = fs::read(&p).unwrap();
            let c = if data.len() > 4096 {
                format!("{} bytes, fnv {:x}", data.len(), fnv(&data))
            } else {
                String::from_utf8_lossy(&data).into_owned()
            };
            ('f', c)
        };
        let e = Entry {
            kind,
            mode: if kind == 'l' {
                0o777
            } else {
                md.mode() & 0o7777
            },
            uid: if with_owner { md.uid() } else { 0 },
            gid: if with_owner { md.gid() } else { 0 },
            content,
            xattrs: if with_xattrs {
                user_xattrs(&p)
            } else {
                Vec::new()
            },
        };
        out.insert(rel, e);
        if ft.is_dir() {
            walk(root, &p, with_owner, with_xattrs, out);
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Assert two snapshots are equal, printing the first differences.
pub fn assert_same_tree(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>, what: &str) {
    if a == b {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in first: {k}")),
            Some(w) if w != v => diffs.push(format!("differs: {k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("only in second: {k}"));
        }
    }
    diffs.truncate(20);
    panic!("{what}: trees differ:\n{}", diffs.join("\n"));
}

/// Make every file and directory writable again and delete a tree (checkouts may hold
/// read-only directories).
pub fn force_remove(path: &Path) {
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(path).status();
    let _ = fs::remove_dir_all(path);
}

/// Write a file (creating its parents) and set its mode.
pub fn write_file(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Check `rev` out (user mode) and compare with `expected`.
pub fn assert_checkout_eq(repo: &Path, rev: &str, expected: &Path, scratch: &Path, what: &str) {
    let dest = scratch.join(format!(
        "co-{}",
        rev.replace([':', '/', '@'], "_")
            .chars()
            .take(40)
            .collect::<String>()
    ));
    if dest.exists() {
        force_remove(&dest);
    }
    run_ok(tl(repo).args(["checkout", "-U", rev]).arg(&dest));
    assert_same_tree(
        &snapshot(expected, false, false),
        &snapshot(&dest, false, false),
        what,
    );
    force_remove(&dest);
}

/// Where tests keep downloads between runs: `$TREELINE_TEST_CACHE`, default
/// `/var/tmp/treeline-test-cache`.
pub fn test_cache() -> PathBuf {
    let dir = std::env::var_os("TREELINE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeline-test-cache"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A real Debian package from the host's configured apt sources (`apt-get download`),
/// cached under [`test_cache`].
pub fn debian_package(name: &str) -> PathBuf {
    let dir = test_cache().join("debs");
    fs::create_dir_all(&dir).unwrap();
    let find = || {
        fs::read_dir(&dir).unwrap().find_map(|e| {
            let p = e.unwrap().path();
            let file = p.file_name()?.to_str()?.to_owned();
            (file.starts_with(&format!("{name}_")) && file.ends_with(".deb")).then_some(p)
        })
    };
    if let Some(p) = find() {
        return p;
    }
    run_ok(tool("apt-get").arg("download").arg(name).current_dir(&dir));
    find().unwrap_or_else(|| panic!("apt-get download {name} left no .deb in {}", dir.display()))
}

/// The kernel of Debian's `linux-image-amd64` (the versioned package it depends on, from
/// the host's apt sources), unpacked with its module index (`depmod`) under
/// [`test_cache`]. Returns the tree (modules in `lib/modules/KVER`, the kernel in
/// `boot/vmlinuz-KVER`) and the kernel version.
pub fn debian_kernel() -> (PathBuf, String) {
    let deps = run_ok(tool("apt-cache").args(["depends", "linux-image-amd64"]));
    let pkg = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| panic!("linux-image-amd64 depends on no linux-image-*:\n{deps}"))
        .to_owned();
    let kver = pkg["linux-image-".len()..].to_owned();
    let deb = debian_package(&pkg);
    let kernels = test_cache().join("kernels");
    fs::create_dir_all(&kernels).unwrap();
    let dir = kernels.join(deb.file_stem().unwrap());
    if !dir.exists() {
        // Unpack beside and rename, so a concurrent or killed test never sees half a tree.
        let tmp = tempfile::tempdir_in(&kernels).unwrap();
        run_ok(tool("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()));
        run_ok(tool("depmod").arg("-b").arg(tmp.path()).arg(&kver));
        let tmp = tmp.keep();
        if fs::rename(&tmp, &dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
    }
    (dir, kver)
}

/// The statically linked treeline-boot: `$TREELINE_BOOT_STATIC`, else where the build
/// step of `.ci/run` and README puts it. Missing is a failure, never a skip.
pub fn static_boot() -> PathBuf {
    let p = std::env::var_os("TREELINE_BOOT_STATIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-gnu/debug/treeline-boot")
        });
    assert!(
        p.is_file(),
        "static treeline-boot not found at {} (build it first: RUSTFLAGS='-C \
         target-feature=+crt-static' cargo build -p treeline-boot --target \
         x86_64-unknown-linux-gnu, or set TREELINE_BOOT_STATIC)",
        p.display()
    );
    p
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving a directory on 127.0.0.1, stopped when dropped.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    access_log: PathBuf,
    error_log: PathBuf,
}

impl Nginx {
    /// Serves `root` on a free loopback port; logs and config go to `workdir`.
    pub fn start(root: &Path, workdir: &Path) -> Nginx {
        let nginx = {
            // `tool` checks the PATH; nginx lives in sbin.
            let found = ["/usr/sbin/nginx", "/usr/bin/nginx", "/sbin/nginx"]
                .iter()
                .find(|p| Path::new(p).is_file())
                .map(PathBuf::from);
            found.expect("nginx is not installed (apt-get install nginx)")
        };
        fs::create_dir_all(workdir).unwrap();
        let port = free_port();
        let access_log = workdir.join("access.log");
        let error_log = workdir.join("error.log");
        let conf = workdir.join("nginx.conf");
        let d = workdir.display();
        // `user root` lets the workers read the 0700 temp dirs when the tests run as root
        // (nginx ignores it with a warning otherwise).
        let user = if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
        {
            "user root;"
        } else {
            ""
        };
        fs::write(
            &conf,
            format!(
                "daemon off;\n{user}\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {};\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {};\n  default_type application/octet-stream;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
                error_log.display(),
                access_log.display(),
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nginx");
        let mut server = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            access_log,
            error_log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "nginx exited ({status}): {}",
                    fs::read_to_string(&server.error_log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nginx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Requests logged so far.
    pub fn requests(&self) -> usize {
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; SIGKILL if it lingers (it then cannot stop
        // its worker, so prefer the graceful way first).
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clear the immutable attribute ostree and treeline set on deployment directories
/// (`ostree/deploy/*/deploy/*`), so a test sysroot can be deleted.
pub fn clear_deployment_immutable(sysroot: &Path) {
    let Ok(stateroots) = fs::read_dir(sysroot.join("ostree/deploy")) else {
        return;
    };
    for os in stateroots.flatten() {
        let Ok(deps) = fs::read_dir(os.path().join("deploy")) else {
            continue;
        };
        for d in deps.flatten() {
            if d.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = Command::new("chattr").arg("-i").arg(d.path()).status();
            }
        }
    }
}

/// A temporary directory for sysroots; on drop, every sysroot directly inside it loses
/// its immutable bits and the whole directory is deleted.
pub struct SysrootScratch {
    dir: Option<tempfile::TempDir>,
}

impl SysrootScratch {
    /// A new empty scratch directory.
    pub fn new() -> Self {
        SysrootScratch {
            dir: Some(tempfile::tempdir().unwrap()),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for SysrootScratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if let Ok(entries) = fs::read_dir(dir.path()) {
                for e in entries.flatten() {
                    clear_deployment_immutable(&e.path());
                }
            }
            drop(dir);
        }
    }
}

/// A small ext4 filesystem in a file, loop-mounted on a directory (needs root); unmounted
/// when dropped.
pub struct LoopMount {
    mountpoint: PathBuf,
}

impl LoopMount {
    /// Make an ext4 image of `size_mib` MiB at `image` and mount it on `mountpoint`.
    pub fn new(image: &Path, size_mib: u64, mountpoint: &Path) -> LoopMount {
        let f = fs::File::create(image).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        run_ok(tool("mkfs.ext4").args(["-q", "-F"]).arg(image));
        fs::create_dir_all(mountpoint).unwrap();
        run_ok(
            tool("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(mountpoint),
        );
        LoopMount {
            mountpoint: mountpoint.to_path_buf(),
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
    }
}

/// The Alpine signing keys, from the 3.19.4 minirootfs.
pub fn alpine_keys(scratch: &Path) -> PathBuf {
    let tarball = test_data().join("alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz");
    fs::create_dir_all(scratch).unwrap();
    run_ok(
        tool("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(scratch)
            .arg("./etc/apk/keys"),
    );
    scratch.join("etc/apk/keys")
}

/// Checks out a composed commit into `dest` and makes it look like a deployment does
/// after its first boot: `/etc` is a copy of `/usr/etc` (as `admin deploy` makes it) and
/// `/var` is created by the real `systemd-tmpfiles --create --root` from the tree's
/// `usr/lib/tmpfiles.d/treeline-var.conf` (as systemd does at boot). The result can be
/// entered with `chroot`.
pub fn deployment_root(repo: &Path, commit: &str, dest: &Path) {
    run_ok(
        ostree(repo)
            .args(["checkout", "--force-copy", commit])
            .arg(dest),
    );
    assert!(
        !dest.join("etc").exists(),
        "a composed commit has no /etc, only /usr/etc"
    );
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(dest.join("usr/etc"))
            .arg(dest.join("etc")),
    );
    run_ok(
        tool("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", dest.display()))
            .arg(dest.join("usr/lib/tmpfiles.d/treeline-var.conf")),
    );
}

/// The deployments a guest's `treeline admin status` printed on the serial console
/// between the lines `TL-STATUS-BEGIN` and `TL-STATUS-END`: one `[*] STATEROOT NAME
/// [(state)]` line each, trimmed (the console adds carriage returns).
pub fn console_deployments(serial: &str, stateroot: &str) -> Vec<String> {
    let status = serial
        .split("TL-STATUS-BEGIN")
        .nth(1)
        .and_then(|s| s.split("TL-STATUS-END").next())
        .unwrap_or_else(|| panic!("no treeline status on the console:\n{serial}"));
    let own = format!("{stateroot} ");
    status
        .lines()
        // A getty shares the console: its prompt may start the line the status continues.
        .map(|l| l.rsplit("login: ").next().unwrap_or(l))
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\r'))
        .filter(|l| l.starts_with("* ") || l.starts_with(&own))
        .map(str::to_owned)
        .collect()
}
