//! `/metrics`: metrics-bridge's own metrics.
//!
//! Three groups, written with the `prometheus-client` crate (OpenMetrics natively; the text
//! format 0.0.4 is derived from it, see [`openmetrics_to_text`]):
//!
//! - **metrics-server's families, exactly**: same names, types, labels and buckets, so
//!   dashboards and alerts written for metrics-server keep working:
//!   `metrics_server_kubelet_request_duration_seconds{node}` (Prometheus' default buckets),
//!   `metrics_server_kubelet_request_total{success}`,
//!   `metrics_server_kubelet_last_request_time_seconds{node}` (whole seconds, as Go's
//!   `Unix()`), `metrics_server_manager_tick_duration_seconds` (buckets derived from
//!   `--metric-resolution` as metrics-server derives them), `metrics_server_storage_points{type}`
//!   (`node` and `container` points that can be served) and
//!   `metrics_server_api_metric_freshness_seconds` (exponential buckets from 1 s by ×1.364,
//!   observed for every node and pod the API returns). Unlike metrics-server, a node's series
//!   leave as soon as the node leaves the cluster.
//! - **the standard process metrics** (`process_*`), read from `/proc`, and beside them the
//!   allocator's own figures (`metrics_bridge_allocator_*_bytes`, with jemalloc), which tell
//!   the live heap apart from resident memory the allocator keeps.
//! - **metrics-bridge's own**, under `metrics_bridge_`: scrape failures by reason, bytes,
//!   samples and parse time, the last tick, API requests by verb, resource and code with their
//!   latency, exposition time and size, tracked nodes, pods and containers, readiness.
//!
//! Everything is read at scrape time from the state the rest of the program keeps anyway
//! (the scraper's [`ScrapeStats`], the store, the cluster state), so recording costs the hot
//! paths nothing beyond the atomics they already update. The only state kept here is for
//! the API and the exposition endpoints: fixed tables of atomics, no lock on the request path.
//! `docs/metrics.md` lists every family.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::allocator::AllocatorStats;
use crate::api::{ApiObserver, RequestInfo};
use crate::cluster::ClusterState;
use crate::exposition::{self, ExpositionObserver, Format, Totals};
use crate::scrape::{FailureReason, Histogram, HistogramSnapshot, ScrapeStats};
use crate::store::Store;

/// The path of the self-metrics.
pub const METRICS_PATH: &str = "/metrics";

/// metrics-server's freshness buckets: `ExponentialBuckets(1, 1.364, 20)`.
pub fn freshness_buckets() -> Vec<f64> {
    let mut b = Vec::with_capacity(20);
    let mut v = 1.0f64;
    for _ in 0..20 {
        b.push(v);
        v *= 1.364;
    }
    b
}

/// Buckets of `metrics_bridge_api_request_duration_seconds`: the metrics API answers from
/// memory, an HPA's query in tens of microseconds and a whole cluster's list in seconds, so
/// the buckets start at 100 µs: the HPA target (p99 under 1 ms) must be readable from them.
const API_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of `metrics_bridge_exposition_duration_seconds`: a large cluster's
/// `/metrics/resource` takes seconds.
const EXPOSITION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The verbs the API metrics tell apart; anything else counts as `other`.
const VERBS: [&str; 8] = [
    "get", "list", "watch", "head", "post", "put", "delete", "other",
];
/// The resources: the two the metrics API serves, none (discovery, `/version`, …), other.
const RESOURCES: [&str; 4] = ["nodes", "pods", "", "other"];
/// Distinct status codes kept per verb and resource; further codes count as `other`.
const CODE_SLOTS: usize = 15;

/// Requests of one verb and resource.
#[derive(Debug)]
struct RequestCell {
    duration: Histogram,
    /// `(code, count)`; code 0 marks a free slot, `u64::MAX` the overflow slot.
    codes: [(AtomicU64, AtomicU64); CODE_SLOTS + 1],
}

