//! The kubelets: one HTTPS listener per node on the node's 127.1.x.y address, serving
//! `/metrics/resource` rendered by the model and `/healthz`, with the kubelet's webhook
//! authentication and authorization (bearer token or client certificate, then `nodes/metrics`
//! or `nodes/proxy`), its plain-text 401/403 bodies, gzip when asked (as the kubelet's
//! promhttp handler), and per-node faults.
//!
//! Per request the work is: authenticate (a hash lookup or one chain verification), authorize
//! (a walk of a small table), render the page into a buffer sized from the previous page.
//! Certificates are made once per node; connections are kept alive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use metrics_bridge::https::{ConnInfo, ServeOptions, TlsConfigSource};
use rustls::ServerConfig;

use crate::auth::{self, Attributes, Authenticator, Authn, ResourceAttributes};
use crate::model::{Model, NodeId};
use crate::pki::{self, Pki};
use crate::webhook;

/// Why a kubelet could not be started or a fault not set.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("node {0:?} does not exist")]
    NoSuchNode(String),
    #[error("binding the kubelet of node {node} to {addr}: {source}")]
    Bind {
        node: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("making the serving certificate of node {node}: {source}")]
    Certificate {
        node: String,
        #[source]
        source: pki::PkiError,
    },
    #[error("invalid fault {input:?}: {reason}")]
    BadFault { input: String, reason: String },
}

/// A simulated kubelet failure, set per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every response waits this long first.
    Slow(Duration),
    /// Requests are never answered (the client times out).
    Hang,
    /// 500 Internal Server Error.
    Http500,
    /// The body stops half-way, short of its Content-Length, and the connection is cut.
    Truncated,
    /// 200 with bytes that are not the Prometheus text format.
    Garbage,
    /// The serving certificate is for another IP and name (signed by the cluster CA).
    WrongSan,
    /// The serving certificate is signed by a CA nobody trusts.
    WrongCa,
    /// The listener is closed: connection refused.
    Refused,
    /// 200 with a body of this many bytes (the page, then comment padding), streamed.
    Huge(u64),
}

/// The size of the `huge` fault's body unless given.
pub const HUGE_DEFAULT: u64 = 100 * 1024 * 1024;

impl FromStr for Fault {
    type Err = KubeletError;

