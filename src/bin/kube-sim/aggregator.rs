//! The aggregation layer: `--aggregate GROUP[/V1,V2]=URL` serves `/apis/GROUP/VERSION/**` by
//! proxying to a backend exactly as kube-apiserver's aggregator does (see
//! `shared/docs/kube-apiserver-observed.md`):
//!
//! - the caller has been authenticated and authorized by the API server already (a denied
//!   request never reaches the backend);
//! - the connection presents the front-proxy client certificate (CN `front-proxy-client`),
//!   and follows rotations of the front-proxy CA;
//! - the caller's `Authorization` and any `X-Remote-*`/`Impersonate-*` headers are dropped;
//!   `X-Remote-User`, one `X-Remote-Group` per group (with `system:authenticated`), one
//!   `X-Remote-Extra-<escaped key>` per value, and `X-Forwarded-For/-Host/-Proto/-Uri` (no
//!   query) are set;
//! - each version is an APIService whose availability is checked with
//!   `GET /apis/GROUP/VERSION` as `system:kube-aggregator` in `system:masters`: while it fails
//!   the version is left out of discovery and its requests get 503 with kube-apiserver's
//!   message;
//! - discovery is read with `GET /apis` asking for aggregated discovery (v2, v2beta1); only a
//!   406 falls back to the per-version documents (fetched as `system:kube-aggregator` with no
//!   group); a 404, a non-discovery 200 or any other failure leaves the group's versions
//!   `Stale`, which clients such as `kubectl top` treat as unavailable.
//!
//! TLS to the backend is verified as an APIService says: with `ca=FILE` (its `caBundle`) the
//! backend's certificate must chain to that CA and hold the name `name=` (for an APIService,
//! `SERVICE.NAMESPACE.svc`), which is also sent as SNI; without, it is not verified, as with
//! `insecureSkipTLSVerify: true`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_bridge::https::ConnInfo;
use metrics_bridge::status::Status;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::apiserver::{AggregatedGroup, AggregatedVersion, legacy_to_aggregated};
use crate::auth::UserInfo;
use crate::pki::{self, Pki};

/// Why an `--aggregate` flag was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("--aggregate {input:?}: {reason}")]
    BadFlag { input: String, reason: String },
}

/// One `--aggregate` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub group: String,
    /// The APIService versions, most preferred first.
    pub versions: Vec<String>,
    /// `https://host:port`, without a path.
    pub url: String,
    /// The APIService's `caBundle` (PEM): the backend's certificate is verified against it.
    /// `None` is `insecureSkipTLSVerify: true`.
    pub ca_bundle: Option<String>,
    /// The name the backend's certificate must hold and the SNI sent (an APIService's
    /// `SERVICE.NAMESPACE.svc`); the URL's host when not given.
    pub server_name: Option<String>,
}

impl std::str::FromStr for BackendSpec {
    type Err = AggregatorError;

