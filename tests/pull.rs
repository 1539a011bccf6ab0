//! `treeline pull` over HTTP: from repositories written by the real ostree and served by
//! nginx, from `treeline serve`, and from a misbehaving test server (errors, corrupt,
//! truncated and stalled replies); resuming interrupted pulls; ed25519 signatures on
//! commits and summaries; and ref bindings. Whatever goes wrong, no unverified object may
//! land and refs may not move.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic printable noise (compresses a little, not much).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if i % 64 == 63 {
                b'\n'
            } else {
                b'!' + ((x >> 16) % 90) as u8
            }
        })
        .collect()
}

/// First version of the test tree: files, an executable, a symlink, subdirectories.
fn make_v1(root: &Path) {
    write_file(root, "a.txt", b"alpha\n", 0o644);
    write_file(root, "empty", b"", 0o644);
    write_file(root, "bin/run", b"#!/bin/sh\necho run\n", 0o755);
    write_file(root, "sub/b.txt", b"bravo\n", 0o644);
    write_file(root, "sub/deeper/c.txt", &noise(3000, 1), 0o600);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write_file(root, "private/key", b"private\n", 0o600);
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("../a.txt", root.join("sub/link")).unwrap();
}

/// Second version: one file changed, a new directory with a large-ish new file.
fn make_v2(root: &Path) {
    make_v1(root);
    write_file(root, "sub/b.txt", b"bravo, changed\n", 0o644);
    write_file(root, "new/big.bin", &noise(40_000, 7), 0o644);
    write_file(root, "new/small.txt", b"small and new\n", 0o644);
}

fn init(repo: &Path, mode: &str) {
    run_ok(tl(repo).args(["init", &format!("--mode={mode}")]));
}

fn commit(repo: &Path, branch: &str, dir: &Path, subject: &str) -> String {
    run_ok(
        tl(repo)
            .args(["commit", "-b", branch, "-s", subject])
            .arg(dir),
    )
    .trim()
    .to_owned()
}