    /// `slow:DURATION` (Go syntax, e.g. `slow:5s`), `hang`, `http500`, `truncated`, `garbage`,
    /// `wrong-san`, `wrong-ca`, `refused`, `huge` or `huge:BYTES`.
    fn from_str(s: &str) -> Result<Fault, KubeletError> {
        let bad = |reason: &str| KubeletError::BadFault {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(_) => Err(bad("this fault takes no argument")),
        };
        match kind {
            "slow" => {
                let d = arg.ok_or_else(|| bad("slow needs a delay, e.g. slow:5s"))?;
                metrics_bridge::duration::parse(d)
                    .map(Fault::Slow)
                    .map_err(|e| bad(&e.to_string()))
            }
            "hang" => no_arg(Fault::Hang),
            "http500" => no_arg(Fault::Http500),
            "truncated" => no_arg(Fault::Truncated),
            "garbage" => no_arg(Fault::Garbage),
            "wrong-san" => no_arg(Fault::WrongSan),
            "wrong-ca" => no_arg(Fault::WrongCa),
            "refused" => no_arg(Fault::Refused),
            "huge" => match arg {
                None => Ok(Fault::Huge(HUGE_DEFAULT)),
                Some(n) => n
                    .parse::<u64>()
                    .map(Fault::Huge)
                    .map_err(|_| bad("huge takes a size in bytes, e.g. huge:104857600")),
            },
            _ => Err(bad(
                "known faults: slow:DURATION, hang, http500, truncated, garbage, wrong-san, wrong-ca, refused, huge[:BYTES]",
            )),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Slow(d) => write!(f, "slow:{}", metrics_bridge::duration::format(*d)),
            Fault::Hang => f.write_str("hang"),
            Fault::Http500 => f.write_str("http500"),
            Fault::Truncated => f.write_str("truncated"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::WrongSan => f.write_str("wrong-san"),
            Fault::WrongCa => f.write_str("wrong-ca"),
            Fault::Refused => f.write_str("refused"),
            Fault::Huge(n) => write!(f, "huge:{n}"),
        }
    }
}

impl Fault {
    /// Whether the fault lives in the TLS layer or the listener, so that existing
    /// connections must be dropped for clients to see it.
    fn is_transport(&self) -> bool {
        matches!(self, Fault::WrongSan | Fault::WrongCa | Fault::Refused)
    }
}

/// One node's kubelet.
struct Slot {
    id: NodeId,
    name: Arc<str>,
    ip: Ipv4Addr,
    fault: RwLock<Option<Fault>>,
    tls: RwLock<Arc<ServerConfig>>,
    /// Stops the current listener.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The last page's size, to size the next buffer.
    last_page: AtomicUsize,
    /// This kubelet's cache of webhook reviews (unused with local auth).
    reviews: webhook::Cache,
}

/// How the kubelets authenticate and authorize requests.
pub enum KubeletAuth {
    /// In process, with kube-sim's own authenticator and policy (its own API server).
    Local(Arc<Authenticator>),
    /// With TokenReview and SubjectAccessReview against an external API server, as a real
    /// kubelet's webhook mode.
    Webhook(Arc<webhook::Webhook>),
}

/// What every kubelet shares.
struct Shared {
    model: Arc<Model>,
    pki: Arc<Pki>,
    auth: KubeletAuth,
    port: u16,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    /// Requests answered, for `/sim/info`.
    requests: AtomicU64,
}

/// All kubelets.
pub struct Kubelets {
    shared: Arc<Shared>,
    slots: RwLock<HashMap<NodeId, Arc<Slot>>>,
    by_name: RwLock<HashMap<Arc<str>, NodeId>>,
}

#[derive(Clone)]
struct KubeletState {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

#[derive(Clone)]
struct SlotTls(Arc<Slot>);

impl TlsConfigSource for SlotTls {
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(
            &self
                .0
                .tls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut res = (status, body.into()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

impl Kubelets {
    pub fn new(model: Arc<Model>, pki: Arc<Pki>, auth: KubeletAuth, port: u16) -> Kubelets {
        Kubelets {
            shared: Arc::new(Shared {
                model,
                pki,
                auth,
                port,
                sessions: rustls::server::ServerSessionMemoryCache::new(8192),
                requests: AtomicU64::new(0),
            }),
            slots: RwLock::new(HashMap::new()),
            by_name: RwLock::new(HashMap::new()),
        }
    }

    /// The port every kubelet listens on.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// TokenReviews and SubjectAccessReviews sent by the kubelets (webhook mode; 0 otherwise).
    pub fn reviews(&self) -> u64 {
        match &self.shared.auth {
            KubeletAuth::Webhook(w) => w.reviews(),
            KubeletAuth::Local(_) => 0,
        }
    }

    /// Connections the kubelets opened to the API server for their reviews (webhook mode;
    /// 0 otherwise).
    pub fn review_connections(&self) -> u64 {
        match &self.shared.auth {
            KubeletAuth::Webhook(w) => w.connections(),
            KubeletAuth::Local(_) => 0,
        }
    }

    /// How many kubelets run.
    pub fn len(&self) -> usize {
        self.slots.read().map(|s| s.len()).unwrap_or(0)
    }

    fn tls_for(
        &self,
        name: &str,
        ip: Ipv4Addr,
        fault: Option<&Fault>,
    ) -> Result<Arc<ServerConfig>, KubeletError> {
        let pki = &self.shared.pki;
        let cert_err = |source| KubeletError::Certificate {
            node: name.to_string(),
            source,
        };
        let key = match fault {
            // Another node's name and an address no node has.
            Some(Fault::WrongSan) => pki
                .kubelet_cert(
                    &pki.cluster_ca,
                    &format!("not-{name}"),
                    IpAddr::from([127, 0, 0, 254]),
                )
                .map_err(cert_err)?,
            Some(Fault::WrongCa) => pki
                .kubelet_cert(&pki.rogue_ca, name, IpAddr::V4(ip))
                .map_err(cert_err)?,
            _ => pki
                .kubelet_cert(&pki.cluster_ca, name, IpAddr::V4(ip))
                .map_err(cert_err)?,
        };
        let cur = pki.current();
        pki::serving_config_with(
            key,
            cur.client_bundle.request_verifier(),
            Some(Arc::clone(&self.shared.sessions)),
            "a kubelet",
        )
        .map_err(cert_err)
    }

    /// Starts the kubelet of node `id` (with `fault`, if any).
    pub async fn start(&self, id: NodeId, fault: Option<Fault>) -> Result<(), KubeletError> {
        let model = &self.shared.model;
        let (Some(name), Some(ip)) = (model.node_name(id), model.node_ip(id)) else {
            return Err(KubeletError::NoSuchNode(format!("#{id}")));
        };
        let tls = self.tls_for(&name, ip, fault.as_ref())?;
        let slot = Arc::new(Slot {
            id,
            name: Arc::clone(&name),
            ip,
            fault: RwLock::new(fault.clone()),
            tls: RwLock::new(tls),
            stop: Mutex::new(None),
            last_page: AtomicUsize::new(16 * 1024),
            reviews: webhook::Cache::default(),
        });
        if fault != Some(Fault::Refused) {
            self.listen(&slot).await?;
        }
        if let Ok(mut s) = self.slots.write() {
            s.insert(id, Arc::clone(&slot));
        }
        if let Ok(mut b) = self.by_name.write() {
            b.insert(name, id);
        }
        Ok(())
    }

    async fn listen(&self, slot: &Arc<Slot>) -> Result<(), KubeletError> {
        let addr = SocketAddr::new(IpAddr::V4(slot.ip), self.shared.port);
        // A listener just stopped may take a moment to close its socket: retry briefly.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) => {
                    return Err(KubeletError::Bind {
                        node: slot.name.to_string(),
                        addr,
                        source,
                    });
                }
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if let Ok(mut stop) = slot.stop.lock()
            && let Some(old) = stop.replace(tx)
        {
            let _ = old.send(());
        }
        let app = router().with_state(KubeletState {
            shared: Arc::clone(&self.shared),
            slot: Arc::clone(slot),
        });
        let tls = SlotTls(Arc::clone(slot));
        let name = Arc::clone(&slot.name);
        tokio::spawn(async move {
            let opts = ServeOptions::default();
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = metrics_bridge::https::serve(listener, tls, app, opts, shutdown).await {
                tracing::warn!(node = %name, error = %e, "kubelet listener failed");
            }
        });
        Ok(())
    }

    fn stop_listener(slot: &Slot) {
        if let Ok(mut stop) = slot.stop.lock()
            && let Some(tx) = stop.take()
        {
            let _ = tx.send(());
        }
    }

    /// Stops and forgets the kubelet of a removed node.
    pub fn remove(&self, name: &str) {
        let id = self.by_name.write().ok().and_then(|mut b| b.remove(name));
        if let Some(id) = id
            && let Some(slot) = self.slots.write().ok().and_then(|mut s| s.remove(&id))
        {
            Self::stop_listener(&slot);
        }
    }

    /// Whether node `name` has a kubelet.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.read().is_ok_and(|b| b.contains_key(name))
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        let id = *self.by_name.read().ok()?.get(name)?;
        self.slots.read().ok()?.get(&id).cloned()
    }

    /// Sets (or with `None` clears) the fault of node `name`. Transport faults (and clearing
    /// them) restart the listener, closing idle keep-alive connections so clients reconnect
    /// and meet the new behaviour.
    pub async fn set_fault(&self, name: &str, fault: Option<Fault>) -> Result<(), KubeletError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| KubeletError::NoSuchNode(name.to_string()))?;
        let old = slot.fault.read().map(|f| f.clone()).unwrap_or(None);
        let transport_change = old.as_ref().is_some_and(Fault::is_transport)
            || fault.as_ref().is_some_and(Fault::is_transport);
        if transport_change {
            let tls = self.tls_for(&slot.name, slot.ip, fault.as_ref())?;
            if let Ok(mut t) = slot.tls.write() {
                *t = tls;
            }
        }
        if let Ok(mut f) = slot.fault.write() {
            *f = fault.clone();
        }
        if transport_change {
            Self::stop_listener(&slot);
            if fault != Some(Fault::Refused) {
                self.listen(&slot).await?;
            }
        }
        Ok(())
    }

