//! Store ingest of one node's decoded page, including rate bookkeeping (issue 6 §1).
//!
//! Target: ≤ 2 µs per container. Prints µs/container for a 30-pod × 2-container node and a
//! 110-pod × 3-container node, in steady state (same pods every scrape, the common case) and
//! for a node seen for the first time (every pod and name allocated).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_bridge::decode::{ContainerPoint, Page, Point};
use metrics_bridge::store::Store;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_633_253_809 * S;

/// One node's page: `pods` pods of `containers` containers, names as real clusters have
/// them, sorted as the decoder delivers them.
fn page(node: usize, pods: usize, containers: usize) -> Page<'static> {
    let names = ["app", "istio-proxy", "log-shipper", "init-sidecar"];
    let mut out: Vec<ContainerPoint<'static>> = Vec::with_capacity(pods * containers);
    for p in 0..pods {
        let ns = format!("team-{:02}", (node * 7 + p) % 40);
        let pod = format!("service-{:03}-deployment-7d9c8b6f5-{node:05}{p:03}", p % 97);
        for c in names.iter().take(containers) {
            out.push(ContainerPoint {
                namespace: Cow::Owned(ns.clone()),
                pod: Cow::Owned(pod.clone()),
                container: Cow::Borrowed(c),
                point: Point {
                    timestamp_ns: T0,
                    cpu_ns: 1_000 * S as u64,
                    memory_bytes: 123_456_789,
                    start_time_ns: T0 - 3600 * S,
                    ..Point::default()
                },
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    Page {
        node: Some(Point {
            timestamp_ns: T0,
            cpu_ns: 100_000 * S as u64,
            memory_bytes: 8 << 30,
            start_time_ns: 0,
            ..Point::default()
        }),
        samples: pods * containers * 3 + 2,
        containers: out,
    }
}

/// Moves every point of the page one scrape (15 s) forward.
fn advance(page: &mut Page<'_>) {
    for c in &mut page.containers {
        c.point.timestamp_ns += 15 * S;
        c.point.cpu_ns += 3_750_000_000;
    }
    if let Some(n) = page.node.as_mut() {
        n.timestamp_ns += 15 * S;
        n.cpu_ns += 15 * S as u64;
    }
}

fn steady(c: &mut Criterion, pods: usize, containers: usize) {
    let store = Store::new(Duration::from_secs(15));
    let mut p = page(0, pods, containers);
    store.ingest("node-00000", &p);
    advance(&mut p);
    store.ingest("node-00000", &p);
    let mut group = c.benchmark_group("store_ingest");
    group.throughput(Throughput::Elements((pods * containers) as u64));
    group.bench_function(format!("steady_{pods}x{containers}"), |b| {
        b.iter(|| {
            advance(&mut p);
            store.ingest(black_box("node-00000"), black_box(&p));
        })
    });
    group.finish();
}

fn first_sight(c: &mut Criterion, pods: usize, containers: usize) {
    let pages: Vec<Page<'static>> = (0..64).map(|n| page(n, pods, containers)).collect();
    let names: Vec<String> = (0..64).map(|n| format!("node-{n:05}")).collect();
    let mut group = c.benchmark_group("store_ingest");
    // Eight new nodes per iteration.
    group.throughput(Throughput::Elements((8 * pods * containers) as u64));
    group.bench_function(format!("new_nodes_8x{pods}x{containers}"), |b| {
        b.iter_batched(
            || Store::new(Duration::from_secs(15)),
            |store| {
                for (name, p) in names.iter().zip(&pages).take(8) {
                    store.ingest(name, p);
                }
                store
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// A plain timing loop for the headline figure, printed as µs per container.
fn report(pods: usize, containers: usize) {
    let store = Store::new(Duration::from_secs(15));
    let mut p = page(0, pods, containers);
    store.ingest("n", &p);
    let rounds = 200_000 / pods;
    let start = Instant::now();
    for _ in 0..rounds {
        advance(&mut p);
        store.ingest("n", black_box(&p));
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * pods * containers) as f64;
    let stats = store.stats();
    println!(
        "store ingest steady state, {pods} pods x {containers} containers: {per:.3} µs/container \
         (target <= 2 µs); stored {} containers with rates",
        stats.containers
    );
}

fn benches(c: &mut Criterion) {
    for (pods, containers) in [(30, 2), (110, 3)] {
        steady(c, pods, containers);
        first_sight(c, pods, containers);
        report(pods, containers);
    }
}

criterion_group! {
    name = store;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(store);
