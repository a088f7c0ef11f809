//! `/metrics/resource` writing speed (issue 6: ≥ 2 M series/s for 5,000 nodes × 30 pods).
//!
//! Builds a cluster state and a store as the scraper leaves them: every node's kubelet page
//! (30 pods, alternately one and two containers, kubelet-style names and timestamps) decoded,
//! indexed and ingested twice so that usage exists, the pods Running in the cluster state
//! with three labels each. Then writes the whole exposition into a sink that drops the
//! chunks, as text 0.0.4, OpenMetrics, text gzipped and OpenMetrics with label joins, and
//! prints series per second and bytes per series for each (best of a few runs, wall time;
//! the writer is single-threaded). `EXPOSITION_NODES` overrides the node count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics_bridge::cluster::{ClusterState, LabelSet, NodeInfo, PodInfo};
use metrics_bridge::exposition::{Format, KubeletPage, LabelsAllowlist, Output, Snapshot};
use metrics_bridge::store::Store;

const PODS_PER_NODE: usize = 30;
const T0_MS: i64 = 1_633_253_809_000;

fn pod_name(node: usize, p: usize) -> (String, String) {
    (
        format!("team-{:02}", (node * 7 + p) % 40),
        format!("service-{:03}-deployment-7d9c8b6f5-{node:05}{p:03}", p % 97),
    )
}

/// Node `n`'s name, EKS-style.
fn node_name(n: usize) -> String {
    format!(
        "ip-10-{}-{}-{}.eu-west-1.compute.internal",
        n / 65536,
        (n / 256) % 256,
        n % 256
    )
}

/// The containers of pod `p`: alternately one and two.
fn containers(p: usize) -> &'static [&'static str] {
    if p.is_multiple_of(2) {
        &["app"]
    } else {
        &["app", "istio-proxy"]
    }
}

/// One kubelet page for `node` at `t_ms`, as a 1.31 kubelet writes it.
fn kubelet_page(node: usize, t_ms: i64, scrape: u64) -> String {
    let mut cpu = String::new();
    let mut mem = String::new();
    let mut start = String::new();
    let mut swap = String::new();
    let mut pod_cpu = String::new();
    let mut pod_mem = String::new();
    for p in 0..PODS_PER_NODE {
        let (ns, pod) = pod_name(node, p);
        for c in containers(p) {
            let l = format!("container=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"");
            let v = 1000.0 + (scrape * 15) as f64 * 0.123_456 + p as f64;
            cpu.push_str(&format!(
                "container_cpu_usage_seconds_total{{{l}}} {v} {t_ms}\n"
            ));
            mem.push_str(&format!(
                "container_memory_working_set_bytes{{{l}}} 1.23456789e+08 {t_ms}\n"
            ));
            start.push_str(&format!(
                "container_start_time_seconds{{{l}}} 1.633250209e+09 {t_ms}\n"
            ));
            swap.push_str(&format!("container_swap_usage_bytes{{{l}}} 0 {t_ms}\n"));
        }
        let l = format!("namespace=\"{ns}\",pod=\"{pod}\"");
        pod_cpu.push_str(&format!(
            "pod_cpu_usage_seconds_total{{{l}}} 2000.5 {t_ms}\n"
        ));
        pod_mem.push_str(&format!(
            "pod_memory_working_set_bytes{{{l}}} 2.4e+08 {t_ms}\n"
        ));
    }
    format!(
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n\
         # TYPE container_cpu_usage_seconds_total counter\n{cpu}\
         # HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n\
         # TYPE container_memory_working_set_bytes gauge\n{mem}\
         # HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n\
         # TYPE container_start_time_seconds gauge\n{start}\
         # HELP container_swap_usage_bytes [ALPHA] Current amount of the container swap usage in bytes.\n\
         # TYPE container_swap_usage_bytes gauge\n{swap}\
         # HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n\
         # TYPE node_cpu_usage_seconds_total counter\n\
         node_cpu_usage_seconds_total {} {t_ms}\n\
         # HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n\
         # TYPE node_memory_working_set_bytes gauge\n\
         node_memory_working_set_bytes 8.589934592e+09 {t_ms}\n\
         # HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds\n\
         # TYPE pod_cpu_usage_seconds_total counter\n{pod_cpu}\
         # HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n\
         # TYPE pod_memory_working_set_bytes gauge\n{pod_mem}\
         # HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE resource_scrape_error gauge\n\
         resource_scrape_error 0\n",
        100_000.0 + (scrape * 15) as f64 * 3.5
    )
}

fn build(nodes: usize) -> (ClusterState, Store) {
    let cluster = ClusterState::new();
    let store = Store::new(Duration::from_secs(15));
    for n in 0..nodes {
        let name = node_name(n);
        cluster.upsert_node(NodeInfo {
            name: name.as_str().into(),
            labels: LabelSet::from_pairs([
                ("kubernetes.io/hostname", name.as_str()),
                ("topology.kubernetes.io/zone", "eu-west-1a"),
            ]),
            addresses: Box::new([]),
            kubelet_port: 10250,
            metrics_path: None,
            allocatable_cpu_millis: 7_910,
            allocatable_memory_bytes: 30 << 30,
        });
        for p in 0..PODS_PER_NODE {
            let (ns, pod) = pod_name(n, p);
            cluster.upsert_pod(PodInfo {
                namespace: ns.as_str().into(),
                name: pod.into(),
                labels: LabelSet::from_pairs([
                    ("app", "service"),
                    ("team", ns.as_str()),
                    ("pod-template-hash", "7d9c8b6f5"),
                ]),
            });
        }
        for scrape in 0..2u64 {
            let t_ms = T0_MS + scrape as i64 * 15_000;
            let body = Bytes::from(kubelet_page(n, t_ms, scrape));
            let Ok((page, _)) = metrics_bridge::decode::decode_with_stats(&body, t_ms * 1_000_000)
            else {
                panic!("bench page does not decode");
            };
            let Ok(raw) = KubeletPage::index(body.clone()) else {
                panic!("bench page does not index");
            };
            store.ingest_page(&name, &page, Arc::new(raw));
            store.record_scrape_success(&name, t_ms * 1_000_000);
        }
    }
    (cluster, store)
}

fn run(
    label: &str,
    cluster: &ClusterState,
    store: &Store,
    allow: &LabelsAllowlist,
    format: Format,
    gzip: bool,
) -> f64 {
    let mut best = Duration::MAX;
    let mut series = 0;
    let mut written = 0;
    let mut sent = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let snapshot = Snapshot::take(cluster, store, allow);
        let mut sink = |chunk: Bytes| {
            std::hint::black_box(chunk);
            true
        };
        let mut out = Output::new(gzip, &mut sink);
        let Ok(n) = metrics_bridge::exposition::encode::write(&snapshot, format, &mut out) else {
            panic!("sink refused");
        };
        let Ok(totals) = out.finish() else {
            panic!("sink refused");
        };
        best = best.min(started.elapsed());
        series = n;
        written = totals.written;
        sent = totals.sent;
    }
    let secs = best.as_secs_f64();
    println!(
        "{label:<28} {series:>9} series in {:>7.1} ms: {:>5.2} M series/s, {:>5.1} B/series written, {:>5.1} B/series sent",
        secs * 1e3,
        series as f64 / secs / 1e6,
        written as f64 / series as f64,
        sent as f64 / series as f64,
    );
    series as f64 / secs
}