fn rev_parse(repo: &Path, rev: &str) -> Option<String> {
    let out = tl(repo).args(["rev-parse", rev]).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn remote_refs(repo: &Path) -> String {
    run_ok(tl(repo).args(["refs", "--remotes"]))
}

fn assert_fsck(repo: &Path, what: &str) {
    let out = tl(repo).arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: treeline fsck failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
}

fn assert_ostree_fsck(repo: &Path, what: &str) {
    let out = ostree(repo).arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: ostree fsck failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
}

/// `objects/XX/REST.EXT` paths (relative to the repository) of every loose object.
fn object_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let objects = repo.join("objects");
    for sub in fs::read_dir(&objects).unwrap() {
        let sub = sub.unwrap();
        if !sub.file_type().unwrap().is_dir() {
            continue;
        }
        for e in fs::read_dir(sub.path()).unwrap() {
            let e = e.unwrap();
            out.insert(format!(
                "objects/{}/{}",
                sub.file_name().to_string_lossy(),
                e.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// The checksum of an object path `objects/XX/REST.EXT`.
fn checksum_of(rel: &str) -> String {
    let rest = rel.strip_prefix("objects/").unwrap();
    let (xx, file) = rest.split_once('/').unwrap();
    format!("{xx}{}", file.split_once('.').unwrap().0)
}

/// Every file anywhere below `repo` (objects/, tmp/ staging dirs, ...) that stores the
/// object `checksum`, whatever its extension.
fn files_of_object(repo: &Path, checksum: &str) -> Vec<PathBuf> {
    let (xx, rest) = checksum.split_at(2);
    let mut found = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(rest)
                && dir.file_name().is_some_and(|d| d == xx)
            {
                found.push(p);
            }
        }
    }
    found
}

/// Every file (not directory) anywhere below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

/// Whether an error message names the object `checksum`: by checksum or by its
/// `objects/XX/REST` path (in a URL).
fn names_object(err: &str, checksum: &str) -> bool {
    let (xx, rest) = checksum.split_at(2);
    err.contains(checksum) || err.contains(&format!("objects/{xx}/{rest}."))
}

fn add_remote(client: &Path, name: &str, url: &str, extra: &[&str]) {
    run_ok(
        tl(client)
            .args(["remote", "add"])
            .args(extra)
            .args([name, url]),
    );
}

/// A fresh client repository with an `origin` remote (no signature checks).
fn client(dir: &Path, mode: &str, url: &str) -> PathBuf {
    init(dir, mode);
    add_remote(dir, "origin", url, &["--no-gpg-verify"]);
    dir.to_path_buf()
}

fn pull_json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let out = run_ok(tl(repo).arg("pull").arg("--json").args(args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("pull --json printed {out:?}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Servers

/// A running `treeline serve`, killed when dropped.
struct TlServe {
    child: Child,
    url: String,
}

impl TlServe {
    fn start(repo: &Path) -> TlServe {
        let mut child = tl(repo)
            .args(["serve", "--quiet", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start treeline serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server = TlServe {
            child,
            url: String::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => panic!("treeline serve printed no URL ({other:?})"),
        };
        server.url = line
            .split_once(" at ")
            .map(|(_, u)| u.trim().to_owned())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        server
    }
}

impl Drop for TlServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the test server does with one request.
#[derive(Clone, Debug)]
enum Fault {
    /// Serve the file (or 404).
    None,
    /// Answer with this status and a short body.
    Status(u16),
    /// Serve these bytes instead of the file.
    Body(Vec<u8>),
    /// Announce the full length, send half the bytes, close.
    TruncateWithLength,
    /// Send half the bytes without a length (close-delimited), close.
    TruncateNoLength,
    /// Accept and read the request, never answer.
    Stall,
}

/// Decides the fault for (path without the leading `/`, 1-based request count for it).
type FaultFn = Arc<dyn Fn(&str, usize) -> Fault + Send + Sync>;

/// One logged request.
#[derive(Clone, Debug)]
struct Logged {
    path: String,
    status: u16,
}

/// A small HTTP/1.1 static server (`Connection: close`) for an archive repository, with
/// per-path fault injection and a request log. Stopped when dropped.
struct TestServer {
    url: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    delay_ms: Arc<AtomicU64>,
    faults: Arc<Mutex<FaultFn>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    root: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    delay_ms: Arc<AtomicU64>,
    faults: Arc<Mutex<FaultFn>>,
}

impl TestServer {
    fn start(root: &Path) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let faults: Arc<Mutex<FaultFn>> = Arc::new(Mutex::new(Arc::new(|_: &str, _| Fault::None)));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            stop: Arc::clone(&stop),
            log: Arc::clone(&log),
            counts: Arc::clone(&counts),
            delay_ms: Arc::clone(&delay_ms),
            faults: Arc::clone(&faults),
        });
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        });
        TestServer {
            url: format!("http://{addr}/"),
            addr,
            stop,
            log,
            delay_ms,
            faults,
            counts,
            accept: Some(accept),
        }
    }

    fn set_faults(&self, f: impl Fn(&str, usize) -> Fault + Send + Sync + 'static) {
        *self.faults.lock().unwrap() = Arc::new(f);
    }

    /// Restart the per-path request counts given to the fault function.
    fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }

    fn clear_faults(&self) {
        self.set_faults(|_, _| Fault::None);
    }

    fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn handle(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || req.len() > 64 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&req);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/");
    let path = target
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    let n = {
        let mut counts = shared.counts.lock().unwrap();
        let c = counts.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let fault = {
        let f = Arc::clone(&shared.faults.lock().unwrap());
        f(&path, n)
    };
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let file = shared.root.join(&path);
    let content = if path.split('/').any(|c| c == ".." || c.is_empty()) || !file.is_file() {
        None
    } else {
        fs::read(&file).ok()
    };
    let (status, body, mode) = match fault {
        Fault::Stall => {
            shared.log.lock().unwrap().push(Logged { path, status: 0 });
            let deadline = Instant::now() + Duration::from_secs(60);
            while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
        Fault::Status(s) => (s, format!("status {s}\n").into_bytes(), 0),
        Fault::Body(b) => (200, b, 0),
        Fault::TruncateWithLength => match content {
            Some(c) => (200, c, 1),
            None => (404, b"not found\n".to_vec(), 0),
        },
        Fault::TruncateNoLength => match content {
            Some(c) => (200, c, 2),
            None => (404, b"not found\n".to_vec(), 0),
        },
        Fault::None => match content {
            Some(c) => (200, c, 0),
            None => (404, b"not found\n".to_vec(), 0),
        },
    };
    shared.log.lock().unwrap().push(Logged {
        path: path.clone(),
        status,
    });
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
        reason(status)
    );
    if mode != 2 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Content-Type: application/octet-stream\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        if mode == 0 {
            conn.write_all(&body)?;
        } else {
            conn.write_all(&body[..body.len() / 2])?;
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sources

/// A treeline archive repository with `main` at v1 then v2, and a summary.
struct Source {
    repo: PathBuf,
    v1_dir: PathBuf,
    v2_dir: PathBuf,
    v1: String,
    v2: String,
    /// Object files (relative paths) that v2 added.
    new_in_v2: BTreeSet<String>,
}

fn make_source(tmp: &Path) -> Source {
    let repo = tmp.join("src-repo");
    let v1_dir = tmp.join("v1");
    let v2_dir = tmp.join("v2");
    make_v1(&v1_dir);
    make_v2(&v2_dir);
    init(&repo, "archive");
    let v1 = commit(&repo, "main", &v1_dir, "v1");
    let before = object_files(&repo);
    let v2 = commit(&repo, "main", &v2_dir, "v2");
    let after = object_files(&repo);
    run_ok(tl(&repo).args(["summary", "-u"]));
    Source {
        repo,
        v1_dir,
        v2_dir,
        v1,
        v2,
        new_in_v2: after.difference(&before).cloned().collect(),
    }
}

impl Source {
    /// The largest content object new in v2 (new/big.bin).
    fn big_filez(&self) -> String {
        self.new_in_v2
            .iter()
            .filter(|p| p.ends_with(".filez"))
            .max_by_key(|p| fs::metadata(self.repo.join(p)).unwrap().len())
            .cloned()
            .unwrap()
    }

    fn new_dirtrees(&self) -> Vec<String> {
        self.new_in_v2
            .iter()
            .filter(|p| p.ends_with(".dirtree"))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// 1. Interoperability: ostree-made repositories, nginx, treeline serve

/// The same trees committed by the real ostree (archive), with a static delta and a
/// summary, exactly as a distributor would publish them.
fn make_ostree_source(tmp: &Path) -> (PathBuf, PathBuf, PathBuf, String, String) {
    let repo = tmp.join("ostree-src");
    let v1_dir = tmp.join("v1");
    let v2_dir = tmp.join("v2");
    make_v1(&v1_dir);
    make_v2(&v2_dir);
    run_ok(ostree(&repo).args(["init", "--mode=archive"]));
    let commit = |dir: &Path, s: &str| {
        run_ok(
            ostree(&repo)
                .args(["commit", "-b", "main", "-s", s])
                .arg(format!("--tree=dir={}", dir.display())),
        )
        .trim()
        .to_owned()
    };
    let a = commit(&v1_dir, "v1");
    let b = commit(&v2_dir, "v2");
    run_ok(ostree(&repo).args([
        "static-delta",
        "generate",
        &format!("--from={a}"),
        &format!("--to={b}"),
    ]));
    run_ok(ostree(&repo).args(["summary", "-u"]));
    (repo, v1_dir, v2_dir, a, b)
}

fn pull_v1_then_v2(
    url: &str,
    mode: &str,
    tmp: &Path,
    v1_dir: &Path,
    v2_dir: &Path,
    a: &str,
    b: &str,
) {
    let what = format!("{mode} client of {url}");
    let c = client(&tmp.join(format!("client-{mode}")), mode, url);
    let first = pull_json(&c, &["origin", &format!("main@{a}")]);
    assert_eq!(
        first["refs"][0]["ref"].as_str(),
        Some("origin:main"),
        "{what}: {first}"
    );
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(a), "{what}");
    assert_fsck(&c, &what);
    assert_checkout_eq(&c, "origin:main", v1_dir, tmp, &format!("{what}: v1"));

    let second = pull_json(&c, &["--depth=1", "origin", "main"]);
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(b), "{what}");
    // v1's objects are already here: only what v2 changed is fetched.
    let n1 = first["objects_fetched"].as_u64().unwrap();
    let n2 = second["objects_fetched"].as_u64().unwrap();
    assert!(
        n2 < n1 + 6 && n2 >= 4,
        "{what}: v2 fetched {n2} objects after v1's {n1}"
    );
    assert_fsck(&c, &what);
    assert_ostree_fsck(&c, &what);
    assert_checkout_eq(&c, "origin:main", v2_dir, tmp, &format!("{what}: v2"));
    assert_checkout_eq(&c, a, v1_dir, tmp, &format!("{what}: v1 after v2"));
    // ostree reads what treeline wrote.
    let parent = run_ok(ostree(&c).args(["rev-parse", &format!("{b}^")]));
    assert_eq!(parent.trim(), a, "{what}");
}

#[test]
fn pull_ostree_repo_served_by_nginx_into_bare_user_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, v1_dir, v2_dir, a, b) = make_ostree_source(tmp.path());
    let nginx = Nginx::start(&repo, &tmp.path().join("nginx"));
    for mode in ["bare-user", "archive"] {
        pull_v1_then_v2(&nginx.url, mode, tmp.path(), &v1_dir, &v2_dir, &a, &b);
    }
    assert!(
        nginx.requests() > 10,
        "nginx logged only {} requests",
        nginx.requests()
    );
}

#[test]
fn pull_ostree_repo_served_by_treeline_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, v1_dir, v2_dir, a, b) = make_ostree_source(tmp.path());
    let server = TlServe::start(&repo);
    pull_v1_then_v2(
        &server.url,
        "bare-user",
        tmp.path(),
        &v1_dir,
        &v2_dir,
        &a,
        &b,
    );
}

// ---------------------------------------------------------------------------------------
// 2. A misbehaving server

fn is_object(path: &str) -> bool {
    path.starts_with("objects/")
}

/// After a failed pull of v2 over a client holding v1: the ref did not move, fsck passes,
/// and `bad` (if any) is stored nowhere in the client, not even in a staging directory.
/// Then the fault is lifted and a pull must complete.
fn assert_rejected_and_recoverable(
    src: &Source,
    server: &TestServer,
    c: &Path,
    out: &Output,
    bad: Option<&str>,
    what: &str,
) {
    let err = stderr_of(out);
    assert_eq!(
        rev_parse(c, "origin:main").as_deref(),
        Some(src.v1.as_str()),
        "{what}: the ref moved; stderr: {err}"
    );
    assert_fsck(c, what);
    if let Some(bad) = bad {
        let found = files_of_object(c, bad);
        assert!(
            found.is_empty(),
            "{what}: the rejected object {bad} was kept: {found:?}"
        );
    }
    // The client is not left in a state that prevents pulling (stale staging dirs,
    // locks, marker files).
    server.clear_faults();
    run_ok(tl(c).args(["pull", "origin", "main"]));
    assert_eq!(
        rev_parse(c, "origin:main").as_deref(),
        Some(src.v2.as_str()),
        "{what}"
    );
    assert_fsck(c, &format!("{what}, after recovery"));
    assert_checkout_eq(
        c,
        "origin:main",
        &src.v2_dir,
        c.parent().unwrap(),
        &format!("{what}, after recovery"),
    );
}

/// A client holding v1 (pulled without faults).
fn client_at_v1(tmp: &Path, name: &str, mode: &str, src: &Source, server: &TestServer) -> PathBuf {
    let c = client(&tmp.join(name), mode, &server.url);
    let pinned = format!("main@{}", src.v1);
    run_ok(tl(&c).args(["pull", "origin", &pinned]));
    assert_checkout_eq(&c, "origin:main", &src.v1_dir, tmp, "v1");
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v1.as_str())
    );
    c
}

