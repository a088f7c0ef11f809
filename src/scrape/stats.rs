//! What the scraper has done, for health checks and self-metrics.
//!
//! Everything here is updated with atomics by concurrent scrapes and read without stopping
//! them. Per-node entries are sharded by name, so recording one node's result never contends
//! with another's; a node's entry leaves as soon as the node leaves the cluster, so its series
//! leave `/metrics` too (metrics-server keeps them forever).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Prometheus's default histogram buckets, which metrics-server uses for
/// `metrics_server_kubelet_request_duration_seconds`.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// metrics-server's buckets for `metrics_server_manager_tick_duration_seconds`: the default
/// buckets plus some around `resolution`, so a tick that nears it shows (its
/// `BucketsForScrapeDuration`).
pub fn tick_buckets(resolution: Duration) -> Vec<f64> {
    let mut buckets = DEFAULT_BUCKETS.to_vec();
    let first = DEFAULT_BUCKETS[0];
    let max = DEFAULT_BUCKETS[DEFAULT_BUCKETS.len() - 1];
    let timeout = resolution.as_secs_f64();
    if timeout > max {
        buckets.extend([
            max + (timeout - max) / 2.0,
            timeout,
            timeout * 1.5,
            timeout * 2.0,
        ]);
    } else if timeout < max {
        // The first bucket above the resolution, and whether the resolution is already close to
        // it or to the bucket below.
        let i = buckets.iter().position(|&b| b > timeout).unwrap_or(0);
        let above = buckets[i];
        let close_below = i > 0 && timeout - buckets[i - 1] < first;
        if above - timeout >= first && !close_below {
            buckets.insert(i, timeout);
        }
    }
    buckets
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A cumulative histogram of durations, safe to observe from many threads at once.
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// Non-cumulative counts per bucket; the last is the `+Inf` overflow.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending, without `+Inf`.
    pub bounds: Arc<[f64]>,
    /// Cumulative counts per bound, then the total for `+Inf`.
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|&b| b < secs);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos(d), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|c| {
                running += c.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: Arc::clone(&self.bounds),
            count: running,
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Why a scrape failed, as counted and exported (`reason` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The node has no address of the preferred types, or an unusable one.
    NoAddress,
    /// TCP connection refused, unreachable, reset during connect.
    Connect,
    /// TLS handshake failure, including certificate verification.
    Tls,
    /// No full answer within `--kubelet-request-timeout` (or before the tick's deadline).
    Timeout,
    /// 401 or 403: the kubelet does not accept our credentials.
    Unauthorized,
    /// Any other non-200 status.
    HttpStatus,
    /// The body exceeded the size limit.
    BodyTooLarge,
    /// The connection broke while sending the request or reading the response.
    Transfer,
    /// The body is not a page we can decode.
    Decode,
}

impl FailureReason {
    pub const ALL: [Self; 9] = [
        Self::NoAddress,
        Self::Connect,
        Self::Tls,
        Self::Timeout,
        Self::Unauthorized,
        Self::HttpStatus,
        Self::BodyTooLarge,
        Self::Transfer,
        Self::Decode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAddress => "no_address",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Unauthorized => "unauthorized",
            Self::HttpStatus => "http_status",
            Self::BodyTooLarge => "body_too_large",
            Self::Transfer => "transfer",
            Self::Decode => "decode",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The latest failure of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub reason: FailureReason,
    pub message: Box<str>,
    /// When the failed scrape started, in nanoseconds since the epoch.
    pub at_ns: i64,
}

/// One node's scrape history.
#[derive(Debug)]
pub struct NodeScrapeStats {
    /// Request durations, successful or not (`metrics_server_kubelet_request_duration_seconds`).
    pub duration: Histogram,
    last_request_ns: AtomicI64,
    last_success_ns: AtomicI64,
    last_duration_nanos: AtomicU64,
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<LastError>>,
    /// The last successful body's size as received and as decoded: the next scrape's buffers
    /// are sized from them, so a page is read without regrowing.
    last_received: AtomicU64,
    last_decoded: AtomicU64,
}

impl NodeScrapeStats {
    fn new(bounds: Arc<[f64]>) -> Self {
        Self {
            duration: Histogram::new(bounds),
            last_request_ns: AtomicI64::new(0),
            last_success_ns: AtomicI64::new(0),
            last_duration_nanos: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            last_received: AtomicU64::new(0),
            last_decoded: AtomicU64::new(0),
        }
    }

    fn request_done(&self, took: Duration, finished_ns: i64, observe: bool) {
        if observe {
            self.duration.observe(took);
        }
        self.last_duration_nanos
            .store(nanos(took), Ordering::Relaxed);
        self.last_request_ns.store(finished_ns, Ordering::Relaxed);
    }

    /// When the last scrape finished, in nanoseconds since the epoch; 0 before the first
    /// (`metrics_server_kubelet_last_request_time_seconds`).
    pub fn last_request_ns(&self) -> i64 {
        self.last_request_ns.load(Ordering::Relaxed)
    }

    /// When the last successful scrape started (the page's default timestamp); 0 if none yet.
    pub fn last_success_ns(&self) -> i64 {
        self.last_success_ns.load(Ordering::Relaxed)
    }

    pub fn last_duration(&self) -> Duration {
        Duration::from_nanos(self.last_duration_nanos.load(Ordering::Relaxed))
    }

    /// The last successful body's size as received and as decoded, in bytes (0 before one).
    pub fn last_body_size(&self) -> (usize, usize) {
        let get = |a: &AtomicU64| usize::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        (get(&self.last_received), get(&self.last_decoded))
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Whether the latest scrape succeeded (false before the first).
    pub fn healthy(&self) -> bool {
        self.last_success_ns() != 0 && self.consecutive_failures() == 0
    }

    /// The latest failure, kept after recovery so operators can see what happened last.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

const SHARDS: usize = 64;

type NodeShard = RwLock<HashMap<Arc<str>, Arc<NodeScrapeStats>>>;

/// Counters for the whole scraper and a [`NodeScrapeStats`] per node.
#[derive(Debug)]
pub struct ScrapeStats {
    hasher: std::collections::hash_map::RandomState,
    node_bounds: Arc<[f64]>,
    nodes: Box<[NodeShard]>,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    failures: [AtomicU64; FailureReason::ALL.len()],
    /// Body bytes as received (compressed if the kubelet compressed).
    bytes_received: AtomicU64,
    /// Body bytes decoded (after decompression).
    bytes_decoded: AtomicU64,
    samples: AtomicU64,
    decode_nanos: AtomicU64,
    dropped_pods: AtomicU64,
    incomplete_nodes: AtomicU64,
    unattributed_series: AtomicU64,
    /// Duration of each whole tick (`metrics_server_manager_tick_duration_seconds`).
    pub ticks: Histogram,
    tick_last_start_ns: AtomicI64,
    tick_last_duration_nanos: AtomicU64,
    /// Nodes the last completed tick scraped successfully, and attempted.
    tick_last_ok: AtomicU64,
    tick_last_nodes: AtomicU64,
    /// The kubelet connection pool's counters as of the latest completed tick; read only by
    /// `/metrics`, written once per tick.
    pool: Mutex<super::PoolStats>,
}

/// Whole-scraper totals at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTotals {
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Failures per reason, in [`FailureReason::ALL`] order.
    pub failures: [(FailureReason, u64); FailureReason::ALL.len()],
    pub bytes_received: u64,
    pub bytes_decoded: u64,
    pub samples: u64,
    pub decode_time: Duration,
    /// Pods left out of pages because a container lacked CPU or memory.
    pub dropped_pods: u64,
    /// Pages whose node series did not make a complete node point.
    pub incomplete_nodes: u64,
    /// Container series without namespace, pod or container labels.
    pub unattributed_series: u64,
}

impl ScrapeStats {
    /// `resolution` sets the tick histogram's buckets, as in metrics-server.
    pub fn new(resolution: Duration) -> Self {
        Self {
            hasher: Default::default(),
            node_bounds: Arc::from(DEFAULT_BUCKETS.as_slice()),
            nodes: (0..SHARDS).map(|_| RwLock::default()).collect(),
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            failures: Default::default(),
            bytes_received: AtomicU64::new(0),
            bytes_decoded: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            decode_nanos: AtomicU64::new(0),
            dropped_pods: AtomicU64::new(0),
            incomplete_nodes: AtomicU64::new(0),
            unattributed_series: AtomicU64::new(0),
            ticks: Histogram::new(Arc::from(tick_buckets(resolution))),
            tick_last_start_ns: AtomicI64::new(0),
            tick_last_duration_nanos: AtomicU64::new(0),
            tick_last_ok: AtomicU64::new(0),
            tick_last_nodes: AtomicU64::new(0),
            pool: Mutex::default(),
        }
    }

    fn shard(&self, node: &str) -> &NodeShard {
        &self.nodes[(self.hasher.hash_one(node) as usize) % SHARDS]
    }

    /// The node's entry, created on first use.
    pub fn node_entry(&self, node: &Arc<str>) -> Arc<NodeScrapeStats> {
        let shard = self.shard(node);
        if let Some(s) = shard.read().unwrap_or_else(|e| e.into_inner()).get(&**node) {
            return Arc::clone(s);
        }
        let mut guard = shard.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            guard
                .entry(Arc::clone(node))
                .or_insert_with(|| Arc::new(NodeScrapeStats::new(Arc::clone(&self.node_bounds)))),
        )
    }

    pub fn node(&self, node: &str) -> Option<Arc<NodeScrapeStats>> {
        self.shard(node)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Forgets a node that left the cluster.
    pub fn remove_node(&self, node: &str) {
        self.shard(node)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }

    /// Forgets every node for which `keep` is false.
    pub fn retain_nodes(&self, mut keep: impl FnMut(&str) -> bool) {
        for shard in self.nodes.iter() {
            shard
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|name, _| keep(name));
        }
    }

    /// Every node's entry, sorted by node name.
    pub fn nodes(&self) -> Vec<(Arc<str>, Arc<NodeScrapeStats>)> {
        let mut all = Vec::new();
        for shard in self.nodes.iter() {
            let guard = shard.read().unwrap_or_else(|e| e.into_inner());
            all.extend(guard.iter().map(|(k, v)| (Arc::clone(k), Arc::clone(v))));
        }
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn record_success(
        &self,
        node: &NodeScrapeStats,
        started_ns: i64,
        finished_ns: i64,
        took: Duration,
        body: BodyStats,
    ) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(body.received as u64, Ordering::Relaxed);
        self.bytes_decoded
            .fetch_add(body.decoded as u64, Ordering::Relaxed);
        self.samples
            .fetch_add(body.samples as u64, Ordering::Relaxed);
        self.decode_nanos
            .fetch_add(nanos(body.decode_time), Ordering::Relaxed);
        let left_out = &body.left_out;
        self.dropped_pods
            .fetch_add(left_out.dropped_pods as u64, Ordering::Relaxed);
        self.incomplete_nodes
            .fetch_add(u64::from(left_out.incomplete_node), Ordering::Relaxed);
        self.unattributed_series
            .fetch_add(left_out.unattributed_series as u64, Ordering::Relaxed);
        node.request_done(took, finished_ns, true);
        node.last_success_ns.store(started_ns, Ordering::Relaxed);
        node.last_received
            .store(body.received as u64, Ordering::Relaxed);
        node.last_decoded
            .store(body.decoded as u64, Ordering::Relaxed);
        node.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Returns how many failures in a row the node has had, this one included.
    pub(crate) fn record_failure(
        &self,
        node: &NodeScrapeStats,
        started_ns: i64,
        finished_ns: i64,
        took: Duration,
        reason: FailureReason,
        message: String,
    ) -> u32 {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.failures[reason.index()].fetch_add(1, Ordering::Relaxed);
        // A scrape that never reached the kubelet has no request duration to report.
        node.request_done(took, finished_ns, reason != FailureReason::NoAddress);
        *node.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastError {
            reason,
            message: message.into_boxed_str(),
            at_ns: started_ns,
        });
        node.consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    pub(crate) fn tick_started(&self, at_ns: i64) {
        self.tick_last_start_ns.store(at_ns, Ordering::Release);
    }

    pub(crate) fn tick_finished(
        &self,
        took: Duration,
        ok: u64,
        nodes: u64,
        pool: super::PoolStats,
    ) {
        if let Ok(mut p) = self.pool.lock() {
            *p = pool;
        }
        self.ticks.observe(took);
        self.tick_last_duration_nanos
            .store(nanos(took), Ordering::Relaxed);
        self.tick_last_ok.store(ok, Ordering::Relaxed);
        self.tick_last_nodes.store(nodes, Ordering::Relaxed);
    }

    /// When the latest tick started, in nanoseconds since the epoch; 0 before the first.
    /// Health's `metric-collection-timely` compares it with the resolution.
    pub fn last_tick_start_ns(&self) -> i64 {
        self.tick_last_start_ns.load(Ordering::Acquire)
    }

    /// When the latest tick started; `None` before the first. Health's
    /// `metric-collection-timely` takes this.
    pub fn last_tick_start(&self) -> Option<SystemTime> {
        match u64::try_from(self.last_tick_start_ns()) {
            Ok(0) | Err(_) => None,
            Ok(ns) => Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)),
        }
    }

    /// How long the latest completed tick took.
    pub fn last_tick_duration(&self) -> Duration {
        Duration::from_nanos(self.tick_last_duration_nanos.load(Ordering::Relaxed))
    }

    /// The kubelet connection pool's counters as of the latest completed tick.
    pub fn pool(&self) -> super::PoolStats {
        self.pool.lock().map(|p| *p).unwrap_or_default()
    }

    /// Nodes scraped successfully and nodes attempted in the latest completed tick.
    pub fn last_tick_result(&self) -> (u64, u64) {
        (
            self.tick_last_ok.load(Ordering::Relaxed),
            self.tick_last_nodes.load(Ordering::Relaxed),
        )
    }

    pub fn totals(&self) -> ScrapeTotals {
        ScrapeTotals {
            requests_ok: self.requests_ok.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            failures: FailureReason::ALL
                .map(|r| (r, self.failures[r.index()].load(Ordering::Relaxed))),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_decoded: self.bytes_decoded.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            decode_time: Duration::from_nanos(self.decode_nanos.load(Ordering::Relaxed)),
            dropped_pods: self.dropped_pods.load(Ordering::Relaxed),
            incomplete_nodes: self.incomplete_nodes.load(Ordering::Relaxed),
            unattributed_series: self.unattributed_series.load(Ordering::Relaxed),
        }
    }

    /// Failures counted for one reason.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures[reason.index()].load(Ordering::Relaxed)
    }
}

