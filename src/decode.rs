//! metrics-server's decoding rules: from one kubelet `/metrics/resource` page to the node and
//! container points the store keeps.
//!
//! The rules are those of metrics-server's `pkg/scraper/client/resource/decode.go`:
//!
//! - A series counts when its metric name is exactly one of `node_cpu_usage_seconds_total`,
//!   `node_memory_working_set_bytes`, `node_swap_usage_bytes`,
//!   `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
//!   `container_swap_usage_bytes` or `container_start_time_seconds`. Everything else,
//!   pod-level series included, is skipped.
//! - CPU is `value × 1e9` truncated to an integer (a float64 multiply, then truncation, as Go's
//!   `uint64(value*1e9)`); memory and swap are `value` truncated; the start time is
//!   `value × 1e9` nanoseconds.
//! - A sample's timestamp is milliseconds; a sample without one takes the scrape time
//!   (`default_timestamp_ns`, truncated to whole milliseconds as metrics-server truncates it).
//!   A cpu, memory or swap sample sets its owner's timestamp; the start time does not. When a
//!   series repeats, the later line wins.
//! - The node point is dropped when its CPU or memory is zero or missing (a missing
//!   timestamp cannot happen: any CPU or memory sample sets one).
//! - Containers are grouped by `(namespace, pod)`. If any container of a pod has zero or
//!   missing CPU or memory (a container seen only through its start time, say), the whole pod
//!   is dropped.
//! - A page the parser rejects is an error as a whole; this is how metrics-server's
//!   "containing an incorrect timestamp" case (a negative timestamp) fails.
//!
//! Where metrics-server relies on undefined or accidental behaviour we decide, and say so:
//!
//! - Out-of-range values: NaN, ±Inf, negative values and values at or above 2^64 are not
//!   usage. They count as zero, so they drop the node or the pod as a zero would; a NaN CPU
//!   never produces a point. (Go's float-to-integer conversion of such values is
//!   platform-dependent.) A start time that is not finite or does not fit an `i64` of
//!   nanoseconds becomes 0, "unknown".
//! - A timestamp beyond what an `i64` of nanoseconds holds (after the year 2262) makes the
//!   page an error; Go would silently wrap it around.
//! - Labels are read by the parser, not by substring search: `namespace`, `pod` and
//!   `container` are matched by exact name and their values are unescaped. A container
//!   series without all three labels cannot be attributed and is skipped (Go would take
//!   garbage or panic). Series are matched by metric name even with blanks before `{`.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::parse::{Entry, ParseError, Parser, Sample};

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
    /// Swap in use, in bytes; 0 when the kubelet does not report it (swap off, Windows, or an
    /// older kubelet). metrics-server reads it the same way.
    pub swap_bytes: u64,
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

/// What decoding left out of a page, for logs and self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Pods dropped because one of their containers lacked CPU or memory
    /// (metrics-server's "Failed getting complete Pod metric").
    pub dropped_pods: usize,
    /// Whether the page had node series but no complete node point
    /// (metrics-server's "Failed getting complete node metric").
    pub incomplete_node: bool,
    /// Container series skipped for lacking a `namespace`, `pod` or `container` label.
    pub unattributed_series: usize,
}

/// Why a page could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not valid Prometheus text.
    #[error("malformed metrics page: {0}")]
    Parse(#[from] ParseError),
    /// A timestamp that nanoseconds since the epoch cannot represent.
    #[error(
        "line {line}: timestamp {timestamp_ms} ms is beyond the range of nanosecond timestamps"
    )]
    TimestampOutOfRange { line: usize, timestamp_ms: i64 },
}

impl DecodeError {
    /// The 1-based line of the payload the error is about.
    pub fn line(&self) -> usize {
        match self {
            DecodeError::Parse(e) => e.line,
            DecodeError::TimestampOutOfRange { line, .. } => *line,
        }
    }
}

const NS_PER_MS: i64 = 1_000_000;

/// The series metrics-server reads, by metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    NodeCpu,
    NodeMemory,
    NodeSwap,
    ContainerCpu,
    ContainerMemory,
    ContainerSwap,
    ContainerStartTime,
}