    /// `GROUP=URL` or `GROUP/V1,V2=URL`, then optionally `,ca=FILE` (the `caBundle`: verify
    /// the backend against it) and `,name=HOST` (the name to verify and send as SNI, e.g.
    /// `metrics-bridge.kube-system.svc`). Without `ca`, the backend is not verified
    /// (`insecureSkipTLSVerify`). Without versions, `metrics.k8s.io` gets `v1beta1` and `v1`
    /// (the APIServices metrics-bridge registers), other groups `v1`.
    fn from_str(s: &str) -> Result<BackendSpec, AggregatorError> {
        let bad = |reason: &str| AggregatorError::BadFlag {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (lhs, rhs) = s.split_once('=').ok_or_else(|| bad("expected GROUP=URL"))?;
        let mut parts = rhs.split(',');
        let url = parts.next().unwrap_or_default();
        let mut ca_bundle = None;
        let mut server_name = None;
        for opt in parts {
            match opt.split_once('=') {
                Some(("ca", file)) => {
                    let pem = std::fs::read_to_string(file)
                        .map_err(|e| bad(&format!("reading the CA bundle {file}: {e}")))?;
                    if crate::pki::ClientCaBundle::from_pem(&pem).is_err()
                        || !pem.contains("-----BEGIN CERTIFICATE-----")
                    {
                        return Err(bad(&format!("{file} holds no PEM certificate")));
                    }
                    ca_bundle = Some(pem);
                }
                Some(("name", name)) => {
                    if ServerName::try_from(name.to_string()).is_err() {
                        return Err(bad(&format!("{name:?} is not a DNS name or address")));
                    }
                    server_name = Some(name.to_string());
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown option {opt:?}: options are ca=FILE and name=HOST"
                    )));
                }
            }
        }
        let (group, versions) = match lhs.split_once('/') {
            Some((g, v)) => (
                g,
                v.split(',')
                    .map(str::to_string)
                    .filter(|v| !v.is_empty())
                    .collect(),
            ),
            None if lhs == "metrics.k8s.io" => (lhs, vec!["v1beta1".to_string(), "v1".to_string()]),
            None => (lhs, vec!["v1".to_string()]),
        };
        if group.is_empty() || !group.contains('.') {
            return Err(bad("the group must be a DNS name such as metrics.k8s.io"));
        }
        if versions.is_empty() {
            return Err(bad("no versions"));
        }
        let uri: Uri = url.parse().map_err(|_| bad("the URL does not parse"))?;
        if uri.scheme_str() != Some("https") || uri.authority().is_none() {
            return Err(bad("the URL must be https://HOST:PORT"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("the URL must not have a path"));
        }
        let mut versions: Vec<String> = versions;
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        Ok(BackendSpec {
            group: group.to_string(),
            versions,
            url: url.trim_end_matches('/').to_string(),
            ca_bundle,
            server_name,
        })
    }
}

/// Kubernetes' version ordering: GA above beta above alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (class, n) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (class, major, n.parse().unwrap_or(0))
}

#[derive(Debug, Clone)]
struct VersionState {
    version: String,
    available: bool,
    reason: String,
}

#[derive(Debug, Clone, Default)]
struct Discovered {
    /// `(version, resources)` from the backend's discovery.
    resources: Vec<(String, Value)>,
    fresh: bool,
}

struct Backend {
    spec: BackendSpec,
    versions: RwLock<Vec<VersionState>>,
    discovered: RwLock<Discovered>,
    client: RwLock<(u64, HttpClient)>,
}

type HttpClient = Client<TlsConnector, Body>;

/// The aggregation layer.
pub struct Aggregator {
    backends: Vec<Arc<Backend>>,
    pki: Arc<Pki>,
    probe_interval: Duration,
}

/// A request to forward, with what the API server learned about its caller.
pub struct Forward {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Body,
    pub user: UserInfo,
    pub conn: Option<ConnInfo>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

impl Aggregator {
    pub fn new(
        specs: Vec<BackendSpec>,
        pki: Arc<Pki>,
        probe_interval: Duration,
    ) -> Result<Aggregator, pki::PkiError> {
        let mut backends = Vec::new();
        for spec in specs {
            let client = build_client(&pki, &spec)?;
            let versions = spec
                .versions
                .iter()
                .map(|v| VersionState {
                    version: v.clone(),
                    available: false,
                    reason: "not checked yet".into(),
                })
                .collect();
            backends.push(Arc::new(Backend {
                spec,
                versions: RwLock::new(versions),
                discovered: RwLock::new(Discovered::default()),
                client: RwLock::new((pki.current().generation, client)),
            }));
        }
        Ok(Aggregator {
            backends,
            pki,
            probe_interval,
        })
    }

    /// Whether `group` is served by a backend.
    pub fn serves(&self, group: &str) -> bool {
        self.backends.iter().any(|b| b.spec.group == group)
    }

    fn backend(&self, group: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.spec.group == group)
    }

    /// The aggregated groups as discovery shows them now: available versions only, groups
    /// with none left out.
    pub fn discovery(&self) -> Vec<AggregatedGroup> {
        let mut out = Vec::new();
        for b in &self.backends {
            let disc = read(&b.discovered);
            let versions: Vec<AggregatedVersion> = read(&b.versions)
                .into_iter()
                .filter(|v| v.available)
                .map(|v| {
                    let resources = disc
                        .resources
                        .iter()
                        .find(|(ver, _)| *ver == v.version)
                        .map(|(_, r)| r.clone());
                    AggregatedVersion {
                        freshness: if disc.fresh && resources.is_some() {
                            "Current"
                        } else {
                            "Stale"
                        },
                        resources: resources.unwrap_or_else(|| Value::Array(Vec::new())),
                        version: v.version,
                    }
                })
                .collect();
            if !versions.is_empty() {
                out.push(AggregatedGroup {
                    name: b.spec.group.clone(),
                    versions,
                });
            }
        }
        out
    }

