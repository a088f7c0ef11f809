//! The `metrics.k8s.io` API (v1beta1 and v1) as an aggregated API server serves it.
//!
//! What a client sees is what a k8s.io/apiserver-based metrics-server shows it:
//! - discovery at `/apis` (aggregated discovery v2/v2beta1, else `APIGroupList`),
//!   `/apis/metrics.k8s.io` and `/apis/metrics.k8s.io/{v1beta1,v1}`, plus `/version` and
//!   `/openapi/v2`;
//! - `nodes` (list, get) and `pods` (list across namespaces, list in one, get), only for nodes
//!   and Running pods the cluster state knows, filtered by label and field selectors;
//! - JSON, YAML, protobuf, `meta.k8s.io` Tables and `PartialObjectMetadata`, negotiated from
//!   `Accept` as apiserver does;
//! - errors as `Status` objects with apiserver's and metrics-server's wording.
//!
//! Usage comes precomputed from the [`Store`]; each response is written straight into one
//! buffer.

pub mod discovery;
pub mod encode;
pub mod format;
pub mod index;
pub mod negotiate;
pub mod quantity;
pub mod query;
pub mod request_info;
pub mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::cluster::{ClusterState, PodInfo};
use crate::selector::{FieldSelector, LabelSelector, Operator};
use crate::status::Status;
use crate::store::{JOIN_BATCH, PodValues, Store, UsageBatch};

pub use discovery::VersionInfo;
pub use encode::ApiVersion;
pub use request_info::{RequestInfo, RequestInfoError};

use discovery::{Discovery, Doc, GROUP};
use encode::{Ctx, IncludeObject, Item, ListEncoding, MetaVersion, NodeItem, PodItem, Shape};
use index::{LabelIndex, ScanLabels};
use negotiate::{Endpoint, Format, Negotiated};
use query::{ListOptions, Query};

/// Told about what the API serves, for self-metrics.
pub trait ApiObserver: Send + Sync + 'static {
    /// The age of one served item's timestamp, in seconds: metrics-server's
    /// `api_metric_freshness_seconds` observes this for every node and pod it returns.
    fn metric_freshness(&self, age_seconds: f64);
}

/// What the API reads from.
#[derive(Clone)]
pub struct ApiState {
    pub cluster: Arc<ClusterState>,
    pub store: Arc<Store>,
    /// What `/version` reports.
    pub version: VersionInfo,
    pub observer: Option<Arc<dyn ApiObserver>>,
    /// Answers the HPA's label-selected queries without scanning the namespace.
    label_index: Arc<LabelIndex>,
}