#[test]
fn server_errors_are_retried_and_reported_with_url_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    server.set_faults(|path, n| {
        if is_object(path) && n <= 2 {
            Fault::Status(500)
        } else {
            Fault::None
        }
    });

    // Default retries (5): every object fails twice, then succeeds.
    let c = client(&tmp.path().join("retrying"), "bare-user", &server.url);
    let started = Instant::now();
    run_ok(tl(&c).args(["pull", "origin", "main"]));
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v2.as_str())
    );
    assert_fsck(&c, "after retried 500s");
    assert_checkout_eq(
        &c,
        "origin:main",
        &src.v2_dir,
        tmp.path(),
        "after retried 500s",
    );
    // Each object was asked for exactly three times (two 500s, one 200): no more retries
    // than needed, and nothing fetched twice once it arrived.
    let mut per_path: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for l in server.log() {
        per_path.entry(l.path).or_default().push(l.status);
    }
    for (path, statuses) in &per_path {
        if path.ends_with(".commitmeta") {
            // Always asked for, as ostree does; this repository has none.
            assert_eq!(statuses, &[500, 500, 404], "{path}");
        } else if is_object(path) {
            assert_eq!(statuses, &[500, 500, 200], "{path}");
        }
    }

    // No retries: the first 500 is fatal and named.
    server.reset_counts();
    let c0 = client(&tmp.path().join("no-retries"), "bare-user", &server.url);
    let out = run_fail(tl(&c0).args(["pull", "--network-retries", "0", "origin", "main"]));
    let err = stderr_of(&out);
    let url_base = server.url.trim_end_matches('/');
    assert!(
        err.contains(&format!("{url_base}/objects/")) && err.contains("500"),
        "the error should name the object URL and status 500: {err}"
    );
    assert_eq!(remote_refs(&c0).trim(), "", "{err}");
    assert_eq!(rev_parse(&c0, "origin:main"), None);
    assert_fsck(&c0, "after a fatal 500");
}

#[test]
fn content_object_with_a_flipped_byte_is_rejected_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let target = src.big_filez();
    let sum = checksum_of(&target);
    let mut bytes = fs::read(src.repo.join(&target)).unwrap();
    // .filez: u32 BE header length, 4 bytes padding, header, then raw deflate.
    let header_len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let payload = 8 + header_len;
    assert!(bytes.len() > payload + 1000, "payload too small to corrupt");
    let at = payload + (bytes.len() - payload) / 2;
    bytes[at] ^= 0x55;
    for mode in ["bare-user", "archive"] {
        let what = format!("flipped byte in {target}, {mode} client");
        server.clear_faults();
        let c = client_at_v1(tmp.path(), &format!("client-{mode}"), mode, &src, &server);
        let t = target.clone();
        let b = bytes.clone();
        server.set_faults(move |path, _| {
            if path == t {
                Fault::Body(b.clone())
            } else {
                Fault::None
            }
        });
        let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
        let err = stderr_of(&out);
        assert!(
            names_object(&err, &sum),
            "{what}: error does not name {sum}: {err}"
        );
        assert_rejected_and_recoverable(&src, &server, &c, &out, Some(&sum), &what);
    }
}

#[test]
fn truncated_content_object_is_rejected_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let target = src.big_filez();
    let sum = checksum_of(&target);
    for (i, (kind, fault)) in [
        ("with Content-Length", Fault::TruncateWithLength),
        ("close-delimited", Fault::TruncateNoLength),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("truncated {target} ({kind})");
        server.clear_faults();
        let c = client_at_v1(
            tmp.path(),
            &format!("client-{i}"),
            "bare-user",
            &src,
            &server,
        );
        let t = target.clone();
        server.set_faults(move |path, _| {
            if path == t {
                fault.clone()
            } else {
                Fault::None
            }
        });
        let before = server.log_len();
        let out = run_fail(tl(&c).args(["pull", "--network-retries", "1", "origin", "main"]));
        let err = stderr_of(&out);
        assert!(
            names_object(&err, &sum),
            "{what}: error does not name {sum}: {err}"
        );
        let tries = server.log()[before..]
            .iter()
            .filter(|l| l.path == target)
            .count();
        assert!(
            (1..=2).contains(&tries),
            "{what}: fetched {tries} times with --network-retries 1"
        );
        assert_rejected_and_recoverable(&src, &server, &c, &out, Some(&sum), &what);
    }
}

