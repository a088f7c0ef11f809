//! Kubelet scraping: every `--metric-resolution`, GET each node's `/metrics/resource`, decode
//! it and hand it to the store.
//!
//! What it promises:
//! - one slow or failing node never delays or spoils another: each node is its own task with
//!   its own deadline, and a failure only marks that node failed in the store;
//! - every failure is logged with the node, the address and the reason, and counted by reason
//!   in [`ScrapeStats`];
//! - bounded work: at most `max_concurrent_scrapes` requests in flight (only in-flight scrapes
//!   exist as tasks, so memory does not grow with the node count), each bounded by
//!   `--kubelet-request-timeout` and the tick's deadline, each body by `max_body_bytes`;
//! - one TLS config for every node, built once, and kept-alive connections under one budget:
//!   at most `max_idle_connections` idle in all (derived from RLIMIT_NOFILE), a connection
//!   closed after its scrape beyond that, reconnects resuming their TLS session (see `pool`).
//!
//! # Spreading requests over the tick
//!
//! metrics-server delays each node's request by a random time in
//! `[0, min(8 ms × nodes, 4 s))` to avoid bursts. We spread too, over
//! `min(8 ms × nodes, 2 s, resolution − timeout)`, and each node's offset is fixed: a hash of
//! its name (FNV-1a, then MurmurHash3's finaliser) scaled into the window.
//! - Fixed offsets scrape a node at the same phase of every tick, so the two points the store
//!   turns into a rate are almost exactly one resolution apart, and restarts keep the pattern.
//! - 2 s instead of 4 s: a scrape here costs little (a request on a kept-alive connection, no
//!   handshake after the first tick), so a shorter burst is harmless, while the tick, which
//!   includes the spread as metrics-server's does, stays short and the data fresh.
//! - `resolution − timeout` lets the last node to start still time out before the next tick.
//!
//! The whole tick is bounded by the resolution: a scrape still waiting for a concurrency slot
//! when the resolution has passed fails as a timeout, as metrics-server's tick context does.

mod client;
mod courtesy;
mod pool;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{StatusCode, Uri};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use client::{KubeletAuth, KubeletClient, TokenSource};
pub use pool::{FD_RESERVE, PoolStats, idle_budget_for};
/// For the self-metrics' tests, which record scrapes as the scraper does.
#[cfg(test)]
pub(crate) use stats::BodyStats;
pub use stats::{
    DEFAULT_BUCKETS, FailureReason, Histogram, HistogramSnapshot, LastError, NodeScrapeStats,
    ScrapeStats, ScrapeTotals, tick_buckets,
};

use crate::cluster::{ClusterState, NodeAddressType, NodeInfo};
use crate::exposition::PageIndexer;
use crate::options::Options;
use crate::store::Store;
use crate::tls::{KubeletCertError, TlsError};

/// The kubelet path when a node has no `metrics.k8s.io/resource-metrics-path` annotation.
pub const DEFAULT_METRICS_PATH: &str = "/metrics/resource";

/// The stagger: metrics-server's 8 ms per node, but at most 2 s (its cap is 4 s); see the
/// module docs.
const SPREAD_PER_NODE: Duration = Duration::from_millis(8);
const SPREAD_MAX: Duration = Duration::from_secs(2);

/// Kubelets connected to at once by [`Scraper::warm_up`]: few, so that the handshakes leave
/// most of the CPU to the pod list it overlaps (decoded on the same threads, served by the
/// same API server).
const WARM_UP_CONCURRENCY: usize = 32;