impl ApiState {
    pub fn new(cluster: Arc<ClusterState>, store: Arc<Store>) -> Self {
        Self {
            cluster,
            store,
            version: VersionInfo::default(),
            observer: None,
            label_index: Arc::new(LabelIndex::default()),
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn ApiObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn with_version(mut self, version: VersionInfo) -> Self {
        self.version = version;
        self
    }
}

struct Shared {
    state: ApiState,
    discovery: Discovery,
}

/// The metrics API: discovery, `/version`, `/openapi/v2` and both versions of the resources.
/// Paths outside `/apis`, `/apis/metrics.k8s.io/**`, `/version` and `/openapi/v2` are left
/// to the caller's router. Mount it with `Router::merge` (not `nest`): handlers read the full
/// request path. Authentication and authorization belong in front of it (see
/// [`RequestInfo`] for the attributes a SubjectAccessReview needs).
pub fn router(state: ApiState) -> Router {
    let discovery = Discovery::new(&state.version);
    let shared = Arc::new(Shared { state, discovery });
    Router::new()
        .route("/apis", any(apis))
        .route("/apis/", any(apis))
        .route("/apis/metrics.k8s.io", any(group))
        .route("/apis/metrics.k8s.io/", any(group))
        .route("/apis/metrics.k8s.io/{*rest}", any(resources))
        .route("/version", any(version))
        .route("/version/", any(version))
        .route("/openapi/v2", any(openapi_v2))
        .with_state(shared)
}

/// Media types every API route produces (go-restful's `Produces`).
const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// Lists with more items than this are encoded on the blocking pool, so a `top pod -A` over
/// a large cluster does not hold up the requests sharing its worker thread.
const BLOCKING_THRESHOLD: usize = 2_000;

fn status_response(status: Status) -> Response {
    status.into_response()
}

/// go-restful's answer to a path it has no route for.
fn route_not_found() -> Response {
    let mut status = Status::path_not_found();
    status.details = Some(Default::default());
    status_response(status)
}

/// go-restful's answer to a method the route does not serve.
fn method_not_allowed() -> Response {
    let mut status = Status::failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    );
    status.details = Some(Default::default());
    status_response(status)
}

fn is_get(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// apiserver pretty-prints for `?pretty=true`, `pretty=1` in the media type, and clients
/// that look like humans (curl, Wget, browsers).
fn wants_pretty(headers: &HeaderMap, query: &Query<'_>, negotiated: &Negotiated<'_>) -> bool {
    if negotiated.pretty {
        return true;
    }
    if let Some(p) = query.get("pretty")
        && !p.is_empty()
    {
        return matches!(p, "1" | "t" | "T" | "true" | "TRUE" | "True");
    }
    let ua = negotiate::header_text(headers.get(header::USER_AGENT));
    ua.starts_with("curl") || ua.starts_with("Wget") || ua.starts_with("Mozilla/5.0")
}

fn body_response(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res
}

/// Writes a JSON body in the negotiated format.
fn render(format: Format, pretty: bool, json: Vec<u8>) -> Response {
    match format {
        Format::Json if pretty => body_response(
            StatusCode::OK,
            Format::Json.media_type(),
            Bytes::from(format::pretty_json(&json)),
        ),
        Format::Yaml => match format::json_to_yaml(&json) {
            Ok(yaml) => body_response(StatusCode::OK, Format::Yaml.media_type(), Bytes::from(yaml)),
            Err(e) => status_response(Status::internal(e.to_string())),
        },
        _ => body_response(StatusCode::OK, Format::Json.media_type(), Bytes::from(json)),
    }
}

fn render_doc(doc: &Doc, format: Format, pretty: bool, content_type: &str) -> Response {
    let body = doc.get(format);
    if format == Format::Json && pretty {
        return body_response(
            StatusCode::OK,
            content_type,
            Bytes::from(format::pretty_json(&body)),
        );
    }
    body_response(StatusCode::OK, content_type, body)
}

fn accept_of(headers: &HeaderMap) -> String {
    negotiate::header_text(headers.get(header::ACCEPT)).into_owned()
}

/// go-restful's checks before any handler runs: the method (only GET, and HEAD with it) and
/// that `Accept` names something the route produces. Returns the `Accept` header.
fn route_checks(req: &Request, produces: &[&str]) -> Result<String, Box<Response>> {
    if !is_get(req.method()) {
        return Err(Box::new(method_not_allowed()));
    }
    let accept = accept_of(req.headers());
    if !negotiate::restful_accepts(&accept, produces) {
        return Err(Box::new(status_response(
            negotiate::restful_not_acceptable(),
        )));
    }
    Ok(accept)
}

/// `/apis`: aggregated discovery when asked for (as kube-apiserver's aggregator asks), else
/// the `APIGroupList`.
async fn apis(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let accept = match route_checks(&req, PRODUCES) {
        Ok(accept) => accept,
        Err(res) => return *res,
    };
    let query = Query::parse(req.uri().query());
    if let Some(n) = negotiate::negotiate(&accept, &Format::ALL, Endpoint::AggregatedDiscovery)
        && let Some(convert) = n.convert
    {
        let etag = &s.discovery.aggregated_etag;
        let mut res = if req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else {
            let doc = if convert.version == "v2" {
                &s.discovery.aggregated_v2
            } else {
                &s.discovery.aggregated_v2beta1
            };
            let content_type = negotiate::media_type_with_gvk(n.format, &convert);
            render_doc(
                doc,
                n.format,
                wants_pretty(req.headers(), &query, &n),
                &content_type,
            )
        };
        let headers = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(etag) {
            headers.insert(header::ETAG, v);
        }
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        return res;
    }
    plain_doc(&s.discovery.group_list, &accept, &query, req.headers())
}

/// A discovery document negotiated among JSON, YAML and protobuf.
fn plain_doc(doc: &Doc, accept: &str, query: &Query<'_>, headers: &HeaderMap) -> Response {
    match negotiate::negotiate(accept, &Format::ALL, Endpoint::Plain) {
        Some(n) => render_doc(
            doc,
            n.format,
            wants_pretty(headers, query, &n),
            n.format.media_type(),
        ),
        None => status_response(negotiate::not_acceptable(&Format::ALL)),
    }
}

/// `/apis/metrics.k8s.io`: the `APIGroup`.
async fn group(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let accept = match route_checks(&req, PRODUCES) {
        Ok(accept) => accept,
        Err(res) => return *res,
    };
    let query = Query::parse(req.uri().query());
    plain_doc(&s.discovery.group, &accept, &query, req.headers())
}

/// `/version`, written as apiserver writes it (indented JSON whatever the `Accept`).
async fn version(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(res) = route_checks(&req, &["application/json"]) {
        return *res;
    }
    body_response(
        StatusCode::OK,
        "application/json",
        s.discovery.version.clone(),
    )
}

/// `/openapi/v2` in JSON.
async fn openapi_v2(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if !is_get(req.method()) {
        return method_not_allowed();
    }
    let accept = accept_of(req.headers());
    if negotiate::negotiate(&accept, &[Format::Json], Endpoint::Plain).is_none() {
        return status_response(negotiate::not_acceptable(&[Format::Json]));
    }
    body_response(
        StatusCode::OK,
        "application/json",
        s.discovery.openapi_v2.clone(),
    )
}

/// What a path under `/apis/metrics.k8s.io/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'p> {
    Resources,
    Nodes,
    Node(&'p str),
    Pods(Option<&'p str>),
    Pod(&'p str, &'p str),
}

fn parse_target(rest: &str) -> Option<(ApiVersion, Target<'_>)> {
    let mut segments = rest.split('/');
    let version = ApiVersion::parse(segments.next()?)?;
    let parts: Vec<&str> = segments.collect();
    let target = match parts.as_slice() {
        [] | [""] => Target::Resources,
        ["nodes"] => Target::Nodes,
        ["nodes", name] if !name.is_empty() => Target::Node(name),
        ["pods"] => Target::Pods(None),
        ["namespaces", ns, "pods"] if !ns.is_empty() => Target::Pods(Some(ns)),
        ["namespaces", ns, "pods", name] if !ns.is_empty() && !name.is_empty() => {
            Target::Pod(ns, name)
        }
        _ => return None,
    };
    Some((version, target))
}

/// Everything under `/apis/metrics.k8s.io/`.
async fn resources(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = query::unescape_path(req.uri().path());
    let rest = path
        .strip_prefix("/apis/metrics.k8s.io/")
        .unwrap_or_default();
    let Some((version, target)) = parse_target(rest) else {
        return route_not_found();
    };
    let accept = match route_checks(&req, PRODUCES) {
        Ok(accept) => accept,
        Err(res) => return *res,
    };
    let query = Query::parse(req.uri().query());
    if target == Target::Resources {
        return plain_doc(
            s.discovery.resources(version),
            &accept,
            &query,
            req.headers(),
        );
    }
    let Some(negotiated) = negotiate::negotiate(&accept, &Format::ALL, Endpoint::Resource) else {
        return status_response(negotiate::not_acceptable(&Format::ALL));
    };
    let view = match View::new(
        &negotiated,
        &query,
        wants_pretty(req.headers(), &query, &negotiated),
    ) {
        Ok(v) => v,
        Err(status) => return status_response(*status),
    };
    let ctx = Ctx::new(version, now_secs());
    let state = &s.state;
    match target {
        Target::Resources => route_not_found(),
        Target::Node(name) => get_node(state, name, &ctx, &view),
        Target::Pod(ns, name) => get_pod(state, ns, name, &ctx, &view),
        Target::Nodes => match ListOptions::from_query(&query) {
            Err(status) => status_response(*status),
            Ok(opts) if opts.watch => watch_not_supported("nodes"),
            Ok(opts) => {
                let items = list_nodes(state, &opts.labels, &opts.fields);
                observe(state, &items);
                write_list(items, ctx, view).await
            }
        },
        Target::Pods(namespace) => match ListOptions::from_query(&query) {
            Err(status) => status_response(*status),
            Ok(opts) if opts.watch => watch_not_supported("pods"),
            Ok(opts) if let Some(encoding) = streamed(&view, namespace, &opts) => {
                if namespace.is_some() {
                    let chunks = stream_pods(state, namespace, &opts, &ctx, encoding);
                    return streamed_response(chunks, &view);
                }
                let state = state.clone();
                let encoded = tokio::task::spawn_blocking(move || {
                    stream_pods(&state, None, &opts, &ctx, encoding)
                })
                .await;
                match encoded {
                    Ok(chunks) => streamed_response(chunks, &view),
                    Err(e) => {
                        status_response(Status::internal(format!("encoding the list failed: {e}")))
                    }
                }
            }
            Ok(opts) => {
                let items = list_pods(state, namespace, &opts.labels, &opts.fields);
                observe(state, &items);
                write_list(items, ctx, view).await
            }
        },
    }
}

/// How a pod list is written while visiting the cluster state, if it is: full and
/// namespace lists in JSON, protobuf or a JSON Table (`top pod`, `kubectl get
/// podmetrics`). Not streamed, but collected by [`list_pods`]: the HPA's label-pinned query
/// and name lookups (small, and answered from the index), partial metadata and YAML (rare).
fn streamed(view: &View, namespace: Option<&str>, opts: &ListOptions) -> Option<ListEncoding> {
    let encoding = match *view {
        View::Object {
            format: Format::Json,
            ..
        } => ListEncoding::Json,
        View::Object {
            format: Format::Protobuf,
            ..
        } => ListEncoding::Protobuf,
        View::Table {
            format: Format::Json,
            meta,
            include,
            ..
        } => ListEncoding::Table { meta, include },
        _ => return None,
    };
    let small = opts.fields.required_value("metadata.name").is_some()
        || (namespace.is_some() && pinned_label(&opts.labels).is_some());
    (!small).then_some(encoding)
}

/// The size of the pieces a streamed list is written in: small enough for the allocator to
/// reuse from request to request (a single 60 MB buffer is a fresh mapping, and page
/// faults, every time), large enough to be few.
const CHUNK: usize = 1 << 20;

/// A pod list written straight from the cluster state and the store with no per-pod
/// allocation, in pieces of about [`CHUNK`] bytes cut between items (`top pod -A` over a
/// large cluster), in any of the [`streamed`] encodings. The matching pods are joined with
/// their usage [`JOIN_BATCH`] at a time by the store's ordered join (no hash probe per
/// pod), their served values copied into a reused [`UsageBatch`] (no reference per pod),
/// and encoded after the store's locks are released.
fn stream_pods(
    state: &ApiState,
    namespace: Option<&str>,
    opts: &ListOptions,
    ctx: &Ctx,
    encoding: ListEncoding,
) -> Vec<Bytes> {
    let namespace = namespace.or(opts.fields.required_value("metadata.namespace"));
    let mut writer = PodListWriter {
        state,
        ctx,
        encoding,
        now: now_ns(),
        chunks: Vec::new(),
        chunked_len: 0,
        out: Vec::with_capacity(CHUNK + CHUNK / 8),
        first: true,
        batch: Vec::with_capacity(JOIN_BATCH),
        usages: UsageBatch::default(),
    };
    encoding.head::<PodItem>(&mut writer.out, ctx);
    state.cluster.for_each_pod(namespace, |pod| {
        if pod_matches(pod, &opts.labels, &opts.fields) {
            writer.batch.push(Arc::clone(pod));
            if writer.batch.len() >= JOIN_BATCH {
                writer.flush();
            }
        }
    });
    writer.flush();
    let list_len = writer.chunked_len + writer.out.len();
    let mut out = writer.out;
    encoding.tail(&mut out);
    let mut chunks = writer.chunks;
    chunks.push(Bytes::from(out));
    if let Some(prefix) = encoding.prefix::<PodItem>(ctx, list_len) {
        chunks.insert(0, Bytes::from(prefix));
    }
    chunks
}

/// The state of [`stream_pods`]: the pieces written so far and the batch of matching pods
/// not yet joined with their usage.
struct PodListWriter<'a> {
    state: &'a ApiState,
    ctx: &'a Ctx,
    encoding: ListEncoding,
    now: i64,
    chunks: Vec<Bytes>,
    /// The length of `chunks`, together.
    chunked_len: usize,
    out: Vec<u8>,
    first: bool,
    batch: Vec<Arc<PodInfo>>,
    usages: UsageBatch,
}

impl PodListWriter<'_> {
    /// Joins the batch with the store and writes the pods that have usage.
    fn flush(&mut self) {
        self.state
            .store
            .join_values(&self.batch, |p| p.key(), &mut self.usages);
        for (i, pod) in self.batch.iter().enumerate() {
            let Some(usage) = self.usages.get(i) else {
                continue;
            };
            if let Some(observer) = &self.state.observer {
                let timestamp_ns = usage.time().0;
                observer.metric_freshness(self.now.saturating_sub(timestamp_ns) as f64 / 1e9);
            }
            self.encoding
                .item(&mut self.out, &(&**pod, usage), self.ctx, self.first);
            self.first = false;
            if self.out.len() >= CHUNK {
                let full = std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK + CHUNK / 8));
                self.chunked_len += full.len();
                self.chunks.push(Bytes::from(full));
            }
        }
        self.batch.clear();
    }
}

