//! `treeline serve`: an HTTP server for a repository.
//!
//! ostree clients pull from any static web server exporting an archive-mode repository
//! (ostree-format.md §8). This server is such a static server, restricted to what the pull
//! protocol needs: `config`, `summary`, `summary.sig`, `refs/`, `objects/`, `deltas/` and
//! `delta-indexes/`. Everything else in the repository directory (`tmp/`, `state/`, `.lock`,
//! per-remote keyrings and cookie jars, ...) answers 404, as does any path that leaves the
//! repository, through `..` or through a symlink.
//!
//! Responses carry what caches and clients need: `ETag` and `Last-Modified` with the
//! matching conditional requests, byte ranges, and `Cache-Control` that lets a CDN keep
//! content-addressed files forever while refs and the summary are always revalidated.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use tower_http::services::ServeFile;
use treeline_store::{Repo, RepoMode};

/// `serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, short, default_value_t = 8080)]
    pub port: u16,
    /// Do not print an access log line per request on standard error (requests are still
    /// logged as tracing events at info level: see `-v` and RUST_LOG).
    #[arg(long, short)]
    pub quiet: bool,
}

/// How long in-flight responses may continue after SIGINT/SIGTERM before the server exits
/// anyway (a second signal exits at once).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serve the repository at `repo` until interrupted.
pub fn run(repo: &Path, args: &ServeArgs) -> Result<()> {
    let mode = Repo::open(repo)
        .with_context(|| format!("opening repository {}", repo.display()))?
        .mode();
    if mode != RepoMode::Archive {
        bail!(
            "{} is a {} repository; ostree clients only pull over HTTP from archive \
             repositories (content stored as .filez objects). Serve an archive repository \
             instead, e.g. one made with `ostree --repo=OUT init --mode=archive` and filled \
             with `ostree --repo=OUT pull-local {}`",
            repo.display(),
            mode.config_name(),
            repo.display()
        );
    }
    let root = repo
        .canonicalize()
        .with_context(|| format!("resolving {}", repo.display()))?;
    let state = Arc::new(Server {
        root,
        quiet: args.quiet,
    });
    let addr = SocketAddr::new(args.bind, args.port);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(state, addr))
}

/// What every request handler shares.
struct Server {
    /// The repository directory, canonical (no symlinks, absolute).
    root: PathBuf,
    /// No access log on stderr.
    quiet: bool,
}

async fn serve(state: Arc<Server>, addr: SocketAddr) -> Result<()> {
    // Signal handlers first, so a signal sent as soon as the URL is printed is handled.
    let mut signals = Signals::new()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let app = Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&state));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Serving {} at http://{local}/", state.root.display())?;
        out.flush()?;
    }
    tracing::info!(%local, root = %state.root.display(), "serving");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => return r.context("serving"),
        name = signals.next() => {
            if !state.quiet {
                eprintln!("{name}: finishing requests in flight, then exiting");
            }
            let _ = stop_tx.send(true);
        }
    }
    tokio::select! {
        r = &mut server => r.context("serving"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; exiting");
            Ok(())
        }
        _ = signals.next() => Ok(()),
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    /// Wait for the next signal and name it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Answer one request and log it.
async fn handle(
    State(state): State<Arc<Server>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let version = req.version();
    let resp = respond(&state, req).await;
    let status = resp.status();
    // Body bytes as sent (none for HEAD); the time is to the response head, not the last
    // byte of the body.
    let bytes = if method == Method::HEAD {
        0
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| HttpBody::size_hint(resp.body()).exact())
            .unwrap_or(0)
    };
    let elapsed = start.elapsed();
    if state.quiet {
        tracing::info!(
            %peer, %method, %uri, status = status.as_u16(), bytes, ?elapsed, "request"
        );
    } else {
        eprintln!(
            "{peer} \"{method} {uri} {version:?}\" {} {bytes} {:.1}ms",
            status.as_u16(),
            elapsed.as_secs_f64() * 1000.0
        );
    }
    resp
}

/// How a file served is labelled and cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    content_type: &'static str,
    cache_control: &'static str,
}