/// What one successful scrape read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BodyStats {
    pub received: usize,
    pub decoded: usize,
    pub samples: usize,
    pub decode_time: Duration,
    /// What metrics-server's decoding rules left out of the page.
    pub left_out: crate::decode::DecodeStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_buckets_match_metrics_server() {
        // Values from metrics-server's BucketsForScrapeDuration tests and its formula.
        let with = |extra: &[f64]| {
            let mut b = DEFAULT_BUCKETS.to_vec();
            b.extend_from_slice(extra);
            b
        };
        assert_eq!(
            tick_buckets(Duration::from_secs(60)),
            with(&[35.0, 60.0, 90.0, 120.0])
        );
        assert_eq!(
            tick_buckets(Duration::from_secs(15)),
            with(&[12.5, 15.0, 22.5, 30.0])
        );
        assert_eq!(tick_buckets(Duration::from_secs(10)), DEFAULT_BUCKETS);
        // 3s lies between 2.5 and 5 and is far from both: it is inserted.
        assert_eq!(
            tick_buckets(Duration::from_secs(3)),
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0
            ]
        );
        // 1s is a bucket already; 1.001s is within the first bucket's width of it.
        assert_eq!(tick_buckets(Duration::from_secs(1)), DEFAULT_BUCKETS);
        assert_eq!(tick_buckets(Duration::from_millis(1001)), DEFAULT_BUCKETS);
    }

    #[test]
    fn histogram_is_cumulative_with_le_semantics() {
        let h = Histogram::new(Arc::from([0.1, 1.0].as_slice()));
        for ms in [50, 100, 150, 1000, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        // 0.1 falls into le=0.1, 1.0 into le=1.
        assert_eq!(s.cumulative, vec![2, 4, 5]);
        assert_eq!(s.count, 5);
        assert!((s.sum_seconds - 6.3).abs() < 1e-9);
    }

    #[test]
    fn failures_are_counted_by_reason_and_success_resets_the_streak() {
        let stats = ScrapeStats::new(Duration::from_secs(15));
        let name: Arc<str> = Arc::from("n1");
        let node = stats.node_entry(&name);
        let ms = Duration::from_millis;
        stats.record_failure(&node, 1, 2, ms(5), FailureReason::Timeout, "slow".into());
        let streak =
            stats.record_failure(&node, 3, 4, ms(5), FailureReason::NoAddress, "none".into());
        assert_eq!(streak, 2);
        assert!(!node.healthy());
        assert_eq!(
            node.last_error().map(|e| e.reason),
            Some(FailureReason::NoAddress)
        );
        // The address failure never reached a kubelet, so only one duration was observed.
        assert_eq!(node.duration.snapshot().count, 1);
        stats.record_success(
            &node,
            10,
            11,
            ms(20),
            BodyStats {
                received: 100,
                decoded: 300,
                samples: 7,
                decode_time: ms(1),
                left_out: crate::decode::DecodeStats {
                    dropped_pods: 2,
                    incomplete_node: true,
                    unattributed_series: 0,
                },
            },
        );
        assert!(node.healthy());
        assert_eq!(node.last_success_ns(), 10);
        assert_eq!(node.last_request_ns(), 11);
        let t = stats.totals();
        assert_eq!((t.requests_ok, t.requests_failed), (1, 2));
        assert_eq!(stats.failures(FailureReason::Timeout), 1);
        assert_eq!(stats.failures(FailureReason::NoAddress), 1);
        assert_eq!(stats.failures(FailureReason::Decode), 0);
        assert_eq!(
            (t.bytes_received, t.bytes_decoded, t.samples),
            (100, 300, 7)
        );
        stats.remove_node("n1");
        assert!(stats.node("n1").is_none());
        assert!(stats.nodes().is_empty());
    }
}