/// A streamed list's response: its pieces as they are, or joined to be re-indented.
fn streamed_response(chunks: Vec<Bytes>, view: &View) -> Response {
    match *view {
        View::Object {
            format: Format::Protobuf,
            ..
        } => chunked(chunks, Format::Protobuf.media_type()),
        View::Object { pretty: true, .. } | View::Table { pretty: true, .. } => {
            render(Format::Json, true, chunks.concat())
        }
        _ => chunked(chunks, Format::Json.media_type()),
    }
}

/// A body sent in its pieces, as they are.
fn chunked(chunks: Vec<Bytes>, content_type: &'static str) -> Response {
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut res = Response::new(Body::from_stream(stream));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn pod_matches(p: &PodInfo, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(&ScanLabels(&p.labels))
        && fields.matches(|f| match f {
            "metadata.name" => Some(&p.name),
            "metadata.namespace" => Some(&p.namespace),
            _ => None,
        })
}

/// A requirement that pins one value (`app=web`, as an HPA's matchLabels gives), which the
/// label index can answer.
fn pinned_label(labels: &LabelSelector) -> Option<(&str, &str)> {
    labels
        .requirements
        .iter()
        .find_map(|r| match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => {
                Some((r.key.as_str(), value.as_str()))
            }
            _ => None,
        })
}