impl Series {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "node_cpu_usage_seconds_total" => Series::NodeCpu,
            "node_memory_working_set_bytes" => Series::NodeMemory,
            "node_swap_usage_bytes" => Series::NodeSwap,
            "container_cpu_usage_seconds_total" => Series::ContainerCpu,
            "container_memory_working_set_bytes" => Series::ContainerMemory,
            "container_swap_usage_bytes" => Series::ContainerSwap,
            "container_start_time_seconds" => Series::ContainerStartTime,
            _ => return None,
        })
    }
}

/// Decodes one page. `default_timestamp_ns` (the scrape time) stands in for series without a
/// timestamp.
///
/// Allocates the returned container vector and one scratch index per page, both sized from
/// the payload length up front; nothing is allocated per sample unless a label value needs
/// unescaping.
pub fn decode(payload: &[u8], default_timestamp_ns: i64) -> Result<Page<'_>, DecodeError> {
    decode_with_stats(payload, default_timestamp_ns).map(|(page, _)| page)
}

/// [`decode`], also saying what the page had that the rules left out. Dropped pods and an
/// incomplete node are also logged at debug level, as metrics-server logs them at `-v=1`.
pub fn decode_with_stats(
    payload: &[u8],
    default_timestamp_ns: i64,
) -> Result<(Page<'_>, DecodeStats), DecodeError> {
    decode_observed(payload, default_timestamp_ns, |_| {})
}

/// [`decode_with_stats`], also handing every parsed entry to `observe` before the rules see
/// it, so that another reader of the page (the exposition's index) shares this one parse.
pub fn decode_observed<'a>(
    payload: &'a [u8],
    default_timestamp_ns: i64,
    mut observe: impl FnMut(&Entry<'a>),
) -> Result<(Page<'a>, DecodeStats), DecodeError> {
    // metrics-server converts the scrape time to whole milliseconds before using it.
    let default_ts = default_timestamp_ns
        .div_euclid(NS_PER_MS)
        .checked_mul(NS_PER_MS)
        .unwrap_or(default_timestamp_ns);
    let mut node: Option<Point> = None;
    let mut containers = Containers::with_capacity(estimate_containers(payload.len()));
    let mut samples = 0usize;
    let mut stats = DecodeStats::default();

    for entry in Parser::new(payload) {
        let entry = entry?;
        observe(&entry);
        let Entry::Sample(sample) = entry else {
            continue;
        };
        samples += 1;
        let Some(series) = Series::of(sample.name) else {
            continue;
        };
        let ts = match sample.timestamp_ms {
            None => default_ts,
            Some(ms) => ms
                .checked_mul(NS_PER_MS)
                .ok_or(DecodeError::TimestampOutOfRange {
                    line: sample.line,
                    timestamp_ms: ms,
                })?,
        };
        let point = match series {
            Series::NodeCpu | Series::NodeMemory | Series::NodeSwap => {
                node.get_or_insert_with(Point::default)
            }
            _ => match containers.point(&sample) {
                Some(p) => p,
                None => {
                    stats.unattributed_series += 1;
                    continue;
                }
            },
        };
        apply(point, series, sample.value, ts);
    }

    let complete = node.filter(|p| p.cpu_ns != 0 && p.memory_bytes != 0);
    if let (Some(p), None) = (node, complete) {
        stats.incomplete_node = true;
        tracing::debug!(
            cpu_ns = p.cpu_ns,
            memory_bytes = p.memory_bytes,
            "Failed getting complete node metric"
        );
    }
    let (containers, dropped_pods) = containers.finish();
    stats.dropped_pods = dropped_pods;
    let page = Page {
        node: complete,
        containers,
        samples,
    };
    Ok((page, stats))
}

/// Records one sample in its point.
#[inline]
fn apply(p: &mut Point, series: Series, v: f64, ts: i64) {
    match series {
        Series::NodeCpu | Series::ContainerCpu => {
            p.cpu_ns = to_u64(v * 1e9);
            p.timestamp_ns = ts;
        }
        Series::NodeMemory | Series::ContainerMemory => {
            p.memory_bytes = to_u64(v);
            p.timestamp_ns = ts;
        }
        Series::NodeSwap | Series::ContainerSwap => {
            p.swap_bytes = to_u64(v);
            p.timestamp_ns = ts;
        }
        Series::ContainerStartTime => p.start_time_ns = to_i64(v * 1e9),
    }
}