const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// Object file extensions an archive repository holds, and whether the file under that
/// name can change (detached metadata is replaced when signatures are added; tombstones
/// come and go with the commit they stand for).
const OBJECT_EXTS: [(&str, bool); 6] = [
    ("commit", false),
    ("dirtree", false),
    ("dirmeta", false),
    ("filez", false),
    ("commitmeta", true),
    ("commit-tombstone", true),
];

/// Which repository-relative paths are served, and how; `None` answers 404.
fn classify(parts: &[&str]) -> Option<Kind> {
    let kind = |content_type, cache_control| {
        Some(Kind {
            content_type,
            cache_control,
        })
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || p.starts_with('.') || p.contains(['/', '\0']))
    {
        return None;
    }
    match parts {
        ["config"] => kind(TEXT, REVALIDATE),
        ["summary" | "summary.sig"] => kind(OCTET, REVALIDATE),
        ["refs", "heads" | "remotes" | "mirrors", _, ..] => kind(TEXT, REVALIDATE),
        ["objects", dir, file] => {
            let (rest, ext) = file.split_once('.')?;
            let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if dir.len() != 2 || rest.len() != 62 || !hex(dir) || !hex(rest) {
                return None;
            }
            let (_, mutable) = OBJECT_EXTS.iter().find(|(e, _)| *e == ext)?;
            kind(OCTET, if *mutable { REVALIDATE } else { IMMUTABLE })
        }
        ["deltas", _, _, ..] => kind(OCTET, IMMUTABLE),
        ["delta-indexes", _, _, ..] => kind(OCTET, REVALIDATE),
        _ => None,
    }
}

/// Decode `%XX` escapes; `None` for non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn status(code: StatusCode) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT))],
        format!("{code}\n"),
    )
        .into_response();
    if code == StatusCode::NOT_FOUND {
        // A missing object may well be pushed a minute later.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    }
    resp
}

/// Answer one request.
async fn respond(state: &Server, mut req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = status(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    let Some(rel) = path.strip_prefix('/') else {
        return status(StatusCode::NOT_FOUND);
    };
    if rel.ends_with('/') {
        return status(StatusCode::NOT_FOUND);
    }
    // Repeated slashes are merged, as nginx does; escapes are decoded per segment so an
    // encoded `/` cannot join segments.
    let Some(parts) = rel
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
    else {
        return status(StatusCode::NOT_FOUND);
    };
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let Some(kind) = classify(&parts) else {
        return status(StatusCode::NOT_FOUND);
    };

    // Follow symlinks (ref aliases are symlinks), but only to files that are themselves
    // served: never out of the repository, nor into tmp/ or state/.
    let requested: PathBuf = parts.iter().fold(state.root.clone(), |p, s| p.join(s));
    let file = match tokio::fs::canonicalize(&requested).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return status(StatusCode::FORBIDDEN);
        }
        Err(_) => return status(StatusCode::NOT_FOUND),
    };
    let inside = file
        .strip_prefix(&state.root)
        .ok()
        .and_then(|r| r.iter().map(|c| c.to_str()).collect::<Option<Vec<&str>>>());
    if inside.is_none_or(|r| classify(&r).is_none()) {
        return status(StatusCode::NOT_FOUND);
    }
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() => m,
        Ok(_) => return status(StatusCode::NOT_FOUND),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return status(StatusCode::FORBIDDEN);
        }
        Err(_) => return status(StatusCode::NOT_FOUND),
    };

    let v = Validators::of(&meta);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, header_value(&v.etag));
    headers.insert(header::LAST_MODIFIED, header_value(&v.last_modified));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(kind.cache_control),
    );
    match v.evaluate(req.headers()) {
        Precondition::Failed => return (StatusCode::PRECONDITION_FAILED, headers).into_response(),
        Precondition::NotModified => return (StatusCode::NOT_MODIFIED, headers).into_response(),
        Precondition::Serve { range } => {
            let h = req.headers_mut();
            for name in [
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_UNMODIFIED_SINCE,
                header::IF_RANGE,
            ] {
                h.remove(name);
            }
            if !range {
                h.remove(header::RANGE);
            }
            // Content negotiation does not apply: objects are compressed already.
            h.remove(header::ACCEPT_ENCODING);
        }
    }

    let mut resp = match ServeFile::new(&file).try_call(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            tracing::warn!(file = %file.display(), "cannot serve: {e}");
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type),
    );
    resp
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("validators are ASCII")
}

