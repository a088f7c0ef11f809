//! Metrics API encoding through the router (issue 6 §1): the HPA's query and `top pod -A`
//! over 150,000 pods, in JSON, protobuf and Table.
//!
//! Targets: the HPA query (one namespace, a label selector, 50 matches of 150,000 pods)
//! ≤ 50 µs end to end through the handler; `top pod -A` ≥ 300 MB/s of JSON. Figures are
//! printed as µs per request and MB/s.

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
use metrics_bridge::selector::{FieldSelector, LabelSelector};
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
    let (_, body) = request(&rt, &app, HPA_PATH, "application/json");
    let matches = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(matches, 50);
    let mut group = c.benchmark_group("api_hpa_query");
    for (name, accept) in [("protobuf", HPA_ACCEPT), ("json", "application/json")] {
        group.bench_function(name, |b| b.iter(|| request(&rt, &app, HPA_PATH, accept)));
    }
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
}

criterion_group! {
    name = api;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(api);
