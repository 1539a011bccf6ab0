//! Fetching files from a remote repository: HTTP(S) with bounded retries, or `file://`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;

use crate::{Error, Result};

/// Traffic counters, for progress and for benchmarks.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests sent (including retries).
    pub requests: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Objects stored.
    pub objects: AtomicU64,
}

/// Where [`Fetcher::get_small_or_to_file`] put a body.
#[derive(Debug)]
pub enum Fetched {
    /// Small: the bytes.
    Memory(Vec<u8>),
    /// Written to the destination file.
    File,
}

/// Fetches paths below a base URL.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    retries: u32,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

fn tls_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(LazyRootsVerifier {
        provider: Arc::clone(&provider),
        inner: OnceLock::new(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Network {
            url: String::new(),
            message: format!("TLS setup: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// The standard WebPKI verifier over the system's CA certificates, loaded at the first TLS
/// handshake: reading the CA directory costs ~100 ms, which a plain-HTTP pull (the common
/// case on a LAN or loopback) should not pay. Our own root store, not reqwest's default:
/// that one fails outright on machines without a CA bundle (minimal containers,
/// initramfs), even for plain-HTTP remotes.
#[derive(Debug)]
struct LazyRootsVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: OnceLock<std::result::Result<Arc<rustls::client::WebPkiServerVerifier>, String>>,
}

impl LazyRootsVerifier {
    fn get(
        &self,
    ) -> std::result::Result<&Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        self.inner
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| format!("no usable CA certificates on this system: {e}"))
            })
            .as_ref()
            .map_err(|m| rustls::Error::General(m.clone()))
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn retryable_status(s: u16) -> bool {
    s >= 500 || s == 408 || s == 429
}

impl Fetcher {
    /// A fetcher retrying transient failures `retries` times; each request times out
    /// after `timeout` without progress.
    pub fn new(retries: u32, timeout: Duration) -> Result<Self> {
        let mut tls = tls_config()?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(timeout)
            .pool_max_idle_per_host(16)
            .user_agent(concat!("treeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Network {
                url: String::new(),
                message: format!("cannot create HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            retries,
            stats: Arc::new(Stats::default()),
        })
    }

    fn url(base: &str, path: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), path)
    }

    /// GET `path` below `base` into memory. `None` for a 404 when `optional`. Bodies larger
    /// than `max_size` are refused.
    pub async fn get(
        &self,
        base: &str,
        path: &str,
        optional: bool,
        max_size: u64,
    ) -> Result<Option<Vec<u8>>> {
        let url = Self::url(base, path);
        if let Some(p) = url.strip_prefix("file://") {
            return read_local(p, &url, optional, max_size).await;
        }
        self.with_retries(&url, optional, || self.try_get(&url, max_size))
            .await
    }

    /// Run one request attempt until it succeeds, fails for good, or retries run out;
    /// a 404 is `None` when `optional`.
    async fn with_retries<T, F, Fut>(
        &self,
        url: &str,
        optional: bool,
        attempt_once: F,
    ) -> Result<Option<T>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Option<T>, (Error, bool)>>,
    {
        let mut attempt = 0;
        loop {
            match attempt_once().await {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) if optional => return Ok(None),
                Ok(None) => {
                    return Err(Error::Http {
                        url: url.to_owned(),
                        status: 404,
                    });
                }
                Err((e, retry)) if retry && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!("{e}; retrying ({attempt}/{})", self.retries);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn try_get(
        &self,
        url: &str,
        max_size: u64,
    ) -> std::result::Result<Option<Vec<u8>>, (Error, bool)> {
        let resp = self.send(url).await?;
        let Some(resp) = resp else { return Ok(None) };
        self.read_body(url, resp, max_size).await.map(Some)
    }

    async fn read_body(
        &self,
        url: &str,
        resp: reqwest::Response,
        max_size: u64,
    ) -> std::result::Result<Vec<u8>, (Error, bool)> {
        let mut body = Vec::with_capacity(
            resp.content_length()
                .unwrap_or(0)
                .min(max_size)
                .min(1 << 20) as usize,
        );
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| net_err(url, e))?;
            self.stats
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if (body.len() + chunk.len()) as u64 > max_size {
                return Err((
                    Error::BadReply {
                        url: url.to_owned(),
                        message: format!("reply is larger than the {max_size} bytes allowed"),
                    },
                    false,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn send(
        &self,
        url: &str,
    ) -> std::result::Result<Option<reqwest::Response>, (Error, bool)> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| net_err(url, e))?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(Some(resp)),
            404 | 410 => Ok(None),
            s => Err((
                Error::Http {
                    url: url.to_owned(),
                    status: s,
                },
                retryable_status(s),
            )),
        }
    }

    /// GET `path` below `base`: into memory when the server says it is at most
    /// `in_memory_limit` bytes long, else streamed into `dest` as [`Self::get_to_file`]
    /// does. Small objects then cost no temporary file.
    pub async fn get_small_or_to_file(
        &self,
        base: &str,
        path: &str,
        dest: &Path,
        in_memory_limit: u64,
    ) -> Result<Fetched> {
        let url = Self::url(base, path);
        if url.starts_with("file://") {
            return self
                .get_to_file(base, path, dest, false)
                .await
                .map(|_| Fetched::File);
        }
        self.with_retries(&url, false, || async {
            let Some(resp) = self.send(&url).await? else {
                return Ok(None);
            };
            match resp.content_length() {
                Some(n) if n <= in_memory_limit => self
                    .read_body(&url, resp, in_memory_limit)
                    .await
                    .map(|b| Some(Fetched::Memory(b))),
                _ => self
                    .body_to_file(&url, resp, dest, &|_| {})
                    .await
                    .map(|_| Some(Fetched::File)),
            }
        })
        .await?
        .ok_or(Error::Http { url, status: 404 })
    }

    /// GET `path` below `base`, streaming the body into `dest` (created or truncated).
    /// Returns the byte count, `None` for a 404 when `optional`.
    pub async fn get_to_file(
        &self,
        base: &str,
        path: &str,
        dest: &Path,
        optional: bool,
    ) -> Result<Option<u64>> {
        self.get_to_file_watched(base, path, dest, optional, &|_| {})
            .await
    }

    /// [`Self::get_to_file`], telling `written` how many bytes of `dest` are written and
    /// readable so far: 0 when an attempt (re)creates the file, then the count after each
    /// flushed MiB and at the end. Lets a reader consume the file while it downloads.
    pub async fn get_to_file_watched(
        &self,
        base: &str,
        path: &str,
        dest: &Path,
        optional: bool,
        written: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<u64>> {
        let url = Self::url(base, path);
        if let Some(p) = url.strip_prefix("file://") {
            return match tokio::fs::copy(p, dest).await {
                Ok(n) => {
                    written(n);
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n, Ordering::Relaxed);
                    Ok(Some(n))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::Http { url, status: 404 })
                }
                Err(e) => Err(Error::Network {
                    url,
                    message: e.to_string(),
                }),
            };
        }
        self.with_retries(&url, optional, || self.try_get_to_file(&url, dest, written))
            .await
    }

    async fn try_get_to_file(
        &self,
        url: &str,
        dest: &Path,
        written: &(dyn Fn(u64) + Sync),
    ) -> std::result::Result<Option<u64>, (Error, bool)> {
        let Some(resp) = self.send(url).await? else {
            return Ok(None);
        };
        self.body_to_file(url, resp, dest, written).await.map(Some)
    }

    async fn body_to_file(
        &self,
        url: &str,
        resp: reqwest::Response,
        dest: &Path,
        written: &(dyn Fn(u64) + Sync),
    ) -> std::result::Result<u64, (Error, bool)> {
        let io = |e: std::io::Error| {
            (
                Error::Network {
                    url: url.to_owned(),
                    message: format!("writing {}: {e}", dest.display()),
                },
                false,
            )
        };
        written(0);
        // Plain writes, not tokio's file: a chunk goes into the page cache in
        // microseconds, far less than a hand-off to a blocking thread per chunk costs.
        let mut file = std::fs::File::create(dest).map_err(io)?;
        let mut n = 0u64;
        let mut told = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| net_err(url, e))?;
            self.stats
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            n += chunk.len() as u64;
            std::io::Write::write_all(&mut file, &chunk).map_err(io)?;
            if n - told >= 1 << 20 {
                told = n;
                written(n);
            }
        }
        written(n);
        Ok(n)
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

fn net_err(url: &str, e: reqwest::Error) -> (Error, bool) {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    (
        Error::Network {
            url: url.to_owned(),
            message,
        },
        true,
    )
}

async fn read_local(
    path: &str,
    url: &str,
    optional: bool,
    max_size: u64,
) -> Result<Option<Vec<u8>>> {
    match tokio::fs::metadata(path).await {
        Ok(md) if md.len() > max_size => Err(Error::BadReply {
            url: url.to_owned(),
            message: format!("file is larger than the {max_size} bytes allowed"),
        }),
        Ok(_) => tokio::fs::read(path)
            .await
            .map(Some)
            .map_err(|e| Error::Network {
                url: url.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Http {
            url: url.to_owned(),
            status: 404,
        }),
        Err(e) => Err(Error::Network {
            url: url.to_owned(),
            message: e.to_string(),
        }),
    }
}
