//! The metrics store: two points per node and per container, and the rates the API serves.
//!
//! OWNER: api helper. The public items below are the contract the scraper and the API code
//! against; the bodies are placeholders until the store lands.

use std::sync::Arc;
use std::time::Duration;

use crate::decode::Page;

/// A node's usage as the metrics API serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The later point's timestamp, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The time between the two points the rate was computed from.
    pub window: Duration,
    /// CPU rate in nanocores (ΔcpuNs / Δt).
    pub cpu_nanocores: u64,
    /// The later point's working set in bytes.
    pub memory_bytes: u64,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: Box<str>,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// A pod's usage: served only when every container has two points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    /// The earliest container timestamp, as metrics-server reports it.
    pub timestamp_ns: i64,
    /// The window belonging to that earliest timestamp.
    pub window: Duration,
    /// Sorted by container name.
    pub containers: Box<[ContainerUsage]>,
}

/// Counts of what the store can serve (metrics-server's `storage_points{type}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub nodes: usize,
    pub pods: usize,
    pub containers: usize,
}

/// Points and rates for every node and pod, safe to read while scrapes write.
#[derive(Debug)]
pub struct Store {
    resolution: Duration,
}

impl Store {
    /// `resolution` is `--metric-resolution`, which the fresh-container rule depends on.
    pub fn new(resolution: Duration) -> Self {
        Self { resolution }
    }

    /// Stores one node's freshly scraped page. The node's pods not on the page leave the store.
    pub fn ingest(&self, node: &str, page: &Page<'_>) {
        let _ = (node, page, self.resolution);
    }

    /// The node's scrape failed: it and its pods stop being served until it recovers.
    pub fn scrape_failed(&self, node: &str) {
        let _ = node;
    }

    /// The node is gone from the cluster (or from the node selector).
    pub fn remove_node(&self, node: &str) {
        let _ = node;
    }

    /// The pod is gone from the cluster (or no longer Running).
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let _ = (namespace, name);
    }

    pub fn node_usage(&self, node: &str) -> Option<Usage> {
        let _ = node;
        None
    }

    pub fn pod_usage(&self, namespace: &str, name: &str) -> Option<Arc<PodUsage>> {
        let _ = (namespace, name);
        None
    }

    /// metrics-server's `metric-storage-ready`: true once any rate can be served.
    pub fn ready(&self) -> bool {
        false
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
