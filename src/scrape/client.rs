//! The kubelet HTTPS client: kept-alive connections under one idle budget for every node
//! (`super::pool`), the credentials kubelets expect, and a bounded read of each response into
//! one buffer.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, HOST,
};
use http::uri::Authority;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::HandshakeKind;
use rustls::client::{ClientSessionStore, Resumption};
use secrecy::ExposeSecret as _;

use super::pool::{IdlePool, PoolStats, Sender, SessionCache};
use super::{BoxError, NodeScrapeError, ScrapeError};
use crate::options::KubeletOptions;
use crate::tls::{self, ClientIdentity, KubeletCertError, KubeletTrust};

/// What we ask kubelets for: the text format our parser reads, gzip-compressed if they will
/// (as Go clients such as metrics-server ask; it cuts the bytes on the wire about tenfold).
const ACCEPT_TEXT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// How much of an error response's body goes into the error message.
const ERROR_BODY_EXCERPT: usize = 256;

/// Where the bearer token for kubelets comes from.
#[derive(Debug)]
pub enum TokenSource {
    None,
    /// A token written in the kubeconfig.
    Static(HeaderValue),
    /// A token file (kubeconfig `tokenFile` or the in-cluster service account), re-read when
    /// its modification time changes so that projected-token rotation is picked up.
    File {
        path: PathBuf,
        cached: Mutex<Option<(SystemTime, HeaderValue)>>,
    },
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl TokenSource {
    /// A file source, read once now so that a missing or unreadable file fails the start.
    pub fn file(path: PathBuf) -> Result<Self, ScrapeError> {
        let source = Self::File {
            path,
            cached: Mutex::new(None),
        };
        source.read_file_now()?;
        Ok(source)
    }

    fn read_file_now(&self) -> Result<Option<HeaderValue>, ScrapeError> {
        let Self::File { path, cached } = self else {
            return Ok(None);
        };
        let err = |source| ScrapeError::TokenFile {
            path: path.clone(),
            source,
        };
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(err)?;
        let mut guard = cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value)) = &*guard
            && *seen == mtime
        {
            return Ok(Some(value.clone()));
        }
        let text = std::fs::read_to_string(path).map_err(err)?;
        let value = bearer(&text).ok_or_else(|| ScrapeError::TokenInvalid {
            origin: path.display().to_string(),
        })?;
        if guard.is_some() {
            tracing::info!(path = %path.display(), "bearer token file changed; using the new token");
        }
        *guard = Some((mtime, value.clone()));
        Ok(Some(value))
    }

    /// The token to send now. For a file this checks its modification time (call it once per
    /// tick, not per request); if the file became unreadable the previous token is kept.
    pub fn current(&self) -> Option<HeaderValue> {
        match self {
            Self::None => None,
            Self::Static(v) => Some(v.clone()),
            Self::File { path, cached } => match self.read_file_now() {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot re-read the bearer token file; keeping the previous token");
                    cached
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .map(|(_, v)| v.clone())
                }
            },
        }
    }
}

/// Credentials and trust for talking to kubelets.
#[derive(Debug)]
pub struct KubeletAuth {
    pub trust: KubeletTrust,
    pub identity: Option<ClientIdentity>,
    pub token: TokenSource,
}

fn base64_data(what: &'static str, data: &str) -> Result<Vec<u8>, ScrapeError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|source| ScrapeError::Base64 { what, source })
}

impl KubeletAuth {
    /// Derives kubelet credentials as metrics-server does: the API client's own credentials
    /// and CA, with `--kubelet-certificate-authority`, `--kubelet-client-certificate/-key` and
    /// `--kubelet-insecure-tls` taking precedence.
    pub fn from_kube_config(
        kube: &kube::Config,
        opts: &KubeletOptions,
    ) -> Result<Self, ScrapeError> {
        // The options warn about --kubelet-insecure-tls at start.
        let trust = if opts.insecure_tls {
            KubeletTrust::Insecure
        } else if let Some(path) = &opts.certificate_authority {
            let pem = tls::read_file("kubelet CA file", path)?;
            let origin = format!("--kubelet-certificate-authority {}", path.display());
            KubeletTrust::Roots {
                roots: tls::parse_certificates("kubelet CA", &origin, &pem)?,
                origin,
            }
        } else if kube.accept_invalid_certs {
            tracing::warn!(
                "the kubeconfig sets insecure-skip-tls-verify, so kubelet serving certificates \
                 are NOT verified either (as metrics-server does); set \
                 --kubelet-certificate-authority to verify them"
            );
            KubeletTrust::Insecure
        } else if let Some(roots) = kube.root_cert.as_ref().filter(|r| !r.is_empty()) {
            KubeletTrust::Roots {
                roots: roots.iter().map(|der| der.clone().into()).collect(),
                origin: "the cluster CA from the kubeconfig".into(),
            }
        } else {
            return Err(ScrapeError::NoKubeletCa);
        };

        let identity = match (&opts.client_certificate, &opts.client_key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = tls::load_cert_and_key(cert, key)?;
                Some(ClientIdentity {
                    chain,
                    key,
                    origin: format!("--kubelet-client-certificate {}", cert.display()),
                })
            }
            (None, None) => kubeconfig_identity(&kube.auth_info)?,
            _ => return Err(ScrapeError::HalfClientCertificate),
        };

