//! Pulling commits from a remote: summary, refs, commits, then only the objects missing
//! locally, each verified before it is stored; refs move only once everything is durable.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use treeline_store::delta::{self, DeltaName};
use treeline_store::object::{Commit, DirMeta, DirTree};
use treeline_store::progress::Progress;
use treeline_store::refs::RefSpec;
use treeline_store::repo::write_file_atomic;
use treeline_store::sign::{ED25519_KEY, PublicKeys};
use treeline_store::summary::Summary;
use treeline_store::variant::{Metadata, Value};
use treeline_store::{Checksum, ObjectName, ObjectType, Repo, Transaction};

use crate::fetch::{Fetched, Fetcher};
use crate::remote::Remote;
use crate::{Error, Result};

/// Largest metadata object accepted when the summary gives no size.
const MAX_METADATA_SIZE: u64 = 128 << 20;
/// Content objects up to this size are downloaded into memory rather than to a temporary
/// file (most of a distribution's files are this small). With the writers' queue of 64
/// and `max_parallel` in flight this bounds such buffers to a few MiB.
const IN_MEMORY_OBJECT_LIMIT: u64 = 64 << 10;
/// Largest summary accepted.
const MAX_SUMMARY_SIZE: u64 = 64 << 20;

/// What to pull and how.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Refs (`REF`), pinned refs (`REF@COMMIT`) or commit checksums. Empty: the remote's
    /// configured branches, or every ref with `mirror`.
    pub refs: Vec<String>,
    /// Parent commits to fetch too: 0 none, -1 all.
    pub depth: i64,
    /// Fetch commit objects only.
    pub commit_metadata_only: bool,
    /// Write refs as local refs (`refs/heads`) instead of `refs/remotes/REMOTE/`.
    pub mirror: bool,
    /// Requests in flight at once (0 counts as 1).
    pub max_parallel: usize,
    /// Retries of a failed request (server errors, timeouts, broken connections).
    pub retries: u32,
    /// A request times out after this long without data.
    pub timeout: Duration,
    /// Do not check `ostree.ref-binding`.
    pub disable_verify_bindings: bool,
    /// Never use static deltas.
    pub disable_static_deltas: bool,
    /// Use static deltas even into archive repositories (where they cost a
    /// recompression of every object, so loose objects are fetched by default), and fail
    /// when none applies.
    pub require_static_deltas: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            refs: Vec::new(),
            depth: 0,
            commit_metadata_only: false,
            mirror: false,
            max_parallel: 16,
            retries: 5,
            timeout: Duration::from_secs(60),
            disable_verify_bindings: false,
            disable_static_deltas: false,
            require_static_deltas: false,
        }
    }
}

/// What a pull did.
#[derive(Clone, Debug, Default)]
pub struct PullReport {
    /// Refs written, with their commits.
    pub refs: Vec<(String, Checksum)>,
    /// Objects fetched and stored.
    pub objects_fetched: u64,
    /// Requests sent.
    pub requests: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Static deltas applied.
    pub deltas: Vec<String>,
}

/// What a pull would download (from [`plan`]).
#[derive(Clone, Debug, Default)]
pub struct PullPlan {
    /// One entry per target, in the order asked for.
    pub targets: Vec<TargetPlan>,
    /// Requests the planning itself sent.
    pub requests: u64,
    /// Bytes the planning itself received (summary, commits, superblocks, and without a
    /// delta the tree's dirtrees and dirmetas, which are kept for the pull).
    pub bytes: u64,
}

/// What a pull of one ref or commit would download.
#[derive(Clone, Debug)]
pub struct TargetPlan {
    /// The ref, if pulled by ref.
    pub ref_name: Option<String>,
    /// The commit it resolves to.
    pub commit: Checksum,
    /// The commit and its whole tree are stored already: nothing to download.
    pub complete: bool,
    /// The static delta the pull would apply.
    pub delta: Option<DeltaPlan>,
    /// Objects fetched one by one: a delta's fallback objects, or without a delta the
    /// missing content objects.
    pub objects: u64,
    /// Bytes to download: exact with a delta (superblock, parts and fallbacks) or when
    /// nothing is missing; `None` when loose objects' sizes are unknown (an archive
    /// repository lists no sizes; learning them would cost a request per object).
    pub download_bytes: Option<u64>,
}

/// The static delta a pull would use, with sizes from its superblock.
#[derive(Clone, Debug)]
pub struct DeltaPlan {
    /// `FROM-TO` (or `TO` for a from-scratch delta), as ostree names it.
    pub name: String,
    /// The commit it starts from.
    pub from: Option<Checksum>,
    /// The superblock's length.
    pub superblock_bytes: u64,
    /// Parts still to fetch (parts whose objects are all stored, and inline parts, are
    /// not fetched).
    pub parts: usize,
    /// Their compressed size.
    pub part_bytes: u64,
    /// Their uncompressed size.
    pub unpacked_bytes: u64,
    /// Fallback objects still to fetch.
    pub fallback_objects: u64,
    /// Their size, as the superblock lists it.
    pub fallback_bytes: u64,
}

/// A downloaded content object on its way to the writer threads.
enum Downloaded {
    /// Streamed to this temporary file.
    File(std::path::PathBuf),
    /// Small enough to keep in memory.
    Memory(Vec<u8>),
}

struct Target {
    /// Ref to write, if pulled by ref.
    ref_name: Option<String>,
    commit: Checksum,
}

