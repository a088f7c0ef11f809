//! Metrics API encoding through the router (issue 6 §1): the HPA's query and `top pod -A`
//! over 150,000 pods, in JSON, protobuf and Table; and the HPA's query on a namespace of
//! 15,000 pods right after one of its pods changed (the label index following the change).
//!
//! Targets: the HPA query (one namespace, a label selector, 50 matches of 150,000 pods)
//! ≤ 50 µs end to end through the handler; `top pod -A` ≥ 300 MB/s of JSON. Figures are
//! printed as µs per request and MB/s, with two same-run references: the same list encoded
//! by serde_json through a tree of derived structs (ratio printed), and the cost of joining a
//! full list with the store: the ordered walk the API uses against one hash probe per pod.

#[path = "../tests/support/api_fixture.rs"]
mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use metrics_bridge::api::encode::{self, Ctx, Shape};
use metrics_bridge::api::{ApiVersion, list_pods};
use metrics_bridge::cluster::PodInfo;
use metrics_bridge::selector::{FieldSelector, LabelSelector};
use metrics_bridge::store::{JOIN_BATCH, PodValues, UsageBatch};
use tower::ServiceExt;

const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// 100 namespaces × 1,500 pods, 30 apps per namespace: 50 pods per (namespace, app).
const NAMESPACES: usize = 100;
const PODS_PER_NS: usize = 1_500;
const APPS: usize = 30;
const HPA_PATH: &str =
    "/apis/metrics.k8s.io/v1beta1/namespaces/namespace-042/pods?labelSelector=app%3Dapp-07";
const ALL_PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";
/// One namespace of 15,000 pods, 300 apps: 50 pods per app.
const LARGE_NS_PODS: usize = 15_000;
const LARGE_HPA_PATH: &str =
    "/apis/metrics.k8s.io/v1beta1/namespaces/namespace-000/pods?labelSelector=app%3Dapp-07";

fn request(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    path: &str,
    accept: &str,
) -> (u16, bytes::Bytes) {
    rt.block_on(async {
        let req = Request::get(path)
            .header("accept", accept)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    })
}

/// How many items a list request answers with, in JSON.
fn items(rt: &tokio::runtime::Runtime, app: &Router, path: &str) -> usize {
    let (_, body) = request(rt, app, path, "application/json");
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["items"]
        .as_array()
        .map_or(0, Vec::len)
}