impl RequestCell {
    fn new(bounds: &Arc<[f64]>) -> Self {
        Self {
            duration: Histogram::new(Arc::clone(bounds)),
            codes: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }

    /// Counts one response, claiming a code slot without a lock.
    fn count(&self, code: u16) {
        let code = u64::from(code);
        for (slot, count) in &self.codes[..CODE_SLOTS] {
            let current = slot.load(Ordering::Acquire);
            if current == code {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if current == 0 {
                match slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(other) if other == code => {
                        count.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some((_, count)) = self.codes.get(CODE_SLOTS) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// API request counts and latencies, and metrics-server's freshness histogram.
#[derive(Debug)]
pub struct ApiMetrics {
    cells: Box<[RequestCell]>,
    freshness: Histogram,
}

impl ApiMetrics {
    fn new() -> Self {
        let bounds: Arc<[f64]> = Arc::from(API_BUCKETS.as_slice());
        Self {
            cells: (0..VERBS.len() * RESOURCES.len())
                .map(|_| RequestCell::new(&bounds))
                .collect(),
            freshness: Histogram::new(Arc::from(freshness_buckets())),
        }
    }

    fn cell(&self, verb: usize, resource: usize) -> Option<&RequestCell> {
        self.cells.get(verb * RESOURCES.len() + resource)
    }

    /// Records one API request.
    pub fn record(&self, verb: &str, resource: &str, code: StatusCode, took: Duration) {
        let v = VERBS
            .iter()
            .position(|x| *x == verb)
            .unwrap_or(VERBS.len() - 1);
        let r = RESOURCES
            .iter()
            .position(|x| *x == resource)
            .unwrap_or(RESOURCES.len() - 1);
        if let Some(cell) = self.cell(v, r) {
            cell.duration.observe(took);
            cell.count(code.as_u16());
        }
    }
}

impl ApiObserver for ApiMetrics {
    fn metric_freshness(&self, age_seconds: f64) {
        // A sample stamped ahead of our clock (kubelet clock skew) is fresh, not negative.
        let age = if age_seconds.is_finite() && age_seconds > 0.0 {
            Duration::from_secs_f64(age_seconds.min(1e9))
        } else {
            Duration::ZERO
        };
        self.freshness.observe(age);
    }
}

/// What one exposition endpoint has written.
#[derive(Debug)]
struct EndpointStats {
    path: &'static str,
    duration: Histogram,
    responses: AtomicU64,
    incomplete: AtomicU64,
    sent_bytes: AtomicU64,
    last_bytes: AtomicU64,
    last_series: AtomicU64,
}

/// Exposition time and size, per endpoint.
#[derive(Debug)]
pub struct ExpositionMetrics {
    endpoints: [EndpointStats; 2],
}

impl ExpositionMetrics {
    fn new() -> Self {
        let bounds: Arc<[f64]> = Arc::from(EXPOSITION_BUCKETS.as_slice());
        let endpoint = |path| EndpointStats {
            path,
            duration: Histogram::new(Arc::clone(&bounds)),
            responses: AtomicU64::new(0),
            incomplete: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            last_series: AtomicU64::new(0),
        };
        Self {
            endpoints: [endpoint(exposition::RESOURCE_PATH), endpoint(METRICS_PATH)],
        }
    }
}

impl ExpositionObserver for ExpositionMetrics {
    fn exposed(
        &self,
        path: &'static str,
        took: Duration,
        totals: Totals,
        series: u64,
        complete: bool,
    ) {
        let Some(e) = self.endpoints.iter().find(|e| e.path == path) else {
            return;
        };
        e.responses.fetch_add(1, Ordering::Relaxed);
        if !complete {
            e.incomplete.fetch_add(1, Ordering::Relaxed);
            return;
        }
        e.duration.observe(took);
        e.sent_bytes.fetch_add(totals.sent, Ordering::Relaxed);
        e.last_bytes.store(totals.written, Ordering::Relaxed);
        e.last_series.store(series, Ordering::Relaxed);
    }
}

/// What the self-metrics read from.
pub struct Sources {
    pub resolution: Duration,
    pub scrape: Arc<ScrapeStats>,
    pub store: Arc<Store>,
    pub cluster: Arc<ClusterState>,
    /// Whether the metrics API can answer with data (caches synced, a rate stored, not
    /// shutting down).
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The `/metrics` registry and the state only it keeps.
pub struct SelfMetrics {
    registry: Registry,
    api: Arc<ApiMetrics>,
    exposition: Arc<ExpositionMetrics>,
}

impl fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfMetrics").finish_non_exhaustive()
    }
}

impl SelfMetrics {
    pub fn new(sources: Sources) -> Self {
        let api = Arc::new(ApiMetrics::new());
        let exposition = Arc::new(ExpositionMetrics::new());
        let sources = Arc::new(sources);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MetricsServerCollector {
            sources: Arc::clone(&sources),
            api: Arc::clone(&api),
        }));
        registry.register_collector(Box::new(BridgeCollector {
            sources,
            api: Arc::clone(&api),
            exposition: Arc::clone(&exposition),
        }));
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(AllocatorCollector));
        Self {
            registry,
            api,
            exposition,
        }
    }

    /// Receives the API's freshness observations.
    pub fn api_observer(&self) -> Arc<dyn ApiObserver> {
        Arc::clone(&self.api) as Arc<dyn ApiObserver>
    }

    /// Receives the exposition endpoints' reports.
    pub fn exposition_observer(&self) -> Arc<dyn ExpositionObserver> {
        Arc::clone(&self.exposition) as Arc<dyn ExpositionObserver>
    }

    pub fn api(&self) -> &Arc<ApiMetrics> {
        &self.api
    }

    /// The whole exposition in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut om = String::with_capacity(64 << 10);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut om, &self.registry) {
            // Writing into a String only fails if a collector does; say so in the body.
            tracing::error!(error = %e, "encoding /metrics failed");
        }
        match format {
            Format::OpenMetrics { .. } => om.into_bytes(),
            Format::Text => openmetrics_to_text(&om).into_bytes(),
        }
    }
}

/// The `/metrics` route. Authorization belongs in front of it.
pub fn router(metrics: Arc<SelfMetrics>) -> axum::Router {
    axum::Router::new()
        .route(METRICS_PATH, axum::routing::get(serve))
        .with_state(metrics)
}

async fn serve(State(metrics): State<Arc<SelfMetrics>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let (format, gzip) = exposition::negotiate::negotiate(&headers);
    let metrics2 = Arc::clone(&metrics);
    // Reading /proc and formatting take a little while; keep them off the async workers.
    let text = match tokio::task::spawn_blocking(move || metrics2.encode(format)).await {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "encoding /metrics failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let series = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .count() as u64;
    let (response, totals) = exposition::whole_response(format, gzip, text);
    metrics
        .exposition
        .exposed(METRICS_PATH, started.elapsed(), totals, series, true);
    response
}

/// When a request reached the outermost layer, before authentication and authorization.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

/// Outermost middleware: stamps each request with its [`Received`] time, so that
/// [`track_api`] counts authentication and authorization in the latency, as kube-apiserver's
/// `apiserver_request_duration_seconds` does (its clock starts in
/// `WithRequestReceivedTimestamp`, outside the authentication filters).
pub async fn stamp_received(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Received(Instant::now()));
    next.run(req).await
}

/// Middleware recording every request to the metrics API: verb and resource as
/// k8s.io/apiserver names them, the status code, the time to the response head from the
/// request's [`Received`] stamp (from here when there is none).
pub async fn track_api(State(api): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let started = req
        .extensions()
        .get::<Received>()
        .map_or_else(Instant::now, |r| r.0);
    let info = RequestInfo::new(req.method(), req.uri().path(), req.uri().query()).ok();
    let response = next.run(req).await;
    let (verb, resource) = match &info {
        Some(i) if i.is_resource_request => (i.verb.as_str(), i.resource.as_str()),
        Some(i) => (i.verb.as_str(), ""),
        None => ("other", "other"),
    };
    api.record(verb, resource, response.status(), started.elapsed());
    response
}

/// Turns prometheus-client's OpenMetrics text into the text format 0.0.4 as Go's client
/// writes it: no `# EOF` or `# UNIT`; counter families named after their `_total` samples;
/// info families become gauges named after their `_info` samples; `unknown` is `untyped`;
/// `le` bucket bounds written as Go writes floats (`1`, not `1.0`).
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((help_name, text)) = help.take()
                && help_name == rest.split(' ').next().unwrap_or_default()
            {
                out.push_str("# HELP ");
                out.push_str(&name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        match go_le(line) {
            Some(rewritten) => out.push_str(&rewritten),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A `_bucket` line with its `le` bound rewritten in Go's float format, if it differs.
fn go_le(line: &str) -> Option<String> {
    let at = line.find("le=\"")?;
    let name = line.get(..line.find('{')?)?;
    if !name.ends_with("_bucket") {
        return None;
    }
    let value_start = at + 4;
    let value_end = value_start + line.get(value_start..)?.find('"')?;
    let bound = line.get(value_start..value_end)?;
    if bound == "+Inf" {
        return None;
    }
    let parsed: f64 = bound.parse().ok()?;
    let mut go = Vec::new();
    crate::gofloat::append(&mut go, parsed);
    let go = String::from_utf8(go).ok()?;
    if go == bound {
        return None;
    }
    Some(format!(
        "{}{go}{}",
        line.get(..value_start)?,
        line.get(value_end..)?
    ))
}

// ---------------------------------------------------------------------------------------------
// Collectors

type EncodeResult = Result<(), fmt::Error>;

/// Histogram buckets as prometheus-client takes them: `(bound, non-cumulative count)`, the
/// last for `+Inf`.
fn buckets(s: &HistogramSnapshot) -> Vec<(f64, u64)> {
    let mut prev = 0;
    s.bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(&s.cumulative)
        .map(|(bound, &cum)| {
            let n = cum.saturating_sub(prev);
            prev = cum;
            (bound, n)
        })
        .collect()
}

fn histogram<S: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: Option<&S>,
    h: &Histogram,
) -> EncodeResult {
    let s = h.snapshot();
    let b = buckets(&s);
    match labels {
        Some(labels) => encoder
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &b, None),
        None => encoder.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &b, None),
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> EncodeResult {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn counter_f64(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> EncodeResult {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + fmt::Debug + Send + Sync + 'static>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> EncodeResult {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn unix_seconds(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

/// metrics-server's own families.
#[derive(Debug)]
struct MetricsServerCollector {
    sources: Arc<Sources>,
    api: Arc<ApiMetrics>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("resolution", &self.resolution)
            .finish_non_exhaustive()
    }
}

impl Collector for MetricsServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> EncodeResult {
        let s = &self.sources;
        let nodes = s.scrape.nodes();

        let mut e = encoder.encode_descriptor(
            "metrics_server_kubelet_request_duration_seconds",
            "Duration of requests to Kubelet API in seconds",
            None,
            MetricType::Histogram,
        )?;
        for (name, node) in &nodes {
            histogram(&mut e, Some(&[("node", &**name)]), &node.duration)?;
        }

        let totals = s.scrape.totals();
        let mut e = encoder.encode_descriptor(
            "metrics_server_kubelet_request",
            "Number of requests sent to Kubelet API",
            None,
            MetricType::Counter,
        )?;
        for (success, n) in [
            ("false", totals.requests_failed),
            ("true", totals.requests_ok),
        ] {
            ConstCounter::new(n).encode(e.encode_family(&[("success", success)])?)?;
        }

        let mut e = encoder.encode_descriptor(
            "metrics_server_kubelet_last_request_time_seconds",
            "Time of last request performed to Kubelet API since unix epoch in seconds",
            None,
            MetricType::Gauge,
        )?;
        for (name, node) in &nodes {
            let t = node.last_request_ns();
            if t > 0 {
                ConstGauge::new(unix_seconds(t)).encode(e.encode_family(&[("node", &**name)])?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "metrics_server_manager_tick_duration_seconds",
            "The total time spent collecting and storing metrics in seconds.",
            None,
            MetricType::Histogram,
        )?;
        histogram::<NoLabelSet>(&mut e, None, &s.scrape.ticks)?;

        let stored = s.store.stats();
        let mut e = encoder.encode_descriptor(
            "metrics_server_storage_points",
            "Number of metrics points stored.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in [("container", stored.containers), ("node", stored.nodes)] {
            ConstGauge::new(n as i64).encode(e.encode_family(&[("type", kind)])?)?;
        }

        let mut e = encoder.encode_descriptor(
            "metrics_server_api_metric_freshness_seconds",
            "Freshness of metrics exported",
            None,
            MetricType::Histogram,
        )?;
        histogram::<NoLabelSet>(&mut e, None, &self.api.freshness)
    }
}

/// metrics-bridge's own families.
#[derive(Debug)]
struct BridgeCollector {
    sources: Arc<Sources>,
    api: Arc<ApiMetrics>,
    exposition: Arc<ExpositionMetrics>,
}

impl Collector for BridgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> EncodeResult {
        let s = &self.sources;
        let totals = s.scrape.totals();

        let mut e = encoder.encode_descriptor(
            "metrics_bridge_build",
            "metrics-bridge's version; always 1",
            None,
            MetricType::Info,
        )?;
        e.encode_info(&[("version", crate::options::VERSION)])?;

        gauge(
            &mut encoder,
            "metrics_bridge_metric_resolution_seconds",
            "How often every kubelet is scraped (--metric-resolution)",
            s.resolution.as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_api_ready",
            "1 when the metrics API answers with data: node and pod caches synced, a rate \
             stored, not shutting down",
            i64::from((s.ready)()),
        )?;

        let mut e = encoder.encode_descriptor(
            "metrics_bridge_kubelet_scrape_failures",
            "Failed kubelet scrapes, by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in FailureReason::ALL {
            ConstCounter::new(s.scrape.failures(reason))
                .encode(e.encode_family(&[("reason", reason.as_str())])?)?;
        }
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_response_bytes",
            "Kubelet response bodies received, in bytes as sent (compressed if the kubelet compressed)",
            totals.bytes_received,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_decoded_bytes",
            "Kubelet response bodies after decompression, in bytes",
            totals.bytes_decoded,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_samples",
            "Samples (series lines) read from kubelet pages",
            totals.samples,
        )?;
        counter_f64(
            &mut encoder,
            "metrics_bridge_kubelet_parse_seconds",
            "Time spent parsing and decoding kubelet pages, in seconds",
            totals.decode_time.as_secs_f64(),
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_dropped_pods",
            "Pods left out of a page because a container lacked CPU or memory (metrics-server's \
             rule)",
            totals.dropped_pods,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_incomplete_node_pages",
            "Pages whose node series did not make a complete node point",
            totals.incomplete_nodes,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_unattributed_series",
            "Container series without a namespace, pod or container label, skipped",
            totals.unattributed_series,
        )?;

        let (ok, attempted) = s.scrape.last_tick_result();
        gauge(
            &mut encoder,
            "metrics_bridge_last_tick_nodes",
            "Nodes the latest completed tick tried to scrape",
            attempted as i64,
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_last_tick_succeeded_nodes",
            "Nodes the latest completed tick scraped successfully",
            ok as i64,
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_last_tick_duration_seconds",
            "How long the latest completed tick took",
            s.scrape.last_tick_duration().as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_last_tick_timestamp_seconds",
            "When the latest tick started, in seconds since the epoch (0 before the first)",
            s.scrape.last_tick_start_ns() as f64 / 1e9,
        )?;

        let pool = s.scrape.pool();
        gauge(
            &mut encoder,
            "metrics_bridge_kubelet_idle_connections",
            "Idle keep-alive connections to kubelets, as of the latest tick",
            pool.idle as i64,
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_kubelet_idle_connections_limit",
            "The most idle kubelet connections kept (--kubelet-max-idle-connections, or what \
             the open-file limit allows)",
            pool.budget as i64,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_connections_opened",
            "Connections opened to kubelets (TCP connect and TLS handshake)",
            pool.opened,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_tls_sessions_resumed",
            "Kubelet connections that resumed a TLS session instead of a full handshake",
            pool.resumed,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_connections_reused",
            "Kubelet requests sent on a kept-alive connection",
            pool.reused,
        )?;
        counter(
            &mut encoder,
            "metrics_bridge_kubelet_connections_closed_over_limit",
            "Idle kubelet connections closed to stay within the idle limit",
            pool.evicted,
        )?;

        gauge(
            &mut encoder,
            "metrics_bridge_tracked_nodes",
            "Nodes in the node cache: the kubelets scraped each tick",
            s.cluster.node_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_tracked_pods",
            "Running pods in the pod cache: the pods the metrics API can serve",
            s.cluster.pod_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "metrics_bridge_tracked_containers",
            "Containers with two points in the store, whose usage can be served",
            s.store.stats().containers as i64,
        )?;

        self.encode_api(&mut encoder)?;
        self.encode_exposition(&mut encoder)
    }
}

impl BridgeCollector {
    fn encode_api(&self, encoder: &mut DescriptorEncoder<'_>) -> EncodeResult {
        let cells = || {
            VERBS.iter().enumerate().flat_map(move |(v, verb)| {
                RESOURCES
                    .iter()
                    .enumerate()
                    .filter_map(move |(r, resource)| {
                        self.api.cell(v, r).map(|c| (*verb, *resource, c))
                    })
            })
        };
        let mut e = encoder.encode_descriptor(
            "metrics_bridge_api_requests",
            "Requests to the metrics API, by Kubernetes verb, resource (empty for discovery and \
             other non-resource paths) and HTTP status code",
            None,
            MetricType::Counter,
        )?;
        let mut code_text = String::new();
        for (verb, resource, cell) in cells() {
            for (i, (code, count)) in cell.codes.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                code_text.clear();
                if i == CODE_SLOTS {
                    code_text.push_str("other");
                } else {
                    code_text.push_str(&code.load(Ordering::Relaxed).to_string());
                }
                ConstCounter::new(n).encode(e.encode_family(&[
                    ("verb", verb),
                    ("resource", resource),
                    ("code", code_text.as_str()),
                ])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "metrics_bridge_api_request_duration_seconds",
            "Time from a metrics API request's arrival to its response head, by verb and resource",
            None,
            MetricType::Histogram,
        )?;
        for (verb, resource, cell) in cells() {
            if cell.duration.snapshot().count > 0 {
                histogram(
                    &mut e,
                    Some(&[("verb", verb), ("resource", resource)]),
                    &cell.duration,
                )?;
            }
        }
        Ok(())
    }

    fn encode_exposition(&self, encoder: &mut DescriptorEncoder<'_>) -> EncodeResult {
        let endpoints = &self.exposition.endpoints;
        let mut e = encoder.encode_descriptor(
            "metrics_bridge_exposition_duration_seconds",
            "Time to write a complete exposition, by path",
            None,
            MetricType::Histogram,
        )?;
        for ep in endpoints {
            histogram(&mut e, Some(&[("path", ep.path)]), &ep.duration)?;
        }
        let per_path = |encoder: &mut DescriptorEncoder<'_>,
                        name: &str,
                        help: &str,
                        kind: MetricType,
                        value: &dyn Fn(&EndpointStats) -> u64|
         -> EncodeResult {
            let mut e = encoder.encode_descriptor(name, help, None, kind)?;
            for ep in endpoints {
                let labels = [("path", ep.path)];
                let fam = e.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(ep)).encode(fam)?,
                    _ => ConstGauge::new(value(ep) as i64).encode(fam)?,
                }
            }
            Ok(())
        };
        per_path(
            encoder,
            "metrics_bridge_exposition_responses",
            "Exposition responses started, by path",
            MetricType::Counter,
            &|e| e.responses.load(Ordering::Relaxed),
        )?;
        per_path(
            encoder,
            "metrics_bridge_exposition_incomplete_responses",
            "Exposition responses the client left before the end, by path",
            MetricType::Counter,
            &|e| e.incomplete.load(Ordering::Relaxed),
        )?;
        per_path(
            encoder,
            "metrics_bridge_exposition_sent_bytes",
            "Exposition bytes sent (after gzip when used), by path",
            MetricType::Counter,
            &|e| e.sent_bytes.load(Ordering::Relaxed),
        )?;
        per_path(
            encoder,
            "metrics_bridge_exposition_last_size_bytes",
            "Size of the latest complete exposition before compression, by path",
            MetricType::Gauge,
            &|e| e.last_bytes.load(Ordering::Relaxed),
        )?;
        per_path(
            encoder,
            "metrics_bridge_exposition_last_series",
            "Series in the latest complete exposition, by path",
            MetricType::Gauge,
            &|e| e.last_series.load(Ordering::Relaxed),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Process metrics

/// The Linux kernel reports process times in USER_HZ ticks, which is 100 on every
/// architecture Kubernetes runs on (it is part of the kernel's user-space ABI).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/self/status`, `/proc/stat` and `/proc/self/fd`;
    /// `None` where `/proc` cannot be read (not Linux).
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mut p = parse_stat(&stat)?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        p.resident_bytes = kib("VmRSS:").unwrap_or(0);
        p.virtual_bytes = kib("VmSize:").unwrap_or(0);
        p.start_time_seconds += boot_time().unwrap_or(0.0);
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        p.max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(0);
        Some(p)
    }
}

/// CPU time and start time (since boot) from `/proc/self/stat`. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcessStats> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        start_time_seconds: field(22)? as f64 / USER_HZ,
        ..Default::default()
    })
}

/// The boot time from `/proc/stat`'s `btime`, read once.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })
}