    /// The faults set now, by node name.
    pub fn faults(&self) -> Vec<(String, Fault)> {
        let slots = match self.slots.read() {
            Ok(s) => s,
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<(String, Fault)> = slots
            .values()
            .filter_map(|s| {
                let f = s.fault.read().ok()?.clone()?;
                Some((s.name.to_string(), f))
            })
            .collect();
        out.sort();
        out
    }

    /// Stops every listener.
    pub fn shutdown(&self) {
        if let Ok(slots) = self.slots.read() {
            for slot in slots.values() {
                Self::stop_listener(slot);
            }
        }
    }
}

impl PartialOrd for Fault {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Fault {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

fn router() -> Router<KubeletState> {
    Router::new().fallback(handle)
}

/// The kubelet's authorization attributes for a path (`pkg/kubelet/server/auth.go`).
fn subresource(path: &str) -> &'static str {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    }
}

async fn handle(State(st): State<KubeletState>, req: Request) -> Response {
    st.shared.requests.fetch_add(1, Ordering::Relaxed);
    let conn = req.extensions().get::<ConnInfo>();
    // kubeadm runs kubelets with anonymous authentication off: no credential is 401.
    let user = match &st.shared.auth {
        KubeletAuth::Local(authn) => match authn.authenticate(conn, req.headers()) {
            Authn::User(u) => u,
            Authn::Anonymous(_) | Authn::Failed => {
                return text(StatusCode::UNAUTHORIZED, "Unauthorized");
            }
        },
        KubeletAuth::Webhook(w) => {
            match w.authenticate(&st.slot.reviews, conn, req.headers()).await {
                webhook::Authenticated::User(u) => u,
                webhook::Authenticated::Rejected => {
                    return text(StatusCode::UNAUTHORIZED, "Unauthorized");
                }
            }
        }
    };
    let path = req.uri().path();
    let verb = auth::method_verb(req.method());
    let sub = subresource(path);
    let attrs = ResourceAttributes {
        verb: verb.to_string(),
        version: "v1".into(),
        resource: "nodes".into(),
        subresource: sub.to_string(),
        name: st.slot.name.to_string(),
        ..Default::default()
    };
    let allowed = match &st.shared.auth {
        KubeletAuth::Local(_) => auth::authorize(&user, &Attributes::Resource(attrs)).allowed,
        KubeletAuth::Webhook(w) => {
            let credential = webhook::credential(conn, req.headers());
            match w
                .authorize(&st.slot.reviews, credential, &user, &attrs)
                .await
            {
                Ok(allowed) => allowed,
                Err(e) => {
                    tracing::warn!(error = %e, user = %user.username, "kubelet: authorization error");
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "Authorization error (user={}, verb={verb}, resource=nodes, subresource={sub})",
                            user.username
                        ),
                    );
                }
            }
        }
    };
    if !allowed {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                user.username
            ),
        );
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/metrics/resource" => {
            let gzip = req
                .headers()
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
            metrics_resource(&st, gzip).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

const CONTENT_TYPE_PROM: &str = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores";

fn render(st: &KubeletState) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(st.slot.last_page.load(Ordering::Relaxed) + 1024);
    if !st
        .shared
        .model
        .render_resource_metrics(st.slot.id, SystemTime::now(), &mut buf)
    {
        return None;
    }
    st.slot.last_page.store(buf.len(), Ordering::Relaxed);
    Some(buf)
}

