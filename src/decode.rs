//! metrics-server's decoding rules: from one kubelet `/metrics/resource` page to the node and
//! container points the store keeps.
//!
//! OWNER: parse helper. The public items below are the contract the store and scraper code
//! against; the bodies are placeholders until the parser lands.

use std::borrow::Cow;

/// One observation, in metrics-server's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    /// When the kubelet took the sample, in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Cumulative CPU time in nanoseconds (core-seconds × 1e9).
    pub cpu_ns: u64,
    /// Working set in bytes.
    pub memory_bytes: u64,
    /// Container start time in nanoseconds since the epoch; 0 when unknown (always for nodes).
    pub start_time_ns: i64,
}

/// One container's point, with names borrowed from the payload where no unescaping was needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPoint<'a> {
    pub namespace: Cow<'a, str>,
    pub pod: Cow<'a, str>,
    pub container: Cow<'a, str>,
    pub point: Point,
}

/// A decoded page.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// The node's point, if the page had a complete one.
    pub node: Option<Point>,
    /// Points of complete pods only, sorted by (namespace, pod, container).
    pub containers: Vec<ContainerPoint<'a>>,
    /// How many series lines the page held.
    pub samples: usize,
}

impl<'a> Page<'a> {
    /// The containers grouped by pod, in (namespace, pod) order.
    pub fn pods(&self) -> impl Iterator<Item = &[ContainerPoint<'a>]> {
        self.containers
            .chunk_by(|a, b| a.namespace == b.namespace && a.pod == b.pod)
    }
}

/// Why a page could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
}

/// Decodes one page. `default_timestamp_ns` (the scrape time) stands in for series without a
/// timestamp.
pub fn decode(payload: &[u8], default_timestamp_ns: i64) -> Result<Page<'_>, DecodeError> {
    let _ = (payload, default_timestamp_ns);
    Err(DecodeError::Invalid {
        line: 0,
        message: "decoder not implemented yet".into(),
    })
}