/// CPU time used by every thread of this process so far, from the kernel's per-task
/// scheduler statistics (nanoseconds). Unlike wall time it does not grow when other
/// processes compete for the cores.
fn process_cpu() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// Mean wall and CPU time of `rounds` requests, after one warm-up, and the body size.
fn time(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    path: &str,
    accept: &str,
    rounds: u32,
) -> (Duration, Duration, usize) {
    let (status, body) = request(rt, app, path, accept);
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let cpu = process_cpu();
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(request(rt, app, path, accept));
    }
    (
        start.elapsed() / rounds,
        (process_cpu() - cpu) / rounds,
        body.len(),
    )
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let build = Instant::now();
    let state = fixture::large_cluster(NAMESPACES, PODS_PER_NS, APPS);
    println!(
        "fixture: {} pods on {} nodes, built in {:.1}s",
        state.cluster.pod_count(),
        state.cluster.node_count(),
        build.elapsed().as_secs_f64()
    );
    let app = fixture::app(state.clone());

    // The HPA query: 50 matches out of 150,000 pods.
    assert_eq!(items(&rt, &app, HPA_PATH), 50);
    let mut group = c.benchmark_group("api_hpa_query");
    for (name, accept) in [("protobuf", HPA_ACCEPT), ("json", "application/json")] {
        group.bench_function(name, |b| b.iter(|| request(&rt, &app, HPA_PATH, accept)));
    }
    // The HPA query on one namespace of 15,000 pods (as kube-sim's 5,000-node clusters have
    // them), unchanged and right after one pod of it changed: with 1 %/min churn such a
    // namespace changes several times a second, so most queries follow a change. The change
    // (a re-added pod, a new object) is part of each iteration; it goes round the namespace.
    let large = fixture::large_cluster(1, LARGE_NS_PODS, LARGE_NS_PODS / 50);
    let large_app = fixture::app(large.clone());
    assert_eq!(items(&rt, &large_app, LARGE_HPA_PATH), 50);
    let mut pods = Vec::with_capacity(LARGE_NS_PODS);
    large
        .cluster
        .for_each_pod(None, |p| pods.push(PodInfo::clone(p)));
    group.bench_function("ns15000_unchanged", |b| {
        b.iter(|| request(&rt, &large_app, LARGE_HPA_PATH, HPA_ACCEPT))
    });
    let mut next = pods.iter().cycle();
    group.bench_function("ns15000_after_one_change", |b| {
        b.iter(|| {
            if let Some(pod) = next.next() {
                large.cluster.upsert_pod(pod.clone());
            }
            request(&rt, &large_app, LARGE_HPA_PATH, HPA_ACCEPT)
        })
    });
    group.finish();

    // top pod -A: every pod.
    let mut group = c.benchmark_group("api_all_pods");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, accept) in [
        ("json", "application/json"),
        ("protobuf", "application/vnd.kubernetes.protobuf"),
        ("table", TABLE_ACCEPT),
    ] {
        let (_, body) = request(&rt, &app, ALL_PODS, accept);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| request(&rt, &app, ALL_PODS, accept)));
    }
    group.finish();

    // Where the HPA query's time goes: the scan of its namespace, then the encoding.
    let sel = LabelSelector::parse("app=app-07").unwrap();
    let none = FieldSelector::default();
    let rounds = 3_000;
    let cpu = process_cpu();
    for _ in 0..rounds {
        black_box(list_pods(&state, Some("namespace-042"), &sel, &none));
    }
    let scan = (process_cpu() - cpu) / rounds;
    let items = list_pods(&state, Some("namespace-042"), &sel, &none);
    let ctx = Ctx::new(ApiVersion::V1beta1, 1_700_000_000);
    let cpu = process_cpu();
    for _ in 0..rounds {
        black_box(encode::json(Shape::List(&items), &ctx));
    }
    let json = (process_cpu() - cpu) / rounds;
    let cpu = process_cpu();
    for _ in 0..rounds {
        black_box(encode::proto(Shape::List(&items), &ctx));
    }
    let proto = (process_cpu() - cpu) / rounds;

    println!("\n== metrics API figures (150,000 pods, 2 containers each) ==");
    println!(
        "HPA query parts: select 50 of the namespace's 1,500 pods {:.1} µs, encode 50 as JSON {:.1} µs, as protobuf {:.1} µs (CPU)",
        scan.as_secs_f64() * 1e6,
        json.as_secs_f64() * 1e6,
        proto.as_secs_f64() * 1e6
    );
    println!(
        "(CPU = CPU time of the process per request; wall time grows when other processes share the cores)"
    );
    for (name, accept) in [
        ("protobuf (HPA Accept)", HPA_ACCEPT),
        ("json", "application/json"),
    ] {
        let (wall, cpu, size) = time(&rt, &app, HPA_PATH, accept, 3_000);
        println!(
            "HPA query, 50 of 150,000 pods, {name}: {:.1} µs CPU, {:.1} µs wall per request through the router, {size} bytes (target <= 50 µs)",
            cpu.as_secs_f64() * 1e6,
            wall.as_secs_f64() * 1e6
        );
    }
    for (name, accept) in [
        ("json", "application/json"),
        ("protobuf", "application/vnd.kubernetes.protobuf"),
        ("table", TABLE_ACCEPT),
    ] {
        let (wall, cpu, size) = time(&rt, &app, ALL_PODS, accept, 5);
        let mb = size as f64 / 1e6;
        println!(
            "top pod -A, {name}: {:.1} MB in {:.1} ms CPU ({:.0} MB/s), {:.1} ms wall ({:.0} MB/s) (target >= 300 MB/s of JSON)",
            mb,
            cpu.as_secs_f64() * 1e3,
            mb / cpu.as_secs_f64(),
            wall.as_secs_f64() * 1e3,
            mb / wall.as_secs_f64()
        );
    }
    json_reference(&state);
    store_lookups(&state);
}

