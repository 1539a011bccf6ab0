//! `treeline serve`: the real `ostree pull` fetches from it, and it behaves over HTTP as a
//! careful static server would (ranges, conditional requests, cache headers, nothing
//! served outside the pull protocol's files).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;

/// A running `treeline serve`, killed when dropped (also when a test fails).
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(repo: &Path) -> Server {
        let mut child = tl(repo)
            .args(["serve", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start treeline serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "treeline serve printed no URL ({other:?}); stderr:\n{}",
                server.log().join("\n")
            ),
        };
        let url = line
            .split_once(" at ")
            .map(|(_, u)| u.to_owned())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/') && !url.ends_with(":0/"),
            "{line}"
        );
        server.url = url;
        server
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Send SIGTERM and wait (bounded) for a successful exit.
    fn terminate(&mut self) {
        run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "serve exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tree with the cases a pull must carry: empty, executable and private files,
/// empty and restricted directories, symlinks (relative, absolute, dangling), a hardlink,
/// a non-ASCII name, nesting and a 1 MiB file.
fn make_small_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| write_file(root, p, data, mode);
    w("empty", b"", 0o644);
    w("hello.txt", b"hello\n", 0o644);
    w("bin/tool", b"#!/bin/sh\necho hi\n", 0o755);
    w("private/secret", b"secret\n", 0o600);
    w("unicode/été ü 日本", b"unicode\n", 0o644);
    w("a/b/c/d/leaf", b"deep\n", 0o644);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("restricted")).unwrap();
    w("restricted/inside", b"x", 0o644);
    fs::set_permissions(root.join("restricted"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    fs::hard_link(root.join("hello.txt"), root.join("hardlink")).unwrap();
    let mut big = Vec::with_capacity(1 << 20);
    let mut x: u32 = 7;
    while big.len() < 1 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.extend_from_slice(format!("line {} value {}\n", big.len(), x >> 16).as_bytes());
    }
    w("large/blob", &big, 0o644);
}

/// An archive repository with `src` committed on `main`; returns the commit.
fn archive_repo(repo: &Path, src: &Path) -> String {
    run_ok(tl(repo).args(["init", "--mode=archive"]));
    run_ok(
        tl(repo)
            .args(["commit", "-b", "main", "-s", "served"])
            .arg(src),
    )
    .trim()
    .to_owned()
}

/// Pull `main` from `url` into a fresh bare-user repository with the real ostree, fsck it
/// and check the checkout out equals `src`.
fn ostree_pull_and_compare(url: &str, client: &Path, src: &Path, commit: &str) {
    run_ok(ostree(client).args(["init", "--mode=bare-user"]));
    run_ok(ostree(client).args(["remote", "add", "--no-gpg-verify", "origin", url]));
    run_ok(ostree(client).args(["pull", "origin", "main"]));
    run_ok(ostree(client).arg("fsck"));
    assert_eq!(
        run_ok(ostree(client).args(["rev-parse", "origin:main"])).trim(),
        commit
    );
    let co = client.with_extension("co");
    run_ok(
        ostree(client)
            .args(["checkout", "-U", "origin:main"])
            .arg(&co),
    );
    assert_same_tree(
        &snapshot(src, false, false),
        &snapshot(&co, false, false),
        "ostree checkout of a commit pulled from treeline serve",
    );
    force_remove(&co);
}