#[test]
fn stalled_request_times_out_naming_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let c = client_at_v1(tmp.path(), "client", "archive", &src, &server);
    let target = src.big_filez();
    let t = target.clone();
    server.set_faults(
        move |path, _| {
            if path == t { Fault::Stall } else { Fault::None }
        },
    );
    let started = Instant::now();
    let out = run_fail(tl(&c).args([
        "pull",
        "--timeout",
        "2",
        "--network-retries",
        "1",
        "origin",
        "main",
    ]));
    let elapsed = started.elapsed();
    let err = stderr_of(&out);
    assert!(
        elapsed < Duration::from_secs(15),
        "a 2 s timeout with one retry took {elapsed:?}"
    );
    let url = format!("{}{target}", server.url);
    assert!(err.contains(&url), "the error should name {url}: {err}");
    let tries = server.log().iter().filter(|l| l.path == target).count();
    assert_eq!(tries, 2, "one try and one retry");
    assert_rejected_and_recoverable(
        &src,
        &server,
        &c,
        &out,
        Some(&checksum_of(&target)),
        "stall",
    );
}

#[test]
fn dirtree_with_wrong_content_is_rejected_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let trees = src.new_dirtrees();
    assert!(
        trees.len() >= 2,
        "v2 should add several dirtrees: {trees:?}"
    );
    let other = fs::read(src.repo.join(&trees[1])).unwrap();
    for (i, target) in [&trees[0], &trees[1]].into_iter().enumerate() {
        let what = format!("dirtree {target} served with another dirtree's bytes");
        let sum = checksum_of(target);
        let wrong = if i == 0 {
            other.clone()
        } else {
            fs::read(src.repo.join(&trees[0])).unwrap()
        };
        server.clear_faults();
        let mode = if i == 0 { "bare-user" } else { "archive" };
        let c = client_at_v1(tmp.path(), &format!("client-{i}"), mode, &src, &server);
        let t = target.clone();
        server.set_faults(move |path, _| {
            if path == t {
                Fault::Body(wrong.clone())
            } else {
                Fault::None
            }
        });
        let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
        let err = stderr_of(&out);
        assert!(
            names_object(&err, &sum),
            "{what}: error does not name {sum}: {err}"
        );
        assert_rejected_and_recoverable(&src, &server, &c, &out, Some(&sum), &what);
    }
}

#[test]
fn missing_object_is_fatal_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let c = client_at_v1(tmp.path(), "client", "bare-user", &src, &server);
    let target = src.big_filez();
    let t = target.clone();
    server.set_faults(move |path, _| {
        if path == t {
            Fault::Status(404)
        } else {
            Fault::None
        }
    });
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{}{target}", server.url)) && err.contains("404"),
        "{err}"
    );
    let tries = server.log().iter().filter(|l| l.path == target).count();
    assert_eq!(tries, 1, "a 404 is not transient: no retry");
    assert_rejected_and_recoverable(&src, &server, &c, &out, None, "404 on an object");
}

// ---------------------------------------------------------------------------------------
// 3. Resuming interrupted pulls

fn make_many_files(root: &Path, n: usize) {
    for i in 0..n {
        write_file(
            root,
            &format!("d{}/file-{i:04}", i % 7),
            format!("file number {i}\n").as_bytes(),
            0o644,
        );
    }
}

fn filez_requests(log: &[Logged]) -> usize {
    log.iter().filter(|l| l.path.ends_with(".filez")).count()
}

#[test]
fn pull_aborted_before_commit_resumes_without_refetching() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_many_files(&tree, 60);
    let repo = tmp.path().join("src");
    init(&repo, "archive");
    let c1 = commit(&repo, "main", &tree, "many");
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    for mode in ["bare-user", "archive"] {
        let what = format!("{mode}: pull aborted at pull-before-commit");
        let c = client(
            &tmp.path().join(format!("client-{mode}")),
            mode,
            &server.url,
        );
        let mark = server.log_len();
        let out = tl(&c)
            .args(["pull", "origin", "main"])
            .env("TREELINE_FAULT", "pull-before-commit")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: the faulted pull succeeded");
        assert!(
            stderr_of(&out).contains("pull-before-commit"),
            "{what}: the fault did not fire: {}",
            stderr_of(&out)
        );
        let first = server.log()[mark..].to_vec();
        assert_eq!(filez_requests(&first), 60, "{what}: {first:?}");
        assert_eq!(remote_refs(&c).trim(), "", "{what}");
        assert_fsck(&c, &what);

        let mark = server.log_len();
        let report = pull_json(&c, &["origin", "main"]);
        let second = server.log()[mark..].to_vec();
        assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(c1.as_str()));
        assert_eq!(
            filez_requests(&second),
            0,
            "{what}: objects fetched before the abort were fetched again: {second:?}"
        );
        assert_eq!(
            report["objects_fetched"].as_u64(),
            Some(0),
            "{what}: {report}"
        );
        let requests = report["requests"].as_u64().unwrap() as usize;
        assert!(
            requests * 10 <= first.len(),
            "{what}: resumed pull sent {requests} requests, the first {}",
            first.len()
        );
        assert_fsck(&c, &what);
        assert_ostree_fsck(&c, &what);
        assert_checkout_eq(&c, "origin:main", &tree, tmp.path(), &what);
        // Nothing left behind in tmp/: no staging dir, and the one committed transactions
        // keep for reuse holds no file.
        let leftovers: Vec<_> = fs::read_dir(c.join("tmp"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers
                .iter()
                .all(|n| !n.to_string_lossy().starts_with("staging-")),
            "{what}: staging dirs left: {leftovers:?}"
        );
        let idle: Vec<_> = leftovers
            .iter()
            .filter(|n| n.to_string_lossy().starts_with("idle-"))
            .collect();
        assert!(idle.len() <= 1, "{what}: idle staging dirs: {idle:?}");
        for dir in idle {
            let files = files_below(&c.join("tmp").join(dir));
            assert!(files.is_empty(), "{what}: files left in tmp/: {files:?}");
        }
    }
}