/// The generic apiserver's answer to `?watch=true` on a storage without watch support.
fn watch_not_supported(resource: &str) -> Response {
    status_response(Status::method_not_supported(GROUP, resource, "watch"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn observe<I: Item>(state: &ApiState, items: &[I]) {
    if let Some(observer) = &state.observer {
        let now = now_ns();
        for item in items {
            observer.metric_freshness(now.saturating_sub(item.timestamp_ns()) as f64 / 1e9);
        }
    }
}

/// How the objects are to be written.
#[derive(Debug, Clone, Copy)]
enum View {
    Object {
        format: Format,
        pretty: bool,
    },
    Table {
        format: Format,
        pretty: bool,
        meta: MetaVersion,
        include: IncludeObject,
    },
    /// `PartialObjectMetadata` (`list == false`) or `PartialObjectMetadataList`.
    Partial {
        format: Format,
        pretty: bool,
        meta: MetaVersion,
        list: bool,
    },
}

impl View {
    fn new(n: &Negotiated<'_>, query: &Query<'_>, pretty: bool) -> Result<Self, Box<Status>> {
        let format = n.format;
        let Some(convert) = n.convert else {
            return Ok(View::Object { format, pretty });
        };
        // Negotiation only lets meta.k8s.io v1/v1beta1 conversions through.
        let meta = MetaVersion::parse(convert.version).unwrap_or(MetaVersion::V1);
        match convert.kind {
            "Table" => {
                let include = IncludeObject::parse(query.get("includeObject")).map_err(|_| {
                    Box::new(Status::bad_request(format!(
                        "Unable to convert to Table as requested: includeObject: Unsupported value: {:?}: supported values: \"\", \"Metadata\", \"None\", \"Object\"",
                        query.get("includeObject").unwrap_or("")
                    )))
                })?;
                Ok(View::Table {
                    format,
                    pretty,
                    meta,
                    include,
                })
            }
            "PartialObjectMetadataList" => Ok(View::Partial {
                format,
                pretty,
                meta,
                list: true,
            }),
            _ => Ok(View::Partial {
                format,
                pretty,
                meta,
                list: false,
            }),
        }
    }
}

/// apiserver's 406 for a list/object mismatch in a `PartialObjectMetadata` request.
fn partial_mismatch(wanted_list: bool, go_type: &str) -> Response {
    let message = if wanted_list {
        format!(
            "you requested PartialObjectMetadataList, but the requested object is not a list ({go_type})"
        )
    } else {
        format!(
            "you requested PartialObjectMetadata, but the requested object is a list ({go_type})"
        )
    };
    let status = Status::failure(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message);
    status_response(status)
}

fn go_type<I: Item>(list: bool) -> String {
    let kind = if list { I::LIST_KIND } else { I::KIND };
    format!("*metrics.{kind}")
}

/// Writes one object or a list in the requested view.
fn write<I: Item>(shape: Shape<'_, I>, ctx: &Ctx, view: &View) -> Response {
    let proto = |bytes: Vec<u8>| {
        body_response(
            StatusCode::OK,
            Format::Protobuf.media_type(),
            Bytes::from(bytes),
        )
    };
    let is_list = matches!(shape, Shape::List(_));
    match *view {
        View::Object {
            format: Format::Protobuf,
            ..
        } => proto(encode::proto(shape, ctx)),
        View::Object { format, pretty } => render(format, pretty, encode::json(shape, ctx)),
        View::Table {
            format,
            pretty,
            meta,
            include,
        } => render(
            format,
            pretty,
            encode::json_table(shape.items(), ctx, meta, include),
        ),
        View::Partial { list, .. } if list != is_list => {
            partial_mismatch(list, &go_type::<I>(is_list))
        }
        View::Partial {
            format: Format::Protobuf,
            meta,
            ..
        } => proto(encode::proto_partial(shape, ctx, meta)),
        View::Partial {
            format,
            pretty,
            meta,
            ..
        } => render(format, pretty, encode::json_partial(shape, ctx, meta)),
    }
}

async fn write_list<I: Item + Send + 'static>(items: Vec<I>, ctx: Ctx, view: View) -> Response {
    if items.len() <= BLOCKING_THRESHOLD {
        return write(Shape::List(&items), &ctx, &view);
    }
    match tokio::task::spawn_blocking(move || write(Shape::List(&items), &ctx, &view)).await {
        Ok(res) => res,
        Err(e) => status_response(Status::internal(format!("encoding the list failed: {e}"))),
    }
}

fn get_node(state: &ApiState, name: &str, ctx: &Ctx, view: &View) -> Response {
    let Some(node) = state.cluster.node(name) else {
        return status_response(Status::not_found("", "node", name));
    };
    let Some(usage) = state.store.node_usage(name) else {
        return status_response(Status::not_found(GROUP, "nodemetrics", name));
    };
    let item: NodeItem = (node, usage);
    observe(state, std::slice::from_ref(&item));
    write(Shape::One(&item), ctx, view)
}

fn get_pod(state: &ApiState, namespace: &str, name: &str, ctx: &Ctx, view: &View) -> Response {
    let Some(pod) = state.cluster.pod(namespace, name) else {
        return status_response(Status::not_found("", "pods", name));
    };
    let Some(usage) = state.store.pod_usage(namespace, name) else {
        return status_response(Status::not_found(
            GROUP,
            "podmetrics",
            &format!("{namespace}/{name}"),
        ));
    };
    let item: PodItem = (pod, usage);
    observe(state, std::slice::from_ref(&item));
    write(Shape::One(&item), ctx, view)
}

/// Nodes matching the selectors that have usage, sorted by name.
pub fn list_nodes(
    state: &ApiState,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Vec<NodeItem> {
    let nodes = match fields.required_value("metadata.name") {
        // A pinned name needs no scan.
        Some(name) => state.cluster.node(name).into_iter().collect(),
        None => state.cluster.nodes(),
    };
    nodes
        .into_iter()
        .filter(|n| labels.matches(&ScanLabels(&n.labels)))
        .filter(|n| {
            fields.matches(|f| match f {
                "metadata.name" => Some(&n.name),
                _ => None,
            })
        })
        .filter_map(|n| {
            let usage = state.store.node_usage(&n.name)?;
            Some((n, usage))
        })
        .collect()
}

/// Running pods matching the selectors that have usage, sorted by namespace and name.
pub fn list_pods(
    state: &ApiState,
    namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Vec<PodItem> {
    let namespace = namespace.or(fields.required_value("metadata.namespace"));
    let matches = |p: &PodInfo| pod_matches(p, labels, fields);
    let pinned = pinned_label(labels);
    let mut pods: Vec<Arc<PodInfo>> = Vec::new();
    let keep = |p: &Arc<PodInfo>| {
        if matches(p) {
            pods.push(Arc::clone(p));
        }
    };
    match (namespace, fields.required_value("metadata.name"), pinned) {
        // A pinned namespace and name need no scan.
        (Some(ns), Some(name), _) => state.cluster.pod(ns, name).iter().for_each(keep),
        (Some(ns), None, Some((key, value))) => {
            state
                .label_index
                .for_each_with_label(&state.cluster, ns, key, value, keep)
        }
        _ => state.cluster.for_each_pod(namespace, keep),
    }
    // A reference per pod, not a copy into a `UsageBatch`: the HPA's 50-pod query comes
    // here, and with copies it measured 2 to 4 µs slower (fresh buffers per request). The
    // large lists stream instead (see `streamed`), with copies.
    let mut usages = Vec::with_capacity(pods.len());
    state.store.join_sorted(
        &pods,
        |p| p.key(),
        |_, served| usages.push(served.map(|s| Arc::clone(s.usage))),
    );
    pods.into_iter()
        .zip(usages)
        .filter_map(|(p, usage)| Some((p, usage?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        use Target::*;
        let t = |p: &str| parse_target(p).map(|(v, t)| (v.version(), format!("{t:?}")));
        assert_eq!(t("v1beta1"), Some(("v1beta1", format!("{Resources:?}"))));
        assert_eq!(t("v1/"), Some(("v1", format!("{Resources:?}"))));
        assert_eq!(t("v1/nodes"), Some(("v1", format!("{Nodes:?}"))));
        assert_eq!(t("v1/nodes/a"), Some(("v1", format!("{:?}", Node("a")))));
        assert_eq!(t("v1/pods"), Some(("v1", format!("{:?}", Pods(None)))));
        assert_eq!(
            t("v1beta1/namespaces/ns/pods/p"),
            Some(("v1beta1", format!("{:?}", Pod("ns", "p"))))
        );
        for bad in [
            "v2/nodes",
            "v1/nodes/",
            "v1/nodes/a/b",
            "v1/pods/p",
            "v1/namespaces/ns",
            "v1/namespaces/ns/nodes",
            "v1/namespaces//pods",
            "v1/watch/nodes",
            "",
        ] {
            assert_eq!(parse_target(bad), None, "{bad}");
        }
    }
}