/// Validators of a file, as sent in `ETag` and `Last-Modified`.
struct Validators {
    etag: String,
    last_modified: String,
    /// Last-Modified in whole seconds since the epoch.
    mtime: i64,
}

/// The outcome of a request's preconditions (RFC 9110 §13.2.2).
enum Precondition {
    Failed,
    NotModified,
    /// Serve the file; `range` says whether a `Range` header still applies.
    Serve {
        range: bool,
    },
}

impl Validators {
    fn of(meta: &std::fs::Metadata) -> Self {
        // As nginx, from the file's identity and size; the inode and nanoseconds catch
        // a summary replaced by rename within the same second.
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let etag = format!("\"{:x}-{mtime_ns:x}-{:x}\"", meta.ino(), meta.size());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Validators {
            etag,
            last_modified: http_date(mtime),
            mtime,
        }
    }

    fn evaluate(&self, h: &HeaderMap) -> Precondition {
        let get = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        if let Some(im) = get(header::IF_MATCH) {
            if !etag_list_matches(im, &self.etag, true) {
                return Precondition::Failed;
            }
        } else if let Some(date) = get(header::IF_UNMODIFIED_SINCE).and_then(parse_http_date)
            && self.mtime > date
        {
            return Precondition::Failed;
        }
        if let Some(inm) = get(header::IF_NONE_MATCH) {
            if etag_list_matches(inm, &self.etag, false) {
                return Precondition::NotModified;
            }
        } else if let Some(date) = get(header::IF_MODIFIED_SINCE).and_then(parse_http_date)
            && self.mtime <= date
        {
            return Precondition::NotModified;
        }
        let range = match get(header::IF_RANGE) {
            None => true,
            Some(v) if v.starts_with('"') || v.starts_with("W/") => v == self.etag,
            Some(v) => parse_http_date(v) == Some(self.mtime),
        };
        Precondition::Serve { range }
    }
}

/// Whether `list` (an If-Match / If-None-Match value) names `etag`; `strong` comparison
/// rejects weak tags.
fn etag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',')
        .map(str::trim)
        .any(|t| match t.strip_prefix("W/") {
            Some(weak) => !strong && weak == etag,
            None => t == etag,
        })
}

/// IMF-fixdate, as HTTP wants dates.
fn http_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Seconds since the epoch of an IMF-fixdate; `None` for anything else (ignored, as the
/// RFC asks for invalid dates).
fn parse_http_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_serves_only_the_pull_protocol() {
        let c = |p: &str| classify(&p.split('/').collect::<Vec<_>>());
        let obj = format!("objects/ab/{}.filez", "c".repeat(62));
        assert_eq!(c(&obj).unwrap().cache_control, IMMUTABLE);
        let meta = format!("objects/ab/{}.commitmeta", "c".repeat(62));
        assert_eq!(c(&meta).unwrap().cache_control, REVALIDATE);
        assert_eq!(c("config").unwrap().content_type, TEXT);
        assert_eq!(c("refs/heads/a/b").unwrap().content_type, TEXT);
        assert_eq!(
            c("deltas/aB/cd/superblock").unwrap().cache_control,
            IMMUTABLE
        );
        assert_eq!(
            c("delta-indexes/aB/cd.index").unwrap().cache_control,
            REVALIDATE
        );
        for bad in [
            "tmp/x",
            ".lock",
            "state/x.commitpartial",
            "refs/heads",
            "refs/heads/.tmp",
            "objects/ab/../../config",
            "objects/AB/x.filez",
            "origin.trustedkeys.gpg",
            "extensions/x",
            "",
        ] {
            assert!(c(bad).is_none(), "{bad} must not be served");
        }
    }

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"b\"", true));
        assert!(!etag_list_matches("\"c\"", "\"b\"", false));
    }
}