#[test]
fn pull_killed_mid_way_resumes_fetching_only_what_is_missing() {
    const FILES: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_many_files(&tree, FILES);
    let repo = tmp.path().join("src");
    init(&repo, "archive");
    let c1 = commit(&repo, "main", &tree, "many");
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    // A full pull, for comparison.
    let full_client = client(&tmp.path().join("full"), "bare-user", &server.url);
    let full = pull_json(&full_client, &["origin", "main"]);
    let full_requests = full["requests"].as_u64().unwrap();
    assert!(full_requests as usize > FILES, "{full}");

    let c = client(&tmp.path().join("killed"), "bare-user", &server.url);
    server.delay_ms.store(25, Ordering::SeqCst);
    let mark = server.log_len();
    let mut child = tl(&c)
        .args(["pull", "--max-parallel", "2", "origin", "main"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = filez_requests(&server.log()[mark..]);
        if done >= FILES / 2 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the pull ended ({status}) before it could be killed ({done} files)");
        }
        assert!(Instant::now() < deadline, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pull finished before it was killed"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let fetched_before_kill = filez_requests(&server.log()[mark..]);
    server.delay_ms.store(0, Ordering::SeqCst);

    assert_eq!(remote_refs(&c).trim(), "");
    assert_fsck(&c, "after kill -9");

    let mark = server.log_len();
    let report = pull_json(&c, &["origin", "main"]);
    let second = server.log()[mark..].to_vec();
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(c1.as_str()));
    assert_fsck(&c, "after the resumed pull");
    assert_ostree_fsck(&c, "after the resumed pull");
    assert_checkout_eq(
        &c,
        "origin:main",
        &tree,
        tmp.path(),
        "after kill -9 and resume",
    );
    let refetched = filez_requests(&second);
    // Objects stored before the kill are not fetched again; only the few in flight at
    // the moment of the kill may be.
    assert!(
        refetched + fetched_before_kill <= FILES + 20,
        "resumed pull fetched {refetched} files after {fetched_before_kill} before the kill"
    );
    let requests = report["requests"].as_u64().unwrap();
    assert!(
        requests + (FILES as u64) / 3 < full_requests,
        "resumed pull sent {requests} requests, a full pull {full_requests}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Signatures

fn generate_key(dir: &Path, name: &str) -> (String, String) {
    let file = dir.join(name);
    let public = run_ok(treeline().args(["sign", "--generate-key"]).arg(&file))
        .trim()
        .to_owned();
    let secret = fs::read_to_string(&file).unwrap().trim().to_owned();
    (secret, public)
}

fn signed_client(tmp: &Path, name: &str, url: &str, args: &[&str]) -> PathBuf {
    let c = tmp.join(name);
    init(&c, "bare-user");
    add_remote(&c, "origin", url, args);
    c
}

fn assert_refused(c: &Path, out: &Output, needle: &str, what: &str) {
    let err = stderr_of(out);
    assert!(
        err.to_lowercase().contains(needle),
        "{what}: the error should mention {needle:?}: {err}"
    );
    assert_eq!(remote_refs(c).trim(), "", "{what}: {err}");
    assert_eq!(rev_parse(c, "origin:main"), None, "{what}");
    assert_fsck(c, what);
}

#[test]
fn commit_signatures_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (sk1, pk1) = generate_key(t, "k1");
    let (_sk2, pk2) = generate_key(t, "k2");
    assert_ne!(pk1, pk2);
    let tree = t.join("tree");
    make_v1(&tree);
    let repo = t.join("src");
    init(&repo, "archive");
    let signed = commit(&repo, "main", &tree, "signed");
    run_ok(tl(&repo).args(["sign", &signed, &sk1]));
    run_ok(tl(&repo).args(["sign", "--verify", &signed, &pk1]));
    write_file(&tree, "unsigned.txt", b"no signature\n", 0o644);
    let unsigned = commit(&repo, "unsigned", &tree, "unsigned");
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);
    let inline = |pk: &str| format!("--sign-verify=ed25519=inline:{pk}");

    // The right key, inline and from a file.
    let pk1_file = t.join("pk1.pub");
    fs::write(&pk1_file, format!("{pk1}\n")).unwrap();
    for (name, arg) in [
        ("good-inline", inline(&pk1)),
        (
            "good-file",
            format!("--sign-verify=ed25519=file:{}", pk1_file.display()),
        ),
    ] {
        let c = signed_client(t, name, &server.url, &[&arg]);
        run_ok(tl(&c).args(["pull", "origin", "main"]));
        assert_eq!(
            rev_parse(&c, "origin:main").as_deref(),
            Some(signed.as_str()),
            "{name}"
        );
        // The detached signature came along.
        run_ok(tl(&c).args(["sign", "--verify", &signed, &pk1]));
        assert_fsck(&c, name);
    }

    // The wrong key: refused before anything is stored.
    let c = signed_client(t, "wrong-key", &server.url, &[&inline(&pk2)]);
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    assert_refused(&c, &out, "signature", "commit signed by another key");
    assert!(
        files_of_object(&c.join("objects"), &signed).is_empty(),
        "the commit with an untrusted signature was stored"
    );

    // An unsigned commit with signatures required.
    let c = signed_client(t, "unsigned", &server.url, &[&inline(&pk1)]);
    let out = run_fail(tl(&c).args(["pull", "origin", "unsigned"]));
    let err = stderr_of(&out);
    assert!(err.to_lowercase().contains("signature"), "{err}");
    assert_eq!(remote_refs(&c).trim(), "", "{err}");
    assert!(files_of_object(&c.join("objects"), &unsigned).is_empty());
    assert_fsck(&c, "unsigned commit");

    // A commit already present locally (pulled from an unverified remote) is still
    // checked when pulled from a remote that requires signatures.
    let c = signed_client(t, "already-local", &server.url, &["--no-gpg-verify"]);
    add_remote(&c, "strict", &server.url, &[&inline(&pk2)]);
    run_ok(tl(&c).args(["pull", "origin", "main"]));
    let out = run_fail(tl(&c).args(["pull", "strict", "main"]));
    let err = stderr_of(&out);
    assert!(err.to_lowercase().contains("signature"), "{err}");
    assert_eq!(rev_parse(&c, "strict:main"), None, "{err}");
}

#[test]
fn summary_signatures_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (sk1, pk1) = generate_key(t, "k1");
    let (_sk2, pk2) = generate_key(t, "k2");
    let tree = t.join("tree");
    make_v1(&tree);
    let repo = t.join("src");
    init(&repo, "archive");
    let c1 = commit(&repo, "main", &tree, "one");
    run_ok(tl(&repo).args(["summary", "-u", "--sign", &sk1]));
    assert!(repo.join("summary.sig").is_file());
    let server = TestServer::start(&repo);
    let summary_only = |pk: &str| {
        [
            "--no-gpg-verify".to_owned(),
            "--set".to_owned(),
            "sign-verify-summary=true".to_owned(),
            "--set".to_owned(),
            format!("verification-ed25519-key={pk}"),
        ]
    };

    let args = summary_only(&pk1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = signed_client(t, "good", &server.url, &args);
    run_ok(tl(&c).args(["pull", "origin", "main"]));
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(c1.as_str()));

    let args = summary_only(&pk2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = signed_client(t, "wrong", &server.url, &args);
    let mark = server.log_len();
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    assert_refused(&c, &out, "signature", "summary signed by another key");
    assert!(
        !server.log()[mark..]
            .iter()
            .any(|l| is_object(&l.path) && l.status == 200 && l.path.ends_with(".filez")),
        "objects were fetched although the summary was not trusted"
    );

    // A summary that does not match its signature (changed after signing).
    let args = summary_only(&pk1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = signed_client(t, "tampered", &server.url, &args);
    let mut summary = fs::read(repo.join("summary")).unwrap();
    let last = summary.len() - 1;
    summary[last] ^= 1;
    server.set_faults(move |path, _| {
        if path == "summary" {
            Fault::Body(summary.clone())
        } else {
            Fault::None
        }
    });
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    assert_refused(&c, &out, "signature", "tampered summary");

    // No signature at all.
    server.set_faults(|path, _| {
        if path == "summary.sig" {
            Fault::Status(404)
        } else {
            Fault::None
        }
    });
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    assert_refused(&c, &out, "sign", "unsigned summary");
}

// ---------------------------------------------------------------------------------------
// 5. Ref bindings

#[test]
fn commit_bound_to_another_ref_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    make_v1(&tree);
    let repo = t.join("src");
    init(&repo, "archive");
    let c1 = commit(&repo, "a", &tree, "bound to a");
    fs::copy(repo.join("refs/heads/a"), repo.join("refs/heads/b")).unwrap();
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    let c = client(&t.join("client"), "bare-user", &server.url);
    let out = run_fail(tl(&c).args(["pull", "origin", "b"]));
    let err = stderr_of(&out);
    assert!(err.contains("ostree.ref-binding"), "{err}");
    assert_eq!(remote_refs(&c).trim(), "", "{err}");
    assert_fsck(&c, "refused binding");

    // The right ref works, and the opt-out works.
    run_ok(tl(&c).args(["pull", "origin", "a"]));
    assert_eq!(rev_parse(&c, "origin:a").as_deref(), Some(c1.as_str()));
    let c2 = client(&t.join("client-optout"), "bare-user", &server.url);
    run_ok(tl(&c2).args(["pull", "--disable-verify-bindings", "origin", "b"]));
    assert_eq!(rev_parse(&c2, "origin:b").as_deref(), Some(c1.as_str()));
}

/// ostree 2022.7 checks the binding of a commit that is already stored locally too
/// (`Commit has no requested ref 'b' in ref binding metadata ('a')`).
#[test]

fn commit_bound_to_another_ref_is_refused_even_when_already_local() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    make_v1(&tree);
    let repo = t.join("src");
    init(&repo, "archive");
    commit(&repo, "a", &tree, "bound to a");
    fs::copy(repo.join("refs/heads/a"), repo.join("refs/heads/b")).unwrap();
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    let c = client(&t.join("client"), "bare-user", &server.url);
    run_ok(tl(&c).args(["pull", "origin", "a"]));
    let out = run_fail(tl(&c).args(["pull", "origin", "b"]));
    let err = stderr_of(&out);
    assert!(err.contains("ostree.ref-binding"), "{err}");
    assert_eq!(rev_parse(&c, "origin:b"), None, "{err}");

    // The real ostree agrees (same server).
    let o = t.join("ostree-client");
    run_ok(ostree(&o).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&o).args(["remote", "add", "--no-gpg-verify", "origin", &server.url]));
    run_ok(ostree(&o).args(["pull", "origin", "a"]));
    run_fail(ostree(&o).args(["pull", "origin", "b"]));
}