/// Pull from `remote` into `repo`.
pub fn pull(
    repo: &Repo,
    remote: &Remote,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport> {
    refuse_gpg(remote)?;
    let keys = remote.public_keys()?;
    let fetcher = Fetcher::new(opts.retries, opts.timeout)?;
    let runtime = runtime_for(remote)?;
    let txn = repo.begin()?;
    let ctx = Ctx::new(repo, &txn, remote, opts, keys, fetcher.clone(), progress);
    let targets = std::thread::scope(|scope| -> Result<Vec<Target>> {
        let (tx, rx) = mpsc::sync_channel::<(ObjectName, Downloaded)>(64);
        let rx = Arc::new(Mutex::new(rx));
        let ctx = &ctx;
        for _ in 0..2 {
            let rx = Arc::clone(&rx);
            scope.spawn(move || ctx.store_loop(&rx));
        }
        runtime.block_on(ctx.run(tx))
    })?;
    let Ctx {
        writer_error,
        stored,
        deltas_used,
        spare_files,
        ..
    } = ctx;
    // Deleted before the commit's flush, which would otherwise write their last
    // contents to disk for nothing.
    for path in spare_files.into_inner().unwrap_or_default() {
        let _ = std::fs::remove_file(path);
    }
    if let Some(e) = writer_error.into_inner().map_err(|_| poisoned())? {
        return Err(e);
    }
    tracing::debug!("pull: every object fetched and staged");
    treeline_store::fault::point("pull-before-commit");
    txn.commit()?;
    tracing::debug!("pull: transaction committed");
    let mut report = PullReport::default();
    for t in &targets {
        // The scan fetched everything missing below each target (or the commit had no
        // partial marker, so it was complete already): no second walk is needed.
        if !opts.commit_metadata_only {
            remove_partial(repo, &t.commit)?;
        }
        if let Some(name) = &t.ref_name {
            let spec = if opts.mirror {
                RefSpec::parse(name)?
            } else {
                RefSpec::parse(&format!("{}:{name}", remote.name))?
            };
            repo.set_ref(&spec, Some(&t.commit))?;
            report.refs.push((spec.to_string(), t.commit));
        }
    }
    report.objects_fetched = stored.load(Ordering::Relaxed);
    report.deltas = deltas_used.into_inner().map_err(|_| poisoned())?;
    report.requests = fetcher.stats.requests.load(Ordering::Relaxed);
    report.bytes = fetcher.stats.bytes.load(Ordering::Relaxed);
    Ok(report)
}

fn refuse_gpg(remote: &Remote) -> Result<()> {
    if remote.gpg_verify && !remote.sign_verify {
        return Err(Error::Remote {
            remote: remote.name.clone(),
            message: "gpg-verify is enabled but GPG verification is not supported; use ed25519 (`--sign-verify`) or add the remote with --no-gpg-verify".into(),
        });
    }
    Ok(())
}

fn runtime_for(remote: &Remote) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Network {
            url: remote.url.clone(),
            message: format!("cannot start the async runtime: {e}"),
        })
}

/// Work out what pulling `opts.refs` from `remote` would download, without fetching any
/// content object: the summary and the target commits are fetched (and verified, as a
/// pull would); with a static delta from a local commit, the sizes come from its
/// superblock; without one, the commit's dirtrees and dirmetas are fetched and kept in
/// the repository (a later pull reuses them) and the missing content objects counted.
/// Refs are not touched. Only the target commits are planned, not history (`depth`).
pub fn plan(repo: &Repo, remote: &Remote, opts: &PullOptions) -> Result<PullPlan> {
    refuse_gpg(remote)?;
    let keys = remote.public_keys()?;
    let fetcher = Fetcher::new(opts.retries, opts.timeout)?;
    let runtime = runtime_for(remote)?;
    let txn = repo.begin()?;
    let ctx = Ctx::new(
        repo,
        &txn,
        remote,
        opts,
        keys,
        fetcher.clone(),
        &treeline_store::progress::NoProgress,
    );
    let targets = runtime.block_on(ctx.plan())?;
    drop(ctx);
    txn.commit()?;
    Ok(PullPlan {
        targets,
        requests: fetcher.stats.requests.load(Ordering::Relaxed),
        bytes: fetcher.stats.bytes.load(Ordering::Relaxed),
    })
}

fn poisoned() -> Error {
    Error::Network {
        url: String::new(),
        message: "internal error: a writer thread panicked".into(),
    }
}

fn partial_path(repo: &Repo, c: &Checksum) -> std::path::PathBuf {
    repo.path().join("state").join(format!("{c}.commitpartial"))
}

fn remove_partial(repo: &Repo, c: &Checksum) -> Result<()> {
    let p = partial_path(repo, c);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(treeline_store::Error::Io { path: p, error: e }.into()),
    }
}

/// A delta part being downloaded to a file, readable while it downloads.
struct PartDownload {
    path: std::path::PathBuf,
    state: Mutex<PartState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct PartState {
    /// Bytes of the file written and flushed by the current attempt.
    written: u64,
    /// Set once the download succeeded or failed for good.
    done: Option<std::result::Result<(), String>>,
}

impl PartDownload {
    fn new(path: std::path::PathBuf) -> Self {
        PartDownload {
            path,
            state: Mutex::new(PartState::default()),
            changed: std::sync::Condvar::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut PartState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_all();
    }

    fn written(&self, n: u64) {
        self.update(|s| s.written = n);
    }

    fn finish(&self, r: std::result::Result<(), String>) {
        self.update(|s| s.done = Some(r));
    }

    fn reader(&self, index: usize) -> PartReader<'_> {
        PartReader {
            part: self,
            index,
            file: None,
            pos: 0,
        }
    }
}

/// Reads a part file as far as its download has written it, waiting for more until the
/// download ends. A retried download rewrites the file from the start with the same bytes
/// (the part's checksum, checked as it is read, catches any that differ).
struct PartReader<'a> {
    part: &'a PartDownload,
    index: usize,
    file: Option<std::fs::File>,
    pos: u64,
}