/// The same-run reference for `top pod -A` in JSON: what a Go-style server does (build
/// `PodMetrics` objects, then encode them) with serde's derived serializers, over the first
/// 30,000 pods; MB/s is comparable because both write the same bytes per pod.
fn json_reference(state: &metrics_bridge::api::ApiState) {
    use metrics_bridge::api::quantity;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct List<'a> {
        kind: &'static str,
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        metadata: BTreeMap<String, String>,
        items: Vec<Pod<'a>>,
    }
    #[derive(Serialize)]
    struct Meta<'a> {
        name: &'a str,
        namespace: &'a str,
        #[serde(rename = "creationTimestamp")]
        creation_timestamp: String,
        labels: BTreeMap<&'a str, &'a str>,
    }
    #[derive(Serialize)]
    struct Pod<'a> {
        metadata: Meta<'a>,
        timestamp: String,
        window: String,
        containers: Vec<Container<'a>>,
    }
    #[derive(Serialize)]
    struct Container<'a> {
        name: &'a str,
        usage: BTreeMap<&'static str, String>,
    }

    const PODS: usize = 30_000;
    let ctx = Ctx::new(ApiVersion::V1beta1, 1_700_000_000);
    let mut pods = Vec::with_capacity(PODS);
    state.cluster.for_each_pod(None, |p| {
        if pods.len() < PODS {
            pods.push(std::sync::Arc::clone(p));
        }
    });
    let usages: Vec<_> = pods
        .iter()
        .filter_map(|p| Some((p, state.store.pod_usage(&p.namespace, &p.name)?)))
        .collect();
    let ours: Vec<_> = usages
        .iter()
        .map(|(p, u)| (std::sync::Arc::clone(p), std::sync::Arc::clone(u)))
        .collect();
    let (mut ours_cpu, mut reference_cpu) = (Duration::MAX, Duration::MAX);
    let (mut ours_len, mut reference_len) = (0, 0);
    for _ in 0..3 {
        let cpu = process_cpu();
        ours_len = black_box(encode::json(Shape::List(&ours), &ctx)).len();
        ours_cpu = ours_cpu.min(process_cpu() - cpu);
        let cpu = process_cpu();
        let list = List {
            kind: "PodMetricsList",
            api_version: "metrics.k8s.io/v1beta1",
            metadata: BTreeMap::new(),
            items: usages
                .iter()
                .map(|(p, u)| Pod {
                    metadata: Meta {
                        name: &p.name,
                        namespace: &p.namespace,
                        creation_timestamp: "2023-11-14T22:13:20Z".to_string(),
                        labels: p.labels.iter().collect(),
                    },
                    timestamp: format!("{}", u.timestamp_ns / 1_000_000_000),
                    window: format!("{:?}", u.window),
                    containers: u
                        .containers
                        .iter()
                        .map(|c| Container {
                            name: &c.name,
                            usage: BTreeMap::from([
                                ("cpu", quantity::cpu(c.cpu_nanocores).as_str().to_string()),
                                (
                                    "memory",
                                    quantity::memory(c.memory_bytes).as_str().to_string(),
                                ),
                            ]),
                        })
                        .collect(),
                })
                .collect(),
        };
        reference_len = black_box(serde_json::to_vec(&list).unwrap_or_default()).len();
        reference_cpu = reference_cpu.min(process_cpu() - cpu);
    }
    let ours_mbs = ours_len as f64 / 1e6 / ours_cpu.as_secs_f64();
    let reference_mbs = reference_len as f64 / 1e6 / reference_cpu.as_secs_f64();
    println!(
        "reference, {} pods in JSON: ours {ours_mbs:.0} MB/s, serde_json through a tree of derived structs (as a Go server builds PodMetrics, then encodes) {reference_mbs:.0} MB/s: {:.2}x (CPU, best of 3)",
        ours.len(),
        ours_mbs / reference_mbs
    );
}

/// Where `top pod -A`'s time goes besides encoding: joining the cluster's pods, in
/// (namespace, name) order, with their usage in the store. Printed for the ordered walk
/// (`Store::join_sorted`, one pass over each shard per batch, here taking a reference to each
/// usage) against the same-run reference of one hash probe per pod (`Store::with_pod_usage`,
/// what the list did before), each a hash probe into a table of 150,000 entries; and for the
/// walk as the streamed lists (JSON, protobuf, Table) take it, copying each pod's values
/// into a reused batch (`Store::join_values`). Best of 5.
fn store_lookups(state: &metrics_bridge::api::ApiState) {
    let mut pods = Vec::new();
    state
        .cluster
        .for_each_pod(None, |p| pods.push(std::sync::Arc::clone(p)));
    let (mut probe, mut walk, mut copy) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut usages = Vec::with_capacity(JOIN_BATCH);
    let mut values = UsageBatch::default();
    for _ in 0..5 {
        let cpu = process_cpu();
        let mut found = 0usize;
        for p in &pods {
            found += state
                .store
                .with_pod_usage(&p.namespace, &p.name, |u| u.containers.len())
                .unwrap_or(0);
        }
        black_box(found);
        probe = probe.min(process_cpu() - cpu);

        let cpu = process_cpu();
        let mut walked = 0usize;
        for batch in pods.chunks(JOIN_BATCH) {
            usages.clear();
            state.store.join_sorted(
                batch,
                |p| p.key(),
                |_, served| usages.push(served.map(|s| std::sync::Arc::clone(s.usage))),
            );
            walked += usages
                .iter()
                .flatten()
                .map(|u| u.containers.len())
                .sum::<usize>();
        }
        assert_eq!(walked, found, "both joins find the same usage");
        walk = walk.min(process_cpu() - cpu);

        let cpu = process_cpu();
        let mut copied = 0usize;
        for batch in pods.chunks(JOIN_BATCH) {
            state.store.join_values(batch, |p| p.key(), &mut values);
            copied += (0..batch.len())
                .filter_map(|i| values.get(i))
                .map(|u| u.containers().count())
                .sum::<usize>();
        }
        assert_eq!(copied, found, "the copies hold the same containers");
        copy = copy.min(process_cpu() - cpu);
    }
    let per_pod = |d: Duration| d.as_secs_f64() * 1e9 / pods.len() as f64;
    println!(
        "store join over {} pods in list order: ordered walk {:.0} ns per pod ({:.1} ms), one hash probe per pod {:.0} ns ({:.1} ms): {:.2}x (CPU, best of 5)",
        pods.len(),
        per_pod(walk),
        walk.as_secs_f64() * 1e3,
        per_pod(probe),
        probe.as_secs_f64() * 1e3,
        probe.as_secs_f64() / walk.as_secs_f64()
    );
    println!(
        "store join copying each pod's values, as the streamed lists read them (Store::join_values): {:.0} ns per pod ({:.1} ms) (CPU, best of 5)",
        per_pod(copy),
        copy.as_secs_f64() * 1e3
    );
}

criterion_group! {
    name = api;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(api);