/// Go's `uint64(x)` for the values it defines (truncation toward zero); every value Go
/// leaves undefined (NaN, ±Inf, negative, ≥ 2^64) becomes 0, which drops the owner.
#[inline]
fn to_u64(x: f64) -> u64 {
    // 2^64 exactly; every f64 below it truncates into range.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if (0.0..LIMIT).contains(&x) {
        x as u64
    } else {
        0
    }
}

/// Go's `int64(x)` for in-range values; anything else becomes 0 ("unknown").
#[inline]
fn to_i64(x: f64) -> i64 {
    // ±2^63 exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&x) {
        x as i64
    } else {
        0
    }
}

/// A first guess at how many containers a page of `len` bytes holds: a kubelet writes at
/// least three lines of well over 100 bytes for each, so this rarely needs to grow and never
/// over-allocates by more than a small factor.
fn estimate_containers(len: usize) -> usize {
    (len / 512 + 8).min(1 << 16)
}

type Key<'a> = (Cow<'a, str>, Cow<'a, str>, Cow<'a, str>);

/// The page's containers in order of first appearance, with an index to find them again.
///
/// A kubelet writes each metric family in the same container order, so the next sample
/// usually belongs to the container after the previous one: `cursor` checks that guess with
/// three string comparisons, and the hash index is consulted only when it fails (once per
/// container in the first family, once at the start of each later one).
struct Containers<'a> {
    points: Vec<ContainerPoint<'a>>,
    index: HashMap<Key<'a>, usize>,
    cursor: usize,
}