impl std::io::Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let (written, done) = {
                let mut s = self
                    .part
                    .state
                    .lock()
                    .map_err(|_| std::io::Error::other("a download thread panicked"))?;
                while s.written <= self.pos && s.done.is_none() {
                    s = self
                        .part
                        .changed
                        .wait(s)
                        .map_err(|_| std::io::Error::other("a download thread panicked"))?;
                }
                (s.written, s.done.clone())
            };
            if written > self.pos {
                if self.file.is_none() {
                    self.file = Some(std::fs::File::open(&self.part.path)?);
                }
                let Some(file) = &self.file else {
                    continue;
                };
                let want = buf
                    .len()
                    .min(usize::try_from(written - self.pos).unwrap_or(usize::MAX));
                let n = file.read_at(&mut buf[..want], self.pos)?;
                if n > 0 {
                    self.pos += n as u64;
                    return Ok(n);
                }
                // Truncated by a retry that has not rewritten this far yet.
                if done.is_none() {
                    continue;
                }
            }
            return match done {
                Some(Ok(())) => Ok(0),
                Some(Err(m)) => Err(std::io::Error::other(format!(
                    "downloading static delta part {}: {m}",
                    self.index
                ))),
                None => continue,
            };
        }
    }
}

fn object_path(name: &ObjectName) -> String {
    let hex = name.checksum.to_hex();
    let ext = match name.objtype {
        ObjectType::File => "filez",
        t => t.name(),
    };
    format!("objects/{}/{}.{ext}", &hex[..2], &hex[2..])
}

struct Ctx<'a> {
    repo: &'a Repo,
    txn: &'a Transaction<'a>,
    remote: &'a Remote,
    opts: &'a PullOptions,
    keys: PublicKeys,
    fetcher: Fetcher,
    progress: &'a dyn Progress,
    failed: AtomicBool,
    writer_error: Mutex<Option<Error>>,
    stored: AtomicU64,
    deltas_used: Mutex<Vec<String>>,
    /// Download files the writers have unpacked, kept to be rewritten by later
    /// downloads instead of deleted (see `Transaction::write_archived_content_keep`).
    spare_files: Mutex<Vec<std::path::PathBuf>>,
}

impl<'a> Ctx<'a> {
    fn new(
        repo: &'a Repo,
        txn: &'a Transaction<'a>,
        remote: &'a Remote,
        opts: &'a PullOptions,
        keys: PublicKeys,
        fetcher: Fetcher,
        progress: &'a dyn Progress,
    ) -> Self {
        Ctx {
            repo,
            txn,
            remote,
            opts,
            keys,
            fetcher,
            progress,
            failed: AtomicBool::new(false),
            writer_error: Mutex::new(None),
            stored: AtomicU64::new(0),
            deltas_used: Mutex::new(Vec::new()),
            spare_files: Mutex::new(Vec::new()),
        }
    }

    /// What a pull of each target would download (see [`plan`]).
    async fn plan(&self) -> Result<Vec<TargetPlan>> {
        let summary = self.fetch_summary().await?;
        self.check_remote_mode().await?;
        let targets = self.resolve_targets(summary.as_ref()).await?;
        let mut out = Vec::new();
        let mut queued: HashSet<ObjectName> = HashSet::new();
        for t in &targets {
            let mut p = TargetPlan {
                ref_name: t.ref_name.clone(),
                commit: t.commit,
                complete: self.is_complete(&t.commit),
                delta: None,
                objects: 0,
                download_bytes: Some(0),
            };
            if p.complete || self.opts.commit_metadata_only {
                out.push(p);
                continue;
            }
            if self.use_deltas()
                && let Some((name, sum)) = self.choose_delta(summary.as_ref(), t).await?
            {
                let (bytes, sb) = self.fetch_superblock(&name, &sum).await?;
                let needed: Vec<&delta::PartHeader> = sb
                    .parts
                    .iter()
                    .enumerate()
                    .filter(|(i, h)| {
                        sb.inline_part(*i).is_none()
                            && !h.objects.iter().all(|o| self.txn.has_object(o))
                    })
                    .map(|(_, h)| h)
                    .collect();
                let fallbacks: Vec<&delta::Fallback> = sb
                    .fallbacks
                    .iter()
                    .filter(|f| !self.txn.has_object(&f.object))
                    .collect();
                let d = DeltaPlan {
                    name: name.to_string(),
                    from: name.from,
                    superblock_bytes: bytes.len() as u64,
                    parts: needed.len(),
                    part_bytes: needed.iter().map(|h| h.size).sum(),
                    unpacked_bytes: needed.iter().map(|h| h.usize).sum(),
                    fallback_objects: fallbacks.len() as u64,
                    fallback_bytes: fallbacks.iter().map(|f| f.size).sum(),
                };
                p.objects = d.fallback_objects;
                p.download_bytes = Some(d.superblock_bytes + d.part_bytes + d.fallback_bytes);
                p.delta = Some(d);
                out.push(p);
                continue;
            }
            let max = summary
                .as_ref()
                .and_then(|s| s.refs.iter().find(|r| r.checksum == t.commit))
                .map(|r| r.commit_size)
                .unwrap_or(MAX_METADATA_SIZE);
            let Some((commit, _)) = self
                .ensure_commit(&t.commit, t.ref_name.as_deref(), max, false)
                .await?
            else {
                return Err(Error::Remote {
                    remote: self.remote.name.clone(),
                    message: format!("the remote has no commit {}", t.commit),
                });
            };
            let mut missing = 0u64;
            let base = self.local_ref_commit(t)?.filter(|c| self.is_complete(c));
            self.scan_tree(&commit, base, &mut |_| missing += 1, &mut queued)
                .await?;
            p.objects = missing;
            // Archive objects' sizes are known only per object (a HEAD each); not worth a
            // request per object just to print a number.
            p.download_bytes = (missing == 0).then_some(0);
            out.push(p);
        }
        Ok(out)
    }

    /// How many requests of one kind may be in flight at once.
    fn parallel_requests(&self) -> usize {
        self.opts.max_parallel.max(1)
    }

