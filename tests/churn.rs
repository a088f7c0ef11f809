//! Pod churn through the real components: kube-sim's API server and kubelets, the watchers,
//! the scraper, the store, the cluster state and the label index. After the cluster has been
//! replaced several times over, everything the process holds per node, pod and container
//! must be back at the live cluster's size: a count above it is a leak.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use metrics_bridge::api::index::LabelIndex;

const NODES: usize = 6;
const PODS_PER_NODE: usize = 10;
const ROUNDS: usize = 20;
const REPLACED_PER_ROUND: usize = 15;

/// The live cluster as kube-sim's model has it: (Running pods, their containers).
async fn live(sim: &support::KubeSim) -> (usize, usize) {
    let expected = sim.expected().await;
    let pods = expected["pods"].as_array().cloned().unwrap_or_default();
    let containers = pods
        .iter()
        .map(|p| p["containers"].as_array().map_or(0, Vec::len))
        .sum();
    (pods.len(), containers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let (nodes, pods) = (NODES.to_string(), PODS_PER_NODE.to_string());
    let sim = support::KubeSim::start(&[
        "--nodes",
        &nodes,
        "--pods-per-node",
        &pods,
        "--containers-per-pod",
        "2",
    ]);
    let pipeline = support::Pipeline::start(&sim, &[]).await;
    let c = &pipeline.c;
    let scraper = pipeline.scraper();
    let index = LabelIndex::default();
    // Every namespace any pod has lived in, and every app label value seen: the label index
    // is asked about all of them each round, as HPAs would.
    let mut namespaces = BTreeSet::new();
    let mut apps = BTreeSet::new();
    let query = |namespaces: &mut BTreeSet<String>, apps: &mut BTreeSet<String>| {
        c.cluster.for_each_pod(None, |p| {
            namespaces.insert(p.namespace.to_string());
            if let Some(app) = p.labels.iter().find(|(k, _)| *k == "app") {
                apps.insert(app.1.to_owned());
            }
        });
        let mut matched = 0;
        for ns in namespaces.iter() {
            for app in apps.iter() {
                index.for_each_with_label(&c.cluster, ns, "app", app, |_| matched += 1);
            }
        }
        matched
    };

    assert_eq!(scraper.tick().await.succeeded, NODES);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scraper.tick().await.succeeded, NODES);
    let (live_pods, live_containers) = live(&sim).await;
    assert!(
        live_pods > NODES * PODS_PER_NODE / 2,
        "{live_pods} Running pods"
    );
    let before = c.store.entries();
    assert_eq!(
        (before.pods, before.containers),
        (live_pods, live_containers)
    );

    // Churn: each round replaces a quarter of the cluster and scrapes while the watch events
    // are still arriving, so deletions race with pages that still carry the pod.
    let mut names_seen = BTreeSet::new();
    for round in 0..ROUNDS {
        let n = REPLACED_PER_ROUND;
        let reply = sim.admin("DELETE", &format!("/sim/pods?count={n}")).await;
        assert!(reply.status < 300, "round {round}: {}", reply.text());
        let reply = sim.admin("POST", &format!("/sim/pods?count={n}")).await;
        assert!(reply.status < 300, "round {round}: {}", reply.text());
        scraper.tick().await;
        query(&mut namespaces, &mut apps);
        c.cluster.for_each_pod(None, |p| {
            names_seen.insert(format!("{}/{}", p.namespace, p.name));
        });
    }
    assert!(
        names_seen.len() >= live_pods + ROUNDS * REPLACED_PER_ROUND / 2,
        "the churn replaced pods: {} names seen",
        names_seen.len()
    );

    // Settled: the watchers caught up, two scrapes see the final pages.
    let (live_pods, live_containers) = live(&sim).await;
    support::eventually("the pod cache to reach the live cluster", || {
        c.cluster.pod_count() == live_pods
    })
    .await;
    // kube-sim's kubelets render a new pod's page a little later than its API object
    // appears, so scrape until the pages carry every live pod (bounded, not timed).
    for _ in 0..60 {
        assert_eq!(scraper.tick().await.succeeded, NODES);
        if c.store.entries().pods >= live_pods {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    scraper.tick().await;
    let matched = query(&mut namespaces, &mut apps);

    let after = c.store.entries();
    eprintln!(
        "live: {NODES} nodes, {live_pods} pods, {live_containers} containers; \
         store before churn {before:?}, after {after:?}; label index holds {} pods \
         in {} namespaces",
        index.held_pods(),
        index.namespaces()
    );
    assert_eq!(c.cluster.node_count(), NODES);
    assert_eq!(c.cluster.pod_count(), live_pods);
    assert_eq!(after.nodes, NODES, "node slots");
    assert_eq!(after.health, NODES, "scrape health records");
    assert_eq!(c.scrape_stats.nodes().len(), NODES, "scrape stats");
    assert_eq!(after.pods, live_pods, "pod entries");
    assert_eq!(after.containers, live_containers, "container states");
    assert_eq!(after.node_pod_keys, live_pods, "the nodes' page pod lists");
    assert_eq!(after.names_in_use, before.names_in_use, "names in use");
    assert!(
        after.names <= before.names.max(64 * 64),
        "interned names are swept: {} (before churn {})",
        after.names,
        before.names
    );
    // Every namespace was queried just now, so every entry is current.
    assert_eq!(index.held_pods(), live_pods, "label index");
    assert_eq!(matched, live_pods, "every pod has an app label");
    let served = Arc::clone(&c.store).stats();
    assert_eq!(served.pods, live_pods, "every live pod is served again");
}
