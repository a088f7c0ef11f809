//! metrics-server's decode cases, the kubelet collector's current output, the 70-pod kind
//! page and a synthetic 110-pod page, decoded and compared number by number: against the
//! figures metrics-server's own tests expect, and against an independent decoder built on
//! Python's `prometheus_client` parser.

#[path = "../benches/support/kubelet_page.rs"]
#[allow(dead_code)]
mod kubelet_page;
mod peer;

use std::fmt::Write as _;
use std::path::Path;

use metrics_bridge::decode::{ContainerPoint, DecodeError, Page, Point, decode, decode_with_stats};
use metrics_bridge::parse::ParseErrorKind;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kubelet");

fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Any scrape time; the cases with timestamps must not use it.
const SCRAPE_NS: i64 = 1_900_000_000_000_000_000;

/// What the tests compare: the node, the containers, the sample count, the dropped pods.
type Decoded = (Option<Point>, Vec<Owned>, usize, usize);

fn decode_case(name: &str) -> Result<Decoded, String> {
    let payload = fixture(&format!("metrics-server-decode-cases/{name}.prom"));
    decode_with_stats(&payload, SCRAPE_NS)
        .map(|(p, stats)| (p.node, owned(&p), p.samples, stats.dropped_pods))
        .map_err(|e| e.to_string())
}

type Owned = (String, String, String, Point);

fn owned(p: &Page<'_>) -> Vec<Owned> {
    p.containers
        .iter()
        .map(|c: &ContainerPoint<'_>| {
            (
                c.namespace.to_string(),
                c.pod.to_string(),
                c.container.to_string(),
                c.point,
            )
        })
        .collect()
}

/// 2021-10-03T09:36:49.720Z, metrics-server's expected node timestamp.
const NODE_TS: i64 = 1_633_253_809_720_000_000;
/// 2021-10-03T09:36:52.125Z, the coredns container's.
const COREDNS_TS: i64 = 1_633_253_812_125_000_000;
/// 2021-10-03T09:18:32Z, the coredns container's start.
const COREDNS_START: i64 = 1_633_252_712_000_000_000;

fn normal_node(ts: i64) -> Point {
    Point {
        timestamp_ns: ts,
        cpu_ns: 357_354_910_000,
        memory_bytes: 1_616_273_408,
        ..Point::default()
    }
}

fn coredns(ts: i64) -> Vec<Owned> {
    vec![(
        "kube-system".into(),
        "coredns-558bd4d5db-4dpjz".into(),
        "coredns".into(),
        Point {
            timestamp_ns: ts,
            cpu_ns: 4_710_169_000,
            memory_bytes: 12_533_760,
            start_time_ns: COREDNS_START,
            swap_bytes: 0,
        },
    )]
}

#[test]
fn normal() {
    let got = decode_case("normal");
    assert_eq!(
        got,
        Ok((Some(normal_node(NODE_TS)), coredns(COREDNS_TS), 8, 0))
    );
}

#[test]
fn without_timestamp_uses_default_time() {
    // metrics-server's case uses 2077-07-07T07:07:07Z as the scrape time.
    let default = 3_392_867_227_000_000_000;
    let payload = fixture("metrics-server-decode-cases/without-timestamp-uses-defaulttime.prom");
    // Sub-millisecond parts of the scrape time are dropped, as metrics-server drops them.
    let page = decode(&payload, default + 999_999).expect("decodes");
    assert_eq!(page.node, Some(normal_node(default)));
    assert_eq!(owned(&page), coredns(default));
    assert_eq!(page.samples, 5);
}

#[test]
fn containers_only() {
    let got = decode_case("containers-only");
    assert_eq!(got, Ok((None, coredns(COREDNS_TS), 3, 0)));
}

#[test]
fn node_only() {
    let got = decode_case("node-only");
    assert_eq!(got, Ok((Some(normal_node(NODE_TS)), vec![], 2, 0)));
}

#[test]
fn zero_or_missing_values_drop_the_node_or_the_pod() {
    for (name, samples, dropped_pods) in [
        ("no-container-cpu-drops-container-metrics", 1, 1),
        ("empty-container-cpu-drops-container-metrics", 2, 1),
        ("no-container-memory-drops-container-metrics", 1, 1),
        ("empty-container-memory-drops-container-metrics", 2, 1),
        ("no-node-cpu-drops-metric", 1, 0),
        ("empty-node-cpu-drops-metric", 2, 0),
        ("no-node-memory-drops-metrics", 1, 0),
        ("empty-node-memory-drops-metric", 2, 0),
    ] {
        let got = decode_case(name);
        assert_eq!(got, Ok((None, vec![], samples, dropped_pods)), "{name}");
    }
}