/// The standard `process_*` families, as Go's process collector names them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> EncodeResult {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        counter_f64(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds as i64,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            i64::try_from(p.max_fds).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        )
    }
}

/// jemalloc's statistics (`metrics_bridge_allocator_*_bytes`); nothing without jemalloc.
#[derive(Debug)]
struct AllocatorCollector;

impl Collector for AllocatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> EncodeResult {
        let Some(a) = AllocatorStats::read() else {
            return Ok(());
        };
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (name, help, value) in [
            (
                "metrics_bridge_allocator_allocated_bytes",
                "Bytes in live heap allocations (jemalloc stats.allocated).",
                a.allocated,
            ),
            (
                "metrics_bridge_allocator_active_bytes",
                "Bytes in heap pages holding live allocations (jemalloc stats.active).",
                a.active,
            ),
            (
                "metrics_bridge_allocator_resident_bytes",
                "Bytes of physical memory mapped by the allocator, including freed pages not yet returned and its metadata (jemalloc stats.resident).",
                a.resident,
            ),
            (
                "metrics_bridge_allocator_retained_bytes",
                "Bytes of virtual memory the allocator keeps mapped after returning it to the kernel (jemalloc stats.retained).",
                a.retained,
            ),
            (
                "metrics_bridge_allocator_metadata_bytes",
                "Bytes of the allocator's own bookkeeping (jemalloc stats.metadata).",
                a.metadata,
            ),
        ] {
            gauge(&mut encoder, name, help, bytes(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::BodyStats;

    fn metrics(resolution: Duration) -> (SelfMetrics, Arc<ScrapeStats>, Arc<Store>) {
        let scrape = Arc::new(ScrapeStats::new(resolution));
        let store = Arc::new(Store::new(resolution));
        let m = SelfMetrics::new(Sources {
            resolution,
            scrape: Arc::clone(&scrape),
            store: Arc::clone(&store),
            cluster: Arc::new(ClusterState::new()),
            ready: Box::new(|| true),
        });
        (m, scrape, store)
    }

    fn scrape_ok(scrape: &ScrapeStats, node: &str, at_s: i64) {
        let name: Arc<str> = Arc::from(node);
        let entry = scrape.node_entry(&name);
        let ns = at_s * 1_000_000_000;
        scrape.record_success(
            &entry,
            ns,
            ns + 20_000_000,
            Duration::from_millis(20),
            BodyStats {
                received: 1000,
                decoded: 4000,
                samples: 40,
                decode_time: Duration::from_millis(1),
                left_out: Default::default(),
            },
        );
    }

    fn text(m: &SelfMetrics, format: Format) -> String {
        String::from_utf8(m.encode(format)).unwrap()
    }

    #[test]
    fn the_kubelet_connection_pool_is_reported_as_of_the_latest_tick() {
        let (m, scrape, _) = metrics(Duration::from_secs(15));
        let pool = crate::scrape::PoolStats {
            idle: 3,
            idle_peak: 5,
            budget: 4,
            opened: 10,
            resumed: 6,
            reused: 20,
            evicted: 2,
        };
        scrape.tick_finished(Duration::from_millis(300), 1, 1, pool);
        let body = text(&m, Format::Text);
        for line in [
            "metrics_bridge_kubelet_idle_connections 3",
            "metrics_bridge_kubelet_idle_connections_limit 4",
            "metrics_bridge_kubelet_connections_opened_total 10",
            "metrics_bridge_kubelet_tls_sessions_resumed_total 6",
            "metrics_bridge_kubelet_connections_reused_total 20",
            "metrics_bridge_kubelet_connections_closed_over_limit_total 2",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{line} missing in:\n{body}"
            );
        }
    }

    #[test]
    fn metrics_server_families_are_the_fixtures_exactly() {
        let (m, scrape, _) = metrics(Duration::from_secs(15));
        scrape_ok(&scrape, "n1", 1_700_000_000);
        scrape.tick_finished(Duration::from_millis(300), 1, 1, Default::default());
        let body = text(&m, Format::Text);
        let mut names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|n| n.starts_with("metrics_server_"))
            .collect();
        names.sort();
        let fixture = include_str!(
            "../tests/fixtures/kubelet/metrics-server-e2e-expected/self-metric-names.txt"
        );
        let mut want: Vec<&str> = fixture.lines().filter(|l| !l.is_empty()).collect();
        want.sort();
        assert_eq!(names, want);

        let lines: Vec<&str> = body.lines().collect();
        for want in [
            "# TYPE metrics_server_kubelet_request_total counter",
            "metrics_server_kubelet_request_total{success=\"true\"} 1",
            "metrics_server_kubelet_request_total{success=\"false\"} 0",
            "metrics_server_kubelet_last_request_time_seconds{node=\"n1\"} 1700000000",
            "metrics_server_kubelet_request_duration_seconds_bucket{le=\"0.025\",node=\"n1\"} 1",
            "metrics_server_kubelet_request_duration_seconds_bucket{le=\"0.01\",node=\"n1\"} 0",
            "metrics_server_kubelet_request_duration_seconds_count{node=\"n1\"} 1",
            "metrics_server_manager_tick_duration_seconds_count 1",
            "metrics_server_storage_points{type=\"node\"} 0",
            "# TYPE metrics_bridge_build_info gauge",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{body}");
        }
        // Go writes bucket bounds as `1`, never `1.0`, and the text format has no EOF.
        assert!(!body.contains("le=\"1.0\""));
        assert!(!body.contains("# EOF"));
        // The tick histogram has metrics-server's resolution-derived buckets (+Inf extra).
        let tick_buckets = lines
            .iter()
            .filter(|l| l.starts_with("metrics_server_manager_tick_duration_seconds_bucket"))
            .count();
        assert_eq!(
            tick_buckets,
            crate::scrape::tick_buckets(Duration::from_secs(15)).len() + 1
        );

        let om = text(&m, Format::OpenMetrics { v1: true });
        assert!(om.contains("# TYPE metrics_server_kubelet_request counter\n"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn a_removed_node_leaves_every_per_node_series() {
        let (m, scrape, _) = metrics(Duration::from_secs(15));
        scrape_ok(&scrape, "n1", 1_700_000_000);
        scrape_ok(&scrape, "n2", 1_700_000_001);
        assert!(text(&m, Format::Text).contains("node=\"n1\""));
        scrape.remove_node("n1");
        let body = text(&m, Format::Text);
        assert!(!body.contains("node=\"n1\""), "{body}");
        assert!(
            body.contains(
                "metrics_server_kubelet_last_request_time_seconds{node=\"n2\"} 1700000001"
            )
        );
        // The counter is cluster-wide and does not go back.
        assert!(body.contains("metrics_server_kubelet_request_total{success=\"true\"} 2"));
    }

    /// Time spent in layers between the arrival stamp and `track_api` (authentication and
    /// authorization in the real app) counts in the API latency.
    #[tokio::test]
    async fn api_latency_runs_from_the_arrival_stamp() {
        use tower::ServiceExt as _;
        let (m, _, _) = metrics(Duration::from_secs(15));
        let slow_auth = |req: Request, next: Next| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            next.run(req).await
        };
        let app = axum::Router::new()
            .route(
                "/apis/metrics.k8s.io/v1beta1/pods",
                axum::routing::get(|| async { "ok" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(m.api()),
                track_api,
            ));
        for (stamped, under_25ms) in [(true, 0), (false, 1)] {
            let app = app.clone().layer(axum::middleware::from_fn(slow_auth));
            let app = if stamped {
                app.layer(axum::middleware::from_fn(stamp_received))
            } else {
                app
            };
            let req = Request::get("/apis/metrics.k8s.io/v1beta1/pods")
                .body(axum::body::Body::empty())
                .unwrap();
            assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
            let body = text(&m, Format::Text);
            let bucket = body
                .lines()
                .find(|l| {
                    l.starts_with("metrics_bridge_api_request_duration_seconds_bucket{le=\"0.025\",verb=\"list\",resource=\"pods\"}")
                })
                .unwrap_or_else(|| panic!("no 25 ms bucket in\n{body}"));
            assert!(
                bucket.ends_with(&format!(" {under_25ms}")),
                "stamped {stamped}: {bucket}"
            );
        }
    }

    #[test]
    fn api_requests_are_counted_by_verb_resource_and_code() {
        let (m, _, _) = metrics(Duration::from_secs(15));
        let api = m.api();
        api.record("list", "pods", StatusCode::OK, Duration::from_millis(2));
        api.record("list", "pods", StatusCode::OK, Duration::from_millis(3));
        api.record(
            "get",
            "nodes",
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        api.record(
            "patch",
            "widgets",
            StatusCode::METHOD_NOT_ALLOWED,
            Duration::ZERO,
        );
        api.metric_freshness(2.5);
        api.metric_freshness(-1.0);
        let body = text(&m, Format::Text);
        for want in [
            "metrics_bridge_api_requests_total{verb=\"list\",resource=\"pods\",code=\"200\"} 2",
            "metrics_bridge_api_requests_total{verb=\"get\",resource=\"nodes\",code=\"404\"} 1",
            "metrics_bridge_api_requests_total{verb=\"other\",resource=\"other\",code=\"405\"} 1",
            "metrics_bridge_api_request_duration_seconds_count{verb=\"list\",resource=\"pods\"} 2",
            "metrics_bridge_api_request_duration_seconds_bucket{le=\"0.0025\",verb=\"list\",resource=\"pods\"} 1",
            "metrics_server_api_metric_freshness_seconds_count 2",
            "metrics_server_api_metric_freshness_seconds_bucket{le=\"1\"} 1",
            "metrics_bridge_api_ready 1",
        ] {
            assert!(
                body.lines().any(|l| l == want),
                "missing {want:?} in\n{body}"
            );
        }
        // More distinct codes than slots fold into `other`.
        let cell = RequestCell::new(&Arc::from([1.0].as_slice()));
        for code in 200..(200 + CODE_SLOTS as u16 + 3) {
            cell.count(code);
        }
        let overflow = cell.codes[CODE_SLOTS].1.load(Ordering::Relaxed);
        assert_eq!(overflow, 3);
    }

    #[test]
    fn exposition_reports_are_kept_per_path() {
        let (m, _, _) = metrics(Duration::from_secs(15));
        let obs = m.exposition_observer();
        let totals = Totals {
            written: 1000,
            sent: 100,
        };
        obs.exposed(
            exposition::RESOURCE_PATH,
            Duration::from_millis(30),
            totals,
            12,
            true,
        );
        obs.exposed(
            exposition::RESOURCE_PATH,
            Duration::ZERO,
            Totals::default(),
            0,
            false,
        );
        let body = text(&m, Format::Text);
        for want in [
            "metrics_bridge_exposition_responses_total{path=\"/metrics/resource\"} 2",
            "metrics_bridge_exposition_incomplete_responses_total{path=\"/metrics/resource\"} 1",
            "metrics_bridge_exposition_sent_bytes_total{path=\"/metrics/resource\"} 100",
            "metrics_bridge_exposition_last_size_bytes{path=\"/metrics/resource\"} 1000",
            "metrics_bridge_exposition_last_series{path=\"/metrics/resource\"} 12",
            "metrics_bridge_exposition_duration_seconds_count{path=\"/metrics/resource\"} 1",
        ] {
            assert!(
                body.lines().any(|l| l == want),
                "missing {want:?} in\n{body}"
            );
        }
    }

    #[test]
    fn process_metrics_come_from_proc() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 12345 0 0";
        let p = parse_stat(stat).unwrap();
        assert!((p.cpu_seconds - 4.0).abs() < 1e-9);
        assert!((p.start_time_seconds - 123.45).abs() < 1e-9);
        assert_eq!(parse_stat("garbage"), None);

        let p = ProcessStats::read().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds > now - 86_400.0 && p.start_time_seconds <= now + 1.0);
        assert!(p.open_fds >= 3 && p.max_fds >= p.open_fds);
        assert!(p.resident_bytes > 1 << 20 && p.virtual_bytes >= p.resident_bytes);
        let (m, _, _) = metrics(Duration::from_secs(15));
        let body = text(&m, Format::Text);
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(body.lines().any(|l| l == family), "missing {family}");
        }
    }

    /// The figures the gauges report: a metric's value in a text exposition.
    fn value(body: &str, name: &str) -> Option<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn allocator_figures_are_jemallocs_and_consistent() {
        let (m, _, _) = metrics(Duration::from_secs(15));
        // Something live and known to be on the heap while the figures are read.
        let held = std::hint::black_box(vec![1u8; 4 << 20]);
        let body = text(&m, Format::Text);
        if !cfg!(all(feature = "jemalloc", not(target_env = "msvc"))) {
            // The system allocator has no such figures; none are made up.
            assert!(!body.contains("metrics_bridge_allocator_"));
            return;
        }
        let get = |name: &str| value(&body, name).unwrap_or_else(|| panic!("missing {name}"));
        let allocated = get("metrics_bridge_allocator_allocated_bytes");
        let active = get("metrics_bridge_allocator_active_bytes");
        let resident = get("metrics_bridge_allocator_resident_bytes");
        let metadata = get("metrics_bridge_allocator_metadata_bytes");
        get("metrics_bridge_allocator_retained_bytes");
        assert!(allocated >= held.len() as u64, "allocated {allocated}");
        assert!(
            active >= allocated,
            "active {active} < allocated {allocated}"
        );
        assert!(resident >= active, "resident {resident} < active {active}");
        assert!(metadata > 0 && metadata < resident);
        assert!(
            body.lines()
                .any(|l| l == "# TYPE metrics_bridge_allocator_resident_bytes gauge")
        );
        drop(held);
    }
}