/// Same-run reference: the prometheus-client crate (what a Rust exporter would normally use)
/// encoding the container usage gauges of the same cluster, as OpenMetrics text into a
/// `String`. Only the encode is timed, not building its registry, which favours the
/// reference. Returns series per second.
fn reference_prometheus_client(nodes: usize) -> f64 {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    type Labels = Vec<(String, String)>;
    let cpu = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let mem = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let mut series = 0usize;
    for n in 0..nodes {
        let node = node_name(n);
        for p in 0..PODS_PER_NODE {
            let (ns, pod) = pod_name(n, p);
            for c in containers(p) {
                let labels: Labels = vec![
                    ("container".into(), (*c).into()),
                    ("namespace".into(), ns.clone()),
                    ("pod".into(), pod.clone()),
                    ("node".into(), node.clone()),
                ];
                cpu.get_or_create(&labels).set(0.123_456_789 + p as f64);
                mem.get_or_create(&labels).set(1.234_567_89e8);
                series += 2;
            }
        }
    }
    let mut registry = Registry::default();
    registry.register("container_cpu_usage_cores", "CPU in cores", cpu);
    registry.register("container_memory_working_set_bytes", "Working set", mem);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            panic!("prometheus-client refused to encode");
        }
        std::hint::black_box(&out);
        best = best.min(started.elapsed());
    }
    let per_sec = series as f64 / best.as_secs_f64();
    println!(
        "{:<28} {series:>9} series in {:>7.1} ms: {:>5.2} M series/s (reference: prometheus-client, OpenMetrics, into one String)",
        "prometheus-client crate",
        best.as_secs_f64() * 1e3,
        per_sec / 1e6,
    );
    per_sec
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, as a
    // smoke test of the bench itself, where a debug build of the full size would only cost
    // CI time.
    let full = std::env::args().any(|a| a == "--bench");
    let nodes = std::env::var("EXPOSITION_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5_000 } else { 50 });
    let started = Instant::now();
    let (cluster, store) = build(nodes);
    println!(
        "/metrics/resource for {nodes} nodes × {PODS_PER_NODE} pods (1.5 containers each), built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let none = LabelsAllowlist::default();
    let joins = match LabelsAllowlist::parse("pods=[app,team],nodes=[topology.kubernetes.io/zone]")
    {
        Ok(j) => j,
        Err(e) => panic!("{e}"),
    };
    run("text 0.0.4", &cluster, &store, &none, Format::Text, false);
    let ours = run(
        "OpenMetrics 1.0",
        &cluster,
        &store,
        &none,
        Format::OpenMetrics { v1: true },
        false,
    );
    run(
        "OpenMetrics + label joins",
        &cluster,
        &store,
        &joins,
        Format::OpenMetrics { v1: true },
        false,
    );
    run(
        "text 0.0.4, gzip",
        &cluster,
        &store,
        &none,
        Format::Text,
        true,
    );
    let reference = reference_prometheus_client(nodes);
    println!(
        "ours (OpenMetrics, streamed, from the store) vs the prometheus-client crate: {:.2}x the series/s",
        ours / reference
    );
}