// ---------------------------------------------------------------------------------------
// 6. More of the protocol: contenturl, detached metadata, missing parents

/// `contenturl` serves every object (and deltas); `url` only the summary, refs and
/// `.commitmeta` (ostree-format.md §8). The real ostree pulls from such a pair.
#[test]

fn objects_come_from_contenturl() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let meta = TestServer::start(&src.repo);
    let content = TestServer::start(&src.repo);
    meta.set_faults(|path, _| {
        if is_object(path) && !path.ends_with(".commitmeta") {
            Fault::Status(404)
        } else {
            Fault::None
        }
    });
    content.set_faults(|path, _| {
        if is_object(path) {
            Fault::None
        } else {
            Fault::Status(404)
        }
    });
    let contenturl = format!("contenturl={}", content.url);

    // The oracle: ostree accepts this split.
    let o = tmp.path().join("ostree-client");
    run_ok(ostree(&o).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&o).args([
        "remote",
        "add",
        "--no-gpg-verify",
        &format!("--set={contenturl}"),
        "origin",
        &meta.url,
    ]));
    run_ok(ostree(&o).args(["pull", "--disable-static-deltas", "origin", "main"]));

    let c = tmp.path().join("client");
    init(&c, "bare-user");
    add_remote(
        &c,
        "origin",
        &meta.url,
        &["--no-gpg-verify", "--set", &contenturl],
    );
    let out = tl(&c).args(["pull", "origin", "main"]).output().unwrap();
    assert!(
        out.status.success(),
        "pull with a contenturl failed: {}",
        stderr_of(&out)
    );
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v2.as_str())
    );
    assert_fsck(&c, "contenturl");
    assert_checkout_eq(&c, "origin:main", &src.v2_dir, tmp.path(), "contenturl");
}

/// ostree always asks for `.commitmeta` and keeps it, verified or not, so the client
/// holds the signatures (to verify later, or to serve on as a mirror).
#[test]

fn detached_signatures_are_pulled_without_sign_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (sk1, pk1) = generate_key(t, "k1");
    let tree = t.join("tree");
    make_v1(&tree);
    let repo = t.join("src");
    init(&repo, "archive");
    let signed = commit(&repo, "main", &tree, "signed");
    run_ok(tl(&repo).args(["sign", &signed, &sk1]));
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    // The oracle: ostree fetches and stores the detached metadata.
    let o = t.join("ostree-client");
    run_ok(ostree(&o).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&o).args(["remote", "add", "--no-gpg-verify", "origin", &server.url]));
    run_ok(ostree(&o).args(["pull", "origin", "main"]));
    let (xx, rest) = signed.split_at(2);
    assert!(
        o.join(format!("objects/{xx}/{rest}.commitmeta")).is_file(),
        "ostree did not keep the detached metadata"
    );

    let c = client(&t.join("client"), "bare-user", &server.url);
    run_ok(tl(&c).args(["pull", "origin", "main"]));
    assert!(
        c.join(format!("objects/{xx}/{rest}.commitmeta")).is_file(),
        "treeline did not fetch the detached metadata (signatures)"
    );
    run_ok(tl(&c).args(["sign", "--verify", &signed, &pk1]));
}

/// A parent the server does not have ends the history (`--depth`), as in ostree.
#[test]
fn missing_parent_is_tolerated_with_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let (xx, rest) = src.v1.split_at(2);
    let v1_commit = format!("objects/{xx}/{rest}.commit");
    server.set_faults(move |path, _| {
        if path == v1_commit {
            Fault::Status(404)
        } else {
            Fault::None
        }
    });
    let c = client(&tmp.path().join("client"), "archive", &server.url);
    run_ok(tl(&c).args(["pull", "--depth=-1", "origin", "main"]));
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v2.as_str())
    );
    assert_fsck(&c, "missing parent");
    assert_ostree_fsck(&c, "missing parent");
}

/// A commit or dirmeta served with another object's (valid) bytes is rejected too.
#[test]
fn commit_and_dirmeta_with_wrong_content_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    let (xx, rest) = src.v2.split_at(2);
    let v2_commit = format!("objects/{xx}/{rest}.commit");
    let (xx, rest) = src.v1.split_at(2);
    let v1_bytes = fs::read(src.repo.join(format!("objects/{xx}/{rest}.commit"))).unwrap();
    let dirmetas: Vec<String> = object_files(&src.repo)
        .into_iter()
        .filter(|p| p.ends_with(".dirmeta"))
        .collect();
    assert!(dirmetas.len() >= 2, "{dirmetas:?}");
    let other_meta = fs::read(src.repo.join(&dirmetas[1])).unwrap();
    for (i, (target, wrong)) in [(v2_commit, v1_bytes), (dirmetas[0].clone(), other_meta)]
        .into_iter()
        .enumerate()
    {
        let what = format!("{target} served with another object's bytes");
        let sum = checksum_of(&target);
        let c = client(
            &tmp.path().join(format!("client-{i}")),
            "bare-user",
            &server.url,
        );
        let t = target.clone();
        server.set_faults(move |path, _| {
            if path == t {
                Fault::Body(wrong.clone())
            } else {
                Fault::None
            }
        });
        let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
        let err = stderr_of(&out);
        assert!(names_object(&err, &sum), "{what}: {err}");
        assert_eq!(remote_refs(&c).trim(), "", "{what}");
        assert_fsck(&c, &what);
        assert!(files_of_object(&c, &sum).is_empty(), "{what}: kept");
    }
}