        let auth = &kube.auth_info;
        let token = if let Some(token) = &auth.token {
            TokenSource::Static(bearer(token.expose_secret()).ok_or_else(|| {
                ScrapeError::TokenInvalid {
                    origin: "the kubeconfig's token".into(),
                }
            })?)
        } else if let Some(path) = &auth.token_file {
            TokenSource::file(PathBuf::from(path))?
        } else {
            if auth.exec.is_some() || auth.auth_provider.is_some() {
                tracing::warn!(
                    "the kubeconfig user gets its token from an exec plugin or auth provider, \
                     which kubelet scraping does not run; kubelets will see no bearer token \
                     (use a token, a token file or --kubelet-client-certificate)"
                );
            }
            TokenSource::None
        };
        Ok(Self {
            trust,
            identity,
            token,
        })
    }
}

/// The kubeconfig user's client certificate, if it has one.
fn kubeconfig_identity(
    auth: &kube::config::AuthInfo,
) -> Result<Option<ClientIdentity>, ScrapeError> {
    let cert = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => Some((
            base64_data("client-certificate-data", data)?,
            "the kubeconfig's client-certificate-data".to_owned(),
        )),
        (None, Some(path)) => Some((
            tls::read_file("client certificate", Path::new(path))?,
            path.clone(),
        )),
        (None, None) => None,
    };
    let key = match (&auth.client_key_data, &auth.client_key) {
        (Some(data), _) => Some((
            base64_data("client-key-data", data.expose_secret())?,
            "the kubeconfig's client-key-data".to_owned(),
        )),
        (None, Some(path)) => Some((tls::read_file("client key", Path::new(path))?, path.clone())),
        (None, None) => None,
    };
    match (cert, key) {
        (None, None) => Ok(None),
        (Some((cert, origin)), Some((key, key_origin))) => Ok(Some(ClientIdentity {
            chain: tls::parse_certificates("client certificate", &origin, &cert)?,
            key: tls::parse_private_key("client key", &key_origin, &key)?,
            origin,
        })),
        _ => Err(ScrapeError::HalfClientCertificate),
    }
}

/// A successful response body.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The decoded (decompressed) page.
    pub body: Vec<u8>,
    /// Bytes as received.
    pub received: usize,
}

/// Issues kubelet requests over kept-alive connections, at most `idle_budget` of them idle at
/// once (see the `pool` module).
#[derive(Clone)]
pub struct KubeletClient {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<IdlePool>,
    sessions: Arc<SessionCache>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("pool", &self.pool.stats())
            .finish_non_exhaustive()
    }
}