impl<'a> Containers<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            points: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
            cursor: 0,
        }
    }

    /// The point of the container `sample` is about, created on first sight; `None` when the
    /// sample lacks one of the `namespace`, `pod` and `container` labels.
    fn point(&mut self, sample: &Sample<'a>) -> Option<&mut Point> {
        let (mut namespace, mut pod, mut container) = (None, None, None);
        for (name, value) in sample.labels.iter_raw() {
            let slot = match name {
                "namespace" => &mut namespace,
                "pod" => &mut pod,
                "container" => &mut container,
                _ => continue,
            };
            // The first occurrence wins if a label repeats, as a Go substring search would.
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        let (namespace, pod, container) = (namespace?, pod?, container?);

        let labels = sample.labels;
        // Whether a stored (unescaped) value equals a raw one from this sample.
        let same = |stored: &str, raw: &'a str| *labels.unescape(raw) == *stored;
        let at = self.cursor;
        let guessed = self.points.get(at).is_some_and(|c| {
            same(&c.pod, pod) && same(&c.container, container) && same(&c.namespace, namespace)
        });
        let i = if guessed {
            at
        } else {
            let key = (
                labels.unescape(namespace),
                labels.unescape(pod),
                labels.unescape(container),
            );
            let next = self.points.len();
            let i = *self.index.entry(key.clone()).or_insert(next);
            if i == next {
                let (namespace, pod, container) = key;
                self.points.push(ContainerPoint {
                    namespace,
                    pod,
                    container,
                    point: Point::default(),
                });
            }
            i
        };
        self.cursor = i + 1;
        self.points.get_mut(i).map(|c| &mut c.point)
    }

    /// Sorts the points by (namespace, pod, container) and drops every pod that has a
    /// container without CPU or memory. Returns the kept points and the dropped pod count.
    fn finish(self) -> (Vec<ContainerPoint<'a>>, usize) {
        let mut points = self.points;
        drop(self.index);
        points.sort_unstable_by(|a, b| {
            (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
        });
        let mut kept = 0;
        let mut dropped = 0;
        let mut start = 0;
        while start < points.len() {
            let mut end = start + 1;
            while points
                .get(end)
                .zip(points.get(start))
                .is_some_and(|(a, b)| a.namespace == b.namespace && a.pod == b.pod)
            {
                end += 1;
            }
            let complete = points
                .get(start..end)
                .unwrap_or_default()
                .iter()
                .all(|c| c.point.cpu_ns != 0 && c.point.memory_bytes != 0);
            if complete {
                for i in start..end {
                    points.swap(kept, i);
                    kept += 1;
                }
            } else {
                dropped += 1;
                if let Some(c) = points.get(start) {
                    tracing::debug!(
                        namespace = %c.namespace,
                        pod = %c.pod,
                        "Failed getting complete Pod metric"
                    );
                }
            }
            start = end;
        }
        points.truncate(kept);
        (points, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_700_000_000_123_456_789;

    fn page(input: &str) -> Page<'_> {
        decode(input.as_bytes(), TS).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn stats(input: &str) -> DecodeStats {
        decode_with_stats(input.as_bytes(), TS)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .1
    }

    fn names<'p>(p: &'p Page<'_>) -> Vec<(&'p str, &'p str, &'p str)> {
        p.containers
            .iter()
            .map(|c| (&*c.namespace, &*c.pod, &*c.container))
            .collect()
    }

    fn container(ns: &str, pod: &str, c: &str, cpu: &str, mem: &str) -> String {
        let labels = format!("container=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"");
        format!(
            "container_cpu_usage_seconds_total{{{labels}}} {cpu} 1000\n\
             container_memory_working_set_bytes{{{labels}}} {mem} 2000\n"
        )
    }

    #[test]
    fn default_timestamp_is_truncated_to_milliseconds() {
        let p = page("node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes 2\n");
        assert_eq!(
            p.node,
            Some(Point {
                timestamp_ns: 1_700_000_000_123_000_000,
                cpu_ns: 1_000_000_000,
                memory_bytes: 2,
                ..Point::default()
            })
        );
        let p = decode(
            b"node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes 2\n",
            -1,
        )
        .expect("decodes");
        assert_eq!(p.node.map(|n| n.timestamp_ns), Some(-1_000_000));
    }

    #[test]
    fn the_later_series_sets_the_timestamp_and_repeats_overwrite() {
        let p = page(
            "node_cpu_usage_seconds_total 1 5000\n\
             node_memory_working_set_bytes 2 4000\n\
             node_swap_usage_bytes 3 6000\n\
             node_cpu_usage_seconds_total 7 3000\n",
        );
        assert_eq!(
            p.node,
            Some(Point {
                timestamp_ns: 3_000_000_000,
                cpu_ns: 7_000_000_000,
                memory_bytes: 2,
                swap_bytes: 3,
                start_time_ns: 0,
            })
        );
        assert_eq!(p.samples, 4);
    }

    #[test]
    fn cpu_is_a_float_multiply_then_truncation() {
        // 1.005 × 1e9 is 1004999999.9999999 in float64, which truncates to 1004999999; 1e-10
        // core-seconds is below one nanosecond and truncates to 0, which drops the node.
        let p = page("node_cpu_usage_seconds_total 1.005\nnode_memory_working_set_bytes 1.9\n");
        assert_eq!(
            p.node.map(|n| (n.cpu_ns, n.memory_bytes)),
            Some((1_004_999_999, 1))
        );
        let p = page("node_cpu_usage_seconds_total 1e-10\nnode_memory_working_set_bytes 5\n");
        assert_eq!(p.node, None);
        let p = page(
            "node_cpu_usage_seconds_total 18446744073.709549\nnode_memory_working_set_bytes 1.8446744073709550e19\n",
        );
        assert_eq!(
            p.node.map(|n| (n.cpu_ns, n.memory_bytes)),
            Some((18_446_744_073_709_549_568, 18_446_744_073_709_549_568))
        );
    }

    #[test]
    fn values_that_are_not_usage_drop_their_owner() {
        for bad in [
            "NaN",
            "+Inf",
            "-Inf",
            "-1",
            "0",
            "-0",
            "1.8446744073709552e19",
            "1e300",
        ] {
            let input = format!(
                "node_cpu_usage_seconds_total {bad}\nnode_memory_working_set_bytes 5\n{}",
                container("ns", "p", "c", bad, "5")
            );
            let p = page(&input);
            assert_eq!(p.node, None, "node cpu {bad}");
            assert!(p.containers.is_empty(), "container cpu {bad}");
            assert_eq!(
                stats(&input),
                DecodeStats {
                    dropped_pods: 1,
                    incomplete_node: true,
                    unattributed_series: 0
                },
                "{bad}"
            );

            let input = format!(
                "node_cpu_usage_seconds_total 5\nnode_memory_working_set_bytes {bad}\n{}",
                container("ns", "p", "c", "5", bad)
            );
            let p = page(&input);
            assert_eq!(p.node, None, "node memory {bad}");
            assert!(p.containers.is_empty(), "container memory {bad}");
        }
    }

    #[test]
    fn start_times_out_of_range_are_unknown() {
        for (value, want) in [
            ("1.633252712e+9", 1_633_252_712_000_000_000),
            ("-6.7953645788713455e+09", -6_795_364_578_871_345_152),
            ("NaN", 0),
            ("+Inf", 0),
            ("1e10", 0),
            ("-1e10", 0),
        ] {
            let input = format!(
                "{}container_start_time_seconds{{container=\"c\",namespace=\"ns\",pod=\"p\"}} {value}\n",
                container("ns", "p", "c", "1", "1")
            );
            let p = page(&input);
            assert_eq!(p.containers.len(), 1, "{value}");
            assert_eq!(p.containers[0].point.start_time_ns, want, "{value}");
            // The start time does not move the container's timestamp.
            assert_eq!(p.containers[0].point.timestamp_ns, 2_000_000_000);
        }
    }

    #[test]
    fn one_incomplete_container_drops_its_whole_pod_only() {
        let mut input = String::new();
        input += &container("b", "p1", "app", "1", "10");
        input += &container("b", "p1", "sidecar", "2", "0");
        input += &container("a", "p2", "app", "3", "30");
        input += &container("b", "p0", "app", "4", "40");
        // Known only through its start time: the pod has no usage for it.
        input += "container_start_time_seconds{container=\"init\",namespace=\"a\",pod=\"p3\"} 1\n";
        input += &container("a", "p3", "app", "5", "50");
        let p = page(&input);
        assert_eq!(names(&p), [("a", "p2", "app"), ("b", "p0", "app")]);
        assert_eq!(stats(&input).dropped_pods, 2);
        let cpu: Vec<_> = p.containers.iter().map(|c| c.point.cpu_ns).collect();
        assert_eq!(cpu, [3_000_000_000, 4_000_000_000]);
        let pods: Vec<_> = p.pods().map(<[_]>::len).collect();
        assert_eq!(pods, [1, 1]);
    }

    #[test]
    fn containers_are_sorted_and_grouped_whatever_the_family_order() {
        // Memory before CPU, and the families list containers in different orders.
        let input = "\
container_memory_working_set_bytes{container=\"z\",namespace=\"n\",pod=\"p\"} 1 1\n\
container_memory_working_set_bytes{container=\"a\",namespace=\"n\",pod=\"p\"} 2 1\n\
container_memory_working_set_bytes{container=\"a\",namespace=\"m\",pod=\"q\"} 3 1\n\
container_cpu_usage_seconds_total{container=\"a\",namespace=\"m\",pod=\"q\"} 6 2\n\
container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"p\"} 5 2\n\
container_cpu_usage_seconds_total{container=\"z\",namespace=\"n\",pod=\"p\"} 4 2\n";
        let p = page(input);
        assert_eq!(
            names(&p),
            [("m", "q", "a"), ("n", "p", "a"), ("n", "p", "z")]
        );
        let got: Vec<_> = p
            .containers
            .iter()
            .map(|c| (c.point.cpu_ns, c.point.memory_bytes, c.point.timestamp_ns))
            .collect();
        assert_eq!(
            got,
            [
                (6_000_000_000, 3, 2_000_000),
                (5_000_000_000, 2, 2_000_000),
                (4_000_000_000, 1, 2_000_000)
            ]
        );
        let pods: Vec<Vec<&str>> = p
            .pods()
            .map(|c| c.iter().map(|c| &*c.container).collect())
            .collect();
        assert_eq!(pods, [vec!["a"], vec!["a", "z"]]);
    }

    #[test]
    fn labels_are_matched_exactly_and_unescaped() {
        let input = "\
container_cpu_usage_seconds_total{xcontainer=\"wrong\",container=\"a\\\"b\",namespace=\"n\\\\s\",pod=\"p,{}=\"} 1 1\n\
container_memory_working_set_bytes{pod=\"p,{}=\",namespace=\"n\\\\s\",container=\"a\\\"b\",extra=\"x\"} 2 1\n";
        let p = page(input);
        assert_eq!(names(&p), [("n\\s", "p,{}=", "a\"b")]);
        assert_eq!(
            (
                p.containers[0].point.cpu_ns,
                p.containers[0].point.memory_bytes
            ),
            (1_000_000_000, 2)
        );
        assert!(matches!(p.containers[0].pod, Cow::Borrowed(_)));
        assert!(matches!(p.containers[0].container, Cow::Owned(_)));
    }

    #[test]
    fn escaped_and_plain_spellings_of_one_value_are_one_container() {
        // `\q` is kept as written, so `a\q` and `a\\q` both mean the value `a\q`.
        let input = "\
container_cpu_usage_seconds_total{container=\"a\\q\",namespace=\"n\",pod=\"p\"} 1 1\n\
container_memory_working_set_bytes{container=\"a\\\\q\",namespace=\"n\",pod=\"p\"} 2 1\n";
        let p = page(input);
        assert_eq!(names(&p), [("n", "p", "a\\q")]);
    }

    #[test]
    fn unattributable_and_unrelated_series_are_skipped() {
        let input = format!(
            "container_cpu_usage_seconds_total{{namespace=\"n\",pod=\"p\"}} 1 1\n\
             container_cpu_usage_seconds_total 1 1\n\
             container_cpu_usage_seconds_total_extra{{container=\"c\",namespace=\"n\",pod=\"p\"}} 1 1\n\
             pod_cpu_usage_seconds_total{{namespace=\"n\",pod=\"p\"}} 9 1\n\
             pod_memory_working_set_bytes{{namespace=\"n\",pod=\"p\"}} 9 1\n\
             node_cpu_usage_seconds_total{{node=\"x\"}} 3 1\n\
             node_memory_working_set_bytes 4 1\n\
             resource_scrape_error 0\n{}",
            container("n", "p", "c", "1", "2")
        );
        let p = page(&input);
        assert_eq!(p.samples, 10);
        assert_eq!(names(&p), [("n", "p", "c")]);
        assert_eq!(
            p.node.map(|n| (n.cpu_ns, n.memory_bytes)),
            Some((3_000_000_000, 4))
        );
        assert_eq!(
            stats(&input),
            DecodeStats {
                dropped_pods: 0,
                incomplete_node: false,
                unattributed_series: 2
            }
        );
    }

    #[test]
    fn swap_is_read_and_sets_the_timestamp() {
        let input = format!(
            "{}container_swap_usage_bytes{{container=\"c\",namespace=\"n\",pod=\"p\"}} 4096 3000\n",
            container("n", "p", "c", "1", "2")
        );
        let p = page(&input);
        let point = p.containers[0].point;
        assert_eq!(
            (point.swap_bytes, point.timestamp_ns),
            (4096, 3_000_000_000)
        );
    }

    #[test]
    fn parse_errors_and_huge_timestamps_fail_the_page_with_their_line() {
        let e = decode(
            b"node_cpu_usage_seconds_total 1 1\nnode_memory_working_set_bytes{ 2\n",
            TS,
        )
        .expect_err("malformed");
        assert!(matches!(e, DecodeError::Parse(_)));
        assert_eq!(e.line(), 2);

        let e = decode(b"\nnode_cpu_usage_seconds_total 1 9223372036855\n", TS)
            .expect_err("out of range");
        assert!(matches!(
            e,
            DecodeError::TimestampOutOfRange {
                line: 2,
                timestamp_ms: 9_223_372_036_855
            }
        ));
        assert_eq!(
            e.to_string(),
            "line 2: timestamp 9223372036855 ms is beyond the range of nanosecond timestamps"
        );
        // The largest representable one is fine, and unrelated series are not checked.
        let p = page(
            "node_cpu_usage_seconds_total 1 9223372036854\nscrape_error 0 9223372036854775807\n",
        );
        assert_eq!(p.samples, 2);
    }

    const FIXTURES: &[&[u8]] = &[
        include_bytes!("../tests/fixtures/kubelet/metrics-resource-kind-70pods.prom"),
        include_bytes!("../tests/fixtures/kubelet/metrics-server-decode-cases/normal.prom"),
        include_bytes!(
            "../tests/fixtures/kubelet/metrics-server-decode-cases/without-timestamp-uses-defaulttime.prom"
        ),
        include_bytes!(
            "../tests/fixtures/kubelet/metrics-server-decode-cases/containing-an-incorrect-timestamp.prom"
        ),
        include_bytes!(
            "../tests/fixtures/kubelet/kubelet-collector-cases/arbitrary-container-metrics.prom"
        ),
        include_bytes!(
            "../tests/fixtures/kubelet/kubelet-collector-cases/arbitrary-node-metrics.prom"
        ),
        include_bytes!(
            "../tests/fixtures/kubelet/kubelet-collector-cases/nil-container-metrics.prom"
        ),
    ];

    /// Bytes that matter to the grammar, for the mutations to plant.
    const NASTY: &[u8] = b"\"\\{}=,# \t\n\r\0e.+-:_9Ix\xff\xc3\xa9";

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    /// One random edit: flip, replace, insert, delete, truncate, duplicate or splice bytes.
    fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if at < len => data[at] ^= 1 << rng.below(8),
            1 if at < len => data[at] = NASTY[rng.below(NASTY.len())],
            2 => data.insert(at, NASTY[rng.below(NASTY.len())]),
            3 if at < len => {
                data.remove(at);
            }
            4 => data.truncate(at),
            5 => {
                let end = (at + rng.below(64)).min(len);
                let piece = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, piece);
            }
            _ => {
                let other = FIXTURES[rng.below(FIXTURES.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(200)).min(other.len());
                let to = at.min(data.len());
                data.splice(to..to, other[from..end].iter().copied());
            }
        }
    }

    /// Deterministic mutation testing, so that CI exercises robustness without cargo-fuzz:
    /// nothing panics or loops, every error names a real line, and every accepted sample's
    /// `labels_raw` re-parses to the same labels, with `node="…"` appended as the exposition
    /// appends it.
    #[test]
    fn mutated_fixtures_never_panic_and_errors_carry_their_line() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let (mut errors, mut samples) = (0, 0);
        for round in 0..20_000 {
            let base = FIXTURES[round % FIXTURES.len()];
            // Windows of the big page keep each round cheap in a debug build.
            let start = rng.below(base.len().saturating_sub(3000));
            let mut data = base[start..(start + 3000).min(base.len())].to_vec();
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut data);
            }
            let lines = data.split(|&b| b == b'\n').count();
            let mut items = 0;
            for entry in Parser::new(&data) {
                items += 1;
                assert!(items <= lines + 1, "more entries than lines");
                match entry {
                    Ok(Entry::Sample(s)) => {
                        samples += 1;
                        check_labels_raw(&s);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        assert!((1..=lines).contains(&e.line), "{e} of {lines} lines");
                        assert!(e.column >= 1, "{e}");
                        assert!(e.to_string().starts_with(&format!("line {},", e.line)));
                    }
                }
            }
            match decode(&data, TS) {
                Ok(p) => assert!(p.containers.len() <= p.samples),
                Err(e) => assert!((1..=lines).contains(&e.line()), "{e}"),
            }
        }
        // The mutations must exercise both outcomes to mean anything.
        assert!(
            errors > 10_000 && samples > 40_000,
            "{errors} errors, {samples} samples"
        );
    }

    fn check_labels_raw(s: &Sample<'_>) {
        let raw = s.labels_raw();
        let pairs: Vec<_> = s.labels.iter().collect();
        let again = format!("x{{{raw}}} 0");
        let reparsed = match Parser::new(again.as_bytes()).next() {
            Some(Ok(Entry::Sample(r))) => r.labels.iter().collect::<Vec<_>>(),
            other => panic!("{again:?} does not re-parse: {other:?}"),
        };
        assert_eq!(pairs, reparsed);
        let sep = if raw.is_empty() { "" } else { "," };
        let extended = format!("x{{{raw}{sep}node=\"n\"}} 0");
        match Parser::new(extended.as_bytes()).next() {
            Some(Ok(Entry::Sample(r))) => {
                let mut got: Vec<_> = r.labels.iter().collect();
                assert_eq!(got.pop(), Some(("node", Cow::Borrowed("n"))));
                assert_eq!(got, pairs);
            }
            other => panic!("{extended:?} does not parse: {other:?}"),
        }
    }

    #[test]
    fn empty_page() {
        let p = page("");
        assert_eq!((p.node, p.containers.len(), p.samples), (None, 0, 0));
    }
}