/// Only archive repositories can be pulled over HTTP: the client reads the server's
/// `config` and refuses another mode by name (ostree: "Can't pull from archives with
/// mode ..."), instead of failing on the first 404 of a `.filez`.
#[test]

fn pulling_from_a_non_archive_repo_is_refused_naming_the_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_v1(&tree);
    let repo = tmp.path().join("src");
    init(&repo, "bare-user");
    commit(&repo, "main", &tree, "bare-user source");
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);

    let o = tmp.path().join("ostree-client");
    run_ok(ostree(&o).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&o).args(["remote", "add", "--no-gpg-verify", "origin", &server.url]));
    let out = run_fail(ostree(&o).args(["pull", "origin", "main"]));
    assert!(stderr_of(&out).contains("mode"), "{}", stderr_of(&out));

    let c = client(&tmp.path().join("client"), "bare-user", &server.url);
    let out = run_fail(tl(&c).args(["pull", "origin", "main"]));
    let err = stderr_of(&out);
    assert_eq!(remote_refs(&c).trim(), "", "{err}");
    assert_fsck(&c, "non-archive source");
    assert!(
        err.contains("bare-user") && err.contains("archive"),
        "the error should say the remote is bare-user, not archive: {err}"
    );
}

/// Without a summary, refs are read from `refs/heads/REF`.
#[test]
fn pull_without_a_summary_reads_refs_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    let server = TestServer::start(&src.repo);
    server.set_faults(|path, _| {
        if path.starts_with("summary") {
            Fault::Status(404)
        } else {
            Fault::None
        }
    });
    let c = client(&tmp.path().join("client"), "bare-user", &server.url);
    run_ok(tl(&c).args(["pull", "origin", "main"]));
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v2.as_str())
    );
    assert!(server.log().iter().any(|l| l.path == "refs/heads/main"));
    assert_fsck(&c, "no summary");
    // A ref the server does not have is an error naming it.
    let out = run_fail(tl(&c).args(["pull", "origin", "nope"]));
    assert!(stderr_of(&out).contains("nope"), "{}", stderr_of(&out));
}

// ---------------------------------------------------------------------------------------
// Static deltas on the wire

fn deltas_of(report: &serde_json::Value) -> Vec<String> {
    report["deltas"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn treeline_pull_uses_an_ostree_made_delta_served_by_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, v1_dir, v2_dir, a, b) = make_ostree_source(tmp.path());
    let nginx = Nginx::start(&repo, &tmp.path().join("nginx"));
    let c = client(&tmp.path().join("with-delta"), "bare-user", &nginx.url);
    pull_json(&c, &["origin", &format!("main@{a}")]);
    let r = pull_json(&c, &["origin", "main"]);
    assert_eq!(deltas_of(&r), vec![format!("{a}-{b}")], "{r}");
    assert_fsck(&c, "after a delta pull");
    assert_ostree_fsck(&c, "after a delta pull");
    assert_checkout_eq(&c, "origin:main", &v2_dir, tmp.path(), "delta pull");
    // The same update without the delta gives the same tree.
    let plain = client(&tmp.path().join("without-delta"), "bare-user", &nginx.url);
    pull_json(&plain, &["origin", &format!("main@{a}")]);
    let r = pull_json(&plain, &["--disable-static-deltas", "origin", "main"]);
    assert!(deltas_of(&r).is_empty(), "{r}");
    assert_checkout_eq(&plain, "origin:main", &v2_dir, tmp.path(), "loose pull");
    let _ = v1_dir;
}

#[test]
fn ostree_and_treeline_pull_use_treeline_made_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    run_ok(tl(&src.repo).args([
        "static-delta",
        "generate",
        &format!("--from={}", src.v1),
        &format!("--to={}", src.v2),
    ]));
    run_ok(tl(&src.repo).args([
        "static-delta",
        "generate",
        "--empty",
        &format!("--to={}", src.v1),
    ]));
    run_ok(tl(&src.repo).args(["summary", "-u"]));
    let server = TlServe::start(&src.repo);

    // The real ostree: from scratch to v1, then v1 -> v2, both through our deltas.
    let o = tmp.path().join("ostree-client");
    run_ok(ostree(&o).args(["init", "--mode=bare-user"]));
    run_ok(ostree(&o).args(["remote", "add", "--no-gpg-verify", "origin", &server.url]));
    let first = run_ok(ostree(&o).args(["pull", "origin", &format!("main@{}", src.v1)]));
    let second = run_ok(ostree(&o).args(["pull", "origin", "main"]));
    for (what, out) in [("v1", &first), ("v2", &second)] {
        assert!(
            out.contains("delta part"),
            "ostree did not use a delta for {what}: {out}"
        );
    }
    assert_ostree_fsck(&o, "ostree client after treeline deltas");
    let co = tmp.path().join("ostree-co");
    run_ok(ostree(&o).args(["checkout", "-U", "origin:main"]).arg(&co));
    assert_same_tree(
        &snapshot(&src.v2_dir, false, false),
        &snapshot(&co, false, false),
        "ostree checkout after deltas",
    );

    // treeline: a fresh client takes the from-scratch delta, then the v1 -> v2 one.
    let c = client(&tmp.path().join("tl-client"), "bare-user", &server.url);
    let r1 = pull_json(&c, &["origin", &format!("main@{}", src.v1)]);
    assert_eq!(deltas_of(&r1), vec![src.v1.clone()], "{r1}");
    let r2 = pull_json(&c, &["origin", "main"]);
    assert_eq!(
        deltas_of(&r2),
        vec![format!("{}-{}", src.v1, src.v2)],
        "{r2}"
    );
    assert_fsck(&c, "treeline client after deltas");
    assert_ostree_fsck(&c, "treeline client after deltas");
    assert_checkout_eq(
        &c,
        "origin:main",
        &src.v2_dir,
        tmp.path(),
        "treeline delta pull",
    );
}