#[test]
fn containing_an_incorrect_timestamp_is_an_error() {
    let payload = fixture("metrics-server-decode-cases/containing-an-incorrect-timestamp.prom");
    let err = decode(&payload, SCRAPE_NS).expect_err("a negative timestamp fails the page");
    let DecodeError::Parse(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.line, 3);
    assert_eq!(
        e.kind,
        ParseErrorKind::InvalidTimestamp {
            token: "-62135596800000".into()
        }
    );
    assert_eq!(e.column, 174);
    assert!(
        err.to_string().starts_with(
            "malformed metrics page: line 3, column 174: invalid timestamp \"-62135596800000\""
        ),
        "{err}"
    );
}

/// Every case of metrics-server's table is covered above.
#[test]
fn every_decode_case_fixture_has_a_test() {
    let covered = [
        "normal",
        "without-timestamp-uses-defaulttime",
        "containers-only",
        "node-only",
        "no-container-cpu-drops-container-metrics",
        "empty-container-cpu-drops-container-metrics",
        "no-container-memory-drops-container-metrics",
        "empty-container-memory-drops-container-metrics",
        "no-node-cpu-drops-metric",
        "empty-node-cpu-drops-metric",
        "no-node-memory-drops-metrics",
        "empty-node-memory-drops-metric",
        "containing-an-incorrect-timestamp",
    ];
    let mut on_disk: Vec<String> =
        std::fs::read_dir(Path::new(FIXTURES).join("metrics-server-decode-cases"))
            .expect("fixture dir")
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".prom")
                    .map(str::to_owned)
            })
            .collect();
    on_disk.sort();
    let mut covered: Vec<String> = covered.iter().map(|s| (*s).to_owned()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
}

const COLLECTOR_TS: i64 = 1_624_396_278_302_000_000;

fn collector(name: &str) -> Decoded {
    let payload = fixture(&format!("kubelet-collector-cases/{name}.prom"));
    let (p, stats) =
        decode_with_stats(&payload, SCRAPE_NS).unwrap_or_else(|e| panic!("{name}: {e}"));
    (p.node, owned(&p), p.samples, stats.dropped_pods)
}

fn c(ns: &str, pod: &str, container: &str, start: i64, swap: u64) -> Owned {
    (
        ns.into(),
        pod.into(),
        container.into(),
        Point {
            timestamp_ns: COLLECTOR_TS,
            cpu_ns: 10_000_000_000,
            memory_bytes: 1000,
            start_time_ns: start,
            swap_bytes: swap,
        },
    )
}

#[test]
fn kubelet_collector_arbitrary_container_metrics() {
    assert_eq!(
        collector("arbitrary-container-metrics"),
        (
            None,
            vec![
                c(
                    "namespace_a",
                    "pod_a",
                    "container_a",
                    1_624_396_248_302_091_520,
                    1000
                ),
                c(
                    "namespace_a",
                    "pod_a",
                    "container_b",
                    1_624_396_158_302_091_520,
                    0
                ),
                c(
                    "namespace_b",
                    "pod_b",
                    "container_a",
                    1_624_395_678_302_091_520,
                    0
                ),
            ],
            15,
            0
        )
    );
}

#[test]
fn kubelet_collector_arbitrary_node_metrics() {
    let node = Point {
        timestamp_ns: COLLECTOR_TS,
        cpu_ns: 10_000_000_000,
        memory_bytes: 1000,
        swap_bytes: 500,
        start_time_ns: 0,
    };
    assert_eq!(
        collector("arbitrary-node-metrics"),
        (Some(node), vec![], 6, 0)
    );
}

#[test]
fn kubelet_collector_pod_level_series_are_ignored() {
    assert_eq!(collector("arbitrary-pod-metrics"), (None, vec![], 5, 0));
}

#[test]
fn kubelet_collector_error_getting_summary_is_an_empty_page() {
    assert_eq!(collector("error-getting-summary"), (None, vec![], 2, 0));
}

#[test]
fn kubelet_collector_nil_container_metrics_drop_that_pod() {
    assert_eq!(
        collector("nil-container-metrics"),
        (
            None,
            vec![c(
                "namespace_b",
                "pod_b",
                "container_a",
                1_624_395_678_302_091_520,
                0
            )],
            6,
            1
        )
    );
}

#[test]
fn seventy_pod_kind_page_gives_one_node_and_seventy_pods() {
    let payload = fixture("metrics-resource-kind-70pods.prom");
    let page = decode(&payload, SCRAPE_NS).expect("decodes");
    assert_eq!(
        page.node,
        Some(Point {
            timestamp_ns: NODE_TS,
            cpu_ns: 357_354_910_000,
            memory_bytes: 1_616_273_408,
            ..Point::default()
        })
    );
    assert_eq!(page.pods().count(), 70);
    assert_eq!(page.containers.len(), 70);
    assert_eq!(page.samples, 283);
    // No container_start_time_seconds on this old page: every start time is unknown.
    assert!(page.containers.iter().all(|c| c.point.start_time_ns == 0));
    let first = &page.containers[0];
    assert_eq!(
        (&*first.namespace, &*first.pod, &*first.container),
        ("kube-system", "coredns-558bd4d5db-4dpjz", "coredns")
    );
    assert_eq!(first.point, coredns(COREDNS_TS)[0].3.without_start());
}