    /// Each APIService's state, as `kubectl get apiservices` would summarize it.
    pub fn status(&self) -> Value {
        let mut out = serde_json::Map::new();
        for b in &self.backends {
            let fresh = read(&b.discovered).fresh;
            for v in read(&b.versions) {
                out.insert(
                    format!("{}.{}", v.version, b.spec.group),
                    serde_json::json!({
                        "service": b.spec.url,
                        "available": v.available,
                        "message": v.reason,
                        "discovery": if fresh { "Current" } else { "Stale" },
                    }),
                );
            }
        }
        Value::Object(out)
    }

    fn client(&self, b: &Backend) -> HttpClient {
        let generation = self.pki.current().generation;
        let (g, c) = read(&b.client);
        if g == generation {
            return c;
        }
        match build_client(&self.pki, &b.spec) {
            Ok(c) => {
                if let Ok(mut slot) = b.client.write() {
                    *slot = (generation, c.clone());
                }
                c
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the front-proxy client failed");
                c
            }
        }
    }

    /// Probes every backend every `probe_interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.backends.is_empty() {
            return;
        }
        loop {
            self.probe_all().await;
            tokio::select! {
                () = tokio::time::sleep(self.probe_interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round of availability and discovery checks.
    pub async fn probe_all(&self) {
        for b in &self.backends {
            self.probe(b).await;
        }
    }

    async fn get(
        &self,
        b: &Backend,
        path: &str,
        accept: &str,
        masters: bool,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), String> {
        let uri: Uri = format!("{}{path}", b.spec.url)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut req = http::Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::ACCEPT, accept)
            .header("X-Remote-User", "system:kube-aggregator");
        if masters {
            req = req.header("X-Remote-Group", "system:masters");
        }
        let req = req.body(Body::empty()).map_err(|e| e.to_string())?;
        let client = self.client(b);
        let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
            .await
            .map_err(|_| "timed out after 5s".to_string())?
            .map_err(|e| error_chain(&e))?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            http_body_util::Limited::new(body, 16 * 1024 * 1024).collect(),
        )
        .await
        .map_err(|_| "timed out reading the body".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    async fn probe(&self, b: &Backend) {
        let group = &b.spec.group;
        let mut states = Vec::new();
        for v in &b.spec.versions {
            let path = format!("/apis/{group}/{v}");
            let (available, reason) = match self.get(b, &path, "application/json, */*", true).await
            {
                Ok((s, _, _)) if s.is_success() => (true, String::new()),
                Ok((s, _, _)) => (
                    false,
                    format!(
                        "failing or missing response from {}{path}: bad status from {}{path}: {}",
                        b.spec.url,
                        b.spec.url,
                        s.as_u16()
                    ),
                ),
                Err(e) => (
                    false,
                    format!("failing or missing response from {}{path}: {e}", b.spec.url),
                ),
            };
            let was = read(&b.versions)
                .iter()
                .find(|s| s.version == *v)
                .map(|s| s.available);
            if was != Some(available) {
                tracing::info!(group = %group, version = %v, available, reason = %reason, "APIService availability changed");
            }
            states.push(VersionState {
                version: v.clone(),
                available,
                reason,
            });
        }
        if let Ok(mut s) = b.versions.write() {
            *s = states;
        }
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let disc = match self.get(b, "/apis", accept, true).await {
            Ok((s, _, body)) if s == StatusCode::OK => match parse_aggregated(&body, group) {
                Some(resources) => Discovered {
                    resources,
                    fresh: true,
                },
                None => {
                    tracing::debug!(group = %group, "backend's /apis is not an APIGroupDiscoveryList: Stale");
                    Discovered::default()
                }
            },
            Ok((s, _, _)) if s == StatusCode::NOT_ACCEPTABLE => {
                let mut resources = Vec::new();
                let mut fresh = true;
                for v in &b.spec.versions {
                    match self
                        .get(b, &format!("/apis/{group}/{v}"), "application/json", false)
                        .await
                    {
                        Ok((s, _, body)) if s.is_success() => {
                            match serde_json::from_slice::<Value>(&body) {
                                Ok(list) => {
                                    resources.push((v.clone(), legacy_to_aggregated(&list)))
                                }
                                Err(_) => fresh = false,
                            }
                        }
                        _ => {}
                    }
                }
                if resources.is_empty() {
                    fresh = false;
                }
                Discovered { resources, fresh }
            }
            Ok((s, _, _)) => {
                tracing::debug!(group = %group, status = s.as_u16(), "backend's aggregated discovery failed: Stale");
                Discovered::default()
            }
            Err(e) => {
                tracing::debug!(group = %group, error = %e, "backend's aggregated discovery failed: Stale");
                Discovered::default()
            }
        };
        if let Ok(mut d) = b.discovered.write() {
            *d = disc;
        }
    }

    /// Forwards one request to `group`'s backend.
    pub async fn proxy(&self, group: &str, version: &str, fwd: Forward) -> Response {
        let Some(b) = self.backend(group) else {
            return Status::path_not_found().into_response();
        };
        let states = read(&b.versions);
        let Some(state) = states.iter().find(|s| s.version == version) else {
            return Status::path_not_found().into_response();
        };
        if !state.available {
            return Status::service_unavailable().into_response();
        }
        let path_and_query = fwd.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri: Uri = match format!("{}{path_and_query}", b.spec.url).parse() {
            Ok(u) => u,
            Err(e) => {
                return Status::internal(format!("building the backend URL: {e}")).into_response();
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &fwd.headers {
            let n = name.as_str();
            let drop = n == "authorization"
                || n == "host"
                || n.starts_with("x-remote-")
                || n.starts_with("impersonate-")
                || is_hop_by_hop(n);
            if !drop {
                headers.append(name.clone(), value.clone());
            }
        }
        set_identity_headers(&mut headers, &fwd.user);
        let client_ip = fwd.conn.as_ref().map(|c| c.remote_addr.ip().to_string());
        if let Some(ip) = client_ip {
            let xff = match fwd
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                headers.insert("x-forwarded-for", v);
            }
        }
        let host = fwd
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| fwd.uri.authority().map(|a| a.to_string()));
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert("x-forwarded-host", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        if let Ok(v) = HeaderValue::from_str(fwd.uri.path()) {
            headers.insert("x-forwarded-uri", v);
        }
        let mut req = http::Request::new(fwd.body);
        *req.method_mut() = fwd.method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let client = self.client(b);
        match client.request(req).await {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                let hop: Vec<HeaderName> = parts
                    .headers
                    .keys()
                    .filter(|k| is_hop_by_hop(k.as_str()))
                    .cloned()
                    .collect();
                for k in hop {
                    parts.headers.remove(k);
                }
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                let mut s = Status::service_unavailable();
                s.message = format!("error trying to reach service: {}", error_chain(&e));
                s.into_response()
            }
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// k8s.io/apiserver's `headerKeyEscape`: %-encodes bytes that are not legal in a header name,
/// and `%` itself.
fn header_key_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        let legal = b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
        if legal {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn set_identity_headers(headers: &mut HeaderMap, user: &UserInfo) {
    if let Ok(v) = HeaderValue::from_str(&user.username) {
        headers.insert("x-remote-user", v);
    }
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") && user.username != "system:anonymous" {
        groups.push("system:authenticated".into());
    }
    for g in &groups {
        if let Ok(v) = HeaderValue::from_str(g) {
            headers.append("x-remote-group", v);
        }
    }
    for (key, values) in &user.extra {
        let Ok(name) =
            HeaderName::from_bytes(format!("x-remote-extra-{}", header_key_escape(key)).as_bytes())
        else {
            continue;
        };
        for value in values {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// The `(version, resources)` of `group` in an `APIGroupDiscoveryList`, or `None` if the body
/// is not one.
fn parse_aggregated(body: &[u8], group: &str) -> Option<Vec<(String, Value)>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    if doc["kind"] != "APIGroupDiscoveryList" {
        return None;
    }
    let item = doc["items"]
        .as_array()?
        .iter()
        .find(|i| i["metadata"]["name"] == group)?;
    Some(
        item["versions"]
            .as_array()?
            .iter()
            .filter_map(|v| Some((v["version"].as_str()?.to_string(), v["resources"].clone())))
            .collect(),
    )
}

/// Accepts any backend certificate (an APIService with `insecureSkipTLSVerify: true`) while
/// still checking the handshake signature.
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn build_client(pki: &Pki, spec: &BackendSpec) -> Result<HttpClient, pki::PkiError> {
    let cur = pki.current();
    let provider = pki::provider();
    let tls_err = |source| pki::PkiError::Tls {
        what: format!("the front-proxy client of {}", spec.group),
        source,
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match &spec.ca_bundle {
        Some(pem) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok) {
                roots.add(der).map_err(tls_err)?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider))),
    };
    let mut config = builder
        .with_client_auth_cert(
            vec![cur.front_proxy_client.cert_der.clone()],
            cur.front_proxy_client.private_key(),
        )
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = TlsConnector {
        config: Arc::new(config),
        server_name: spec.server_name.clone(),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// Connects TCP then TLS for the proxy's HTTP client.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<ClientConfig>,
    /// The name verified and sent as SNI instead of the URL's host.
    server_name: Option<String>,
}

/// A TLS connection to a backend.
struct TlsConn {
    io: TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    h2: bool,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let invalid =
                |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
            let host = uri
                .host()
                .ok_or_else(|| invalid("no host"))?
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(server_name.unwrap_or(host))
                .map_err(|_| invalid("bad server name"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(TlsConn {
                io: TokioIo::new(tls),
                h2,
            })
        })
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_flags() {
        let b: BackendSpec = "metrics.k8s.io=https://127.0.0.1:4443".parse().unwrap();
        assert_eq!(b.versions, ["v1", "v1beta1"]);
        assert_eq!(b.url, "https://127.0.0.1:4443");
        let b: BackendSpec = "custom.metrics.k8s.io/v1beta2,v1beta1=https://localhost:1"
            .parse()
            .unwrap();
        assert_eq!(b.versions, ["v1beta2", "v1beta1"]);
        assert!("metrics.k8s.io".parse::<BackendSpec>().is_err());
        assert!("metrics.k8s.io=http://x:1".parse::<BackendSpec>().is_err());
        assert!("metrics=https://x:1".parse::<BackendSpec>().is_err());
        assert_eq!(b.ca_bundle, None, "the plain form is insecureSkipTLSVerify");
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Ca::new("test").unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, &ca.cert_pem).unwrap();
        let b: BackendSpec = format!(
            "metrics.k8s.io=https://127.0.0.1:4443,ca={},name=metrics-bridge.kube-system.svc",
            file.display()
        )
        .parse()
        .unwrap();
        assert_eq!(b.url, "https://127.0.0.1:4443");
        assert_eq!(b.ca_bundle.as_deref(), Some(ca.cert_pem.as_str()));
        assert_eq!(
            b.server_name.as_deref(),
            Some("metrics-bridge.kube-system.svc")
        );
        let err = "metrics.k8s.io=https://x:1,ca=/nonexistent"
            .parse::<BackendSpec>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("reading the CA bundle /nonexistent"), "{err}");
        assert!(
            "metrics.k8s.io=https://x:1,insecure"
                .parse::<BackendSpec>()
                .is_err()
        );
        std::fs::write(&file, "not a certificate").unwrap();
        assert!(
            format!("metrics.k8s.io=https://x:1,ca={}", file.display())
                .parse::<BackendSpec>()
                .is_err()
        );
    }

    #[test]
    fn extra_keys_are_escaped_like_the_apiserver() {
        assert_eq!(
            header_key_escape("authentication.kubernetes.io/credential-id"),
            "authentication.kubernetes.io%2Fcredential-id"
        );
        assert_eq!(header_key_escape("scopes"), "scopes");
        assert_eq!(header_key_escape("a%b"), "a%25b");
        let mut h = HeaderMap::new();
        let mut u = UserInfo {
            username: "viewer".into(),
            groups: vec!["team".into()],
            ..Default::default()
        };
        u.extra
            .insert("scopes".into(), vec!["a".into(), "b".into()]);
        set_identity_headers(&mut h, &u);
        let groups: Vec<_> = h.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["team", "system:authenticated"]);
        assert_eq!(h.get_all("x-remote-extra-scopes").iter().count(), 2);
    }

    #[test]
    fn kube_version_order() {
        let mut v = vec!["v1alpha1", "v1beta1", "v2", "v1", "v1beta2", "v10"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }
}