/// Total length of the files below `dir` (recursively).
fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                bytes_under(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

#[test]
fn dry_run_says_what_a_pull_would_download_and_fetches_no_content() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_source(tmp.path());
    run_ok(tl(&src.repo).args([
        "static-delta",
        "generate",
        &format!("--from={}", src.v1),
        &format!("--to={}", src.v2),
    ]));
    run_ok(tl(&src.repo).args(["summary", "-u"]));
    let server = TlServe::start(&src.repo);
    let file_objects = |c: &Path| {
        object_files(c)
            .into_iter()
            .filter(|p| p.ends_with(".file"))
            .count()
    };

    // With the delta: the sizes are the delta's files on the server (superblock and
    // parts) plus its fallback objects; the real pull then transfers exactly that, the
    // summary and the config.
    let c = client(&tmp.path().join("delta-client"), "bare-user", &server.url);
    pull_json(&c, &["origin", &format!("main@{}", src.v1)]);
    let before = object_files(&c);
    let plan = pull_json(&c, &["--dry-run", "origin", "main"]);
    let t = &plan["targets"][0];
    assert_eq!(t["commit"], src.v2.as_str(), "{plan}");
    assert_eq!(t["complete"], false, "{plan}");
    let d = &t["delta"];
    assert_eq!(d["name"], format!("{}-{}", src.v1, src.v2), "{plan}");
    let download = t["download_bytes"].as_u64().unwrap();
    assert_eq!(
        download,
        bytes_under(&src.repo.join("deltas")) + d["fallback_bytes"].as_u64().unwrap(),
        "{plan}"
    );
    assert!(d["unpacked_bytes"].as_u64().unwrap() > 0, "{plan}");
    assert_eq!(
        object_files(&c),
        before,
        "a dry run with a delta stores nothing"
    );
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v1.as_str())
    );
    let human = run_ok(tl(&c).args(["pull", "--dry-run", "origin", "main"]));
    assert!(
        human.contains("would download") && human.contains("static delta"),
        "{human}"
    );
    let r = pull_json(&c, &["origin", "main"]);
    assert_eq!(deltas_of(&r), vec![format!("{}-{}", src.v1, src.v2)], "{r}");
    let served = |f: &str| fs::metadata(src.repo.join(f)).unwrap().len();
    assert_eq!(
        r["bytes"].as_u64().unwrap(),
        download + served("summary") + served("config"),
        "plan {plan}, pull {r}"
    );
    assert_fsck(&c, "pull after a dry run");

    // Without a delta: the dirtrees and dirmetas are fetched and kept, no content object;
    // the pull then fetches exactly the objects counted.
    let c = client(&tmp.path().join("loose-client"), "bare-user", &server.url);
    pull_json(&c, &["origin", &format!("main@{}", src.v1)]);
    let files_before = file_objects(&c);
    let plan = pull_json(
        &c,
        &["--dry-run", "--disable-static-deltas", "origin", "main"],
    );
    let t = &plan["targets"][0];
    assert!(t["delta"].is_null(), "{plan}");
    assert!(t["download_bytes"].is_null(), "{plan}");
    let n = t["objects"].as_u64().unwrap();
    assert!(n > 0, "{plan}");
    assert_eq!(file_objects(&c), files_before, "a dry run fetched content");
    let have = object_files(&c);
    for dt in src.new_dirtrees() {
        assert!(have.contains(&dt), "the dry run did not keep {dt}");
    }
    assert_eq!(
        rev_parse(&c, "origin:main").as_deref(),
        Some(src.v1.as_str())
    );
    let r = pull_json(&c, &["--disable-static-deltas", "origin", "main"]);
    assert_eq!(
        r["objects_fetched"].as_u64(),
        Some(n),
        "plan {plan}, pull {r}"
    );
    assert_fsck(&c, "loose pull after a dry run");
    assert_checkout_eq(
        &c,
        "origin:main",
        &src.v2_dir,
        tmp.path(),
        "pull after a dry run",
    );

    // Up to date: nothing to download.
    let plan = pull_json(&c, &["--dry-run", "origin", "main"]);
    assert_eq!(plan["targets"][0]["complete"], true, "{plan}");
    assert_eq!(plan["targets"][0]["download_bytes"], 0, "{plan}");
}

#[test]
fn delta_part_cut_off_mid_download_is_fetched_again_and_a_failed_one_leaves_the_ref() {
    // v2 adds 3 MB that compresses poorly: a part large enough to be applied while it
    // downloads, so the cut comes after some of it was already read.
    let tmp = tempfile::tempdir().unwrap();
    let (repo, v1_dir, v2_dir) = (
        tmp.path().join("src-repo"),
        tmp.path().join("v1"),
        tmp.path().join("v2"),
    );
    make_v1(&v1_dir);
    make_v2(&v2_dir);
    write_file(&v2_dir, "new/large.bin", &noise(3_000_000, 9), 0o644);
    init(&repo, "archive");
    let a = commit(&repo, "main", &v1_dir, "v1");
    let b = commit(&repo, "main", &v2_dir, "v2");
    run_ok(tl(&repo).args([
        "static-delta",
        "generate",
        &format!("--from={a}"),
        &format!("--to={b}"),
    ]));
    run_ok(tl(&repo).args(["summary", "-u"]));
    let server = TestServer::start(&repo);
    fn is_part(path: &str) -> bool {
        path.starts_with("deltas/") && !path.ends_with("/superblock")
    }

    // Cut off once: fetched again and applied.
    let c = client(&tmp.path().join("client"), "bare-user", &server.url);
    pull_json(&c, &["origin", &format!("main@{a}")]);
    server.reset_counts();
    server.set_faults(|path, n| {
        if is_part(path) && n == 1 {
            Fault::TruncateWithLength
        } else {
            Fault::None
        }
    });
    let before = server.log_len();
    let r = pull_json(&c, &["origin", "main"]);
    assert_eq!(deltas_of(&r), vec![format!("{a}-{b}")], "{r}");
    let part_requests = server.log()[before..]
        .iter()
        .filter(|l| is_part(&l.path))
        .count();
    assert_eq!(part_requests, 2, "the cut part was not fetched again");
    assert_fsck(&c, "delta pull after a cut part");
    assert_checkout_eq(&c, "origin:main", &v2_dir, tmp.path(), "delta after a cut");

    // Cut off every time: the pull fails naming the part; the ref stays; it resumes.
    let c = client(&tmp.path().join("client-2"), "bare-user", &server.url);
    server.clear_faults();
    pull_json(&c, &["origin", &format!("main@{a}")]);
    server.set_faults(|path, _| {
        if is_part(path) {
            Fault::TruncateWithLength
        } else {
            Fault::None
        }
    });
    let out = run_fail(tl(&c).args(["pull", "--network-retries", "1", "origin", "main"]));
    let err = stderr_of(&out);
    assert!(
        err.contains("/deltas/"),
        "error does not name the part: {err}"
    );
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(a.as_str()));
    assert_fsck(&c, "after a failed delta part");
    server.clear_faults();
    pull_json(&c, &["origin", "main"]);
    assert_eq!(rev_parse(&c, "origin:main").as_deref(), Some(b.as_str()));
    assert_fsck(&c, "resumed after a failed delta part");
    assert_checkout_eq(&c, "origin:main", &v2_dir, tmp.path(), "resumed delta pull");
}
