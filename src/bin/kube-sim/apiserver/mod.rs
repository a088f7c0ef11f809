//! kube-sim's API server: authentication, authorization, discovery, the core resources
//! (list/watch/get in JSON, metadata and Table), the authentication ConfigMap, the review APIs,
//! the aggregation layer's routing and the `/sim/*` control endpoints, behind one HTTPS
//! listener served by the library's `https::serve`.
//!
//! Every request goes the way kube-apiserver's filter chain takes it: authenticate (401),
//! derive the request attributes, authorize (403 with kube-apiserver's message), then serve.

mod discovery;
mod negotiate;
mod patch;
pub mod request;
mod resources;
mod reviews;
mod table;
pub mod write;

pub use discovery::{AggregatedGroup, AggregatedVersion, legacy_to_aggregated};

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use metrics_bridge::https::{ConnInfo, TlsConfigSource};
use metrics_bridge::status::Status;
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::aggregator::Aggregator;
use crate::auth::{self, Authenticator, Authn, UserInfo};
use crate::control::Control;
use crate::objects::{Kind, Object, Store};
use crate::pki::{self, Pki};
use request::{Query, RequestInfo, parse_query};

/// The largest request body accepted, as kube-apiserver's limit.
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// Tunables of the API server.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

/// The API server's shared state.
pub struct ApiServer {
    pub store: Arc<Store>,
    pub authn: Arc<Authenticator>,
    pub control: Arc<Control>,
    pub aggregator: Arc<Aggregator>,
    pub opts: ApiOptions,
    /// `host:port` as clients reach the server (for `serverAddressByClientCIDRs`).
    pub address: String,
}

/// A serving TLS configuration that follows CA rotations: rebuilt (once) when the PKI's
/// generation changes, so new connections get the new client CA hints.
#[derive(Clone)]
pub struct ReloadingTls {
    pki: Arc<Pki>,
    key: Arc<CertifiedKey>,
    what: &'static str,
    cache: Arc<RwLock<(u64, Arc<ServerConfig>)>>,
}

impl ReloadingTls {
    pub fn new(
        pki: Arc<Pki>,
        key: Arc<CertifiedKey>,
        what: &'static str,
    ) -> Result<ReloadingTls, pki::PkiError> {
        let cur = pki.current();
        let config = pki::serving_config(Arc::clone(&key), &cur.client_bundle, what)?;
        Ok(ReloadingTls {
            pki,
            key,
            what,
            cache: Arc::new(RwLock::new((cur.generation, config))),
        })
    }
}

impl TlsConfigSource for ReloadingTls {
    fn current(&self) -> Arc<ServerConfig> {
        let generation = self.pki.current().generation;
        {
            let cache = self
                .cache
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.0 == generation {
                return Arc::clone(&cache.1);
            }
        }
        let cur = self.pki.current();
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match pki::serving_config(Arc::clone(&self.key), &cur.client_bundle, self.what) {
            Ok(config) => *cache = (cur.generation, config),
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the TLS configuration failed; keeping the old one")
            }
        }
        Arc::clone(&cache.1)
    }
}

/// `kube-system/extension-apiserver-authentication`, filled as kube-apiserver fills it.
pub fn auth_configmap(pki: &Pki, created: SystemTime) -> Object {
    let cur = pki.current();
    let data = [
        ("client-ca-file", cur.client_bundle.pem.clone()),
        (
            "requestheader-allowed-names",
            "[\"front-proxy-client\"]".into(),
        ),
        (
            "requestheader-client-ca-file",
            cur.front_proxy_bundle_pem.clone(),
        ),
        (
            "requestheader-extra-headers-prefix",
            "[\"X-Remote-Extra-\"]".into(),
        ),
        ("requestheader-group-headers", "[\"X-Remote-Group\"]".into()),
        (
            "requestheader-username-headers",
            "[\"X-Remote-User\"]".into(),
        ),
    ];
    Object::ConfigMap(ConfigMap {
        metadata: ObjectMeta {
            name: Some("extension-apiserver-authentication".into()),
            namespace: Some("kube-system".into()),
            uid: Some("8a3c5e2f-6b1d-4e7a-9f20-1c4d7b8e3a51".into()),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::try_from(created)
                    .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            )),
            ..Default::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ..Default::default()
    })
}

impl ApiServer {
    /// The router serving every path.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self)
    }
}

fn json(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut res = (status, body.into()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Reads a request body up to [`MAX_REQUEST_BODY`].
pub async fn read_body(body: Body) -> Result<bytes::Bytes, Status> {
    match http_body_util::Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(Status::failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: {e}"),
        )),
    }
}

/// What kube-apiserver's filter chain learns before a handler runs.
pub struct Admitted {
    pub user: UserInfo,
    pub info: RequestInfo,
    pub query: Query,
}