impl KubeletClient {
    /// Builds the client. `tls` is built once here and shared by every connection, with a
    /// session cache of ours so reconnects resume; `idle_timeout` should outlast the
    /// resolution so connections survive between ticks; `idle_budget` bounds the idle
    /// connections kept in all (0 keeps none).
    pub fn new(
        mut tls: rustls::ClientConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
        idle_budget: usize,
        max_body_bytes: usize,
    ) -> Self {
        let sessions = Arc::new(SessionCache::new());
        tls.resumption = Resumption::store(Arc::clone(&sessions) as Arc<dyn ClientSessionStore>);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        // Notice dead peers (a node that vanished without closing) on idle pooled connections.
        http.set_keepalive(Some(Duration::from_secs(30)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Self {
            connector,
            pool: Arc::new(IdlePool::new(idle_budget, idle_timeout)),
            sessions,
            max_body_bytes,
        }
    }

    /// The pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Called once per tick with the node count: sizes the TLS session cache to it and closes
    /// connections idle past the timeout.
    pub(crate) fn tick_housekeeping(&self, nodes: usize) {
        self.sessions.reserve(nodes);
        self.pool.expire();
    }

    /// A new connection to `url`'s kubelet: TCP connect, TLS handshake (resumed when the
    /// session cache has a ticket for it), HTTP/1.1 handshake.
    async fn connect(&self, url: &Uri) -> Result<Sender, NodeScrapeError> {
        let stream = tower::ServiceExt::oneshot(self.connector.clone(), url.clone())
            .await
            .map_err(|e| classify(url, Phase::Connect, e))?;
        let resumed = match &stream {
            MaybeHttpsStream::Https(tls) => {
                tls.inner().get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed)
            }
            MaybeHttpsStream::Http(_) => false,
        };
        self.pool.opened(resumed);
        let (sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(|e| classify(url, Phase::Connect, Box::new(e)))?;
        // The task ends, closing the socket, when the kubelet closes or the sender is dropped.
        // It reads and decrypts the bodies, so it gives way to serving threads like the scrapes.
        tokio::spawn(super::courtesy::courteous(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "kubelet connection ended");
            }
        }));
        Ok(sender)
    }

    /// Connects to `url`'s kubelet ahead of its first scrape (TCP, TLS and HTTP/1.1
    /// handshakes, no request) and keeps the connection idle for it. Does nothing when a
    /// connection to it is held or the budget is full; returns whether it connected.
    pub(crate) async fn preconnect(&self, url: &Uri) -> Result<bool, NodeScrapeError> {
        let Some(address) = url.authority() else {
            return Ok(false);
        };
        if self.pool.holds_or_full(address) {
            return Ok(false);
        }
        let sender = self.connect(url).await?;
        self.pool.put(address.clone(), sender);
        Ok(true)
    }

    /// Sends `request` on the address's idle connection if it has a live one, else on a new
    /// connection; returns the response and the connection, to give back once the body is
    /// read.
    async fn send(
        &self,
        url: &Uri,
        address: &Authority,
        request: Request<Empty<Bytes>>,
    ) -> Result<(http::Response<Incoming>, Sender), SendError> {
        let mut idle = self.pool.take(address);
        // A kept-alive connection the kubelet closed fails `ready`: open a new one.
        if let Some(sender) = &mut idle
            && sender.ready().await.is_err()
        {
            idle = None;
        }
        let mut sender = match idle {
            Some(sender) => {
                self.pool.reused();
                sender
            }
            None => self.connect(url).await.map_err(SendError::Fatal)?,
        };
        match sender.send_request(request).await {
            Ok(resp) => Ok((resp, sender)),
            Err(e) => Err(SendError::Exchange(e)),
        }
    }

    /// GETs `url` and reads the whole body, decompressed, into one buffer. The caller bounds
    /// the time; this bounds the size.
    /// `size_hint` is the previous body's (received, decoded) size, to size the buffers.
    pub(crate) async fn fetch(
        &self,
        url: &Uri,
        token: Option<&HeaderValue>,
        size_hint: (usize, usize),
    ) -> Result<Fetched, NodeScrapeError> {
        let Some(address) = url.authority().cloned() else {
            return Err(NodeScrapeError::InvalidUrl {
                url: url.to_string(),
                problem: "no host".into(),
            });
        };
        // HTTP/1.1 on our own connection: the request line carries the path, Host the address.
        let path = url
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        let request = || {
            let mut req = Request::get(path.clone())
                .header(HOST, address.as_str())
                .header(ACCEPT, HeaderValue::from_static(ACCEPT_TEXT))
                .header(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            if let Some(t) = token {
                req = req.header(AUTHORIZATION, t.clone());
            }
            req.body(Empty::new())
                .map_err(|e| NodeScrapeError::InvalidUrl {
                    url: url.to_string(),
                    problem: e.to_string(),
                })
        };
        let (resp, sender) = match self.send(url, &address, request()?).await {
            Ok(ok) => ok,
            // Typically a kept-alive connection the kubelet closed just as we sent on it (its
            // idle timeout racing our tick). The GET is idempotent and nothing came back, so
            // try once more on a fresh connection, as Go's transport does.
            Err(SendError::Exchange(e)) if closed_before_response(&e) => {
                let mut sender = self.connect(url).await?;
                match sender.send_request(request()?).await {
                    Ok(resp) => (resp, sender),
                    Err(e) => return Err(classify(url, Phase::Exchange, Box::new(e))),
                }
            }
            Err(SendError::Exchange(e)) => {
                return Err(classify(url, Phase::Exchange, Box::new(e)));
            }
            Err(SendError::Fatal(e)) => return Err(e),
        };
        let status = resp.status();
        let gzip = resp
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = resp.into_body();

        if status != StatusCode::OK {
            // Keep a little of the body: kubelets explain 401/403/500 there.
            let mut excerpt = Vec::new();
            while excerpt.len() < ERROR_BODY_EXCERPT {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            excerpt.extend_from_slice(&data);
                        }
                    }
                    _ => break,
                }
            }
            excerpt.truncate(ERROR_BODY_EXCERPT);
            return Err(NodeScrapeError::Status {
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(&excerpt).trim().to_owned(),
            });
        }

        let limit = self.max_body_bytes;
        let too_large = || NodeScrapeError::BodyTooLarge {
            url: url.to_string(),
            limit,
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // A little headroom over the last size absorbs a pod or two more without regrowing.
        let guess = |last: usize| {
            if last == 0 {
                64 * 1024
            } else {
                last + last / 8
            }
        };
        let mut buf: Vec<u8> =
            Vec::with_capacity(declared.unwrap_or(guess(size_hint.0)).min(limit));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let source: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
                let expected =
                    declared.map_or_else(|| "an unknown number of".into(), |n| n.to_string());
                NodeScrapeError::Transfer {
                    url: url.to_string(),
                    detail: format!(
                        "the body broke off after {} of {expected} bytes: {}",
                        buf.len(),
                        causes(&*source)
                    ),
                    source,
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        // The exchange is complete, so the connection can serve this node's next scrape.
        self.pool.put(address, sender);
        let received = buf.len();
        if !gzip {
            return Ok(Fetched {
                body: exact(buf),
                received,
            });
        }
        let fallback = if size_hint.1 == 0 {
            received * 8
        } else {
            guess(size_hint.1)
        };
        let inflated = inflate(&buf, fallback, limit)
            .map_err(|e| transfer(url, Box::new(e)))?
            .ok_or_else(too_large)?;
        Ok(Fetched {
            body: inflated,
            received,
        })
    }
}

