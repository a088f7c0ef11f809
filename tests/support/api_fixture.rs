//! Synthetic clusters for the API tests and benchmarks: cluster state plus a store fed two
//! scrapes, so every pod and node has a known rate.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_bridge::api::{ApiState, router};
use metrics_bridge::cluster::{ClusterState, LabelSet, NodeAddressType, NodeInfo, PodInfo};
use metrics_bridge::decode::{ContainerPoint, Page, Point};
use metrics_bridge::store::Store;

pub const S: i64 = 1_000_000_000;
/// The first scrape: 2021-10-03T09:36:49Z.
pub const T0: i64 = 1_633_253_809 * S;
/// The second scrape, 15 s later.
pub const T1: i64 = T0 + 15 * S;
/// Container start times: long before both scrapes.
pub const STARTED: i64 = T0 - 3600 * S;

pub fn node_info(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: Arc::from(name),
        labels: LabelSet::from_pairs(labels.iter().copied()),
        addresses: vec![(NodeAddressType::InternalIP, "127.0.0.1".into())].into_boxed_slice(),
        kubelet_port: 10250,
        metrics_path: None,
        allocatable_cpu_millis: 4000,
        allocatable_memory_bytes: 8 << 30,
    }
}

pub fn pod_info(ns: &str, name: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: Arc::from(ns),
        name: name.into(),
        labels: LabelSet::from_pairs(labels.iter().copied()),
    }
}

/// One container sample: (namespace, pod, container, cpu seconds ×1e9 at T0, Δcpu ns over
/// the 15 s, memory bytes).
pub type Sample<'a> = (&'a str, &'a str, &'a str, u64, u64, u64);

/// Feeds two scrapes of one node, 15 s apart, into the store.
pub fn scrape_twice(
    store: &Store,
    node: &str,
    node_cpu: (u64, u64),
    node_mem: u64,
    samples: &[Sample<'_>],
) {
    for (ts, second) in [(T0, false), (T1, true)] {
        let points: Vec<Scraped<'_>> = samples
            .iter()
            .map(|&(ns, pod, c, cpu0, dcpu, mem)| {
                (ns, pod, c, if second { cpu0 + dcpu } else { cpu0 }, mem)
            })
            .collect();
        let cpu = if second {
            node_cpu.0 + node_cpu.1
        } else {
            node_cpu.0
        };
        scrape(store, node, ts, (cpu, node_mem), &points);
    }
}

/// One container's point in a scrape: (namespace, pod, container, cpu ns, memory bytes).
pub type Scraped<'a> = (&'a str, &'a str, &'a str, u64, u64);