/// Why the scraper could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "no CA to verify kubelet serving certificates: the kubeconfig has none; pass \
         --kubelet-certificate-authority (or --kubelet-insecure-tls to skip verification)"
    )]
    NoKubeletCa,
    #[error("a client certificate needs both a certificate and a key")]
    HalfClientCertificate,
    #[error("the kubeconfig's {what} is not valid base64: {source}")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("cannot read the bearer token file {path}: {source}")]
    TokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bearer token in {origin} is not a valid HTTP header value")]
    TokenInvalid { origin: String },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why one node's scrape failed. Messages name the URL; the scraper adds the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeScrapeError {
    #[error(
        "the node has no address of the types --kubelet-preferred-address-types allows \
         ({wanted}); its addresses are: {has}"
    )]
    NoAddress { wanted: String, has: String },
    #[error("cannot build a kubelet URL {url:?}: {problem}")]
    InvalidUrl { url: String, problem: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        url: String,
        /// The causes beneath the client's generic error, with a hint where one helps.
        detail: String,
        #[source]
        source: BoxError,
    },
    #[error("TLS handshake with {url} failed: {problem}")]
    Certificate {
        url: String,
        #[source]
        problem: KubeletCertError,
    },
    #[error("TLS handshake with {url} failed: {detail}")]
    Tls { url: String, detail: String },
    #[error("no complete answer from {url} within {}", crate::duration::format(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error(
        "the tick's time ran out before a request slot was free ({in_flight} scrapes in \
         flight); raise the concurrency limit or the resolution"
    )]
    NoSlot { in_flight: usize },
    #[error("{url} answered {status}{}{}", hint(*.status), excerpt(.body))]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("the response from {url} is larger than the {limit}-byte limit; stopped reading")]
    BodyTooLarge { url: String, limit: usize },
    #[error("the connection to {url} failed during the exchange: {detail}")]
    Transfer {
        url: String,
        detail: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot decode the page from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: crate::decode::DecodeError,
    },
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            " (the kubelet did not accept our credentials: check that its webhook \
             authentication is enabled and our token or client certificate is valid)"
        }
        StatusCode::FORBIDDEN => {
            " (our identity may not read metrics: grant it get on nodes/metrics, as \
             metrics-server's ClusterRole does)"
        }
        _ => "",
    }
}

fn excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body:?}")
    }
}

impl NodeScrapeError {
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::NoAddress { .. } | Self::InvalidUrl { .. } => FailureReason::NoAddress,
            Self::Connect { .. } => FailureReason::Connect,
            Self::Certificate { .. } | Self::Tls { .. } => FailureReason::Tls,
            Self::Timeout { .. } | Self::NoSlot { .. } => FailureReason::Timeout,
            Self::Status { status, .. }
                if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN =>
            {
                FailureReason::Unauthorized
            }
            Self::Status { .. } => FailureReason::HttpStatus,
            Self::BodyTooLarge { .. } => FailureReason::BodyTooLarge,
            Self::Transfer { .. } => FailureReason::Transfer,
            Self::Decode { .. } => FailureReason::Decode,
        }
    }
}

/// Scraper settings, from [`Options`].
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub resolution: Duration,
    pub request_timeout: Duration,
    /// `--kubelet-port`.
    pub port: u16,
    /// `--kubelet-use-node-status-port`.
    pub use_node_status_port: bool,
    pub preferred_address_types: Arc<[NodeAddressType]>,
    pub max_concurrent: usize,
    pub max_body_bytes: usize,
    /// The most idle kept-alive kubelet connections held at once, in all (0 keeps none).
    pub max_idle_connections: usize,
}

impl ScrapeConfig {
    pub fn from_options(options: &Options) -> Self {
        let k = &options.kubelet;
        Self {
            resolution: options.metric_resolution,
            request_timeout: k.request_timeout,
            port: k.port,
            use_node_status_port: k.use_node_status_port,
            preferred_address_types: Arc::from(k.preferred_address_types.as_slice()),
            max_concurrent: k.max_concurrent_scrapes.clamp(1, Semaphore::MAX_PERMITS),
            max_body_bytes: k.max_body_bytes,
            max_idle_connections: idle_connections(
                k.max_idle_connections,
                rlimit::Resource::NOFILE.get().map(|(soft, _)| soft),
                k.max_concurrent_scrapes,
            ),
        }
    }