#[test]
fn ostree_pulls_from_treeline_serve_with_and_without_summary() {
    let work = tempfile::tempdir().unwrap();
    let (src, repo) = (work.path().join("src"), work.path().join("repo"));
    make_small_tree(&src);
    let commit = archive_repo(&repo, &src);
    let mut server = Server::start(&repo);

    // No summary: ostree falls back to refs/heads/main and loose objects.
    ostree_pull_and_compare(&server.url, &work.path().join("c1"), &src, &commit);
    let log = server.log();
    for want in [
        "\"GET /summary HTTP/1.1\" 404",
        "\"GET /refs/heads/main HTTP/1.1\" 200",
        ".filez HTTP/1.1\" 200",
    ] {
        assert!(
            log.iter().any(|l| l.contains(want)),
            "access log lacks {want}:\n{}",
            log.join("\n")
        );
    }

    // A new commit reaches a client that already holds the previous one.
    fs::write(src.join("hello.txt"), b"hello again\n").unwrap();
    let commit2 = run_ok(tl(&repo).args(["commit", "-b", "main"]).arg(&src))
        .trim()
        .to_owned();
    let c1 = work.path().join("c1");
    run_ok(ostree(&c1).args(["pull", "origin", "main"]));
    run_ok(ostree(&c1).arg("fsck"));
    assert_eq!(
        run_ok(ostree(&c1).args(["rev-parse", "origin:main"])).trim(),
        commit2
    );

    // With a summary and a from-scratch static delta written by ostree itself: the
    // client reads summary, config and delta-indexes, then fetches the delta.
    run_ok(ostree(&repo).args(["static-delta", "generate", "--empty", "main"]));
    run_ok(ostree(&repo).args(["summary", "-u"]));
    let before = server.log().len();
    ostree_pull_and_compare(&server.url, &work.path().join("c2"), &src, &commit2);
    let log = server.log().split_off(before);
    for want in [
        "\"GET /summary HTTP/1.1\" 200",
        "\"GET /config HTTP/1.1\" 200",
        "\"GET /delta-indexes/",
        "/superblock HTTP/1.1\" 200",
    ] {
        assert!(
            log.iter().any(|l| l.contains(want)),
            "access log lacks {want}:\n{}",
            log.join("\n")
        );
    }
    server.terminate();
}

/// One HTTP exchange through curl.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