/// Inflates a gzip body into a buffer whose capacity is its length, or `None` when it inflates
/// to more than `limit` bytes (so a small compressed body cannot expand without bound).
///
/// The body becomes the kept page (`Bytes::from` keeps a `Vec`'s whole capacity), so spare
/// capacity would be held for a whole resolution per node. The buffer is therefore sized
/// from the gzip trailer, whose last four bytes give the inflated length (modulo 2³², for a
/// single-member stream as kubelets send): one allocation of the right size, no realloc and
/// no copy. `fallback` sizes it when the trailer is missing or beyond `limit`; a body whose
/// last bytes are not its member's trailer (anything after the first member is ignored, as
/// `GzDecoder` does) ends in [`exact`].
fn inflate(compressed: &[u8], fallback: usize, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let trailer = compressed
        .len()
        .checked_sub(4)
        .and_then(|at| compressed.get(at..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map(|t| u32::from_le_bytes(t) as usize)
        .filter(|&n| n <= limit);
    let mut inflated = Vec::with_capacity(trailer.unwrap_or(fallback).min(limit));
    // std's read_to_end probes with a small stack buffer before it grows a full buffer, so an
    // exact capacity is not doubled at the end of the stream.
    flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)?;
    if inflated.len() > limit {
        return Ok(None);
    }
    Ok(Some(exact(inflated)))
}

/// `buf` with its capacity cut to its length. Only a body whose size was guessed (chunked, or
/// a gzip trailer that did not tell) pays for this: `shrink_to_fit` reallocates, which glibc
/// does in place for a shrinking heap chunk, but it is still a call per page that the sized
/// paths avoid.
fn exact(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() != buf.len() {
        buf.shrink_to_fit();
    }
    buf
}

/// Why [`KubeletClient::send`] failed: the exchange on a connection (which may be retried when
/// nothing came back) or getting a connection at all (which may not).
enum SendError {
    Exchange(hyper::Error),
    Fatal(NodeScrapeError),
}

/// Where a client error happened: opening the connection, or the exchange on it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Exchange,
}