    /// Keep a consumed download file for the next large download to overwrite.
    fn spare_file(&self, path: std::path::PathBuf) {
        if let Ok(mut v) = self.spare_files.lock() {
            v.push(path);
        }
    }

    /// Verify and store downloaded content objects (runs on plain threads: it is CPU and
    /// disk work).
    fn store_loop(&self, rx: &Mutex<mpsc::Receiver<(ObjectName, Downloaded)>>) {
        loop {
            let next = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => return,
            };
            let Ok((name, downloaded)) = next else {
                return;
            };
            let stored = match downloaded {
                _ if self.failed.load(Ordering::Relaxed) => {
                    if let Downloaded::File(path) = downloaded {
                        let _ = std::fs::remove_file(&path);
                    }
                    continue;
                }
                Downloaded::File(path) => {
                    let r = self.txn.write_archived_content_keep(&path, &name.checksum);
                    if !matches!(r, Ok(false)) {
                        self.spare_file(path);
                    }
                    r.map(drop)
                }
                Downloaded::Memory(bytes) => self
                    .txn
                    .write_archived_content_bytes(&bytes, &name.checksum),
            };
            match stored {
                Ok(()) => {
                    self.stored.fetch_add(1, Ordering::Relaxed);
                    self.progress.advance(1, 0);
                }
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    if let Ok(mut slot) = self.writer_error.lock()
                        && slot.is_none()
                    {
                        *slot = Some(Error::BadReply {
                            url: format!(
                                "{}/{}",
                                self.remote.content_url.trim_end_matches('/'),
                                object_path(&name)
                            ),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
    }

    async fn run(&self, tx: mpsc::SyncSender<(ObjectName, Downloaded)>) -> Result<Vec<Target>> {
        let summary = self.fetch_summary().await?;
        self.check_remote_mode().await?;
        let targets = self.resolve_targets(summary.as_ref()).await?;
        // Content objects are fetched as the tree scan finds them, not after it: the scan's
        // round trips overlap the downloads instead of preceding them all.
        let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel::<ObjectName>();
        let found = stream::poll_fn(move |cx| found_rx.poll_recv(cx));
        futures_util::future::try_join(
            self.scan_targets(summary.as_ref(), &targets, &tx, found_tx),
            self.fetch_files(found, tx.clone()),
        )
        .await?;
        drop(tx);
        Ok(targets)
    }

    /// Resolve each target's commits (applying a static delta where one fits) and scan
    /// their trees, sending every missing content object to `found` once.
    async fn scan_targets(
        &self,
        summary: Option<&Summary>,
        targets: &[Target],
        tx: &mpsc::SyncSender<(ObjectName, Downloaded)>,
        found: tokio::sync::mpsc::UnboundedSender<ObjectName>,
    ) -> Result<()> {
        let mut total = 0u64;
        let mut sink = |name: ObjectName| {
            total += 1;
            // The receiver lives as long as the fetch, which outlives the scan.
            let _ = found.send(name);
        };
        let mut queued: HashSet<ObjectName> = HashSet::new();
        let mut done_commits: HashSet<Checksum> = HashSet::new();
        for t in targets {
            let max = summary
                .and_then(|s| s.refs.iter().find(|r| r.checksum == t.commit))
                .map(|r| r.commit_size)
                .unwrap_or(MAX_METADATA_SIZE);
            let mut via_delta = false;
            // A complete local commit whose unchanged subtrees the tree scan can skip:
            // the delta's FROM, else what the ref points at here.
            let mut base = None;
            if self.use_deltas()
                && !self.is_complete(&t.commit)
                && let Some((from, fallbacks)) = self.try_delta(summary, t, tx).await?
            {
                // Fetched (or being stored) already: the tree scan must not queue them.
                queued.extend(fallbacks);
                via_delta = true;
                base = from;
            }
            if base.is_none() {
                base = self.local_ref_commit(t)?.filter(|c| self.is_complete(c));
            }
            if self.opts.require_static_deltas && !via_delta && !self.is_complete(&t.commit) {
                return Err(Error::Remote {
                    remote: self.remote.name.clone(),
                    message: format!(
                        "no static delta to {} applies (--require-static-deltas)",
                        t.commit
                    ),
                });
            }
            let mut commit = Some(t.commit);
            let mut remaining = self.opts.depth;
            let mut first = true;
            while let Some(c) = commit {
                if !done_commits.insert(c) {
                    break;
                }
                let loaded = self
                    .ensure_commit(
                        &c,
                        if first { t.ref_name.as_deref() } else { None },
                        if first { max } else { MAX_METADATA_SIZE },
                        !first,
                    )
                    .await?;
                // A missing parent ends the history we can fetch, as in ostree.
                let Some((loaded, fetched)) = loaded else {
                    break;
                };
                let applied = first && via_delta;
                if !self.opts.commit_metadata_only
                    && (fetched || applied || self.repo.is_partial(&c))
                {
                    self.scan_tree(&loaded, base, &mut sink, &mut queued)
                        .await?;
                }
                first = false;
                if remaining == 0 {
                    break;
                }
                remaining -= 1;
                commit = loaded.parent;
            }
        }
        self.progress.set_total(total);
        tracing::debug!("pull: tree scan done, {total} content objects to fetch");
        Ok(())
    }

    fn use_deltas(&self) -> bool {
        !self.opts.disable_static_deltas
            && !self.opts.commit_metadata_only
            && (self.repo.mode() != treeline_store::RepoMode::Archive
                || self.opts.require_static_deltas)
    }

    /// A commit whose whole tree is stored.
    fn is_complete(&self, c: &Checksum) -> bool {
        self.repo.has_commit(c) && !self.repo.is_partial(c)
    }

    /// The deltas the remote offers to `to`: from the summary, else from its delta index.
    async fn deltas_to(
        &self,
        summary: Option<&Summary>,
        to: &Checksum,
    ) -> Result<Vec<(DeltaName, Checksum)>> {
        let listed: Vec<(String, Checksum)> = match summary.map(Summary::static_deltas) {
            Some(d) if !d.is_empty() => d,
            _ => {
                let path = delta::index_relpath(to);
                match self
                    .fetcher
                    .get(&self.remote.content_url, &path, true, MAX_SUMMARY_SIZE)
                    .await?
                {
                    None => Vec::new(),
                    Some(bytes) => {
                        let index = Metadata::from_bytes(&bytes).map_err(|m| Error::BadReply {
                            url: format!(
                                "{}/{path}",
                                self.remote.content_url.trim_end_matches('/')
                            ),
                            message: m,
                        })?;
                        index
                            .get(delta::STATIC_DELTAS_KEY)
                            .and_then(Value::as_dict)
                            .map(|d| {
                                d.0.iter()
                                    .filter(|(_, v)| v.type_str == "ay")
                                    .filter_map(|(k, v)| {
                                        Some((k.clone(), Checksum::from_bytes(&v.data)?))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                }
            }
        };
        Ok(listed
            .into_iter()
            .filter_map(|(name, c)| Some((name.parse::<DeltaName>().ok()?, c)))
            .filter(|(n, _)| n.to == *to)
            .collect())
    }

    /// Apply the best delta to the target's commit, if the remote has one that fits:
    /// from the commit the ref points at locally, else from any complete local commit
    /// (newest first), else from scratch when the ref does not exist locally. Returns
    /// the fallback objects it fetched when it applied one.
    async fn try_delta(
        &self,
        summary: Option<&Summary>,
        t: &Target,
        tx: &mpsc::SyncSender<(ObjectName, Downloaded)>,
    ) -> Result<Option<(Option<Checksum>, Vec<ObjectName>)>> {
        let Some((name, sum)) = self.choose_delta(summary, t).await? else {
            return Ok(None);
        };
        self.apply_delta(&name, &sum, t.ref_name.as_deref(), tx)
            .await
            .map(|fallbacks| Some((name.from, fallbacks)))
    }

    /// The commit the target's ref points at locally (`REMOTE:REF`, or `REF` with
    /// `mirror`).
    fn local_ref_commit(&self, t: &Target) -> Result<Option<Checksum>> {
        let Some(r) = &t.ref_name else {
            return Ok(None);
        };
        let spec = if self.opts.mirror {
            RefSpec::parse(r)?
        } else {
            RefSpec::parse(&format!("{}:{r}", self.remote.name))?
        };
        Ok(self.repo.read_ref(&spec)?)
    }

    /// The delta a pull of `t` would use, with its superblock's checksum.
    async fn choose_delta(
        &self,
        summary: Option<&Summary>,
        t: &Target,
    ) -> Result<Option<(DeltaName, Checksum)>> {
        let deltas = self.deltas_to(summary, &t.commit).await?;
        if deltas.is_empty() {
            return Ok(None);
        }
        let local_ref = self.local_ref_commit(t)?;
        let mut candidates: Vec<(u64, &(DeltaName, Checksum))> = deltas
            .iter()
            .filter_map(|d| match d.0.from {
                Some(f) if self.is_complete(&f) => {
                    let rank = if Some(f) == local_ref {
                        u64::MAX
                    } else {
                        self.repo.load_commit(&f).map(|c| c.timestamp).unwrap_or(0)
                    };
                    Some((rank, d))
                }
                _ => None,
            })
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let chosen = match candidates.first() {
            Some((_, d)) => *d,
            None if local_ref.is_none() => match deltas.iter().find(|d| d.0.from.is_none()) {
                Some(d) => d,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        Ok(Some(*chosen))
    }

    /// A delta's superblock file, checked against the checksum the remote lists, and
    /// parsed.
    async fn fetch_superblock(
        &self,
        name: &DeltaName,
        superblock_sum: &Checksum,
    ) -> Result<(Vec<u8>, delta::Superblock)> {
        let base = &self.remote.content_url;
        let sb_path = format!("{}/superblock", name.relpath());
        let url = format!("{}/{sb_path}", base.trim_end_matches('/'));
        let bytes = self
            .fetcher
            .get(base, &sb_path, false, MAX_METADATA_SIZE)
            .await?
            .unwrap_or_default();
        let actual = Checksum::of(&bytes);
        if actual != *superblock_sum {
            return Err(Error::BadReply {
                url,
                message: format!(
                    "superblock hashes to {actual}, the remote lists {superblock_sum}"
                ),
            });
        }
        let (sb, _) = delta::parse_superblock_file(&bytes).map_err(|e| Error::BadReply {
            url,
            message: e.to_string(),
        })?;
        Ok((bytes, sb))
    }

    async fn apply_delta(
        &self,
        name: &DeltaName,
        superblock_sum: &Checksum,
        ref_name: Option<&str>,
        tx: &mpsc::SyncSender<(ObjectName, Downloaded)>,
    ) -> Result<Vec<ObjectName>> {
        let base = &self.remote.content_url;
        let url = format!(
            "{}/{}/superblock",
            base.trim_end_matches('/'),
            name.relpath()
        );
        let (bytes, sb) = self.fetch_superblock(name, superblock_sum).await?;
        // Verify the commit it carries before anything of it is written.
        let commit_bytes = sb.commit.to_bytes();
        if self.remote.sign_verify {
            let detached = match sb.detached_metadata() {
                Some(m) => Some(m),
                None => self.fetch_commitmeta(&name.to).await?,
            };
            self.keys
                .verify_commit(&name.to, &commit_bytes, detached.as_ref())?;
        }
        if let Some(r) = ref_name
            && !self.opts.disable_verify_bindings
            && let Some(bindings) = sb
                .commit
                .metadata
                .get("ostree.ref-binding")
                .and_then(Value::as_strv)
            && !bindings.iter().any(|b| b == r)
        {
            return Err(Error::BadReply {
                url,
                message: format!(
                    "commit {} is bound to refs {bindings:?}, not to {r:?} (ostree.ref-binding)",
                    name.to
                ),
            });
        }
        // The parts not already satisfied are downloaded to files (a few at once) while
        // they are applied: each part is decompressed and applied as its bytes arrive.
        let needed: Vec<usize> = sb
            .parts
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                sb.inline_part(*i).is_none() && !p.objects.iter().all(|o| self.txn.has_object(o))
            })
            .map(|(i, _)| i)
            .collect();
        let parts: std::collections::HashMap<usize, PartDownload> = needed
            .iter()
            .map(|&i| {
                (
                    i,
                    PartDownload::new(self.txn.temp_path(&format!("delta-part-{i}"))),
                )
            })
            .collect();
        write_file_atomic(&partial_path(self.repo, &name.to), b"")?;
        // The fallback objects are fetched (and stored by the writer threads) meanwhile too.
        let fallbacks: Vec<ObjectName> = sb
            .fallbacks
            .iter()
            .map(|f| f.object)
            .filter(|o| !self.txn.has_object(o))
            .collect();
        let download_parts = stream::iter(needed)
            .map(|i| {
                let part = &parts[&i];
                async move {
                    let r = self
                        .fetcher
                        .get_to_file_watched(base, &name.part_relpath(i), &part.path, false, &|n| {
                            part.written(n)
                        })
                        .await
                        .map(drop);
                    part.finish(r.as_ref().map(|_| ()).map_err(ToString::to_string));
                    r
                }
            })
            .buffer_unordered(self.parallel_requests().min(4))
            .collect::<Vec<Result<()>>>();
        let runtime = tokio::runtime::Handle::current();
        let (report, fetched) = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let fetching = scope.spawn(|| {
                    runtime.block_on(async {
                        let (parts, fallbacks) = futures_util::future::join(
                            download_parts,
                            self.fetch_files(stream::iter(fallbacks.clone()), tx.clone()),
                        )
                        .await;
                        // A failed download is the error to report, not what the
                        // part's reader made of it.
                        parts.into_iter().collect::<Result<()>>().and(fallbacks)
                    })
                });
                let report = delta::apply(self.txn, &bytes, |i| {
                    parts.get(&i).map(|p| p.reader(i)).ok_or_else(|| {
                        treeline_store::Error::InvalidObject {
                            object: format!("static delta part {i}"),
                            reason: "was not fetched".into(),
                        }
                    })
                });
                let fetched = fetching.join().unwrap_or_else(|_| {
                    Err(Error::Network {
                        url: base.clone(),
                        message: "the fetching thread panicked".into(),
                    })
                });
                (report, fetched)
            })
        });
        for p in parts.values() {
            let _ = std::fs::remove_file(&p.path);
        }
        fetched?;
        let report = report.map_err(|e| Error::BadReply {
            url: format!("{}/{}", base.trim_end_matches('/'), name.relpath()),
            message: e.to_string(),
        })?;
        if let Some(m) = sb.detached_metadata() {
            self.repo.write_commitmeta(&name.to, &m)?;
        }
        self.stored
            .fetch_add(report.objects_written as u64, Ordering::Relaxed);
        if let Ok(mut d) = self.deltas_used.lock() {
            d.push(name.to_string());
        }
        Ok(fallbacks)
    }

    /// ostree clients pull only from archive repositories; the remote's `config` says
    /// which mode it is (a missing `config` is tolerated, as static mirrors may omit it).
    async fn check_remote_mode(&self) -> Result<()> {
        let Some(bytes) = self
            .fetcher
            .get(&self.remote.url, "config", true, 1 << 20)
            .await?
        else {
            return Ok(());
        };
        let url = format!("{}/config", self.remote.url.trim_end_matches('/'));
        let text = String::from_utf8(bytes).map_err(|_| Error::BadReply {
            url: url.clone(),
            message: "config is not UTF-8".into(),
        })?;
        let cfg = treeline_store::keyfile::KeyFile::parse(&text).map_err(|e| Error::BadReply {
            url: url.clone(),
            message: e.to_string(),
        })?;
        match cfg.raw_value("core", "mode") {
            Some("archive" | "archive-z2") => Ok(()),
            other => Err(Error::BadReply {
                url,
                message: format!(
                    "can't pull from a {} repository over HTTP: the remote must be in archive mode",
                    other.unwrap_or("bare")
                ),
            }),
        }
    }

    async fn fetch_summary(&self) -> Result<Option<Summary>> {
        let base = &self.remote.url;
        let Some(bytes) = self
            .fetcher
            .get(base, "summary", true, MAX_SUMMARY_SIZE)
            .await?
        else {
            if self.remote.sign_verify_summary {
                return Err(Error::BadReply {
                    url: format!("{base}/summary"),
                    message: "the remote requires a signed summary but serves none".into(),
                });
            }
            return Ok(None);
        };
        if self.remote.sign_verify_summary {
            let sig = self
                .fetcher
                .get(base, "summary.sig", true, MAX_SUMMARY_SIZE)
                .await?;
            let sigs = sig
                .and_then(|s| Metadata::from_bytes(&s).ok())
                .and_then(|m| m.get(ED25519_KEY).and_then(Value::as_bytes_array))
                .unwrap_or_default();
            if !self.keys.verify(&bytes, &sigs) {
                return Err(Error::BadReply {
                    url: format!("{base}/summary.sig"),
                    message: "the summary has no ed25519 signature from a trusted key".into(),
                });
            }
        }
        Summary::from_bytes(&bytes)
            .map(Some)
            .map_err(|m| Error::BadReply {
                url: format!("{base}/summary"),
                message: m,
            })
    }

    async fn resolve_targets(&self, summary: Option<&Summary>) -> Result<Vec<Target>> {
        let mut wanted = self.opts.refs.clone();
        if wanted.is_empty() {
            wanted = match (self.opts.mirror, summary) {
                (true, Some(s)) => s.refs.iter().map(|r| r.name.clone()).collect(),
                _ => self.remote.branches.clone(),
            };
        }
        if wanted.is_empty() {
            return Err(Error::Remote {
                remote: self.remote.name.clone(),
                message: "no ref to pull: name one, or configure branches".into(),
            });
        }
        let mut out = Vec::new();
        for w in wanted {
            if let Ok(c) = w.parse::<Checksum>() {
                out.push(Target {
                    ref_name: None,
                    commit: c,
                });
                continue;
            }
            let (name, pinned) = match w.split_once('@') {
                Some((n, c)) => (n.to_owned(), Some(c.parse::<Checksum>()?)),
                None => (w.clone(), None),
            };
            treeline_store::refs::validate_ref_name(&name)?;
            let commit = match pinned {
                Some(c) => c,
                None => match summary.and_then(|s| s.refs.iter().find(|r| r.name == name)) {
                    Some(r) => r.checksum,
                    None => {
                        let path = format!("refs/heads/{name}");
                        let body = self
                            .fetcher
                            .get(&self.remote.url, &path, true, 1024)
                            .await?
                            .ok_or_else(|| Error::Remote {
                                remote: self.remote.name.clone(),
                                message: format!("the remote has no ref {name:?}"),
                            })?;
                        let text = String::from_utf8_lossy(&body);
                        text.trim()
                            .parse::<Checksum>()
                            .map_err(|_| Error::BadReply {
                                url: format!("{}/{path}", self.remote.url.trim_end_matches('/')),
                                message: format!("not a checksum: {:?}", text.trim()),
                            })?
                    }
                },
            };
            out.push(Target {
                ref_name: Some(name),
                commit,
            });
        }
        Ok(out)
    }

    /// Make sure a commit object is stored (fetching, verifying and marking it partial if
    /// not); `None` when it is a parent the remote does not have.
    async fn ensure_commit(
        &self,
        c: &Checksum,
        ref_name: Option<&str>,
        max: u64,
        optional: bool,
    ) -> Result<Option<(Commit, bool)>> {
        let name = ObjectName::new(*c, ObjectType::Commit);
        // Detached metadata is always fetched: it carries signatures that may be new,
        // and a mirror of this repository must have them.
        let detached = self.fetch_commitmeta(c).await?;
        let (bytes, fetched) = if self.txn.has_object(&name) {
            (self.txn.read_meta_bytes(&name)?, false)
        } else {
            let Some(bytes) = self
                .fetcher
                .get(&self.remote.content_url, &object_path(&name), optional, max)
                .await?
            else {
                return Ok(None);
            };
            let actual = Checksum::of(&bytes);
            if actual != *c {
                return Err(self.bad(&name, format!("commit content hashes to {actual}")));
            }
            (bytes, true)
        };
        let commit = Commit::from_bytes(&bytes).map_err(|m| self.bad(&name, m))?;
        // Signature and binding are checked for local commits too: a ref must never
        // move to a commit this remote would refuse.
        if self.remote.sign_verify {
            self.keys.verify_commit(c, &bytes, detached.as_ref())?;
        }
        if let Some(r) = ref_name
            && !self.opts.disable_verify_bindings
            && let Some(bindings) = commit
                .metadata
                .get("ostree.ref-binding")
                .and_then(Value::as_strv)
            && !bindings.iter().any(|b| b == r)
        {
            return Err(self.bad(
                &name,
                format!("commit is bound to refs {bindings:?}, not to {r:?} (ostree.ref-binding)"),
            ));
        }
        if fetched {
            write_file_atomic(&partial_path(self.repo, c), b"")?;
            self.txn.write_meta_as(&name, &bytes)?;
            self.stored.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = &detached {
            self.repo.write_commitmeta(c, m)?;
        }
        Ok(Some((commit, fetched)))
    }

    /// The commit's detached metadata from the remote, if it has any.
    async fn fetch_commitmeta(&self, c: &Checksum) -> Result<Option<Metadata>> {
        let meta_name = ObjectName::new(*c, ObjectType::CommitMeta);
        let path = object_path(&meta_name);
        let Some(bytes) = self
            .fetcher
            .get(&self.remote.url, &path, true, MAX_METADATA_SIZE)
            .await?
        else {
            return Ok(None);
        };
        treeline_store::object::commitmeta_from_bytes(&bytes)
            .map(Some)
            .map_err(|m| Error::BadReply {
                url: format!("{}/{path}", self.remote.url.trim_end_matches('/')),
                message: m,
            })
    }

    /// Walk a commit's tree, fetching missing dirtrees and dirmetas (up to `max_parallel`
    /// at once, each handled as soon as it arrives), and collect the content objects that
    /// are missing. Subdirectories equal (same dirtree and dirmeta) to the same path in
    /// `base`, a complete local commit, are complete too and not walked, and files the
    /// base has in the same directory are not looked up: after a delta, or for an update
    /// that changed a few directories, only what changed is read.
    async fn scan_tree(
        &self,
        commit: &Commit,
        base: Option<Checksum>,
        files: &mut dyn FnMut(ObjectName),
        queued: &mut HashSet<ObjectName>,
    ) -> Result<()> {
        // A base that cannot be read is no help, not an error: the full walk still works.
        let base_root = match base.and_then(|b| self.repo.load_commit(&b).ok()) {
            Some(c) if (c.root_tree, c.root_meta) == (commit.root_tree, commit.root_meta) => {
                return Ok(());
            }
            Some(c) => Some(c.root_tree),
            None => None,
        };
        // Directory objects to read, each dirtree with the dirtree at its path in `base`.
        let mut waiting = std::collections::VecDeque::new();
        let mut seen = HashSet::new();
        let mut want = |waiting: &mut std::collections::VecDeque<_>, tree, meta, base| {
            for name in [
                ObjectName::new(tree, ObjectType::DirTree),
                ObjectName::new(meta, ObjectType::DirMeta),
            ] {
                if seen.insert(name) {
                    waiting.push_back((name, base));
                }
            }
        };
        want(&mut waiting, commit.root_tree, commit.root_meta, base_root);
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        loop {
            while in_flight.len() < self.parallel_requests()
                && let Some((name, base)) = waiting.pop_front()
            {
                in_flight.push(async move {
                    self.ensure_meta(name)
                        .await
                        .map(|bytes| (name, base, bytes))
                });
            }
            let Some(done) = in_flight.next().await else {
                break;
            };
            let (name, base, bytes) = done?;
            let Some(bytes) = bytes.filter(|_| name.objtype == ObjectType::DirTree) else {
                continue;
            };
            let tree = DirTree::from_bytes(&bytes).map_err(|m| self.bad(&name, m))?;
            // The base's dirtree at this path (local and complete).
            let base_tree = base.and_then(|b| self.repo.load_dirtree(&b).ok());
            let base_files: HashSet<&Checksum> = base_tree
                .as_ref()
                .map(|b| b.files.iter().map(|(_, c)| c).collect())
                .unwrap_or_default();
            for (_, f) in &tree.files {
                if base_files.contains(f) {
                    continue;
                }
                let fname = ObjectName::new(*f, ObjectType::File);
                if queued.insert(fname) && !self.txn.has_object(&fname) {
                    files(fname);
                }
            }
            let base_dirs: std::collections::HashMap<&str, (&Checksum, &Checksum)> = base_tree
                .as_ref()
                .map(|b| {
                    b.dirs
                        .iter()
                        .map(|(n, t, m)| (n.as_str(), (t, m)))
                        .collect()
                })
                .unwrap_or_default();
            for (n, t, m) in &tree.dirs {
                match base_dirs.get(n.as_str()) {
                    Some(&(bt, bm)) if (bt, bm) == (t, m) => {}
                    Some(&(bt, _)) => want(&mut waiting, *t, *m, Some(*bt)),
                    None => want(&mut waiting, *t, *m, None),
                }
            }
        }
        Ok(())
    }

    fn bad(&self, name: &ObjectName, message: String) -> Error {
        let base = if name.objtype == ObjectType::CommitMeta {
            &self.remote.url
        } else {
            &self.remote.content_url
        };
        Error::BadReply {
            url: format!("{}/{}", base.trim_end_matches('/'), object_path(name)),
            message,
        }
    }

    /// A dirtree's bytes (fetched and stored if missing); dirmetas are only ensured.
    async fn ensure_meta(&self, name: ObjectName) -> Result<Option<Vec<u8>>> {
        if self.txn.has_object(&name) {
            return if name.objtype == ObjectType::DirTree {
                Ok(Some(self.txn.read_meta_bytes(&name)?))
            } else {
                Ok(None)
            };
        }
        let bytes = self
            .fetcher
            .get(
                &self.remote.content_url,
                &object_path(&name),
                false,
                MAX_METADATA_SIZE,
            )
            .await?
            .unwrap_or_default();
        let actual = Checksum::of(&bytes);
        if actual != name.checksum {
            return Err(self.bad(&name, format!("content hashes to {actual}")));
        }
        match name.objtype {
            ObjectType::DirTree => DirTree::from_bytes(&bytes).map(drop),
            _ => DirMeta::from_bytes(&bytes).map(drop),
        }
        .map_err(|m| self.bad(&name, m))?;
        self.txn.write_meta_as(&name, &bytes)?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    async fn fetch_files(
        &self,
        files: impl futures_util::Stream<Item = ObjectName>,
        tx: mpsc::SyncSender<(ObjectName, Downloaded)>,
    ) -> Result<()> {
        let counter = AtomicU64::new(0);
        let results: Vec<Result<()>> = files
            .map(|name| {
                let tx = tx.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    if self.failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let spare = self.spare_files.lock().ok().and_then(|mut v| v.pop());
                    let reused = spare.is_some();
                    let path = spare.unwrap_or_else(|| self.txn.temp_path(&format!("pull-{n}")));
                    match self
                        .fetcher
                        .get_small_or_to_file(
                            &self.remote.content_url,
                            &object_path(&name),
                            &path,
                            IN_MEMORY_OBJECT_LIMIT,
                        )
                        .await
                    {
                        Ok(fetched) => {
                            let downloaded = match fetched {
                                Fetched::Memory(b) => {
                                    if reused {
                                        self.spare_file(path);
                                    }
                                    Downloaded::Memory(b)
                                }
                                Fetched::File => Downloaded::File(path),
                            };
                            // The writer threads verify and store it (or delete it). Only a
                            // full queue costs this worker thread a blocking hand-off.
                            match tx.try_send((name, downloaded)) {
                                Err(mpsc::TrySendError::Full(item)) => {
                                    let _ = tokio::task::block_in_place(|| tx.send(item));
                                }
                                Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => {}
                            }
                            Ok(())
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            self.failed.store(true, Ordering::Relaxed);
                            Err(e)
                        }
                    }
                }
            })
            .buffer_unordered(self.parallel_requests())
            .collect()
            .await;
        drop(tx);
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_follow_the_archive_layout() {
        let c = Checksum::of(b"x");
        let hex = c.to_hex();
        assert_eq!(
            object_path(&ObjectName::new(c, ObjectType::File)),
            format!("objects/{}/{}.filez", &hex[..2], &hex[2..])
        );
        assert_eq!(
            object_path(&ObjectName::new(c, ObjectType::CommitMeta)),
            format!("objects/{}/{}.commitmeta", &hex[..2], &hex[2..])
        );
    }
}