/// Authenticates (401) and authorizes (403, with kube-apiserver's message) a request.
pub fn admit(authn: &Authenticator, parts: &http::request::Parts) -> Result<Admitted, Response> {
    let conn = parts.extensions.get::<ConnInfo>();
    let user = match authn.authenticate(conn, &parts.headers) {
        Authn::Failed => return Err(Status::unauthorized().into_response()),
        a => a.user().cloned().unwrap_or_else(UserInfo::anonymous),
    };
    let query = parse_query(parts.uri.query());
    let info = RequestInfo::parse(&parts.method, parts.uri.path(), &query);
    let decision = auth::authorize(&user, &info.attributes());
    if !decision.allowed {
        return Err(info
            .forbidden(&user.username, &decision.reason)
            .into_response());
    }
    Ok(Admitted { user, info, query })
}

async fn handle(State(api): State<Arc<ApiServer>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Admitted { user, info, query } = match admit(&api.authn, &parts) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let path = parts.uri.path().to_string();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // /apis/GROUP/VERSION/** of an aggregated group goes to its backend.
    if let Some(rest) = path.strip_prefix("/apis/") {
        let mut segs = rest.split('/');
        if let (Some(group), Some(version)) = (segs.next(), segs.next())
            && !version.is_empty()
            && api.aggregator.serves(group)
        {
            let forward = crate::aggregator::Forward {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                body,
                user,
                conn,
            };
            return api.aggregator.proxy(group, version, forward).await;
        }
    }
    if path.starts_with("/sim/") || path == "/sim" {
        return api.control.handle(&parts.method, &path, &query, body).await;
    }
    if info.is_resource {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        return serve_resource(
            &api,
            &parts.method,
            &info,
            accept.as_deref(),
            content_type,
            &query,
            &user,
            body,
        )
        .await;
    }
    serve_non_resource(
        &api,
        &parts.method,
        &path,
        accept.as_deref(),
        &parts.headers,
        &query,
    )
}

#[allow(clippy::too_many_arguments)]
async fn serve_resource(
    api: &ApiServer,
    method: &Method,
    info: &RequestInfo,
    accept: Option<&str>,
    content_type: Option<&str>,
    query: &Query,
    user: &UserInfo,
    body: Body,
) -> Response {
    match (info.group.as_str(), info.version.as_str()) {
        ("", "v1") | ("coordination.k8s.io", "v1") => {}
        ("authentication.k8s.io", "v1") | ("authorization.k8s.io", "v1") => {
            return serve_review(api, method, info, user, content_type, body).await;
        }
        _ => return Status::path_not_found().into_response(),
    }
    let Some(kind) = Kind::from_group_resource(&info.group, &info.resource) else {
        return Status::path_not_found().into_response();
    };
    // Namespaced kinds are served cluster-wide (list/watch) or under a namespace; cluster
    // kinds never under one (except namespaces themselves, whose path carries the name).
    // (`info.name` may also come from a `metadata.name` field selector: look at the path.)
    let named = info.parts.len() >= 2;
    let cluster_path_for_namespaced = kind.namespaced() && info.namespace.is_empty() && named;
    let namespaced_path_for_cluster =
        !kind.namespaced() && kind != Kind::Namespace && !info.namespace.is_empty();
    if cluster_path_for_namespaced || namespaced_path_for_cluster || info.parts.len() > 3 {
        return Status::path_not_found().into_response();
    }
    let subresource_served = match info.subresource.as_str() {
        "" => true,
        "status" => matches!(kind, Kind::Pod | Kind::Node | Kind::Namespace),
        "binding" => kind == Kind::Pod,
        _ => false,
    };
    if !subresource_served {
        return Status::path_not_found().into_response();
    }
    let watch_path = info.path.contains("/watch/");
    match info.verb.as_str() {
        "get" if info.subresource != "binding" => {
            resources::get(api, kind, info, accept, query).await
        }
        "list" => resources::list(api, kind, info, accept, query).await,
        "watch" => resources::watch(api, kind, info, accept, query, watch_path).await,
        "create" | "update" | "patch" | "delete" | "deletecollection" if !watch_path => {
            write::serve(api, kind, info, query, content_type, body).await
        }
        verb => Status::method_not_supported(kind.group(), kind.resource(), verb).into_response(),
    }
}