    /// How long pooled connections may idle: long enough to survive from one tick to the next.
    pub fn pool_idle_timeout(&self) -> Duration {
        self.resolution
            .saturating_mul(2)
            .max(Duration::from_secs(90))
    }

    /// The nodes in a tick's order, each with its offset in the tick.
    fn schedule(&self, nodes: Vec<Arc<NodeInfo>>) -> Vec<(Duration, Arc<NodeInfo>)> {
        let window = self.spread_window(nodes.len());
        let mut schedule: Vec<(Duration, Arc<NodeInfo>)> = nodes
            .into_iter()
            .map(|n| (spread_offset(&n.name, window), n))
            .collect();
        schedule.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        schedule
    }

    /// The window requests are spread over for `nodes` nodes (see the module docs).
    pub fn spread_window(&self, nodes: usize) -> Duration {
        let per_node = SPREAD_PER_NODE.saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX));
        per_node
            .min(SPREAD_MAX)
            .min(self.resolution.saturating_sub(self.request_timeout))
    }
}

/// The idle-connection budget: what the open-file limit allows (see [`idle_budget_for`]),
/// lowered to `--kubelet-max-idle-connections` when that is set (non-zero) and smaller.
fn idle_connections(flag: usize, nofile: std::io::Result<u64>, max_concurrent: usize) -> usize {
    let allowed = match nofile {
        Ok(limit) => idle_budget_for(limit, max_concurrent),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; the idle kubelet connections are bounded only by --kubelet-max-idle-connections");
            usize::MAX
        }
    };
    let budget = match flag {
        0 => allowed,
        n if n > allowed => {
            tracing::warn!(
                requested = n,
                allowed,
                "--kubelet-max-idle-connections is more than the open-file limit leaves after \
                 the reserve and the scrapes in flight; using the smaller"
            );
            allowed
        }
        n => n,
    };
    tracing::info!(
        max_idle_connections = budget,
        "kubelet connections: at most this many kept idle between scrapes; beyond it a node reconnects, resuming its TLS session"
    );
    budget
}