async fn metrics_resource(st: &KubeletState, gzip: bool) -> Response {
    let fault = st.slot.fault.read().map(|f| f.clone()).unwrap_or(None);
    match fault {
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Http500) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error: \"/metrics/resource\": kube-sim fault http500\n",
            );
        }
        Some(Fault::Garbage) => return garbage(st.slot.id),
        Some(Fault::Huge(size)) => return huge(st, size),
        _ => {}
    }
    let Some(page) = render(st) else {
        return text(StatusCode::NOT_FOUND, "node not found\n");
    };
    if fault == Some(Fault::Truncated) {
        return truncated(page);
    }
    let mut res = if gzip {
        let Some(zipped) = gzip_page(&page) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "compression failed\n");
        };
        let mut res = (StatusCode::OK, zipped).into_response();
        res.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        res
    } else {
        (StatusCode::OK, page).into_response()
    };
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_PROM),
    );
    res
}

thread_local! {
    /// A deflate compressor per worker thread, reset for each page: a new one allocates and
    /// clears a few hundred KiB of tables, more than compressing a page costs. Level 2, not 1:
    /// zlib-rs' level 1 is zlib-ng's "quick" strategy (static Huffman codes), which no longer
    /// compressed the test's page 4:1, further from the kubelet's pages (Go's default level).
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::new(2), false));
}