async fn serve_review(
    api: &ApiServer,
    method: &Method,
    info: &RequestInfo,
    user: &UserInfo,
    content_type: Option<&str>,
    body: Body,
) -> Response {
    let known = match info.group.as_str() {
        "authentication.k8s.io" => {
            ["tokenreviews", "selfsubjectreviews"].contains(&info.resource.as_str())
        }
        _ => [
            "subjectaccessreviews",
            "selfsubjectaccessreviews",
            "localsubjectaccessreviews",
        ]
        .contains(&info.resource.as_str()),
    };
    let namespaced = info.resource == "localsubjectaccessreviews";
    if !known || !info.name.is_empty() || namespaced == info.namespace.is_empty() {
        return Status::path_not_found().into_response();
    }
    if method != Method::POST {
        return Status::method_not_supported(&info.group, &info.resource, &info.verb)
            .into_response();
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(s) => return s.into_response(),
    };
    match info.resource.as_str() {
        "tokenreviews" => reviews::token_review(&api.authn, &body, content_type),
        "selfsubjectreviews" => reviews::self_subject_review(user),
        "subjectaccessreviews" => reviews::subject_access_review(&body, content_type, None),
        "localsubjectaccessreviews" => {
            reviews::subject_access_review(&body, content_type, Some(&info.namespace))
        }
        _ => reviews::self_subject_access_review(user, &body, content_type),
    }
}

/// Which discovery document an `Accept` header asks for: `Some(v)` for aggregated
/// discovery in `apidiscovery.k8s.io/v`, `None` for the legacy document.
fn discovery_kind(accept: Option<&str>) -> Result<Option<&'static str>, Status> {
    for r in negotiate::parse_accept(accept) {
        if !r.accepts_json() {
            continue;
        }
        match r.target() {
            None => return Ok(None),
            Some(("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2")) => return Ok(Some("v2")),
            Some(("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2beta1")) => {
                return Ok(Some("v2beta1"));
            }
            Some(_) => continue,
        }
    }
    Err(Status::not_acceptable(&[
        "application/json",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
    ]))
}

fn discovery_response(body: &Value, version: Option<&str>, headers: &http::HeaderMap) -> Response {
    let bytes = body.to_string();
    let Some(v) = version else {
        return json(StatusCode::OK, body);
    };
    // ETag as kube-apiserver's aggregated discovery: a hash of the document.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let etag = format!("\"{h:016X}\"");
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut res = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = res.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Ok(e) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, e);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    res
}

fn serve_non_resource(
    api: &ApiServer,
    method: &Method,
    path: &str,
    accept: Option<&str>,
    headers: &http::HeaderMap,
    query: &Query,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return Status::failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => match discovery_kind(accept) {
            Ok(None) => json(StatusCode::OK, &discovery::api_versions(&api.address)),
            Ok(Some(v)) => {
                discovery_response(&discovery::aggregated(false, v, &[]), Some(v), headers)
            }
            Err(s) => s.into_response(),
        },
        ["apis"] => {
            let groups = api.aggregator.discovery();
            match discovery_kind(accept) {
                Ok(None) => json(StatusCode::OK, &discovery::api_group_list(&groups)),
                Ok(Some(v)) => {
                    discovery_response(&discovery::aggregated(true, v, &groups), Some(v), headers)
                }
                Err(s) => s.into_response(),
            }
        }
        ["api", "v1"] => match discovery::builtin("", "v1") {
            Some(gv) => json(StatusCode::OK, &discovery::resource_list(gv)),
            None => Status::path_not_found().into_response(),
        },
        ["apis", group] => match discovery::api_group(group, &api.aggregator.discovery()) {
            Some(doc) => json(StatusCode::OK, &doc),
            None => Status::path_not_found().into_response(),
        },
        ["apis", group, version] => match discovery::builtin(group, version) {
            Some(gv) => json(StatusCode::OK, &discovery::resource_list(gv)),
            None => Status::path_not_found().into_response(),
        },
        ["version"] => json(StatusCode::OK, &discovery::version()),
        ["openapi", "v2"] => {
            // Only JSON is served; clients asking for the protobuf form alone get 406.
            let wants_json = negotiate::parse_accept(accept)
                .iter()
                .any(|r| r.accepts_json());
            if wants_json {
                json(StatusCode::OK, &discovery::openapi_v2())
            } else {
                Status::not_acceptable(&["application/json"]).into_response()
            }
        }
        ["healthz"] | ["livez"] | ["readyz"] => {
            let verbose = query.iter().any(|(k, _)| k == "verbose");
            if verbose {
                let checks = [
                    "ping",
                    "log",
                    "etcd",
                    "poststarthook/start-kube-aggregator-informers",
                ];
                let mut out = String::new();
                for c in checks {
                    out.push_str(&format!("[+]{c} ok\n"));
                }
                out.push_str(&format!("{} check passed\n", segs[0]));
                text(StatusCode::OK, out)
            } else {
                text(StatusCode::OK, "ok")
            }
        }
        [probe, "ping"] if ["healthz", "livez", "readyz"].contains(probe) => {
            text(StatusCode::OK, "ok")
        }
        _ => Status::path_not_found().into_response(),
    }
}
