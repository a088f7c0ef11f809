//! `/metrics/resource`: the whole cluster's resource metrics for Prometheus, from one target.
//!
//! One response holds, for every node the cluster state knows:
//! - the kubelet's own resource-metrics series ([`BRIDGED`]), copied from the node's last
//!   page with `node="NAME"` added, timestamps and counters kept, so `rate()` over them is
//!   what it would be against the kubelets themselves;
//! - the usage the metrics API serves (`metrics_bridge_{node,pod,container}_*`, cores and
//!   bytes, no timestamps), so a dashboard shows exactly what `kubectl top` shows, and the
//!   nodes' allocatable CPU and memory;
//! - each node's scrape health: up, last success, and the reason of a failure;
//! - optionally, pods' and nodes' Kubernetes labels, as kube-state-metrics'
//!   `--metric-labels-allowlist` would add them ([`labels`]).
//!
//! Data flows one way: the scraper gives the store each page and outcome; a response takes
//! an [`encode::Snapshot`] of the store and the cluster state, then writes it. The format
//! (OpenMetrics 1.0 or text 0.0.4) and gzip follow the request's headers ([`negotiate`]);
//! the body is streamed in chunks as it is written, on the blocking pool, so a cluster's
//! worth of series never sits in memory whole and never stalls the async workers.
//!
//! `docs/metrics.md` documents every family, its labels and its cardinality, and why
//! timestamps are kept on the kubelet series and left off the derived ones.

pub mod encode;
pub mod labels;
pub mod negotiate;
mod page;
pub mod text;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::Semaphore;

use crate::cluster::ClusterState;
use crate::store::Store;

pub use encode::{Output, Snapshot, Totals};
pub use labels::LabelsAllowlist;
pub use page::{BRIDGED, BridgedFamily, KubeletPage, PageIndexer};
pub use text::{Format, Kind};

/// The path of the bridged exposition.
pub const RESOURCE_PATH: &str = "/metrics/resource";

/// How many `/metrics/resource` responses may be written at once. Each takes one blocking
/// thread and a second or so of CPU on a large cluster; a pair of Prometheus replicas needs
/// two. Further requests wait for a slot.
const MAX_CONCURRENT: usize = 4;

/// Told about every response the exposition endpoints write, for self-metrics.
pub trait ExpositionObserver: Send + Sync + 'static {
    /// One response: the endpoint's path, how long writing it took, its sizes and how
    /// many series it held. `complete` is false when the client left before the end.
    fn exposed(
        &self,
        path: &'static str,
        took: Duration,
        totals: Totals,
        series: u64,
        complete: bool,
    );
}

/// What `/metrics/resource` reads from.
#[derive(Clone)]
pub struct ExpositionState {
    pub cluster: Arc<ClusterState>,
    pub store: Arc<Store>,
    pub labels: Arc<LabelsAllowlist>,
    pub observer: Option<Arc<dyn ExpositionObserver>>,
    slots: Arc<Semaphore>,
}

impl ExpositionState {
    pub fn new(
        cluster: Arc<ClusterState>,
        store: Arc<Store>,
        labels: Arc<LabelsAllowlist>,
    ) -> Self {
        Self {
            cluster,
            store,
            labels,
            observer: None,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn ExpositionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

/// The `/metrics/resource` route. Authorization and the sync gate belong in front of it.
pub fn router(state: ExpositionState) -> Router {
    Router::new()
        .route(RESOURCE_PATH, get(resource))
        .with_state(state)
}

async fn resource(State(state): State<ExpositionState>, headers: HeaderMap) -> Response {
    let (format, gzip) = negotiate::negotiate(&headers);
    // A closed semaphore cannot happen (it is never closed); go on without a slot if it did.
    let permit = Arc::clone(&state.slots).acquire_owned().await.ok();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let started = Instant::now();
        let snapshot = Snapshot::take(&state.cluster, &state.store, &state.labels);
        let mut sink = |chunk: Bytes| tx.blocking_send(chunk).is_ok();
        let mut out = Output::new(gzip, &mut sink);
        let written = encode::write(&snapshot, format, &mut out)
            .and_then(|series| out.finish().map(|totals| (series, totals)));
        if let Some(observer) = &state.observer {
            let (series, totals, complete) = match written {
                Ok((series, totals)) => (series, totals, true),
                Err(encode::Gone) => (0, Totals::default(), false),
            };
            observer.exposed(RESOURCE_PATH, started.elapsed(), totals, series, complete);
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    response(format, gzip, Body::from_stream(stream))
}

/// A response with the headers of an exposition in `format`.
pub fn response(format: Format, gzip: bool, body: Body) -> Response {
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    res
}

/// A small exposition already written whole (`/metrics`), gzipped when asked.
pub fn whole_response(format: Format, gzip: bool, text: Vec<u8>) -> (Response, Totals) {
    if !gzip {
        let len = text.len() as u64;
        let totals = Totals {
            written: len,
            sent: len,
        };
        return (response(format, false, Body::from(text)), totals);
    }
    let mut chunks = Vec::new();
    let mut sink = |chunk: Bytes| {
        chunks.push(chunk);
        true
    };
    let mut out = Output::new(true, &mut sink);
    out.buf().extend_from_slice(&text);
    // The sink never refuses, so finishing cannot fail.
    let totals = out.finish().unwrap_or_default();
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    (response(format, true, Body::from_stream(stream)), totals)
}