/// 64-bit FNV-1a: a fixed, seed-free hash, so offsets are the same in every process.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// MurmurHash3's 64-bit finaliser. FNV-1a alone leaves the high bits of names that differ
/// only at the end ("node-17", "node-18") clustered; this spreads them.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The node's start offset within a tick: its name's hash scaled into `[0, window)`.
pub fn spread_offset(node: &str, window: Duration) -> Duration {
    let fraction = (fmix64(fnv1a(node.as_bytes())) >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(fraction)
}

/// The kubelet URL for a node, and the address chosen (for messages).
pub fn kubelet_url(
    node: &NodeInfo,
    config: &ScrapeConfig,
) -> Result<(Uri, String), NodeScrapeError> {
    let Some((_, address)) = node.preferred_address(&config.preferred_address_types) else {
        let has = if node.addresses.is_empty() {
            "none".to_owned()
        } else {
            node.addresses
                .iter()
                .map(|(t, a)| format!("{}={a}", t.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(NodeScrapeError::NoAddress {
            wanted: config
                .preferred_address_types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
            has,
        });
    };
    let port = if config.use_node_status_port && node.kubelet_port != 0 {
        node.kubelet_port
    } else {
        config.port
    };
    let path = node.metrics_path.as_deref().unwrap_or(DEFAULT_METRICS_PATH);
    let slash = if path.starts_with('/') { "" } else { "/" };
    let url = if address.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("https://[{address}]:{port}{slash}{path}")
    } else {
        format!("https://{address}:{port}{slash}{path}")
    };
    match url.parse::<Uri>() {
        Ok(uri) => Ok((uri, address.to_owned())),
        Err(e) => Err(NodeScrapeError::InvalidUrl {
            url,
            problem: e.to_string(),
        }),
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The outcome of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickSummary {
    pub nodes: usize,
    pub succeeded: usize,
    pub took: Duration,
}

/// Scrapes every node of the cluster once per resolution.
#[derive(Debug)]
pub struct Scraper {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ScrapeConfig,
    client: KubeletClient,
    token: TokenSource,
    cluster: Arc<ClusterState>,
    store: Arc<Store>,
    stats: Arc<ScrapeStats>,
    slots: Arc<Semaphore>,
}

impl Scraper {
    pub fn new(
        config: ScrapeConfig,
        client: KubeletClient,
        token: TokenSource,
        cluster: Arc<ClusterState>,
        store: Arc<Store>,
        stats: Arc<ScrapeStats>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(
            config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Self {
            shared: Arc::new(Shared {
                config,
                client,
                token,
                cluster,
                store,
                stats,
                slots,
            }),
        }
    }

    /// Builds the client from kubelet credentials and the scrape settings.
    pub fn with_auth(
        config: ScrapeConfig,
        auth: KubeletAuth,
        cluster: Arc<ClusterState>,
        store: Arc<Store>,
        stats: Arc<ScrapeStats>,
    ) -> Result<Self, ScrapeError> {
        let tls = crate::tls::kubelet_client_config(&auth.trust, auth.identity)?;
        let client = KubeletClient::new(
            (*tls).clone(),
            config.request_timeout,
            config.pool_idle_timeout(),
            config.max_idle_connections,
            config.max_body_bytes,
        );
        Ok(Self::new(config, client, auth.token, cluster, store, stats))
    }

    pub fn stats(&self) -> &Arc<ScrapeStats> {
        &self.shared.stats
    }

    /// The kubelet connection pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.shared.client.pool_stats()
    }

    /// Ticks at once and then every resolution until `shutdown` resolves; a tick in progress
    /// at shutdown is abandoned (its requests are cancelled).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.shared.config.resolution);
        // A tick is bounded by the resolution, so a missed tick only happens when the process
        // was starved; skip it rather than bunching ticks together.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut shutdown => return,
            }
            tokio::select! {
                summary = self.tick() => {
                    tracing::debug!(nodes = summary.nodes, succeeded = summary.succeeded, took = ?summary.took, "tick finished");
                }
                () = &mut shutdown => return,
            }
        }
    }

    /// Connects to the kubelets ahead of the first tick: TCP and TLS handshakes, no request,
    /// in the tick's order, [`WARM_UP_CONCURRENCY`] at once, as many as the idle budget
    /// holds; the connections wait in the pool for their node's first scrape. Meant for the
    /// wait for the pod cache (see `server::run_scraper`), which at 20,000 nodes lasts about
    /// 20 s: a first tick that opens every connection itself does a full handshake per node
    /// on both ends inside its window. A kubelet that cannot be reached is left for the tick
    /// to report. Returns how many connections were opened.
    pub async fn warm_up(&self) -> usize {
        use futures::StreamExt as _;
        let shared = &self.shared;
        let nodes = shared.cluster.nodes();
        // Sizes the TLS session cache for the nodes, as each tick does.
        shared.client.tick_housekeeping(nodes.len());
        let schedule = shared.config.schedule(nodes);
        let opened = std::sync::atomic::AtomicUsize::new(0);
        futures::stream::iter(schedule)
            .take(shared.config.max_idle_connections)
            .for_each_concurrent(WARM_UP_CONCURRENCY, |(_, node)| {
                let opened = &opened;
                async move {
                    let Ok((url, _)) = kubelet_url(&node, &shared.config) else {
                        return;
                    };
                    let connect = shared.client.preconnect(&url);
                    if let Ok(Ok(true)) =
                        tokio::time::timeout(shared.config.request_timeout, connect).await
                    {
                        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        opened.into_inner()
    }

    /// Scrapes every node once, spread over the window, and waits for all of them.
    pub async fn tick(&self) -> TickSummary {
        let shared = &self.shared;
        let start = Instant::now();
        shared.stats.tick_started(unix_nanos(SystemTime::now()));
        let deadline = start + shared.config.resolution;
        let token = shared.token.current();

        let nodes = shared.cluster.nodes();
        shared.client.tick_housekeeping(nodes.len());
        let schedule = shared.config.schedule(nodes);

        let mut tasks: JoinSet<bool> = JoinSet::new();
        let mut succeeded = 0;
        let count = |joined: Result<bool, tokio::task::JoinError>| match joined {
            Ok(ok) => usize::from(ok),
            Err(e) => {
                tracing::error!(error = %e, "a scrape task failed");
                0
            }
        };
        let total = schedule.len();
        for (offset, node) in schedule {
            let at = tokio::time::Instant::from_std(start + offset);
            // Reap finished scrapes while waiting, so the set holds only those in flight.
            loop {
                tokio::select! {
                    biased;
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => succeeded += count(joined),
                    () = tokio::time::sleep_until(at) => break,
                }
            }
            let permit = tokio::select! {
                permit = Arc::clone(&shared.slots).acquire_owned() => permit.ok(),
                () = tokio::time::sleep_until(deadline.into()) => None,
            };
            let shared = Arc::clone(shared);
            let token = token.clone();
            tasks.spawn(courtesy::courteous(async move {
                let _permit = permit;
                shared.scrape_node(&node, token.as_ref(), deadline).await
            }));
        }
        while let Some(joined) = tasks.join_next().await {
            succeeded += count(joined);
        }

        // A node removed while its scrape ran leaves no stats behind.
        let cluster = &shared.cluster;
        shared
            .stats
            .retain_nodes(|name| cluster.node(name).is_some());
        let took = start.elapsed();
        shared.stats.tick_finished(
            took,
            succeeded as u64,
            total as u64,
            shared.client.pool_stats(),
        );
        TickSummary {
            nodes: total,
            succeeded,
            took,
        }
    }
}

impl Shared {
    /// Scrapes one node and records the outcome; returns whether it succeeded. A scrape that
    /// got no concurrency slot before the deadline arrives here past it and fails as a timeout.
    async fn scrape_node(
        &self,
        node: &NodeInfo,
        token: Option<&http::HeaderValue>,
        deadline: Instant,
    ) -> bool {
        let stats = self.stats.node_entry(&node.name);
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let started_ns = unix_nanos(started_wall);
        let result = self
            .fetch_and_store(node, token, deadline, started_ns, stats.last_body_size())
            .await;
        let took = started.elapsed();
        let finished_ns = unix_nanos(SystemTime::now());
        let ok = match result {
            Ok(body) => {
                self.store.record_scrape_success(&node.name, started_ns);
                let failures_before = stats.consecutive_failures();
                self.stats
                    .record_success(&stats, started_ns, finished_ns, took, body);
                if failures_before > 0 {
                    tracing::info!(node = %node.name, failures = failures_before, "kubelet scrape recovered");
                }
                true
            }
            Err((err, address)) => {
                self.store.scrape_failed(&node.name);
                let reason = err.reason();
                self.store
                    .record_scrape_failure(&node.name, reason.as_str());
                let message = err.to_string();
                tracing::warn!(
                    node = %node.name,
                    address = address.as_deref().unwrap_or("none"),
                    reason = reason.as_str(),
                    error = %message,
                    "failed to scrape node"
                );
                self.stats
                    .record_failure(&stats, started_ns, finished_ns, took, reason, message);
                false
            }
        };
        // The node may have been deleted while we scraped it. The watcher removes it from the
        // cluster before the store, so checking after writing closes the race either way.
        if self.cluster.node(&node.name).is_none() {
            self.store.remove_node(&node.name);
            self.stats.remove_node(&node.name);
        }
        ok
    }

    async fn fetch_and_store(
        &self,
        node: &NodeInfo,
        token: Option<&http::HeaderValue>,
        deadline: Instant,
        started_ns: i64,
        size_hint: (usize, usize),
    ) -> Result<stats::BodyStats, (NodeScrapeError, Option<String>)> {
        let (url, address) = kubelet_url(node, &self.config).map_err(|e| (e, None))?;
        let fail = |e| (e, Some(address.clone()));
        let timeout = self
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if timeout.is_zero() {
            return Err(fail(NodeScrapeError::NoSlot {
                in_flight: self
                    .config
                    .max_concurrent
                    .saturating_sub(self.slots.available_permits()),
            }));
        }
        let fetched =
            match tokio::time::timeout(timeout, self.client.fetch(&url, token, size_hint)).await {
                Ok(result) => result.map_err(fail)?,
                Err(_) => {
                    return Err(fail(NodeScrapeError::Timeout {
                        url: url.to_string(),
                        timeout,
                    }));
                }
            };
        let received = fetched.received;
        let body = bytes::Bytes::from(fetched.body);
        let decode_start = Instant::now();
        // One parse both decodes the page and indexes it, as received, for /metrics/resource.
        let mut indexer = PageIndexer::new(body.clone());
        let (page, left_out) =
            crate::decode::decode_observed(&body, started_ns, |entry| indexer.observe(entry))
                .map_err(|source| {
                    fail(NodeScrapeError::Decode {
                        url: url.to_string(),
                        source,
                    })
                })?;
        let raw = Arc::new(indexer.finish());
        let decode_time = decode_start.elapsed();
        if left_out != crate::decode::DecodeStats::default() {
            // Routine while containers start or stop; counted for self-metrics.
            tracing::debug!(
                node = %node.name,
                dropped_pods = left_out.dropped_pods,
                incomplete_node = left_out.incomplete_node,
                unattributed_series = left_out.unattributed_series,
                "the page had incomplete metrics, left out as metrics-server does"
            );
        }
        self.store.ingest_page(&node.name, &page, raw);
        Ok(stats::BodyStats {
            received,
            decoded: body.len(),
            samples: page.samples,
            decode_time,
            left_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LabelSet;
    use NodeAddressType::*;

    fn config() -> ScrapeConfig {
        ScrapeConfig {
            resolution: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            port: 10250,
            use_node_status_port: false,
            preferred_address_types: Arc::from(
                [Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP].as_slice(),
            ),
            max_concurrent: 10,
            max_body_bytes: 1 << 20,
            max_idle_connections: 100,
        }
    }

    fn node(addresses: &[(NodeAddressType, &str)], port: u16, path: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: Arc::from("node-a"),
            labels: LabelSet::default(),
            addresses: addresses.iter().map(|(t, a)| (*t, Box::from(*a))).collect(),
            kubelet_port: port,
            metrics_path: path.map(Box::from),
            allocatable_cpu_millis: 0,
            allocatable_memory_bytes: 0,
        }
    }

    #[test]
    fn url_uses_preferred_address_port_and_path() {
        let mut cfg = config();
        let n = node(
            &[(InternalIP, "10.0.0.7"), (Hostname, "node-a")],
            10255,
            None,
        );
        let (url, addr) = kubelet_url(&n, &cfg).unwrap();
        assert_eq!(url.to_string(), "https://node-a:10250/metrics/resource");
        assert_eq!(addr, "node-a");

        cfg.preferred_address_types = Arc::from([InternalIP].as_slice());
        cfg.use_node_status_port = true;
        let (url, _) = kubelet_url(&n, &cfg).unwrap();
        assert_eq!(url.to_string(), "https://10.0.0.7:10255/metrics/resource");

        // The status port is used only when the node reports one.
        let n0 = node(&[(InternalIP, "10.0.0.7")], 0, Some("/custom/metrics"));
        let (url, _) = kubelet_url(&n0, &cfg).unwrap();
        assert_eq!(url.to_string(), "https://10.0.0.7:10250/custom/metrics");

        let n6 = node(&[(InternalIP, "fd00::7")], 0, Some("metrics/resource"));
        let (url, addr) = kubelet_url(&n6, &cfg).unwrap();
        assert_eq!(url.to_string(), "https://[fd00::7]:10250/metrics/resource");
        assert_eq!(addr, "fd00::7");
    }

    #[test]
    fn no_usable_address_says_what_the_node_has() {
        let mut cfg = config();
        cfg.preferred_address_types = Arc::from([InternalIP, ExternalIP].as_slice());
        let n = node(
            &[(Hostname, "node-a"), (InternalDNS, "node-a.local")],
            0,
            None,
        );
        let err = kubelet_url(&n, &cfg).unwrap_err();
        assert_eq!(err.reason(), FailureReason::NoAddress);
        assert_eq!(
            err.to_string(),
            "the node has no address of the types --kubelet-preferred-address-types allows \
             (InternalIP,ExternalIP); its addresses are: Hostname=node-a, InternalDNS=node-a.local"
        );
        let empty = node(&[], 0, None);
        assert!(
            kubelet_url(&empty, &cfg)
                .unwrap_err()
                .to_string()
                .ends_with("its addresses are: none")
        );
    }

    #[test]
    fn the_idle_budget_follows_the_open_file_limit_and_the_flag_only_lowers_it() {
        let limit = || Ok(20_000);
        assert_eq!(idle_connections(0, limit(), 1024), 20_000 - 2048);
        assert_eq!(idle_connections(500, limit(), 1024), 500);
        assert_eq!(idle_connections(50_000, limit(), 1024), 20_000 - 2048);
        assert_eq!(idle_connections(0, Ok(1024), 1024), 0);
        let unknown = || Err(std::io::Error::other("no /proc"));
        assert_eq!(idle_connections(300, unknown(), 1024), 300);
        assert_eq!(idle_connections(0, unknown(), 1024), usize::MAX);
    }

    #[test]
    fn spread_window_is_8ms_per_node_capped_at_2s_and_fits_the_tick() {
        let mut cfg = config();
        assert_eq!(cfg.spread_window(0), Duration::ZERO);
        assert_eq!(cfg.spread_window(100), Duration::from_millis(800));
        assert_eq!(cfg.spread_window(200), Duration::from_millis(1600));
        assert_eq!(cfg.spread_window(20_000), Duration::from_secs(2));
        cfg.resolution = Duration::from_millis(11_500);
        assert_eq!(cfg.spread_window(20_000), Duration::from_millis(1500));
        cfg.request_timeout = Duration::from_secs(12);
        assert_eq!(cfg.spread_window(20_000), Duration::ZERO);
    }

    #[test]
    fn offsets_are_stable_within_the_window_and_spread_out() {
        let window = Duration::from_secs(4);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| spread_offset(&format!("node-{i}"), window))
            .collect();
        assert!(offsets.iter().all(|o| *o < window));
        assert_eq!(offsets[17], spread_offset("node-17", window));
        // Roughly uniform: every quarter of the window gets a fair share of 1000 nodes.
        let mut quarters = [0usize; 4];
        for o in &offsets {
            quarters[(o.as_secs_f64() / 1.0) as usize] += 1;
        }
        assert!(
            quarters.iter().all(|&q| (180..=320).contains(&q)),
            "{quarters:?}"
        );
        // FNV-1a reference value, so the rule never changes by accident.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(spread_offset("x", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn status_errors_carry_a_hint_and_the_body() {
        let e = NodeScrapeError::Status {
            url: "https://10.0.0.1:10250/metrics/resource".into(),
            status: StatusCode::FORBIDDEN,
            body: "Forbidden (user=system:serviceaccount:kube-system:metrics-bridge)".into(),
        };
        assert_eq!(e.reason(), FailureReason::Unauthorized);
        let text = e.to_string();
        assert!(text.starts_with("https://10.0.0.1:10250/metrics/resource answered 403 Forbidden (our identity may not read metrics"), "{text}");
        assert!(
            text.ends_with(
                ": \"Forbidden (user=system:serviceaccount:kube-system:metrics-bridge)\""
            ),
            "{text}"
        );
        let e = NodeScrapeError::Status {
            url: "u".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: String::new(),
        };
        assert_eq!(e.reason(), FailureReason::HttpStatus);
        assert_eq!(e.to_string(), "u answered 500 Internal Server Error");
    }
}