fn curl(url: &str, extra: &[&str]) -> Reply {
    let out = tool("curl")
        .args(["-s", "-i", "--path-as-is", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {extra:?} {url} failed: {out:?}");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The path of each object file with extension `ext` in `repo`, relative to it.
fn objects_with_ext(repo: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in fs::read_dir(repo.join("objects")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == ext) {
                found.push(p.strip_prefix(repo).unwrap().to_owned());
            }
        }
    }
    found.sort();
    found
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[test]
fn serve_behaves_as_a_careful_static_server() {
    let work = tempfile::tempdir().unwrap();
    let (src, repo) = (work.path().join("src"), work.path().join("repo"));
    make_small_tree(&src);
    let commit = archive_repo(&repo, &src);

    // Files a static server would export but this one must not, and files only a
    // symlink reaches.
    let put = |p: &str, data: &[u8]| {
        let path = repo.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    put("tmp/staging-file", b"staging");
    put(".lock", b"");
    put("state/x.commitpartial", b"");
    put("origin.trustedkeys.gpg", b"keys");
    put("summary", b"summary bytes");
    put("summary.sig", b"sig bytes");
    put("deltas/aB/cdef/superblock", b"superblock bytes");
    put("delta-indexes/aB/cdef.index", b"index bytes");
    let commitmeta = format!("objects/{}/{}.commitmeta", &commit[..2], &commit[2..]);
    put(&commitmeta, b"detached");
    fs::write(work.path().join("outside"), b"outside the repo").unwrap();
    let heads = repo.join("refs/heads");
    std::os::unix::fs::symlink("main", heads.join("alias")).unwrap();
    std::os::unix::fs::symlink(work.path().join("outside"), heads.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../outside", heads.join("escape-rel")).unwrap();
    std::os::unix::fs::symlink("../../tmp/staging-file", heads.join("into-tmp")).unwrap();

    let mut server = Server::start(&repo);
    let url = server.url.clone();
    let get = |path: &str| curl(&format!("{url}{path}"), &[]);

    // Text files, always revalidated.
    let config = get("config");
    assert_eq!(config.status, 200);
    assert_eq!(config.body, fs::read(repo.join("config")).unwrap());
    assert!(config.header("content-type").starts_with("text/plain"));
    assert_eq!(config.header("cache-control"), "no-cache");
    for r in ["refs/heads/main", "refs/heads/alias"] {
        let reply = get(r);
        assert_eq!(reply.status, 200, "{r}");
        assert_eq!(reply.body, format!("{commit}\n").as_bytes(), "{r}");
        assert!(reply.header("content-type").starts_with("text/plain"));
        assert_eq!(reply.header("cache-control"), "no-cache");
    }

    // Binary files, immutable when named by their content.
    let cases = [
        (
            format!("objects/{}/{}.commit", &commit[..2], &commit[2..]),
            IMMUTABLE,
        ),
        (
            objects_with_ext(&repo, "dirtree")[0].display().to_string(),
            IMMUTABLE,
        ),
        (
            objects_with_ext(&repo, "dirmeta")[0].display().to_string(),
            IMMUTABLE,
        ),
        (
            objects_with_ext(&repo, "filez")[0].display().to_string(),
            IMMUTABLE,
        ),
        ("deltas/aB/cdef/superblock".to_owned(), IMMUTABLE),
        (commitmeta.clone(), "no-cache"),
        ("summary".to_owned(), "no-cache"),
        ("summary.sig".to_owned(), "no-cache"),
        ("delta-indexes/aB/cdef.index".to_owned(), "no-cache"),
    ];
    for (path, cache) in &cases {
        let reply = get(path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, fs::read(repo.join(path)).unwrap(), "{path}");
        assert_eq!(reply.header("content-type"), "application/octet-stream");
        assert_eq!(reply.header("cache-control"), *cache, "{path}");
    }

    // HEAD and byte ranges on the largest object.
    let largest = objects_with_ext(&repo, "filez")
        .into_iter()
        .max_by_key(|p| fs::metadata(repo.join(p)).unwrap().len())
        .unwrap();
    let bytes = fs::read(repo.join(&largest)).unwrap();
    assert!(bytes.len() > 10_000);
    let obj_url = format!("{url}{}", largest.display());
    let head = curl(&obj_url, &["-I"]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), bytes.len().to_string());
    assert_eq!(head.header("accept-ranges"), "bytes");
    let part = curl(&obj_url, &["-r", "1000-1999"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &bytes[1000..2000]);
    assert_eq!(
        part.header("content-range"),
        format!("bytes 1000-1999/{}", bytes.len())
    );
    let tail = curl(&obj_url, &["-r", "-10"]);
    assert_eq!(
        (tail.status, &tail.body[..]),
        (206, &bytes[bytes.len() - 10..])
    );
    let beyond = curl(&obj_url, &["-r", &format!("{}-", bytes.len() + 5)]);
    assert_eq!(beyond.status, 416);

    // Conditional requests, by ETag and by date; If-Range guards a resumed download.
    let etag = head.header("etag").to_owned();
    let date = head.header("last-modified").to_owned();
    let again = curl(&obj_url, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    assert_eq!(again.header("cache-control"), IMMUTABLE);
    assert_eq!(
        curl(&obj_url, &["-H", &format!("If-Modified-Since: {date}")]).status,
        304
    );
    assert_eq!(
        curl(&obj_url, &["-H", "If-None-Match: \"other\""]).status,
        200
    );
    let resumed = curl(&obj_url, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]);
    assert_eq!((resumed.status, &resumed.body[..]), (206, &bytes[..10]));
    let stale = curl(&obj_url, &["-r", "0-9", "-H", "If-Range: \"stale\""]);
    assert_eq!((stale.status, stale.body.len()), (200, bytes.len()));
    assert_eq!(curl(&obj_url, &["-H", "If-Match: \"other\""]).status, 412);

    // Nothing outside the pull protocol's files, however it is asked for.
    let missing = format!("objects/{}/{}.commit", &commit[..2], "0".repeat(62));
    for path in [
        missing.as_str(),
        "../outside",
        "refs/../config",
        "objects/%2e%2e/config",
        "refs/heads/%2e%2e%2f%2e%2e%2fconfig",
        "refs/heads/..%2f..%2fconfig",
        "tmp/staging-file",
        "tmp/",
        ".lock",
        "state/x.commitpartial",
        "origin.trustedkeys.gpg",
        "refs/heads/escape",
        "refs/heads/escape-rel",
        "refs/heads/into-tmp",
        "objects/",
        "refs/heads/",
        "refs/heads",
        "extensions",
        "",
    ] {
        let reply = get(path);
        assert_eq!(reply.status, 404, "/{path} must answer 404");
        assert!(
            !reply
                .body
                .windows(7)
                .any(|w| w == b"outside" || w == b"staging"),
            "/{path} leaked a file"
        );
    }
    assert_eq!(curl(&format!("{url}config"), &["-X", "POST"]).status, 405);

    // One access log line per request, then a clean exit on SIGTERM.
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("\"GET /refs/heads/main HTTP/1.1\" 200 65 ")),
        "{}",
        log.join("\n")
    );
    server.terminate();
}

#[test]
fn serve_refuses_a_non_archive_repository() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    run_ok(tl(&repo).args(["init", "--mode=bare-user"]));
    let mut child = tl(&repo)
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running on a bare-user repository");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bare-user") && err.contains("archive"),
        "unclear refusal: {err}"
    );
    assert!(out.stdout.is_empty(), "printed a URL: {:?}", out.stdout);
}