/// Feeds one scrape of a node, every point at `ts`, into the store; `node_point` is the
/// node's cpu ns and memory bytes.
pub fn scrape(store: &Store, node: &str, ts: i64, node_point: (u64, u64), points: &[Scraped<'_>]) {
    let mut containers: Vec<ContainerPoint<'_>> = points
        .iter()
        .map(|&(ns, pod, c, cpu_ns, memory_bytes)| ContainerPoint {
            namespace: Cow::Borrowed(ns),
            pod: Cow::Borrowed(pod),
            container: Cow::Borrowed(c),
            point: Point {
                timestamp_ns: ts,
                cpu_ns,
                memory_bytes,
                start_time_ns: STARTED,
                ..Point::default()
            },
        })
        .collect();
    containers.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    let page = Page {
        node: Some(Point {
            timestamp_ns: ts,
            cpu_ns: node_point.0,
            memory_bytes: node_point.1,
            start_time_ns: 0,
            ..Point::default()
        }),
        samples: containers.len() * 4 + 2,
        containers,
    };
    store.ingest(node, &page);
}

/// A small cluster with known numbers:
/// - node-1: 1 core (`1`), 1616273408 bytes (`1578392Ki`); node-2: 250m, 50Mi; node-3 is in
///   the cluster but never scraped.
/// - default/web-1 on node-1: `app` 250m/12240Ki and `sidecar` 10m/50Mi.
/// - default/web-2 on node-2: `app` 1500m/1Gi.
/// - kube-system/coredns-1 on node-1: `coredns` 4710169n/12240Ki.
/// - default/db-0 is Running but has no metrics; default/gone has metrics but is not Running.
pub fn small_cluster() -> ApiState {
    let cluster = Arc::new(ClusterState::new());
    cluster.upsert_node(node_info(
        "node-1",
        &[
            ("kubernetes.io/hostname", "node-1"),
            ("topology.kubernetes.io/zone", "a"),
        ],
    ));
    cluster.upsert_node(node_info(
        "node-2",
        &[
            ("kubernetes.io/hostname", "node-2"),
            ("topology.kubernetes.io/zone", "b"),
        ],
    ));
    cluster.upsert_node(node_info("node-3", &[]));
    cluster.upsert_pod(pod_info(
        "default",
        "web-1",
        &[("app", "web"), ("tier", "frontend")],
    ));
    cluster.upsert_pod(pod_info("default", "web-2", &[("app", "web")]));
    cluster.upsert_pod(pod_info(
        "kube-system",
        "coredns-1",
        &[("k8s-app", "kube-dns")],
    ));
    cluster.upsert_pod(pod_info("default", "db-0", &[("app", "db")]));
    cluster.set_nodes_synced();
    cluster.set_pods_synced();

    let store = Arc::new(Store::new(Duration::from_secs(15)));
    scrape_twice(
        &store,
        "node-1",
        (357_354_910_000, 15 * S as u64),
        1_616_273_408,
        &[
            (
                "default",
                "web-1",
                "app",
                10 * S as u64,
                3_750_000_000,
                12_533_760,
            ),
            (
                "default",
                "web-1",
                "sidecar",
                S as u64,
                150_000_000,
                52_428_800,
            ),
            (
                "kube-system",
                "coredns-1",
                "coredns",
                4 * S as u64,
                70_652_535,
                12_533_760,
            ),
            ("default", "gone", "c", S as u64, S as u64, 1024),
        ],
    );
    scrape_twice(
        &store,
        "node-2",
        (100 * S as u64, 3_750_000_000),
        52_428_800,
        &[
            (
                "default",
                "web-2",
                "app",
                10 * S as u64,
                22_500_000_000,
                1 << 30,
            ),
            ("default", "db-0", "db", S as u64, S as u64, 1024),
        ],
    );
    // db-0 restarts: its new start time drops its previous point.
    let restarted = Page {
        node: None,
        samples: 0,
        containers: vec![
            ContainerPoint {
                namespace: Cow::Borrowed("default"),
                pod: Cow::Borrowed("db-0"),
                container: Cow::Borrowed("db"),
                point: Point {
                    timestamp_ns: T1 + 60 * S,
                    cpu_ns: 1,
                    memory_bytes: 1024,
                    start_time_ns: T1 + S,
                    ..Point::default()
                },
            },
            ContainerPoint {
                namespace: Cow::Borrowed("default"),
                pod: Cow::Borrowed("web-2"),
                container: Cow::Borrowed("app"),
                point: Point {
                    timestamp_ns: T1,
                    cpu_ns: 10 * S as u64 + 22_500_000_000,
                    memory_bytes: 1 << 30,
                    start_time_ns: STARTED,
                    ..Point::default()
                },
            },
        ],
    };
    // Re-ingesting node-2 without its node point would drop the node's rate; keep it by
    // sending the same node point again (a duplicate keeps prev).
    let mut restarted = restarted;
    restarted.node = Some(Point {
        timestamp_ns: T1,
        cpu_ns: 100 * S as u64 + 3_750_000_000,
        memory_bytes: 52_428_800,
        start_time_ns: 0,
        ..Point::default()
    });
    store.ingest("node-2", &restarted);
    ApiState::new(cluster, store)
}

/// A large synthetic cluster: `namespaces × pods_per_ns` pods of two containers, each pod's
/// `app` label one of `apps` values, spread over nodes of 30 pods.
pub fn large_cluster(namespaces: usize, pods_per_ns: usize, apps: usize) -> ApiState {
    let cluster = Arc::new(ClusterState::new());
    let store = Arc::new(Store::new(Duration::from_secs(15)));
    let names: Vec<(String, String, String)> = (0..namespaces)
        .flat_map(|n| {
            (0..pods_per_ns).map(move |p| {
                (
                    format!("namespace-{n:03}"),
                    format!("app-{:02}-deployment-7d9c8b6f5-{p:05}", p % apps),
                    format!("app-{:02}", p % apps),
                )
            })
        })
        .collect();
    // One shared namespace string per namespace, as the pod watcher interns them.
    let mut shared: HashMap<&str, Arc<str>> = HashMap::new();
    for (ns, pod, app) in &names {
        let mut info = pod_info(
            ns,
            pod,
            &[
                ("app", app),
                ("pod-template-hash", "7d9c8b6f5"),
                ("team", "payments"),
            ],
        );
        info.namespace = Arc::clone(shared.entry(ns.as_str()).or_insert(info.namespace));
        cluster.upsert_pod(info);
    }
    for (i, chunk) in names.chunks(30).enumerate() {
        let node = format!("node-{i:05}");
        cluster.upsert_node(node_info(&node, &[("kubernetes.io/hostname", &node)]));
        let samples: Vec<Sample<'_>> = chunk
            .iter()
            .flat_map(|(ns, pod, _)| {
                [
                    (
                        ns.as_str(),
                        pod.as_str(),
                        "app",
                        100 * S as u64,
                        1_234_567_890,
                        123_456_789,
                    ),
                    (
                        ns.as_str(),
                        pod.as_str(),
                        "istio-proxy",
                        10 * S as u64,
                        98_765_432,
                        52_428_800,
                    ),
                ]
            })
            .collect();
        scrape_twice(
            &store,
            &node,
            (1000 * S as u64, 15 * S as u64),
            8 << 30,
            &samples,
        );
    }
    cluster.set_nodes_synced();
    cluster.set_pods_synced();
    ApiState::new(cluster, store)
}

pub fn app(state: ApiState) -> axum::Router {
    router(state)
}