/// Whether the connection closed or reset before any response arrived, so the request can go
/// again safely. (TLS peers that close without close_notify surface as an unexpected EOF
/// rather than hyper's incomplete message.)
fn closed_before_response(err: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    err.is_incomplete_message()
        || err.is_canceled()
        || tls::error_chain(err).any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
                )
            })
        })
}

/// Sorts a client error into connect, TLS (with the certificate explained) or transfer.
fn classify(url: &Uri, phase: Phase, err: BoxError) -> NodeScrapeError {
    let url_s = url.to_string();
    if let Some(cert) = KubeletCertError::find_in(&*err) {
        return NodeScrapeError::Certificate {
            url: url_s,
            problem: cert.clone(),
        };
    }
    if let Some(tls_err) = tls::error_chain(&*err).find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return NodeScrapeError::Tls {
            url: url_s,
            detail: tls_err.to_string(),
        };
    }
    if phase == Phase::Connect {
        let refused = tls::error_chain(&*err)
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        let mut detail = causes(&*err);
        if refused {
            detail.push_str(
                " (is the kubelet listening there? check --kubelet-port, \
                 --kubelet-use-node-status-port and --kubelet-preferred-address-types)",
            );
        }
        NodeScrapeError::Connect {
            url: url_s,
            detail,
            source: err,
        }
    } else {
        transfer(url, err)
    }
}

fn transfer(url: &Uri, source: Box<dyn std::error::Error + Send + Sync>) -> NodeScrapeError {
    NodeScrapeError::Transfer {
        url: url.to_string(),
        detail: causes(&*source),
        source,
    }
}