trait WithoutStart {
    fn without_start(self) -> Self;
}

impl WithoutStart for Point {
    fn without_start(self) -> Self {
        Point {
            start_time_ns: 0,
            ..self
        }
    }
}

#[test]
fn seventy_pod_kind_page_matches_the_python_peer() {
    let payload = fixture("metrics-resource-kind-70pods.prom");
    assert_matches_peer(&payload);
}

#[test]
fn kubelet_collector_cases_match_the_python_peer() {
    for name in [
        "arbitrary-container-metrics",
        "arbitrary-node-metrics",
        "arbitrary-pod-metrics",
        "error-getting-summary",
        "nil-container-metrics",
    ] {
        assert_matches_peer(&fixture(&format!("kubelet-collector-cases/{name}.prom")));
    }
}

#[test]
fn synthetic_110_pod_page_decodes_completely_and_matches_the_python_peer() {
    let page = kubelet_page::kubelet_page(110, 3);
    let decoded = decode(page.text.as_bytes(), SCRAPE_NS).expect("decodes");
    assert_eq!(decoded.samples, page.samples);
    assert_eq!(decoded.pods().count(), page.pods);
    assert_eq!(decoded.containers.len(), page.containers);
    assert!(decoded.node.is_some());
    assert_matches_peer(page.text.as_bytes());
}

/// metrics-server's rules, written again in Python on top of `prometheus_client`'s parser,
/// printing the same canonical text as [`canonical`].
const PEER_DECODER: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families

default_ns = int(sys.argv[1])
default_ns = (default_ns // 1_000_000) * 1_000_000
text = sys.stdin.read()

def u64(x):
    x = float(x)
    return int(x) if (x == x and 0.0 <= x < 2.0**64) else 0

def i64(x):
    x = float(x)
    return int(x) if (x == x and -2.0**63 <= x < 2.0**63) else 0

node = None
pods = {}
samples = 0
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples += 1
        name, labels, value = s.name, s.labels, float(s.value)
        ts = default_ns if s.timestamp is None else round(s.timestamp * 1000) * 1_000_000
        if name.startswith("node_"):
            if name not in ("node_cpu_usage_seconds_total", "node_memory_working_set_bytes", "node_swap_usage_bytes"):
                continue
            if node is None:
                node = {"ts": 0, "cpu": 0, "mem": 0, "swap": 0}
            p = node
        elif name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                      "container_swap_usage_bytes", "container_start_time_seconds"):
            try:
                key = (labels["namespace"], labels["pod"], labels["container"])
            except KeyError:
                continue
            p = pods.setdefault(key[:2], {}).setdefault(key[2], {"ts": 0, "cpu": 0, "mem": 0, "swap": 0, "start": 0})
        else:
            continue
        if name.endswith("_cpu_usage_seconds_total"):
            p["cpu"] = u64(value * 1e9); p["ts"] = ts
        elif name.endswith("_memory_working_set_bytes"):
            p["mem"] = u64(value); p["ts"] = ts
        elif name.endswith("_swap_usage_bytes"):
            p["swap"] = u64(value); p["ts"] = ts
        else:
            p["start"] = i64(value * 1e9)

print("samples", samples)
if node is not None and node["cpu"] != 0 and node["mem"] != 0:
    print("node", node["ts"], node["cpu"], node["mem"], node["swap"])
else:
    print("node none")
dropped = 0
for (ns, pod) in sorted(pods):
    containers = pods[(ns, pod)]
    if any(c["cpu"] == 0 or c["mem"] == 0 for c in containers.values()):
        dropped += 1
        continue
    for name in sorted(containers):
        c = containers[name]
        print("container", repr(ns), repr(pod), repr(name), c["ts"], c["cpu"], c["mem"], c["start"], c["swap"])
print("dropped", dropped)
"#;

fn canonical(page: &Page<'_>, dropped_pods: usize) -> String {
    let mut out = format!("samples {}\n", page.samples);
    match page.node {
        Some(n) => {
            let _ = writeln!(
                out,
                "node {} {} {} {}",
                n.timestamp_ns, n.cpu_ns, n.memory_bytes, n.swap_bytes
            );
        }
        None => out.push_str("node none\n"),
    }
    for c in &page.containers {
        let p = c.point;
        let _ = writeln!(
            out,
            "container '{}' '{}' '{}' {} {} {} {} {}",
            c.namespace,
            c.pod,
            c.container,
            p.timestamp_ns,
            p.cpu_ns,
            p.memory_bytes,
            p.start_time_ns,
            p.swap_bytes
        );
    }
    let _ = writeln!(out, "dropped {dropped_pods}");
    out
}

fn assert_matches_peer(payload: &[u8]) {
    let (page, stats) = decode_with_stats(payload, SCRAPE_NS).expect("decodes");
    let ours = canonical(&page, stats.dropped_pods);
    let theirs = peer::python(PEER_DECODER, &[&SCRAPE_NS.to_string()], payload);
    assert_eq!(ours, theirs);
}