/// The page gzip-encoded (RFC 1952), as Go's `compress/gzip` frames it: header without a
/// modification time, raw deflate, CRC-32 and length trailer.
fn gzip_page(page: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(page.len() / 4 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    DEFLATE.with(|cell| {
        let mut c = cell.try_borrow_mut().ok()?;
        c.reset();
        loop {
            let read = usize::try_from(c.total_in()).ok()?;
            let rest = page.get(read..)?;
            match c
                .compress_vec(rest, &mut out, flate2::FlushCompress::Finish)
                .ok()?
            {
                flate2::Status::StreamEnd => return Some(()),
                _ => out.reserve(out.capacity().max(4096)),
            }
        }
    })?;
    let mut crc = flate2::Crc::new();
    crc.update(page);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(page.len() as u32).to_le_bytes());
    Some(out)
}

/// The page with its full Content-Length, cut after half, then the connection is aborted.
fn truncated(page: Vec<u8>) -> Response {
    let full = page.len();
    let half = Bytes::from(page).slice(..full / 2);
    let frames = futures::stream::iter([
        Ok::<_, std::io::Error>(Frame::data(half)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "kube-sim fault truncated",
        )),
    ]);
    let mut res = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_PROM),
    );
    if let Ok(v) = HeaderValue::from_str(&full.to_string()) {
        res.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    res
}

/// 64 KiB of deterministic junk: binary bytes, broken series lines, invalid UTF-8.
fn garbage(id: NodeId) -> Response {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (id as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(b"node_cpu_usage_seconds_total{\"unterminated 12 x\n\xff\xfe\x00");
    while out.len() < 64 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    let mut res = (StatusCode::OK, out).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_PROM),
    );
    res
}

/// A 1 KiB comment line, the unit of the `huge` fault's padding.
static PADDING: [u8; 1024] = {
    let mut line = [b'x'; 1024];
    line[0] = b'#';
    line[1] = b' ';
    line[1023] = b'\n';
    line
};

/// The page, then comment lines up to `size` bytes, streamed from a static buffer (chunked, no
/// Content-Length, so only a reader that counts can protect itself).
fn huge(st: &KubeletState, size: u64) -> Response {
    let page = render(st).unwrap_or_default();
    let first = Bytes::from(page);
    let mut remaining = size.saturating_sub(first.len() as u64);
    let pad = Bytes::from_static(&PADDING);
    let mut sent_first = false;
    let frames = futures::stream::poll_fn(move |_| {
        if !sent_first {
            sent_first = true;
            return std::task::Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(first.clone()))));
        }
        if remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        // 64 KiB frames of padding lines; the last one may be a partial line.
        let mut chunk = bytes::BytesMut::with_capacity(64 * 1024);
        while chunk.len() < 64 * 1024 && remaining > 0 {
            let n = remaining.min(pad.len() as u64) as usize;
            chunk.extend_from_slice(&pad[..n]);
            remaining -= n as u64;
        }
        std::task::Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    });
    let mut res = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_PROM),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print() {
        for s in [
            "slow:5s",
            "hang",
            "http500",
            "truncated",
            "garbage",
            "wrong-san",
            "wrong-ca",
            "refused",
            "huge:1000",
        ] {
            assert_eq!(s.parse::<Fault>().unwrap().to_string(), s);
        }
        assert_eq!("huge".parse::<Fault>().unwrap(), Fault::Huge(HUGE_DEFAULT));
        assert_eq!(
            "slow:1m30s".parse::<Fault>().unwrap(),
            Fault::Slow(Duration::from_secs(90))
        );
        assert!("slow".parse::<Fault>().is_err());
        assert!("hang:1".parse::<Fault>().is_err());
        let err = "boom".parse::<Fault>().unwrap_err().to_string();
        assert!(err.contains("known faults"), "{err}");
    }

    #[test]
    fn gzip_pages_decode_to_the_page() {
        use std::io::Read;
        let page: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("series{{n=\"{}\"}} {i}\n", i % 97).into_bytes())
            .collect();
        for _ in 0..2 {
            let zipped = gzip_page(&page).unwrap();
            assert!(zipped.len() < page.len() / 4);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&zipped[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, page, "the compressor is reset between pages");
        }
        let empty = gzip_page(b"").unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn kubelet_subresources() {
        assert_eq!(subresource("/metrics/resource"), "metrics");
        assert_eq!(subresource("/metrics"), "metrics");
        assert_eq!(subresource("/metricsx"), "proxy");
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/healthz"), "proxy");
    }
}