/// The messages of an error's causes, joined.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in tls::error_chain(err) {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            // rustls words this as a missing close_notify, with a link to its manual.
            parts.push("the kubelet closed the connection before the answer was complete".into());
            break;
        }
        parts.push(e.to_string());
    }
    // Wrappers often repeat their cause in their own message; keep the most specific text.
    parts.dedup_by(|later, earlier| earlier.contains(later.as_str()));
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gzip(page: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(page).unwrap();
        enc.finish().unwrap()
    }

    fn kubelet_page(pods: usize) -> Vec<u8> {
        let mut page = String::new();
        for i in 0..pods {
            page.push_str(&format!(
                "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"ns\",pod=\"pod-{i}\"}} {i}.5 1700000000000\n"
            ));
        }
        page.into_bytes()
    }

    /// The inflated body is kept as the node's page, so it must cost its length: whatever
    /// the guess for the buffer was, from the trailer or from the fallback.
    #[test]
    fn an_inflated_page_has_no_spare_capacity() {
        let page = kubelet_page(300);
        let body = gzip(&page);
        // Sized from the trailer: a fallback far off either way changes nothing.
        for fallback in [0, 1000, page.len() * 8] {
            let inflated = inflate(&body, fallback, 1 << 20).unwrap().unwrap();
            assert_eq!(inflated, page);
            assert_eq!(inflated.capacity(), inflated.len(), "fallback {fallback}");
        }
        // Bytes after the member are ignored, so the last four are no trailer: the buffer
        // is sized by the fallback, grows, and is cut back.
        let mut trailing = body.clone();
        trailing.extend_from_slice(&16u32.to_le_bytes());
        for fallback in [16, page.len() * 8] {
            let inflated = inflate(&trailing, fallback, 1 << 20).unwrap().unwrap();
            assert_eq!(inflated, page);
            assert_eq!(inflated.capacity(), inflated.len(), "fallback {fallback}");
        }
        // A page over the limit is refused whatever its trailer says.
        assert_eq!(inflate(&body, 0, page.len() - 1).unwrap(), None);
        assert_eq!(
            inflate(&body, 0, page.len()).unwrap().unwrap().len(),
            page.len()
        );
        // Not gzip at all.
        assert!(inflate(&page, 0, 1 << 20).is_err());
    }

    #[test]
    fn an_uncompressed_page_is_cut_to_its_length() {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(&kubelet_page(10));
        let kept = exact(buf);
        assert_eq!(kept, kubelet_page(10));
        assert_eq!(kept.capacity(), kept.len());
    }

    fn kubelet_options() -> KubeletOptions {
        crate::options::Options::default().kubelet
    }

    fn pair(cn: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn kube_config() -> kube::Config {
        let mut c = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        let (_, _, ca_der) = pair("cluster-ca");
        c.root_cert = Some(vec![ca_der]);
        c
    }

    #[test]
    fn credentials_follow_the_kubeconfig_and_the_flags_win() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let dir = tempfile::tempdir().unwrap();

        // A token user: the cluster CA verifies kubelets, the token authenticates.
        let mut kube = kube_config();
        kube.auth_info.token = Some("abc".to_owned().into());
        let auth = KubeletAuth::from_kube_config(&kube, &kubelet_options()).unwrap();
        assert!(matches!(&auth.trust, KubeletTrust::Roots { roots, origin }
            if roots.len() == 1 && origin == "the cluster CA from the kubeconfig"));
        assert!(auth.identity.is_none());
        assert_eq!(
            auth.token.current(),
            Some(HeaderValue::from_static("Bearer abc"))
        );

        // A certificate user (inline data): presented to kubelets too.
        let (cert, key, _) = pair("kubernetes-admin");
        let mut kube = kube_config();
        kube.auth_info.client_certificate_data = Some(b64(&cert));
        kube.auth_info.client_key_data = Some(b64(&key).into());
        let auth = KubeletAuth::from_kube_config(&kube, &kubelet_options()).unwrap();
        let id = auth.identity.unwrap();
        assert_eq!(id.origin, "the kubeconfig's client-certificate-data");
        assert_eq!(id.chain.len(), 1);
        assert!(matches!(auth.token, TokenSource::None));

        // The --kubelet-* flags take precedence over the kubeconfig.
        let (ca_pem, _, _) = pair("kubelet-ca");
        let (flag_cert, flag_key, _) = pair("kubelet-client");
        let paths = ["ca.crt", "client.crt", "client.key"].map(|n| dir.path().join(n));
        for (p, data) in paths.iter().zip([&ca_pem, &flag_cert, &flag_key]) {
            std::fs::write(p, data).unwrap();
        }
        let mut opts = kubelet_options();
        opts.certificate_authority = Some(paths[0].clone());
        opts.client_certificate = Some(paths[1].clone());
        opts.client_key = Some(paths[2].clone());
        let auth = KubeletAuth::from_kube_config(&kube, &opts).unwrap();
        assert!(matches!(&auth.trust, KubeletTrust::Roots { origin, .. }
            if origin.starts_with("--kubelet-certificate-authority ")));
        assert!(
            auth.identity
                .unwrap()
                .origin
                .starts_with("--kubelet-client-certificate ")
        );
        opts.insecure_tls = true;
        opts.certificate_authority = None;
        let auth = KubeletAuth::from_kube_config(&kube, &opts).unwrap();
        assert!(matches!(auth.trust, KubeletTrust::Insecure));

        // An insecure kubeconfig makes kubelet TLS insecure too, as in metrics-server.
        let mut kube = kube_config();
        kube.accept_invalid_certs = true;
        let auth = KubeletAuth::from_kube_config(&kube, &kubelet_options()).unwrap();
        assert!(matches!(auth.trust, KubeletTrust::Insecure));

        // No CA anywhere is an error that says what to do.
        let mut kube = kube_config();
        kube.root_cert = None;
        let err = KubeletAuth::from_kube_config(&kube, &kubelet_options()).unwrap_err();
        assert!(
            err.to_string().contains("--kubelet-certificate-authority"),
            "{err}"
        );

        // Half a client certificate is refused.
        let mut kube = kube_config();
        kube.auth_info.client_certificate_data = Some(b64(&cert));
        let err = KubeletAuth::from_kube_config(&kube, &kubelet_options()).unwrap_err();
        assert!(matches!(err, ScrapeError::HalfClientCertificate));
    }

    #[test]
    fn a_token_file_is_reread_only_when_it_changes_and_kept_if_it_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let source = TokenSource::file(path.clone()).unwrap();
        assert_eq!(
            source.current(),
            Some(HeaderValue::from_static("Bearer one"))
        );

        // Same mtime: the cached value stands even though the bytes changed.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "two\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            source.current(),
            Some(HeaderValue::from_static("Bearer one"))
        );

        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime + Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            source.current(),
            Some(HeaderValue::from_static("Bearer two"))
        );

        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            source.current(),
            Some(HeaderValue::from_static("Bearer two"))
        );
        assert!(
            TokenSource::file(path).is_err(),
            "a missing file fails the start"
        );
    }
}
